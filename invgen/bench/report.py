"""Benchmark reports: summary tables (markdown, CSV), metric-versus-cost plots and sample grids.

``invgen bench report DB`` calls :func:`write_report`; :func:`summarise` gives the numbers behind the tables.

Statistics. For every (dataset, task, prior, label) and every metric ``m``:

- ``m``: the metric of the posterior mean (``sample == store.MEAN``);
- ``m_samples``: the metric of each sample, averaged over the samples of an image.

Each is first averaged over the seeds within an image, then summarised over images as a mean with a 95% Student-t
confidence half-width ``t(0.975, n - 1) * sd / sqrt(n)`` (``sd`` with ``ddof=1``; ``nan`` when ``n == 1``). Only
complete images (those with an ``images`` row) count; a cell without any complete image is skipped and named in the
report.

Files written by :func:`write_report` into ``out_dir``:

- ``report.md``: title, run provenance, one table per (dataset, task), links to plots and grids.
- ``results.csv``: one row per summary row (columns of :func:`summarise`, full precision, CIs in their own columns).
- ``per_image.csv``: the long table ``dataset, task, prior, label, seed, image_id, sample, metric, value``.
- ``plots/<dataset>__<task>.png``: per metric, the metric against NFE and against seconds per image.
- ``grids/<dataset>__<task>__<prior>__<label>__seed<k>.png``: x, y, samples, mean and std of the first images of a
  cell, from the artifacts the runner saved at ``<db>.artifacts/<cell_id>/<image_id>.safetensors``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invgen.bench.store import MEAN, Store, explain

# Grid layout in pixels (tile (r, c) has its top-left corner at (GRID_LABEL_W + GRID_PAD + c * (tile_w + GRID_PAD),
# GRID_HEADER + r * (tile_h + GRID_PAD)); the footer below the last row holds the std note).
GRID_PAD = 4
GRID_HEADER = 20
GRID_LABEL_W = 48
GRID_FOOTER = 18
GRID_TILE = 96  # small images are upsampled (nearest, integer factor) to about this size
GRID_BACKGROUND = (225, 225, 225)  # light gray: white tiles stay visible

_DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4}
_LOWER_IS_BETTER_HINTS = ("lpips", "error", "mse")
_DASH = "–"
_GROUP = ("dataset", "task", "prior", "label")


# -- statistics ---------------------------------------------------------------------------------------------------
def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, Student-t confidence half-width and count of ``values`` (non-finite values dropped).

    Returns:
        ``(mean, half_width, n)``; ``half_width`` is ``nan`` when ``n < 2``, and both are ``nan`` when ``n == 0``.
    """
    xs = [float(v) for v in values if math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, math.nan, 1
    from scipy.stats import t

    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n), n


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better: its registered ``higher_is_better``, else a name rule
    (names containing ``lpips``, ``error`` or ``mse`` are lower-is-better)."""
    try:
        from invgen.registry import entries

        entry = entries("metrics").get(metric)
        if entry is not None and "higher_is_better" in entry.meta:
            return bool(entry.meta["higher_is_better"])
    except Exception:  # a broken registry must not break a report
        pass
    name = metric.lower()
    return not any(h in name for h in _LOWER_IS_BETTER_HINTS)


# -- loading ------------------------------------------------------------------------------------------------------
def _open(store_or_path: Store | str | os.PathLike) -> tuple[Store, bool]:
    """An open store, and whether it was opened here: a path is opened read-only (SQLite ``mode=ro``), so a report
    never writes to the database, creates no table in it, and refuses a database that is not invgen's."""
    if isinstance(store_or_path, Store):
        return store_or_path, False
    path = Path(store_or_path)
    if not path.exists():
        raise FileNotFoundError(f"no benchmark database at {path}")
    return Store(path, readonly=True), True


def _load(store: Store, suite: str | None) -> dict[str, Any]:
    try:
        return _read(store, suite)
    except sqlite3.Error as exc:
        raise explain(store.path, exc) from None


