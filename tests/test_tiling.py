"""Tiled application of a network (invgen.priors.tiling): exact for local networks, bounded tile sizes."""

from __future__ import annotations

import itertools

import pytest
import torch

import invgen
from invgen.errors import RangeError
from invgen.priors.tiling import tile_starts, tiled


def test_tile_starts_cover_the_image():
    assert tile_starts(100, 128, 96) == [0]
    assert tile_starts(300, 128, 96) == [0, 96, 172]
    for n in (129, 200, 481, 512):
        s = tile_starts(n, 128, 96)
        assert s[0] == 0 and s[-1] == n - 128 and all(b - a <= 96 for a, b in itertools.pairwise(s))


@pytest.mark.parametrize("shape", [(2, 3, 70, 45), (1, 1, 64, 64), (1, 2, 33, 100)])
def test_tiled_equals_the_whole_call_for_a_local_network(shape):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(shape[1], 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(4, 2, 3, padding=1)
    ).double()  # receptive field radius 2
    x = torch.randn(*shape, dtype=torch.float64)
    sizes = []

    def fn(t):
        sizes.append(tuple(t.shape[-2:]))
        return net(t)

    with torch.no_grad():
        whole = net(x)
        out = tiled(fn, x, tile=24, overlap=12, margin=3)
    torch.testing.assert_close(out, whole, rtol=1e-12, atol=1e-12)
    assert all(h <= 24 and w <= 24 for h, w in sizes) and len(sizes) > 1
    # too small a margin for the receptive field is no longer exact (the test can fail)
    with torch.no_grad():
        assert (tiled(net, x, tile=24, overlap=12, margin=0) - whole).abs().max() > 1e-6


def test_tiled_options_are_checked():
    x = torch.zeros(1, 1, 50, 50)
    with pytest.raises(RangeError, match="2 \\* margin < overlap < tile"):
        tiled(lambda t: t, x, tile=16, overlap=16)
    with pytest.raises(RangeError):
        tiled(lambda t: t, x, tile=16, overlap=8, margin=4)


def test_tile_is_a_factory_option_of_the_shipped_natural_priors():
    if "diffusion-natural-rgb" not in invgen.list_priors():
        pytest.skip("diffusion-natural-rgb not installed")
    assert invgen.prior("diffusion-natural-rgb", tile=256).tile == 256  # --prior-option tile=256
    with pytest.raises(ValueError, match="tile: expected an integer number of pixels >= 64, got 3"):
        invgen.prior("diffusion-natural-rgb", tile=3)
