"""Shared pieces of the side-by-side frontier: tasks, frozen observations, the operator check, metrics, NFE counting
and the exact-posterior oracle. Library-neutral: imports neither deepinv nor azula."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

NOISE_STD = 0.05
TOL = 1e-6  # largest |peer operator(x) - invgen operator(x)| accepted
LIBRARIES = ("invgen", "deepinv", "azula")
ORACLE_TASK = "oracle"  # the task name of the oracle cells
ORACLE_PROBLEM = "inpaint"  # invgen.testing.oracle's 4x4 problem: GMM prior, 50 % random mask, noise std 0.05
ORACLE_SAMPLES = 1000  # the oracle's N (its floors are computed for N = 1000)


@dataclass(frozen=True)
class Task:
    """One image task: dataset, shipped prior, invgen operator name and options (noise std 0.05 added)."""

    name: str
    dataset: str
    prior: str
    operator: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""


TASKS: dict[str, Task] = {
    "sr4": Task(
        "sr4", "mnist", "diffusion-mnist", "superres", {"scale": 4, "kernel": "block"}, "SR x4 (4x4 block average)"
    ),
    "inpaint-box": Task(
        "inpaint-box",
        "cifar10",
        "diffusion-cifar10",
        "inpaint",
        {"mask": "box", "box_size": 16},
        "box inpainting (centred 16x16 hole of 32x32)",
    ),
    "colorize": Task("colorize", "cifar10", "diffusion-cifar10", "colorize", {}, "colorization (BT.601 luma)"),
}


class OperatorMismatch(RuntimeError):
    """A peer's operator differs from invgen's on the same image by more than :data:`TOL`."""


def make_operator(task: Task) -> Any:
    """invgen's operator of ``task`` with Gaussian noise std :data:`NOISE_STD`."""
    import invgen

    return invgen.operator(task.operator, noise=invgen.noise("gaussian", std=NOISE_STD), **task.options)


def digest(t: Tensor) -> str:
    """Short SHA-256 of a tensor's bytes: the same observations reach every library (and every resumed run)."""
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


def observations(task: Task, n: int) -> tuple[Tensor, Tensor, Any]:
    """``(x, y, op)``: the first ``n`` test images of the task's dataset and their observation, drawn once with a
    generator seeded from the task name (so a rerun with the same ``n`` gets the same ``y``).

    Shape: x ``(n, C, H, W)`` in [0, 1]; y as ``op`` produces it.
    """
    import invgen

    ds = invgen.dataset(task.dataset, split="test")
    x = torch.stack([ds[i] for i in range(n)]).to(torch.float32)
    op = make_operator(task)
    gen = torch.Generator().manual_seed(int(hashlib.sha256(task.name.encode()).hexdigest()[:8], 16))
    y = op.measure(x, generator=gen)
    return x, y, op


def check_equal(pair: str, peer_out: Tensor, invgen_out: Tensor, tol: float = TOL) -> float:
    """Largest absolute difference of two operator outputs on the same image; raises :class:`OperatorMismatch`
    naming ``pair`` when the shapes differ or the difference exceeds ``tol``."""
    if tuple(peer_out.shape) != tuple(invgen_out.shape):
        raise OperatorMismatch(
            f"{pair}: the peer's operator gives shape {tuple(peer_out.shape)}, invgen's {tuple(invgen_out.shape)}"
        )
    diff = float((peer_out.detach().to(torch.float64) - invgen_out.detach().to(torch.float64)).abs().max())
    if not diff <= tol:
        raise OperatorMismatch(
            f"{pair}: the peer's operator differs from invgen's by {diff:.3g} on the same image (tolerance {tol:g}); "
            "the libraries would solve different problems, so the run stops"
        )
    return diff


class EvalCounter:
    """Network evaluations per chain: a forward pre-hook on a module (or a wrapped function) adds the batch size of
    every call, so chunked runs (per observation) and batched runs count alike. ``per_chain(chains)`` divides by the
    number of chains the run carried."""

    def __init__(self, module: torch.nn.Module | None = None) -> None:
        self.evaluations = 0
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._hook) if module is not None else None

    def _hook(self, module: torch.nn.Module, args: Any) -> None:
        self.add(int(args[0].shape[0]))

    def add(self, batch: int) -> None:
        self.evaluations += batch
        self.calls += 1

    def wrap(self, fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        """``fn(x, sigma)`` counted by the batch size of ``x``."""

        def counted(x: Tensor, sigma: Tensor) -> Tensor:
            self.add(int(x.shape[0]))
            return fn(x, sigma)

        return counted

    def reset(self) -> None:
        self.evaluations = self.calls = 0

    def per_chain(self, chains: int) -> float:
        return self.evaluations / max(chains, 1)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()


def timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float]:
    """``(fn(), wall seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def quality(samples: Tensor, x: Tensor) -> dict[str, float]:
    """PSNR and SSIM of the N-sample mean, LPIPS of the samples (mean over samples and images), all against the
    truth after clamping the samples to [0, 1] (non-finite values are counted, then set to 0).

    Shape: samples ``(N, B, C, H, W)``; x ``(B, C, H, W)``.
    """
    from invgen import metrics

    nonfinite = int((~torch.isfinite(samples)).flatten(2).any(-1).sum())
    s = torch.nan_to_num(samples.detach().to(torch.float32), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    mean = s.mean(0)
    with torch.no_grad():
        return {
            "psnr": float(metrics.psnr(mean, x).mean()),
            "ssim": float(metrics.ssim(mean, x).mean()),
            "lpips": float(torch.stack([metrics.lpips(si, x) for si in s]).mean()),
            "nonfinite_samples": nonfinite,
        }


# -- the exact-posterior oracle --------------------------------------------------------------------------------------
def oracle_problem() -> Any:
    """The oracle problem (cached by invgen.testing.oracle): GMM prior on 1x4x4, 50 % random mask, noise std 0.05."""
    from invgen.testing.oracle import problem

    return problem(ORACLE_PROBLEM)


def oracle_stats(pb: Any, samples: Tensor) -> dict[str, float]:
    """Variance ratio on the unobserved pixels (sum of the samples' variances / sum of the exact posterior's), the
    total variance ratio, and the sliced-Wasserstein and mixture-weight errors in multiples of the oracle's floors.

    Shape: samples ``(N, 1, 4, 4)`` with ``N = ORACLE_SAMPLES``.
    """
    s = torch.nan_to_num(samples.detach().to(torch.float64).reshape(samples.shape[0], -1))
    hole = pb.op.mask_for((1, *pb.prior.image_shape)).reshape(-1) < 0.5
    exact_var = torch.diagonal(pb.post.cov[0].to(torch.float64))
    var = s.var(0)
    sw, we = pb.multiples(s.reshape(samples.shape[0], *pb.prior.image_shape))
    return {
        "variance_ratio": float(var[hole].sum() / exact_var[hole].sum()),
        "variance_ratio_total": float(var.sum() / exact_var.sum()),
        "sw_multiple": float(sw),
        "weight_multiple": float(we),
        "nonfinite_samples": int((~torch.isfinite(samples)).flatten(1).any(-1).sum()),
    }


__all__ = [
    "LIBRARIES",
    "NOISE_STD",
    "ORACLE_PROBLEM",
    "ORACLE_SAMPLES",
    "ORACLE_TASK",
    "TASKS",
    "TOL",
    "EvalCounter",
    "OperatorMismatch",
    "Task",
    "check_equal",
    "digest",
    "make_operator",
    "observations",
    "oracle_problem",
    "oracle_stats",
    "quality",
    "timed",
]
