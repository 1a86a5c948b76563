"""Divergence is reported, not hidden: solvers stop on NaN/Inf or exploding states, solve() refuses non-finite
samples, and samples far off the data are flagged and left out of the posterior mean and std."""

from __future__ import annotations

import pytest
import torch

import invgen
from invgen.api import FLAG_RATIO, flag_samples
from invgen.errors import DivergenceError, NonFiniteError, RangeError
from invgen.solvers.base import DIVERGENCE_ADVICE, GENERIC_ADVICE, Solver, check_state


def _problem(std: float = 0.05, b: int = 2, shape=(1, 8, 8)):
    """A tiny inpainting problem with the analytic Gaussian prior."""
    prior = invgen.prior("gaussian", image_shape=shape)
    op = invgen.operator("inpaint", mask="box", noise=invgen.noise("gaussian", std=std))
    x = prior.sample(b, generator=torch.Generator().manual_seed(0)).clamp(0, 1)
    y = op.measure(x, generator=torch.Generator().manual_seed(1))
    return prior, op, x, y


# -- (c) the loops stop on a diverging state -----------------------------------------------------------------------
def test_ula_with_a_huge_step_stops_naming_ula_and_its_step_size():
    prior, op, _, y = _problem()
    with pytest.raises(DivergenceError) as err:
        invgen.solve(y, op, prior, solver="ula", n_samples=3, seed=0, steps=200, step_size=10.0)
    msg = str(err.value)
    assert "'ula'" in msg and "step_size" in msg and "step 10 of 200" in msg, msg
    assert "step_size=10" in msg, msg  # the value this run used
    assert err.value.solver == "ula" and err.value.step == 10
    assert isinstance(err.value, RuntimeError)  # not a RangeError about the input: nothing was wrong with it


def test_dps_with_a_huge_guidance_scale_stops_naming_zeta():
    prior, op, _, y = _problem()
    with pytest.raises(DivergenceError) as err:
        invgen.solve(y, op, prior, solver="dps", n_samples=2, seed=0, steps=20, zeta=1e9)
    msg = str(err.value)
    assert "'dps'" in msg and "zeta" in msg and "of 20" in msg, msg
    assert err.value.solver == "dps" and err.value.step in (10, 20)


def test_annealed_langevin_without_its_step_cap_stops_naming_eps():
    prior, op, _, y = _problem()
    with pytest.raises(DivergenceError, match=r"'annealed_langevin'.*eps"):
        invgen.solve(
            y, op, prior, solver="annealed_langevin", n_samples=2, seed=0, n_levels=3, steps_per_level=20, eps=10.0,
            step_cap=False,
        )  # fmt: skip


def test_healthy_runs_are_not_stopped_or_flagged():
    prior, op, _, y = _problem()
    for solver, options in (("ula", {"steps": 100}), ("mala", {"steps": 100}), ("dps", {"steps": 20})):
        post = invgen.solve(y, op, prior, solver=solver, n_samples=4, seed=0, **options)
        assert post.flagged is not None and post.flagged.shape == (4, 2) and not post.flagged.any(), solver
        assert post.warnings == []
        torch.testing.assert_close(post.mean, post.samples.mean(0))
        torch.testing.assert_close(post.std, post.samples.std(0))


def test_check_state_checks_every_tenth_step_and_the_last():
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    check_state(x, "ula", 5, 100)  # between checks: no sync, no error
    with pytest.raises(DivergenceError, match=r"'ula' diverged by step 10 of 100: its state holds 1 NaN/Inf"):
        check_state(x, "ula", 10, 100)
    with pytest.raises(DivergenceError, match=r"by step 7 of 7"):
        check_state(x, "ula", 7, 7)
    big = torch.full((1, 1, 2, 2), 2e6)
    with pytest.raises(DivergenceError, match=r"values up to \|x\| = 2e\+06.*smaller step_size"):
        check_state(big, "ula", 10, 10)
    check_state(torch.full((1, 1, 2, 2), 1e5), "ula", 10, 10)  # large but not exploded
    with pytest.raises(DivergenceError, match=GENERIC_ADVICE.replace("(", r"\(").replace(")", r"\)")):
        check_state(big, "my_solver", 10, 10)


def test_the_advice_table_names_options_that_the_solvers_have():
    """Every option name the table tells users to change is a real option of that solver."""
    for name, advice in DIVERGENCE_ADVICE.items():
        if name not in invgen.list_solvers():
            continue
        options = set(invgen.solver(name).defaults())
        named = {w.strip(",.()") for w in advice.replace("=", " ").split()} & {
            "step_size", "zeta", "steps", "eps", "lr", "lam", "clip", "burn_in", "linear_iters", "step_cap",
            "sigma_max", "annealing_steps", "langevin_step", "langevin_steps", "particles", "leapfrog", "guidance",
        }  # fmt: skip
        assert named, (name, advice)
        assert named <= options, (name, named - options)


# -- (a) solve() refuses non-finite samples ------------------------------------------------------------------------
def _returning(samples_fn):
    def fn(prior, operator, y, *, n_samples, generator):
        return samples_fn(operator, y, n_samples)

    return fn


