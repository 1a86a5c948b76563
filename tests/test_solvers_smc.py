"""The sequential Monte Carlo samplers TDS, MCGdiff and FPS, measured against exact posteriors.

The plumbing (:mod:`invgen.solvers.smc`) is checked directly: systematic resampling's counts, the ESS, the running
evidence estimate, the particle layout. The samplers are run on the exact oracle problems (tests/oracle.py), and what
is pinned is what a user gets: the ``N`` output samples (one independent population of ``K`` particles per sample by
default), compared with exact posterior samples by sliced W2 and mixture-weight error (multiples of the noise
floors), the median nearest-neighbour distance of the samples over that of an exact set of the same size (a ratio
far below 1 means duplicated particles), and the evidence estimate ``log p(y)`` against the exact evidence of the
Gaussian mixture (computed here from the dense operator, independently of the plugin's posterior code).

What the numbers say (GOLDEN and the slow K-tables):

* TDS on the easy problems (100 geometric levels, K = 16, N = 1000 independent populations) is at 0.8-1.1x the SW
  floor and at most 1.5x the weight-error floor; on hard-inpaint (200 levels, N = 200 samples from ``populations =
  3200 / K``) its errors fall with K, from 3.7x / 6.8x (SW / weight) at K = 16 to 1.2x / 0.9x at K = 1024 (slow test;
  the NN ratio of 0.8 there is the price of 3 populations for 200 samples).
* MCGdiff is as good as TDS on the easy problems but less efficient: its potentials tilt the intermediate targets
  towards the prior's heavy components (the target at level s is ``p_s(z) N(z_obs; ybar, s^2 - nu^2)``), so on
  hard-inpaint the rare components are lost and its errors stay at 3.5-4.3x / 7-8x from K = 16 to K = 1024.
* FPS is not exact: it conditions on the drawn observation path as if every level's noise were independent, which
  over-counts the data near the end; its samples are over-concentrated (variance ratios 0.28-0.84) and get worse as
  K grows (pinned as measured), and its evidence estimate, unbiased in principle, is hundreds of nats too low.
* The evidence estimates converge to the chain's evidence, which differs from the exact one by the chain's own error
  (about +0.1 to +0.3 nats at 100 levels on the easy problems): TDS's error falls with K down to that level.
* None of the three is exact for a Gaussian prior at a finite step count (the DDPM chain is not), so there is no
  noise-floor test on the analytic Gaussian; the chain's error at a given step count is what the geometric levels of
  :func:`invgen.solvers.smc.levels` reduce.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import (
    CASES,
    DenseOperator,
    N,
    exact_log_evidence,
    floors,
    gen,
    nn_median,
    problem,
    sliced_wasserstein,
    weight_error,
)
from oracle import gaussian as _noise

import invgen
from invgen.errors import RangeError
from invgen.solvers import smc
from invgen.solvers.fps import fps
from invgen.solvers.mcgdiff import mcgdiff
from invgen.solvers.tds import tds

F64 = torch.float64
SOLVERS = {"tds": tds, "mcgdiff": mcgdiff, "fps": fps}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- helpers --------------------------------------------------------------------------------------------------------
def measure(solver: str, name: str, n: int = N, seed: int = 1, **options) -> dict[str, float]:
    """Run a solver through ``invgen.solve`` on an oracle problem and measure its ``n`` samples."""
    pb = problem(name)
    post = invgen.solve(pb.y, pb.op, pb.prior, solver=solver, n_samples=n, seed=seed, **options)
    s = post.samples[:, 0]
    exact = pb.exact[:n]
    fsw, fwe = floors(name, n)
    return {
        "sw": sliced_wasserstein(s, exact, pb.dirs) / fsw,
        "we": weight_error(s, *pb.mix()) / fwe,
        "nn": nn_median(s) / nn_median(exact),
        "var": pb.variance_ratio(s),
        "dlogz": float(post.extras["log_evidence"][0]) - exact_log_evidence(pb),
        "seconds": post.seconds,
        "nfe": post.nfe,
    }


# -- the SMC plumbing -----------------------------------------------------------------------------------------------
def test_systematic_resampling_counts_and_ess():
    g = gen(0)
    log_w = torch.randn(5, 40, generator=g, dtype=F64) * 2
    w = torch.softmax(log_w, 1)
    for m in (40, 7):
        idx = smc.systematic(log_w, m, g)
        assert idx.shape == (5, m) and bool((idx[:, 1:] >= idx[:, :-1]).all())
        counts = torch.zeros(5, 40, dtype=F64).scatter_add_(1, idx, torch.ones_like(idx, dtype=F64))
        # systematic resampling: every count is floor or ceil of m W_k
        assert bool(((counts - m * w).abs() < 1 + 1e-9).all())
    assert torch.allclose(smc.ess(log_w), 1 / (w * w).sum(1))
    assert torch.allclose(smc.ess(torch.zeros(3, 8, dtype=F64)), torch.full((3,), 8.0, dtype=F64))


def test_weights_evidence_resampling_and_layout():
    p, k = 3, 4
    wts = smc.Weights(p, k, threshold=0.5, device="cpu")
    inc = torch.randn(k * p, generator=gen(1), dtype=F64)
    wts.update(inc)  # particle layout k * P + p: population p holds inc[p::P]
    expect = torch.stack([torch.logsumexp(inc[q::p], 0) - math.log(k) for q in range(p)])
    assert torch.allclose(wts.log_z, expect)
    wts.update(torch.full((k * p,), 2.5, dtype=F64))  # a constant increment multiplies Z by e^2.5
    assert torch.allclose(wts.log_z, expect + 2.5)
    x = torch.arange(k * p, dtype=F64)  # particle k of population q has value k * P + q
    idx = torch.tensor([[3, 3, 0, 1], [2, 2, 2, 2], [0, 1, 2, 3]])
    assert smc.gather(x, idx).reshape(k, p).T.tolist() == [[9, 9, 0, 3], [7, 7, 7, 7], [2, 5, 8, 11]]
    # a degenerate population is resampled, a flat one is not
    never = smc.Weights(2, 8, threshold=0.5, device="cpu")
    never.update(torch.tensor([[0.0] * 8, [0.0] + [-50.0] * 7], dtype=F64))
    idx = never.resample(gen(2))
    assert idx is not None and idx[0].tolist() == list(range(8)) and idx[1].tolist() == [0] * 8
    assert never.resamples.tolist() == [0, 1] and never.ess == pytest.approx([(8 + 1) / 2], rel=1e-6)
    assert torch.allclose(never.log_w[1], torch.full((8,), -math.log(8), dtype=F64))
    assert smc.Weights(1, 4, 0.0, "cpu").resample(gen(0)) is None  # threshold 0: never


def test_draw_takes_each_output_sample_from_its_population():
    n_pop, b, k, n = 2, 3, 5, 6
    wts = smc.Weights(n_pop * b, k, threshold=0.5, device="cpu")
    flat = wts.draw(n, n_pop, gen(0))
    pops = (flat % (n_pop * b)).reshape(n, b)
    for i in range(n):
        assert pops[i].tolist() == [(i % n_pop) * b + j for j in range(b)]


# -- exactness on the easy problems ---------------------------------------------------------------------------------
SETTINGS = {
    "tds": {"steps": 100, "particles": 16},
    "mcgdiff": {"steps": 100, "particles": 16},
    "fps": {"steps": 100, "particles": 16},
}
# (SW multiple, weight-error multiple, NN ratio) of N = 1000 samples from independent populations, measured on this
# suite's seeds (CPU, float64); pinned to rtol GOLDEN_RTOL (the weight multiples, noise-dominated below 1, also to
# GOLDEN_WEIGHT_ATOL). FPS's variance ratios are 0.28 (identity) to 0.84: over-concentrated, as its module says.
GOLDEN = {
    "tds": {
        "identity": (1.07, 0.68, 0.97),
        "inpaint": (0.83, 0.55, 0.99),
        "superres": (0.99, 1.50, 0.95),
        "colorize": (0.79, 0.42, 0.98),
        "sensing": (0.92, 0.11, 0.97),
    },
    "mcgdiff": {
        "identity": (1.24, 2.08, 0.92),
        "inpaint": (1.08, 0.36, 0.93),
        "superres": (1.12, 1.55, 0.93),
        "colorize": (0.93, 0.80, 0.94),
        "sensing": (0.94, 0.15, 0.96),
    },
    "fps": {
        "identity": (7.55, 5.72, 0.54),
        "inpaint": (1.75, 0.82, 0.68),
        "superres": (2.54, 3.05, 0.80),
        "colorize": (2.07, 1.48, 0.75),
        "sensing": (2.69, 3.99, 0.78),
    },
}
GOLDEN_RTOL = 0.3
GOLDEN_WEIGHT_ATOL = 0.5
BOUND = {"tds": 1.5, "mcgdiff": 2.0, "fps": 10.0}  # SW multiples; FPS is biased (module docstring of fps.py)
FAST = (
    {("tds", name) for name in CASES}
    | {("mcgdiff", n) for n in ("inpaint", "superres", "sensing")}
    | {("fps", "inpaint")}
)  # the rest runs with -m slow (the default run stays near a minute on one thread)
CELLS = [
    pytest.param(solver, name, marks=() if (solver, name) in FAST else pytest.mark.slow, id=f"{solver}-{name}")
    for solver in SETTINGS
    for name in CASES
]


@pytest.mark.parametrize(("solver", "name"), CELLS)
def test_exactness_table(solver, name, capsys):
    r = measure(solver, name, **SETTINGS[solver])
    with capsys.disabled():
        print(
            f"\n[exactness] {solver} {SETTINGS[solver]} N = {N} {name:>9}: SW x{r['sw']:.2f} | weight x{r['we']:.2f} | "
            f"NN ratio {r['nn']:.2f} | variance ratio {r['var']:.2f} | log p(y) error {r['dlogz']:+.3f} | "
            f"{r['seconds']:.1f} s"
        )
    assert r["sw"] <= BOUND[solver], f"{solver} on {name}: SW {r['sw']:.2f}x the floor"
    g_sw, g_we, g_nn = GOLDEN[solver][name]
    assert r["sw"] == pytest.approx(g_sw, rel=GOLDEN_RTOL)
    assert r["we"] == pytest.approx(g_we, rel=GOLDEN_RTOL, abs=GOLDEN_WEIGHT_ATOL)
    assert r["nn"] == pytest.approx(g_nn, rel=GOLDEN_RTOL)


def test_tds_at_the_floor_on_a_hard_problem(capsys):
    """The default run's hard cell: TDS (K = 16, 100 levels, one population per sample) on hard-sensing, where the
    posterior puts 0.71 on a component of prior weight 0.022, is at the N = 100 floors (measured: SW 0.83x, weight
    0.68x, NN ratio 0.90, about 30 s on one thread); the guidance samplers are 4-7x there (docs/correctness)."""
    r = measure("tds", "hard-sensing", n=100, steps=100, particles=16)
    with capsys.disabled():
        print(f"\n[hard] tds hard-sensing K=16 N=100: SW x{r['sw']:.2f} | weight x{r['we']:.2f} | NN {r['nn']:.2f}")
    assert r["sw"] <= 1.5 and r["we"] <= 2.0 and r["nn"] >= 0.7, r
    assert r["sw"] == pytest.approx(0.83, rel=GOLDEN_RTOL)
    assert r["we"] == pytest.approx(0.68, rel=GOLDEN_RTOL, abs=GOLDEN_WEIGHT_ATOL)


# -- the evidence estimate ------------------------------------------------------------------------------------------
def _evidence_errors(solver: str, name: str, k: int, seeds: int = 3, n_pop: int = 4, steps: int = 100) -> list[float]:
    pb = problem(name)
    exact = exact_log_evidence(pb)
    out = []
    for seed in range(seeds):
        post = invgen.solve(pb.y, pb.op, pb.prior, solver=solver, n_samples=n_pop, seed=seed, steps=steps, particles=k)
        out.append(float(post.extras["log_evidence"][0]) - exact)
    return out


def test_tds_evidence_error_shrinks_with_k(capsys):
    """log p(y) from 4 populations, 3 seeds: the mean absolute error falls with K down to the chain's own error
    (about +0.08 on superres at 100 levels, the same with 400 pooled populations of any K)."""
    rows = {k: _evidence_errors("tds", "superres", k) for k in (2, 32, 512)}
    with capsys.disabled():
        for k, errs in rows.items():
            print(f"\n[evidence] tds superres K={k}: log p(y) errors {' '.join(f'{e:+.3f}' for e in errs)}", end="")
    mae = [sum(abs(e) for e in errs) / len(errs) for errs in rows.values()]
    assert mae[0] > mae[1] > mae[2], mae
    assert mae[2] < 0.2


def test_evidence_does_not_depend_on_the_resampling_rule():
    """1000 pooled populations of K = 4: never resampling (importance sampling), resampling whenever the weights are
    not uniform (threshold 1) and the adaptive rule give the same estimate, at the chain's own error."""
    pb = problem("superres")
    exact = exact_log_evidence(pb)
    errs, counts = [], []
    for thr in (0.0, 0.5, 1.0):
        post = invgen.solve(pb.y, pb.op, pb.prior, solver="tds", n_samples=1000, seed=0, steps=100, particles=4,
                            ess_threshold=thr)  # fmt: skip
        errs.append(float(post.extras["log_evidence"][0]) - exact)
        counts.append(post.extras["resamples"])
    assert counts[0] == 0 and counts[2] > 2 * counts[1] > 0, counts
    assert max(errs) - min(errs) < 0.08, errs  # Monte Carlo noise of the pooled estimate: about 0.03
    assert all(0 < e < 0.2 for e in errs), errs


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["mcgdiff", "fps"])
def test_evidence_error_against_k(solver, capsys):
    """MCGdiff's estimate converges more slowly than TDS's; FPS's (divided by the density of its drawn observation
    path) is unbiased in principle but far too variable to be of use (measured, not excused)."""
    rows = {k: _evidence_errors(solver, "superres", k) for k in (2, 32, 512)}
    with capsys.disabled():
        for k, errs in rows.items():
            print(
                f"\n[evidence] {solver} superres K={k}: log p(y) errors {' '.join(f'{e:+.3f}' for e in errs)}", end=""
            )
    mae = [sum(abs(e) for e in errs) / len(errs) for errs in rows.values()]
    if solver == "mcgdiff":
        assert mae[0] > mae[2] and mae[2] < 1.5, mae
    else:
        assert min(mae) > 10, mae


