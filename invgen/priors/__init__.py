"""Prior capability protocols, and :func:`from_module` for any network; the prior families live in plugins."""

from invgen.priors.base import CAPABILITIES, Denoiser, Generator, LogDensity, Prior, Score, capabilities_of
from invgen.priors.module import ModulePrior, from_module
from invgen.priors.vp import VPSchedule

__all__ = [
    "CAPABILITIES",
    "Denoiser",
    "Generator",
    "LogDensity",
    "ModulePrior",
    "Prior",
    "Score",
    "VPSchedule",
    "capabilities_of",
    "from_module",
]
