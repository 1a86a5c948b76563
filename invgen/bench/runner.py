"""Run a suite: freeze the observations, execute every cell image block by image block, store results as they land.

The unit of work is a *block*: up to ``batch`` consecutive images of one cell that share a size (a fixed partition
of the dataset, so a block's random numbers do not depend on what ran before). A block runs one solver call with
N samples per image, then its metrics; its rows are written in one transaction. A run killed at any point keeps
every finished block and, started again with the same command, runs only the blocks that are missing.

Executors: ``local`` (in this process, in order) and ``ray`` (each block a Ray task; see
:mod:`invgen.bench.ray_executor`).
Both call :func:`execute_block` on the same payload, and only the driver writes to the store.

Several runs of one suite on one database (processes on one machine, or drivers sharing the file) split the work:
a run claims each block (a lease row, :meth:`Store.claim`) just before computing it, renews its leases while it
works, and skips blocks that another live run holds; when its own pass is over it waits for those blocks, taking
over any whose run died (lease expired, or process gone on this host). No block is computed twice and every run
returns when the whole suite is complete.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.bench.store import MEAN, ImageResult, LeaseKeeper, Store
from invgen.bench.suite import Cell, Suite, canonical_hash, load_suite
from invgen.data.degrade import Frozen, derive_seed, freeze


@dataclass
class Block:
    """A unit of work: some images of one cell, with everything needed to run them anywhere (a picklable payload)."""

    cell_id: str
    title: str
    index: int
    ids: list[str]
    x: Tensor  # (B, C, H, W)
    y: Tensor  # (B, ...)
    task: dict[str, Any]
    prior: dict[str, Any] | None
    solver: dict[str, Any]
    n_samples: int
    seed: int
    metrics: list[str]
    device: str
    keep: list[int] = field(default_factory=list)  # positions whose samples are kept for the report's grids


@dataclass
class BlockResult:
    cell_id: str
    index: int
    results: list[ImageResult]
    artifacts: dict[str, dict[str, Tensor]]


@dataclass
class RunSummary:
    """What one run did: ``blocks_run`` (computed here, ``images_run`` images), ``blocks_skipped`` (complete when it
    started) and ``blocks_by_others`` (completed meanwhile by other runs on the same database)."""

    run_id: int
    cells: int
    blocks_run: int
    blocks_skipped: int
    images_run: int
    seconds: float
    db: Path
    blocks_by_others: int = 0


# -- one block ------------------------------------------------------------------------------------------------------
_PRIORS: dict[str, Any] = {}


def _prior(spec: dict[str, Any] | None, device: str) -> Any:
    if spec is None:
        return None
    import json

    import invgen

    key = json.dumps([spec, device], sort_keys=True)
    if key not in _PRIORS:
        options = dict(spec.get("options", {}))
        if "device" in _factory_params(spec["name"]) and "device" not in options:
            options["device"] = device
        _PRIORS.clear()  # keep one prior in memory at a time (cells are ordered by prior)
        _PRIORS[key] = invgen.prior(spec["name"], **options)
    return _PRIORS[key]


def _factory_params(name: str) -> set[str]:
    import inspect

    from invgen import registry

    try:
        return set(inspect.signature(registry.get("priors", name).factory).parameters)
    except (TypeError, ValueError):
        return set()


def execute_block(block: Block) -> BlockResult:
    """Run one block: solve, score every sample and the mean, keep the grid images' tensors."""
    import invgen
    from invgen.data.degrade import build_operator

    device = torch.device(block.device)
    op = build_operator(block.task, tuple(block.x.shape[1:])).to(device)
    prior = _prior(block.prior, block.device)
    x = block.x.to(device)
    y = block.y.to(device)
    solver_options = dict(block.solver.get("options", {}))
    posterior = invgen.solve(
        y, op, prior, solver=block.solver["name"], n_samples=block.n_samples, seed=block.seed, **solver_options
    )
    # The metrics refuse images outside [0, 1]; samples may leave it slightly, so they are clamped here, explicitly.
    # The mean leaves out the samples that solve() flagged as far off the data (Posterior.flagged).
    clamped = posterior.clamped(0, 1)
    samples = clamped.samples  # (N, B, C, H, W)
    n, b = samples.shape[:2]
    mean = clamped.mean
    std = clamped.std
    values: list[dict[tuple[int, str], float]] = [{} for _ in range(b)]
    for name in block.metrics:
        fn = invgen.registry.get("metrics", name).factory
        ref = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])
        per_sample = fn(samples.reshape(n * b, *x.shape[1:]), ref).reshape(n, b).cpu()
        per_mean = fn(mean, x).cpu()
        for j in range(b):
            for k in range(n):
                values[j][(k, name)] = float(per_sample[k, j])
            values[j][(MEAN, name)] = float(per_mean[j])
    seconds = posterior.seconds / b
    results = [ImageResult(block.ids[j], posterior.nfe, seconds, values[j]) for j in range(b)]
    artifacts = {}
    for j in block.keep:
        artifacts[block.ids[j]] = {
            "x": x[j].cpu().contiguous(),
            "y_view": _y_view(op, y[j : j + 1], tuple(x.shape[1:]))[0].cpu().contiguous(),
            "samples": samples[:, j].cpu().contiguous(),
            "mean": mean[j].cpu().contiguous(),
            "std": std[j].cpu().contiguous(),
        }
    return BlockResult(block.cell_id, block.index, results, artifacts)


