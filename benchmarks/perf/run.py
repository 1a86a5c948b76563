"""Performance benchmark of invgen's diffusion posterior samplers (issue 9).

Sections (``--section``, default all):

* ``compare``: invgen vs deepinv on the same trained networks (``diffusion-mnist``, ``diffusion-cifar10``) and the same
  frozen observations (32 test images per task; SR x4, box inpainting, colorization for RGB), DPS, DiffPIR and DDRM at
  equal NFE. Both libraries run in the same process, alternating chunk by chunk (A B B A ...), so that the load of a
  shared machine hits both alike. Reports seconds per posterior sample, their ratio, PSNR / LPIPS, the NFE counted by
  a hook on each network, and each library's overhead over its own bare network calls.
* ``precision``: the same comparison with N posterior samples per observation (the field's use: invgen batches the
  N x B samples into each network call, deepinv gets ``y`` repeated N times, the same batch), four variants
  alternated chunk by chunk: invgen float32, invgen bfloat16 (``DiffusionPrior.set_precision``), deepinv float32
  (what a deepinv user gets) and deepinv with its denoiser's network wrapped in the same bfloat16 autocast (the same
  trick applied by hand, so that the ratio of the two bfloat16 variants is the solvers' own difference).
* ``diffpir``: DiffPIR's quality in both libraries given the paper's ``lambda = 7`` at 20 NFE, several seeds, both in
  bfloat16 (no timing): deepinv; invgen's default (the reference code's ``rho`` scale and ``quad`` timesteps); invgen
  with DDIM's uniform timesteps; invgen as it was before 2026-12-03 (``lambda`` on one scale, ``lam = 28`` now, and
  uniform timesteps). It separates the two hyperparameter conventions from the solvers' speed.
* ``opts``: interleaved A/B timings of the network-level options (memory format, frozen weights, no_grad vs
  inference_mode) that decide what the prior adapter does.
* ``scaling``: seconds and peak RSS against the number of posterior samples and the resolution (one fresh subprocess
  per point; ``VmHWM`` reset just before the solve, so the peak is the solve's), and the RSS every 100 steps of a
  1000-step DPS run.
* ``imports``: ``import invgen`` (``-X importtime`` and wall time) and ``invgen --help``, medians of 5 subprocesses.

Usage::

    python benchmarks/perf/run.py --quick              # a few minutes: mnist, 8 observations, few steps
    python benchmarks/perf/run.py --full               # the published tables (docs/perf), about 30 min on 2 cores
    PYTHONPATH=~/.cache/invgen-perf/site python benchmarks/perf/run.py --full   # with deepinv importable

Results go to ``--out`` (``docs/perf`` for ``--full``, a temporary folder for ``--quick``): ``results.json`` and
``results.md``. Without deepinv the ``compare`` section still runs the invgen side and records deepinv as missing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import report  # noqa: E402  (the sibling module, found through HERE)

TASKS = {"mnist": ("sr4", "inpaint"), "cifar10": ("sr4", "inpaint", "colorize")}
PRIORS = {"mnist": "diffusion-mnist", "cifar10": "diffusion-cifar10"}
SOLVERS = ("dps", "diffpir", "ddrm")
NOISE_STD = 0.05

FULL = {
    "datasets": ("mnist", "cifar10"),
    "n_obs": 32,
    "chunk": 8,
    "nfe": {"dps": 50, "diffpir": 20, "ddrm": 20},
    "samples": (1, 2, 4, 8, 16, 32, 64),
    "resolutions": (32, 64, 128, 256),
    "scaling_steps": 10,
    "long_steps": 1000,
    "import_runs": 5,
    "opts_batches": (1, 8, 32, 128),
    "limit_steps": 20,
    "limit_rounds": 9,  # 5 rounds of 10 steps left a +-15 % round-to-round spread at 2 threads
    "precision_obs": 16,
    "precision_chunk": 8,
    "precision_samples": 8,
    "diffpir_obs": 32,
    "diffpir_samples": 8,
    "diffpir_seeds": (11, 12, 13),
}
QUICK = {
    "datasets": ("mnist",),
    "n_obs": 8,
    "chunk": 4,
    "nfe": {"dps": 4, "diffpir": 4, "ddrm": 4},
    "samples": (1, 4),
    "resolutions": (32, 64),
    "scaling_steps": 3,
    "long_steps": 100,
    "import_runs": 2,
    "opts_batches": (8,),
    "limit_steps": 3,
    "limit_rounds": 2,
    "precision_obs": 4,
    "precision_chunk": 2,
    "precision_samples": 2,
    "diffpir_obs": 4,
    "diffpir_samples": 2,
    "diffpir_seeds": (11,),
}


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def median_time(fn: Any, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class CallCounter:
    """Counts the calls of a module (a forward pre-hook): the NFE, counted the same way in both libraries."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any) -> None:
        self.calls += 1

    def take(self) -> int:
        n, self.calls = self.calls, 0
        return n


