"""Blind Gaussian denoising on the classic test sets, measured exactly like DnCNN (Zhang et al. 2017, Table 2):
average PSNR over the images of BSD68 (or Set12, CBSD68, Kodak24) at sigma = 15, 25, 50 on the 0-255 scale.

Protocol (as in the DnCNN/KAIR evaluation code): clean 8-bit images on [0, 1]; for each sigma, Gaussian noise of std
sigma/255 from NumPy's generator seeded with 0 at the start of the set, added in floating point, not clipped; the
prior's one-step MMSE denoiser ``D(y, sigma/255)`` (no sampling); its output rounded to 8 bits (clipped to [0, 255])
and the PSNR computed on the 8-bit images, then averaged over the set. Published figures are printed beside ours.

Usage:
    INVGEN_DATA=../shared/data python benchmarks/denoise_classic.py --prior diffusion-natural-gray --set bsd68 \
        [--sigmas 15,25,50] [--limit N] [--out docs/natural]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import invgen

# Average PSNR (dB). Gray BSD68: DnCNN paper (Zhang et al. 2017), Table 2. Colour CBSD68 and Kodak24: FFDNet paper
# (Zhang et al. 2018), Table VI (CBM3D and CDnCNN columns).
PUBLISHED = {
    "bsd68": {
        "BM3D": {15: 31.07, 25: 28.57, 50: 25.62},
        "DnCNN-S": {15: 31.73, 25: 29.23, 50: 26.23},
    },
    "cbsd68": {
        "CBM3D": {15: 33.52, 25: 30.71, 50: 27.38},
        "CDnCNN": {15: 33.89, 25: 31.23, 50: 27.92},
    },
    "kodak24": {
        "CBM3D": {15: 34.28, 25: 31.68, 50: 28.46},
        "CDnCNN": {15: 34.48, 25: 32.03, 50: 28.85},
    },
}
SOURCES = {
    "bsd68": "DnCNN paper (Zhang et al. 2017), Table 2",
    "cbsd68": "FFDNet paper (Zhang et al. 2018), Table VI",
    "kodak24": "FFDNet paper (Zhang et al. 2018), Table VI",
}


def psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 arrays of equal shape, peak 255."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` on [0, 1] (values outside are clipped) -> ``(H, W, C)`` uint8, rounded."""
    return np.clip(np.round(x.detach().double().permute(1, 2, 0).cpu().numpy() * 255.0), 0, 255).astype(np.uint8)


@torch.no_grad()
def evaluate(prior, images: list[torch.Tensor], sigmas: list[float], seed: int = 0) -> dict:
    """Average and per-image PSNR of ``prior.denoise`` at each sigma (0-255 scale) over ``images``
    (each ``(C, H, W)`` in [0, 1]), with the noisy input's PSNR and seconds per megapixel.

    Returns:
        ``{sigma: {"psnr": mean, "noisy_psnr": mean, "per_image": [...], "s_per_mp": float}}``.
    """
    out = {}
    for sigma in sigmas:
        rng = np.random.default_rng(seed)
        per, noisy_per, seconds, pixels = [], [], 0.0, 0
        for x in images:
            noise = torch.from_numpy(rng.standard_normal(x.shape)).to(x.dtype) * (sigma / 255.0)
            y = x + noise
            t0 = time.perf_counter()
            den = prior.denoise(y[None], sigma / 255.0)[0]
            seconds += time.perf_counter() - t0
            pixels += x.shape[-1] * x.shape[-2]
            clean = to_uint8(x)
            per.append(psnr_8bit(to_uint8(den), clean))
            noisy_per.append(psnr_8bit(to_uint8(y), clean))
        out[sigma] = {
            "psnr": float(np.mean(per)),
            "noisy_psnr": float(np.mean(noisy_per)),
            "per_image": per,
            "s_per_mp": seconds / (pixels / 1e6),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", help="a registered prior with the denoiser capability")
    p.add_argument("--prior-path", help="or a diffusion weights folder (config.json + model.safetensors)")
    p.add_argument("--set", default="bsd68", help="bsd68, set12, cbsd68 or kodak24")
    p.add_argument("--sigmas", default="15,25,50", help="noise std on the 0-255 scale")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for <prior>-<set>.json and .md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.prior) == bool(args.prior_path):
        p.error("give exactly one of --prior NAME and --prior-path DIR")
    if args.prior_path:
        from invgen_plugins.diffusion.model import DiffusionPrior

        prior = DiffusionPrior.from_pretrained(args.prior_path)
    else:
        prior = invgen.prior(args.prior)
    data = invgen.dataset(args.set)
    images = [data[i] for i in range(len(data) if not args.limit else min(args.limit, len(data)))]
    sigmas = [float(s) for s in args.sigmas.split(",")]
    res = evaluate(prior, images, sigmas)
    published = PUBLISHED.get(args.set, {})
    cols = ["noisy", prior.name, *published]
    lines = [
        f"# Gaussian denoising, {args.set} ({len(images)} images): average PSNR (dB), 8-bit output",
        "",
        "| sigma | " + " | ".join(cols) + " | s / megapixel |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for s in sigmas:
        values = [res[s]["psnr"], *(published[m].get(int(s), float("nan")) for m in published)]
        best = max(v for v in values if v == v)  # the best of the row (ours or published) in bold
        row = [f"{res[s]['noisy_psnr']:.2f}", *(f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in values)]
        lines.append(f"| {s:g} | " + " | ".join(row) + f" | {res[s]['s_per_mp']:.2f} |")
    if published:
        lines += ["", f"Published figures: {SOURCES[args.set]}."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{prior.name}-{args.set}.md").write_text(text + "\n")
        payload = {"prior": prior.name, "set": args.set, "images": len(images), "results": res}
        if args.prior_path:
            cfg = json.loads((Path(args.prior_path) / "config.json").read_text())
            payload["weights"] = {"path": str(args.prior_path), "steps_done": cfg.get("steps_done")}
        (folder / f"{prior.name}-{args.set}.json").write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