def _read(store: Store, suite: str | None) -> dict[str, Any]:
    """Cells of ``suite`` with their complete images and result rows.

    Returns a dict with ``cells`` (list of cell dicts with an added ``images`` dict ``image_id -> (nfe, seconds)``
    and ``values`` dict ``(image_id, sample, metric) -> value``, complete images only), ``empty`` (cells without a
    complete image) and ``runs``.
    """
    cells = store.cells(suite)
    by_id = {c["cell_id"]: c for c in cells}
    for c in cells:
        c["images"] = {}
        c["values"] = {}
    for cell_id, image_id, nfe, seconds in store.db.execute("SELECT cell_id, image_id, nfe, seconds FROM images"):
        if cell_id in by_id:
            by_id[cell_id]["images"][image_id] = (float(nfe), float(seconds))
    for cell_id, image_id, sample, metric, value in store.rows():
        c = by_id.get(cell_id)
        if c is not None and image_id in c["images"]:
            c["values"][(image_id, int(sample), metric)] = float(value)
    runs = [r for r in store.runs() if suite is None or r["suite"] == suite]
    return {
        "cells": [c for c in cells if c["images"]],
        "empty": [c for c in cells if not c["images"]],
        "runs": runs,
    }


def _summarise_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[tuple(c[k] for k in _GROUP)].append(c)
    rows = []
    for key, group in groups.items():
        # per image: seed -> value, for the cost and for each (metric, kind)
        per_image: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        metrics: set[str] = set()
        for c in group:
            samples: dict[tuple[str, str], list[float]] = defaultdict(list)
            for (image_id, sample, metric), value in c["values"].items():
                metrics.add(metric)
                if sample == MEAN:
                    per_image[image_id][metric].append(value)
                elif sample >= 0:
                    samples[(image_id, metric)].append(value)
            for (image_id, metric), vs in samples.items():
                per_image[image_id][metric + "_samples"].append(math.fsum(vs) / len(vs))
            for image_id, (nfe, seconds) in c["images"].items():
                per_image[image_id]["nfe"].append(nfe)
                per_image[image_id]["seconds"].append(seconds)

        def over_images(name: str, per_image: dict[str, dict[str, list[float]]] = per_image) -> tuple:
            """Mean and CI over images of the seed-averaged value ``name``."""
            return mean_ci([math.fsum(v[name]) / len(v[name]) for v in per_image.values() if v.get(name)])

        first = group[0]
        row: dict[str, Any] = dict(zip(_GROUP, key))
        row["solver"] = first["solver"]
        row["suite"] = first["suite"]
        row["n_images"] = len(per_image)
        row["n_seeds"] = len({c["seed"] for c in group})
        n_samples = {int(c["n_samples"]) for c in group}
        row["n_samples"] = max(n_samples)
        row["nfe"] = over_images("nfe")[0]
        row["seconds"] = over_images("seconds")[0]
        row["seconds_per_sample"] = row["seconds"] / row["n_samples"] if row["n_samples"] > 0 else math.nan
        for m in sorted(metrics):
            for name in (m, m + "_samples"):
                row[name], row[name + "_ci"], _ = over_images(name)
        rows.append(row)
    rows.sort(key=_row_order)
    return rows


def _row_order(row: dict[str, Any]) -> tuple:
    return (row["dataset"], row["task"], row["nfe"] > 0, row["prior"], row["solver"], row["nfe"], row["label"])


def summarise(store_or_path: Store | str | os.PathLike, suite: str | None = None) -> list[dict[str, Any]]:
    """Summary rows of a benchmark database, one per (dataset, task, prior, label), aggregated over seeds and images.

    Args:
        store_or_path: an open :class:`~invgen.bench.store.Store` or the path of its SQLite file.
        suite: only the cells of this suite (default: all).

    Returns:
        Rows sorted by dataset, task, baselines (NFE 0) first, prior, solver and NFE, each a dict with
        ``dataset, task, prior, label, solver, suite, n_images, n_seeds, n_samples``, ``nfe`` (network evaluations
        per sample, mean over images), ``seconds`` (per image, mean over images), ``seconds_per_sample`` and, for
        every metric ``m`` found: ``m`` and ``m_ci`` (posterior mean: mean over images and 95% CI half-width, ``nan``
        for one image), ``m_samples`` and ``m_samples_ci`` (per-sample values averaged within each image; ``nan``
        when the cell stored no per-sample value). Seeds are averaged within an image before the CI over images.
    """
    store, owned = _open(store_or_path)
    try:
        return _summarise_cells(_load(store, suite)["cells"])
    finally:
        if owned:
            store.close()


