"""Colorization of CIFAR-10: gray -> colour posterior samples, several diverse colourings per image.

The ``colorize`` operator keeps the ITU-R 601 luma of an RGB image (Gaussian noise std 0.05); colour must come
from the prior. Which prior:

* ``diffusion-cifar10`` (or ``--prior NAME``) with DDRM when that prior is registered (it ships with invgen);
* otherwise a Gaussian (Wiener) prior fitted to CIFAR-10 training images
  (``invgen_plugins.analytic.gaussian.Gaussian.fit``), whose posterior is exact: ``prior.exact_posterior(op, y)``
  gives the closed-form mean and covariance, and its samples are exact posterior samples. This needs the data
  (``INVGEN_DATA``); without data and without the colour prior the script says what is missing and exits 0.

Reported: PSNR / SSIM of the posterior mean and of the samples, the sample diversity (mean per-pixel std across
samples), LPIPS of the samples (backbone shipped with invgen), and the gray baseline (the luma y repeated in
R, G and B). The Wiener prior's mean is only about as good as that baseline in PSNR (colour is barely predictable
from luma by a linear model); what it shows is exact, diverse posterior samples.

Run::

    INVGEN_DATA=... python examples/colorization.py     # about 35 s on one CPU thread (32x32, 2 images)
    INVGEN_DATA=... python examples/colorization.py --smoke --out /tmp/color   # 16x16 images, a few seconds

Writes ``colorization.png`` (per image: truth, gray y, samples, mean, std) and ``colorization.json`` to ``--out``,
and prints one ``metrics`` line per method.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import invgen
from invgen.tasks import contact_sheets

NAME = "colorization"
MISSING = (
    "colorization skipped: it needs a colour prior. '{prior}' is not registered in this build, and the "
    "fallback (a Gaussian prior fitted to CIFAR-10 training images) needs the data: set INVGEN_DATA to the folder "
    "holding cifar10/cifar10_jpg.tar.gz."
)


def fit_gaussian(n_train: int, size: int, seed: int) -> object:
    """The Wiener prior: mean and (shrunk) covariance of ``n_train`` random CIFAR-10 training images."""
    from invgen_plugins.analytic.gaussian import Gaussian

    ds = invgen.dataset("cifar10", split="train")
    if size != 32:
        ds = ds.transform(resize=size)
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n_train].tolist()
    return Gaussian.fit(torch.stack([ds.image(i) for i in pick]), shrinkage=1e-2)


def ground_truth(prior: object, n: int, size: int, seed: int) -> tuple[torch.Tensor, str]:
    """CIFAR-10 test images when INVGEN_DATA is set, else unconditional DDIM samples of the prior (fixed seed)."""
    if os.environ.get("INVGEN_DATA"):
        ds = invgen.dataset("cifar10", split="test")
        if size != 32:
            ds = ds.transform(resize=size)
        # every 1000th test image: the split is ordered by class, so this spans several classes
        pick = [(seed + 1000 * k) % len(ds) for k in range(n)]
        return torch.stack([ds.image(i) for i in pick]), f"CIFAR-10 test images {pick} at {size}x{size}"
    dummy = invgen.operator("identity", noise=invgen.noise("gaussian", std=1.0))
    post = invgen.solve(torch.zeros(n, 3, size, size), dummy, prior, solver="ddim", steps=50, seed=1000 + seed)
    return post.samples[0].clamp(0, 1), f"DDIM samples of the prior (seed {1000 + seed}; INVGEN_DATA not set)"


def scores(samples: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """Quality of the mean and of the samples, and their diversity (mean per-pixel std across samples)."""
    n = samples.shape[0]
    mean = samples.mean(0)
    flat = samples.reshape(-1, *x.shape[1:])
    ref = x.repeat(n, 1, 1, 1)
    out = {
        "psnr_mean": float(invgen.metrics.psnr(mean, x).mean()),
        "ssim_mean": float(invgen.metrics.ssim(mean, x).mean()),
        "psnr_samples": float(invgen.metrics.psnr(flat, ref).mean()),
        "ssim_samples": float(invgen.metrics.ssim(flat, ref).mean()),
        "diversity_std": float(samples.std(0).mean()) if n > 1 else 0.0,
    }
    if invgen.metrics.lpips_available() and min(x.shape[-2:]) >= 32:  # shipped backbone, no download; >= 32 px
        out["lpips_samples"] = float(invgen.metrics.lpips(flat, ref).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"examples/out/{NAME}", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="tiny run (16x16 images, few training images) for tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default="diffusion-cifar10", help="the learned colour prior (32x32 RGB)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()
    has_diffusion = args.prior in invgen.list_priors()
    if not has_diffusion and not os.environ.get("INVGEN_DATA"):
        print(MISSING.format(prior=args.prior))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_images, n_samples = (1, 4) if args.smoke else (2, 6)
    size = 32 if has_diffusion or not args.smoke else 16  # the Gaussian's dense covariance is (3 size^2)^2

    if has_diffusion:
        prior, how = invgen.prior(args.prior), f"ddrm/{args.prior}"
    else:
        n_train = 300 if args.smoke else 2000
        prior, how = fit_gaussian(n_train, size, args.seed), "exact/gaussian-fit"
        print(
            f"prior: Gaussian fitted to {n_train} CIFAR-10 training images at {size}x{size} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    x, source = ground_truth(prior, n_images, size, args.seed)
    op = invgen.operator("colorize", noise=invgen.noise("gaussian", std=0.05))
    y = op.measure(x, generator=torch.Generator().manual_seed(args.seed))  # (B, 1, H, W)
    print(f"ground truth: {source}; y: luma, noise std 0.05")

    t1 = time.perf_counter()
    if has_diffusion:
        post = invgen.solve(
            y, op, prior, solver="ddrm", n_samples=n_samples, seed=args.seed, steps=20 if args.smoke else 50
        )
        samples, nfe = post.samples, post.nfe
    else:
        exact = prior.exact_posterior(op, y)  # closed-form mean and covariance
        samples, nfe = exact.sample(n_samples, generator=torch.Generator().manual_seed(args.seed)), 0
    seconds = time.perf_counter() - t1
    samples = samples.clamp(0, 1)
    gray = y.clamp(0, 1).expand(-1, 3, -1, -1)[None]  # the luma as an RGB image: no colour at all
    results = {
        how: {**scores(samples, x), "nfe": nfe, "seconds": round(seconds, 2)},
        "gray-baseline": {**scores(gray, x), "nfe": 0, "seconds": 0.0},
    }
    for label, r in results.items():
        pairs = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        print(f"metrics {label}: {pairs}")

    rows = []
    short = how.split("/")[0]
    for b in range(n_images):
        s = samples[:, b]
        std = s.std(0).mean(0, keepdim=True) if n_samples > 1 else torch.zeros_like(s[0, :1])
        tiles = [("truth", x[b]), ("y (luma)", y[b].clamp(0, 1))]
        tiles += [(f"{short} {k + 1}", s[k]) for k in range(n_samples)]
        tiles += [(f"{short} mean", s.mean(0)), (f"std/{float(std.max()):.2f}", std / std.max().clamp_min(1e-8))]
        rows.append(tiles)
    contact_sheets(rows, out / f"{NAME}.png")
    info = {"ground_truth": source, "prior": how, "size": size, "n_samples": n_samples, "metrics": results}
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1, default=str))
    print(f"wrote {out / f'{NAME}.png'} and {out / f'{NAME}.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
