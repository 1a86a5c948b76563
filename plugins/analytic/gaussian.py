"""The analytic Gaussian prior ``x ~ N(mu, Sigma)`` over images, exact in every capability.

One eigendecomposition ``Sigma = Q diag(l) Q^T`` serves every capability:

* denoiser ``E[x0 | x] = mu + Q diag(l / (l + s^2)) Q^T (x - mu)`` for ``x = x0 + s n``;
* score ``grad log p_s(x) = -(Sigma + s^2 I)^{-1} (x - mu)``;
* exact ``log_prob``;
* generator ``x = mu + L z`` with ``L = Q diag(sqrt(l))`` and ``z ~ N(0, I)``, encoder ``z = L^{-1} (x - mu)``.

Parameters are held in float64; every method computes in float64 and returns the input's dtype and device. Meant
for images of up to about ``d = C * H * W = 1024`` pixels (the covariance is dense).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import as_sigma, check_image
from invgen.errors import RangeError, ShapeError
from invgen.priors.base import Prior

MAX_DIM = 4096  # a dense d x d covariance beyond this is almost surely a mistake


def image_shape_of(d: int, mean_shape: tuple[int, ...], image_shape: Any, who: str) -> tuple[int, int, int]:
    """The ``(C, H, W)`` a prior lives on, from an explicit ``image_shape`` or an image-shaped mean."""
    if image_shape is None:
        if len(mean_shape) == 3:
            return tuple(int(s) for s in mean_shape)  # type: ignore[return-value]
        raise ShapeError(f"{who}: the mean is flat ({d} values); give image_shape=(C, H, W) with C * H * W = {d}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or math.prod(shape) != d or min(shape) < 1:
        raise ShapeError(f"{who}: image_shape must be (C, H, W) with C * H * W = {d}, got {tuple(image_shape)}")
    return shape  # type: ignore[return-value]


def check_covariance(cov: Any, d: int, who: str, name: str = "cov") -> Tensor:
    """Validate a ``(d, d)`` symmetric positive-definite matrix; return it symmetrised in float64.

    Raises:
        ShapeError: wrong shape. RangeError: non-finite, not symmetric, or not positive definite.
    """
    cov = torch.as_tensor(cov).detach().to(torch.float64)
    if cov.shape != (d, d):
        raise ShapeError(
            f"{who}: {name} must be a ({d}, {d}) matrix for a mean of {d} values, got shape {tuple(cov.shape)}"
        )
    if not bool(torch.isfinite(cov).all()):
        raise RangeError(f"{who}: {name} holds NaN/Inf values")
    scale = float(cov.abs().max())
    asym = float((cov - cov.T).abs().max())
    if asym > 1e-8 * max(scale, 1e-300):
        raise RangeError(f"{who}: {name} must be symmetric, got max |C - C^T| = {asym:.3g} (max |C| = {scale:.3g})")
    cov = 0.5 * (cov + cov.T)
    lmin = float(torch.linalg.eigvalsh(cov).min())
    if not lmin > d * torch.finfo(torch.float64).eps * scale:
        raise RangeError(
            f"{who}: {name} must be positive definite, got a smallest eigenvalue of {lmin:.3g} (add a "
            "small multiple of the identity, or use Gaussian.fit(..., shrinkage=...))"
        )
    return cov


def flatten(x: Tensor, d: int, who: str) -> Tensor:
    """``(B, C, H, W)`` -> float64 ``(B, d)``."""
    check_image(x, "x")
    if x[0].numel() != d:
        raise ShapeError(f"{who}: expected images of {d} values, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], d).to(torch.float64)


def sigma2(sigma: float | Tensor, x: Tensor) -> Tensor:
    """Noise variances as float64 ``(B, 1)``."""
    return as_sigma(sigma, x).reshape(x.shape[0], 1).to(torch.float64) ** 2


def grid_covariance(
    image_shape: tuple[int, int, int],
    length_scale: float,
    std: float,
    nugget: float,
    channel_corr: float = 0.8,
) -> Tensor:
    """An image-like covariance: squared-exponential in space, correlated channels, plus white noise.

    ``Sigma = std^2 * kron(R, K) + nugget^2 * I`` with ``K_ij = exp(-|p_i - p_j|^2 / (2 length_scale^2))`` over
    pixel positions and ``R`` the channel correlation (1 on the diagonal, ``channel_corr`` elsewhere).

    Returns:
        float64 ``(d, d)`` with ``d = C * H * W`` in ``(C, H, W)`` flattening order.
    """
    c, h, w = image_shape
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pos = torch.stack([ii.reshape(-1), jj.reshape(-1)], 1)
    k = torch.exp(-(torch.cdist(pos, pos) ** 2) / (2 * length_scale**2))
    r = torch.full((c, c), channel_corr, dtype=torch.float64)
    r.fill_diagonal_(1.0)
    return std**2 * torch.kron(r, k) + nugget**2 * torch.eye(c * h * w, dtype=torch.float64)


def sample_device(n: int, generator: torch.Generator | None, device: str | torch.device | None) -> Any:
    """Check a sample count and choose the device to draw on: ``device``, else the generator's, else the CPU."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    return device if device is not None else (generator.device if generator is not None else "cpu")


