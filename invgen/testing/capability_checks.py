"""The checks of each capability's contract (generator, sigma range, denoiser, score, log-density), run by
:func:`invgen.testing.check_prior` on a :class:`~invgen.testing.prior_run.Run`."""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import torch
from torch import Tensor

from invgen.capabilities import LOG_PROB_KINDS
from invgen.testing.prior_run import B, Fail, Run, Skip, call, expect_tensor, overrides, range_problem, shape_of

DENOISER_SIGMAS = (0.1, 0.3)
TWEEDIE_TOL = 0.05
FD_TOL = 0.02


# -- generator ----------------------------------------------------------------------------------------------------
def generator_checks(run: Run) -> None:
    prior = run.prior
    latent: tuple[int, ...] | None = None
    fix_decode = "decode(z) must map (B, *latent_shape) latents to (B, C, H, W) images of image_shape"

    def latent_shape() -> str:
        nonlocal latent
        shape = call("latent_shape", lambda: prior.latent_shape)
        if not isinstance(shape, tuple | list | torch.Size) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise Fail(f"expected latent_shape to be a tuple of positive ints, e.g. (64,), got {shape!r}")
        latent = tuple(shape)
        return f"latent_shape {latent}"

    def decode() -> str:
        if latent is None:
            raise Skip("latent_shape is unusable")
        z = run.randn(B, *latent)
        with torch.no_grad():
            x = call(f"decode(z) with z of shape {shape_of(z)}", prior.decode, z)
        want = (B, *run.shape) if getattr(prior, "image_shape", None) is not None else None
        run.decoded = expect_tensor(x, f"decode(z) with z of shape {shape_of(z)}", want, fix_decode).detach()
        if want is None:
            run.shape = tuple(run.decoded.shape[1:])
        return f"decode: {shape_of(z)} -> {shape_of(x)}, finite"

    def value_range() -> str:
        if run.decoded is None:
            raise Skip("decode failed")
        x = run.decoded
        problem = range_problem(x, "decode(z)")
        if problem:
            raise Fail(problem)
        return f"decode(z) values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"

    def grad() -> str:
        if run.decoded is None:
            raise Skip("decode failed")
        z = run.randn(B, *latent).requires_grad_(True)
        with torch.enable_grad():
            x = call("decode(z) with z.requires_grad", prior.decode, z)
            if not x.requires_grad:
                raise Fail(
                    "expected decode(z) to be differentiable in z (the latent solvers follow its gradient), got an "
                    "output without a graph; fix: do not call decode's network under torch.no_grad() or .detach()"
                )
            (g,) = call("autograd through decode", torch.autograd.grad, x.sum(), z, allow_unused=True)
        if g is None or not bool(torch.isfinite(g).all()):
            raise Fail(f"expected a finite gradient of decode(z) in z, got {g if g is None else 'NaN/Inf'}")
        return "decode is differentiable in z"

    def sample() -> str:
        method = getattr(prior, "sample", None)
        if not callable(method):
            raise Skip("the prior has no sample method")
        try:
            takes_generator = "generator" in inspect.signature(method).parameters
        except (TypeError, ValueError):  # not introspectable: call it plainly
            takes_generator = False
        n = 2
        kwargs = {"generator": run.gen} if takes_generator else {}
        with torch.no_grad():
            x = call("sample(2)", method, n, **kwargs)
        want = (n, *run.shape) if run.shape else None
        x = expect_tensor(x, "sample(2)", want, "sample(n) must return (n, C, H, W) images")
        problem = range_problem(x, "sample(2)")
        if problem:
            raise Fail(problem)
        return f"sample(2) -> {shape_of(x)} in [{float(x.min()):.3g}, {float(x.max()):.3g}]"

    def encode() -> str:
        if not overrides(prior, "encode"):
            raise Skip("no encoder (optional)")
        if latent is None or run.decoded is None:
            raise Skip("decode failed")
        x = run.decoded.clamp(0, 1)
        with torch.no_grad():
            z = call(f"encode(x) with x of shape {shape_of(x)}", prior.encode, x)
        expect_tensor(z, "encode(x)", (B, *latent), "encode(x) must return (B, *latent_shape) latents")
        return f"encode: {shape_of(x)} -> {shape_of(z)}"

    run.check("generator.latent_shape", latent_shape)
    run.check("generator.decode", decode)
    run.check("generator.range", value_range)
    run.check("generator.grad", grad)
    run.check("generator.sample", sample)
    run.check("generator.encode", encode)


