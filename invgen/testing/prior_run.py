"""The machinery shared by the prior checks (:mod:`invgen.testing.check_prior`): one run's state, the clean test
images, and helpers that turn a prior's exceptions and wrong outputs into failures saying what came.

Internal: plugin authors call :func:`invgen.testing.check_prior`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invgen.errors import ConformanceError
from invgen.priors.base import Prior
from invgen.testing.report import FAILED, PASSED, SKIPPED, CheckResult, PriorReport

B = 3  # images per check
ANY_SIZE = 32  # spatial size used for priors that accept any size
RANGE_SLACK, RANGE_SPILL = 0.1, 0.05  # generator.range: at most 5 % of values outside [-0.1, 1.1]
METHODS = {
    "denoiser": ("denoise",),
    "score": ("score",),
    "log_density": ("log_prob",),
    "generator": ("latent_shape", "decode"),
}
SIGNATURES = {
    "denoiser": "denoise(x, sigma)",
    "score": "score(x, sigma=0.0)",
    "log_density": "log_prob(x) and log_prob_kind",
    "generator": "latent_shape and decode(z)",
}


class Fail(Exception):
    """A check failed: the message says what was expected, what came and what to fix."""


class Skip(Exception):
    """A check does not apply: the message says why."""


def call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; an exception becomes a failure naming the call."""
    try:
        return fn(*args, **kwargs)
    except (Fail, Skip, ConformanceError):
        raise
    except Exception as exc:
        raise Fail(f"{what} raised {type(exc).__name__}: {exc}") from exc


