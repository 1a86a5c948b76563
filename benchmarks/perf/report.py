"""Markdown tables from ``results.json`` of ``benchmarks/perf/run.py``; ``python report.py results.json`` re-renders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(v: Any, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def short_row(row: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one comparison row (for the log)."""
    inv, d = row.get("invgen", {}), row.get("deepinv", {})
    return {
        "inv_s": round(inv.get("s_per_sample", float("nan")), 4),
        "dinv_s": round(d["s_per_sample"], 4) if "s_per_sample" in d else d.get("failed"),
        "ratio": round(row["ratio"], 2) if "ratio" in row else None,
        "inv_psnr": round(inv.get("psnr", float("nan")), 2),
        "dinv_psnr": round(d["psnr"], 2) if "psnr" in d else None,
        "nfe": (inv.get("nfe"), d.get("nfe")),
        "overhead": (round(inv.get("overhead", float("nan")), 3), round(d["overhead"], 3) if "overhead" in d else None),
    }


def compare_tables(comp: dict[str, Any]) -> list[str]:
    lines = [
        f"deepinv version: {comp.get('deepinv_version') or 'not installed'}",
        "",
        "| dataset | task | solver | NFE invgen / deepinv | invgen s/sample | deepinv s/sample | ratio (deepinv / "
        "invgen) | PSNR invgen / deepinv | LPIPS invgen / deepinv |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in comp["rows"]:
        inv, d = r["invgen"], r["deepinv"]
        if "failed" in d:
            lines.append(
                f"| {r['dataset']} | {r['task']} | {r['solver']} | {_f(inv['nfe'], '.0f')} / - | "
                f"{_f(inv['s_per_sample'], '.4f')} | fails | - | {_f(inv['psnr'], '.2f')} / - | "
                f"{_f(inv['lpips'], '.3f')} / - |"
            )
        else:
            lines.append(
                f"| {r['dataset']} | {r['task']} | {r['solver']} | {_f(inv['nfe'], '.0f')} / {_f(d['nfe'], '.0f')} | "
                f"{_f(inv['s_per_sample'], '.4f')} | {_f(d['s_per_sample'], '.4f')} | **{_f(r['ratio'], '.2f')}x** | "
                f"{_f(inv['psnr'], '.2f')} / {_f(d['psnr'], '.2f')} | {_f(inv['lpips'], '.3f')} / "
                f"{_f(d['lpips'], '.3f')} |"
            )
    fails = [r for r in comp["rows"] if "failed" in r["deepinv"]]
    if fails:
        lines += ["", "deepinv failures:", ""]
        for r in fails:
            lines.append(f"- {r['dataset']} {r['task']} {r['solver']}: `{r['deepinv']['failed']}`")
    lines += [
        "",
        "### Overhead over the bare network",
        "",
        "wall time of a chunk / (NFE x one bare network call at the chunk's batch): forward for DiffPIR and DDRM, "
        "forward + backward to the input for DPS; each library against its own network as it calls it.",
        "",
        "| dataset | task | solver | call | invgen net call (s) | invgen overhead | deepinv net call (s) | "
        "deepinv overhead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in comp["rows"]:
        inv, d = r["invgen"], r["deepinv"]
        call = "fwd+bwd" if r["solver"] == "dps" else "fwd"
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['solver']} | {call} | {_f(inv['net_call_s'], '.4f')} | "
            f"**{_f(inv['overhead'], '.3f')}** | {_f(d.get('net_call_s'), '.4f')} | {_f(d.get('overhead'), '.3f')} |"
        )
    return lines


