"""Training of GAN priors: ``invgen train gan --dataset mnist --steps N --latent-dim 64 --out DIR``.

Objective: the hinge loss (Lim & Ye 2017; Miyato et al. 2018) with a spectrally normalised discriminator,

    L_D = E_x[relu(1 - D(x))] + E_z[relu(1 + D(G(z)))],     L_G = -E_z[D(G(z))],

one discriminator step per generator step, Adam for both. Spectral normalisation bounds the discriminator's Lipschitz
constant, which keeps its gradients informative and made every run here stable without tuning (a plain DCGAN with the
cross-entropy loss collapsed to a few digit modes in a test run at the same size).

Exported weights: an exponential moving average (EMA) of the generator's parameters (Yazici et al. 2019), whose
BatchNorm statistics are recomputed for the averaged weights (``recalibrate_batchnorm``: the running statistics of
the live generator do not match the averaged one). Every ``--checkpoint-every`` steps the trainer writes a checkpoint
that resumes exactly after an interruption (same command, :mod:`invgen.train.checkpoint`) and measures the sample
quality FD-<dataset>-CNN (:mod:`invgen.metrics.frechet`, ``--eval-images`` samples against as many test images); it
exports ``model.safetensors`` when that figure is the best so far (the "best checkpoint"; for ``folder:PATH``
datasets, which have no classifier, the latest). ``config.json`` keeps the command, steps, seconds and the FD history.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from invgen.train.checkpoint import add_common_arguments, export_weights, training_command
from invgen.train.verify import write_config
from invgen_plugins.gan.net import Discriminator, GANConfig, Generator
from invgen_plugins.vae.train import load_splits, to_unit

FD_DATASETS = ("mnist", "fashion-mnist", "cifar10")


class GAN(nn.Module):
    """The generator and the discriminator in one module, so one checkpoint holds both."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.g = Generator(config)
        self.d = Discriminator(config)


@torch.no_grad()
def recalibrate_batchnorm(g: Generator, seed: int, batches: int = 20, batch_size: int = 256) -> Generator:
    """A copy of ``g`` whose BatchNorm running statistics are the exact averages over ``batches`` batches of
    ``z ~ N(0, I)`` (drawn from a generator of its own), in evaluation mode."""
    g = copy.deepcopy(g)
    p = next(g.parameters())
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    g.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        g(torch.randn(batch_size, g.config.latent_dim, generator=gen).to(p.device))
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return g.eval()


