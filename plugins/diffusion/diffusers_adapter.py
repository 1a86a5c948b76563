"""Pretrained `diffusers <https://github.com/huggingface/diffusers>`_ UNets as invgen priors (prior ``diffusers``).

A diffusers pixel-space pipeline folder (``unet/`` with a ``UNet2DModel`` and ``scheduler/scheduler_config.json`` of a
DDPM/DDIM scheduler, e.g. ``google/ddpm-celebahq-256`` saved locally) is adapted once into the ``denoiser`` and
``score`` capabilities on [0, 1] images, like our own :class:`~invgen_plugins.diffusion.model.DiffusionPrior`:

* a VE noise level ``sigma`` on the [0, 1] scale is ``s = 2 sigma`` on the network's [-1, 1] scale;
* the VP timestep of that level is the *continuous* ``t`` with ``sqrt((1 - abar_t) / abar_t) = s``, found by linear
  interpolation of ``log s_t`` over the integer training timesteps (``UNet2DModel`` accepts float timesteps);
* the network sees the VP state ``(2 x - 1) / sqrt(1 + s^2)`` and its output (epsilon, v or x0) is turned into an
  estimate of x0 on [-1, 1], returned as ``(x0 + 1) / 2``.

diffusers is imported only when a prior is built; nothing is downloaded and nothing is unpickled (safetensors only).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.checks import as_sigma, check_image
from invgen.priors.base import Prior
from invgen_plugins.diffusion.schedule import VPSchedule

INSTALL_HINT = 'the "diffusers" prior needs the diffusers package: pip install "invgen[diffusers]"'
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def import_diffusers() -> Any:
    """Import diffusers, or raise an ImportError that says how to install it."""
    try:
        import diffusers
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return diffusers


def alphas_cumprod_from_config(cfg: dict[str, Any]) -> Tensor:
    """``abar_t`` of a DDPM/DDIM scheduler config, computed as diffusers does (float32 betas and cumprod).

    Args:
        cfg: the scheduler config (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` in
            ``linear``, ``scaled_linear``, ``squaredcos_cap_v2``, or explicit ``trained_betas``).

    Returns:
        ``abar_t`` for ``t = 0 .. num_train_timesteps - 1`` as float64 (the float32 values of diffusers, widened).

    Shape:
        output: ``(num_train_timesteps,)``.
    """
    n = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    schedule = cfg.get("beta_schedule", "linear")
    if cfg.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "scheduler config: rescale_betas_zero_snr=True (abar_T = 0, an infinite noise level) is not supported"
        )
    if cfg.get("trained_betas") is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    elif schedule == "squaredcos_cap_v2":  # the cosine schedule of Nichol & Dhariwal (2021), betas capped at 0.999

        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    else:
        raise ValueError(f"scheduler config: beta_schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


class DiffusersPrior(Prior):
    """A pretrained diffusers ``UNet2DModel`` (with its DDPM/DDIM schedule) as a prior on [0, 1] images.

    ``denoise(x, sigma)`` is the network's estimate of E[x0 | x0 + sigma n = x]; ``score(x, sigma)`` is Tweedie's
    ``(denoise(x, sigma) - x) / sigma^2``. The estimate is not clipped to [0, 1].

    Noise levels outside ``[sigma_min, sigma_max]`` (the first and last training levels, on the [0, 1] scale): the
    timestep is clamped to the schedule's end (0 or ``num_train_timesteps - 1``) while the input scaling and the
    conversion of the output use the requested sigma, so for an epsilon model ``denoise(x, sigma) -> x`` as
    ``sigma -> 0``.

    Args:
        unet: a ``diffusers.UNet2DModel`` with positional (sinusoidal) timestep embedding and no class conditioning.
            Its ``out_channels`` is ``in_channels``, or ``2 * in_channels`` for learned-variance models (guided
            diffusion ports), whose second half (the variance) is dropped.
        alphas_cumprod: ``abar_t`` of the training schedule, increasing noise with t, shape ``(T,)``.
        prediction_type: what the network predicts: ``"epsilon"``, ``"v_prediction"`` or ``"sample"`` (x0).
        name: registry name.
        path: the folder it was loaded from (kept in :meth:`config`).

    Attributes:
        schedule: the :class:`~invgen_plugins.diffusion.schedule.VPSchedule` of a linear-beta model loaded by
            :meth:`from_pretrained`, which the diffusion solvers take their timestep grid from
            (:func:`invgen.solvers.schedules.prior_sigmas`); None otherwise, and they use the default linear grid,
            whose levels outside ``[sigma_min, sigma_max]`` are clamped as above.
    """

    capabilities = frozenset({"denoiser", "score"})

    def __init__(
        self,
        unet: torch.nn.Module,
        alphas_cumprod: Tensor,
        prediction_type: str = "epsilon",
        name: str = "diffusers",
        path: str | Path | None = None,
    ) -> None:
        super().__init__()
        ucfg = unet.config
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        embedding = ucfg.get("time_embedding_type", "positional")
        if embedding != "positional":
            raise ValueError(
                f"UNet2DModel: time_embedding_type {embedding!r} is not supported (only 'positional' takes continuous "
                "VP timesteps; 'fourier' models are VE score models, 'learned' ones take integer timesteps only)"
            )
        if ucfg.get("num_class_embeds") is not None or ucfg.get("class_embed_type") is not None:
            raise ValueError(
                "UNet2DModel: class-conditional models are not supported (an unconditional prior is needed)"
            )
        c_in, c_out = int(ucfg["in_channels"]), int(ucfg["out_channels"])
        if c_out not in (c_in, 2 * c_in):
            raise ValueError(
                f"UNet2DModel: out_channels must equal in_channels ({c_in}) or twice it (learned variance), got {c_out}"
            )
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()) or not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be a strictly decreasing sequence in (0, 1) of at least 2 values")
        self.unet = unet.eval().requires_grad_(False)
        self.prediction_type = prediction_type
        self.learned_variance = c_out == 2 * c_in
        self.name = name
        self.path = str(path) if path is not None else None
        self.alphas_cumprod = abar
        self.schedule: VPSchedule | None = None  # set for linear-beta schedules (the solvers' default timestep grid)
        self.log_sigmas = (0.5 * torch.log((1 - abar) / abar)).contiguous()  # log s_t on the [-1, 1] scale
        size = ucfg.get("sample_size")
        if size is None:
            self.image_shape = None
        else:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            self.image_shape = (c_in, int(h), int(w))
        self.channels = c_in
        self.sigma_min = float(self.log_sigmas[0].exp()) / 2
        self.sigma_max = float(self.log_sigmas[-1].exp()) / 2

    @property
    def num_train_timesteps(self) -> int:
        """Number of integer training timesteps T (timesteps run from 0 to T - 1)."""
        return int(self.alphas_cumprod.numel())

    def timestep(self, sigma: float | Tensor) -> Tensor:
        """The continuous VP timestep of a noise level, clamped to ``[0, T - 1]``.

        ``t`` solves ``sqrt((1 - abar_t) / abar_t) = 2 sigma`` with ``log sqrt((1 - abar_t) / abar_t)`` interpolated
        linearly between integer timesteps; at a training level it is that level's integer timestep. Levels below
        ``sigma_min`` give 0 and levels above ``sigma_max`` give ``T - 1``.

        Args:
            sigma: noise standard deviation(s) on the [0, 1] scale (a float or a tensor).

        Returns:
            Float64 timesteps on the CPU (the interpolation runs there, in float64, whatever the UNet's device).

        Shape:
            sigma: any; output: same as ``torch.as_tensor(sigma)``.
        """
        s = torch.as_tensor(sigma).detach().to("cpu", torch.float64)
        ls = self.log_sigmas
        log_s = torch.log(2.0 * s.clamp_min(0.0)).clamp(ls[0], ls[-1])  # log(0) = -inf clamps to t = 0
        i = torch.searchsorted(ls, log_s.contiguous()).clamp(1, ls.numel() - 1)
        lo, hi = ls[i - 1], ls[i]
        return (i - 1).to(torch.float64) + (log_s - lo) / (hi - lo)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """E[x0 | x] for ``x = x0 + sigma n`` from one UNet call.

        Args:
            x: noisy images on the [0, 1] scale (any real values).
            sigma: noise standard deviation on the [0, 1] scale, a float or a ``(B,)`` tensor, >= 0.

        Returns:
            The denoised images on the [0, 1] scale (not clipped), in ``x``'s dtype.

        Shape:
            x: ``(B, C, H, W)`` with ``(C, H, W) = image_shape``; output: same.
        """
        check_image(x, "x", channels=self.channels, size=self.image_shape[1:] if self.image_shape else None)
        s = 2.0 * as_sigma(sigma, x)  # (B, 1, 1, 1), [-1, 1] scale
        t = self.timestep(as_sigma(sigma, x[:, :1, :1, :1].detach().double()).reshape(-1))  # float64 sigma for t
        xm = 2.0 * x - 1.0
        a = torch.rsqrt(1.0 + s**2)  # sqrt(abar) of the level s
        b = s * a  # sqrt(1 - abar)
        p = next(self.unet.parameters())
        out = self.unet((xm * a).to(p.dtype), t.to(device=p.device, dtype=torch.float32)).sample.to(x.dtype)
        if self.learned_variance:
            out = out[:, : self.channels]
        if self.prediction_type == "epsilon":
            x0 = xm - s * out
        elif self.prediction_type == "v_prediction":
            x0 = a * (xm * a) - b * out
        else:
            x0 = out
        return (x0 + 1.0) / 2.0

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """Tweedie's score ``(denoise(x, sigma) - x) / sigma^2`` of the sigma-smoothed prior.

        Args:
            x: noisy images on the [0, 1] scale.
            sigma: noise standard deviation on the [0, 1] scale, > 0 (a float or a ``(B,)`` tensor).

        Returns:
            ``grad_x log p_sigma(x)``.

        Shape:
            x: ``(B, C, H, W)``; output: same.
        """
        s = as_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"the diffusers prior's score needs sigma > 0 (use sigma >= {self.sigma_min:.3g})")
        return (self.denoise(x, s) - x) / s**2

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        name: str = "diffusers",
    ) -> DiffusersPrior:
        """Load a local diffusers folder: the UNet from ``unet/`` (or the folder itself) and the scheduler config.

        Only safetensors weights are read (``use_safetensors=True``) and nothing is downloaded
        (``local_files_only=True``). The scheduler config is ``scheduler/scheduler_config.json`` or the folder's
        ``scheduler_config.json`` (DDPMScheduler/DDIMScheduler fields ``num_train_timesteps``, ``beta_start``,
        ``beta_end``, ``beta_schedule``, ``prediction_type``).

        Args:
            path: the local folder (a saved pipeline or a saved ``UNet2DModel`` with a scheduler config beside it).
            device: where the UNet lives.
            dtype: the UNet's dtype (a torch dtype or its name, e.g. ``"float16"``).
            name: registry name.

        Returns:
            The prior, in eval mode with gradients of its weights disabled.
        """
        diffusers = import_diffusers()
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"diffusers prior: {str(folder)!r} is not a directory (expected a local folder)")
        unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
        if not (unet_dir / "config.json").is_file():
            raise FileNotFoundError(f"diffusers prior: no UNet config.json in {str(folder)!r} or its unet/ folder")
        sched_file = next(
            (
                f
                for f in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
                if f.is_file()
            ),
            None,
        )
        if sched_file is None:
            raise FileNotFoundError(
                f"diffusers prior: no scheduler/scheduler_config.json or scheduler_config.json in {str(folder)!r}"
            )
        sched_cfg = json.loads(sched_file.read_text())
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.removeprefix("torch."))
        unet = diffusers.UNet2DModel.from_pretrained(
            str(unet_dir),
            local_files_only=True,
            use_safetensors=True,
            torch_dtype=dtype,
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,  # diffusers warns without accelerate
        )
        prior = cls(
            unet,
            alphas_cumprod_from_config(sched_cfg),
            prediction_type=sched_cfg.get("prediction_type", "epsilon"),
            name=name,
            path=folder,
        )
        if sched_cfg.get("beta_schedule", "linear") == "linear" and sched_cfg.get("trained_betas") is None:
            # the solvers' timestep grids (invgen.solvers.schedules.prior_sigmas) then follow this model's schedule
            prior.schedule = VPSchedule(
                float(sched_cfg.get("beta_start", 1e-4)),
                float(sched_cfg.get("beta_end", 0.02)),
                int(sched_cfg.get("num_train_timesteps", 1000)),
            )
        return prior.to(device)

    def config(self) -> dict[str, Any]:
        """``{"name", "path"}``: ``invgen.prior("diffusers", path=...)`` rebuilds the prior."""
        return {"name": self.name, "path": self.path}
