"""The public API surface: solve(), Posterior, bad input, import cost, CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import invgen
from invgen.errors import MissingCapabilityError, RangeError, ShapeError


def _denoising(std=0.1):
    return invgen.operator("identity", noise=invgen.noise("gaussian", std=std))


def test_posterior_statistics_and_shapes():
    samples = torch.arange(24, dtype=torch.float32).reshape(3, 2, 1, 2, 2)
    post = invgen.Posterior(samples, nfe=5, seconds=0.1)
    assert post.n_samples == 3
    torch.testing.assert_close(post.mean, samples[1])
    torch.testing.assert_close(post.std, torch.full((2, 1, 2, 2), 8.0))  # values k, k+8, k+16: unbiased std 8
    single = invgen.Posterior(samples[:1], nfe=1, seconds=0.0)
    assert torch.equal(single.std, torch.zeros(2, 1, 2, 2))


def test_solve_baseline_without_prior_returns_posterior():
    op = _denoising()
    y = op.measure(torch.full((2, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0))
    post = invgen.solve(y, op, solver="pinv", n_samples=4)
    assert post.samples.shape == (4, 2, 1, 8, 8)
    assert post.nfe == 0 and post.seconds >= 0
    torch.testing.assert_close(post.mean, y)
    assert post.solver["name"] == "pinv"


def test_solve_counts_prior_calls_and_is_reproducible():
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = _denoising(0.2)
    y = op.measure(prior.sample(2, generator=torch.Generator().manual_seed(1)).clamp(0, 1))
    a = invgen.solve(y, op, prior, solver="ula", n_samples=3, seed=7, steps=25)
    b = invgen.solve(y, op, prior, solver="ula", n_samples=3, seed=7, steps=25)
    c = invgen.solve(y, op, prior, solver="ula", n_samples=3, seed=8, steps=25)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    assert a.nfe == 25, "one batched score call per step for all chains"


def test_solver_lacking_capability_names_it_and_the_alternatives():
    class DenoiserOnly(invgen.Prior):
        name = "denoiser-only"
        capabilities = frozenset({"denoiser"})

    op = _denoising()
    y = torch.zeros(1, 1, 4, 4)
    with pytest.raises(
        MissingCapabilityError,
        match=r"'mala' needs the capabilities 'score' and 'log_density'.*"
        r"solvers that work with it: .*pinv.*tikhonov",
    ):
        invgen.solve(y, op, DenoiserOnly(), solver="mala")


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (torch.full((1, 4, 4), 0.5), ShapeError, r"expected a \(B, C, H, W\) tensor, got shape \(1, 4, 4\)"),
        (torch.full((1, 1, 4, 4), float("nan")), RangeError, "expected finite values, got 16 NaN/Inf"),
        (torch.full((1, 1, 4, 4), 1.5), RangeError, r"values in \[0, 1\], got values in \[1.5, 1.5\]"),
        (torch.full((1, 1, 4, 4), 1, dtype=torch.uint8), TypeError, "floating point tensor, got dtype torch.uint8"),
    ],
)
def test_measure_rejects_bad_clean_images(bad, error, match):
    with pytest.raises(error, match=match):
        _denoising().measure(bad)


def test_solve_rejects_bad_observation_and_options():
    op = _denoising()
    with pytest.raises(RangeError, match="y: expected finite values"):
        invgen.solve(torch.full((1, 1, 4, 4), float("inf")), op, solver="pinv")
    with pytest.raises(ShapeError, match=r"y: expected an observation of identity of a \(B, C, H, W\) image batch"):
        invgen.solve(torch.zeros(4, 4), op, solver="pinv")
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 1, got 0"):
        invgen.solve(torch.zeros(1, 1, 4, 4), op, solver="pinv", n_samples=0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['stepz'\]"):
        invgen.solve(torch.zeros(1, 1, 4, 4), op, solver="pinv", stepz=3)
    with pytest.raises(TypeError, match="operator: expected an invgen operator"):
        invgen.solve(torch.zeros(1, 1, 4, 4), "identity", solver="pinv")


def test_prior_image_shape_mismatch_is_reported():
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    with pytest.raises(ShapeError, match=r"defined on images of shape \(1, 4, 4\).*shape \(1, 8, 8\)"):
        invgen.solve(torch.zeros(1, 1, 8, 8), _denoising(), prior, solver="ula")


def test_noise_models_by_name():
    assert invgen.noise("gaussian", std=0.05).std == 0.05
    assert invgen.noise("poisson", rate=30).rate == 30
    with pytest.raises(invgen.errors.UnknownNameError, match="unknown noise model 'gauss'"):
        invgen.noise("gauss")
    with pytest.raises(RangeError, match="std >= 0, got -1"):
        invgen.noise("gaussian", std=-1)


def test_import_is_light():
    """``import invgen`` must not pull in the heavy optional modules (they are imported lazily)."""
    code = (
        "import sys, invgen; heavy = [m for m in ('torch', 'kornia', 'lpips', 'skimage', 'matplotlib', 'scipy', "
        "'torchvision', 'invgen_plugins.analytic') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_version_and_plugins():
    out = subprocess.run([sys.executable, "-m", "invgen.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"invgen {invgen.__version__}"
    out = subprocess.run([sys.executable, "-m", "invgen.cli", "plugins"], capture_output=True, text=True, check=True)
    text = out.stdout
    for needle in (
        "Priors",
        "gmm",
        "capabilities: denoiser, score, log_density",
        "Solvers",
        "mala",
        "needs: score, log_density",
        "Operators",
        "superres",
        "linear",
        "from invgen",
    ):
        assert needle in text, needle
    import json

    out = subprocess.run(
        [sys.executable, "-m", "invgen.cli", "plugins", "--json"], capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout)
    assert "mala" in report["priors"]["gmm"]["solvers"]
    assert report["priors"]["gmm"]["distribution"] == "invgen"
    assert report["solvers"]["mala"]["needs"] == ["score", "log_density"]
    assert report["operators"]["sketch"]["linear"] is False


def test_demo_quick_writes_gallery_and_table(tmp_path, monkeypatch):
    """The demo on a fresh install: no INVGEN_DATA (ground truths from the test images shipped in the package), no
    INVGEN_LPIPS_WEIGHTS (LPIPS from the AlexNet trunk shipped in the package)."""
    from invgen.cli import main

    monkeypatch.delenv("INVGEN_DATA", raising=False)
    monkeypatch.delenv("INVGEN_LPIPS_WEIGHTS", raising=False)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
    assert (tmp_path / "exactness.png").stat().st_size > 10_000
    import json

    report = json.loads((tmp_path / "metrics.json").read_text())
    tasks = {r["task"]: r for r in report["tasks"]}
    assert list(tasks) == [
        "super-resolution x4",
        "inpainting (box)",
        "sketch-to-image",
        "colorization",
        "photo super-resolution x2",
        "photo inpainting (free-form)",
        "photo colorization",
    ]
    ran = [r for r in tasks.values() if "skipped" not in r]
    assert {r["task"] for r in ran} >= {"super-resolution x4", "inpainting (box)", "sketch-to-image"}
    for r in ran:
        photo = r["task"].startswith("photo")
        source = "scikit-image photos" if photo else "(shipped with invgen; INVGEN_DATA not set)"
        assert source in r["ground truth"] and 0 < r["lpips_samples"] < 1, r
        assert (tmp_path / r["sheet"]).stat().st_size > 10_000, r  # one sheet per task
        assert r["psnr_mean"] > 12.0, r
    assert 0.5 < tasks["sketch-to-image"]["edge_f1"] <= 1.0  # against the truth's binary Canny sketch
    assert 0 <= tasks["sketch-to-image"]["edge_chamfer"] < 3.0
    rows = report["exactness"]
    assert [r["task"] for r in rows] == ["inpaint (box)", "superres x2"]
    for r in rows:
        assert r["rmse_mala_vs_exact_mean"] < 0.02
        assert 0.8 < r["std_ratio_mala_over_exact"] < 1.2
        assert 0.4 < r["acceptance_rate"] < 0.7
    md = (tmp_path / "metrics.md").read_text()
    assert "| inpaint (box) |" in md and "| sketch-to-image | diffusion-mnist | dps" in md
