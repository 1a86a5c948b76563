"""Solvers: one algorithm per file, each a plain sampler function wrapped by a thin :class:`Solver`."""

from invgen.solvers.base import Solver, likelihood_grad, require, stack_batch, unstack_batch

__all__ = ["Solver", "likelihood_grad", "require", "stack_batch", "unstack_batch"]
