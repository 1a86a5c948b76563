"""Shared test helpers of the correctness oracle: distances between sample sets.

The sliced Wasserstein-2 distance compares two sets of N samples in R^d through P fixed random directions: each
set is projected on each direction, the sorted projections are matched (the exact 1-D optimal transport for equal
sizes), and the squared differences are averaged over samples and directions. Two exact sample sets of the same
size give a positive value, the *noise floor*; a sampler is judged against the distribution of that floor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

import invgen
from invgen.operators.base import LinearOperator
from invgen_plugins.analytic.gaussian import grid_covariance
from invgen_plugins.analytic.gmm import GMM
from invgen_plugins.analytic.posterior import GMMPosterior

F64 = torch.float64
N = 1000  # samples per problem (chains of a sampler, exact draws of the oracle)


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


# -- the shared exactness problems: a GMM prior on tiny images and linear Gaussian problems -------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(std: float):
    return invgen.noise("gaussian", std=std)


def overlapping_mixture(shape: tuple[int, int, int]) -> GMM:
    """Three overlapping components on a tiny image: different length scales, means apart along a smooth ramp."""
    d = math.prod(shape)
    covs = torch.stack(
        [
            grid_covariance(shape, 1.0, 0.12, 0.05),
            grid_covariance(shape, 2.0, 0.10, 0.07, 0.5),
            grid_covariance(shape, 0.5, 0.08, 0.06, 0.0),
        ]
    )
    ramp = torch.linspace(-1, 1, d, dtype=F64)
    means = torch.stack([0.5 + 0.12 * ramp, 0.5 - 0.10 * ramp, 0.5 + 0.08 * torch.cos(3 * ramp)])
    return GMM(torch.tensor([0.5, 0.3, 0.2]), means.reshape(3, *shape), covs)


CASES = {
    "identity": ((1, 4, 4), lambda s: invgen.operator("identity", noise=gaussian(s)), 0.1),
    "inpaint": (
        (1, 4, 4),
        lambda s: invgen.operator("inpaint", mask="random", ratio=0.5, seed=0, noise=gaussian(s)),
        0.05,
    ),
    "superres": ((1, 4, 4), lambda s: invgen.operator("superres", scale=2, kernel="block", noise=gaussian(s)), 0.05),
    "colorize": ((3, 2, 2), lambda s: invgen.operator("colorize", noise=gaussian(s)), 0.05),
    "sensing": ((1, 4, 4), lambda s: invgen.operator("sensing", m=8, seed=0, noise=gaussian(s)), 0.05),
}


@dataclass
class Problem:
    prior: GMM
    op: LinearOperator
    y: torch.Tensor
    post: GMMPosterior
    exact: torch.Tensor  # (N, C, H, W) exact samples
    dirs: torch.Tensor
    sw_floor: torch.Tensor
    we_floor: torch.Tensor

    def mix(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.post.weights[0], self.post.component_means[0], self.post.component_covs[0]

    def stats(self, samples: torch.Tensor) -> tuple[float, float]:
        return sliced_wasserstein(samples, self.exact, self.dirs), weight_error(samples, *self.mix())


@functools.cache
def problem(name: str) -> Problem:
    """y from the prior's mean image (so the posterior weights are balanced), the exact posterior and its floors."""
    shape, make, std = CASES[name]
    prior, op = overlapping_mixture(shape), make(std)
    x = (prior.weights[:, None] * prior.means).sum(0).reshape(1, *shape)
    y = op.measure(x, generator=gen(6))
    post = prior.exact_posterior(op, y)
    dirs = directions(prior.d, 200)
    sw_floor = noise_floor(lambda n, g: post.sample(n, g)[:, 0], N, dirs, pairs=20)
    mix = (post.weights[0], post.component_means[0], post.component_covs[0])
    we_floor = torch.tensor([weight_error(post.sample(N, gen(300 + i))[:, 0], *mix) for i in range(20)])
    exact = post.sample(N, gen(99))[:, 0]
    return Problem(prior, op, y, post, exact, dirs, sw_floor, we_floor)


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