def precision_table(pr: dict[str, Any]) -> list[str]:
    names = ("invgen-float32", "invgen-bfloat16", "deepinv-float32", "deepinv-bfloat16")
    lines = [
        f"deepinv version: {pr.get('deepinv_version') or 'not installed'}; {pr['samples']} posterior samples per "
        f"observation, {pr['chunk']} observations per chunk (network batch {pr['samples'] * pr['chunk']}), "
        f"{pr['n_obs']} observations; variants alternated chunk by chunk. Seconds per posterior sample (median over "
        "chunks), then each variant's time over invgen-bfloat16's; quality: PSNR of the posterior mean / LPIPS of the "
        "samples.",
        "",
        "| dataset | task | solver | NFE | "
        + " | ".join(f"{n} s/sample" for n in names)
        + " | deepinv-float32 / invgen-bfloat16 | deepinv-bfloat16 / invgen-bfloat16 "
        + "| invgen-float32 / invgen-bfloat16 | "
        + " | ".join(f"{n} PSNR / LPIPS" for n in names)
        + " |",
        "|---|---|---|---|" + "---|" * (2 * len(names) + 3),
    ]
    for r in pr["rows"]:
        cells = [
            f"{r[n]['s_per_sample']:.4f}" if n in r else ("fails" if n in r.get("failed", {}) else "n/a") for n in names
        ]
        ratio = [
            f"**{r['ratios'][n]:.2f}x**" if n in r.get("ratios", {}) else "-"
            for n in ("deepinv-float32", "deepinv-bfloat16", "invgen-float32")
        ]
        qual = [f"{r[n]['psnr']:.2f} / {r[n]['lpips']:.3f}" if n in r else "-" for n in names]
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['solver']} | {_f(r['invgen-bfloat16']['nfe'], '.0f')} | "
            + " | ".join(cells + ratio + qual)
            + " |"
        )
    fails = [(r, n, m) for r in pr["rows"] for n, m in r.get("failed", {}).items()]
    if fails:
        lines += ["", "deepinv failures:", ""]
        lines += [f"- {r['dataset']} {r['task']} {r['solver']} ({n}): `{m}`" for r, n, m in fails]
    return lines


DIFFPIR_LABELS = {
    "deepinv": "deepinv (lambda 7)",
    "invgen": "invgen (lambda 7, default)",
    "invgen-uniform": "invgen, uniform timesteps",
    "invgen-before": "invgen before 2026-12-03 (one-scale lambda 7, uniform)",
}


