"""The natural-image restoration benchmark (benchmarks/natural.py): its Y conversion, border shaving, PSNR and bicubic
baseline against closed forms, scikit-image and the published figures, and one end-to-end run with a tiny random
prior (no trained weights)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio

import invgen
from invgen.train.checkpoint import export_weights
from invgen_plugins.diffusion.model import DiffusionPrior
from invgen_plugins.diffusion.schedule import VPSchedule
from invgen_plugins.diffusion.unet import UNet, UNetConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "natural.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("natural_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_prior() -> DiffusionPrior:
    """A randomly initialised fully convolutional gray UNet of a few thousand parameters, any image size."""
    torch.manual_seed(0)
    cfg = UNetConfig(
        in_channels=1,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(),
        groups=4,
        mid_attention=False,
    )
    net = UNet(cfg)
    for p in net.parameters():  # the zero-initialised output layers would make every call return 0
        p.data.normal_(0, 0.05)
    return DiffusionPrior(net, VPSchedule(), None, name="tiny")


def test_y_channel_matches_scikit_image(bench):
    rng = np.random.default_rng(0)
    img = rng.random((20, 30, 3))
    ours = bench.rgb_to_y(torch.from_numpy(img).permute(2, 0, 1))[0].numpy()
    np.testing.assert_allclose(ours, rgb2ycbcr(img)[..., 0] / 255, atol=1e-6)
    # the 8-bit Y of an 8-bit image: MATLAB's rgb2ycbcr on uint8 (rounded), here on [0, 1]
    img8 = rng.integers(0, 256, (20, 30, 3)).astype(np.float64) / 255
    y8 = bench.y_channel_8bit(torch.from_numpy(img8).permute(2, 0, 1).float())[0].double().numpy()
    np.testing.assert_allclose(y8 * 255, np.round(rgb2ycbcr(img8)[..., 0]), atol=1e-4)
    assert y8.min() >= 16 / 255 - 1e-7 and y8.max() <= 235 / 255 + 1e-7
    # gray images: R = G = B
    gray = torch.full((1, 4, 4), 0.5)
    assert float(bench.y_channel_8bit(gray)[0, 0, 0]) == pytest.approx(round(16 + 219 * 0.5) / 255, abs=1e-7)


def test_shaved_psnr_matches_scikit_image(bench):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (1, 40, 36)) / 255
    b = np.clip(a + rng.integers(-6, 7, a.shape) / 255, 0, 1)
    # a large error on the border only: shaving 4 pixels removes it
    b[:, :4] = 1 - a[:, :4]
    ours = bench.psnr_shaved(torch.from_numpy(b), torch.from_numpy(a), border=4)
    ref = peak_signal_noise_ratio(a[:, 4:-4, 4:-4], b[:, 4:-4, 4:-4], data_range=1.0)
    assert ours == pytest.approx(ref, abs=1e-10)
    assert bench.psnr_shaved(torch.from_numpy(b), torch.from_numpy(a), border=0) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-10
    )
    assert bench.psnr_shaved(torch.from_numpy(a), torch.from_numpy(a), border=2) == math.inf
    assert bench.shave(torch.zeros(1, 10, 12), 3).shape == (1, 4, 6)
    assert bench.mod_crop(torch.zeros(1, 11, 14), 4).shape == (1, 8, 12)


def test_quantize_rounds_and_clips_to_8_bits(bench):
    x = torch.tensor([-0.1, 0.0, 0.5, 0.50196, 1.2])
    np.testing.assert_allclose((bench.quantize(x) * 255).numpy(), [0, 0, 128, 128, 255], atol=1e-4)


def test_bicubic_upscaling_reproduces_linear_ramps_and_pil_inside(bench):
    from PIL import Image

    # rows sum to one, and the cubic kernel reproduces linear functions away from the mirrored borders
    m = bench.upscale_matrix(20, 4)
    assert m.shape == (80, 20)
    np.testing.assert_allclose(m.sum(1).numpy(), 1.0, atol=1e-12)
    ramp = torch.arange(20, dtype=torch.float64)
    up = (m @ ramp).numpy()
    pos = np.arange(1, 81) / 4 + 0.5 * (1 - 1 / 4) - 1  # output centres in 0-based input coordinates
    np.testing.assert_allclose(up[8:-8], pos[8:-8], atol=1e-10)
    # PIL's bicubic (also a = -0.5) agrees inside the image (it treats borders differently)
    rng = np.random.default_rng(2)
    lr = rng.random((12, 16)).astype(np.float32)
    ours = bench.bicubic_upsample(torch.from_numpy(lr).double()[None, None], 2)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(lr, mode="F").resize((32, 24), Image.BICUBIC))
    np.testing.assert_allclose(ours[4:-4, 4:-4], pil[4:-4, 4:-4], atol=1e-5)


def test_fixed_masks_are_cropped_or_resized(bench, tmp_path):
    mask = np.ones((8, 8))
    mask[2:4, 3:6] = 0
    np.save(tmp_path / "m.npy", mask)
    crop = bench.fixed_mask(tmp_path / "m.npy", 4)
    assert crop.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(crop[0, 0].numpy(), mask[2:6, 2:6])
    big = bench.fixed_mask(tmp_path / "m.npy", 16)
    np.testing.assert_array_equal(big[0, 0, ::2, ::2].numpy(), mask)


def test_cell_on_synthetic_images_runs_every_method_it_can(bench):
    """No data needed: a noiseless SR cell and a blur cell on smooth synthetic images with the tiny prior."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 48), indexing="ij")
    truth = bench.quantize(0.3 + 0.4 * torch.sin(3 * xx) * torch.cos(2 * yy))[None].float()
    prior = tiny_prior()
    sr = {
        "family": "sr",
        "key": "syn-x2",
        "shave": 2,
        "scale": 2,
        "items": [
            {"id": "a", "index": 0, "truth": truth, "op": invgen.operator("superres", scale=2, kernel="bicubic")}
        ],
    }
    res = bench.evaluate_cell(
        sr,
        prior,
        ["bicubic", "pinv", "ddrm", "diffpir"],
        samples=2,
        steps=2,
        seed=0,
        use_lpips=False,
        device=torch.device("cpu"),
        verbose=False,
    )
    methods = res["methods"]
    assert set(methods) == {"bicubic", "pinv", "ddrm", "diffpir"} and not res["skipped"]
    # a smooth image is easy for bicubic; the diffusion solvers ran 2 batched denoiser calls
    assert methods["bicubic"]["psnr"] > 40 and methods["bicubic"]["nfe"] == 0
    assert methods["ddrm"]["nfe"] == 2 and methods["diffpir"]["nfe"] == 2
    assert all(math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1 and m["seconds"] >= 0 for m in methods.values())
    assert set(res["figure"]["means"]) == set(methods)
    blur = {
        "family": "deblur",
        "key": "syn-blur",
        "shave": 0,
        "items": [
            {
                "id": "a",
                "index": 0,
                "truth": truth,
                "op": invgen.operator(
                    "blur", kernel="gaussian", sigma=1.6, size=25, noise=invgen.noise("gaussian", std=0.01)
                ),
            }
        ],
    }
    res = bench.evaluate_cell(
        blur,
        prior,
        ["tikhonov", "ddrm", "diffpir"],
        samples=1,
        steps=2,
        seed=0,
        use_lpips=False,
        device=torch.device("cpu"),
        verbose=False,
    )
    assert "ddrm" in res["skipped"] and "has_svd" in res["skipped"]["ddrm"]
    assert set(res["methods"]) == {"tikhonov", "diffpir"}


