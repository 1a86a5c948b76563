"""Unconditional sample grid of a diffusion prior (DDPM or DDIM through ``invgen.solve`` with a dummy observation).

Usage:
    python benchmarks/sample_grid.py --prior diffusion-fashion-mnist --solver ddpm --steps 100 --out docs/X.png
    python benchmarks/sample_grid.py --prior-dir DIR ...   (a folder written by ``invgen train diffusion``)
"""

from __future__ import annotations

import argparse
import time

import torch

import invgen
from invgen.tasks import image_grid, save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior")
    parser.add_argument("--prior-dir")
    parser.add_argument("--solver", default="ddpm", choices=("ddpm", "ddim"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--n", type=int, default=64, help="samples (a square number makes a square grid)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.prior_dir:
        from invgen_plugins.diffusion.model import DiffusionPrior

        prior = DiffusionPrior.from_pretrained(args.prior_dir, name=args.prior or "prior")
    else:
        prior = invgen.prior(args.prior)
    c, h, w = prior.image_shape
    op = invgen.operator("identity", noise={"name": "gaussian", "std": 1.0})
    t0 = time.perf_counter()
    post = invgen.solve(torch.zeros(args.n, c, h, w), op, prior, solver=args.solver, steps=args.steps, seed=args.seed)
    x = post.samples[0].clamp(0, 1)
    save_png(image_grid(x, round(args.n**0.5)), args.out)
    print(f"{args.n} {args.solver} samples ({args.steps} steps, seed {args.seed}) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
