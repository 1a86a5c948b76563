"""benchmarks/solver_table.py: the best baseline per task, each solver's LPIPS margin to it, and the verdict matrix."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "solver_table.py"
FIELDS = ["suite", "dataset", "task", "prior", "label", "solver", "n_images", "n_seeds", "n_samples", "nfe", "seconds"]
FIELDS += ["psnr", "psnr_ci", "ssim", "lpips_samples", "lpips_samples_ci"]


def _module():
    spec = importlib.util.spec_from_file_location("solver_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(task: str, solver: str, lpips: float, prior: str = "diffusion-mnist", label: str | None = None) -> dict:
    prior = "none" if solver in ("pinv", "tikhonov", "tv") else prior
    return dict(
        zip(
            FIELDS, ["s", "mnist", task, prior, label or solver, solver, 50, 1, 4, 20, 0.5, 20.0, 0.3, 0.8, lpips, 0.01]
        )
    )


def test_margins_and_verdicts(tmp_path):
    rows = [
        _row("sr4", "pinv", 0.20),
        _row("sr4", "tv", 0.15),
        _row("sr4", "tikhonov", 0.30),
        _row("sr4", "ddrm", 0.10),
        _row("sr4", "dps", 0.18, label="dps-250"),
        _row("deblur", "tv", 0.05),
        _row("deblur", "dps", 0.04, label="dps-250"),
    ]
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    md = _module().tables(_module().load([str(path)]))
    assert "| **tv** | 20.00 ± 0.30 | 0.800 | 0.1500 ± 0.0100 |" in md  # the best baseline, bold
    assert "| ddrm | 20.00 ± 0.30 | 0.800 | 0.1000 ± 0.0100 | -0.0500 | 20 | 0.5 |" in md
    assert "| dps-250 | 20.00 ± 0.30 | 0.800 | 0.1800 ± 0.0100 | +0.0300 |" in md
    assert "| mnist / sr4 | yes (-0.050) | **no** (+0.030) |" in md
    assert "| mnist / deblur | - | yes (-0.010) |" in md


def test_merge_joins_a_later_suite_into_the_same_tables():
    m = _module()
    old = [_row("sr4", "tv", 0.15), _row("sr4", "ddrm", 0.10)]
    new = [dict(_row("sr4", "mmps", 0.08), suite="s-new"), dict(_row("sr4", "ddrm", 0.5), suite="s-new")]
    md = m.tables(old + new, {"s-new": "s"})
    assert md.count("### mnist / sr4") == 1  # one table, not one per suite
    assert "| mmps | 20.00 ± 0.30 | 0.800 | 0.0800 ± 0.0100 | -0.0700 |" in md
    assert "0.5000" not in md  # ddrm kept from the first suite's rows
    assert m.tables(old + new).count("### mnist / sr4") == 2
