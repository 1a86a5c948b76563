"""``invgen demo``: the headline tasks with the shipped priors, and posterior sampling checked against an exact one.

Tasks (each with the shipped prior it needs; a task whose prior is not installed is skipped and says so):
super-resolution x4 and box inpainting (``diffusion-mnist``), sketch-to-image (``diffusion-mnist``, DPS through the
differentiable sketch operator, edge F1 reported), colorization (``diffusion-cifar10``), and on photos bicubic
super-resolution x2 and free-form inpainting (``diffusion-natural-gray`` on centre crops of scikit-image's sample
photos, which ship with the dependency) and colorization (``diffusion-natural-rgb`` on resized colour photos).
Other ground truths are test images when ``INVGEN_DATA`` is set, else unconditional DDIM samples of the prior with a
fixed seed, so the demo runs on a fresh install with no data and no network. Then MALA on the analytic
Gaussian-mixture prior beside its exact posterior. Writes ``gallery.png``, ``exactness.png``, ``metrics.md`` and
``metrics.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def _installed() -> str:
    from invgen import registry

    lines = []
    for kind in ("priors", "solvers", "operators"):
        names = registry.names(kind)
        lines.append(f"{kind:<10} {', '.join(names) if names else '(none)'}")
    return "\n".join(lines)


# task, prior, operator (name, options), solver, solver options (quick, full)
TASKS: list[tuple[str, str, str, dict, str, dict, dict]] = [
    ("super-resolution x4", "diffusion-mnist", "superres", {"scale": 4}, "pigdm", {"steps": 20}, {"steps": 50}),
    ("inpainting (box)", "diffusion-mnist", "inpaint", {"mask": "box", "box_size": 14}, "ddrm", {"steps": 20},
     {"steps": 50}),
    ("sketch-to-image", "diffusion-mnist", "sketch", {"channels": 1}, "dps", {"steps": 30, "zeta": 0.3},
     {"steps": 50, "zeta": 0.3}),
    ("colorization", "diffusion-cifar10", "colorize", {}, "ddrm", {"steps": 20}, {"steps": 50}),
    ("photo super-resolution x2", "diffusion-natural-gray", "superres", {"scale": 2, "kernel": "bicubic"}, "pigdm",
     {"steps": 20}, {"steps": 50}),
    ("photo inpainting (free-form)", "diffusion-natural-gray", "inpaint", {"mask": "freeform", "seed": 0}, "pigdm",
     {"steps": 20}, {"steps": 50}),
    ("photo colorization", "diffusion-natural-rgb", "colorize", {}, "ddrm", {"steps": 20}, {"steps": 50}),
]  # fmt: skip
DATASET_OF = {"diffusion-mnist": "mnist", "diffusion-fashion-mnist": "fashion-mnist", "diffusion-cifar10": "cifar10"}
# scikit-image photos for the any-size priors (offline: they ship with the dependency): names, channels, and whether
# the photo is first resized (short side to the crop size: the whole scene, as the colour prior saw CIFAR-10's) or
# cropped at full resolution (the gray prior was trained on BSD400 patches at full resolution).
PHOTOS_OF = {
    "diffusion-natural-gray": (("camera", "coins", "moon"), 1, False),
    "diffusion-natural-rgb": (("astronaut", "coffee", "chelsea"), 3, True),
}


def _photo_crops(names: tuple[str, ...], n: int, size: int, channels: int = 1, resize: bool = False) -> torch.Tensor:
    """Centre ``size x size`` crops of the first ``n`` scikit-image photos, after resizing the short side to ``size``
    (antialiased) when ``resize``. Shape ``(n, channels, size, size)``."""
    from invgen.data.sets import read_image, resize_short_side

    crops = []
    for name in names[:n]:
        x = read_image(f"skimage:{name}", channels=channels)
        if resize:
            x = resize_short_side(x, size)
        h, w = x.shape[-2:]
        i, j = (h - size) // 2, (w - size) // 2
        crops.append(x[:, i : i + size, j : j + size])
    return torch.stack(crops)


def _ground_truth(prior_name: str, prior, n: int, seed: int, size: int = 128) -> tuple[torch.Tensor, str]:
    """Photo crops for any-size priors; else test images when INVGEN_DATA is set, else unconditional DDIM samples
    (fixed seed)."""
    import os

    import invgen

    if prior_name in PHOTOS_OF:
        names, channels, resize = PHOTOS_OF[prior_name]
        names = names[:n]
        how = "resized, centre crops" if resize else "centre crops"
        x = _photo_crops(names, n, size, channels, resize)
        return x, f"scikit-image photos {', '.join(names)} ({size}x{size} {how})"
    dataset = DATASET_OF.get(prior_name)
    if dataset and os.environ.get("INVGEN_DATA"):
        ds = invgen.dataset(dataset).select(count=n, start=seed * n)
        return torch.stack([ds.image(i) for i in range(n)]), f"{dataset} test images {seed * n}..{seed * n + n - 1}"
    c, h, w = prior.image_shape
    dummy = invgen.operator("identity", noise={"name": "gaussian", "std": 1.0})
    y = torch.zeros(n, c, h, w)
    post = invgen.solve(y, dummy, prior, solver="ddim", steps=50, n_samples=1, seed=seed)
    return post.samples[0].clamp(0, 1), f"DDIM samples of the prior (50 steps, seed {seed}; INVGEN_DATA not set)"


def _lpips(x: torch.Tensor, ref: torch.Tensor, fn) -> float | None:
    """LPIPS where its weights are configured (INVGEN_LPIPS_WEIGHTS); None rather than a download otherwise."""
    import os

    if not os.environ.get("INVGEN_LPIPS_WEIGHTS"):
        return None
    return float(fn(x, ref).mean())


def run_tasks(out_dir: Path, seed: int = 0, quick: bool = False) -> tuple[list[dict], list]:
    """The headline tasks with the shipped priors; returns the table rows and the gallery rows."""
    import invgen
    from invgen.metrics import lpips, psnr, ssim
    from invgen.tasks import edge_f1

    n_images, n_samples = (2, 3) if quick else (3, 4)
    installed = set(invgen.list_priors())
    table, rows = [], []
    priors: dict[str, object] = {}
    for task, prior_name, op_name, op_kw, solver, quick_kw, full_kw in TASKS:
        if prior_name not in installed:
            print(f"{task}: skipped ({prior_name} is not installed in this build)")
            table.append({"task": task, "prior": prior_name, "skipped": "prior not installed"})
            continue
        if prior_name not in priors:
            priors[prior_name] = invgen.prior(prior_name)
        prior = priors[prior_name]
        x, source = _ground_truth(prior_name, prior, n_images, seed, size=96 if quick else 128)
        op = invgen.operator(op_name, noise={"name": "gaussian", "std": 0.05}, **op_kw)
        y = op.measure(x, generator=torch.Generator().manual_seed(seed))
        kw = quick_kw if quick else full_kw
        post = invgen.solve(y, op, prior, solver=solver, n_samples=n_samples, seed=seed, **kw)
        s = post.samples.clamp(0, 1)
        mean = s.mean(0)
        flat = s.reshape(-1, *x.shape[1:])
        ref = x.repeat(n_samples, 1, 1, 1)
        row = {
            "task": task,
            "prior": prior_name,
            "solver": f"{solver} {kw}",
            "ground truth": source,
            "psnr_mean": float(psnr(mean, x).mean()),
            "ssim_mean": float(ssim(mean, x).mean()),
            "lpips_samples": _lpips(flat, ref, lpips),
            "nfe": post.nfe,
            "seconds": round(post.seconds, 2),
        }
        if op_name == "sketch":
            row["edge_f1"] = float(edge_f1(flat, (y > 0.5).float().repeat(n_samples, 1, 1, 1)).mean())
        table.append(row)
        y_view = y if op_name in ("inpaint", "sketch", "colorize") else op.pinv(y)
        for b in range(n_images):
            panels = [("truth", x[b]), ("y", y_view[b].clamp(0, 1))]
            panels += [(f"sample {k + 1}", s[k, b]) for k in range(n_samples)]
            panels += [("mean", mean[b]), ("std", s[:, b].std(0))]
            rows.append((f"{task} #{b}", panels))
        lp = "-" if row["lpips_samples"] is None else f"{row['lpips_samples']:.3f}"
        print(f"{task}: {row['solver']} on {prior_name}, PSNR(mean) {row['psnr_mean']:.2f}, LPIPS(samples) {lp}, "
              f"{row['seconds']} s")  # fmt: skip
    return table, rows


def run(out: str = "invgen-demo", seed: int = 0, quick: bool = False) -> int:
    """Run the demo and write ``gallery.png``, ``exactness.png``, ``metrics.md`` and ``metrics.json`` to ``out``."""
    import invgen

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"invgen {invgen.__version__}: installed components\n{_installed()}\n")
    t0 = time.perf_counter()
    tasks, rows = run_tasks(out_dir, seed=seed, quick=quick)
    if rows:
        _gallery(out_dir / "gallery.png", rows)
    exact = run_exactness(out_dir, seed=seed, quick=quick)
    lines = [
        "## Tasks (noise std 0.05)",
        "",
        "| task | prior | solver | PSNR mean | SSIM mean | LPIPS samples | edge F1 | NFE | s |",
        "|" + "---|" * 9,
    ]
    for r in tasks:
        if "skipped" in r:
            lines.append(f"| {r['task']} | {r['prior']} | skipped: {r['skipped']} |" + " |" * 6)
            continue
        f1 = f"{r['edge_f1']:.3f}" if "edge_f1" in r else "-"
        lp = "- (set INVGEN_LPIPS_WEIGHTS)" if r["lpips_samples"] is None else f"{r['lpips_samples']:.4f}"
        lines.append(
            f"| {r['task']} | {r['prior']} | {r['solver']} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.4f} | "
            f"{lp} | {f1} | {r['nfe']} | {r['seconds']} |"
        )
    lines += ["", "## MALA against the exact posterior (analytic GMM prior, 16x16)", "",
              "| task | PSNR exact mean | PSNR MALA mean | RMSE(MALA mean, exact mean) | std ratio | accept | NFE "
              "| s |", "|" + "---|" * 8]  # fmt: skip
    for r in exact:
        lines.append(
            f"| {r['task']} | {r['psnr_exact_mean']:.2f} | {r['psnr_mala_mean']:.2f} | "
            f"{r['rmse_mala_vs_exact_mean']:.4f} | {r['std_ratio_mala_over_exact']:.3f} | "
            f"{r['acceptance_rate']:.2f} | {r['nfe']} | {r['seconds']} |"
        )
    (out_dir / "metrics.md").write_text("\n".join(lines) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps({"tasks": tasks, "exactness": exact}, indent=1))
    print(f"\nwrote {out_dir}/gallery.png, exactness.png, metrics.md, metrics.json in {time.perf_counter() - t0:.0f} s")
    return 0


def _gallery(path: Path, rows: list[tuple[str, list[tuple[str, torch.Tensor]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.6 * ncols, 1.8 * len(rows)), squeeze=False)
    for i, (label, panels) in enumerate(rows):
        std_max = max((float(img.max()) for title, img in panels if "std" in title), default=1.0)
        for j in range(ncols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(panels):
                title, img = panels[j]
                vmax = std_max if "std" in title else 1.0  # std maps of a row share one scale
                img = img.detach().cpu()
                if img.dim() == 3 and img.shape[0] == 3:
                    img = img.mean(0) if "std" in title else img.permute(1, 2, 0).clamp(0, 1)
                ax.imshow(img.squeeze().numpy(), cmap="gray", vmin=0, vmax=vmax)
                ax.set_title(title, fontsize=7)
        axes[i, 0].text(
            -0.15, 0.5, label, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_exactness(out_dir: Path, seed: int = 0, quick: bool = False) -> list[dict]:
    """MALA on the analytic GMM prior beside its exact posterior; writes ``exactness.png``, returns the table rows."""
    import invgen
    from invgen.metrics import psnr

    gen = torch.Generator().manual_seed(seed)
    prior = invgen.prior("gmm", image_shape=(1, 16, 16), seed=seed)
    x = prior.sample(3, generator=gen).clamp(0, 1)
    noise = invgen.noise("gaussian", std=0.05)
    tasks = {
        "inpaint (box)": invgen.operator("inpaint", mask="box", noise=noise),
        "superres x2": invgen.operator("superres", scale=2, noise=noise),
    }
    steps = 300 if quick else 1500
    n = 32 if quick else 128
    rows, table = [], []
    for task, op in tasks.items():
        y = op.measure(x, generator=gen)
        exact = prior.exact_posterior(op, y)
        t0 = time.perf_counter()
        post = invgen.solve(y, op, prior, solver="mala", n_samples=n, seed=seed, steps=steps)
        exact_samples = exact.sample(n, generator=gen)
        rmse_mean = float((post.mean - exact.mean).pow(2).mean().sqrt())
        std_ratio = float(post.std.mean() / exact_samples.std(0).mean())
        table.append(
            {
                "task": task,
                "psnr_exact_mean": float(psnr(exact.mean.clamp(0, 1), x).mean()),
                "psnr_mala_mean": float(psnr(post.mean.clamp(0, 1), x).mean()),
                "rmse_mala_vs_exact_mean": rmse_mean,
                "std_ratio_mala_over_exact": std_ratio,
                "acceptance_rate": float(post.extras.get("acceptance_rate", float("nan"))),
                "nfe": post.nfe,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        y_img = op.pinv(y).clamp(0, 1)
        for b in range(x.shape[0]):
            rows.append(
                (
                    f"{task} #{b}",
                    [
                        ("truth", x[b]),
                        ("A+ y", y_img[b]),
                        ("exact mean", exact.mean[b].clamp(0, 1)),
                        ("MALA mean", post.mean[b].clamp(0, 1)),
                        ("MALA sample", post.samples[0, b].clamp(0, 1)),
                        ("exact std", exact_samples.std(0)[b]),
                        ("MALA std", post.std[b]),
                    ],
                )
            )
    _gallery(out_dir / "exactness.png", rows)
    header = "| task | PSNR exact mean | PSNR MALA mean | RMSE(MALA mean, exact mean) | std ratio | accept | NFE | s |"
    lines = [header, "|" + "---|" * 8]
    for r in table:
        lines.append(
            f"| {r['task']} | {r['psnr_exact_mean']:.2f} | {r['psnr_mala_mean']:.2f} | "
            f"{r['rmse_mala_vs_exact_mean']:.4f} | {r['std_ratio_mala_over_exact']:.3f} | "
            f"{r['acceptance_rate']:.2f} | {r['nfe']} | {r['seconds']} |"
        )
    print("MALA on the analytic GMM prior against its exact posterior (16x16 images, noise std 0.05):")
    print("\n".join(lines))
    return table