# -- what the user gets: independent populations against one shared population ------------------------------------
def test_independent_populations_against_one_shared_population(capsys):
    """N samples from N independent populations are as spread as exact samples; N draws from one population of
    K particles repeat particles (nearest-neighbour distances collapse), at 1/N of the cost."""
    opts = {"steps": 50, "particles": 64}
    indep = measure("tds", "inpaint", n=200, **opts)
    shared = measure("tds", "inpaint", n=200, populations=1, **opts)
    with capsys.disabled():
        print(f"\n[populations] tds inpaint N=200 K=64: independent NN ratio {indep['nn']:.2f} SW x{indep['sw']:.2f}"
              f" {indep['seconds']:.1f} s | one population NN {shared['nn']:.2f} SW x{shared['sw']:.2f}"
              f" {shared['seconds']:.2f} s")  # fmt: skip
    assert indep["nn"] > 0.85
    assert shared["nn"] < 0.3


# -- solve(): shapes, reproducibility, NFE, chunks --------------------------------------------------------------------
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_solve_shapes_reproducibility_nfe_and_chunks(solver):
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1), generator=gen(1))
    opts = {"steps": 6, "particles": 5}
    a = invgen.solve(y, op, prior, solver=solver, n_samples=3, seed=0, **opts)
    b = invgen.solve(y, op, prior, solver=solver, n_samples=3, seed=0, **opts)
    c = invgen.solve(y, op, prior, solver=solver, n_samples=3, seed=1, **opts)
    assert a.samples.shape == (3, 2, 1, 4, 4) and bool(torch.isfinite(a.samples).all())
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.nfe == 6, "one batched denoiser call per level"
    assert a.extras["ess"].shape == (6,) and a.extras["log_evidence"].shape == (2,)
    assert 0 <= a.extras["resamples"] <= 6 and bool(torch.isfinite(a.extras["log_evidence"]).all())
    assert 1 <= a.extras["ess_final"] <= 5
    # 3 populations x 2 items x 5 particles = 30 per level, in chunks of 8: 4 calls per level, the same samples
    d = invgen.solve(y, op, prior, solver=solver, n_samples=3, seed=0, chunk=8, **opts)
    assert d.nfe == 6 * 4
    assert torch.allclose(d.samples, a.samples, atol=1e-5)
    assert torch.allclose(d.extras["log_evidence"], a.extras["log_evidence"], atol=1e-4)
    # fewer populations: 2 populations give the 3 samples
    e = invgen.solve(y, op, prior, solver=solver, n_samples=3, seed=0, populations=2, **opts)
    assert e.samples.shape == (3, 2, 1, 4, 4)
    assert a.solver["name"] == solver and a.solver["particles"] == 5
    assert solver in invgen.compatible_solvers(prior)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_option_errors(solver):
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5)
    fn = SOLVERS[solver]

    def run(**kw):
        return fn(prior, op, y, n_samples=2, generator=gen(0), **{"steps": 3, **kw})

    with pytest.raises(ValueError, match=rf"{solver}: particles must be an integer >= 1, got 0"):
        run(particles=0)
    with pytest.raises(RangeError, match=rf"{solver}: ess_threshold must lie in \[0, 1\].*got 1.5"):
        run(ess_threshold=1.5)
    with pytest.raises(ValueError, match=rf"{solver}: populations must be None.*\[1, n_samples = 2\], got 3"):
        run(populations=3)
    with pytest.raises(ValueError, match=rf"{solver}: chunk must be None or an integer >= 1.*got 0"):
        run(chunk=0)
    with pytest.raises(ValueError, match=rf"{solver}: spacing must be one of .*got 'cubic'"):
        run(spacing="cubic")
    with pytest.raises(ValueError, match=rf"{solver}: steps must be an integer >= 1, got 0"):
        run(steps=0)
    with pytest.raises(TypeError, match="unknown option"):
        invgen.solver(solver, particle=4)
    if solver == "fps":
        with pytest.raises(ValueError, match="fps: cg_iters must be an integer >= 1, got 0"):
            run(cg_iters=0)


