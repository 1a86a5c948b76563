"""The ``diffusers`` prior: a tiny random diffusers UNet2DModel + scheduler saved in pipeline layout, loaded by name."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import invgen
from invgen.errors import ShapeError
from invgen.solvers.schedules import prior_sigmas

try:
    import diffusers
except ImportError:  # in CI the adapter must be tested: a missing diffusers fails the run instead of skipping
    if os.environ.get("CI"):
        raise ImportError(
            'CI: diffusers is not installed (it is in the "dev" extra: pip install -e ".[dev]")'
        ) from None
    diffusers = pytest.importorskip("diffusers")

from invgen_plugins.diffusion.diffusers_adapter import DiffusersPrior, alphas_cumprod_from_config

C, S = 3, 8


def tiny_unet(out_channels: int = C, seed: int = 0) -> diffusers.UNet2DModel:
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=S,
        in_channels=C,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def save_pipeline(folder, unet, prediction_type="epsilon", scheduler_cls=None, layout="pipeline", **sched_kw):
    """Save like a diffusers pipeline (unet/, scheduler/) or flat (UNet files + scheduler_config.json together)."""
    scheduler = (scheduler_cls or diffusers.DDPMScheduler)(prediction_type=prediction_type, **sched_kw)
    if layout == "pipeline":
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        scheduler.save_pretrained(folder / "scheduler")
    else:
        unet.save_pretrained(folder, safe_serialization=True)
        scheduler.save_pretrained(folder)
    return scheduler


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def level(scheduler, t: int) -> float:
    """The [0, 1]-scale noise level of integer timestep t: sqrt((1 - abar_t) / abar_t) / 2."""
    abar = float(scheduler.alphas_cumprod[t])
    return ((1 - abar) / abar) ** 0.5 / 2


def hand_denoise(unet, scheduler, x, t: int, learned_variance: bool = False):
    """diffusers' own formulas (as in DDPMScheduler.step) at an integer timestep, on [0, 1] images."""
    abar = scheduler.alphas_cumprod[t].double()
    a, b = abar.sqrt(), (1 - abar).sqrt()
    z = ((2 * x.double() - 1) * a).float()  # x = x0 + sigma n  <=>  z = sqrt(abar) x0' + sqrt(1 - abar) n'
    with torch.no_grad():
        out = unet(z, t).sample.double()
    if learned_variance:
        out = out[:, :C]
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0 = (z.double() - b * out) / a
    elif kind == "v_prediction":
        x0 = a * z.double() - b * out
    else:
        x0 = out
    return (x0 + 1) / 2, level(scheduler, t)


# -- (a) denoise against the raw UNet output --------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoise_matches_hand_computation_from_raw_unet(tmp_path, unet, prediction_type):
    scheduler = save_pipeline(tmp_path, unet, prediction_type)
    prior = invgen.prior("diffusers", path=tmp_path)
    assert isinstance(prior, DiffusersPrior) and prior.prediction_type == prediction_type
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, C, S, S, generator=g)
    for t in (0, 120, 400, 700):
        sigma = level(scheduler, t)
        x = x0 + sigma * torch.randn(x0.shape, generator=g)
        expected, _ = hand_denoise(unet, scheduler, x, t)
        with torch.no_grad():
            got = prior.denoise(x, sigma)
        assert got.shape == x.shape and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    # a (B,) tensor of levels denoises each item at its own timestep
    sig = torch.tensor([level(scheduler, t) for t in (50, 600)])
    with torch.no_grad():
        got = prior.denoise(x0, sig)
    for i, t in enumerate((50, 600)):
        torch.testing.assert_close(
            got[i : i + 1].double(), hand_denoise(unet, scheduler, x0[i : i + 1], t)[0], atol=1e-5, rtol=1e-5
        )


