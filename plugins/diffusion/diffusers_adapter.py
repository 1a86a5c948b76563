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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.priors.module import ModulePrior
from invgen.priors.vp import VPSchedule, alphas_cumprod_from_config, linear_schedule_of

INSTALL_HINT = 'the "diffusers" prior needs the diffusers package: pip install "invgen[diffusers]"'
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
PARAMETRIZATION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}  # diffusers' names -> from_module's
__all__ = ["DiffusersPrior", "VPSchedule", "alphas_cumprod_from_config", "import_diffusers"]


def import_diffusers() -> Any:
    """Import diffusers, or raise an ImportError that says how to install it."""
    try:
        import diffusers
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return diffusers


class DiffusersPrior(ModulePrior):
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

    def __init__(
        self,
        unet: torch.nn.Module,
        alphas_cumprod: Tensor,
        prediction_type: str = "epsilon",
        name: str = "diffusers",
        path: str | Path | None = None,
    ) -> None:
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
        size = ucfg.get("sample_size")
        shape = None
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            shape = (c_in, int(h), int(w))
        super().__init__(
            unet, PARAMETRIZATION[prediction_type], alphas_cumprod, (-1.0, 1.0), channels=c_in, image_shape=shape,
            name=name,
        )  # fmt: skip
        self.prediction_type = prediction_type
        self.learned_variance = c_out == 2 * c_in
        self.path = str(path) if path is not None else None

    @property
    def unet(self) -> torch.nn.Module:
        """The wrapped ``UNet2DModel``."""
        return self.net

    @property
    def alphas_cumprod(self) -> Tensor:
        """``abar_t`` of the training schedule (float64), shape ``(T,)``."""
        return self.timesteps.alphas_cumprod

    @property
    def log_sigmas(self) -> Tensor:
        """``log s_t`` of the training levels on the [-1, 1] scale, shape ``(T,)``."""
        return self.timesteps.log_sigmas

    @property
    def num_train_timesteps(self) -> int:
        """Number of integer training timesteps T (timesteps run from 0 to T - 1)."""
        return len(self.timesteps)

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
        # the solvers' timestep grids (invgen.solvers.schedules.prior_sigmas) follow a linear-beta model's schedule
        prior.schedule = linear_schedule_of(sched_cfg)
        return prior.to(device)

    def config(self) -> dict[str, Any]:
        """``{"name", "path"}``: ``invgen.prior("diffusers", path=...)`` rebuilds the prior."""
        return {"name": self.name, "path": self.path}