def test_operator_support_errors():
    prior = invgen.prior("gmm", image_shape=(1, 8, 8), seed=0)
    y = torch.full((1, 1, 8, 8), 0.5)
    blur = invgen.operator("blur", kernel="gaussian", sigma=1.0, noise=_noise(0.05))
    sketch = invgen.operator("sketch", noise=_noise(0.05))
    poisson = invgen.operator("identity", noise=invgen.noise("poisson", rate=100.0))
    noiseless = invgen.operator("identity")

    def run(fn, op):
        return fn(prior, op, y, n_samples=1, generator=gen(0), steps=2, particles=2)

    with pytest.raises(TypeError, match=r"mcgdiff: needs a linear operator with a cheap SVD.*'blur' has none"):
        run(mcgdiff, blur)
    with pytest.raises(TypeError, match=r"mcgdiff: needs a linear operator with an SVD; 'sketch' is nonlinear"):
        run(mcgdiff, sketch)
    with pytest.raises(TypeError, match="mcgdiff: needs Gaussian observation noise, got 'poisson'"):
        run(mcgdiff, poisson)
    with pytest.raises(TypeError, match="fps: needs a linear operator; 'sketch' is nonlinear"):
        run(fps, sketch)
    with pytest.raises(TypeError, match="fps: needs Gaussian observation noise, got 'poisson'"):
        run(fps, poisson)
    with pytest.raises(TypeError, match="fps: noiseless data need an operator with an SVD; 'blur' has none"):
        run(fps, invgen.operator("blur", kernel="gaussian", sigma=1.0))
    with pytest.raises(RangeError, match=r"tds: needs a likelihood.*std 0"):
        run(tds, noiseless)
    # supported: tds on any differentiable operator and noise model with a likelihood; noiseless SVD data
    for op in (sketch, poisson, blur):
        out, extras = run(tds, op)
        assert out.shape == (1, 1, 1, 8, 8) and bool(torch.isfinite(out).all()), op.name
        assert bool(torch.isfinite(extras["log_evidence"]).all()), op.name
    out, extras = run(mcgdiff, noiseless)
    assert torch.allclose(out, y.expand_as(out).to(out.dtype)), "noiseless identity: the samples are y"
    out, extras = run(fps, blur)
    assert bool(torch.isfinite(out).all()) and bool(torch.isnan(extras["log_evidence"]).all())


