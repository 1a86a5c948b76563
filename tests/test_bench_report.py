"""The benchmark report: statistics in closed form, markdown tables, CSV round trips, plots and sample grids.

One synthetic database serves every test: datasets ``mnist`` (psnr, ssim, lpips) and ``cifar`` (psnr, ssim only),
tasks ``sr4`` and ``inpaint``, a baseline (prior ``none``, solver ``pinv``, NFE 0) and two solvers with a two-point
steps sweep, two seeds, five images. The posterior mean of image ``i`` (0..4) scores ``base + (i + 1) +/- 0.5`` for
seed 0/1, so seeds average to ``base + i + 1``: mean ``base + 3`` and 95% half-width
``t(0.975, 4) * sqrt(2.5) / sqrt(5)``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from invgen.bench import report
from invgen.bench.store import MEAN, ImageResult, Store

T4 = 2.7764451051977987  # t(0.975, 4)
CI5 = T4 * math.sqrt(2.5) / math.sqrt(5)  # half-width of the values 1..5 (1.9632...)
SUITE = "toy"
N_SAMPLES = 2
# label -> (prior, solver, nfe, base psnr, base ssim, base lpips)
SOLVERS = {
    "pinv": ("none", "pinv", 0, 10.0, 0.50, 0.50),
    "dps-10": ("ddpm", "dps", 10, 20.0, 0.70, 0.20),
    "dps-20": ("ddpm", "dps", 20, 21.0, 0.72, 0.10),
    "ddrm-5": ("ddpm", "ddrm", 5, 22.0, 0.75, 0.30),
    "ddrm-10": ("ddpm", "ddrm", 10, 21.5, 0.74, 0.25),
}
DATASETS = {"mnist": ("psnr", "ssim", "lpips"), "cifar": ("psnr", "ssim")}
TASKS = ("sr4", "inpaint")
IMAGES = [str(i) for i in range(5)]


def cell_id(dataset: str, task: str, label: str, seed: int) -> str:
    return f"{dataset}-{task}-{label}-s{seed}"


def values(label: str, metrics: tuple[str, ...], i: int, seed: int) -> dict[tuple[int, str], float]:
    """Posterior mean: base + step * (i + 1) +/- step / 2 by seed; samples j: mean + offset + (j - 0.5) * step."""
    _, _, _, *bases = SOLVERS[label]
    out = {}
    for m, base, step, offset in zip(("psnr", "ssim", "lpips"), bases, (1.0, 0.01, 0.01), (-2.0, -0.1, 0.05)):
        if m not in metrics:
            continue
        v = base + step * (i + 1) + (step / 2 if seed == 0 else -step / 2)
        out[(MEAN, m)] = v
        for j in range(N_SAMPLES):
            out[(j, m)] = v + offset + (j - 0.5) * step
    return out


def add_cell(store: Store, dataset: str, task: str, label: str, seed: int, prior=None, solver=None) -> str:
    p, s, *_ = SOLVERS.get(label, (prior, solver))
    cid = cell_id(dataset, task, label, seed)
    key = {"dataset": dataset, "task": task, "prior": p, "solver": s, "label": label, "seed": seed}
    key["n_samples"] = N_SAMPLES
    store.add_cell(cid, SUITE, key, {**key, "solver_options": {}, "operator": {"name": task}})
    return cid


def save_artifact(folder: Path, image_id: str, **tensors: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
        str(folder / f"{image_id}.safetensors"),
    )


def build_db(path: Path) -> None:
    with Store(path) as store:
        runs = {"mnist": store.start_run(SUITE, "hash", "cpu"), "cifar": store.start_run(SUITE, "hash", "cpu")}
        for dataset, metrics in DATASETS.items():
            run = runs[dataset]
            for task in TASKS:
                for label, (_, _, nfe, *_) in SOLVERS.items():
                    for seed in (0, 1):
                        cid = add_cell(store, dataset, task, label, seed)
                        # ddrm-10 seed 1 stops after three images: images 3 and 4 have seed 0 only
                        ids = IMAGES[:3] if (label, seed) == ("ddrm-10", 1) else IMAGES
                        results = [
                            ImageResult(image_id, nfe, 0.01 * (nfe + 1), values(label, metrics, int(image_id), seed))
                            for image_id in ids
                        ]
                        store.write(cid, run, results)
        # rows of an unfinished image (no ``images`` row) must not count
        store.db.execute(
            "INSERT INTO results VALUES (?, '9', ?, 'psnr', 1000.0)", (cell_id("mnist", "sr4", "pinv", 0), MEAN)
        )
        # one image only: the CI is undefined
        cid = add_cell(store, "mnist", "sr4", "ula", 0, prior="ddpm", solver="ula")
        store.write(cid, runs["mnist"], [ImageResult("0", 100, 2.0, {(MEAN, "psnr"): 5.0})])
        # a cell without any complete image
        add_cell(store, "mnist", "inpaint", "dps-10", 7)
        store.end_run(runs["mnist"])  # the cifar run stays "running": interrupted

    art = report.artifacts_dir(path)
    gray = cell_id("mnist", "sr4", "dps-10", 0)
    for image_id in ("0", "1", "2"):
        save_artifact(
            art / gray,
            image_id,
            x=np.ones((1, 8, 8)),
            y_view=np.full((1, 4, 4), 1.3),  # leaves [0, 1]: clipped to white
            samples=np.zeros((3, 1, 8, 8)),
            mean=np.full((1, 8, 8), 0.5),
            std=np.full((1, 8, 8), 0.2),  # divided by its own max: white
        )
    red = np.zeros((3, 8, 8))
    red[0] = 1.0
    save_artifact(
        art / cell_id("cifar", "sr4", "ddrm-5", 1),
        "0",
        x=red,
        y_view=np.full((1, 4, 4), 0.5),
        samples=np.zeros((1, 3, 8, 8)),
        mean=red,
        std=np.zeros((3, 8, 8)),
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bench")
    db = root / "results.sqlite"
    build_db(db)
    full = report.write_report(db, root / "full")
    return {"db": db, "full": full, "rows": report.summarise(db)}


def row_of(rows: list[dict], dataset: str, task: str, label: str) -> dict:
    (row,) = [r for r in rows if (r["dataset"], r["task"], r["label"]) == (dataset, task, label)]
    return row


def md_table(md: str, heading: str) -> list[dict[str, str]]:
    """The rows of the markdown table under ``## heading`` as dicts keyed by the header."""
    lines = md.split(f"## {heading}\n", 1)[1].strip().splitlines()
    table = lines[: next(i for i, ln in enumerate([*lines, ""]) if not ln.startswith("|"))]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in ln.strip("|").split("|")])) for ln in table[2:]]