class Gaussian(Prior):
    """Gaussian prior ``N(mean, cov)`` on images of one shape, exact in all four capabilities.

    Args:
        mean: ``(d,)`` or image-shaped ``(C, H, W)`` mean.
        cov: ``(d, d)`` symmetric positive-definite covariance (flattened in ``(C, H, W)`` order).
        image_shape: ``(C, H, W)``; needed when ``mean`` is flat.

    Shape:
        x: ``(B, C, H, W)``; latent z: ``(B, d)``; ``sigma`` a float or ``(B,)``.

    Example:
        >>> prior = Gaussian(torch.full((1, 4, 4), 0.5), 0.01 * torch.eye(16))
        >>> prior.denoise(torch.rand(2, 1, 4, 4), 0.1).shape
        torch.Size([2, 1, 4, 4])
    """

    name = "gaussian"
    capabilities = frozenset({"denoiser", "score", "log_density", "generator"})
    log_prob_kind = "exact"

    def __init__(self, mean: Any, cov: Any, image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        mean = torch.as_tensor(mean).detach().to(torch.float64)
        if mean.dim() not in (1, 3):
            raise ShapeError(f"gaussian: mean must be (d,) or (C, H, W), got shape {tuple(mean.shape)}")
        d = mean.numel()
        if d > MAX_DIM:
            raise ShapeError(f"gaussian: a dense covariance of {d} x {d} is too large (at most {MAX_DIM} values)")
        if not bool(torch.isfinite(mean).all()):
            raise RangeError("gaussian: mean holds NaN/Inf values")
        self.image_shape = image_shape_of(d, tuple(mean.shape), image_shape, "gaussian")
        self.d = d
        cov = check_covariance(cov, d, "gaussian")
        evals, evecs = torch.linalg.eigh(cov)
        self.register_buffer("mean", mean.reshape(d))
        self.register_buffer("cov", cov)
        self.register_buffer("evals", evals)
        self.register_buffer("evecs", evecs)

    # -- internals ------------------------------------------------------------------------------------------------
    def _p(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kw = {"dtype": torch.float64, "device": like.device}
        return self.mean.to(**kw), self.evals.to(**kw), self.evecs.to(**kw)

    def _out(self, flat: Tensor, like: Tensor) -> Tensor:
        return flat.reshape(flat.shape[0], *self.image_shape).to(like.dtype)

    # -- capabilities ---------------------------------------------------------------------------------------------
    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``E[x0 | x]`` for ``x = x0 + sigma n``. Shape: ``(B, C, H, W)`` -> same."""
        mu, lam, q = self._p(x)
        z = (flatten(x, self.d, "gaussian") - mu) @ q
        z = z * (lam / (lam + sigma2(sigma, x)))
        return self._out(mu + z @ q.T, x)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``-(Sigma + sigma^2 I)^{-1} (x - mu)``. Shape: ``(B, C, H, W)`` -> same."""
        mu, lam, q = self._p(x)
        z = (flatten(x, self.d, "gaussian") - mu) @ q
        return self._out(-(z / (lam + sigma2(sigma, x))) @ q.T, x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log N(x; mu, Sigma)`` per item. Shape: ``(B, C, H, W)`` -> ``(B,)``."""
        mu, lam, q = self._p(x)
        z = (flatten(x, self.d, "gaussian") - mu) @ q
        lp = -0.5 * (z**2 / lam).sum(1) - 0.5 * torch.log(lam).sum() - 0.5 * self.d * math.log(2 * math.pi)
        return lp.to(x.dtype)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(d,)``: one standard normal value per pixel."""
        return (self.d,)

    def decode(self, z: Tensor) -> Tensor:
        """``mu + L z`` with ``L = Q diag(sqrt(l))``. Shape: ``(B, d)`` -> ``(B, C, H, W)``."""
        if z.dim() != 2 or z.shape[1] != self.d:
            raise ShapeError(f"gaussian: expected latents of shape (B, {self.d}), got {tuple(z.shape)}")
        mu, lam, q = self._p(z)
        return self._out(mu + (z.to(torch.float64) * lam.sqrt()) @ q.T, z)

    def encode(self, x: Tensor) -> Tensor:
        """``L^{-1} (x - mu)``, the exact inverse of :meth:`decode`. Shape: ``(B, C, H, W)`` -> ``(B, d)``."""
        mu, lam, q = self._p(x)
        z = (flatten(x, self.d, "gaussian") - mu) @ q
        return (z / lam.sqrt()).to(x.dtype)

    # -- conveniences ---------------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Draw ``n`` images from the prior (not clamped to [0, 1]). Shape: -> ``(n, C, H, W)``."""
        dev = sample_device(n, generator, device)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64, device=dev)
        return self.decode(z).to(dtype)

    def exact_posterior(self, operator: Any, y: Tensor) -> Any:
        """The exact Gaussian posterior ``p(x | y)`` of a linear operator with Gaussian noise.

        See :func:`invgen_plugins.analytic.posterior.gaussian_posterior`.
        """
        from invgen_plugins.analytic.posterior import gaussian_posterior

        return gaussian_posterior(self, operator, y)

    @classmethod
    def fit(cls, images: Tensor, shrinkage: float = 1e-3) -> Gaussian:
        """Fit mean and covariance to images, shrinking the covariance towards a scaled identity.

        ``cov = (1 - a) S + a (tr(S) / d) I`` with ``S`` the sample covariance and ``a = shrinkage``; a floor of
        ``1e-10`` on the diagonal keeps it positive definite for constant data. This is the Wiener-filter prior.

        Args:
            images: ``(N, C, H, W)`` training images, ``N >= 2``.
            shrinkage: ``a`` in [0, 1].

        Returns:
            A :class:`Gaussian` on ``(C, H, W)``.
        """
        check_image(images, "images")
        if images.shape[0] < 2:
            raise ShapeError(f"gaussian.fit: need at least 2 images, got {images.shape[0]}")
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise RangeError(f"gaussian.fit: shrinkage must lie in [0, 1], got {shrinkage}")
        n = images.shape[0]
        x = images.reshape(n, -1).to(torch.float64)
        d = x.shape[1]
        mu = x.mean(0)
        xc = x - mu
        s = xc.T @ xc / (n - 1)
        target = float(torch.diagonal(s).mean())
        cov = (1 - shrinkage) * s + shrinkage * target * torch.eye(d, dtype=torch.float64)
        cov = cov + max(1e-10, 1e-12 * target) * torch.eye(d, dtype=torch.float64)
        return cls(mu.reshape(images.shape[1:]), cov)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean.clone(), "cov": self.cov.clone(), "image_shape": self.image_shape}

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}"


def default_gaussian(image_shape: tuple[int, int, int], seed: int = 0) -> Gaussian:
    """A smooth random-field Gaussian around 0.5: a demo prior whose samples look like blurry images.

    The mean is ``0.5`` plus a small smooth seeded perturbation; the covariance is :func:`grid_covariance` with a
    length scale of a quarter of the image side, a pixel std of about 0.15 and channel correlation 0.8.
    """
    c, h, w = (int(s) for s in image_shape)
    gen = torch.Generator().manual_seed(int(seed))
    ell = max(1.0, max(h, w) / 4)
    smooth = grid_covariance((c, h, w), ell, 0.14, 0.05)
    evals, evecs = torch.linalg.eigh(smooth)
    bump = evecs @ (evals.clamp_min(0).sqrt() * torch.randn(c * h * w, generator=gen, dtype=torch.float64))
    return Gaussian((0.5 + 0.3 * bump).reshape(c, h, w), smooth)
