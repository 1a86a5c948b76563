"""Smoke tests of the runnable scripts in examples/: each runs with --smoke in a subprocess and must write valid
PNGs and print real metrics (the scripts use only the public API, so this also guards it)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import invgen

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: str, out: Path, drop: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--smoke", "--out", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def metrics(stdout: str) -> dict[str, dict[str, float]]:
    """``metrics LABEL: k=v k=v`` lines -> {label: {k: v}}."""
    found = {}
    for label, pairs in re.findall(r"^metrics (\S+): (.*)$", stdout, flags=re.M):
        found[label] = {k: float(v) for k, v in (p.split("=") for p in pairs.split())}
    return found


def check_png(path: Path, min_size: tuple[int, int]) -> None:
    from PIL import Image

    assert path.is_file(), f"missing {path}"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= min_size[0] and img.height >= min_size[1], (img.size, min_size)


def need_priors(*names: str) -> None:
    missing = [n for n in names if n not in invgen.list_priors()]
    if missing:
        pytest.skip(f"shipped prior(s) {missing} not installed")


def test_super_resolution(tmp_path):
    need_priors("diffusion-mnist", "vae-mnist")
    # no INVGEN_LPIPS_WEIGHTS: LPIPS still comes, from the backbone shipped with invgen
    m = metrics(run_example("super_resolution.py", tmp_path, drop=("INVGEN_LPIPS_WEIGHTS",)))
    # 2 images x (3 sampler rows + 1 baseline row) of 96-px tiles, at least 6 tiles wide
    check_png(tmp_path / "super_resolution.png", (6 * 100, 8 * 110))
    assert set(m) == {"ddrm/diffusion-mnist", "pigdm/diffusion-mnist", "latent_map/vae-mnist", "pinv", "bicubic"}
    assert all(math.isfinite(v) for r in m.values() for v in r.values())
    assert m["ddrm/diffusion-mnist"]["psnr_mean"] > m["pinv"]["psnr_mean"]
    assert m["pigdm/diffusion-mnist"]["psnr_mean"] > m["pinv"]["psnr_mean"]
    assert 0 < m["ddrm/diffusion-mnist"]["lpips_samples"] < 1


def test_inpainting(tmp_path):
    need_priors("diffusion-fashion-mnist")
    m = metrics(run_example("inpainting.py", tmp_path))
    check_png(tmp_path / "inpainting.png", (6 * 100, 6 * 110))  # 3 masks x 2 rows
    assert set(m) == {f"{mask}/{s}" for mask in ("box", "random70", "freeform") for s in ("ddrm", "ddnm", "tv")}
    for r in m.values():
        assert 5 < r["psnr_mean"] < 60 and -1 <= r["ssim_mean"] <= 1
    assert 0.6 < m["random70/tv"]["missing"] < 0.8


def test_sketch_to_image(tmp_path):
    need_priors("diffusion-mnist")
    m = metrics(run_example("sketch_to_image.py", tmp_path))
    check_png(tmp_path / "sketch_to_image.png", (6 * 100, 2 * 110))
    dps = m["dps/diffusion-mnist"]
    assert 0 <= dps["edge_f1_min"] <= dps["edge_f1"] <= 1 and dps["edge_f1"] > 0
    assert math.isfinite(dps["psnr_mean"]) and dps["psnr_mean"] > 5


def test_deepinv_demosaic(tmp_path):
    need_priors("diffusion-cifar10")
    pytest.importorskip("deepinv")
    m = metrics(run_example("deepinv_demosaic.py", tmp_path))
    assert {"ddrm", "pinv"} <= {k.split("/")[0] for k in m}, m
    best = max(r["psnr_mean"] for k, r in m.items() if not k.startswith("pinv"))
    assert best > m[next(k for k in m if k.startswith("pinv"))]["psnr_mean"] + 5


def test_colorization(tmp_path):
    out = run_example("colorization.py", tmp_path)
    if "colorization skipped" in out:  # the script's explicit message: no colour prior and no data for the fallback
        assert "diffusion-cifar10" not in invgen.list_priors() and not os.environ.get("INVGEN_DATA")
        pytest.skip(out.strip())
    m = metrics(out)
    check_png(tmp_path / "colorization.png", (5 * 100, 110))
    (label,) = [k for k in m if k != "gray-baseline"]
    r = m[label]
    assert r["psnr_mean"] > 15 and r["diversity_std"] > 0.01  # several different colourings of each image
    assert r["psnr_mean"] >= r["psnr_samples"]  # the mean of exact samples beats a single sample


def test_colorization_says_what_is_missing(tmp_path):
    """A colour prior that is not installed and no data for the Gaussian fallback: say so, write nothing, exit 0."""
    missing = "diffusion-not-installed"
    assert missing not in invgen.list_priors()
    out = run_example("colorization.py", tmp_path / "out", drop=("INVGEN_DATA",), extra=("--prior", missing))
    assert f"'{missing}' is not registered" in out and "INVGEN_DATA" in out
    assert not (tmp_path / "out").exists()


def test_custom_prior_plugin(tmp_path):
    out = run_example("custom_prior_plugin.py", tmp_path)
    m = metrics(out)
    check_png(tmp_path / "custom_prior_plugin.png", (9 * 100, 110))
    assert m["latent_map/example-smooth-gaussian"]["max_abs_diff_to_closed_form"] < 1e-4
    mala = m["mala/example-smooth-gaussian"]
    assert abs(mala["std_mala"] / mala["std_exact"] - 1) < 0.2
    assert "[project.entry-points.invgen]" in out and "examples/plugin_template" in out