def test_summary_statistics_in_closed_form(bench):
    rows = bench["rows"]
    assert len(rows) == 2 * 2 * 5 + 1
    r = row_of(rows, "mnist", "sr4", "pinv")
    assert (r["prior"], r["solver"], r["n_images"], r["n_seeds"], r["n_samples"]) == ("none", "pinv", 5, 2, 2)
    assert r["psnr"] == pytest.approx(13.0, abs=1e-12)  # the unfinished image "9" (1000 dB) is ignored
    assert r["psnr_ci"] == pytest.approx(CI5, rel=1e-9)
    assert r["psnr_samples"] == pytest.approx(11.0, abs=1e-12)
    assert r["psnr_samples_ci"] == pytest.approx(CI5, rel=1e-9)
    assert r["ssim"] == pytest.approx(0.53, abs=1e-12)
    assert r["ssim_ci"] == pytest.approx(0.01 * CI5, rel=1e-9)
    assert r["lpips_samples"] == pytest.approx(0.58, abs=1e-12)
    assert (r["nfe"], r["seconds"], r["seconds_per_sample"]) == pytest.approx((0.0, 0.01, 0.005))
    d = row_of(rows, "mnist", "sr4", "dps-20")
    assert (d["nfe"], d["seconds"], d["seconds_per_sample"]) == pytest.approx((20.0, 0.21, 0.105))
    assert "lpips" not in row_of(rows, "cifar", "inpaint", "dps-10")


def test_seeds_are_averaged_within_images_before_the_ci(bench):
    r = row_of(bench["rows"], "cifar", "inpaint", "ddrm-10")
    # images 0..2 average both seeds (1, 2, 3); images 3, 4 have seed 0 only (4.5, 5.5)
    per_image = np.array([1.0, 2.0, 3.0, 4.5, 5.5])
    assert r["psnr"] == pytest.approx(21.5 + per_image.mean(), abs=1e-12)  # pooled rows would give 21.5 + 2.75
    assert r["psnr_ci"] == pytest.approx(T4 * per_image.std(ddof=1) / math.sqrt(5), rel=1e-9)
    assert (r["n_images"], r["n_seeds"]) == (5, 2)


