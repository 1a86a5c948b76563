"""Issue 29's side-by-side frontier (benchmarks/frontier_peers.py): every peer operator equals invgen's (and a
mismatched pair stops the run), every peer is given invgen's own network as its denoiser, and a tiny run writes its
JSON and markdown and resumes. Skipped without deepinv / azula, except in CI where they are installed."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

import invgen

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


def _need(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{name} is not installed")


@pytest.fixture(scope="module")
def peers():
    _need("deepinv")
    _need("azula")
    from peers import azula_peer, common, deepinv_peer

    return common, deepinv_peer, azula_peer


def _shape(task: str) -> tuple[int, int, int, int]:
    return (2, 1, 32, 32) if task == "sr4" else (2, 3, 32, 32)


def _identity(x, sigma):
    return x


@pytest.mark.parametrize("task", ["sr4", "inpaint-box", "colorize"])
def test_peer_operators_equal_invgens(peers, task):
    common, deepinv_peer, azula_peer = peers
    op = common.make_operator(common.TASKS[task])
    x = torch.rand(*_shape(task), generator=torch.Generator().manual_seed(0))
    for side in (
        deepinv_peer.DeepinvSide.for_function(task, op, x.shape, _identity),
        azula_peer.AzulaSide.for_function(task, op, x.shape, _identity, 1.0),
    ):
        (diff,) = side.operator_pairs(x).values()
        assert diff <= common.TOL


def test_mismatched_operator_pairs_stop_the_run(peers):
    """deepinv's default rec601 weights are not BT.601's to 1e-6; its bicubic filter is not invgen's block average;
    azula's block average is not invgen's bicubic kernel: each pair raises before any sampling."""
    common, deepinv_peer, azula_peer = peers
    dinv = deepinv_peer.import_deepinv()
    rgb, gray = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32)
    with pytest.raises(common.OperatorMismatch, match="differs from invgen's"):
        common.check_equal("rec601", dinv.physics.Decolorize(channels=3).A(rgb), invgen.operator("colorize")(rgb))
    bicubic = dinv.physics.Downsampling(img_size=(1, 32, 32), filter="bicubic", factor=4, padding="reflect")
    block = invgen.operator("superres", scale=4, kernel="block")
    with pytest.raises(common.OperatorMismatch, match="tolerance"):
        common.check_equal("bicubic vs block", bicubic.A(gray), block(gray))
    side = deepinv_peer.DeepinvSide.for_function("sr4", block, gray.shape, _identity)
    side.op = invgen.operator("superres", scale=4, kernel="bicubic")
    with pytest.raises(common.OperatorMismatch):
        side.operator_pairs(gray)
    az = azula_peer.AzulaSide.for_function("sr4", side.op, gray.shape, _identity, 1.0)
    with pytest.raises(common.OperatorMismatch):
        az.operator_pairs(gray)


def _azula_time(schedule, s_m11: float) -> torch.Tensor:
    """The time t of azula's schedule at which sigma_t / alpha_t = s (bisection: s grows with t)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        a, s = schedule(torch.tensor(mid, dtype=torch.float64))
        lo, hi = (mid, hi) if float(s / a) < s_m11 else (lo, mid)
    return torch.tensor((lo + hi) / 2)


@pytest.mark.parametrize("name", ["diffusion-mnist", "diffusion-cifar10"])
def test_peer_denoisers_are_invgens_network(peers, name):
    """deepinv's D(x, sigma) and azula's posterior mean equal prior.denoise at several noise levels (float32
    rounding, amplified by sigma in x0 = x - sigma eps); the cifar10 prior's clamp is kept."""
    _, deepinv_peer, azula_peer = peers
    prior = invgen.prior(name)
    dden, _ = deepinv_peer.network_denoiser(prior)
    aden, _ = azula_peer.network_denoiser(prior)
    shape = (2, *prior.image_shape)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(*shape, generator=g)
    for sigma in (0.006, 0.05, 0.3, 2.0, 20.0):
        x = x0 + sigma * torch.randn(*shape, generator=g)
        tol = 2e-6 * (1 + 4 * sigma)
        with torch.no_grad():
            torch.testing.assert_close(dden(x, sigma), prior.denoise(x, sigma), atol=tol, rtol=0)
            t = _azula_time(aden.schedule, 2 * sigma)
            alpha, s = aden.schedule(t)
            sig01 = float(s / alpha) / 2
            x_t = (alpha * (2 * x - 1)).flatten(1)
            post = aden(x_t, t)
            mean01 = ((post.mean + 1) / 2).reshape(shape)
            torch.testing.assert_close(mean01, prior.denoise(x, sig01), atol=tol, rtol=0)
            assert math.isclose(float(post.var.flatten()[0]), (2 * sig01) ** 2 / (1 + (2 * sig01) ** 2), rel_tol=1e-5)


