"""The full-size guided-diffusion (ADM) network on this CPU: conversion, loading, one denoiser call, one DPS step.

No pretrained weights ship, so the network is the ``ffhq256`` architecture of the DPS checkpoint (93.6M parameters)
with random weights, saved with ``torch.save`` as a user's ``ffhq_10m.pt`` is: the seconds and memory are those of
the real checkpoint (they do not depend on the values). Each measurement runs in a fresh process, so its peak
resident memory (``ru_maxrss``) is its own; seconds are the median of ``--repeat`` runs after one warm-up.

Usage::

    python benchmarks/adm_cpu.py --threads 2 --out docs/adm/cpu.json   # then: --render docs/adm/cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def _child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.what == "save":
        from invgen_plugins.diffusion.adm import ADMUNet, parameter_count

        torch.manual_seed(0)
        net = ADMUNet("ffhq256")
        for p in net.parameters():  # no zero layers: every path of the network carries signal
            torch.nn.init.normal_(p, std=0.02)
        torch.save(net.state_dict(), work / "ffhq_10m.pt")
        return {"parameters": parameter_count("ffhq256"), "pt_bytes": (work / "ffhq_10m.pt").stat().st_size}
    if args.what == "convert":
        from invgen_plugins.diffusion.adm_convert import convert_adm

        t0 = time.perf_counter()
        convert_adm(work / "ffhq_10m.pt", work / "ffhq256-adm", config="ffhq256")
        return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib()}
    import invgen

    t0 = time.perf_counter()
    prior = invgen.prior("adm", path=str(work / "ffhq256-adm"))
    load = time.perf_counter() - t0
    if args.what == "load":
        return {"seconds": load, "peak_mib": _peak_mib()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 256, 256, generator=g)
    op = invgen.operator("superres", scale=4, kernel="bicubic")
    y = op(x)
    base = _peak_mib()

    def once() -> None:
        if args.what == "denoise":
            with torch.no_grad():
                prior.denoise(x, 0.5)
        else:  # one DPS step: Tweedie's estimate, the measurement residual, its gradient through the network
            xt = x.clone().requires_grad_(True)
            residual = (op(prior.denoise(xt, 0.5)) - y).pow(2).sum()
            torch.autograd.grad(residual, xt)

    once()  # warm-up
    seconds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        once()
        seconds.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(seconds), "all": seconds, "peak_mib": _peak_mib(), "after_load_mib": base}


def _run(what: str, work: str, threads: int, batch: int = 1, repeat: int = 3) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--work", work, "--threads", str(threads)]
    cmd += ["--batch", str(batch), "--repeat", str(repeat)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(results: dict) -> str:
    r = results
    lines = [
        f"The ffhq256 ADM network on this CPU ({r['threads']} thread{'s' if r['threads'] > 1 else ''}, {r['cpu']}).",
        *([r["note"]] if r.get("note") else []),
        "",
        f"{r['parameters'] / 1e6:.1f}M parameters; checkpoint {r['pt_bytes'] / 2**20:.0f} MiB. Seconds: median of "
        f"{r['repeat']} after a warm-up; memory: peak resident set of the measuring process (the float32 weights "
        "included).",
        "",
        "| step | seconds | peak memory (MiB) |",
        "|---|---|---|",
        f"| `invgen convert adm` (read, check, write safetensors + SHA-256) | {r['convert']['seconds']:.2f} | "
        f"{r['convert']['peak_mib']:.0f} |",
        f"| `invgen.prior('adm', path=...)` (checksum, build, load) | {r['load']['seconds']:.2f} | "
        f"{r['load']['peak_mib']:.0f} |",
    ]
    for key, label in (("denoise", "one denoiser call"), ("dps", "one DPS step (forward + backward)")):
        for b in (1, 4):
            m = r[f"{key}-{b}"]
            lines.append(f"| {label}, 256x256, batch {b} | {m['seconds']:.2f} | {m['peak_mib']:.0f} |")
    lines += ["", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="docs/adm/cpu.json")
    parser.add_argument("--render", help="write the markdown table of --out's results to this file")
    parser.add_argument("--note", help="a line on the machine's load during the run, kept in the results")
    args = parser.parse_args()
    if args.child:
        args.what = args.child
        print(json.dumps(_child(args)))
        return
    if args.render:
        Path(args.render).write_text(render(json.loads(Path(args.out).read_text())))
        return
    with tempfile.TemporaryDirectory() as work:
        results: dict = {"threads": args.threads, "repeat": args.repeat, "cpu": _cpu_name()}
        results.update(_run("save", work, args.threads))
        results["convert"] = _run("convert", work, args.threads)
        results["load"] = _run("load", work, args.threads)
        for key in ("denoise", "dps"):
            for b in (1, 4):
                results[f"{key}-{b}"] = _run(key, work, args.threads, batch=b, repeat=args.repeat)
                print(key, b, results[f"{key}-{b}"], flush=True)
    results["command"] = "python benchmarks/adm_cpu.py " + " ".join(sys.argv[1:])
    if args.note:
        results["note"] = args.note
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))


if __name__ == "__main__":
    main()
