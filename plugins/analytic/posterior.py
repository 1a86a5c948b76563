"""Exact posteriors of the analytic priors under linear operators with Gaussian noise.

For ``y = A x + s n`` and a Gaussian prior ``N(mu, Sigma)``, with ``S = A Sigma A^T + s^2 I``:

* ``mean = mu + Sigma A^T S^{-1} (y - A mu)``,
* ``cov = Sigma - Sigma A^T S^{-1} A Sigma`` (symmetrised).

For a mixture each component is updated this way and re-weighted by its evidence,
``w_k ∝ pi_k N(y; A mu_k, A Sigma_k A^T + s^2 I)``; the mixture covariance is
``sum_k w_k (C_k + m_k m_k^T) - m m^T``. ``s = 0`` is allowed when every ``A Sigma_k A^T`` is invertible.

The dense matrix of ``A`` is built per observation item (an operator may hold per-item masks or kernels), by
applying it to the ``d`` unit images, batched for the ``B`` items; everything is computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from invgen.errors import RangeError, ShapeError


def dense_matrices(operator: Any, y: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The dense float64 matrices of a linear operator for each observation item.

    Args:
        operator: an invgen linear operator.
        y: observations ``(B, ...)``.

    Returns:
        ``A`` of shape ``(B, m, d)`` and the input shape ``(B, C, H, W)``.
    """
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    b, d = x_shape[0], math.prod(x_shape[1:])
    eye = torch.eye(d, dtype=torch.float64, device=y.device).reshape(d, 1, *x_shape[1:])
    # item j * B + b of the batch is the unit image e_j for observation item b (the operator's stacking layout)
    unit = eye.expand(d, b, *x_shape[1:]).reshape(d * b, *x_shape[1:])
    with torch.no_grad():
        cols = operator.forward(unit).to(torch.float64).reshape(d, b, -1)
    return cols.permute(1, 2, 0).contiguous(), x_shape


def _check_problem(operator: Any, who: str) -> float:
    if not getattr(operator, "linear", False):
        raise TypeError(
            f"{who}: the exact posterior needs a linear operator, got the nonlinear "
            f"{getattr(operator, 'name', type(operator).__name__)!r}"
        )
    noise = operator.noise
    if getattr(noise, "name", None) != "gaussian":
        raise TypeError(f"{who}: the exact posterior needs Gaussian observation noise, got {noise.name!r}")
    return float(noise.std)


def _chol(s: Tensor, who: str, std: float) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(s)
    if bool((info != 0).any()):
        hint = " (the noise std is 0 and A Sigma A^T is singular: give the operator noise std > 0)" if std == 0 else ""
        raise RangeError(f"{who}: the marginal covariance A Sigma A^T + s^2 I of y is not positive definite{hint}")
    return chol


def _problem(prior: Any, operator: Any, y: Tensor, who: str) -> tuple[float, Tensor, tuple[int, ...], Tensor]:
    """Validate a problem and return the noise std, the dense matrices, the input shape and the flat float64 y."""
    std = _check_problem(operator, who)
    a, x_shape = dense_matrices(operator, y)
    if tuple(x_shape[1:]) != tuple(prior.image_shape):
        raise ShapeError(
            f"{who}: the operator's input {tuple(x_shape[1:])} differs from the prior's image shape "
            f"{tuple(prior.image_shape)}"
        )
    return std, a, x_shape, y.reshape(y.shape[0], -1).to(torch.float64)


def _update(mu: Tensor, cov: Tensor, a: Tensor, yf: Tensor, std: float, who: str) -> tuple[Tensor, Tensor, Tensor]:
    """One Gaussian conditioning, batched: returns posterior means ``(B, d)``, covs ``(B, d, d)`` and
    ``log N(y; A mu, A Sigma A^T + s^2 I)`` ``(B,)``."""
    m = a.shape[1]
    a_cov = a @ cov  # (B, m, d)
    s = a_cov @ a.transpose(1, 2) + std**2 * torch.eye(m, dtype=a.dtype, device=a.device)
    s = 0.5 * (s + s.transpose(1, 2))
    chol = _chol(s, who, std)
    resid = yf - torch.einsum("bmd,d->bm", a, mu)
    gain = torch.cholesky_solve(a_cov, chol)  # S^{-1} A Sigma, (B, m, d)
    sol = torch.cholesky_solve(resid[:, :, None], chol)[:, :, 0]  # S^{-1} r
    mean = mu[None] + torch.einsum("bmd,bm->bd", a_cov, sol)
    post_cov = cov[None] - a_cov.transpose(1, 2) @ gain
    post_cov = 0.5 * (post_cov + post_cov.transpose(1, 2))
    half_logdet = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    log_ev = -0.5 * (resid * sol).sum(1) - half_logdet - 0.5 * m * math.log(2 * math.pi)
    return mean, post_cov, log_ev


def _factor(cov: Tensor) -> Tensor:
    """A square root ``F`` with ``F F^T = cov`` (PSD, eigenvalues clamped at 0), batched over leading dims."""
    evals, evecs = torch.linalg.eigh(cov)
    return evecs * evals.clamp_min(0).sqrt()[..., None, :]


