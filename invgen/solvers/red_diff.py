"""RED-diff: variational posterior sampling with a diffusion prior (Mardani, Song, Kautz & Vahdat, "A Variational
Perspective on Solving Inverse Problems with Diffusion Models", ICLR 2024; reference code ``NVlabs/RED-diff``).

RED-diff fits a Gaussian ``q(x0 | y) = N(mu, sigma_q^2 I)`` to the posterior by stochastic optimisation of its KL
divergence: a data term plus a score-matching regulariser over the diffusion levels, whose gradient (the Jacobian of
the denoiser dropped, "sg" = stop-gradient) is a plug-in of the denoiser's noise estimate. Adam runs on ``mu`` over
the prior's levels from the top down, one denoiser call per step; in the VE form of :mod:`invgen.solvers.schedules`,
per step ``s = s_T, ..., s_1``:

    x0   = mu + sigma_q n                      (reparameterised draw from q)
    x_s  = x0 + s eps,                         eps ~ N(0, I)
    eps_hat = (x_s - D(x_s, s)) / s            (the denoiser's noise estimate)
    loss = -log p~(y | x0) + lambda_s <sg(eps_hat - eps), x0>
    mu  <- Adam(mu, grad_mu loss)

and the result is ``mu + sigma_q n`` (fresh ``n``). What it samples: with the paper's ``sigma_q = 0`` (default) each
of the N samples is a separate optimisation of its own ``mu`` driven by its own noise draws ``eps``, so the spread of
the N samples is the optimiser's jitter around a regularised estimate, not the posterior's spread. Measured on the
exact oracle's inpainting problem (tests/test_solvers_red_diff.py), the sample variance is 0.04x the exact posterior
variance on the observed pixels (the N optimisations agree) and 1.4x on the missing ones: there only the regulariser
acts, and at low noise its gradient ``lambda_s (eps_hat - eps)`` is almost pure noise (``eps_hat ~ eps`` up to
``O(s)``), which Adam's per-coordinate normalisation turns into steps of order ``lr`` whatever its size. ``sigma_q > 0``
adds that much isotropic Gaussian spread and also enters the optimisation through the reparameterised ``x0``.

Scale: the reference works on [-1, 1] images (``x' = 2 x - 1``) with VP states ``x_t = sqrt(abar) x0' + sqrt(1 -
abar) eps``. Its noise estimate is ours unchanged (``eps_hat = (x_s - D) / s`` with ``s = sqrt(1 - abar) /
(2 sqrt(abar))``), its weight is ``lambda_t = lambda * sqrt(1 - abar) / sqrt(abar) = lambda * 2 s`` (``weighting=
"linear"``, the inverse square root of the SNR; the reference's other options ``"sqrt"``, ``"square"``, ``"log"``
(``log(1 + .)``), ``"trunc_linear"`` (``min(., 1)``), ``"power2over3"`` and ``"const"`` transform ``2 s`` the same
way), and its loss, written in our variables and multiplied by a constant (Adam is invariant to that), is

    loss = (M_x / M_y) ||y - A(x0)||^2 + lambda_s <sg(eps_hat - eps), x0>

with ``M_x``, ``M_y`` the per-item sizes of ``x`` and ``y``: the reference's data term is ``mean((y' - A x0')^2) / 2``
and its regulariser ``lambda_t mean((eps_hat - eps) x0')``, means over all elements, with no noise std
(``data_term="reference"``, the default). It is the Gaussian likelihood with the fixed std ``sqrt(M_y / (2 M_x))``
(0.71 for denoising) whatever the data's noise. ``data_term="likelihood"`` uses the operator's own ``-log p(y | x0)``
(:func:`invgen.solvers.base.likelihood_grad`: any noise model, nonlinear operators by autograd) with the same
regulariser. Adam's step is in parameter units, so the reference's ``lr = 0.25`` on ``x'`` is ``lr = 0.125`` on ``x``.

Defaults: 1000 steps, one per timestep of the prior's 1000-step schedule, ``t = 999, ..., 0`` (the paper's count,
the reference's batch script ``sample_batch.sh``; its ``exp`` config defaults to 50; its timesteps are
``range(0, 1000, 1000 // steps)`` reversed); ``lambda = 0.25`` (the
reference's ``grad_term_weight``, its README and the paper); ``lr = 0.25`` on [-1, 1] (its inpainting command in
``sample_test.sh``; its README example uses 0.5, its config default 0.1) with Adam's betas ``(0.9, 0.99)``;
``sigma_q = 0`` (``sigma_x0``); ``mu`` initialised at the pseudo-inverse of the reference's scale, ``A^+ y'`` on
[-1, 1], which is ``0.5 + A^+ (y - A 0.5)`` on ours (``A^+ y`` on the range of ``A^T``, gray 0.5 on its null space).

NFE: ``steps`` batched denoiser calls (no backward pass through the denoiser).

Measured on the exact oracle (tests/test_solvers_red_diff.py, float64, N = 1000, the defaults): 2-13x the
sliced-W2 noise floor and 1.6-19x the mixture-weight floor on the five easy problems (denoising is the worst: the N
optimisations collapse, sample variance 0.02x the exact, around a mean 0.045 off the exact one per pixel); on the
hard problems (invgen.testing.oracle) 8x / 17x (inpainting), 11x / 21x (sensing), 1.7x / 2.2x (SR x4).

What differs from the reference code:

* timesteps: ours are the prior's ``steps`` uniformly spaced timesteps ``round(linspace(T - 1, 0, steps))``
  (:func:`invgen.solvers.schedules.prior_sigmas`); the reference's ``range(0, T, T // steps)`` reversed starts at
  ``T - T // steps`` (990 for 100 steps). The two agree at the default 1000 steps;
* the output is ``mu`` after the last Adam step plus fresh ``sigma_q`` noise; the reference returns the draw
  ``mu + sigma_x0 n`` taken *before* its last Adam step;
* nonlinear operators (no pseudo-inverse) and linear ones without an SVD start from the gray image 0.5
  (``init="auto"``); the reference uses ad hoc inverses per operator (e.g. the inverse FFT of the magnitudes for
  phase retrieval). Without an SVD the pseudo-inverse is not damped: the Fourier pseudo-inverse of a Gaussian blur
  (std 1.5) turns noise 0.05 into values of +-3e4, from which Adam never recovers (measured on the diffusion-cpu
  deblurring cells: PSNR 3.1 dB from ``A^+ y``);
* each sample's loss is summed over its own elements: the reference averages over all elements of the batch, so its
  gradients are ours divided by ``batch x M_x`` and Adam's ``eps = 1e-8`` weighs ``batch x M_x`` times more there
  (at 256 x 256 RGB the last levels' regulariser gradients are of the order of that eps, which damps their steps;
  here eps is negligible). Otherwise the iterates are the same (checked against a transcription of the reference
  loop with its eps scaled to match);
* the reference's ``cond_awd`` / classifier-guidance options and its parallel (``reddiff_parallel``) variant are not
  here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.solvers.base import check_steps, likelihood_grad, stack_batch, unstack_batch
from invgen.solvers.schedules import prior_sigmas

WEIGHTINGS = {
    "linear": lambda r: r,
    "sqrt": math.sqrt,
    "square": lambda r: r * r,
    "log": lambda r: math.log(r + 1.0),
    "trunc_linear": lambda r: min(r, 1.0),
    "power2over3": lambda r: r ** (2 / 3),
    "const": lambda r: 1.0,
}
DATA_TERMS = ("reference", "likelihood")
INITS = ("auto", "pinv", "gray")
BETAS = (0.9, 0.99)  # the reference's Adam betas
ADAM_EPS = 1e-8


def _nonnegative(value: Any, name: str, strict: bool = False) -> float:
    v = float(value)
    if not (math.isfinite(v) and (v > 0 if strict else v >= 0)):
        raise RangeError(f"red_diff: {name} must be finite and {'>' if strict else '>='} 0, got {value!r}")
    return v


def data_grad(operator: Any, y: Tensor, x: Tensor, data_term: str) -> Tensor:
    """Gradient in ``x`` of the data term (module docstring): ``(M_x / M_y) ||y - A(x)||^2`` or ``-log p(y | x)``;
    the residual is whitened for a joint observation whose parts have different Gaussian stds
    (:mod:`invgen.operators.joint`), so its parts weigh as in their likelihoods.

    Shape: y ``(M, ...)``, x ``(M, C, H, W)`` -> like x.
    """
    if data_term == "likelihood":
        return -likelihood_grad(operator, y, x)[1]
    ratio = x[0].numel() / y[0].numel()
    whiten = operator.noise.whiten  # the identity but for a joint observation (invgen.operators.joint)
    if operator.linear:
        r = operator(x) - y
        return 2.0 * ratio * operator.adjoint(whiten(whiten(r)) if operator.noise.whitened else r)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = ratio * whiten(y - operator(xg)).pow(2).sum()
        (g,) = torch.autograd.grad(loss, xg)
    return g


def red_diff(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
    lr: float = 0.125,
    lam: float = 0.25,
    weighting: str = "linear",
    sigma_q: float = 0.0,
    data_term: str = "reference",
    init: str = "auto",
) -> Tensor:
    """RED-diff: Adam on the mean of a Gaussian variational posterior (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability (no autograd through it).
        operator: any invgen operator, linear or not (nonlinear ones must be differentiable).
        y: observations.
        n_samples: N samples per observation item: N independent optimisations, batched as ``N * B`` in one
            denoiser call per step.
        generator: the random generator.
        steps: Adam steps, one per level of the prior's schedule from the top down (1000, the paper's).
        lr: Adam's learning rate on our [0, 1] scale (0.125, the reference's 0.25 on [-1, 1] halved).
        lam: the regulariser's weight ``lambda`` (0.25, the reference's ``grad_term_weight``).
        weighting: ``lambda_s = lam * f(2 s)``, ``f`` one of ``"linear"`` (default, the paper's inverse square-root
            SNR), ``"sqrt"``, ``"square"``, ``"log"``, ``"trunc_linear"``, ``"power2over3"``, ``"const"``.
        sigma_q: the variational std on our scale (0, the paper's; the reference's ``sigma_x0`` halved).
        data_term: ``"reference"`` (the reference's unweighted mean-squared residual, module docstring) or
            ``"likelihood"`` (the operator's ``-log p(y | x)``).
        init: ``"auto"`` (``"pinv"`` for linear operators with an SVD, ``"gray"`` otherwise), ``"pinv"`` (``0.5 +
            A^+ (y - A 0.5)``, linear operators only) or ``"gray"`` (0.5 everywhere).

    Returns:
        ``(N, B, C, H, W)`` samples ``mu + sigma_q n``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "red_diff")
    lr = _nonnegative(lr, "lr", strict=True)
    lam = _nonnegative(lam, "lam")
    sigma_q = _nonnegative(sigma_q, "sigma_q")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"red_diff: weighting must be one of {sorted(WEIGHTINGS)}, got {weighting!r}")
    if data_term not in DATA_TERMS:
        raise ValueError(f"red_diff: data_term must be one of {DATA_TERMS}, got {data_term!r}")
    if init not in INITS:
        raise ValueError(f"red_diff: init must be one of {INITS}, got {init!r}")
    if init == "pinv" and not operator.linear:
        raise TypeError(f"red_diff: init='pinv' needs a linear operator, got the nonlinear {operator.name!r}")
    if data_term == "likelihood" and operator.noise.name == "gaussian" and float(operator.noise.std) <= 0:
        raise RangeError("red_diff: data_term='likelihood' needs a likelihood; the operator's Gaussian noise std is 0")
    check_tensor(y, "y")

    sigmas = prior_sigmas(prior, steps).tolist()
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    shape = (n_samples * x_shape[0], *x_shape[1:])
    kw = {"dtype": y.dtype, "device": y.device}
    ys = stack_batch(y, n_samples)

    mu = torch.full(shape, 0.5, **kw)
    if init == "pinv" or (init == "auto" and getattr(operator, "has_svd", False)):
        mu = mu + operator.pinv(ys - operator(mu))
    m, v = torch.zeros_like(mu), torch.zeros_like(mu)
    for k, s in enumerate(sigmas, start=1):
        x0 = mu + sigma_q * torch.randn(shape, generator=generator, **kw) if sigma_q > 0 else mu
        eps = torch.randn(shape, generator=generator, **kw)
        xs = x0 + s * eps
        eps_hat = (xs - prior.denoise(xs, s)) / s
        g = data_grad(operator, ys, x0, data_term) + lam * WEIGHTINGS[weighting](2.0 * s) * (eps_hat - eps)
        m = BETAS[0] * m + (1 - BETAS[0]) * g
        v = BETAS[1] * v + (1 - BETAS[1]) * g * g
        m_hat, v_hat = m / (1 - BETAS[0] ** k), v / (1 - BETAS[1] ** k)
        mu = mu - lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
    if sigma_q > 0:
        mu = mu + sigma_q * torch.randn(shape, generator=generator, **kw)
    return unstack_batch(mu, n_samples)
