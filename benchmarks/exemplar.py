"""Exemplar-guided inpainting on CIFAR-10 (issue 28, route 1): the ``exemplar`` operator (a joint observation of the
seen pixels and of the exemplar's embedding, invgen/operators/exemplar.py) sampled with DPS and DAPS, against plain
inpainting and copy-paste baselines.

Protocol: ``--pairs`` pairs (source, exemplar) of CIFAR-10 test images, the exemplar of another class than the
source, drawn with a generator seeded by ``--seed``. The centred 20x20 box of the source is hidden; the seen pixels
carry Gaussian noise of std ``--noise`` (0.01), drawn once per pair (seed ``seed * 100003 + k``); every method sees
the same observation. Methods:

* ``plain_dps``: inpainting with DPS (``--steps``), the exemplar ignored;
* ``plain_default``: inpainting with the solver ``invgen.solve`` picks for inpainting (ddnm at 50 steps);
* ``paste``: the exemplar's centre 20x20 copied into the box, the seen pixels kept;
* ``paste_feather``: the same, alpha-blended over a band of ``--feather`` pixels on each side of the box border;
* ``exemplar_dps``: route 1 with DPS (``--steps``);
* ``exemplar_daps``: route 1 with DAPS (``--steps`` annealing levels, ``--daps-ode`` ODE steps, ``--daps-langevin``
  Langevin steps per level).

Route 1 runs once per value of ``--tau-scale`` (a comma list, default ``1,0.25``: the calibrated tau and a 4x
stronger pull); a scale other than 1 is named in the method, ``exemplar_dps_tau0.25``.

Metrics (each on sample 0 of a pair, then averaged over the pairs; the box region is resized to 32x32, bilinear):

* ``exemplar_cos``: cosine of the shipped CIFAR-10 classifier's 128 features between the box region and the exemplar;
* ``exemplar_class``: how often the classifier gives the box region the exemplar's class;
* ``fd``: FD-cifar10-CNN of the edited images against the CIFAR-10 test split (invgen.metrics.frechet; few pairs
  make it noisy);
* ``seam``: the mean absolute difference of the pixel pairs that straddle the box border, over the mean of that of
  the pairs inside the box and of the pairs in a 3-pixel ring outside it (1: no seam; the sources' own value is in the
  ``source`` row);
* ``psnr_outside``: PSNR against the source on the seen pixels;
* ``copy_ncc``: the largest normalised cross-correlation of the box content with any 20x20 window of the exemplar
  (1: a copy);
* ``diversity``: the mean pairwise LPIPS of 4 samples, on the first ``--diversity-pairs`` pairs (stochastic methods);
* ``seconds``: solver seconds per sample.

Writes ``exemplar.json`` (configuration, per-pair values, summary) and ``exemplar.md`` (the table) into ``--out``.

Usage:
    INVGEN_DATA=../shared/data python benchmarks/exemplar.py [--pairs 200] [--steps 250] [--tau-scale 1,0.25]
        [--methods plain_dps,plain_default,paste,paste_feather,exemplar_dps,exemplar_daps] [--device cuda]
        [--out docs/exemplar-bench]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("plain_dps", "plain_default", "paste", "paste_feather", "exemplar_dps", "exemplar_daps")
STOCHASTIC = {"plain_dps", "plain_default", "exemplar_dps", "exemplar_daps"}
SIZE, BOX = 32, 20
METRICS = ("exemplar_cos", "exemplar_class", "fd", "seam", "psnr_outside", "copy_ncc", "diversity", "seconds")


def pick_pairs(ds: Any, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (source, exemplar) test indices, the exemplar of another class, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    labels = [ds.label(i) for i in range(len(ds))]
    pairs = []
    while len(pairs) < n:
        s, e = (int(v) for v in torch.randint(0, len(ds), (2,), generator=g))
        if labels[s] != labels[e]:
            pairs.append((s, e))
    return pairs


# -- metrics ----------------------------------------------------------------------------------------------------------
def box_region(z: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """The box of ``(B, C, H, W)`` images resized to 32x32 (bilinear)."""
    top, bottom, left, right = box
    return F.interpolate(z[..., top:bottom, left:right], size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(
        0, 1
    )


def seam_ratio(z: Tensor, box: tuple[int, int, int, int], ring: int = 3) -> float:
    """Mean |difference| of neighbour pairs across the box border over the mean of inside and outside-ring pairs."""
    top, bottom, left, right = box
    h, w = z.shape[-2:]
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    near = torch.zeros(h, w, dtype=torch.bool)
    near[max(0, top - ring) : bottom + ring, max(0, left - ring) : right + ring] = True
    outside = near & ~inside
    dx, dy = (z[..., :, 1:] - z[..., :, :-1]).abs().mean(0), (z[..., 1:, :] - z[..., :-1, :]).abs().mean(0)
    groups = {}
    for name, (a, c) in {
        "across": ((inside[:, 1:] ^ inside[:, :-1]), (inside[1:, :] ^ inside[:-1, :])),
        "inside": ((inside[:, 1:] & inside[:, :-1]), (inside[1:, :] & inside[:-1, :])),
        "outside": ((outside[:, 1:] & outside[:, :-1]), (outside[1:, :] & outside[:-1, :])),
    }.items():
        groups[name] = float(torch.cat([dx[a], dy[c]]).mean())
    return groups["across"] / max(0.5 * (groups["inside"] + groups["outside"]), 1e-8)


def psnr_outside(z: Tensor, x: Tensor, seen: Tensor) -> float:
    mse = float(((z - x) ** 2 * seen).sum() / (seen.expand_as(z).sum()))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def copy_ncc(z: Tensor, e: Tensor, box: tuple[int, int, int, int]) -> float:
    """The largest normalised cross-correlation of the box content of ``z`` with the windows of ``e`` of its size."""
    top, bottom, left, right = box
    patch = z[:, top:bottom, left:right].reshape(-1)
    patch = patch - patch.mean()
    windows = F.unfold(e[None], kernel_size=(bottom - top, right - left))[0]  # (C*h*w, positions)
    windows = windows - windows.mean(0, keepdim=True)
    ncc = (patch @ windows) / (patch.norm() * windows.norm(dim=0)).clamp_min(1e-12)
    return float(ncc.max())


# -- the methods ------------------------------------------------------------------------------------------------------
def paste(y_seen: Tensor, seen: Tensor, e: Tensor, box: tuple[int, int, int, int], feather: int) -> Tensor:
    """The exemplar at the same place as the box (both 32x32), over the seen pixels; ``feather`` > 0 blends it over
    a band of that many pixels on each side of the border (alpha linear in the signed distance to the border)."""
    if feather <= 0:
        return y_seen * seen + e[None] * (1 - seen)
    top, bottom, left, right = box
    i = torch.arange(SIZE, dtype=torch.float32)[:, None]
    j = torch.arange(SIZE, dtype=torch.float32)[None, :]
    # signed distance to the border, > 0 inside the box (0.5 on its outermost pixels), < 0 outside (-0.5 next to it)
    inside = torch.minimum(torch.minimum(i - top, bottom - 1 - i), torch.minimum(j - left, right - 1 - j)) + 0.5
    outside = -(torch.maximum(torch.maximum(top - i, i - (bottom - 1)), torch.maximum(left - j, j - (right - 1))) - 0.5)
    signed = torch.where(inside > 0, inside, outside)
    alpha = ((signed + feather) / (2 * feather)).clamp(0, 1)
    return y_seen * (1 - alpha) + e[None] * alpha


def run(
    method: str, ctx: dict[str, Any], y_seen: Tensor, e: Tensor, n: int, seed: int, tau_scale: float = 1.0
) -> tuple[Tensor, float]:
    """``(samples (n, C, H, W) in [0, 1] on the CPU, seconds per sample)``."""
    import invgen

    args, prior, plain, seen = ctx["args"], ctx["prior"], ctx["plain"], ctx["seen"]
    dev = args.device
    if method in ("paste", "paste_feather"):
        t0 = time.perf_counter()
        z = paste(y_seen, seen, e, ctx["box"], args.feather if method == "paste_feather" else 0).clamp(0, 1)
        return z.expand(n, -1, -1, -1).clone(), time.perf_counter() - t0
    if method == "plain_dps":
        post = invgen.solve(y_seen.to(dev), plain, prior, solver="dps", steps=args.steps, n_samples=n, seed=seed)
    elif method == "plain_default":
        post = invgen.solve(y_seen.to(dev), plain, prior, n_samples=n, seed=seed)
    else:
        op = invgen.operator(
            "exemplar", mask=plain.mask, exemplar=e, tau_scale=tau_scale, channels=3,
            noise=invgen.noise("gaussian", std=args.noise),
        )  # fmt: skip
        y = op.observe(y_seen).to(dev)
        if method == "exemplar_dps":
            post = invgen.solve(y, op, prior, solver="dps", steps=args.steps, n_samples=n, seed=seed)
        else:
            post = invgen.solve(
                y, op, prior, solver="daps", n_samples=n, seed=seed, annealing_steps=args.steps,
                ode_steps=args.daps_ode, langevin_steps=args.daps_langevin,
            )  # fmt: skip
    return post.samples[:, 0].clamp(0, 1).cpu().float(), post.seconds / n


# -- the benchmark ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--steps", type=int, default=250, help="DPS steps (both plain and exemplar); DAPS levels")
    p.add_argument("--methods", default=",".join(METHODS), help=f"some of {', '.join(METHODS)}")
    p.add_argument("--prior", default="diffusion-cifar10")
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--tau-scale", default="1,0.25", help="route 1's factors on the calibrated tau, a comma list")
    p.add_argument("--feather", type=int, default=2)
    p.add_argument("--daps-ode", type=int, default=5)
    p.add_argument("--daps-langevin", type=int, default=50)
    p.add_argument("--diversity-pairs", type=int, default=10, help="pairs on which 4 samples give the diversity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="exemplar-bench")
    args = p.parse_args(argv)
    asked = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(asked) - set(METHODS))
    if unknown or args.pairs < 2:
        p.error(f"unknown methods {unknown}" if unknown else "--pairs must be >= 2 (the Frechet distance)")
    scales = [float(v) for v in args.tau_scale.split(",") if v]
    # (name, method, tau scale): route 1 once per scale
    methods: list[tuple[str, str, float]] = []
    for m in asked:
        if m.startswith("exemplar_"):
            methods += [(m if t == 1.0 else f"{m}_tau{t:g}", m, t) for t in scales]
        else:
            methods.append((m, m, 1.0))
    names = [name for name, _, _ in methods]
    if args.threads:
        torch.set_num_threads(args.threads)

    import invgen
    from invgen.metrics.classifier import predict
    from invgen.metrics.frechet import feature_statistics, features, frechet_distance_from_statistics
    from invgen.metrics.posterior import diversity

    t_start = time.perf_counter()
    ds = invgen.dataset("cifar10", split="test")
    pairs = pick_pairs(ds, args.pairs, args.seed)
    prior_kw = {"device": args.device} if args.device != "cpu" else {}
    prior = invgen.prior(args.prior, **prior_kw)
    noise = invgen.noise("gaussian", std=args.noise)
    plain = invgen.operator("inpaint", mask="box", size=(SIZE, SIZE), box_size=BOX, noise=noise)
    seen = plain.mask.float()
    box = (6, 26, 6, 26)
    ref_stats = feature_statistics(torch.stack(ds.images()), "cifar10")
    ctx = {"args": args, "prior": prior, "plain": plain, "seen": seen, "box": box}

    rows: dict[str, list[dict[str, float]]] = {m: [] for m in ["source", *names]}
    edited: dict[str, list[Tensor]] = {m: [] for m in ["source", *names]}
    for k, (si, ei) in enumerate(pairs):
        x, e, e_label = ds[si][None], ds[ei], ds.label(ei)
        y_seen = plain.measure(x, generator=torch.Generator().manual_seed(args.seed * 100003 + k))
        e_feat = features(e[None], "cifar10")
        for name, method, tau_scale in [("source", "source", 1.0), *methods]:
            n = 4 if (k < args.diversity_pairs and method in STOCHASTIC) else 1
            if method == "source":
                z, seconds = x.clone(), 0.0
            else:
                z, seconds = run(method, ctx, y_seen, e, n, seed=args.seed + k, tau_scale=tau_scale)
            region = box_region(z[:1], box)
            row = {
                "source": si,
                "exemplar": ei,
                "exemplar_cos": float(F.cosine_similarity(features(region, "cifar10"), e_feat)[0]),
                "exemplar_class": float(int(predict(region, "cifar10")[0]) == e_label),
                "seam": seam_ratio(z[0], box),
                "psnr_outside": psnr_outside(z[0], x[0], seen[0]),
                "copy_ncc": copy_ncc(z[0], e, box),
                "seconds": seconds,
            }
            if n > 1:
                row["diversity"] = float(diversity(z[:, None], metric="lpips")[0])
            rows[name].append(row)
            edited[name].append(z[0])
        done = ", ".join(f"{m} cos {rows[m][-1]['exemplar_cos']:.3f}" for m in names)
        print(f"pair {k + 1}/{len(pairs)} ({si} <- {ei}): {done}", flush=True)

    summary: dict[str, dict[str, float | None]] = {}
    for method, per in rows.items():
        s: dict[str, float | None] = {}
        for metric in METRICS:
            values = [r[metric] for r in per if metric in r]
            s[metric] = sum(values) / len(values) if values else None
        s["fd"] = frechet_distance_from_statistics(
            *feature_statistics(torch.stack(edited[method]), "cifar10"), *ref_stats
        )
        summary[method] = s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items()}
    config["methods"] = names
    result = {"config": config, "pairs": pairs, "summary": summary, "per_pair": rows}
    result["seconds_total"] = round(time.perf_counter() - t_start, 1)
    (out / "exemplar.json").write_text(json.dumps(result, indent=1))
    table = report(summary, args, len(pairs))
    (out / "exemplar.md").write_text(table)
    print(table)
    print(f"{result['seconds_total']} s in all -> {out}")
    return 0


def report(summary: dict[str, dict[str, float | None]], args: argparse.Namespace, n: int) -> str:
    """The markdown table of the summary."""
    from invgen.operators.exemplar import TAU

    head = [
        ("exemplar_cos", "exemplar cos ↑", "{:.3f}"),
        ("exemplar_class", "exemplar class ↑", "{:.2f}"),
        ("fd", "FD-cifar10-CNN ↓", "{:.2f}"),
        ("seam", "seam (1 = none)", "{:.2f}"),
        ("psnr_outside", "PSNR outside ↑", "{:.2f}"),
        ("copy_ncc", "max NCC with exemplar (1 = copy)", "{:.3f}"),
        ("diversity", "diversity (LPIPS)", "{:.3f}"),
        ("seconds", "s / sample", "{:.2f}"),
    ]
    lines = [
        f"Exemplar-guided inpainting, {n} CIFAR-10 test pairs (seed {args.seed}), centred {BOX}x{BOX} box, noise "
        f"{args.noise}; DPS {args.steps} steps; route 1 with tau = {TAU} x the scale in its name; prior {args.prior}.",
        "",
        "| method | " + " | ".join(h for _, h, _ in head) + " |",
        "|---|" + "---|" * len(head),
    ]
    for method, s in summary.items():
        cells = [fmt.format(s[key]) if s.get(key) is not None else "-" for key, _, fmt in head]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
