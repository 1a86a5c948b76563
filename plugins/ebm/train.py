"""Training of noise-conditional EBMs: ``invgen train ebm --dataset mnist --steps N --out DIR``.

Method: denoising score matching on the *gradient of a scalar energy* (Salimans & Ho 2021). For a clean image
``x0`` (on [-1, 1]), a noise level ``s`` drawn log-uniformly over the range of the diffusion plugin's VP schedule
(about 0.01 to 157, so the diffusion solvers can follow that schedule, and small levels, where the Langevin solvers
and ``log_prob`` read the energy, get as many draws as large ones) and ``x = x0 + s n``, the loss is

    || s grad_x E(x, s) - n ||^2,

the epsilon-weighted DSM loss with ``-grad E`` as the score. Each step differentiates the energy's input gradient
(double backpropagation, about three network passes).

Why this and not contrastive training with short-run Langevin and a replay buffer: DSM is a regression with a
fixed target, its loss decreases monotonically and does not need MCMC inside the training loop, so it is stable
and cheap enough on a CPU; contrastive EBM training needs tens of Langevin steps per optimizer step, diverges
without careful regularisation (energy magnitudes, buffer reinitialisation), and gives no denoiser. DSM also makes
the energy noise-conditional, which gives the ``denoiser`` capability (Tweedie) for the diffusion solvers and an
annealed Langevin that starts from noise.

The loop (EMA, exact resume, progress bar, safetensors + JSON) is the diffusion trainer's :func:`fit`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from invgen.train.checkpoint import add_common_arguments, training_command
from invgen_plugins.diffusion.schedule import VPSchedule
from invgen_plugins.diffusion.train import fit, training_batches
from invgen_plugins.diffusion.unet import UNetConfig
from invgen_plugins.ebm.net import EnergyConfig, EnergyUNet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, checkpoint_every=250)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--channel-mults", default="1,2,2")
    parser.add_argument("--num-res-blocks", type=int, default=1)
    parser.add_argument("--attention-levels", default="", help="levels with self-attention besides the middle")


def dsm_loss(net: EnergyUNet, x0: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``mean || s grad_x E(x0 + s n, s) - n ||^2`` (per value). Shapes: x0, noise ``(B, C, H, W)``; s ``(B,)``."""
    x = (x0 + s[:, None, None, None] * noise).requires_grad_(True)
    (g,) = torch.autograd.grad(net(x, s).sum(), x, create_graph=True)
    return F.mse_loss(s[:, None, None, None] * g, noise)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and write ``config.json`` + ``model.safetensors`` (the EMA weights)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    batch, channels, patches = training_batches(args)
    ecfg = EnergyConfig(
        UNetConfig(
            in_channels=channels,
            base_channels=args.base_channels,
            channel_mults=tuple(int(m) for m in args.channel_mults.split(",")),
            num_res_blocks=args.num_res_blocks,
            attention_levels=tuple(int(a) for a in args.attention_levels.split(",") if a),
        )
    )
    schedule = VPSchedule()
    net = EnergyUNet(ecfg).to(device)
    sigmas = schedule.sigmas(torch.float64)
    log_lo, log_hi = float(sigmas[0].log()), float(sigmas[-1].log())
    config = {
        "name": f"ebm-{args.dataset}" if not args.dataset.startswith("folder:") else "ebm-folder",
        "family": "ebm",
        "energy": ecfg.to_dict(),
        "schedule": schedule.to_dict(),
        "image_shape": None if patches else [channels, args.image_size, args.image_size],
        "parametrisation": "E(x, s) = |x|^2 / (2 (s^2 + 0.25)) + sum(UNet(x / sqrt(s^2 + 0.25), s)) / s, [-1, 1] scale",
        "method": "denoising score matching on -grad E, s log-uniform over the VP schedule's range (double backprop)",
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "device", "threads")},
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": training_command("ebm"),
    }

    def loss_fn(model: EnergyUNet, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(x0.shape[0], generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        return dsm_loss(model, x0, torch.exp(log_lo + u * (log_hi - log_lo)), noise)

    fit(args, net, config, batch, loss_fn, f"ebm {args.dataset}")
    return 0
