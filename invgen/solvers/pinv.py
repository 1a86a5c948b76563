"""Pseudo-inverse baseline: ``x = A^+ y``, the minimum-norm least-squares solution, with no prior."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.solvers.base import require_linear


def pinv(prior: Any, operator: Any, y: Tensor, *, n_samples: int, generator: torch.Generator) -> Tensor:
    """The pseudo-inverse ``A^+ y`` of a linear operator, repeated ``n_samples`` times (deterministic).

    Args:
        prior: ignored (the baseline uses none).
        operator: a linear invgen operator (its closed-form ``pinv``, or conjugate gradients).
        y: observations.
        n_samples: number of (identical) samples N.
        generator: unused; the solver is deterministic.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_tensor(y, "y")
    require_linear(operator, "pinv")
    x = operator.pinv(y)
    return x.unsqueeze(0).expand(n_samples, *x.shape).clone()
