"""Inpainting with box, random (70 % missing) and free-form masks: diffusion posterior samplers beside TV.

Fashion-MNIST (or MNIST, ``--dataset mnist``) images at 32x32 lose a centred 12x12 box, 70 % of their pixels at
random, or free-form brush strokes; the observed pixels carry Gaussian noise of std 0.05. Each problem is solved by

* DDRM and DDNM+ with the matching diffusion prior (``diffusion-fashion-mnist`` / ``diffusion-mnist``): posterior
  samples, their mean and their per-pixel std (large in the holes, small where pixels were observed);
* the total-variation MAP baseline ``tv`` (no prior network).

Ground truths are test images when ``INVGEN_DATA`` is set, else unconditional DDIM samples of the diffusion prior
(fixed seed). LPIPS uses the AlexNet backbone shipped with invgen (no setup).

Run::

    python examples/inpainting.py                       # about 30 s on one CPU thread
    python examples/inpainting.py --dataset mnist
    python examples/inpainting.py --smoke --out /tmp/inpaint

Writes ``inpainting.png`` (per mask and image: truth, y, samples, mean, std of DDRM, then TV; the same for DDNM+) and
``inpainting.json`` to ``--out``, and prints one ``metrics`` line per (mask, method).
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

NAME = "inpainting"
MASKS = {  # label -> inpaint operator options
    "box": {"mask": "box", "box_size": 12},
    "random70": {"mask": "random", "ratio": 0.7},
    "freeform": {"mask": "freeform", "hole_range": (0.3, 0.5)},
}


def ground_truth(dataset: str, prior: object, n: int, seed: int) -> tuple[torch.Tensor, str]:
    """Test images when INVGEN_DATA is set, else unconditional DDIM samples of the prior (fixed seed)."""
    if os.environ.get("INVGEN_DATA"):
        ds = invgen.dataset(dataset, split="test").select(count=n, start=seed * n)
        return torch.stack(list(ds)), f"{dataset} test images {seed * n}..{seed * n + n - 1}"
    dummy = invgen.operator("identity", noise=invgen.noise("gaussian", std=1.0))
    post = invgen.solve(torch.zeros(n, 1, 32, 32), dummy, prior, solver="ddim", steps=50, seed=1000 + seed)
    return post.samples[0].clamp(0, 1), f"DDIM samples of diffusion-{dataset} (seed {1000 + seed}; INVGEN_DATA not set)"


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
    parser.add_argument("--dataset", choices=("fashion-mnist", "mnist"), default="fashion-mnist")
    parser.add_argument("--smoke", action="store_true", help="tiny run (1 image, 2 samples, few steps) for tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_images, n_samples, steps, tv_iters = (1, 2, 10, 100) if args.smoke else (2, 4, 50, 300)
    t0 = time.perf_counter()

    prior = invgen.prior(f"diffusion-{args.dataset}")
    x, source = ground_truth(args.dataset, prior, n_images, args.seed)
    print(f"ground truth: {source}; noise std 0.05 on the observed pixels")
    results: dict[str, dict] = {}
    rows = []
    for mask_name, mask_kw in MASKS.items():
        op = invgen.operator("inpaint", seed=args.seed, noise=invgen.noise("gaussian", std=0.05), **mask_kw)
        y = op.measure(x, generator=torch.Generator().manual_seed(args.seed))
        missing = 1 - float(op.mask.mean())
        runs = {
            "ddrm": (prior, {"steps": steps}, n_samples),
            "ddnm": (prior, {"steps": steps}, n_samples),
            "tv": (None, {"iters": tv_iters}, 1),
        }
        samples_of = {}
        for solver, (p, options, n) in runs.items():
            post = invgen.solve(y, op, p, solver=solver, n_samples=n, seed=args.seed, **options)
            samples_of[solver] = post.samples.clamp(0, 1)
            r = {
                **scores(samples_of[solver], x),
                "missing": missing,
                "nfe": post.nfe,
                "seconds": round(post.seconds, 2),
            }
            results[f"{mask_name}/{solver}"] = r
            pairs = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
            print(f"metrics {mask_name}/{solver}: {pairs}")
        # holes shown mid-grey so that they stand out from the black background
        y_view = torch.where(op.mask.bool().expand_as(y), y, torch.full_like(y, 0.5)).clamp(0, 1)
        for b in range(n_images):
            head = [("truth", x[b]), (f"y ({mask_name})", y_view[b])]
            for solver in ("ddrm", "ddnm"):
                s = samples_of[solver][:, b]
                std = s.std(0) if s.shape[0] > 1 else torch.zeros_like(s[0])
                tiles = head + [(f"{solver} {k + 1}", s[k]) for k in range(s.shape[0])]
                tiles += [
                    (f"{solver} mean", s.mean(0)),
                    (f"std/{float(std.max()):.2f}", std / std.max().clamp_min(1e-8)),
                ]
                if solver == "ddrm":
                    tiles.append(("tv (MAP)", samples_of["tv"][0, b]))
                rows.append(tiles)
    contact_sheets(rows, out / f"{NAME}.png")
    info = {"ground_truth": source, "prior": f"diffusion-{args.dataset}", "n_samples": n_samples, "metrics": results}
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1, default=str))
    print(f"wrote {out / f'{NAME}.png'} and {out / f'{NAME}.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