def test_mcgdiff_noiseless_samples_satisfy_the_data():
    """sigma_y = 0: the last step sets the observed spectral coordinates to the data, so A x = y exactly."""
    shape = (1, 8, 8)
    prior = invgen.prior("gmm", image_shape=shape, seed=0)
    for op in (
        invgen.operator("inpaint", mask="random", ratio=0.5, seed=0),
        invgen.operator("superres", scale=2, kernel="block"),
        invgen.operator("sensing", m=20, seed=0),
    ):
        y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1))
        s, _ = mcgdiff(prior, op, y, n_samples=3, generator=gen(1), steps=20, particles=8)
        err = max(float((op(s[i]) - y).abs().max()) for i in range(3))
        assert err < 1e-5, f"{op.name}: |A x - y| = {err:.2e}"
        assert float(s.std(0).mean()) > 1e-3, "the null space must still be sampled"


def test_fps_without_an_svd_matches_its_spectral_version():
    """FPS through conjugate gradients on a dense operator without an SVD, and through the SVD of the same inpainting
    operator: the same algorithm, so the same distance to the exact posterior (up to Monte Carlo error)."""
    pb = problem("inpaint")
    dense = DenseOperator(
        pb.op.to_matrix((1, *pb.prior.image_shape)), pb.prior.image_shape, noise=_noise(pb.op.noise.std)
    )
    y_dense = pb.y.reshape(1, -1)
    opts = {"steps": 50, "particles": 8}
    stats = {}
    for label, op, y in (("svd", pb.op, pb.y), ("cg", dense, y_dense)):
        post = invgen.solve(y, op, pb.prior, solver="fps", n_samples=N, seed=3, **opts)
        stats[label] = sliced_wasserstein(post.samples[:, 0], pb.exact, pb.dirs) / float(pb.sw_floor.max())
    assert stats["cg"] == pytest.approx(stats["svd"], rel=0.25), stats


