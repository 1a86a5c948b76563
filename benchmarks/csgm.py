"""Reproduce compressed sensing with generative models (Bora, Jalal, Price & Dimakis, ICML 2017), MNIST, Figure 1a.

Setup as in the paper's MNIST experiment: Gaussian measurements ``A_ij ~ N(0, 1/m)`` (invgen's ``sensing`` operator,
``A = G / sqrt(m)``), noise ``eta`` with i.i.d. entries ``N(0, 0.1^2 / m)`` (``E||eta||^2 = 0.1^2``; the paper's code
draws ``A`` with unit entries and noise of std 0.1, the same problem scaled by ``sqrt(m)``), and
``m in {10, 25, 50, 100, 200, 300, 400, 500, 750}``. Estimators:

* Lasso in the pixel basis (``1/2 ||A x - y||^2 + 0.1 ||x||_1``, the paper's ``lmbd = 0.1`` in these units), clipped
  to [0, 1] (invgen solver ``lasso``);
* CSGM ``latent_map`` with each generator prior: the paper's objective ``||A G(z) - y||^2 + 0.1 ||z||^2``
  (``lam=0.1``, their "+Reg" weight), Adam with random restarts, keeping the restart of lowest objective.

Error: the paper's "reconstruction error (per pixel)", ``||x - x_hat||^2 / 784`` on the 28x28 digit (invgen's MNIST is
padded to 32x32 with a 2-pixel black border; measurements see the 32x32 image, errors are on the central 28x28),
mean over the test images with a 95 % interval (1.96 standard errors, the paper's error bars).

Usage:
    INVGEN_DATA=../shared/data python benchmarks/csgm.py --images 100 --out docs/csgm-mnist
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import invgen
from invgen.data import load_dataset
from invgen.solvers.lasso import lasso
from invgen.solvers.latent import latent_map

M_VALUES = (10, 25, 50, 100, 200, 300, 400, 500, 750)


def per_pixel_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``||x - x_hat||^2 / 784`` on the central 28x28 of 32x32 images. Shape: two ``(B, 1, 32, 32)`` -> ``(B,)``."""
    d = (x_hat - x)[..., 2:30, 2:30]
    return d.pow(2).flatten(1).sum(1) / 784.0


def summarise(err: torch.Tensor) -> dict[str, float]:
    n = err.numel()
    return {"mean": float(err.mean()), "ci95": float(1.96 * err.std() / math.sqrt(n)) if n > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help="MNIST test images (the first ones)")
    parser.add_argument("--m", default=",".join(map(str, M_VALUES)), help="numbers of measurements")
    parser.add_argument("--priors", default="vae-mnist,gan-mnist")
    parser.add_argument("--restarts", type=int, default=10, help="the paper: 10")
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps per restart (the paper: 1000)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--lam", type=float, default=0.1, help="weight of ||z||^2 (the paper: 0.1)")
    parser.add_argument("--lasso-lam", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-lasso", action="store_true", help="skip Lasso (keep its results from OUT.json)")
    parser.add_argument(
        "--merge", action="store_true", help="keep OUT.json's results of estimators this run does not compute"
    )
    parser.add_argument("--out", default="docs/csgm-mnist", help="writes OUT.json, OUT.md and OUT.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = load_dataset("mnist", "test")[0][: args.images]
    priors = {name: invgen.prior(name) for name in args.priors.split(",") if name}
    ms = [int(v) for v in args.m.split(",")]
    results: dict[str, dict[int, dict[str, float]]] = {} if args.no_lasso else {"lasso": {}}
    results.update({p: {} for p in priors})
    seconds: dict[str, float] = {k: 0.0 for k in results}
    for m in ms:
        std = 0.1 / math.sqrt(m)
        op = invgen.operator("sensing", m=m, seed=args.seed + m, noise=invgen.noise("gaussian", std=std))
        y = op.measure(x, generator=torch.Generator().manual_seed(args.seed + 1000 + m))
        if not args.no_lasso:
            t0 = time.perf_counter()
            est, _ = lasso(None, op, y, n_samples=1, generator=torch.Generator(), lam=args.lasso_lam, iters=3000)
            seconds["lasso"] += time.perf_counter() - t0
            results["lasso"][m] = summarise(per_pixel_error(est[0], x))
        for name, prior in priors.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                est, _ = latent_map(
                    prior,
                    op,
                    y,
                    n_samples=1,
                    generator=torch.Generator().manual_seed(args.seed + m),
                    steps=args.steps,
                    lr=args.lr,
                    restarts=args.restarts,
                    lam=args.lam,
                )
            seconds[name] += time.perf_counter() - t0
            results[name][m] = summarise(per_pixel_error(est[0], x))
        line = "  ".join(f"{k} {v[m]['mean']:.4f}" for k, v in results.items())
        print(f"m={m:4d}  {line}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        for k, r in old["results"].items():
            if k not in results:
                results[k] = {int(m): v for m, v in r.items()}
                seconds[k] = old["seconds"].get(k, float("nan"))
        results = dict(sorted(results.items(), key=lambda kv: kv[0] != "lasso"))
    meta = {
        "setup": "A_ij ~ N(0, 1/m), noise N(0, 0.1^2/m) per measurement, error ||x - x_hat||^2 / 784 (28x28)",
        "images": args.images,
        "restarts": args.restarts,
        "steps": args.steps,
        "lam": args.lam,
        "lasso_lam": args.lasso_lam,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "torch_threads": torch.get_num_threads(),
        "results": {k: {str(m): v for m, v in r.items()} for k, r in results.items()},
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    header = "| m | " + " | ".join(results) + " |\n|---|" + "---|" * len(results) + "\n"
    rows = "".join(
        f"| {m} | " + " | ".join(f"{r[m]['mean']:.4f} ± {r[m]['ci95']:.4f}" for r in results.values()) + " |\n"
        for m in ms
    )
    out.with_suffix(".md").write_text(header + rows)
    _plot(results, ms, out.with_suffix(".png"), args)
    print(header + rows)


def _plot(results: dict, ms: list[int], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, r in results.items():
        label = "Lasso" if name == "lasso" else f"CSGM, {name}"
        mean = [r[m]["mean"] for m in ms]
        ci = [r[m]["ci95"] for m in ms]
        ax.errorbar(ms, mean, yerr=ci, marker="o", ms=4, capsize=3, label=label)
    ax.set_xlabel("number of measurements m")
    ax.set_ylabel("reconstruction error (per pixel)")
    ax.set_title(f"MNIST compressed sensing ({args.images} test images, noise 0.1)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
