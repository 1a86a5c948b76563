"""VAE plugin: the discretised-logistic likelihood, the bounds (ELBO <= IWAE_K <= log p, checked against quadrature on
a tiny model), the shipped weights (ELBO, IWAE, reconstructions), exact resume of the trainer, and registration."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import invgen
from invgen.errors import RangeError, ShapeError
from invgen_plugins.vae import WEIGHTS
from invgen_plugins.vae.likelihood import discretized_logistic_log_prob, logistic_clamped_mean
from invgen_plugins.vae.model import VAEPrior
from invgen_plugins.vae.net import ConvVAE, VAEConfig
from invgen_plugins.vae.train import add_arguments, run

SHIPPED = sorted(p.name for p in WEIGHTS.glob("*") if (p / "model.safetensors").exists())
DATASET = {"vae-mnist": "mnist", "vae-fashion-mnist": "fashion-mnist"}
# Mean ELBO (nats per image, 1 sample) of the shipped weights on the first 256 test images, measured minus 2 nats,
# and the PSNR margin of decode(encode(x)) over the training mean image on those images, measured minus 1 dB.
# Measured: ELBO -707.5 / -1832.5 nats; PSNR 25.57 dB vs 13.28 dB (MNIST), 22.48 dB vs 12.03 dB (Fashion-MNIST).
ELBO_FLOOR = {"vae-mnist": -709.5, "vae-fashion-mnist": -1834.5}
PSNR_MARGIN = {"vae-mnist": 11.3, "vae-fashion-mnist": 9.4}
# latent_map (200 Adam steps), x4 super-resolution of 4 MNIST test digits with noise 0.05: its PSNR over A^+ y's,
# measured 20.67 - 15.29 dB, minus 1 dB.
LATENT_MAP_MARGIN = 4.4

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _tiny(latent_dim: int = 2, channels: int = 1, size: int = 4, seed: int = 0) -> VAEPrior:
    torch.manual_seed(seed)
    net = ConvVAE(VAEConfig(in_channels=channels, image_size=size, latent_dim=latent_dim, channels=(4,)))
    with torch.no_grad():  # a decoder that depends visibly on z, so the bounds differ
        net.decoder[-1].weight.normal_(0, 0.3)
    return VAEPrior(net.double().requires_grad_(False), name="tiny")


@pytest.mark.parametrize(("loc", "log_scale"), [(0.3, -3.0), (-0.5, -6.0), (1.4, -1.0), (0.5, -8.0), (0.002, -7.9)])
def test_discretized_logistic_is_a_distribution_on_256_levels_with_the_closed_form_mean(loc, log_scale):
    lp = discretized_logistic_log_prob(LEVELS, torch.full_like(LEVELS, loc), torch.full_like(LEVELS, log_scale))
    assert float(lp.max()) <= 0.0
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)
    exact_mean = float((lp.exp() * LEVELS).sum())
    closed = float(logistic_clamped_mean(torch.tensor(loc), torch.tensor(log_scale)))
    assert 0.0 <= closed <= 1.0 and abs(closed - exact_mean) <= 0.5 / 255 + 1e-6


def test_shapes_ranges_and_clear_errors():
    prior = _tiny(latent_dim=3, channels=3, size=8).float()
    assert prior.latent_shape == (3,) and prior.image_shape == (3, 8, 8)
    assert prior.capabilities == {"generator", "log_density"} and prior.log_prob_kind == "bound"
    x = prior.decode(4 * torch.randn(5, 3))
    assert x.shape == (5, 3, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert prior.encode(torch.rand(2, 3, 8, 8)).shape == (2, 3)
    assert prior.log_prob(torch.rand(2, 3, 8, 8)).shape == (2,)
    s = prior.sample(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, prior.sample(4, generator=torch.Generator().manual_seed(0)))
    noisy = prior.sample(4, generator=torch.Generator().manual_seed(0), mean=False)
    assert torch.equal(noisy, torch.round(noisy * 255) / 255)
    with pytest.raises(ShapeError, match=r"\(B, 3\)"):
        prior.decode(torch.zeros(2, 4))
    with pytest.raises(RangeError, match=r"\[0, 1\]"):
        prior.log_prob(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ShapeError, match="channel"):
        prior.encode(torch.rand(1, 1, 8, 8))
    z = torch.zeros(2, 3, requires_grad=True)
    prior.decode(z).sum().backward()  # latent solvers differentiate through decode
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_elbo_below_iwae_below_log_p_by_quadrature():
    """On a 4x4 model with a 2-d latent, log p(x) is a quadrature over z; E[IWAE_K] rises with K towards it.

    The decoder is made to depend strongly on z (sharp likelihood) while the encoder stays random, so q(z | x) is a
    poor proposal and the gaps are several nats; means over replicates carry their standard errors.
    """
    prior = _tiny()
    with torch.no_grad():
        prior.net.decoder[0].weight.mul_(3.0)
        prior.net.decoder[-1].bias[1:] = -3.0
    x = torch.round(torch.rand(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 255) / 255
    t = torch.linspace(-6, 6, 121, dtype=torch.float64)
    zz = torch.cartesian_prod(t, t)
    log_prior = -0.5 * (zz**2).sum(1) - math.log(2 * math.pi) + 2 * math.log(float(t[1] - t[0]))
    with torch.no_grad():
        log_p = torch.stack(
            [torch.logsumexp(prior.log_likelihood(xi.expand(len(zz), 1, 4, 4), zz) + log_prior, 0) for xi in x]
        )
        reps = 30
        xr = x.repeat(reps, 1, 1, 1)
        gen = torch.Generator().manual_seed(0)
        runs = {"elbo": prior.elbo(xr, generator=gen).reshape(reps, 4)}
        runs.update({k: prior.iwae(xr, k, generator=gen).reshape(reps, 4) for k in (1, 10, 100)})
    mean = {k: v.mean(0) for k, v in runs.items()}
    se = {k: v.std(0) / math.sqrt(reps) for k, v in runs.items()}
    assert bool((mean["elbo"] <= log_p + 3 * se["elbo"]).all())
    assert bool((mean[100] <= log_p + 3 * se[100]).all()), (mean[100], log_p)
    assert abs(float(mean["elbo"].mean() - mean[1].mean())) < 3 * float(se[1].mean())  # the same expectation
    assert float(mean[1].mean()) < float(mean[10].mean()) < float(mean[100].mean()) <= float(log_p.mean())
    gap_elbo, gap_100 = float((log_p - mean["elbo"]).mean()), float((log_p - mean[100]).mean())
    assert gap_elbo > 1.0 and gap_100 < 0.5 * gap_elbo, (gap_elbo, gap_100)
    assert prior.log_prob(x, k=10, generator=torch.Generator().manual_seed(3)).shape == (4,)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_registers_and_its_bounds_are_pinned(name, data_dir):
    from invgen.data import load_dataset
    from invgen.metrics import psnr

    entry = invgen.registry.get("priors", name)
    assert set(entry.meta["capabilities"]) == {"generator", "log_density"}
    assert entry.meta["log_prob_kind"] == "bound" and entry.meta["datasets"] == (DATASET[name],)
    assert entry.meta["image_shape"] == (1, 32, 32)
    prior = invgen.prior(name)
    assert isinstance(prior, VAEPrior) and prior.latent_shape == (32,)
    x = load_dataset(DATASET[name], "test")[0][:256]
    with torch.no_grad():
        elbo = prior.log_prob(x, generator=torch.Generator().manual_seed(0))
        assert float(elbo.mean()) > ELBO_FLOOR[name], float(elbo.mean())
        # the importance-weighted bound rises with K on average (fixed seed, 32 images)
        iw = [float(prior.iwae(x[:32], k, generator=torch.Generator().manual_seed(1)).mean()) for k in (1, 10, 100)]
        assert float(elbo[:32].mean()) < iw[2] and iw[0] < iw[1] < iw[2], (float(elbo[:32].mean()), iw)
        rec = prior.reconstruct(x)
        z = prior.encode(x)
        assert z.shape == (256, 32) and rec.shape == x.shape and 0 <= float(rec.min()) <= float(rec.max()) <= 1
        mean_image = load_dataset(DATASET[name], "train")[0][:10000].mean(0, keepdim=True).expand_as(x)
        margin = float(psnr(rec, x).mean() - psnr(mean_image, x).mean())
        assert margin > PSNR_MARGIN[name], margin
        s = prior.sample(8, generator=torch.Generator().manual_seed(0))
        assert s.shape == (8, 1, 32, 32) and 0 <= float(s.min()) <= float(s.max()) <= 1


@pytest.mark.skipif("latent_map" not in invgen.list_solvers(), reason="the latent_map solver is not registered")
def test_latent_map_with_the_vae_prior_beats_the_pseudo_inverse(data_dir):
    from invgen.data import load_dataset
    from invgen.metrics import psnr

    prior = invgen.prior("vae-mnist")
    x = load_dataset("mnist", "test")[0][:4]
    op = invgen.operator("superres", scale=4, noise={"name": "gaussian", "std": 0.05})
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    post = invgen.solve(y, op, prior, solver="latent_map", steps=200, seed=0)
    est = post.mean.reshape(x.shape)
    assert torch.isfinite(est).all() and 0 <= float(est.min()) <= float(est.max()) <= 1
    p_map, p_pinv = float(psnr(est, x).mean()), float(psnr(op.pinv(y).clamp(0, 1), x).mean())
    assert p_map > p_pinv + LATENT_MAP_MARGIN, (p_map, p_pinv)


def _args(out, steps, folder):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(
        f"--dataset folder:{folder} --image-size 8 --steps {steps} --batch-size 4 --latent-dim 2 --channels 4,8 "
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
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    cfg = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert cfg["steps_done"] == 4 and cfg["vae"]["latent_dim"] == 2 and cfg["elbo"]["test_images"] == 2
    assert cfg["elbo"]["test_nats"] < 0 and cfg["elbo"]["test_bits_per_dim"] > 0
    prior = VAEPrior.from_pretrained(tmp_path / "resumed")
    assert prior.image_shape == (3, 8, 8) and prior.latent_shape == (2,)
    assert prior.decode(torch.zeros(1, 2)).shape == (1, 3, 8, 8)


def test_trainer_is_registered_by_the_vae_plugin():
    entry = invgen.registry.get("trainers", "vae")
    assert entry.plugin == "vae"
    trainer = entry.create()
    parser = argparse.ArgumentParser()
    trainer.add_arguments(parser)
    args = parser.parse_args(["--dataset", "mnist", "--steps", "10", "--out", "x"])
    assert (args.latent_dim, args.batch_size, args.ema) == (32, 64, 0.999)