def diffpir_table(dq: dict[str, Any]) -> list[str]:
    names = [n for n in DIFFPIR_LABELS if any(n in r for r in dq["rows"])]
    lines = [
        f"deepinv version: {dq.get('deepinv_version') or 'not installed'}; NFE {dq['nfe']}, {dq['samples']} posterior "
        f"samples per observation, {dq['n_obs']} observations, seeds {dq['seeds']}, both libraries in bfloat16. "
        "PSNR of the posterior mean / LPIPS of the samples, means over the seeds.",
        "",
        "| dataset | task | " + " | ".join(DIFFPIR_LABELS[n] for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in dq["rows"]:
        cells = [f"{r[n]['psnr']:.2f} / {r[n]['lpips']:.4f}" if n in r else "-" for n in names]
        lines.append(f"| {r['dataset']} | {r['task']} | " + " | ".join(cells) + " |")
    return lines


def limit_table(lim: dict[str, Any]) -> list[str]:
    lines = [
        f"invgen only; {lim['rounds']} rounds alternating a {lim['steps']}-NFE solve and {lim['steps']} bare calls at "
        "the same batch; median over rounds. Target <= 1.10.",
        "",
        "| dataset | task | solver | batch | call | NFE | solve (s) | bare call (s) | wall / (NFE x call) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lim["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['solver']} | {r['batch']} | {r['call']} | {_f(r['nfe'], '.0f')} | "
            f"{_f(r['wall_s'], '.3f')} | {_f(r['net_call_s'], '.4f')} | **{_f(r['ratio'], '.3f')}** |"
        )
    return lines


def opts_table(op: dict[str, Any]) -> list[str]:
    rows = op["rows"]
    if not rows:
        return []
    keys = [k for k in rows[0] if k not in ("dataset", "batch")]
    lines = ["| dataset | batch | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['batch']} | " + " | ".join(_f(r[k], ".4f") for k in keys) + " |")
    return lines


def scaling_tables(sc: dict[str, Any]) -> list[str]:
    lines = [
        f"{sc['steps']} steps per point; one fresh subprocess per point; peak memory = `VmHWM` of that process, reset "
        "just before the solve (so `peak - before` is what the solve adds over the loaded interpreter, torch and "
        "prior).",
        "",
        "| solver | samples | resolution | seconds | s/sample | rss before solve (MiB) | peak RSS (MiB) | "
        "peak - before (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sc["samples"] + sc["resolution"]:
        if "failed" in r:
            lines.append(f"| {r['solver']} | {r['n']} | {r['res']} | fails: `{r['failed']}` | | | | |")
            continue
        lines.append(
            f"| {r['solver']} | {r['n']} | {r['res']} | {_f(r['seconds'], '.2f')} | {_f(r['seconds'] / r['n'], '.3f')} "
            f"| {_f(r['rss_before_mb'], '.0f')} | {_f(r['peak_rss_mb'], '.0f')} | "
            f"{_f(r['peak_rss_mb'] - r['rss_before_mb'], '.0f')} |"
        )
    long = sc.get("long")
    if long and "failed" not in long:
        lines += [
            "",
            f"Long run: DPS, {long['steps']} steps, 1 sample, 32x32; RSS (MiB) every {long.get('every')} "
            "network calls:",
            "",
            "| call | " + " | ".join(str(c) for c, _ in long["trace"]) + " |",
            "|---|" + "---|" * len(long["trace"]),
            "| RSS | " + " | ".join(f"{m:.0f}" for _, m in long["trace"]) + " |",
        ]
    elif long:
        lines += ["", f"Long run failed: `{long['failed']}`"]
    return lines


def imports_table(im: dict[str, Any]) -> list[str]:
    lines = ["| what | seconds |", "|---|---|"]
    for k, v in im.items():
        lines.append(f"| {k} | {v if isinstance(v, bool) else _f(v, '.3f')} |")
    return lines


def render(results: dict[str, Any], notes: str = "") -> str:
    """``results.md``: the hand-written ``notes`` (``notes.md`` beside the results: summary, optimizations), then the
    tables generated from ``results``."""
    meta = results.get("meta", {})
    out = [
        "# Performance results",
        "",
        *([notes.strip(), ""] if notes.strip() else []),
        "# Tables (generated by benchmarks/perf/run.py)",
        "",
        f"Mode `{meta.get('mode')}`, {meta.get('date')}, torch {meta.get('torch')}, python {meta.get('python')}, "
        f"{meta.get('machine')}; load average at start {meta.get('load_average_start')}, at end "
        f"{meta.get('load_average_end')}; wall {_f(meta.get('wall_s'), '.0f')} s (the last invocation).",
        "",
    ]
    sections = results.get("sections_meta", {})
    if sections:
        out += [
            "Sections (each may come from another invocation): "
            + "; ".join(
                f"`{name}` {m.get('date')}, {m.get('threads', '?')} threads, {_f(m.get('wall_s'), '.0f')} s, "
                f"load {_f((m.get('load_average_start') or [None])[0], '.1f')} -> "
                f"{_f((m.get('load_average_end') or [None])[0], '.1f')}"
                for name, m in sections.items()
            )
            + ".",
            "",
        ]
    if "compare" in results:
        out += ["## invgen vs deepinv", "", *compare_tables(results["compare"]), ""]
    if "precision" in results:
        out += [
            "## N samples per observation, float32 and bfloat16 in both libraries",
            "",
            *precision_table(results["precision"]),
            "",
        ]
    if "diffpir" in results:
        out += ["## DiffPIR's hyperparameter conventions (quality only)", "", *diffpir_table(results["diffpir"]), ""]
    if "limit" in results:
        out += ["## Overhead over the network (the limit)", "", *limit_table(results["limit"]), ""]
    if "opts" in results:
        out += ["## Network-call options (seconds per call, interleaved A/B)", "", *opts_table(results["opts"]), ""]
    if "scaling" in results:
        out += ["## Scaling", "", *scaling_tables(results["scaling"]), ""]
    if "imports" in results:
        out += ["## Import and CLI start-up (median of subprocess runs)", "", *imports_table(results["imports"]), ""]
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    notes = path.with_name("notes.md")
    text = render(json.loads(path.read_text()), notes.read_text() if notes.exists() else "")
    if len(sys.argv) > 2 and sys.argv[2] == "--write":
        path.with_name("results.md").write_text(text)
    else:
        print(text)
