"""The analytic Gaussian-mixture prior ``x ~ sum_k pi_k N(mu_k, Sigma_k)`` over images.

Smoothing by Gaussian noise of std ``s`` keeps it a mixture, ``p_s = sum_k pi_k N(mu_k, Sigma_k + s^2 I)``, so with
the responsibilities ``w_k(x) ∝ pi_k N(x; mu_k, Sigma_k + s^2 I)`` (computed in log space):

* denoiser ``E[x0 | x] = sum_k w_k(x) [mu_k + Sigma_k (Sigma_k + s^2 I)^{-1} (x - mu_k)]``;
* score ``grad log p_s(x) = -sum_k w_k(x) (Sigma_k + s^2 I)^{-1} (x - mu_k)``;
* exact ``log_prob`` by log-sum-exp.

It has no generator capability (a discrete component index is not a smooth function of a Gaussian latent), but
:meth:`GMM.sample` draws exact samples. Parameters are float64; methods return the input's dtype and device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.errors import RangeError, ShapeError
from invgen.priors.base import Prior
from invgen_plugins.analytic.gaussian import (
    MAX_DIM,
    check_covariance,
    flatten,
    grid_covariance,
    image_shape_of,
    sample_device,
    sigma2,
)


class GMM(Prior):
    """Gaussian mixture prior with ``K`` full-covariance components.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, d)`` or ``(K, C, H, W)`` component means.
        covs: ``(K, d, d)`` symmetric positive-definite component covariances.
        image_shape: ``(C, H, W)``; needed when the means are flat.

    Shape:
        x: ``(B, C, H, W)``; ``sigma`` a float or ``(B,)``.

    Example:
        >>> prior = GMM([0.5, 0.5], torch.rand(2, 1, 4, 4), 0.01 * torch.eye(16).expand(2, 16, 16))
        >>> prior.log_prob(torch.rand(3, 1, 4, 4)).shape
        torch.Size([3])
    """

    name = "gmm"
    capabilities = frozenset({"denoiser", "score", "log_density"})
    log_prob_kind = "exact"

    def __init__(self, weights: Any, means: Any, covs: Any, image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        weights = torch.as_tensor(weights).detach().to(torch.float64)
        means = torch.as_tensor(means).detach().to(torch.float64)
        if weights.dim() != 1 or weights.numel() < 1:
            raise ShapeError(f"gmm: weights must be a (K,) vector, got shape {tuple(weights.shape)}")
        k = weights.numel()
        if not bool(torch.isfinite(weights).all()) or bool((weights <= 0).any()):
            raise RangeError(f"gmm: weights must be finite and > 0, got {weights.tolist()}")
        if means.dim() not in (2, 4) or means.shape[0] != k:
            raise ShapeError(
                f"gmm: means must be (K, d) or (K, C, H, W) with K = {k} (the number of weights), got "
                f"shape {tuple(means.shape)}"
            )
        if not bool(torch.isfinite(means).all()):
            raise RangeError("gmm: means hold NaN/Inf values")
        d = means[0].numel()
        if d > MAX_DIM:
            raise ShapeError(f"gmm: dense covariances of {d} x {d} are too large (at most {MAX_DIM} values)")
        self.image_shape = image_shape_of(d, tuple(means.shape[1:]), image_shape, "gmm")
        covs = torch.as_tensor(covs).detach().to(torch.float64)
        if covs.shape != (k, d, d):
            raise ShapeError(f"gmm: covs must be (K, d, d) = ({k}, {d}, {d}), got shape {tuple(covs.shape)}")
        covs = torch.stack([check_covariance(covs[i], d, "gmm", f"covs[{i}]") for i in range(k)])
        # Tied covariances (every component the same) take a fast path: one rotation of x instead of K.
        self.tied = bool(all(torch.equal(covs[i], covs[0]) for i in range(1, k)))
        evals, evecs = torch.linalg.eigh(covs[:1] if self.tied else covs)
        if self.tied:
            evals, evecs = evals.expand(k, d).contiguous(), evecs.expand(k, d, d).contiguous()
        self.k, self.d = k, d
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means.reshape(k, d))
        self.register_buffer("covs", covs)
        self.register_buffer("evals", evals)
        self.register_buffer("evecs", evecs)

    # -- internals ------------------------------------------------------------------------------------------------
    def _p(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        kw = {"dtype": torch.float64, "device": like.device}
        return self.weights.to(**kw), self.means.to(**kw), self.evals.to(**kw), self.evecs.to(**kw)

    def _components(self, x: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per component: rotated residuals ``z = Q_k^T (x - mu_k)`` ``(B, K, d)``, variances ``l_k + s^2``
        ``(B, K, d)``, log responsibilities ``(B, K)`` and the unnormalised log joint ``(B, K)``."""
        pi, mu, lam, q = self._p(x)
        xf = flatten(x, self.d, "gmm")
        if self.tied:  # Q^T (x - mu_k) = Q^T x - Q^T mu_k with one Q
            z = (xf @ q[0])[:, None, :] - (mu @ q[0])[None]  # (B, K, d)
        else:
            z = torch.bmm(xf[None, :, :] - mu[:, None, :], q).transpose(0, 1)  # (B, K, d)
        if isinstance(sigma, (int, float)):  # one noise level: (1, K, d) broadcasts, log det computed once
            var = lam[None] + sigma2(sigma, x[:1])[:, :, None]
        else:
            var = lam[None] + sigma2(sigma, x)[:, :, None]
        log_joint = (
            torch.log(pi)[None]
            - 0.5 * (z * z * (1.0 / var)).sum(2)  # 1 / var is small: (1 or B, K, d)
            - 0.5 * torch.log(var).sum(2)
            - 0.5 * self.d * math.log(2 * math.pi)
        )
        return z, var, torch.log_softmax(log_joint, dim=1), log_joint

    def _out(self, flat: Tensor, like: Tensor) -> Tensor:
        return flat.reshape(flat.shape[0], *self.image_shape).to(like.dtype)

    # -- capabilities ---------------------------------------------------------------------------------------------
    def responsibilities(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``w_k(x) = p(k | x)`` under the ``sigma``-smoothed mixture. Shape: ``(B, C, H, W)`` -> ``(B, K)``."""
        return self._components(x, sigma)[2].exp().to(x.dtype)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``E[x0 | x]`` for ``x = x0 + sigma n``. Shape: ``(B, C, H, W)`` -> same."""
        _, mu, lam, q = self._p(x)
        z, var, log_w, _ = self._components(x, sigma)
        w = log_w.exp()[:, :, None]
        if self.tied:  # sum_k w_k Q D_k z_k = Q sum_k w_k D_k z_k
            return self._out((w * mu[None]).sum(1) + (w * z * (lam[None] / var)).sum(1) @ q[0].T, x)
        # Sigma_k (Sigma_k + s^2 I)^-1 (x - mu_k), rotated back: (B, K, d)
        shrunk = torch.bmm((z * (lam[None] / var)).transpose(0, 1), q.transpose(1, 2)).transpose(0, 1)
        return self._out((w * (mu[None] + shrunk)).sum(1), x)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``grad log p_sigma(x)``. Shape: ``(B, C, H, W)`` -> same."""
        _, _, _, q = self._p(x)
        z, var, log_w, _ = self._components(x, sigma)
        if self.tied:
            return self._out(-(log_w.exp()[:, :, None] * z * (1.0 / var)).sum(1) @ q[0].T, x)
        comp = torch.bmm((z * (1.0 / var)).transpose(0, 1), q.transpose(1, 2)).transpose(0, 1)
        return self._out(-(log_w.exp()[:, :, None] * comp).sum(1), x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` per item. Shape: ``(B, C, H, W)`` -> ``(B,)``."""
        return torch.logsumexp(self._components(x, 0.0)[3], dim=1).to(x.dtype)

    # -- conveniences ---------------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Draw ``n`` exact samples (not clamped to [0, 1]). Shape: -> ``(n, C, H, W)``."""
        dev = sample_device(n, generator, device)
        like = torch.empty(0, device=dev)
        pi, mu, lam, q = self._p(like)
        comp = torch.multinomial(pi, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64, device=dev)
        x = mu[comp] + torch.einsum("nd,ned->ne", z * lam[comp].sqrt(), q[comp])
        return x.reshape(n, *self.image_shape).to(dtype)

    def exact_posterior(self, operator: Any, y: Tensor) -> Any:
        """The exact mixture posterior ``p(x | y)`` of a linear operator with Gaussian noise.

        See :func:`invgen_plugins.analytic.posterior.gmm_posterior`.
        """
        from invgen_plugins.analytic.posterior import gmm_posterior

        return gmm_posterior(self, operator, y)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights.clone(),
            "means": self.means.clone(),
            "covs": self.covs.clone(),
            "image_shape": self.image_shape,
        }

    def extra_repr(self) -> str:
        return f"K={self.k}, image_shape={self.image_shape}"


