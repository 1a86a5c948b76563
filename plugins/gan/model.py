"""The GAN prior: a trained generator ``x = G(z)``, ``z ~ N(0, I)``, offering the ``generator`` capability."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from invgen.checks import check_latents
from invgen.priors.base import Prior
from invgen_plugins.gan.net import GANConfig, Generator


class GANPrior(Prior):
    """A GAN generator as a prior on [0, 1] images: the push-forward of ``N(0, I)`` through ``G``.

    A GAN has no density and no encoder: it offers only ``generator`` (``decode(z) = G(z)``, ``latent_shape``), which
    the latent solvers (:mod:`invgen.solvers.latent`: CSGM's ``latent_map``, ``latent_mala``, ``latent_hmc``) use.
    The generator runs in evaluation mode (BatchNorm with its recalibrated running statistics), so ``G(z)`` of one
    latent does not depend on the others in the batch.

    Args:
        net: the trained :class:`Generator`.
        name: registry name.

    Shape:
        z: ``(B, d)``; x: ``(B, C, S, S)`` in [0, 1].

    Example:
        >>> prior = GANPrior(Generator(GANConfig(in_channels=1, image_size=8, latent_dim=2, channels=(4,))))
        >>> prior.decode(torch.zeros(3, 2)).shape
        torch.Size([3, 1, 8, 8])
    """

    capabilities = frozenset({"generator"})

    def __init__(self, net: Generator, name: str = "gan") -> None:
        super().__init__()
        self.net = net.eval()
        self.name = name
        cfg = net.config
        self.image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(d,)``."""
        return (self.net.config.latent_dim,)

    def decode(self, z: Tensor) -> Tensor:
        """``G(z)`` in [0, 1], differentiable in ``z``. Shape: ``(B, d)`` -> ``(B, C, S, S)``."""
        check_latents(z, self.net.config.latent_dim, self.name)
        p = next(self.net.parameters())
        return self.net(z.to(dtype=p.dtype, device=p.device)).to(z.dtype)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        truncation: float | None = None,
    ) -> Tensor:
        """Draw ``n`` images ``G(z)``, ``z ~ N(0, I)`` drawn on the generator's device (the CPU without one).

        Args:
            n: number of images.
            generator: for the latents.
            dtype, device: of the result (default the network's device).
            truncation: if given, latents are resampled until every coordinate is within ``+-truncation`` (the
                truncation trick: fewer, cleaner modes; ``None`` samples the prior itself).

        Shape: -> ``(n, C, S, S)``.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an integer >= 1, got {n!r}")
        if truncation is not None and truncation <= 0:
            raise ValueError(f"truncation: expected a positive threshold or None, got {truncation!r}")
        p = next(self.net.parameters())
        dev = generator.device if generator is not None else p.device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=dev, dtype=p.dtype)
        if truncation is not None:
            bad = z.abs() > truncation
            while bool(bad.any()):
                z = torch.where(bad, torch.randn(z.shape, generator=generator, device=dev, dtype=p.dtype), z)
                bad = z.abs() > truncation
        with torch.no_grad():
            x = self.decode(z.to(p.device))
        return x.to(dtype=dtype, device=device if device is not None else p.device)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        name: str | None = None,
        device: str | torch.device = "cpu",
        weights: str = "model.safetensors",
    ) -> GANPrior:
        """Rebuild from ``config.json`` + safetensors generator weights in ``folder`` (no pickle)."""
        from invgen.train.checkpoint import load_pretrained
        from invgen.train.verify import CONFIG, config_errors, load_state

        cfg, state = load_pretrained(folder, weights, device, name)
        with config_errors(Path(folder) / CONFIG, "the generator"):
            net = Generator(GANConfig.from_dict(cfg["gan"]))
        load_state(net, state, Path(folder) / weights)
        return cls(net.requires_grad_(False), name or cfg.get("name", "gan")).to(device)

    def config(self) -> dict:
        return {"name": self.name, "family": "gan", "gan": self.net.config.to_dict()}
