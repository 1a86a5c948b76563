"""``invgen solve``: files written, metrics against a reference, clear errors; the edge F1 of sketch-to-image."""

from __future__ import annotations

import json

import pytest
import torch

import invgen
from invgen.cli import main
from invgen.metrics import edge_f1
from invgen.tasks import save_png


@pytest.fixture
def digit(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("INVGEN_DATA", str(data_dir))
    path = tmp_path / "digit.png"
    save_png(invgen.dataset("mnist").image(0), path)
    return path


def test_solve_degrade_writes_samples_mean_std_sheet_and_metrics(digit, tmp_path, capsys):
    out = tmp_path / "sr"
    args = ["solve", "--image", str(digit), "--task", "sr", "--prior", "diffusion-mnist", "--solver", "ddrm"]
    assert main([*args, "--steps", "5", "-n", "3", "--out", str(out), "--degrade"]) == 0
    assert "ddrm on diffusion-mnist: 3 samples, 5 NFE" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "contact_sheet.png", "info.json", "mean.png", "metrics.json", "observation.png",
        "sample_000.png", "sample_001.png", "sample_002.png", "std.png",
    ]  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["mean"]) == {"psnr", "ssim", "lpips"} and len(m["samples"]["psnr"]) == 3
    assert m["mean"]["psnr"] > 12.0 and 0 < m["diversity"]["lpips"] < 0.5
    info = json.loads((out / "info.json").read_text())
    assert info["operator"]["name"] == "superres" and info["operator"]["scale"] == 4 and info["nfe"] == 5
    # the observation (8x8) solved without --degrade, scored against the reference, gives the same numbers
    obs = out / "observation.png"
    from invgen.data.sets import read_image

    assert tuple(read_image(obs).shape) == (1, 8, 8)
    out2 = tmp_path / "sr2"
    assert (
        main([*args, "--steps", "5", "-n", "3", "--out", str(out2), "--image", str(obs), "--reference", str(digit)])
        == 0
    )


def test_solve_errors_say_what_fits(digit, tmp_path, capsys):
    rgb = tmp_path / "rgb.png"
    save_png(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), rgb)
    base = ["solve", "--prior", "diffusion-mnist", "--out", str(tmp_path / "o")]
    assert main([*base, "--image", str(rgb), "--task", "sr"]) == 2
    assert "the sr task observes 1-channel images for this prior, the file has 3" in capsys.readouterr().err
    assert main([*base, "--image", str(digit), "--task", "sr"]) == 2  # a 32x32 observation means a 128x128 image
    assert "means a 128x128 image with 1 channel(s), but the prior is defined on 32x32" in capsys.readouterr().err
    assert main([*base, "--image", str(digit), "--task", "colorize"]) == 2
    assert "colorize needs a colour (3-channel) prior" in capsys.readouterr().err
    assert main([*base, "--image", str(digit), "--task", "inpaint", "--mask", "nosuchfile.png", "--degrade"]) == 2
    assert "expected box, random, freeform, half or a mask image file" in capsys.readouterr().err


