"""The cross-family table (task x family, the best solver of each) from a benchmark report's ``results.csv``.

Family of a row: the prior's registered plugin (``vae``, ``gan``, ``flow``, ``diffusion``, ...); ``baselines`` for
the prior-free solvers (pinv, tikhonov, tv). "Best" is the lowest LPIPS of the samples (a perceptual figure that
rewards sharp, plausible reconstructions rather than the blurred mean); each cell shows that solver with its PSNR
and SSIM of the posterior mean, LPIPS of the samples and seconds per image.

Usage:
    invgen bench run benchmarks/suites/families.yaml --db families.sqlite --report REPORT
    python benchmarks/family_table.py REPORT/results.csv > table.md
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import invgen


def family_of(prior: str) -> str:
    if prior == "none":
        return "baselines"
    return invgen.registry.get("priors", prior).plugin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="results.csv of `invgen bench report`")
    args = parser.parse_args()
    with open(args.results, newline="") as f:
        rows = list(csv.DictReader(f))
    best: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        key = (r["dataset"], r["task"], family_of(r["prior"]))
        if key not in best or float(r["lpips_samples"]) < float(best[key]["lpips_samples"]):
            best[key] = r
    families = sorted({k[2] for k in best}, key=lambda f: (f == "baselines", f))
    by_task: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for (dataset, task, fam), r in best.items():
        by_task[(dataset, task)][fam] = r
    print("| dataset | task | " + " | ".join(families) + " |")
    print("|---|---|" + "---|" * len(families))
    for (dataset, task), cells in sorted(by_task.items()):
        out = []
        for fam in families:
            r = cells.get(fam)
            if r is None:
                out.append("n/a")
                continue
            lp = [float(cells[f]["lpips_samples"]) for f in cells]
            mark = "**" if float(r["lpips_samples"]) == min(lp) else ""
            out.append(
                f"{mark}{r['label']}: {float(r['psnr']):.2f} / {float(r['ssim']):.3f} / "
                f"{float(r['lpips_samples']):.3f} / {float(r['seconds']):.2f} s{mark}"
            )
        print(f"| {dataset} | {task} | " + " | ".join(out) + " |")
    print(
        "\nEach cell: best solver of the family by LPIPS of the samples: PSNR (dB) / SSIM of the posterior mean / "
        "LPIPS of the samples / seconds per image; bold: the lowest LPIPS of the row."
    )


if __name__ == "__main__":
    main()