def shape_of(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def expect_tensor(out: Any, what: str, shape: tuple[int, ...] | None, fix: str) -> Tensor:
    """``out`` as a finite float tensor of ``shape`` (None: any 4-D), else a failure saying what came."""
    if not isinstance(out, Tensor):
        raise Fail(f"{what}: expected a torch.Tensor, got {type(out).__name__}; fix: {fix}")
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise Fail(f"{what}: expected shape {tuple(shape)}, got {tuple(out.shape)}; fix: {fix}")
    if shape is None and out.dim() != 4:
        raise Fail(f"{what}: expected a (B, C, H, W) tensor, got shape {tuple(out.shape)}; fix: {fix}")
    if not out.is_floating_point():
        raise Fail(f"{what}: expected a floating point tensor, got dtype {out.dtype}; fix: {fix}")
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        raise Fail(f"{what}: expected finite values, got {bad} NaN/Inf of {out.numel()}; fix: {fix}")
    return out


def implements(prior: Any, capability: str) -> bool:
    """Whether the object implements a capability's methods (for a :class:`Prior`: overrides the base stubs)."""
    for method in METHODS[capability]:
        found = inspect.getattr_static(type(prior), method, None)
        if found is None:
            if method not in getattr(prior, "__dict__", {}):
                return False
        elif isinstance(prior, Prior) and found is inspect.getattr_static(Prior, method):
            return False
    return True


def overrides(prior: Any, method: str) -> bool:
    found = inspect.getattr_static(type(prior), method, None)
    return callable(found) and not (isinstance(prior, Prior) and found is inspect.getattr_static(Prior, method))


def range_problem(x: Tensor, what: str) -> str | None:
    """None when ``x`` is on the [0, 1] scale (at most 5 % of values outside [-0.1, 1.1]), else the failure."""
    lo, hi = float(x.min()), float(x.max())
    spill = float(((x < -RANGE_SLACK) | (x > 1 + RANGE_SLACK)).float().mean())
    if spill <= RANGE_SPILL:
        return None
    below = float((x < 0).float().mean())
    if lo < -0.5 and hi <= 1 + RANGE_SLACK:
        fix = "this looks like a network trained on [-1, 1]: return (x + 1) / 2 from the plugin's method"
    elif hi > 2 and lo >= -RANGE_SLACK:
        fix = "this looks like 8-bit values on [0, 255]: divide by 255"
    else:
        fix = "rescale (and clamp, if the model has no density outside) the output to [0, 1]"
    return (
        f"{what}: expected clean images on the [0, 1] scale (at least {1 - RANGE_SPILL:.0%} of values in "
        f"[{-RANGE_SLACK:g}, {1 + RANGE_SLACK:g}]), got values in [{lo:.3g}, {hi:.3g}] with {spill:.1%} outside "
        f"[{-RANGE_SLACK:g}, {1 + RANGE_SLACK:g}] and {below:.1%} below 0; fix: {fix}"
    )


class Run:
    """One :func:`check_prior` run: the report being written, the prior's device and dtype, the random draws and the
    clean images the checks share."""

    def __init__(self, prior: Any, label: str, generator: torch.Generator, strict: bool) -> None:
        self.prior = prior
        self.report = PriorReport(label)
        self.gen = generator
        self.strict = strict
        tensors = [*prior.parameters(), *prior.buffers()] if isinstance(prior, torch.nn.Module) else []
        floats = [t for t in tensors if t.is_floating_point()]
        self.device = floats[0].device if floats else torch.device("cpu")
        self.dtype = floats[0].dtype if floats and floats[0].dtype == torch.float64 else torch.float32
        self.shape: tuple[int, ...] | None = None  # (C, H, W) of the test images
        self._clean: tuple[Tensor, str] | None = None
        self.decoded: Tensor | None = None  # decode(z) once generator.decode passed

    # -- recording --------------------------------------------------------------------------------------------------
    def record(self, name: str, status: str, message: str) -> None:
        result = CheckResult(name, status, message)
        self.report.results.append(result)
        if self.strict and status == FAILED:
            raise ConformanceError(f"prior {self.report.prior!r} failed {name}: {message}", result, self.report)

    def check(self, name: str, fn: Callable[[], str]) -> bool:
        """Run one check; True when it passed."""
        try:
            message = fn()
        except Skip as skip:
            self.record(name, SKIPPED, str(skip))
            return False
        except Fail as fail:
            self.record(name, FAILED, str(fail))
            return False
        except ConformanceError:
            raise
        except Exception as exc:  # a call not wrapped by call(): reported, never raised
            self.record(name, FAILED, f"raised {type(exc).__name__}: {exc}")
            return False
        self.record(name, PASSED, message)
        return True

    # -- inputs -----------------------------------------------------------------------------------------------------
    def randn(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.gen, dtype=self.dtype).to(self.device)

    def sigma_range(self, strict: bool = False) -> tuple[float, float]:
        """``(sigma_min, sigma_max)``; unreadable values give ``(0, inf)`` unless ``strict`` (the sigma.range check)."""
        try:
            return float(getattr(self.prior, "sigma_min", 0.0)), float(getattr(self.prior, "sigma_max", math.inf))
        except (TypeError, ValueError):
            if strict:
                raise
            return 0.0, math.inf

    def clip_sigma(self, sigma: float) -> float:
        lo, hi = self.sigma_range()
        return min(max(sigma, lo), hi)

    def clean(self) -> tuple[Tensor, str]:
        """``(B, C, H, W)`` clean images in [0, 1] and where they came from."""
        if self._clean is None:
            self._clean = self._make_clean()
        return self._clean

    def _make_clean(self) -> tuple[Tensor, str]:
        if self.decoded is not None:
            return self.decoded.detach().clamp(0, 1), "decode(z), z ~ N(0, I)"
        if self.shape is not None and implements(self.prior, "denoiser"):
            try:
                x = self._ddim()
                if bool(torch.isfinite(x).all()):
                    return x.clamp(0, 1), "a 12-step DDIM run of the prior's own denoiser"
            except Exception:  # the denoiser's own checks report why
                pass
        sample = getattr(self.prior, "sample", None)
        if callable(sample):
            try:
                params = inspect.signature(sample).parameters
                x = sample(B, generator=self.gen) if "generator" in params else sample(B)
                if isinstance(x, Tensor) and self.shape is not None and tuple(x.shape) == (B, *self.shape):
                    x = x.detach().to(self.device, self.dtype)
                    if bool(torch.isfinite(x).all()):
                        return x.clamp(0, 1), "the prior's sample()"
            except Exception:
                pass
        return self._synthetic(), "a smooth synthetic image (the prior has no sampler)"

    @torch.no_grad()
    def _ddim(self) -> Tensor:
        lo, hi = self.sigma_range()
        top, bottom = min(hi, 20.0), max(lo, 0.01)
        n = 12 if top > bottom else 1
        levels = torch.logspace(math.log10(top), math.log10(max(bottom, 1e-6)), n).tolist()
        x = 0.5 + levels[0] * self.randn(B, *self.shape)
        for i, s in enumerate(levels):
            d = self.prior.denoise(x, s)
            x = d + levels[i + 1] / s * (x - d) if i + 1 < n else d
        return x

    def _synthetic(self) -> Tensor:
        c, h, w = self.shape if self.shape is not None else (1, ANY_SIZE, ANY_SIZE)
        u = torch.linspace(0, 1, w, dtype=self.dtype)[None, :]
        v = torch.linspace(0, 1, h, dtype=self.dtype)[:, None]
        images = []
        for b in range(B):
            chans = [
                0.5 + 0.3 * torch.sin(2 * math.pi * (u * (1 + b) + 0.2 * k)) * torch.cos(2 * math.pi * v * (1 + k))
                for k in range(c)
            ]
            images.append(torch.stack(chans))
        return torch.stack(images).to(self.device)
