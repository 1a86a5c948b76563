"""The guided-diffusion (ADM) UNet and its safe conversion (``invgen_plugins.diffusion.adm``).

Parity: azula's copy of guided-diffusion's ``unet.py`` (an independent implementation) with random weights and no
zero layers is saved as a ``.pt`` state dict, converted with a JSON config, loaded back, and both networks must agree
on random inputs at integer and non-integer timesteps, and on the Tweedie estimate of x0.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os

import pytest
import torch
from torch import nn

from invgen.errors import FileError, ShapeError, WeightsError
from invgen.files import sha256_file
from invgen_plugins.diffusion.adm import ADM_CONFIGS, LEARNED_VARIANCE_USE, ADMUNet, alphas_cumprod, resolve_config
from invgen_plugins.diffusion.adm_convert import ADMConverter, check_state_dict, convert_adm, load_adm

SMALL = {"image_size": 32, "num_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1}
CASES = {
    # legacy head order, heads of num_head_channels, scale-shift norm, residual up/down sampling
    "legacy-scale-shift-updown": {
        **SMALL,
        "attention_resolutions": [16, 8],
        "num_head_channels": 16,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
    },
    # new head order, num_heads (2 in the encoder, 4 in the decoder), additive embedding, conv resampling, 1 channel
    "new-order-heads-conv": {
        **SMALL,
        "in_channels": 1,
        "attention_resolutions": "16,8",
        "num_heads": 2,
        "num_heads_upsample": 4,
        "use_new_attention_order": True,
        "use_scale_shift_norm": False,
        "resblock_updown": False,
    },
    # class-conditional, learned variance (2C outputs), 2 blocks per level, pooling/nearest resampling, dropout
    "class-cond-learned-sigma": {
        **SMALL,
        "num_res_blocks": 2,
        "attention_resolutions": [8],
        "num_head_channels": 32,
        "learn_sigma": True,
        "num_classes": 10,
        "conv_resample": False,
        "resblock_updown": False,
        "dropout": 0.1,
    },
}
TIMESTEPS = [0.0, 10.5, 250.0, 617.25, 999.0]
FFHQ256_PARAMETERS = 93_563_910
IMAGENET256_UNCOND_PARAMETERS = 552_814_086


class Custom:
    """A pickled object that is not a tensor: refused by ``torch.load(weights_only=True)``."""


def azula_unet():
    """guided-diffusion's ``unet.py`` as copied by azula (in the dev extra: CI fails instead of skipping)."""
    if os.environ.get("CI"):
        from azula.plugins.adm._src import unet
    else:
        unet = pytest.importorskip("azula.plugins.adm._src.unet")
    return unet


