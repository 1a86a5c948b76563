"""The runner: frozen observations, SQLite rows, resume after SIGKILL, the Ray executor, the report from a real run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invgen.bench.runner import run_suite
from invgen.bench.store import MEAN, Store
from invgen.bench.suite import parse_suite
from invgen.data.degrade import FrozenDataError, load_frozen

N_IMAGES = 6


def _images(folder: Path, n: int = N_IMAGES, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = (
            0.5
            + 0.3 * np.sin(2 * np.pi * (xx * (i % 3 + 1) + yy * (i // 3 + 1)))
            + 0.05 * rng.standard_normal(xx.shape)
        )
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), mode="L").save(folder / f"img{i}.png")
    return folder


def _suite(folder: Path, *, batch: int = 2, solvers: str | None = None, seeds: str = "[0]") -> str:
    solvers = solvers or (
        "  - pinv\n"
        "  - {name: ddrm, options: {steps: 5}}\n"
        "  - {name: annealed_langevin, options: {n_levels: 3, steps_per_level: 3}}\n"
    )
    return (
        "name: tiny\n"
        f"seeds: {seeds}\nsamples: 3\nbatch: {batch}\nmetrics: [psnr, ssim]\ngrid_images: 2\n"
        "datasets:\n"
        f"  - name: folder\n    options: {{path: {folder}}}\n"
        "    priors:\n      - {name: gaussian, options: {image_shape: [1, 16, 16], seed: 1}}\n"
        "tasks:\n"
        "  - {name: sr2, operator: superres, options: {scale: 2}, noise: 0.05}\n"
        "  - {name: inpaint, operator: inpaint, options: {mask: random, ratio: 0.5, seed: 3}, noise: 0.05}\n"
        f"solvers:\n{solvers}"
    )


def _values(db: Path) -> dict[tuple, float]:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT c.task, c.label, c.seed, r.image_id, r.sample, r.metric, r.value FROM results r "
        "JOIN cells c USING (cell_id)"
    ).fetchall()
    con.close()
    return {r[:6]: r[6] for r in rows}


def test_run_writes_every_row_and_resumes_without_recomputing(tmp_path):
    folder = _images(tmp_path / "imgs")
    suite = parse_suite(_suite(folder), "tiny.yaml")
    assert len(suite.cells) == 2 * 3
    db = tmp_path / "r.sqlite"
    s1 = run_suite(suite, db, progress=False)
    assert (s1.blocks_run, s1.blocks_skipped, s1.images_run) == (6 * 3, 0, 6 * N_IMAGES)
    with Store(db) as st:
        # one row per image x (3 samples + the mean) x 2 metrics, per cell
        assert st.counts() == {"runs": 1, "cells": 6, "images": 6 * N_IMAGES, "results": 6 * N_IMAGES * 4 * 2}
        assert st.runs()[0]["status"] == "done" and st.runs()[0]["torch_version"] == torch.__version__
    first = _values(db)
    s2 = run_suite(suite, db, progress=False)
    assert (s2.blocks_run, s2.blocks_skipped, s2.images_run) == (0, 18, 0)
    assert _values(db) == first

    # the stored pinv PSNR is the PSNR of A^+ y computed here from the frozen observations
    import invgen

    frozen = sorted((tmp_path / "r.sqlite.frozen").glob("folder__sr2__*.safetensors"))
    fz = load_frozen(frozen[0])
    op = fz.operator()
    y = torch.stack([fz.y[i] for i in fz.ids])
    x = torch.stack([fz.x[i] for i in fz.ids])
    expected = invgen.metrics.psnr(op.pinv(y).clamp(0, 1), x)
    got = [first[("sr2", "pinv", 0, i, MEAN, "psnr")] for i in fz.ids]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)
    # a deterministic baseline gives identical samples: every sample's PSNR equals the mean's
    assert first[("sr2", "pinv", 0, fz.ids[0], 2, "psnr")] == pytest.approx(got[0], rel=1e-6)
    # artifacts for the grid images only
    arts = sorted(p.name for p in (tmp_path / "r.sqlite.artifacts").rglob("*.safetensors"))
    assert len(arts) == 6 * 2


def test_results_do_not_depend_on_what_ran_before(tmp_path):
    """Block seeds are fixed by (seed, cell, block): running a subset first changes no value."""
    folder = _images(tmp_path / "imgs")
    full = parse_suite(_suite(folder), "tiny.yaml")
    run_suite(full, tmp_path / "a.sqlite", progress=False)
    part = parse_suite(
        _suite(folder, solvers="  - {name: annealed_langevin, options: {n_levels: 3, steps_per_level: 3}}\n")
    )
    db = tmp_path / "b.sqlite"
    run_suite(part, db, progress=False, data_dir=tmp_path / "a.sqlite.frozen")
    run_suite(full, db, progress=False, data_dir=tmp_path / "a.sqlite.frozen")
    assert _values(db) == _values(tmp_path / "a.sqlite")


def test_frozen_observations_are_checked(tmp_path):
    folder = _images(tmp_path / "imgs")
    suite = parse_suite(_suite(folder, solvers="  - pinv\n"))
    db = tmp_path / "r.sqlite"
    run_suite(suite, db, progress=False)
    path = sorted((tmp_path / "r.sqlite.frozen").glob("folder__inpaint__*.safetensors"))[0]
    fz = load_frozen(path)
    assert set(fz.ids) == {f"img{i}" for i in range(N_IMAGES)}
    # the stored mask is the operator's mask
    op = fz.operator()
    from safetensors.torch import load_file

    mask = load_file(str(path))["mask/16x16"]
    assert torch.equal(mask, op.mask_for((1, 1, 16, 16)).float()) and 0.3 < float(mask.mean()) < 0.7
    # a changed operator no longer reproduces the frozen probe
    fz.task = {**fz.task, "options": {**fz.task["options"], "seed": 4}}
    with pytest.raises(FrozenDataError, match="no longer reproduces its frozen response"):
        fz.operator()
    # freezing again elsewhere gives the same content digest (the cell ids), whatever the file layout
    from invgen.bench.runner import freeze_suite
    from invgen.bench.suite import parse_suite as _parse

    again = freeze_suite(_parse(_suite(folder, solvers="  - pinv\n")), tmp_path / "again")
    assert {f.path.name: f.content for f in again.values()}[path.name] == fz.content
    # a tampered file fails its checksum
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FrozenDataError, match="checksum mismatch"):
        load_frozen(path)


def test_sigkill_mid_run_loses_nothing_and_recomputes_nothing(tmp_path):
    folder = _images(tmp_path / "imgs", n=8)
    slow = "  - {name: annealed_langevin, options: {n_levels: 10, steps_per_level: 60}}\n"
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(_suite(folder, batch=1, solvers=slow))
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "invgen.cli", "bench", "run", str(suite_file), "--db", str(db), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                con = sqlite3.connect(db, timeout=1)
                done = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                continue
            if done >= 3:
                break
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[0][-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = _values(db)
    con = sqlite3.connect(db)
    kept_images = set(con.execute("SELECT cell_id, image_id FROM images").fetchall())
    status = con.execute("SELECT status, ended FROM runs").fetchall()
    con.close()
    assert len(kept_images) >= 3 and len(kept_images) < 16
    assert status == [("running", None)]  # the killed run is visible as interrupted
    # every kept image is complete: 3 samples + mean, 2 metrics
    assert len(kept) == 8 * len(kept_images)

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{16 - len(kept_images)} images" in out.stdout
    final = _values(db)
    assert len(final) == 16 * 8
    assert {k: final[k] for k in kept} == kept  # nothing lost, nothing rewritten
    con = sqlite3.connect(db)
    by_run = dict(con.execute("SELECT run_id, COUNT(*) FROM images GROUP BY run_id").fetchall())
    con.close()
    assert by_run == {1: len(kept_images), 2: 16 - len(kept_images)}  # the second run recomputed none of the first's


def test_ray_executor_gives_the_local_results(tmp_path):
    import ray  # noqa: F401  (the dev install includes the ray extra)

    folder = _images(tmp_path / "imgs", n=4)
    suite = parse_suite(_suite(folder, solvers="  - pinv\n  - {name: ddrm, options: {steps: 5}}\n"))
    run_suite(suite, tmp_path / "local.sqlite", progress=False)
    s = run_suite(
        suite, tmp_path / "ray.sqlite", progress=False, executor="ray", data_dir=tmp_path / "local.sqlite.frozen"
    )
    assert s.blocks_run == 2 * 2 * 2
    a, b = _values(tmp_path / "local.sqlite"), _values(tmp_path / "ray.sqlite")
    assert a.keys() == b.keys() and len(a) == 2 * 2 * 4 * 4 * 2
    np.testing.assert_allclose([b[k] for k in a], [a[k] for k in a], rtol=1e-5)


def test_identity_operator_freezes_noisy_and_noiseless(tmp_path):
    """The identity returns its input, so its probe response (and a noiseless y) once shared memory with the stored
    input and safetensors refused to write the file (found by the `families` suite's denoising task)."""
    folder = _images(tmp_path / "imgs", n=2)
    text = _suite(folder, solvers="  - pinv\n").split("tasks:\n")[0] + (
        "tasks:\n"
        "  - {name: denoise, operator: identity, noise: 0.1}\n"
        "  - {name: clean, operator: identity, noise: 0.0}\n"
        "solvers:\n  - pinv\n"
    )
    db = tmp_path / "r.sqlite"
    summary = run_suite(parse_suite(text), db, progress=False)
    assert summary.images_run == 4
    for path in sorted((tmp_path / "r.sqlite.frozen").glob("folder__*.safetensors")):
        fz = load_frozen(path)
        x, y = fz.x["img0"], fz.y["img0"]
        noise = float((y - x).std())
        assert (noise == 0.0) if "clean" in path.name else (0.08 < noise < 0.12), (path.name, noise)


def test_sensing_observations_are_solved_by_a_fresh_operator(tmp_path):
    """Regression: the runner rebuilds each task's operator to solve frozen observations, and `sensing` did not know
    its input shape before it had been applied to an image (ShapeError in the first sensing cell of a suite). The
    runner now binds the operator to the images' shape; pinv of a noiseless m = d sensing problem is exact."""
    folder = _images(tmp_path / "imgs", n=2)
    text = _suite(folder, solvers="  - pinv\n").split("tasks:\n")[0] + (
        "tasks:\n  - {name: cs, operator: sensing, options: {m: 256, seed: 0}, noise: 0.0}\nsolvers:\n  - pinv\n"
    )
    db = tmp_path / "r.sqlite"
    summary = run_suite(parse_suite(text), db, progress=False)
    assert summary.images_run == 2
    psnrs = [v for k, v in _values(db).items() if k[5] == "psnr"]
    assert len(psnrs) == 2 * 4 and min(psnrs) > 40.0, psnrs
