"""Issue 4's real-data table: every solver of each task next to the baselines, and whether it beats the best one.

Reads the ``results.csv`` of one or more ``invgen bench report`` folders (e.g. the ``diffusion-cpu`` suite and its
``diffusion-cpu-long`` companion) and prints markdown: per dataset and task, one row per solver with the PSNR and SSIM
of the posterior mean, the LPIPS of the samples (mean over images +- the 95 % Student-t half-width), NFE and seconds
per image, and the LPIPS margin to the best baseline (pinv, tikhonov, tv: the lowest LPIPS of the samples among them,
on the same images). A diffusion solver "beats the baselines" when its LPIPS is below that best baseline's; the
closing matrix shows it for every solver and task.

Usage:
    invgen bench report diffusion-cpu.sqlite --out REPORT
    python benchmarks/solver_table.py REPORT/results.csv [MORE/results.csv ...] > table.md
    python benchmarks/solver_table.py A/results.csv B/results.csv --merge diffusion-cpu-new=diffusion-cpu
        (suites run on the same frozen observations, e.g. new solvers added later: one table per task; a solver
        present in both keeps the first file's row, and the rows' seconds come from different runs)
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

BASELINES = ("pinv", "tikhonov", "tv")


def load(paths: list[str]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in paths:
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def _f(row: dict[str, str], key: str) -> float:
    return float(row[key])


def tables(rows: list[dict[str, str]], merge: dict[str, str] | None = None) -> str:
    """The markdown of the module docstring (groups keyed by suite, dataset, task; the images differ per suite;
    ``merge`` maps a suite to the one whose groups it joins)."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        key = (r["dataset"], r["task"], (merge or {}).get(r["suite"], r["suite"]))
        if any(o["label"] == r["label"] and o["prior"] == r["prior"] for o in groups[key]):
            continue  # the first file's row wins
        groups[key].append(r)
    out: list[str] = []
    verdict: dict[tuple[str, str], dict[str, tuple[bool, float]]] = defaultdict(dict)
    for (dataset, task, suite), group in sorted(groups.items()):
        base = [r for r in group if r["solver"] in BASELINES]
        best = min(base, key=lambda r: _f(r, "lpips_samples")) if base else None
        n_img = group[0]["n_images"]
        out += [
            f"### {dataset} / {task} ({suite}: {n_img} images, {group[0]['n_samples']} samples, "
            f"{group[0]['n_seeds']} seed(s))",
            "",
            "| solver | PSNR mean | SSIM mean | LPIPS samples | LPIPS - best baseline | NFE | s / image |",
            "|---|---|---|---|---|---|---|",
        ]
        priors = {r["prior"] for r in group if r["prior"] != "none"}
        ordered = sorted(group, key=lambda r: (r["solver"] not in BASELINES, _f(r, "lpips_samples")))
        for r in ordered:
            lp = _f(r, "lpips_samples")
            margin = "" if best is None or r["solver"] in BASELINES else f"{lp - _f(best, 'lpips_samples'):+.4f}"
            label = r["label"] if len(priors) <= 1 or r["prior"] == "none" else f"{r['label']} ({r['prior']})"
            name = f"**{label}**" if best is not None and r is best else label
            out.append(
                f"| {name} | {_f(r, 'psnr'):.2f} ± {_f(r, 'psnr_ci'):.2f} | {_f(r, 'ssim'):.3f} | "
                f"{lp:.4f} ± {_f(r, 'lpips_samples_ci'):.4f} | {margin} | {_f(r, 'nfe'):.0f} | "
                f"{_f(r, 'seconds'):.3g} |"
            )
            if best is not None and r["solver"] not in BASELINES:
                verdict[(dataset, task)][label] = (lp < _f(best, "lpips_samples"), lp - _f(best, "lpips_samples"))
        out.append("")
    solvers = sorted({s for v in verdict.values() for s in v})
    if solvers:
        out += [
            "### Beats the best baseline in LPIPS of the samples? (margin)",
            "",
            "| dataset / task | " + " | ".join(solvers) + " |",
            "|---|" + "---|" * len(solvers),
        ]
        for (dataset, task), v in sorted(verdict.items()):
            cells = [("yes" if v[s][0] else "**no**") + f" ({v[s][1]:+.3f})" if s in v else "-" for s in solvers]
            out.append(f"| {dataset} / {task} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="results.csv files of `invgen bench report`")
    parser.add_argument("--merge", nargs="*", default=[], metavar="SUITE=INTO", help="join SUITE's rows into INTO's")
    args = parser.parse_args()
    print(tables(load(args.results), dict(m.split("=", 1) for m in args.merge)))


if __name__ == "__main__":
    main()
