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

- ``leases``: the blocks being computed: ``cell_id, block, owner, host, pid, expires``. A run claims a block (a lease
  row, written in a ``BEGIN IMMEDIATE`` transaction that first checks the block is neither complete nor leased by
  someone else), renews its leases while it works (:class:`LeaseKeeper`) and deletes the row in the transaction that
  writes the block's results. Two runs on one database so split the work and compute no block twice; the lease of a
  killed run is taken over when it expires, or at once when its process is known dead (same host, pid gone).

A cell's image is either complete (its ``images`` row and all its ``results`` rows) or absent: a run killed at any
point resumes with the same command, loses no finished row and recomputes none.

A database is recognised as invgen's by its tables (and, when created by invgen, its SQLite ``application_id``); any
other SQLite file is refused before anything is written to it, and ``readonly=True`` (``bench report``) opens it
with ``mode=ro``. A folder, a damaged file, a file that is not a database and a read-only file raise
:class:`StoreError` naming the file.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invgen.errors import InvgenError

MEAN = -1  # the ``sample`` index of the posterior mean's rows
APPLICATION_ID = 0x696E7667  # "invg": SQLite's application_id of the databases invgen creates

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
CREATE TABLE IF NOT EXISTS leases (
    cell_id TEXT NOT NULL,
    block INTEGER NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (cell_id, block)
);
"""
# the tables (and their columns) that make a database invgen's; ``leases`` is added to older databases on open
TABLES = {
    "runs": {"run_id", "suite", "suite_hash", "invgen_version", "torch_version", "device", "started", "status"},
    "cells": {"cell_id", "suite", "dataset", "task", "prior", "solver", "label", "seed", "n_samples", "config"},
    "images": {"cell_id", "image_id", "run_id", "nfe", "seconds"},
    "results": {"cell_id", "image_id", "sample", "metric", "value"},
}


class StoreError(InvgenError, RuntimeError):
    """A benchmark database cannot be used: not invgen's, damaged or not a database, read-only, or a folder."""


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
        path: the SQLite file (created with its parent folder when missing, unless ``readonly``).
        readonly: open with SQLite's ``mode=ro`` and create nothing (``bench report``).

    Raises:
        StoreError: the path is a folder, the file is not a SQLite database or is damaged, it is another program's
            database (refused before anything is written to it), it is read-only (unless ``readonly``), or, with
            ``readonly``, it holds no table yet.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.db = _connect(self.path, readonly)
        try:
            self._open()
        except sqlite3.Error as exc:
            self.db.close()
            raise explain(self.path, exc) from None
        except BaseException:
            self.db.close()
            raise

    def _open(self) -> None:
        tables = self._tables()
        if not tables:
            if self.readonly:
                raise StoreError(f"{self.path}: an empty database, no benchmark results (`bench run` writes them)")
            self.db.execute("PRAGMA journal_mode=WAL")
            with self.transaction():  # all tables or none: a concurrent opener never sees half a schema
                if not self._tables():
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            tables = self._tables()
        self._check_ours(tables)
        if not self.readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            if "leases" not in tables:  # a database written before leases existed
                self.db.execute(SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS leases") :])

    def _tables(self) -> dict[str, set[str]]:
        try:
            names = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {
                n: {r[1] for r in self.db.execute(f"PRAGMA table_info({_quote(n)})")}
                for n in names
                if n != "sqlite_sequence"
            }
        except sqlite3.Error as exc:
            raise explain(self.path, exc) from None

    def _check_ours(self, tables: dict[str, set[str]]) -> None:
        app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
        problems = [f"application_id {app_id:#x}"] if app_id not in (0, APPLICATION_ID) else []
        for name, columns in TABLES.items():
            if name not in tables:
                problems.append(f"no {name!r} table")
            elif not columns <= tables[name]:
                problems.append(f"table {name!r} lacks {', '.join(sorted(columns - tables[name]))}")
        if problems:
            held = ", ".join(sorted(tables)) or "none"
            raise StoreError(
                f"{self.path}: not an invgen benchmark database ({'; '.join(problems)}; its tables: {held}); "
                "refusing to touch it: give another database path"
            )

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

    def write(self, cell_id: str, run_id: int, results: Sequence[ImageResult], block: int | None = None) -> None:
        """Write complete images atomically (all rows of all ``results`` or none), and drop the lease of ``block``
        in the same transaction."""
        with self.transaction():
            if block is not None:
                self.db.execute("DELETE FROM leases WHERE cell_id = ? AND block = ?", (cell_id, block))
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

    # -- leases --------------------------------------------------------------------------------------------------
    def claim(self, cell_id: str, block: int, ids: Sequence[str], owner: str, seconds: float) -> str:
        """Try to lease one block for ``seconds``: ``"claimed"`` (or ``"taken over"`` from an expired or dead
        owner: compute it), ``"done"`` (its images are complete) or ``"busy"`` (another run holds it)."""
        now = time.time()
        with self.transaction():
            row = self.db.execute(
                "SELECT owner, host, pid, expires FROM leases WHERE cell_id = ? AND block = ?", (cell_id, block)
            ).fetchone()
            marks = ",".join("?" * len(ids))
            done = self.db.execute(
                f"SELECT COUNT(*) FROM images WHERE cell_id = ? AND image_id IN ({marks})", (cell_id, *ids)
            ).fetchone()[0]
            if done == len(set(ids)):
                if row is not None:
                    self.db.execute("DELETE FROM leases WHERE cell_id = ? AND block = ?", (cell_id, block))
                return "done"
            other = row is not None and row[0] != owner
            if other and row[3] > now and not (row[1] == platform.node() and not _alive(int(row[2]))):
                return "busy"
            self.db.execute(
                "INSERT OR REPLACE INTO leases (cell_id, block, owner, host, pid, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (cell_id, block, owner, platform.node(), os.getpid(), now + seconds),
            )
            return "taken over" if other else "claimed"

    def renew(self, owner: str, seconds: float) -> int:
        """Extend every lease of ``owner`` to ``seconds`` from now; returns how many it holds."""
        cur = self.db.execute("UPDATE leases SET expires = ? WHERE owner = ?", (time.time() + seconds, owner))
        return cur.rowcount

    def release(self, owner: str) -> None:
        """Drop every lease of ``owner`` (its blocks become free for other runs at once)."""
        self.db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    def leases(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM leases ORDER BY cell_id, block")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

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


class LeaseKeeper:
    """Renews the leases of one owner from a background thread (its own connection), every third of their
    duration, so a block that runs longer than a lease is not taken over while its run is alive. A killed process
    stops renewing and its leases expire.

    Example:
        >>> with LeaseKeeper("results.sqlite", "run 3", 60.0):  # doctest: +SKIP
        ...     ...  # claim, compute, write
    """

    def __init__(self, path: str | os.PathLike, owner: str, seconds: float) -> None:
        self.path, self.owner, self.seconds = Path(path), owner, float(seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invgen-lease-keeper", daemon=True)

    def _run(self) -> None:
        con = None
        while not self._stop.wait(self.seconds / 3):
            try:
                if con is None:
                    con = sqlite3.connect(self.path, timeout=self.seconds / 3, isolation_level=None)
                con.execute("UPDATE leases SET expires = ? WHERE owner = ?", (time.time() + self.seconds, self.owner))
            except sqlite3.Error:  # busy or gone: the next beat tries again, the leases hold until they expire
                pass
        if con is not None:
            con.close()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _alive(pid: int) -> bool:
    """Whether a process of this host with that id exists (a lease of a dead one is taken over at once)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def explain(path: str | os.PathLike, exc: sqlite3.Error) -> StoreError:
    """A one-line :class:`StoreError` naming the database for an ``sqlite3`` error."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: the database stayed locked by another process ({text})")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path}: read-only database ({text}): `bench run` needs to write it")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return StoreError(f"{path}: not a SQLite database, or a damaged one ({text})")
    return StoreError(f"{path}: {text}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """Open ``path`` (``mode=ro`` when ``readonly``), refusing a folder and, for writing, a read-only file or folder."""
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a database file (give a file, e.g. {path / 'results.sqlite'})")
    if readonly:
        if not path.is_file():
            raise StoreError(f"{path}: no such database file")
        if not os.access(path, os.R_OK):
            raise StoreError(f"{path}: not readable (permission denied)")
        uri = path.resolve().as_uri() + "?mode=ro"
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create its folder ({exc.strerror or exc})") from None
        if path.exists() and not os.access(path, os.W_OK):
            raise StoreError(f"{path}: read-only file: `bench run` writes results into it (`bench report` reads it)")
        if not os.access(path.parent, os.W_OK):
            raise StoreError(
                f"{path}: its folder {path.parent} is read-only: SQLite writes its journal beside the database"
            )
        uri = path.resolve().as_uri() + "?mode=rwc"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        if readonly:
            db.execute("PRAGMA query_only = 1")
        return db
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database ({exc})") from None


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
