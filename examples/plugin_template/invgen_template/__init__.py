"""A template invgen plugin: an i.i.d. Gaussian pixel prior N(mean, std^2 I), exact in every capability."""

from __future__ import annotations

import math

import torch

import invgen


class IIDGaussianPrior(invgen.Prior):
    """Every pixel independent N(mean, std^2): the simplest prior with closed-form denoiser and score.

    Shape:
        x: ``(B, C, H, W)`` of any size.
    """

    name = "template-iid"
    capabilities = frozenset({"denoiser", "score", "log_density"})
    log_prob_kind = "exact"

    def __init__(self, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError(f"std: expected > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def _var(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        from invgen.checks import as_sigma

        return self.std**2 + as_sigma(sigma, x) ** 2

    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        return self.mean + (self.std**2 / self._var(x, sigma)) * (x - self.mean)

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        return -(x - self.mean) / self._var(x, sigma)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d = x[0].numel()
        sq = ((x - self.mean) ** 2).reshape(x.shape[0], -1).sum(1)
        return -0.5 * sq / self.std**2 - 0.5 * d * math.log(2 * math.pi * self.std**2)

    def config(self) -> dict:
        return {"name": self.name, "mean": self.mean, "std": self.std}


@invgen.hookimpl
def register_priors(register):
    register(
        "template-iid",
        IIDGaussianPrior,
        capabilities=("denoiser", "score", "log_density"),
        description="i.i.d. Gaussian pixels (template plugin)",
    )
