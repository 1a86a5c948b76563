"""Issue 29's side-by-side frontier: invgen, deepinv 0.5.0 and azula 0.11.1 on the same shipped networks.

Each library gets invgen's ``diffusion-mnist`` / ``diffusion-cifar10`` network in its own denoiser convention and runs
its own posterior samplers at their documented defaults (``benchmarks/peers/``: one file per library, with every
choice written down), on the same frozen observations, at the same budgets in network evaluations per chain.
Before any sampling the run checks that each peer's operator, applied to the task's images, equals invgen's to 1e-6,
and stops with an error naming the pair otherwise.

Tasks: ``sr4`` (MNIST, 4x4 block average), ``inpaint-box`` (CIFAR-10, centred 16x16 hole), ``colorize`` (CIFAR-10),
noise std 0.05; ``oracle``: the exact-posterior oracle's 4x4 inpainting problem (1000 chains, the GMM's exact
denoiser given to each library), for the variance ratio of every sampler at every budget.

Per (task, library, sampler, budget) one cell of ``results.json``: PSNR and SSIM of the N-sample mean, LPIPS of the
samples, network evaluations per chain, seconds per image (wall time of the sampler call / images, at ``--threads``
torch threads). The run is resumable (cells already in the JSON as ``ok`` or ``n/a`` are skipped; the observations
must be the same) and can be split by ``--tasks`` / ``--libraries`` / ``--samplers``. Budgets in ``--dps-only``
(default 1000) run the DPS samplers only.

Usage (one thread, as the published numbers):

    export INVGEN_DATA=... INVGEN_LPIPS_WEIGHTS=...
    OMP_NUM_THREADS=1 python benchmarks/frontier_peers.py --images 32 --samples 4 --budgets 20,50,100,1000
    OMP_NUM_THREADS=1 python benchmarks/frontier_peers.py --tasks sr4 --libraries azula    # one slice
    python benchmarks/frontier_peers.py --report-only                                    # re-render the page
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from peers import report  # noqa: E402
from peers.common import (  # noqa: E402
    LIBRARIES,
    ORACLE_SAMPLES,
    ORACLE_TASK,
    TASKS,
    OperatorMismatch,
    digest,
    observations,
    oracle_problem,
    oracle_stats,
    quality,
    timed,
)

DEFAULT_OUT = HERE.parent / "docs" / "frontier-peers"
JFPS_IMAGES = 1000  # training images for azula JFPS's cov_x (IsotropicCovariance.from_data)


# -- the result store --------------------------------------------------------------------------------------------------
class Store:
    """``results.json``: ``{"meta": {...}, "cells": {key: cell}}``, rewritten atomically after every cell."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            self.data = json.loads(path.read_text())
        else:
            self.data = {"meta": {"tasks": {}}, "cells": {}}

    def done(self, key: str) -> bool:
        cell = self.data["cells"].get(key)
        return cell is not None and (cell["status"] == "ok" or cell["status"].startswith("n/a"))

    def put(self, key: str, cell: dict[str, Any]) -> None:
        self.data["cells"][key] = cell
        self.save()

    def task_meta(self, task: str, meta: dict[str, Any]) -> None:
        """Record a task's observations; refuse to mix cells of different observations in one file."""
        old = self.data["meta"]["tasks"].get(task)
        if old is not None:
            for k in ("y_sha256", "images", "samples"):
                if old.get(k) != meta.get(k):
                    raise SystemExit(
                        f"{self.path}: task {task!r} was run with {k} = {old.get(k)!r}, this run has {meta.get(k)!r}; "
                        "use another --out (or the same --images / --samples) so that cells stay comparable"
                    )
            meta = {**old, **meta, "operator_pairs": {**old.get("operator_pairs", {}), **meta["operator_pairs"]}}
        self.data["meta"]["tasks"][task] = meta
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def versions() -> dict[str, str]:
    import invgen

    out = {
        "torch": torch.__version__,
        "invgen": getattr(invgen, "__version__", "?"),
        "python": platform.python_version(),
    }
    for name in ("deepinv", "azula"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - a missing peer
            out[name] = "missing"
    return out


# -- the libraries -------------------------------------------------------------------------------------------------
def library_module(lib: str) -> Any:
    if lib == "invgen":
        from peers import invgen_side as m
    elif lib == "deepinv":
        from peers import deepinv_peer as m
    elif lib == "azula":
        from peers import azula_peer as m
    else:
        raise SystemExit(f"unknown library {lib!r}; known: {', '.join(LIBRARIES)}")
    return m


def data_variance(dataset: str, n: int = JFPS_IMAGES) -> float:
    """``IsotropicCovariance.from_data``'s value (``torch.var``) of ``n`` training images on [-1, 1]."""
    import invgen

    ds = invgen.dataset(dataset, split="train")
    x = torch.stack([ds[i] for i in range(min(n, len(ds)))])
    return float(torch.var(2 * x - 1))


def make_side(lib: str, task: str, op: Any, x_shape: tuple[int, ...], prior: Any, dataset: str | None) -> Any:
    """A library's side for an image task (``prior``: invgen's network prior) or the oracle (``prior``: the GMM)."""
    oracle = task == ORACLE_TASK
    if lib == "invgen":
        from peers.invgen_side import InvgenSide

        return InvgenSide(prior, op)
    if lib == "deepinv":
        from peers.deepinv_peer import DeepinvSide

        if oracle:
            return DeepinvSide.for_function(task, op, x_shape, prior.denoise)
        return DeepinvSide.for_prior(task, op, x_shape, prior)
    from peers.azula_peer import AzulaSide

    if oracle:
        pb = oracle_problem()
        var = float(torch.var(2 * pb.prior.sample(JFPS_IMAGES, generator=torch.Generator().manual_seed(0)) - 1))
        return AzulaSide.for_function(task, op, x_shape, prior.denoise, var)
    return AzulaSide.for_prior(task, op, x_shape, prior, data_variance(dataset))


def budgets_for(sampler: str, budgets: list[int], dps_only: set[int]) -> list[int]:
    return [b for b in budgets if b not in dps_only or sampler == "dps"]


def plan(args: argparse.Namespace, lib: str) -> list[str]:
    """The library's samplers kept by ``--samplers`` (``name``: in every library; ``library:name``: in one)."""
    mod = library_module(lib)
    if not args.samplers:
        return list(mod.SAMPLERS)
    samplers = [*mod.SAMPLERS, *getattr(mod, "VARIANTS", {})]  # variants (invgen's) only when named
    return [s for s in samplers if s in args.samplers or f"{lib}:{s}" in args.samplers]


# -- one task ------------------------------------------------------------------------------------------------------
def run_cells(
    args: argparse.Namespace,
    store: Store,
    task: str,
    sides: dict[str, Any],
    run_one: Any,
    meta_extra: dict[str, Any],
) -> None:
    """Every (library, sampler, budget) cell of ``task`` not yet in the store."""
    dps_only = set(args.dps_only)
    for lib, side in sides.items():
        mod = library_module(lib)
        for sampler in plan(args, lib):
            for budget in budgets_for(sampler, args.budgets, dps_only):
                key = f"{task}|{lib}|{sampler}|{budget}"
                if store.done(key):
                    continue
                head = {
                    "task": task,
                    "library": lib,
                    "sampler": sampler,
                    "budget": budget,
                    "seed": args.seed,
                    "threads": torch.get_num_threads(),
                    **meta_extra,
                }
                reason = mod.not_applicable(sampler, task)
                try:
                    head["settings"] = mod.settings(sampler, budget)
                except KeyError as err:
                    reason = reason or str(err)
                if reason:
                    store.put(key, {**head, "status": f"n/a: {reason}"})
                    print(f"{key}: n/a ({reason})", flush=True)
                    continue
                try:
                    cell = run_one(lib, side, sampler, budget)
                except OperatorMismatch:
                    raise
                except Exception as err:  # a peer sampler that fails on a problem is a result, not a crash
                    msg = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                    store.put(key, {**head, "status": f"error: {msg}"})
                    print(f"{key}: ERROR {msg}\n{traceback.format_exc(limit=3)}", flush=True)
                    continue
                store.put(key, {**head, **cell, "status": "ok"})
                print(
                    f"{key}: " + ", ".join(f"{k} {v:.4g}" for k, v in cell.items() if isinstance(v, float)), flush=True
                )


def warm_up(sides: dict[str, Any], args: argparse.Namespace, task: str, y: torch.Tensor) -> None:
    """One tiny run per library before timing (first-call costs: autograd, oneDNN primitives, lazy imports)."""
    for lib, side in sides.items():
        mod = library_module(lib)
        for sampler in plan(args, lib):
            if mod.not_applicable(sampler, task) is None:
                with contextlib.suppress(Exception):  # the real run records the error
                    side.run(sampler, 20 if (lib, sampler) == ("invgen", "daps") else 3, y[:1], 1, args.seed)
                break


def run_image_task(args: argparse.Namespace, store: Store, name: str) -> None:
    import invgen

    task = TASKS[name]
    x, y, op = observations(task, args.images)
    prior = invgen.prior(task.prior)
    sides = {lib: make_side(lib, name, op, tuple(x.shape), prior, task.dataset) for lib in args.libraries}
    pairs: dict[str, float] = {}
    for side in sides.values():  # raises OperatorMismatch before any sampling
        pairs.update(side.operator_pairs(x))
    store.task_meta(
        name,
        {
            "images": args.images,
            "samples": args.samples,
            "y_sha256": digest(y),
            "dataset": task.dataset,
            "prior": task.prior,
            "operator_pairs": pairs,
            "threads": torch.get_num_threads(),
        },
    )
    warm_up(sides, args, name, y)

    def run_one(lib: str, side: Any, sampler: str, budget: int) -> dict[str, Any]:
        samples, sec = timed(lambda: side.run(sampler, budget, y, args.samples, args.seed))
        return {
            "nfe": float(side.last_nfe),
            "seconds": sec,
            "seconds_per_image": sec / x.shape[0],
            **quality(samples, x),
        }

    run_cells(
        args, store, name, sides, run_one, {"dataset": task.dataset, "images": args.images, "samples": args.samples}
    )


def run_oracle(args: argparse.Namespace, store: Store) -> None:
    from peers.azula_peer import PER_OBSERVATION

    pb = oracle_problem()
    x_shape = (1, *pb.prior.image_shape)
    sides = {lib: make_side(lib, ORACLE_TASK, pb.op, x_shape, pb.prior, None) for lib in args.libraries}
    pairs: dict[str, float] = {}
    for side in sides.values():
        pairs.update(side.operator_pairs(pb.exact[:16].to(torch.float32)))
    store.task_meta(
        ORACLE_TASK,
        {
            "images": 1,
            "samples": ORACLE_SAMPLES,
            "y_sha256": digest(pb.y),
            "operator_pairs": pairs,
            "threads": torch.get_num_threads(),
        },
    )

    def run_one(lib: str, side: Any, sampler: str, budget: int) -> dict[str, Any]:
        if lib == "azula" and sampler in PER_OBSERVATION:  # the image run's batches: N = --samples chains each
            chunks = range(ORACLE_SAMPLES // args.samples)

            def go() -> torch.Tensor:
                return torch.cat([side.run(sampler, budget, pb.y, args.samples, args.seed + k) for k in chunks])
        else:

            def go() -> torch.Tensor:
                return side.run(sampler, budget, pb.y, ORACLE_SAMPLES, args.seed)

        t0 = time.perf_counter()
        samples = go()
        sec = time.perf_counter() - t0
        nfe = float(side.last_nfe)
        return {"nfe": nfe, "seconds": sec, **oracle_stats(pb, samples[:, 0])}

    run_cells(args, store, ORACLE_TASK, sides, run_one, {})


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default=f"{','.join(TASKS)},{ORACLE_TASK}")
    ap.add_argument("--libraries", default=",".join(LIBRARIES))
    ap.add_argument("--samplers", default="", help="keep only these: NAME (every library) or LIBRARY:NAME; default all")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--budgets", default="20,50,100,1000")
    ap.add_argument("--dps-only", default="1000", help="budgets run by the DPS samplers only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    a.tasks = [t for t in a.tasks.split(",") if t]
    a.libraries = [lib for lib in a.libraries.split(",") if lib]
    a.samplers = {s for s in a.samplers.split(",") if s}
    a.budgets = [int(b) for b in a.budgets.split(",") if b]
    a.dps_only = [int(b) for b in a.dps_only.split(",") if b]
    for t in a.tasks:
        if t not in TASKS and t != ORACLE_TASK:
            raise SystemExit(f"unknown task {t!r}; known: {', '.join([*TASKS, ORACLE_TASK])}")
    for lib in a.libraries:
        library_module(lib)
    if a.seed < 1:
        raise SystemExit("--seed must be >= 1 (deepinv's DDRM and DiffPIR ignore a seed of 0)")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    store = Store(out / "results.json")
    if not args.report_only:
        torch.set_num_threads(args.threads)
        store.data["meta"]["versions"] = versions()
        store.save()
        for name in args.tasks:
            if name == ORACLE_TASK:
                run_oracle(args, store)
            else:
                run_image_task(args, store, name)
    page = report.write(store.data, out)
    print(f"wrote {store.path} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
