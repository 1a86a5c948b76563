"""Exemplar-guided inpainting (Paint by Example, Yang et al. 2022) as posterior sampling: the exemplar is a second
observation of the image.

    p(x | y, e) ∝ p(x) p(y | x) p(e | x),   y = M x + n on the seen pixels,
    log p(e | x) = -||phi(R x) - phi(e)||^2 / (2 tau^2) + const,

``R`` takes the bounding box of the hidden region, resized to ``EMBED_SIZE`` x ``EMBED_SIZE`` (bilinear), and
``phi`` is a fixed, differentiable embedding of the LPIPS AlexNet trunk that invgen already loads offline
(:func:`invgen.metrics.lpips.lpips_model`). The operator is a :class:`~invgen.operators.joint.JointOperator` of an
``inpaint`` part (the seen pixels, with the given noise) and an :class:`ExemplarEmbedding` part (``phi(R x)`` with
Gaussian noise ``tau``), so every solver that takes a nonlinear operator (DPS, DAPS, RED-diff, MALA, ULA, annealed
Langevin, the latent solvers) samples the exemplar posterior unchanged.

**phi** (``EMBED_DIM`` = 1408 values). The five ReLU outputs of AlexNet (LPIPS's layers) on the 64x64 box, each
unit-normalised over channels at every position (as LPIPS does, so the embedding reads patterns, not contrast); then

* conv1, conv2 (64, 192 channels): the spatial mean of the normalised features and of their squares (the diagonal of
  their Gram matrix): first and second moments of colour and texture detectors;
* conv3, conv4, conv5 (384, 256, 256 channels): the spatial mean: which parts and objects are present.

Spatial pooling is the point: phi says *what* is in the box and in which colours and textures, not *where*, so many
images share the exemplar's embedding and a copy of the exemplar is only one of them. Each block has norm <= 1.
A full Gram matrix (64^2 + 192^2 values) was left out: its size, and the weight it would give to texture over content.

**The exemplar** is an image tensor ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], C = 1 or 3, of any size. It is
centre-cropped to the aspect ratio of the box (the largest centred window), then resized to 64x64 (bilinear,
antialiased), so the box and the exemplar are stretched alike. Channels follow the images ``x``: a gray exemplar is
repeated to RGB; an RGB exemplar for gray images becomes its ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``.

**tau** is calibrated, not tuned per image: ``tau^2`` is the per-coordinate variance of phi over natural image
regions, ``tau^2 = E ||phi(a) - phi(b)||^2 / (2 D)`` over pairs ``(a, b)`` of random square crops (side 12 to 32
pixels, random positions) of two random CIFAR-10 training images (of a seeded sample of 5000), resized to 64x64:
2000 pairs, seed 0 (``python benchmarks/exemplar_calibrate.py``) give ``E ||phi(a) - phi(b)||^2 = 2.07`` (median
2.00), ``tau^2 = 7.36e-4``, ``tau = 0.0271`` (:data:`TAU`). Reading: in the isotropic Gaussian picture the
exemplar tells as much about the box's embedding as the prior does, so it moves the embedding about half way from
the prior's towards the exemplar's (measured with DPS at 200 steps on a CIFAR-10 pair: the squared embedding distance
to the exemplar goes from 1.90 without it to 1.14). ``tau_scale`` multiplies tau (0.5: a stronger pull, 0.57; 0.25:
0.33), ``tau`` replaces it.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.checks import check_image, check_tensor
from invgen.errors import OptionError, RangeError, ShapeError
from invgen.operators.base import Operator
from invgen.operators.color import LUMA_601
from invgen.operators.inpaint import Inpaint
from invgen.operators.joint import JointOperator
from invgen.operators.noise import GaussianNoise, NoiseModel

EMBED_SIZE = 64
# (channels, with second moments) of the five AlexNet ReLU outputs, in order
LAYERS: tuple[tuple[int, bool], ...] = ((64, True), (192, True), (384, False), (256, False), (256, False))
EMBED_DIM = sum(c * (2 if second else 1) for c, second in LAYERS)
# calibrated (module docstring, benchmarks/exemplar_calibrate.py): tau^2 = E||phi(a) - phi(b)||^2 / (2 D)
TAU = 0.0271
_EPS = 1e-8

_TRUNKS: dict[tuple[str, torch.dtype], tuple[torch.nn.Module, torch.nn.Module]] = {}
_LOCK = threading.Lock()


def _trunk(device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The LPIPS scaling layer and AlexNet trunk on ``device`` in ``dtype`` (float32: the cached LPIPS model's own;
    other dtypes: a cached converted copy). Frozen, eval mode."""
    from invgen.metrics.lpips import lpips_model

    key = (str(device), dtype)
    with _LOCK:
        hit = _TRUNKS.get(key)
    if hit is not None:
        return hit
    model = lpips_model("alex", device)
    scaling, net = model.scaling_layer, model.net
    if dtype != torch.float32:
        scaling, net = copy.deepcopy(scaling).to(dtype), copy.deepcopy(net).to(dtype)
    with _LOCK:
        _TRUNKS[key] = (scaling, net)
    return scaling, net


