"""Training of VAE priors: ``invgen train vae --dataset mnist --steps N --latent-dim 32 --out DIR``.

Maximises the ELBO (one reparametrised sample, closed-form KL, discretised-logistic likelihood on 256 levels) with
Adam, a linear learning-rate warm-up and gradient clipping. The KL term's weight rises linearly from 0 to 1 over
``--kl-warmup`` steps (Sønderby et al. 2016): without it the decoder's per-pixel scales explain MNIST's marginals
before the encoder is useful and the posterior collapses (KL ~ 0, every sample the same blob).

The exported weights are an exponential moving average (EMA) of the parameters, not a best checkpoint: every
``--checkpoint-every`` steps the trainer writes a checkpoint that resumes exactly after an interruption (same
command, :mod:`invgen.train.checkpoint`), and exports ``model.safetensors`` (the EMA weights) and ``config.json``
with the command, steps, seconds and the ELBO of the EMA model on ``--eval-images`` training and held-out images
(the dataset's test split; every 10th image for ``folder:PATH``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from invgen.train.checkpoint import add_common_arguments, export_weights, non_negative_int, training_command
from invgen.train.verify import write_config
from invgen_plugins.vae.likelihood import discretized_logistic_log_prob
from invgen_plugins.vae.net import ConvVAE, VAEConfig, kl_standard_normal


def load_splits(dataset: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out images ``(N, C, S, S)`` as uint8 (the 256 levels the likelihood models).

    ``mnist``, ``fashion-mnist`` and ``cifar10`` use their train and test splits; ``folder:PATH`` reads the PNG/JPEG
    files under PATH (RGB, resized to ``S``) in name order and holds out every 10th.
    """
    from invgen.data import load_dataset

    if dataset.startswith("folder:"):
        import numpy as np
        from PIL import Image

        files = sorted(p for p in Path(dataset[7:]).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if len(files) < 2:
            raise FileNotFoundError(f"need at least 2 PNG/JPEG images under {dataset[7:]!r}, found {len(files)}")
        arrs = [np.asarray(Image.open(f).convert("RGB").resize((image_size, image_size), Image.BICUBIC)) for f in files]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
        held = torch.arange(len(files)) % 10 == 0
        return x[~held], x[held]
    splits = []
    for split in ("train", "test"):
        x, _ = load_dataset(dataset, split)
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        splits.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
    return splits[0], splits[1]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 levels -> floats ``k / 255`` in [0, 1]."""
    return x.float() / 255.0


def elbo_terms(
    net: ConvVAE, x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x | z), KL(q(z | x) || N(0, I)))`` per image in nats, ``z`` one reparametrised draw from ``q``.

    Shape: ``(B, C, S, S)`` -> two ``(B,)``.
    """
    mu, logvar = net.encode(x)
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    loc, log_scale = net.decode(mu + torch.exp(0.5 * logvar) * eps)
    return discretized_logistic_log_prob(x, loc, log_scale).flatten(1).sum(1), kl_standard_normal(mu, logvar)


def negative_elbo(net: ConvVAE, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``-ELBO`` per image in nats (one reparametrised sample, closed-form KL). Shape: ``(B, C, S, S)`` -> ``(B,)``."""
    rec, kl = elbo_terms(net, x, generator)
    return kl - rec


@torch.no_grad()
def evaluate(net: ConvVAE, images: torch.Tensor, seed: int, device: torch.device, batch: int = 500) -> float:
    """Mean ELBO in nats per image over ``images`` (uint8), with draws from a generator of its own (so evaluating
    never changes the training's random stream)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, images.shape[0], batch):
        total += float(-negative_elbo(net, to_unit(images[i : i + batch]).to(device), gen).sum())
    return total / images.shape[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, eval_images=2000, eval_help="images of each split for the reported ELBO")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--channels", default="16,32,64", help="feature channels per level, image resolution down")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--kl-warmup", type=non_negative_int, default=2000, help="steps over which the KL weight rises from 0 to 1"
    )


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
    vcfg = VAEConfig(
        in_channels=train.shape[1],
        image_size=args.image_size,
        latent_dim=args.latent_dim,
        channels=tuple(int(c) for c in args.channels.split(",")),
    )
    net = ConvVAE(vcfg).to(device)
    ema = EMA(net, args.ema)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = out / "checkpoint"
    step, losses, seconds_before, running = 0, [], 0.0, None
    if ckpt.with_suffix(".json").exists():
        meta = load_checkpoint(ckpt, model=net, optimizer=opt, ema=ema, generator=gen)
        step = int(meta["step"])
        losses = list(meta["extra"].get("losses", []))
        seconds_before = float(meta["extra"].get("seconds", 0.0))
        running = meta["extra"].get("running")
        print(f"resuming from step {step} ({ckpt})", file=sys.stderr)
    dims = train[0].numel()
    config = {
        "name": f"vae-{args.dataset}" if not args.dataset.startswith("folder:") else "vae-folder",
        "family": "vae",
        "vae": vcfg.to_dict(),
        "image_shape": [vcfg.in_channels, vcfg.image_size, vcfg.image_size],
        "likelihood": "discretised logistic on 256 levels per pixel; decode(z) = E[clamp(X, 0, 1)]",
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "device", "threads")},
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": training_command("vae"),
    }
    bar = tqdm(total=args.steps, initial=step, desc=f"vae {args.dataset}", dynamic_ncols=True)
    t0 = time.time()
    net.train()
    while step < args.steps:
        idx = torch.randint(0, train.shape[0], (args.batch_size,), generator=gen)
        rec, kl = elbo_terms(net, to_unit(train[idx]).to(device), gen)
        beta = min(1.0, step / args.kl_warmup) if args.kl_warmup > 0 else 1.0
        opt.zero_grad(set_to_none=True)
        ((beta * kl - rec).mean() / dims).backward()  # nats per dimension: the same scale for every image size
        nelbo = (kl - rec).mean()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 200)
        opt.step()
        ema.update(net)
        step += 1
        running = nelbo.item() if running is None else 0.98 * running + 0.02 * nelbo.item()
        bar.update(1)
        bar.set_postfix(nelbo=f"{running:.1f}", bpd=f"{running / (dims * math.log(2)):.3f}")
        if step % 50 == 0:
            losses.append([step, round(running, 3)])
        if step % args.checkpoint_every == 0 or step == args.steps:
            seconds = seconds_before + time.time() - t0
            save_checkpoint(
                ckpt,
                model=net,
                optimizer=opt,
                ema=ema,
                step=step,
                generator=gen,
                extra={"losses": losses, "seconds": seconds, "running": running},
            )
            n = args.eval_images
            elbo = {
                "train": evaluate(ema.model, train[:n], args.seed + 1, device),
                "test": evaluate(ema.model, test[:n], args.seed + 2, device),
            }
            _export(out, ema.model, config, step, losses, seconds, elbo, (min(n, len(train)), min(n, len(test))), dims)
    bar.close()
    return 0


def _export(
    out: Path,
    model: torch.nn.Module,
    config: dict,
    step: int,
    losses: list,
    seconds: float,
    elbo: dict[str, float],
    counts: tuple[int, int],
    dims: int,
) -> None:
    export_weights(model, out)
    cfg = dict(
        config,
        steps_done=step,
        train_seconds=round(seconds, 1),
        final_loss=losses[-1][1] if losses else None,
        elbo={
            "train_nats": round(elbo["train"], 3),
            "test_nats": round(elbo["test"], 3),
            "test_bits_per_dim": round(-elbo["test"] / (dims * math.log(2)), 5),
            "train_images": counts[0],
            "test_images": counts[1],
            "note": "EMA weights, one z sample per image, closed-form KL; bits/dim = -ELBO / (C H W ln 2)",
        },
        losses=losses,
    )
    write_config(out, cfg)