@dataclass
class GaussianPosterior:
    """The exact Gaussian posterior of each observation item.

    Attributes:
        mean: ``(B, C, H, W)`` posterior means (in ``y``'s dtype).
        cov: ``(B, d, d)`` posterior covariances (in ``y``'s dtype).
    """

    mean: Tensor
    cov: Tensor
    _mean64: Tensor = field(repr=False)
    _cov64: Tensor = field(repr=False)
    _sqrt: Tensor | None = field(default=None, repr=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact posterior samples. Shape: -> ``(n, B, C, H, W)``."""
        if self._sqrt is None:
            self._sqrt = _factor(self._cov64)
        b, d = self._mean64.shape
        z = torch.randn(n, b, d, generator=generator, dtype=torch.float64, device=self._mean64.device)
        x = self._mean64[None] + torch.einsum("bde,nbe->nbd", self._sqrt, z)
        return x.reshape(n, *self.mean.shape).to(self.mean.dtype)


@dataclass
class GMMPosterior:
    """The exact mixture posterior of each observation item.

    Attributes:
        mean: ``(B, C, H, W)`` posterior means.
        cov: ``(B, d, d)`` posterior (mixture) covariances.
        weights: ``(B, K)`` posterior component weights.
        component_means: ``(B, K, C, H, W)``.
        component_covs: ``(B, K, d, d)``.
    """

    mean: Tensor
    cov: Tensor
    weights: Tensor
    component_means: Tensor
    component_covs: Tensor
    _w64: Tensor = field(repr=False)
    _means64: Tensor = field(repr=False)
    _covs64: Tensor = field(repr=False)
    _sqrt: Tensor | None = field(default=None, repr=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact posterior samples: a component from ``weights``, then its Gaussian. Shape: -> ``(n, B, C, H, W)``."""
        if self._sqrt is None:
            self._sqrt = _factor(self._covs64)
        b, k, d = self._means64.shape
        dev = self._means64.device
        comp = torch.multinomial(self._w64, n, replacement=True, generator=generator).T  # (n, B)
        z = torch.randn(n, b, d, generator=generator, dtype=torch.float64, device=dev)
        x = torch.empty(n, b, d, dtype=torch.float64, device=dev)
        for bi in range(b):
            for ki in range(k):
                sel = comp[:, bi] == ki
                if bool(sel.any()):
                    x[sel, bi] = self._means64[bi, ki] + z[sel, bi] @ self._sqrt[bi, ki].T
        return x.reshape(n, *self.mean.shape).to(self.mean.dtype)


def gaussian_posterior(prior: Any, operator: Any, y: Tensor) -> GaussianPosterior:
    """Exact posterior of a :class:`~invgen_plugins.analytic.gaussian.Gaussian` prior.

    Args:
        prior: the Gaussian prior.
        operator: a linear invgen operator with Gaussian noise (std >= 0).
        y: observations ``(B, ...)``.

    Returns:
        A :class:`GaussianPosterior`.
    """
    std, a, x_shape, yf = _problem(prior, operator, y, "gaussian.exact_posterior")
    kw = {"dtype": torch.float64, "device": y.device}
    mean, cov, _ = _update(prior.mean.to(**kw), prior.cov.to(**kw), a, yf, std, "gaussian.exact_posterior")
    return GaussianPosterior(mean.reshape(x_shape).to(y.dtype), cov.to(y.dtype), mean, cov)


def gmm_posterior(prior: Any, operator: Any, y: Tensor) -> GMMPosterior:
    """Exact posterior of a :class:`~invgen_plugins.analytic.gmm.GMM` prior.

    Args:
        prior: the mixture prior.
        operator: a linear invgen operator with Gaussian noise (std >= 0).
        y: observations ``(B, ...)``.

    Returns:
        A :class:`GMMPosterior`.
    """
    std, a, x_shape, yf = _problem(prior, operator, y, "gmm.exact_posterior")
    kw = {"dtype": torch.float64, "device": y.device}
    pi, mus, covs = prior.weights.to(**kw), prior.means.to(**kw), prior.covs.to(**kw)
    means, post_covs, log_ev = [], [], []
    for k in range(pi.numel()):
        m, c, ev = _update(mus[k], covs[k], a, yf, std, "gmm.exact_posterior")
        means.append(m)
        post_covs.append(c)
        log_ev.append(ev)
    means64 = torch.stack(means, 1)  # (B, K, d)
    covs64 = torch.stack(post_covs, 1)  # (B, K, d, d)
    w = torch.softmax(torch.log(pi)[None] + torch.stack(log_ev, 1), dim=1)  # (B, K)
    mean = (w[:, :, None] * means64).sum(1)
    second = (w[:, :, None, None] * (covs64 + means64[:, :, :, None] * means64[:, :, None, :])).sum(1)
    cov = second - mean[:, :, None] * mean[:, None, :]
    cov = 0.5 * (cov + cov.transpose(1, 2))
    dt = y.dtype
    return GMMPosterior(
        mean=mean.reshape(x_shape).to(dt),
        cov=cov.to(dt),
        weights=w.to(dt),
        component_means=means64.reshape(x_shape[0], -1, *x_shape[1:]).to(dt),
        component_covs=covs64.to(dt),
        _w64=w,
        _means64=means64,
        _covs64=covs64,
    )
