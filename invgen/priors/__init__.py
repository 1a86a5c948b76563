"""Prior capability protocols; the prior families themselves live in plugins."""

from invgen.priors.base import CAPABILITIES, Denoiser, Generator, LogDensity, Prior, Score, capabilities_of

__all__ = ["CAPABILITIES", "Denoiser", "Generator", "LogDensity", "Prior", "Score", "capabilities_of"]
