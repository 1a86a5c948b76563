"""RePaint: inpainting with an unconditional diffusion model and resampling (Lugmayr, Danelljan, Romero, Yu,
Timofte & Van Gool, CVPR 2022), in the VE form of :mod:`invgen.solvers.schedules`.

The reverse diffusion runs unconditionally (DDPM ancestral steps, :func:`invgen.solvers.ddpm.ancestral_step`) and,
before each denoising at level ``s``, the known pixels of the state are replaced by the observation diffused to that
level, combined by the mask ``m`` (1 = known):

    x  <- m * (y + sqrt(s^2 - sigma_y^2) n) + (1 - m) * x        (the paper's Eq. 8, with fresh noise n)
    x0 =  D(x, s);   x <- ancestral_step(x, x0, s, s')

Because the known pixels only enter through the denoiser, the unknown ones may disagree with them; RePaint's remedy
is *resampling*: following the jump schedule of the reference code (:func:`jump_schedule`), after every
``jump_length`` levels down the state is diffused back up ``jump_length`` levels by the forward process
``q(x_hi | x_lo)`` (VE: ``x <- x + sqrt(s_hi^2 - s_lo^2) n``, the whole image) and those levels are run again,
``jump_n_sample - 1`` times per stretch. The schedule's further knobs (``n_sample``: one-level back-and-forth moves
at every level; ``jump2_*``, ``jump3_*``: nested jumps inside each stretch; ``start_resampling``: no resampling above
that level index) follow the reference's ``get_schedule_jump`` exactly.

Noisy observations (our extension: RePaint assumes ``sigma_y = 0``). A known pixel of ``y = x_0 + sigma_y n`` *is*
that pixel of the diffusion state ``x_{sigma_y}``, so the forward process gives the known pixels at any level ``s >
sigma_y`` exactly as ``y + sqrt(s^2 - sigma_y^2) n`` (the injection above), and at ``s = sigma_y`` as ``y`` itself.
Below ``sigma_y`` the data carry no more information than ``x_{sigma_y}`` does, and the exact continuation is the
prior's reverse diffusion on every pixel (``p(x_0 | x_{sigma_y})`` integrated over the unknown pixels of
``x_{sigma_y}`` is ``p(x_0 | y)``). So a reverse move from ``s > sigma_y`` to ``s' < sigma_y`` stops at ``sigma_y``
to set the known pixels to ``y`` (one extra denoiser call there), and below ``sigma_y`` no pixel is replaced. A
resampling move up from ``s < sigma_y`` must keep what is known, ``x_{sigma_y} = y`` on the known pixels, so there it
draws from ``q(x_hi | x_lo, x_{sigma_y} = y)``: the Brownian bridge in ``s^2`` from ``x_lo`` to ``y`` (mean ``x_lo +
a (y - x_lo)``, variance ``a (sigma_y^2 - s_hi^2)``, ``a = (s_hi^2 - s_lo^2) / (sigma_y^2 - s_lo^2)``) up to
``sigma_y``, the forward process from ``y`` beyond; the plain forward move would forget the data (measured: 10x the
SW floor on the denoising oracle instead of 1.5x). With the identity operator (every pixel known) all this is exact
up to the discretisation of the prior's reverse diffusion: the chain reaches ``x_{sigma_y} = y`` and samples ``p(x_0 |
y)`` by the reverse diffusion from it (at the noise floor with 1000 levels; the ancestral steps under-disperse with
few levels below ``sigma_y``). With ``sigma_y = 0`` the known pixels of the output are set to ``y`` after the last
step (the injection at level 0).

Defaults are the reference's (``confs/*.yml``, ``schedule_jump_params``; the paper's Sec. 4): 250 levels of the
prior's schedule (``prior_sigmas``, evenly spaced timesteps: the reference's ``timestep_respacing: '250'``),
``jump_length = 10``, ``jump_n_sample = 10``, ``n_sample = 1``. The start is the VE image of ``x_T ~ N(0, I)``,
``0.5 + sqrt(s_max^2 + 1/4) n`` (:func:`invgen.solvers.ddpm.start`).

NFE: one denoiser call per downward move of the schedule, plus one per downward move that crosses ``sigma_y``
(:func:`nfe`); 2410 with the defaults and ``sigma_y = 0`` (250 levels plus 24 stretches re-run 9 times each).

What differs from the reference code (``andreas128/RePaint``):

* the DDPM step uses the fixed posterior variance of ``q(x_s' | x_s, x_0)``; the reference's guided-diffusion models
  learn an interpolated variance (``learn_sigma: true``), which a ``denoiser`` capability does not carry;
* ``clip`` (clamping ``D(x, s)`` to [0, 1]) is off by default as in the other solvers here, so exactness figures are
  those of the algorithm; the reference configs clip (``clip_denoised: true``);
* the reference skips the injection before the very first step (its state is pure noise at ``s_max``, where the
  injection is immaterial) and returns the model's output on the known pixels too; here the first step injects
  like every other, and with ``sigma_y = 0`` the output keeps ``y`` on the known pixels;
* observation noise is handled as above; the reference has none.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.operators.base import match_batch
from invgen.solvers.base import check_steps, stack_batch, unstack_batch
from invgen.solvers.ddpm import ancestral_step, start
from invgen.solvers.schedules import prior_sigmas

OPERATORS = ("inpaint", "identity")


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"repaint: {name} must be an integer >= 1, got {value!r}")
    return value


def _fresh(steps: int, length: int, n: int) -> dict[int, int]:
    """Jumps left at each stretch boundary ``0, length, 2 length, ... < steps - length``."""
    return dict.fromkeys(range(0, steps - length, length), n - 1)


def jump_schedule(
    steps: int,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    *,
    n_sample: int = 1,
    jump2_length: int = 1,
    jump2_n_sample: int = 1,
    jump3_length: int = 1,
    jump3_n_sample: int = 1,
    start_resampling: int | None = None,
) -> list[int]:
    """RePaint's resampling schedule (the reference's ``get_schedule_jump``): level indices from ``steps - 1``
    (noisiest) to ``-1`` (clean), each move one level; a move up is a forward re-noising, a move down a denoising.

    Walking down from ``steps``: after each step down to level ``t``, ``n_sample - 1`` one-level up-and-down moves
    (not at the top two levels); then, innermost first, a jump up of ``jump3_length``, ``jump2_length`` and
    ``jump_length`` levels where that jump kind has jumps left at ``t`` (each stretch boundary ``t`` of a kind starts
    with ``n - 1``); a jump of an outer kind restores the inner kinds' counts. ``start_resampling``: jumps and
    one-level moves only at levels ``t`` at most that (minus the jump's length), None: everywhere.

    Returns:
        The level indices, ending in ``-1``.
    """
    limit = math.inf if start_resampling is None else start_resampling
    lengths = (jump3_length, jump2_length, jump_length)  # innermost first: the order the reference checks them
    counts = (jump3_n_sample, jump2_n_sample, jump_n_sample)
    left = [_fresh(steps, k, n) for k, n in zip(lengths, counts, strict=True)]
    t, ts = steps, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if t + 1 < steps - 1 and t <= limit:
            for _ in range(n_sample - 1):
                ts += [t + 1, t]
        for kind, length in enumerate(lengths):
            if left[kind].get(t, 0) > 0 and t <= limit - length:
                left[kind][t] -= 1
                ts.extend(range(t + 1, t + length + 1))
                t += length
                for inner in range(kind):
                    left[inner] = _fresh(steps, lengths[inner], counts[inner])
    return [*ts, -1]


def levels(prior: Any, steps: int) -> list[float]:
    """Noise level of each level index: ``levels[k + 1]`` for index ``k`` in ``-1 .. steps - 1`` (``levels[0] = 0``)."""
    return [0.0, *reversed(prior_sigmas(prior, steps).tolist())]


def nfe(times: list[int], sigmas: list[float], sigma_y: float) -> int:
    """Denoiser calls of a schedule: one per move down, plus one per move down across ``sigma_y`` (module docstring).

    Args:
        times: level indices (:func:`jump_schedule`).
        sigmas: :func:`levels`.
        sigma_y: the observation noise std.
    """
    downs = [(sigmas[a + 1], sigmas[b + 1]) for a, b in itertools.pairwise(times) if b < a]
    return len(downs) + sum(s > sigma_y > s_next for s, s_next in downs)


def known_mask(operator: Any, x_shape: tuple[int, ...]) -> Tensor:
    """The binary mask of known pixels (bool, broadcastable to ``x_shape``) of an ``inpaint`` or ``identity``
    operator; raises ``TypeError`` for other operators and ``RangeError`` for soft masks."""
    name = getattr(operator, "name", type(operator).__name__)
    if name not in OPERATORS:
        raise TypeError(
            f"repaint: works on the 'inpaint' and 'identity' operators only (a pixel mask), got {name!r}; for other "
            "linear operators use ddnm (time travel), ddrm, pigdm or dps"
        )
    if name == "identity":
        return torch.ones((1,) * len(x_shape), dtype=torch.bool)
    mask = operator.mask_for(tuple(x_shape))
    if bool(((mask != 0) & (mask != 1)).any()):
        raise RangeError("repaint: needs a binary mask (0 = missing, 1 = known), got soft mask values in (0, 1)")
    return mask > 0


def repaint(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 250,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    n_sample: int = 1,
    jump2_length: int = 1,
    jump2_n_sample: int = 1,
    jump3_length: int = 1,
    jump3_n_sample: int = 1,
    start_resampling: int | None = None,
    clip: bool = False,
) -> Tensor:
    """RePaint inpainting with resampling (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: ``inpaint`` (binary mask) or ``identity`` (every pixel known), with Gaussian noise of any std
            below the prior's largest level (0 included).
        y: observations.
        n_samples: N samples per observation item, batched as ``N * B`` in one denoiser call per step.
        generator: the random generator.
        steps: levels of the prior's schedule (250, the reference's).
        jump_length: levels per resampling jump (10, the reference's).
        jump_n_sample: passes over each stretch of ``jump_length`` levels (10, the reference's; 1: no resampling).
        n_sample: one-level resampling passes at every level (1, the reference's: off).
        jump2_length, jump2_n_sample, jump3_length, jump3_n_sample: the nested jumps of the reference's schedule
            (1: off).
        start_resampling: resample only at level indices up to this (None: everywhere, the reference's default).
        clip: clamp the denoised estimate ``D(x, s)`` to [0, 1] before it is used (the reference's
            ``clip_denoised``; off by default so the exactness figures are those of the algorithm).

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, C, H, W)``.
    """
    check_steps(steps, "repaint")
    knobs = {
        "jump_length": jump_length,
        "jump_n_sample": jump_n_sample,
        "n_sample": n_sample,
        "jump2_length": jump2_length,
        "jump2_n_sample": jump2_n_sample,
        "jump3_length": jump3_length,
        "jump3_n_sample": jump3_n_sample,
    }
    for name, value in knobs.items():
        _count(value, name)
    for which in ("", "2", "3"):
        if knobs[f"jump{which}_n_sample"] > 1 and knobs[f"jump{which}_length"] >= steps:
            raise ValueError(
                f"repaint: jump{which}_length must be < steps = {steps} to resample, got {knobs[f'jump{which}_length']}"
            )
    if start_resampling is not None and (isinstance(start_resampling, bool) or not isinstance(start_resampling, int)):
        raise ValueError(f"repaint: start_resampling must be an integer or None, got {start_resampling!r}")
    check_tensor(y, "y")
    x_shape = (n_samples * y.shape[0], *tuple(operator.input_shape(tuple(y.shape)))[1:])
    known = known_mask(operator, x_shape)
    noise = operator.noise
    if noise.name != "gaussian":
        raise TypeError(f"repaint: needs Gaussian observation noise, got {noise.name!r}")
    sigma_y = float(noise.std)
    sig = levels(prior, steps)
    if sigma_y >= sig[-1]:
        raise RangeError(
            f"repaint: the observation noise std {sigma_y} must lie below the prior's largest noise level {sig[-1]:.4g}"
        )
    times = jump_schedule(
        steps,
        jump_length,
        jump_n_sample,
        n_sample=n_sample,
        jump2_length=jump2_length,
        jump2_n_sample=jump2_n_sample,
        jump3_length=jump3_length,
        jump3_n_sample=jump3_n_sample,
        start_resampling=start_resampling,
    )
    ys = stack_batch(y, n_samples)
    known = match_batch(known.to(ys.dtype), ys) > 0
    kw = {"dtype": y.dtype, "device": y.device}

    def randn() -> Tensor:
        return torch.randn(x_shape, generator=generator, **kw)

    def down(x: Tensor, s: float, s_next: float) -> Tensor:
        if s >= sigma_y:  # the known pixels of x_s, given x_{sigma_y} = y on them
            x = torch.where(known, ys + math.sqrt(s**2 - sigma_y**2) * randn(), x)
        x0 = prior.denoise(x, s)
        if clip:
            x0 = x0.clamp(0.0, 1.0)
        return ancestral_step(x, x0, s, s_next, randn())

    def bridge(x: Tensor, s: float, s_next: float) -> Tensor:
        # q(x_{s_next} | x_s, x_{sigma_y} = y) for s < sigma_y: the Brownian bridge in s^2 below sigma_y, the
        # forward process from y above it
        if s_next >= sigma_y:
            return ys + math.sqrt(s_next**2 - sigma_y**2) * randn()
        a = (s_next**2 - s**2) / (sigma_y**2 - s**2)
        return x + a * (ys - x) + math.sqrt(a * (sigma_y**2 - s_next**2)) * randn()

    x = start(operator, y, n_samples, sig[times[0] + 1], generator)
    for k, k_next in itertools.pairwise(times):
        s, s_next = sig[k + 1], sig[k_next + 1]
        if k_next > k:  # resampling: forward diffusion q(x_{s_next} | x_s), given x_{sigma_y} = y on known pixels
            up = x + math.sqrt(s_next**2 - s**2) * randn()
            if s < sigma_y:
                up = torch.where(known, bridge(x, s, s_next), up)
            x = up
            continue
        if s > sigma_y > s_next:  # stop at sigma_y, where the known pixels are y itself
            x = down(x, s, sigma_y)
            s = sigma_y
        x = down(x, s, s_next)
    if sigma_y == 0:
        x = torch.where(known, ys, x)
    return unstack_batch(x, n_samples)


__all__ = ["jump_schedule", "known_mask", "levels", "nfe", "repaint"]
