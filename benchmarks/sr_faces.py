"""Face super-resolution with the natural-image prior: FFHQ 64 -> 256 (x4, the largest scale with a truth here) and
one 64 -> 1024 (x16) run, the SR3 setting (issue 24).

Part 1: the first ``--images`` FFHQ256_100 faces, downsampled x4 by the antialiased bicubic operator (MATLAB's
``imresize``) with Gaussian noise ``--noise``; the methods are bicubic interpolation of y (PIL), the operator's
pseudo-inverse, and ``diffusion-natural-rgb`` through DDNM+ (``--steps``, N = 1 sample per face, seed 0). PSNR, SSIM
and LPIPS against the 256x256 truths.

Part 2: one face downsampled to 64x64, super-resolved x16 to 1024x1024 by the same prior and solver with the
network run in ``--tile`` tiles (bounded memory), in a fresh process whose seconds and peak resident memory are
reported; ``--out`` gets the gallery sheet (the 64x64 input, nearest-upscaled, beside the 1024x1024 output
shown at 512 px) as ``face64-to-1024-sheet.jpg``.

Usage::

    python benchmarks/sr_faces.py --images 20 --steps 50 --threads 2 --out docs/sr-faces
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bicubic_up(y, scale: int):
    """PIL bicubic upsampling of a (B, C, h, w) batch in [0, 1] (what an image viewer does)."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for img in y.clamp(0, 1):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        big = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.BICUBIC)
        out.append(torch.from_numpy(np.array(big)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def part1(args: argparse.Namespace) -> dict:
    import torch

    import invgen

    ds = invgen.dataset("ffhq256-100")
    x = torch.stack([ds[i] for i in range(args.images)])
    op = invgen.operator("superres", scale=4, kernel="bicubic", noise=invgen.noise("gaussian", std=args.noise))
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    prior = invgen.prior("diffusion-natural-rgb")
    results: dict[str, dict[str, float]] = {}
    methods = {"bicubic": lambda: bicubic_up(y, 4), "pinv": lambda: op.pinv(y).clamp(0, 1)}

    def ddnm():
        outs = []
        for i in range(len(y)):  # one face at a time: memory of a 256x256 batch stays small
            post = invgen.solve(y[i : i + 1], op, prior, solver="ddnm", steps=args.steps, seed=0, progress=False)
            outs.append(post.samples[0])
        return torch.cat(outs).clamp(0, 1)

    methods[f"ddnm-{args.steps}"] = ddnm
    for name, fn in methods.items():
        t0 = time.perf_counter()
        est = fn()
        sec = (time.perf_counter() - t0) / len(x)
        results[name] = {
            "psnr": float(invgen.metrics.psnr(est, x).mean()),
            "ssim": float(invgen.metrics.ssim(est, x).mean()),
            "lpips": float(invgen.metrics.lpips(est, x).mean()),
            "seconds_per_image": sec,
        }
        print(name, results[name], flush=True)
    return results


def part2(args: argparse.Namespace) -> dict:
    """The x16 run, in this (fresh) process: seconds and peak RSS."""
    import torch

    import invgen
    from invgen.tasks import save_png

    x = invgen.dataset("ffhq256-100")[args.face][None]
    down = invgen.operator("superres", scale=4, kernel="bicubic")
    y64 = down(x).clamp(0, 1)  # the 64x64 input a user has
    op = invgen.operator("superres", scale=16, kernel="bicubic", noise=invgen.noise("gaussian", std=args.noise))
    prior = invgen.prior("diffusion-natural-rgb")
    prior.tile = args.tile
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    post = invgen.solve(y64, op, prior, solver="ddnm", steps=args.steps, seed=0, progress=False)
    sec = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the gallery sheet: input (nearest x16) | output, shown at 512 px
        from PIL import Image

        save_png(post.samples[0, 0].clamp(0, 1), Path(tmp) / "out.png")
        save_png(torch.nn.functional.interpolate(y64, scale_factor=8, mode="nearest")[0], Path(tmp) / "in.png")
        sheet = Image.new("RGB", (1024, 512), (255, 255, 255))
        sheet.paste(Image.open(Path(tmp) / "in.png").convert("RGB"), (0, 0))
        sheet.paste(Image.open(Path(tmp) / "out.png").convert("RGB").resize((512, 512), Image.LANCZOS), (512, 0))
        sheet.save(out / "face64-to-1024-sheet.jpg", quality=85)
    return {
        "seconds": sec,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_solve_mib": base,
        "output_shape": list(post.samples.shape[-3:]),
        "tile": args.tile,
        "steps": args.steps,
        "face": args.face,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--face", type=int, default=0)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/sr-faces")
    ap.add_argument("--part", choices=("all", "1", "2"), default="all")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.part == "2":
        print(json.dumps(part2(args)))
        return
    results: dict = {"images": args.images, "steps": args.steps, "noise": args.noise, "threads": args.threads}
    results["x4"] = part1(args)
    cmd = [sys.executable, __file__, *sys.argv[1:], "--part", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    results["x16"] = json.loads(done.stdout.strip().splitlines()[-1])
    print("x16", results["x16"], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
