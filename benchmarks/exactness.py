"""The full exactness table: every posterior solver on the easy and the hard exact problems of the oracle.

For each (solver setting, problem) it runs N = 1000 chains through ``invgen.solve`` in float64 and records the
sliced-W2 distance and the mixture-weight error to exact posterior samples, as multiples of their noise floors'
maxima (:mod:`invgen.testing.oracle`), the variance ratio (samples' total variance over the exact one), NFE and
seconds. Results go to a JSON file, one entry per cell, written after every cell (a rerun skips the cells it has);
``--report`` renders the markdown tables of docs/correctness/exactness.md.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/exactness.py --out docs/correctness/exactness.json [--only SOLVER ...]
        [--problems hard-inpaint ...] [--threads 1]
    python benchmarks/exactness.py --out docs/correctness/exactness.json --report > docs/correctness/exactness.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import torch

# label: (solver name, options, problems it supports: "all" or a tuple of names)
SETTINGS: dict[str, tuple[str, dict, object]] = {
    "mala": ("mala", {"steps": 600}, "all"),
    "ula": ("ula", {"steps": 600}, "all"),
    "annealed_langevin": ("annealed_langevin", {"final_steps": 1000}, "all"),
    "dps": ("dps", {"steps": 200}, "all"),
    "dps_sq": ("dps", {"steps": 200, "guidance": "squared"}, "all"),
    "diffpir": ("diffpir", {}, "all"),
    "ddrm": ("ddrm", {"steps": 50}, "all"),
    "ddnm": ("ddnm", {"steps": 100}, "all"),
    "pigdm": ("pigdm", {"steps": 100}, "all"),
    "mmps": ("mmps", {}, "all"),
    "daps": ("daps", {}, "all"),
    "pnp_dm": ("pnp_dm", {}, "all"),
    "red_diff": ("red_diff", {}, "all"),
    "repaint": ("repaint", {}, ("identity", "inpaint", "hard-inpaint")),
    # sequential Monte Carlo, K = 16 particles (MCGdiff's default is 64), 100 geometric levels, N independent
    # populations; hard-sr4 left out (16000 particles at d = 256: about 20 minutes a cell here)
    "tds": ("tds", {}, ("identity", "inpaint", "superres", "colorize", "sensing", "hard-inpaint", "hard-sensing")),
    "mcgdiff": (
        "mcgdiff",
        {"particles": 16},
        ("identity", "inpaint", "superres", "colorize", "sensing", "hard-inpaint", "hard-sensing"),
    ),
    "fps": ("fps", {}, ("identity", "inpaint", "superres", "colorize", "sensing")),
}
LABELS = {
    "mala": "MALA (600 steps, adaptive)",
    "ula": "ULA (600 steps)",
    "annealed_langevin": "annealed Langevin (10 x 100 + 1000 final)",
    "dps": "DPS (200 steps, norm, zeta 1)",
    "dps_sq": "DPS (200 steps, squared norm)",
    "diffpir": "DiffPIR (100 steps, quad)",
    "ddrm": "DDRM (50 steps, eta 0.85)",
    "ddnm": "DDNM+ (100 steps)",
    "pigdm": "PiGDM (100 steps)",
    "mmps": "MMPS (defaults)",
    "daps": "DAPS (defaults)",
    "pnp_dm": "PnP-DM (defaults)",
    "red_diff": "RED-diff (defaults)",
    "repaint": "RePaint (defaults)",
    "tds": "TDS (K = 16, 100 levels)",
    "mcgdiff": "MCGdiff (K = 16, 100 levels)",
    "fps": "FPS (K = 16, 100 levels)",
    "azula_mmps": "peer: azula 0.11.1 MMPS (its defaults: 64 DDPM steps, GMRES 1)",
}


def run(out: str, only: list[str] | None, problems: list[str] | None, threads: int, extra: list[str]) -> None:
    from invgen.errors import DivergenceError
    from invgen.testing import oracle

    torch.set_num_threads(threads)
    results = json.loads(Path(out).read_text()) if os.path.exists(out) else {"meta": {}, "cells": {}}
    results["meta"].update(
        {"threads": threads, "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    )
    settings = dict(SETTINGS)
    for spec in extra:  # LABEL=SOLVER:key=value,key=value
        label, rest = spec.split("=", 1)
        name, _, opts = rest.partition(":")
        options = {}
        for kv in filter(None, opts.split(",")):
            k, v = kv.split("=")
            options[k] = json.loads(v) if v[:1].isdigit() or v[:1] in "-[{tf" else v
        settings[label] = (name, options, "all")
    names = problems or [*oracle.EASY, *oracle.HARD]
    for label, (solver, options, support) in settings.items():
        if only and label not in only:
            continue
        for pname in names:
            if support != "all" and pname not in support:
                continue
            key = f"{label}|{pname}"
            if key in results["cells"]:
                continue
            try:
                r = oracle.evaluate(solver, pname, **options)
            except DivergenceError as e:  # recorded as diverged (the report's "diverged" cell)
                results["cells"][key] = {
                    "solver": solver,
                    "options": options,
                    "sw_multiple": math.inf,
                    "weight_multiple": math.inf,
                    "diverged": str(e),
                    "nfe": 0,
                    "seconds": 0.0,
                }
                print(f"{key}: diverged: {e}", file=sys.stderr, flush=True)
            except Exception as e:  # a solver that cannot run a problem is recorded, not fatal
                results["cells"][key] = {"error": f"{type(e).__name__}: {e}"}
                print(f"{key}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            else:
                results["cells"][key] = {
                    "solver": solver,
                    "options": options,
                    "sw": r.sw,
                    "weight_error": r.weight_error,
                    "sw_multiple": r.sw_multiple,
                    "weight_multiple": r.weight_multiple,
                    "variance_ratio": r.variance_ratio,
                    "nfe": r.nfe,
                    "seconds": r.seconds,
                }
                print(
                    f"{key}: SW x{r.sw_multiple:.2f}  w x{r.weight_multiple:.2f}  var {r.variance_ratio:.2f}  "
                    f"NFE {r.nfe}  {r.seconds:.1f}s",
                    flush=True,
                )
            with open(out, "w") as f:
                json.dump(results, f, indent=1)


def report(out: str) -> str:
    from invgen.testing import oracle

    res = json.loads(Path(out).read_text())
    cells = res["cells"]
    lines = []
    for title, names in (("Easy problems", oracle.EASY), ("Hard problems", oracle.HARD)):
        lines += [f"### {title}", ""]
        lines.append("| solver | " + " | ".join(f"{n} ({oracle.CASES[n].description})" for n in names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for label in [*SETTINGS, *sorted(set(k.split("|")[0] for k in cells) - set(SETTINGS))]:
            row = []
            for n in names:
                c = cells.get(f"{label}|{n}")
                if c is None:
                    row.append("")
                elif "error" in c:
                    row.append("n/a")
                elif not c["sw_multiple"] < 1000:  # NaN or exploded chains
                    row.append(f"diverged ({c['nfe']}, {c['seconds']:.1f} s)")
                else:
                    row.append(
                        f"{c['sw_multiple']:.2f} / {c['weight_multiple']:.1f} / {c['variance_ratio']:.2f} "
                        f"({c['nfe']}, {c['seconds']:.1f} s)"
                    )
            if any(row):
                lines.append(f"| {LABELS.get(label, label)} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--problems", nargs="*")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=[], help="LABEL=SOLVER:key=value,... extra settings")
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    if a.report:
        print(report(a.out))
    else:
        run(a.out, a.only, a.problems, a.threads, a.extra)


if __name__ == "__main__":
    main()
