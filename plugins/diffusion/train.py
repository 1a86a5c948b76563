"""Training of diffusion priors: ``invgen train diffusion --dataset mnist --steps N --out DIR``.

Epsilon-prediction with the DDPM "simple" loss over uniformly drawn VP timesteps (or EDM's log-normal noise levels,
``--noise-levels lognormal``), AdamW, gradient clipping, EMA
weights, checkpoints every ``--checkpoint-every`` steps that resume exactly after an interruption (same command),
a progress bar with loss and ETA, and a safetensors + JSON output that :class:`DiffusionPrior` rebuilds from.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from invgen.train.checkpoint import add_common_arguments, export_weights, training_command
from invgen.train.verify import write_config
from invgen_plugins.diffusion.schedule import VPSchedule, c_noise
from invgen_plugins.diffusion.unet import UNet, UNetConfig

FLIP_OK = {"mnist": False, "fashion-mnist": True, "cifar10": True}
PATCH_DATASETS = {"bsd400": "bsd400_gray"}  # --dataset NAME -> folder under INVGEN_DATA (patch training)


def load_patch_source(dataset: str, channels: int = 0) -> list[torch.Tensor]:
    """Whole training images at their own size for patch training: ``[(C, H, W), ...]`` in [0, 1].

    ``dataset``: ``bsd400`` (the 400 DnCNN training images under ``INVGEN_DATA/bsd400_gray``), ``cifar10`` (the
    50000 32x32 training images: the colour data there is) or ``folder:PATH``.
    ``channels``: 1 (gray), 3 (RGB) or 0 (1 if every image is gray, else 3).
    """
    import numpy as np
    from PIL import Image

    from invgen.data.datasets import data_root

    if dataset == "cifar10":
        from invgen.data import load_dataset

        if channels not in (0, 3):
            raise ValueError(f"--channels: cifar10 is RGB (3), got {channels}")
        return list(load_dataset("cifar10", "train")[0].unbind(0))
    if dataset in PATCH_DATASETS:
        folder = data_root() / PATCH_DATASETS[dataset]
    elif dataset.startswith("folder:"):
        folder = Path(dataset[7:])
    else:
        raise ValueError(f"patch training reads bsd400, cifar10 or folder:PATH, got --dataset {dataset!r}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    if not files:
        raise FileNotFoundError(f"no images under {str(folder)!r}")
    opened = [Image.open(f) for f in files]
    if channels == 0:
        channels = 1 if all(im.mode in ("L", "I;16", "1") for im in opened) else 3
    if channels not in (1, 3):
        raise ValueError(f"--channels: expected 0, 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    out = []
    for im in opened:
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        t = torch.from_numpy(a.copy()).float().div_(255.0)
        out.append(t[None] if channels == 1 else t.permute(2, 0, 1).contiguous())
    return out


def random_patches(source: list[torch.Tensor], n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random ``size x size`` crops, each under one of the 8 flips/rotations (the dihedral group), drawn
    from ``gen``. Shape: -> ``(n, C, size, size)``."""
    out = []
    for _ in range(n):
        img = source[int(torch.randint(0, len(source), (1,), generator=gen))]
        h, w = img.shape[-2:]
        if h < size or w < size:
            raise ValueError(f"--patch-size {size} exceeds an image of {h}x{w}")
        i = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        j = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        k = int(torch.randint(0, 8, (1,), generator=gen))
        patch = img[:, i : i + size, j : j + size]
        patch = torch.rot90(patch, k % 4, dims=(1, 2))
        out.append(patch.flip(-1) if k >= 4 else patch)
    return torch.stack(out)


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
    parser.add_argument(
        "--patch-size",
        type=int,
        default=0,
        help="train on random patches of this size from images at their own size (bsd400 or folder:PATH; "
        "flips and rotations), for a fully convolutional prior of any image size; 0: whole images at --image-size",
    )
    parser.add_argument("--channels", type=int, default=0, help="patch training: 1 gray, 3 RGB, 0 from the images")
    parser.add_argument(
        "--no-mid-attention",
        action="store_true",
        help="no global attention in the middle block (a fully convolutional UNet, for priors of any image size)",
    )
    parser.add_argument(
        "--tile", type=int, default=0, help="tile size the shipped prior uses on large images (0: none)"
    )
    parser.add_argument(
        "--noise-levels",
        choices=("uniform-t", "lognormal", "mixed"),
        default="uniform-t",
        help="training noise levels: uniform VP timesteps (DDPM); log s ~ N(-1.2, 1.2^2) clipped to the schedule's "
        "range (EDM's distribution, [-1, 1] scale: more steps at the levels image restoration uses, but almost none "
        "above s = 10, where the epsilon network then fails); mixed: that with probability 0.8, else log s uniform "
        "over the schedule's range (solvers start at s = 157)",
    )
    parser.add_argument(
        "--uniform-fraction",
        type=float,
        default=0.2,
        help="--noise-levels mixed: the fraction of levels drawn log-uniform over the schedule's range (generation "
        "and colorization need the high levels trained; denoising the low ones)",
    )


