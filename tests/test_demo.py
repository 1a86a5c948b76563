"""The demo's incremental output and the test images shipped in the package (invgen.data.sample_images)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch

import invgen
from invgen import demo
from invgen.data import load_dataset, sample_images
from invgen.data.bundled import SAMPLE_INDICES, SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"mnist": (8, 1, 32, 32), "fashion-mnist": (8, 1, 32, 32), "cifar10": (8, 3, 32, 32)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_sample_images_shape_and_range(name):
    x = sample_images(name)
    assert x.shape == SHAPES[name] and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.std()) > 0.1  # real images, not a blank file
    assert torch.allclose(x * 255.0, (x * 255.0).round(), atol=1e-4)  # stored as uint8
    if name != "cifar10":  # padded by 2 pixels of background, as load_dataset does
        assert float(x[..., :2, :].abs().max()) == 0.0 and float(x[..., :, -2:].abs().max()) == 0.0


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_sample_images_are_the_test_images(name, data_dir):
    expected = load_dataset(name, "test", data_dir)[0][list(SAMPLE_INDICES[name])]
    assert torch.equal(sample_images(name), expected)


def test_sample_images_unknown_name():
    with pytest.raises(ValueError, match="no shipped sample images for 'svhn'"):
        sample_images("svhn")


def test_sample_files_are_package_data_with_their_source():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["invgen"]
    files = sorted(p.relative_to(ROOT / "invgen").as_posix() for p in SAMPLES_DIR.iterdir())
    assert files == ["data/samples/SOURCE.txt", *(f"data/samples/{n}.png" for n in sorted(SHAPES))]
    for f in files:
        assert any(fnmatchcase(f, p) for p in patterns), f
    source = (SAMPLES_DIR / "SOURCE.txt").read_text()
    for needle in ("CC BY-SA 3.0", "MIT", "CIFAR-10: no licence stated", "python -m invgen.data.make_samples"):
        assert needle in source
    assert sum((SAMPLES_DIR / f"{n}.png").stat().st_size for n in SHAPES) < 40_000


@pytest.mark.parametrize(("prior", "dataset"), [("diffusion-mnist", "mnist"), ("diffusion-cifar10", "cifar10")])
def test_demo_without_data_root_uses_the_shipped_images(prior, dataset, monkeypatch):
    monkeypatch.delenv("INVGEN_DATA", raising=False)
    x, source = demo._ground_truth(prior, None, n=3, seed=3)  # the prior is not needed (no DDIM fallback)
    idx = [1, 2, 3]  # seed 3 x 3 images -> rows 9, 10, 11 of 8, wrapped
    assert torch.equal(x, sample_images(dataset)[idx])
    ids = ", ".join(str(SAMPLE_INDICES[dataset][i]) for i in idx)
    assert source == f"{dataset} test images {ids} (shipped with invgen; INVGEN_DATA not set)"


def test_step_bar_ticks_on_network_calls_and_delegates():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    prior = invgen.prior("gaussian", image_shape=(1, 4, 4))
    bar = Bar()
    wrapped = demo._StepBar(prior, bar)
    assert wrapped.capabilities == prior.capabilities and wrapped.image_shape == (1, 4, 4)
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(wrapped.denoise(x, 0.1), prior.denoise(x, 0.1))
    wrapped.score(x, 0.1)
    assert bar.n == 2


def test_run_tasks_writes_each_sheet_as_soon_as_the_task_is_done(tmp_path, monkeypatch, capsys):
    """Two cheap tasks (2 steps): the first task's sheet and metrics line exist before the second task starts."""
    if "diffusion-mnist" not in invgen.list_priors():
        pytest.skip("diffusion-mnist is not installed")
    monkeypatch.delenv("INVGEN_DATA", raising=False)
    tasks = [
        ("super-resolution x4", "diffusion-mnist", "superres", {"scale": 4}, "pigdm", {"steps": 2}, {"steps": 2}),
        ("inpainting (box)", "diffusion-mnist", "inpaint", {"mask": "box", "box_size": 14}, "ddrm", {"steps": 2},
         {"steps": 2}),
        ("not installed", "no-such-prior", "inpaint", {}, "ddrm", {}, {}),
    ]  # fmt: skip
    first = tmp_path / "task-01-super-resolution-x4.png"
    seen = []
    ground_truth = demo._ground_truth

    def spy(prior_name, *args, **kwargs):
        seen.append((first.is_file(), capsys.readouterr().out))
        return ground_truth(prior_name, *args, **kwargs)

    monkeypatch.setattr(demo, "_ground_truth", spy)
    table, rows = demo.run_tasks(tmp_path, quick=True, tasks=tasks)
    assert seen[0][0] is False and seen[1][0] is True  # written after task 1, before task 2 began
    assert seen[1][1].startswith("super-resolution x4: pigdm {'steps': 2} on diffusion-mnist, PSNR(mean) ")
    assert f"-> {first}" in seen[1][1]
    out = capsys.readouterr().out
    assert "inpainting (box): ddrm" in out and "not installed: skipped (no-such-prior is not installed" in out
    assert [r.get("sheet") for r in table] == [first.name, "task-02-inpainting-box.png", None]
    assert (tmp_path / "task-02-inpainting-box.png").stat().st_size > 5_000
    assert table[0]["ground truth"].endswith("(shipped with invgen; INVGEN_DATA not set)")
    assert table[0]["nfe"] == 2 and table[0]["wall_seconds"] >= table[0]["seconds"]
    assert len(rows) == 4  # 2 images per task in quick mode


def test_sketch_task_scores_edges_against_the_binary_sketch(tmp_path, monkeypatch):
    """The sketch row's edge F1 and chamfer distance are against make_sketch(truth), not y > 0.5 of the observation."""
    if "diffusion-mnist" not in invgen.list_priors():
        pytest.skip("diffusion-mnist is not installed")
    monkeypatch.delenv("INVGEN_DATA", raising=False)
    from invgen.metrics import edge_chamfer, edge_f1
    from invgen.operators.sketch import make_sketch

    task = next(t for t in demo.TASKS if t[2] == "sketch")
    task = (*task[:5], {"steps": 2, "zeta": 0.3}, {"steps": 2, "zeta": 0.3})
    seen = {}
    ground_truth = demo._ground_truth

    def keep(prior_name, *args, **kwargs):
        seen["x"], source = ground_truth(prior_name, *args, **kwargs)
        return seen["x"], source

    monkeypatch.setattr(demo, "_ground_truth", keep)
    real_solve = invgen.solve

    def solve(*args, **kwargs):
        seen["post"] = real_solve(*args, **kwargs)
        return seen["post"]

    monkeypatch.setattr(invgen, "solve", solve)
    (row,), _ = demo.run_tasks(tmp_path, quick=True, tasks=[task])
    flat = seen["post"].clamped(0, 1).samples.reshape(-1, 1, 32, 32)
    sketch = make_sketch(seen["x"]).repeat(seen["post"].samples.shape[0], 1, 1, 1)
    assert row["edge_f1"] == pytest.approx(float(edge_f1(flat, sketch).mean()))
    assert row["edge_chamfer"] == pytest.approx(float(edge_chamfer(flat, sketch).mean()))
    assert "edge_f1_soft" not in row


def test_sheet_names():
    assert [demo.sheet_name(k, t[0]) for k, t in enumerate(demo.TASKS, 1)][-2:] == [
        "task-06-photo-inpainting-free-form.png",
        "task-07-photo-colorization.png",
    ]
