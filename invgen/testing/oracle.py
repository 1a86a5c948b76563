"""The exact-posterior oracle: Gaussian-mixture posteriors in closed form, and the statistics that judge a sampler.

A solver is run with ``N`` chains on a problem whose posterior is known exactly (the analytic ``gmm`` prior under a
linear operator with Gaussian noise), and its samples are compared with exact posterior samples by two statistics:

* the **sliced Wasserstein-2 distance** (SW) through ``P = 200`` fixed random directions: both sets are projected on
  each direction, the sorted projections are matched (the exact 1-D optimal transport for equal sizes), and the
  squared differences are averaged over samples and directions;
* the **mixture-weight error** ``max_k |mean_n p(k | x_n, y) - w_k|``: zero in expectation for exact samples, since
  ``E[p(k | x)] = w_k``; it sees wrong mode proportions, which sliced distances see poorly.

Two independent exact sets of the same size give positive values of both, the **noise floors**; a sampler is judged
in multiples of the floor's maximum over 20 replicates (1.0 = as close as an exact sampler of that size gets).

Problems (``problem(name)``, cached; ``EASY`` and ``HARD`` list the names):

* easy (the historical suite): a 3-component mixture of overlapping components on 16-pixel images (1x4x4, or 3x2x2
  for colorization), y from the prior's mean image, noise std 0.05-0.1: posteriors near-Gaussian with balanced
  weights, where every reasonable approximation looks good;
* hard: a 25-component mixture with well-separated components (a prior sample's own component has responsibility
  0.995 to 0.99999 on average: they barely overlap) and prior weights decaying as ``0.8^k`` (0.20 down to 0.0012),
  observed with noise std 0.01 at the midpoint of two *low-weight* components, so the posterior moves most of its
  mass to components the prior almost never visits and splits it between several of them:

  ============  ===========  ==========================================  ===================  ============
  name          d            observation                                 posterior weights    prior -> post
  ============  ===========  ==========================================  ===================  ============
  hard-inpaint  64 (8x8)     8 random pixels of 64 seen (87.5 % missing)  0.57 / 0.23 / 0.13   TV 0.77
  hard-sensing  64 (8x8)     m = 6 Gaussian measurements (m / d = 0.09)   0.71 / 0.08 / 0.07   TV 0.88
  hard-sr4      256 (16x16)  x4 block super-resolution, m = 16           0.66 / 0.22 / 0.08   TV 0.78
  ============  ===========  ==========================================  ===================  ============

  (posterior weights: the three largest; TV: total-variation distance between prior and posterior weights.) Why
  they are hard: guidance samplers linearise ``p(y | x_t)`` around one denoised estimate and follow the prior's
  weights early on, when the noise hides the data, so they under-weight the rare components; local MCMC stays in
  the mode it starts in; the sparse and ill-conditioned observations leave most of x to the prior's multimodal
  conditional. The 8x8 problems have 25 distinct covariances (squared-exponential length scales 0.75 to 2.7 px,
  pixel std 0.05, white 0.02); the 16x16 one shares one covariance (length 4 px, std 0.06) so that the mixture's
  denoiser costs one rotation instead of 25 at d = 256.

Example:
    >>> from invgen.testing.oracle import evaluate
    >>> r = evaluate("pigdm", "hard-inpaint", steps=100)
    >>> r.sw_multiple, r.weight_multiple, r.nfe, r.seconds  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

F64 = torch.float64
N = 1000  # samples per problem (chains of a sampler, exact draws of the oracle)
PAIRS = 20  # replicates of the noise floors


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
        raise ValueError(f"sliced_wasserstein: equal sample counts needed, got {a.shape[0]} and {b.shape[0]}")
    pa = torch.sort(a.reshape(a.shape[0], -1).to(torch.float64) @ dirs.T, dim=0).values
    pb = torch.sort(b.reshape(b.shape[0], -1).to(torch.float64) @ dirs.T, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def noise_floor(sample: Callable[..., Tensor], n: int, dirs: Tensor, pairs: int = PAIRS, seed: int = 100) -> Tensor:
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


# -- the mixtures ---------------------------------------------------------------------------------------------------
def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(std: float) -> Any:
    import invgen

    return invgen.noise("gaussian", std=std)


def overlapping_mixture(shape: tuple[int, int, int]) -> Any:
    """Three overlapping components on a tiny image: different length scales, means apart along a smooth ramp."""
    from invgen_plugins.analytic.gaussian import grid_covariance
    from invgen_plugins.analytic.gmm import GMM

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


def separated_mixture(
    shape: tuple[int, int, int],
    k: int = 25,
    *,
    mean_std: float = 0.1,
    comp_std: float = 0.05,
    nugget: float = 0.02,
    tied: bool = False,
    decay: float = 0.8,
    seed: int = 0,
) -> Any:
    """``K`` components with well-separated means and strongly unequal weights (the hard problems).

    Means: ``0.5 + mean_std * f_k`` with ``f_k`` seeded smooth random fields (squared-exponential, length a quarter
    of the image side, unit pixel std). Covariances: :func:`grid_covariance` with pixel std ``comp_std``, white std
    ``nugget`` and length scales from 0.75 px to a third of the side (``tied``: one covariance, length a quarter of
    the side). Weights: ``decay^k``, normalised.
    """
    from invgen_plugins.analytic.gaussian import grid_covariance
    from invgen_plugins.analytic.gmm import GMM

    c, h, w = shape
    side, d = max(h, w), c * h * w
    g = gen(seed)
    field = grid_covariance(shape, side / 4, 1.0, 0.0, 0.9) + 1e-9 * torch.eye(d, dtype=F64)
    evals, evecs = torch.linalg.eigh(field)
    means = 0.5 + mean_std * ((evecs * evals.clamp_min(0).sqrt()) @ torch.randn(d, k, generator=g, dtype=F64)).T
    if tied:
        covs = grid_covariance(shape, side / 4, comp_std, nugget).expand(k, d, d).clone()
    else:
        scales = [0.75 + (side / 3 - 0.75) * i / (k - 1) for i in range(k)]
        covs = torch.stack([grid_covariance(shape, s, comp_std, nugget) for s in scales])
    return GMM(decay ** torch.arange(k, dtype=F64), means.reshape(k, *shape), covs)


# -- the problems ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One oracle problem: image shape, operator factory (given the noise std), noise std, the prior, and where y
    comes from (``None``: the prior's mean image; ``(a, b)``: the midpoint of component means a and b)."""

    shape: tuple[int, int, int]
    operator: Callable[[float], Any]
    std: float
    prior: Callable[[], Any]
    truth: tuple[int, int] | None = None
    description: str = ""


