"""Degradation operators: the algebra of every registered linear operator, golden references, errors, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import invgen
from invgen import registry
from invgen.errors import RangeError, ShapeError
from invgen.operators.blur import Blur
from invgen.operators.color import Colorize
from invgen.operators.inpaint import Inpaint
from invgen.operators.kernels import gaussian_kernel, load_kernel, motion_kernel
from invgen.operators.sensing import Sensing
from invgen.operators.sketch import Sketch, make_sketch
from invgen.operators.superres import SuperResolution, bicubic_matrix


@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are small: one thread avoids the oversubscription that slows dense SVDs down 20x on a busy
    2-core machine (measured: 0.9 s single-threaded vs 30 s with 2 contended threads for a 1024 x 1024 SVD)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _examples(linear_only: bool) -> list:
    """One pytest param per registered example; a linear operator without examples yields a failing param."""
    params = []
    for name, entry in sorted(registry.entries("operators").items()):
        linear = bool(entry.meta.get("linear"))
        if linear_only and not linear:
            continue
        examples = list(entry.meta.get("examples") or [])
        if not examples and linear:
            params.append(pytest.param(name, None, None, id=f"{name}-without-examples"))
        for i, (kwargs, shape) in enumerate(examples):
            params.append(pytest.param(name, dict(kwargs), tuple(shape), id=f"{name}-{i}"))
    return params


def _build(name: str, kwargs: dict | None, shape: tuple | None):
    if kwargs is None:
        pytest.fail(f"linear operator {name!r} is registered without examples: register (kwargs, input_shape) pairs")
    return invgen.operator(name, **kwargs)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def test_a_linear_operator_without_examples_fails_the_algebra_test():
    class NoExamples:
        @invgen.hookimpl
        def register_operators(self, register):
            register("no-examples-op", lambda **kw: invgen.operator("identity", **kw), linear=True)

    pm = invgen.plugin_manager()
    pm.register(NoExamples(), name="no-examples")
    try:
        params = {p.id: p.values for p in _examples(linear_only=True)}
    finally:
        pm.unregister(name="no-examples")
    assert params["no-examples-op-without-examples"] == ("no-examples-op", None, None)
    with pytest.raises(pytest.fail.Exception, match="'no-examples-op' is registered without examples"):
        test_linear_operator_algebra("no-examples-op", None, None)
    assert "no-examples-op" not in registry.entries("operators")


# -- the algebra of every registered linear operator -------------------------------------------------------------
@pytest.mark.parametrize(("name", "kwargs", "shape"), _examples(linear_only=True))
def test_linear_operator_algebra(name, kwargs, shape):
    check_linear_algebra(_build(name, kwargs, shape), shape)


def check_linear_algebra(op, shape: tuple) -> None:
    """The algebra of a linear operator on float64 inputs of ``shape``: shapes, adjointness, the pseudo-inverse
    against the dense one, and the SVD identities where ``op.has_svd`` (also used by tests/test_interop_deepinv.py)."""
    assert op.linear
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    ax = op(x)
    assert tuple(ax.shape) == tuple(op.output_shape(shape))
    assert tuple(op.input_shape(tuple(ax.shape))) == tuple(shape)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)

    # adjointness <A x, y> = <x, A^T y>
    aty = op.adjoint(y)
    assert aty.shape == x.shape
    lhs, rhs = float((ax * y).sum()), float((x * aty).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs), (lhs, rhs)

    # A A^+ (A x) = A x
    scale = float(ax.abs().max())
    torch.testing.assert_close(op(op.pinv(ax)), ax, rtol=1e-5, atol=1e-5 * scale)

    # A^+ y is the minimum-norm least-squares solution: the dense pseudo-inverse on one item
    matrix = op.to_matrix(shape)
    assert matrix.shape == (math.prod(ax.shape[1:]), math.prod(shape[1:]))
    torch.testing.assert_close(matrix @ _flat(x)[0], _flat(ax)[0])
    u, sv, vh = torch.linalg.svd(matrix, full_matrices=False)  # one SVD for the dense pseudo-inverse and the rank
    keep = sv > (getattr(op, "rcond", None) or max(matrix.shape) * torch.finfo(torch.float64).eps) * sv.max()
    rank = int(keep.sum())
    expected = vh[:rank].T @ ((u[:, :rank].T @ _flat(y)[0]) / sv[:rank])  # = torch.linalg.pinv(matrix) @ y
    torch.testing.assert_close(_flat(op.pinv(y))[0], expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max()))

    if op.has_svd:
        z = op.svd_vt(x)
        s = op.singulars(z)
        assert (s >= 0).all()
        torch.testing.assert_close(op.svd_u(s * z), ax)
        torch.testing.assert_close(op.svd_v(s * op.svd_ut(y)), aty)
        torch.testing.assert_close(_flat(z).norm(dim=1), _flat(x).norm(dim=1))  # V is orthonormal
        torch.testing.assert_close(op.svd_v(z), x)
        s_inv = torch.where(s > 0, 1 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
        torch.testing.assert_close(op.svd_v(s_inv * op.svd_ut(y)), op.pinv(y))
        # the number of non-zero singular values is the rank of the matrix
        n_nonzero = int((torch.broadcast_to(s, z.shape)[:1] > 1e-10 * float(s.max())).sum())
        assert n_nonzero == rank


@pytest.mark.parametrize(("name", "kwargs", "shape"), _examples(linear_only=False))
def test_every_example_runs_in_float32_and_float64_and_rebuilds_from_config(name, kwargs, shape):
    op = _build(name, kwargs, shape)
    x64 = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y64 = op(x64)
    y32 = op(x64.float())
    assert y64.dtype == torch.float64 and y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-5)
    if op.linear:
        assert op.adjoint(y32).dtype == torch.float32 and op.pinv(y32).dtype == torch.float32
        torch.testing.assert_close(op.adjoint(y32).double(), op.adjoint(y64), rtol=1e-4, atol=1e-5)
    config = op.config()
    assert config["noise"] == {"name": "gaussian", "std": 0.0}
    config["noise"] = {"name": "gaussian", "std": 0.25}
    rebuilt = invgen.operator(config.pop("name"), **config)
    assert torch.equal(rebuilt(x64), y64)
    assert rebuilt.noise.std == 0.25


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"), [p for p in _examples(linear_only=False) if p.values[1] is not None]
)
def test_measure_rejects_bad_images(name, kwargs, shape):
    op = invgen.operator(name, **kwargs)
    x = torch.rand(shape)
    with pytest.raises(ShapeError, match=r"expected a \(B, C, H, W\) tensor, got shape"):
        op.measure(x[0])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(RangeError, match="expected finite values, got 1 NaN/Inf"):
        op.measure(bad)
    bad = x.clone()
    bad[-1, -1, -1, -1] = -0.5
    with pytest.raises(RangeError, match=r"values in \[0, 1\], got values in \[-0.5, "):
        op.measure(bad)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, op(x))  # noiseless by default


def test_noisy_measure_is_seeded_and_noise_scores_it():
    op = invgen.operator("superres", scale=2, noise=invgen.noise("gaussian", std=0.1))
    x = torch.rand(2, 1, 8, 8)
    y1 = op.measure(x, generator=torch.Generator().manual_seed(3))
    y2 = op.measure(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2)
    assert 0.05 < float((y1 - op(x)).std()) < 0.15
    ll = op.log_likelihood(y1, x)
    expected = torch.distributions.Normal(op(x), 0.1).log_prob(y1).sum(dim=(1, 2, 3))
    torch.testing.assert_close(ll, expected)


# -- batching: per-item parameters for k * B items ----------------------------------------------------------------
def test_per_item_masks_repeat_over_stacked_copies():
    masks = torch.stack([torch.ones(1, 6, 6), torch.zeros(1, 6, 6)])  # item 0 fully observed, item 1 fully hidden
    masks[1, 0, 2, 3] = 1
    op = Inpaint(masks)
    x = torch.rand(6, 3, 6, 6, dtype=torch.float64)  # 3 stacked copies of a batch of 2
    y = op(x)
    for i in range(6):
        torch.testing.assert_close(y[i], x[i] * masks[i % 2].double())
    assert float(y[1].abs().sum()) == pytest.approx(float(x[1, :, 2, 3].sum()))
    torch.testing.assert_close(op.pinv(y), y)
    assert op.singulars(op.svd_vt(x)).shape == x.shape
    with pytest.raises(ShapeError, match="given for a batch of 2, which does not divide the input batch of 3"):
        op(x[:3])


def test_per_item_kernels_repeat_over_stacked_copies():
    kernels = torch.stack([gaussian_kernel(1.0, 5), motion_kernel(5, 0.5, seed=1)])
    op = Blur(kernels)
    x = torch.rand(4, 2, 8, 8, dtype=torch.float64)
    y = op(x)
    for i in range(4):
        torch.testing.assert_close(y[i : i + 1], Blur(kernels[i % 2])(x[i : i + 1]))
    with pytest.raises(ShapeError, match="2 per-item kernels do not divide the batch of 3"):
        op(x[:3])


# -- inpainting ---------------------------------------------------------------------------------------------------
def test_inpaint_mask_from_tensor_shapes_and_size_mismatch():
    m = (torch.rand(8, 8) > 0.5).float()
    x = torch.rand(2, 3, 8, 8)
    for given in (m, m[None], m[None, None], m.bool()):
        op = Inpaint(given)
        assert op.mask.shape == (1, 1, 8, 8)
        torch.testing.assert_close(op(x), x * m)
    per_channel = torch.rand(1, 3, 8, 8).round()
    torch.testing.assert_close(Inpaint(per_channel)(x), x * per_channel)
    with pytest.raises(ShapeError, match="the mask has size 8x8 but the image has size 16x16"):
        Inpaint(m)(torch.rand(1, 1, 16, 16))
    with pytest.raises(ShapeError, match="the mask has 3 channels but the image has 1"):
        Inpaint(per_channel)(torch.rand(1, 1, 8, 8))
    with pytest.raises(RangeError, match=r"mask: expected values in \[0, 1\]"):
        Inpaint(m * 2)
    with pytest.raises(ShapeError, match=r"a 3-D mask must be \(1, H, W\)"):
        Inpaint(torch.ones(3, 8, 8))


def test_inpaint_generated_masks_are_lazy_cached_per_size_and_seeded():
    op = Inpaint("freeform", seed=4)
    with pytest.raises(ShapeError, match="mask size is not known yet"):
        op.mask
    op(torch.rand(1, 1, 32, 32))
    first = op.mask.clone()
    assert first.shape == (1, 1, 32, 32)
    torch.testing.assert_close(first, invgen.operators.masks.freeform_mask((32, 32), seed=4))
    op(torch.rand(1, 1, 16, 24))
    assert op.mask.shape == (1, 1, 16, 24)
    assert torch.equal(op.mask_for((1, 1, 32, 32)), first)
    assert torch.equal(Inpaint("freeform", seed=4, size=(32, 32)).mask, first)
    with pytest.raises(ShapeError, match="the mask has size 32x32 but the image has size 16x16"):
        Inpaint("freeform", seed=4, size=(32, 32))(torch.rand(1, 1, 16, 16))
    with pytest.raises(TypeError, match=r"option\(s\) ratio do not apply"):
        Inpaint("box", ratio=0.5)
    with pytest.raises(FileNotFoundError, match="neither a mask type"):
        Inpaint("boxx")


def test_inpaint_svd_zeroes_unobserved_coordinates():
    op = Inpaint("half", side="left")
    y = torch.ones(1, 1, 4, 4)
    z = op.svd_ut(y)
    assert float(z.sum()) == 8.0 and float(z[..., :2].abs().sum()) == 0.0
    assert op.singulars(z).tolist() == op.mask.expand(1, 1, 4, 4).tolist()


# -- super-resolution ---------------------------------------------------------------------------------------------
def test_block_superres_averages_blocks():
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    y = SuperResolution(2, kernel="block")(x)
    assert y[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    s = SuperResolution(2, kernel="block").singulars(torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(s[0, 0], expected)  # (1 / sqrt 2) per axis


def test_bicubic_weights_are_matlabs():
    w = bicubic_matrix(16, 2).numpy()
    # the interior taps of MATLAB imresize(x, 0.5, 'bicubic'): cubic(t / 2) / 2 at t = +-0.5, +-1.5, +-2.5, +-3.5
    taps = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]
    assert w[4, 5:13].tolist() == taps
    # at the border, taps beyond the edge fold back onto the image (symmetric padding, edge sample repeated)
    assert w[0, :6].tolist() == [0.546875, 0.3984375, 0.1015625, -0.03515625, -0.01171875, 0.0]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert bicubic_matrix(32, 4).shape == (8, 32)


def test_superres_rejects_sizes_not_divisible_by_the_scale():
    with pytest.raises(ShapeError, match=r"x has size 30x32, which is not divisible by the scale 4; crop it to 28x32"):
        SuperResolution(4)(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="scale must be an integer >= 2"):
        SuperResolution(1)
    with pytest.raises(ValueError, match="kernel must be one of block, bicubic"):
        SuperResolution(2, kernel="lanczos")


SET5 = ("baby", "bird", "butterfly", "head", "woman")


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_matches_matlab_lr_images_of_set5(data_dir, scale):
    root = data_dir / "eval" / "Set5"
    op = SuperResolution(scale, kernel="bicubic")
    for name in SET5:
        hr = np.asarray(Image.open(root / "HR" / f"{name}.png").convert("RGB"), dtype=np.float64)
        h, w = hr.shape[:2]
        hr = hr[: h - h % scale, : w - w % scale]  # modcrop
        lr = np.asarray(Image.open(root / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png").convert("RGB"))
        x = torch.from_numpy(hr).permute(2, 0, 1)[None] / 255
        y = np.clip(np.round(op(x)[0].permute(1, 2, 0).numpy() * 255), 0, 255)
        assert y.shape == lr.shape
        mse = float(((y - lr) ** 2).mean())
        psnr = 10 * math.log10(255**2 / mse)
        assert psnr > 55.0, (name, psnr)  # measured 56.3 - 57.0 dB (x2), 57.7 - 58.3 dB (x4)
        assert np.abs(y - lr).max() <= 2
        # MATLAB works in uint8 and rounds after the first (vertical) pass: emulated, the same weights agree exactly
        # on all but a few pixels (measured > 99.1 %)
        ah, aw = (bicubic_matrix(n, scale).numpy() for n in hr.shape[:2])
        tmp = np.clip(np.round(np.einsum("ih,hwc->iwc", ah, hr)), 0, 255)
        emulated = np.clip(np.round(np.einsum("jw,iwc->ijc", aw, tmp)), 0, 255)
        assert (emulated == lr).mean() > 0.99, name


# -- blur -----------------------------------------------------------------------------------------------------------
def _roll_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Direct circular convolution with a kernel centred at (kh // 2, kw // 2)."""
    kh, kw = k.shape
    return sum(k[a, b] * torch.roll(x, (a - kh // 2, b - kw // 2), (-2, -1)) for a in range(kh) for b in range(kw))


@pytest.mark.parametrize(
    "kernel",
    [gaussian_kernel(1.5), motion_kernel(9, 0.8, seed=5), torch.rand(4, 5, generator=torch.Generator().manual_seed(0))],
    ids=["gaussian", "motion", "random-even-size"],
)
def test_blur_is_circular_convolution(kernel):
    x = torch.rand(2, 3, 12, 14, dtype=torch.float64)
    op = Blur(kernel)
    torch.testing.assert_close(op(x), _roll_conv(x, kernel), rtol=1e-10, atol=1e-12)
    # the adjoint is the correlation with the kernel (the shifts reversed)
    kh, kw = kernel.shape
    y = torch.rand_like(x)
    ref_adj = sum(
        kernel[a, b] * torch.roll(y, (-(a - kh // 2), -(b - kw // 2)), (-2, -1)) for a in range(kh) for b in range(kw)
    )
    torch.testing.assert_close(op.adjoint(y), ref_adj, rtol=1e-10, atol=1e-12)


def test_blur_pinv_is_truncated_minimum_norm_on_a_singular_kernel():
    op = Blur(torch.tensor([[0.5, 0.5]], dtype=torch.float64))  # zero transfer at the horizontal Nyquist frequency
    shape = (1, 1, 4, 6)
    matrix = op.to_matrix(shape)
    assert int(torch.linalg.matrix_rank(matrix)) == 20  # 4 of 24 frequencies are lost
    y = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(op.pinv(y).flatten(), torch.linalg.pinv(matrix) @ y.flatten())
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(op(op.pinv(op(x))), op(x))


def test_kernels_gaussian_motion_and_files(data_dir):
    k = gaussian_kernel(1.0)
    assert k.shape == (7, 7) and gaussian_kernel(1.5).shape == (11, 11)
    assert float(k.sum()) == pytest.approx(1.0)
    assert float(k[3, 4] / k[3, 3]) == pytest.approx(math.exp(-0.5))
    torch.testing.assert_close(k, k.T)
    m1, m2 = motion_kernel(15, 0.5, seed=7), motion_kernel(15, 0.5, seed=7)
    assert torch.equal(m1, m2) and not torch.equal(m1, motion_kernel(15, 0.5, seed=8))
    assert m1.shape == (15, 15) and float(m1.sum()) == pytest.approx(1.0) and float(m1.min()) >= 0
    assert int((m1 > 0).sum()) >= 14  # a path across the kernel, not a point

    kdir = data_dir / "eval" / "blur_kernels"
    k3 = load_kernel(kdir / "kernels_12.mat", index=3)
    assert k3.shape == (25, 25) and float(k3.sum()) == pytest.approx(1.0, abs=1e-6)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(Blur(kdir / "kernels_12.mat", index=3)(x), Blur(k3)(x))
    with pytest.raises(ValueError, match="holds 12 kernels; choose one with index="):
        load_kernel(kdir / "kernels_12.mat")
    png = load_kernel(kdir / "k_large_1.png")
    assert png.shape == (67, 67) and float(png.sum()) == pytest.approx(1.0)
    with pytest.raises(ShapeError, match=r"the kernel \(67x67\) is larger than the image \(64x64\)"):
        Blur(png)(torch.rand(1, 1, 64, 64))
    try:
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"MATLAB v7.3 \(HDF5\) file.*needs h5py"):
            load_kernel(kdir / "Levin09.mat", index=0)
    else:
        levin = load_kernel(kdir / "Levin09.mat", index=0)
        assert levin.shape == (19, 19) and float(levin.sum()) == pytest.approx(1.0)


def test_blur_rejects_bad_kernels_and_options():
    with pytest.raises(RangeError, match="kernel: expected finite values"):
        Blur(torch.tensor([[float("nan")]]))
    with pytest.raises(ShapeError, match="non-empty"):
        Blur(torch.zeros(0, 3))
    with pytest.raises(TypeError, match=r"option\(s\) intensity do not apply"):
        Blur("gaussian", intensity=0.5)
    op = Blur(torch.tensor([[2.0]]))  # used as given: no silent renormalisation
    assert torch.equal(op(torch.ones(1, 1, 4, 4)), torch.full((1, 1, 4, 4), 2.0))


# -- colorization ---------------------------------------------------------------------------------------------------
def test_colorize_matches_bt601_and_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
    y = Colorize()(x)[0, 0].numpy()
    r, g, b = (rgb[..., i] / 255 for i in range(3))
    np.testing.assert_allclose(y, 0.299 * r + 0.587 * g + 0.114 * b, rtol=0, atol=1e-12)
    pil = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64) / 255
    assert np.abs(y - pil).max() <= 1 / 255
    assert (np.round(y * 255) == pil * 255).mean() > 0.99


def test_colorize_svd_and_errors():
    op = Colorize()
    z = torch.zeros(1, 3, 1, 1)
    assert op.singulars(z).flatten().tolist() == pytest.approx([math.sqrt(0.299**2 + 0.587**2 + 0.114**2), 0, 0])
    v0 = op.svd_v(torch.tensor([1.0, 0, 0]).reshape(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(v0, torch.tensor([0.299, 0.587, 0.114]) / math.sqrt(0.299**2 + 0.587**2 + 0.114**2))
    with pytest.raises(ShapeError, match=r"x: expected 3 channel\(s\), got 1"):
        op(torch.rand(1, 1, 4, 4))
    with pytest.raises(ShapeError, match=r"y: expected 1 channel\(s\), got 3"):
        op.adjoint(torch.rand(1, 3, 4, 4))


# -- compressed sensing ---------------------------------------------------------------------------------------------
def test_sensing_shapes_seeding_and_statistics():
    op = Sensing(200, seed=3)
    with pytest.raises(ShapeError, match="input shape is not known yet"):
        op.input_shape((2, 200))
    y = op(torch.rand(2, 1, 8, 8))
    assert y.shape == (2, 200)
    assert op.input_shape((5, 200)) == (5, 1, 8, 8)
    a = op.matrix()
    assert torch.equal(a, Sensing(200, seed=3, shape=(1, 8, 8)).matrix())
    assert not torch.equal(a, Sensing(200, seed=4, shape=(1, 8, 8)).matrix())
    assert float(a.mean()) == pytest.approx(0.0, abs=4 / math.sqrt(a.numel()) / math.sqrt(200))
    assert float(a.var() * 200) == pytest.approx(1.0, rel=0.05)  # G / sqrt(m): entries of variance 1 / m
    with pytest.raises(ShapeError, match=r"expected images of shape \(B, 1, 8, 8\), got \(1, 3, 8, 8\)"):
        op(torch.rand(1, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"expected observations of shape \(B, 200\), got \(2, 7\)"):
        op.adjoint(torch.rand(2, 7))


def test_sensing_with_more_measurements_than_pixels():
    op = Sensing(50, seed=0, shape=(1, 4, 4))  # m > d: overdetermined, A has full column rank
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    y = op(x) + 0.01 * torch.randn(3, 50, dtype=torch.float64)
    lstsq = torch.linalg.lstsq(op.matrix(), y.T).solution.T
    torch.testing.assert_close(_flat(op.pinv(y)), lstsq)
    z = op.svd_vt(x)
    s = op.singulars(z)
    assert s.shape == (1, 16) and bool((s > 0).all())
    torch.testing.assert_close(op.svd_u(s * z), op(x))
    torch.testing.assert_close(op.svd_v(s * op.svd_ut(y)), op.adjoint(y))
    torch.testing.assert_close(op.svd_v(op.svd_ut(y) / s), op.pinv(y))


# -- sketch -----------------------------------------------------------------------------------------------------------
def _square(n: int = 32, lo: int = 8, hi: int = 24, channels: int = 1) -> torch.Tensor:
    x = torch.zeros(1, channels, n, n, dtype=torch.float64)
    x[..., lo:hi, lo:hi] = 1.0
    return x


def test_sketch_is_a_differentiable_soft_edge_map():
    op = Sketch()
    assert not op.linear
    y = op(_square(channels=3))
    assert y.shape == (1, 1, 32, 32) and float(y.min()) > 0 and float(y.max()) < 1
    assert float(y[0, 0, 16, 8]) > 0.99 and float(y[0, 0, 16, 16]) < 0.02 and float(y[0, 0, 2, 2]) < 0.02
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Sketch(), (x,), eps=1e-6, atol=1e-5)
    x3 = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Sketch(temperature=0.5), (x3,), eps=1e-6, atol=1e-5)
    with pytest.raises(ShapeError, match=r"expected 1 or 3 channel\(s\), got 2"):
        op(torch.rand(1, 2, 8, 8))
    assert Sketch(channels=3).input_shape((2, 1, 8, 8)) == (2, 3, 8, 8)


def test_make_sketch_is_binary_and_traces_the_square():
    s = invgen.make_sketch(_square().float())
    assert s.shape == (1, 1, 32, 32) and s.dtype == torch.float32
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    edges = s[0, 0].nonzero()
    assert len(edges) >= 4 * 12
    # every edge pixel lies within one pixel of the square's border (rows/columns 7.5 and 23.5), none inside or out
    dist = torch.minimum((edges.double() - 7.5).abs(), (edges.double() - 23.5).abs()).min(dim=1).values
    inside = ((edges >= 6) & (edges <= 25)).all(dim=1)
    assert bool((dist <= 1.5).all()) and bool(inside.all())
    assert float(s[0, 0, 11:21, 11:21].sum()) == 0
    assert make_sketch(_square(channels=3)).shape == (1, 1, 32, 32)
    with pytest.raises(RangeError, match=r"values in \[0, 1\]"):
        make_sketch(_square() * 2)


def test_bind_shape_fixes_the_sensing_matrix_before_any_image():
    op = invgen.operator("sensing", m=10, seed=0)
    with pytest.raises(invgen.errors.ShapeError, match="not known yet"):
        op.input_shape((2, 10))
    assert op.bind_shape((1, 4, 4)) is op
    assert op.input_shape((2, 10)) == (2, 1, 4, 4)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = invgen.operator("sensing", m=10, seed=0, shape=(1, 4, 4))
    torch.testing.assert_close(op(x), ref(x), rtol=0, atol=0)
    assert op.bind_shape((1, 4, 4)) is op  # the same shape again is fine
    with pytest.raises(invgen.errors.ShapeError, match=r"built for inputs \(1, 4, 4\)"):
        op.bind_shape((3, 4, 4))
    blur = invgen.operator("superres", scale=2)
    assert blur.bind_shape((3, 8, 8)) is blur  # shape-free operators accept any shape
