"""Tables and plots of the side-by-side frontier from its JSON (``benchmarks/frontier_peers.py``): one markdown page
with a table per task (the best of each library at each budget in bold) and one PNG per task (LPIPS of the samples
and PSNR of the mean against seconds per image, one line per library through its best sampler at each budget)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from peers.common import LIBRARIES, ORACLE_TASK, TASKS

COLORS = {"invgen": "tab:blue", "deepinv": "tab:orange", "azula": "tab:green"}


def _ok(cells: dict[str, dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [c for c in cells.values() if c["task"] == task and c["status"] == "ok"]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def best(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(library, budget): the row with the best metric}`` (LPIPS: lowest; PSNR, SSIM: highest)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        k = (r["library"], r["budget"])
        lower = metric == "lpips"
        if k not in out or (r[metric] < out[k][metric] if lower else r[metric] > out[k][metric]):
            out[k] = r
    return out


def oracle_lookup(cells: dict[str, dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(c["library"], c["sampler"], c["budget"]): c for c in _ok(cells, ORACLE_TASK)}


def task_table(cells: dict[str, dict[str, Any]], task: str) -> list[str]:
    rows = _ok(cells, task)
    oracle = oracle_lookup(cells)
    bests = {m: best(rows, m) for m in ("psnr", "ssim", "lpips")}

    def cell(r: dict[str, Any], m: str, spec: str) -> str:
        s = format(r[m], spec)
        return f"**{s}**" if bests[m][(r["library"], r["budget"])] is r else s

    out = [
        "| library | sampler | budget | NFE / chain | s / image | PSNR mean | SSIM mean | LPIPS samples | var. ratio "
        "(oracle) | settings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {lib: i for i, lib in enumerate(LIBRARIES)}
    for r in sorted(rows, key=lambda r: (r["budget"], order.get(r["library"], 9), r["lpips"])):
        o = oracle.get((r["library"], r["sampler"], r["budget"]))
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        flag = f" ({r['nonfinite_samples']} non-finite)" if r.get("nonfinite_samples") else ""
        out.append(
            f"| {r['library']} | {r['sampler']}{flag} | {r['budget']} | {r['nfe']:.0f} | {r['seconds_per_image']:.3f} "
            f"| {cell(r, 'psnr', '.2f')} | {cell(r, 'ssim', '.3f')} | {cell(r, 'lpips', '.4f')} | "
            f"{_fmt(o['variance_ratio'] if o else None, '.2f')} | {settings} |"
        )
    return out + not_run(cells, task)


def not_run(cells: dict[str, dict[str, Any]], task: str) -> list[str]:
    """The lines listing the cells of ``task`` that did not run (n/a or error), with the reason."""
    skipped = [c for c in cells.values() if c["task"] == task and c["status"] != "ok"]
    lines = ["", "Not run:", ""] if skipped else []
    for c in sorted(skipped, key=lambda c: (c["library"], c["sampler"], c["budget"])):
        lines.append(f"* {c['library']} {c['sampler']} {c['budget']}: {c['status']}")
    return lines


def summary_table(cells: dict[str, dict[str, Any]], task: str) -> list[str]:
    rows = _ok(cells, task)
    libs = [lib for lib in LIBRARIES if any(r["library"] == lib for r in rows)]
    bl, bp = best(rows, "lpips"), best(rows, "psnr")
    head = "| budget | " + " | ".join(f"{lib}: best LPIPS | {lib}: best PSNR" for lib in libs) + " |"
    out = [head, "|---|" + "---|---|" * len(libs)]
    for b in sorted({r["budget"] for r in rows}):
        parts = []
        for lib in libs:
            lo, ps = bl.get((lib, b)), bp.get((lib, b))
            parts.append(f"{lo['sampler']} {lo['lpips']:.4f}" if lo else "-")
            parts.append(f"{ps['sampler']} {ps['psnr']:.2f}" if ps else "-")
        out.append(f"| {b} | " + " | ".join(parts) + " |")
    return out


def oracle_table(cells: dict[str, dict[str, Any]]) -> list[str]:
    rows = _ok(cells, ORACLE_TASK)
    out = [
        "| library | sampler | budget | NFE / chain | var. ratio (unobserved) | var. ratio (all) | SW x floor | "
        "weights x floor | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {lib: i for i, lib in enumerate(LIBRARIES)}
    for r in sorted(rows, key=lambda r: (r["budget"], order.get(r["library"], 9), r["sampler"])):
        out.append(
            f"| {r['library']} | {r['sampler']} | {r['budget']} | {r['nfe']:.0f} | {r['variance_ratio']:.2f} | "
            f"{r['variance_ratio_total']:.2f} | {r['sw_multiple']:.1f} | {r['weight_multiple']:.1f} | "
            f"{r['seconds']:.2f} |"
        )
    return out + not_run(cells, ORACLE_TASK)


def plot(cells: dict[str, dict[str, Any]], task: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _ok(cells, task)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, metric, ylabel in (
        (axes[0], "lpips", "LPIPS of the samples (lower is better)"),
        (axes[1], "psnr", "PSNR of the N-sample mean, dB"),
    ):
        bests = best(rows, metric)
        by_lib: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (lib, _), r in bests.items():
            by_lib[lib].append(r)
        for lib in LIBRARIES:
            pts = sorted(by_lib.get(lib, []), key=lambda r: r["budget"])
            if not pts:
                continue
            xs, ys = [r["seconds_per_image"] for r in pts], [r[metric] for r in pts]
            ax.plot(xs, ys, "o-", color=COLORS.get(lib), label=lib)
            for r, xv, yv in zip(pts, xs, ys, strict=True):
                ax.annotate(
                    f"{r['sampler']}-{r['budget']}", (xv, yv), fontsize=6, xytext=(3, 3), textcoords="offset points"
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"seconds per image (CPU, {rows[0]['threads'] if rows else '?'} thread(s))")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data: dict[str, Any], out: Path) -> Path:
    """Write ``frontier-peers.md`` and one PNG per image task into ``out``; return the markdown's path."""
    cells, meta = data["cells"], data["meta"]
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Side-by-side frontier: invgen, deepinv, azula on the same networks",
        "",
        "Generated by `benchmarks/frontier_peers.py` from `results.json` (every cell, with its settings). Each "
        "library runs its own samplers at their documented defaults, in its own conventions, on the same shipped "
        "network (`diffusion-mnist`, `diffusion-cifar10`), the same observations (noise std 0.05) and the same "
        "budgets in network evaluations per chain (NFE). PSNR and SSIM: of the N-sample mean; LPIPS: of the samples; "
        "s / image: wall time of the sampler call / images (N samples each). Bold: the best of each library at "
        "each budget. Variance ratio: samples' variance / exact posterior variance on the unobserved pixels of the "
        "oracle's 4x4 inpainting problem (1 = calibrated, < 1 under-dispersed), same sampler and budget.",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in sorted(meta.get('versions', {}).items()))}.",
        "",
        "How each library is run (every choice, in the module docstrings of `benchmarks/peers/`):",
        "",
        "* invgen (`invgen_side.py`): `invgen.solve` with the NFE-matched settings of the invgen-only frontier "
        "(`benchmarks/suites/frontier.yaml`), float32, the prior as `invgen.prior(name)` gives it.",
        "* deepinv (`deepinv_peer.py`): a copy of the network as a `deepinv.models.Denoiser` `D(x, sigma)` on [0, 1]; "
        "`DPS`, `DDRM`, `DiffPIR` and `PosteriorDiffusion` with each noisy data fidelity (PiGDM, moment matching, "
        "ALD, Score-SDE, ILVR) on the SDE and solver of deepinv's `DPS` defaults; `y` repeated N times.",
        "* azula (`azula_peer.py`): a copy of the network as an `azula.denoise.Denoiser` on [-1, 1] with the ADM "
        "plugin's `VPSchedule(1e-2, 1e-2)` and `GaussianPosterior`; every `azula.guidance` sampler, the denoiser "
        "wrappers driven by `DDPMSampler`; DPS and TDS one observation at a time (N samples per batch).",
        "* Budgets in `--dps-only` (1000 by default) run the DPS samplers only. Rows flagged `non-finite` had "
        "samples that overflowed (set to 0 before the metrics).",
        "",
    ]
    for name, task in TASKS.items():
        tmeta = meta.get("tasks", {}).get(name)
        if not _ok(cells, name) and tmeta is None:
            continue
        lines += [f"## {name}: {task.description}, {task.dataset}", ""]
        if tmeta:
            lines.append(
                f"{tmeta['images']} test images x N = {tmeta['samples']} samples, y SHA-256 `{tmeta['y_sha256']}`, "
                f"{tmeta.get('threads', '?')} thread(s). Operators checked in the run (max |peer A(x) - invgen A(x)|):"
            )
            lines += [""] + [f"* {p}: {d:.2e}" for p, d in tmeta.get("operator_pairs", {}).items()] + [""]
        if _ok(cells, name):
            title = f"{name} ({task.dataset}): best sampler of each library at each budget"
            plot(cells, name, out / f"{name}.png", title)
            lines += [f"![{name}]({name}.png)", ""]
            lines += [*summary_table(cells, name), ""]
        lines += [*task_table(cells, name), ""]
    if _ok(cells, ORACLE_TASK):
        lines += ["## Exact-posterior oracle: 4x4 inpainting (GMM prior, 50 % of pixels seen, noise std 0.05)", ""]
        lines += [
            "1000 chains per cell, each library given the GMM's exact denoiser in its own convention. SW and weights: "
            "the oracle's sliced-Wasserstein and mixture-weight errors in multiples of their noise floors (1 = as "
            "close as 1000 exact samples get).",
            "",
        ]
        lines += [*oracle_table(cells), ""]
    path = out / "frontier-peers.md"
    path.write_text("\n".join(lines))
    return path


__all__ = ["best", "oracle_table", "plot", "summary_table", "task_table", "write"]