# -- formatting ---------------------------------------------------------------------------------------------------
def _decimals(metric: str) -> int | None:
    name = metric.lower()
    for k, d in _DECIMALS.items():
        if k in name:
            return d
    return None


def _fmt_number(value: float, decimals: int | None) -> str:
    if not math.isfinite(value):
        return _DASH
    return f"{value:.{decimals}f}" if decimals is not None else f"{value:.4g}"


def _fmt_nfe(nfe: float) -> str:
    return str(round(nfe)) if abs(nfe - round(nfe)) < 1e-9 else f"{nfe:.1f}"


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.3g}" if math.isfinite(seconds) else _DASH


def safe_name(*parts: Any) -> str:
    """A file name from ``parts`` joined with ``__``, characters outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]", "_", str(p)) for p in parts)


def _time(t: float | None) -> str:
    if t is None:
        return _DASH
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _metric_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(key, header)`` of the metric columns present in ``rows``: psnr, ssim, lpips first, then the others."""
    metrics = sorted(
        {k[: -len("_ci")] for r in rows for k in r if k.endswith("_ci") and not k.endswith("_samples_ci")},
        key=lambda m: (next((i for i, k in enumerate(_DECIMALS) if k == m), len(_DECIMALS)), m),
    )
    cols = []
    for m in metrics:
        cols.append((m, f"{m} (mean)"))
        if any(math.isfinite(r.get(m + "_samples", math.nan)) for r in rows):
            cols.append((m + "_samples", f"{m} (samples)"))
    return cols


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One markdown table of summary rows (one dataset and task): rows (prior, solver label), metric columns
    ``value ± ci``, the best value of each column in bold, then NFE, seconds per image, images and seeds."""
    cols = _metric_columns(rows)
    header = ["prior", "solver", *[h for _, h in cols], "NFE", "s/image", "images", "seeds"]
    cells: list[list[str]] = [[_md_escape(r["prior"]), _md_escape(r["label"])] for r in rows]
    for key, _ in cols:
        metric = key.removesuffix("_samples")
        dec = _decimals(metric)
        shown = [_fmt_number(r.get(key, math.nan), dec) for r in rows]
        finite = [float(s) for s in shown if s != _DASH]
        best = (max if higher_is_better(metric) else min)(finite) if finite else None
        for r, s, line in zip(rows, shown, cells):
            text = s if s == _DASH else f"{s} ± {_fmt_number(r.get(key + '_ci', math.nan), dec)}"
            line.append(f"**{text}**" if s != _DASH and len(rows) > 1 and float(s) == best else text)
    for r, line in zip(rows, cells):
        line += [_fmt_nfe(r["nfe"]), _fmt_seconds(r["seconds"]), str(r["n_images"]), str(r["n_seeds"])]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(out)


def _provenance(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return ["No run recorded in this database."]
    lines = [
        "| run | suite | status | started | ended | invgen | git | torch | device | host |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in runs:
        status = r["status"]
        if status == "running":
            status = "**interrupted** (running)"
            notes.append(
                f"- Run {r['run_id']} never recorded its end (status `running`): it was interrupted or is still "
                "going; its completed images are included."
            )
        elif status == "failed":
            status = "**failed**"
            notes.append(f"- Run {r['run_id']} failed; its completed images are included.")
        commit = (r.get("git_commit") or _DASH)[:8]
        when = [_time(r["started"]), _time(r["ended"])]
        versions = [r["invgen_version"], commit, r["torch_version"], r["device"], r.get("host") or _DASH]
        fields = [r["run_id"], r["suite"], status, *when, *versions]
        lines.append("| " + " | ".join(_md_escape(f) for f in fields) + " |")
    return lines + (["", *notes] if notes else [])


# -- csv ----------------------------------------------------------------------------------------------------------
def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # shortest round-trip representation; "nan" for nan
    return v


def _write_results_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fixed = ["suite", *_GROUP, "solver", "n_images", "n_seeds", "n_samples", "nfe", "seconds", "seconds_per_sample"]
    extra = sorted({k for r in rows for k in r} - set(fixed))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fixed + extra)
        for r in rows:
            w.writerow([_csv_value(r[k]) if k in r else "" for k in fixed + extra])


def _write_per_image_csv(path: Path, cells: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "task", "prior", "label", "seed", "image_id", "sample", "metric", "value"])
        for c in cells:
            for (image_id, sample, metric), value in sorted(c["values"].items(), key=lambda kv: _natural(kv[0])):
                key = [c["dataset"], c["task"], c["prior"], c["label"], c["seed"]]
                w.writerow([*key, image_id, sample, metric, repr(value)])


def _natural(key: Any) -> tuple:
    """Sort key that orders ``"2" < "10"`` inside strings (and leaves other values as they are)."""
    if isinstance(key, tuple):
        return tuple(_natural(k) for k in key)
    if isinstance(key, str):
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key) if p)
    return ((0, key, ""),)


# -- plots --------------------------------------------------------------------------------------------------------
def plot_tradeoff(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Metric against cost for one (dataset, task): per metric a row of two panels, metric vs NFE per sample
    (symlog x: NFE 0 baselines sit at 0) and metric vs seconds per image (log x). One series per (prior, solver),
    its labels (e.g. a steps sweep) joined in NFE order; solid = posterior mean with 95% CI bars, dotted = average
    over samples. Returns ``path``, or ``None`` when the rows hold no metric."""
    metrics = [k for k, _ in _metric_columns(rows) if not k.endswith("_samples")]
    if not metrics:
        return None
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(r["prior"], r["solver"])].append(r)
    colours = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"]
    height = 3.0 * len(metrics) + 0.8  # inches: the metric rows and the title
    fig = Figure(figsize=(13, height))
    axes = fig.subplots(len(metrics), 2, squeeze=False)
    seconds = [r["seconds"] for r in rows if math.isfinite(r["seconds"])]
    positive = [s for s in seconds if s > 0]
    for i, m in enumerate(metrics):
        arrow = "↑" if higher_is_better(m) else "↓"
        for j, (xkey, ax) in enumerate(zip(("nfe", "seconds"), axes[i])):
            for k, ((prior, solver), pts) in enumerate(sorted(series.items())):
                pts = sorted(pts, key=lambda r: (r["nfe"], r["seconds"]))
                xs = [r[xkey] for r in pts]
                colour = colours(k % colours.N)
                ys = [r.get(m, math.nan) for r in pts]
                err = [r.get(m + "_ci", math.nan) for r in pts]
                err = [e if math.isfinite(e) else 0.0 for e in err]
                ax.errorbar(xs, ys, yerr=err, color=colour, marker="o", capsize=3, label=f"{prior} / {solver}")
                ys_s = [r.get(m + "_samples", math.nan) for r in pts]
                if any(math.isfinite(y) for y in ys_s):
                    ax.plot(xs, ys_s, color=colour, marker="x", linestyle=":", alpha=0.7)
            if j == 0:
                ax.set_xscale("symlog", linthresh=1.0)
                ax.set_xlim(left=-0.5)
                ax.set_xlabel("NFE per sample (symlog; 0 = no network)")
            else:
                if positive and len(positive) == len(seconds):
                    ax.set_xscale("log")
                elif positive:
                    ax.set_xscale("symlog", linthresh=min(positive))
                ax.set_xlabel("seconds per image (log)")
            ax.set_ylabel(f"{m} {arrow}")
            ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.8, 0.5), title="prior / solver", fontsize=9)
    fig.suptitle(f"{title}\nsolid: posterior mean ± 95% CI over images; dotted ×: average over samples", fontsize=10)
    # a fixed layout (tight_layout and bbox_inches="tight" would triple the drawing time)
    fig.subplots_adjust(left=0.07, right=0.78, bottom=0.55 / height, top=1 - 0.75 / height, wspace=0.25, hspace=0.4)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


