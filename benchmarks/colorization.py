"""Colorization with a learned colour prior: CIFAR-10 test images and scikit-image photos, gray -> colour posterior
samples, every diffusion solver beside the baselines.

Protocol: the ``colorize`` operator keeps the ITU-R 601 luma ``y = 0.299 R + 0.587 G + 0.114 B`` with Gaussian noise
of std ``--noise`` (0.05), drawn once per image from a generator seeded with ``seed``; every method sees the same y.
Ground truths: ``--images`` CIFAR-10 test images spread over the classes (index ``k * 10000 // images``; the test
split is ordered by class), and, with ``--photo-prior``, the scikit-image colour photos ``--photos`` (offline: they
ship with the dependency) resized so their short side is ``--photo-size`` px (antialiased bilinear) for an any-size
prior.

Per method: PSNR and SSIM of the posterior mean, PSNR and LPIPS (AlexNet v0.1) of the samples, the diversity of the
N samples of one image (mean pairwise LPIPS and RMSE), the colourfulness of the samples (Hasler and Suesstrunk 2003,
M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2) on the 0-255 scale, shown beside the ground truths'),
seconds and NFE per image. Baselines: ``gray`` (the luma in R, G and B: no colour), ``tikhonov``, and the exact
posterior of a Gaussian (Wiener) prior fitted to 5000 CIFAR-10 training images (``--wiener``; its samples are exact
posterior samples of that prior).

Usage:
    INVGEN_DATA=../shared/data INVGEN_LPIPS_WEIGHTS=... python benchmarks/colorization.py --prior diffusion-cifar10 \
        [--solvers ddrm,ddnm,pigdm,diffpir,dps] [--steps 50] [--images 100] [--samples 4] [--wiener] \
        [--photo-prior diffusion-natural-rgb --photos astronaut,coffee,chelsea --photo-size 96] \
        [--out docs/colorization]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import invgen

SOLVERS = ("ddrm", "ddnm", "pigdm", "diffpir", "dps")
BASELINES = ("gray", "tikhonov")
METRICS = ("psnr_mean", "ssim_mean", "psnr_samples", "lpips_samples", "div_lpips", "div_rmse", "colorfulness")


def colorfulness(x: Tensor) -> Tensor:
    """Hasler and Suesstrunk (2003) colourfulness of RGB images on [0, 1], computed on the 0-255 scale.

    Shape:
        ``(B, 3, H, W)`` -> ``(B,)``; 0 for gray images.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise invgen.errors.ShapeError(f"colorfulness: expected (B, 3, H, W) RGB images, got {tuple(x.shape)}")
    r, g, b = (255.0 * x.double()).unbind(1)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    sd = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mu = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return (sd + 0.3 * mu).to(x.dtype)