def embed(x: Tensor) -> Tensor:
    """phi: the exemplar embedding of images (module docstring). Differentiable in ``x``.

    Args:
        x: images, gray ones repeated to RGB; values nominally in [0, 1] (not clamped: a solver's estimates may
            leave it slightly); any size >= 32 (the boxes are ``EMBED_SIZE`` square).

    Returns:
        ``(B, EMBED_DIM)`` in ``x``'s dtype.

    Shape:
        x: ``(B, 1 or 3, H, W)`` -> ``(B, 1408)``.
    """
    check_image(x, "x", channels=(1, 3))
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    scaling, net = _trunk(x.device, x.dtype)
    blocks = []
    for f, (_, second) in zip(net(scaling(2.0 * x - 1.0)), LAYERS):
        u = f * torch.rsqrt((f * f).sum(dim=1, keepdim=True) + _EPS**2)  # unit over channels; finite gradient at 0
        blocks.append(u.mean(dim=(2, 3)))
        if second:
            blocks.append((u * u).mean(dim=(2, 3)))
    return torch.cat(blocks, dim=1)


def hole_box(mask: Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (bottom, right exclusive) of the hidden pixels (mask < 0.5 in any channel).

    Raises:
        RangeError: if the mask hides no pixel, or every pixel.

    Shape:
        mask: ``(1, 1 or C, H, W)``, 1 = seen.
    """
    hidden = (mask < 0.5).any(dim=1)[0]  # (H, W)
    n, total = int(hidden.sum()), hidden.numel()
    if n == 0:
        raise RangeError(
            "exemplar: the mask hides no pixel (1 = seen everywhere): there is no region to fill; give a mask with 0 "
            "where the exemplar should go"
        )
    if n == total:
        raise RangeError(
            "exemplar: the mask hides every pixel (0 everywhere): nothing of the image is seen, so there is nothing "
            "to blend the exemplar into; give a mask with 1 on the seen pixels"
        )
    rows = hidden.any(dim=1).nonzero().flatten()
    cols = hidden.any(dim=0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_box(x: Tensor, box: tuple[int, int, int, int], size: int = EMBED_SIZE) -> Tensor:
    """``R x``: the box of ``x`` resized to ``size`` x ``size`` (bilinear; antialiased when it shrinks).

    Shape: ``(B, C, H, W)`` -> ``(B, C, size, size)``.
    """
    top, bottom, left, right = box
    region = x[..., top:bottom, left:right]
    shrink = region.shape[-2] > size or region.shape[-1] > size
    return F.interpolate(region, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def check_exemplar(exemplar: Any) -> Tensor:
    """The exemplar as ``(1, C, H, W)`` (C = 1 or 3, values in [0, 1]), else a clear error.

    Raises:
        OptionError: no exemplar (None) or not a tensor.
        ShapeError: not ``(C, H, W)`` or ``(1, C, H, W)`` with C = 1 or 3.
        RangeError: NaN/Inf or values outside [0, 1].
    """
    want = "an image tensor (C, H, W) or (1, C, H, W) with C = 1 or 3 and values in [0, 1]"
    if exemplar is None:
        raise OptionError(f"exemplar: no exemplar given; pass exemplar= {want}", option="exemplar", owner="exemplar")
    if not isinstance(exemplar, Tensor):
        raise OptionError(
            f"exemplar: expected {want}, got {type(exemplar).__name__} (read an image file with "
            "invgen.data.sets.read_image)",
            option="exemplar",
            owner="exemplar",
        )
    if exemplar.dim() == 3:
        exemplar = exemplar[None]
    if exemplar.dim() != 4 or exemplar.shape[0] != 1 or exemplar.shape[1] not in (1, 3):
        raise ShapeError(f"exemplar: expected {want}, got shape {tuple(exemplar.shape)}")
    if not exemplar.is_floating_point():
        raise OptionError(
            f"exemplar: expected a floating point image in [0, 1], got dtype {exemplar.dtype} (divide by 255)",
            option="exemplar",
            owner="exemplar",
        )
    check_tensor(exemplar, "exemplar")
    check_image(exemplar, "exemplar", clean=True)
    return exemplar.detach()


def prepare_exemplar(exemplar: Tensor, aspect: float, channels: int, size: int = EMBED_SIZE) -> Tensor:
    """The exemplar as the operator sees it (module docstring): channels converted, centre-cropped to the aspect
    ratio ``aspect`` (height / width) of the box, resized to ``size`` x ``size``.

    Shape: ``(1, C, H, W)`` -> ``(1, channels, size, size)``.
    """
    e = check_exemplar(exemplar)
    if e.shape[1] == 1 and channels == 3:
        e = e.expand(-1, 3, -1, -1)
    elif e.shape[1] == 3 and channels == 1:
        luma = torch.tensor(LUMA_601, dtype=e.dtype, device=e.device).reshape(1, 3, 1, 1)
        e = (e * luma).sum(dim=1, keepdim=True)
    h, w = e.shape[-2:]
    if h / w > aspect:  # too tall: crop rows
        ch, cw = max(1, round(w * aspect)), w
    else:
        ch, cw = h, max(1, round(h / aspect))
    top, left = (h - ch) // 2, (w - cw) // 2
    e = e[..., top : top + ch, left : left + cw]
    return F.interpolate(e, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class ExemplarLikelihood(GaussianNoise):
    """The Gaussian likelihood of the exemplar's embedding, std ``tau``, which is never drawn from: ``sample``
    returns ``phi(R x)`` itself (``x`` as its own exemplar).

    ``tau`` is the width of ``p(e | x)``, the expected mismatch between an exemplar and the region it guides, not
    the noise of a sensor: a Gaussian draw around ``phi(R x)`` is the embedding of no image. So ``measure(x)`` of the
    exemplar operator adds only the seen pixels' noise, and a real observation takes the exemplar's embedding
    (:meth:`ExemplarInpaint.observe`).
    """

    def sample(self, ax: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return ax.clone()


class ExemplarEmbedding(Operator):
    """``A(x) = phi(R x)``: the embedding of the box of ``x``, with the Gaussian likelihood of std ``tau`` (module
    docstring; :class:`ExemplarLikelihood`).

    Args:
        box: ``(top, bottom, left, right)`` of the region, bottom and right exclusive.
        size: ``(H, W)`` of the images.
        tau: the noise std of the embedding.

    Shape:
        x: ``(B, 1 or 3, H, W)``; y: ``(B, EMBED_DIM)``.
    """

    name = "exemplar_embedding"
    linear = False

    def __init__(self, box: tuple[int, int, int, int], size: tuple[int, int], tau: float) -> None:
        super().__init__(ExemplarLikelihood(tau))
        self.box = tuple(int(v) for v in box)
        self.size = (int(size[0]), int(size[1]))
        self._config = {"box": self.box, "size": self.size}

    def _check_size(self, hw: tuple[int, ...], name: str) -> None:
        if tuple(hw) != self.size:
            raise ShapeError(
                f"exemplar: the mask has size {self.size[0]}x{self.size[1]} but {name} has size {hw[0]}x{hw[1]}"
            )

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        check_image(x, name, channels=(1, 3), clean=clean)
        self._check_size(tuple(x.shape[-2:]), f"the image {name}")
        return x

    def bind_shape(self, x_shape: tuple[int, ...]) -> ExemplarEmbedding:
        if len(x_shape) != 3 or x_shape[0] not in (1, 3):
            raise ShapeError(f"exemplar: expected images of shape (1 or 3, H, W), got {tuple(x_shape)}")
        self._check_size(tuple(x_shape[1:]), "the image")
        return self

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, "x")
        return embed(crop_box(x, self.box))

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(x_shape[0]), EMBED_DIM)

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise ShapeError("exemplar: an embedding does not tell the shape of the image it came from")


class ExemplarInpaint(JointOperator):
    """Exemplar-guided inpainting: the joint observation of the seen pixels and of the exemplar (module docstring).

    Build it with ``invgen.operator("exemplar", mask=..., exemplar=e)``. The observation is the flat joint one
    ``(B, C*H*W + EMBED_DIM)``: :meth:`observe` makes it from the seen pixels ``y`` (what an ``inpaint`` operator with
    this mask observes) and the exemplar; :meth:`split` gives ``[y, phi(e)]`` back.

    Args:
        mask: as for ``inpaint`` (1 = seen): a tensor ``(H, W)``, ``(1, H, W)`` or ``(1, 1 or C, H, W)``, a mask file,
            or a mask type (``"box"``, ``"random"``, ``"freeform"``, ``"half"``) with ``size=(H, W)`` and its
            options (``box_size=...``). One mask for the whole batch.
        exemplar: the exemplar image (module docstring).
        tau: the embedding's noise std; default (None) the calibrated :data:`TAU`.
        tau_scale: a factor on tau (1: as calibrated).
        channels: the images' channel count, 1 or 3; default: read from the observation's size.
        noise: the noise model of the seen pixels.
        **mask_options: options of the mask (``size``, ``box_size``, ``position``, ``seed``, ...), as for ``inpaint``.

    Raises:
        OptionError: no exemplar, or one that is not a tensor; a generated mask without ``size``.
        ShapeError: an exemplar of the wrong shape; a mask given per item; images of another size than the mask.
        RangeError: a mask that hides nothing or everything; a non-positive tau.

    Shape:
        x: ``(B, C, H, W)``; y: ``(B, C*H*W + 1408)``.

    Example:
        >>> op = invgen.operator("exemplar", mask="box", size=(32, 32), box_size=20, exemplar=e,
        ...                      noise=invgen.noise("gaussian", std=0.01))
        >>> y = op.observe(invgen.operator("inpaint", mask=op.mask, noise=op.parts[0].noise).measure(x))
        >>> post = invgen.solve(y, op, "diffusion-cifar10", solver="dps", steps=100)  # doctest: +SKIP
    """

    name = "exemplar"

    def __init__(
        self,
        mask: Any = None,
        exemplar: Tensor | None = None,
        *,
        tau: float | None = None,
        tau_scale: float = 1.0,
        channels: int | None = None,
        noise: NoiseModel | None = None,
        **mask_options: Any,
    ) -> None:
        e = check_exemplar(exemplar)
        if mask is None:
            raise OptionError("exemplar: no mask given; pass mask= (1 = seen, 0 = the region to fill)", option="mask")
        if channels not in (None, 1, 3):
            raise ShapeError(f"exemplar: channels must be 1, 3 or None, got {channels!r}")
        tau_eff = (TAU if tau is None else float(tau)) * float(tau_scale)
        if not (math.isfinite(tau_eff) and tau_eff > 0):
            raise RangeError(f"exemplar: expected tau > 0 and tau_scale > 0, got tau={tau!r}, tau_scale={tau_scale!r}")
        inpaint = Inpaint(mask, noise=noise, **mask_options)
        try:
            m = inpaint.mask
        except ShapeError:
            raise OptionError(
                f"exemplar: a generated mask (mask={mask!r}) needs the image size: pass size=(H, W)", option="size"
            ) from None
        if m.shape[0] != 1:
            raise ShapeError(f"exemplar: one mask for the whole batch, got a mask of {m.shape[0]} items")
        box = hole_box(m)
        size = (int(m.shape[-2]), int(m.shape[-1]))
        part = ExemplarEmbedding(box, size, tau_eff)
        super().__init__([inpaint, part], shape=(channels, *size) if channels else None)
        self.exemplar = e
        self.box, self.image_size, self.tau = box, size, tau_eff
        self._options = {"tau": tau, "tau_scale": float(tau_scale), **({"channels": channels} if channels else {})}
        self._targets: dict[tuple[int, torch.dtype, str], Tensor] = {}

    @property
    def mask(self) -> Tensor:
        """The mask ``(1, 1 or C, H, W)`` (1 = seen)."""
        return self.parts[0].mask

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(y_shape) == 2 and self.shape is None:  # the channels from the size: m = C H W + EMBED_DIM
            h, w = self.image_size
            for c in (1, 3):
                if c * h * w + EMBED_DIM == int(y_shape[1]):
                    return (int(y_shape[0]), c, h, w)
            raise ShapeError(
                f"exemplar: an observation of {int(y_shape[1])} values fits no {h}x{w} image: expected "
                f"{h * w + EMBED_DIM} (gray) or {3 * h * w + EMBED_DIM} (RGB); make it with op.observe(y)"
            )
        return super().input_shape(y_shape)

    def bind_shape(self, x_shape: tuple[int, ...]) -> ExemplarInpaint:
        if len(x_shape) == 3:
            self.parts[1].bind_shape(tuple(x_shape))  # the exemplar's size and channel errors first
        super().bind_shape(x_shape)
        return self

    def target(self, channels: int, dtype: torch.dtype = torch.float32, device: Any = "cpu") -> Tensor:
        """``phi(e)``: the exemplar's embedding for images of ``channels`` channels, ``(1, EMBED_DIM)`` (cached)."""
        key = (int(channels), dtype, str(torch.device(device)))
        if key not in self._targets:
            top, bottom, left, right = self.box
            aspect = (bottom - top) / (right - left)
            e = prepare_exemplar(self.exemplar.to(device=device, dtype=dtype), aspect, int(channels))
            with torch.no_grad():
                self._targets[key] = embed(e)
        return self._targets[key]

    def observe(self, y: Tensor) -> Tensor:
        """The joint observation ``(B, C*H*W + EMBED_DIM)`` of the seen pixels ``y`` and the exemplar.

        Args:
            y: what ``inpaint`` with this mask observes: ``(B, C, H, W)`` (hidden pixels are ignored).
        """
        check_image(y, "y", channels=(1, 3))
        self.parts[1]._check_size(tuple(y.shape[-2:]), "the observation y")
        return self.join([y, self.target(int(y.shape[1]), y.dtype, y.device)])

    def config(self) -> dict[str, Any]:
        """``{"name": "exemplar", "mask": ..., mask options, "exemplar": e, "tau", "tau_scale", "noise": the seen
        pixels' noise}``: ``invgen.operator(**config)`` rebuilds the operator."""
        cfg = self.parts[0].config()
        cfg.pop("name")
        return {"name": self.name, **cfg, "exemplar": self.exemplar, **self._options}

    def extra_repr(self) -> str:
        return f"box={self.box}, tau={self.tau:.4g}"


def exemplar_inpainting(mask: Any = None, exemplar: Tensor | None = None, **options: Any) -> ExemplarInpaint:
    """``invgen.operator("exemplar", ...)``: see :class:`ExemplarInpaint`."""
    return ExemplarInpaint(mask, exemplar, **options)


def calibrate(images: Tensor, pairs: int = 2000, seed: int = 0, low: int = 12, high: int = 32) -> dict[str, float]:
    """The calibration of :data:`TAU` (module docstring) on a set of clean images.

    Draws ``pairs`` pairs of two random images (independent draws), a random square crop (side uniform in
    ``[low, high]``, random position) of each, resizes the crops to ``EMBED_SIZE`` and embeds them.

    Returns:
        ``{"mean_d2": E||phi(a) - phi(b)||^2, "median_d2", "tau2": mean_d2 / (2 D), "tau": sqrt(tau2), "pairs"}``.

    Shape:
        images: ``(N, C, H, W)`` in [0, 1] with ``H, W >= high``.
    """
    check_image(images, "images", channels=(1, 3), clean=True)
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    d2 = []
    for start in range(0, pairs, 250):
        k = min(250, pairs - start)
        crops = []
        for _ in range(2 * k):
            s = int(torch.randint(low, high + 1, (1,), generator=g))
            i = int(torch.randint(0, n, (1,), generator=g))
            top = int(torch.randint(0, h - s + 1, (1,), generator=g))
            left = int(torch.randint(0, w - s + 1, (1,), generator=g))
            crops.append(crop_box(images[i : i + 1].float(), (top, top + s, left, left + s)))
        with torch.no_grad():
            f = embed(torch.cat(crops))
        d2.append((f[:k] - f[k:]).pow(2).sum(dim=1))
    d = torch.cat(d2).double()
    tau2 = float(d.mean()) / (2 * EMBED_DIM)
    return {
        "mean_d2": float(d.mean()),
        "median_d2": float(d.median()),
        "tau2": tau2,
        "tau": math.sqrt(tau2),
        "pairs": pairs,
    }
