"""Sample grids and one sample-quality figure for every prior family: FD-<dataset>-CNN of N unconditional samples.

Each prior is sampled the way its family is: ``prior.sample(n)`` for generators (VAE: the decoder mean; GAN: G(z);
flow: the exact inverse at temperature 1, clamped), DDIM (``--ddim-steps``, eta 0) for priors with only a denoiser.
Every set is scored against the whole test split with the same shipped classifier, at the same N, beside N random
training images (the floor at that N: real images scored the same way).

Usage:
    INVGEN_DATA=../shared/data python benchmarks/family_samples.py --dataset mnist \
        --priors vae-mnist,gan-mnist,flow-mnist,diffusion-mnist --n 2000 --grid-dir docs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import invgen
from invgen.data import load_dataset
from invgen.metrics.frechet import feature_statistics, frechet_distance_from_statistics


def draw(prior, n: int, seed: int, ddim_steps: int, temperature: float = 1.0, batch: int = 500) -> torch.Tensor:
    """``n`` samples in [0, 1], ``(n, C, H, W)``, reproducible from ``seed`` (``temperature`` for priors whose
    ``sample`` takes one, the flows)."""
    import inspect

    gen = torch.Generator().manual_seed(seed)
    kw = {"temperature": temperature} if "temperature" in inspect.signature(prior.sample).parameters else {}
    out = []
    for i in range(0, n, batch):
        k = min(batch, n - i)
        with torch.no_grad():
            if hasattr(prior, "sample") and "generator" in prior.capabilities:
                out.append(prior.sample(k, generator=gen, **kw).clamp(0, 1))
            else:
                c, h, w = prior.image_shape
                dummy = invgen.operator("identity", noise={"name": "gaussian", "std": 1.0})
                y = torch.zeros(1, c, h, w)
                post = invgen.solve(y, dummy, prior, solver="ddim", n_samples=k, steps=ddim_steps, seed=seed + i)
                out.append(post.samples[:, 0].clamp(0, 1))
    return torch.cat(out)


def save_grid(x: torch.Tensor, path: Path, cols: int = 8) -> None:
    from invgen.tasks import image_grid, save_png

    save_png(image_grid(x, cols), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "cifar10"))
    parser.add_argument("--priors", required=True, help="comma-separated registered priors")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=1.0, help="for priors that take one (flows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid-dir", default=None, help="write <prior>-samples.png (64 samples) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = load_dataset(args.dataset, "test")[0]
    train = load_dataset(args.dataset, "train")[0]
    ref = feature_statistics(test, args.dataset)
    gen = torch.Generator().manual_seed(args.seed)
    floor = train[torch.randperm(train.shape[0], generator=gen)[: args.n]]
    rows = [(f"{args.n} random training images (the floor at this N)", float("nan"), floor)]
    for name in args.priors.split(","):
        prior = invgen.prior(name)
        t0 = time.perf_counter()
        x = draw(prior, args.n, args.seed, args.ddim_steps, args.temperature)
        label = name if args.temperature == 1.0 else f"{name} (T = {args.temperature:g} where it applies)"
        rows.append((label, time.perf_counter() - t0, x))
        if args.grid_dir:
            Path(args.grid_dir).mkdir(parents=True, exist_ok=True)
            suffix = "" if args.temperature == 1.0 else f"-T{args.temperature:g}"
            save_grid(x[:64], Path(args.grid_dir) / f"{name}-samples{suffix}.png")
    print(f"| samples (N = {args.n}) | FD-{args.dataset}-CNN vs test (10000) | seconds to sample |")
    print("|---|---|---|")
    for label, sec, x in rows:
        fd = frechet_distance_from_statistics(*feature_statistics(x, args.dataset), *ref)
        print(f"| {label} | {fd:.3f} | {'' if sec != sec else f'{sec:.1f}'} |", flush=True)


if __name__ == "__main__":
    main()
