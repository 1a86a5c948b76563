"""The ``adm`` prior (a converted guided-diffusion checkpoint) in invgen's convention, the ``invgen convert`` and
``--prior NAME:PATH`` commands, and the ``ffhq256`` suite run end to end on 2 images with a tiny random ADM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_adm import reference

import invgen
from invgen.bench.runner import run_suite
from invgen.bench.store import Store
from invgen.bench.suite import find_suite, parse_suite
from invgen.cli import main
from invgen_plugins.diffusion.adm import alphas_cumprod, resolve_config
from invgen_plugins.diffusion.adm_convert import convert_adm

TINY = {
    "image_size": 32,
    "num_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [8],
    "num_head_channels": 16,
    "learn_sigma": True,
}
# the ffhq256 architecture at a tiny width: 256x256 inputs, six levels, attention at 16
TINY256 = {
    **TINY,
    "image_size": 256,
    "num_channels": 32,
    "channel_mult": [1, 1, 1, 1, 2, 2],
    "attention_resolutions": [16],
}


def _convert(root, config, name="adm"):
    root.mkdir(parents=True, exist_ok=True)
    ref = reference(config)
    (root / "arch.json").write_text(json.dumps(config))
    torch.save(ref.state_dict(), root / "ref.pt")
    return ref, convert_adm(root / "ref.pt", root / name, root / "arch.json", command="pytest")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("adm"), TINY)


def test_denoise_equals_the_reference_networks_tweedie_estimate(tiny):
    ref, folder = tiny
    prior = invgen.prior("adm", path=str(folder))
    assert prior.capabilities == {"denoiser", "score"} and prior.image_shape == (3, 32, 32)
    abar = alphas_cumprod(resolve_config(TINY)["schedule"])
    gen = torch.Generator().manual_seed(0)
    for t in (0, 100, 250, 500, 999):
        s = math.sqrt((1 - abar[t]) / abar[t])  # the VE level of timestep t on [-1, 1]
        x0 = torch.rand(2, 3, 32, 32, generator=gen)
        x = x0 + (s / 2) * torch.randn(x0.shape, generator=gen)  # invgen's VE state on [0, 1]
        xt = (2 * x - 1) * math.sqrt(abar[t])  # guided-diffusion's VP state of the same image
        with torch.no_grad():
            eps = ref(xt, torch.full((2,), float(t)))[:, :3]
            want = ((xt - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t]) + 1) / 2
            got = prior.denoise(x, torch.full((2,), s / 2, dtype=torch.float64))
        err = float((got - want).abs().max() / want.abs().max())
        assert err < 1e-4, (t, err)
        assert prior.timestep(s / 2).item() == pytest.approx(t, abs=1e-6)
    assert prior.learned_variance is True  # the variance half was there, and dropped
    # the solvers' timestep grid follows the checkpoint's linear schedule
    assert prior.schedule == invgen.priors.VPSchedule(1e-4, 0.02, 1000)


def test_solvers_run_with_the_adm_prior_and_class_labels_are_checked(tiny, tmp_path):
    _, folder = tiny
    prior = invgen.prior("adm", path=str(folder))
    op = invgen.operator("inpaint", mask="box", box_size=12, noise=invgen.noise("gaussian", std=0.05))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = op.measure(x, generator=torch.Generator().manual_seed(2))
    for solver in ("ddrm", "dps"):
        post = invgen.solve(y, op, prior, solver=solver, steps=4, n_samples=2, seed=0, progress=False)
        assert post.samples.shape == (2, 1, 3, 32, 32) and bool(torch.isfinite(post.samples).all())
    with pytest.raises(ValueError, match="unconditional network"):
        invgen.prior("adm", path=str(folder), class_label=3)
    cond = {**TINY, "num_classes": 10}
    _, cfolder = _convert(tmp_path / "cond", cond)
    with pytest.raises(ValueError, match=r"class-conditional network \(10 classes\): give class_label"):
        invgen.prior("adm", path=str(cfolder))
    labelled = invgen.prior("adm", path=str(cfolder), class_label=7)
    assert labelled.denoise(x, 0.3).shape == x.shape and labelled.config()["class_label"] == 7


def test_convert_command_writes_the_folder_and_refuses_pickled_code(tmp_path, capsys):
    ref = reference(TINY)
    torch.save(ref.state_dict(), tmp_path / "ref.pt")
    (tmp_path / "arch.json").write_text(json.dumps(TINY))
    argv = ["convert", "adm", str(tmp_path / "ref.pt"), "--config", str(tmp_path / "arch.json"), "--out"]
    assert main([*argv, str(tmp_path / "out")]) == 0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["family"] == "adm" and cfg["parametrization"] == "eps" and len(cfg["source"]["sha256"]) == 64
    assert "invgen convert adm" in cfg["command"]
    torch.save({"model": ref.state_dict(), "hook": print}, tmp_path / "evil.pt")  # a pickled global: refused
    argv[2] = str(tmp_path / "evil.pt")
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "evil")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights_only=True" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "evil").exists() or not any((tmp_path / "evil").iterdir())
    assert main(["plugins"]) == 0
    assert "Converters\n  adm" in capsys.readouterr().out


def test_solve_command_takes_prior_name_colon_path(tiny, tmp_path, capsys):
    _, folder = tiny
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "face.png")
    args = ["solve", "--image", str(tmp_path / "face.png"), "--task", "inpaint", "--degrade", "--box-size", "0.4"]
    args += ["--solver", "ddrm", "--steps", "3", "-n", "2", "--no-progress", "--out"]
    assert main([*args, str(tmp_path / "out"), "--prior", f"adm:{folder}"]) == 0
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["prior"] == "adm" or info["prior"].startswith("adm")
    assert (tmp_path / "out" / "sample_001.png").is_file()
    capsys.readouterr()
    bad = [*args, str(tmp_path / "out2"), "--prior", f"adm:{folder}", "--prior-option", f"path={folder}"]
    assert main(bad) == 2
    assert "both give a path" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "out3"), "--prior", "adm:"]) == 2
    assert "expected NAME or NAME:PATH" in capsys.readouterr().err


def test_ffhq256_suite_runs_on_two_images_with_a_tiny_adm(tmp_path, data_dir):
    _, folder = _convert(tmp_path / "w", TINY256, name="ffhq256-adm")
    text = find_suite("ffhq256").read_text()
    doc = yaml.safe_load(text)
    assert doc["datasets"][0]["priors"] == [{"name": "adm", "options": {"path": "ffhq256-adm"}}]
    assert [t["noise"] for t in doc["tasks"]] == [0.025] * 5  # the DPS paper's 0.05 on [-1, 1]
    doc["datasets"][0]["count"] = 2
    fast = {"dps-1000": {"steps": 3}, "ddrm-20": {"steps": 3}, "diffpir-100": {"steps": 3, "spacing": "uniform"}}
    fast["daps-1k"] = {"annealing_steps": 2, "ode_steps": 1, "langevin_steps": 2}
    for s in doc["solvers"]:
        if isinstance(s, dict):
            s["options"] = fast[s["label"]]
    prior = {"name": "adm", "options": {"path": str(folder)}}
    suite = parse_suite(yaml.safe_dump(doc), "ffhq256.yaml", prior=prior)
    assert len(suite.cells) == 23 and len(suite.skipped) == 2  # DDRM needs an SVD: not on the blurs
    db = tmp_path / "ffhq.sqlite"
    summary = run_suite(suite, db, data_dir=tmp_path / "frozen", progress=False)
    assert summary.images_run == 23 * 2
    with Store(db) as st:
        rows = st.counts()
    assert rows["cells"] == 23 and rows["results"] == 23 * 2 * 2 * 3  # (1 sample + mean) x psnr/ssim/lpips
