"""Joint observations (invgen/operators/joint.py) and exemplar-guided inpainting (invgen/operators/exemplar.py).

The joint mechanism is checked three ways: its log-likelihood is the sum of its parts'; every solver that takes a
nonlinear operator gives, with the same seed, the samples it gives for the single Gaussian operator that stacks the
whitened parts (the exact equivalent); and MALA on a joint of two linear Gaussian parts with different stds matches
the exact Gaussian posterior, with tolerances that the posteriors of wrong likelihoods (a part dropped, a part's std
wrong) fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import DenseOperator as Dense

import invgen
from invgen.errors import OptionError, RangeError, ShapeError
from invgen.operators.exemplar import EMBED_DIM, TAU, crop_box, embed, prepare_exemplar
from invgen.operators.joint import JointNoise, JointOperator, LinearJointOperator, joint
from invgen.operators.noise import GaussianNoise
from invgen.tasks import TaskError, TaskOptions, build_task, save_png, solve_image
from invgen_plugins.analytic.gaussian import Gaussian

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _noise(std: float):
    return invgen.noise("gaussian", std=std)


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- the joint operator ---------------------------------------------------------------------------------------------
def test_joint_log_likelihood_is_the_sum_of_the_parts():
    parts = [
        invgen.operator("inpaint", mask="random", ratio=0.5, seed=1, noise=_noise(0.05)),
        invgen.operator("superres", scale=2, noise=_noise(0.2)),
        invgen.operator("sketch", channels=3, noise=_noise(0.1)),
        invgen.operator("identity", noise=invgen.noise("poisson", rate=50.0)),
    ]
    op = joint(parts)
    assert type(op) is JointOperator and not op.linear and isinstance(op.noise, JointNoise)
    x = _rand(2, 3, 8, 8, seed=0, dtype=F64)
    y = op.measure(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == (2, 3 * 64 + 3 * 16 + 64 + 3 * 64) == op.output_shape((2, 3, 8, 8))
    assert op.input_shape(tuple(y.shape)) == (2, 3, 8, 8)
    ys = op.split(y)
    assert [tuple(t.shape) for t in ys] == [(2, 3, 8, 8), (2, 3, 4, 4), (2, 1, 8, 8), (2, 3, 8, 8)]
    torch.testing.assert_close(op.join(ys), y)
    for seed in (2, 3):
        x2 = _rand(2, 3, 8, 8, seed=seed, dtype=F64)
        total = sum(p.log_likelihood(yk, x2) for p, yk in zip(parts, ys))
        torch.testing.assert_close(op.log_likelihood(y, x2), total, rtol=1e-12, atol=1e-9)
    # a part's batch of 1 is shared by every item; the wrong count or shape is refused
    torch.testing.assert_close(
        op.join([ys[0], ys[1][:1], ys[2], ys[3]])[1], op.join([ys[0], ys[1][:1].expand(2, -1, -1, -1), ys[2], ys[3]])[1]
    )
    with pytest.raises(ShapeError, match="expected 4 observations"):
        op.join(ys[:3])
    with pytest.raises(ShapeError, match=r"observations\[1\] \(superres\)"):
        op.join([ys[0], ys[0], ys[2], ys[3]])
    with pytest.raises(ShapeError, match="expected a flat joint observation"):
        op.input_shape((2, 3, 8, 8))


def test_joint_noise_whitens_gaussian_parts_to_the_reference_std():
    op = joint(
        [Dense(torch.eye(4, dtype=F64), (1, 2, 2), noise=_noise(0.1)), invgen.operator("identity", noise=_noise(0.4))]
    )
    assert isinstance(op, LinearJointOperator) and op.linear
    assert op.noise.gaussian_std() == op.noise.std == 0.1 and op.noise.weights == (1.0, 0.25)
    x0 = _rand(3, 1, 2, 2, seed=0, dtype=F64)
    y = op.measure(x0, generator=torch.Generator().manual_seed(0))
    # log p(y | x) = -||whiten(y - A x)||^2 / (2 s_ref^2) + const: the difference is the same for every x
    consts = []
    for seed in range(1, 4):
        x = _rand(3, 1, 2, 2, seed=seed, dtype=F64)
        quad = -op.noise.whiten(y - op(x)).pow(2).sum(1) / (2 * 0.1**2)
        consts.append(op.log_likelihood(y, x) - quad)
    torch.testing.assert_close(consts[0], consts[1])
    torch.testing.assert_close(consts[0], consts[2])
    # equal noise in every part: the joint has that model itself, and no whitening
    same = joint([{"name": "identity"}, {"name": "superres", "scale": 2}], noise=_noise(0.3))
    assert type(same.noise) is GaussianNoise and same.noise.std == 0.3 and not same.noise.whitened
    # a noiseless part has no finite likelihood: the error names it
    mixed = joint([invgen.operator("identity"), invgen.operator("identity", noise=_noise(0.1))])
    with pytest.raises(RangeError, match=r"part 0 \(gaussian\): gaussian noise with std = 0"):
        mixed.log_likelihood(mixed(x0), x0)


def test_joint_config_round_trip_and_errors():
    parts = [
        invgen.operator("inpaint", mask="box", noise=_noise(0.05)),
        invgen.operator("blur", sigma=1.0, noise=_noise(0.1)),
    ]
    op = joint(parts, shape=(1, 8, 8))
    cfg = op.config()
    assert (
        "noise" not in cfg
        and cfg["shape"] == (1, 8, 8)
        and [c["noise"]["std"] for c in cfg["operators"]] == [0.05, 0.1]
    )
    rebuilt = invgen.operator(cfg.pop("name"), **cfg)
    x = _rand(2, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(rebuilt(x), op(x))
    assert rebuilt.noise.weights == op.noise.weights
    assert parts[0].noise.std == 0.05  # noise=... on the joint never changes the caller's operators
    joint(parts, noise=_noise(0.3))
    assert parts[0].noise.std == 0.05
    with pytest.raises(TypeError, match="operators must be a list"):
        joint(parts[0])
    with pytest.raises(ValueError, match="operators is empty"):
        joint([])
    with pytest.raises(TypeError, match=r"operators\[1\]: expected an invgen operator"):
        joint([parts[0], "blur"])
    with pytest.raises(ShapeError, match=r"expected images of shape \(B, 1, 8, 8\)"):
        op(_rand(1, 1, 16, 16))
    with pytest.raises(ShapeError, match="input shape is not known yet"):
        joint([{"name": "identity"}]).input_shape((1, 10))


# -- every solver that takes any operator uses the joint likelihood exactly -----------------------------------------
def _two_part_problem():
    """A Gaussian prior on 1x3x3 images, two dense linear parts with noise 0.05 and 0.2, one observation."""
    d, shape = 9, (1, 3, 3)
    g = torch.Generator().manual_seed(0)
    m = torch.randn(d, d, generator=g, dtype=F64)
    cov = 0.05 * (m @ m.T) / d + 5e-3 * torch.eye(d, dtype=F64)
    prior = Gaussian(0.5 + 0.1 * torch.randn(shape, generator=g, dtype=F64), cov)
    g = torch.Generator().manual_seed(7)
    a1, a2 = torch.randn(4, d, generator=g, dtype=F64) / 3, torch.randn(6, d, generator=g, dtype=F64) / 3
    s1, s2 = 0.05, 0.2
    op = joint([Dense(a1, shape, noise=_noise(s1)), Dense(a2, shape, noise=_noise(s2))])
    x = prior.sample(1, generator=torch.Generator().manual_seed(3), dtype=F64).clamp(0, 1)
    y = op.measure(x, generator=torch.Generator().manual_seed(4))
    return prior, op, y, (a1, s1), (a2, s2)


def _stacked(parts, ys, s_ref):
    """The single Gaussian operator (std s_ref) of the whitened stack: the exact equivalent of a joint observation."""
    a = torch.cat([m * (s_ref / s) for m, s in parts])
    y = torch.cat([yk * (s_ref / s) for yk, (_, s) in zip(ys, parts)], dim=1)
    return Dense(a, (1, 3, 3), noise=_noise(s_ref)), y


SOLVER_OPTIONS = {
    "dps": {"steps": 20},
    "daps": {"annealing_steps": 5, "ode_steps": 2, "langevin_steps": 5},
    "red_diff": {"steps": 20},
    "annealed_langevin": {"n_levels": 3, "steps_per_level": 5},
    "ula": {"steps": 30, "init": "prior"},
    "mala": {"steps": 30, "init": "prior"},
    "latent_map": {"steps": 20},
    "latent_mala": {"steps": 20},
    "latent_hmc": {"steps": 5, "leapfrog": 3},
}


@pytest.mark.parametrize("solver", list(SOLVER_OPTIONS))
def test_every_solver_of_any_operator_sees_the_whitened_joint_likelihood(solver):
    prior, op, y, p1, p2 = _two_part_problem()
    dense, y_stacked = _stacked([p1, p2], op.split(y), p1[1])
    post = invgen.solve(y, op, prior, solver=solver, n_samples=3, seed=5, **SOLVER_OPTIONS[solver])
    ref = invgen.solve(y_stacked, dense, prior, solver=solver, n_samples=3, seed=5, **SOLVER_OPTIONS[solver])
    assert post.samples.shape == (3, 1, 1, 3, 3)
    torch.testing.assert_close(post.samples, ref.samples, rtol=1e-6, atol=1e-8)


def test_mala_on_a_joint_of_two_linear_parts_matches_the_exact_posterior():
    prior, op, y, p1, p2 = _two_part_problem()
    y1, y2 = op.split(y)

    def exact(parts, ys):
        dense, yy = _stacked(parts, ys, p1[1])
        post = prior.exact_posterior(dense, yy)
        return post.mean[0].flatten(), torch.diagonal(post.cov[0]).sqrt()

    mean, sd = exact([p1, p2], [y1, y2])
    n = 2000
    post = invgen.solve(y, op, prior, solver="mala", n_samples=n, seed=0, steps=300)
    s = post.samples[:, 0].reshape(n, -1)
    z = (s.mean(0) - mean) / (sd / math.sqrt(n))  # standard errors of the mean

    def passes(m, d) -> bool:  # the test's tolerance, applied to any candidate posterior (mean m, stds d)
        return bool(((m - mean) / (sd / math.sqrt(n))).abs().max() < 5) and bool((d / sd).log().abs().max() < 0.12)

    assert bool(z.abs().max() < 5), z
    assert bool((s.std(0) / sd).log().abs().max() < 0.12), s.std(0) / sd
    assert passes(s.mean(0), s.std(0))
    # the tolerance is tight enough to reject wrong likelihoods: the second part dropped, or its std taken as 0.05
    assert not passes(*exact([p1], [y1]))
    assert not passes(*exact([p1, (p2[0], p1[1])], [y1, y2]))


# -- the exemplar operator ------------------------------------------------------------------------------------------
def _exemplar_op(**kw):
    e = kw.pop("exemplar", _rand(3, 20, 28, seed=9))
    return invgen.operator("exemplar", mask="box", size=(32, 32), box_size=12, exemplar=e, **kw)


def test_exemplar_likelihood_is_the_sum_and_gradients_flow_through_phi():
    op = _exemplar_op(noise=_noise(0.02))
    assert not op.linear and op.tau == TAU and op.box == (10, 22, 10, 22)
    assert op.noise.weights == (1.0, 0.02 / TAU) and op.noise.std == 0.02
    x = _rand(2, 3, 32, 32, seed=1)
    seen = invgen.operator("inpaint", mask=op.mask, noise=_noise(0.02))
    y = op.observe(seen.measure(x, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (2, 3 * 32 * 32 + EMBED_DIM) and op.input_shape(tuple(y.shape)) == (2, 3, 32, 32)
    y_seen, e_emb = op.split(y)
    torch.testing.assert_close(e_emb, op.target(3).expand(2, -1))
    xg = _rand(2, 3, 32, 32, seed=2).requires_grad_(True)
    ll = op.log_likelihood(y, xg)
    phi = embed(crop_box(xg, op.box))
    d2 = (phi - op.target(3)).pow(2).sum(1)
    ll_e = -d2 / (2 * TAU**2) - 0.5 * EMBED_DIM * math.log(2 * math.pi * TAU**2)
    torch.testing.assert_close(ll, seen.log_likelihood(y_seen, xg) + ll_e, rtol=1e-5, atol=1e-2)
    (g,) = torch.autograd.grad(-d2.sum(), xg)  # the exemplar term alone: through phi, only inside the box
    assert bool(torch.isfinite(g).all())
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[10:22, 10:22] = True
    assert float(g[..., inside].abs().mean()) > 0 and float(g[..., ~inside].abs().max()) == 0
    # one step along the gradient brings the box's embedding closer to the exemplar's
    with torch.no_grad():
        d2_after = (embed(crop_box(xg + 1e-3 * g / g.abs().max(), op.box)) - op.target(3)).pow(2).sum(1)
    assert bool((d2_after < d2.detach()).all())
    # measure adds the seen pixels' noise only (the embedding part is x's own, module docstring)
    noiseless = _exemplar_op()
    torch.testing.assert_close(noiseless.measure(x), noiseless(x))


def test_exemplar_channels_crop_and_config():
    rgb = _rand(3, 16, 32, seed=4)  # 2:1, for a square box: its centre 16x16 square
    op = _exemplar_op(exemplar=rgb)
    centre = rgb[:, :, 8:24]
    torch.testing.assert_close(op.target(3), embed(prepare_exemplar(centre, 1.0, 3)), rtol=1e-5, atol=1e-6)
    # RGB exemplar for gray images: its BT.601 luma; gray exemplar for RGB images: repeated
    luma = (torch.tensor([0.299, 0.587, 0.114]).reshape(3, 1, 1) * centre).sum(0, keepdim=True)
    torch.testing.assert_close(op.target(1), embed(prepare_exemplar(luma, 1.0, 1)), rtol=1e-5, atol=1e-6)
    gray_op = _exemplar_op(exemplar=luma[None])
    torch.testing.assert_close(
        gray_op.target(3), embed(prepare_exemplar(luma.expand(3, -1, -1), 1.0, 3)), rtol=1e-5, atol=1e-6
    )
    # the channels from the observation's size
    assert op.input_shape((1, 32 * 32 + EMBED_DIM)) == (1, 1, 32, 32)
    with pytest.raises(ShapeError, match="fits no 32x32 image"):
        op.input_shape((1, 100))
    # config: tau as given (None: calibrated) and its scale, the seen pixels' noise; rebuilds the same operator
    scaled = _exemplar_op(exemplar=rgb, tau_scale=0.5, noise=_noise(0.05), channels=3)
    assert scaled.tau == 0.5 * TAU
    cfg = scaled.config()
    assert cfg["tau"] is None and cfg["tau_scale"] == 0.5 and cfg["noise"] == {"name": "gaussian", "std": 0.05}
    rebuilt = invgen.operator(cfg.pop("name"), **cfg)
    x = _rand(1, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), scaled(x))
    assert rebuilt.tau == scaled.tau and rebuilt.shape == (3, 32, 32)


def test_exemplar_errors_are_clear_and_raised_before_any_work():
    e = _rand(3, 8, 8)
    with pytest.raises(OptionError, match="no exemplar given"):
        invgen.operator("exemplar", mask="box", size=(16, 16))
    with pytest.raises(OptionError, match="got list"):
        invgen.operator("exemplar", mask="box", size=(16, 16), exemplar=[[0.5]])
    for bad in (torch.rand(2, 3, 8, 8), torch.rand(4, 8, 8), torch.rand(8, 8), torch.rand(1, 2, 8, 8)):
        with pytest.raises(ShapeError, match=r"expected an image tensor \(C, H, W\) or \(1, C, H, W\)"):
            invgen.operator("exemplar", mask="box", size=(16, 16), exemplar=bad)
    with pytest.raises(OptionError, match="floating point"):
        invgen.operator("exemplar", mask="box", size=(16, 16), exemplar=torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(RangeError, match=r"values in \[0, 1\]"):
        invgen.operator("exemplar", mask="box", size=(16, 16), exemplar=e * 255)
    with pytest.raises(RangeError, match="hides no pixel"):
        invgen.operator("exemplar", mask=torch.ones(16, 16), exemplar=e)
    with pytest.raises(RangeError, match="hides every pixel"):
        invgen.operator("exemplar", mask=torch.zeros(16, 16), exemplar=e)
    with pytest.raises(OptionError, match=r"needs the image size: pass size=\(H, W\)"):
        invgen.operator("exemplar", mask="box", exemplar=e)
    with pytest.raises(ShapeError, match="one mask for the whole batch"):
        invgen.operator("exemplar", mask=torch.ones(2, 1, 16, 16).index_fill_(3, torch.tensor([3]), 0), exemplar=e)
    with pytest.raises(RangeError, match="tau > 0"):
        invgen.operator("exemplar", mask="box", size=(16, 16), exemplar=e, tau_scale=0.0)
    op = invgen.operator("exemplar", mask="box", size=(16, 16), exemplar=e)
    with pytest.raises(ShapeError, match="mask has size 16x16 but"):
        op(torch.rand(1, 3, 32, 32))
    with pytest.raises(ShapeError, match="mask has size 16x16 but the observation y has size 8x8"):
        op.observe(torch.rand(1, 3, 8, 8))
    with pytest.raises(ShapeError, match="mask has size 16x16"):
        op.bind_shape((3, 20, 20))


# -- the CLI task ---------------------------------------------------------------------------------------------------
def test_exemplar_task_reads_its_exemplar_with_clear_errors(tmp_path):
    e_path = tmp_path / "e.png"
    save_png(_rand(3, 10, 14), e_path)
    op = build_task("exemplar", TaskOptions(exemplar=str(e_path), box_size=8, noise=0.02), 3, size=(16, 16))
    assert op.name == "exemplar" and op.shape == (3, 16, 16) and op.box == (4, 12, 4, 12)
    assert op.parts[0].noise.std == 0.02
    with pytest.raises(TaskError, match="needs an exemplar image: pass --exemplar FILE"):
        build_task("exemplar", TaskOptions(), 3, size=(16, 16))
    with pytest.raises(TaskError, match=r"--exemplar .*nothere\.png: no such file"):
        build_task("exemplar", TaskOptions(exemplar=str(tmp_path / "nothere.png")), 3, size=(16, 16))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(TaskError, match=r"bad\.png.*unknown format"):
        build_task("exemplar", TaskOptions(exemplar=str(tmp_path / "bad.png")), 3, size=(16, 16))
    with pytest.raises(TaskError, match="needs the image size"):
        build_task("exemplar", TaskOptions(exemplar=str(e_path)), 3)
    # a mask file needs no size; tau_scale reaches the operator
    mask = torch.ones(1, 12, 12)
    mask[:, 2:5, 3:9] = 0
    save_png(mask, tmp_path / "mask.png")
    op = build_task("exemplar", TaskOptions(exemplar=str(e_path), mask=str(tmp_path / "mask.png"), tau_scale=0.5), 1)
    assert op.box == (2, 5, 3, 9) and op.tau == 0.5 * TAU and op.shape == (1, 12, 12)


def test_exemplar_task_solves_an_image_file(tmp_path, data_dir):
    ds = invgen.dataset("cifar10", split="test")
    save_png(ds[0], tmp_path / "x.png")
    save_png(ds[9000], tmp_path / "e.png")
    options = TaskOptions(exemplar=str(tmp_path / "e.png"), box_size=16, noise=0.02)
    info = solve_image(
        tmp_path / "x.png", "exemplar", "diffusion-cifar10", tmp_path / "out", solver="dps", n_samples=2,
        degrade=True, options=options, solver_options={"steps": 5}, metrics=("psnr",),
    )  # fmt: skip
    assert info["operator"]["exemplar"] == str(tmp_path / "e.png") and info["exemplar"]["box"] == [8, 24, 8, 24]
    assert len(info["exemplar"]["embedding_d2"]) == 2 and (tmp_path / "out" / "contact_sheet.png").is_file()
    # without --degrade the image is the observation of the seen pixels
    info = solve_image(
        tmp_path / "out" / "observation.png", "exemplar", "diffusion-cifar10", tmp_path / "out2", solver="dps",
        n_samples=1, options=options, solver_options={"steps": 3},
    )  # fmt: skip
    assert info["nfe"] == 3
    with pytest.raises(TaskError, match="needs an exemplar image"):
        solve_image(tmp_path / "x.png", "exemplar", "diffusion-cifar10", tmp_path / "out3", degrade=True)
    assert not (tmp_path / "out3").exists()


# -- end to end: the exemplar moves the box towards the exemplar's embedding ----------------------------------------
def test_dps_with_an_exemplar_moves_the_box_towards_it(data_dir):
    ds = invgen.dataset("cifar10", split="test")
    x, e = ds[0][None], ds[9000]  # an airplane; a truck
    noise = _noise(0.01)
    plain = invgen.operator("inpaint", mask="box", size=(32, 32), box_size=20, noise=noise)
    op = invgen.operator("exemplar", mask="box", size=(32, 32), box_size=20, exemplar=e, noise=noise)
    y_seen = plain.measure(x, generator=torch.Generator().manual_seed(0))
    prior = invgen.prior("diffusion-cifar10")
    runs = {}
    for name, o, y in (("plain", plain, y_seen), ("exemplar", op, op.observe(y_seen))):
        s = invgen.solve(y, o, prior, solver="dps", steps=150, n_samples=2, seed=0).samples[:, 0].clamp(0, 1)
        with torch.no_grad():
            d2 = (embed(crop_box(s, op.box)) - op.target(3)).pow(2).sum(1)
        runs[name] = (d2, (plain(s) - y_seen).flatten(1).norm(dim=1))
    (d_plain, r_plain), (d_ex, r_ex) = runs["plain"], runs["exemplar"]
    assert bool((d_ex < d_plain).all()), (d_ex, d_plain)  # same seed, sample by sample
    assert float(d_ex.mean()) < 0.8 * float(d_plain.mean()), (d_ex, d_plain)
    assert bool((r_ex < 1.25 * r_plain).all()), (r_ex, r_plain)  # and the seen pixels stay consistent


def test_exemplar_cli_writes_the_usual_files_and_refuses_bad_input_in_one_line(tmp_path, data_dir, capsys):
    from invgen.cli import main

    ds = invgen.dataset("cifar10", split="test")
    save_png(ds[0], tmp_path / "x.png")
    save_png(ds[9000], tmp_path / "e.png")
    base = ["solve", "--task", "exemplar", "--image", str(tmp_path / "x.png"), "--degrade", "--prior"]
    base += ["diffusion-cifar10", "--solver", "dps", "--steps", "3", "-n", "2", "--no-progress", "--box-size", "0.5"]
    assert main([*base, "--exemplar", str(tmp_path / "e.png"), "--tau-scale", "0.5", "--out", str(tmp_path / "o")]) == 0
    assert {"sample_000.png", "sample_001.png", "mean.png", "info.json"} <= {p.name for p in (tmp_path / "o").iterdir()}
    capsys.readouterr()
    cases = [
        ([], "needs an exemplar image"),
        (["--exemplar", str(tmp_path / "missing.png")], "no such file"),
        (["--exemplar", str(tmp_path / "e.png"), "--tau-scale", "0"], "expected a finite number > 0"),
    ]
    for extra, message in cases:
        out = tmp_path / f"bad{len(extra)}"
        try:
            status = main([*base, *extra, "--out", str(out)])
        except SystemExit as exc:  # a usage error of argparse
            status = exc.code
        assert status == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists() or not any(out.iterdir())