def current_rss_mb() -> float:
    """Resident set size now (``/proc/self/statm``), in MiB; ``nan`` where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process image, in MiB: ``VmHWM`` of ``/proc/self/status`` where it exists
    (Linux), else ``ru_maxrss``. (``ru_maxrss`` survives fork + exec: a child started by a big parent reports at least
    the parent's size, so it cannot measure a fresh subprocess.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def reset_peak_rss() -> bool:
    """Reset the peak RSS (``VmHWM``) to the current RSS (Linux >= 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:  # pragma: no cover - non-Linux or not permitted
        return False


def load_prior(dataset: str, prior_dirs: dict[str, str]) -> Any:
    """The registered prior of ``dataset``, or the one in a folder given with ``--prior-dir name=DIR``."""
    import invgen

    name = PRIORS[dataset]
    if name in prior_dirs:
        from invgen_plugins.diffusion.model import DiffusionPrior

        return DiffusionPrior.from_pretrained(prior_dirs[name], name=name)
    return invgen.prior(name)


def make_operator(task: str, channels: int) -> Any:
    """invgen's operator for a task, Gaussian noise std 0.05."""
    import invgen

    noise = invgen.noise("gaussian", std=NOISE_STD)
    if task == "sr4":
        return invgen.operator("superres", scale=4, noise=noise)
    if task == "inpaint":
        return invgen.operator("inpaint", mask="box", noise=noise)
    if task == "colorize":
        return invgen.operator("colorize", noise=noise)
    raise ValueError(task)


def observations(dataset: str, task: str, n: int, cache: Path | None) -> tuple[Tensor, Tensor, Any]:
    """``(x, y, operator)``: the first ``n`` test images and their frozen observations (seeded, cached).

    ``y`` is drawn once with a generator seeded from the dataset and task and stored in ``cache`` (safetensors), so
    both libraries, and every rerun, see the same observations.
    """
    import invgen

    ds = invgen.dataset(dataset, split="test")
    x = torch.stack([ds[i] for i in range(n)])
    op = make_operator(task, x.shape[1])
    key = f"{dataset}-{task}-{n}"
    path = cache / f"observations-{key}.safetensors" if cache else None
    if path is not None and path.exists():
        from safetensors.torch import load_file

        y = load_file(str(path))["y"]
    else:
        gen = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        y = op.measure(x, generator=gen)
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"y": y.contiguous(), "x": x.contiguous()}, str(path))
    return x, y, op


def digest(t: Tensor) -> str:
    """Short SHA-256 of a tensor's bytes (to show that both libraries saw the same observations)."""
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def quality(samples: Tensor, x: Tensor) -> dict[str, float]:
    """PSNR of the posterior mean and LPIPS of the samples against the truth, means over images; samples are clamped
    to [0, 1] first (both libraries alike). Shape: samples ``(N, B, C, H, W)``, x ``(B, C, H, W)``."""
    from invgen import metrics

    s = samples.clamp(0, 1)
    with torch.no_grad():
        psnr = float(metrics.psnr(s.mean(0), x).mean())
        lp = float(torch.stack([metrics.lpips(si, x) for si in s]).mean())
    return {"psnr": psnr, "lpips": lp}


