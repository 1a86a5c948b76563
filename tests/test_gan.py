"""GAN plugin: the generator prior (shapes, range, errors, latents differentiable), BatchNorm recalibration, the
trainer (hinge loss; exact resume; best-FD export), registration, and the shipped weights' pinned sample quality."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import invgen
from invgen.errors import ShapeError
from invgen_plugins.gan import WEIGHTS
from invgen_plugins.gan.model import GANPrior
from invgen_plugins.gan.net import Discriminator, GANConfig, Generator
from invgen_plugins.gan.train import add_arguments, recalibrate_batchnorm, run

SHIPPED = sorted(p.name for p in WEIGHTS.glob("*") if (p / "model.safetensors").exists())
DATASET = {"gan-mnist": "mnist", "gan-fashion-mnist": "fashion-mnist"}
# FD-<dataset>-CNN of 1000 samples (seed 0) against the first 2000 test images: measured 2.90 / 6.25, plus 10 %.
FD_CEILING = {"gan-mnist": 3.19, "gan-fashion-mnist": 6.88}
# latent_map (200 Adam steps, 4 restarts), x4 super-resolution of 4 test images with noise 0.05: PSNR over A^+ y's,
# measured 18.01 - 15.29 and 19.02 - 14.62 dB, minus 1 dB.
LATENT_MAP_MARGIN = {"gan-mnist": 1.7, "gan-fashion-mnist": 3.4}


def _tiny(seed: int = 0) -> GANPrior:
    torch.manual_seed(seed)
    net = Generator(GANConfig(in_channels=3, image_size=8, latent_dim=3, channels=(4,)))
    return GANPrior(net.eval().requires_grad_(False), "tiny")


def test_config_validation():
    with pytest.raises(ValueError, match=r"4 \* 2\^len\(channels\) = 32"):
        GANConfig(image_size=28, channels=(8, 8, 8))
    with pytest.raises(ValueError, match="latent_dim"):
        GANConfig(latent_dim=0)
    cfg = GANConfig(in_channels=1, image_size=16, latent_dim=5, channels=(8, 4))
    assert GANConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_shapes_ranges_errors_and_gradients():
    prior = _tiny()
    assert prior.capabilities == {"generator"} and prior.latent_shape == (3,) and prior.image_shape == (3, 8, 8)
    x = prior.decode(5 * torch.randn(6, 3))
    assert x.shape == (6, 3, 8, 8) and 0 <= float(x.min()) <= float(x.max()) <= 1
    one = prior.decode(torch.ones(1, 3))
    torch.testing.assert_close(prior.decode(torch.cat([torch.ones(1, 3), torch.randn(4, 3)]))[:1], one)  # eval BN
    s = prior.sample(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, prior.sample(4, generator=torch.Generator().manual_seed(0)))
    t = prior.sample(200, generator=torch.Generator().manual_seed(1), truncation=0.5)
    assert t.shape == (200, 3, 8, 8)
    with pytest.raises(ShapeError, match=r"\(B, 3\)"):
        prior.decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="truncation"):
        prior.sample(2, truncation=0.0)
    with pytest.raises(ValueError, match="n:"):
        prior.sample(0)
    z = torch.randn(2, 3, dtype=torch.float64).requires_grad_(True)
    out = prior.decode(z)
    assert out.dtype == torch.float64
    out.sum().backward()  # latent solvers differentiate through decode
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_discriminator_is_spectrally_normalised():
    torch.manual_seed(0)
    d = Discriminator(GANConfig(in_channels=1, image_size=8, latent_dim=2, channels=(4,))).eval()
    for _ in range(30):  # power iterations run in training mode
        d.train()(torch.rand(2, 1, 8, 8))
    d.eval()
    for m in d.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            assert abs(float(torch.linalg.matrix_norm(w, ord=2)) - 1.0) < 0.05
    assert d(torch.rand(5, 1, 8, 8)).shape == (5,)


def test_batchnorm_recalibration_gives_the_exact_average_statistics():
    torch.manual_seed(0)
    g = Generator(GANConfig(in_channels=1, image_size=8, latent_dim=4, channels=(6,)))
    g_eval = recalibrate_batchnorm(g, seed=3, batches=4, batch_size=16)
    assert not g_eval.training and g.training  # a copy
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the first BatchNorm's input for the same latents
        h = [g.project[1](g.project[0](torch.randn(16, 4, generator=gen))) for _ in range(4)]
    bn = g_eval.project[2]
    mean = torch.stack([b.mean((0, 2, 3)) for b in h]).mean(0)
    var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in h]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(bn.running_var, var, atol=1e-6, rtol=1e-5)
    assert bn.momentum == 0.1
    assert not torch.allclose(g.project[2].running_mean, mean)  # the original's statistics are untouched


def _args(out, steps, folder):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(
        f"--dataset folder:{folder} --image-size 8 --steps {steps} --batch-size 4 --latent-dim 2 --channels 4 "
        f"--checkpoint-every 2 --eval-images 4 --out {out} --device cpu".split()
    )


def test_trainer_writes_loadable_weights_and_resumes_exactly(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    run(_args(tmp_path / "straight", 4, folder))
    run(_args(tmp_path / "resumed", 2, folder))
    run(_args(tmp_path / "resumed", 4, folder))  # same command with more steps continues from the checkpoint
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and not any(k.startswith("d.") for k in a)  # the generator alone is exported
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ca = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    cb = load_file(str(tmp_path / "resumed" / "checkpoint.safetensors"))
    for k in ca:  # discriminator, optimizer and generator state included
        torch.testing.assert_close(ca[k], cb[k], rtol=0, atol=0, msg=k)
    assert any(k.startswith("model.d.") for k in ca)
    cfg = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert cfg["steps_done"] == 4 and cfg["gan"]["latent_dim"] == 2 and cfg["sample_quality"]["metric"] is None
    prior = GANPrior.from_pretrained(tmp_path / "resumed")
    assert prior.image_shape == (3, 8, 8) and prior.latent_shape == (2,)
    assert prior.decode(torch.zeros(1, 2)).shape == (1, 3, 8, 8)


def test_trainer_is_registered_by_the_gan_plugin():
    entry = invgen.registry.get("trainers", "gan")
    assert entry.plugin == "gan"
    trainer = entry.create()
    parser = argparse.ArgumentParser()
    trainer.add_arguments(parser)
    args = parser.parse_args(["--dataset", "mnist", "--steps", "10", "--out", "x"])
    assert (args.latent_dim, args.batch_size, args.ema, args.channels) == (64, 64, 0.999, "128,64,32")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_registers_and_its_sample_quality_is_pinned(name, data_dir):
    from invgen.data import load_dataset
    from invgen.metrics import psnr
    from invgen.metrics.frechet import frechet_distance

    entry = invgen.registry.get("priors", name)
    assert set(entry.meta["capabilities"]) == {"generator"} and entry.meta["datasets"] == (DATASET[name],)
    assert entry.meta["image_shape"] == (1, 32, 32) and "FD-" in entry.meta["description"]
    prior = invgen.prior(name)
    assert isinstance(prior, GANPrior) and prior.latent_shape == (64,)
    x = load_dataset(DATASET[name], "test")[0]
    s = prior.sample(1000, generator=torch.Generator().manual_seed(0))
    fd = frechet_distance(s, x[:2000], DATASET[name])
    assert fd < FD_CEILING[name], fd
    op = invgen.operator("superres", scale=4, noise={"name": "gaussian", "std": 0.05})
    y = op.measure(x[:4], generator=torch.Generator().manual_seed(0))
    post = invgen.solve(y, op, prior, solver="latent_map", steps=200, restarts=4, seed=0)
    est = post.mean.reshape(x[:4].shape)
    p_map, p_pinv = float(psnr(est, x[:4]).mean()), float(psnr(op.pinv(y).clamp(0, 1), x[:4]).mean())
    assert p_map > p_pinv + LATENT_MAP_MARGIN[name], (p_map, p_pinv)
