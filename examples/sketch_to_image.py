"""Sketch-to-image: MNIST digits from their Canny edge sketches by DPS through the differentiable sketch operator.

The "drawing" is ``invgen.make_sketch(x)``, the binary Canny edges of a 32x32 MNIST test digit. The forward model
is the registered ``sketch`` operator (a soft, differentiable Sobel edge map, Gaussian noise std 0.05), so
diffusion posterior sampling (DPS, ``zeta=0.3`` as in ``invgen demo``) with ``diffusion-mnist`` can push its
samples towards images whose edges match the drawing. Reported per method:

* PSNR / SSIM of the posterior mean to the ground truth, PSNR of the individual samples;
* the symmetric edge F1 between the sketch and each sample's Canny edges (``invgen.metrics.edge_f1``, 1-pixel
  tolerance),
  beside the F1 of unconditional DDIM samples of the same prior (which ignore the sketch): the gap is what
  conditioning on the sketch buys.

Ground truths are MNIST test images when ``INVGEN_DATA`` is set, else unconditional DDIM samples of
``diffusion-mnist`` (fixed seed). LPIPS uses the AlexNet backbone shipped with invgen (no setup).

Run::

    python examples/sketch_to_image.py                  # about 25 s on one CPU thread
    python examples/sketch_to_image.py --smoke --out /tmp/sketch

Writes ``sketch_to_image.png`` (per image: truth, sketch, DPS samples, mean, std, then unconditional samples) and
``sketch_to_image.json`` to ``--out``, and prints one ``metrics`` line per method.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import invgen
from invgen.metrics import edge_f1
from invgen.tasks import contact_sheets

NAME = "sketch_to_image"


def ground_truth(prior: object, n: int, seed: int) -> tuple[torch.Tensor, str]:
    """MNIST test images when INVGEN_DATA is set, else unconditional DDIM samples of the prior (fixed seed)."""
    if os.environ.get("INVGEN_DATA"):
        ds = invgen.dataset("mnist", split="test").select(count=n, start=seed * n)
        return torch.stack(list(ds)), f"MNIST test images {seed * n}..{seed * n + n - 1}"
    dummy = invgen.operator("identity", noise=invgen.noise("gaussian", std=1.0))
    post = invgen.solve(torch.zeros(n, 1, 32, 32), dummy, prior, solver="ddim", steps=50, seed=1000 + seed)
    return post.samples[0].clamp(0, 1), f"DDIM samples of diffusion-mnist (seed {1000 + seed}; INVGEN_DATA not set)"


def scores(samples: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM of the posterior mean, and LPIPS of the samples (backbone shipped with invgen)."""
    mean = samples.mean(0)
    out = {
        "psnr_mean": float(invgen.metrics.psnr(mean, x).mean()),
        "ssim_mean": float(invgen.metrics.ssim(mean, x).mean()),
    }
    if invgen.metrics.lpips_available():  # the backbone shipped with invgen (or INVGEN_LPIPS_WEIGHTS); no download
        flat = samples.reshape(-1, *x.shape[1:])
        out["lpips_samples"] = float(invgen.metrics.lpips(flat, x.repeat(samples.shape[0], 1, 1, 1)).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"examples/out/{NAME}", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="tiny run (1 image, 2 samples, few steps) for tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_images, n_samples, steps = (1, 2, 15) if args.smoke else (3, 4, 50)
    t0 = time.perf_counter()

    prior = invgen.prior("diffusion-mnist")
    x, source = ground_truth(prior, n_images, args.seed)
    sketch = invgen.make_sketch(x)  # (B, 1, 32, 32) in {0, 1}: the user's drawing
    op = invgen.operator("sketch", channels=1, noise=invgen.noise("gaussian", std=0.05))
    print(f"ground truth: {source}; y: Canny sketches, {float(sketch.mean()):.1%} edge pixels")

    runs = {  # label -> (solver, options); DDIM ignores y: the unconditional reference
        "dps/diffusion-mnist": ("dps", {"steps": steps, "zeta": 0.3}),
        "unconditional-ddim/diffusion-mnist": ("ddim", {"steps": steps}),
    }
    results, samples_of = {}, {}
    for label, (solver, options) in runs.items():
        post = invgen.solve(sketch, op, prior, solver=solver, n_samples=n_samples, seed=args.seed, **options)
        s = post.samples.clamp(0, 1)  # (N, B, 1, 32, 32)
        samples_of[label] = s
        flat = s.reshape(-1, *x.shape[1:])
        ref = x.repeat(n_samples, 1, 1, 1)
        f1 = edge_f1(flat, sketch.repeat(n_samples, 1, 1, 1))
        results[label] = {
            **scores(s, x),
            "psnr_samples": float(invgen.metrics.psnr(flat, ref).mean()),
            "edge_f1": float(f1.mean()),
            "edge_f1_min": float(f1.min()),
            "nfe": post.nfe,
            "seconds": round(post.seconds, 2),
        }
    for label, r in results.items():
        pairs = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        print(f"metrics {label}: {pairs}")

    rows = []
    for b in range(n_images):
        s = samples_of["dps/diffusion-mnist"][:, b]
        std = s.std(0) if s.shape[0] > 1 else torch.zeros_like(s[0])
        tiles = [("truth", x[b]), ("sketch (Canny)", sketch[b])]
        tiles += [(f"dps {k + 1}", s[k]) for k in range(s.shape[0])]
        tiles += [("dps mean", s.mean(0)), (f"std/{float(std.max()):.2f}", std / std.max().clamp_min(1e-8))]
        rows.append(tiles)
        u = samples_of["unconditional-ddim/diffusion-mnist"][:, b]
        rows.append(tiles[:2] + [(f"uncond. {k + 1}", u[k]) for k in range(u.shape[0])])
    contact_sheets(rows, out / f"{NAME}.png")
    info = {"ground_truth": source, "operator": op.config(), "n_samples": n_samples, "metrics": results}
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1, default=str))
    print(f"wrote {out / f'{NAME}.png'} and {out / f'{NAME}.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
