"""Energy-based priors: any scalar energy ``E(x, sigma)`` offered as ``score``, ``log_density`` and ``denoiser``.

:class:`EnergyPrior` wraps an energy module and derives every capability from it by autograd:

* ``score(x, sigma) = -grad_x E(x, sigma)``, the score of ``p_sigma(x) ∝ exp(-E(x, sigma))``;
* ``log_prob(x) = -E(x, sigma_min)``, an *unnormalised* log-density (``log_prob_kind = "unnormalized"``: its
  normalising constant is unknown, so it ranks images and drives MALA's accept/reject, nothing more);
* ``denoise(x, sigma) = x + sigma^2 score(x, sigma)``, Tweedie's formula, so the diffusion solvers (DDIM, DPS,
  DiffPIR, DDRM, ...) run on an energy too, and with the noise-conditional energy's VP ``schedule``.

Gradients: when the caller differentiates through ``score``/``denoise`` (DPS does, ``x.requires_grad`` under grad
mode) the energy's gradient is built with ``create_graph=True`` (a second-order derivative); otherwise the result
is detached and no graph is kept.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from invgen.checks import as_sigma, check_image
from invgen.errors import RangeError, ShapeError
from invgen.priors.base import Prior


class EnergyPrior(Prior):
    """A prior given by an energy ``E(x, sigma)`` on [0, 1] images.

    Args:
        energy: a module ``energy(x, sigma) -> (B,)`` with ``x`` ``(B, C, H, W)`` on the [0, 1] scale and ``sigma``
            ``(B,)`` (std on that scale); for a noise-free energy ignore ``sigma``.
        image_shape: ``(C, H, W)``, or None if any size works.
        sigma_min: smallest noise level the energy is valid at (``log_prob`` and the Langevin solvers use it).
        sigma_max: largest.
        schedule: the VP schedule a noise-conditional energy was trained with (the diffusion solvers follow it).
        name: registry name.
    """

    capabilities = frozenset({"score", "log_density", "denoiser"})
    log_prob_kind = "unnormalized"

    def __init__(
        self,
        energy: nn.Module,
        image_shape: tuple[int, int, int] | None = None,
        sigma_min: float = 0.0,
        sigma_max: float = float("inf"),
        schedule: Any = None,
        name: str = "energy",
    ) -> None:
        super().__init__()
        self.energy_fn = energy.eval()
        for p in self.energy_fn.parameters():
            p.requires_grad_(False)
        self.image_shape = image_shape
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        if schedule is not None:
            self.schedule = schedule
        self.name = name

    def _sigma(self, x: Tensor, sigma: float | Tensor | None) -> Tensor:
        s = as_sigma(self.sigma_min if sigma is None else sigma, x)
        if bool((s < self.sigma_min * (1 - 1e-3)).any()):  # 0.005 for 0.0050003 is fine
            raise RangeError(
                f"prior {self.name!r}: sigma must be >= its sigma_min {self.sigma_min:.4g}, got {s.min().item():.4g}"
            )
        return s

    def _check(self, x: Tensor) -> None:
        check_image(x, "x", channels=self.image_shape[0] if self.image_shape else None)
        if self.image_shape is not None and tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ShapeError(f"prior {self.name!r}: expected images of shape (B, {self.image_shape}), got {x.shape}")

    def energy(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """``E(x, sigma)`` per image (default ``sigma_min``). Shape: ``(B, C, H, W)`` -> ``(B,)``."""
        self._check(x)
        return self.energy_fn(x, self._sigma(x, sigma).reshape(-1))

    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalised ``log p(x) = -E(x, sigma_min)``. Shape: ``(B, C, H, W)`` -> ``(B,)``."""
        return -self.energy(x, None)

    def score(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """``-grad_x E(x, sigma)`` (default ``sigma_min``). Shape: ``(B, C, H, W)`` -> same."""
        self._check(x)
        s = self._sigma(x, sigma).reshape(-1)
        keep_graph = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            xg = x if keep_graph else x.detach().requires_grad_(True)
            e = self.energy_fn(xg, s)
            (g,) = torch.autograd.grad(e.sum(), xg, create_graph=keep_graph)
        return -g if keep_graph else -g.detach()

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Tweedie: ``x + sigma^2 score(x, sigma)``. Shape: ``(B, C, H, W)`` -> same."""
        s = self._sigma(x, sigma)
        return x + s**2 * self.score(x, s.reshape(-1))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        n_levels: int = 30,
        steps_per_level: int = 20,
        eps: float = 2e-5,
        sigma_max: float = 1.0,
        sigma_min: float | None = None,
        denoise_last: bool = True,
    ) -> Tensor:
        """Unconditional samples by annealed Langevin dynamics on the energy (Song & Ermon 2019, their step rule).

        Levels ``sigma_max -> sigma_min`` geometric; at level ``s_i`` ``steps_per_level`` ULA steps of size
        ``eps s_i^2 / s_L^2`` with the score ``-grad E(., s_i)``; ``denoise_last`` ends with one Tweedie step.

        Returns:
            ``(n, C, H, W)`` samples (clamped to [0, 1]).
        """
        if self.image_shape is None:
            raise ValueError(f"prior {self.name!r} has no fixed image_shape; sample needs one")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an integer >= 1, got {n!r}")
        lo = max(self.sigma_min, 1e-3) if sigma_min is None else float(sigma_min)
        if not 0 < lo <= sigma_max:
            raise RangeError(f"expected 0 < sigma_min <= sigma_max, got {lo}, {sigma_max}")
        p = next(self.energy_fn.parameters(), torch.empty(0))
        levels = torch.logspace(math.log10(sigma_max), math.log10(lo), n_levels, dtype=torch.float64).tolist()
        x = 0.5 + sigma_max * torch.randn((n, *self.image_shape), generator=generator, dtype=p.dtype)
        x = x.to(p.device)
        for s in levels:
            a = eps * s**2 / levels[-1] ** 2
            for _ in range(steps_per_level):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x = x + a * self.score(x, s) + math.sqrt(2 * a) * noise
        if denoise_last:
            x = self.denoise(x, levels[-1])
        return x.clamp(0, 1)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        name: str | None = None,
        device: str | torch.device = "cpu",
        weights: str = "model.safetensors",
    ) -> EnergyPrior:
        """Rebuild a trained noise-conditional energy from ``config.json`` + safetensors in ``folder`` (no pickle)."""
        from invgen.train.checkpoint import load_pretrained
        from invgen.train.verify import CONFIG, config_errors, load_state
        from invgen_plugins.diffusion.schedule import SIGMA_MIN, VPSchedule
        from invgen_plugins.ebm.net import EnergyConfig, EnergyUNet

        cfg, state = load_pretrained(folder, weights, device, name)
        with config_errors(Path(folder) / CONFIG, "the energy network"):
            net = EnergyUNet(EnergyConfig.from_dict(cfg["energy"]))
        load_state(net, state, Path(folder) / weights)
        with config_errors(Path(folder) / CONFIG, "the prior"):
            schedule = VPSchedule(**cfg["schedule"])
            prior = cls(
                ScaledEnergy(net),
                tuple(cfg["image_shape"]),
                sigma_min=SIGMA_MIN,
                sigma_max=float(schedule.sigmas()[-1]) / 2,
                schedule=schedule,
                name=name or cfg.get("name", "ebm"),
            )
        return prior.to(device)

    def config(self) -> dict[str, Any]:
        cfg = getattr(self.energy_fn, "config", None)
        return {
            "name": self.name,
            "energy": cfg.to_dict() if hasattr(cfg, "to_dict") else type(self.energy_fn).__name__,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
        }


class ScaledEnergy(nn.Module):
    """A network's energy on the [-1, 1] scale seen on the [0, 1] scale: ``E(x, sigma) = E_net(2x - 1, 2 sigma)``.

    (The densities differ by the constant Jacobian ``2^d``, which an unnormalised energy drops.)
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.config = getattr(net, "config", None)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.net(2.0 * x - 1.0, 2.0 * sigma)