def test_one_image_has_no_ci_and_empty_cells_are_skipped(bench):
    u = row_of(bench["rows"], "mnist", "sr4", "ula")
    assert (u["psnr"], u["n_images"], u["nfe"], u["seconds"]) == (5.0, 1, 100.0, 2.0)
    assert math.isnan(u["psnr_ci"]) and math.isnan(u["psnr_samples"])
    assert row_of(bench["rows"], "mnist", "inpaint", "dps-10")["n_seeds"] == 2  # seed 7 has no image
    md = bench["full"]["markdown"][0].read_text()
    skipped = md.split("## Skipped cells", 1)[1]
    assert "mnist / inpaint / ddpm / dps-10 / seed 7" in skipped
    assert md_table(md, "mnist / sr4")[-1]["psnr (mean)"] == "5.00 ± –"


def test_markdown_tables_format_and_bold_the_best(bench):
    md = bench["full"]["markdown"][0].read_text()
    assert md.startswith("# Benchmark report: toy")
    rows = {r["solver"]: r for r in md_table(md, "mnist / sr4")}
    assert list(rows) == ["pinv", "ddrm-5", "ddrm-10", "dps-10", "dps-20", "ula"]  # baseline first, sweeps by NFE
    assert rows["pinv"]["psnr (mean)"] == f"13.00 ± {CI5:.2f}" == "13.00 ± 1.96"
    assert rows["ddrm-5"]["psnr (mean)"] == "**25.00 ± 1.96**"  # higher is better
    assert rows["ddrm-5"]["ssim (mean)"] == "**0.7800 ± 0.0196**"
    assert rows["dps-20"]["lpips (mean)"] == "**0.1300 ± 0.0196**"  # lower is better
    assert rows["dps-20"]["lpips (samples)"] == "**0.1800 ± 0.0196**"
    assert rows["pinv"]["lpips (mean)"] == "0.5300 ± 0.0196"
    assert sum(v.startswith("**") for r in rows.values() for v in r.values()) == 6  # one per metric column
    assert (rows["dps-20"]["NFE"], rows["dps-20"]["s/image"], rows["pinv"]["NFE"]) == ("20", "0.21", "0")
    assert (rows["ddrm-10"]["images"], rows["ddrm-10"]["seeds"]) == ("5", "2")
    cifar = md_table(md, "cifar / inpaint")
    assert "lpips (mean)" not in cifar[0] and "psnr (samples)" in cifar[0]


def test_interrupted_run_is_flagged(bench):
    md = bench["full"]["markdown"][0].read_text()
    runs = md_table(md, "Runs")
    assert [r["status"] for r in runs] == ["done", "**interrupted** (running)"]
    assert runs[1]["ended"] == "–" and runs[0]["ended"].endswith("UTC")
    assert "Run 2 never recorded its end" in md


def test_csv_round_trip(bench):
    csv_paths = {p.name: p for p in bench["full"]["csv"]}
    with csv_paths["results.csv"].open() as f:
        parsed = list(csv.DictReader(f))
    assert len(parsed) == len(bench["rows"])
    for row, want in zip(parsed, bench["rows"]):
        for k, v in want.items():
            if isinstance(v, float):
                got = float(row[k])
                assert got == v or (math.isnan(got) and math.isnan(v)), k
            else:
                assert row[k] == str(v), k
        assert set(row) >= {"psnr_ci", "psnr_samples_ci", "lpips", "seconds_per_sample"}
    with csv_paths["per_image.csv"].open() as f:
        long = list(csv.DictReader(f))
    # per dataset: (tasks x labels x seeds x images - ddrm-10 seed 1's two missing images per task) x metrics x
    # (mean + samples); plus the one row of ula
    want = sum((2 * 5 * 2 * 5 - 2 * 2) * len(m) * (1 + N_SAMPLES) for m in DATASETS.values()) + 1
    assert len(long) == want == 1441
    assert not any(r["image_id"] == "9" for r in long)
    (hit,) = [
        r
        for r in long
        if (r["dataset"], r["task"], r["label"], r["seed"], r["image_id"], r["sample"], r["metric"])
        == ("mnist", "sr4", "dps-10", "1", "3", "1", "psnr")
    ]
    assert float(hit["value"]) == values("dps-10", DATASETS["mnist"], 3, 1)[(1, "psnr")]


def test_plots_exist_one_row_per_metric(bench):
    plots = {p.name: p for p in bench["full"]["plots"]}
    assert set(plots) == {f"{d}__{t}.png" for d in DATASETS for t in TASKS}
    mnist = Image.open(plots["mnist__sr4.png"]).size
    cifar = Image.open(plots["cifar__sr4.png"]).size
    assert mnist[1] > 1.3 * cifar[1]  # three metric rows against two
    assert min(cifar) > 200


