"""azula 0.11.1's side of the side-by-side frontier: every posterior sampler of ``azula.guidance`` at its defaults,
driven by azula's own samplers, on invgen's network given in azula's denoiser convention.

Convention (azula's ADM plugin, ``azula.plugins.adm.AblatedDenoiser``, is the model for a DDPM epsilon network):

* data on the network's [-1, 1] scale, states flattened to ``(B, D)`` (azula's guidance solves its linear systems
  along the last axis: ``y`` is ``(*, M)``, and DiffPIR's system lives in x-space);
* schedule ``azula.noise.VPSchedule(alpha_min=1e-2, sigma_min=1e-2)`` (the ADM plugin's; the class default 1e-3 would
  ask for VE levels 1e-3 to 1e3, outside the shipped networks' 0.01 to 157), ``x_t = alpha_t x + sigma_t z``;
* ``GaussianPosterior(mean, var)`` with ``mean = x_t / alpha_t - s eps(x_t / sqrt(alpha^2 + sigma^2), s)``,
  ``s = sigma_t / alpha_t`` (the VE level on [-1, 1], conditioning the network by ``c_noise(s)`` exactly as invgen
  does: the network is continuous in ``log s``, so no timestep rounding), ``var = s^2 / (1 + s^2)`` (the ADM
  plugin's ``c_var``); the mean clamped to [-1, 1] for a ``clip_denoised`` prior. On the [0, 1] scale this mean is
  ``prior.denoise(x, s / 2)`` (tested).

Operators: azula has none; the user writes ``A`` as a function. Here, plain torch on the flattened [-1, 1] states:
``sr4`` ``avg_pool2d(x, 4)``, ``inpaint`` ``mask * x``, ``colorize`` the BT.601 weighted sum; ``A_pinv`` and
``diag(A A^T)`` in closed form. Since ``A`` is linear, ``y`` maps to ``2 y - A(1)`` and the noise std to 2 x 0.05.
:func:`operator_pairs` checks ``(A(2 x - 1) + A(1)) / 2`` against invgen's ``A(x)`` to 1e-6 in the run.

Samplers (``settings``; budget = network evaluations per chain):

* ``dps``: ``DPSSampler(zeta=1)`` (DDPM steps). It divides by the norm of the whole batch's residual, so it runs one
  observation at a time with its N samples as the batch, as azula's tutorials batch the samples of one observation.
* ``pgdm``: ``PGDMSampler(A_inv=A_pinv)`` (DDIM, its default ``eta=0``).
* ``mmps`` / ``diffpir`` / ``tmpd`` / ``jfps``: ``MMPSDenoiser`` (GMRES, 1 iteration), ``DiffPIRDenoiser``
  (``lmbda=10``, GMRES 1), ``TMPDenoiser``, ``JFPSDenoiser`` (CG 1; ``cov_x`` is required: ``IsotropicCovariance``
  of ``torch.var`` of 1000 training images on [-1, 1], as ``IsotropicCovariance.from_data`` computes it; on the
  oracle, of 1000 prior samples), each
  driven by ``DDPMSampler`` (azula's tutorials use ``DDIMSampler(eta=1)``, the same sampler).
* ``repaint``: ``RePaintSampler`` (3 iterations per step, so ``steps = nfe // 3``); inpainting only; noiseless ``y``.
* ``tds``: ``TDSSampler`` with the twist of azula's guidance tutorial, ``log N(y | A(x_hat), sigma_y^2 + t^2
  diag(A A^T))``; sequential Monte Carlo over the N samples of one observation (run per observation, K = N).

Every sampler starts from ``sampler.init((B, D))`` (mean 0, variance 1) and runs from t = 1 to 0 in ``steps`` equal
steps (azula's ``Sampler`` default; 64 steps by default, here ``steps`` = the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from peers.common import NOISE_STD, EvalCounter, check_equal

LIBRARY = "azula"
SAMPLERS = ("dps", "pgdm", "mmps", "diffpir", "tmpd", "jfps", "repaint", "tds")
PER_OBSERVATION = ("dps", "tds")  # batch = the N samples of one observation
LUMA_601 = (0.299, 0.587, 0.114)
INPAINTING = ("inpaint-box", "oracle")


def import_azula() -> Any:
    try:
        import azula
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("azula is not importable; install it: python -m pip install azula==0.11.1") from err
    return azula


def not_applicable(sampler: str, task: str) -> str | None:
    """Why ``sampler`` cannot run on ``task`` (None: it can)."""
    if sampler == "repaint" and task not in INPAINTING:
        return "RePaint needs an inpainting mask"
    return None


def steps_for(sampler: str, budget: int) -> int:
    return max(1, budget // 3) if sampler == "repaint" else budget


def settings(sampler: str, budget: int) -> dict[str, Any]:
    """What is passed to azula for ``budget`` network evaluations (everything else: azula's defaults)."""
    steps = steps_for(sampler, budget)
    table = {
        "dps": {"class": "DPSSampler", "steps": steps, "batch": "per observation"},
        "pgdm": {"class": "PGDMSampler", "steps": steps},
        "mmps": {"class": "MMPSDenoiser", "sampler": f"DDPMSampler(steps={steps})"},
        "diffpir": {"class": "DiffPIRDenoiser", "sampler": f"DDPMSampler(steps={steps})"},
        "tmpd": {"class": "TMPDenoiser", "sampler": f"DDPMSampler(steps={steps})"},
        "jfps": {"class": "JFPSDenoiser", "cov_x": "var of data", "sampler": f"DDPMSampler(steps={steps})"},
        "repaint": {"class": "RePaintSampler", "steps": steps, "iterations": 3},
        "tds": {"class": "TDSSampler", "steps": steps, "batch": "per observation (K = N particles)"},
    }
    if sampler not in table:
        raise KeyError(f"azula sampler {sampler!r} unknown; known: {', '.join(SAMPLERS)}")
    return table[sampler]


def schedule() -> Any:
    """The VP schedule of azula's ADM plugin."""
    from azula.noise import VPSchedule

    return VPSchedule(alpha_min=1e-2, sigma_min=1e-2)


# -- denoisers -------------------------------------------------------------------------------------------------------
def network_denoiser(prior: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(azula denoiser, its network copy)``: a fresh UNet with the prior's weights (eval, frozen, default memory
    format), called as azula's ADM plugin calls its backbone (module docstring)."""
    import_azula()
    from azula.denoise import Denoiser, GaussianPosterior

    from invgen_plugins.diffusion.schedule import c_noise
    from invgen_plugins.diffusion.unet import UNet

    net = UNet(prior.net.config)
    net.load_state_dict({k: v.detach().clone().contiguous() for k, v in prior.net.state_dict().items()})
    net = net.eval().requires_grad_(False)
    shape, clip = tuple(prior.image_shape), bool(getattr(prior, "clip_denoised", False))

    class InvgenUNetDenoiser(Denoiser):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = net
            self.schedule = schedule()

        def forward(self, x_t: Tensor, t: Tensor, **kwargs: Any) -> Any:
            alpha_t, sigma_t = self.schedule(t)
            alpha_t = alpha_t.reshape(-1, 1).to(x_t)
            sigma_t = sigma_t.reshape(-1, 1).to(x_t)
            s = sigma_t / alpha_t  # VE level on [-1, 1]
            c_in = torch.rsqrt(alpha_t**2 + sigma_t**2)
            x_in = (c_in * x_t).reshape(x_t.shape[0], *shape)
            eps = self.backbone(x_in, c_noise(s.reshape(-1).expand(x_t.shape[0]))).reshape(x_t.shape[0], -1)
            mean = x_t / alpha_t - s * eps
            if clip:
                mean = mean.clamp(-1.0, 1.0)
            return GaussianPosterior(mean=mean, var=(s**2 / (1 + s**2)).expand_as(mean))

    return InvgenUNetDenoiser(), net


def function_denoiser(fn: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...]) -> torch.nn.Module:
    """An azula denoiser (same schedule and scale as :func:`network_denoiser`) from an exact ``fn(x, sigma)`` on the
    [0, 1] scale (the oracle's GMM ``denoise``); ``var`` as the network's (``s^2 / (1 + s^2)``)."""
    import_azula()
    from azula.denoise import Denoiser, GaussianPosterior

    class FunctionDenoiser(Denoiser):
        def __init__(self) -> None:
            super().__init__()
            self.schedule = schedule()

        def forward(self, x_t: Tensor, t: Tensor, **kwargs: Any) -> Any:
            alpha_t, sigma_t = self.schedule(t)
            alpha_t = alpha_t.reshape(-1, 1).to(torch.float64)
            s = sigma_t.reshape(-1, 1).to(torch.float64) / alpha_t
            x01 = ((x_t.to(torch.float64) / alpha_t + 1) / 2).reshape(x_t.shape[0], *shape)
            den = fn(x01, (s / 2).reshape(-1).expand(x_t.shape[0])).reshape(x_t.shape[0], -1)
            mean = (2 * den - 1).to(x_t.dtype)
            return GaussianPosterior(mean=mean, var=(s**2 / (1 + s**2)).to(x_t.dtype).expand_as(mean))

    return FunctionDenoiser()