def test_flat_layout_with_ddim_scheduler_and_its_config(tmp_path, unet):
    scheduler = save_pipeline(
        tmp_path,
        unet,
        "v_prediction",
        scheduler_cls=diffusers.DDIMScheduler,
        layout="flat",
        beta_schedule="scaled_linear",
    )
    prior = DiffusersPrior.from_pretrained(tmp_path)
    assert prior.prediction_type == "v_prediction" and prior.schedule is None  # not a linear-beta schedule
    torch.testing.assert_close(prior.alphas_cumprod, scheduler.alphas_cumprod.double(), atol=0, rtol=0)
    x = torch.rand(1, C, S, S)
    expected, sigma = hand_denoise(unet, scheduler, x, 333)
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, sigma).double(), expected, atol=1e-5, rtol=1e-5)
    assert prior.config() == {"name": "diffusers", "path": str(tmp_path)}
    assert invgen.prior("diffusers", **{k: v for k, v in prior.config().items() if k != "name"}).path == str(tmp_path)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_alphas_cumprod_equal_diffusers(beta_schedule):
    sched = diffusers.DDPMScheduler(num_train_timesteps=200, beta_schedule=beta_schedule)
    ours = alphas_cumprod_from_config(dict(sched.config))
    assert ours.dtype == torch.float64 and ours.shape == (200,)
    torch.testing.assert_close(ours, sched.alphas_cumprod.double(), atol=0, rtol=0)
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        alphas_cumprod_from_config({"beta_schedule": "sigmoid"})


# -- (b) continuous timesteps ----------------------------------------------------------------------------------
def test_continuous_timestep_on_and_between_schedule_levels(tmp_path, unet):
    scheduler = save_pipeline(tmp_path, unet)
    prior = invgen.prior("diffusers", path=tmp_path)
    abar = scheduler.alphas_cumprod.double()
    levels = ((1 - abar) / abar).sqrt() / 2  # [0, 1]-scale sigma of every integer timestep
    assert prior.sigma_min == pytest.approx(float(levels[0]), rel=1e-12)
    assert prior.sigma_max == pytest.approx(float(levels[-1]), rel=1e-12)
    ks = torch.tensor([0, 1, 10, 250, 500, 998, 999])
    torch.testing.assert_close(prior.timestep(levels[ks]), ks.double(), atol=1e-9, rtol=0)
    # between two levels: strictly inside the interval, increasing with sigma, linear in log sigma
    for k in (3, 400, 900):
        lo, hi = levels[k], levels[k + 1]
        grid = torch.exp(torch.linspace(float(lo.log()), float(hi.log()), 9, dtype=torch.float64))
        t = prior.timestep(grid)
        assert bool((t[1:] > t[:-1]).all()) and float(t[1] - k) > 0 and float(t[-2]) < k + 1
        torch.testing.assert_close(t, torch.linspace(k, k + 1, 9, dtype=torch.float64), atol=1e-9, rtol=0)
    # the solvers' timestep grid is this schedule's (here 1000 linear steps: every grid level is a training level)
    grid = prior_sigmas(prior, 7)
    assert prior.schedule is not None and prior.schedule.steps == 1000
    torch.testing.assert_close(
        grid, levels[torch.linspace(999, 0, 7).round().long()], atol=0, rtol=1e-4
    )  # f64 vs f32 betas
    # clamped outside [sigma_min, sigma_max]
    assert prior.timestep(0.0).item() == 0.0 and prior.timestep(prior.sigma_min / 10).item() == 0.0
    assert prior.timestep(prior.sigma_max * 10).item() == 999.0
    # the UNet receives those float timesteps
    seen = []
    hook = prior.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[1].clone()))
    try:
        mid = float((levels[41] * levels[42]).sqrt())  # geometric midpoint: t = 41.5
        with torch.no_grad():
            prior.denoise(torch.rand(2, C, S, S), torch.tensor([float(levels[7]), mid]))
    finally:
        hook.remove()
    assert seen[0].dtype == torch.float32
    torch.testing.assert_close(seen[0], torch.tensor([7.0, 41.5]), atol=1e-4, rtol=0)


