"""Calibrate tau of the exemplar operator (invgen/operators/exemplar.py): tau^2 = E||phi(a) - phi(b)||^2 / (2 D)
over pairs of random square crops (side 12..32, random positions) of random CIFAR-10 training images.

    python benchmarks/exemplar_calibrate.py [--pairs 2000] [--seed 0] [--images 5000]

Prints the result as JSON; the constant TAU in invgen/operators/exemplar.py is its "tau" rounded to 3 digits.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=5000, help="the first N training images of a seeded permutation")
    args = p.parse_args(argv)

    import invgen
    from invgen.operators.exemplar import EMBED_DIM, calibrate

    t0 = time.perf_counter()
    ds = invgen.dataset("cifar10", split="train")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[: args.images]
    images = torch.stack([ds[int(i)] for i in order])
    result = calibrate(images, pairs=args.pairs, seed=args.seed)
    result.update(images=int(images.shape[0]), embed_dim=EMBED_DIM, seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
