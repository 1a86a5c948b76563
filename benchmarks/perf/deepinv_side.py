"""The deepinv side of the side-by-side benchmark: our trained UNet as a deepinv denoiser, deepinv's physics for our
operators, and deepinv's DPS, DiffPIR and DDRM.

Written against deepinv 0.5.0 (its ``deepinv.sampling`` API); nothing here is copied from deepinv. The network is the
same architecture with the same safetensors weights as the invgen prior, loaded into a *separate* module, so that
invgen's adapter optimisations (channels-last weights, frozen parameters set by ``DiffusionPrior.from_pretrained``)
are not silently given to deepinv: the deepinv copy is what a deepinv user gets by loading the weights (eval mode,
frozen parameters, default memory format).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def import_deepinv() -> Any:
    """``deepinv``, or raise ImportError with the install hint."""
    try:
        import deepinv
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "deepinv is not importable; install it in a separate target, e.g. "
            "`python -m pip install --no-deps --target ~/.cache/invgen-perf/site deepinv==0.5.0 torchmetrics "
            "lightning-utilities h5py natsort` and run with PYTHONPATH=~/.cache/invgen-perf/site"
        ) from err
    return deepinv


def load_network_copy(prior: Any) -> torch.nn.Module:
    """A fresh UNet with the prior's weights, as a deepinv user would load them (eval, frozen, NCHW)."""
    from invgen_plugins.diffusion.unet import UNet

    net = UNet(prior.net.config)
    state = {k: v.detach().clone().contiguous() for k, v in prior.net.state_dict().items()}
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def make_denoiser(net: torch.nn.Module, autocast: torch.dtype | None = None) -> torch.nn.Module:
    """Our epsilon-prediction UNet in deepinv's denoiser convention ``D(x, sigma)``: ``x`` and ``sigma`` on the [0, 1]
    image scale, output the Tweedie estimate on [0, 1] (the same maths as ``DiffusionPrior.denoise``).

    ``autocast``: run the network call (only it) in that autocast dtype and return float32, as
    ``DiffusionPrior.set_precision`` does: what a deepinv user can do by hand.

    Shape:
        x: ``(B, C, H, W)``; sigma: a float, a 0-d tensor or ``(B,)`` -> ``(B, C, H, W)``.
    """
    dinv = import_deepinv()
    from invgen_plugins.diffusion.schedule import c_noise

    class InvgenUNetDenoiser(dinv.models.Denoiser):
        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x: Tensor, sigma: Any, *args: Any, **kwargs: Any) -> Tensor:
            s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
            s = (2.0 * s).clamp_min(2e-6).expand(x.shape[0]).reshape(-1, 1, 1, 1)  # [-1, 1] scale
            xm = 2.0 * x - 1.0
            x_in, cond = xm / torch.sqrt(1.0 + s**2), c_noise(s.reshape(-1))
            if autocast is None:
                eps = self.unet(x_in, cond)
            else:
                with torch.autocast(x.device.type, dtype=autocast):
                    eps = self.unet(x_in, cond).float()
            return (xm - s * eps + 1.0) / 2.0

    return InvgenUNetDenoiser(net)


def make_physics(task: str, channels: int, size: int, mask: Tensor | None, noise_std: float) -> Any:
    """deepinv physics equal to invgen's operator of the task (checked by :func:`check_physics`).

    ``sr4``: 4x4 block average (a 4x4 box filter, ``padding="valid"``, stride 4); ``inpaint``: the same box mask;
    ``colorize``: ``Decolorize`` (its rec601 weights match ours to 1e-4).
    """
    dinv = import_deepinv()
    noise = dinv.physics.GaussianNoise(sigma=noise_std)
    if task == "sr4":
        filt = torch.ones(1, 1, 4, 4) / 16.0
        return dinv.physics.Downsampling(
            img_size=(channels, size, size), filter=filt, factor=4, padding="valid", noise_model=noise
        )
    if task == "inpaint":
        m = mask.reshape(mask.shape[-3:] if mask.dim() >= 3 else (1, *mask.shape[-2:]))[:1]
        return dinv.physics.Inpainting(
            img_size=(channels, size, size), mask=m.expand(channels, -1, -1).clone(), noise_model=noise
        )
    if task == "colorize":
        return dinv.physics.Decolorize(channels=3, noise_model=noise)
    raise ValueError(f"unknown task {task!r}")


def check_physics(physics: Any, operator: Any, x: Tensor) -> float:
    """Largest difference between deepinv's ``A(x)`` and invgen's ``operator(x)``."""
    with torch.no_grad():
        return float((physics.A(x) - operator(x)).abs().max())


def make_solver(name: str, denoiser: torch.nn.Module, nfe: int, sigmas: list[float], noise_std: float) -> Any:
    """deepinv's sampler ``name`` at ``nfe`` denoiser calls, with invgen's hyperparameters where they mean the same.

    * ``dps``: ``deepinv.sampling.DPS`` (VP SDE, DDPM ancestral solver, ``guidance="norm"``, ``weight=1``); its
      ``num_steps`` time points give ``num_steps - 1`` denoiser calls, so ``num_steps = nfe + 1``.
    * ``diffpir``: ``deepinv.sampling.DiffPIR`` with an L2 data fidelity, ``lambda = 7``, ``zeta = 0.3`` (invgen's
      defaults; deepinv's own default ``zeta`` is 0.1), ``max_iter = nfe``. Both use the reference code's ``quad``
      timesteps and its ``rho = lambda sigma_n^2 / sigma_bar_t^2``, but deepinv's L2 prox
      (``gamma = 1 / (2 rho)`` on ``||A x - y||^2 / 2``) doubles the prior's weight: its ``lambda = 7`` is invgen's 14.
      Each library is run with the number a user would copy from the paper.
    * ``ddrm``: ``deepinv.sampling.DDRM`` with ``eta = 0.85``, ``etab = 1`` and invgen's ``nfe`` noise levels (the
      prior's DDPM timesteps on the [0, 1] scale, all > 0: deepinv's default ends at sigma = 0, outside the range of
      this network's conditioning).
    """
    dinv = import_deepinv()
    if name == "dps":
        return dinv.sampling.DPS(denoiser, num_steps=nfe + 1, device="cpu")
    if name == "diffpir":
        return dinv.sampling.DiffPIR(
            denoiser, dinv.optim.data_fidelity.L2(), sigma=noise_std, max_iter=nfe, zeta=0.3, lambda_=7.0
        )
    if name == "ddrm":
        import numpy as np

        return dinv.sampling.DDRM(denoiser, sigmas=np.asarray(sigmas, dtype=np.float64), eta=0.85, etab=1.0)
    raise ValueError(f"unknown solver {name!r}")


def run(solver: Any, name: str, y: Tensor, physics: Any, seed: int) -> Tensor:
    """One deepinv posterior sample per observation. Shape: ``y (B, ...)`` -> ``(B, C, H, W)``."""
    return solver(y, physics, seed=seed)


def schedule_sigmas(prior: Any, nfe: int) -> list[float]:
    """invgen's descending noise levels (the [0, 1] scale) for ``nfe`` denoiser calls."""
    from invgen.solvers.schedules import prior_sigmas

    return [float(s) for s in prior_sigmas(prior, nfe)]


__all__ = [
    "check_physics",
    "import_deepinv",
    "load_network_copy",
    "make_denoiser",
    "make_physics",
    "make_solver",
    "run",
    "schedule_sigmas",
]
