"""The shipped `quick` suite end to end, as CI runs it: real MNIST test images, every installed family, a report."""

from __future__ import annotations

import sqlite3

from invgen.bench.report import write_report
from invgen.bench.runner import run_suite
from invgen.bench.suite import load_suite


def test_quick_suite_runs_and_reports(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("INVGEN_DATA", str(data_dir))
    suite = load_suite("quick")
    db = tmp_path / "quick.sqlite"
    summary = run_suite(suite, db, progress=False)
    assert summary.images_run == 4 * len(suite.cells) and summary.blocks_skipped == 0
    con = sqlite3.connect(db)
    n_rows = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert n_rows == len(suite.cells) * 4 * (suite.samples + 1) * len(suite.metrics)
    lpips = dict(
        con.execute(
            "SELECT c.task || '/' || c.label, AVG(r.value) FROM results r JOIN cells c USING (cell_id) "
            "WHERE r.metric = 'lpips' AND r.sample >= 0 GROUP BY c.task, c.label"
        ).fetchall()
    )
    priors = {r[0] for r in con.execute("SELECT DISTINCT prior FROM cells")}
    con.close()
    assert "none" in priors and len(priors) >= 2, priors  # the baselines and at least the diffusion family
    for task in ("sr4", "inpaint-box"):
        baselines = min(lpips[f"{task}/{b}"] for b in ("pinv", "tikhonov", "tv"))
        learned = min(v for k, v in lpips.items() if k.startswith(task + "/") and k.split("/")[1] not in
                      ("pinv", "tikhonov", "tv"))  # fmt: skip
        assert learned < 0.8 * baselines, (task, learned, baselines)

    written = write_report(db, tmp_path / "report", suite="quick")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "sr4" in md and "inpaint-box" in md and "ddrm" in md
    assert len(written["grids"]) == len(suite.cells)
