"""Smoke test of benchmarks/perf/run.py: its helpers on a tiny diffusion prior, the report, and the deepinv wrappers
(skipped when deepinv is not importable). Seconds, no shipped weights needed except where marked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import invgen
from invgen_plugins.diffusion.model import DiffusionPrior
from invgen_plugins.diffusion.schedule import VPSchedule
from invgen_plugins.diffusion.unet import UNet, UNetConfig

PERF = Path(__file__).resolve().parents[1] / "benchmarks" / "perf"


def _load(name: str):
    if str(PERF) not in sys.path:
        sys.path.insert(0, str(PERF))
    spec = importlib.util.spec_from_file_location(f"perf_{name}", PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run():
    return _load("run")


@pytest.fixture
def tiny_prior() -> DiffusionPrior:
    torch.manual_seed(0)
    cfg = UNetConfig(
        in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), groups=4
    )
    net = UNet(cfg)
    for p in net.parameters():  # the zero-initialised output layers would make every call return 0
        p.data.normal_(0, 0.1)
    return DiffusionPrior(net, VPSchedule(), (1, 8, 8), name="tiny")


def test_counter_counts_network_calls_like_the_nfe(run, tiny_prior):
    counter = run.CallCounter(tiny_prior.net)
    op = invgen.operator("inpaint", mask="box", noise=invgen.noise("gaussian", std=0.05))
    y = op.measure(torch.rand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    post = invgen.solve(y, op, tiny_prior, solver="ddrm", n_samples=2, seed=0, steps=3)
    assert counter.take() == post.nfe == 3
    assert counter.take() == 0


def test_network_call_time_forward_and_backward(run, tiny_prior):
    x = torch.rand(2, 1, 8, 8)
    sigma = torch.full((2, 1, 1, 1), 0.5)
    call = lambda v: run.invgen_net_call(tiny_prior, sigma, v)  # noqa: E731
    assert run.network_call_time(call, x, grad=False, repeats=1) > 0
    assert run.network_call_time(call, x, grad=True, repeats=1) > 0


def test_channels_last_prior_matches_the_default_layout(tiny_prior):
    x = torch.rand(3, 1, 8, 8)
    ref = tiny_prior.denoise(x, 0.3)
    fast = tiny_prior.channels_last().denoise(x, 0.3)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny_prior.channels_last(False).denoise(x, 0.3), ref)


def test_bfloat16_gradient_calls_use_the_default_layout(tiny_prior):
    """Under bfloat16 a call that records a graph on >= 16 items runs with default-layout weights (oneDNN's
    channels-last bf16 backward is the slower one there); forward calls and small batches keep channels-last. Values
    and gradients do not depend on it."""
    x = torch.rand(16, 1, 8, 8)
    prior = tiny_prior.channels_last().set_precision("bfloat16")
    weight = next(p for p in prior.net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    with torch.no_grad():
        fwd = prior.denoise(x, 0.3)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    xg = x.clone().requires_grad_(True)
    out = prior.denoise(xg, 0.3)
    (grad,) = torch.autograd.grad(out.square().sum(), xg)
    assert weight.is_contiguous()
    torch.testing.assert_close(out.detach(), fwd, atol=0.02, rtol=0)
    with torch.no_grad():  # and back
        prior.denoise(x, 0.3)
    assert not weight.is_contiguous()
    # the same gradient as float32 channels-last, to bfloat16 accuracy
    ref_x = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(prior.set_precision("float32").denoise(ref_x, 0.3).square().sum(), ref_x)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert float((grad - ref).norm() / ref.norm()) < 0.05
    small = x[:15].clone().requires_grad_(True)  # below the threshold: channels-last stays
    prior.set_precision("bfloat16").denoise(small, 0.3).sum().backward()
    assert not weight.is_contiguous()


def test_report_renders_every_section():
    report = _load("report")
    inv = {"s_per_sample": 0.1, "nfe": 20, "net_call_s": 0.004, "overhead": 1.02, "psnr": 20.0, "lpips": 0.1}
    results = {
        "meta": {"mode": "quick"},
        "compare": {
            "deepinv_version": "0.5.0",
            "rows": [
                {"dataset": "mnist", "task": "sr4", "solver": "ddrm", "invgen": inv, "deepinv": {"failed": "no"}},
                {"dataset": "mnist", "task": "inpaint", "solver": "dps", "invgen": inv, "deepinv": inv, "ratio": 1.0},
            ],
        },
        "precision": {
            "deepinv_version": "0.5.0",
            "samples": 8,
            "chunk": 8,
            "n_obs": 16,
            "rows": [
                {"dataset": "mnist", "task": "sr4", "solver": "ddrm", "invgen-float32": inv, "invgen-bfloat16": inv}
                | {"failed": {"deepinv-float32": "AttributeError: mask"}, "ratios": {"invgen-float32": 1.6}}
            ],
        },
        "diffpir": {
            "deepinv_version": "0.5.0",
            "nfe": 20,
            "samples": 8,
            "n_obs": 32,
            "seeds": [11, 12],
            "rows": [
                {"dataset": "cifar10", "task": "sr4", "deepinv": {"psnr": 20.671, "lpips": 0.0767}}
                | {"invgen": {"psnr": 20.812, "lpips": 0.0728}}
            ],
        },
        "limit": {
            "steps": 3,
            "rounds": 2,
            "rows": [
                {"dataset": "mnist", "task": "sr4", "solver": "dps", "batch": 8, "call": "fwd+bwd", "nfe": 3}
                | {"wall_s": 1.0, "net_call_s": 0.3, "ratio": 1.05}
            ],
        },
        "opts": {"rows": [{"dataset": "mnist", "batch": 8, "fwd nchw": 0.1, "fwd channels_last": 0.08}]},
        "scaling": {
            "steps": 2,
            "samples": [{"solver": "dps", "n": 1, "res": 32, "seconds": 1.0, "rss_before_mb": 300, "peak_rss_mb": 310}],
            "resolution": [{"solver": "dps", "n": 1, "res": 64, "failed": "boom"}],
            "long": {"steps": 4, "every": 2, "trace": [[2, 300.0], [4, 300.0]]},
        },
        "imports": {"import invgen": 0.2, "torch imported by import invgen": False},
    }
    md = report.render(results)
    needles = (
        "invgen vs deepinv",
        "fails",
        "Overhead",
        "the limit",
        "Scaling",
        "Long run",
        "import invgen",
        "channels_last",
        "N samples per observation",
        "**1.60x**",
        "AttributeError: mask",
        "| cifar10 | sr4 | 20.67 / 0.0767 | 20.81 / 0.0728 |",
        "seeds [11, 12]",
    )
    for needle in needles:
        assert needle in md


@pytest.mark.skipif("diffusion-mnist" not in invgen.list_priors(), reason="shipped diffusion-mnist weights missing")
def test_scaling_point_records_rss_trace(run):
    spec = {"kind": "long", "solver": "ddrm", "n": 1, "res": 32, "steps": 4, "every": 2}
    threads = torch.get_num_threads()
    try:
        out = run.scaling_point(spec, {})
    finally:
        torch.set_num_threads(threads)
    assert out["nfe"] == 4 and len(out["trace"]) == 2 and out["peak_rss_mb"] > 0


def test_deepinv_wrappers_match_invgen(tiny_prior):
    pytest.importorskip("deepinv")
    side = _load("deepinv_side")
    net = side.load_network_copy(tiny_prior)
    den = side.make_denoiser(net)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(den(x, 0.3), tiny_prior.denoise(x, 0.3), atol=1e-5, rtol=1e-5)
    make_operator = _load("run").make_operator
    for task in ("sr4", "inpaint"):
        op = make_operator(task, 1)
        mask = op.mask_for((2, 1, 8, 8)) if task == "inpaint" else None
        physics = side.make_physics(task, 1, 8, mask, 0.05)
        assert side.check_physics(physics, op, x) < 1e-6


def test_precision_variant_samples_and_restores_float32(run, tiny_prior):
    op = invgen.operator("superres", scale=2, noise={"name": "gaussian", "std": 0.05})
    y = op.measure(torch.rand(3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    ctx = {"prior": tiny_prior, "op": op, "solver": "ddrm", "nfe": 3, "n_samples": 2}
    a = run._precision_variant("invgen-float32", y, 5, ctx)
    b = run._precision_variant("invgen-bfloat16", y, 5, ctx)
    assert a.shape == b.shape == (2, 3, 1, 8, 8) and tiny_prior.precision == "float32"
    assert 0 < float((a - b).abs().max()) < 0.1  # same seed: only the network's rounding differs


def test_deepinv_autocast_denoiser_matches_invgen_bfloat16(tiny_prior):
    pytest.importorskip("deepinv")
    side = _load("deepinv_side")
    den = side.make_denoiser(side.load_network_copy(tiny_prior), torch.bfloat16)
    x = torch.rand(2, 1, 8, 8)
    out = den(x, 0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, tiny_prior.set_precision("bfloat16").denoise(x, 0.3), atol=1e-2, rtol=0)
