"""Any network as a prior: :func:`from_module` wraps a ``torch.nn.Module`` into the ``denoiser`` and ``score``
capabilities on invgen's [0, 1] scale, so every solver runs with it.

invgen never unpickles a network (EDM, NCSN++ and score-SDE checkpoints are pickles of code): a user who has the
network in Python already hands the module itself over. Four parametrisations cover the common networks:

* ``eps``: ``net(x_t, t)`` on the VP state ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` at timestep ``t``
  returns the noise ``eps``;
* ``x0``: ``net(x_t, t)`` returns the clean image ``x0``;
* ``v``: ``net(x_t, t)`` returns ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022);
* ``edm``: ``net(x, sigma)`` on the VE state ``x = x0 + sigma n`` returns the denoised ``D(x; sigma)`` (Karras et al.
  2022, with the preconditioning inside the network), ``sigma`` a ``(B,)`` tensor on the data scale.

Conventions:

* the data scale: an image ``x`` on [0, 1] is ``lo + (hi - lo) x`` for ``data_range=(lo, hi)`` (default [-1, 1]),
  and a noise level ``sigma`` on [0, 1] is ``(hi - lo) sigma`` there;
* VP timesteps (``eps``, ``x0``, ``v``): a noise level ``s`` of the data scale is the *continuous* timestep ``t`` with
  ``sqrt((1 - abar_t) / abar_t) = s`` (:class:`~invgen.priors.vp.VPTimesteps`, linear in ``log s`` between integer
  timesteps, as the ``diffusers`` adapter does), passed as a float tensor ``(B,)``; ``timesteps="discrete"`` rounds it
  to the nearest integer for networks that take integers only (then the denoiser is exact at training levels only).
  Levels outside the schedule clamp the timestep to ``[0, T - 1]`` while the input scaling uses the requested level;
* an output with twice the input's channels is a learned-variance network (guided diffusion): its first half (the
  mean parametrisation) is used and the variance half dropped;
* an output with a ``.sample`` attribute (a diffusers ``UNet2DOutput``) is unwrapped.

The wrapped network is put in eval mode with its weights frozen (``requires_grad_(False)``); the solvers that need
gradients differentiate through it with respect to the image.

Example:
    >>> import torch, invgen
    >>> class Zero(torch.nn.Module):  # an epsilon network that predicts no noise
    ...     def forward(self, x, t):
    ...         return torch.zeros_like(x)
    >>> prior = invgen.priors.from_module(Zero(), parametrization="eps", schedule="linear")
    >>> x = torch.full((1, 1, 4, 4), 0.5)
    >>> bool(torch.allclose(prior.denoise(x, 0.1), x))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from invgen.checks import as_sigma, check_image
from invgen.priors.base import Prior
from invgen.priors.vp import VPSchedule, VPTimesteps, alphas_cumprod_from_config, linear_schedule_of

PARAMETRIZATIONS = ("eps", "x0", "v", "edm")
SCHEDULE_NAMES = ("linear", "cosine")


def schedule_alphas(schedule: object) -> tuple[Tensor, VPSchedule | None]:
    """``abar_t`` of a schedule given as a name, a scheduler config, a :class:`VPSchedule` or a tensor.

    Args:
        schedule: ``"linear"`` (Ho et al.: betas 1e-4 .. 0.02 over 1000 steps), ``"cosine"`` (Nichol & Dhariwal,
            1000 steps), a dict of diffusers scheduler fields (``num_train_timesteps``, ``beta_start``, ``beta_end``,
            ``beta_schedule``, ``trained_betas``), a :class:`VPSchedule`, or ``abar_t`` itself (decreasing in (0, 1)).

    Returns:
        ``(abar, linear)``: float64 ``abar_t`` of shape ``(T,)`` and the :class:`VPSchedule` when the betas are
        linear (the solvers' timestep grids follow it), else None.
    """
    if isinstance(schedule, VPSchedule):
        return schedule.alphas_cumprod(), schedule
    if isinstance(schedule, str):
        if schedule not in SCHEDULE_NAMES:
            raise ValueError(
                f"schedule: expected one of {SCHEDULE_NAMES}, a scheduler config dict, a VPSchedule or the "
                f"alphas_cumprod tensor, got {schedule!r}"
            )
        if schedule == "linear":
            return VPSchedule().alphas_cumprod(), VPSchedule()
        return alphas_cumprod_from_config({"beta_schedule": "squaredcos_cap_v2"}), None
    if isinstance(schedule, Mapping):
        cfg = dict(schedule)
        return alphas_cumprod_from_config(cfg), linear_schedule_of(cfg)
    if isinstance(schedule, Tensor) or hasattr(schedule, "__len__"):
        return torch.as_tensor(schedule, dtype=torch.float64).reshape(-1), None
    raise TypeError(
        f"schedule: expected a name {SCHEDULE_NAMES}, a scheduler config dict, a VPSchedule or the alphas_cumprod "
        f"tensor, got {type(schedule).__name__}"
    )


class ModulePrior(Prior):
    """A user's network as a prior with ``denoiser`` and ``score`` (see the module docstring for the conventions).

    Args:
        net: the network (a ``torch.nn.Module`` or any callable), called as described by ``parametrization``.
        parametrization: ``"eps"``, ``"x0"``, ``"v"`` or ``"edm"``.
        schedule: the VP training schedule (see :func:`schedule_alphas`); must be None for ``"edm"``.
        data_range: ``(lo, hi)``, the network's image range.
        channels: image channels, checked on every call (None: any).
        image_shape: ``(C, H, W)`` the network was trained on (None: any size; checked when given).
        timesteps: ``"continuous"`` (default) or ``"discrete"`` (rounded) VP timesteps.
        sigma_range: ``(sigma_min, sigma_max)`` on the [0, 1] scale where the denoiser is valid (informational; the
            default is the schedule's first and last level, or EDM's 0.002 .. 80 on the data scale).
        net_kwargs: extra keyword arguments of every call (e.g. ``{"y": labels}`` for a class-conditional network).
        name: the registry-style name the prior reports.

    Attributes:
        schedule: the :class:`VPSchedule` of a linear-beta model (the diffusion solvers' timestep grids follow it),
            else None (they use the default linear grid; an EDM network takes any level).
        learned_variance: None until the first call, then whether the network returned twice the channels.

    Shape:
        ``denoise(x, sigma)``: x ``(B, C, H, W)``, sigma a float or ``(B,)``; output ``(B, C, H, W)``.
    """

    capabilities = frozenset({"denoiser", "score"})

    def __init__(
        self,
        net: torch.nn.Module | Callable[..., Any],
        parametrization: str = "eps",
        schedule: object = "linear",
        data_range: tuple[float, float] = (-1.0, 1.0),
        *,
        channels: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
        timesteps: str = "continuous",
        sigma_range: tuple[float, float] | None = None,
        net_kwargs: Mapping[str, Any] | None = None,
        name: str = "module",
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a torch.nn.Module or a callable, got {type(net).__name__}")
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization: expected one of {PARAMETRIZATIONS}, got {parametrization!r}")
        if timesteps not in ("continuous", "discrete"):
            raise ValueError(f"timesteps: expected 'continuous' or 'discrete', got {timesteps!r}")
        try:
            lo, hi = (float(v) for v in data_range)
        except (TypeError, ValueError):
            raise ValueError(f"data_range: expected (lo, hi) with lo < hi, got {data_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"data_range: expected (lo, hi) with lo < hi, got {data_range!r}")
        if image_shape is not None:
            image_shape = tuple(int(v) for v in image_shape)
            if len(image_shape) != 3:
                raise ValueError(f"image_shape: expected (C, H, W), got {image_shape!r}")
            if channels is not None and channels != image_shape[0]:
                raise ValueError(f"channels ({channels}) differs from image_shape's ({image_shape[0]})")
            channels = image_shape[0]
        if isinstance(net, torch.nn.Module):
            net.eval().requires_grad_(False)
        self.net = net
        self.parametrization = parametrization
        self.lo, self.scale = lo, hi - lo
        self.channels = channels
        self.image_shape = image_shape
        self.discrete = timesteps == "discrete"
        self.net_kwargs = dict(net_kwargs or {})
        self.name = name
        self.learned_variance: bool | None = None
        if parametrization == "edm":
            if schedule is not None:
                raise ValueError("schedule: an 'edm' network takes the noise level itself; give schedule=None")
            self.timesteps, self.schedule = None, None
            default_range = (0.002 / self.scale, 80.0 / self.scale)
        else:
            if schedule is None:
                raise ValueError(f"schedule: a {parametrization!r} network needs its VP training schedule")
            abar, self.schedule = schedule_alphas(schedule)
            self.timesteps = VPTimesteps(abar)
            ls = self.timesteps.log_sigmas
            default_range = (float(ls[0].exp()) / self.scale, float(ls[-1].exp()) / self.scale)
        self.sigma_min, self.sigma_max = sigma_range if sigma_range is not None else default_range

    def _call(self, x: Tensor, cond: Tensor) -> Tensor:
        """One network call on the network's dtype and device; the output in ``x``'s dtype, variance half dropped."""
        p = next(self.net.parameters(), None) if isinstance(self.net, torch.nn.Module) else None
        dtype, device = (p.dtype, p.device) if p is not None else (x.dtype, x.device)
        cond_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        out = self.net(x.to(device, dtype), cond.to(device=device, dtype=cond_dtype), **self.call_kwargs(x))
        out = getattr(out, "sample", out)
        if not isinstance(out, Tensor):
            raise TypeError(f"{self.name}: the network returned {type(out).__name__}, expected a tensor")
        c = x.shape[1]
        if out.shape[0] == x.shape[0] and out.shape[2:] == x.shape[2:] and out.shape[1] == 2 * c:
            self.learned_variance = True
            out = out[:, :c]
        elif tuple(out.shape) != tuple(x.shape):
            raise ValueError(
                f"{self.name}: the network returned shape {tuple(out.shape)} for an input of {tuple(x.shape)}; "
                f"expected the input's shape (or {2 * c} channels for a learned-variance network)"
            )
        else:
            self.learned_variance = False
        return out.to(device=x.device, dtype=x.dtype)

    def call_kwargs(self, x: Tensor) -> dict[str, Any]:
        """Keyword arguments of the network call for the batch ``x``: ``net_kwargs`` (subclasses add per-batch ones,
        e.g. class labels)."""
        return self.net_kwargs

    def timestep(self, sigma: float | Tensor) -> Tensor:
        """The VP timestep (float64, CPU) the network gets for noise levels ``sigma`` on the [0, 1] scale."""
        if self.timesteps is None:
            raise ValueError(f"{self.name}: an 'edm' network has no timesteps (it takes the noise level)")
        t = self.timesteps(self.scale * torch.as_tensor(sigma, dtype=torch.float64))
        return t.round() if self.discrete else t

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """E[x0 | x] for ``x = x0 + sigma n`` from one network call (not clipped).

        Args:
            x: noisy images on the [0, 1] scale (any real values).
            sigma: noise standard deviation on the [0, 1] scale, a float or a ``(B,)`` tensor, >= 0.

        Returns:
            The denoised images on the [0, 1] scale, in ``x``'s dtype.

        Shape:
            x: ``(B, C, H, W)``; output: same.
        """
        check_image(x, "x", channels=self.channels, size=self.image_shape[1:] if self.image_shape else None)
        s = self.scale * as_sigma(sigma, x)  # (B, 1, 1, 1), data scale
        if bool((s < 0).any()):
            raise ValueError(f"sigma: expected noise levels >= 0, got a minimum of {float(s.min()) / self.scale}")
        xd = self.lo + self.scale * x
        if self.parametrization == "edm":
            x0 = self._call(xd, s.reshape(-1))
        else:
            t = self.timestep(as_sigma(sigma, x[:, :1, :1, :1].detach().double()).reshape(-1))  # float64 levels
            a = torch.rsqrt(1.0 + s**2)  # sqrt(abar) of the level s
            out = self._call(xd * a, t)
            if self.parametrization == "eps":
                x0 = xd - s * out
            elif self.parametrization == "v":
                x0 = a * (xd * a) - (s * a) * out
            else:
                x0 = out
        return (x0 - self.lo) / self.scale

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """Tweedie's score ``(denoise(x, sigma) - x) / sigma^2`` of the sigma-smoothed prior.

        Args:
            x: noisy images on the [0, 1] scale.
            sigma: noise standard deviation on the [0, 1] scale, > 0 (a float or a ``(B,)`` tensor).

        Returns:
            ``grad_x log p_sigma(x)``.

        Shape:
            x: ``(B, C, H, W)``; output: same.
        """
        s = as_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"{self.name}: the score needs sigma > 0 (use sigma >= {self.sigma_min:.3g})")
        return (self.denoise(x, s) - x) / s**2

    def config(self) -> dict[str, Any]:
        """What the prior is (a network object cannot be rebuilt from a name: keep the module to rebuild it)."""
        return {
            "name": self.name,
            "parametrization": self.parametrization,
            "data_range": [self.lo, self.lo + self.scale],
        }


def from_module(
    net: torch.nn.Module | Callable[..., Any],
    parametrization: str = "eps",
    schedule: object = "linear",
    data_range: tuple[float, float] = (-1.0, 1.0),
    **options: Any,
) -> ModulePrior:
    """Wrap a network into a prior with ``denoiser`` and ``score`` (see :class:`ModulePrior` and the module doc).

    Args:
        net: the network; ``net(x_t, t)`` for ``eps``/``x0``/``v`` and ``net(x, sigma)`` for ``edm``.
        parametrization: what it predicts: ``"eps"``, ``"x0"``, ``"v"`` or ``"edm"`` (the denoised image).
        schedule: the VP training schedule (``"linear"``, ``"cosine"``, a scheduler config dict, a
            :class:`~invgen.priors.vp.VPSchedule` or ``alphas_cumprod``); ``None`` for ``edm`` (the default
            ``"linear"`` is replaced by None there).
        data_range: the network's image range ``(lo, hi)``.
        **options: ``channels``, ``image_shape``, ``timesteps``, ``sigma_range``, ``net_kwargs``, ``name``.

    Returns:
        The prior; ``invgen.solve(y, op, prior)`` runs with it like with any registered prior.
    """
    if parametrization == "edm" and isinstance(schedule, str) and schedule == "linear":
        schedule = None
    return ModulePrior(net, parametrization, schedule, data_range, **options)
