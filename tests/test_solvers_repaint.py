"""RePaint (inpainting by replacement with resampling), checked against the reference schedule and exact answers.

* The jump schedule equals the reference's ``get_schedule_jump`` (golden lengths, move counts and values, taken from
  the reference function for the configurations below).
* The exactness table: the reference's defaults (250 levels, jump length 10, 10 passes) on the ``identity`` and
  ``inpaint`` problems of tests/oracle.py, printed and pinned (``GOLDEN``), with the no-resampling variant beside.
* With every pixel observed (``identity``) the noisy-data handling is exact (the chain reaches ``x_{sigma_y} = y``
  and then runs the prior's reverse diffusion): with 1000 levels the samples reach the noise floor, on the GMM
  oracle and on an analytic Gaussian, with resampling (the Brownian-bridge moves below ``sigma_y``) and without.
* NFE counted by ``invgen.solve`` against :func:`invgen.solvers.repaint.nfe`, shapes, seeds, noiseless data, option
  and operator errors, ``clip``.

What the numbers say: on ``inpaint`` RePaint is within 1.2x of both floors. On ``identity`` (sigma_y = 0.1) it sits
at 1.5x the SW floor and 2.6x the weight-error floor with 250 levels, with or without resampling: the error is the
discretisation of the ancestral sampler below ``sigma_y`` (about 15 levels there), gone at 1000 levels.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from oracle import N, directions, gen, noise_floor, problem, sliced_wasserstein
from oracle import gaussian as _noise

import invgen
from invgen.errors import RangeError
from invgen.solvers.repaint import jump_schedule, levels, nfe, repaint

F64 = torch.float64
FLOOR_FACTOR = 1.2
# (sliced W2, weight error), measured on this suite's seeds (CPU, float64)
GOLDEN = {
    "identity": {"defaults": (0.0093, 0.0573), "no resampling": (0.0091, 0.0600)},
    "inpaint": {"defaults": (0.0086, 0.0319), "no resampling": (0.0103, 0.0416)},
}
VARIANTS = {"defaults": {}, "no resampling": {"jump_n_sample": 1}}
GOLDEN_RTOL = 0.3
GOLDEN_WEIGHT_ATOL = 0.015


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# (arguments, length, moves down, first 25 values, last 5 values) of the reference's get_schedule_jump
SCHEDULES = [
    (
        (250, 10, 10, {}),
        4571,
        2410,
        [*range(249, 229, -1), 231, 232, 233, 234, 235],
        [3, 2, 1, 0, -1],
    ),
    (
        (20, 3, 2, {}),
        57,
        38,
        [19, 18, 17, 16, 15, 16, 17, 18, 17, 16, 15, 14, 13, 12, 13, 14, 15, 14, 13, 12, 11, 10, 9, 10, 11],
        [3, 2, 1, 0, -1],
    ),
    (
        (20, 3, 2, {"n_sample": 2}),
        129,
        74,
        [19, 18, 17, 18, 17, 16, 17, 16, 15, 16, 15, 16, 17, 18, 17, 18, 17, 16, 17, 16, 15, 16, 15, 14, 15],
        [1, 0, 1, 0, -1],
    ),
    (
        (30, 6, 2, {"jump2_length": 2, "jump2_n_sample": 2}),
        183,
        106,
        [29, 28, 27, 26, 27, 28, 27, 26, 25, 24, 25, 26, 25, 24, 23, 22, 23, 24, 23, 22, 21, 20, 21, 22, 21],
        [1, 2, 1, 0, -1],
    ),
    (
        (30, 6, 2, {"jump2_length": 2, "jump2_n_sample": 2, "jump3_length": 1, "jump3_n_sample": 2}),
        653,
        341,
        [29, 28, 29, 28, 27, 28, 27, 26, 27, 26, 27, 28, 27, 28, 27, 26, 27, 26, 25, 26, 25, 24, 25, 24, 25],
        [1, 0, 1, 0, -1],
    ),
    ((30, 5, 3, {"start_resampling": 12}), 71, 50, list(range(29, 4, -1)), [3, 2, 1, 0, -1]),
    ((10, 1, 1, {}), 11, 10, [*range(9, -1, -1), -1], [3, 2, 1, 0, -1]),
]


@pytest.mark.parametrize("case", SCHEDULES, ids=lambda c: str(c[0]))
def test_jump_schedule_matches_the_reference(case):
    (steps, length, n, kw), size, downs, first, last = case
    ts = jump_schedule(steps, length, n, **kw)
    assert len(ts) == size and ts[: len(first)] == first and ts[-5:] == last
    assert sum(b < a for a, b in itertools.pairwise(ts)) == downs
    assert ts[0] == steps - 1 and all(abs(a - b) == 1 for a, b in itertools.pairwise(ts))
    assert min(ts) == -1 and max(ts) == steps - 1


def test_jump_schedule_small_case_in_full():
    assert jump_schedule(12, 3, 3) == [
        11, 10, 9, 8, 7, 6, 7, 8, 9, 8, 7, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3, 4, 5, 6, 5, 4, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0,
        1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, -1,
    ]  # fmt: skip
    assert jump_schedule(8, 1, 1, n_sample=2) == [7, 6, 5, 6, 5, 4, 5, 4, 3, 4, 3, 2, 3, 2, 1, 2, 1, 0, 1, 0, -1]


@functools.cache
def _run(name: str, variant: str) -> tuple[float, float]:
    pb = problem(name)
    s = repaint(pb.prior, pb.op, pb.y, n_samples=N, generator=gen(1), **VARIANTS[variant])
    assert s.shape == (N, 1, *pb.prior.image_shape) and bool(torch.isfinite(s).all())
    return pb.stats(s[:, 0])


@pytest.mark.parametrize("name", list(GOLDEN))
def test_exactness_table(name, capsys):
    pb = problem(name)
    fsw, fwe = float(pb.sw_floor.max()), float(pb.we_floor.max())
    rows = {v: _run(name, v) for v in VARIANTS}
    with capsys.disabled():
        cells = " | ".join(
            f"{v}: SW {sw:.4f} (x{sw / fsw:.2f}) w {we:.4f} (x{we / fwe:.2f})" for v, (sw, we) in rows.items()
        )
        print(f"\n[exactness] repaint {name:>8} | {cells}")
    for v, (sw, we) in rows.items():
        assert sw <= 2.0 * fsw, f"{name} {v}: SW {sw:.4g} is {sw / fsw:.1f}x the floor"
        g_sw, g_we = GOLDEN[name][v]
        assert sw == pytest.approx(g_sw, rel=GOLDEN_RTOL), (name, v)
        assert we == pytest.approx(g_we, rel=GOLDEN_RTOL, abs=GOLDEN_WEIGHT_ATOL), (name, v)


FINE = {"steps": 1000, "jump_length": 5, "jump_n_sample": 5, "start_resampling": 60}  # resampling below sigma_y


@pytest.mark.parametrize("options", [FINE, {"steps": 1000, "jump_n_sample": 1}], ids=["resampling", "plain"])
def test_identity_reaches_the_floor(options, capsys):
    pb = problem("identity")
    s = repaint(pb.prior, pb.op, pb.y, n_samples=N, generator=gen(1), **options)
    sw, we = pb.stats(s[:, 0])
    fsw, fwe = float(pb.sw_floor.max()), float(pb.we_floor.max())
    with capsys.disabled():
        print(f"\n[identity, 1000 levels] {options}: SW x{sw / fsw:.2f}, weight err x{we / fwe:.2f}")
    assert sw <= FLOOR_FACTOR * fsw and we <= FLOOR_FACTOR * fwe


def test_identity_gaussian_prior_follows_the_chain_law(capsys):
    """With a Gaussian prior every step is linear-Gaussian, so the law of RePaint's output (identity operator, no
    resampling) is a Gaussian computed here in closed form: start at ``y`` at level ``sigma_y``, then the ancestral
    steps below it. The samples must match that law at the noise floor; its distance to the exact posterior is the
    ancestral sampler's discretisation (printed: the chain under-disperses, std 0.066 against 0.074 at 250 levels)."""
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    std = 0.1
    op = invgen.operator("identity", noise=_noise(std))
    y = op.measure(prior.sample(1, gen(0), dtype=F64), generator=gen(6))
    c, m, eye = prior.cov.to(F64), prior.mean.reshape(-1).to(F64), torch.eye(16, dtype=F64)
    path = [std, *(s for s in reversed(levels(prior, 250)) if s < std)]
    mean, cov = y.reshape(-1).clone(), torch.zeros(16, 16, dtype=F64)
    for s, s_next in itertools.pairwise(path):  # x <- (1 - r) D(x) + r x + s_up n, D(x) = m + K (x - m)
        k, r = c @ torch.linalg.inv(c + s**2 * eye), s_next**2 / s**2
        step = (1 - r) * k + r * eye
        mean = step @ mean + (1 - r) * (m - k @ m)
        cov = step @ cov @ step.T + s_next**2 * (1 - r) * eye
    root = torch.linalg.cholesky(cov)
    law = lambda n, g: (mean + torch.randn(n, 16, generator=g, dtype=F64) @ root.T).reshape(n, 1, 4, 4)  # noqa: E731
    dirs = directions(16)
    floor = float(noise_floor(law, N, dirs, pairs=20).max())
    s = repaint(prior, op, y, n_samples=N, generator=gen(1), jump_n_sample=1)[:, 0]
    sw = sliced_wasserstein(s, law(N, gen(99)), dirs)
    post = prior.exact_posterior(op, y)
    sw_post = sliced_wasserstein(s, post.sample(N, gen(99))[:, 0], dirs)
    with capsys.disabled():
        print(f"\n[chain law] repaint identity, Gaussian prior: SW to its law x{sw / floor:.2f}, to the posterior "
              f"x{sw_post / floor:.2f} (floor max {floor:.4f})")  # fmt: skip
    assert sw <= FLOOR_FACTOR * floor, f"SW {sw:.4g} above the floor {floor:.4g}"
    assert sw_post > 1.3 * floor  # the discretisation is visible: the test can tell the law from the posterior


