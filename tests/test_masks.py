"""Inpainting mask generators and loader: ratios, sizes, positions, determinism, files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from invgen.errors import RangeError, ShapeError
from invgen.operators.masks import box_mask, freeform_mask, half_mask, load_mask, random_mask


def _holes(m: torch.Tensor) -> torch.Tensor:
    return (m[0, 0] == 0).nonzero().double()


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.7, 0.9])
def test_random_mask_ratio_is_binomial(ratio):
    n = 64 * 64
    m = random_mask((64, 64), ratio=ratio, seed=11)
    assert m.shape == (1, 1, 64, 64) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    missing = int((m == 0).sum())
    assert abs(missing - ratio * n) <= 4 * math.sqrt(n * ratio * (1 - ratio))  # 4 binomial standard deviations
    assert torch.equal(m, random_mask((64, 64), ratio=ratio, seed=11))
    assert not torch.equal(m, random_mask((64, 64), ratio=ratio, seed=12))
    assert float(random_mask(8, ratio=0.0).min()) == 1.0 and float(random_mask(8, ratio=1.0).max()) == 0.0


def test_box_mask_is_centred_or_seeded():
    m = box_mask(16)
    holes = _holes(m)
    assert len(holes) == 64  # a centred square of half the side
    assert holes.min(0).values.tolist() == [4, 4] and holes.max(0).values.tolist() == [11, 11]
    assert holes.mean(0).tolist() == [7.5, 7.5]
    assert len(_holes(box_mask((20, 30), box_size=(4, 6)))) == 24
    assert _holes(box_mask((20, 30), box_size=(4, 6))).mean(0).tolist() == [9.5, 14.5]
    assert len(_holes(box_mask((20, 30), box_size=0.25))) == 5 * 8  # fractions of each side
    r1 = box_mask(32, box_size=5, position="random", seed=3)
    assert torch.equal(r1, box_mask(32, box_size=5, position="random", seed=3))
    assert len(_holes(r1)) == 25
    positions = {
        tuple(_holes(box_mask(32, box_size=5, position="random", seed=s)).min(0).values.tolist()) for s in range(8)
    }
    assert len(positions) > 4 and all(0 <= p <= 27 for pos in positions for p in pos)
    with pytest.raises(ShapeError, match="a box of 40x40 pixels does not fit an image of 32x32"):
        box_mask(32, box_size=40)
    with pytest.raises(ValueError, match="position: expected 'center' or 'random'"):
        box_mask(32, position="corner")


def test_half_mask_sides():
    assert half_mask((4, 6), "right")[0, 0].tolist() == [[1, 1, 1, 0, 0, 0]] * 4
    assert half_mask((4, 6), "left")[0, 0].tolist() == [[0, 0, 0, 1, 1, 1]] * 4
    top = half_mask((5, 2), "top")[0, 0]
    assert top[:2].sum() == 0 and top[2:].min() == 1
    bottom = half_mask((5, 2), "bottom")[0, 0]
    assert bottom[3:].sum() == 0 and bottom[:3].min() == 1
    with pytest.raises(ValueError, match="side: expected one of left, right, top, bottom"):
        half_mask(4, "middle")


@pytest.mark.parametrize(
    ("size", "hole_range"), [((64, 64), (0.1, 0.5)), ((32, 48), (0.3, 0.4)), ((40, 40), (0.45, 0.5))]
)
def test_freeform_hole_ratio_stays_in_range(size, hole_range):
    ratios = []
    for seed in range(6):
        m = freeform_mask(size, hole_range=hole_range, seed=seed)
        assert m.shape == (1, 1, *size)
        ratio = float((m == 0).double().mean())
        assert hole_range[0] <= ratio <= hole_range[1], (seed, ratio)
        ratios.append(ratio)
    assert len(set(ratios)) > 3  # different seeds, different masks


def test_freeform_is_deterministic_and_made_of_strokes():
    a = freeform_mask((64, 64), seed=5)
    assert torch.equal(a, freeform_mask((64, 64), seed=5))
    assert not torch.equal(a, freeform_mask((64, 64), seed=6))
    # strokes are thick connected curves, not scattered pixels: most holes have a hole neighbour on each side
    hole = (a[0, 0] == 0).numpy()
    inner = hole[1:-1, 1:-1]
    neighbours = hole[:-2, 1:-1] & hole[2:, 1:-1] & hole[1:-1, :-2] & hole[1:-1, 2:]
    assert (neighbours & inner).sum() > 0.5 * inner.sum()
    with pytest.raises(RangeError, match=r"hole_range: expected 0 <= low <= high <= 1"):
        freeform_mask(16, hole_range=(0.5, 0.2))


def test_load_mask_from_png_and_npy(tmp_path, data_dir):
    observed = np.zeros((6, 7), dtype=np.uint8)
    observed[1:4, 2:6] = 255
    Image.fromarray(observed).save(tmp_path / "m.png")
    Image.fromarray(np.stack([observed] * 3, -1)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "m.npy", (observed > 0).astype(np.int64))
    expected = torch.from_numpy(observed > 0).float()[None, None]
    for name in ("m.png", "rgb.png", "m.npy"):
        m = load_mask(tmp_path / name)
        assert m.shape == (1, 1, 6, 7) and torch.equal(m, expected), name
    gray = np.full((4, 4), 100, dtype=np.uint8)
    gray[0, 0] = 200
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert float(load_mask(tmp_path / "gray.png").sum()) == 1.0  # thresholded at 0.5
    # the DDNM mask ships as PNG and as .npy: both readings agree
    ddnm = data_dir / "eval" / "masks_ddnm"
    png, npy = load_mask(ddnm / "mask.png"), load_mask(ddnm / "mask.npy")
    assert png.shape == (1, 1, 256, 256) and torch.equal(png, npy)
    assert float(png.mean()) == pytest.approx(0.7391, abs=1e-4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mask(tmp_path / "missing.png")


def test_inpaint_reads_mask_files(data_dir):
    from invgen.operators.inpaint import Inpaint

    path = data_dir / "eval" / "masks_ddnm" / "mask_mouth.png"
    op = Inpaint(path)
    x = torch.rand(1, 3, 256, 256)
    torch.testing.assert_close(op(x), x * load_mask(path))
    assert op.config()["mask"] == path
    with pytest.raises(ShapeError, match="the mask has size 256x256 but the image has size 64x64"):
        op(torch.rand(1, 3, 64, 64))
