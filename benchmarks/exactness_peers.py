"""A peer on the exactness oracle: azula's MMPS (``azula.guidance.MMPSDenoiser``) with the same exact denoiser.

azula as its users run it: its defaults (GMRES with 1 iteration, the DDPM sampler with 64 steps, its VE schedule
sigma from 1e-3 to 1e3, started at ``0.5 + sigma_max n``), given the analytic GMM's exact denoiser on invgen's [0, 1]
scale (a VE schedule has alpha = 1, so ``x_t = x + sigma_t n`` is invgen's state) and the oracle's operator as a
function. N = 1000, float64. azula is a benchmark-only dependency, never imported by the library: install it apart,

    python -m pip install --no-deps --target ~/.cache/invgen-peers/site azula==0.11.1
    PYTHONPATH=~/.cache/invgen-peers/site OMP_NUM_THREADS=1 python benchmarks/exactness_peers.py hard-inpaint,inpaint

and it prints one line per problem (the values published in docs/correctness/exactness.json as ``azula_mmps``).
"""

from __future__ import annotations

import sys
import time

import torch

from invgen.testing.oracle import EASY, HARD, N, problem


def main(names: list[str], steps: int = 64, iterations: int = 1) -> None:
    from azula.denoise import Denoiser, DiracPosterior
    from azula.guidance.mmps import MMPSDenoiser
    from azula.linalg.covariance import IsotropicCovariance
    from azula.noise import VESchedule
    from azula.sample import DDPMSampler

    class ExactDenoiser(Denoiser):
        def __init__(self, prior, schedule) -> None:
            super().__init__()
            self.prior, self._schedule = prior, schedule

        @property
        def schedule(self):
            return self._schedule

        def forward(self, x_t, t, **kw):
            sigma = self._schedule(t)[1].reshape(-1).expand(x_t.shape[0])
            x = x_t.reshape(x_t.shape[0], *self.prior.image_shape)
            return DiracPosterior(mean=self.prior.denoise(x, sigma).reshape(x_t.shape))

    torch.set_num_threads(1)
    for name in names:
        pb = problem(name)
        den = ExactDenoiser(pb.prior, VESchedule())
        y = pb.y.reshape(1, -1).to(torch.float64).expand(N, -1)

        def forward(x, pb=pb):
            return pb.op(x.reshape(x.shape[0], *pb.prior.image_shape)).reshape(x.shape[0], -1)

        cov_y = IsotropicCovariance(torch.tensor(float(pb.op.noise.std) ** 2, dtype=torch.float64))
        sampler = DDPMSampler(MMPSDenoiser(den, y, forward, cov_y, iterations=iterations), steps=steps, silent=True)
        torch.manual_seed(1)
        t0 = time.perf_counter()
        x = sampler(sampler.init((N, pb.prior.d), mean=0.5, var=0.0, dtype=torch.float64))
        s = x.reshape(N, *pb.prior.image_shape)
        sw, we = pb.multiples(s)
        print(
            f"azula MMPS {name} steps {steps} iters {iterations}: SW x{sw:.2f}  w x{we:.2f}  "
            f"var {pb.variance_ratio(s):.2f}  {time.perf_counter() - t0:.1f}s",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else [*EASY, *HARD])