def _op(name: str, **kw: Any) -> Callable[[float], Any]:
    def make(std: float) -> Any:
        import invgen

        return invgen.operator(name, noise=gaussian(std), **kw)

    return make


CASES: dict[str, Case] = {
    "identity": Case((1, 4, 4), _op("identity"), 0.1, lambda: overlapping_mixture((1, 4, 4)), None, "denoising"),
    "inpaint": Case(
        (1, 4, 4),
        _op("inpaint", mask="random", ratio=0.5, seed=0),
        0.05,
        lambda: overlapping_mixture((1, 4, 4)),
        None,
        "inpainting 50 %",
    ),
    "superres": Case(
        (1, 4, 4),
        _op("superres", scale=2, kernel="block"),
        0.05,
        lambda: overlapping_mixture((1, 4, 4)),
        None,
        "SR x2",
    ),
    "colorize": Case((3, 2, 2), _op("colorize"), 0.05, lambda: overlapping_mixture((3, 2, 2)), None, "colorization"),
    "sensing": Case(
        (1, 4, 4), _op("sensing", m=8, seed=0), 0.05, lambda: overlapping_mixture((1, 4, 4)), None, "sensing m=8/16"
    ),
    "hard-inpaint": Case(
        (1, 8, 8),
        _op("inpaint", mask="random", ratio=0.875, seed=0),
        0.01,
        lambda: separated_mixture((1, 8, 8)),
        (20, 22),
        "8 of 64 pixels seen",
    ),
    "hard-sensing": Case(
        (1, 8, 8),
        _op("sensing", m=6, seed=0),
        0.01,
        lambda: separated_mixture((1, 8, 8)),
        (20, 22),
        "sensing m=6/64",
    ),
    "hard-sr4": Case(
        (1, 16, 16),
        _op("superres", scale=4, kernel="block"),
        0.01,
        lambda: separated_mixture((1, 16, 16), mean_std=0.06, comp_std=0.06, tied=True),
        (18, 23),
        "SR x4, d=256",
    ),
}
EASY = ("identity", "inpaint", "superres", "colorize", "sensing")
HARD = ("hard-inpaint", "hard-sensing", "hard-sr4")


