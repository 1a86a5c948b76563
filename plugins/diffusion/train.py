"""Training of diffusion priors: ``invgen train diffusion --dataset mnist --steps N --out DIR``.

Epsilon-prediction with the DDPM "simple" loss over uniformly drawn VP timesteps, AdamW, gradient clipping, EMA
weights, checkpoints every ``--checkpoint-every`` steps that resume exactly after an interruption (same command),
a progress bar with loss and ETA, and a safetensors + JSON output that :class:`DiffusionPrior` rebuilds from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from invgen.train.checkpoint import add_common_arguments, export_weights, training_command
from invgen_plugins.diffusion.schedule import VPSchedule, c_noise
from invgen_plugins.diffusion.unet import UNet, UNetConfig

FLIP_OK = {"mnist": False, "fashion-mnist": True, "cifar10": True}


def load_training_images(dataset: str, image_size: int) -> torch.Tensor:
    """Training images ``(N, C, S, S)`` in [0, 1] as uint8-backed float; ``folder:PATH`` reads an image folder."""
    from invgen.data import load_dataset

    if dataset.startswith("folder:"):
        import numpy as np
        from PIL import Image

        files = sorted(p for p in Path(dataset[7:]).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise FileNotFoundError(f"no PNG/JPEG images under {dataset[7:]!r}")
        arrs = [np.asarray(Image.open(f).convert("RGB").resize((image_size, image_size), Image.BICUBIC)) for f in files]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0
    else:
        x, _ = load_dataset(dataset, "train")
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, checkpoint_every=250)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--channel-mults", default="1,2,2")
    parser.add_argument("--num-res-blocks", type=int, default=1)
    parser.add_argument("--attention-levels", default="", help="levels with self-attention besides the middle")


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and write ``config.json`` + ``model.safetensors`` (the EMA weights)."""
    from tqdm import tqdm

    from invgen.train import EMA, load_checkpoint, save_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    images = load_training_images(args.dataset, args.image_size)
    channels = images.shape[1]
    ucfg = UNetConfig(
        in_channels=channels,
        base_channels=args.base_channels,
        channel_mults=tuple(int(m) for m in args.channel_mults.split(",")),
        num_res_blocks=args.num_res_blocks,
        attention_levels=tuple(int(a) for a in args.attention_levels.split(",") if a),
    )
    schedule = VPSchedule()
    net = UNet(ucfg).to(device)
    ema = EMA(net, args.ema)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = out / "checkpoint"
    step, losses, seconds_before = 0, [], 0.0
    if ckpt.with_suffix(".json").exists():
        meta = load_checkpoint(ckpt, model=net, optimizer=opt, ema=ema, generator=gen)
        step = int(meta["step"])
        losses = list(meta["extra"].get("losses", []))
        seconds_before = float(meta["extra"].get("seconds", 0.0))
        print(f"resuming from step {step} ({ckpt})", file=sys.stderr)
    sigmas = schedule.sigmas(torch.float32).to(device)
    ab = schedule.alphas_cumprod(torch.float32).to(device)
    n_params = sum(p.numel() for p in net.parameters())
    config = {
        "name": f"diffusion-{args.dataset}" if not args.dataset.startswith("folder:") else "diffusion-folder",
        "family": "diffusion",
        "unet": ucfg.to_dict(),
        "schedule": schedule.to_dict(),
        "image_shape": [channels, args.image_size, args.image_size],
        "parametrisation": "epsilon, VP state input, conditioned on c_noise(log s)",
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "device", "threads")},
        "parameters": n_params,
        "command": training_command("diffusion"),
    }
    flip = FLIP_OK.get(args.dataset, True)
    bar = tqdm(total=args.steps, initial=step, desc=f"diffusion {args.dataset}", dynamic_ncols=True)
    t0, running = time.time(), None
    net.train()
    while step < args.steps:
        idx = torch.randint(0, images.shape[0], (args.batch_size,), generator=gen)
        x0 = images[idx].to(device) * 2 - 1
        if flip:
            mask = torch.rand(args.batch_size, generator=gen) < 0.5
            x0 = torch.where(mask.to(device)[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, schedule.steps, (args.batch_size,), generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        a = ab[t].sqrt()[:, None, None, None]
        xt = a * x0 + (1 - ab[t]).sqrt()[:, None, None, None] * eps
        loss = F.mse_loss(net(xt, c_noise(sigmas[t])), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        warm = min(1.0, (step + 1) / 500)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm
        opt.step()
        ema.update(net)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if step % 50 == 0:
            losses.append([step, round(running, 5)])
        if step % args.checkpoint_every == 0 or step == args.steps:
            seconds = seconds_before + time.time() - t0
            save_checkpoint(
                ckpt,
                model=net,
                optimizer=opt,
                ema=ema,
                step=step,
                generator=gen,
                extra={"losses": losses, "seconds": seconds},
            )
            _export(out, ema.model, config, step, losses, seconds)
    bar.close()
    return 0


def _export(out: Path, model: torch.nn.Module, config: dict, step: int, losses: list, seconds: float) -> None:
    export_weights(model, out)
    cfg = dict(
        config,
        steps_done=step,
        final_loss=losses[-1][1] if losses else math.nan,
        train_seconds=round(seconds, 1),
        losses=losses,
    )
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
