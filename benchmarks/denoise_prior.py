"""Evidence a learned prior is good: denoising PSNR of its denoiser D(x, sigma) on the test split, beside the
Wiener filter of a Gaussian prior fitted to the same training data (the exact MMSE denoiser of that Gaussian).

Usage:
    INVGEN_DATA=../shared/data python benchmarks/denoise_prior.py --prior-dir DIR --dataset mnist [--n 500]

``--prior-dir`` is a folder with ``config.json`` and ``model.safetensors`` (as written by ``invgen train diffusion``)
or omit it and give ``--prior NAME`` for a registered prior.
"""

from __future__ import annotations

import argparse
import time

import torch

import invgen
from invgen.data import load_dataset
from invgen.metrics import psnr
from invgen_plugins.analytic.gaussian import Gaussian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior-dir")
    parser.add_argument("--prior")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--n", type=int, default=500, help="test images")
    parser.add_argument("--sigmas", default="0.1,0.2,0.5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.prior_dir:
        from invgen_plugins.diffusion.model import DiffusionPrior

        prior = DiffusionPrior.from_pretrained(args.prior_dir)
    else:
        prior = invgen.prior(args.prior)
    train, _ = load_dataset(args.dataset, "train")
    test, _ = load_dataset(args.dataset, "test")
    x = test[: args.n]
    wiener = Gaussian.fit(train[:20000], shrinkage=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    print("| sigma | learned prior PSNR (dB) | Wiener (Gaussian fit) PSNR (dB) | noisy PSNR (dB) | s/image |")
    print("|---|---|---|---|---|")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        noisy = x + sigma * torch.randn(x.shape, generator=gen)
        t0 = time.perf_counter()
        with torch.no_grad():
            den = torch.cat([prior.denoise(noisy[i : i + 100], sigma) for i in range(0, len(x), 100)])
        sec = (time.perf_counter() - t0) / len(x)
        wien = wiener.denoise(noisy.double(), sigma).float()
        p = psnr(den.clamp(0, 1), x).mean()
        pw = psnr(wien.clamp(0, 1), x).mean()
        pn = psnr(noisy.clamp(0, 1), x).mean()
        print(f"| {sigma} | {p:.2f} | {pw:.2f} | {pn:.2f} | {sec:.4f} |")


if __name__ == "__main__":
    main()
