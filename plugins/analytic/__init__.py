"""The analytic prior family: a Gaussian and a Gaussian mixture, exact in every capability they offer.

Their denoisers, scores and log-densities are closed forms, and so are their posteriors under linear operators with
Gaussian noise (``prior.exact_posterior(operator, y)``), which makes them the correctness oracle of the solvers.

* ``gaussian``: ``N(mu, Sigma)``; capabilities denoiser, score, log_density, generator (``x = mu + L z``).
* ``gmm``: ``sum_k pi_k N(mu_k, Sigma_k)``; capabilities denoiser, score, log_density.

Both are built from parameters (``invgen.prior("gmm", weights=..., means=..., covs=...)``) or, given only
``image_shape=(C, H, W)`` and ``seed``, as a seeded demo prior (``invgen.prior("gmm", image_shape=(1, 8, 8))``).
Modules holding the classes are imported only when a prior is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import invgen

__all__ = ["make_gaussian", "make_gmm", "register_priors"]


def make_gaussian(
    mean: Any = None,
    cov: Any = None,
    image_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
) -> Any:
    """Build a :class:`~invgen_plugins.analytic.gaussian.Gaussian`.

    Args:
        mean: ``(d,)`` or ``(C, H, W)`` mean; with ``cov`` omitted too, a seeded smooth random-field prior on
            ``image_shape`` is built instead (:func:`~invgen_plugins.analytic.gaussian.default_gaussian`).
        cov: ``(d, d)`` SPD covariance.
        image_shape: ``(C, H, W)``.
        seed: seed of the default prior (ignored when parameters are given).

    Returns:
        The prior.
    """
    from invgen_plugins.analytic.gaussian import Gaussian, default_gaussian

    if mean is None and cov is None:
        if image_shape is None:
            raise TypeError("gaussian: give mean and cov, or image_shape=(C, H, W) (and seed) for the default prior")
        return default_gaussian(tuple(image_shape), seed=seed)
    if mean is None or cov is None:
        raise TypeError("gaussian: give both mean and cov (or neither, with image_shape, for the default prior)")
    return Gaussian(mean, cov, image_shape=image_shape)


def make_gmm(
    weights: Any = None,
    means: Any = None,
    covs: Any = None,
    image_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    k: int = 3,
) -> Any:
    """Build a :class:`~invgen_plugins.analytic.gmm.GMM`.

    Args:
        weights: ``(K,)`` positive weights; with ``means`` and ``covs`` omitted too, a seeded ``k``-component demo
            mixture around 0.5 on ``image_shape`` is built instead (:func:`~invgen_plugins.analytic.gmm.default_gmm`).
        means: ``(K, d)`` or ``(K, C, H, W)``.
        covs: ``(K, d, d)``.
        image_shape: ``(C, H, W)``.
        seed: seed of the default prior.
        k: number of components of the default prior.

    Returns:
        The prior.
    """
    from invgen_plugins.analytic.gmm import GMM, default_gmm

    given = [v is not None for v in (weights, means, covs)]
    if not any(given):
        if image_shape is None:
            raise TypeError(
                "gmm: give weights, means and covs, or image_shape=(C, H, W) (and seed) for the default prior"
            )
        return default_gmm(tuple(image_shape), seed=seed, k=k)
    if not all(given):
        raise TypeError("gmm: give all of weights, means and covs (or none, with image_shape, for the default prior)")
    return GMM(weights, means, covs, image_shape=image_shape)


@invgen.hookimpl
def register_priors(register: Callable[..., None]) -> None:
    """Register ``gaussian`` and ``gmm``; their ``examples`` (seeded demo priors) are what ``invgen check-prior``
    builds, since neither factory has a default shape."""
    register(
        "gaussian",
        make_gaussian,
        capabilities=("denoiser", "score", "log_density", "generator"),
        log_prob_kind="exact",
        examples=({"image_shape": (1, 8, 8)}, {"image_shape": (3, 4, 4)}),
        description="analytic Gaussian N(mu, Sigma): closed-form denoiser, score, log-density, x = mu + L z; "
        "exact posteriors for linear Gaussian problems",
    )
    register(
        "gmm",
        make_gmm,
        capabilities=("denoiser", "score", "log_density"),
        log_prob_kind="exact",
        examples=({"image_shape": (1, 8, 8)}, {"image_shape": (3, 4, 4)}),
        description="analytic Gaussian mixture: closed-form denoiser, score and log-density; exact posteriors for "
        "linear Gaussian problems",
    )
