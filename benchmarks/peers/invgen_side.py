"""invgen's side of the side-by-side frontier: its diffusion samplers through ``invgen.solve``, at the NFE-matched
settings of the invgen-only frontier (``benchmarks/suites/frontier.yaml``), every other option at its default.

The prior is what ``invgen.prior(name)`` gives (float32 network calls, channels-last weights on CPU: invgen's own
defaults). NFE is counted by a forward pre-hook on the prior's network (evaluations / chains), or, for the oracle's
analytic prior, by ``Posterior.nfe`` (batched denoiser calls, one per step for every chain).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from peers.common import EvalCounter

LIBRARY = "invgen"
SAMPLERS = ("pigdm", "ddrm", "ddnm", "diffpir", "dps", "daps", "red_diff", "mmps", "pnp_dm", "repaint")
STEP_SAMPLERS = ("pigdm", "ddrm", "ddnm", "diffpir", "dps", "red_diff", "mmps")  # one network call per step
# the samplers whose NFE is a product of several settings: frontier.yaml's choices for about 20 / 50 / 100 NFE
MATCHED: dict[str, dict[int, dict[str, Any]]] = {
    "daps": {
        20: {"annealing_steps": 10, "ode_steps": 2},
        50: {"annealing_steps": 25, "ode_steps": 2},
        100: {"annealing_steps": 20, "ode_steps": 5},
    },
    "pnp_dm": {
        20: {"iterations": 3, "prior_steps": 10},
        50: {"iterations": 7, "prior_steps": 10},
        100: {"iterations": 10, "prior_steps": 20, "decay": 0.7},
    },
    "repaint": {
        20: {"steps": 10, "jump_length": 2, "jump_n_sample": 2},
        50: {"steps": 20, "jump_length": 5, "jump_n_sample": 3},
        100: {"steps": 50, "jump_length": 5, "jump_n_sample": 2},
    },
}
INPAINTING = ("inpaint-box", "oracle")
# variants run only when asked for by name (--samplers invgen:NAME): a sampler with options other than its defaults,
# for the "win it" experiments of issue 29 (what a change of default would give, beside the default)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "pigdm_eta0": ("pigdm", {"eta": 0.0}),
    "pigdm_eta0.5": ("pigdm", {"eta": 0.5}),
    "ddrm_eta1": ("ddrm", {"eta": 1.0}),
    "ddnm_eta0.5": ("ddnm", {"eta": 0.5}),
}


def base_sampler(sampler: str) -> tuple[str, dict[str, Any]]:
    """The registered solver and the options of a sampler name (a variant's, else none)."""
    name, options = VARIANTS.get(sampler, (sampler, {}))
    return name, dict(options)


def not_applicable(sampler: str, task: str) -> str | None:
    """Why ``sampler`` cannot run on ``task`` (None: it can)."""
    if base_sampler(sampler)[0] == "repaint" and task not in INPAINTING:
        return "RePaint needs an inpainting mask"
    return None


def settings(sampler: str, budget: int) -> dict[str, Any]:
    """invgen's options for ``sampler`` at ``budget`` network evaluations; KeyError without an NFE-matched setting."""
    name, options = base_sampler(sampler)
    if name in STEP_SAMPLERS:
        return {"steps": budget, **options}
    if budget not in MATCHED[name]:
        raise KeyError(f"invgen {name}: no NFE-matched setting for budget {budget} (have {sorted(MATCHED[name])})")
    return {**MATCHED[name][budget], **options}


class InvgenSide:
    """invgen on one problem: ``run(sampler, budget, y, n, seed) -> (N, B, C, H, W)`` samples."""

    library = LIBRARY

    def __init__(self, prior: Any, op: Any) -> None:
        self.prior, self.op = prior, op
        net = getattr(prior, "net", None)
        self.counter = EvalCounter(net) if isinstance(net, torch.nn.Module) else None
        self.last_nfe = 0.0

    def operator_pairs(self, x: Tensor) -> dict[str, float]:
        """invgen is the reference: nothing to check."""
        return {}

    def run(self, sampler: str, budget: int, y: Tensor, n: int, seed: int) -> Tensor:
        import invgen

        if self.counter is not None:
            self.counter.reset()
        solver = base_sampler(sampler)[0]
        post = invgen.solve(y, self.op, self.prior, solver=solver, n_samples=n, seed=seed, **settings(sampler, budget))
        chains = n * y.shape[0]
        self.last_nfe = self.counter.per_chain(chains) if self.counter is not None else float(post.nfe)
        return post.samples


__all__ = ["LIBRARY", "MATCHED", "SAMPLERS", "VARIANTS", "InvgenSide", "base_sampler", "not_applicable", "settings"]
