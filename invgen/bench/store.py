"""The SQLite result store of benchmark runs (WAL mode; one writer, any number of readers).

Schema:

- ``runs``: one row per invocation of a suite: ``run_id, suite, suite_hash, invgen_version, git_commit,
  torch_version, device, host, started, ended, status`` (``running``, ``done``, ``failed``; a killed run stays
  ``running`` with ``ended`` NULL).
- ``cells``: one row per benchmark cell (dataset x task x prior x solver x seed), keyed by ``cell_id``, the hash of
  its canonical config: ``cell_id, suite, dataset, task, prior, solver, label, seed, n_samples, config`` (JSON).
- ``images``: the completion marker of one image of one cell, written in the same transaction as its results:
  ``cell_id, image_id, run_id, nfe, seconds`` (seconds per image: the solver's time of the batch it ran in,
  divided by the images of that batch; nfe: network evaluations per sample).
- ``results``: one row per image x sample x metric: ``cell_id, image_id, sample, metric, value``; ``sample`` is
  the sample index, or ``-1`` for the posterior mean.

A cell's image is either complete (its ``images`` row and all its ``results`` rows) or absent: a run killed at any
point resumes with the same command, loses no finished row and recomputes none.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEAN = -1  # the ``sample`` index of the posterior mean's rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    suite TEXT NOT NULL,
    suite_hash TEXT NOT NULL,
    invgen_version TEXT NOT NULL,
    git_commit TEXT,
    torch_version TEXT NOT NULL,
    device TEXT NOT NULL,
    host TEXT,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    dataset TEXT NOT NULL,
    task TEXT NOT NULL,
    prior TEXT NOT NULL,
    solver TEXT NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    image_id TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    nfe INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (cell_id, image_id)
);
CREATE TABLE IF NOT EXISTS results (
    cell_id TEXT NOT NULL,
    image_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (cell_id, image_id, sample, metric)
);
"""


@dataclass(frozen=True)
class ImageResult:
    """The outcome of one image of one cell: metric values per sample (``MEAN`` for the posterior mean)."""

    image_id: str
    nfe: int
    seconds: float
    values: dict[tuple[int, str], float]


class Store:
    """A benchmark result database.

    Args:
        path: the SQLite file (created with its parent folder when missing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------------------------
    def start_run(self, suite: str, suite_hash: str, device: str) -> int:
        """Record the start of a run and return its id."""
        import platform

        import torch

        import invgen

        cur = self.db.execute(
            "INSERT INTO runs (suite, suite_hash, invgen_version, git_commit, torch_version, device, host, started, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
            (
                suite,
                suite_hash,
                invgen.__version__,
                git_commit(),
                torch.__version__,
                device,
                platform.node(),
                time.time(),
            ),
        )
        return int(cur.lastrowid)

    def end_run(self, run_id: int, status: str = "done") -> None:
        self.db.execute("UPDATE runs SET ended = ?, status = ? WHERE run_id = ?", (time.time(), status, run_id))

    def runs(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    # -- cells ---------------------------------------------------------------------------------------------------
    def add_cell(self, cell_id: str, suite: str, key: dict[str, Any], config: dict[str, Any]) -> None:
        """Record a cell (idempotent: an existing cell keeps its row)."""
        self.db.execute(
            "INSERT OR IGNORE INTO cells (cell_id, suite, dataset, task, prior, solver, label, seed, n_samples, "
            "config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cell_id,
                suite,
                key["dataset"],
                key["task"],
                key["prior"],
                key["solver"],
                key["label"],
                int(key["seed"]),
                int(key["n_samples"]),
                json.dumps(config, sort_keys=True),
            ),
        )

    def done_images(self, cell_id: str) -> set[str]:
        """Ids of the images of ``cell_id`` already complete."""
        rows = self.db.execute("SELECT image_id FROM images WHERE cell_id = ?", (cell_id,)).fetchall()
        return {r[0] for r in rows}

    def write(self, cell_id: str, run_id: int, results: Sequence[ImageResult]) -> None:
        """Write complete images atomically (all rows of all ``results`` or none)."""
        with self.transaction():
            for r in results:
                self.db.executemany(
                    "INSERT OR REPLACE INTO results (cell_id, image_id, sample, metric, value) VALUES (?, ?, ?, ?, ?)",
                    [(cell_id, r.image_id, s, m, float(v)) for (s, m), v in r.values.items()],
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO images (cell_id, image_id, run_id, nfe, seconds) VALUES (?, ?, ?, ?, ?)",
                    (cell_id, r.image_id, run_id, int(r.nfe), float(r.seconds)),
                )

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # -- reading -------------------------------------------------------------------------------------------------
    def cells(self, suite: str | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT * FROM cells"
            + (" WHERE suite = ?" if suite else "")
            + " ORDER BY dataset, task, prior, label, seed"
        )
        cur = self.db.execute(q, (suite,) if suite else ())
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            d = dict(zip(names, row))
            d["config"] = json.loads(d["config"])
            out.append(d)
        return out

    def counts(self) -> dict[str, int]:
        """Row counts of each table."""
        return {
            t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("runs", "cells", "images", "results")
        }

    def rows(self, cell_ids: Iterable[str] | None = None) -> list[tuple[str, str, int, str, float]]:
        """``(cell_id, image_id, sample, metric, value)`` rows (all, or of the given cells)."""
        if cell_ids is None:
            return self.db.execute("SELECT cell_id, image_id, sample, metric, value FROM results").fetchall()
        ids = list(cell_ids)
        marks = ",".join("?" * len(ids))
        return self.db.execute(
            f"SELECT cell_id, image_id, sample, metric, value FROM results WHERE cell_id IN ({marks})", ids
        ).fetchall()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def git_commit() -> str | None:
    """The commit of the invgen checkout, if it is one (read from .git, no subprocess); else None."""
    root = Path(__file__).resolve().parents[2] / ".git"
    try:
        head = (root / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            path = root / ref
            if path.is_file():
                return path.read_text().strip()
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
            return None
        return head
    except OSError:
        return None
