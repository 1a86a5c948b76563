"""The particle samplers (TDS, MCGdiff, FPS) against the number of particles K on the exact oracle problems.

Protocol (one cell = solver x problem x K): ``N = 200`` output samples from a fixed budget of ``P = 3200`` particles,
i.e. ``P / K`` independent populations of ``K`` particles (200 populations of 16, 50 of 64, 12 of 256, 3 of 1024;
each population gives ``ceil(200 / populations)`` samples, drawn from its final weights), so every cell of a row
costs about the same and the columns say what one large population buys over many small ones. Levels: 100 on the
easy problems, 200 on the hard ones (geometric, the samplers' default spacing); float64; one thread.

Per cell: SW and mixture-weight error as multiples of their floors for 200 samples
(:func:`invgen.testing.oracle.floors`), the variance ratio, the diversity ratio (median nearest-neighbour distance
of the samples over that of the first 200 exact samples: far below 1 means duplicated particles), the error of the
evidence estimate ``log p(y)`` (the mean of the ``P / K`` population estimates) against the exact evidence, NFE and
seconds. Results go to a JSON file written after every cell (a rerun skips the cells it has); ``--report`` writes
docs/smc/README.md's tables and the plot docs/smc/k-sweep.png.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/smc.py --out docs/smc/k-sweep.json [--solvers tds ...] [--problems ...]
        [--k 16 64 256 1024]
    python benchmarks/smc.py --out docs/smc/k-sweep.json --report docs/smc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

N_OUT = 200
BUDGET = 3200
KS = (16, 64, 256, 1024)
SOLVERS = ("tds", "mcgdiff", "fps")
# FPS is biased by construction (it gets worse with K on the easy problems): not run on the d = 256 problem
SUPPORT = {"fps": ("identity", "inpaint", "superres", "colorize", "sensing", "hard-inpaint", "hard-sensing")}


def levels(problem: str) -> int:
    return 200 if problem.startswith("hard") else 100


def cell(solver: str, problem: str, k: int) -> dict:
    import invgen
    from invgen.testing import oracle

    pb = oracle.problem(problem)
    pops = max(1, BUDGET // k)
    steps = levels(problem)
    post = invgen.solve(
        pb.y, pb.op, pb.prior, solver=solver, n_samples=N_OUT, seed=1, steps=steps, particles=k, populations=pops
    )
    s = post.samples[:, 0]
    exact = pb.exact[:N_OUT]
    fsw, fwe = oracle.floors(problem, N_OUT)
    return {
        "steps": steps,
        "populations": pops,
        "sw_multiple": oracle.sliced_wasserstein(s, exact, pb.dirs) / fsw,
        "weight_multiple": oracle.weight_error(s, *pb.mix()) / fwe,
        "variance_ratio": pb.variance_ratio(s),
        "nn_ratio": oracle.nn_median(s) / oracle.nn_median(exact),
        "dlogz": float(post.extras["log_evidence"][0]) - oracle.exact_log_evidence(pb),
        "ess_final": float(post.extras["ess_final"]),
        "resamples": float(post.extras["resamples"]),
        "nfe": post.nfe,
        "seconds": post.seconds,
    }


def run(out: str, solvers: list[str], problems: list[str], ks: list[int], threads: int) -> None:
    torch.set_num_threads(threads)
    res = json.loads(Path(out).read_text()) if os.path.exists(out) else {"meta": {}, "cells": {}}
    res["meta"].update(
        {
            "threads": threads,
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "n_out": N_OUT,
            "budget": BUDGET,
        }
    )
    for problem in problems:
        for solver in solvers:
            if problem not in SUPPORT.get(solver, (problem,)):
                continue
            for k in ks:
                key = f"{solver}|{problem}|{k}"
                if key in res["cells"]:
                    continue
                try:
                    c = cell(solver, problem, k)
                except Exception as e:  # recorded, not fatal
                    res["cells"][key] = {"error": f"{type(e).__name__}: {e}"}
                    print(f"{key}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                else:
                    res["cells"][key] = c
                    print(
                        f"{key}: SW x{c['sw_multiple']:.2f} w x{c['weight_multiple']:.2f} var {c['variance_ratio']:.2f}"
                        f" nn {c['nn_ratio']:.2f} dlogz {c['dlogz']:+.2f} {c['seconds']:.1f}s",
                        flush=True,
                    )
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                with open(out, "w") as f:
                    json.dump(res, f, indent=1)


def fmt(c: dict | None) -> str:
    if c is None:
        return ""
    if "error" in c:
        return "n/a"
    if not c["sw_multiple"] < 1000:
        return "diverged"
    return (
        f"{c['sw_multiple']:.2f} / {c['weight_multiple']:.1f} / {c['nn_ratio']:.2f} / {c['dlogz']:+.2f} "
        f"({c['seconds']:.0f} s)"
    )


def report(out: str, folder: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invgen.testing import oracle

    res = json.loads(Path(out).read_text())
    cells = res["cells"]
    ks = sorted({int(key.split("|")[2]) for key in cells})
    names = [n for n in (*oracle.EASY, *oracle.HARD) if any(key.split("|")[1] == n for key in cells)]
    lines = [
        "| problem | solver | " + " | ".join(f"K = {k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for n in names:
        for s in SOLVERS:
            row = [fmt(cells.get(f"{s}|{n}|{k}")) for k in ks]
            if any(row):
                lines.append(f"| {n} ({oracle.CASES[n].description}) | {s} | " + " | ".join(row) + " |")
    table = "\n".join(lines)
    # the floor: the smallest K where SW <= 1.5x and weight error <= 2x, per solver and hard problem
    reached = ["| problem | " + " | ".join(SOLVERS) + " |", "|---|" + "---|" * len(SOLVERS)]
    for n in oracle.HARD:
        row = []
        for s in SOLVERS:
            hit = [
                (k, c)
                for k in ks
                if (c := cells.get(f"{s}|{n}|{k}")) and "error" not in c
                if c["sw_multiple"] <= 1.5 and c["weight_multiple"] <= 2.0
            ]
            tried = any(f"{s}|{n}|{k}" in cells for k in ks)
            row.append(f"K = {hit[0][0]} ({hit[0][1]['seconds']:.0f} s)" if hit else ("not reached" if tried else ""))
        reached.append(f"| {n} | " + " | ".join(row) + " |")
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "k-sweep.md").write_text(
        "SW multiple / weight-error multiple / NN ratio / log p(y) error in nats (seconds); "
        f"N = {res['meta']['n_out']} samples from {res['meta']['budget']} particles, "
        f"{res['meta']['threads']} thread(s)\n\n" + table + "\n\nFloor (SW <= 1.5x and weight error <= 2x) first "
        "reached at:\n\n" + "\n".join(reached) + "\n"
    )
    fig, axes = plt.subplots(3, len(names), figsize=(2.6 * len(names), 7.5), squeeze=False)
    for j, n in enumerate(names):
        for s, color in zip(SOLVERS, ("C0", "C1", "C2")):
            got = [(k, cells[f"{s}|{n}|{k}"]) for k in ks if "error" not in cells.get(f"{s}|{n}|{k}", {"error": 1})]
            if not got:
                continue
            kk = [k for k, _ in got]
            axes[0, j].plot(kk, [c["sw_multiple"] for _, c in got], "o-", color=color, label=s)
            axes[1, j].plot(kk, [c["weight_multiple"] for _, c in got], "o-", color=color, label=s)
            axes[2, j].plot(kk, [abs(c["dlogz"]) for _, c in got], "o-", color=color, label=s)
        axes[0, j].set_title(n, fontsize=9)
        rows = ((1.5, "SW / floor"), (2.0, "weight err / floor"), (None, "|log p(y) err|"))
        for i, (floor, ylabel) in enumerate(rows):
            ax = axes[i, j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            if floor:
                ax.axhline(floor, color="k", lw=0.8, ls="--")
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 2:
                ax.set_xlabel("particles K")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"SMC samplers vs K ({res['meta']['budget']} particles per cell, N = {res['meta']['n_out']})")
    fig.tight_layout()
    fig.savefig(Path(folder) / "k-sweep.png", dpi=110)
    print(table)
    print("\n".join(reached))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--solvers", nargs="*", default=list(SOLVERS))
    ap.add_argument("--problems", nargs="*")
    ap.add_argument("--k", nargs="*", type=int, default=list(KS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", metavar="FOLDER", help="write the tables and the plot to FOLDER")
    a = ap.parse_args()
    if a.report:
        report(a.out, a.report)
    else:
        from invgen.testing import oracle

        run(a.out, a.solvers, a.problems or [*oracle.EASY, *oracle.HARD], a.k, a.threads)


if __name__ == "__main__":
    main()
