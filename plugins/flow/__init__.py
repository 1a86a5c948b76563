"""Normalizing-flow prior family (plugin ``flow``): a multi-scale Glow/RealNVP, its trainer and shipped weights.

The priors offer ``log_density`` (exact: ``log_prob(x)`` is the continuous density in nats per image of ``x`` on the
[0, 1] scale), its ``score`` (``grad_x log_prob`` by autograd, ``sigma = 0`` only) and ``generator`` (``decode`` /
``encode`` are the exact inverse / forward maps to the flat latent of ``C S S`` numbers, ``z ~ N(0, I)``). See
:class:`invgen_plugins.flow.model.FlowPrior`.
"""

from __future__ import annotations

from pathlib import Path

import invgen
from invgen.train.checkpoint import LazyTrainer, register_weight_folders

WEIGHTS = Path(__file__).parent / "weights"


def _describe(config: dict, dataset: str) -> str:
    flow = config["flow"]
    bpd = config.get("bits_per_dim", {}).get("test")
    return (
        f"multi-scale Glow ({flow['levels']} levels x {flow['steps_per_level']} steps, hidden {flow['hidden']}) "
        f"trained on {dataset}"
        + (f", {bpd:.3f} test bits/dim" if bpd is not None else "")
        + "; exact log_prob, autograd score, decode/encode = exact inverse/forward"
    )


@invgen.hookimpl
def register_priors(register):
    """Register every folder of ``weights/`` that holds ``model.safetensors`` + ``config.json`` (no loading)."""
    register_weight_folders(
        register,
        WEIGHTS,
        "invgen_plugins.flow.model:FlowPrior",
        ("generator", "log_density", "score"),
        _describe,
        log_prob_kind="exact",
    )


_Trainer = LazyTrainer(
    "invgen_plugins.flow.train",
    "train a normalizing-flow prior (multi-scale Glow, dequantised maximum likelihood, EMA weights)",
)


@invgen.hookimpl
def register_trainers(register):
    """Register the ``flow`` trainer."""
    register("flow", _Trainer, description=_Trainer.description)
