"""Diffusion plugin basics: the UNet, the denoiser adaptation, and exact resume of the trainer (tiny models)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from invgen_plugins.diffusion.model import DiffusionPrior
from invgen_plugins.diffusion.schedule import VPSchedule
from invgen_plugins.diffusion.train import add_arguments, run
from invgen_plugins.diffusion.unet import UNet, UNetConfig

TINY = UNetConfig(in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), groups=4)


def test_unet_shapes_and_zero_init_output():
    net = UNet(TINY)
    x = torch.randn(3, 1, 8, 8)
    out = net(x, torch.tensor([50.0, 300.0, 900.0]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out)), "the output convolution starts at zero"


def test_denoiser_adaptation_is_tweedie_of_the_epsilon_network():
    torch.manual_seed(0)
    net = UNet(TINY)
    for p in net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    prior = DiffusionPrior(net, VPSchedule(), (1, 8, 8))
    x = torch.rand(2, 1, 8, 8)
    sigma = torch.tensor([0.1, 0.3])
    s = 2 * sigma[:, None, None, None]
    eps = net((2 * x - 1) / torch.sqrt(1 + s**2), 100 * (torch.log(s.reshape(-1)) + 5))
    expected = ((2 * x - 1) - s * eps + 1) / 2
    torch.testing.assert_close(prior.denoise(x, sigma), expected)
    torch.testing.assert_close(prior.score(x, sigma), (expected - x) / sigma[:, None, None, None] ** 2)
    with pytest.raises(ValueError, match="needs sigma > 0"):
        prior.score(x, 0.0)
    assert prior.sigma_min == pytest.approx(0.005, rel=1e-3) and prior.sigma_max > 50


def _args(out, steps, folder):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(
        [
            "--dataset",
            f"folder:{folder}",
            "--image-size",
            "8",
            "--steps",
            str(steps),
            "--batch-size",
            "4",
            "--base-channels",
            "8",
            "--channel-mults",
            "1,2",
            "--checkpoint-every",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )


def test_trainer_resume_is_exact(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run(_args(tmp_path / "straight", 4, folder))
    run(_args(tmp_path / "resumed", 2, folder))
    run(_args(tmp_path / "resumed", 4, folder))  # same command with more steps continues from the checkpoint
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    prior = DiffusionPrior.from_pretrained(tmp_path / "resumed")
    assert prior.image_shape == (3, 8, 8)
    assert prior.denoise(torch.rand(1, 3, 8, 8), 0.2).shape == (1, 3, 8, 8)


def test_random_patches_crop_and_cover_the_eight_flips_and_rotations():
    from invgen_plugins.diffusion.train import random_patches

    img = torch.arange(12 * 10, dtype=torch.float32).reshape(1, 12, 10)  # all values distinct
    g = torch.Generator().manual_seed(0)
    p = random_patches([img], 400, 3, g)
    assert p.shape == (400, 1, 3, 3)
    seen = set()
    for q in p[:, 0]:
        # every patch is a 3x3 window of the image under one of the 8 symmetries of the square
        variants = [torch.rot90(q, -k, dims=(0, 1)) for k in range(4)]
        variants += [torch.rot90(q.flip(-1), -k, dims=(0, 1)) for k in range(4)]
        found = [
            v
            for v in variants
            if any(torch.equal(img[0, i : i + 3, j : j + 3], v) for i in range(10) for j in range(8))
        ]
        assert found, "a patch is not a window of the image"
        seen.add((int(q[0, 1] - q[0, 0]), int(q[1, 0] - q[0, 0])))  # the two step directions identify the symmetry
    assert len(seen) == 8
    with pytest.raises(ValueError, match="exceeds an image of 12x10"):
        random_patches([img], 1, 11, g)


def test_patch_training_gives_a_fully_convolutional_gray_prior(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(20, 24), (24, 20), (16, 32)]):
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    args = _args(tmp_path / "out", 2, folder)
    args.patch_size, args.no_mid_attention, args.tile = 8, True, 64
    run(args)
    import json

    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["image_shape"] is None and cfg["channels"] == 1 and cfg["unet"]["in_channels"] == 1
    assert cfg["unet"]["mid_attention"] is False and cfg["tile"] == 64
    prior = DiffusionPrior.from_pretrained(tmp_path / "out")
    assert prior.image_shape is None and prior.tile == 64 and isinstance(prior.net.mid[1], torch.nn.Identity)
    assert prior.denoise(torch.rand(1, 1, 16, 24), 0.1).shape == (1, 1, 16, 24)


def test_fully_convolutional_prior_takes_any_size_by_reflection_padding():
    torch.manual_seed(0)
    cfg = UNetConfig(
        in_channels=1, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(), groups=4
    )
    cfg.mid_attention = False
    net = UNet(cfg)
    assert net.stride == 4 and isinstance(net.mid[1], torch.nn.Identity)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    prior = DiffusionPrior(net, VPSchedule(), None)
    x = torch.rand(2, 1, 13, 18)
    out = prior.denoise(x, 0.1)
    assert out.shape == x.shape
    # the same as padding by hand (to 16 x 20) and cropping
    s = torch.full((2, 1, 1, 1), 0.2)
    xm = (2 * x - 1) / torch.sqrt(1 + s**2)
    padded = torch.nn.functional.pad(xm, (0, 2, 0, 3), mode="reflect")
    eps = net(padded, 100 * (torch.log(s.reshape(-1)) + 5))[..., :13, :18]
    torch.testing.assert_close(out, ((2 * x - 1) - s * eps + 1) / 2, rtol=1e-5, atol=1e-6)
    assert prior.denoise(torch.rand(1, 1, 2, 3), 0.1).shape == (1, 1, 2, 3)  # smaller than the stride: replicate


def test_tiled_network_calls_stay_within_the_tile():
    torch.manual_seed(0)
    cfg = UNetConfig(
        in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), groups=4
    )
    cfg.mid_attention = False
    net = UNet(cfg)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    prior = DiffusionPrior(net, VPSchedule(), None)
    x = torch.rand(2, 1, 45, 70)
    whole = prior.denoise(x, 0.1)
    seen = []
    net.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    prior.tile, prior.tile_overlap = 24, 12
    out = prior.denoise(x, 0.1)
    assert out.shape == x.shape and len(seen) > 1 and all(h <= 24 and w <= 24 for h, w in seen)
    # GroupNorm statistics differ per tile: close to the whole-image call, not equal
    assert float((out - whole).detach().abs().mean()) < 0.05


def test_lognormal_noise_levels_follow_edm_and_stay_in_the_schedule():
    from invgen_plugins.diffusion.train import lognormal_levels

    sig = VPSchedule().sigmas(torch.float32)
    s = lognormal_levels(20000, torch.Generator().manual_seed(0), float(sig[0]), float(sig[-1]))
    assert s.shape == (20000,)
    assert float(s.min()) >= float(sig[0]) and float(s.max()) <= float(sig[-1])
    log_s = s.log()
    assert abs(float(log_s.mean()) + 1.2) < 0.03 and abs(float(log_s.std()) - 1.2) < 0.03
    # the noise levels of DnCNN's BSD68 table (sigma 15..50 of 255 on [0, 1] -> s = 0.118..0.392): 37 % of the
    # training steps (closed form Phi(0.220) - Phi(-0.784) = 0.371), against 8.3 % of the uniform VP timesteps
    inside = float(((s > 2 * 15 / 255) & (s < 2 * 50 / 255)).float().mean())
    assert abs(inside - 0.371) < 0.01, inside
    t_sig = VPSchedule().sigmas()
    assert abs(float(((t_sig > 2 * 15 / 255) & (t_sig < 2 * 50 / 255)).double().mean()) - 0.083) < 1e-9


def test_lognormal_training_resumes_exactly(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(folder / f"{i}.png")

    def args(out, steps):
        a = _args(out, steps, folder)
        a.patch_size, a.no_mid_attention, a.noise_levels = 8, True, "lognormal"
        return a

    run(args(tmp_path / "straight", 4))
    run(args(tmp_path / "resumed", 2))
    run(args(tmp_path / "resumed", 4))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    import json

    cfg = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert cfg["training"]["noise_levels"] == "lognormal" and cfg["steps_done"] == 4


def test_cifar10_patch_source_is_the_training_split_as_rgb_images(monkeypatch):
    import invgen.data as data
    from invgen_plugins.diffusion.train import load_patch_source

    fake = torch.rand(5, 3, 32, 32)
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return fake, torch.zeros(5, dtype=torch.long)

    monkeypatch.setattr(data, "load_dataset", load_dataset)
    src = load_patch_source("cifar10")
    assert calls == [("cifar10", "train")] and len(src) == 5
    torch.testing.assert_close(torch.stack(src), fake, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cifar10 is RGB"):
        load_patch_source("cifar10", channels=1)
    with pytest.raises(ValueError, match="reads bsd400, cifar10 or folder:PATH"):
        load_patch_source("mnist")


def test_mixed_noise_levels_also_cover_the_high_levels_samplers_start_from():
    from invgen_plugins.diffusion.train import lognormal_levels, mixed_levels

    sig = VPSchedule().sigmas(torch.float32)
    lo, hi = float(sig[0]), float(sig[-1])
    s = mixed_levels(40000, torch.Generator().manual_seed(0), lo, hi)
    assert float(s.min()) >= lo and float(s.max()) <= hi
    high = float((s > 10).float().mean())
    # 0.2 * ln(157 / 10) / ln(157 / 0.01) = 0.057 from the log-uniform part (+ 0.8 * 0.0012 lognormal tail)
    expected = 0.2 * math.log(hi / 10) / math.log(hi / lo) + 0.8 * 0.5 * math.erfc((math.log(10) + 1.2) / 1.2 / 2**0.5)
    assert abs(high - expected) < 0.004, (high, expected)
    only = lognormal_levels(40000, torch.Generator().manual_seed(0), lo, hi)
    assert float((only > 10).float().mean()) < 0.003


def test_config_variant_registers_the_same_weights_under_another_name(tmp_path):
    """A folder's ``variants`` become priors of their own: same weights, some config keys replaced, own metadata."""
    import json

    from invgen.train.checkpoint import export_weights, register_weight_folders, variant_config

    folder = tmp_path / "weights" / "diffusion-toy32"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = UNet(TINY)
    for p in net.parameters():  # the zero-initialised output would make every prior trivially equal
        p.data.normal_(0.0, 0.05)
    export_weights(net, folder)
    config = {
        "name": "diffusion-toy32",
        "unet": TINY.to_dict(),
        "schedule": VPSchedule().to_dict(),
        "image_shape": [1, 8, 8],
        "training": {"dataset": "mnist"},
        "variants": {"diffusion-toy-any": {"image_shape": None, "tile": 16, "datasets": ["set12"]}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    entries = {}
    register_weight_folders(
        lambda name, factory, **meta: entries.setdefault(name, (factory, meta)),
        tmp_path / "weights",
        "invgen_plugins.diffusion.model:DiffusionPrior",
        ("denoiser", "score"),
        lambda cfg, dataset: f"trained on {dataset}",
    )
    assert sorted(entries) == ["diffusion-toy-any", "diffusion-toy32"]
    base_meta, var_meta = entries["diffusion-toy32"][1], entries["diffusion-toy-any"][1]
    assert base_meta["image_shape"] == (1, 8, 8) and base_meta["datasets"] == ("mnist",)
    assert var_meta["image_shape"] is None and var_meta["channels"] == 1 and var_meta["datasets"] == ("set12",)
    assert "the weights of diffusion-toy32, used as diffusion-toy-any" in var_meta["description"]

    base, var = entries["diffusion-toy32"][0](), entries["diffusion-toy-any"][0]()
    assert (base.name, base.image_shape, base.tile) == ("diffusion-toy32", (1, 8, 8), None)
    assert (var.name, var.image_shape, var.tile) == ("diffusion-toy-any", None, 16)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(base.denoise(x, 0.2), var.denoise(x, 0.2))
    merged = variant_config(config, "diffusion-toy-any")
    assert merged["variant_of"] == "diffusion-toy32" and "variants" not in merged
    assert variant_config(config, "diffusion-toy32") is config and variant_config(config, None) is config
    with pytest.raises(ValueError, match="must map config keys"):
        variant_config({"variants": {"bad": 3}}, "bad")


def test_clip_denoised_clamps_the_tweedie_estimate_and_comes_from_the_config(tmp_path):
    import json

    from invgen.train.checkpoint import export_weights

    torch.manual_seed(0)
    net = UNet(TINY)
    for p in net.parameters():
        p.data.normal_(0.0, 0.2)  # a wild network: its estimates leave [0, 1]
    prior = DiffusionPrior(net, VPSchedule(), (1, 8, 8))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = prior.denoise(x, 50.0)
        prior.clip_denoised = True
        clipped = prior.denoise(x, 50.0)
    assert float(raw.min()) < 0.0 or float(raw.max()) > 1.0
    assert torch.equal(clipped, raw.clamp(0, 1))
    score = prior.score(x, 50.0)
    assert torch.allclose(score, (clipped - x) / 50.0**2)
    assert prior.config()["clip_denoised"] is True
    export_weights(net, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**prior.config(), "clip_denoised": True}))
    assert DiffusionPrior.from_pretrained(tmp_path).clip_denoised is True
    (tmp_path / "config.json").write_text(json.dumps({**prior.config(), "clip_denoised": False}))
    assert DiffusionPrior.from_pretrained(tmp_path).clip_denoised is False