# -- denoiser and score -------------------------------------------------------------------------------------------
def sigma_check(run: Run, capabilities: set[str]) -> None:
    def sigma_range() -> str:
        try:
            lo, hi = run.sigma_range(strict=True)
        except (TypeError, ValueError) as exc:
            raise Fail(f"expected numbers sigma_min and sigma_max, got {exc}") from exc
        if not (math.isfinite(lo) and lo >= 0 and hi >= lo) or math.isnan(hi):
            raise Fail(
                f"expected 0 <= sigma_min <= sigma_max (sigma_max may be inf), got sigma_min={lo}, sigma_max={hi}; "
                "fix: set them to the noise levels (std on the [0, 1] scale) the denoiser/score are valid for"
            )
        if "denoiser" in capabilities and hi <= 0:
            raise Fail(f"a denoiser needs sigma_max > 0, got {hi}; fix: set sigma_max to the largest valid level")
        return f"sigma in [{lo:.3g}, {hi:.3g}]"

    run.check("sigma.range", sigma_range)


def _method_output(run: Run, method: str, sigmas: list[float]) -> str:
    """``method(x, sigma)`` keeps the shape and is finite, with float and ``(B,)`` tensor sigmas."""
    fn = getattr(run.prior, method)
    clean, _ = run.clean()
    for s in sigmas:
        x = clean + s * run.randn(*clean.shape)
        with torch.no_grad():
            out = call(f"{method}(x, {s:.3g})", fn, x, s)
            fix = f"{method}(x, sigma) must return a tensor of x's shape"
            out = expect_tensor(out, f"{method}(x, {s:.3g}) with x of shape {shape_of(x)}", tuple(x.shape), fix)
            st = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)
            other = call(f"{method}(x, sigma) with sigma a ({B},) tensor", fn, x, st)
        if not isinstance(other, Tensor) or other.shape != out.shape:
            raise Fail(
                f"{method}(x, sigma) with sigma a ({B},) tensor: expected shape {shape_of(out)}, got "
                f"{shape_of(other)}; fix: accept a float or a (B,) tensor (invgen.checks.as_sigma broadcasts both)"
            )
        err = float((other - out).abs().max())
        scale = max(float(out.abs().max()), 1e-12)
        if err > 1e-4 * scale + 1e-6:
            raise Fail(
                f"{method}(x, sigma) differs between sigma={s:.3g} as a float and as a ({B},) tensor by {err:.3g}; "
                "fix: broadcast a (B,) sigma per image, e.g. with invgen.checks.as_sigma, and keep the method "
                "deterministic (solvers call it with either form)"
            )
    return f"{method}: shape kept, finite, float and ({B},) sigmas agree, at sigma " + ", ".join(
        f"{s:.3g}" for s in sigmas
    )


def denoiser_checks(run: Run) -> None:
    sigmas = sorted({run.clip_sigma(s) for s in DENOISER_SIGMAS})

    def reduces_error() -> str:
        clean, source = run.clean()
        parts = []
        for s in sigmas:
            noisy = clean + s * run.randn(*clean.shape)
            with torch.no_grad():
                out = call(f"denoise(x, {s:.3g})", run.prior.denoise, noisy, s)
            mse_in = float(((noisy - clean) ** 2).mean())
            mse_out = float(((out - clean) ** 2).mean())
            if not mse_out < mse_in:
                raise Fail(
                    f"on {B} images from {source} plus noise of std {s:.3g}, expected denoise(x, {s:.3g}) closer to "
                    f"the clean images than its input (MSE below {mse_in:.3g}), got MSE {mse_out:.3g} "
                    f"({mse_out / mse_in:.2f}x the input's); fix: check that denoise returns the estimate of x0 (not "
                    "of the noise), on the [0, 1] scale, and that sigma is read as a std on that scale"
                )
            parts.append(f"sigma {s:.3g}: MSE {mse_in:.3g} -> {mse_out:.3g}")
        return f"on {B} images from {source}: " + "; ".join(parts)

    run.check("denoiser.output", lambda: _method_output(run, "denoise", sigmas))
    run.check("denoiser.reduces_error", reduces_error)


