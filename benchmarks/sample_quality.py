"""Reference figures of FD-<dataset>-CNN (:mod:`invgen.metrics.frechet`): what a good and a bad sample set score.

Rows, each against the whole test split (10000 images) unless stated: two random disjoint halves of the test split
(the floor at 5000 vs 5000; also the two halves in file order, which differ for MNIST, whose test file holds two
writer populations one after the other, and for CIFAR-10, whose files are ordered by class), ``N`` random training
images (the floor for N samples: real images, the estimate's bias at N), the whole training split, test images
blurred (Gaussian, std 1 px) and with Gaussian noise 0.1 (clamped to [0, 1]), samples of the Gaussian (Wiener)
prior fitted to random training images, and optionally samples of a registered prior drawn with an unconditional
solver (``--prior diffusion-mnist --solver ddim --steps 50``) or saved samples (``--samples FILE``).

Usage:
    INVGEN_DATA=../shared/data python benchmarks/sample_quality.py --dataset mnist [--prior diffusion-mnist --n 1000]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import invgen
from invgen.data import load_dataset
from invgen.metrics.classifier import classifier_config
from invgen.metrics.frechet import feature_statistics, frechet_distance_from_statistics
from invgen_plugins.analytic.gaussian import Gaussian


def gaussian_blur(x: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (radius ``ceil(3 std)``, reflect padding), per channel."""
    r = max(1, int(3 * std + 0.999))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / std) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def prior_samples(name: str, solver: str, steps: int, n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``n`` unconditional samples of a registered prior (``y`` of the identity operator only gives the shape)."""
    prior = invgen.prior(name)
    op = invgen.operator("identity")
    y = torch.zeros(1, *shape)
    out = []
    with torch.no_grad():
        for i, start in enumerate(range(0, n, 250)):
            m = min(250, n - start)
            post = invgen.solve(y, op, prior, solver=solver, n_samples=m, seed=seed + i, steps=steps)
            out.append(post.samples[:, 0])
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "cifar10"))
    parser.add_argument("--n", type=int, default=1000, help="samples of the learned prior (and the floor row's N)")
    parser.add_argument("--gaussian-n", type=int, default=5000, help="samples of the Gaussian prior")
    parser.add_argument("--fit-n", type=int, default=10000, help="training images the Gaussian prior is fitted to")
    parser.add_argument("--prior", default=None, help="a registered prior to sample, e.g. diffusion-mnist")
    parser.add_argument("--solver", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--samples", default=None, help="a safetensors file of saved samples (key 'samples')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = args.dataset
    cfg = classifier_config(ds)
    print(f"FD-{ds}-CNN (classifier test accuracy {cfg['test_accuracy']:.4f}); reference: the {ds} test split")
    train, _ = load_dataset(ds, "train")
    test, _ = load_dataset(ds, "test")
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    ref = feature_statistics(test, ds)

    def fd(x: torch.Tensor) -> float:
        return frechet_distance_from_statistics(*feature_statistics(x, ds), *ref)

    rows: list[tuple[str, int | None, float, float]] = []

    def row(label: str, make, n: int | None = None) -> None:
        t = time.perf_counter()
        x = make()
        value = fd(x) if isinstance(x, torch.Tensor) else x
        n = x.shape[0] if isinstance(x, torch.Tensor) else n
        rows.append((label, n, value, time.perf_counter() - t))
        print(f"| {label} | {n} | {value:.3f} | {time.perf_counter() - t:.1f} |", flush=True)

    print("| set | N | FD vs test | seconds |\n|---|---|---|---|")
    half = test.shape[0] // 2
    perm = torch.randperm(test.shape[0], generator=gen)

    def halves(first: torch.Tensor, second: torch.Tensor) -> float:
        return frechet_distance_from_statistics(*feature_statistics(first, ds), *feature_statistics(second, ds))

    row("random half of test vs the other half (floor)", lambda: halves(test[perm[:half]], test[perm[half:]]), half)
    row("test[:5000] vs test[5000:] (file order)", lambda: halves(test[:half], test[half:]), half)
    shuffled = train[torch.randperm(train.shape[0], generator=gen)]  # CIFAR-10's files are ordered by class
    row(f"{args.n} random training images", lambda: shuffled[: args.n])
    row("5000 random training images", lambda: shuffled[:5000])
    row("training split (all)", lambda: train)
    row("test, Gaussian blur std 1", lambda: gaussian_blur(test, 1.0).clamp(0, 1))
    row("test + noise 0.1 (clamped)", lambda: (test + 0.1 * torch.randn(test.shape, generator=gen)).clamp(0, 1))
    row(
        f"Gaussian prior fitted to {args.fit_n} random training images (clamped)",
        lambda: Gaussian.fit(shuffled[: args.fit_n]).sample(args.gaussian_n, generator=gen).clamp(0, 1),
    )
    if args.prior:
        label = f"{args.prior}, {args.solver} {args.steps} steps (clamped)"
        row(label, lambda: prior_samples(args.prior, args.solver, args.steps, args.n, test.shape[1:], args.seed))
    if args.samples:
        from safetensors.torch import load_file

        row(f"samples from {args.samples} (clamped)", lambda: load_file(args.samples)["samples"].clamp(0, 1))
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
