"""Verified weights: every shipped folder records the SHA-256 of its tensors file; loading checks it, the framing, the
finite values, keys and shapes and config.json, each failure a WeightsError naming the file and what is wrong.
Trainers refuse non-positive step counts."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from invgen import registry
from invgen.cli import main as cli_main
from invgen.errors import PluginError, WeightsError
from invgen.train.checkpoint import export_weights, load_checkpoint, load_pretrained, register_weight_folders
from invgen.train.verify import (
    CONVERT_COMMAND,
    check_state,
    read_config,
    read_tensors,
    sha256_file,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]
GAN = {"in_channels": 1, "image_size": 8, "latent_dim": 2, "channels": [4]}


def _shipped() -> list[Path]:
    folders = [*ROOT.glob("plugins/*/weights/*"), *ROOT.glob("invgen/metrics/weights/*")]
    return sorted(f for f in folders if f.is_dir() and any(f.glob("*.safetensors")))


def _gan_folder(folder: Path, config: dict | None = None) -> Path:
    """A tiny GAN weight folder written the way trainers write one (export, then the config with its SHA-256)."""
    from invgen_plugins.gan.net import GANConfig, Generator

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    export_weights(Generator(GANConfig.from_dict(GAN)), folder)
    write_config(folder, config or {"name": "tiny-gan", "gan": GAN, "image_shape": [1, 8, 8]})
    return folder


def _load(folder: Path):
    from invgen_plugins.gan.model import GANPrior

    return GANPrior.from_pretrained(folder)


def test_every_shipped_folder_records_the_sha256_of_its_tensors():
    folders = _shipped()
    assert len(folders) >= 16
    for folder in folders:
        sums = read_config(folder)["sha256"]
        files = sorted(f.name for f in folder.glob("*.safetensors"))
        assert sorted(sums) == files, folder
        for name in files:
            assert sums[name] == sha256_file(folder / name), f"{folder / name}: run tools/record_weight_checksums.py"


def test_export_path_records_the_checksum_and_loading_checks_it(tmp_path):
    folder = _gan_folder(tmp_path / "gan")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["sha256"] == {"model.safetensors": sha256_file(folder / "model.safetensors")}
    prior = _load(folder)
    assert prior.decode(torch.zeros(2, 2)).shape == (2, 1, 8, 8)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _pickle_legacy(path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)


def _pickle_zip(path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, path)


def _plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"w": [0.0, 1.0]}, protocol=4))


def _text(path: Path) -> None:
    path.write_text("hello, these are not weights\n")


def _tiny(path: Path) -> None:
    path.write_bytes(b"\x10\x00\x00")


def _trailing(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\x00" * 7)


FILE_CASES = {
    "flipped byte": (
        _flip_last_byte,
        r"checksum mismatch: config.json records sha256 [0-9a-f]{16}\.\.\., the file has",
    ),
    "truncated": (_truncate, r"truncated: \d+ bytes, its header describes \d+ bytes"),
    "empty": (_empty, r"empty file \(0 bytes\)"),
    "torch.save legacy pickle": (_pickle_legacy, r"a pickle \(protocol 2.*pickles are never loaded; convert"),
    "torch.save zip": (_pickle_zip, r"a zip archive \(torch.save's format: a pickle inside\).*never loaded"),
    "pickle.dumps": (_plain_pickle, r"a pickle \(protocol 4"),
    "text": (_text, r"unknown content \(first bytes 68 65 6c 6c"),
    "eight bytes short": (_tiny, r"truncated: 3 bytes"),
    "trailing bytes": (_trailing, r"damaged: 7 bytes after the last tensor"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_damaged_tensors_file_gives_weights_error_naming_it(tmp_path, case):
    damage, message = FILE_CASES[case]
    folder = _gan_folder(tmp_path / "gan")
    damage(folder / "model.safetensors")
    with pytest.raises(WeightsError, match=message) as info:
        _load(folder)
    assert str(info.value).startswith(str(folder / "model.safetensors") + ": ")
    assert info.value.path == folder / "model.safetensors"
    if "pickle" in case or "zip" in case:
        assert f"`{CONVERT_COMMAND}`" in str(info.value)


def test_nan_tensor_is_refused_after_loading(tmp_path):
    folder = _gan_folder(tmp_path / "gan")
    state = read_tensors(folder / "model.safetensors")
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key].view(-1)[0] = float("nan")
    state[key].view(-1)[1] = float("inf")
    save_file(state, str(folder / "model.safetensors"))
    write_config(folder, read_config(folder))  # a consistent checksum: only the values are wrong
    with pytest.raises(WeightsError, match=rf"1 tensor\(s\) hold NaN or Inf: {key} \(2 of \d+ values\)"):
        _load(folder)


def test_missing_unexpected_and_misshapen_tensors_are_listed(tmp_path):
    folder = _gan_folder(tmp_path / "gan")
    state = read_tensors(folder / "model.safetensors")
    keys = sorted(state)
    del state[keys[0]]
    state["extra.weight"] = torch.zeros(3)
    state[keys[1]] = torch.zeros(7, 7)
    save_file(state, str(folder / "model.safetensors"))
    write_config(folder, read_config(folder))
    with pytest.raises(WeightsError) as info:
        _load(folder)
    text = str(info.value)
    assert text.startswith(f"{folder / 'model.safetensors'}: the tensors do not fit Generator")
    assert f"1 missing ({keys[0]})" in text and "1 unexpected (extra.weight)" in text
    assert f"1 of another shape ({keys[1]} expected" in text and "found (7, 7)" in text


def test_weights_of_another_architecture_list_the_first_few(tmp_path):
    folder = _gan_folder(tmp_path / "gan")
    other = {f"encoder.{i}.weight": torch.zeros(2) for i in range(8)}
    with pytest.raises(WeightsError, match=r"8 unexpected \(encoder.0.weight, .*, \.\.\. \(3 more\)\)"):
        check_state(torch.nn.Linear(2, 2), other, folder / "model.safetensors")


CONFIG_CASES = {
    "truncated JSON": (lambda text: text[: len(text) // 2], r"config.json: broken JSON at line \d+ column \d+"),
    "empty": (lambda text: "", r"config.json: empty file"),
    "a list": (lambda text: "[1, 2]", r"config.json: expected a JSON object, got a JSON list"),
    "missing key": (
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "gan"}),
        r"config.json: incomplete config: missing key 'gan' \(needed to build the generator\)",
    ),
    "bad value": (
        lambda text: json.dumps({**json.loads(text), "gan": {**GAN, "image_size": 9}}),
        r"config.json: broken config: the generator cannot be built from it \(GANConfig: image_size must be",
    ),
    "unknown field": (
        lambda text: json.dumps({**json.loads(text), "gan": {**GAN, "depth": 3}}),
        r"config.json: broken config: .*unexpected keyword argument 'depth'",
    ),
    "bad checksum entry": (
        lambda text: json.dumps({**json.loads(text), "sha256": {"model.safetensors": "abc"}}),
        r"config.json: key 'sha256': expected \{file name: 64 lowercase hex digits\}",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_broken_or_incomplete_config_names_the_file_and_key(tmp_path, case):
    edit, message = CONFIG_CASES[case]
    folder = _gan_folder(tmp_path / "gan")
    path = folder / "config.json"
    path.write_text(edit(path.read_text()))
    with pytest.raises(WeightsError, match=message) as info:
        _load(folder)
    assert str(info.value).startswith(str(path))


def test_missing_files_name_the_file(tmp_path):
    folder = _gan_folder(tmp_path / "gan")
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"config.json: no such file"):
        load_pretrained(folder)
    with pytest.raises(WeightsError, match=r"absent.safetensors: no such file"):
        read_tensors(folder / "absent.safetensors")
    with pytest.raises(WeightsError, match=r": is a folder, expected a safetensors file"):
        read_tensors(folder)


def test_config_without_a_checksum_still_loads(tmp_path):
    """Third-party folders written before checksums existed load unverified (the framing and NaN checks still run)."""
    folder = _gan_folder(tmp_path / "gan")
    cfg = read_config(folder)
    del cfg["sha256"]
    (folder / "config.json").write_text(json.dumps(cfg))
    assert _load(folder).latent_shape == (2,)


def test_a_broken_folder_is_reported_and_the_others_register(tmp_path):
    good = _gan_folder(tmp_path / "weights" / "good-gan")
    bad = _gan_folder(tmp_path / "weights" / "bad-gan")
    (bad / "config.json").write_text("{")
    names = []
    with pytest.raises(PluginError, match=r"1 weight folder\(s\) skipped: .*bad-gan/config.json: broken JSON"):
        register_weight_folders(
            lambda name, factory, **meta: names.append(name),
            tmp_path / "weights",
            "invgen_plugins.gan.model:GANPrior",
            ("generator",),
            lambda config, dataset: "tiny",
        )
    assert names == [good.name]


def test_training_checkpoint_damage_names_the_file(tmp_path):
    from invgen.train.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "ckpt", model=model, optimizer=opt, ema=None, step=3)
    assert load_checkpoint(tmp_path / "ckpt", model=model, optimizer=opt)["step"] == 3
    _truncate(tmp_path / "ckpt.safetensors")
    with pytest.raises(WeightsError, match=r"ckpt.safetensors: truncated"):
        load_checkpoint(tmp_path / "ckpt", model=model)


def test_convert_writes_safetensors_and_the_checksum(tmp_path):
    from invgen.convert import convert_checkpoint, main

    linear = torch.nn.Linear(3, 2)
    torch.save({"epoch": 4, "state_dict": linear.state_dict()}, tmp_path / "ckpt.pt")
    out = convert_checkpoint(tmp_path / "ckpt.pt", tmp_path / "folder")
    cfg = read_config(tmp_path / "folder")
    state = read_tensors(out, sha256=cfg["sha256"]["model.safetensors"])
    torch.testing.assert_close(state["weight"], linear.weight.detach())

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"evil.pt: not a checkpoint torch.load\(weights_only=True\) can read"):
        convert_checkpoint(tmp_path / "evil.pt", tmp_path / "evil")
    assert main([str(tmp_path / "evil.pt"), str(tmp_path / "evil")]) == 2


@pytest.mark.parametrize("trainer", ["diffusion", "vae", "gan", "flow", "ebm"])
@pytest.mark.parametrize("steps", ["-1", "0"])
def test_every_trainer_refuses_non_positive_steps(trainer, steps, capsys):
    assert trainer in registry.names("trainers")
    with pytest.raises(SystemExit) as info:
        cli_main(["train", trainer, "--dataset", "mnist", "--steps", steps, "--out", "unused"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --steps: expected a positive integer, got {steps}" in err


def test_every_registered_trainer_validates_its_steps():
    for name in registry.names("trainers"):
        parser = argparse.ArgumentParser(exit_on_error=False)
        registry.get("trainers", name).create().add_arguments(parser)
        with pytest.raises(argparse.ArgumentError, match="expected a positive integer"):
            parser.parse_args(["--dataset", "mnist", "--steps", "-1", "--out", "x"])


def test_classifier_training_refuses_non_positive_epochs(capsys):
    from invgen.metrics.classifier import main

    with pytest.raises(SystemExit):
        main(["train", "--dataset", "mnist", "--out", "unused", "--epochs", "0"])
    assert "argument --epochs: expected a positive integer, got 0" in capsys.readouterr().err
