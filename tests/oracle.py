"""Shared test helpers of the correctness oracle, re-exported from :mod:`invgen.testing.oracle` (the public copy
that plugin authors use), plus the easy problems in the ``(shape, make_operator, std)`` form the older tests read
and a dense test operator without an SVD.
"""

from __future__ import annotations

import torch

from invgen.operators.base import LinearOperator
from invgen.testing.oracle import (
    CASES as ALL_CASES,
)
from invgen.testing.oracle import (  # noqa: F401
    EASY,
    HARD,
    N,
    Problem,
    directions,
    evaluate,
    exact_log_evidence,
    floors,
    gaussian,
    gen,
    mixture_responsibilities,
    nn_median,
    noise_floor,
    overlapping_mixture,
    problem,
    separated_mixture,
    sliced_wasserstein,
    weight_error,
)

F64 = torch.float64
# the easy problems: name -> (image shape, operator factory taking the noise std, noise std)
CASES = {name: (ALL_CASES[name].shape, ALL_CASES[name].operator, ALL_CASES[name].std) for name in EASY}


class DenseOperator(LinearOperator):
    """A dense-matrix linear operator without an SVD, built independently of the operator library (its algebra
    exercises the conjugate-gradient paths)."""

    name = "dense"

    def __init__(self, matrix: torch.Tensor, x_shape: tuple[int, int, int], noise=None) -> None:
        super().__init__(noise)
        self.matrix, self.x_shape = matrix.to(F64), tuple(x_shape)

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.matrix.to(x.dtype).T

    def adjoint(self, y):
        return (y @ self.matrix.to(y.dtype)).reshape(y.shape[0], *self.x_shape)

    def output_shape(self, x_shape):
        return (x_shape[0], self.matrix.shape[0])

    def input_shape(self, y_shape):
        return (y_shape[0], *self.x_shape)