@pytest.mark.parametrize("std", [0.0, 0.05])
def test_nfe_shapes_and_reproducibility(std):
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(std))
    y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1), generator=gen(1))
    opts = {"steps": 40, "jump_length": 4, "jump_n_sample": 3}
    a = invgen.solve(y, op, prior, solver="repaint", n_samples=3, seed=0, **opts)
    b = invgen.solve(y, op, prior, solver="repaint", n_samples=3, seed=0, **opts)
    c = invgen.solve(y, op, prior, solver="repaint", n_samples=3, seed=1, **opts)
    assert a.samples.shape == (3, 2, 1, 4, 4) and bool(torch.isfinite(a.samples).all())
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    ts = jump_schedule(40, 4, 3)
    downs = sum(b < a for a, b in itertools.pairwise(ts))
    assert downs == 40 + 9 * 2 * 4  # 9 stretch boundaries (0, 4, ..., 32), 2 re-runs of 4 levels each
    sig = levels(prior, 40)
    crossings = sum(sig[a + 1] > std > sig[b + 1] for a, b in itertools.pairwise(ts) if b < a)
    assert a.nfe == nfe(ts, sig, std) == downs + crossings
    assert (crossings > 0) == (std > 0)
    assert a.solver["name"] == "repaint" and a.solver["jump_length"] == 4
    assert nfe(jump_schedule(250, 10, 10), levels(prior, 250), 0.0) == 2410  # the defaults, noiseless