def test_denoise_at_sigma_zero_is_identity_for_epsilon_models(tmp_path, unet):
    save_pipeline(tmp_path, unet)
    prior = invgen.prior("diffusers", path=tmp_path)
    x = torch.rand(2, C, S, S)
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, 0.0), x, atol=1e-6, rtol=0)


# -- (c) score ----------------------------------------------------------------------------------------------------
def test_score_is_tweedie(tmp_path, unet):
    save_pipeline(tmp_path, unet)
    prior = invgen.prior("diffusers", path=tmp_path)
    x = torch.rand(2, C, S, S) + 0.1 * torch.randn(2, C, S, S)
    with torch.no_grad():
        for sigma in (0.05, torch.tensor([0.02, 1.5])):
            s = torch.as_tensor(sigma).reshape(-1, 1, 1, 1)
            torch.testing.assert_close(
                prior.score(x, sigma), (prior.denoise(x, sigma) - x) / s**2, atol=1e-5, rtol=1e-5
            )
    with pytest.raises(ValueError, match="sigma > 0"):
        prior.score(x, 0.0)


# -- (d) shapes, errors, learned variance -------------------------------------------------------------------------
def test_shapes_and_input_errors(tmp_path, unet):
    save_pipeline(tmp_path, unet)
    prior = invgen.prior("diffusers", path=tmp_path)
    assert prior.image_shape == (C, S, S) and prior.capabilities == {"denoiser", "score"}
    assert invgen.registry.get("priors", "diffusers").meta["capabilities"] == ("denoiser", "score")
    with pytest.raises(ShapeError, match="expected 3 channel"):
        prior.denoise(torch.rand(2, 1, S, S), 0.1)
    with pytest.raises(ShapeError, match=r"spatial size \(8, 8\)"):
        prior.denoise(torch.rand(2, C, 16, 16), 0.1)
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        prior.denoise(torch.rand(C, S, S), 0.1)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        invgen.prior("diffusers", path=tmp_path / "missing")
    (tmp_path / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"scheduler_config\.json"):
        invgen.prior("diffusers", path=tmp_path)


def test_learned_variance_takes_the_first_half(tmp_path):
    unet = tiny_unet(out_channels=2 * C, seed=3)
    scheduler = save_pipeline(tmp_path, unet)
    prior = invgen.prior("diffusers", path=tmp_path)
    assert prior.learned_variance and prior.image_shape == (C, S, S)
    x = torch.rand(2, C, S, S)
    expected, sigma = hand_denoise(unet, scheduler, x, 250, learned_variance=True)
    with torch.no_grad():
        got = prior.denoise(x, sigma)
    assert got.shape == x.shape
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="out_channels must equal in_channels"):
        DiffusersPrior(tiny_unet(out_channels=C + 1), scheduler.alphas_cumprod)


def test_pickled_weights_are_refused(tmp_path, unet):
    unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    assert not list((tmp_path / "unet").glob("*.safetensors"))
    with pytest.raises(OSError, match="safetensors"):
        invgen.prior("diffusers", path=tmp_path)


def test_missing_diffusers_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "invgen\[diffusers\]"'):
        invgen.prior("diffusers", path=tmp_path)


# -- (e) end to end ---------------------------------------------------------------------------------------------
def test_ula_inpainting_end_to_end(tmp_path, unet):
    save_pipeline(tmp_path, unet)
    prior = invgen.prior("diffusers", path=tmp_path)
    op = invgen.operator("inpaint", mask="box", noise=invgen.noise("gaussian", std=0.1))
    x = torch.rand(1, C, S, S)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    post = invgen.solve(y, op, prior, solver="ula", n_samples=2, steps=3, sigma=0.05, seed=0)
    assert post.samples.shape == (2, 1, C, S, S)
    assert bool(torch.isfinite(post.samples).all()) and post.nfe >= 3
