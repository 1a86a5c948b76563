"""VAE prior family (plugin ``vae``): a convolutional VAE, its trainer and shipped weights.

The priors offer ``generator`` (``decode(z)`` = the decoder's mean image, ``encode(x)`` = the posterior mean,
``latent_shape = (d,)``, ``z ~ N(0, I)``) and ``log_density`` as a bound (``log_prob(x)`` = ELBO per image in nats,
``log_prob(x, k=K)`` = the importance-weighted bound). See :class:`invgen_plugins.vae.model.VAEPrior`.
"""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer

WEIGHTS = Path(__file__).parent / "weights"


def _pretrained(name: str):
    def factory(device: str = "cpu", **kw):
        from invgen_plugins.vae.model import VAEPrior

        folder = WEIGHTS / name
        if not (folder / "model.safetensors").exists():
            raise FileNotFoundError(f"the weights of {name!r} are not shipped in this build ({folder})")
        return VAEPrior.from_pretrained(folder, name=name, device=device, **kw)

    return factory


@invgen.hookimpl
def register_priors(register):
    """Register every folder of ``weights/`` that holds ``model.safetensors`` + ``config.json`` (no loading)."""
    import json

    for folder in sorted(p for p in WEIGHTS.glob("*") if (p / "model.safetensors").exists()):
        config = json.loads((folder / "config.json").read_text())  # a small file: listing stays cheap
        trained_on = config.get("training", {}).get("dataset")
        register(
            folder.name,
            _pretrained(folder.name),
            capabilities=("generator", "log_density"),
            log_prob_kind="bound",
            image_shape=tuple(config["image_shape"]),
            datasets=(trained_on,) if trained_on else (),
            description=f"convolutional VAE (d={config['vae']['latent_dim']}, discretised-logistic decoder) trained "
            f"on {trained_on or folder.name.removeprefix('vae-')}; log_prob = ELBO, log_prob(x, k=K) = IWAE bound",
        )


_Trainer = LazyTrainer(
    "invgen_plugins.vae.train", "train a VAE prior (conv encoder/decoder, discretised-logistic likelihood, EMA weights)"
)


@invgen.hookimpl
def register_trainers(register):
    """Register the ``vae`` trainer."""
    register("vae", _Trainer, description=_Trainer.description)
