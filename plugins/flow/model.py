"""The flow prior: a multi-scale Glow offering ``generator``, an exact ``log_density`` and its ``score``."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import Tensor

from invgen.checks import check_image, check_latents, check_tensor
from invgen.priors.base import Prior
from invgen_plugins.flow.net import FlowConfig, Glow

LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per item in nats. Shape: ``(B, d)`` -> ``(B,)``."""
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * LOG_2PI)


def flow_log_prob(net: Glow, x: Tensor) -> Tensor:
    """``log p(x) = log N(f(x - 1/2); 0, I) + log |det df/dx|`` per image in nats, ``x`` on the [0, 1] scale (the
    shift by 1/2 has unit Jacobian). Shape: ``(B, C, S, S)`` -> ``(B,)``.
    """
    z, logdet = net(x - 0.5)
    return standard_normal_log_prob(z) + logdet


def dequantized_bits_per_dim(net: Glow, levels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Bits per dimension of 8-bit images under uniform dequantisation, per image.

    ``x = (k + u) / 256`` with ``u ~ U[0, 1)`` per pixel, and ``bpd = -(log p(x) - D ln 256) / (D ln 2)``: the
    usual bound ``log P(k) >= E_u[log p((k + u) / 256)] - D ln 256`` on the probability of the 8-bit image, here
    estimated with one draw of ``u``. Shape: levels ``(B, C, S, S)`` integers in [0, 255] -> ``(B,)``.
    """
    p = next(net.parameters())
    k = levels.to(dtype=p.dtype, device=p.device)
    u = torch.rand(k.shape, generator=generator, dtype=k.dtype, device=generator.device if generator else k.device)
    x = (k + u.to(k.device)) / 256.0
    dims = k[0].numel()
    return -(flow_log_prob(net, x) - dims * math.log(256.0)) / (dims * math.log(2.0))


class FlowPrior(Prior):
    """A normalizing flow as a prior on images: ``x = 1/2 + f^-1(z)``, ``z ~ N(0, I)``, with an exact density.

    Capabilities:

    * ``log_density`` (``log_prob_kind == "exact"``): ``log_prob(x)`` is the continuous density in nats per image of
      ``x`` on the [0, 1] scale, a density on all of ``R^D`` (no logit, no hard support: the flow sees ``x - 1/2``),
      so MALA proposals slightly outside [0, 1] have a finite, smooth density;
    * ``score``: ``score(x) = grad_x log_prob(x)`` by autograd, for ``sigma = 0`` only (a flow has no noise-smoothed
      score, so ``sigma_min = sigma_max = 0``);
    * ``generator``: ``latent_shape = (C S S,)``, the multi-scale latents flattened and concatenated; ``decode`` is the
      exact inverse and ``encode`` the exact forward map (``decode(encode(x)) == x`` to float rounding). ``decode``
      does not clamp: images of latents far in the tails may leave [0, 1] slightly. ``sample`` clamps.

    Args:
        net: the trained :class:`Glow`.
        name: registry name.

    Shape:
        x: ``(B, C, S, S)``; z: ``(B, C S S)``.

    Example:
        >>> prior = FlowPrior(Glow(FlowConfig(in_channels=1, image_size=4, levels=2, steps_per_level=1, hidden=4)))
        >>> prior.decode(torch.zeros(3, 16)).shape
        torch.Size([3, 1, 4, 4])
    """

    capabilities = frozenset({"generator", "log_density", "score"})
    log_prob_kind = "exact"
    sigma_min = 0.0
    sigma_max = 0.0

    def __init__(self, net: Glow, name: str = "flow") -> None:
        super().__init__()
        self.net = net.eval()
        self.name = name
        cfg = net.config
        self.image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)

    # -- checks ---------------------------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(C S S,)``."""
        c, s, _ = self.image_shape
        return (c * s * s,)

    def _check_z(self, z: Tensor) -> Tensor:
        (d,) = self.latent_shape
        return check_tensor(check_latents(z, d, self.name), "z")

    def _check_x(self, x: Tensor, clean: bool = False) -> Tensor:
        c, s, _ = self.image_shape
        return check_image(x, "x", channels=c, size=(s, s), clean=clean)

    def _param(self, t: Tensor) -> Tensor:
        p = next(self.net.parameters())
        return t.to(dtype=p.dtype, device=p.device)

    # -- generator ------------------------------------------------------------------------------------------------
    def decode(self, z: Tensor) -> Tensor:
        """The exact inverse ``1/2 + f^-1(z)`` (not clamped: may leave [0, 1] slightly for atypical ``z``).

        Shape: ``(B, C S S)`` -> ``(B, C, S, S)``.
        """
        return (self.net.inverse(self._param(self._check_z(z))) + 0.5).to(z.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """The exact forward map ``f(x - 1/2)``. Shape: ``(B, C, S, S)`` -> ``(B, C S S)``."""
        z, _ = self.net(self._param(self._check_x(x)) - 0.5)
        return z.to(x.dtype)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Draw ``n`` images ``clamp(decode(T z), 0, 1)``, ``z ~ N(0, I)`` (``T`` the temperature; ``T < 1`` trades
        diversity for cleaner samples, as in Glow). Shape: -> ``(n, C, S, S)``.

        The learned inverse diverges for a few latents (the couplings divide by ``sigmoid(h + 2)``, which the trained
        net drives to ~0 there; 4 of 2000 draws of the shipped ``flow-mnist`` at ``T = 1``, also in float64): such
        draws are redrawn (at most 10 rounds) with a ``RuntimeWarning`` giving their count, so the samples come from
        the model restricted to the latents it can invert.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an integer >= 1, got {n!r}")
        if not (math.isfinite(float(temperature)) and float(temperature) >= 0):
            raise ValueError(f"temperature: expected a finite value >= 0, got {temperature!r}")
        p = next(self.net.parameters())
        dev = generator.device if generator is not None else p.device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=dev, dtype=p.dtype).to(p.device)
        with torch.no_grad():
            x = self.decode(float(temperature) * z)
            bad = ~torch.isfinite(x).flatten(1).all(1)
            redrawn = int(bad.sum())
            for _ in range(10):
                if not bool(bad.any()):
                    break
                k = int(bad.sum())
                z = torch.randn((k, *self.latent_shape), generator=generator, device=dev, dtype=p.dtype)
                x[bad] = self.decode(float(temperature) * z.to(p.device))
                bad = ~torch.isfinite(x).flatten(1).all(1)
            if bool(bad.any()):
                raise FloatingPointError(f"{self.name}: {int(bad.sum())} samples stay non-finite after 10 redraws")
        if redrawn:
            warnings.warn(
                f"{self.name}: {redrawn} of {n} latents had a non-finite inverse and were redrawn",
                RuntimeWarning,
                stacklevel=2,
            )
        return x.clamp(0.0, 1.0).to(dtype=dtype, device=device if device is not None else p.device)

    # -- density and score ----------------------------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """The exact log-density ``log p(x)`` in nats per image, ``x`` on the [0, 1] scale (any finite values: the
        density lives on ``R^D``). Differentiable in ``x``. Shape: ``(B, C, S, S)`` -> ``(B,)``.
        """
        return flow_log_prob(self.net, self._param(self._check_x(x))).to(x.dtype)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``grad_x log p(x)`` by autograd (also under ``torch.no_grad()``); only ``sigma = 0`` exists for a flow.

        Shape: ``(B, C, S, S)`` -> same.
        """
        s = torch.as_tensor(sigma)
        if not bool(torch.isfinite(s).all()) or bool((s != 0).any()):
            raise ValueError(
                f"{self.name}: a normalizing flow has only the score of its own density (sigma = 0), got sigma = "
                f"{sigma if not isinstance(sigma, Tensor) else sigma.tolist()}; use a diffusion prior for "
                "noise-conditional scores"
            )
        self._check_x(x)
        with torch.enable_grad():
            xg = self._param(x).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(flow_log_prob(self.net, xg).sum(), xg)
        return grad.to(x.dtype)

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bits/dim of 8-bit images under uniform dequantisation (one draw of the noise), per image.

        Args:
            x: uint8 levels ``(B, C, S, S)``, or [0, 1] images holding levels ``k / 255`` (rounded to the nearest).
            generator: for the dequantisation noise.

        Shape: ``(B, C, S, S)`` -> ``(B,)``.
        """
        if isinstance(x, Tensor) and x.dtype == torch.uint8:
            levels = x
            self._check_x(levels.float())
        else:
            levels = torch.round(self._check_x(x, clean=True) * 255.0)
        with torch.no_grad():
            return dequantized_bits_per_dim(self.net, levels, generator)

    # -- configuration --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        name: str | None = None,
        device: str | torch.device = "cpu",
        weights: str = "model.safetensors",
    ) -> FlowPrior:
        """Rebuild from ``config.json`` + safetensors weights in ``folder`` (no pickle)."""
        from invgen.train.checkpoint import load_pretrained
        from invgen.train.verify import CONFIG, config_errors, load_state

        cfg, state = load_pretrained(folder, weights, device, name)
        with config_errors(Path(folder) / CONFIG, "the flow"):
            net = Glow(FlowConfig.from_dict(cfg["flow"]))
        load_state(net, state, Path(folder) / weights)
        return cls(net.requires_grad_(False), name or cfg.get("name", "flow")).to(device)

    def config(self) -> dict:
        return {"name": self.name, "family": "flow", "flow": self.net.config.to_dict()}
