"""The solver :func:`invgen.solve` and ``invgen solve`` use when none is named: chosen by what the prior and the
operator offer, with the options that make it work at its step count.

The rules, first match wins (the measurements behind them: ``docs/defaults.md``, made by
``python tools/measure_defaults.py``):

1. a prior with a ``score`` and a ``log_density`` (analytic, flow, EBM): ``mala``, exact in the limit;
2. a ``denoiser`` (diffusion priors), by operator:

   * linear with a cheap SVD (``has_svd``: identity, inpaint, superres, colorize, sensing) and Gaussian noise:
     ``ddnm`` (DDNM+) at 50 steps, near the best on most such tasks at a twentieth of DPS's 1000 steps (not on
     large inpainting holes, where DPS at 250 steps leads);
   * any other operator with Gaussian noise (circular blur, the nonlinear sketch; std > 0 if nonlinear):
     ``diffpir`` at 50 steps on DDIM's ``uniform`` timesteps (its ``quad`` default falls apart below about 50
     steps: deblurring at 20 steps gave 9.7 dB against 23.3 dB uniform), with a closed-form, conjugate-gradient or
     gradient data step;
   * otherwise (Poisson noise, or a noiseless nonlinear operator): ``dps`` at 250 steps (the step count of the
     published diffusion tables), whose norm guidance needs no Gaussian likelihood;

3. a ``generator`` (VAE, GAN): ``latent_map`` (CSGM);
4. a ``score`` alone: ``ula``;
5. no prior: ``tikhonov``.

A user's own options (``steps=20``) are applied over the default's; every default above keeps working from about 20
steps up (the table in ``docs/defaults.md`` has the 20-step rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from invgen import registry


@dataclass(frozen=True)
class DefaultChoice:
    """The solver chosen when none is named.

    Attributes:
        name: the registered solver.
        options: its options (a user's own options are applied over them).
        reason: what it was chosen for, e.g. ``"a linear operator with an SVD"``.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def describe(self, options: dict[str, Any] | None = None) -> str:
        """``"ddnm, steps=50 (default for a linear operator with an SVD; --solver / solver= to change)"``, with
        ``options`` (the effective ones, the user's included) in place of the default's own."""
        shown = self.options if options is None else options
        opts = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in shown.items())
        return f"{self.name}{', ' + opts if opts else ''} (default for {self.reason}; --solver / solver= to change)"


def _usable(name: str, caps: frozenset[str]) -> bool:
    entries = registry.entries("solvers")
    return name in entries and set(entries[name].meta.get("needs", ())) <= caps


def _gaussian_std(operator: Any) -> float | None:
    noise = getattr(operator, "noise", None)
    if getattr(noise, "name", None) != "gaussian" or getattr(noise, "std", None) is None:
        return None
    return float(noise.std)


def diffusion_default(operator: Any) -> DefaultChoice:
    """The default for a prior with a ``denoiser``, by what ``operator`` offers (module docstring, rule 2)."""
    std = _gaussian_std(operator)
    linear = bool(getattr(operator, "linear", False))
    if linear and getattr(operator, "has_svd", False) and std is not None:
        return DefaultChoice("ddnm", {"steps": 50}, "a linear operator with an SVD")
    if std is not None and (std > 0 or linear):  # noiseless: diffpir's data step is the projection on A x = y
        what = "a linear operator without an SVD" if linear else "a nonlinear operator"
        return DefaultChoice("diffpir", {"steps": 50, "spacing": "uniform"}, what)
    why = "noiseless nonlinear operator" if std is not None else f"{getattr(operator.noise, 'name', '?')} noise"
    return DefaultChoice("dps", {"steps": 250}, f"a {why} (no Gaussian likelihood for diffpir)")


def default_solver(capabilities: frozenset[str], operator: Any) -> DefaultChoice:
    """The solver to use for a prior with ``capabilities`` on ``operator`` when none is named (module docstring).

    Args:
        capabilities: the prior's capabilities (``invgen.priors.base.capabilities_of(prior)``; empty: no prior).
        operator: the forward operator with its noise model.

    Returns:
        A :class:`DefaultChoice` (name, options, reason).

    Example:
        >>> import invgen
        >>> from invgen.defaults import default_solver
        >>> op = invgen.operator("superres", scale=4, noise=invgen.noise("gaussian", std=0.05))
        >>> default_solver(frozenset({"denoiser", "score"}), op).describe()
        'ddnm, steps=50 (default for a linear operator with an SVD; --solver / solver= to change)'
    """
    caps = frozenset(capabilities)
    if _usable("mala", caps):
        return DefaultChoice("mala", {}, "a prior with a score and a log-density (exact in the limit)")
    if "denoiser" in caps:
        choice = diffusion_default(operator)
        if _usable(choice.name, caps):
            return choice
    if _usable("latent_map", caps):
        return DefaultChoice("latent_map", {}, "a generator prior")
    if _usable("ula", caps):
        return DefaultChoice("ula", {}, "a prior with a score only")
    return DefaultChoice("tikhonov", {}, "no prior" if not caps else "a prior no default solver can use")
