"""Diffusion prior family (plugin ``diffusion``): UNet, VP schedule, trainer and shipped weights."""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer

WEIGHTS = Path(__file__).parent / "weights"


def _pretrained(name: str):
    def factory(device: str = "cpu", **kw):
        from invgen_plugins.diffusion.model import DiffusionPrior

        folder = WEIGHTS / name
        if not (folder / "model.safetensors").exists():
            raise FileNotFoundError(f"the weights of {name!r} are not shipped in this build ({folder})")
        return DiffusionPrior.from_pretrained(folder, name=name, device=device, **kw)

    return factory


def _diffusers(path: str | Path, device: str = "cpu", dtype=None, **kw):
    """``invgen.prior("diffusers", path=DIR)``: a local diffusers UNet2DModel + DDPM/DDIM scheduler folder."""
    from invgen_plugins.diffusion.diffusers_adapter import DiffusersPrior  # imports diffusers only when it loads

    if dtype is not None:
        kw["dtype"] = dtype
    return DiffusersPrior.from_pretrained(path, device=device, **kw)


@invgen.hookimpl
def register_priors(register):
    import json

    for folder in sorted(p for p in WEIGHTS.glob("*") if (p / "model.safetensors").exists()):
        config = json.loads((folder / "config.json").read_text())  # a small file: listing stays cheap
        trained_on = config.get("training", {}).get("dataset")
        register(
            folder.name,
            _pretrained(folder.name),
            capabilities=("denoiser", "score"),
            image_shape=tuple(config["image_shape"]),
            datasets=(trained_on,) if trained_on else (),
            description=f"diffusion UNet trained on {trained_on or folder.name.removeprefix('diffusion-')}",
        )
    register(
        "diffusers",
        _diffusers,
        capabilities=("denoiser", "score"),
        description="a pretrained diffusers UNet2DModel + DDPM/DDIM scheduler from a local folder (path=...)",
    )


_Trainer = LazyTrainer(
    "invgen_plugins.diffusion.train", "train a diffusion prior (epsilon-prediction UNet, VP schedule)"
)


@invgen.hookimpl
def register_trainers(register):
    register("diffusion", _Trainer, description=_Trainer.description)
