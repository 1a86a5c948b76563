"""Sequential Monte Carlo plumbing shared by the particle samplers :mod:`~invgen.solvers.tds`,
:mod:`~invgen.solvers.mcgdiff` and :mod:`~invgen.solvers.fps`.

Layout. A solve with ``N`` output samples of ``B`` observation items runs ``P = n_pop * B`` independent *populations*
of ``K`` particles each (``n_pop`` populations per observation item, ``N`` by default). The particles live in one
batch of ``K * P`` items, particle ``k`` of population ``p`` at index ``k * P + p``, and population ``p = n * B + b``
belongs to observation item ``b``: the :func:`~invgen.solvers.base.stack_batch` order, so an operator with per-item
masks or kernels sees ``K * n_pop`` stacked copies of its ``B`` items.

Weights. :class:`Weights` keeps each population's log-weights in float64, normalised (``logsumexp = 0``), and the
running log normalising constant ``log Z`` (the SMC estimate of the evidence): an incremental weight ``w`` multiplies
``Z`` by ``sum_k W_k w_k`` (``W`` the normalised weights) and re-normalises. Resampling is adaptive: a population is
resampled when its effective sample size ``ESS = 1 / sum_k W_k^2`` falls below ``threshold * K`` (systematic
resampling: one uniform per population, ``K`` evenly spaced points through the cumulative weights), after which its
weights are uniform; ``log Z`` is unchanged by resampling. ``Z`` is then an unbiased estimate of the evidence when the
resampling times are fixed (Del Moral 2004) and a consistent one with this adaptive rule (the tests find no bias
beyond the Monte Carlo noise: the same estimate with thresholds 0, 0.5 and 1).

Output. :meth:`Weights.draw` picks the returned samples: ``ceil(N / n_pop)`` draws per population by systematic
resampling of its final weights. With ``n_pop = N`` (the default) every output sample comes from its own population
(independent samples, each distributed as a ``K``-particle SMC draw); with fewer populations the draws of one
population are correlated and repeat particles where its ESS is small.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.solvers.base import check_steps
from invgen.solvers.schedules import prior_sigmas

F64 = torch.float64
SPACINGS = ("log", "uniform", "quad")


def check_particles(particles: Any, who: str) -> int:
    """``particles`` as an int >= 1, else a ``ValueError`` naming the solver."""
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"{who}: particles must be an integer >= 1, got {particles!r}")
    return particles


def check_threshold(threshold: Any, who: str) -> float:
    """The ESS threshold, a fraction of ``K`` in [0, 1] (0: never resample, 1: whenever the weights are not uniform)."""
    v = float(threshold)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise RangeError(f"{who}: ess_threshold must lie in [0, 1] (a fraction of the particles), got {threshold!r}")
    return v


def check_chunk(chunk: Any, who: str) -> int | None:
    """``chunk``: ``None`` (one network call per step) or an int >= 1 (items per call)."""
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{who}: chunk must be None or an integer >= 1 (items per network call), got {chunk!r}")
    return chunk


def check_populations(populations: Any, n_samples: int, who: str) -> int:
    """Populations per observation item: ``None`` gives ``n_samples`` (one per output sample), else an int in
    ``[1, n_samples]``."""
    if populations is None:
        return n_samples
    if isinstance(populations, bool) or not isinstance(populations, int) or not 1 <= populations <= n_samples:
        raise ValueError(
            f"{who}: populations must be None (one population per output sample) or an integer in [1, n_samples = "
            f"{n_samples}], got {populations!r}"
        )
    return populations


def check_options(
    steps: Any, particles: Any, ess_threshold: Any, populations: Any, n_samples: int, chunk: Any, y: Any, who: str
) -> tuple[int, float, int, int | None]:
    """The options every SMC sampler shares, checked (errors name ``who``): returns ``(K, threshold, populations,
    chunk)``."""
    check_steps(steps, who)
    k = check_particles(particles, who)
    threshold = check_threshold(ess_threshold, who)
    n_pop = check_populations(populations, n_samples, who)
    chunk = check_chunk(chunk, who)
    check_tensor(y, "y")
    return k, threshold, n_pop, chunk


def levels(prior: Any, steps: int, spacing: str, who: str) -> list[float]:
    """The ``steps`` descending noise levels ``s_0 > ... > s_L`` of the reverse chain.

    ``"log"``: geometric between the ends of the prior's schedule (``prior_sigmas``: about 78 and 0.005 for the
    default VP schedule), the same ratio ``s_{i+1} / s_i`` at every step; ``"uniform"`` and ``"quad"``: the prior's
    timesteps (:func:`~invgen.solvers.schedules.vp_sigmas`). Geometric levels make the DDPM chain much more accurate
    at a given step count on narrow distributions (the ancestral kernel ignores ``Cov[x0 | x_s]``, an error of order
    ``1 - s_{i+1}^2 / s_i^2`` per step where the noise is comparable to the data's scale): the variance of a 1-D
    Gaussian prior of std 0.05 comes out at 0.62 (uniform), 0.76 (quad) and 0.92 (log, with the last step of
    :func:`kernel`) of the truth at 100 steps, 0.76 / 0.85 / 0.96 at 200.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"{who}: spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing != "log":
        return [float(v) for v in prior_sigmas(prior, steps, spacing=spacing)]
    top, bottom = (float(v) for v in prior_sigmas(prior, 2))
    if steps == 1:
        return [top]
    ratio = math.log(bottom / top) / (steps - 1)
    return [top * math.exp(ratio * i) for i in range(steps - 1)] + [bottom]


def kernel(s: float, s_next: float) -> tuple[float, float]:
    """The reverse step from level ``s`` to ``s_next``: ``N(D + r (x - D), v I)`` with ``D = D(x, s)``.

    For ``s_next > 0`` the DDPM ancestral kernel, ``r = s_next^2 / s^2``, ``v = s_next^2 (1 - r)``; for the last step
    (``s_next = 0``) ``r = 0`` and ``v = s^2``: ``x_0 ~ N(D, s_L^2 I)`` keeps the smallest level's noise (the reverse
    of the forward step from 0 to ``s_L``), which unlike the deterministic ``x_0 = D`` can be conditioned on
    noiseless data and keeps the variance of narrow distributions (0.92 of the truth instead of 0.86 for a 1-D
    Gaussian of std 0.02 at 100 geometric steps). MCGdiff and FPS use it; TDS ends on ``D`` (its module says why).

    Returns:
        ``(r, v)``.
    """
    if s_next > 0:
        r = s_next**2 / s**2
        return r, s_next**2 * (1 - r)
    return 0.0, s**2


def chunked(fn: Callable[..., Any], chunk: int | None, *xs: Tensor) -> Any:
    """``fn(*slices)`` over slices of ``chunk`` items of the tensors ``xs`` (all at once for ``None``), outputs
    concatenated along the batch.

    ``fn`` returns a tensor or a tuple of tensors with the batch first; each call of ``fn`` is one network call.
    """
    if chunk is None or xs[0].shape[0] <= chunk:
        return fn(*xs)
    outs = [fn(*parts) for parts in zip(*(torch.split(x, chunk) for x in xs), strict=True)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


def calls_per_step(items: int, chunk: int | None) -> int:
    """Network calls that one step over ``items`` particles makes (``ceil(items / chunk)``, 1 for ``None``)."""
    return 1 if chunk is None else -(-items // chunk)


def systematic(log_w: Tensor, m: int, generator: torch.Generator) -> Tensor:
    """Systematic resampling: ``m`` ancestor indices per population.

    Args:
        log_w: ``(P, K)`` log-weights (any normalisation).
        m: draws per population.
        generator: the random generator (one uniform per population).

    Returns:
        ``(P, m)`` indices in ``[0, K)``, ascending within each population.
    """
    p, k = log_w.shape
    w = torch.softmax(log_w.to(F64), dim=1)
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0  # rounding: the last edge is exactly 1
    u = torch.rand((p, 1), generator=generator, dtype=F64, device=log_w.device)
    points = (u + torch.arange(m, dtype=F64, device=log_w.device)[None]) / m
    return torch.searchsorted(cdf, points, right=True).clamp_max(k - 1)


def ess(log_w: Tensor) -> Tensor:
    """Effective sample size ``1 / sum_k W_k^2`` of each population. Shape: ``(P, K)`` -> ``(P,)``."""
    w = torch.softmax(log_w.to(F64), dim=1)
    return 1.0 / (w * w).sum(1)


def gather(t: Tensor, idx: Tensor) -> Tensor:
    """Rows of the particle batch ``t`` (``(K * P, ...)``, particle ``k`` of population ``p`` at ``k * P + p``) picked
    by ancestor indices ``idx`` ``(P, K')`` -> ``(K' * P, ...)`` in the same layout."""
    p, k_new = idx.shape
    k = t.shape[0] // p
    cols = torch.arange(p, device=t.device)[None, :].expand(k_new, p)
    return t.reshape(k, p, *t.shape[1:])[idx.T.to(t.device), cols].reshape(k_new * p, *t.shape[1:])


class Weights:
    """Normalised float64 log-weights of ``P`` populations of ``K`` particles, the running evidence estimate and the
    record of ESS and resampling (module docstring).

    Args:
        populations: ``P``.
        particles: ``K``.
        threshold: resample a population when its ESS falls below ``threshold * K``.
        device: where the weights live.
    """

    def __init__(self, populations: int, particles: int, threshold: float, device: torch.device | str) -> None:
        self.p, self.k, self.threshold = populations, particles, threshold
        self.log_w = torch.full((populations, particles), -math.log(particles), dtype=F64, device=device)
        self.log_z = torch.zeros(populations, dtype=F64, device=device)
        self.ess: list[float] = []
        self.resamples = torch.zeros(populations, dtype=torch.long, device=device)

    def update(self, log_inc: Tensor) -> None:
        """Multiply the weights by the incremental weights ``exp(log_inc)`` given in particle-batch layout ``(K * P,)``
        (or ``(P, K)``); a population whose increments are all ``-inf`` keeps ``log Z = -inf``."""
        inc = log_inc.to(F64).reshape(self.k, self.p).T if log_inc.dim() == 1 else log_inc.to(F64)
        joint = self.log_w + inc
        norm = torch.logsumexp(joint, dim=1)
        self.log_z = self.log_z + norm
        finite = torch.isfinite(norm)
        self.log_w = torch.where(finite[:, None], joint - torch.where(finite, norm, 0.0)[:, None], self.log_w)

    def resample(self, generator: torch.Generator) -> Tensor | None:
        """Record the ESS and resample the populations below the threshold.

        Returns:
            ``(P, K)`` ancestor indices (the identity for populations not resampled), or ``None`` if none was.
        """
        e = ess(self.log_w)
        self.ess.append(float(e.mean()))
        low = e < self.threshold * self.k
        if not bool(low.any()):
            return None
        idx = systematic(self.log_w, self.k, generator)
        keep = torch.arange(self.k, device=idx.device)[None].expand_as(idx)
        idx = torch.where(low[:, None], idx, keep)
        self.log_w = torch.where(low[:, None], torch.full_like(self.log_w, -math.log(self.k)), self.log_w)
        self.resamples += low.long()
        return idx

    def draw(self, n_samples: int, n_pop: int, generator: torch.Generator) -> Tensor:
        """Ancestors of the ``N`` output samples: ``ceil(N / n_pop)`` systematic draws per population from its final
        weights, output sample ``n`` taken from population ``n mod n_pop`` (within each observation item).

        Returns:
            ``(N * B,)`` flat indices into the particle batch, in :func:`stack_batch` order of the output.
        """
        per = -(-n_samples // n_pop)
        idx = systematic(self.log_w, per, generator)  # (P, per)
        if per > 1:  # the draws come sorted by particle: shuffle them within each population
            order = torch.argsort(torch.rand(idx.shape, generator=generator, dtype=F64, device=idx.device), dim=1)
            idx = torch.gather(idx, 1, order)
        b = self.p // n_pop
        n = torch.arange(n_samples, device=idx.device)
        pop = (n % n_pop)[:, None] * b + torch.arange(b, device=idx.device)[None]  # (N, B) population of each output
        k = idx[pop, (n // n_pop)[:, None].expand_as(pop)]  # (N, B) particle within it
        return (k * self.p + pop).reshape(-1)

    def extras(self, n_pop: int) -> dict[str, Any]:
        """``ess`` ``(steps,)`` (mean over populations, in particles, recorded before each resampling decision),
        ``ess_final`` (the mean ESS of the final weights, from which the output samples are drawn), ``resamples``
        (resampling events per population, mean) and ``log_evidence`` ``(B,)``: the log of the mean of the ``n_pop``
        estimates of each observation item's evidence."""
        b = self.p // n_pop
        log_z = self.log_z.reshape(n_pop, b)
        return {
            "ess": torch.tensor(self.ess, dtype=F64),
            "ess_final": float(ess(self.log_w).mean()),
            "resamples": float(self.resamples.double().mean()),
            "log_evidence": torch.logsumexp(log_z, dim=0) - math.log(n_pop),
        }


def log_normal(r: Tensor, var: Tensor, mask: Tensor) -> Tensor:
    """``sum_j log N(r_j; 0, var_j)`` over the masked coordinates of each item, float64. Shape: -> ``(M,)``."""
    r, var = r.to(F64), torch.where(mask, var, 1.0).to(F64)
    out = torch.where(mask, -0.5 * (r * r / var + torch.log(2 * math.pi * var)), 0.0)
    return out.reshape(out.shape[0], -1).sum(1)
