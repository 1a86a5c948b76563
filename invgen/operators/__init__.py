"""Degradation operators (one file per family) and noise models. Build them with ``invgen.operator(name, ...)``."""

from invgen.operators.base import LinearOperator, Operator, conjugate_gradient
from invgen.operators.noise import GaussianNoise, NoiseModel, PoissonNoise, noise

__all__ = ["GaussianNoise", "LinearOperator", "NoiseModel", "Operator", "PoissonNoise", "conjugate_gradient", "noise"]
