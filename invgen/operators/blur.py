"""Deblurring: circular convolution with a Gaussian, motion, user-given or file kernel, computed by FFT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_image
from invgen.errors import RangeError, ShapeError
from invgen.operators import kernels as _kernels
from invgen.operators.base import LinearOperator, match_batch
from invgen.operators.noise import NoiseModel

KERNEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "gaussian": ("sigma", "size"),
    "motion": ("size", "intensity", "seed"),
    "file": ("index", "key"),
    "tensor": (),
}


def _user_kernel(kernel: Tensor) -> Tensor:
    """A kernel tensor as float64 ``(1 or B, kh, kw)``."""
    if kernel.dim() == 4 and kernel.shape[1] == 1:
        kernel = kernel[:, 0]
    if kernel.dim() == 2:
        kernel = kernel[None]
    if kernel.dim() != 3 or kernel.numel() == 0:
        raise ShapeError(
            f"kernel: expected a non-empty (kh, kw) or (B, kh, kw) tensor, got shape {tuple(kernel.shape)}"
        )
    kernel = kernel.detach().to(torch.float64)
    if not bool(torch.isfinite(kernel).all()):
        raise RangeError("kernel: expected finite values, got NaN/Inf")
    return kernel


def _check_kernel_sum(kernel: Tensor, source: object) -> None:
    """Refuse a kernel whose values sum to zero or less: a blur keeps the mean brightness, and such a kernel
    annihilates (sum 0: y holds no trace of the image's mean, all zeros gives pure noise) or inverts it."""
    sums = kernel.reshape(kernel.shape[0], -1).sum(dim=1)
    bad = (sums <= 0).nonzero().flatten().tolist()
    if bad:
        which = f"kernel {bad[0]} of {kernel.shape[0]}" if kernel.shape[0] > 1 else "the kernel"
        raise RangeError(
            f"blur: expected a kernel whose values sum to a positive number (1 for a blur that keeps the mean "
            f"brightness), got a sum of {float(sums[bad[0]]):.4g} for {which} ({kernel.shape[-2]}x{kernel.shape[-1]}, "
            f"from {source}); normalise it with kernel / kernel.sum()"
        )


class Blur(LinearOperator):
    """Circular (periodic) convolution ``y = k * x``, the same kernel for every channel.

    The kernel's centre is its sample ``(kh // 2, kw // 2)``; it is applied by FFT (``rfft2``), so the image wraps
    around at its borders. ``pinv`` is the *truncated* pseudo-inverse: the filter ``conj(K) / |K|^2`` at the
    frequencies where ``|K| > rcond * max |K|`` and zero elsewhere (``K`` the transfer function), i.e. the exact
    pseudo-inverse of the operator whose singular values below ``rcond * max`` are set to zero.

    Args:
        kernel: ``"gaussian"``, ``"motion"`` (see :mod:`invgen.operators.kernels`), a kernel tensor ``(kh, kw)`` or
            per item ``(B, kh, kw)`` (used as given: finite, not renormalised; each kernel's values must sum to more
            than 0, else a ``RangeError``), or a kernel file (``.png``,
            ``.mat``, ``.npy``; see :func:`~invgen.operators.kernels.load_kernel`).
        sigma: ``gaussian``: the standard deviation in pixels (default 1.0).
        size: ``gaussian``: the kernel size (default ``2 * ceil(3 sigma) + 1``); ``motion``: the side (default 15).
        intensity: ``motion``: the shake intensity in [0, 1] (default 0.5).
        seed: ``motion``: the trajectory seed (default 0).
        index: kernel files holding several kernels: which one (0-based).
        key: ``.mat`` files: which variable.
        rcond: relative cut-off of the truncated pseudo-inverse.
        noise: the observation noise model.

    Shape:
        x, y: ``(B, C, H, W)`` with ``H >= kh`` and ``W >= kw``.

    Example:
        >>> op = Blur("gaussian", sigma=2.0)
        >>> op(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    name = "blur"

    def __init__(
        self,
        kernel: str | Path | Tensor = "gaussian",
        *,
        sigma: float | tuple[float, float] | None = None,
        size: int | tuple[int, int] | None = None,
        intensity: float | None = None,
        seed: int | None = None,
        index: int | None = None,
        key: str | None = None,
        rcond: float = 1e-6,
        noise: NoiseModel | None = None,
    ) -> None:
        super().__init__(noise)
        options = {"sigma": sigma, "size": size, "intensity": intensity, "seed": seed, "index": index, "key": key}
        given = {k: v for k, v in options.items() if v is not None}
        if isinstance(kernel, Tensor):
            kind = "tensor"
            k = _user_kernel(kernel)
        elif kernel == "gaussian":
            kind = "gaussian"
            k = _kernels.gaussian_kernel(1.0 if sigma is None else sigma, size)[None]
        elif kernel == "motion":
            kind = "motion"
            k = _kernels.motion_kernel(
                15 if size is None else size, 0.5 if intensity is None else intensity, 0 if seed is None else seed
            )[None]
        elif isinstance(kernel, (str, Path)) and Path(kernel).is_file():
            kind = "file"
            k = _kernels.load_kernel(kernel, index=index, key=key)[None]
        elif isinstance(kernel, (str, Path)):
            raise FileNotFoundError(
                f"blur: kernel {str(kernel)!r} is neither a kernel type (gaussian, motion) nor an existing file"
            )
        else:
            raise TypeError(f"blur: kernel must be a kernel type name, a tensor or a file path, got {type(kernel)}")
        extra = sorted(set(given) - set(KERNEL_OPTIONS[kind]))
        if extra:
            raise TypeError(
                f"blur: option(s) {', '.join(extra)} do not apply to this kernel (it accepts "
                f"{', '.join(KERNEL_OPTIONS[kind]) or 'no options'})"
            )
        _check_kernel_sum(k, f"file {str(kernel)!r}" if kind == "file" else f"a {kind} kernel")
        rcond = float(rcond)
        if not 0 <= rcond < 1:
            raise RangeError(f"blur: rcond must lie in [0, 1), got {rcond}")
        self.kernel: Tensor = k  # (1 or B, kh, kw) float64
        self.rcond = rcond
        self._transfer: dict[tuple[int, int], Tensor] = {}
        self._filters: dict[tuple, Tensor] = {}
        self._config: dict[str, Any] = {"kernel": kernel, **given}
        if rcond != 1e-6:
            self._config["rcond"] = rcond

    # -- the transfer function ------------------------------------------------------------------------------------
    def transfer(self, size: tuple[int, int]) -> Tensor:
        """The transfer function ``K = rfft2(centred kernel)`` for images of ``size`` ``(H, W)``.

        Returns:
            ``(1 or B, 1, H, W // 2 + 1)`` complex128 tensor (cached per size).
        """
        size = (int(size[0]), int(size[1]))
        if size not in self._transfer:
            kb, kh, kw = self.kernel.shape
            h, w = size
            if kh > h or kw > w:
                raise ShapeError(f"blur: the kernel ({kh}x{kw}) is larger than the image ({h}x{w})")
            padded = torch.zeros(kb, h, w, dtype=torch.float64)
            padded[:, :kh, :kw] = self.kernel
            padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
            self._transfer[size] = torch.fft.rfft2(padded)[:, None]
        return self._transfer[size]

    def _filter(self, x: Tensor, which: str) -> Tensor:
        """Apply ``K``, ``conj(K)`` or the truncated inverse filter to ``x`` in the Fourier domain."""
        h, w = x.shape[-2:]
        key = (h, w, which, x.dtype, x.device)
        if key not in self._filters:
            k = self.transfer((h, w))
            if which == "adjoint":
                k = k.conj()
            elif which == "pinv":
                mag = k.abs()
                keep = mag > self.rcond * mag.amax(dim=(-2, -1), keepdim=True)
                k = torch.where(keep, k.conj() / torch.where(keep, mag, torch.ones_like(mag)) ** 2, torch.zeros_like(k))
            # stored as (real, imaginary) pairs in x's real dtype: match_batch works on real tensors
            self._filters[key] = torch.view_as_real(k.resolve_conj()).to(device=x.device, dtype=x.dtype)
        k = torch.view_as_complex(match_batch(self._filters[key], x).contiguous())
        return torch.fft.irfft2(torch.fft.rfft2(x) * k, s=(h, w))

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, "x")
        self._check_batch(x)
        return self._filter(x, "forward")

    def _check_batch(self, x: Tensor) -> None:
        kb = self.kernel.shape[0]
        if kb not in (1, x.shape[0]) and x.shape[0] % kb:
            raise ShapeError(f"blur: {kb} per-item kernels do not divide the batch of {x.shape[0]} images")

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        check_image(y, "y")
        return self._filter(y, "adjoint")

    def pinv(self, y: Tensor) -> Tensor:
        check_image(y, "y")
        return self._filter(y, "pinv")

    def extra_repr(self) -> str:
        kb, kh, kw = self.kernel.shape
        per_item = f"{kb} x " if kb > 1 else ""
        return ", ".join(filter(None, [super().extra_repr(), f"kernel_shape={per_item}{kh}x{kw}"]))