# -- operators -------------------------------------------------------------------------------------------------------
class Ops:
    """azula's operator of a task as plain torch on flattened [-1, 1] states (module docstring).

    Attributes: ``A(x) (B, D) -> (B, M)``; ``A_pinv(y) (B, M) -> (B, D)``; ``diag_aat`` ``(M,)``; ``a_one`` = A(1)
    ``(M,)``; ``mask`` ``(D,)`` bool (inpainting, else None).
    """

    def __init__(self, task: str, x_shape: tuple[int, ...], op: Any) -> None:
        c, h, w = (int(v) for v in x_shape[1:])
        self.shape = (c, h, w)
        self.mask = None
        if task == "sr4":
            self.A = lambda x: F.avg_pool2d(x.reshape(-1, c, h, w), 4).flatten(1)
            self.A_pinv = lambda y: F.interpolate(y.reshape(-1, c, h // 4, w // 4), scale_factor=4).flatten(1)
            m = c * (h // 4) * (w // 4)
            self.diag_aat = torch.full((m,), 1.0 / 16)
        elif task in INPAINTING:
            keep = op.mask_for((1, c, h, w)).expand(1, c, h, w).reshape(-1).to(torch.float32)
            self.mask = keep > 0.5
            self.A = lambda x: x * keep.to(x)
            self.A_pinv = lambda y: y * keep.to(y)
            self.diag_aat = keep.clone()
        elif task == "colorize":
            weights = torch.tensor(LUMA_601, dtype=torch.float32).reshape(1, 3, 1, 1)
            self.A = lambda x: (x.reshape(-1, 3, h, w) * weights.to(x)).sum(1).flatten(1)
            self.A_pinv = lambda y: (y.reshape(-1, 1, h, w) * weights.to(y) / float((weights**2).sum())).flatten(1)
            self.diag_aat = torch.full((h * w,), float((weights**2).sum()))
        else:
            raise ValueError(f"no azula operator for task {task!r}")
        self.a_one = self.A(torch.ones(1, c * h * w)).reshape(-1)

    def observe(self, y: Tensor) -> Tensor:
        """invgen's ``y`` on [0, 1] -> azula's on [-1, 1]: ``2 y - A(1)``, flattened. Shape: ``(B, ...) -> (B, M)``."""
        return 2 * y.reshape(y.shape[0], -1) - self.a_one.to(y)


class AzulaSide:
    """azula on one problem: ``run(sampler, budget, y, n, seed) -> (N, B, C, H, W)`` samples."""

    library = LIBRARY

    def __init__(
        self, task: str, op: Any, x_shape: tuple[int, ...], denoiser: torch.nn.Module, counter: Any, data_var: float
    ) -> None:
        self.task, self.op, self.denoiser, self.counter = task, op, denoiser, counter
        self.ops = Ops(task, x_shape, op)
        self.data_var = data_var  # per-pixel variance of the data on [-1, 1] (JFPS's cov_x)
        self.var_y = (2 * NOISE_STD) ** 2
        self.dtype = torch.float32
        self.last_nfe = 0.0

    @classmethod
    def for_prior(cls, task: str, op: Any, x_shape: tuple[int, ...], prior: Any, data_var: float) -> AzulaSide:
        den, net = network_denoiser(prior)
        return cls(task, op, x_shape, den, EvalCounter(net), data_var)

    @classmethod
    def for_function(
        cls, task: str, op: Any, x_shape: tuple[int, ...], fn: Callable[..., Tensor], data_var: float
    ) -> AzulaSide:
        counter = EvalCounter()
        side = cls(task, op, x_shape, function_denoiser(counter.wrap(fn), tuple(x_shape[1:])), counter, data_var)
        side.dtype = torch.float64
        return side

    def operator_pairs(self, x: Tensor) -> dict[str, float]:
        """``{pair: max |(A(2 x - 1) + A(1)) / 2 - invgen A(x)|}``; raises ``OperatorMismatch`` above the tolerance."""
        pair = f"azula A ({self.task}, torch) vs invgen {self.op.name}"
        with torch.no_grad():
            peer = (self.ops.A((2 * x - 1).flatten(1)) + self.ops.a_one.to(x)) / 2
            return {pair: check_equal(pair, peer, self.op(x).reshape(x.shape[0], -1))}

    def _twist(self, y: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        from torch.distributions import Normal

        diag = self.ops.diag_aat.to(y)

        def log_p_y(x_hat: Tensor, t: Tensor) -> Tensor:
            return Normal(self.ops.A(x_hat), torch.sqrt(self.var_y + t**2 * diag), validate_args=False).log_prob(y)

        return log_p_y

    def _sampler(self, sampler: str, budget: int, y: Tensor) -> Any:
        from azula.guidance import (
            DiffPIRDenoiser,
            DPSSampler,
            JFPSDenoiser,
            MMPSDenoiser,
            PGDMSampler,
            RePaintSampler,
            TDSSampler,
            TMPDenoiser,
        )
        from azula.linalg.covariance import IsotropicCovariance
        from azula.sample import DDPMSampler

        den, A, steps = self.denoiser, self.ops.A, steps_for(sampler, budget)
        kw = {"steps": steps, "silent": True}
        if sampler == "dps":
            return DPSSampler(den, y=y, A=A, **kw)
        if sampler == "pgdm":
            return PGDMSampler(den, y=y, A=A, A_inv=self.ops.A_pinv, **kw)
        if sampler == "mmps":
            return DDPMSampler(MMPSDenoiser(den, y=y, A=A, cov_y=IsotropicCovariance(self.var_y)), **kw)
        if sampler == "diffpir":
            return DDPMSampler(DiffPIRDenoiser(den, y=y, A=A, var_y=self.var_y), **kw)
        if sampler == "tmpd":
            return DDPMSampler(TMPDenoiser(den, y=y, A=A, var_y=self.var_y), **kw)
        if sampler == "jfps":
            cov_x = IsotropicCovariance(self.data_var)
            return DDPMSampler(JFPSDenoiser(den, y=y, A=A, cov_y=IsotropicCovariance(self.var_y), cov_x=cov_x), **kw)
        if sampler == "repaint":
            return RePaintSampler(den, y=self.ops.A_pinv(y), mask=self.ops.mask, **kw)
        if sampler == "tds":
            return TDSSampler(den, twist=self._twist(y), **kw)
        raise KeyError(f"azula sampler {sampler!r} unknown; known: {', '.join(SAMPLERS)}")

    def _chains(self, sampler: str, budget: int, y_az: Tensor) -> Tensor:
        s = self._sampler(sampler, budget, y_az)
        c, h, w = self.ops.shape
        return s(s.init((y_az.shape[0], c * h * w), dtype=self.dtype))

    def run(self, sampler: str, budget: int, y: Tensor, n: int, seed: int) -> Tensor:
        b = y.shape[0]
        y_az = self.ops.observe(y).to(self.dtype)
        self.counter.reset()
        torch.manual_seed(seed)
        if sampler in PER_OBSERVATION:  # (B, N, D): one sampler per observation, its N samples as the batch
            x = torch.stack([self._chains(sampler, budget, y_az[i : i + 1].expand(n, -1)) for i in range(b)], 1)
        else:  # (N * B, D), y repeated as the chains
            x = self._chains(sampler, budget, y_az.repeat(n, 1)).reshape(n, b, -1)
        self.last_nfe = self.counter.per_chain(n * b)
        return ((x + 1) / 2).reshape(n, b, *self.ops.shape)


__all__ = [
    "LIBRARY",
    "SAMPLERS",
    "AzulaSide",
    "Ops",
    "function_denoiser",
    "network_denoiser",
    "not_applicable",
    "schedule",
    "settings",
]
