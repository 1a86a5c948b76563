"""Exponential moving average of weights, and checkpoints that resume exactly, in safetensors + JSON (no pickle).

A checkpoint is two files written atomically: ``<name>.safetensors`` (model, EMA and optimizer tensors, and the
data generator's state) and ``<name>.json`` (step, optimizer hyper-parameters and anything JSON-able).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's parameters, with the usual warm-up ``min(decay, (1+n)/(10+n))``."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay: expected a value in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, state in sd["state"].items():
        meta["state"][str(idx)] = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["state"][str(idx)][k] = v
    return tensors, meta


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    step: int,
    generator: torch.Generator | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``path.safetensors`` and ``path.json`` atomically (temporary files, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.model.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    if generator is not None:
        tensors["generator.state"] = generator.get_state()
    meta = {
        "step": step,
        "optimizer": opt_meta,
        "ema_updates": ema.updates if ema else 0,
        "torch_rng": None,
        "extra": extra or {},
    }
    tensors["torch.rng_state"] = torch.get_rng_state()
    tmp_t, tmp_j = path.with_suffix(".safetensors.tmp"), path.with_suffix(".json.tmp")
    save_file(tensors, str(tmp_t))
    tmp_j.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_t, path.with_suffix(".safetensors"))
    os.replace(tmp_j, path.with_suffix(".json"))


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: EMA | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns the JSON metadata (``step``, ``extra``).

    A truncated, empty or non-safetensors tensors file, or a broken JSON file, raises
    :class:`~invgen.errors.WeightsError` naming the file."""
    from invgen.train.verify import read_config, read_tensors

    path = Path(path)
    tensors = read_tensors(path.with_suffix(".safetensors"), finite=False)
    meta = read_config(path.with_suffix(".json"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        ema.updates = int(meta.get("ema_updates", 0))
    if optimizer is not None:
        state: dict[int, dict[str, Any]] = {}
        for idx, scalars in meta["optimizer"]["state"].items():
            state[int(idx)] = dict(scalars)
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if generator is not None and "generator.state" in tensors:
        generator.set_state(tensors["generator.state"])
    if "torch.rng_state" in tensors:
        torch.set_rng_state(tensors["torch.rng_state"])
    return meta


def variant_config(config: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The config of ``name``: the folder's own config, or one of its ``variants`` (the same weights registered under
    another name with some config keys replaced, e.g. an any-size ``image_shape: null`` use of a network trained on
    32x32 images). Unknown names and None give the folder's config.

    Example ``config.json`` fragment: ``"variants": {"diffusion-natural-rgb": {"image_shape": null, "tile": 256}}``.
    """
    over = config.get("variants", {}).get(name) if name else None
    if over is None:
        return config
    if not isinstance(over, dict):
        raise ValueError(f"config variant {name!r} must map config keys to values, got {type(over).__name__}")
    merged = {key: value for key, value in config.items() if key != "variants"}
    merged.update(over)
    merged["name"] = name
    merged["variant_of"] = config.get("name")
    return merged


def load_pretrained(
    folder: str | Path, weights: str = "model.safetensors", device: str | torch.device = "cpu", name: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a shipped or trained prior folder: ``config.json`` + safetensors (no pickle).

    ``name`` selects one of the config's ``variants`` (:func:`variant_config`); the weights are the folder's. The
    tensors file is checked before use (:func:`invgen.train.verify.read_tensors`): against the SHA-256 that
    ``config.json`` records under ``"sha256"`` (when it records one), for truncation and foreign formats, and every
    tensor for NaN/Inf. Build the network inside :func:`~invgen.train.verify.config_errors` and load the state with
    :func:`~invgen.train.verify.load_state` to get the same clear errors for the config's keys and the tensors' shapes.

    Raises:
        WeightsError: naming the file and what is wrong.
    """
    from invgen.train.verify import CONFIG, SHA_KEY, config_errors, read_config, read_tensors

    folder = Path(folder)
    raw = read_config(folder)
    state = read_tensors(folder / weights, device=device, sha256=(raw.get(SHA_KEY) or {}).get(weights))
    with config_errors(folder / CONFIG, "the variant"):
        cfg = variant_config(raw, name)
    return cfg, state


class LazyTrainer:
    """A trainer entry for ``register_trainers`` whose module (``add_arguments``, ``run``) is imported on use."""

    def __init__(self, module: str, description: str) -> None:
        self.module = module
        self.description = description

    def __call__(self) -> LazyTrainer:  # the registry's factory: ``entry.create()`` returns the trainer
        return self

    def add_arguments(self, parser: Any) -> None:
        import_module(self.module).add_arguments(parser)

    def run(self, args: Any) -> Any:
        return import_module(self.module).run(args)


def register_weight_folders(
    register: Any,
    weights: str | Path,
    prior_class: str,
    capabilities: tuple[str, ...],
    describe: Any,
    **meta: Any,
) -> None:
    """Register, without loading anything, every folder of ``weights`` holding ``model.safetensors`` + ``config.json``
    as a prior named after the folder: how the built-in families ship their weights.

    Args:
        register: the ``register_priors`` hook's callback.
        weights: the plugin's weights folder.
        prior_class: ``"module:Class"`` of a prior with ``from_pretrained(folder, name=, device=)``, imported when a
            prior is created (listing stays cheap: only the small ``config.json`` files are read).
        capabilities: the capabilities of every prior of the folder.
        describe: ``describe(config, dataset) -> str``, the description from the folder's config and the dataset it
            was trained on (the folder's name when the config does not say).
        **meta: more registration metadata (e.g. ``log_prob_kind="exact"``).

    The metadata also carry ``image_shape`` and ``channels`` (from the config) and ``datasets`` (``training.dataset``
    and the config's optional ``datasets`` list, e.g. the test sets an any-size prior is meant for), which the
    benchmark suites' ``priors: auto`` uses. Each of the config's ``variants`` (:func:`variant_config`) is registered
    too, under its own name, with its own metadata (its ``datasets`` list alone) and the folder's weights.
    """
    from invgen.errors import PluginError, WeightsError
    from invgen.train.verify import CONFIG, config_errors, read_config

    module, cls = prior_class.split(":")
    broken: list[str] = []
    for folder in sorted(p for p in Path(weights).glob("*") if (p / "model.safetensors").exists()):
        try:
            base = read_config(folder)
            with config_errors(folder / CONFIG, "the registration"):
                _register_folder(register, folder, base, module, cls, capabilities, describe, meta)
        except WeightsError as exc:  # the other folders still register; the hook then reports this one
            broken.append(str(exc))
    if broken:
        raise PluginError(f"{len(broken)} weight folder(s) skipped: " + " | ".join(broken))


def _register_folder(
    register: Any,
    folder: Path,
    base: dict[str, Any],
    module: str,
    cls: str,
    capabilities: tuple[str, ...],
    describe: Any,
    meta: dict[str, Any],
) -> None:
    channels = base.get("channels") or (base["image_shape"][0] if base.get("image_shape") else None)  # the net's
    for name in (folder.name, *base.get("variants", {})):
        config = variant_config(base, name)
        trained_on = config.get("training", {}).get("dataset")
        own = config.get("datasets", [])
        datasets = tuple(dict.fromkeys([*([trained_on] if trained_on and name == folder.name else []), *own]))
        shape = tuple(config["image_shape"]) if config.get("image_shape") else None
        description = describe(config, trained_on or folder.name)
        if name != folder.name:
            description += f" (the weights of {folder.name}, used as {name})"

        def factory(device: str | torch.device = "cpu", _folder: Path = folder, _name: str = name, **kw: Any) -> Any:
            if not (_folder / "model.safetensors").exists():
                raise FileNotFoundError(f"the weights of {_name!r} are not shipped in this build ({_folder})")
            prior_cls = getattr(import_module(module), cls)
            return prior_cls.from_pretrained(_folder, name=_name, device=device, **kw)

        register(
            name,
            factory,
            capabilities=capabilities,
            image_shape=shape,
            channels=channels,
            datasets=datasets,
            description=description,
            **meta,
        )


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (``--steps -1`` and ``--steps 0`` are refused with a usage error)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_common_arguments(
    parser: Any,
    *,
    steps_help: str = "optimizer steps in total (resume continues)",
    checkpoint_every: int = 500,
    eval_images: int | None = None,
    eval_help: str = "",
) -> None:
    """The options every ``invgen train FAMILY`` shares: ``--dataset --image-size --steps --batch-size --ema --seed
    --checkpoint-every [--eval-images] --threads --device --out``; a trainer adds its own after them."""
    import torch as _torch

    parser.add_argument("--dataset", required=True, help="mnist, fashion-mnist, cifar10 or folder:PATH")
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--steps", type=positive_int, required=True, help=steps_help)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=positive_int, default=checkpoint_every)
    if eval_images is not None:
        parser.add_argument("--eval-images", type=non_negative_int, default=eval_images, help=eval_help)
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if _torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, checkpoint)")


def training_command(family: str) -> str:
    """``invgen train FAMILY ...`` as this process was called (for ``config.json``), or "" when called otherwise."""
    import shlex
    import sys

    if family not in sys.argv:
        return ""
    return f"invgen train {family} " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index(family) + 1 :])


def export_weights(model: nn.Module, out: str | Path, name: str = "model.safetensors") -> str:
    """Write ``model``'s state dict to ``out/name`` as safetensors, atomically (a temporary file, then rename), so a
    reader never sees half a file while training exports over it; returns the file's SHA-256.

    Write the folder's config after it with :func:`invgen.train.verify.write_config`, which records that SHA-256 in
    ``config.json`` (checked when the folder is loaded)."""
    from safetensors.torch import save_file

    from invgen.train.verify import sha256_file

    out = Path(out)
    tmp = out / f"{name}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(out / name)
    return sha256_file(out / name)
