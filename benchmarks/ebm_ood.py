"""Is the energy meaningful? AUROC of ``-E`` (in-distribution test images vs another dataset and vs noise), and a
grid of unconditional annealed-Langevin samples of an EBM prior.

``-E(x, sigma)`` is read at several noise levels of the noise-conditional energy; ``sigma_min`` (0.005) is the level
``log_prob`` uses. Sets: the first ``--n`` test images of the prior's dataset (positive), of the other dataset,
uniform noise U[0, 1] and Gaussian noise N(0.5, 0.25^2) clipped to [0, 1], both rounded to 8 bits (negatives).
Besides the raw ``-E``, the complexity-corrected score ``-E / ln 2 + L(x)`` of Serrà et al. (2020), ``L`` the PNG
code length in bits, which removes the preference of likelihood models for simple images.

Usage:
    INVGEN_DATA=../shared/data python benchmarks/ebm_ood.py --prior ebm-mnist --dataset mnist --other fashion-mnist \
        --n 2000 --out docs/ebm --grid docs/ebm/ebm-mnist-samples.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import invgen
from invgen.data import load_dataset
from invgen_plugins.ebm.evaluate import auroc, complexity_corrected, energies, png_bits

SIGMAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, help="a registered EBM prior, or a weights folder")
    p.add_argument("--dataset", required=True)
    p.add_argument("--other", required=True, help="the other dataset (out of distribution)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/ebm")
    p.add_argument("--grid", default=None, help="PNG path of a 8x8 grid of annealed-Langevin samples")
    p.add_argument("--grid-levels", type=int, default=30)
    p.add_argument("--grid-steps", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if Path(args.prior).is_dir():
        from invgen_plugins.ebm.model import EnergyPrior

        prior = EnergyPrior.from_pretrained(args.prior)
    else:
        prior = invgen.prior(args.prior)
    c, h, w = prior.image_shape
    g = torch.Generator().manual_seed(args.seed)
    sets = {
        args.dataset: load_dataset(args.dataset, "test")[0][: args.n],
        args.other: load_dataset(args.other, "test")[0][: args.n],
        "uniform noise": torch.rand(args.n, c, h, w, generator=g),
        "gaussian noise": (0.5 + 0.25 * torch.randn(args.n, c, h, w, generator=g)).clamp(0, 1),
    }
    sets = {k: (v * 255).round() / 255 for k, v in sets.items()}  # 8-bit images, like the datasets
    bits = {k: png_bits(v) for k, v in sets.items()}
    t0 = time.time()
    rows, mean_energy = [], {}
    for s in SIGMAS:
        e = {name: energies(prior, x, s) for name, x in sets.items()}
        mean_energy[s] = {name: float(v.mean()) for name, v in e.items()}
        row = {"sigma": s}
        pos = complexity_corrected(e[args.dataset], bits[args.dataset])
        for name in list(sets)[1:]:
            row[name] = auroc(-e[args.dataset], -e[name])
            row[f"{name} (corrected)"] = auroc(pos, complexity_corrected(e[name], bits[name]))
        rows.append(row)
        print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    seconds = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = prior.name
    negs = [k for k in rows[0] if k != "sigma"]
    lines = [
        f"# {name}: AUROC of -E(x, sigma), {args.dataset} test (first {args.n}) against each set",
        "",
        "(corrected): the score -E / ln 2 + L(x), L the PNG code length in bits (Serra et al. 2020). Mean PNG bits: "
        + ", ".join(f"{k} {float(v.mean()):.0f}" for k, v in bits.items())
        + ".",
        "",
        "| sigma | " + " | ".join(negs) + " |",
        "|---|" + "---|" * len(negs),
    ]
    lines += [f"| {r['sigma']:g} | " + " | ".join(f"{r[k]:.4f}" for k in negs) + " |" for r in rows]
    lines += ["", f"{seconds:.0f} s for {len(SIGMAS)} levels x {len(sets)} sets of {args.n} images, 1 thread."]
    (out / f"{name}-ood.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}-ood.json").write_text(
        json.dumps(
            {
                "prior": name,
                "n": args.n,
                "rows": rows,
                "mean_energy": mean_energy,
                "mean_png_bits": {k: float(v.mean()) for k, v in bits.items()},
            },
            indent=1,
        )
    )
    print("\n".join(lines))
    if args.grid:
        from invgen.tasks import image_grid, save_png

        t1 = time.time()
        x = prior.sample(
            64, torch.Generator().manual_seed(args.seed), n_levels=args.grid_levels, steps_per_level=args.grid_steps
        )
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        save_png(image_grid(x, cols=8), args.grid)
        print(f"grid: {args.grid} ({time.time() - t1:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
