"""The benchmark store: foreign, damaged, read-only and folder paths refused with one clear error naming the file;
``bench report`` opens read-only and creates nothing; concurrent runs on one database split the blocks through
leases (each block computed once, values equal to a single run), and a dead run's leases are taken over."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invgen.bench import report
from invgen.bench.runner import freeze_suite, run_suite
from invgen.bench.store import APPLICATION_ID, Store, StoreError
from invgen.bench.suite import parse_suite

N_IMAGES = 6


def _images(folder: Path, n: int = N_IMAGES, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.uniform(0.2, 0.8, (size, size))
        Image.fromarray((img * 255).round().astype(np.uint8), mode="L").save(folder / f"img{i}.png")
    return folder


def _suite_text(folder: Path, solvers: str = "  - pinv\n  - tikhonov\n") -> str:
    return (
        "name: tiny\nseeds: [0]\nsamples: 2\nbatch: 1\nmetrics: [psnr]\ngrid_images: 0\n"
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
        "SELECT c.task, c.label, r.image_id, r.sample, r.metric, r.value FROM results r JOIN cells c USING (cell_id)"
    ).fetchall()
    con.close()
    return {r[:5]: r[5] for r in rows}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def finished_db(tmp_path) -> Path:
    suite = parse_suite(_suite_text(_images(tmp_path / "imgs"), "  - pinv\n"), "tiny.yaml")
    db = tmp_path / "r.sqlite"
    run_suite(suite, db, progress=False)
    return db


# -- refusing what is not invgen's -----------------------------------------------------------------------------------
def _foreign(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users (name) VALUES ('ada')")
    con.commit()
    con.close()
    return path


def test_foreign_sqlite_database_is_refused_untouched(tmp_path):
    db = _foreign(tmp_path / "app.sqlite")
    before = _digest(db)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"app.sqlite: not an invgen benchmark database \(no 'runs' table;"):
            Store(db, readonly=readonly)
    with pytest.raises(StoreError, match=r"its tables: users\); refusing to touch it"):
        report.write_report(db, tmp_path / "out")
    assert _digest(db) == before and not (tmp_path / "out").exists()
    assert not Path(str(db) + "-wal").exists()


def test_database_with_another_application_id_is_refused(tmp_path, finished_db):
    con = sqlite3.connect(finished_db)
    con.execute("PRAGMA application_id = 1234")
    con.close()
    with pytest.raises(StoreError, match=r"application_id 0x4d2"):
        Store(finished_db)


def test_report_opens_read_only_and_creates_nothing(tmp_path, finished_db):
    con = sqlite3.connect(finished_db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    con.close()
    before = _digest(finished_db)
    written = report.write_report(finished_db, tmp_path / "rep")
    assert written["markdown"] and _digest(finished_db) == before
    with Store(finished_db, readonly=True) as store, pytest.raises(sqlite3.OperationalError, match=r"readonly|query"):
        store.db.execute("CREATE TABLE x (y)")
    # an empty SQLite file is not given invgen's tables by a report
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(StoreError, match=r"empty.sqlite: an empty database, no benchmark results"):
        report.write_report(empty, tmp_path / "rep2")
    assert empty.stat().st_size == 0


def test_database_written_before_leases_gains_the_table(tmp_path, finished_db):
    con = sqlite3.connect(finished_db)
    con.execute("DROP TABLE leases")
    con.execute("PRAGMA application_id = 0")
    con.commit()
    con.close()
    assert report.summarise(finished_db)  # read-only: fine without it
    with Store(finished_db) as store:
        assert store.leases() == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"this is not a database at all\n" * 10), "not a SQLite database, or a damaged one"),
        ("truncated", "not a SQLite database, or a damaged one"),
        (lambda p: p.mkdir(), "is a folder, not a database file"),
    ],
    ids=["not-a-database", "truncated", "folder"],
)
@pytest.mark.parametrize("readonly", [False, True], ids=["run", "report"])
def test_malformed_database_path_gives_one_line_error(tmp_path, finished_db, make, message, readonly):
    db = tmp_path / "bad.sqlite"
    if make == "truncated":
        con = sqlite3.connect(finished_db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        data = finished_db.read_bytes()
        db.write_bytes(data[: len(data) // 3])
    else:
        make(db)
    with pytest.raises(StoreError) as info:
        Store(db, readonly=readonly)
    text = str(info.value)
    assert text.startswith(f"{db}: ") and message in text and "\n" not in text


def test_read_only_database_is_refused_for_runs(tmp_path, finished_db, monkeypatch):
    if os.geteuid() == 0:  # root writes anyway: pretend the permission bits hold
        import invgen.bench.store as store_module

        real = os.access
        monkeypatch.setattr(
            store_module.os,
            "access",
            lambda p, mode: False if mode == os.W_OK and Path(p) == finished_db else real(p, mode),
        )
    else:
        finished_db.chmod(0o444)
    with pytest.raises(StoreError, match=r"r.sqlite: read-only file: `bench run` writes results into it"):
        Store(finished_db)
    assert report.summarise(finished_db)  # a report still reads it


# -- leases ----------------------------------------------------------------------------------------------------------
def test_claim_protocol(tmp_path):
    with Store(tmp_path / "l.sqlite") as store:
        store.add_cell("c", "s", {k: "x" for k in ("dataset", "task", "prior", "solver", "label")} | {
            "seed": 0, "n_samples": 1}, {})  # fmt: skip
        assert store.claim("c", 0, ["a"], "run A", 60) == "claimed"
        assert store.claim("c", 0, ["a"], "run B", 60) == "busy"
        assert store.claim("c", 0, ["a"], "run A", 60) == "claimed"  # its own lease: renewed
        store.db.execute("UPDATE leases SET expires = ?", (time.time() - 1,))
        assert store.claim("c", 0, ["a"], "run B", 60) == "taken over"  # expired
        store.db.execute("UPDATE leases SET pid = 2147483646, expires = ?", (time.time() + 600,))
        assert store.claim("c", 0, ["a"], "run C", 60) == "taken over"  # its process is gone (same host)
        run = store.start_run("s", "h", "cpu")
        from invgen.bench.store import ImageResult

        store.write("c", run, [ImageResult("a", 1, 0.1, {(0, "psnr"): 1.0})], block=0)
        assert store.leases() == [] and store.claim("c", 0, ["a"], "run B", 60) == "done"


def test_run_waits_for_a_lease_of_another_host_and_takes_it_over_when_it_expires(tmp_path):
    suite = parse_suite(_suite_text(_images(tmp_path / "imgs", n=2), "  - pinv\n"), "tiny.yaml")
    db = tmp_path / "w.sqlite"
    frozen = freeze_suite(suite, Path(str(db) + ".frozen"))
    from invgen.bench.runner import plan_blocks

    with Store(db) as store:
        blocks, _ = plan_blocks(suite, store, frozen, "cpu")
        target = blocks[0]
        store.db.execute(
            "INSERT INTO leases (cell_id, block, owner, host, pid, expires) VALUES (?, ?, ?, ?, ?, ?)",
            (target.cell_id, target.index, "run 0 (elsewhere)", "other-" + platform.node(), 1, time.time() + 2.0),
        )
    done = []
    t0 = time.perf_counter()
    summary = run_suite(
        suite, db, progress=False, on_block=lambda r: done.append((r.cell_id, r.index, time.perf_counter()))
    )
    assert summary.blocks_run == len(blocks) and summary.images_run == len(blocks)
    late = [t for c, i, t in done if (c, i) == (target.cell_id, target.index)]
    assert len(late) == 1 and late[0] - t0 >= 1.5  # taken over only once the lease had expired
    with Store(db) as store:
        assert store.leases() == [] and store.counts()["images"] == 2 * 2


# -- two processes on one database -----------------------------------------------------------------------------------
WORKER = """
import json, os, sys, time
import torch
import invgen
from invgen.bench.runner import run_suite
from invgen.bench.suite import parse_suite