def score_checks(run: Run, capabilities: set[str]) -> None:
    lo, hi = run.sigma_range()
    sigmas = sorted({lo, run.clip_sigma(0.1)}) if hi > 0 else [0.0]

    def tweedie() -> str:
        if "denoiser" not in capabilities:
            raise Skip("no denoiser to compare with")
        s = run.clip_sigma(0.1)
        clean, _ = run.clean()
        x = clean + s * run.randn(*clean.shape)
        with torch.no_grad():
            d = call(f"denoise(x, {s:.3g})", run.prior.denoise, x, s)
            g = call(f"score(x, {s:.3g})", run.prior.score, x, s)
        err = float((d - (x + s**2 * g)).norm() / (d - x).norm().clamp_min(1e-12))
        if err > TWEEDIE_TOL:
            flipped = float((d - (x - s**2 * g)).norm() / (d - x).norm().clamp_min(1e-12))
            hint = " (it does hold with the score's sign flipped: the score must point uphill)" if flipped < 0.1 else ""
            raise Fail(
                f"expected Tweedie's formula denoise(x, s) = x + s^2 score(x, s) at s = {s:.3g} (relative error at "
                f"most {TWEEDIE_TOL:g}), got relative error {err:.3g}{hint}; fix: score(x, sigma) must be "
                "grad log p_sigma(x), (denoise(x, sigma) - x) / sigma^2 for a denoiser-based prior"
            )
        return f"denoise(x, s) = x + s^2 score(x, s) at s = {s:.3g} (relative error {err:.2g})"

    run.check("score.output", lambda: _method_output(run, "score", sigmas))
    run.check("score.tweedie", tweedie)


# -- log-density --------------------------------------------------------------------------------------------------
def _float64_copy(prior: Any) -> Any | None:
    """A float64 copy of a torch prior for finite differences (None when it cannot be made)."""
    if not isinstance(prior, torch.nn.Module):
        return None
    try:
        return copy.deepcopy(prior).to(torch.float64)
    except Exception:
        return None


def _finite_differences(
    model: Any, x: Tensor, v: Tensor, steps: tuple[float, ...], slope: Tensor
) -> tuple[Tensor, Tensor]:
    """Central differences of ``model.log_prob`` along ``v`` at each step; per image the one closest to ``slope`` and
    its relative error (the best step absorbs both truncation and rounding error)."""
    best = torch.full(slope.shape, math.inf, dtype=torch.float64)
    fd_best = torch.zeros(slope.shape, dtype=torch.float64)
    for eps in steps:
        with torch.no_grad():
            fd = (model.log_prob(x + eps * v) - model.log_prob(x - eps * v)).double().cpu() / (2 * eps)
        rel = (fd - slope).abs() / slope.abs().clamp_min(1e-8)
        better = rel < best
        best, fd_best = torch.where(better, rel, best), torch.where(better, fd, fd_best)
    return fd_best, best


