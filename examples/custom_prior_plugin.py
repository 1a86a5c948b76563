"""A custom prior as an invgen plugin: define it, register it at run time, solve with it by name, check it.

This file is itself a plugin module: it defines :class:`SmoothGaussianPrior`, a stationary (periodic) Gaussian
smoothness prior whose every capability is a closed form in the 2-D Fourier basis, and a module-level
``@invgen.hookimpl def register_priors(register)``. ``main`` registers the module with invgen's plugin manager
(``invgen.plugin_manager().register(module, name=...)``), after which the prior is an ordinary registered name:
``invgen.solve(y, op, "example-smooth-gaussian", solver="latent_map")``.

The check: for denoising ``y = x + s n`` with a Gaussian prior, the posterior mean is the Wiener filter, which is
exactly the prior's MMSE denoiser ``denoise(y, s)``, and also the posterior MAP. ``latent_map`` (Adam on the latent
``z`` of ``x = mu + L z``) must land on it; the script prints the max abs difference. MALA (which uses ``score`` and
``log_prob``) is run too, and its per-pixel posterior std is compared with the closed form.

Shipping the same plugin as a package is a ``pyproject.toml`` with an entry point in group ``invgen`` that names
the module; ``examples/plugin_template`` is such a package (``pip install examples/plugin_template``).

Run::

    python examples/custom_prior_plugin.py              # a few seconds
    python examples/custom_prior_plugin.py --smoke --out /tmp/plugin

Writes ``custom_prior_plugin.png`` (truth, noisy y, latent MAP, closed-form mean, MALA samples, mean and std) and
``custom_prior_plugin.json`` to ``--out`` and prints ``metrics`` lines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

import invgen

NAME = "custom_prior_plugin"
PRIOR_NAME = "example-smooth-gaussian"


class SmoothGaussianPrior(invgen.Prior):
    """``x ~ N(mean, Sigma)`` with a periodic squared-exponential covariance plus a white nugget.

    ``Sigma`` is circulant, so the orthonormal 2-D FFT diagonalises it: ``Sigma = F^H diag(S) F`` with the spectrum
    ``S = fft2(k)`` of the covariance kernel ``k`` (real and positive). Then, for ``x = x0 + sigma n``:

    * denoiser ``E[x0 | x] = mean + F^H [S / (S + sigma^2) F(x - mean)]`` (the Wiener filter);
    * score ``-F^H [F(x - mean) / (S + sigma^2)]``;
    * exact ``log_prob``; generator ``x = mean + F^H [sqrt(S) F z]`` with ``z ~ N(0, I)`` and its inverse ``encode``.

    Args:
        size: image side H = W (gray images, C = 1).
        mean: the prior mean (a constant).
        std: marginal std of the smooth part.
        length_scale: correlation length in pixels.
        nugget: std of the white part (keeps every eigenvalue away from 0).

    Shape:
        x: ``(B, 1, size, size)``; latent z: ``(B, 1, size, size)``.
    """

    name = PRIOR_NAME
    capabilities = frozenset({"denoiser", "score", "log_density", "generator"})
    log_prob_kind = "exact"

    def __init__(
        self, size: int = 16, mean: float = 0.5, std: float = 0.25, length_scale: float = 2.0, nugget: float = 0.02
    ) -> None:
        super().__init__()
        if size < 2 or std <= 0 or length_scale <= 0 or nugget <= 0:
            raise ValueError(f"{PRIOR_NAME}: expected size >= 2 and std, length_scale, nugget > 0, got {locals()}")
        self.size, self.mean_value = int(size), float(mean)
        self.std, self.length_scale, self.nugget = float(std), float(length_scale), float(nugget)
        self.image_shape = (1, self.size, self.size)
        d = torch.arange(self.size, dtype=torch.float64)
        d = torch.minimum(d, self.size - d)  # periodic distance to pixel 0
        r2 = d[:, None] ** 2 + d[None, :] ** 2
        kernel = self.std**2 * torch.exp(-r2 / (2 * self.length_scale**2))
        spectrum = torch.fft.fft2(kernel).real.clamp_min(0) + self.nugget**2  # eigenvalues of Sigma
        self.register_buffer("spectrum", spectrum)

    def _filter(self, x: Tensor, gain: Tensor) -> Tensor:
        """``F^H [gain * F x]`` for a real, symmetric ``gain`` (so the result is real)."""
        out = torch.fft.ifft2(torch.fft.fft2(x.to(torch.float64), norm="ortho") * gain, norm="ortho").real
        return out.to(x.dtype)

    def _sigma2(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        return (s.reshape(-1, 1, 1, 1) if s.dim() else s) ** 2

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.mean_value + self._filter(
            x - self.mean_value, self.spectrum / (self.spectrum + self._sigma2(x, sigma))
        )

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        return -self._filter(x - self.mean_value, 1.0 / (self.spectrum + self._sigma2(x, sigma)))

    def log_prob(self, x: Tensor) -> Tensor:
        coeff = torch.fft.fft2((x - self.mean_value).to(torch.float64), norm="ortho")
        quad = (coeff.abs() ** 2 / self.spectrum).flatten(1).sum(1)
        d = self.spectrum.numel()
        return (-0.5 * quad - 0.5 * torch.log(self.spectrum).sum() - 0.5 * d * math.log(2 * math.pi)).to(x.dtype)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def decode(self, z: Tensor) -> Tensor:
        return self.mean_value + self._filter(z, self.spectrum.sqrt())

    def encode(self, x: Tensor) -> Tensor:
        return self._filter(x - self.mean_value, 1.0 / self.spectrum.sqrt())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(torch.randn(n, *self.image_shape, generator=generator))

    def config(self) -> dict:
        return {"name": self.name, "size": self.size, "mean": self.mean_value, "std": self.std,
                "length_scale": self.length_scale, "nugget": self.nugget}  # fmt: skip


@invgen.hookimpl
def register_priors(register):
    """The hook invgen calls on every plugin: register the prior's factory under its name (nothing is built yet)."""
    register(
        PRIOR_NAME,
        SmoothGaussianPrior,
        capabilities=("denoiser", "score", "log_density", "generator"),
        description="periodic squared-exponential Gaussian prior, closed form in the FFT basis (examples/)",
    )