@dataclass
class Problem:
    """An oracle problem with its exact posterior, ``N`` exact samples and the noise floors (20 replicates)."""

    name: str
    prior: Any
    op: Any
    y: Tensor
    post: Any
    exact: Tensor  # (N, C, H, W) exact samples
    dirs: Tensor
    sw_floor: Tensor
    we_floor: Tensor

    def mix(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.post.weights[0], self.post.component_means[0], self.post.component_covs[0]

    def stats(self, samples: Tensor) -> tuple[float, float]:
        """(SW to the exact samples, mixture-weight error) of ``(N, C, H, W)`` samples."""
        return sliced_wasserstein(samples, self.exact, self.dirs), weight_error(samples, *self.mix())

    def multiples(self, samples: Tensor) -> tuple[float, float]:
        """The two statistics as multiples of their floors' maxima."""
        sw, we = self.stats(samples)
        return sw / float(self.sw_floor.max()), we / float(self.we_floor.max())

    def variance_ratio(self, samples: Tensor) -> float:
        """Total variance of the samples over the exact posterior's (trace ratio): 1 for a calibrated sampler."""
        s = samples.reshape(samples.shape[0], -1).to(F64)
        return float(s.var(0).sum() / torch.diagonal(self.post.cov[0].to(F64)).sum())


@functools.cache
def problem(name: str) -> Problem:
    """The named problem (``EASY`` or ``HARD``): y, the exact posterior and its floors (cached)."""
    if name not in CASES:
        raise KeyError(f"oracle problem {name!r} unknown; known: {', '.join(CASES)}")
    case = CASES[name]
    prior, op = case.prior(), case.operator(case.std)
    if case.truth is None:
        x = (prior.weights[:, None] * prior.means).sum(0).reshape(1, *case.shape)
    else:
        a, b = case.truth
        x = (0.5 * (prior.means[a] + prior.means[b])).reshape(1, *case.shape)
    y = op.measure(x, generator=gen(6))
    post = prior.exact_posterior(op, y)
    dirs = directions(prior.d, 200)
    sw_floor = noise_floor(lambda n, g: post.sample(n, g)[:, 0], N, dirs, pairs=PAIRS)
    mix = (post.weights[0], post.component_means[0], post.component_covs[0])
    we_floor = torch.tensor([weight_error(post.sample(N, gen(300 + i))[:, 0], *mix) for i in range(PAIRS)])
    exact = post.sample(N, gen(99))[:, 0]
    return Problem(name, prior, op, y, post, exact, dirs, sw_floor, we_floor)


def exact_log_evidence(pb: Problem) -> float:
    """The exact ``log p(y)`` of a problem: ``logsumexp_k [log pi_k + log N(y; A mu_k, A Sigma_k A^T + s^2 I)]``,
    from the operator's dense matrix (independent of the prior's posterior code)."""
    from torch.distributions import MultivariateNormal

    prior, op = pb.prior, pb.op
    a = op.to_matrix((1, *prior.image_shape)).to(F64)
    std = float(op.noise.std)
    yf = pb.y.reshape(-1).to(F64)
    eye = torch.eye(a.shape[0], dtype=F64)
    terms = [
        torch.log(prior.weights[k])
        + MultivariateNormal(a @ prior.means[k], a @ prior.covs[k] @ a.T + std**2 * eye).log_prob(yf)
        for k in range(prior.k)
    ]
    return float(torch.logsumexp(torch.stack(terms), 0))


def nn_median(x: Tensor) -> float:
    """Median over ``(N, ...)`` samples of the distance of each to its nearest other sample: a set of near-duplicates
    (collapsed particles) has a value far below an exact set's of the same size."""
    x = x.reshape(x.shape[0], -1).to(F64)
    d = torch.cdist(x, x)
    d.fill_diagonal_(math.inf)
    return float(d.min(1).values.median())


@functools.cache
def floors(name: str, n: int) -> tuple[float, float]:
    """(SW, weight-error) floor maxima of a problem for ``n`` samples (20 pairs of exact sets; cached)."""
    pb = problem(name)
    if n == N:
        return float(pb.sw_floor.max()), float(pb.we_floor.max())
    sw = noise_floor(lambda m, g: pb.post.sample(m, g)[:, 0], n, pb.dirs)
    we = max(weight_error(pb.post.sample(n, gen(300 + i))[:, 0], *pb.mix()) for i in range(PAIRS))
    return float(sw.max()), float(we)


@dataclass
class Result:
    """One solver on one problem: the statistics, their multiples of the floors, NFE and seconds."""

    problem: str
    solver: str
    sw: float
    weight_error: float
    sw_multiple: float
    weight_multiple: float
    variance_ratio: float
    nfe: int
    seconds: float


def evaluate(solver: Any, name: str, *, n_samples: int = N, seed: int = 1, **options: Any) -> Result:
    """Run a solver (registered name or :class:`~invgen.solvers.base.Solver`) on an oracle problem through
    :func:`invgen.solve` (float64) and measure it. With ``n_samples != N`` the statistics compare against the first
    ``n_samples`` exact draws and are still divided by the ``N``-sample floors (so they read high)."""
    import invgen

    pb = problem(name)
    post = invgen.solve(pb.y, pb.op, pb.prior, solver=solver, n_samples=n_samples, seed=seed, **options)
    s = post.samples[:, 0]
    if n_samples == N:
        sw, we = pb.stats(s)
    else:
        sw, we = sliced_wasserstein(s, pb.exact[:n_samples], pb.dirs), weight_error(s, *pb.mix())
    label = solver if isinstance(solver, str) else solver.name
    return Result(
        name,
        label,
        sw,
        we,
        sw / float(pb.sw_floor.max()),
        we / float(pb.we_floor.max()),
        pb.variance_ratio(s),
        post.nfe,
        post.seconds,
    )


__all__ = [
    "CASES",
    "EASY",
    "HARD",
    "N",
    "Problem",
    "Result",
    "directions",
    "evaluate",
    "exact_log_evidence",
    "floors",
    "mixture_responsibilities",
    "nn_median",
    "noise_floor",
    "overlapping_mixture",
    "problem",
    "separated_mixture",
    "sliced_wasserstein",
    "weight_error",
]
