"""A score / log-density prior plugin in closed form: every pixel an independent two-level Gaussian mixture.

``p(x) = prod_i sum_k w_k N(x_i; m_k, s^2)``: each pixel is "background" (level ``m_0``) or "ink" (level ``m_1``)
with a little spread ``s``, a crude prior of binary-ish images such as digits. Adding noise of std ``sigma`` keeps
the form with variance ``v = s^2 + sigma^2``, so every capability is exact at every noise level:

* ``score(x, sigma) = sum_k r_k (m_k - x) / v`` with the responsibilities ``r_k`` of the smoothed mixture;
* ``denoise(x, sigma) = x + sigma^2 score(x, sigma)`` (Tweedie's formula, exact here);
* ``log_prob(x)``: the exact log-density, one value per image (shape ``(B,)``), ``log_prob_kind = "exact"``.

It takes images of any size (``image_shape = None``) and any channel count. The module is a plugin: ``main``
registers it, checks it with :func:`invgen.testing.check_registered` and solves a denoising problem with MALA (which
uses ``score`` and ``log_prob``) by the prior's registered name.

Run::

    python examples/score_plugin.py
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import Tensor

import invgen

PRIOR_NAME = "example-pixel-mixture"


class PixelMixturePrior(invgen.Prior):
    """Independent pixels, each ``sum_k w_k N(m_k, s^2)``.

    Args:
        levels: the component means ``m_k`` on the [0, 1] scale.
        weights: their probabilities ``w_k`` (normalised).
        spread: the std ``s`` of every component.

    Shape:
        x: ``(B, C, H, W)`` of any size; ``sigma`` a float or ``(B,)``.
    """

    name = PRIOR_NAME
    capabilities = frozenset({"denoiser", "score", "log_density"})
    log_prob_kind = "exact"
    image_shape = None  # any size
    sigma_min, sigma_max = 0.0, math.inf

    def __init__(
        self, levels: tuple[float, ...] = (0.1, 0.9), weights: tuple[float, ...] = (0.7, 0.3), spread: float = 0.1
    ) -> None:
        super().__init__()
        if len(levels) != len(weights) or spread <= 0 or min(weights) <= 0:
            raise ValueError(f"expected as many levels as positive weights and spread > 0, got {levels}, {weights}")
        w = torch.tensor(weights, dtype=torch.float64)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float64))
        self.register_buffer("log_w", torch.log(w / w.sum()))
        self.spread = float(spread)

    def _components(self, x: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
        """Per pixel and component: the log-densities of the smoothed mixture (``(..., K)``) and the variance."""
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        var = self.spread**2 + (s.reshape(-1, 1, 1, 1, 1) if s.dim() else s) ** 2
        d = x.to(torch.float64)[..., None] - self.levels
        return self.log_w - 0.5 * torch.log(2 * math.pi * var) - 0.5 * d**2 / var, var

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        logp, var = self._components(x, sigma)
        r = torch.softmax(logp, dim=-1)
        return (r * (self.levels - x.to(torch.float64)[..., None]) / var).sum(-1).to(x.dtype)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = s.reshape(-1, 1, 1, 1) if s.dim() else s
        return x + s**2 * self.score(x, sigma)

    def log_prob(self, x: Tensor) -> Tensor:
        logp, _ = self._components(x, 0.0)
        return torch.logsumexp(logp, dim=-1).flatten(1).sum(1).to(x.dtype)  # (B,): one value per image

    def config(self) -> dict:
        return {"name": self.name, "levels": self.levels.tolist(), "spread": self.spread}


@invgen.hookimpl
def register_priors(register):
    register(
        PRIOR_NAME,
        PixelMixturePrior,
        capabilities=("denoiser", "score", "log_density"),
        log_prob_kind="exact",
        image_shape=None,
        description="independent two-level Gaussian-mixture pixels, closed form (examples/score_plugin.py)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="fewer MALA steps")
    parser.add_argument("--out", help="unused: the example writes nothing")
    args = parser.parse_args(argv)

    module = sys.modules[__name__]
    invgen.plugin_manager().register(module, name="example-pixel-mixture-plugin")
    try:
        from invgen.testing import check_registered

        (report,) = check_registered(PRIOR_NAME)
        print(report)

        # Use it by name: denoise a 'digit' of two levels with MALA (score + log_prob) and the exact denoiser.
        x = torch.full((1, 1, 8, 8), 0.1)
        x[..., 2:6, 3:5] = 0.9
        op = invgen.operator("identity", noise=invgen.noise("gaussian", std=0.2))
        y = op.measure(x, generator=torch.Generator().manual_seed(args.seed))
        post = invgen.solve(y, op, PRIOR_NAME, solver="mala", n_samples=16, seed=args.seed,
                            steps=100 if args.smoke else 500)  # fmt: skip
        mse_y = float(((y - x) ** 2).mean())
        mse_mala = float(((post.mean - x) ** 2).mean())
        print(f"metrics mala/{PRIOR_NAME}: mse_y={mse_y:.4f} mse_posterior_mean={mse_mala:.4f} nfe={post.nfe}")
        return 0 if report.ok else 1
    finally:
        invgen.plugin_manager().unregister(module)


if __name__ == "__main__":
    raise SystemExit(main())