def test_oracle_denoisers_are_the_exact_one(peers):
    common, deepinv_peer, azula_peer = peers
    pb = common.oracle_problem()
    den = deepinv_peer.function_denoiser(pb.prior.denoise)
    aden = azula_peer.function_denoiser(pb.prior.denoise, pb.prior.image_shape)
    x = pb.exact[:8]
    for sigma in (0.01, 0.1, 1.0):
        ref = pb.prior.denoise(x, sigma)
        torch.testing.assert_close(den(x, sigma), ref)
        t = _azula_time(aden.schedule, 2 * sigma)
        alpha, s = aden.schedule(t)
        x_t = (alpha.double() * (2 * x - 1)).flatten(1)
        mean01 = ((aden(x_t, t).mean + 1) / 2).reshape(x.shape)
        torch.testing.assert_close(mean01, pb.prior.denoise(x, float(s / alpha) / 2))


def test_tiny_run_writes_json_and_markdown_and_resumes(peers, data_dir, tmp_path, capsys):
    fp = importlib.import_module("frontier_peers")
    argv = ["--tasks", "sr4", "--images", "2", "--samples", "1", "--budgets", "20", "--out", str(tmp_path),
            "--samplers", "invgen:ddrm,deepinv:diffpir,azula:pgdm,deepinv:ddrm"]  # fmt: skip
    assert fp.main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    cells = data["cells"]
    assert {k for k, c in cells.items() if c["status"] == "ok"} == {
        "sr4|invgen|ddrm|20",
        "sr4|deepinv|diffpir|20",
        "sr4|azula|pgdm|20",
    }
    assert cells["sr4|deepinv|ddrm|20"]["status"].startswith("n/a")
    for c in (c for c in cells.values() if c["status"] == "ok"):
        assert c["nfe"] == 20 and c["seconds_per_image"] > 0 and 0 <= c["lpips"] <= 1 and c["psnr"] > 5
    pairs = data["meta"]["tasks"]["sr4"]["operator_pairs"]
    assert len(pairs) == 2 and max(pairs.values()) <= 1e-6
    page = (tmp_path / "frontier-peers.md").read_text()
    assert "| azula | pgdm | 20 |" in page and "![sr4](sr4.png)" in page and (tmp_path / "sr4.png").exists()
    capsys.readouterr()
    assert fp.main(argv) == 0  # resumes: nothing left to run
    assert "sr4|" not in capsys.readouterr().out.replace(str(tmp_path), "")
    assert json.loads((tmp_path / "results.json").read_text())["cells"] == cells


def test_invgen_variants_are_named_solvers_with_options_run_only_when_asked():
    from peers import invgen_side

    assert invgen_side.base_sampler("pigdm_eta0") == ("pigdm", {"eta": 0.0})
    assert invgen_side.settings("pigdm_eta0", 50) == {"steps": 50, "eta": 0.0}
    assert invgen_side.settings("pigdm", 50) == {"steps": 50}
    assert invgen_side.settings("repaint", 20) == {"steps": 10, "jump_length": 2, "jump_n_sample": 2}
    assert not set(invgen_side.VARIANTS) & set(invgen_side.SAMPLERS)  # never in a default run
    frontier = importlib.import_module("frontier_peers")
    asked = frontier.parse(["--samplers", "invgen:pigdm_eta0,ddrm"])
    assert frontier.plan(asked, "invgen") == ["ddrm", "pigdm_eta0"]
    assert "pigdm_eta0" not in frontier.plan(frontier.parse([]), "invgen")