def default_gmm(image_shape: tuple[int, int, int], seed: int = 0, k: int = 3) -> GMM:
    """A ``K = 3`` demo mixture around 0.5 with image-like covariances.

    Component ``k`` has mean ``0.5`` plus a smooth seeded offset (pixel std about 0.1) and covariance
    :func:`grid_covariance` with its own length scale (1/6, 1/4 and 1/3 of the image side), pixel std 0.12 and a
    white-noise std of 0.06; the weights are seeded and bounded away from zero (0.15 + U(0, 1), normalised).
    """
    c, h, w = (int(s) for s in image_shape)
    d = c * h * w
    gen = torch.Generator().manual_seed(int(seed))
    side = max(h, w)
    fractions = [1 / 6, 1 / 4, 1 / 3, 1 / 5, 1 / 2]
    means, covs = [], []
    for i in range(k):
        ell = max(0.75, side * fractions[i % len(fractions)])
        cov = grid_covariance((c, h, w), ell, 0.12, 0.06)
        field = grid_covariance((c, h, w), max(1.0, side / 4), 1.0, 0.0, 0.9) + 1e-9 * torch.eye(d, dtype=torch.float64)
        evals, evecs = torch.linalg.eigh(field)
        offset = evecs @ (evals.clamp_min(0).sqrt() * torch.randn(d, generator=gen, dtype=torch.float64))
        means.append(0.5 + 0.1 * offset)
        covs.append(cov)
    weights = 0.15 + torch.rand(k, generator=gen, dtype=torch.float64)
    return GMM(weights, torch.stack(means).reshape(k, c, h, w), torch.stack(covs))