# -- the K-tables on the hard problems (slow) -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("solver", ["tds", "mcgdiff"])
def test_k_table_hard_inpaint(solver, capsys):
    """hard-inpaint, 200 geometric levels, N = 200 output samples from ``populations = 3200 / K`` (3200 particles per
    cell, about 1.5 minutes each on one thread): TDS's errors fall with K and reach the floor (SW <= 1.5x, weight
    error <= 2x the N = 200 floors) at K = 1024; MCGdiff's do not move (module docstring)."""
    rows = {k: measure(solver, "hard-inpaint", n=200, steps=200, particles=k, populations=max(1, 3200 // k))
            for k in (16, 256, 1024)}  # fmt: skip
    with capsys.disabled():
        print(f"\n[K-table] {solver} hard-inpaint, 200 levels, N = 200, populations = 3200 / K")
        for k, r in rows.items():
            print(f"  K={k:>4}: SW x{r['sw']:.2f} | weight x{r['we']:.2f} | NN ratio {r['nn']:.2f} | log p(y) error "
                  f"{r['dlogz']:+.3f} | {r['seconds']:.0f} s")  # fmt: skip
    if solver == "tds":
        assert rows[1024]["sw"] <= 1.5 and rows[1024]["we"] <= 2.0
        assert rows[16]["sw"] > 2 * rows[1024]["sw"]
    else:
        assert min(r["we"] for r in rows.values()) > 3.0


@pytest.mark.slow
def test_mcgdiff_at_the_floor_on_hard_sr4(capsys):
    """hard-sr4 (d = 256), the docs/smc protocol: N = 200 samples from 3 populations of K = 1024, 200 levels. MCGdiff,
    whose proposal pulls the observed SVD coordinates (the 16 block means) to the data, is at the floor (measured
    1.17x / 1.88x, NN ratio 0.88, 216 s on one thread); TDS at the same budget is not (4.2x / 11.3x, docs/smc)."""
    r = measure("mcgdiff", "hard-sr4", n=200, steps=200, particles=1024, populations=3)
    with capsys.disabled():
        print(f"\n[K-table] mcgdiff hard-sr4 K=1024: SW x{r['sw']:.2f} | weight x{r['we']:.2f} | NN {r['nn']:.2f}")
    assert r["sw"] <= 1.5 and r["we"] <= 2.0, r
    assert r["sw"] == pytest.approx(1.17, rel=GOLDEN_RTOL)
