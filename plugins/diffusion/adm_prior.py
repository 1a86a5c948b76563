"""A converted guided-diffusion (ADM) checkpoint as an invgen prior (prior ``adm``): ``invgen.prior("adm", path=DIR)``.

The folder is what ``invgen convert adm CHECKPOINT --config NAME --out DIR`` writes (:mod:`.adm`). The network is
wrapped by :class:`invgen.priors.ModulePrior` in the ``eps`` parametrisation of its VP schedule on [-1, 1], exactly as
the ``diffusers`` adapter wraps a ``UNet2DModel``:

* a noise level ``sigma`` on invgen's [0, 1] scale is ``s = 2 sigma`` on the network's scale, and the network gets
  the *continuous* timestep ``t`` with ``sqrt((1 - abar_t) / abar_t) = s`` (linear in ``log s`` between training
  steps; guided-diffusion's sinusoidal embedding takes real ``t``), so the denoiser is defined at every level and
  equals the network's own Tweedie estimate at the training levels;
* the learned-variance half of the output (guided-diffusion's ``learn_sigma``) is dropped: ``denoise`` uses the
  epsilon half; no solver here uses the learned variance;
* ``clip_denoised`` (default False) clamps the estimate to [0, 1], as guided-diffusion's sampler clips x0 to [-1, 1].

A class-conditional checkpoint needs ``class_label`` (an ImageNet class index): the prior is then ``p(x | class)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.priors.module import ModulePrior
from invgen.priors.vp import linear_schedule_of


class ADMPrior(ModulePrior):
    """A converted guided-diffusion UNet with ``denoiser`` and ``score`` (see the module docstring).

    Args:
        net: the :class:`~invgen_plugins.diffusion.adm.ADMUNet`.
        config: the folder's ``config.json`` or a resolved configuration (``image_size``, ``in_channels``,
            ``schedule``, ``data_range``, ``num_classes``).
        path: the folder it was loaded from.
        class_label: the class of a class-conditional network (required there, refused otherwise).
        clip_denoised: clamp the denoised estimate to [0, 1].
        timesteps: ``"continuous"`` (default) or ``"discrete"`` (rounded to training steps, as guided-diffusion's
            own samplers feed it).

    Shape:
        ``denoise(x, sigma)``: x ``(B, C, S, S)`` with ``S = image_size``; output the same.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        config: dict[str, Any],
        path: str | Path | None = None,
        class_label: int | None = None,
        clip_denoised: bool = False,
        timesteps: str = "continuous",
    ) -> None:
        from invgen_plugins.diffusion.adm import alphas_cumprod, resolve_config

        config = resolve_config(config)  # a folder's config.json (architecture under "net") or a flat config
        classes = config.get("num_classes")
        if classes and class_label is None:
            raise ValueError(
                f"adm: {path} is a class-conditional network ({classes} classes): give class_label=K in [0, {classes})"
            )
        if class_label is not None and not classes:
            raise ValueError(f"adm: class_label={class_label} given, but {path} is an unconditional network")
        if class_label is not None and not (isinstance(class_label, int) and 0 <= class_label < classes):
            raise ValueError(f"adm: class_label must be an integer in [0, {classes}), got {class_label!r}")
        size, channels = int(config["image_size"]), int(config["in_channels"])
        super().__init__(
            net,
            "eps",
            alphas_cumprod(config["schedule"]),  # float64, as guided-diffusion computes it
            tuple(config["data_range"]),
            image_shape=(channels, size, size),
            timesteps=timesteps,
            name="adm",
        )
        self.schedule = linear_schedule_of(config["schedule"])  # the solvers' timestep grids follow a linear schedule
        self.path = str(path) if path is not None else None
        self.class_label = class_label
        self.clip_denoised = bool(clip_denoised)
        self.adm_config = dict(config)

    def call_kwargs(self, x: Tensor) -> dict[str, Any]:
        """The class label of a conditional network, one per batch item."""
        if self.class_label is None:
            return self.net_kwargs
        return {**self.net_kwargs, "y": torch.full((x.shape[0],), self.class_label, dtype=torch.long, device=x.device)}

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """E[x0 | x] for ``x = x0 + sigma n`` (clamped to [0, 1] with ``clip_denoised``). Shape: as the input."""
        out = super().denoise(x, sigma)
        return out.clamp(0.0, 1.0) if self.clip_denoised else out

    def config(self) -> dict[str, Any]:
        """``invgen.prior("adm", **config)`` rebuilds the prior."""
        cfg: dict[str, Any] = {"name": "adm", "path": self.path}
        if self.class_label is not None:
            cfg["class_label"] = self.class_label
        if self.clip_denoised:
            cfg["clip_denoised"] = True
        return cfg


def load_prior(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    class_label: int | None = None,
    clip_denoised: bool = False,
    timesteps: str = "continuous",
) -> ADMPrior:
    """``invgen.prior("adm", path=DIR, ...)``: the converted folder as a prior (checksums verified on load).

    Args:
        path: the folder written by ``invgen convert adm``.
        device: where the network lives.
        dtype: the network's dtype (a torch dtype or its name; default float32).
        class_label, clip_denoised, timesteps: see :class:`ADMPrior`.
    """
    from invgen_plugins.diffusion.adm_convert import load_adm

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    net, config = load_adm(path, device=device, dtype=dtype or torch.float32)
    return ADMPrior(net, config, path, class_label=class_label, clip_denoised=clip_denoised, timesteps=timesteps)
