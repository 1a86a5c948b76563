"""Super-resolution x4 of MNIST digits: two prior families beside the pseudo-inverse and bicubic baselines.

A 32x32 digit is shrunk to 8x8 by the antialiased bicubic kernel (MATLAB ``imresize``) with Gaussian noise of std
0.05, then restored four ways:

* ``diffusion-mnist`` with DDRM and with PiGDM (posterior samples, their mean and per-pixel std);
* ``vae-mnist`` with latent MAP (CSGM): one Adam run per random start, so the "samples" are local optima;
* the baselines ``pinv`` (the minimum-norm A^+ y) and plain bicubic upsampling of y.

Ground truths are MNIST test images when ``INVGEN_DATA`` is set, else unconditional DDIM samples of
``diffusion-mnist`` (fixed seed). LPIPS uses the AlexNet backbone shipped with invgen (no setup).

Run::

    python examples/super_resolution.py                 # about 30 s on one CPU thread
    python examples/super_resolution.py --smoke --out /tmp/sr

Writes ``super_resolution.png`` (per image: truth, y, samples, mean, std of each method; then the baselines) and
``super_resolution.json`` (the metrics) to ``--out``, and prints one ``metrics`` line per method.
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

NAME = "super_resolution"


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
    n_images, n_samples, steps, map_steps = (2, 2, 20, 60) if args.smoke else (3, 4, 50, 300)
    t0 = time.perf_counter()

    diffusion = invgen.prior("diffusion-mnist")
    x, source = ground_truth(diffusion, n_images, args.seed)
    op = invgen.operator("superres", scale=4, kernel="bicubic", noise=invgen.noise("gaussian", std=0.05))
    y = op.measure(x, generator=torch.Generator().manual_seed(args.seed))  # (B, 1, 8, 8)
    print(f"ground truth: {source}; y: {tuple(y.shape)} (bicubic x4 down, noise std 0.05)")

    runs = {  # label -> (prior, solver, options)
        "ddrm/diffusion-mnist": (diffusion, "ddrm", {"steps": steps}),
        "pigdm/diffusion-mnist": (diffusion, "pigdm", {"steps": steps}),
        "latent_map/vae-mnist": (invgen.prior("vae-mnist"), "latent_map", {"steps": map_steps}),
        "pinv": (None, "pinv", {}),
    }
    results, samples_of = {}, {}
    for label, (prior, solver, options) in runs.items():
        n = n_samples if prior is not None else 1
        post = invgen.solve(y, op, prior, solver=solver, n_samples=n, seed=args.seed, **options)
        samples_of[label] = post.samples.clamp(0, 1)
        results[label] = {**scores(samples_of[label], x), "nfe": post.nfe, "seconds": round(post.seconds, 2)}
    bicubic = torch.nn.functional.interpolate(y, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    samples_of["bicubic"] = bicubic[None]
    results["bicubic"] = {**scores(bicubic[None], x), "nfe": 0, "seconds": 0.0}

    for label, r in results.items():
        print(
            f"metrics {label}: "
            + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        )

    y_view = y.repeat_interleave(4, -2).repeat_interleave(4, -1)  # nearest-upscaled for display
    rows = []
    for b in range(n_images):
        head = [("truth", x[b]), ("y (8x8)", y_view[b].clamp(0, 1))]
        for label in ("ddrm/diffusion-mnist", "pigdm/diffusion-mnist", "latent_map/vae-mnist"):
            s = samples_of[label][:, b]
            std = s.std(0) if s.shape[0] > 1 else torch.zeros_like(s[0])
            short = label.split("/")[0]
            tiles = head + [(f"{short} {k + 1}", s[k]) for k in range(s.shape[0])]
            tiles += [(f"{short} mean", s.mean(0)), (f"std/{float(std.max()):.2f}", std / std.max().clamp_min(1e-8))]
            rows.append(tiles)
        rows.append([*head, ("pinv", samples_of["pinv"][0, b]), ("bicubic", bicubic[b])])
    contact_sheets(rows, out / f"{NAME}.png")
    info = {"ground_truth": source, "operator": op.config(), "n_samples": n_samples, "metrics": results}
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1, default=str))
    print(f"wrote {out / f'{NAME}.png'} and {out / f'{NAME}.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