def network_call_time(net_call: Any, x: Tensor, grad: bool, repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of one bare network call at batch ``x``: forward (no_grad), or forward + backward to the input
    (what a gradient-guided solver needs per step). ``net_call(x) -> Tensor``."""

    def fwd() -> None:
        with torch.no_grad():
            net_call(x)

    def fwd_bwd() -> None:
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = net_call(xg)
            torch.autograd.grad(out.sum(), xg)

    return median_time(fwd_bwd if grad else fwd, repeats=repeats, warmup=warmup)


# ---------------------------------------------------------------------------------------------------------------------
# compare: invgen vs deepinv


def optional_deepinv(log: Any, fallback: str) -> tuple[Any, str | None]:
    """``(the deepinv_side module, deepinv's version)``, or ``(None, None)`` with a log line saying that the section
    runs ``fallback`` when deepinv is not importable."""
    try:
        import deepinv_side

        return deepinv_side, deepinv_side.import_deepinv().__version__
    except ImportError as err:
        log(f"deepinv not importable, running {fallback} ({err})")
        return None, None


def _deepinv_physics(deepinv_side: Any, task: str, op: Any, x: Tensor) -> Any:
    """deepinv's physics equal to ``op`` on images like ``x`` (None when deepinv is not importable)."""
    if deepinv_side is None:
        return None
    mask = op.mask_for(tuple(x.shape)) if task == "inpaint" else None
    return deepinv_side.make_physics(task, x.shape[1], x.shape[-1], mask, NOISE_STD)


def _row_head(dataset: str, task: str, solver: str, nfe: int, n: int, chunk: int, y: Tensor) -> dict[str, Any]:
    """The identifying fields of a comparison row (both sections)."""
    return {
        "dataset": dataset,
        "task": task,
        "solver": solver,
        "nfe_requested": nfe,
        "n_obs": n,
        "chunk": chunk,
        "y_sha256": digest(y),
    }


def invgen_solve(prior: Any, op: Any, y: Tensor, solver: str, nfe: int, seed: int) -> Tensor:
    """One invgen posterior sample per observation at ``nfe`` network calls. Shape ``(1, B, C, H, W)``."""
    import invgen

    return invgen.solve(y, op, prior, solver=solver, n_samples=1, seed=seed, steps=nfe).samples


def invgen_net_call(prior: Any, sigma: Tensor, x: Tensor) -> Tensor:
    """The bare network call of invgen's prior (``prior.eps``, as its ``denoise`` makes it) on a [0, 1] batch."""
    return prior.eps(2 * x - 1, 2 * sigma)


def compare(cfg: dict, prior_dirs: dict[str, str], cache: Path | None, log: Any) -> dict[str, Any]:
    """The side-by-side table (module docstring). Returns ``{"rows": [...], "deepinv": version or None, ...}``."""
    deepinv_side, dinv_version = optional_deepinv(log, "the invgen side only")
    rows = []
    n, chunk = cfg["n_obs"], cfg["chunk"]
    for dataset in cfg["datasets"]:
        prior = load_prior(dataset, prior_dirs)
        counter = CallCounter(prior.net)
        dnet = deepinv_side.load_network_copy(prior) if deepinv_side else None
        dcounter = CallCounter(dnet) if dnet is not None else None
        denoiser = deepinv_side.make_denoiser(dnet) if dnet is not None else None
        for task in TASKS[dataset]:
            x, y, op = observations(dataset, task, n, cache)
            physics = _deepinv_physics(deepinv_side, task, op, x)
            phys_err = deepinv_side.check_physics(physics, op, x) if physics is not None else None
            for solver in SOLVERS:
                nfe = cfg["nfe"][solver]
                row: dict[str, Any] = _row_head(dataset, task, solver, nfe, n, chunk, y)
                row["physics_max_diff"] = phys_err
                log(f"{dataset} {task} {solver} (NFE {nfe})")
                dsolver, dfail = None, None
                if deepinv_side is not None:
                    try:
                        sig = deepinv_side.schedule_sigmas(prior, nfe)
                        dsolver = deepinv_side.make_solver(solver, denoiser, nfe, sig, NOISE_STD)
                        deepinv_side.run(dsolver, solver, y[:2], physics, seed=1)  # warm-up, also the failure probe
                    except Exception as err:  # a deepinv failure is a result, recorded as such
                        dfail = f"{type(err).__name__}: {err}"[:300]
                        dsolver = None
                        log(f"  deepinv fails: {dfail}")
                else:
                    dfail = "deepinv not installed"
                invgen_solve(prior, op, y[:2], solver, min(nfe, 2), seed=1)  # warm-up
                # bare network calls at the chunk batch, each library its own network as it calls it; timed right
                # after each chunk (3 calls, median) so that the overhead ratio sees the same machine load as the chunk
                xb = torch.rand(chunk, *x.shape[1:])
                sb = torch.full((chunk, 1, 1, 1), 0.5)
                grad = solver == "dps"
                inv_call = functools.partial(invgen_net_call, prior, sb)
                dinv_call = functools.partial(denoiser, sigma=sb.reshape(-1)) if dsolver else None
                counter.take()
                if dcounter is not None:
                    dcounter.take()
                inv_t, dinv_t, inv_s, dinv_s, inv_nfe, dinv_nfe, inv_net, dinv_net = ([] for _ in range(8))
                for k, start in enumerate(range(0, n, chunk)):
                    yc = y[start : start + chunk]
                    order = ("invgen", "deepinv") if k % 2 == 0 else ("deepinv", "invgen")
                    for lib in order:
                        if lib == "invgen":
                            t0 = time.perf_counter()
                            s = invgen_solve(prior, op, yc, solver, nfe, seed=100 + k)
                            inv_t.append(time.perf_counter() - t0)
                            inv_s.append(s)
                            inv_nfe.append(counter.take())
                            inv_net.append(network_call_time(inv_call, xb, grad, repeats=3, warmup=0))
                            counter.take()
                        elif dsolver is not None:
                            t0 = time.perf_counter()
                            with torch.no_grad() if solver != "dps" else contextlib.nullcontext():
                                s = deepinv_side.run(dsolver, solver, yc, physics, seed=100 + k)
                            dinv_t.append(time.perf_counter() - t0)
                            dinv_s.append(s.detach()[None])
                            dinv_nfe.append(dcounter.take())
                            dinv_net.append(network_call_time(dinv_call, xb, grad, repeats=3, warmup=0))
                            dcounter.take()
                per_inv = [t / chunk for t in inv_t]
                row["invgen"] = {
                    "s_per_sample": statistics.median(per_inv),
                    "chunk_seconds": inv_t,
                    "nfe": statistics.median(inv_nfe),
                    "net_call_s": statistics.median(inv_net),
                    "overhead": statistics.median([t / (f * b) for t, f, b in zip(inv_t, inv_nfe, inv_net)]),
                    **quality(torch.cat(inv_s, dim=1), x),
                }
                if dsolver is not None:
                    per_d = [t / chunk for t in dinv_t]
                    row["deepinv"] = {
                        "s_per_sample": statistics.median(per_d),
                        "chunk_seconds": dinv_t,
                        "nfe": statistics.median(dinv_nfe),
                        "net_call_s": statistics.median(dinv_net),
                        "overhead": statistics.median([t / (f * b) for t, f, b in zip(dinv_t, dinv_nfe, dinv_net)]),
                        **quality(torch.cat(dinv_s, dim=1), x),
                    }
                    row["ratio"] = row["deepinv"]["s_per_sample"] / row["invgen"]["s_per_sample"]
                    row["ratio_per_chunk"] = [d / i for d, i in zip(dinv_t, inv_t)]
                else:
                    row["deepinv"] = {"failed": dfail}
                log(f"  {json.dumps(report.short_row(row))}")
                rows.append(row)
    return {"rows": rows, "deepinv_version": dinv_version}


# ---------------------------------------------------------------------------------------------------------------------
# precision: N samples per observation, float32 and bfloat16 network calls in both libraries


def _precision_variant(name: str, y: Tensor, seed: int, ctx: dict[str, Any]) -> Tensor:
    """``ctx["n_samples"]`` posterior samples per observation from one variant. Shape ``(N, B, C, H, W)``."""
    import invgen

    n_s, solver = ctx["n_samples"], ctx["solver"]
    lib, p = name.split("-")
    if lib == "invgen":
        prior = ctx["prior"]
        prior.set_precision(p)
        try:
            return invgen.solve(y, ctx["op"], prior, solver=solver, n_samples=n_s, seed=seed, steps=ctx["nfe"]).samples
        finally:
            prior.set_precision("float32")
    return deepinv_samples(ctx["deepinv_side"], ctx["dsolvers"][p], solver, y, ctx["physics"], n_s, seed)


def deepinv_samples(side: Any, dsolver: Any, solver: str, y: Tensor, physics: Any, n_s: int, seed: int) -> Tensor:
    """``n_s`` deepinv posterior samples per observation: ``y`` repeated ``n_s`` times (sample-major, like invgen's
    samples) in one call; autograd only for DPS. Shape: y ``(B, ...)`` -> ``(N, B, C, H, W)``."""
    yr = y.repeat(n_s, *([1] * (y.dim() - 1)))
    with torch.no_grad() if solver != "dps" else contextlib.nullcontext():
        s = side.run(dsolver, solver, yr, physics, seed=seed)
    return s.detach().reshape(n_s, y.shape[0], *s.shape[1:])


def precision(cfg: dict, prior_dirs: dict[str, str], cache: Path | None, log: Any) -> dict[str, Any]:
    """The four-variant table (module docstring). Returns ``{"rows": [...], "deepinv_version", "samples", ...}``."""
    deepinv_side, dinv_version = optional_deepinv(log, "the invgen variants only")
    n, chunk, n_s = cfg["precision_obs"], cfg["precision_chunk"], cfg["precision_samples"]
    rows = []
    for dataset in cfg["datasets"]:
        prior = load_prior(dataset, prior_dirs)
        counter = CallCounter(prior.net)
        dnet = deepinv_side.load_network_copy(prior) if deepinv_side else None
        dcounter = CallCounter(dnet) if dnet is not None else None
        dens = (
            {"float32": deepinv_side.make_denoiser(dnet), "bfloat16": deepinv_side.make_denoiser(dnet, torch.bfloat16)}
            if dnet is not None
            else {}
        )
        for task in TASKS[dataset]:
            x, y, op = observations(dataset, task, cfg["n_obs"], cache)
            x, y = x[:n], y[:n]
            physics = _deepinv_physics(deepinv_side, task, op, x)
            for solver in SOLVERS:
                nfe = cfg["nfe"][solver]
                log(f"precision: {dataset} {task} {solver} (NFE {nfe}, {n_s} samples x {chunk} observations)")
                dsolvers: dict[str, Any] = {}
                fails: dict[str, str] = {}
                sig = deepinv_side.schedule_sigmas(prior, nfe) if dens else None
                for p, den in dens.items():
                    try:
                        dsolvers[p] = deepinv_side.make_solver(solver, den, nfe, sig, NOISE_STD)
                        deepinv_side.run(dsolvers[p], solver, y[:1], physics, seed=1)  # warm-up, the failure probe
                    except Exception as err:  # a deepinv failure is a result, recorded as such
                        dsolvers.pop(p, None)
                        fails[f"deepinv-{p}"] = f"{type(err).__name__}: {err}"[:300]
                ctx = {"prior": prior, "op": op, "solver": solver, "nfe": nfe, "n_samples": n_s}
                ctx.update(dsolvers=dsolvers, physics=physics, deepinv_side=deepinv_side)
                names = ["invgen-float32", "invgen-bfloat16", *(f"deepinv-{p}" for p in dsolvers)]
                if fails:
                    log(f"  deepinv fails: {fails}")
                _precision_variant("invgen-float32", y[:1], 1, ctx)  # warm-up
                times: dict[str, list[float]] = {k: [] for k in names}
                nfes: dict[str, list[int]] = {k: [] for k in names}
                samples: dict[str, list[Tensor]] = {k: [] for k in names}
                for k, start in enumerate(range(0, n, chunk)):
                    yc = y[start : start + chunk]
                    order = names[k % len(names) :] + names[: k % len(names)]  # rotate: each variant leads once
                    for name in order:
                        cnt = counter if name.startswith("invgen") else dcounter
                        cnt.take()
                        t0 = time.perf_counter()
                        out = _precision_variant(name, yc, 100 + k, ctx)
                        times[name].append(time.perf_counter() - t0)
                        nfes[name].append(cnt.take())
                        samples[name].append(out.detach())
                row = _row_head(dataset, task, solver, nfe, n, chunk, y) | {"samples": n_s, "failed": fails}
                for name in names:
                    row[name] = {
                        "s_per_sample": statistics.median(times[name]) / (chunk * n_s),
                        "chunk_seconds": times[name],
                        "nfe": statistics.median(nfes[name]),
                        **quality(torch.cat(samples[name], dim=1), x),
                    }
                base = row["invgen-bfloat16"]["s_per_sample"]
                row["ratios"] = {name: row[name]["s_per_sample"] / base for name in names}
                log("  " + json.dumps({k: round(v, 2) for k, v in row["ratios"].items()}))
                rows.append(row)
    return {"rows": rows, "deepinv_version": dinv_version, "samples": n_s, "chunk": chunk, "n_obs": n}


# ---------------------------------------------------------------------------------------------------------------------
# diffpir: the quality of DiffPIR's hyperparameter conventions in both libraries

DIFFPIR_VARIANTS = {
    "deepinv": None,
    "invgen": {},  # the defaults: lam = 7 on the reference scale, quad timesteps
    "invgen-uniform": {"spacing": "uniform"},
    "invgen-before": {"lam": 28.0, "spacing": "uniform"},  # lambda = 7 on one scale: rho = 7 sigma_y^2 / s^2
}


def diffpir_quality(cfg: dict, prior_dirs: dict[str, str], cache: Path | None, log: Any) -> dict[str, Any]:
    """The ``diffpir`` section (module docstring). Returns ``{"rows": [...], "seeds", "samples", "n_obs", ...}``."""
    from invgen.solvers.diffpir import diffpir

    deepinv_side, dinv_version = optional_deepinv(log, "the invgen variants only")
    n, n_s, seeds, nfe = cfg["diffpir_obs"], cfg["diffpir_samples"], cfg["diffpir_seeds"], cfg["nfe"]["diffpir"]
    rows = []
    for dataset in cfg["datasets"]:
        prior = load_prior(dataset, prior_dirs)
        prior.set_precision("bfloat16")
        den = (
            deepinv_side.make_denoiser(deepinv_side.load_network_copy(prior), torch.bfloat16) if deepinv_side else None
        )
        try:
            for task in TASKS[dataset]:
                x, y, op = observations(dataset, task, cfg["n_obs"], cache)
                x, y = x[:n], y[:n]
                log(f"diffpir: {dataset} {task} (NFE {nfe}, {n_s} samples x {n} observations x {len(seeds)} seeds)")
                physics = _deepinv_physics(deepinv_side, task, op, x)
                dsolver = deepinv_side.make_solver("diffpir", den, nfe, [], NOISE_STD) if den is not None else None
                row = _row_head(dataset, task, "diffpir", nfe, n, n, y) | {"samples": n_s, "seeds": list(seeds)}
                for name, options in DIFFPIR_VARIANTS.items():
                    if options is None and dsolver is None:
                        continue
                    per_seed = []
                    for seed in seeds:
                        if options is None:
                            s = deepinv_samples(deepinv_side, dsolver, "diffpir", y, physics, n_s, seed)
                        else:
                            with torch.no_grad():
                                g = torch.Generator().manual_seed(seed)
                                s = diffpir(prior, op, y, n_samples=n_s, generator=g, steps=nfe, **options)
                        per_seed.append(quality(s, x))
                    row[name] = {
                        "options": options,
                        "psnr": statistics.mean(q["psnr"] for q in per_seed),
                        "lpips": statistics.mean(q["lpips"] for q in per_seed),
                        "per_seed": per_seed,
                    }
                log(
                    "  "
                    + json.dumps(
                        {k: [round(row[k]["psnr"], 2), round(row[k]["lpips"], 4)] for k in DIFFPIR_VARIANTS if k in row}
                    )
                )
                rows.append(row)
        finally:
            prior.set_precision("float32")
    return {"rows": rows, "deepinv_version": dinv_version, "samples": n_s, "n_obs": n, "seeds": list(seeds), "nfe": nfe}


# ---------------------------------------------------------------------------------------------------------------------
# limit: invgen's wall time against its bare network calls


def limit(cfg: dict, prior_dirs: dict[str, str], cache: Path | None, log: Any) -> dict[str, Any]:
    """``wall / (NFE x bare call)`` of each invgen solver at the chunk batch, measured by alternating, ``rounds``
    times, a ``steps``-NFE solve and ``steps`` bare network calls (forward; forward + backward for DPS), so that both
    see the same machine load; the median over rounds is reported."""
    rows = []
    chunk, steps, rounds = cfg["chunk"], cfg["limit_steps"], cfg["limit_rounds"]
    for dataset in cfg["datasets"]:
        prior = load_prior(dataset, prior_dirs)
        counter = CallCounter(prior.net)
        for task in TASKS[dataset]:
            x, y, op = observations(dataset, task, cfg["n_obs"], cache)
            yc = y[:chunk]
            xb = torch.rand(chunk, *x.shape[1:])
            sb = torch.full((chunk, 1, 1, 1), 0.5)
            call = functools.partial(invgen_net_call, prior, sb)
            for solver in SOLVERS:
                grad = solver == "dps"
                invgen_solve(prior, op, yc, solver, 2, seed=0)  # warm-up
                ratios, walls, bares, nfes = [], [], [], []
                for r in range(rounds):
                    counter.take()
                    t0 = time.perf_counter()
                    invgen_solve(prior, op, yc, solver, steps, seed=r)
                    walls.append(time.perf_counter() - t0)
                    nfes.append(counter.take())
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        network_call_time(call, xb, grad, repeats=1, warmup=0)
                    bares.append((time.perf_counter() - t0) / steps)
                    ratios.append(walls[-1] / (nfes[-1] * bares[-1]))
                rec = {
                    "dataset": dataset,
                    "task": task,
                    "solver": solver,
                    "batch": chunk,
                    "nfe": statistics.median(nfes),
                    "call": "fwd+bwd" if grad else "fwd",
                    "wall_s": statistics.median(walls),
                    "net_call_s": statistics.median(bares),
                    "ratio": statistics.median(ratios),
                    "ratios": ratios,
                }
                log(f"  limit {json.dumps({k: v for k, v in rec.items() if k != 'ratios'})}")
                rows.append(rec)
    return {"rows": rows, "steps": steps, "rounds": rounds}


# ---------------------------------------------------------------------------------------------------------------------
# opts: what the prior adapter should do


def _call_with(net: torch.nn.Module, cn: Tensor, x: Tensor, autocast: torch.dtype | None = None) -> Tensor:
    if autocast is None:
        return net(x, cn)
    with torch.autocast(x.device.type, dtype=autocast):
        return net(x, cn).float()


def opts(cfg: dict, prior_dirs: dict[str, str], log: Any) -> dict[str, Any]:
    """Interleaved A/B of network-call variants at several batch sizes (mnist and cifar10 networks).

    Variants: ``nchw`` (default memory format, frozen weights), ``channels_last`` (weights and input channels-last,
    frozen), ``nchw_grad_params`` (weights requiring grad, as ``load_state_dict`` leaves them;
    ``DiffusionPrior.from_pretrained`` freezes them since this measurement: forward + backward only),
    ``inference_mode`` (forward only, instead of ``no_grad``), ``channels_last bf16`` (channels-last under bfloat16
    autocast, ``DiffusionPrior.set_precision("bfloat16")``), ``nchw bf16`` (forward + backward: the layout
    ``DiffusionPrior`` uses for bfloat16 gradient calls).
    """
    from invgen_plugins.diffusion.schedule import c_noise

    out = []
    for dataset in cfg["datasets"]:
        prior = load_prior(dataset, prior_dirs)
        base = copy.deepcopy(prior.net).to(memory_format=torch.contiguous_format).requires_grad_(False)
        cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
        grad_params = copy.deepcopy(base).requires_grad_(True)
        c = base.config.in_channels
        for b in cfg["opts_batches"]:
            x = torch.randn(b, c, 32, 32)
            xcl = x.contiguous(memory_format=torch.channels_last)
            cn = c_noise(torch.full((b,), 1.0))
            variants = {
                "fwd nchw": (base, x, False, False, None),
                "fwd channels_last": (cl, xcl, False, False, None),
                "fwd channels_last bf16": (cl, xcl, False, False, torch.bfloat16),
                "fwd nchw inference_mode": (base, x, False, True, None),
                "fwd+bwd nchw": (base, x, True, False, None),
                "fwd+bwd channels_last": (cl, xcl, True, False, None),
                "fwd+bwd channels_last bf16": (cl, xcl, True, False, torch.bfloat16),
                "fwd+bwd nchw bf16": (base, x, True, False, torch.bfloat16),
                "fwd+bwd nchw grad params": (grad_params, x, True, False, None),
            }
            times: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(3):  # rounds, interleaving the variants
                for name, (net, xin, grad, inference, dtype) in variants.items():
                    call = functools.partial(_call_with, net, cn, autocast=dtype)
                    if inference:
                        with torch.inference_mode():
                            times[name].append(median_time(functools.partial(call, xin), repeats=3))
                    else:
                        times[name].append(network_call_time(call, xin, grad, repeats=3))
            rec = {"dataset": dataset, "batch": b, **{k: statistics.median(v) for k, v in times.items()}}
            log(f"  opts {json.dumps(rec)}")
            out.append(rec)
    return {"rows": out}


# ---------------------------------------------------------------------------------------------------------------------
# scaling


def scaling_point(spec: dict[str, Any], prior_dirs: dict[str, str]) -> dict[str, Any]:
    """One scaling measurement in this (fresh) process: ``spec = {"kind", "solver", "n", "res", "steps"}``."""
    import invgen

    torch.set_num_threads(int(spec.get("threads", 1)))
    prior = load_prior("mnist", prior_dirs)
    res = int(spec["res"])
    if res != 32:
        prior.image_shape = None  # the UNet is fully convolutional; the registered shape only records training data
    op = make_operator("inpaint", 1)
    x = torch.rand(1, 1, res, res)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    rss_before = current_rss_mb()
    peak_at_start = peak_rss_mb()
    was_reset = reset_peak_rss()
    trace: list[tuple[int, float]] = []
    if spec["kind"] == "long":
        calls = [0]

        def hook(module: torch.nn.Module, args: Any) -> None:
            calls[0] += 1
            if calls[0] % int(spec.get("every", 100)) == 0:
                trace.append((calls[0], current_rss_mb()))

        prior.net.register_forward_pre_hook(hook)
    t0 = time.perf_counter()
    post = invgen.solve(y, op, prior, solver=spec["solver"], n_samples=int(spec["n"]), seed=0, steps=int(spec["steps"]))
    seconds = time.perf_counter() - t0
    return {
        **spec,
        "seconds": seconds,
        "nfe": post.nfe,
        "rss_before_mb": rss_before,
        "peak_rss_before_solve_mb": peak_at_start,
        "peak_rss_mb": peak_rss_mb(),
        "peak_reset_before_solve": was_reset,
        "trace": trace,
    }


def run_point(spec: dict[str, Any], prior_dirs: dict[str, str]) -> dict[str, Any]:
    """:func:`scaling_point` in a fresh subprocess (so that ru_maxrss is this point's peak)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--point", json.dumps(spec)]
    for k, v in prior_dirs.items():
        cmd += ["--prior-dir", f"{k}={v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {**spec, "failed": out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling(cfg: dict, prior_dirs: dict[str, str], log: Any) -> dict[str, Any]:
    """Samples 1..64 (32x32), resolution 32..256 (1 sample), and a long DPS run with the RSS every 100 steps."""
    steps = cfg["scaling_steps"]
    out: dict[str, Any] = {"samples": [], "resolution": [], "long": None, "steps": steps}
    for solver in ("dps", "ddrm"):
        for n in cfg["samples"]:
            r = run_point({"kind": "samples", "solver": solver, "n": n, "res": 32, "steps": steps}, prior_dirs)
            log(f"  scaling {json.dumps({k: v for k, v in r.items() if k != 'trace'})}")
            out["samples"].append(r)
        for res in cfg["resolutions"]:
            r = run_point({"kind": "resolution", "solver": solver, "n": 1, "res": res, "steps": steps}, prior_dirs)
            log(f"  scaling {json.dumps({k: v for k, v in r.items() if k != 'trace'})}")
            out["resolution"].append(r)
    long_steps = cfg["long_steps"]
    every = max(long_steps // 10, 1)
    r = run_point({"kind": "long", "solver": "dps", "n": 1, "res": 32, "steps": long_steps, "every": every}, prior_dirs)
    log(f"  long run {json.dumps(r)}")
    out["long"] = r
    return out


# ---------------------------------------------------------------------------------------------------------------------
# imports


def imports(cfg: dict, log: Any) -> dict[str, Any]:
    """Wall time of ``python -c pass``, ``import torch``, ``import invgen`` and ``invgen --help`` (subprocess medians),
    and the ``-X importtime`` cumulative time of ``invgen``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    runs = cfg["import_runs"]
    snippets = {
        "python -c pass": "pass",
        "import torch": "import torch",
        "import invgen": "import invgen",
        "invgen --help": "import sys; sys.argv = ['invgen', '--help']; from invgen.cli import main; main()",
    }
    out: dict[str, Any] = {}
    for name, code in snippets.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    cum = []
    for _ in range(runs):
        p = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import invgen"], env=env, capture_output=True, text=True
        )
        for line in p.stderr.splitlines():
            parts = [s.strip() for s in line.split("|")]
            if len(parts) == 3 and parts[2] == "invgen":
                cum.append(int(parts[1]) / 1e6)
    out["importtime invgen (cumulative)"] = statistics.median(cum) if cum else None
    out["torch imported by import invgen"] = (
        subprocess.run(
            [sys.executable, "-c", "import sys, invgen; print('torch' in sys.modules)"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
        == "True"
    )
    log(f"  imports {json.dumps(out)}")
    return out


# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings (the default)")
    mode.add_argument("--full", action="store_true", help="the published settings")
    parser.add_argument(
        "--section",
        action="append",
        choices=("compare", "precision", "diffpir", "limit", "opts", "scaling", "imports"),
    )
    parser.add_argument("--out", type=Path, help="results folder (default: docs/perf for --full, else a temp dir)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "invgen-perf")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--prior-dir", action="append", default=[], help="NAME=DIR: load prior NAME from a folder")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    prior_dirs = dict(s.split("=", 1) for s in args.prior_dir)
    if args.point:
        print(json.dumps(scaling_point(json.loads(args.point), prior_dirs)))
        return 0
    torch.set_num_threads(args.threads)
    cfg = dict(FULL if args.full else QUICK)
    out_dir = args.out or (ROOT / "docs" / "perf" if args.full else Path(tempfile.mkdtemp(prefix="invgen-perf-")))
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = args.section or ["imports", "opts", "compare", "precision", "diffpir", "limit", "scaling"]
    json_path = out_dir / "results.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    results["meta"] = {
        "mode": "full" if args.full else "quick",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",  # torch threads: per section, sections_meta
        "load_average_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    fns = {
        "imports": lambda: imports(cfg, log),
        "opts": lambda: opts(cfg, prior_dirs, log),
        "compare": lambda: compare(cfg, prior_dirs, args.cache, log),
        "precision": lambda: precision(cfg, prior_dirs, args.cache, log),
        "diffpir": lambda: diffpir_quality(cfg, prior_dirs, args.cache, log),
        "limit": lambda: limit(cfg, prior_dirs, args.cache, log),
        "scaling": lambda: scaling(cfg, prior_dirs, log),
    }
    for name in sections:
        log(f"section {name}")
        t_sec, load_start = time.perf_counter(), os.getloadavg()
        results[name] = fns[name]()
        results.setdefault("sections_meta", {})[name] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "wall_s": time.perf_counter() - t_sec,
            "threads": args.threads,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        }
        results["meta"]["load_average_end"] = os.getloadavg()
        results["meta"]["wall_s"] = time.perf_counter() - t_start
        json_path.write_text(json.dumps(results, indent=1))
        notes = out_dir / "notes.md"
        (out_dir / "results.md").write_text(report.render(results, notes.read_text() if notes.exists() else ""))
    log(f"wrote {json_path} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
