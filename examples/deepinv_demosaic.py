"""Demosaicing with deepinv's physics and an invgen prior, both ways round (``invgen.interop.deepinv``).

invgen has no demosaicing operator; deepinv has one. A Bayer mosaic of CIFAR-10 test images (one colour per pixel,
Gaussian noise std 0.02 on the kept values) is made by ``deepinv.physics.Demosaicing``, and solved with the shipped
``diffusion-cifar10`` prior:

* the physics wrapped by ``operator_from_physics`` (an invgen operator, with deepinv's SVD: Demosaicing is an
  inpainting of the colour channels) and solved by invgen's DDRM and DDNM+;
* the prior handed to deepinv by ``to_deepinv_denoiser`` and run in deepinv's own DiffPIR;
* the pseudo-inverse baseline ``A^+ y`` (the mosaic itself: missing colours are zero).

Ground truths are the CIFAR-10 test images shipped with invgen (``invgen.data.sample_images``; no data needed).

Run::

    python examples/deepinv_demosaic.py            # about 20 s on one CPU thread (4 images, 4 samples each)
    python examples/deepinv_demosaic.py --smoke --out /tmp/demosaic   # 1 image, 2 samples, a few seconds

Needs deepinv (``pip install "invgen[deepinv]"``); without it, or without the prior, the script says what is
missing and exits 0. Writes ``deepinv_demosaic.png`` (per image: truth, mosaic, samples, mean and std of each
method) and ``deepinv_demosaic.json`` to ``--out``, and prints one ``metrics`` line per method.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import torch

import invgen
from invgen.tasks import contact_sheets

NAME = "deepinv_demosaic"
PRIOR = "diffusion-cifar10"
NOISE_STD = 0.02


def scores(samples: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM of the posterior mean and of the single samples, ``samples`` ``(N, B, C, H, W)`` in [0, 1]."""
    n = samples.shape[0]
    flat, ref = samples.reshape(-1, *x.shape[1:]), x.repeat(n, 1, 1, 1)
    return {
        "psnr_mean": float(invgen.metrics.psnr(samples.mean(0), x).mean()),
        "ssim_mean": float(invgen.metrics.ssim(samples.mean(0), x).mean()),
        "psnr_samples": float(invgen.metrics.psnr(flat, ref).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"examples/out/{NAME}", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="tiny run (1 image, 2 samples, few steps) for tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if importlib.util.find_spec("deepinv") is None:
        print(f'{NAME} skipped: it needs deepinv, which is not installed (pip install "invgen[deepinv]")')
        return 0
    if PRIOR not in invgen.list_priors():
        print(f"{NAME} skipped: the prior {PRIOR!r} is not registered in this build")
        return 0
    import deepinv

    from invgen.data import sample_images
    from invgen.interop.deepinv import operator_from_physics, to_deepinv_denoiser

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_images, n_samples, steps, diffpir_steps = (1, 2, 20, 20) if args.smoke else (4, 4, 50, 100)
    x = sample_images("cifar10")[:n_images]  # (B, 3, 32, 32) CIFAR-10 test images in [0, 1]
    prior = invgen.prior(PRIOR)

    # deepinv's physics, measured by deepinv (noise only on the kept values, as deepinv's Inpainting does)
    physics = deepinv.physics.Demosaicing(
        img_size=tuple(x.shape[1:]),
        noise_model=deepinv.physics.GaussianNoise(sigma=NOISE_STD, rng=torch.Generator().manual_seed(args.seed)),
    )
    y = physics(x)
    op = operator_from_physics(physics)  # an invgen operator: GaussianNoise(0.02), SVD from deepinv's
    print(
        f"ground truth: CIFAR-10 test images 0..{n_images - 1} (shipped); {op.name}: has_svd={op.has_svd}, "
        f"noise {op.noise.config()}"
    )

    results: dict[str, dict] = {}
    samples_of: dict[str, torch.Tensor] = {}

    def record(label: str, samples: torch.Tensor, nfe: int, seconds: float) -> None:
        samples_of[label] = samples.clamp(0, 1)
        results[label] = {**scores(samples_of[label], x), "nfe": nfe, "seconds": round(seconds, 2)}
        pairs = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in results[label].items())
        print(f"metrics {label}: {pairs}")

    for solver in ("ddrm", "ddnm"):  # invgen's solvers on the wrapped deepinv physics
        post = invgen.solve(y, op, prior, solver=solver, n_samples=n_samples, seed=args.seed, steps=steps)
        record(f"{solver}/{PRIOR}", post.samples, post.nfe, post.seconds)

    # the invgen prior inside deepinv's DiffPIR: N samples per image as one batch of N * B
    model = deepinv.sampling.DiffPIR(
        model=to_deepinv_denoiser(prior).eval(),
        data_fidelity=deepinv.optim.data_fidelity.L2(),
        max_iter=diffpir_steps,
        sigma=NOISE_STD,
    )
    torch.manual_seed(args.seed)
    t1 = time.perf_counter()
    with torch.no_grad():
        xs = model(y.repeat(n_samples, 1, 1, 1), physics)
    record(f"diffpir-deepinv/{PRIOR}", xs.reshape(n_samples, *x.shape), diffpir_steps, time.perf_counter() - t1)

    t1 = time.perf_counter()
    record("pinv", op.pinv(y)[None], 0, time.perf_counter() - t1)  # A^+ y: the mosaic, missing colours zero

    rows = []
    for b in range(n_images):
        for method in ("ddrm", "ddnm", "diffpir-deepinv"):
            s, label = samples_of[f"{method}/{PRIOR}"][:, b], method.split("-")[0]
            std = s.std(0) if s.shape[0] > 1 else torch.zeros_like(s[0])
            tiles = [("truth", x[b]), ("mosaic y", y[b].clamp(0, 1))]
            tiles += [(f"{label} {k + 1}", s[k]) for k in range(s.shape[0])]
            tiles += [(f"{label} mean", s.mean(0)), (f"std/{float(std.max()):.2f}", std / std.max().clamp_min(1e-8))]
            rows.append(tiles)
    contact_sheets(rows, out / f"{NAME}.png")
    info = {
        "ground_truth": f"CIFAR-10 test images 0..{n_images - 1} (invgen.data.sample_images)",
        "physics": f"deepinv.physics.Demosaicing(bayer), GaussianNoise({NOISE_STD})",
        "prior": PRIOR,
        "n_samples": n_samples,
        "steps": {"ddrm": steps, "ddnm": steps, "diffpir-deepinv": diffpir_steps},
        "metrics": results,
    }
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1))
    print(f"wrote {out / f'{NAME}.png'} and {out / f'{NAME}.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