def log_density_checks(run: Run, capabilities: set[str]) -> None:
    prior = run.prior
    shape_ok = False

    def kind() -> str:
        value = getattr(prior, "log_prob_kind", None)
        if value not in LOG_PROB_KINDS:
            raise Fail(
                f"expected log_prob_kind one of {', '.join(LOG_PROB_KINDS)}, got {value!r}; fix: set log_prob_kind on "
                "the class (MALA's accept step is exact only for 'exact' and 'unnormalized')"
            )
        return f"log_prob_kind {value!r}"

    def shape() -> str:
        nonlocal shape_ok
        clean, _ = run.clean()
        with torch.no_grad():
            lp = call(f"log_prob(x) with x of shape {shape_of(clean)}", prior.log_prob, clean)
        if not isinstance(lp, Tensor):
            raise Fail(f"log_prob(x): expected a ({B},) tensor, got {type(lp).__name__}")
        if tuple(lp.shape) != (B,):
            fix = "return one value per image, shape (B,)"
            if lp.numel() == B:
                fix += f": drop the extra dimensions (e.g. .reshape({B}) or .sum over the non-batch dimensions)"
            elif lp.dim() == 0:
                fix += ": sum over the pixels of each image, not over the batch"
            what = f"log_prob(x) with x of shape {shape_of(clean)}"
            raise Fail(f"{what}: expected shape ({B},), got {shape_of(lp)}; fix: {fix}")
        shape_ok = True
        return f"log_prob: {shape_of(clean)} -> ({B},)"

    def finite() -> str:
        if not shape_ok:
            raise Skip("log_prob's shape is wrong (see log_density.shape)")
        clean, source = run.clean()
        with torch.no_grad():
            lp = call("log_prob(x)", prior.log_prob, clean)
        bad = int((~torch.isfinite(lp)).sum())
        if bad:
            raise Fail(
                f"log_prob(x) on {B} images from {source}: expected finite values, got {lp.tolist()}; fix: keep the "
                "density finite on clean images in [0, 1] (e.g. no log of 0)"
            )
        return f"log_prob finite on images from {source}: {', '.join(f'{v:.4g}' for v in lp.tolist())}"

    def agrees_with_score() -> str:
        if "score" not in capabilities:
            raise Skip("no score to compare with")
        if not shape_ok:
            raise Skip("log_prob's shape is wrong (see log_density.shape)")
        s0 = run.clip_sigma(0.0)
        clean, source = run.clean()
        with torch.no_grad():
            g = call(f"score(x, {s0:.3g})", prior.score, clean, s0)
        g = expect_tensor(g, f"score(x, {s0:.3g})", tuple(clean.shape), "score must keep the input's shape")
        norm = g.flatten(1).norm(dim=1).reshape(-1, *[1] * (g.dim() - 1))
        rand = run.randn(*g.shape)
        rand = rand / rand.flatten(1).norm(dim=1).reshape(norm.shape)
        v = torch.where(norm > 1e-8, g / norm.clamp_min(1e-12), rand)  # a zero score is tested along a random line
        slope = (g * v).flatten(1).sum(1).double().cpu()  # |score|, or 0 along the random line
        copy64 = prior if run.dtype == torch.float64 else _float64_copy(prior)
        try:
            if copy64 is None:
                raise TypeError("no float64 copy")
            fd_best, best = _finite_differences(copy64, clean.double(), v.double(), (1e-4, 1e-5, 1e-6, 1e-7), slope)
            precise, tol = True, FD_TOL
        except Exception:  # a prior that only runs in its own dtype: float32 steps, looser tolerance
            fd_best, best = _finite_differences(prior, clean, v, (1e-2, 1e-3, 1e-4), slope)
            precise, tol = False, 2.5 * FD_TOL
        worst = int(best.argmax())
        if float(best[worst]) > tol:
            sign = ""
            if float(fd_best[worst]) < 0 < float(slope[worst]):
                sign = " (opposite sign: the score points downhill; return +grad log p, not -grad log p)"
            raise Fail(
                f"on images from {source}, expected the derivative of log_prob along the score direction to equal "
                f"|score(x, {s0:.3g})| = {float(slope[worst]):.4g} (finite differences, relative error at most "
                f"{tol:g}), got {float(fd_best[worst]):.4g}{sign}; fix: score(x, sigma_min) must be grad_x log_prob(x)"
            )
        where = "float64 copy" if precise else "float32, no float64 copy possible"
        return f"finite differences of log_prob match |score(x, {s0:.3g})| within {float(best.max()):.2g} ({where})"

    run.check("log_density.kind", kind)
    run.check("log_density.shape", shape)
    run.check("log_density.finite", finite)
    run.check("log_density.score", agrees_with_score)