# -- grids --------------------------------------------------------------------------------------------------------
def artifacts_dir(db_path: str | os.PathLike) -> Path:
    """The folder of the runner's artifacts of ``db_path``: ``<db file name>.artifacts`` beside it."""
    db_path = Path(db_path)
    return db_path.parent / (db_path.name + ".artifacts")


def _to_image(arr: Any, size: tuple[int, int], clip: bool = True) -> Any:
    """A ``(C, H, W)`` float array in [0, 1] as a PIL RGB image fitted (nearest, aspect kept) into ``size`` (w, h)."""
    import numpy as np
    from PIL import Image

    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.shape[0] not in (1, 3):  # an odd channel count: its mean, shown gray
        a = a.mean(axis=0, keepdims=True)
    a = np.nan_to_num(a, nan=0.0)
    if clip:
        a = np.clip(a, 0.0, 1.0)
    u8 = np.round(a * 255.0).astype(np.uint8)
    img = Image.fromarray(u8[0], mode="L") if u8.shape[0] == 1 else Image.fromarray(u8.transpose(1, 2, 0), mode="RGB")
    w, h = img.size
    scale = min(size[0] / w, size[1] / h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST)
    return img.convert("RGB")


def _font(size: int = 11) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def sample_grid(files: Sequence[Path], path: Path, grid_samples: int = 4, title: str = "") -> Path | None:
    """Render one grid from artifact files (one row each): columns x, y, up to ``grid_samples`` samples, mean, std.

    Each file is a safetensors file of float32 tensors ``x`` (C, H, W), ``y_view`` (C', H', W'), ``samples``
    (N, C, H, W), ``mean`` (C, H, W) and ``std`` (C, H, W); a missing tensor leaves its tile blank. Small images are
    upsampled by an integer factor (nearest) to about ``GRID_TILE`` pixels; y is clipped to [0, 1] and fitted into the
    tile of x; the std map is averaged over channels and divided by its own maximum (noted under the grid). Gray
    images stay gray. Returns ``path``, or ``None`` when no file could be read.
    """
    from PIL import Image, ImageDraw
    from safetensors.numpy import load_file

    data = []
    for f in files:
        try:
            data.append((f.stem, load_file(str(f))))
        except Exception:  # a truncated artifact of a killed run: skip it
            continue
    if not data:
        return None
    ref = next((d["x"] for _, d in data if "x" in d), None)
    if ref is None:
        ref = next((d["mean"] for _, d in data if "mean" in d), None)
    h, w = (ref.shape[-2], ref.shape[-1]) if ref is not None else (32, 32)
    scale = max(1, round(GRID_TILE / max(h, w)))
    tw, th = w * scale, h * scale
    n_s = min(grid_samples, max((d["samples"].shape[0] for _, d in data if "samples" in d), default=0))
    titles = ["x", "y", *[f"sample {i + 1}" for i in range(n_s)], "mean", "std/max"]
    width = GRID_LABEL_W + GRID_PAD + len(titles) * (tw + GRID_PAD)
    height = GRID_HEADER + len(data) * (th + GRID_PAD) + GRID_FOOTER
    canvas = Image.new("RGB", (width, height), GRID_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for c, t in enumerate(titles):
        draw.text((GRID_LABEL_W + GRID_PAD + c * (tw + GRID_PAD) + 2, 4), t, fill=(0, 0, 0), font=font)
    for r, (image_id, d) in enumerate(data):
        top = GRID_HEADER + r * (th + GRID_PAD)
        draw.text((2, top + th // 2 - 6), image_id[:8], fill=(0, 0, 0), font=font)
        tiles: list[Any] = [d.get("x"), d.get("y_view")]
        samples = d.get("samples")
        tiles += [samples[i] if samples is not None and i < samples.shape[0] else None for i in range(n_s)]
        tiles.append(d.get("mean"))
        std = d.get("std")
        if std is not None:
            std = std.reshape(-1, *std.shape[-2:]).mean(axis=0, keepdims=True)
            peak = float(std.max()) if std.size else 0.0
            std = std / peak if peak > 0 else std * 0.0
        tiles.append(std)
        for c, arr in enumerate(tiles):
            if arr is None:
                continue
            img = _to_image(arr, (tw, th))
            left = GRID_LABEL_W + GRID_PAD + c * (tw + GRID_PAD)
            canvas.paste(img, (left + (tw - img.size[0]) // 2, top + (th - img.size[1]) // 2))
    note = "std: channel mean, each map divided by its own max"
    draw.text((2, height - GRID_FOOTER + 3), f"{title}   {note}" if title else note, fill=(80, 80, 80), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _artifact_files(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.safetensors"), key=lambda p: _natural(p.stem))[:limit]


# -- report -------------------------------------------------------------------------------------------------------
def write_report(
    db_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    suite: str | None = None,
    grid_images: int = 4,
    grid_samples: int = 4,
) -> dict[str, list[Path]]:
    """Write the report of a benchmark database: ``report.md``, ``results.csv``, ``per_image.csv``, plots and grids.

    Args:
        db_path: the SQLite file written by the runner.
        out_dir: the folder to write into (created).
        suite: only this suite (default: every suite in the database).
        grid_images: rows (images with artifacts) per sample grid; 0 writes no grid.
        grid_samples: at most this many sample columns per grid.

    Returns:
        The written paths by kind: ``markdown``, ``csv``, ``plots``, ``grids``.
    """
    db_path = Path(db_path)
    out = Path(out_dir)
    store, _ = _open(db_path)  # first: a bad database leaves no empty report folder behind
    try:
        loaded = _load(store, suite)
    finally:
        store.close()
    out.mkdir(parents=True, exist_ok=True)
    cells, empty, runs = loaded["cells"], loaded["empty"], loaded["runs"]
    rows = _summarise_cells(cells)
    written: dict[str, list[Path]] = {"markdown": [], "csv": [], "plots": [], "grids": []}

    results_csv, per_image_csv = out / "results.csv", out / "per_image.csv"
    _write_results_csv(results_csv, rows)
    _write_per_image_csv(per_image_csv, cells)
    written["csv"] += [results_csv, per_image_csv]

    by_task: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_task[(r["dataset"], r["task"])].append(r)
    plots: dict[tuple[str, str], Path] = {}
    for (dataset, task), task_rows in by_task.items():
        p = plot_tradeoff(task_rows, out / "plots" / f"{safe_name(dataset, task)}.png", title=f"{dataset} / {task}")
        if p is not None:
            plots[(dataset, task)] = p
            written["plots"].append(p)

    grids: dict[tuple[str, str], list[Path]] = defaultdict(list)
    if grid_images > 0:
        root = artifacts_dir(db_path)
        for c in cells:
            files = _artifact_files(root / c["cell_id"], grid_images)
            if not files:
                continue
            name = safe_name(c["dataset"], c["task"], c["prior"], c["label"], f"seed{c['seed']}") + ".png"
            title = f"{c['dataset']} / {c['task']} / {c['prior']} / {c['label']} / seed {c['seed']}"
            p = sample_grid(files, out / "grids" / name, grid_samples=grid_samples, title=title)
            if p is not None:
                grids[(c["dataset"], c["task"])].append(p)
                written["grids"].append(p)

    suites = sorted({c["suite"] for c in cells + empty} | {r["suite"] for r in runs})
    md = [f"# Benchmark report: {', '.join(suites) if suites else '(empty)'}", ""]
    md += [f"Database: `{db_path.name}`", "", "## Runs", "", *_provenance(runs), ""]
    md += [
        "Columns: `m (mean)` is the metric of the posterior mean, `m (samples)` the metric of each sample averaged "
        "over the samples of an image; values are the mean over images ± the 95% Student-t confidence half-width "
        f"(seeds averaged within an image first; {_DASH} when one image only). Bold: best of the column. "
        "NFE: network evaluations per sample; s/image: solver seconds per image.",
        "",
    ]
    for (dataset, task), task_rows in by_task.items():
        md += [f"## {dataset} / {task}", "", markdown_table(task_rows), ""]
        if (dataset, task) in plots:
            md += [f"![{dataset} / {task}: metric against cost]({plots[(dataset, task)].relative_to(out).as_posix()})"]
            md += [""]
        if grids.get((dataset, task)):
            md += [
                "Sample grids: "
                + ", ".join(f"[{p.stem}]({p.relative_to(out).as_posix()})" for p in grids[(dataset, task)])
            ]
            md += [""]
    if not rows:
        md += ["No complete image in this database.", ""]
    if empty:
        md += ["## Skipped cells", "", "These cells have no complete image and are left out of every table:", ""]
        md += [
            f"- {c['dataset']} / {c['task']} / {c['prior']} / {c['label']} / seed {c['seed']} (`{c['cell_id'][:12]}`)"
            for c in empty
        ]
        md += [""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    written["markdown"].append(report)
    return written


__all__ = [
    "artifacts_dir",
    "higher_is_better",
    "markdown_table",
    "mean_ci",
    "plot_tradeoff",
    "safe_name",
    "sample_grid",
    "summarise",
    "write_report",
]
