"""A noise-conditioned UNet (residual blocks, GroupNorm, self-attention at low resolution).

The network is conditioned on a continuous noise level (``log sigma`` of the VP/VE-equivalent noise), so one set of
weights serves every sigma a solver asks for, not only the training schedule's discrete steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class UNetConfig:
    """Architecture of :class:`UNet`; stored as JSON beside the weights and used to rebuild the network."""

    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    mid_attention: bool = True  # False: no global attention (a fully convolutional network for any image size)
    groups: int = 8
    dropout: float = 0.0
    emb_channels: int = field(default=0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        d = dict(d)
        d["channel_mults"] = tuple(d["channel_mults"])
        d["attention_levels"] = tuple(d["attention_levels"])
        return cls(**d)


def noise_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a continuous conditioning value. Shape: ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    args = c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """UNet predicting the noise ``eps`` from a scaled noisy image and a continuous noise conditioning.

    Shape:
        x: ``(B, C, H, W)`` with H, W divisible by :attr:`stride`; c_noise: ``(B,)``; output: ``(B, C, H, W)``.
    """

    @property
    def stride(self) -> int:
        """Image sizes must be multiples of this: ``2 ** (len(channel_mults) - 1)``."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.base_channels
        emb = config.emb_channels or 4 * c0
        self.emb_in = c0
        self.emb_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        g, dp = config.groups, config.dropout

        self.down = nn.ModuleList()
        chans = [c0]
        ch = c0
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(ch, c0 * mult, emb, g, dp)])
                ch = c0 * mult
                if level in config.attention_levels:
                    blocks.append(Attention(ch, g))
                self.down.append(blocks)
                chans.append(ch)
            if level < len(config.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                chans.append(ch)

        mid_attn = Attention(ch, g) if config.mid_attention else nn.Identity()
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, g, dp), mid_attn, ResBlock(ch, ch, emb, g, dp)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for _ in range(config.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(ch + chans.pop(), c0 * mult, emb, g, dp)])
                ch = c0 * mult
                if level in config.attention_levels:
                    blocks.append(Attention(ch, g))
                self.up.append(blocks)
            if level > 0:
                self.up.append(
                    nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)])
                )
        self.norm_out = nn.GroupNorm(g, ch)
        self.conv_out = nn.Conv2d(ch, config.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.emb_mlp(noise_embedding(c_noise, self.emb_in).to(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.conv_out(F.silu(self.norm_out(h)))
