"""A multi-scale Glow (Kingma & Dhariwal 2018; the multi-scale architecture of RealNVP, Dinh et al. 2017).

Per level: a squeeze (space-to-depth, ``(C, S, S) -> (4C, S/2, S/2)``), ``K`` flow steps of

* **actnorm**: ``y = (x + b) exp(s)`` per channel, initialised from the first batch it sees so that its output has
  zero mean and unit variance per channel (the "initialised" flag is a buffer, so it survives save / load);
* **invertible 1x1 convolution**, LU-parametrised ``W = P L (U + diag(sign exp(log_s)))`` with ``P`` fixed, so
  ``log |det W| = sum(log_s)`` per pixel;
* **affine coupling**: ``(x_a, x_b) -> (x_a, (x_b + t(x_a)) sigmoid(h(x_a) + 2))``, ``(t, h)`` from
  conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-initialised conv3x3 (so each step starts near the identity);

then, except at the last level, half the channels are factored out as latents. Every latent part, the factored-out
ones and the last level's, has the prior ``N(0, I)`` (no learned conditional prior: simpler, and the flat latent
is then exactly white under the model). The flat latent is the concatenation of the flattened parts from the first
level down, ``C * S * S`` numbers per image.

Everything is exactly invertible (up to floating-point rounding) and the log-determinants are closed forms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class FlowConfig:
    """Architecture of :class:`Glow`; stored as JSON beside the weights and used to rebuild the network.

    Attributes:
        in_channels: image channels ``C`` (1 or 3).
        image_size: side ``S`` of the square images; divisible by ``2 ** levels``.
        levels: number of squeeze levels (each but the last factors out half its channels).
        steps_per_level: flow steps ``K`` (actnorm, 1x1 convolution, affine coupling) per level.
        hidden: feature channels of the coupling networks.
    """

    in_channels: int = 1
    image_size: int = 32
    levels: int = 3
    steps_per_level: int = 8
    hidden: int = 64

    def __post_init__(self) -> None:
        if self.levels < 1 or self.steps_per_level < 1 or self.hidden < 1 or self.in_channels < 1:
            raise ValueError(f"FlowConfig: levels, steps_per_level, hidden and in_channels must be >= 1, got {self}")
        if self.image_size % 2**self.levels:
            raise ValueError(
                f"FlowConfig: image_size {self.image_size} must be divisible by 2^levels = {2**self.levels}"
            )

    @property
    def latent_parts(self) -> list[tuple[int, int, int]]:
        """Shapes ``(C_l, S_l, S_l)`` of the latent parts, from the first level down; they total ``C S S`` numbers."""
        c, s, parts = self.in_channels, self.image_size, []
        for level in range(self.levels):
            c, s = 4 * c, s // 2
            if level < self.levels - 1:
                parts.append((c // 2, s, s))
                c //= 2
            else:
                parts.append((c, s, s))
        return parts

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FlowConfig:
        return cls(**d)


def squeeze(x: Tensor) -> Tensor:
    """Space-to-depth by 2. Shape: ``(B, C, H, W)`` -> ``(B, 4C, H/2, W/2)``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Depth-to-space by 2, the inverse of :func:`squeeze`. Shape: ``(B, 4C, H, W)`` -> ``(B, C, 2H, 2W)``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


class ActNorm(nn.Module):
    """``y = (x + bias) * exp(log_scale)`` per channel, with data-dependent initialisation on the first forward call.

    Shape: ``(B, C, H, W)`` -> same; log-determinant ``H W sum(log_scale)`` per item.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized):
            self.initialize(x)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return (x + self.bias) * torch.exp(self.log_scale), logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution ``W = P L (U + diag(sign * exp(log_s)))`` (Glow's LU parametrisation), started at a
    random rotation. Shape: ``(B, C, H, W)`` -> same; log-determinant ``H W sum(log_s)`` per item.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> Tensor:
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()
        return F.conv2d(x, w[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class AffineCoupling(nn.Module):
    """Glow's affine coupling: the second half of the channels is shifted and scaled by ``sigmoid(h + 2)``, both
    computed from the first half. Shape: ``(B, C, H, W)`` -> same; log-determinant ``sum log sigmoid(h + 2)``.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.half, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * (channels - self.half), 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _shift_log_scale(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = self.net(xa).chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xa, xb = x[:, : self.half], x[:, self.half :]
        shift, log_scale = self._shift_log_scale(xa)
        yb = (xb + shift) * torch.exp(log_scale)
        return torch.cat([xa, yb], dim=1), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        ya, yb = y[:, : self.half], y[:, self.half :]
        shift, log_scale = self._shift_log_scale(ya)
        return torch.cat([ya, yb * torch.exp(-log_scale) - shift], dim=1)


class FlowStep(nn.Module):
    """Actnorm, invertible 1x1 convolution, affine coupling."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.conv = InvConv1x1(channels)
        self.coupling = AffineCoupling(channels, hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, ld1 = self.actnorm(x)
        x, ld2 = self.conv(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3

    def inverse(self, y: Tensor) -> Tensor:
        return self.actnorm.inverse(self.conv.inverse(self.coupling.inverse(y)))


class Glow(nn.Module):
    """The multi-scale flow ``f``: image ``u = x - 1/2`` (``x`` in [0, 1]) -> flat latent ``z``, and ``log|det df/du|``.

    Shape:
        u: ``(B, C, S, S)``; z: ``(B, C S S)``; logdet: ``(B,)``.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        c = config.in_channels
        self.levels = nn.ModuleList()
        for level in range(config.levels):
            c *= 4
            self.levels.append(nn.ModuleList(FlowStep(c, config.hidden) for _ in range(config.steps_per_level)))
            if level < config.levels - 1:
                c //= 2

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, logdet)``. Shape: ``(B, C, S, S)`` -> ``(B, C S S)``, ``(B,)``."""
        logdet = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        parts, h = [], u
        for level, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if level < len(self.levels) - 1:
                half = h.shape[1] // 2
                parts.append(h[:, :half].flatten(1))
                h = h[:, half:]
        parts.append(h.flatten(1))
        return torch.cat(parts, dim=1), logdet

    def inverse(self, z: Tensor) -> Tensor:
        """The image ``u = f^-1(z)``. Shape: ``(B, C S S)`` -> ``(B, C, S, S)``."""
        shapes = self.config.latent_parts
        sizes = [c * s * s for c, s, _ in shapes]
        parts = [p.reshape(-1, *shape) for p, shape in zip(z.split(sizes, dim=1), shapes, strict=True)]
        h = parts[-1]
        for level in reversed(range(len(self.levels))):
            if level < len(self.levels) - 1:
                h = torch.cat([parts[level], h], dim=1)
            for step in reversed(self.levels[level]):
                h = step.inverse(h)
            h = unsqueeze(h)
        return h
