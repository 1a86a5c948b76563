"""A generator prior plugin whose weights live in a safetensors folder: write the folder, register it, check it.

The prior is a tiny MLP decoder ``x = sigmoid(MLP(z))`` on 1x8x8 images, ``z ~ N(0, I)`` in 4 dimensions (random
weights: the point is the plumbing, not the images). It follows the built-in families' layout:

* a *weight folder* holds ``config.json`` (what rebuilds the network, and ``image_shape``) and ``model.safetensors``;
  :func:`invgen.weights.export_weights` writes the latter atomically, :func:`invgen.weights.write_config` the former
  with the SHA-256 of the tensors, and :func:`invgen.weights.load_pretrained` reads both back, checked
  (``(config, state_dict)``, never pickle);
* the plugin registers a *factory* with its metadata (``capabilities``, ``image_shape`` read from the small
  ``config.json``), so ``invgen plugins`` lists it without loading the weights;
* :func:`invgen.testing.check_registered` builds it by name and runs the conformance checks against that metadata.

A package would ship the folder beside its module (``WEIGHTS = Path(__file__).parent / "weights"``) and could register
every folder at once with :func:`invgen.weights.register_weight_folders`; here the folder is written to ``--out``.

Run::

    python examples/generator_plugin.py --out /tmp/generator-plugin
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import Tensor, nn

import invgen
from invgen.weights import export_weights, load_pretrained, write_config

PRIOR_NAME = "example-tiny-generator"


class TinyDecoder(nn.Module):
    """``z -> sigmoid(W2 relu(W1 z))`` reshaped to ``image_shape``."""

    def __init__(self, latent_dim: int, hidden: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.body = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(image_shape)))

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.body(z)).reshape(z.shape[0], *self.image_shape)


class TinyGeneratorPrior(invgen.Prior):
    """``x = G(z)``, ``z ~ N(0, I)``: the ``generator`` capability.

    Shape:
        z: ``(B, latent_dim)``; x: ``(B, *image_shape)`` in [0, 1] (the sigmoid keeps it there).
    """

    capabilities = frozenset({"generator"})

    def __init__(self, net: TinyDecoder, name: str = PRIOR_NAME) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.image_shape = net.image_shape

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.net.body[0].in_features,)

    def decode(self, z: Tensor) -> Tensor:
        return self.net(z)  # differentiable in z: the latent solvers follow its gradient

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(torch.randn(n, *self.latent_shape, generator=generator))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu") -> TinyGeneratorPrior:
        """Rebuild from ``config.json`` + ``model.safetensors``."""
        config, state = load_pretrained(folder, device=device)
        net = TinyDecoder(config["latent_dim"], config["hidden"], tuple(config["image_shape"]))
        net.load_state_dict(state)
        return cls(net, config.get("name", PRIOR_NAME)).to(device)

    def config(self) -> dict:
        return {"name": self.name, "latent_dim": self.latent_shape[0], "image_shape": list(self.image_shape)}


def write_weights(folder: Path, seed: int = 0) -> Path:
    """Write a weight folder: ``config.json`` and ``model.safetensors`` (a seeded, untrained decoder)."""
    config = {"name": PRIOR_NAME, "latent_dim": 4, "hidden": 32, "image_shape": [1, 8, 8]}
    torch.manual_seed(seed)
    net = TinyDecoder(config["latent_dim"], config["hidden"], tuple(config["image_shape"]))
    folder.mkdir(parents=True, exist_ok=True)
    export_weights(net, folder)  # -> folder / "model.safetensors"
    write_config(folder, config)  # -> folder / "config.json", with the SHA-256 that loading checks
    return folder


class TinyGeneratorPlugin:
    """The plugin: registers the folder's prior by name; only ``config.json`` is read until the prior is built."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @invgen.hookimpl
    def register_priors(self, register):
        config = json.loads((self.folder / "config.json").read_text())
        register(
            PRIOR_NAME,
            lambda device="cpu": TinyGeneratorPrior.from_pretrained(self.folder, device=device),
            capabilities=("generator",),
            image_shape=tuple(config["image_shape"]),
            description="a tiny MLP decoder loaded from a safetensors weight folder (examples/generator_plugin.py)",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/out/generator_plugin", help="where the weight folder is written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="accepted for symmetry with the other examples")
    args = parser.parse_args(argv)

    folder = write_weights(Path(args.out) / PRIOR_NAME, seed=args.seed)
    plugin = TinyGeneratorPlugin(folder)
    invgen.plugin_manager().register(plugin, name="example-tiny-generator-plugin")
    try:
        from invgen.testing import check_registered

        (report,) = check_registered(PRIOR_NAME)
        print(report)
        prior = invgen.prior(PRIOR_NAME)
        x = prior.sample(2, generator=torch.Generator().manual_seed(args.seed))
        print(f"metrics {PRIOR_NAME}: checks_failed={len(report.failed)} min={float(x.min()):.3f} "
              f"max={float(x.max()):.3f}")  # fmt: skip
        return 0 if report.ok else 1
    finally:
        invgen.plugin_manager().unregister(plugin)


if __name__ == "__main__":
    raise SystemExit(main())
