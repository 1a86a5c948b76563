"""Measure the default solver of every ``invgen solve`` task against the other solvers there; write docs/defaults.md.

Usage (from the repository root, with invgen installed; about 3 minutes of CPU on one thread):

    OMP_NUM_THREADS=1 python tools/measure_defaults.py              # rewrite the table in docs/defaults.md
    OMP_NUM_THREADS=1 python tools/measure_defaults.py --images 8   # more images (slower, steadier)
    python tools/measure_defaults.py --render                       # only re-render the table from the JSON

Each task is the CLI's (:func:`invgen.tasks.build_task` with the default :class:`invgen.tasks.TaskOptions`: noise std
0.05, SR x4 block, a centred box of half the side, Gaussian blur sigma 1.5, sketch threshold 0.2) on the first
``--images`` test images shipped with the package (:func:`invgen.data.sample_images`: MNIST with ``diffusion-mnist``,
CIFAR-10 with ``diffusion-cifar10`` for colorization), N samples each, one seed. The default row is what
``invgen.solve`` chooses with no solver; "default, steps=20" is the same choice at a user's ``--steps 20``. Rows are
ranked by the LPIPS of the samples (the ranking of the published solver tables). Results go to docs/defaults.json and,
between the table markers, docs/defaults.md.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "defaults.md"
JSON = ROOT / "docs" / "defaults.json"
START, END = "<!-- table:start (tools/measure_defaults.py) -->", "<!-- table:end -->"

DEFAULT = None  # the solver invgen.solve chooses
SVD_ROWS: list[tuple[str | None, dict[str, Any]]] = [
    (DEFAULT, {}),
    (DEFAULT, {"steps": 20}),
    ("ddrm", {"steps": 20}),
    ("ddnm", {"steps": 100}),
    ("pigdm", {"steps": 50}),
    ("dps", {"steps": 20}),  # the former default (DPS, zeta 1) at a user's --steps 20
]
ROWS: dict[str, list[tuple[str | None, dict[str, Any]]]] = {
    "sr": [*SVD_ROWS, ("dps", {"steps": 250}), ("pinv", {}), ("tv", {})],
    "inpaint": [*SVD_ROWS, ("dps", {"steps": 250}), ("tv", {})],
    "denoise": [*SVD_ROWS, ("tv", {})],
    "colorize": [*SVD_ROWS, ("tikhonov", {})],
    "deblur": [
        (DEFAULT, {}),
        (DEFAULT, {"steps": 20}),
        ("diffpir", {"steps": 100}),  # its own defaults: quad timesteps
        ("diffpir", {"steps": 20}),
        ("dps", {"steps": 250}),
        ("dps", {"steps": 20}),
        ("tv", {}),
    ],
    "sketch": [
        (DEFAULT, {}),
        (DEFAULT, {"steps": 20}),
        ("diffpir", {"steps": 100}),
        ("dps", {"steps": 100, "zeta": 0.3}),  # the families benchmark's setting
        ("dps", {"steps": 50, "zeta": 0.3}),  # the demo's
        ("dps", {"steps": 20}),
    ],
}
TASKS = ("sr", "inpaint", "denoise", "colorize", "deblur", "sketch")


def run_task(task: str, n_images: int, n_samples: int) -> list[dict[str, Any]]:
    import invgen
    from invgen.data import sample_images
    from invgen.metrics import lpips, psnr, ssim
    from invgen.metrics.edges import edge_chamfer, edge_f1
    from invgen.operators.sketch import make_sketch
    from invgen.tasks import TaskOptions, build_task

    dataset, prior_name = ("cifar10", "diffusion-cifar10") if task == "colorize" else ("mnist", "diffusion-mnist")
    x = sample_images(dataset)[:n_images]
    prior = invgen.prior(prior_name)
    op = build_task(task, TaskOptions(), int(x.shape[1]))
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    rows = []
    for solver, options in ROWS[task]:
        t0 = time.perf_counter()
        try:
            post = invgen.solve(y, op, prior, solver=solver, n_samples=n_samples, seed=0, **options)
        except invgen.errors.DivergenceError as err:
            rows.append({"task": task, "solver": solver, "options": options, "diverged": str(err)[:160]})
            continue
        wall = time.perf_counter() - t0
        kept = post.clamped(0, 1)
        flat = kept.samples.reshape(-1, *x.shape[1:])
        ref = x.repeat(n_samples, 1, 1, 1)
        cfg = dict(post.solver)
        row = {
            "task": task,
            "prior": prior_name,
            "label": _label(solver, options, cfg),
            "default": solver is None,
            "solver": cfg,
            "psnr_mean": float(psnr(kept.mean, x).mean()),
            "ssim_mean": float(ssim(kept.mean, x).mean()),
            "lpips_samples": float(lpips(flat, ref).mean()),
            "nfe": post.nfe,
            "seconds_per_image": wall / n_images,
            "flagged": int(post.flagged.sum()) if post.flagged is not None else 0,
        }
        if task == "sketch":  # against the truth's clean binary (Canny) sketch, not y > 0.5 of the soft observation
            sketch = make_sketch(x).repeat(n_samples, 1, 1, 1)
            row["edge_f1"] = float(edge_f1(flat, sketch).mean())
            row["edge_chamfer"] = float(edge_chamfer(flat, sketch).mean())
        rows.append(row)
        print(f"{task:9s} {row['label']:45s} PSNR {row['psnr_mean']:6.2f} LPIPS {row['lpips_samples']:.4f}", flush=True)
    return rows


def _label(solver: str | None, options: dict[str, Any], cfg: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    if solver is None:
        chosen = f"{cfg['name']} {cfg['steps']}" + (f", {cfg['spacing']}" if cfg.get("spacing") == "uniform" else "")
        return f"**default** ({chosen})" if not options else f"default at {shown} ({chosen})"
    return f"{solver}" + (f" ({shown})" if shown else "")


FORMER = "dps (steps=20)"  # DPS with its paper's zeta = 1: the default before, at a user's --steps 20


def _shown(label: str) -> str:
    return f"{label}: the former default at --steps 20" if label == FORMER else label


def summary(rows: list[dict[str, Any]]) -> str:
    """One line per task: the default against the best row (by LPIPS of the samples)."""
    out = [
        "| task | default | PSNR / LPIPS | best (LPIPS) | PSNR / LPIPS | default at --steps 20 | former default "
        "(DPS) at --steps 20 |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        ok = [r for r in rows if r["task"] == task and "diverged" not in r]
        default = [r for r in ok if r.get("default") and not r["label"].startswith("default at")]
        at20 = [r for r in ok if r["label"].startswith("default at steps=20")]
        former = [r for r in ok if r["label"] == FORMER]
        if not ok or not default:
            continue
        d, best = default[0], min(ok, key=lambda r: r["lpips_samples"])
        name = d["label"].replace("**default** ", "").strip("()")
        cells = [
            task,
            name,
            f"{d['psnr_mean']:.2f} / {d['lpips_samples']:.4f}",
            "the default" if best is d else f"{_shown(best['label'])}, {best['nfe']} NFE",
            f"{best['psnr_mean']:.2f} / {best['lpips_samples']:.4f}",
            f"{at20[0]['psnr_mean']:.2f} / {at20[0]['lpips_samples']:.4f}" if at20 else "-",
            f"{former[0]['psnr_mean']:.2f} / {former[0]['lpips_samples']:.4f}" if former else "-",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def table(rows: list[dict[str, Any]]) -> str:
    out = [summary(rows)]
    for task in TASKS:
        these = [r for r in rows if r["task"] == task]
        ok = [r for r in these if "diverged" not in r]
        if not ok:
            continue
        best = min(r["lpips_samples"] for r in ok)
        f1 = task == "sketch"
        out.append(f"### {task} ({ok[0]['prior']})\n")
        head = "| solver | PSNR mean | SSIM mean | LPIPS samples | vs best LPIPS |"
        out.append(head + (" edge F1 | edge chamfer px |" if f1 else "") + " NFE | s / image |")
        out.append("|---" * (7 + 2 * f1) + "|")
        for r in sorted(ok, key=lambda r: r["lpips_samples"]):
            lp = f"{r['lpips_samples']:.4f}"
            lp = f"**{lp}**" if r["lpips_samples"] == best else lp
            gap = f"+{r['lpips_samples'] - best:.4f}" if r["lpips_samples"] > best else "best"
            cells = [_shown(r["label"]), f"{r['psnr_mean']:.2f}", f"{r['ssim_mean']:.3f}", lp, gap]
            if f1:
                cells += [f"{r['edge_f1']:.3f}", f"{r['edge_chamfer']:.2f}"]
            cells += [str(r["nfe"]), f"{r['seconds_per_image']:.2f}"]
            out.append("| " + " | ".join(cells) + " |")
        for r in these:
            if "diverged" in r:
                out.append(f"\n{r['solver']} {r['options']} diverged: {r['diverged']}")
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="shipped test images per task (at most 8)")
    parser.add_argument("-n", type=int, default=2, help="posterior samples per image")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument("--render", action="store_true", help="only rewrite the table from docs/defaults.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(JSON.read_text())
        meta, rows = saved["meta"], saved["rows"]
        args.images, args.n = meta["images"], meta["samples"]
    else:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        rows = [r for task in args.tasks for r in run_task(task, args.images, args.n)]
        meta = {
            "images": args.images,
            "samples": args.n,
            "threads": torch.get_num_threads(),
            "minutes": round((time.perf_counter() - t0) / 60, 1),
            "torch": torch.__version__,
        }
        JSON.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    head = (
        f"{args.images} shipped test images x N = {args.n} samples per task, one seed, one CPU thread "
        f"({meta['minutes']} min in all); seconds on a shared machine, comparable within a task only.\n\n"
    )
    page = PAGE.read_text()
    block = f"{START}\n{head}{table(rows)}{END}"
    page, count = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, page, flags=re.S)
    if count != 1:
        raise SystemExit(f"{PAGE}: expected one pair of table markers")
    PAGE.write_text(page)
    print(f"wrote {PAGE} and {JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