def training_batches(args: argparse.Namespace) -> tuple[Callable[[torch.Generator], torch.Tensor], int, bool]:
    """The data of a denoising trainer: ``(batch, channels, patches)``, ``batch(gen)`` a ``(B, C, S, S)`` batch on
    [-1, 1] (random patches with flips/rotations under ``--patch-size``, else whole images with horizontal flips where
    the dataset allows them), all randomness from ``gen``."""
    device = torch.device(args.device)
    patches = getattr(args, "patch_size", 0)
    if patches:
        source = load_patch_source(args.dataset, getattr(args, "channels", 0))

        def batch(gen: torch.Generator) -> torch.Tensor:
            return random_patches(source, args.batch_size, patches, gen).to(device) * 2 - 1

        return batch, source[0].shape[0], True
    images = load_training_images(args.dataset, args.image_size)
    flip = FLIP_OK.get(args.dataset, True)

    def batch(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, images.shape[0], (args.batch_size,), generator=gen)
        x0 = images[idx].to(device) * 2 - 1
        if flip:
            mask = torch.rand(args.batch_size, generator=gen) < 0.5
            x0 = torch.where(mask.to(device)[:, None, None, None], x0.flip(-1), x0)
        return x0

    return batch, images.shape[1], False


def lognormal_levels(n: int, gen: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    """``n`` training noise levels on the [-1, 1] scale with ``log s ~ N(-1.2, 1.2^2)`` (EDM's training distribution,
    Karras et al. 2022, whose sigma_data = 0.5 is this scale), clipped to ``[lo, hi]``. Shape ``(n,)``."""
    return torch.exp(-1.2 + 1.2 * torch.randn(n, generator=gen)).clamp(lo, hi)


def mixed_levels(n: int, gen: torch.Generator, lo: float, hi: float, p_uniform: float = 0.2) -> torch.Tensor:
    """:func:`lognormal_levels`, each level replaced with probability ``p_uniform`` by one log-uniform on
    ``[lo, hi]``, so the high noise levels that samplers start from are trained too. Shape ``(n,)``."""
    s = lognormal_levels(n, gen, lo, hi)
    pick = torch.rand(n, generator=gen) < p_uniform
    u = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(n, generator=gen))
    return torch.where(pick, u, s)


def fit(
    args: argparse.Namespace,
    net: torch.nn.Module,
    config: dict,
    batch: Callable[[torch.Generator], torch.Tensor],
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
    desc: str,
) -> None:
    """The training loop the denoising trainers share: AdamW with a 500-step warm-up and gradient clipping, EMA,
    checkpoints every ``--checkpoint-every`` steps that resume exactly (model, optimizer, EMA, generator), a progress
    bar with the loss and ETA, and ``model.safetensors`` (EMA weights) + ``config.json`` written at each checkpoint.
    ``loss_fn(net, x0, gen)`` draws its own noise from ``gen``."""
    from tqdm import tqdm

    from invgen.train import EMA, load_checkpoint, save_checkpoint

    out = Path(args.out)
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
    bar = tqdm(total=args.steps, initial=step, desc=desc, dynamic_ncols=True)
    t0, running = time.time(), None
    net.train()
    while step < args.steps:
        loss = loss_fn(net, batch(gen), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 500)
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
            extra = {"losses": losses, "seconds": seconds}
            save_checkpoint(ckpt, model=net, optimizer=opt, ema=ema, step=step, generator=gen, extra=extra)
            _export(out, ema.model, config, step, losses, seconds)
    bar.close()


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and write ``config.json`` + ``model.safetensors`` (the EMA weights)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "tile", 0) and args.tile <= 32:
        raise ValueError(f"--tile must exceed the tiles' overlap of 32 pixels, got {args.tile}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    batch, channels, patches = training_batches(args)
    ucfg = UNetConfig(
        in_channels=channels,
        base_channels=args.base_channels,
        channel_mults=tuple(int(m) for m in args.channel_mults.split(",")),
        num_res_blocks=args.num_res_blocks,
        attention_levels=tuple(int(a) for a in args.attention_levels.split(",") if a),
        mid_attention=not getattr(args, "no_mid_attention", False),
    )
    schedule = VPSchedule()
    net = UNet(ucfg).to(device)
    sigmas = schedule.sigmas(torch.float32).to(device)
    ab = schedule.alphas_cumprod(torch.float32).to(device)
    config = {
        "name": f"diffusion-{args.dataset}" if not args.dataset.startswith("folder:") else "diffusion-folder",
        "family": "diffusion",
        "unet": ucfg.to_dict(),
        "schedule": schedule.to_dict(),
        "image_shape": None if patches else [channels, args.image_size, args.image_size],
        "channels": channels,
        "tile": getattr(args, "tile", 0) or None,
        "parametrisation": "epsilon, VP state input, conditioned on c_noise(log s)",
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "device", "threads")},
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": training_command("diffusion"),
    }

    levels = getattr(args, "noise_levels", "uniform-t")
    p_uniform = float(getattr(args, "uniform_fraction", 0.2))
    if not 0.0 <= p_uniform <= 1.0:
        raise ValueError(f"--uniform-fraction must be in [0, 1], got {p_uniform}")
    lo, hi = float(sigmas[0]), float(sigmas[-1])

    def loss_fn(model: torch.nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if levels in ("lognormal", "mixed"):
            if levels == "lognormal":
                s = lognormal_levels(x0.shape[0], gen, lo, hi).to(device)
            else:
                s = mixed_levels(x0.shape[0], gen, lo, hi, p_uniform).to(device)
            eps = torch.randn(x0.shape, generator=gen).to(device)
            xt = (x0 + s[:, None, None, None] * eps) / torch.sqrt(1 + s**2)[:, None, None, None]
            return F.mse_loss(model(xt, c_noise(s)), eps)
        t = torch.randint(0, schedule.steps, (x0.shape[0],), generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        a = ab[t].sqrt()[:, None, None, None]
        xt = a * x0 + (1 - ab[t]).sqrt()[:, None, None, None] * eps
        return F.mse_loss(model(xt, c_noise(sigmas[t])), eps)

    fit(args, net, config, batch, loss_fn, f"diffusion {args.dataset}")
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
    write_config(out, cfg)
