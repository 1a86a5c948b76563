"""A DCGAN-style generator and a spectrally normalised discriminator (Radford et al. 2016; Miyato et al. 2018).

Generator: a linear map of ``z in R^d`` to ``(channels[0], 4, 4)`` features, then per level a transposed 4x4
convolution (doubling the size), BatchNorm and ReLU, then a 3x3 convolution to ``C`` channels and a sigmoid, so
images are in [0, 1] by construction. Discriminator: the mirror image with strided 4x4 convolutions and LeakyReLU(0.2),
every layer spectrally normalised (each layer 1-Lipschitz), no normalisation layers, one linear logit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass
class GANConfig:
    """Architecture of :class:`Generator` and :class:`Discriminator`; stored as JSON beside the weights.

    Attributes:
        in_channels: image channels ``C`` (1 or 3).
        image_size: side ``S`` of the square images; ``S = 4 * 2 ** len(channels)``.
        latent_dim: ``d``, the latent is ``z in R^d`` with prior ``N(0, I)``.
        channels: generator feature channels from the 4x4 level up (the discriminator uses them reversed).
    """

    in_channels: int = 1
    image_size: int = 32
    latent_dim: int = 64
    channels: tuple[int, ...] = (128, 64, 32)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or self.image_size != 4 * 2 ** len(self.channels):
            raise ValueError(
                f"GANConfig: image_size must be 4 * 2^len(channels) = {4 * 2 ** len(self.channels)} for channels "
                f"{self.channels}, got {self.image_size}"
            )
        if self.latent_dim < 1:
            raise ValueError(f"GANConfig: latent_dim must be >= 1, got {self.latent_dim}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GANConfig:
        return cls(**dict(d, channels=tuple(d["channels"])))


class Generator(nn.Module):
    """``z -> x``. Shape: ``(B, d)`` -> ``(B, C, S, S)`` in [0, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, ch[0] * 16, bias=False),
            nn.Unflatten(1, (ch[0], 4, 4)),
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        widths = [*ch[1:], ch[-1]]
        for cin, cout in zip(ch, widths):
            blocks += [
                nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(widths[-1], config.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.head(self.body(self.project(z))))


class Discriminator(nn.Module):
    """``x -> logit``. Shape: ``(B, C, S, S)`` in [0, 1] -> ``(B,)``."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        ch = tuple(reversed(config.channels))
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(config.in_channels, ch[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        prev = ch[0]
        for width in ch:
            layers += [spectral_norm(nn.Conv2d(prev, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            prev = width
        layers += [nn.Flatten(), spectral_norm(nn.Linear(prev * 16, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2.0 * x - 1.0).squeeze(1)
