"""Training of flow priors: ``invgen train flow --dataset mnist --steps N --out DIR``.

Maximum likelihood of uniformly dequantised 8-bit images: each batch is ``x = (k + u) / 256``, ``u ~ U[0, 1)``, and
the loss is ``-(log p(x) - D ln 256) / (D ln 2)``, the bits/dim bound of the 8-bit data
(:func:`invgen_plugins.flow.model.dequantized_bits_per_dim`). Adam, a linear learning-rate warm-up and
gradient-norm clipping; the actnorm layers are initialised from one batch before the first step.

The exported weights are an exponential moving average (EMA) of the parameters: every ``--checkpoint-every`` steps the
trainer writes a checkpoint that resumes exactly after an interruption (same command, :mod:`invgen.train.checkpoint`)
and exports ``model.safetensors`` (the EMA weights) and ``config.json`` with the command, steps, seconds and the
bits/dim of the EMA model on ``--eval-images`` training and held-out images (the dataset's test split; every 10th
image for ``folder:PATH``), the dequantisation noise drawn from fixed seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from invgen.train.checkpoint import add_common_arguments, export_weights, non_negative_int, training_command
from invgen.train.verify import write_config
from invgen_plugins.flow.model import flow_log_prob
from invgen_plugins.flow.net import FlowConfig, Glow
from invgen_plugins.vae.train import load_splits


@torch.no_grad()
def evaluate(net: Glow, images: torch.Tensor, seed: int, device: torch.device, batch: int = 500) -> float:
    """Mean bits/dim over ``images`` (uint8), the dequantisation noise from a generator of its own (so evaluating
    never changes the training's random stream)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, images.shape[0], batch):
        chunk = images[i : i + batch]
        u = torch.rand(chunk.shape, generator=gen)
        x = ((chunk.float() + u) / 256.0).to(device)
        total += float(_bpd_of_dequantized(net, x).sum())
    return total / images.shape[0]


def _bpd_of_dequantized(net: Glow, x: torch.Tensor) -> torch.Tensor:
    """Bits/dim of dequantised images ``x = (k + u) / 256``. Shape: ``(B, C, S, S)`` -> ``(B,)``."""
    dims = x[0].numel()
    return -(flow_log_prob(net, x) - dims * math.log(256.0)) / (dims * math.log(2.0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, eval_images=2000, eval_help="images of each split for the reported bits/dim")
    parser.add_argument("--levels", type=int, default=3, help="squeeze levels (multi-scale)")
    parser.add_argument("--steps-per-level", type=int, default=6, help="flow steps per level")
    parser.add_argument("--hidden", type=int, default=48, help="feature channels of the coupling networks")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=non_negative_int, default=200, help="steps of linear learning-rate warm-up")
    parser.add_argument("--grad-clip", type=float, default=50.0, help="gradient-norm clipping of the bits/dim loss")


def _dequantize(levels: torch.Tensor, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return ((levels.float() + torch.rand(levels.shape, generator=gen)) / 256.0).to(device)


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
    train, test = load_splits(args.dataset, args.image_size)
    fcfg = FlowConfig(
        in_channels=train.shape[1],
        image_size=args.image_size,
        levels=args.levels,
        steps_per_level=args.steps_per_level,
        hidden=args.hidden,
    )
    net = Glow(fcfg).to(device)
    # data-dependent actnorm initialisation on a batch of its own (a resumed run overwrites it from the checkpoint)
    init_gen = torch.Generator().manual_seed(args.seed + 3)
    idx = torch.randint(0, train.shape[0], (max(args.batch_size, 256),), generator=init_gen)
    with torch.no_grad():
        net(_dequantize(train[idx], init_gen, device) - 0.5)
    ema = EMA(net, args.ema)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = out / "checkpoint"
    step, losses, seconds_before, running, skipped = 0, [], 0.0, None, 0
    if ckpt.with_suffix(".json").exists():
        meta = load_checkpoint(ckpt, model=net, optimizer=opt, ema=ema, generator=gen)
        step = int(meta["step"])
        losses = list(meta["extra"].get("losses", []))
        seconds_before = float(meta["extra"].get("seconds", 0.0))
        running = meta["extra"].get("running")
        skipped = int(meta["extra"].get("skipped", 0))
        print(f"resuming from step {step} ({ckpt})", file=sys.stderr)
    config = {
        "name": f"flow-{args.dataset}" if not args.dataset.startswith("folder:") else "flow-folder",
        "family": "flow",
        "flow": fcfg.to_dict(),
        "image_shape": [fcfg.in_channels, fcfg.image_size, fcfg.image_size],
        "density": "multi-scale Glow on x - 1/2 (x in [0, 1]), no logit; latents N(0, I) (factored-out parts too)",
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "device", "threads")},
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": training_command("flow"),
    }
    bar = tqdm(total=args.steps, initial=step, desc=f"flow {args.dataset}", dynamic_ncols=True)
    t0 = time.time()
    net.train()
    while step < args.steps:
        idx = torch.randint(0, train.shape[0], (args.batch_size,), generator=gen)
        x = _dequantize(train[idx], gen, device)
        loss = _bpd_of_dequantized(net, x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), args.grad_clip)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
        if torch.isfinite(loss) and torch.isfinite(norm):
            opt.step()
            ema.update(net)
        else:  # a rare numerical blow-up: skip the update rather than poison Adam's moments
            skipped += 1
        step += 1
        value = loss.item() if torch.isfinite(loss) else (running or 8.0)
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        bar.set_postfix(bpd=f"{running:.3f}")
        if step % 50 == 0:
            losses.append([step, round(running, 4)])
        if step % args.checkpoint_every == 0 or step == args.steps:
            seconds = seconds_before + time.time() - t0
            save_checkpoint(
                ckpt,
                model=net,
                optimizer=opt,
                ema=ema,
                step=step,
                generator=gen,
                extra={"losses": losses, "seconds": seconds, "running": running, "skipped": skipped},
            )
            n = args.eval_images
            bpd = {
                "train": evaluate(ema.model, train[:n], args.seed + 1, device),
                "test": evaluate(ema.model, test[:n], args.seed + 2, device),
            }
            counts = (min(n, len(train)), min(n, len(test)))
            _export(out, ema.model, config, step, losses, seconds, bpd, counts, skipped)
    bar.close()
    return 0


def _export(
    out: Path,
    model: torch.nn.Module,
    config: dict,
    step: int,
    losses: list,
    seconds: float,
    bpd: dict[str, float],
    counts: tuple[int, int],
    skipped: int,
) -> None:
    export_weights(model, out)
    cfg = dict(
        config,
        steps_done=step,
        train_seconds=round(seconds, 1),
        skipped_steps=skipped,
        final_loss=losses[-1][1] if losses else None,
        bits_per_dim={
            "train": round(bpd["train"], 5),
            "test": round(bpd["test"], 5),
            "train_images": counts[0],
            "test_images": counts[1],
            "note": "EMA weights; uniform dequantisation x = (k + u) / 256, one draw per pixel from a fixed seed; "
            "bits/dim = -(log p(x) - D ln 256) / (D ln 2)",
        },
        losses=losses,
    )
    write_config(out, cfg)
