"""GAN prior family (plugin ``gan``): a DCGAN-style generator trained with the hinge loss, its trainer, shipped weights.

The priors offer ``generator`` only (``decode(z) = G(z)`` in [0, 1], ``latent_shape = (d,)``, ``z ~ N(0, I)``): a GAN
has neither a density nor an encoder. See :class:`invgen_plugins.gan.model.GANPrior`.
"""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer, register_weight_folders

WEIGHTS = Path(__file__).parent / "weights"


def _describe(config: dict, dataset: str) -> str:
    quality = config.get("sample_quality", {})
    figure = f"; {quality['metric']} {quality['value']:.2f}" if quality.get("value") is not None else ""
    return (
        f"DCGAN-style generator (d={config['gan']['latent_dim']}, hinge loss, spectral norm) trained on {dataset}"
        + figure
    )


@invgen.hookimpl
def register_priors(register):
    """Register every folder of ``weights/`` that holds ``model.safetensors`` + ``config.json`` (no loading)."""
    register_weight_folders(register, WEIGHTS, "invgen_plugins.gan.model:GANPrior", ("generator",), _describe)


_Trainer = LazyTrainer(
    "invgen_plugins.gan.train", "train a GAN prior (DCGAN generator, hinge loss, spectrally normalised discriminator)"
)


@invgen.hookimpl
def register_trainers(register):
    """Register the ``gan`` trainer."""
    register("gan", _Trainer, description=_Trainer.description)
