"""A convolutional VAE: encoder to a diagonal Gaussian ``q(z | x)``, decoder to a discretised logistic per pixel.

Encoder: a 3x3 convolution, then per level a strided 4x4 convolution (halving the size) and a 3x3 convolution, SiLU
between them, and a linear map of the flattened ``(channels[-1], S / 2^L, S / 2^L)`` features to ``(mu, logvar)``
in ``R^d``. Decoder: the mirror image with transposed 4x4 convolutions, ending in a 3x3 convolution to ``2 C``
channels: the location ``m`` and log-scale ``log s`` of each pixel's discretised logistic
(:mod:`invgen_plugins.vae.likelihood`). Inputs are mapped to [-1, 1] inside the encoder; ``m`` is on the [0, 1] scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn


@dataclass
class VAEConfig:
    """Architecture of :class:`ConvVAE`; stored as JSON beside the weights and used to rebuild the network.

    Attributes:
        in_channels: image channels ``C`` (1 or 3).
        image_size: side ``S`` of the square images; divisible by ``2 ** len(channels)``.
        latent_dim: ``d``, the latent is ``z in R^d`` with prior ``N(0, I)``.
        channels: feature channels of the levels, from the image resolution down.
    """

    in_channels: int = 1
    image_size: int = 32
    latent_dim: int = 32
    channels: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        stride = 2 ** len(self.channels)
        if not self.channels or self.image_size % stride:
            raise ValueError(
                f"VAEConfig: image_size {self.image_size} must be divisible by 2^len(channels) = {stride} "
                f"(channels {self.channels})"
            )
        if self.latent_dim < 1:
            raise ValueError(f"VAEConfig: latent_dim must be >= 1, got {self.latent_dim}")

    @property
    def bottom(self) -> int:
        """Side of the lowest-resolution feature map."""
        return self.image_size // 2 ** len(self.channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        return cls(**dict(d, channels=tuple(d["channels"])))


class ConvVAE(nn.Module):
    """Encoder ``x -> (mu, logvar)`` and decoder ``z -> (loc, log_scale)``.

    Shape:
        x: ``(B, C, S, S)`` in [0, 1]; mu, logvar, z: ``(B, d)``; loc, log_scale: ``(B, C, S, S)``.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c, ch, r = config.in_channels, config.channels, config.bottom
        enc: list[nn.Module] = [nn.Conv2d(c, ch[0], 3, padding=1)]
        prev = ch[0]
        for width in ch:
            enc += [nn.SiLU(), nn.Conv2d(prev, width, 4, stride=2, padding=1), nn.SiLU()]
            enc += [nn.Conv2d(width, width, 3, padding=1)]
            prev = width
        enc += [nn.SiLU(), nn.Flatten(), nn.Linear(ch[-1] * r * r, 2 * config.latent_dim)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Linear(config.latent_dim, ch[-1] * r * r), nn.Unflatten(1, (ch[-1], r, r))]
        for i in reversed(range(len(ch))):
            out = ch[i - 1] if i > 0 else ch[0]
            dec += [nn.SiLU(), nn.Conv2d(ch[i], ch[i], 3, padding=1), nn.SiLU()]
            dec += [nn.ConvTranspose2d(ch[i], out, 4, stride=2, padding=1)]
        dec += [nn.SiLU(), nn.Conv2d(ch[0], 2 * c, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """He initialisation (variance preserving through SiLU), so that at the start ``mu(x)`` differs between
        images and the decoder's output depends on ``z``. PyTorch's default initialisation shrinks the signal about
        threefold per layer: through these stacks ``mu`` then varies by ~1e-9 between images, ``z`` is pure noise to
        the decoder, and the posterior collapses (KL ~ 0) before the encoder ever becomes useful.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):  # each output sees in_channels * (4 / 2)^2 inputs
                m.weight.normal_(0.0, (2.0 / (m.in_channels * 4)) ** 0.5)
                nn.init.zeros_(m.bias)
        c, d = self.config.in_channels, self.config.latent_dim
        head = self.encoder[-1]
        head.weight.mul_(2.0)  # mu(x) then differs by ~0.15 between MNIST digits
        head.bias[d:] = -2.0  # start with a posterior std of ~0.37, so z carries x from the first step
        out = self.decoder[-1]  # start near the data: mid-grey locations, scales of a few grey levels
        out.weight.mul_(0.05)
        out.bias[:c] = 0.5
        out.bias[c:] = -2.0

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``q(z | x)``. Shape: ``(B, C, S, S)`` -> two ``(B, d)``."""
        mu, logvar = self.encoder(2.0 * x - 1.0).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, log_scale)`` of ``p(x | z)``. Shape: ``(B, d)`` -> two ``(B, C, S, S)``."""
        loc, log_scale = self.decoder(z).chunk(2, dim=1)
        return loc, log_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - modules need a forward
        return self.encode(x)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per item, in nats. Shape: ``(B, d)`` -> ``(B,)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