def cifar_images(n: int) -> tuple[Tensor, list[int]]:
    """``n`` CIFAR-10 test images spread over the classes (the split is ordered by class). ``(n, 3, 32, 32)``."""
    ds = invgen.dataset("cifar10", split="test")
    pick = [k * len(ds) // n for k in range(n)]
    return torch.stack([ds.image(i) for i in pick]), pick


def photo_images(names: list[str], size: int) -> list[Tensor]:
    """scikit-image colour photos, short side resized to ``size`` (antialiased), each ``(1, 3, H, W)``."""
    from invgen.data.sets import read_image, resize_short_side

    return [resize_short_side(read_image(f"skimage:{name}", channels=3), size)[None] for name in names]


def scores(samples: Tensor, x: Tensor, use_lpips: bool) -> dict[str, Any]:
    """Per-image metrics of N samples ``(N, B, 3, H, W)`` against ``x`` ``(B, 3, H, W)``; lists of length B."""
    from invgen.metrics import diversity, lpips, psnr, ssim

    n = samples.shape[0]
    samples = samples.clamp(0, 1)
    mean = samples.mean(0)
    flat = samples.reshape(-1, *x.shape[1:])
    ref = x.repeat(n, 1, 1, 1)
    out: dict[str, Any] = {
        "psnr_mean": psnr(mean, x).tolist(),
        "ssim_mean": ssim(mean, x).tolist(),
        "psnr_samples": psnr(flat, ref).reshape(n, -1).mean(0).tolist(),
        "colorfulness": colorfulness(flat).reshape(n, -1).mean(0).tolist(),
        "div_rmse": diversity(samples, metric="l2").tolist() if n > 1 else [0.0] * x.shape[0],
    }
    if use_lpips:
        out["lpips_samples"] = lpips(flat, ref).reshape(n, -1).mean(0).tolist()
        out["div_lpips"] = diversity(samples, metric="lpips").tolist() if n > 1 else [0.0] * x.shape[0]
    return out


def run_method(method: str, y: Tensor, op: Any, prior: Any, args: argparse.Namespace, wiener: Any) -> tuple:
    """``(samples (N, B, 3, H, W), nfe, seconds)`` of one method on the observations ``y``."""
    t0 = time.perf_counter()
    if method == "gray":
        samples, nfe = y.clamp(0, 1).expand(-1, 3, -1, -1)[None], 0
    elif method == "wiener":
        exact = wiener.exact_posterior(op, y.double())
        samples, nfe = exact.sample(args.samples, generator=torch.Generator().manual_seed(args.seed)).float(), 0
    elif method == "tikhonov":
        post = invgen.solve(y, op, None, solver="tikhonov", n_samples=1, seed=args.seed)
        samples, nfe = post.samples, 0
    else:
        kw: dict[str, Any] = {"steps": args.steps}
        if method == "dps":
            kw["zeta"] = args.dps_zeta
        post = invgen.solve(y, op, prior, solver=method, n_samples=args.samples, seed=args.seed, **kw)
        samples, nfe = post.samples, post.nfe
    return samples, nfe, time.perf_counter() - t0


def _avg(values: list[float] | None) -> float | None:
    return None if not values else sum(values) / len(values)


def evaluate(name: str, x: Tensor, prior: Any, methods: list[str], args: argparse.Namespace, wiener: Any) -> dict:
    """Every method on the images ``x`` (one batch per ``--batch`` images); per-method means and the samples of the
    first images for the figure."""
    op = invgen.operator("colorize", noise=invgen.noise("gaussian", std=args.noise))
    y = op.measure(x, generator=torch.Generator().manual_seed(args.seed))
    use_lpips = invgen.metrics.lpips_available() and min(x.shape[-2:]) >= 32
    truth = {"colorfulness": _avg(colorfulness(x).tolist())}
    results, figure = {}, {}
    for method in methods:
        per: dict[str, list[float]] = {}
        nfe, seconds, first = 0, 0.0, []
        for start in range(0, x.shape[0], args.batch):
            xb, yb = x[start : start + args.batch], y[start : start + args.batch]
            samples, nfe, sec = run_method(method, yb, op, prior, args, wiener)
            seconds += sec
            for key, vals in scores(samples, xb, use_lpips).items():
                per.setdefault(key, []).extend(vals)
            if sum(f.shape[1] for f in first) < args.figure_images:
                first.append(samples.clamp(0, 1))
        results[method] = {
            **{k: _avg(per.get(k)) for k in METRICS},
            "nfe": nfe,
            "seconds_per_image": seconds / x.shape[0],
        }
        figure[method] = torch.cat(first, dim=1)[:, : args.figure_images]
        r = results[method]
        lp = "-" if r["lpips_samples"] is None else f"{r['lpips_samples']:.4f}"
        print(f"{name} {method}: PSNR(mean) {r['psnr_mean']:.2f} LPIPS(samples) {lp} "
              f"colourfulness {r['colorfulness']:.1f} (truth {truth['colorfulness']:.1f}) "
              f"{r['seconds_per_image']:.2f} s/image", flush=True)  # fmt: skip
    return {"truth": truth, "results": results, "figure": figure, "x": x[: args.figure_images], "y": y}


def render(sections: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [
        "# Colorization (gray -> colour), noise std " + f"{args.noise}",
        "",
        f"Solvers at {args.steps} steps, N = {args.samples} samples per image, seed {args.seed}. PSNR/SSIM of the "
        "posterior mean; PSNR, LPIPS and colourfulness of the samples; diversity = mean pairwise LPIPS / RMSE of the "
        "samples of one image. Best of each column in bold (diversity and colourfulness are not ranked).",
        "",
    ]
    for name, sec in sections.items():
        lines += [f"## {name}", "", f"Ground truth colourfulness: {sec['truth']['colorfulness']:.1f}.", ""]
        lines += [
            "| method | PSNR mean | SSIM mean | PSNR samples | LPIPS samples | diversity LPIPS | diversity RMSE | "
            "colourfulness | NFE | s / image |",
            "|" + "---|" * 10,
        ]
        res = sec["results"]
        best = {}
        for key, better in (("psnr_mean", max), ("ssim_mean", max), ("psnr_samples", max), ("lpips_samples", min)):
            vals = [r[key] for r in res.values() if r[key] is not None]
            best[key] = better(vals) if vals else None
        for method, r in res.items():
            cells = []
            for key, spec in (("psnr_mean", ".2f"), ("ssim_mean", ".4f"), ("psnr_samples", ".2f"),
                              ("lpips_samples", ".4f"), ("div_lpips", ".4f"), ("div_rmse", ".4f"),
                              ("colorfulness", ".1f")):  # fmt: skip
                v = r[key]
                text = "-" if v is None else format(v, spec)
                cells.append(f"**{text}**" if v is not None and v == best.get(key) else text)
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['nfe']} | {r['seconds_per_image']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def save_figure(path: Path, sec: dict, methods: list[str]) -> None:
    """Per image one row: truth, y, then the first two samples of each method in ``methods`` (PNG, 8-bit)."""
    from PIL import Image

    from invgen.tasks import image_grid

    tiles = []
    for b in range(sec["x"].shape[0]):
        row = [sec["x"][b], sec["y"][b].clamp(0, 1).expand(3, -1, -1)]
        for m in methods:
            s = sec["figure"][m]
            row += [s[k, b] for k in range(min(2, s.shape[0]))]
        tiles.append(torch.stack(row))
    grid = image_grid(torch.cat(tiles), cols=tiles[0].shape[0])
    scale = max(1, 96 // sec["x"].shape[-1])
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array)
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="diffusion-cifar10", help="a registered colour prior (denoiser capability)")
    p.add_argument("--solvers", default="ddrm,ddnm,pigdm,diffpir", help=f"some of {', '.join(SOLVERS)}")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--dps-zeta", type=float, default=1.0)
    p.add_argument("--images", type=int, default=100, help="CIFAR-10 test images (0: none)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch", type=int, default=25, help="images per solver call")
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wiener", action="store_true", help="also the exact posterior of a fitted Gaussian prior")
    p.add_argument("--photo-prior", default=None, help="an any-size colour prior for the photos (none: no photos)")
    p.add_argument("--photos", default="astronaut,coffee,chelsea")
    p.add_argument("--photo-size", type=int, default=96)
    p.add_argument("--figure-images", type=int, default=4)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    solvers = [s for s in args.solvers.split(",") if s]
    unknown = sorted(set(solvers) - set(SOLVERS))
    if unknown:
        p.error(f"--solvers: unknown {unknown}; expected some of {', '.join(SOLVERS)}")
    sections: dict[str, dict] = {}
    if args.images:
        prior = invgen.prior(args.prior)
        wiener = None
        methods = list(BASELINES)
        if args.wiener:
            from invgen_plugins.analytic.gaussian import Gaussian

            train = invgen.dataset("cifar10", split="train")
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:5000].tolist()
            wiener = Gaussian.fit(torch.stack([train.image(i) for i in pick]).double(), shrinkage=1e-3)
            methods.append("wiener")
        x, pick = cifar_images(args.images)
        sections[f"CIFAR-10 test ({args.images} images), {args.prior}"] = evaluate(
            "cifar10", x, prior, [*methods, *solvers], args, wiener
        )
    if args.photo_prior:
        prior = invgen.prior(args.photo_prior)
        for name, x in zip(args.photos.split(","), photo_images(args.photos.split(","), args.photo_size)):
            title = f"photo {name} ({x.shape[-2]}x{x.shape[-1]}), {args.photo_prior}"
            sections[title] = evaluate(name, x, prior, ["gray", *solvers], args, None)
    text = render(sections, args)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        payload = {
            "args": vars(args),
            "sections": {k: {"truth": v["truth"], "results": v["results"]} for k, v in sections.items()},
        }
        (out / "results.json").write_text(json.dumps(payload, indent=1))
        for i, (title, sec) in enumerate(sections.items()):
            learned = [m for m in solvers if m in sec["figure"]]
            save_figure(out / f"colorization-{i}.png", sec, [*learned, "gray"])
            print(f"figure {out / f'colorization-{i}.png'}: {title}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
