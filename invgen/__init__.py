"""invgen: image inverse problems as posterior sampling with generative priors.

Top-level names are imported lazily so that ``import invgen`` stays cheap; see ``invgen.api`` for the entry
points, ``invgen.registry`` for the plugin system and ``invgen.metrics`` for PSNR/SSIM/LPIPS.

Example:
    >>> import torch, invgen
    >>> op = invgen.operator("superres", scale=4, noise=invgen.noise("gaussian", std=0.05))
    >>> x = torch.rand(1, 1, 32, 32)
    >>> y = op.measure(x)
    >>> post = invgen.solve(y, op, solver="tikhonov", n_samples=1)
    >>> post.samples.shape
    torch.Size([1, 1, 1, 32, 32])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from invgen.registry import hookimpl, plugin_manager

__version__ = "0.1.0"

_LAZY = {
    "operator": "invgen.api",
    "prior": "invgen.api",
    "solver": "invgen.api",
    "solve": "invgen.api",
    "Posterior": "invgen.api",
    "list_operators": "invgen.api",
    "list_priors": "invgen.api",
    "list_solvers": "invgen.api",
    "compatible_solvers": "invgen.api",
    "dataset": "invgen.api",
    "list_datasets": "invgen.api",
    "noise": "invgen.operators.noise",
    "Operator": "invgen.operators.base",
    "LinearOperator": "invgen.operators.base",
    "Prior": "invgen.priors.base",
    "Solver": "invgen.solvers.base",
    "make_sketch": "invgen.operators.sketch",
    "metrics": "invgen.metrics",
    "errors": "invgen.errors",
    "priors": "invgen.priors",
}

__all__ = [
    "LinearOperator",
    "Operator",
    "Posterior",
    "Prior",
    "Solver",
    "__version__",
    "compatible_solvers",
    "dataset",
    "errors",
    "hookimpl",
    "list_datasets",
    "list_operators",
    "list_priors",
    "list_solvers",
    "make_sketch",
    "metrics",
    "noise",
    "operator",
    "plugin_manager",
    "prior",
    "priors",
    "solve",
    "solver",
]
assert set(__all__) == {"__version__", "hookimpl", "plugin_manager", *_LAZY}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = import_module(_LAZY[name])
        value = module if module.__name__ == f"invgen.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'invgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from invgen import errors, metrics, priors
    from invgen.api import (
        Posterior,
        compatible_solvers,
        dataset,
        list_datasets,
        list_operators,
        list_priors,
        list_solvers,
        operator,
        prior,
        solve,
        solver,
    )
    from invgen.operators.base import LinearOperator, Operator
    from invgen.operators.noise import noise
    from invgen.operators.sketch import make_sketch
    from invgen.priors.base import Prior
    from invgen.solvers.base import Solver
