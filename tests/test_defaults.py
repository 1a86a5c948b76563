"""First contact: the default solver is chosen by what the operator offers and said; large problems print an estimate
and show progress; ``invgen solve`` prints flagged samples and never a traceback for a divergence."""

from __future__ import annotations

import logging

import pytest
import torch

import invgen
from invgen import registry
from invgen.cli import main
from invgen.defaults import default_solver
from invgen.estimate import LARGE_PIXELS, estimate_cost, expected_calls, is_large
from invgen.tasks import save_png

DIFFUSION = frozenset({"denoiser", "score"})
GAUSS = {"name": "gaussian", "std": 0.05}


class AnySize(invgen.Prior):
    """The exact denoiser of the i.i.d. pixel prior N(0.5, 0.5^2), on images of any size: cheap, differentiable."""

    name = "test-any-size"
    capabilities = frozenset({"denoiser"})
    image_shape = None

    def denoise(self, x, sigma):
        return 0.5 + (x - 0.5) / (1.0 + 4.0 * torch.as_tensor(sigma, dtype=x.dtype) ** 2)


class _Plugin:
    """An in-memory plugin: the any-size prior and a solver whose first sample is far off the data."""

    @invgen.hookimpl
    def register_priors(self, register):
        register("test-any-size", AnySize, capabilities=("denoiser",), description="test")

    @invgen.hookimpl
    def register_solvers(self, register):
        def one_far_off(prior, operator, y, *, n_samples, generator):
            x = operator.pinv(y).clamp(0, 1)
            samples = torch.stack([x] * n_samples)
            samples[0] = samples[0] + 5.0
            return samples

        register("test-one-far-off", lambda **o: invgen.Solver("test-one-far-off", one_far_off, (), **o), needs=())


@pytest.fixture
def plugin():
    registry.reset()
    p = _Plugin()
    invgen.plugin_manager().register(p, name="test-first-contact")
    yield p
    invgen.plugin_manager().unregister(p)
    registry.reset()


# -- the default solver ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op_name", "kw", "expected"),
    [
        ("identity", {}, ("ddnm", {"steps": 50})),
        ("inpaint", {"mask": "box"}, ("ddnm", {"steps": 50})),
        ("superres", {"scale": 4}, ("ddnm", {"steps": 50})),
        ("colorize", {}, ("ddnm", {"steps": 50})),
        ("sensing", {"m": 20, "seed": 0}, ("ddnm", {"steps": 50})),
        ("blur", {"kernel": "gaussian", "sigma": 1.5}, ("diffpir", {"steps": 50, "spacing": "uniform"})),
        ("sketch", {}, ("diffpir", {"steps": 50, "spacing": "uniform"})),
    ],
)
def test_a_diffusion_prior_gets_a_solver_for_what_the_operator_offers(op_name, kw, expected):
    op = invgen.operator(op_name, noise=GAUSS, **kw)
    choice = default_solver(DIFFUSION, op)
    assert (choice.name, choice.options) == expected
    assert choice.name in invgen.compatible_solvers("diffusion-mnist")
    text = choice.describe()
    assert text.startswith(f"{choice.name}, steps=50") and "default for a " in text and "--solver" in text, text


def test_default_without_a_gaussian_likelihood_is_dps_and_other_families_keep_theirs():
    noiseless_sketch = invgen.operator("sketch", noise={"name": "gaussian", "std": 0.0})
    poisson = invgen.operator("inpaint", mask="box", noise=invgen.noise("poisson", rate=100))
    noiseless_blur = invgen.operator("blur", kernel="gaussian", sigma=1.0, noise={"name": "gaussian", "std": 0.0})
    assert default_solver(DIFFUSION, noiseless_sketch).name == "dps"
    choice = default_solver(DIFFUSION, poisson)
    assert (choice.name, choice.options) == ("dps", {"steps": 250})
    assert default_solver(DIFFUSION, noiseless_blur).name == "diffpir"  # its data step is then the projection
    op = invgen.operator("superres", scale=2, noise=GAUSS)
    assert default_solver(frozenset({"denoiser", "score", "log_density"}), op).name == "mala"  # EBM, analytic
    assert default_solver(frozenset({"generator", "log_density", "score"}), op).name == "mala"  # flow
    assert default_solver(frozenset({"generator", "log_density"}), op).name == "latent_map"  # VAE
    assert default_solver(frozenset({"generator"}), op).name == "latent_map"  # GAN
    assert default_solver(frozenset({"score"}), op).name == "ula"
    assert default_solver(frozenset(), op).name == "tikhonov"


