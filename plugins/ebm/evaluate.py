"""Evidence that a trained energy is meaningful: energies of image sets and the AUROC of ``-E`` between two sets.

``-E(x, sigma)`` is an unnormalised log-density, so it can rank images (a normalising constant cancels in a
comparison at one noise level). The AUROC of that ranking between in-distribution test images and another set
(another dataset, noise) is the probability that a random in-distribution image gets the higher ``-E``.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def energies(prior, x: Tensor, sigma: float, batch: int = 250) -> Tensor:
    """``E(x, sigma)`` of a set of images in batches. Shape: ``(N, C, H, W)`` -> ``(N,)`` float64."""
    out = [prior.energy(x[i : i + batch], sigma).double() for i in range(0, x.shape[0], batch)]
    return torch.cat(out)


def auroc(positive: Tensor, negative: Tensor) -> float:
    """Area under the ROC curve of scores that should be higher for ``positive``: the Mann-Whitney statistic
    ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2`` over all pairs, from mid-ranks (ties counted half).

    Shapes: ``(P,)``, ``(Q,)``; both non-empty and finite.
    """
    pos, neg = positive.double().reshape(-1), negative.double().reshape(-1)
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError(f"auroc needs non-empty score sets, got {pos.numel()} and {neg.numel()}")
    if not (bool(torch.isfinite(pos).all()) and bool(torch.isfinite(neg).all())):
        raise ValueError("auroc: scores hold NaN/Inf values")
    allv = torch.cat([pos, neg])
    order = torch.argsort(allv, stable=True)
    # mid-ranks: tied values share the mean of the ranks they span
    _, inverse, counts = torch.unique_consecutive(allv[order], return_inverse=True, return_counts=True)
    mid = torch.cumsum(counts, 0).double() - (counts.double() - 1) / 2
    ranks = torch.empty_like(allv)
    ranks[order] = mid[inverse]
    p, q = pos.numel(), neg.numel()
    return float((ranks[:p].sum() - p * (p + 1) / 2) / (p * q))
