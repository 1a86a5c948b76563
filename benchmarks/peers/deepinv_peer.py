"""deepinv 0.5.0's side of the side-by-side frontier: every posterior sampler of ``deepinv.sampling`` at its
documented defaults, on invgen's network given in deepinv's denoiser convention.

Denoiser: ``benchmarks/perf/deepinv_side.py`` (reused): a separate copy of the prior's UNet wrapped as a
``deepinv.models.Denoiser`` ``D(x, sigma)``, ``x`` and ``sigma`` on the [0, 1] image scale, output Tweedie's estimate
on [0, 1] (the maths of ``DiffusionPrior.denoise``); for a prior with ``clip_denoised`` (diffusion-cifar10) the output
is clamped to [0, 1] as ``prior.denoise`` does. On the oracle, the analytic GMM's exact ``denoise`` in the same
convention (float64 inside).

Physics (checked against invgen's operator in the run, :func:`operator_pairs`):

* ``sr4``: ``Downsampling(filter=4x4 box / 16, factor=4, padding="valid")`` = invgen ``superres(kernel="block")``.
  (deepinv's ``filter="bicubic"`` matches neither invgen kernel, under any padding (max difference 0.08 to 0.16 on
  random images); ``DownsamplingMatlab`` equals invgen ``kernel="bicubic"``; the block pair is used, as in the
  invgen-only frontier.)
* ``inpaint-box`` and the oracle: ``Inpainting`` with invgen's mask.
* ``colorize``: ``Decolorize(srf=(0.299, 0.587, 0.114))``. deepinv's default ``srf="rec601"`` is
  ``(0.4472, 0.8781, 0.1706) x 0.66851`` = (0.29896, 0.58702, 0.11405): up to 6e-5 from invgen's BT.601 weights on
  images, above the 1e-6 tolerance, so the weights are passed explicitly (a documented argument).

Samplers (``settings``; budget = network evaluations per chain, counted by a hook):

* ``dps``: ``DPS(denoiser, num_steps=nfe + 1)``: its defaults (VP SDE, DDPM solver, ``weight=1``,
  ``guidance="norm"``, float64 states); ``num_steps`` time points give ``num_steps - 1`` denoiser calls, each with a
  backward pass. ``rng``: a seeded ``torch.Generator`` (without it deepinv ignores ``seed``).
* ``ddrm``: ``DDRM(denoiser, sigmas=np.linspace(1, 0, nfe))``: the default schedule (``linspace(1, 0, 100)``) at
  ``nfe`` levels, ``eta=0.85``, ``etab=1``. Needs a ``DecomposablePhysics``: not ``Downsampling`` (sr4: n/a).
* ``diffpir``: ``DiffPIR(denoiser, L2(), max_iter=nfe)``: defaults ``zeta=0.1``, ``lambda_=7``, sigma read from the
  physics' noise model.
* ``pigdm``, ``mmps``, ``ald``, ``scoresde``, ``ilvr``: ``PosteriorDiffusion`` with ``PiGDMDataFidelity``,
  ``MomentMatchingDataFidelity``, ``ALDDataFidelity``, ``ScoreSDEDataFidelity``, ``ILVRDataFidelity`` (each at its
  defaults: ``weight=1``, CG 3 iterations for PiGDM / moment matching on non-decomposable physics; ``gamma_t =
  sigma_t`` for ALD / ScoreSDE / ILVR), and the SDE and solver of deepinv's ``DPS`` class defaults (VP SDE
  ``beta_min=0.1``, ``beta_max=20``, float64; ``DDPMSolver`` on ``linspace(1, 0, nfe + 1)``). One denoiser call per
  step; PiGDM adds one VJP, moment matching 3 CG VJPs + 1; ALD / ScoreSDE / ILVR none.

Samples: ``y`` repeated N times (a batch of N x B: deepinv's samplers treat batch items independently, its CG
included).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from peers.common import NOISE_STD, EvalCounter, check_equal

_PERF = Path(__file__).resolve().parent.parent / "perf"
if str(_PERF) not in sys.path:
    sys.path.insert(0, str(_PERF))

import deepinv_side  # noqa: E402  (benchmarks/perf/deepinv_side.py)

LIBRARY = "deepinv"
SAMPLERS = ("dps", "ddrm", "diffpir", "pigdm", "mmps", "ald", "scoresde", "ilvr")
POSTERIOR_FIDELITIES = {
    "pigdm": "PiGDMDataFidelity",
    "mmps": "MomentMatchingDataFidelity",
    "ald": "ALDDataFidelity",
    "scoresde": "ScoreSDEDataFidelity",
    "ilvr": "ILVRDataFidelity",
}
LUMA_601 = (0.299, 0.587, 0.114)


def import_deepinv() -> Any:
    return deepinv_side.import_deepinv()


def not_applicable(sampler: str, task: str) -> str | None:
    """Why ``sampler`` cannot run on ``task`` (None: it can)."""
    if sampler == "ddrm" and task == "sr4":
        return "deepinv's DDRM needs a DecomposablePhysics; Downsampling is not one"
    return None


def settings(sampler: str, budget: int) -> dict[str, Any]:
    """What is passed to deepinv for ``budget`` network evaluations (everything else: deepinv's defaults)."""
    if sampler == "dps":
        return {"class": "DPS", "num_steps": budget + 1}
    if sampler == "ddrm":
        return {"class": "DDRM", "sigmas": f"np.linspace(1, 0, {budget})"}
    if sampler == "diffpir":
        return {"class": "DiffPIR", "data_fidelity": "L2()", "max_iter": budget}
    if sampler in POSTERIOR_FIDELITIES:
        return {
            "class": "PosteriorDiffusion",
            "data_fidelity": f"{POSTERIOR_FIDELITIES[sampler]}()",
            "sde": "VariancePreservingDiffusion()",
            "solver": f"DDPMSolver(timesteps=linspace(1, 0, {budget + 1}))",
        }
    raise KeyError(f"deepinv sampler {sampler!r} unknown; known: {', '.join(SAMPLERS)}")


# -- denoisers -------------------------------------------------------------------------------------------------------
def network_denoiser(prior: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(deepinv denoiser, its network copy)`` for a shipped diffusion prior (see the module docstring)."""
    dinv = import_deepinv()
    net = deepinv_side.load_network_copy(prior)
    den = deepinv_side.make_denoiser(net)
    if not getattr(prior, "clip_denoised", False):
        return den, net

    class Clamped(dinv.models.Denoiser):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor, sigma: Any, *args: Any, **kwargs: Any) -> Tensor:
            return self.inner(x, sigma).clamp(0.0, 1.0)

    return Clamped(den), net


def function_denoiser(fn: Callable[[Tensor, Tensor], Tensor]) -> torch.nn.Module:
    """A deepinv denoiser from ``fn(x, sigma)`` on the [0, 1] scale (computed in float64, returned in x's dtype)."""
    dinv = import_deepinv()

    class FunctionDenoiser(dinv.models.Denoiser):
        def forward(self, x: Tensor, sigma: Any, *args: Any, **kwargs: Any) -> Tensor:
            s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(x.shape[0])
            return fn(x.to(torch.float64), s).to(x.dtype)

    return FunctionDenoiser()


# -- physics ---------------------------------------------------------------------------------------------------------
def make_physics(task: str, x_shape: tuple[int, ...], op: Any) -> Any:
    """deepinv's physics for ``task`` on images of ``x_shape`` (``op``: invgen's operator, for the mask)."""
    dinv = import_deepinv()
    channels, size = int(x_shape[1]), int(x_shape[-1])
    if task == "sr4":
        return deepinv_side.make_physics("sr4", channels, size, None, NOISE_STD)
    if task in ("inpaint-box", "oracle"):
        return deepinv_side.make_physics("inpaint", channels, size, op.mask_for(tuple(x_shape)), NOISE_STD)
    if task == "colorize":
        return dinv.physics.Decolorize(
            channels=3, srf=LUMA_601, noise_model=dinv.physics.GaussianNoise(sigma=NOISE_STD)
        )
    raise ValueError(f"no deepinv physics for task {task!r}")


def make_sampler(sampler: str, denoiser: torch.nn.Module, budget: int, seed: int) -> Any:
    """deepinv's sampler at ``budget`` network evaluations (module docstring)."""
    dinv = import_deepinv()
    import numpy as np

    if sampler == "dps":
        return dinv.sampling.DPS(denoiser, num_steps=budget + 1, rng=torch.Generator().manual_seed(seed))
    if sampler == "ddrm":
        return dinv.sampling.DDRM(denoiser, sigmas=np.linspace(1, 0, budget))
    if sampler == "diffpir":
        return dinv.sampling.DiffPIR(denoiser, dinv.optim.data_fidelity.L2(), max_iter=budget)
    if sampler in POSTERIOR_FIDELITIES:
        fidelity = getattr(dinv.sampling, POSTERIOR_FIDELITIES[sampler])()
        solver = dinv.sampling.DDPMSolver(
            timesteps=torch.linspace(1, 0, budget + 1, dtype=torch.float64), rng=torch.Generator().manual_seed(seed)
        )
        sde = dinv.sampling.VariancePreservingDiffusion(dtype=torch.float64)
        return dinv.sampling.PosteriorDiffusion(data_fidelity=fidelity, denoiser=denoiser, sde=sde, solver=solver)
    raise KeyError(f"deepinv sampler {sampler!r} unknown; known: {', '.join(SAMPLERS)}")


class DeepinvSide:
    """deepinv on one problem: ``run(sampler, budget, y, n, seed) -> (N, B, C, H, W)`` samples."""

    library = LIBRARY

    def __init__(self, task: str, op: Any, x_shape: tuple[int, ...], denoiser: torch.nn.Module, counter: Any) -> None:
        self.task, self.op, self.denoiser, self.counter = task, op, denoiser, counter
        self.physics = make_physics(task, x_shape, op)
        self.last_nfe = 0.0

    @classmethod
    def for_prior(cls, task: str, op: Any, x_shape: tuple[int, ...], prior: Any) -> DeepinvSide:
        den, net = network_denoiser(prior)
        return cls(task, op, x_shape, den, EvalCounter(net))

    @classmethod
    def for_function(cls, task: str, op: Any, x_shape: tuple[int, ...], fn: Callable[..., Tensor]) -> DeepinvSide:
        counter = EvalCounter()
        return cls(task, op, x_shape, function_denoiser(counter.wrap(fn)), counter)

    def operator_pairs(self, x: Tensor) -> dict[str, float]:
        """``{pair: max |deepinv A(x) - invgen A(x)|}``; raises ``OperatorMismatch`` above the tolerance."""
        pair = f"deepinv {type(self.physics).__name__} vs invgen {self.op.name}"
        with torch.no_grad():
            return {pair: check_equal(pair, self.physics.A(x), self.op(x))}

    def run(self, sampler: str, budget: int, y: Tensor, n: int, seed: int) -> Tensor:
        solver = make_sampler(sampler, self.denoiser, budget, seed)
        # float32 observations, as deepinv's physics produce them (its DDRM fails on float64 y with float32 buffers)
        y_rep = y.to(torch.float32).repeat(n, *([1] * (y.dim() - 1)))
        self.counter.reset()
        torch.manual_seed(seed)
        out = solver(y_rep, self.physics, seed=seed)
        self.last_nfe = self.counter.per_chain(y_rep.shape[0])
        return out.reshape(n, y.shape[0], *out.shape[1:])


__all__ = [
    "LIBRARY",
    "SAMPLERS",
    "DeepinvSide",
    "function_denoiser",
    "make_physics",
    "make_sampler",
    "network_denoiser",
    "not_applicable",
    "settings",
]
