"""The shipped diffusion weights load by name and their denoiser clearly beats doing nothing and the Wiener filter."""

from __future__ import annotations

import pytest
import torch

import invgen
from invgen.metrics import psnr
from invgen_plugins.diffusion import WEIGHTS

DATASET = {"diffusion-mnist": "mnist", "diffusion-fashion-mnist": "fashion-mnist", "diffusion-cifar10": "cifar10"}
SHIPPED = sorted(p.name for p in WEIGHTS.glob("*") if (p / "model.safetensors").exists() and p.name in DATASET)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_registers_and_denoises(name, data_dir):
    from invgen.data import load_dataset
    from invgen_plugins.analytic.gaussian import Gaussian

    entry = invgen.registry.get("priors", name)
    assert set(entry.meta["capabilities"]) == {"denoiser", "score"}
    prior = invgen.prior(name)
    assert not prior.net.training and not any(q.requires_grad for q in prior.net.parameters())  # frozen, eval
    train, _ = load_dataset(DATASET[name], "train")
    test, _ = load_dataset(DATASET[name], "test")
    x = test[:32]
    noisy = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        den = prior.denoise(noisy, 0.2)
    wiener = Gaussian.fit(train[:5000], shrinkage=1e-3).denoise(noisy.double(), 0.2).float()
    p_learned = float(psnr(den.clamp(0, 1), x).mean())
    p_wiener = float(psnr(wiener.clamp(0, 1), x).mean())
    p_noisy = float(psnr(noisy.clamp(0, 1), x).mean())
    assert p_learned > p_noisy + 8.0
    assert p_learned > p_wiener + 2.0, (p_learned, p_wiener)


def test_pigdm_with_the_learned_prior_stays_finite_and_beats_pinv(data_dir):
    """Regression: unclipped PiGDM diverged (NaN) with diffusion-mnist from sigma_max ~ 78; the clip keeps it sane."""
    from invgen.data import load_dataset
    from invgen.metrics import lpips

    prior = invgen.prior("diffusion-mnist")
    x = load_dataset("mnist", "test")[0][:4]
    op = invgen.operator("superres", scale=4, noise={"name": "gaussian", "std": 0.05})
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    post = invgen.solve(y, op, prior, solver="pigdm", steps=20, n_samples=2, seed=0)
    assert torch.isfinite(post.samples).all() and post.nfe == 20
    d_pigdm = float(lpips(post.samples.clamp(0, 1).reshape(-1, 1, 32, 32), x.repeat(2, 1, 1, 1)).mean())
    d_pinv = float(lpips(op.pinv(y).clamp(0, 1), x).mean())
    assert d_pigdm < 0.5 * d_pinv, (d_pigdm, d_pinv)
    with pytest.raises(invgen.errors.DivergenceError, match="pigdm") as err:
        invgen.solve(y, op, prior, solver="pigdm", steps=20, clip=False, seed=0)
    assert "clip" in str(err.value) or "step" in str(err.value), str(err.value)


def test_bfloat16_network_calls_agree_with_float32(data_dir):
    """`precision="bfloat16"` runs only the network in autocast: the denoiser stays float32, within 0.02 of the float32
    one on [0, 1] images and within 0.02 dB of its PSNR; gradients (DPS, PiGDM) flow through it."""
    from invgen.data import load_dataset

    p32 = invgen.prior("diffusion-mnist")
    p16 = invgen.prior("diffusion-mnist", precision="bfloat16")
    assert (p32.precision, p16.precision) == ("float32", "bfloat16")
    x = load_dataset("mnist", "test")[0][:64]
    noisy = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = p32.denoise(noisy, 0.2), p16.denoise(noisy, 0.2)
    assert b.dtype == torch.float32 and float((a - b).abs().max()) < 0.02
    gap = float(psnr(a.clamp(0, 1), x).mean() - psnr(b.clamp(0, 1), x).mean())
    assert abs(gap) < 0.02, gap
    xg = noisy[:2].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p16.denoise(xg, 0.2).sum(), xg)
    assert g.dtype == torch.float32 and torch.isfinite(g).all() and float(g.abs().sum()) > 0
    with pytest.raises(ValueError, match="precision must be one of"):
        p16.set_precision("fp8")
    with pytest.raises(ValueError, match="needs a CUDA prior"):
        p16.set_precision("float16")
    assert p16.set_precision("float32").precision == "float32"
