"""The DnCNN-protocol denoising benchmark (benchmarks/denoise_classic.py): its PSNR and noise against closed forms
and scikit-image, on synthetic images (no data or weights needed)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "denoise_classic.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("denoise_classic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Identity:
    name = "identity"

    def denoise(self, y, sigma):
        return y


class Oracle:
    """Returns the clean image it was given: PSNR is infinite."""

    name = "oracle"

    def __init__(self, clean):
        self.clean = clean

    def denoise(self, y, sigma):
        return self.clean[None]


def test_psnr_8bit_matches_scikit_image(bench):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    assert bench.psnr_8bit(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)
    assert bench.psnr_8bit(a, a) == math.inf


def test_noise_level_and_protocol_on_a_mid_grey_image(bench):
    x = torch.full((1, 128, 128), 128 / 255, dtype=torch.float64)
    res = bench.evaluate(Identity(), [x, x], [15.0, 25.0])
    for s in (15.0, 25.0):
        # rounding to 8 bits adds 1/12 of a grey level's variance; clipping is negligible at mid grey
        expected = 10 * math.log10(255**2 / (s**2 + 1 / 12))
        assert res[s]["noisy_psnr"] == pytest.approx(expected, abs=0.05)
        assert res[s]["psnr"] == res[s]["noisy_psnr"]
        assert len(res[s]["per_image"]) == 2 and res[s]["s_per_mp"] >= 0
    # the same seed for every sigma and set: the two images get different noise, the run is reproducible
    assert res[15.0]["per_image"][0] != res[15.0]["per_image"][1]
    assert bench.evaluate(Identity(), [x], [15.0])[15.0]["psnr"] == res[15.0]["per_image"][0]
    assert bench.evaluate(Oracle(x), [x], [50.0])[50.0]["psnr"] == math.inf
