"""Energy-based prior family (plugin ``ebm``): noise-conditional energies trained by denoising score matching.

The shipped priors (``ebm-mnist``, ``ebm-fashion-mnist``) offer ``score`` (``-grad E``), ``log_density``
(``-E``, unnormalised) and ``denoiser`` (Tweedie), so the Langevin solvers (``ula``, ``mala``,
``annealed_langevin``) and the diffusion solvers both run on them. :class:`invgen_plugins.ebm.model.EnergyPrior`
wraps any user energy the same way.
"""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer, register_weight_folders

WEIGHTS = Path(__file__).parent / "weights"


def _describe(config: dict, dataset: str) -> str:
    return f"noise-conditional energy E(x, sigma) (UNet, denoising score matching) trained on {dataset}"


@invgen.hookimpl
def register_priors(register):
    """Register every folder of ``weights/`` that holds ``model.safetensors`` + ``config.json`` (no loading)."""
    register_weight_folders(
        register,
        WEIGHTS,
        "invgen_plugins.ebm.model:EnergyPrior",
        ("score", "log_density", "denoiser"),
        _describe,
        log_prob_kind="unnormalized",
    )


_Trainer = LazyTrainer(
    "invgen_plugins.ebm.train", "train a noise-conditional EBM (denoising score matching on -grad E)"
)


@invgen.hookimpl
def register_trainers(register):
    """Register the ``ebm`` trainer."""
    register("ebm", _Trainer, description=_Trainer.description)