def test_noiseless_data_are_kept_and_the_holes_sampled():
    prior = invgen.prior("gmm", image_shape=(1, 8, 8), seed=0)
    op = invgen.operator("inpaint", mask="random", ratio=0.5, seed=0)
    y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1))
    s = repaint(prior, op, y, n_samples=4, generator=gen(1), steps=20, jump_length=5, jump_n_sample=2)
    known = op.mask.expand_as(y) > 0
    assert s.dtype == torch.float32 and bool(torch.isfinite(s).all())
    assert torch.equal(s[:, known], y[known].expand(4, -1))
    assert float(s[:, ~known].std(0).mean()) > 1e-3


class _OutOfRange:
    """A denoiser that always answers 5.0, far outside the image range."""

    capabilities = frozenset({"denoiser"})
    name = "out-of-range"

    def denoise(self, x, sigma):
        return torch.full_like(x, 5.0)


def test_clip_clamps_the_denoised_estimate():
    mask = torch.zeros(1, 4, 4, dtype=F64)
    mask[..., :2] = 1.0
    op = invgen.operator("inpaint", mask=mask)
    y = op.measure(torch.full((1, 1, 4, 4), 0.25, dtype=F64))
    hidden = mask.expand(1, 1, 4, 4) == 0
    for clip, expect in ((True, 1.0), (False, 5.0)):
        out = repaint(_OutOfRange(), op, y, n_samples=2, generator=gen(1), steps=5, jump_length=2, clip=clip)
        assert torch.allclose(out[:, hidden], torch.full_like(out[:, hidden], expect)), clip
        assert torch.allclose(out[:, ~hidden], torch.full_like(out[:, ~hidden], 0.25))


def test_operator_noise_and_option_errors():
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    y = torch.full((1, 1, 4, 4), 0.5)
    run = functools.partial(repaint, prior, n_samples=1, generator=gen(0), steps=10, jump_length=2)
    for name, kw in (("superres", {"scale": 2}), ("blur", {"kernel": "gaussian", "sigma": 1.0}), ("sketch", {})):
        with pytest.raises(
            TypeError, match=rf"repaint: works on the 'inpaint' and 'identity' operators only.*{name!r}"
        ):
            run(invgen.operator(name, **kw), y)
    soft = invgen.operator("inpaint", mask=torch.full((4, 4), 0.5))
    with pytest.raises(RangeError, match="repaint: needs a binary mask"):
        run(soft, y)
    with pytest.raises(TypeError, match="repaint: needs Gaussian observation noise, got 'poisson'"):
        run(invgen.operator("identity", noise=invgen.noise("poisson", rate=100.0)), y)
    with pytest.raises(
        RangeError, match=r"observation noise std 100\.0 must lie below the prior's largest noise level"
    ):
        run(invgen.operator("identity", noise=_noise(100.0)), y)
    op = invgen.operator("identity", noise=_noise(0.05))
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        repaint(prior, op, y, n_samples=1, generator=gen(0), steps=0)
    with pytest.raises(ValueError, match="repaint: jump_n_sample must be an integer >= 1, got 0"):
        run(op, y, jump_n_sample=0)
    with pytest.raises(ValueError, match=r"repaint: jump2_length must be an integer >= 1, got 1\.5"):
        run(op, y, jump2_length=1.5)
    with pytest.raises(ValueError, match="repaint: jump_length must be < steps = 10 to resample, got 10"):
        run(op, y, jump_length=10)
    with pytest.raises(ValueError, match="repaint: start_resampling must be an integer or None"):
        run(op, y, start_resampling="late")