def test_variants_run_a_solver_with_options_as_another_method(bench):
    """``--variant diffpir:lam=28,spacing=uniform`` is the method ``diffpir(lam=28,spacing=uniform)``: the options reach
    the solver (same seed: equal to calling it with them, different from the default) and the SVD check
    uses the name."""
    assert bench.parse_variant("diffpir:lam=28,spacing=uniform") == "diffpir(lam=28,spacing=uniform)"
    assert bench.split_method("diffpir(lam=28,spacing=uniform,zeta=0.5)") == (
        "diffpir",
        {"lam": 28, "spacing": "uniform", "zeta": 0.5},
    )
    assert bench.split_method("ddrm") == ("ddrm", {})
    for bad in ("diffpir", "diffpir:lam", "foo:lam=1"):
        with pytest.raises(SystemExit, match="--variant"):
            bench.parse_variant(bad)
    prior = tiny_prior()
    op = invgen.operator("blur", kernel="gaussian", sigma=1.6, size=25, noise=invgen.noise("gaussian", std=0.01))
    y = op.measure(torch.rand(1, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    kw = {"samples": 1, "steps": 3, "seed": 0}
    variant, nfe, _ = bench.run_method("diffpir(lam=28,spacing=uniform)", prior, op, y, **kw)
    direct = invgen.solve(y, op, prior, solver="diffpir", n_samples=1, seed=0, steps=3, lam=28.0, spacing="uniform")
    default, _, _ = bench.run_method("diffpir", prior, op, y, **kw)
    assert nfe == 3 and torch.equal(variant, direct.samples) and not torch.equal(variant, default)
    assert "has_svd" in bench.supports("ddrm(eta=0.5)", op) and bench.supports("diffpir(lam=28)", op) is None


def test_clipped_denoiser_clamps_and_delegates(bench):
    prior = tiny_prior()
    clipped = bench.ClippedDenoiser(prior)
    x = torch.rand(1, 1, 16, 16) * 3 - 1
    out = clipped.denoise(x, 2.0)
    torch.testing.assert_close(out, prior.denoise(x, 2.0).clamp(0, 1))
    assert clipped.capabilities == prior.capabilities and clipped.schedule is prior.schedule
    op = invgen.operator("inpaint", mask="box", noise=invgen.noise("gaussian", std=0.05))
    post = invgen.solve(op.measure(torch.rand(1, 1, 16, 16)), op, clipped, solver="ddnm", n_samples=2, seed=0, steps=3)
    assert post.nfe == 3 and bool(torch.isfinite(post.samples).all())


def test_denoiser_speed_reports_time_and_memory(bench):
    prior = tiny_prior()
    prior.tile, prior.tile_overlap = 16, 8
    rows = bench.denoiser_speed(prior, [(12, 14), (24, 40)], torch.device("cpu"))
    # a size the prior tiles is also measured as one whole-image call
    assert [r["size"] for r in rows] == [[12, 14], [24, 40], [24, 40]]
    assert [r["tiled"] for r in rows] == [False, True, False]
    assert prior.tile == 16
    for r in rows:
        assert r["seconds"] > 0 and r["s_per_mp"] == pytest.approx(r["seconds"] / (r["size"][0] * r["size"][1] / 1e6))
        assert math.isfinite(r["peak_rss_above_mb"])


def test_bicubic_baseline_and_lr_match_the_published_protocol(bench, data_dir):
    """Set5 (all 5 images): our bicubic baseline reproduces the published bicubic PSNR/SSIM (VDSR Table 3) to
    0.01 dB / 0.0002, and our LR images match the MATLAB LR_bicubic files to 8-bit rounding."""
    for s in (2, 4):
        cell = bench.sr_cells(["set5"], [s], 0, 0)[0]
        assert len(cell["items"]) == 5
        psnr, ssim = [], []
        for item in cell["items"]:
            y = item["op"](item["truth"][None])
            m, _ = bench.score(bench.bicubic_upsample(y, s)[None], item["truth"], s, use_lpips=False)
            psnr.append(m["psnr"])
            ssim.append(m["ssim"])
        pub_psnr, pub_ssim = bench.PUBLISHED_BICUBIC["set5"][s]
        assert np.mean(psnr) == pytest.approx(pub_psnr, abs=0.01)
        assert np.mean(ssim) == pytest.approx(pub_ssim, abs=2e-4)
    check = bench.check_sr_operator(data_dir, [2, 4])
    for s in ("x2", "x4"):
        assert check[s]["images"] == 5
        assert check[s]["y_psnr"] > 60 and check[s]["max_rgb_8bit_diff"] <= 2


def test_main_runs_end_to_end_with_a_tiny_prior(bench, data_dir, tmp_path):
    folder = tmp_path / "prior"
    folder.mkdir()
    prior = tiny_prior()
    (folder / "config.json").write_text(json.dumps(prior.config()))
    export_weights(prior.net, folder)
    out = tmp_path / "out"
    argv = [
        "--prior-path",
        str(folder),
        "--images",
        "1",
        "--steps",
        "2",
        "--samples",
        "2",
        "--sr-crop",
        "48",
        "--crop",
        "48",
        "--speed-sizes",
        "24x32",
        "--out",
        str(out),
        "--threads",
        str(torch.get_num_threads()),
    ]
    if not os.environ.get("INVGEN_LPIPS_WEIGHTS"):
        argv.append("--no-lpips")
    assert bench.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert {"prior", "config", "results", "skipped_cells", "checks", "speed", "figures"} <= set(res)
    assert res["config"]["steps"] == 2 and res["config"]["samples"] == 2
    cells = res["results"]
    expected = {
        "set5-x2",
        "set5-x4",
        "set14-x2",
        "set14-x4",
        "bsd68-ddnm",
        "bsd68-freeform",
        "bsd68-text",
        "bsd68-gaussian",
    }
    assert expected <= set(cells)
    # Levin09.mat is a MATLAB v7.3 file: present, or left out with the reason (h5py missing)
    assert "bsd68-levin" in cells or "levin" in res["skipped_cells"]["deblur"]
    for key, cell in cells.items():
        methods = cell["methods"]
        for name in ("ddnm", "diffpir", "pigdm") if cell["family"] != "deblur" else ("diffpir",):
            assert methods[name]["nfe"] == 2, (key, name)
        for name, m in methods.items():
            assert len(m["per_image"]["psnr"]) == 1 and math.isfinite(m["psnr"]), (key, name)
            assert m["seconds"] >= 0
            assert (m["lpips"] is None) == (not res["config"]["lpips"])
    assert set(cells["set5-x2"]["methods"]) == {"bicubic", "pinv", "tikhonov", "ddrm", "ddnm", "diffpir", "pigdm"}
    assert cells["set5-x2"]["published_bicubic"] == [33.66, 0.9299]
    assert cells["set5-x4"]["shave"] == 4 and cells["bsd68-text"]["noise_std"] == 0.01
    assert 0.1 <= cells["bsd68-freeform"]["images"][0]["missing"] <= 0.5  # freeform_mask's default hole range
    for solver in ("ddrm", "ddnm", "pigdm"):
        assert "has_svd" in cells["bsd68-gaussian"]["skipped"][solver]
    assert res["speed"][0]["size"] == [24, 32]
    assert set(res["figures"]) == {"sr", "inpaint", "deblur"}
    assert all((out / name).is_file() for name in res["figures"].values())
    md = (out / "results.md").read_text()
    assert "| bicubic (published) |" in md and "33.66 / 0.9299" in md and "## Deblurring" in md
