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


def png_bits(x: Tensor) -> Tensor:
    """Lossless code length of each 8-bit image in bits: the size of its PNG (zlib, ``optimize=True``) times 8.

    The complexity estimate ``L(x)`` of Serrà et al. (ICLR 2020, "Input complexity and out-of-distribution detection
    with likelihood-based generative models"). Shape: ``(N, C, H, W)`` in [0, 1] -> ``(N,)`` float64.
    """
    import io

    import numpy as np
    from PIL import Image

    out = []
    for im in x:
        a = (im.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else np.ascontiguousarray(a)).save(buf, "PNG", optimize=True)
        out.append(8 * len(buf.getvalue()))
    return torch.tensor(out, dtype=torch.float64)


def complexity_corrected(energy: Tensor, bits: Tensor) -> Tensor:
    """In-distribution score ``-E(x) / ln 2 + L(x)``: the model's log-likelihood in bits (up to a constant) plus the
    compressor's code length, i.e. minus Serrà et al.'s ``S(x) = -log2 p(x) - L(x)``. Higher = more in-distribution.

    Likelihood models rank simple images (few bits, e.g. MNIST digits) above their own data; subtracting what a
    generic compressor already explains removes that bias. Shapes: ``(N,)``, ``(N,)`` -> ``(N,)``.
    """
    import math

    return -energy.double() / math.log(2.0) + bits.double()
