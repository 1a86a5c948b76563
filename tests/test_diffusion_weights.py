"""The shipped diffusion weights load by name and their denoiser clearly beats doing nothing and the Wiener filter."""

from __future__ import annotations

import pytest
import torch

import invgen
from invgen.metrics import psnr
from invgen_plugins.diffusion import WEIGHTS

SHIPPED = sorted(p.name for p in WEIGHTS.glob("*") if (p / "model.safetensors").exists())
DATASET = {"diffusion-mnist": "mnist", "diffusion-fashion-mnist": "fashion-mnist", "diffusion-cifar10": "cifar10"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_registers_and_denoises(name, data_dir):
    from invgen.data import load_dataset
    from invgen_plugins.analytic.gaussian import Gaussian

    entry = invgen.registry.get("priors", name)
    assert set(entry.meta["capabilities"]) == {"denoiser", "score"}
    prior = invgen.prior(name)
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