ENTRY_POINT_HOWTO = """\
To ship this prior as a package instead, put the class and the hook in a module (say my_prior.py) and declare it
in the package's pyproject.toml; invgen then finds it at import time, no register() call needed:

    [project.entry-points.invgen]
    my-prior = "my_prior"

examples/plugin_template is such a package (its entry point: template = "invgen_template"):
    pip install examples/plugin_template && invgen plugins     # lists 'template-iid'"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"examples/out/{NAME}", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="tiny run (fewer MALA steps and samples) for tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. Register this very module as a plugin; the registries see it at once.
    invgen.plugin_manager().register(sys.modules[__name__], name="example-smooth-gaussian-plugin")
    print(f"registered priors now include {PRIOR_NAME!r}: {PRIOR_NAME in invgen.list_priors()}; solvers that can "
          f"use it: {', '.join(invgen.compatible_solvers(PRIOR_NAME))}")  # fmt: skip

    # 2. Use it by name, like any shipped prior.
    prior = invgen.prior(PRIOR_NAME, size=16)
    gen = torch.Generator().manual_seed(args.seed)
    x = prior.sample(2, generator=gen).clamp(0, 1)  # ground truths: prior draws (no data needed)
    std = 0.1
    op = invgen.operator("identity", noise=invgen.noise("gaussian", std=std))
    y = op.measure(x, generator=gen)
    post_map = invgen.solve(y, op, PRIOR_NAME, solver="latent_map", seed=args.seed, steps=1000, init="encoder")

    # 3. Check against the closed form: the Gaussian posterior mean of denoising is the Wiener filter denoise(y, s).
    exact_mean = prior.denoise(y, std)
    max_abs = float((post_map.mean - exact_mean).abs().max())
    psnr = invgen.metrics.psnr
    print(
        f"metrics latent_map/{PRIOR_NAME}: max_abs_diff_to_closed_form={max_abs:.3e} "
        f"psnr_mean={float(psnr(post_map.mean.clamp(0, 1), x).mean()):.4f} "
        f"psnr_closed_form={float(psnr(exact_mean.clamp(0, 1), x).mean()):.4f} "
        f"psnr_y={float(psnr(y.clamp(0, 1), x).mean()):.4f} nfe={post_map.nfe} seconds={post_map.seconds:.2f}"
    )

    # MALA samples the posterior with the score and the exact log-density; the exact per-pixel posterior std of a
    # stationary prior is sqrt(mean_k S_k s^2 / (S_k + s^2)) for every pixel.
    n_chains, steps = (32, 200) if args.smoke else (128, 600)
    post = invgen.solve(y, op, prior, solver="mala", n_samples=n_chains, seed=args.seed, steps=steps)
    s = prior.spectrum
    exact_std = float((s * std**2 / (s + std**2)).mean().sqrt())
    mean_err = float((post.mean - exact_mean).abs().mean())
    print(
        f"metrics mala/{PRIOR_NAME}: mean_abs_err_of_mean={mean_err:.4f} std_mala={float(post.std.mean()):.4f} "
        f"std_exact={exact_std:.4f} acceptance={float(post.extras.get('acceptance_rate', float('nan'))):.3f} "
        f"nfe={post.nfe} seconds={post.seconds:.2f}"
    )

    from invgen.tasks import contact_sheet

    tiles = [("truth", x[0]), ("y (std 0.1)", y[0].clamp(0, 1)), ("latent MAP", post_map.mean[0].clamp(0, 1)),
             ("closed form", exact_mean[0].clamp(0, 1))]  # fmt: skip
    tiles += [(f"MALA {k + 1}", post.samples[k, 0].clamp(0, 1)) for k in range(3)]
    tiles += [("MALA mean", post.mean[0].clamp(0, 1)), ("MALA std x4", (4 * post.std[0]).clamp(0, 1))]
    contact_sheet(tiles, out / f"{NAME}.png")
    info = {"prior": prior.config(), "max_abs_diff_to_closed_form": max_abs, "mala_std": float(post.std.mean()),
            "exact_std": exact_std, "mala_mean_abs_err": mean_err}  # fmt: skip
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1))
    print(ENTRY_POINT_HOWTO)
    print(f"wrote {out / f'{NAME}.png'} and {out / f'{NAME}.json'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