@torch.no_grad()
def sample_images(g: Generator, n: int, seed: int, batch: int = 500) -> torch.Tensor:
    """``n`` samples of ``g`` (evaluation mode) on the CPU, latents from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    p = next(g.parameters())
    out = []
    for i in range(0, n, batch):
        out.append(g(torch.randn(min(batch, n - i), g.config.latent_dim, generator=gen).to(p.device)).cpu())
    return torch.cat(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser,
        steps_help="generator steps in total (resume continues)",
        checkpoint_every=1000,
        eval_images=2000,
        eval_help="samples (and test images) for the FD figure",
    )
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--channels", default="128,64,32", help="generator channels from the 4x4 level up")
    parser.add_argument("--lr-g", type=float, default=2e-4)
    parser.add_argument("--lr-d", type=float, default=2e-4)
    parser.add_argument("--beta1", type=float, default=0.5)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and write ``config.json`` + ``model.safetensors`` (the EMA generator)."""
    from tqdm import tqdm

    from invgen.train import EMA, load_checkpoint, save_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train, test = load_splits(args.dataset, args.image_size)
    if args.image_size % 4 or args.image_size // 4 != 2 ** len(args.channels.split(",")):
        raise ValueError(f"--image-size {args.image_size} needs 4 * 2^k with k = {len(args.channels.split(','))}")
    gcfg = GANConfig(
        in_channels=train.shape[1],
        image_size=args.image_size,
        latent_dim=args.latent_dim,
        channels=tuple(int(c) for c in args.channels.split(",")),
    )
    gan = GAN(gcfg).to(device)
    ema = EMA(gan.g, args.ema)
    betas = (args.beta1, 0.999)
    opt = torch.optim.Adam(
        [{"params": gan.g.parameters(), "lr": args.lr_g}, {"params": gan.d.parameters(), "lr": args.lr_d}], betas=betas
    )
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = out / "checkpoint"
    step, losses, seconds_before, running, fd_history = 0, [], 0.0, None, []
    if ckpt.with_suffix(".json").exists():
        meta = load_checkpoint(ckpt, model=gan, optimizer=opt, ema=ema, generator=gen)
        step = int(meta["step"])
        losses = list(meta["extra"].get("losses", []))
        seconds_before = float(meta["extra"].get("seconds", 0.0))
        running = meta["extra"].get("running")
        fd_history = list(meta["extra"].get("fd", []))
        print(f"resuming from step {step} ({ckpt})", file=sys.stderr)
    dataset_fd = args.dataset if args.dataset in FD_DATASETS else None
    reference = None
    if dataset_fd:
        from invgen.metrics.frechet import feature_statistics

        reference = feature_statistics(to_unit(test[: args.eval_images]), dataset_fd)
    config = {
        "name": f"gan-{args.dataset}" if not args.dataset.startswith("folder:") else "gan-folder",
        "family": "gan",
        "gan": gcfg.to_dict(),
        "image_shape": [gcfg.in_channels, gcfg.image_size, gcfg.image_size],
        "objective": "hinge loss, spectrally normalised discriminator, EMA generator with recalibrated BatchNorm",
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "device", "threads")},
        "parameters": {"generator": sum(p.numel() for p in gan.g.parameters()), "discriminator": _count(gan.d)},
        "command": training_command("gan"),
    }
    d_params = list(gan.d.parameters())
    bar = tqdm(total=args.steps, initial=step, desc=f"gan {args.dataset}", dynamic_ncols=True)
    t0 = time.time()
    gan.train()
    while step < args.steps:
        lr_scale = min(1.0, (step + 1) / 200)
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = args.lr_g * lr_scale, args.lr_d * lr_scale
        idx = torch.randint(0, train.shape[0], (args.batch_size,), generator=gen)
        real = to_unit(train[idx]).to(device)
        z = torch.randn(args.batch_size, gcfg.latent_dim, generator=gen).to(device)
        # discriminator step (only its parameters get gradients: the fakes are detached)
        opt.zero_grad(set_to_none=True)
        fake = gan.g(z)
        d_real, d_fake = gan.d(real), gan.d(fake.detach())
        loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        loss_d.backward()
        opt.step()
        # generator step (the discriminator's gradients are dropped before the update)
        opt.zero_grad(set_to_none=True)
        loss_g = -gan.d(fake).mean()
        loss_g.backward()
        for p in d_params:
            p.grad = None
        opt.step()
        ema.update(gan.g)
        step += 1
        now = [loss_d.item(), loss_g.item(), d_real.mean().item(), d_fake.mean().item()]
        running = now if running is None else [0.98 * r + 0.02 * v for r, v in zip(running, now)]
        bar.update(1)
        bar.set_postfix(loss_d=f"{running[0]:.3f}", loss_g=f"{running[1]:.3f}", d_real=f"{running[2]:.2f}")
        if step % 50 == 0:
            losses.append([step, *(round(r, 4) for r in running)])
        if step % args.checkpoint_every == 0 or step == args.steps:
            g_eval = recalibrate_batchnorm(ema.model, args.seed + 1)
            fd = None
            if dataset_fd:
                from invgen.metrics.frechet import frechet_distance

                fd = round(
                    frechet_distance(sample_images(g_eval, args.eval_images, args.seed + 2), reference, dataset_fd), 4
                )
                fd_history.append([step, fd])
            seconds = seconds_before + time.time() - t0
            best = fd is None or fd <= min(f for _, f in fd_history)
            save_checkpoint(
                ckpt,
                model=gan,
                optimizer=opt,
                ema=ema,
                step=step,
                generator=gen,
                extra={"losses": losses, "seconds": seconds, "running": running, "fd": fd_history},
            )
            if best:
                _export(out, g_eval, config, step, losses, seconds, fd_history, args.eval_images, dataset_fd)
            else:
                _update_history(out, fd_history, step, seconds)
    bar.close()
    return 0


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _export(
    out: Path,
    g: Generator,
    config: dict,
    step: int,
    losses: list,
    seconds: float,
    fd_history: list,
    eval_images: int,
    dataset_fd: str | None,
) -> None:
    export_weights(g, out)
    cfg = dict(
        config,
        steps_done=step,
        exported_step=step,
        train_seconds=round(seconds, 1),
        sample_quality={
            "metric": f"FD-{dataset_fd}-CNN" if dataset_fd else None,
            "value": fd_history[-1][1] if dataset_fd else None,
            "samples": eval_images,
            "reference": f"first {eval_images} test images",
            "history": fd_history,
            "note": "EMA generator with recalibrated BatchNorm; exported at the best FD so far",
        },
        losses_columns=["step", "loss_d", "loss_g", "d_real", "d_fake"],
        losses=losses,
    )
    write_config(out, cfg)


def _update_history(out: Path, fd_history: list, step: int, seconds: float) -> None:
    """Record a checkpoint's FD in ``config.json`` without replacing the exported (better) weights."""
    path = out / "config.json"
    if path.exists():
        cfg = json.loads(path.read_text())
        cfg["steps_done"] = step
        cfg["train_seconds"] = round(seconds, 1)
        cfg["sample_quality"]["history"] = fd_history
        write_config(out, cfg)
