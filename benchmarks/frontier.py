"""The quality-vs-time frontier (issue 20): plots and tables from the ``frontier`` suite's report.

Reads the ``results.csv`` that ``invgen bench report`` writes for the ``frontier`` suite (labels ``SOLVER-BUDGET``,
budget = network evaluations per sample) and writes, per task, a PNG with two panels (LPIPS of the samples and PSNR
of the N-sample mean against seconds per sample, log scale, one line per solver through its budgets, the Pareto
front dashed) and a markdown page: every point, the best solver at each budget, and whether it is at least as good
as DPS at 1000 steps (the goal: at every budget the best solver's LPIPS <= DPS-1000's).

Usage:
    invgen bench run frontier --db frontier.sqlite && invgen bench report frontier.sqlite --out REPORT
    python benchmarks/frontier.py REPORT/results.csv --out docs/frontier
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

BUDGETS = (20, 50, 100, 1000)


def load(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["prior"] != "none"]


def split_label(label: str) -> tuple[str, int]:
    name, _, budget = label.rpartition("-")
    return name, int(budget)


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points not beaten in both seconds and LPIPS (lower is better for both), sorted by seconds."""
    front, best = [], float("inf")
    for p in sorted(points):
        if p[1] < best:
            front.append(p)
            best = p[1]
    return front


def plot(rows: list[dict[str, str]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lines: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        lines[split_label(r["label"])[0]].append(r)
    for (name, rs), marker in zip(sorted(lines.items()), "os^vD<>ph*Xd+x", strict=False):
        rs = sorted(rs, key=lambda r: split_label(r["label"])[1])
        sec = [float(r["seconds_per_sample"]) for r in rs]
        axes[0].plot(sec, [float(r["lpips_samples"]) for r in rs], marker=marker, label=name)
        axes[1].plot(sec, [float(r["psnr"]) for r in rs], marker=marker, label=name)
    front = pareto([(float(r["seconds_per_sample"]), float(r["lpips_samples"]), r["label"]) for r in rows])
    axes[0].plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
    for ax, ylabel in zip(axes, ("LPIPS of samples (lower is better)", "PSNR of the 4-sample mean, dB"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("seconds per sample (CPU, 1 thread)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tables(rows: list[dict[str, str]]) -> str:
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["task"])].append(r)
    out = []
    for (dataset, task), rs in sorted(groups.items()):
        out += [f"## {dataset} / {task}", "", f"![{task}]({dataset}__{task}.png)", ""]
        out += [
            "| solver | budget | NFE | s / sample | LPIPS samples | PSNR mean | SSIM mean |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(rs, key=lambda r: (split_label(r["label"])[1], float(r["lpips_samples"]))):
            name, budget = split_label(r["label"])
            out.append(
                f"| {name} | {budget} | {float(r['nfe']):.0f} | {float(r['seconds_per_sample']):.3f} | "
                f"{float(r['lpips_samples']):.4f} | {float(r['psnr']):.2f} | {float(r['ssim']):.3f} |"
            )
        ref = [r for r in rs if r["label"] == "dps-1000"]
        out += [
            "",
            "| budget | best by LPIPS | LPIPS | best by PSNR | PSNR | vs DPS-1000 LPIPS |",
            "|---|---|---|---|---|---|",
        ]
        for b in BUDGETS:
            at = [r for r in rs if split_label(r["label"])[1] == b]
            if not at:
                continue
            bl = min(at, key=lambda r: float(r["lpips_samples"]))
            bp = max(at, key=lambda r: float(r["psnr"]))
            vs = ""
            if ref:
                d = float(bl["lpips_samples"]) - float(ref[0]["lpips_samples"])
                vs = f"{d:+.4f} ({'at least as good' if d <= 0 else 'worse'})"
            out.append(
                f"| {b} | {split_label(bl['label'])[0]} | {float(bl['lpips_samples']):.4f} | "
                f"{split_label(bp['label'])[0]} | {float(bp['psnr']):.2f} | {vs} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = load(a.csv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["task"])].append(r)
    for (dataset, task), rs in groups.items():
        plot(rs, f"{dataset} / {task}: 8 test images x 4 samples", out / f"{dataset}__{task}.png")
    (out / "frontier.md").write_text("# Quality vs time frontier\n\n" + tables(rows))


if __name__ == "__main__":
    main()
