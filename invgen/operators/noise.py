"""Noise models: how an observation y scatters around the noiseless A(x).

Each model draws observations (``sample``) and scores them (``log_likelihood``). Solvers use the log-likelihood,
or its closed-form Gaussian pieces, through the operator that carries the model (``operator.noise``).
"""

from __future__ import annotations

import inspect
import math
import numbers

import torch
from torch import Tensor

from invgen.errors import OptionError, RangeError, UnknownNameError


def _number(value: object, what: str) -> float:
    """``value`` as a float, else an :class:`OptionError` naming ``what`` and what came."""
    scalar = isinstance(value, numbers.Real) or (isinstance(value, Tensor) and value.numel() == 1)
    if isinstance(value, bool) or not scalar:
        raise OptionError(f"{what}: expected a number, got {value!r} ({type(value).__name__})", option=what)
    return float(value)


class NoiseModel(torch.nn.Module):
    """Base class: ``sample(ax)`` draws y around ``ax = A(x)``; ``log_likelihood(y, ax)`` is log p(y | x) per item.

    Solvers that need a Gaussian residual (DPS's ``||y - A(x)||``, a step size from ``std^2``) ask for two things:
    :meth:`gaussian_std` and :meth:`whiten`. For every model but a joint one
    (:class:`~invgen.operators.joint.JointNoise`: Gaussian parts with different stds) ``whiten`` is the identity, so
    for Gaussian noise ``log p(y | x) = -||whiten(y - A(x))||^2 / (2 gaussian_std()^2) + const`` reads as usual.
    """

    name = "noise"
    # True when whiten() is not the identity (a joint model with parts of different stds)
    whitened: bool = False

    def sample(self, ax: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def log_likelihood(self, y: Tensor, ax: Tensor) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError

    def gaussian_std(self) -> float | None:
        """The std ``s`` of a Gaussian model in whitened units (``log p(y | x) = -||whiten(y - A(x))||^2 / (2 s^2) +
        const``), or None when the model is not Gaussian."""
        return None

    def whiten(self, t: Tensor) -> Tensor:
        """``W t`` for a tensor shaped like an observation: the identity here (see the class docstring)."""
        return t


def _per_item(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise ``y = A(x) + std * n``, ``n ~ N(0, I)``.

    Args:
        std: the noise standard deviation on the [0, 1] image scale (0 gives noiseless observations).
    """

    name = "gaussian"

    def __init__(self, std: float = 0.0) -> None:
        super().__init__()
        std = _number(std, "gaussian noise: std")
        if not math.isfinite(std) or std < 0:
            raise RangeError(f"gaussian noise: expected a finite std >= 0, got {std}")
        self.std = std

    def sample(self, ax: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``y = ax + std * n``. Shape: ax and the result share any shape ``(B, ...)``."""
        if self.std == 0:
            return ax.clone()
        n = torch.randn(ax.shape, generator=generator, device=ax.device, dtype=ax.dtype)
        return ax + self.std * n

    def log_likelihood(self, y: Tensor, ax: Tensor) -> Tensor:
        """``log N(y; ax, std^2 I)`` summed over each item. Shape: y, ax ``(B, ...)`` -> ``(B,)``."""
        if self.std == 0:
            raise RangeError("gaussian noise with std = 0 has no finite log-likelihood; give the operator std > 0")
        r = _per_item((y - ax) ** 2)
        m = y[0].numel()
        return -0.5 * r / self.std**2 - 0.5 * m * math.log(2 * math.pi * self.std**2)

    def grad_log_likelihood(self, y: Tensor, ax: Tensor) -> Tensor:
        """Gradient of the log-likelihood with respect to ``ax``: ``(y - ax) / std^2``."""
        if self.std == 0:
            raise RangeError("gaussian noise with std = 0 has no finite log-likelihood; give the operator std > 0")
        return (y - ax) / self.std**2

    def config(self) -> dict:
        return {"name": self.name, "std": self.std}

    def gaussian_std(self) -> float | None:
        return self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


class PoissonNoise(NoiseModel):
    """Poisson (shot) noise ``y = Poisson(rate * A(x)) / rate``, so E[y] = A(x) and Var[y] = A(x) / rate.

    Args:
        rate: photons per unit intensity; larger is less noisy.
    """

    name = "poisson"

    def __init__(self, rate: float = 100.0) -> None:
        super().__init__()
        rate = _number(rate, "poisson noise: rate")
        if not math.isfinite(rate) or rate <= 0:
            raise RangeError(f"poisson noise: expected a finite rate > 0, got {rate}")
        self.rate = rate

    def sample(self, ax: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw counts / rate. ``ax`` must be >= 0 (an intensity). Shape: ``(B, ...)``."""
        if bool((ax < 0).any()):
            raise RangeError(f"poisson noise: expected A(x) >= 0, got a minimum of {float(ax.min()):.4g}")
        return torch.poisson(ax * self.rate, generator=generator) / self.rate

    def log_likelihood(self, y: Tensor, ax: Tensor) -> Tensor:
        """Exact Poisson log-pmf of the counts ``k = rate * y`` given ``lambda = rate * ax``, summed per item.

        The intensity is floored at 1e-8 / rate so that iterates of a solver that touch zero keep a finite value.
        Shape: y, ax ``(B, ...)`` -> ``(B,)``.
        """
        k = y * self.rate
        lam = (ax * self.rate).clamp_min(1e-8)
        return _per_item(k * torch.log(lam) - lam - torch.lgamma(k + 1))

    def config(self) -> dict:
        return {"name": self.name, "rate": self.rate}

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


NOISE_MODELS: dict[str, type[NoiseModel]] = {"gaussian": GaussianNoise, "poisson": PoissonNoise}


def noise(name: str = "gaussian", **kwargs: float) -> NoiseModel:
    """Build a noise model by name: ``noise("gaussian", std=0.05)`` or ``noise("poisson", rate=100)``."""
    if name not in NOISE_MODELS:
        raise UnknownNameError(f"unknown noise model {name!r} (known: {', '.join(NOISE_MODELS)})")
    cls = NOISE_MODELS[name]
    takes = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(takes))
    if unknown:
        raise OptionError(
            f"{name} noise: unknown option(s) {', '.join(unknown)}; it takes {', '.join(takes)}",
            option=unknown[0],
            owner=f"{name} noise",
        )
    return cls(**kwargs)
