"""invgen.interop.deepinv: deepinv physics as invgen operators, deepinv denoisers as priors, priors as denoisers.

Wrapped physics pass the algebra test of every invgen linear operator (``test_operators.check_linear_algebra``:
adjointness, the pseudo-inverse against the dense one, the SVD identities where there is an SVD); a solve through a
wrapped deepinv ``Inpainting`` equals the solve through invgen's ``inpaint``; a deepinv denoiser that is the exact
MMSE denoiser of a Gaussian gives the analytic Gaussian prior's exact answers, and the analytic prior handed to deepinv
gives deepinv's algorithms its own.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from test_operators import check_linear_algebra

import invgen
from invgen.errors import DeviceError, MissingCapabilityError, ShapeError
from invgen.priors.base import Prior

dinv = pytest.importorskip("deepinv")

from invgen.interop.deepinv import (  # noqa: E402  (after the importorskip)
    DeepinvOperator,
    _pack,
    _unpack,
    import_deepinv,
    noise_from_deepinv,
    operator_from_physics,
    prior_from_denoiser,
    to_deepinv_denoiser,
)

H = 8


@pytest.fixture(autouse=True)
def _quiet_deepinv():
    """deepinv warns about deprecated defaults (Downsampling's filter, ``device``) that are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _mask(c: int = 1, seed: int = 0) -> torch.Tensor:
    return (torch.rand(c, H, H, generator=torch.Generator().manual_seed(seed)) > 0.4).double()


def _gauss_filter(sigma: float = 0.7) -> torch.Tensor:
    return dinv.physics.blur.gaussian_blur(sigma=(sigma, sigma))


# name -> (physics factory, input shape, wrapper options, has_svd, pinv source)
PHYSICS = {
    "inpainting": (
        lambda: dinv.physics.Inpainting(img_size=(3, H, H), mask=_mask(3)),
        (2, 3, H, H),
        {},
        True,
        "deepinv",
    ),
    "inpainting-pixelwise": (
        lambda: dinv.physics.Inpainting(img_size=(3, H, H), mask=_mask(1)[0]).double(),
        (2, 3, H, H),
        {},
        True,
        "deepinv",
    ),
    "demosaicing": (lambda: dinv.physics.Demosaicing(img_size=(3, H, H)).double(), (2, 3, H, H), {}, True, "deepinv"),
    "blur-valid": (
        lambda: dinv.physics.Blur(filter=_gauss_filter(), padding="valid").double(),
        (2, 1, 12, 12),
        {},
        False,
        "cg",
    ),
    "blur-circular": (
        lambda: dinv.physics.Blur(filter=_gauss_filter(), padding="circular").double(),
        (2, 1, 10, 10),
        {},
        False,
        "cg",
    ),
    "blurfft": (
        lambda: dinv.physics.BlurFFT(img_size=(1, H, H), filter=_gauss_filter()).double(),
        (2, 1, H, H),
        {},
        True,
        "deepinv",
    ),
    "blurfft-odd-rgb": (
        lambda: dinv.physics.BlurFFT(img_size=(3, 7, 9), filter=_gauss_filter()).double(),
        (2, 3, 7, 9),
        {},
        True,
        "deepinv",
    ),
    "downsampling": (
        lambda: dinv.physics.Downsampling(img_size=(1, H, H), filter="gaussian", factor=2).double(),
        (2, 1, H, H),
        {},
        False,
        "cg",
    ),
    "compressed-sensing": (
        lambda: dinv.physics.CompressedSensing(
            m=40, img_size=(1, H, H), dtype=torch.float64, rng=torch.Generator().manual_seed(0)
        ),
        (2, 1, H, H),
        {},
        False,
        "deepinv",
    ),
    "mri": (lambda: dinv.physics.MRI(mask=_mask()[0], img_size=(2, H, H)).double(), (2, 2, H, H), {}, True, "deepinv"),
    "mri-real-images": (
        lambda: dinv.physics.MRI(mask=_mask()[0], img_size=(2, H, H)).double(),
        (2, 1, H, H),
        {"real_images": True},
        False,
        "cg",
    ),
    "decolorize": (lambda: dinv.physics.Decolorize().double(), (2, 3, H, H), {}, False, "deepinv"),
    "denoising": (
        lambda: dinv.physics.Denoising(noise_model=dinv.physics.ZeroNoise()),
        (2, 3, H, H),
        {"input_shape": (3, H, H)},
        True,
        "deepinv",
    ),
    "mri-multicoil": (
        lambda: dinv.physics.MultiCoilMRI(
            mask=_mask()[0],
            coil_maps=torch.randn(1, 3, H, H, dtype=torch.complex128, generator=torch.Generator().manual_seed(1)),
            img_size=(H, H),
        ).double(),
        (2, 2, H, H),
        {"input_shape": (2, H, H)},
        False,
        "cg",
    ),
}


# -- (a) the operator suite's algebra on wrapped physics ------------------------------------------------------------
@pytest.mark.parametrize("name", list(PHYSICS))
def test_wrapped_physics_pass_the_operator_algebra(name):
    make, shape, options, has_svd, pinv_source = PHYSICS[name]
    op = operator_from_physics(make(), **options)
    assert isinstance(op, invgen.LinearOperator) and op.linear
    check_linear_algebra(op, shape)  # adjointness, pinv = dense pinv, and the SVD identities where has_svd
    assert op.has_svd is has_svd
    assert set(op.pinv_source.values()) == {pinv_source}
    assert op.noise.config() == {"name": "gaussian", "std": 0.0}  # ZeroNoise


def test_the_wrapped_operator_matches_the_physics_and_follows_the_input_dtype():
    physics = dinv.physics.BlurFFT(img_size=(3, H, H), filter=_gauss_filter())  # float32, deepinv's default
    op = operator_from_physics(physics)
    assert op.config() == {
        "name": "deepinv.BlurFFT",
        "physics": "BlurFFT",
        "input_shape": (3, H, H),
        "real_images": False,
        "noise": {"name": "gaussian", "std": 0.0},
    }
    assert "input_shape=(3, 8, 8)" in repr(op)
    x = torch.rand(2, 3, H, H)
    torch.testing.assert_close(op(x), physics.A(x))
    torch.testing.assert_close(op.adjoint(x), physics.A_adjoint(x))
    torch.testing.assert_close(op.pinv(op(x)), physics.A_dagger(physics.A(x)))
    for dtype in (torch.float32, torch.float64):  # computed in the physics' float32, returned in the input's dtype
        xd = x.to(dtype)
        assert op(xd).dtype == op.adjoint(xd).dtype == op.pinv(xd).dtype == op.svd_vt(xd).dtype == dtype
    assert op.has_svd  # the probe accepts float32 rounding
    z = op.svd_vt(x)
    torch.testing.assert_close(op.svd_u(op.singulars(z) * z), op(x), rtol=1e-4, atol=1e-5)


def test_real_spectral_coordinates_are_orthonormal_for_even_and_odd_sizes():
    for h, w in [(4, 4), (5, 6), (6, 5), (3, 3), (1, 4), (2, 1)]:
        x = torch.randn(2, h, w, dtype=torch.float64)
        half = torch.view_as_real(torch.fft.rfft2(x, norm="ortho"))
        z = _pack(half[..., 0], half[..., 1], w)
        assert z.shape == x.shape
        torch.testing.assert_close(z.norm(dim=(-2, -1)), x.norm(dim=(-2, -1)))
        torch.testing.assert_close(torch.fft.irfft2(torch.view_as_complex(_unpack(z)), s=(h, w), norm="ortho"), x)
        basis = torch.eye(h * w, dtype=torch.float64).reshape(h * w, h, w)  # the map is an orthogonal matrix
        half = torch.view_as_real(torch.fft.rfft2(basis, norm="ortho"))
        m = _pack(half[..., 0], half[..., 1], w).reshape(h * w, h * w)
        torch.testing.assert_close(m @ m.T, torch.eye(h * w, dtype=torch.float64))


def test_shapes_are_learnt_from_the_physics_the_first_image_or_the_adjoint():
    k = _gauss_filter().shape[-1]
    op = operator_from_physics(dinv.physics.Blur(filter=_gauss_filter(), padding="valid"))  # knows no size
    assert op.input_shape((3, 1, 4, 6)) == (3, 1, 3 + k, 5 + k)  # the adjoint of a zero observation
    assert op.output_shape((2, 1, 3 + k, 5 + k)) == (2, 1, 4, 6)
    sensing = operator_from_physics(dinv.physics.CompressedSensing(m=10, img_size=(1, 4, 4)))
    assert sensing.input_shape((5, 10)) == (5, 1, 4, 4) and sensing.output_shape((5, 1, 4, 4)) == (5, 10)
    with pytest.raises(ShapeError, match=r"cannot be applied to images of shape \(1, 5, 5\)"):
        sensing.output_shape((1, 1, 5, 5))
    with pytest.raises(ShapeError, match=r"the image shape is fixed to \(1, 4, 4\)"):
        sensing.bind_shape((1, 5, 5))
    blur = operator_from_physics(
        dinv.physics.BlurFFT(img_size=(1, H, H), filter=_gauss_filter()), input_shape=(1, H, H)
    )
    y = torch.zeros(4, 1, H, H)
    assert blur.check_observation(y) is y
    with pytest.raises(ShapeError, match=r"expected an observation of shape \(4, 1, 8, 8\) for images of shape"):
        blur.check_observation(torch.zeros(4, 1, H, H - 1))


def test_per_item_masks_apply_to_stacked_copies():
    masks = torch.stack([_mask(3, seed=1), _mask(3, seed=2)])
    op = operator_from_physics(dinv.physics.Inpainting(img_size=(3, H, H), mask=masks))
    x = torch.rand(6, 3, H, H, dtype=torch.float64)  # 3 stacked copies of a batch of 2
    y = op(x)
    for i in range(6):
        torch.testing.assert_close(y[i], x[i] * masks[i % 2].float().double())
    assert op.has_svd and op.singulars(op.svd_vt(x)).shape == x.shape
    torch.testing.assert_close(op.svd_ut(y), y)
    with pytest.raises(ShapeError, match="given for a batch of 2, which does not divide the batch of 3"):
        op(x[:3])


# -- noise models ---------------------------------------------------------------------------------------------------
def test_noise_models_map_or_are_refused_by_name():
    p = dinv.physics
    assert noise_from_deepinv(p.ZeroNoise()).config() == {"name": "gaussian", "std": 0.0}
    assert noise_from_deepinv(p.GaussianNoise(sigma=0.05)).config() == {"name": "gaussian", "std": pytest.approx(0.05)}
    assert noise_from_deepinv(p.PoissonNoise(gain=0.01)).config() == {"name": "poisson", "rate": pytest.approx(100.0)}
    with pytest.raises(ValueError, match=r"normalize=False.*rate = 1 / gain"):
        noise_from_deepinv(p.PoissonNoise(gain=0.01, normalize=False))
    with pytest.raises(ValueError, match="one value for every item"):
        noise_from_deepinv(p.GaussianNoise(sigma=torch.tensor([0.1, 0.2])))
    for unsupported in (p.UniformNoise(a=0.1), p.PoissonGaussianNoise(), p.GaussianNoise(0.1) * p.PoissonNoise()):
        name = type(unsupported).__name__
        with pytest.raises(TypeError, match=f"deepinv noise model {name} has no invgen counterpart"):
            operator_from_physics(dinv.physics.Inpainting(img_size=(1, H, H), mask=0.5, noise_model=unsupported))
    op = operator_from_physics(
        dinv.physics.Inpainting(img_size=(1, H, H), mask=0.5, noise_model=p.PoissonNoise(gain=0.01)),
        noise=invgen.noise("gaussian", std=0.1),  # an explicit invgen model wins
    )
    assert op.noise.config() == {"name": "gaussian", "std": 0.1}


def test_poisson_gain_convention_matches_deepinv_in_mean_and_variance():
    gain = 0.02
    physics = dinv.physics.Denoising(noise_model=dinv.physics.PoissonNoise(gain=gain))
    op = operator_from_physics(physics, input_shape=(1, 64, 64))
    x = torch.full((4, 1, 64, 64), 0.3)
    y_dinv = physics(x)
    y_ours = op.measure(x, generator=torch.Generator().manual_seed(0))
    for y in (y_dinv, y_ours):  # mean A x, variance gain * A x = A x / rate
        assert abs(float(y.mean()) - 0.3) < 0.01 and abs(float(y.var()) - gain * 0.3) < 0.1 * gain * 0.3


# -- (b) a solve through deepinv's Inpainting equals the solve through invgen's inpaint ------------------------------
@pytest.mark.parametrize("solver", ["ddrm", "ddnm"])
def test_solve_on_deepinv_inpainting_equals_invgen_inpaint(solver):
    mask = _mask(1, seed=3)
    prior = invgen.prior("gaussian", image_shape=(3, H, H), seed=1)
    physics = dinv.physics.Inpainting(
        img_size=(3, H, H), mask=mask, noise_model=dinv.physics.GaussianNoise(sigma=0.05)
    ).double()
    ours = operator_from_physics(physics)
    native = invgen.operator("inpaint", mask=mask[0], noise=invgen.noise("gaussian", std=0.05))
    assert ours.noise.std == pytest.approx(native.noise.std, abs=1e-9) and ours.has_svd
    x = prior.decode(torch.randn(2, prior.d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    y = native.measure(x.clamp(0, 1), generator=torch.Generator().manual_seed(1))
    a = invgen.solve(y, ours, prior, solver=solver, steps=15, n_samples=3, seed=7)
    b = invgen.solve(y, native, prior, solver=solver, steps=15, n_samples=3, seed=7)
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(invgen.solve(y, ours, solver="pinv").mean, invgen.solve(y, native, solver="pinv").mean)


# -- (c) a deepinv denoiser as an invgen prior ------------------------------------------------------------------------
class GaussianMMSE(dinv.models.Denoiser):
    """The exact MMSE denoiser of N(mean, cov) on (C, H, W) images, written as a deepinv denoiser."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        super().__init__()
        evals, evecs = torch.linalg.eigh(cov)
        self.register_buffer("mean", mean.reshape(-1))
        self.register_buffer("evals", evals)
        self.register_buffer("evecs", evecs)

    def forward(self, x: torch.Tensor, sigma, **kwargs) -> torch.Tensor:
        s = self._handle_sigma(sigma, batch_size=x.shape[0], device=x.device, dtype=x.dtype).reshape(-1, 1)
        z = (x.reshape(x.shape[0], -1) - self.mean) @ self.evecs
        z = z * self.evals / (self.evals + s**2)
        return (self.mean + z @ self.evecs.T).reshape(x.shape)


@pytest.fixture(scope="module")
def gaussian():
    return invgen.prior("gaussian", image_shape=(1, H, H), seed=3)


def test_prior_from_an_exact_deepinv_denoiser_gives_the_exact_answers(gaussian):
    wrapped = prior_from_denoiser(
        GaussianMMSE(gaussian.mean, gaussian.cov), sigma_range=(0.001, 100.0), name="mmse", image_shape=(1, H, H)
    )
    assert wrapped.capabilities == {"denoiser", "score"} and (wrapped.sigma_min, wrapped.sigma_max) == (0.001, 100.0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, H, H, generator=g, dtype=torch.float64)
    for sigma in (0.01, 0.3, torch.tensor([0.05, 0.5, 5.0], dtype=torch.float64)):
        torch.testing.assert_close(wrapped.denoise(x, sigma), gaussian.denoise(x, sigma))
        torch.testing.assert_close(wrapped.score(x, sigma), gaussian.score(x, sigma))  # Tweedie is exact here
    with pytest.raises(ValueError, match=r"needs sigma > 0"):
        wrapped.score(x, 0.0)
    # the exact posterior mean of a linear Gaussian problem, from samples of the wrapped and the analytic prior
    op = invgen.operator("inpaint", mask="random", ratio=0.5, seed=0, noise=invgen.noise("gaussian", std=0.05))
    y = op.measure(gaussian.sample(1, generator=g).clamp(0, 1), generator=g)
    a = invgen.solve(y, op, wrapped, solver="ddrm", steps=20, n_samples=4, seed=5)
    b = invgen.solve(y, op, gaussian, solver="ddrm", steps=20, n_samples=4, seed=5)
    torch.testing.assert_close(a.samples, b.samples)


def test_prior_from_denoiser_runs_a_float32_network_on_float64_inputs():
    net = dinv.models.DnCNN(in_channels=1, out_channels=1, depth=2, nf=4, pretrained=None)  # float32 weights
    prior = prior_from_denoiser(net, sigma_range=(0.0, 0.2))
    x = torch.rand(2, 1, H, H, dtype=torch.float64)
    out = prior.denoise(x, 0.1)
    assert out.dtype == torch.float64 and out.shape == x.shape
    torch.testing.assert_close(out, net(x.float(), 0.1).double())
    assert prior.config()["denoiser"] == "DnCNN"


# -- (d) an invgen prior as a deepinv denoiser ------------------------------------------------------------------------
def test_invgen_prior_as_deepinv_denoiser_in_deepinv_operations(gaussian):
    den = to_deepinv_denoiser(gaussian)
    assert isinstance(den, dinv.models.Denoiser)
    x = torch.rand(2, 1, H, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(dinv.optim.PnP(den).prox(x, 0.2), gaussian.denoise(x, 0.2))
    torch.testing.assert_close(dinv.optim.ScorePrior(den).score(x, 0.2), gaussian.score(x, 0.2))
    per_item = torch.tensor([0.1, 0.4], dtype=torch.float64)
    torch.testing.assert_close(den(x, per_item), gaussian.denoise(x, per_item))
    back = prior_from_denoiser(den)  # and back again
    torch.testing.assert_close(back.denoise(x, 0.3), gaussian.denoise(x, 0.3))


def test_deepinv_diffpir_runs_with_an_invgen_prior_on_a_wrapped_physics(gaussian):
    physics = dinv.physics.Inpainting(img_size=(1, H, H), mask=_mask(), noise_model=dinv.physics.GaussianNoise(0.05))
    x = gaussian.sample(2, generator=torch.Generator().manual_seed(2)).clamp(0, 1).float()
    torch.manual_seed(0)
    y = physics(x)
    model = dinv.sampling.DiffPIR(
        model=to_deepinv_denoiser(gaussian), data_fidelity=dinv.optim.data_fidelity.L2(), max_iter=20
    )
    xhat = model(y, physics)
    assert xhat.shape == x.shape and bool(torch.isfinite(xhat).all())
    op = operator_from_physics(physics)
    assert float((xhat - x).norm()) < float((op.pinv(y) - x).norm())  # the prior fills the holes better than zeros


# -- (e) errors ------------------------------------------------------------------------------------------------------
def test_errors_name_what_is_refused():
    with pytest.raises(TypeError, match="PhaseRetrieval is not a deepinv LinearPhysics"):
        operator_from_physics(dinv.physics.RandomPhaseRetrieval(m=10, img_size=(1, 4, 4)))
    with pytest.raises(TypeError, match="expected a deepinv physics, got Tensor"):
        operator_from_physics(torch.ones(3))
    clipped = dinv.physics.LinearPhysics(A=lambda x: 2 * x, A_adjoint=lambda y: 2 * y, sensor_model=torch.sign)
    with pytest.raises(TypeError, match="has a sensor model"):
        operator_from_physics(clipped)

    class LatentOnly(Prior):
        name = "latent-only"
        capabilities = frozenset({"generator"})

    with pytest.raises(
        MissingCapabilityError, match="'latent-only' has no 'denoiser' capability \\(it offers generator\\)"
    ):
        to_deepinv_denoiser(LatentOnly())
    with pytest.raises(ValueError, match="sigma_range"):
        prior_from_denoiser(GaussianMMSE(torch.zeros(4), torch.eye(4)), sigma_range=(0.5, 0.1))
    op = operator_from_physics(dinv.physics.Decolorize())
    with pytest.raises(NotImplementedError, match="has no cheap SVD"):
        op.svd_vt(torch.rand(1, 3, 4, 4))
    with pytest.raises(TypeError, match=r"ddrm: needs a linear operator with a cheap SVD"):
        invgen.solve(torch.rand(1, 1, 4, 4), op, invgen.prior("gaussian", image_shape=(3, 4, 4)), solver="ddrm")


def test_a_physics_on_another_device_than_the_data_is_refused():
    op = operator_from_physics(dinv.physics.Inpainting(img_size=(1, H, H), mask=_mask()))
    op.to("meta")  # moves the physics: no GPU needed to see the check
    with pytest.raises(DeviceError, match="the deepinv physics is on meta but x is on cpu"):
        op(torch.rand(1, 1, H, H))


def test_missing_deepinv_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)  # import deepinv now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "invgen\[deepinv\]"'):
        import_deepinv()
    with pytest.raises(ImportError, match=r'pip install "invgen\[deepinv\]"'):
        DeepinvOperator(object())


def test_importing_invgen_or_the_adapter_module_does_not_import_deepinv():
    code = "import sys, invgen, invgen.interop, invgen.interop.deepinv\nassert 'deepinv' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
