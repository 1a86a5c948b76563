"""The energy network: a scalar ``E(x, sigma)`` built on the diffusion plugin's noise-conditioned UNet.

On the [-1, 1] scale, with ``x = x0 + s n`` a noisy image and ``F`` the UNet (its output map summed to a scalar),

    E(x, s) = ||x||^2 / (2 (s^2 + sigma_data^2)) + sum(F(c_in(s) x, c_noise(s))) / s,
    c_in(s) = 1 / sqrt(s^2 + sigma_data^2).

The first term is the exact energy of Gaussian data N(0, sigma_data^2 I) smoothed by ``s`` (the network starts
there: its output convolution is zero-initialised); the second is a learned scalar whose input gradient is
first-order in the network's last layer, so denoising score matching trains every noise level from the start.
The score is ``-grad_x E`` by autograd: a gradient of a scalar (a conservative field) by construction, so ``-E`` is
a true unnormalised ``log p_s(x)``. The ``1/s`` makes the learned part's gradient ``O(1/s)`` (the size of a score at
noise level ``s``) while the network's own outputs stay ``O(1)``.

(A first version used ``E = ||x - f(x, s)||^2 / (2 s^2)`` with an EDM-preconditioned ``f`` (Salimans & Ho 2021).
With a zero-initialised output its score is second-order in the network at small ``s`` (``1 - c_skip ~ s^2``):
after 500 steps the score at sigma <= 0.02 was still ~0, so it was replaced.)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from invgen_plugins.diffusion.schedule import c_noise
from invgen_plugins.diffusion.unet import UNet, UNetConfig

SIGMA_DATA = 0.5


@dataclass
class EnergyConfig:
    """Architecture of :class:`EnergyUNet`: the UNet's config and the data std of the preconditioning."""

    unet: UNetConfig
    sigma_data: float = SIGMA_DATA

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "sigma_data": self.sigma_data}

    @classmethod
    def from_dict(cls, d: dict) -> EnergyConfig:
        return cls(unet=UNetConfig.from_dict(d["unet"]), sigma_data=float(d.get("sigma_data", SIGMA_DATA)))


class EnergyUNet(nn.Module):
    """``E(x, s)`` per image on the [-1, 1] scale.

    Shape:
        x: ``(B, C, H, W)`` noisy images ``x0 + s n`` on the [-1, 1] scale (H, W divisible by the UNet's stride);
        s: ``(B,)`` noise std on that scale, > 0; output: ``(B,)`` energies (nats).
    """

    def __init__(self, config: EnergyConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        sd = self.config.sigma_data
        s1 = s.reshape(-1).to(x.dtype)
        var = s1**2 + sd**2
        c_in = var.rsqrt().reshape(-1, 1, 1, 1)
        # the math attention kernel: the fused CPU kernels have no double backward, which the score's gradient needs
        with sdpa_kernel(SDPBackend.MATH):
            out = self.unet(c_in * x, c_noise(s1))
        return x.pow(2).flatten(1).sum(1) / (2.0 * var) + out.flatten(1).sum(1) / s1
