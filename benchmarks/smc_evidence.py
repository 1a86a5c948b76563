"""Ranking priors by the evidence: does TDS's estimate of ``log p(y)`` pick the prior an observation came from?

For the first ``--count`` test images of MNIST and of Fashion-MNIST, one observation each (``--task``: SR x4 or a
16x16 box inpainting, Gaussian noise std 0.05, the diffusion-cpu suite's operators), TDS estimates ``log p(y)`` under
``diffusion-mnist`` and under ``diffusion-fashion-mnist`` (one population of ``--particles`` particles per
observation, ``--steps`` geometric levels, float32, all observations of a dataset in one batched solve). The choice is
right when the prior of the observation's own dataset has the larger estimate; the accuracy over the observations of
each dataset is reported with the margins (nats) and the seconds. A second seed (``--seeds 2``) measures the
estimator's own spread, to compare with the margins.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/smc_evidence.py --out docs/smc/evidence-ranking.json [--task sr4]
    python benchmarks/smc_evidence.py --out docs/smc/evidence-ranking.json --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

DATASETS = {"mnist": "diffusion-mnist", "fashion-mnist": "diffusion-fashion-mnist"}
TASKS = {
    "sr4": ("superres", {"scale": 4}),
    "inpaint-box": ("inpaint", {"mask": "box", "box_size": 16}),
}


def observations(dataset: str, task: str, count: int) -> tuple[torch.Tensor, object]:
    import invgen
    from invgen.data.datasets import load_dataset

    x, _ = load_dataset(dataset, "test")
    x = x[:count].float()
    name, opts = TASKS[task]
    op = invgen.operator(name, noise=invgen.noise("gaussian", std=0.05), **opts)
    g = torch.Generator().manual_seed(0)
    return op.measure(x, generator=g), op


def run(out: str, task: str, count: int, particles: int, steps: int, seeds: int, threads: int) -> None:
    import invgen

    torch.set_num_threads(threads)
    res = json.loads(Path(out).read_text()) if os.path.exists(out) else {"meta": {}, "runs": {}}
    res["meta"].update({"threads": threads, "machine": platform.processor() or platform.machine()})
    priors = {name: invgen.prior(name) for name in DATASETS.values()}
    for dataset in DATASETS:
        y, op = observations(dataset, task, count)
        for prior_name, prior in priors.items():
            for seed in range(seeds):
                key = f"{task}|{dataset}|{prior_name}|K{particles}|L{steps}|seed{seed}"
                if key in res["runs"]:
                    continue
                t = time.perf_counter()
                post = invgen.solve(
                    y, op, prior, solver="tds", n_samples=1, seed=seed, particles=particles, steps=steps
                )
                res["runs"][key] = {
                    "log_evidence": post.extras["log_evidence"].tolist(),
                    "seconds": time.perf_counter() - t,
                    "count": count,
                }
                print(f"{key}: {time.perf_counter() - t:.0f} s", flush=True)
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                Path(out).write_text(json.dumps(res, indent=1))


def report(out: str) -> str:
    res = json.loads(Path(out).read_text())
    groups: dict[tuple[str, str, str], dict[str, dict[int, list[float]]]] = {}
    seconds: dict[tuple[str, str, str], float] = {}
    for key, r in res["runs"].items():
        task, dataset, prior, k, steps, seed = key.split("|")
        g = groups.setdefault((task, k, steps), {}).setdefault(f"{dataset}|{prior}", {})
        g[int(seed[4:])] = r["log_evidence"]
        seconds[(task, k, steps)] = seconds.get((task, k, steps), 0.0) + r["seconds"]
    lines = [
        "| task | K, levels | observations from | right choice | median margin (nats) | min margin | "
        "estimator spread (median abs. seed difference) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, k, steps), g in groups.items():
        for dataset, own in DATASETS.items():
            other = next(p for p in DATASETS.values() if p != own)
            a, b = g.get(f"{dataset}|{own}"), g.get(f"{dataset}|{other}")
            if not a or not b:
                continue
            seeds = sorted(set(a) & set(b))
            la = torch.tensor([a[s] for s in seeds]).mean(0)
            lb = torch.tensor([b[s] for s in seeds]).mean(0)
            margin = la - lb
            spread = "-"
            if len(a) > 1:
                spread = f"{float((torch.tensor(a[1]) - torch.tensor(a[0])).abs().median()):.2f}"
            lines.append(
                f"| {task} | {k[1:]}, {steps[1:]} | {dataset} ({len(margin)}) | "
                f"{int((margin > 0).sum())} / {len(margin)} ({float((margin > 0).double().mean()):.0%}) | "
                f"{float(margin.median()):.1f} | {float(margin.min()):.1f} | {spread} |"
            )
    total = ", ".join(f"{t} {k}: {s:.0f} s" for (t, k, _), s in seconds.items())
    return "\n".join(lines) + f"\n\nSeconds (all solves, {res['meta']['threads']} thread(s)): {total}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="sr4", choices=list(TASKS))
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    if a.report:
        print(report(a.out))
    else:
        run(a.out, a.task, a.count, a.particles, a.steps, a.seeds, a.threads)


if __name__ == "__main__":
    main()
