"""Shared test helpers of the correctness oracle: distances between sample sets.

The sliced Wasserstein-2 distance compares two sets of N samples in R^d through P fixed random directions: each
set is projected on each direction, the sorted projections are matched (the exact 1-D optimal transport for equal
sizes), and the squared differences are averaged over samples and directions. Two exact sample sets of the same
size give a positive value, the *noise floor*; a sampler is judged against the distribution of that floor.
"""

from __future__ import annotations

import torch
from torch import Tensor


def directions(d: int, n: int = 200, seed: int = 0) -> Tensor:
    """``n`` fixed unit vectors in R^d, float64. Shape: -> ``(n, d)``."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def sliced_wasserstein(a: Tensor, b: Tensor, dirs: Tensor) -> float:
    """Sliced Wasserstein-2 distance between two equal-size sample sets.

    Args:
        a, b: ``(N, ...)`` samples (flattened per sample to d values).
        dirs: ``(P, d)`` unit directions.

    Returns:
        ``sqrt(mean_p W2^2(a . dir_p, b . dir_p))``.
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"equal sample counts needed, got {a.shape[0]} and {b.shape[0]}")
    pa = torch.sort(a.reshape(a.shape[0], -1).to(torch.float64) @ dirs.T, dim=0).values
    pb = torch.sort(b.reshape(b.shape[0], -1).to(torch.float64) @ dirs.T, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def noise_floor(sample: callable, n: int, dirs: Tensor, pairs: int = 20, seed: int = 100) -> Tensor:
    """SW between ``pairs`` pairs of independent exact sets of ``n`` samples (``sample(n, generator)``)."""
    out = []
    for i in range(pairs):
        g = torch.Generator().manual_seed(seed + i)
        out.append(sliced_wasserstein(sample(n, g), sample(n, g), dirs))
    return torch.tensor(out, dtype=torch.float64)


def mixture_responsibilities(x: Tensor, weights: Tensor, means: Tensor, covs: Tensor) -> Tensor:
    """``p(k | x)`` of a Gaussian mixture, through ``torch.distributions`` (independent of the plugin's code).

    Args:
        x: ``(N, ...)`` samples, flattened to d values.
        weights: ``(K,)``; means: ``(K, ...)`` flattened to ``(K, d)``; covs: ``(K, d, d)``.

    Returns:
        ``(N, K)``.
    """
    from torch.distributions import MultivariateNormal

    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    k = weights.shape[0]
    mvn = MultivariateNormal(means.reshape(k, -1).to(torch.float64), covariance_matrix=covs.to(torch.float64))
    logp = mvn.log_prob(xf[:, None, :]) + torch.log(weights.to(torch.float64))[None]
    return torch.softmax(logp, dim=1)


def weight_error(x: Tensor, weights: Tensor, means: Tensor, covs: Tensor) -> float:
    """``max_k |mean_n p(k | x_n) - w_k|``: zero in expectation for exact samples of the mixture, since
    ``E[p(k | x)] = w_k``; sensitive to wrong mixture weights, which sliced distances see poorly."""
    r = mixture_responsibilities(x, weights, means, covs).mean(0)
    return float((r - weights.to(torch.float64)).abs().max())
