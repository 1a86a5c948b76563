"""Capability protocols of priors.

A prior offers one or more *capabilities*; solvers ask for the ones they need:

========== ====================================================== ==========================================
capability method(s)                                               meaning
========== ====================================================== ==========================================
denoiser   ``denoise(x, sigma)``                                  E[x0 | x0 + sigma n = x], the MMSE denoiser
score      ``score(x, sigma=0)``                                  grad log p_sigma(x) of the sigma-smoothed prior
log_density ``log_prob(x)`` and ``log_prob_kind``                 log p(x): ``exact``, ``bound`` or ``unnormalized``
generator  ``decode(z)``, ``latent_shape``, optional ``encode(x)`` x = G(z) with latent prior z ~ N(0, I)
========== ====================================================== ==========================================

Images are ``(B, C, H, W)`` on the [0, 1] scale and ``sigma`` is a standard deviation on that scale (a float or a
``(B,)`` tensor); a network trained on [-1, 1] converts inside its plugin.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from invgen.capabilities import CAPABILITIES, unknown_names
from invgen.errors import MissingCapabilityError


class Prior(torch.nn.Module):
    """Base class of priors. Subclasses set ``capabilities`` and implement the matching methods.

    Attributes:
        capabilities: the capabilities offered (a subset of :data:`CAPABILITIES`).
        log_prob_kind: ``"exact"``, ``"bound"`` or ``"unnormalized"`` when ``log_density`` is offered.
        image_shape: ``(C, H, W)`` the prior is defined on, or None if it accepts any size.
        sigma_min, sigma_max: the noise levels the denoiser/score are valid for.
    """

    name: str = "prior"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    log_prob_kind: ClassVar[str | None] = None
    image_shape: tuple[int, int, int] | None = None
    sigma_min: float = 0.0
    sigma_max: float = float("inf")

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """MMSE denoiser ``E[x0 | x]`` for ``x = x0 + sigma * n``. Shape: ``(B, C, H, W)`` -> same."""
        raise MissingCapabilityError(f"prior {self.name!r} has no 'denoiser' capability")

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``grad_x log p_sigma(x)``. Shape: ``(B, C, H, W)`` -> same."""
        raise MissingCapabilityError(f"prior {self.name!r} has no 'score' capability")

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` per item (see ``log_prob_kind``). Shape: ``(B, C, H, W)`` -> ``(B,)``."""
        raise MissingCapabilityError(f"prior {self.name!r} has no 'log_density' capability")

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent code (without the batch dimension)."""
        raise MissingCapabilityError(f"prior {self.name!r} has no 'generator' capability")

    def decode(self, z: Tensor) -> Tensor:
        """``G(z)``. Shape: ``(B, *latent_shape)`` -> ``(B, C, H, W)``."""
        raise MissingCapabilityError(f"prior {self.name!r} has no 'generator' capability")

    def encode(self, x: Tensor) -> Tensor:
        """An encoder ``x -> z`` where the generator has one (VAE, flow, analytic Gaussian)."""
        raise NotImplementedError(f"prior {self.name!r} has no encoder")

    def config(self) -> dict[str, Any]:
        """A dict from which the prior is rebuilt (stored beside weights and results)."""
        return {"name": self.name}


@runtime_checkable
class Denoiser(Protocol):
    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor: ...


@runtime_checkable
class Score(Protocol):
    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor: ...


@runtime_checkable
class LogDensity(Protocol):
    log_prob_kind: str | None

    def log_prob(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class Generator(Protocol):
    @property
    def latent_shape(self) -> tuple[int, ...]: ...

    def decode(self, z: Tensor) -> Tensor: ...


def capabilities_of(prior: object) -> frozenset[str]:
    """The capabilities a prior object declares."""
    caps = getattr(prior, "capabilities", None)
    if caps is None:
        raise TypeError(f"expected an invgen prior (with a 'capabilities' attribute), got {type(prior).__name__}")
    if isinstance(caps, str):
        raise TypeError(f"a prior's capabilities must be a set of names, got the string {caps!r}")
    problem = unknown_names(caps, CAPABILITIES)
    if problem:
        raise TypeError(f"prior {getattr(prior, 'name', type(prior).__name__)!r} declares {problem}")
    return frozenset(caps)