def test_solve_refuses_non_finite_samples_naming_the_solver_and_its_option():
    _, op, x, y = _problem()

    def nan_sample(operator, y, n):
        s = x.expand(n, *x.shape).clone()
        s[1, 0, 0, 2, 3] = float("nan")
        return s

    with pytest.raises(DivergenceError) as err:
        invgen.solve(y, op, solver=Solver("ula", _returning(nan_sample)), n_samples=3)
    msg = str(err.value)
    assert "solver 'ula' returned non-finite samples: 1 of the 3 x 2" in msg and "step_size" in msg, msg
    with pytest.raises(DivergenceError, match=r"'homemade'.*smaller step size"):
        invgen.solve(y, op, solver=Solver("homemade", _returning(nan_sample)), n_samples=3)


def test_nan_met_inside_a_solver_becomes_a_divergence_error():
    """An operator meeting NaN mid-loop raises 'expected finite values'; solve() says it is the solver's divergence."""
    _, op, _, y = _problem()

    def nan_inside(operator, y, n):
        state = torch.full((n * y.shape[0], *y.shape[1:]), float("nan"))
        return operator(state)  # the operator's own input check raises NonFiniteError

    with pytest.raises(DivergenceError) as err:
        invgen.solve(y, op, solver=Solver("dps", _returning(nan_inside)), n_samples=2)
    msg = str(err.value)
    assert "solver 'dps' stopped on non-finite values" in msg and "expected finite values" in msg, msg
    assert "zeta" in msg
    assert isinstance(err.value.__cause__, NonFiniteError) and isinstance(err.value.__cause__, RangeError)


# -- (b) samples far off the data are flagged and left out of mean and std -----------------------------------------
def test_a_corrupted_sample_is_flagged_and_left_out_of_mean_and_std():
    _, op, x, y = _problem(std=0.05)
    g = torch.Generator().manual_seed(2)
    good = (x + 0.01 * torch.randn(5, *x.shape, generator=g)).clamp(0, 1)  # 5 samples near the truth

    def corrupted(operator, y, n):
        s = good.clone()
        s[3, 1] = s[3, 1] + 3.0  # sample 3 of item 1 ran off: residual ~60x its siblings' (noise 0.05)
        return s

    post = invgen.solve(y, op, solver=Solver("homemade", _returning(corrupted)), n_samples=5)
    expected = torch.zeros(5, 2, dtype=torch.bool)
    expected[3, 1] = True
    assert torch.equal(post.flagged, expected)
    assert len(post.warnings) == 1 and post.warnings[0].startswith("item 1, sample 3 has residual"), post.warnings
    assert "left out of the posterior mean and std" in post.warnings[0]
    # nothing hidden: the sample is still there; mean and std are those of the 4 others for item 1
    assert torch.equal(post.samples[3, 1], good[3, 1] + 3.0)
    keep = [0, 1, 2, 4]
    torch.testing.assert_close(post.mean[1], good[keep, 1].mean(0))
    torch.testing.assert_close(post.std[1], good[keep, 1].std(0))
    torch.testing.assert_close(post.mean[0], good[:, 0].mean(0))  # item 0 keeps all its samples
    torch.testing.assert_close(post.std[0], good[:, 0].std(0))
    # clamped() (what the metrics score) keeps the flags
    assert torch.equal(post.clamped(0, 1).flagged, post.flagged)
    torch.testing.assert_close(post.clamped(0, 1).mean, post.mean)


def test_flags_need_a_residual_far_above_the_siblings_and_the_noise_floor():
    op = invgen.operator("identity", noise=invgen.noise("gaussian", std=0.1))
    x = torch.full((1, 1, 8, 8), 0.5)
    y = x.clone()
    # residuals 0.02 sqrt(m) (three samples) and 0.3 sqrt(m): 15x the siblings' median but under the noise floor
    # 5 * 0.1 * sqrt(m): not flagged; 1.0 sqrt(m) (above both): flagged
    offsets = torch.tensor([0.02, -0.02, 0.02, 0.3]).reshape(4, 1, 1, 1, 1)
    flagged, warnings = flag_samples(x + offsets, op, y)
    assert not flagged.any() and warnings == []
    offsets[3] = 1.0
    flagged, warnings = flag_samples(x + offsets, op, y)
    assert flagged[:, 0].tolist() == [False, False, False, True] and len(warnings) == 1
    assert f"{1.0 / 0.02:.3g} times the median of its 3 siblings" in warnings[0], warnings
    # at most FLAG_RATIO times the siblings' median is never flagged, however large
    offsets[3] = 0.02 * FLAG_RATIO * 0.99
    op_noiseless = invgen.operator("identity")
    assert not flag_samples(x + offsets, op_noiseless, y)[0].any()
    # a single sample has no siblings: only a non-finite one would be flagged
    assert not flag_samples(x[None] + 5.0, op, y)[0].any()


def test_posterior_built_by_hand_with_flags():
    samples = torch.arange(24, dtype=torch.float32).reshape(3, 2, 1, 2, 2)
    flagged = torch.tensor([[False, True], [False, True], [True, True]])
    post = invgen.Posterior(samples, nfe=0, seconds=0.0, flagged=flagged)
    torch.testing.assert_close(post.mean[0], samples[:2, 0].mean(0))
    torch.testing.assert_close(post.std[0], samples[:2, 0].std(0))
    assert torch.isnan(post.mean[1]).all() and torch.isnan(post.std[1]).all()  # nothing kept: no silent average
    one_kept = invgen.Posterior(samples, nfe=0, seconds=0.0, flagged=torch.tensor([[True, False]] * 2 + [[False] * 2]))
    assert torch.equal(one_kept.std[0], torch.zeros(1, 2, 2))
    assert torch.equal(one_kept.mean[0], samples[2, 0])
