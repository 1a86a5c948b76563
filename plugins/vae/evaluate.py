"""Evaluate a trained VAE: test ELBO and IWAE bound in nats and bits/dim, and a grid of samples.

``python -m invgen_plugins.vae.evaluate --weights DIR --dataset mnist --iwae-k 100 --iwae-images 2000 --png FILE``

bits/dim is ``-bound / (C H W ln 2)``: the decoder is a discretised logistic, a probability mass on the 256 levels of
8-bit images, so no dequantisation term enters (``D`` counts the 2-pixel zero border of the 32x32 MNIST images).
``--update-config`` stores the numbers in ``DIR/config.json`` under ``evaluation``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def evaluate(
    prior, images: torch.Tensor, iwae_k: int, iwae_images: int, seed: int = 0, batch: int = 500
) -> dict[str, float]:
    """Mean ELBO over ``images`` and mean ``IWAE_K`` over the first ``iwae_images``, in nats and bits/dim."""
    dims = images[0].numel()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    with torch.no_grad():
        elbo = torch.cat([prior.elbo(images[i : i + batch], generator=gen) for i in range(0, len(images), batch)])
        t1 = time.time()
        sub = images[:iwae_images]
        step = max(1, batch // 10)
        iw = torch.cat([prior.iwae(sub[i : i + step], iwae_k, generator=gen) for i in range(0, len(sub), step)])
    bpd = 1.0 / (dims * math.log(2))
    return {
        "elbo_nats": round(float(elbo.mean()), 3),
        "elbo_bits_per_dim": round(-float(elbo.mean()) * bpd, 5),
        "elbo_images": len(images),
        "elbo_nats_on_iwae_images": round(float(elbo[: len(sub)].mean()), 3),
        "iwae_k": iwae_k,
        "iwae_nats": round(float(iw.mean()), 3),
        "iwae_bits_per_dim": round(-float(iw.mean()) * bpd, 5),
        "iwae_images": len(sub),
        "seconds": round(time.time() - t0, 1),
        "iwae_seconds": round(time.time() - t1, 1),
    }


def sample_grid(prior, path: Path, n: int = 8, seed: int = 0, zoom: int = 2) -> None:
    """Save an ``n x n`` grid of decoder means at ``z ~ N(0, I)`` as a PNG."""
    from PIL import Image

    with torch.no_grad():
        x = prior.sample(n * n, generator=torch.Generator().manual_seed(seed))
    c, s, _ = x.shape[1:]
    pad = 2
    grid = torch.ones(c, n * (s + pad) + pad, n * (s + pad) + pad)
    for i in range(n * n):
        r, q = divmod(i, n)
        grid[:, pad + r * (s + pad) : pad + r * (s + pad) + s, pad + q * (s + pad) : pad + q * (s + pad) + s] = x[i]
    arr = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if c == 1 else arr).resize(
        (arr.shape[1] * zoom, arr.shape[0] * zoom), Image.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    from invgen.data import load_dataset
    from invgen_plugins.vae.model import VAEPrior

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="folder with config.json + model.safetensors")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--iwae-images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--png", default=None, help="write a sample grid here")
    parser.add_argument("--update-config", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prior = VAEPrior.from_pretrained(args.weights)
    x = load_dataset(args.dataset, "test")[0]
    x = torch.round(x * 255) / 255
    if args.test_images:
        x = x[: args.test_images]
    result = evaluate(prior, x, args.iwae_k, args.iwae_images, seed=args.seed)
    result["split"] = "test"
    print(json.dumps(result, indent=1))
    if args.png:
        sample_grid(prior, Path(args.png), seed=args.seed)
    if args.update_config:
        path = Path(args.weights) / "config.json"
        cfg = json.loads(path.read_text())
        cfg["evaluation"] = dict(result, command="python -m invgen_plugins.vae.evaluate " + " ".join(argv or []))
        path.write_text(json.dumps(cfg, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
