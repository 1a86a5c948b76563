"""The diffusion prior: an epsilon-prediction UNet adapted once into the ``denoiser`` and ``score`` capabilities."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.checks import as_sigma, check_image
from invgen.priors.base import Prior
from invgen_plugins.diffusion.schedule import VPSchedule, c_noise
from invgen_plugins.diffusion.unet import UNet, UNetConfig

# the autocast dtype of each network-call precision (DiffusionPrior.set_precision)
AUTOCAST: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
# bfloat16 gradient calls on at least this many items run with default-layout weights (DiffusionPrior.channels_last)
BF16_GRAD_CONTIGUOUS_FROM = 16


class DiffusionPrior(Prior):
    """A diffusion model as a prior on [0, 1] images.

    ``denoise(x, sigma)`` is Tweedie's estimate E[x0 | x0 + sigma n = x] computed from the network's epsilon
    prediction; ``score(x, sigma) = (denoise(x, sigma) - x) / sigma^2``. Solvers never see the parametrisation.

    Args:
        net: the epsilon-prediction UNet (trained on [-1, 1] images).
        schedule: the VP schedule it was trained with.
        image_shape: ``(C, H, W)`` it was trained on, or None if any size divisible by the UNet's stride works.
        name: registry name.
    """

    capabilities = frozenset({"denoiser", "score"})

    def __init__(
        self, net: UNet, schedule: VPSchedule, image_shape: tuple[int, int, int] | None, name: str = "diffusion"
    ) -> None:
        super().__init__()
        self.net = net.eval()
        self.schedule = schedule
        self.image_shape = image_shape
        self.name = name
        self.memory_format = torch.contiguous_format
        self._weights_format = torch.contiguous_format  # layout the weights are in now (see _call_layout)
        self.tile: int | None = None  # tile size for large images (None: whole images)
        self.clip_denoised = False  # clamp D(x, sigma) to [0, 1] (config key "clip_denoised"; see denoise)
        self.tile_overlap = 32
        self.precision = "float32"  # of the network calls (see set_precision)
        sig = schedule.sigmas()
        self.sigma_min = float(sig[0]) / 2
        self.sigma_max = float(sig[-1]) / 2

    def channels_last(self, enabled: bool = True) -> DiffusionPrior:
        """Store the network's weights channels-last and feed it channels-last inputs (``enabled=False`` undoes it).

        On CPU (oneDNN) this makes the shipped UNets' calls about 10-25 % faster at batches 8 to 32, forward and
        forward + backward (``docs/perf/results.md``, "Network-call options"); results agree with the default layout
        to float32 rounding. One exception is measured and handled: under bfloat16 autocast (:meth:`set_precision`)
        oneDNN's channels-last *backward* is the slower one from batch ~16 up (forward + backward, shipped mnist UNet,
        2 threads: 0.113 s against 0.095 s at batch 32, 0.45 s against 0.36 s at 128; equal at 8, faster at 1), so
        calls that record a graph for a gradient (DPS, PiGDM) on batches of 16 or more run in the default layout then;
        the weights are converted when the kind of call changes (about 1 ms).
        ``from_pretrained`` turns it on for CPU priors. Outputs are returned in the default (contiguous) layout.
        """
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        self._set_weights_format(self.memory_format)
        return self

    def _set_weights_format(self, fmt: torch.memory_format) -> None:
        if fmt != self._weights_format:
            self.net.to(memory_format=fmt)
            self._weights_format = fmt

    def _call_layout(self, x_in: Tensor) -> torch.memory_format:
        """Layout of a call on ``x_in``: :attr:`memory_format`, except bfloat16 gradient calls on CPU batches of 16 or
        more (see :meth:`channels_last`; measured with oneDNN only)."""
        if (
            self.precision == "bfloat16"
            and x_in.device.type == "cpu"
            and x_in.shape[0] >= BF16_GRAD_CONTIGUOUS_FROM
            and torch.is_grad_enabled()
        ):
            return torch.contiguous_format
        return self.memory_format

    def set_precision(self, precision: str = "float32") -> DiffusionPrior:
        """Run the network calls in ``"float32"`` (default), ``"bfloat16"`` or (CUDA only) ``"float16"`` autocast.

        Everything outside the network (the solvers' updates, the schedule, Tweedie's formula) stays float32, and the
        network's output is returned as float32. Measured on a 2-core CPU with AVX-512 BF16 (shipped 32x32 UNets,
        2 threads): forward calls 1.5-1.7x faster at batches 64 to 200 but only 1.05-1.2x at batch 8, forward +
        backward 1.1x at batch 64 and 1.5-2x at 200; the denoiser differs from float32 by at most 0.016 on [0, 1]
        images and its denoising PSNR on 200 test images by <= 0.007 dB at sigma 0.1 / 0.2 / 0.5
        (``docs/perf/results.md``). It is opt-in: the exactness tests and the published tables are float32 unless
        they say otherwise.
        """
        if precision not in AUTOCAST:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST)}, got {precision!r}")
        device = next(self.net.parameters()).device
        if precision == "float16" and device.type != "cuda":
            raise ValueError(f"precision 'float16' needs a CUDA prior (this one is on {device}); use 'bfloat16'")
        self.precision = precision
        return self

    def eps(self, x_m11: Tensor, sigma_m11: Tensor) -> Tensor:
        """Network call: epsilon from ``x = x0 + sigma eps`` on the [-1, 1] scale. sigma: ``(B, 1, 1, 1)``.

        Sizes that are not multiples of the UNet's stride are padded by reflection to the next multiple and the
        output is cropped back, so a fully convolutional prior takes any ``H x W``. With :attr:`tile` set, images
        larger than ``tile`` go through the network in overlapping tiles (:func:`invgen.priors.tiling.tiled`), so
        memory stays bounded by the tile size.
        """
        scale = 1.0 / torch.sqrt(1.0 + sigma_m11**2)
        x_in = x_m11 * scale
        cond = c_noise(sigma_m11.reshape(-1))
        if self.tile is not None and max(x_in.shape[-2:]) > self.tile:
            from invgen.priors.tiling import tiled

            return tiled(lambda t: self._call(t, cond), x_in, self.tile, self.tile_overlap)
        return self._call(x_in, cond)

    def _call(self, x_in: Tensor, cond: Tensor) -> Tensor:
        h, w = x_in.shape[-2:]
        m = self.net.stride
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x_in = F.pad(x_in, (0, pw, 0, ph), mode="reflect" if (ph < h and pw < w) else "replicate")
        layout = self._call_layout(x_in)
        self._set_weights_format(layout)
        x_in = x_in.contiguous(memory_format=layout)
        dtype = AUTOCAST[self.precision]
        if dtype is None:
            out = self.net(x_in, cond)
        else:
            with torch.autocast(x_in.device.type, dtype=dtype):
                out = self.net(x_in, cond)
            out = out.float()
        return out[..., :h, :w].contiguous()

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Tweedie's estimate ``E[x0 | x]`` from the epsilon network. Shape: x ``(B, C, H, W)`` -> the same.

        With :attr:`clip_denoised` the estimate is clamped to the image range [0, 1] (the "clip denoised" of DDPM
        codebases). An epsilon network's error is multiplied by sigma in ``x0 = x - sigma eps``: a network whose
        epsilon error is 0.002 in mean square (what a small CPU-trained UNet reaches at s >= 10) gives x0 errors of
        several units at the top of the schedule (s = 157 on the [-1, 1] scale), and a sampler started there drifts to
        saturated colours. The clamp projects onto a convex set that holds every clean image, so it never moves the
        estimate away from the truth; shipped priors whose networks need it set ``"clip_denoised": true`` in their
        config.
        """
        check_image(x, "x", channels=self.net.config.in_channels)
        s = 2.0 * as_sigma(sigma, x).clamp_min(1e-6)
        xm = 2.0 * x - 1.0
        x0 = xm - s * self.eps(xm, s)
        out = (x0 + 1.0) / 2.0
        return out.clamp(0.0, 1.0) if self.clip_denoised else out

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        s = as_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"the diffusion prior's score needs sigma > 0 (use sigma >= {self.sigma_min:.3g})")
        return (self.denoise(x, s) - x) / s**2

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        name: str | None = None,
        device: str | torch.device = "cpu",
        weights: str = "model.safetensors",
        precision: str = "float32",
        tile: int | None = None,
    ) -> DiffusionPrior:
        """Rebuild from ``config.json`` + safetensors weights in ``folder`` (no pickle).

        On CPU the network is made channels-last (:meth:`channels_last`). ``precision`` is :meth:`set_precision`'s
        (``invgen.prior("diffusion-mnist", precision="bfloat16")``). The weights are frozen (``requires_grad=False``,
        as in every other prior family): a gradient through the denoiser (DPS, PiGDM) is then one with respect to its
        input only, measured 1.0-1.3x faster than with trainable weights (forward + backward, batches 1 to 128,
        ``docs/perf/results.md``); call ``prior.net.requires_grad_(True)`` to fine-tune. ``tile`` (pixels, >= 64)
        runs the network on larger images in overlapping tiles of that size (memory bounded; overrides the config's).
        """
        from invgen.train.checkpoint import load_pretrained
        from invgen.train.verify import CONFIG, config_errors, load_state

        cfg, state = load_pretrained(folder, weights, device, name)
        with config_errors(Path(folder) / CONFIG, "the UNet"):
            net = UNet(UNetConfig.from_dict(cfg["unet"]))
        load_state(net, state, Path(folder) / weights)
        net.requires_grad_(False)
        with config_errors(Path(folder) / CONFIG, "the prior"):
            shape = tuple(cfg["image_shape"]) if cfg.get("image_shape") else None
            prior = cls(net, VPSchedule(**cfg["schedule"]), shape, name or cfg.get("name", "diffusion"))
            if cfg.get("tile"):
                prior.tile, prior.tile_overlap = int(cfg["tile"]), int(cfg.get("tile_overlap", 32))
            prior.clip_denoised = bool(cfg.get("clip_denoised", False))
        if tile is not None:
            if isinstance(tile, bool) or not isinstance(tile, int) or tile < 64:
                raise ValueError(f"tile: expected an integer number of pixels >= 64, got {tile!r}")
            prior.tile = tile
        prior = prior.to(device)
        if torch.device(device).type == "cpu":
            prior.channels_last()
        return prior.set_precision(precision)

    def config(self) -> dict:
        return {
            "name": self.name,
            "unet": self.net.config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "clip_denoised": self.clip_denoised,
        }
