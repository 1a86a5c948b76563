"""The VAE prior: a convolutional VAE offering ``generator`` and ``log_density`` (ELBO / IWAE bound)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from invgen.checks import check_image, check_latents
from invgen.priors.base import Prior
from invgen_plugins.vae.likelihood import (
    discretized_logistic_log_prob,
    discretized_logistic_sample,
    logistic_clamped_mean,
)
from invgen_plugins.vae.net import ConvVAE, VAEConfig, kl_standard_normal

LOG_2PI = math.log(2.0 * math.pi)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normals drawn on the generator's device (the CPU without one) and moved to ``like``'s."""
    dev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


class VAEPrior(Prior):
    """A VAE as a prior on [0, 1] images: ``x = decode(z)``, ``z ~ N(0, I)``, and ``log p(x) >= ELBO(x)``.

    Likelihood: ``p(x | z)`` is a discretised logistic on 256 grey levels per pixel (location and scale from the
    decoder, :mod:`invgen_plugins.vae.likelihood`). It is a probability mass on 8-bit images, so bounds are in nats
    of the 8-bit image and bits/dim is ``-ELBO / (D ln 2)`` (``D = C H W``), with no dequantisation term. It models
    saturated pixels (the black background of MNIST) with the edge levels' tail mass, where a Gaussian would waste
    density outside [0, 1] and a Bernoulli is not a likelihood of grey values.

    ``decode(z)`` is the decoder's mean image ``E[clamp(X, 0, 1)]``, in [0, 1] and smooth in ``z``; ``encode(x)`` is
    the posterior mean ``mu(x)``; ``log_prob(x)`` is a one-sample estimate of the ELBO (analytic KL) per image and
    ``log_prob(x, k=K)`` the importance-weighted bound ``IWAE_K`` (Burda et al. 2016), which rises towards
    ``log p(x)`` as ``K`` grows.

    Args:
        net: the trained :class:`ConvVAE`.
        name: registry name.

    Shape:
        x: ``(B, C, S, S)`` in [0, 1]; z: ``(B, d)``.

    Example:
        >>> prior = VAEPrior(ConvVAE(VAEConfig(in_channels=1, image_size=8, latent_dim=2, channels=(4, 8))))
        >>> prior.decode(torch.zeros(3, 2)).shape
        torch.Size([3, 1, 8, 8])
    """

    capabilities = frozenset({"generator", "log_density"})
    log_prob_kind = "bound"

    def __init__(self, net: ConvVAE, name: str = "vae") -> None:
        super().__init__()
        self.net = net.eval()
        self.name = name
        cfg = net.config
        self.image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)

    # -- generator ------------------------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(d,)``."""
        return (self.net.config.latent_dim,)

    def _check_z(self, z: Tensor) -> Tensor:
        return check_latents(z, self.net.config.latent_dim, self.name)

    def _check_x(self, x: Tensor) -> Tensor:
        c, s, _ = self.image_shape
        return check_image(x, "x", channels=c, size=(s, s), clean=True)

    def _param(self, t: Tensor) -> Tensor:
        p = next(self.net.parameters())
        return t.to(dtype=p.dtype, device=p.device)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's mean image ``E[x | z]`` in [0, 1]. Shape: ``(B, d)`` -> ``(B, C, S, S)``."""
        loc, log_scale = self.net.decode(self._param(self._check_z(z)))
        return logistic_clamped_mean(loc, log_scale).to(z.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean ``mu(x)`` of ``q(z | x)``. Shape: ``(B, C, S, S)`` -> ``(B, d)``."""
        mu, _ = self.net.encode(self._param(self._check_x(x)))
        return mu.to(x.dtype)

    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``. Shape: ``(B, C, S, S)`` -> same."""
        return self.decode(self.encode(x))

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        mean: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Draw ``n`` images: ``z ~ N(0, I)``, then the decoder's mean (``mean=True``, the usual way to show a VAE's
        samples) or an 8-bit draw from ``p(x | z)`` (``mean=False``: includes the per-pixel noise).

        Shape: -> ``(n, C, S, S)``.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an integer >= 1, got {n!r}")
        p = next(self.net.parameters())
        z = _randn((n, *self.latent_shape), generator, p)
        if mean:
            x = self.decode(z)
        else:
            loc, log_scale = self.net.decode(z)
            x = discretized_logistic_sample(loc, log_scale, generator=generator)
        return x.to(dtype=dtype, device=device if device is not None else p.device)

    # -- log-density (bounds) -------------------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z)`` per item in nats. Shape: x ``(B, C, S, S)``, z ``(B, d)`` -> ``(B,)``."""
        loc, log_scale = self.net.decode(z)
        return discretized_logistic_log_prob(x, loc, log_scale).flatten(1).sum(1)

    def elbo(self, x: Tensor, samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """``E_q[log p(x | z)] - KL(q(z | x) || N(0, I))`` per image in nats, the expectation estimated with
        ``samples`` reparametrised draws and the KL in closed form. Shape: ``(B, C, S, S)`` -> ``(B,)``.
        """
        xp = self._param(self._check_x(x))
        mu, logvar = self.net.encode(xp)
        rec = 0.0
        for _ in range(samples):
            z = mu + torch.exp(0.5 * logvar) * _randn(tuple(mu.shape), generator, mu)
            rec = rec + self.log_likelihood(xp, z)
        return (rec / samples - kl_standard_normal(mu, logvar)).to(x.dtype)

    def iwae(self, x: Tensor, k: int = 100, generator: torch.Generator | None = None, chunk: int = 50) -> Tensor:
        """The importance-weighted bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q(z | x)``, per image in
        nats. ``E[IWAE_K] <= E[IWAE_{K+1}] <= log p(x)``; ``K = 1`` is the ELBO estimated with a sampled KL.

        Args:
            x: images in [0, 1].
            k: number of importance samples.
            generator: for the draws.
            chunk: samples decoded per batch (memory is ``chunk * B`` images).

        Shape: ``(B, C, S, S)`` -> ``(B,)``.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1, got {k!r}")
        xp = self._param(self._check_x(x))
        mu, logvar = self.net.encode(xp)
        std = torch.exp(0.5 * logvar)
        b, d = mu.shape
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = _randn((m, b, d), generator, mu)
            z = mu + std * eps  # (m, B, d)
            log_q = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            rep = xp.unsqueeze(0).expand(m, *xp.shape).reshape(m * b, *xp.shape[1:])
            log_px = self.log_likelihood(rep, z.reshape(m * b, d)).reshape(m, b)
            log_w.append(log_px + log_pz - log_q)
        return (torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)).to(x.dtype)

    def log_prob(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """A lower bound on ``log p(x)`` per image in nats (``log_prob_kind == "bound"``): the ELBO for ``k = 1``
        (one sample, closed-form KL), ``IWAE_k`` for ``k > 1``. Shape: ``(B, C, S, S)`` -> ``(B,)``.
        """
        return self.elbo(x, generator=generator) if k == 1 else self.iwae(x, k, generator=generator)

    # -- configuration --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        name: str | None = None,
        device: str | torch.device = "cpu",
        weights: str = "model.safetensors",
    ) -> VAEPrior:
        """Rebuild from ``config.json`` + safetensors weights in ``folder`` (no pickle)."""
        from invgen.train.checkpoint import load_pretrained
        from invgen.train.verify import CONFIG, config_errors, load_state

        cfg, state = load_pretrained(folder, weights, device, name)
        with config_errors(Path(folder) / CONFIG, "the VAE"):
            net = ConvVAE(VAEConfig.from_dict(cfg["vae"]))
        load_state(net, state, Path(folder) / weights)
        return cls(net.requires_grad_(False), name or cfg.get("name", "vae")).to(device)

    def config(self) -> dict:
        return {"name": self.name, "family": "vae", "vae": self.net.config.to_dict()}