def grid_size(cols: int, rows: int, tile: int) -> tuple[int, int]:
    width = report.GRID_LABEL_W + report.GRID_PAD + cols * (tile + report.GRID_PAD)
    return width, report.GRID_HEADER + rows * (tile + report.GRID_PAD) + report.GRID_FOOTER


def tile_centre(r: int, c: int, tile: int) -> tuple[int, int]:
    left = report.GRID_LABEL_W + report.GRID_PAD + c * (tile + report.GRID_PAD)
    return left + tile // 2, report.GRID_HEADER + r * (tile + report.GRID_PAD) + tile // 2


def test_sample_grids(bench):
    name = "mnist__sr4__ddpm__dps-10__seed0.png"
    assert {p.name for p in bench["full"]["grids"]} == {name, "cifar__sr4__ddpm__ddrm-5__seed1.png"}
    tile = 8 * round(report.GRID_TILE / 8)
    files = sorted((report.artifacts_dir(bench["db"]) / cell_id("mnist", "sr4", "dps-10", 0)).iterdir())
    small_path = report.sample_grid(files[:2], bench["db"].parent / "small.png", grid_samples=2)
    small = Image.open(small_path).convert("RGB")
    full = Image.open(next(p for p in bench["full"]["grids"] if p.name == name)).convert("RGB")
    assert small.size == grid_size(2 + 2 + 2, 2, tile)  # x, y, 2 samples, mean, std; 2 images
    assert full.size == grid_size(2 + 3 + 2, 3, tile)  # the 3 samples there are; the 3 images there are
    assert full.size[0] > small.size[0]
    want = [(255,) * 3, (255,) * 3, (0,) * 3, (0,) * 3, (0,) * 3, (128,) * 3, (255,) * 3]  # x, y, s1..3, mean, std
    assert [full.getpixel(tile_centre(2, c, tile)) for c in range(7)] == want
    red = Image.open(next(p for p in bench["full"]["grids"] if p.name.startswith("cifar"))).convert("RGB")
    assert red.size == grid_size(2 + 1 + 2, 1, tile)
    assert [red.getpixel(tile_centre(0, c, tile)) for c in range(5)] == [
        (255, 0, 0), (128, 128, 128), (0, 0, 0), (255, 0, 0), (0, 0, 0)
    ]  # fmt: skip


def test_degenerate_databases(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.summarise(tmp_path / "missing.sqlite")
    db = tmp_path / "empty.sqlite"
    with Store(db) as store:
        add_cell(store, "mnist", "sr4", "pinv", 0)
        assert report.summarise(store) == []
    out = report.write_report(db, tmp_path / "out")
    md = out["markdown"][0].read_text()
    assert "No complete image" in md and "mnist / sr4 / none / pinv / seed 0" in md
    assert out["plots"] == [] and out["grids"] == []
    assert (tmp_path / "out" / "results.csv").read_text().startswith("suite,dataset,task,prior,label,solver")

    # one image without any metric row, with an artifact that lacks y_view: a table, no plot, a grid on request
    with Store(db) as store:
        run = store.start_run(SUITE, "hash", "cpu")
        store.write(cell_id("mnist", "sr4", "pinv", 0), run, [ImageResult("0", 0, 0.5, {})])
    save_artifact(report.artifacts_dir(db) / cell_id("mnist", "sr4", "pinv", 0), "0", x=np.ones((1, 8, 8)))
    (row,) = report.summarise(db)
    assert (row["n_images"], row["seconds"], row["seconds_per_sample"]) == (1, 0.5, 0.25)
    out = report.write_report(db, tmp_path / "out2", grid_images=0)
    assert out["plots"] == [] and out["grids"] == []
    assert "| none | pinv | 0 | 0.5 | 1 | 1 |" in out["markdown"][0].read_text()
    (grid,) = report.write_report(db, tmp_path / "out3")["grids"]
    assert Image.open(grid).convert("RGB").getpixel(tile_centre(0, 0, 96)) == (255, 255, 255)


def test_helpers():
    assert report.safe_name("a/b", "c d", "x.y-z") == "a_b__c_d__x.y-z"
    assert report.higher_is_better("psnr") and not report.higher_is_better("lpips")
    assert not report.higher_is_better("my_mse") and report.higher_is_better("coverage_90")
    mean, ci, n = report.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (mean, n) == (3.0, 5) and ci == pytest.approx(CI5, rel=1e-12)