def _y_view(op: Any, y: Tensor, x_shape: tuple[int, ...]) -> Tensor:
    """An image-like view of an observation: itself when it is an image, else the operator's pseudo-inverse."""
    if y.dim() == 4 and y.shape[1] in (1, 3):
        return y
    if getattr(op, "linear", False):
        return op.pinv(y)
    return torch.zeros((1, *x_shape), dtype=y.dtype, device=y.device)


# -- planning -------------------------------------------------------------------------------------------------------
def blocks_of(frozen: Frozen, batch: int) -> list[list[str]]:
    """The fixed partition of a frozen set's ids into blocks: consecutive, same size, at most ``batch``."""
    blocks: list[list[str]] = []
    for image_id in frozen.ids:
        shape = tuple(frozen.x[image_id].shape)
        if blocks and len(blocks[-1]) < batch and tuple(frozen.x[blocks[-1][0]].shape) == shape:
            blocks[-1].append(image_id)
        else:
            blocks.append([image_id])
    return blocks


def freeze_suite(
    suite: Suite, data_dir: str | os.PathLike, progress: bool = False
) -> dict[tuple[str, str, int], Frozen]:
    """Freeze (once) the observations of every (dataset, task, seed) of the suite."""
    out: dict[tuple[str, str, int], Frozen] = {}
    needed = sorted({(c.dataset.label, c.task.name, c.seed) for c in suite.cells})
    datasets = {d.label: d for d in suite.datasets}
    tasks = {t.name: t for t in suite.tasks}
    loaded: dict[str, Any] = {}
    for label, task, seed in needed:
        if label not in loaded:
            loaded[label] = datasets[label].load()
        out[(label, task, seed)] = freeze(data_dir, loaded[label], label, tasks[task].config(), seed)
        if progress:
            print(f"frozen {label}/{task}/seed{seed}: {out[(label, task, seed)].path.name}")
    return out


def default_data_dir(db: str | os.PathLike) -> Path:
    """Frozen observations live beside the database by default: ``<db>.frozen/``."""
    return Path(str(db) + ".frozen")


def plan_blocks(
    suite: Suite, store: Store, frozen: dict[tuple[str, str, int], Frozen], device: str
) -> tuple[list[Block], int]:
    """Register the cells in the store and list the blocks still to run (and how many are already done)."""
    todo: list[Block] = []
    skipped = 0
    for cell in _ordered(suite.cells):
        fz = frozen[(cell.dataset.label, cell.task.name, cell.seed)]
        cfg = cell.config(fz.content)
        cfg["batch"] = suite.batch  # blocks and their seeds depend on it
        cell_id = canonical_hash(cfg)[:16]
        store.add_cell(cell_id, suite.name, cell.key(), cfg)
        done = store.done_images(cell_id)
        keep_ids = set(fz.ids[: suite.grid_images])
        for index, ids in enumerate(blocks_of(fz, suite.batch)):
            if all(i in done for i in ids):
                skipped += 1
                continue
            todo.append(
                Block(
                    cell_id=cell_id,
                    title=cell.title,
                    index=index,
                    ids=ids,
                    x=torch.stack([fz.x[i] for i in ids]),
                    y=torch.stack([fz.y[i] for i in ids]),
                    task=cell.task.config(),
                    prior=cell.prior.config() if cell.prior else None,
                    solver=cell.solver.config(),
                    n_samples=cell.n_samples,
                    seed=derive_seed(cell.seed, cell_id, index),
                    metrics=list(cell.metrics),
                    device=device,
                    keep=[j for j, i in enumerate(ids) if i in keep_ids],
                )
            )
    return todo, skipped


def _ordered(cells: list[Cell]) -> list[Cell]:
    """Cells grouped by prior so each prior is loaded once per run."""
    return sorted(cells, key=lambda c: (c.prior.key if c.prior else "", c.dataset.label, c.task.name))