torch.set_num_threads(1)


class Sleepy:
    @invgen.hookimpl
    def register_solvers(self, register):
        def sleepy(prior, operator, y, *, n_samples, generator, delay=0.05):
            time.sleep(delay)  # the cost of a real solver: long enough for the two runs to overlap
            x = operator.pinv(y)
            return torch.stack([x] * n_samples)

        register("sleepy-pinv", lambda **o: invgen.Solver("sleepy-pinv", sleepy, (), **o), needs=())


invgen.plugin_manager().register(Sleepy(), name="sleepy")
suite_file, db, frozen, go, out = sys.argv[1:6]
suite = parse_suite(open(suite_file).read(), suite_file)
open(out + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
blocks = []
t0 = time.perf_counter()
s = run_suite(suite, db, data_dir=frozen, progress=False, on_block=lambda r: blocks.append([r.cell_id, r.index]))
json.dump({"blocks": blocks, "run": s.blocks_run, "others": s.blocks_by_others, "skipped": s.blocks_skipped,
           "seconds": time.perf_counter() - t0, "pid": os.getpid()}, open(out, "w"))
"""


def _start(tmp_path: Path, suite_file: Path, db: Path, name: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.json"
    args = [str(suite_file), str(db), str(tmp_path / "frozen"), str(tmp_path / "go"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), *args], env=env), out


def _go(tmp_path: Path, procs: list[tuple[subprocess.Popen, Path]]) -> None:
    """Start the runs together, once every process has imported torch and invgen."""
    deadline = time.monotonic() + 300
    while not all(Path(str(out) + ".ready").exists() for _, out in procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p, _ in procs), "a worker failed to start"
        time.sleep(0.05)
    (tmp_path / "go").touch()


def test_two_processes_split_the_blocks_and_compute_each_once(tmp_path):
    folder = _images(tmp_path / "imgs")
    solvers = "  - {name: sleepy-pinv, options: {delay: 0.1}}\n  - tikhonov\n"
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(_suite_text(folder, solvers))
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    n_blocks = 2 * 2 * N_IMAGES  # 2 tasks x 2 solvers (no prior) x 6 one-image blocks

    single_db = tmp_path / "single.sqlite"  # first: it freezes the observations both runs then read
    single_proc = _start(tmp_path, suite_file, single_db, "single")
    _go(tmp_path, [single_proc])
    assert single_proc[0].wait(timeout=600) == 0
    single = json.loads(single_proc[1].read_text())
    assert single["run"] == n_blocks
    (tmp_path / "go").unlink()

    db = tmp_path / "shared.sqlite"
    procs = [_start(tmp_path, suite_file, db, f"p{i}") for i in range(2)]
    _go(tmp_path, procs)
    for proc, _ in procs:
        assert proc.wait(timeout=600) == 0
    runs = [json.loads(out.read_text()) for _, out in procs]

    computed = [tuple(b) for r in runs for b in r["blocks"]]
    assert len(computed) == len(set(computed)) == n_blocks, "a block was computed twice, or one was left out"
    assert all(r["run"] >= 1 for r in runs), f"one process did all the work: {[r['run'] for r in runs]}"
    assert sum(r["run"] for r in runs) == n_blocks
    assert [r["run"] + r["others"] for r in runs] == [n_blocks, n_blocks]
    with Store(db, readonly=True) as store:
        assert store.leases() == [] and store.counts()["images"] == n_blocks
        assert {r["status"] for r in store.runs()} == {"done"}
    assert _values(db) == _values(single_db)
    print(
        f"\n[store concurrency] {n_blocks} blocks: blocks per process {[r['run'] for r in runs]}, run_suite "
        f"{[round(r['seconds'], 2) for r in runs]} s in the two processes vs {single['seconds']:.2f} s in one"
    )


def test_concurrent_freezes_into_one_folder_lose_nothing(tmp_path):
    """Two runs starting together freeze into the same folder: the manifest keeps every file's checksum."""
    import threading

    from invgen.data.degrade import _manifest, freeze

    suite = parse_suite(_suite_text(_images(tmp_path / "imgs", n=2), "  - pinv\n"), "tiny.yaml")
    dataset = suite.datasets[0].load()
    jobs = [(task, seed) for task in suite.tasks for seed in (0, 1, 2)] * 2
    errors: list[BaseException] = []

    def work(task, seed):
        try:
            freeze(tmp_path / "frozen", dataset, suite.datasets[0].label, task.config(), seed)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_manifest(tmp_path / "frozen")) == len(jobs) // 2
