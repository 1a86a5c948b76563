"""VAE prior family (plugin ``vae``): a convolutional VAE, its trainer and shipped weights.

The priors offer ``generator`` (``decode(z)`` = the decoder's mean image, ``encode(x)`` = the posterior mean,
``latent_shape = (d,)``, ``z ~ N(0, I)``) and ``log_density`` as a bound (``log_prob(x)`` = ELBO per image in nats,
``log_prob(x, k=K)`` = the importance-weighted bound). See :class:`invgen_plugins.vae.model.VAEPrior`.
"""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer, register_weight_folders

WEIGHTS = Path(__file__).parent / "weights"


def _describe(config: dict, dataset: str) -> str:
    return (
        f"convolutional VAE (d={config['vae']['latent_dim']}, discretised-logistic decoder) trained on {dataset}; "
        "log_prob = ELBO, log_prob(x, k=K) = IWAE bound"
    )


@invgen.hookimpl
def register_priors(register):
    """Register every folder of ``weights/`` that holds ``model.safetensors`` + ``config.json`` (no loading)."""
    register_weight_folders(
        register,
        WEIGHTS,
        "invgen_plugins.vae.model:VAEPrior",
        ("generator", "log_density"),
        _describe,
        log_prob_kind="bound",
    )


_Trainer = LazyTrainer(
    "invgen_plugins.vae.train", "train a VAE prior (conv encoder/decoder, discretised-logistic likelihood, EMA weights)"
)


@invgen.hookimpl
def register_trainers(register):
    """Register the ``vae`` trainer."""
    register("vae", _Trainer, description=_Trainer.description)