def reference(config: dict) -> nn.Module:
    """azula's UNetModel of ``config`` with random weights everywhere (guided-diffusion zero-initialises the last conv
    of every block and of the output): N(0, 0.05^2), GroupNorm weights 1 + N(0, 0.05^2)."""
    cfg = resolve_config(config)
    net = azula_unet().UNetModel(
        image_size=cfg["image_size"],
        in_channels=cfg["in_channels"],
        model_channels=cfg["num_channels"],
        out_channels=cfg["in_channels"] * (2 if cfg["learn_sigma"] else 1),
        num_res_blocks=cfg["num_res_blocks"],
        attention_resolutions={cfg["image_size"] // r for r in cfg["attention_resolutions"]},
        dropout=cfg["dropout"],
        channel_mult=tuple(cfg["channel_mult"]),
        conv_resample=cfg["conv_resample"],
        num_classes=cfg["num_classes"],
        num_heads=cfg["num_heads"],
        num_head_channels=cfg["num_head_channels"],
        num_heads_upsample=cfg["num_heads_upsample"],
        use_scale_shift_norm=cfg["use_scale_shift_norm"],
        resblock_updown=cfg["resblock_updown"],
        use_new_attention_order=cfg["use_new_attention_order"],
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        for m in net.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.add_(1.0)
    return net.eval()


@pytest.fixture(scope="module", params=list(CASES))
def converted(request, tmp_path_factory):
    """``(case, reference network, converted network, config.json)``: the reference saved as a ``.pt``, converted
    with a JSON config file and loaded back."""
    root = tmp_path_factory.mktemp(request.param)
    ref = reference(CASES[request.param])
    (root / "small.json").write_text(json.dumps(CASES[request.param]))
    torch.save(ref.state_dict(), root / "ref.pt")
    out = convert_adm(root / "ref.pt", root / "out", root / "small.json", command="pytest")
    net, saved = load_adm(out)
    return request.param, ref, net, saved, out


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_parity_with_guided_diffusion(converted):
    case, ref, net, saved, _ = converted
    cfg = resolve_config(saved)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(len(TIMESTEPS), cfg["in_channels"], 32, 32, generator=gen)
    t = torch.tensor(TIMESTEPS)
    y = torch.randint(0, 10, (len(TIMESTEPS),), generator=gen) if cfg["class_cond"] else None
    with torch.no_grad():
        want, got = ref(x, t, y=y), net(x, t, y)
    assert got.shape == (len(TIMESTEPS), net.out_channels, 32, 32)
    assert want.std() > 0.1  # random weights everywhere: a meaningful comparison
    assert rel_error(got, want) < 1e-5, case
    # each timestep separately, and a scalar timestep, give the same as the batch
    with torch.no_grad():
        one = net(x[1:2], torch.tensor(10.5), None if y is None else y[1:2])
    assert rel_error(one, want[1:2]) < 1e-5


def test_tweedie_estimate_matches(converted):
    case, ref, net, saved, _ = converted
    cfg = resolve_config(saved)
    abar = alphas_cumprod(saved["schedule"])
    gen = torch.Generator().manual_seed(3)
    c = cfg["in_channels"]
    y = torch.randint(0, 10, (2,), generator=gen) if cfg["class_cond"] else None
    for t in (0, 250, 999):
        x0 = 2 * torch.rand(2, c, 32, 32, generator=gen) - 1
        a, s = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        xt = a * x0 + s * torch.randn(x0.shape, generator=gen)
        tt = torch.full((2,), float(t))
        with torch.no_grad():
            want = (xt - s * ref(xt, tt, y=y)[:, :c]) / a
            got = (xt - s * net(xt, tt, y)[:, :c]) / a
        assert rel_error(got, want) < 1e-4, (case, t)


def test_converted_config_records_what_the_loaders_need(converted):
    from invgen.train.checkpoint import load_pretrained

    case, _, net, saved, out = converted
    assert saved["family"] == "adm" and saved["parametrization"] == "eps"
    assert saved["data_range"] == [-1.0, 1.0]
    assert saved["schedule"] == {
        "beta_schedule": "linear",
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "num_train_timesteps": 1000,
    }
    assert saved["learned_variance"] == (case == "class-cond-learned-sigma")
    if saved["learned_variance"]:
        assert saved["learned_variance_use"] == LEARNED_VARIANCE_USE
    assert saved["source"]["file"] == "ref.pt" and len(saved["source"]["sha256"]) == 64
    assert saved["command"] == "pytest"
    assert saved["parameters"] == sum(p.numel() for p in net.parameters())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert set(saved["sha256"]) == {"model.safetensors"}
    config, state = load_pretrained(out)  # the library's generic loader checks the same checksum
    assert config == saved and sorted(state) == sorted(net.state_dict())


# -- a small architecture, our own weights, for the error paths -------------------------------------------------------
CFG = {**SMALL, "attention_resolutions": [16], "num_head_channels": 32}


def small_checkpoint(path, config=CFG, obj=None):
    torch.manual_seed(0)
    state = ADMUNet(config).state_dict()
    torch.save(state if obj is None else obj(state), path)
    return state


def write_config(path, config=CFG):
    path.write_text(json.dumps(config))
    return path


def test_pickled_object_is_refused_and_nothing_is_written(tmp_path):
    small_checkpoint(tmp_path / "evil.pt", obj=lambda s: {"state_dict": s, "extra": Custom()})
    cfg = write_config(tmp_path / "small.json")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(
        WeightsError,
        match=r"evil.pt: not a checkpoint torch.load\(weights_only=True\) can read "
        r"\(Unsupported global: GLOBAL [\w.]*Custom\)",
    ):
        convert_adm(tmp_path / "evil.pt", tmp_path / "out", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out, no staging folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="Custom"):
        convert_adm(tmp_path / "evil.pt", tmp_path / "empty", cfg)
    assert list((tmp_path / "empty").iterdir()) == []
    with pytest.raises(WeightsError, match=r"missing.pt: no such file"):
        convert_adm(tmp_path / "missing.pt", tmp_path / "out", cfg)


def test_a_wrong_key_is_named(tmp_path):
    def rename(state):
        state["input_blocks.0.0.wieght"] = state.pop("input_blocks.0.0.weight")
        return state

    small_checkpoint(tmp_path / "ckpt.pt", obj=lambda s: {"model": rename(s)})
    with pytest.raises(WeightsError) as info:
        convert_adm(tmp_path / "ckpt.pt", tmp_path / "out", write_config(tmp_path / "small.json"))
    msg = str(info.value)
    assert "unexpected key 'input_blocks.0.0.wieght' (config 'small.json' has no such tensor)" in msg
    assert "; and 1 other mismatch (1 missing)" in msg
    assert not (tmp_path / "out").exists()


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    small_checkpoint(tmp_path / "ckpt.pt", config={**CFG, "learn_sigma": True})
    with pytest.raises(WeightsError) as info:
        convert_adm(tmp_path / "ckpt.pt", tmp_path / "out", write_config(tmp_path / "small.json"))
    msg = str(info.value)
    assert "out.2.weight: checkpoint shape (6, 32, 3, 3) but config 'small.json' expects (3, 32, 3, 3)" in msg
    assert "; and 1 other mismatch (1 of another shape)" in msg
    state = ADMUNet(CFG).state_dict()
    state.pop("middle_block.1.qkv.bias")
    with pytest.raises(WeightsError, match=r"missing key 'middle_block.1.qkv.bias' \(config 'custom' expects shape "):
        check_state_dict(state, CFG)


def test_config_errors_name_the_key():
    with pytest.raises(
        ValueError, match=r"unknown ADM config name 'ffhq': expected one of ffhq256, imagenet256-uncond"
    ):
        resolve_config("ffhq")
    with pytest.raises(ValueError, match=r"no such file '.*nowhere.json'"):
        resolve_config("nowhere.json")
    with pytest.raises(ValueError, match=r"unknown key 'num_chanels' \(known keys: image_size, in_channels"):
        resolve_config({**CFG, "num_chanels": 64})
    with pytest.raises(
        ValueError,
        match=r"key 'attention_resolutions': expected resolutions the network reaches "
        r"\(\[32, 16, 8\]\), got \[4\]",
    ):
        resolve_config({**CFG, "attention_resolutions": [4]})
    with pytest.raises(ValueError, match=r"key 'num_channels': expected channels per level .* multiples of 32"):
        resolve_config({**CFG, "num_channels": 24})
    with pytest.raises(ValueError, match=r"key 'schedule': expected beta_schedule 'linear' or 'cosine', got 'sigmoid'"):
        resolve_config({**CFG, "schedule": {"beta_schedule": "sigmoid"}})
    with pytest.raises(ValueError, match=r"key 'image_size': expected an integer >= 1"):
        resolve_config({"num_channels": 32})


def test_guided_diffusion_flags_and_defaults():
    cfg = resolve_config(
        {
            "image_size": 64,
            "attention_resolutions": "32,16,8",
            "class_cond": True,
            "diffusion_steps": 1000,
            "noise_schedule": "cosine",
            "use_fp16": True,
        }
    )
    assert cfg["channel_mult"] == [1, 2, 3, 4] and cfg["attention_resolutions"] == [32, 16, 8]
    assert cfg["num_classes"] == 1000 and cfg["schedule"]["beta_schedule"] == "cosine"
    abar = alphas_cumprod(cfg["schedule"])
    assert abar.shape == (1000,) and bool((abar[1:] < abar[:-1]).all())
    assert resolve_config("imagenet64-cond")["schedule"]["beta_schedule"] == "cosine"


def test_tampered_weights_fail_the_checksum(tmp_path):
    small_checkpoint(tmp_path / "ckpt.pt")
    out = convert_adm(tmp_path / "ckpt.pt", tmp_path / "out", write_config(tmp_path / "small.json"))
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"model.safetensors: checksum mismatch"):
        load_adm(out)
    weights.unlink()
    with pytest.raises(WeightsError, match=r"model.safetensors: no such file"):
        load_adm(out)


def test_out_folder_policy(tmp_path):
    small_checkpoint(tmp_path / "ckpt.pt")
    cfg = write_config(tmp_path / "small.json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileError, match=r"not an earlier ADM conversion"):
        convert_adm(tmp_path / "ckpt.pt", tmp_path / "other", cfg)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]
    out = convert_adm(tmp_path / "ckpt.pt", tmp_path / "out", cfg)
    first = sha256_file(out / "model.safetensors")
    small_checkpoint(tmp_path / "ckpt.pt", obj=lambda s: {k: v + 1 for k, v in s.items()})
    convert_adm(tmp_path / "ckpt.pt", out, cfg)  # an earlier conversion is replaced
    assert sha256_file(out / "model.safetensors") != first
    load_adm(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "other", "out", "small.json"]


def test_a_failed_write_leaves_out_as_it_was(tmp_path, monkeypatch):
    import safetensors.torch

    small_checkpoint(tmp_path / "ckpt.pt")
    cfg = write_config(tmp_path / "small.json")
    out = convert_adm(tmp_path / "ckpt.pt", tmp_path / "out", cfg)
    before = {p.name: sha256_file(p) for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    for folder in (tmp_path / "new", out):
        with pytest.raises(OSError, match="No space left"):
            convert_adm(tmp_path / "ckpt.pt", folder, cfg)
    assert not (tmp_path / "new").exists()
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before


def test_converter_command(tmp_path, capsys):
    small_checkpoint(tmp_path / "ckpt.pt", obj=lambda s: {"ema": s, "step": torch.tensor(3)})
    converter = ADMConverter()
    parser = argparse.ArgumentParser()
    converter.add_arguments(parser)
    options = parser.parse_args(
        [
            str(tmp_path / "ckpt.pt"),
            "--config",
            str(write_config(tmp_path / "small.json")),
            "--out",
            str(tmp_path / "out"),
            "--key",
            "ema",
        ]
    )
    assert converter.run(options) == 0
    line = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out' / 'model.safetensors'} and config.json" in line and "parameters" in line
    net, saved = load_adm(tmp_path / "out", dtype="float64")
    assert saved["command"].startswith("invgen convert adm ") and saved["command"].endswith("--key ema")
    assert net.time_embed[0].weight.dtype == torch.float64


def test_parameter_counts_without_allocating():
    with torch.device("meta"):
        ffhq = ADMUNet("ffhq256")
        imagenet = ADMUNet("imagenet256-uncond")
    assert all(p.is_meta for p in ffhq.parameters())
    assert sum(p.numel() for p in ffhq.parameters()) == FFHQ256_PARAMETERS
    assert sum(p.numel() for p in imagenet.parameters()) == IMAGENET256_UNCOND_PARAMETERS
    assert ffhq.out_channels == 6 and "label_emb.weight" not in ffhq.state_dict()


@pytest.mark.parametrize("name", list(ADM_CONFIGS))
def test_named_configs_have_guided_diffusions_keys(name):
    """Every named config builds the same keys and shapes, in the same order, as guided-diffusion's UNetModel."""
    unet = azula_unet()
    cfg = resolve_config(name)
    with torch.device("meta"):
        ours = ADMUNet(cfg).state_dict()
        theirs = unet.UNetModel(
            image_size=cfg["image_size"],
            in_channels=3,
            model_channels=cfg["num_channels"],
            out_channels=6,
            num_res_blocks=cfg["num_res_blocks"],
            attention_resolutions={cfg["image_size"] // r for r in cfg["attention_resolutions"]},
            channel_mult=tuple(cfg["channel_mult"]),
            num_classes=cfg["num_classes"],
            num_heads=cfg["num_heads"],
            num_head_channels=cfg["num_head_channels"],
            use_scale_shift_norm=cfg["use_scale_shift_norm"],
            resblock_updown=cfg["resblock_updown"],
            use_new_attention_order=cfg["use_new_attention_order"],
        ).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]


def test_low_precision_and_input_checks():
    torch.manual_seed(0)
    net = ADMUNet({**CFG, "num_classes": 4}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.05 * torch.randn(p.shape))
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([3.5, 700.0]), torch.tensor([0, 3])
    with torch.no_grad():
        full = net(x, t, y)
        half = copy.deepcopy(net).to(torch.bfloat16)(x, t, y)
    assert half.dtype == torch.float32 and rel_error(half, full) < 0.05
    with torch.no_grad():
        double = copy.deepcopy(net).double()(x.double(), t, y)
    assert double.dtype == torch.float64 and rel_error(double.float(), full) < 1e-5
    with pytest.raises(
        ShapeError, match=r"x: expected \(B, 3, H, W\) with H and W multiples of 4, got \(2, 3, 30, 30\)"
    ):
        net(x[..., :30, :30], t, y)
    with pytest.raises(ShapeError, match=r"timesteps: expected shape \(2,\) or \(\), got \(3,\)"):
        net(x, torch.ones(3), y)
    with pytest.raises(ValueError, match=r"needs class indices y of shape \(2,\), got None"):
        net(x, t)
