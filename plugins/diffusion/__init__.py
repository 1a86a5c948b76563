"""Diffusion prior family (plugin ``diffusion``): UNet, VP schedule, trainer and shipped weights."""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer, register_weight_folders

WEIGHTS = Path(__file__).parent / "weights"


def _diffusers(path: str | Path, device: str = "cpu", dtype=None, **kw):
    """``invgen.prior("diffusers", path=DIR)``: a local diffusers UNet2DModel + DDPM/DDIM scheduler folder."""
    from invgen_plugins.diffusion.diffusers_adapter import DiffusersPrior  # imports diffusers only when it loads

    if dtype is not None:
        kw["dtype"] = dtype
    return DiffusersPrior.from_pretrained(path, device=device, **kw)


def _adm(path: str | Path, **kw):
    """``invgen.prior("adm", path=DIR)``: a guided-diffusion checkpoint converted by ``invgen convert adm``."""
    from invgen_plugins.diffusion.adm_prior import load_prior

    return load_prior(path, **kw)


def _describe(config: dict, dataset: str) -> str:
    return f"diffusion UNet trained on {dataset}"


@invgen.hookimpl
def register_priors(register):
    """The shipped weights (every folder of ``weights/``), and ``diffusers`` for a local diffusers folder."""
    register_weight_folders(
        register, WEIGHTS, "invgen_plugins.diffusion.model:DiffusionPrior", ("denoiser", "score"), _describe
    )
    register(
        "diffusers",
        _diffusers,
        capabilities=("denoiser", "score"),
        description="a pretrained diffusers UNet2DModel + DDPM/DDIM scheduler from a local folder (path=...)",
    )
    register(
        "adm",
        _adm,
        capabilities=("denoiser", "score"),
        description="a guided-diffusion (ADM) UNet converted by 'invgen convert adm' (path=DIR); no weights ship",
    )


_Trainer = LazyTrainer(
    "invgen_plugins.diffusion.train", "train a diffusion prior (epsilon-prediction UNet, VP schedule)"
)


@invgen.hookimpl
def register_trainers(register):
    register("diffusion", _Trainer, description=_Trainer.description)


class _ADMConverter:
    """``invgen convert adm``: the converter object, its module imported on use."""

    description = (
        "convert a guided-diffusion (ADM) checkpoint (.pt state dict, read with torch.load(weights_only=True)) into "
        "a safetensors weight folder for invgen.prior('adm', path=DIR)"
    )

    def __call__(self) -> _ADMConverter:
        return self

    def add_arguments(self, parser) -> None:
        from invgen_plugins.diffusion.adm_convert import ADMConverter

        ADMConverter().add_arguments(parser)

    def run(self, options) -> int:
        from invgen_plugins.diffusion.adm_convert import ADMConverter

        return ADMConverter().run(options)


@invgen.hookimpl
def register_converters(register):
    register("adm", _ADMConverter(), description=_ADMConverter.description)