# -- running --------------------------------------------------------------------------------------------------------
def save_artifacts(db: Path, result: BlockResult) -> None:
    from safetensors.torch import save_file

    if not result.artifacts:
        return
    folder = Path(str(db) + ".artifacts") / result.cell_id
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, tensors in result.artifacts.items():
        path = folder / f"{image_id}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)


def run_suite(
    suite: Suite | str | os.PathLike,
    db: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    executor: str = "local",
    device: str | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    on_block: Callable[[BlockResult], None] | None = None,
    lease_seconds: float = 60.0,
) -> RunSummary:
    """Run (or resume) a suite into the SQLite database ``db``.

    Args:
        suite: a :class:`Suite`, a suite file or a shipped suite's name.
        db: the result database (created if missing); frozen observations go to ``data_dir`` (default
            ``<db>.frozen``) and the report's sample tensors to ``<db>.artifacts``.
        executor: ``local`` or ``ray``.
        device: overrides the suite's device.
        progress: show a progress bar with ETA.
        ray_address: a Ray cluster address (default: start a local instance, or ``RAY_ADDRESS``).
        on_block: called after each block is stored (tests use it).
        lease_seconds: how long a claimed block stays reserved without renewal (renewed every third of it while
            this run lives): the delay after which another run takes over the blocks of a run killed on another host.

    Raises:
        StoreError: ``db`` is a folder, read-only, damaged, not a database or another program's database.
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if executor not in ("local", "ray"):
        raise ValueError(f"executor: expected 'local' or 'ray', got {executor!r}")
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds: expected a positive number of seconds, got {lease_seconds}")
    db = Path(db)
    device = device or suite.device
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(db)
    t0 = time.perf_counter()
    store = Store(db)  # first: a bad database path fails before any work
    try:
        frozen = freeze_suite(suite, data_dir)
        run_id = store.start_run(suite.name, suite.hash, device)
    except BaseException:
        store.close()
        raise
    owner = f"run {run_id} (pid {os.getpid()} on {platform.node()})"
    status = "failed"
    counts = {"run": 0, "images": 0, "others": 0}
    try:
        todo, skipped = plan_blocks(suite, store, frozen, device)
        bar = _progress(sum(len(b.ids) for b in todo), f"{suite.name}", progress)
        titles = {(b.cell_id, b.index): b.title for b in todo}
        longest = min(1.0, lease_seconds / 4)  # waiting for other runs' blocks: polls from 20 ms up to this
        poll = 0.02
        with LeaseKeeper(db, owner, lease_seconds):
            pending = todo
            while pending:
                busy: list[Block] = []
                claimed = _claim_each(store, pending, owner, lease_seconds, busy, counts, bar)
                if executor == "local":
                    results: Iterator[BlockResult] = (execute_block(b) for b in claimed)
                else:
                    from invgen.bench.ray_executor import execute_on_ray

                    results = execute_on_ray(claimed, address=ray_address)
                for result in results:
                    save_artifacts(db, result)
                    store.write(result.cell_id, run_id, result.results, block=result.index)
                    counts["run"] += 1
                    counts["images"] += len(result.results)
                    if bar is not None:
                        bar.set_postfix_str(titles[(result.cell_id, result.index)], refresh=False)
                        bar.update(len(result.results))
                    if on_block is not None:
                        on_block(result)
                pending = busy  # held by other live runs: wait for them to finish or die
                if pending:
                    time.sleep(poll)
                    poll = min(2 * poll, longest)
        if bar is not None:
            bar.close()
        status = "done"
    finally:
        store.release(owner)
        store.end_run(run_id, status)
        store.close()
    return RunSummary(
        run_id,
        len(suite.cells),
        counts["run"],
        skipped,
        counts["images"],
        time.perf_counter() - t0,
        db,
        counts["others"],
    )


def _claim_each(
    store: Store,
    blocks: Iterable[Block],
    owner: str,
    seconds: float,
    busy: list[Block],
    counts: dict[str, int],
    bar: Any,
) -> Iterator[Block]:
    """Yield the blocks this run claims, one at a time as the executor asks for them; blocks other runs hold go to
    ``busy``, blocks they completed are counted in ``counts["others"]``."""
    for block in blocks:
        state = store.claim(block.cell_id, block.index, block.ids, owner, seconds)
        if state == "busy":
            busy.append(block)
        elif state == "done":
            counts["others"] += 1
            if bar is not None:
                bar.total -= len(block.ids)
                bar.refresh()
        else:
            yield block


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)
