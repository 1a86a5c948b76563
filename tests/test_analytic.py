"""The analytic priors (Gaussian, GMM) and their exact posteriors, checked against independent computations.

Every capability is compared with ``torch.distributions`` (log-densities, autograd scores, Tweedie's formula), and
the exact posteriors with the precision form ``Sigma_post = (Sigma^-1 + A^T A / s^2)^-1`` and the marginal
likelihood of ``y``, on dense matrices built independently of the plugin.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import DenseOperator as Dense
from oracle import mixture_responsibilities
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

import invgen
from invgen import registry
from invgen.errors import RangeError, ShapeError
from invgen_plugins.analytic.gaussian import Gaussian, grid_covariance
from invgen_plugins.analytic.gmm import GMM

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared machine spinning threads slow them 50x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spd(d: int, seed: int, scale: float = 0.02, floor: float = 2e-3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=F64)
    return scale * (m @ m.T) / d + floor * torch.eye(d, dtype=F64)


def _gaussian(shape=(1, 3, 3), seed=0) -> Gaussian:
    d = math.prod(shape)
    g = torch.Generator().manual_seed(seed + 10)
    return Gaussian(0.5 + 0.1 * torch.randn(shape, generator=g, dtype=F64), _spd(d, seed))


def _gmm(shape=(1, 3, 3), k=3, seed=0) -> GMM:
    d = math.prod(shape)
    g = torch.Generator().manual_seed(seed + 20)
    means = 0.5 + 0.15 * torch.randn(k, *shape, generator=g, dtype=F64)
    covs = torch.stack([_spd(d, seed + i) for i in range(k)])
    return GMM(torch.rand(k, generator=g, dtype=F64) + 0.2, means, covs)


def _mvn_score(mean, cov, x):
    """Autograd of an independent ``MultivariateNormal.log_prob``."""
    xg = x.detach().reshape(x.shape[0], -1).clone().requires_grad_(True)
    lp = MultivariateNormal(mean.reshape(-1), covariance_matrix=cov).log_prob(xg)
    (g,) = torch.autograd.grad(lp.sum(), xg)
    return g.reshape(x.shape)


# -- Gaussian ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.3])
def test_gaussian_capabilities_match_torch_distributions(sigma):
    prior = _gaussian()
    x = torch.rand(4, 1, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    cov_s = prior.cov + sigma**2 * torch.eye(9, dtype=F64)
    torch.testing.assert_close(prior.score(x, sigma), _mvn_score(prior.mean, cov_s, x), rtol=1e-9, atol=1e-9)
    if sigma > 0:  # Tweedie: E[x0 | x] = x + sigma^2 grad log p_sigma(x)
        tweedie = x + sigma**2 * _mvn_score(prior.mean, cov_s, x)
        torch.testing.assert_close(prior.denoise(x, sigma), tweedie, rtol=1e-9, atol=1e-9)
    ref = MultivariateNormal(prior.mean, covariance_matrix=prior.cov).log_prob(x.reshape(4, -1))
    torch.testing.assert_close(prior.log_prob(x), ref, rtol=1e-10, atol=1e-9)
    assert prior.log_prob_kind == "exact" and prior.capabilities == {"denoiser", "score", "log_density", "generator"}


def test_gaussian_per_item_sigma_and_dtype_follow_input():
    prior = _gaussian()
    x = torch.rand(3, 1, 3, 3, dtype=F64)
    sig = torch.tensor([0.0, 0.1, 0.5], dtype=F64)
    per_item = prior.denoise(x, sig)
    for i in range(3):
        torch.testing.assert_close(per_item[i : i + 1], prior.denoise(x[i : i + 1], float(sig[i])))
        torch.testing.assert_close(prior.score(x, sig)[i : i + 1], prior.score(x[i : i + 1], float(sig[i])))
    torch.testing.assert_close(per_item[0:1], x[0:1])  # sigma 0: the identity
    x32 = x.float()
    for out in (prior.denoise(x32, 0.1), prior.score(x32, 0.1), prior.log_prob(x32), prior.encode(x32)):
        assert out.dtype == torch.float32
    torch.testing.assert_close(prior.denoise(x32, 0.1), prior.denoise(x, 0.1).float(), rtol=1e-5, atol=1e-6)


def test_gaussian_generator_round_trip_and_sample_statistics():
    prior = _gaussian((2, 2, 2), seed=3)
    assert prior.latent_shape == (8,)
    z = torch.randn(5, 8, dtype=F64)
    x = prior.decode(z)
    assert x.shape == (5, 2, 2, 2)
    torch.testing.assert_close(prior.encode(x), z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prior.decode(prior.encode(x)), x, rtol=1e-9, atol=1e-9)
    s = prior.sample(40000, generator=torch.Generator().manual_seed(0), dtype=F64).reshape(40000, -1)
    se = (torch.diagonal(prior.cov) / 40000).sqrt()
    assert bool(((s.mean(0) - prior.mean).abs() < 5 * se).all())
    torch.testing.assert_close(torch.cov(s.T), prior.cov, atol=0.05 * float(prior.cov.abs().max()), rtol=0)
    assert prior.sample(3).dtype == torch.float32


def test_gaussian_validation_errors():
    mean = torch.full((1, 2, 2), 0.5)
    with pytest.raises(ShapeError, match=r"must be a \(4, 4\) matrix.*got shape \(3, 3\)"):
        Gaussian(mean, torch.eye(3))
    bad = torch.eye(4)
    bad[0, 1] = 0.5
    with pytest.raises(RangeError, match="must be symmetric"):
        Gaussian(mean, bad)
    with pytest.raises(RangeError, match=r"positive definite.*smallest eigenvalue"):
        Gaussian(mean, torch.diag(torch.tensor([1.0, 1.0, 0.0, 1.0])))
    with pytest.raises(RangeError, match="positive definite"):
        Gaussian(mean, -torch.eye(4))
    with pytest.raises(ShapeError, match=r"give image_shape=\(C, H, W\)"):
        Gaussian(torch.zeros(4), torch.eye(4))
    with pytest.raises(ShapeError, match=r"C \* H \* W = 4"):
        Gaussian(torch.zeros(4), torch.eye(4), image_shape=(1, 3, 3))
    assert Gaussian(torch.zeros(4), torch.eye(4), image_shape=(1, 2, 2)).image_shape == (1, 2, 2)
    with pytest.raises(ShapeError, match="expected images of 4 values"):
        Gaussian(mean, torch.eye(4)).score(torch.zeros(1, 1, 3, 3))


def test_gaussian_fit_recovers_parameters_with_shrinkage():
    truth = _gaussian((1, 2, 3), seed=5)
    data = truth.sample(20000, generator=torch.Generator().manual_seed(2), dtype=F64)
    fitted = Gaussian.fit(data, shrinkage=1e-3)
    assert fitted.image_shape == (1, 2, 3)
    torch.testing.assert_close(fitted.mean, truth.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(fitted.cov, truth.cov, atol=0.1 * float(truth.cov.abs().max()), rtol=0)
    const = Gaussian.fit(torch.full((5, 1, 2, 2), 0.3))  # zero sample covariance still gives a valid prior
    assert float(const.evals.min()) > 0
    full = Gaussian.fit(data, shrinkage=1.0)
    torch.testing.assert_close(full.cov, torch.diagonal(full.cov).mean() * torch.eye(6, dtype=F64))
    with pytest.raises(RangeError, match=r"shrinkage must lie in \[0, 1\]"):
        Gaussian.fit(data, shrinkage=2.0)


# -- GMM --------------------------------------------------------------------------------------------------------
def _mixture(prior: GMM, sigma: float) -> MixtureSameFamily:
    covs = prior.covs + sigma**2 * torch.eye(prior.d, dtype=F64)
    return MixtureSameFamily(Categorical(probs=prior.weights), MultivariateNormal(prior.means, covariance_matrix=covs))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("sigma", [0.0, 0.1, 0.4])
def test_gmm_capabilities_match_torch_distributions(sigma, tied):
    """``tied``: equal covariances take the one-rotation fast path; it must give what torch.distributions gives."""
    prior = _gmm()
    if tied:
        prior = GMM(prior.weights, prior.means.reshape(prior.k, 1, 3, 3), prior.covs[:1].expand(prior.k, 9, 9).clone())
    assert prior.tied == tied
    x = 0.5 + 0.2 * torch.randn(6, 1, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    mix = _mixture(prior, sigma)
    xg = x.reshape(6, -1).clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(mix.log_prob(xg).sum(), xg)
    torch.testing.assert_close(prior.score(x, sigma), auto.reshape(x.shape), rtol=1e-8, atol=1e-8)
    if sigma > 0:
        torch.testing.assert_close(prior.denoise(x, sigma), x + sigma**2 * auto.reshape(x.shape), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(
        prior.log_prob(x), _mixture(prior, 0.0).log_prob(x.reshape(6, -1)), rtol=1e-10, atol=1e-9
    )
    covs = prior.covs + sigma**2 * torch.eye(9, dtype=F64)
    torch.testing.assert_close(
        prior.responsibilities(x, sigma),
        mixture_responsibilities(x, prior.weights, prior.means, covs),
        rtol=1e-8,
        atol=1e-10,
    )


def test_gmm_log_space_weights_are_stable_far_from_every_component():
    prior = _gmm()
    x = torch.full((2, 1, 3, 3), 40.0, dtype=F64)
    for out in (prior.score(x), prior.denoise(x, 0.01), prior.log_prob(x), prior.responsibilities(x)):
        assert bool(torch.isfinite(out).all())
    assert float(prior.log_prob(x).max()) < -1e4


def test_gmm_per_item_sigma_sample_and_validation():
    prior = _gmm((2, 2, 2), k=2, seed=1)
    x = torch.rand(2, 2, 2, 2, dtype=F64)
    sig = torch.tensor([0.05, 0.3], dtype=F64)
    torch.testing.assert_close(prior.denoise(x, sig)[1:], prior.denoise(x[1:], 0.3))
    s = prior.sample(30000, generator=torch.Generator().manual_seed(0), dtype=F64).reshape(30000, -1)
    mean = (prior.weights[:, None] * prior.means).sum(0)
    assert float((s.mean(0) - mean).abs().max()) < 0.01
    assert prior.sample(2).dtype == torch.float32 and prior.sample(2).shape == (2, 2, 2, 2)
    means = prior.means.reshape(2, 2, 2, 2)
    with pytest.raises(RangeError, match="weights must be finite and > 0"):
        GMM([1.0, -1.0], means, prior.covs)
    with pytest.raises(ShapeError, match=r"covs must be \(K, d, d\) = \(2, 8, 8\)"):
        GMM([1.0, 1.0], means, prior.covs[:1])
    with pytest.raises(RangeError, match=r"covs\[1\] must be positive definite"):
        GMM([1.0, 1.0], means, torch.stack([prior.covs[0], torch.zeros(8, 8, dtype=F64)]))
    with pytest.raises(ShapeError, match=r"means must be \(K, d\) or \(K, C, H, W\) with K = 3"):
        GMM([1.0, 1.0, 1.0], means, prior.covs)
    with pytest.raises(ShapeError, match=r"give image_shape=\(C, H, W\)"):
        GMM([1.0, 1.0], prior.means, prior.covs)
    assert GMM([1.0, 1.0], prior.means, prior.covs, image_shape=(2, 2, 2)).image_shape == (2, 2, 2)


# -- exact posteriors ---------------------------------------------------------------------------------------------
def _precision_posterior(mu, cov, a, y, std):
    """Independent precision form: C = (Sigma^-1 + A^T A / s^2)^-1 and m = C (Sigma^-1 mu + A^T y / s^2)."""
    prec = torch.linalg.inv(cov) + a.T @ a / std**2
    cov_post = torch.linalg.inv(prec)
    return cov_post @ (torch.linalg.solve(cov, mu) + a.T @ y / std**2), cov_post


def _operators():
    n = invgen.noise("gaussian", std=0.08)
    g = torch.Generator().manual_seed(7)
    return {
        "dense": (Dense(torch.randn(5, 9, generator=g, dtype=F64) / 3, (1, 3, 3), noise=n), (1, 3, 3)),
        "inpaint-per-item": (
            invgen.operator("inpaint", mask=(torch.rand(2, 1, 3, 3, generator=g) > 0.4).float(), noise=n),
            (1, 3, 3),
        ),
        "superres": (invgen.operator("superres", scale=2, noise=n), (1, 4, 4)),
        "colorize": (invgen.operator("colorize", noise=n), (3, 2, 2)),
        "sensing": (invgen.operator("sensing", m=6, seed=1, noise=n), (1, 3, 3)),
    }


def _item_matrix(op, x_shape, b):
    """Column j of item b: the operator applied to the unit image e_j placed at item b of a batch of two."""
    d = math.prod(x_shape)
    cols = []
    for j in range(d):
        e = torch.zeros(2, d, dtype=F64)
        e[b, j] = 1
        cols.append(op(e.reshape(2, *x_shape))[b].reshape(-1))
    return torch.stack(cols, 1)


@pytest.mark.parametrize("name", list(_operators()))
def test_exact_posteriors_match_the_precision_form(name):
    op, x_shape = _operators()[name]
    gauss, gmm = _gaussian(x_shape, seed=2), _gmm(x_shape, seed=2)
    x = gmm.sample(2, generator=torch.Generator().manual_seed(3), dtype=F64).clamp(0, 1)
    y = op.measure(x, generator=torch.Generator().manual_seed(4))
    std = op.noise.std
    post_g, post_m = gauss.exact_posterior(op, y), gmm.exact_posterior(op, y)
    assert post_g.mean.shape == (2, *x_shape) and post_g.cov.shape == (2, gauss.d, gauss.d)
    assert post_m.weights.shape == (2, 3) and post_m.component_means.shape == (2, 3, *x_shape)
    for b in range(2):
        a, yb = _item_matrix(op, x_shape, b), y[b].reshape(-1)
        m_ref, c_ref = _precision_posterior(gauss.mean, gauss.cov, a, yb, std)
        torch.testing.assert_close(post_g.mean[b].reshape(-1), m_ref, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(post_g.cov[b], c_ref, rtol=1e-7, atol=1e-10)
        log_ev = torch.stack(
            [
                MultivariateNormal(
                    a @ gmm.means[k],
                    covariance_matrix=a @ gmm.covs[k] @ a.T + std**2 * torch.eye(a.shape[0], dtype=F64),
                ).log_prob(yb)
                for k in range(3)
            ]
        )
        w_ref = torch.softmax(torch.log(gmm.weights) + log_ev, 0)
        torch.testing.assert_close(post_m.weights[b], w_ref, rtol=1e-8, atol=1e-12)
        mix_mean = torch.zeros(gmm.d, dtype=F64)
        for k in range(3):
            m_k, c_k = _precision_posterior(gmm.means[k], gmm.covs[k], a, yb, std)
            torch.testing.assert_close(post_m.component_means[b, k].reshape(-1), m_k, rtol=1e-7, atol=1e-9)
            torch.testing.assert_close(post_m.component_covs[b, k], c_k, rtol=1e-7, atol=1e-10)
            mix_mean += w_ref[k] * m_k
        torch.testing.assert_close(post_m.mean[b].reshape(-1), mix_mean, rtol=1e-7, atol=1e-9)


def test_posterior_samples_match_mean_and_covariance():
    op = invgen.operator("inpaint", mask="random", ratio=0.5, seed=0, noise=invgen.noise("gaussian", std=0.1))
    gmm = _gmm((1, 3, 3), seed=4)
    y = op.measure(torch.full((2, 1, 3, 3), 0.5, dtype=F64), generator=torch.Generator().manual_seed(0))
    for post in (gmm.exact_posterior(op, y), _gaussian(seed=4).exact_posterior(op, y)):
        n = 40000
        s = post.sample(n, generator=torch.Generator().manual_seed(1))
        assert s.shape == (n, 2, 1, 3, 3) and s.dtype == F64
        for b in range(2):
            flat = s[:, b].reshape(n, -1)
            se = (torch.diagonal(post.cov[b]) / n).sqrt()
            assert bool(((flat.mean(0) - post.mean[b].reshape(-1)).abs() < 5 * se).all())
            torch.testing.assert_close(
                torch.cov(flat.T), post.cov[b], atol=0.04 * float(post.cov[b].abs().max()), rtol=0
            )
    # the posterior's component frequencies follow its weights
    post = gmm.exact_posterior(op, y)
    s = post.sample(20000, generator=torch.Generator().manual_seed(2))
    r = mixture_responsibilities(s[:, 0], post.weights[0], post.component_means[0], post.component_covs[0])
    torch.testing.assert_close(r.mean(0), post.weights[0], atol=0.01, rtol=0)


def test_noiseless_posterior_and_problem_errors():
    gauss = _gaussian((1, 4, 4))
    clean = invgen.operator("superres", scale=2)  # std 0: A Sigma A^T is invertible (A has full row rank)
    x = torch.rand(1, 1, 4, 4, dtype=F64)
    y = clean.measure(x)
    post = gauss.exact_posterior(clean, y)
    torch.testing.assert_close(clean(post.mean), y, rtol=0, atol=1e-10)
    torch.testing.assert_close(clean(post.sample(3)[:, 0]), y.expand(3, 1, 2, 2), rtol=0, atol=1e-8)
    with pytest.raises(RangeError, match=r"not positive definite.*noise std is 0"):
        gauss.exact_posterior(invgen.operator("inpaint", mask="half"), torch.zeros(1, 1, 4, 4, dtype=F64))
    with pytest.raises(TypeError, match=r"needs a linear operator.*'sketch'"):
        gauss.exact_posterior(invgen.operator("sketch"), torch.zeros(1, 1, 4, 4))
    poisson = invgen.operator("identity", noise=invgen.noise("poisson", rate=10))
    with pytest.raises(TypeError, match="needs Gaussian observation noise, got 'poisson'"):
        _gmm((1, 4, 4)).exact_posterior(poisson, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ShapeError, match=r"differs from the prior's image shape \(1, 4, 4\)"):
        gauss.exact_posterior(
            invgen.operator("identity", noise=invgen.noise("gaussian", std=0.1)), torch.zeros(1, 1, 3, 3)
        )


def test_posterior_follows_float32_observations():
    op = invgen.operator("identity", noise=invgen.noise("gaussian", std=0.1))
    y = torch.full((1, 1, 3, 3), 0.4)
    post = _gmm().exact_posterior(op, y)
    assert post.mean.dtype == post.cov.dtype == post.weights.dtype == torch.float32
    assert post.sample(2).dtype == torch.float32


# -- the plugin ---------------------------------------------------------------------------------------------------
def test_plugin_registers_through_its_entry_point():
    assert {"gaussian", "gmm"} <= set(invgen.list_priors())
    for name, caps in (
        ("gaussian", {"denoiser", "score", "log_density", "generator"}),
        ("gmm", {"denoiser", "score", "log_density"}),
    ):
        entry = registry.get("priors", name)
        assert entry.distribution == "invgen" and entry.plugin == "analytic"
        assert set(entry.meta["capabilities"]) == caps and entry.meta["description"]
        built = invgen.prior(name, image_shape=(1, 8, 8), seed=0)
        assert built.capabilities == caps and built.image_shape == (1, 8, 8)
    assert "mala" in invgen.compatible_solvers("gmm") and "ula" in invgen.compatible_solvers("gaussian")


def test_default_priors_are_seeded_image_like_and_rebuildable():
    a = invgen.prior("gmm", image_shape=(3, 4, 4), seed=0)
    b = invgen.prior("gmm", image_shape=(3, 4, 4), seed=0)
    c = invgen.prior("gmm", image_shape=(3, 4, 4), seed=1)
    assert torch.equal(a.means, b.means) and not torch.equal(a.means, c.means)
    assert a.k == 3
    s = a.sample(500, generator=torch.Generator().manual_seed(0))
    assert 0.4 < float(s.mean()) < 0.6 and float(((s >= 0) & (s <= 1)).float().mean()) > 0.95
    gauss = invgen.prior("gaussian", image_shape=(1, 8, 8), seed=2)
    s = gauss.sample(300, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert float(((s >= 0) & (s <= 1)).float().mean()) > 0.95
    # neighbouring pixels are correlated (image-like), far ones much less
    flat = s.reshape(300, -1)
    corr = torch.corrcoef(flat.T)
    assert float(corr[0, 1]) > 0.5 and float(corr[0, 63]) < float(corr[0, 1])
    config = a.config()
    rebuilt = invgen.prior(**config)
    x = a.sample(2, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(rebuilt.log_prob(x), a.log_prob(x))
    torch.testing.assert_close(invgen.prior(**gauss.config()).log_prob(s[:2]), gauss.log_prob(s[:2]))
    with pytest.raises(TypeError, match="give weights, means and covs, or image_shape"):
        invgen.prior("gmm")
    with pytest.raises(TypeError, match="give all of weights, means and covs"):
        invgen.prior("gmm", weights=[1.0])
    with pytest.raises(TypeError, match="give both mean and cov"):
        invgen.prior("gaussian", mean=torch.zeros(1, 2, 2))
    assert isinstance(grid_covariance((1, 2, 2), 1.0, 0.1, 0.01), torch.Tensor)