def test_sketch_task_reports_edge_agreement(digit, tmp_path):
    """Against the clean binary sketch: make_sketch of the truth with --degrade, the drawing itself without."""
    from invgen.data.sets import read_image
    from invgen.metrics import edge_chamfer
    from invgen.operators.sketch import make_sketch

    out = tmp_path / "sk"
    args = ["solve", "--task", "sketch", "--prior", "diffusion-mnist", "--solver", "dps", "--steps", "5", "-n", "2"]
    assert main([*args, "--image", str(digit), "--out", str(out), "--degrade"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["edge_sketch"] == "make_sketch(reference)" and "edge_f1_soft" not in m["samples"]
    assert len(m["samples"]["edge_f1"]) == 2 and all(0 <= v <= 1 for v in m["samples"]["edge_f1"])
    assert len(m["samples"]["edge_chamfer"]) == 2 and all(v >= 0 for v in m["samples"]["edge_chamfer"])
    truth = read_image(digit)[None]
    sample = read_image(out / "sample_000.png")[None]  # 8-bit PNG of the scored sample: Canny edges may differ a bit
    assert m["samples"]["edge_f1"][0] == pytest.approx(float(edge_f1(sample, make_sketch(truth))[0]), abs=0.05)
    assert m["mean"]["edge_f1"] > 0 and m["mean"]["edge_chamfer"] >= 0

    drawing = tmp_path / "drawing.png"  # a user's drawing: thin binary lines, no reference
    save_png(make_sketch(truth)[0], drawing)
    out2 = tmp_path / "sk2"
    assert main([*args, "--image", str(drawing), "--out", str(out2)]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["edge_sketch"] == "the observation (drawing) > 0.5"
    assert set(m2["mean"]) == {"edge_f1", "edge_chamfer"}  # no reference: no PSNR
    sample = read_image(out2 / "sample_001.png")[None]
    want = float(edge_chamfer(sample, make_sketch(truth))[0])
    assert m2["samples"]["edge_chamfer"][1] == pytest.approx(want, abs=0.3)


def test_edge_f1_closed_cases():
    from invgen.operators.sketch import make_sketch

    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1
    sketch = make_sketch(x)
    assert float(edge_f1(x, sketch)[0]) == pytest.approx(1.0)
    shifted = torch.roll(x, 1, dims=-1)
    assert float(edge_f1(shifted, sketch, tolerance=1)[0]) == pytest.approx(1.0)
    assert float(edge_f1(shifted, sketch, tolerance=0)[0]) < 0.7
    assert float(edge_f1(torch.zeros_like(x), sketch)[0]) == 0.0


def test_solve_offline_without_lpips_weights_skips_lpips_and_says_so(digit, tmp_path, monkeypatch):
    """A build without the shipped AlexNet trunk, no INVGEN_LPIPS_WEIGHTS and no cached torchvision AlexNet:
    metrics.json has no LPIPS (and no download)."""
    import importlib

    lpips_module = importlib.import_module("invgen.metrics.lpips")  # the module (invgen.metrics.lpips is the function)
    monkeypatch.delenv("INVGEN_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    from invgen.metrics import lpips_available

    assert lpips_available()  # the shipped trunk: LPIPS needs no setup
    monkeypatch.setattr(lpips_module, "SHIPPED_WEIGHTS", tmp_path / "not-shipped.safetensors")
    assert not lpips_available()
    out = tmp_path / "offline"
    args = ["solve", "--image", str(digit), "--task", "sr", "--prior", "diffusion-mnist", "--solver", "ddrm"]
    assert main([*args, "--steps", "3", "-n", "2", "--out", str(out), "--degrade"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["mean"]) == {"psnr", "ssim"} and "INVGEN_LPIPS_WEIGHTS" in m["skipped"]["lpips"]
    assert set(m["diversity"]) == {"l2"} and m["diversity"]["l2"] > 0
    (tmp_path / "empty-hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty-hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    assert lpips_available()
    monkeypatch.setenv("INVGEN_LPIPS_WEIGHTS", "/some/file.safetensors")
    assert lpips_available() and not lpips_available("vgg")


def test_prior_options_reach_the_prior(digit, tmp_path, capsys):
    """`--prior-option precision=bfloat16`: the same seed gives nearly the same posterior as float32 (the network's
    rounding only), info.json records the option, and a bad value is a clear error, not a traceback."""
    base = ["solve", "--image", str(digit), "--task", "inpaint", "--prior", "diffusion-mnist", "--solver", "ddrm"]
    base += ["--steps", "5", "-n", "2", "--degrade"]
    assert main([*base, "--out", str(tmp_path / "f32")]) == 0
    assert main([*base, "--out", str(tmp_path / "bf16"), "--prior-option", "precision=bfloat16"]) == 0
    a = json.loads((tmp_path / "f32" / "metrics.json").read_text())["mean"]["psnr"]
    b = json.loads((tmp_path / "bf16" / "metrics.json").read_text())["mean"]["psnr"]
    assert abs(a - b) < 0.5, (a, b)
    info = json.loads((tmp_path / "bf16" / "info.json").read_text())
    assert info["prior_options"] == {"precision": "bfloat16"}
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--prior-option", "precision=fp8"]) == 2
    assert "precision must be one of" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), "--prior-option", "precision"]) == 2
    assert "--prior-option expects KEY=VALUE" in capsys.readouterr().err