def test_solve_records_the_default_applies_user_options_over_it_and_prints_nothing(capsys, caplog):
    op = invgen.operator("inpaint", mask="box", noise=GAUSS)
    y = op.measure(torch.full((2, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="invgen"):
        post = invgen.solve(y, op, AnySize(), n_samples=2, seed=0, steps=3)
    assert post.solver["name"] == "ddnm" and post.solver["steps"] == 3 and post.nfe == 3
    expected = "ddnm, steps=3 (default for a linear operator with an SVD; --solver / solver= to change)"
    assert post.extras["default_solver"] == expected
    assert [r.getMessage() for r in caplog.records] == [f"solver: {expected}"]
    assert capsys.readouterr() == ("", "")  # library use: a log record at INFO, nothing printed
    named = invgen.solve(y, op, AnySize(), solver="ddnm", n_samples=2, seed=0, steps=3)
    assert "default_solver" not in named.extras
    torch.testing.assert_close(named.samples, post.samples)  # the same solver and seed


# -- large problems: estimate and progress --------------------------------------------------------------------------
def test_a_large_problem_logs_its_estimate_and_shows_progress(capsys, caplog):
    h, w = 1024, 1000  # 1.02 megapixels, one sample
    assert is_large((1, 1, h, w), 1) and not is_large((1, 1, 512, 512), 3) and LARGE_PIXELS == 1_000_000
    op = invgen.operator("identity", noise=GAUSS)
    y = op.measure(torch.full((1, 1, h, w), 0.4), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="invgen"):
        post = invgen.solve(y, op, AnySize(), n_samples=1, seed=0, steps=2)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    msg = record.getMessage()
    assert msg.startswith("large problem: 1 x 1x1024x1000 image(s) per network call, 2 calls; estimated "), msg
    assert "one forward network call on a 256x256 crop" in msg, msg
    assert post.extras["estimate"] == msg and post.extras["estimated_seconds"] > 0
    err = capsys.readouterr().err
    assert "ddnm" in err and "2/2" in err, err  # the tqdm bar over the network calls
    invgen.solve(y, op, AnySize(), n_samples=1, seed=0, steps=2, progress=False)
    assert "2/2" not in capsys.readouterr().err
    small = op.measure(torch.full((1, 1, 16, 16), 0.4), generator=torch.Generator().manual_seed(0))
    invgen.solve(small, op, AnySize(), n_samples=2, seed=0, steps=2)  # small: no bar unless asked for
    assert capsys.readouterr().err == ""
    invgen.solve(small, op, AnySize(), n_samples=2, seed=0, steps=2, progress=True)
    assert "2/2" in capsys.readouterr().err


def test_estimate_scales_one_timed_call_by_pixels_samples_and_calls():
    dps = invgen.solver("dps", steps=7)
    assert expected_calls(dps) == 7 and expected_calls(invgen.solver("ddrm")) == 20
    est = estimate_cost(AnySize(), dps, (2, 1, 600, 512), n_samples=3)
    assert est is not None and est.calls == 7 and est.shape == (6, 1, 600, 512) and est.probe == (256, 256)
    assert est.seconds == pytest.approx(est.probe_seconds * (600 * 512) / (256 * 256) * 6 * 7)
    assert "forward and backward" in est.how  # DPS backpropagates through the network
    if est.bytes is not None:  # Linux (VmHWM) or CUDA: at least the solver's own copies of the images
        assert est.bytes >= 6 * 6 * 600 * 512 * 4
    assert estimate_cost(AnySize(), invgen.solver("pinv"), (1, 1, 2000, 2000), 1) is None  # no steps: no estimate


# -- the CLI --------------------------------------------------------------------------------------------------------
@pytest.fixture
def gray(tmp_path):
    path = tmp_path / "gray.png"
    save_png(torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0)), path)
    return path


def test_cli_prints_the_default_solver_it_chose(plugin, gray, tmp_path, capsys):
    args = ["solve", "--image", str(gray), "--task", "denoise", "--prior", "test-any-size", "--degrade"]
    assert main([*args, "--steps", "2", "-n", "2", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "solver: ddnm, steps=2 (default for a linear operator with an SVD; --solver / solver= to change)"
    assert out[1].startswith("ddnm on test-any-size: 2 samples, 2 NFE")
    assert not logging.getLogger("invgen").handlers  # the CLI's handler is gone after the command


def test_cli_prints_flagged_samples(plugin, gray, tmp_path, capsys):
    args = ["solve", "--image", str(gray), "--task", "denoise", "--prior", "test-any-size", "--solver"]
    assert main([*args, "test-one-far-off", "-n", "3", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "warning: item 0, sample 0 has residual" in out and "left out of the posterior mean" in out, out


def test_cli_reports_a_divergence_without_a_traceback(plugin, gray, tmp_path, capsys):
    args = ["solve", "--image", str(gray), "--task", "denoise", "--prior", "test-any-size", "--solver", "dps"]
    assert main([*args, "--steps", "20", "-n", "2", "--option", "zeta=1e12", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    line = err.splitlines()[-1]  # after the progress bar
    assert line.startswith("invgen solve: solver 'dps' diverged by step 10 of 20") and "zeta" in line, err
    assert "Traceback" not in err


def test_cli_prints_the_estimate_of_a_large_image(plugin, tmp_path, capsys):
    big = tmp_path / "big.png"
    save_png(torch.full((1, 1100, 1000), 0.5), big)
    args = ["solve", "--image", str(big), "--task", "denoise", "--prior", "test-any-size", "--steps", "2", "-n", "1"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    assert "large problem: 1 x 1x1100x1000 image(s) per network call, 2 calls; estimated" in out, out
    assert "2/2" in err, err  # progress over the network calls
