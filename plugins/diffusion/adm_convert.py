"""The one-time safe conversion of guided-diffusion (ADM) checkpoints, and the loader of converted folders.

* :func:`check_state_dict`: every key and shape of a state dict against an :class:`~.adm.ADMUNet` config;
* :func:`convert_adm`: a ``.pt`` read with ``torch.load(weights_only=True)`` only
  (:func:`invgen.convert.read_state_dict`), checked, written as ``model.safetensors`` + ``config.json``;
* :func:`load_adm`: a converted folder, checksums verified, as an eval-mode network;
* :class:`ADMConverter`: the ``invgen convert adm CHECKPOINT --config NAME --out DIR`` command.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.errors import FileError, WeightsError
from invgen_plugins.diffusion.adm import (
    ADM_CONFIGS,
    ARCH_DEFAULTS,
    CONFIG,
    FAMILY,
    LEARNED_VARIANCE_USE,
    WEIGHTS,
    ADMUNet,
    _meta_shapes,
    resolve_config,
)


# -- conversion and loading --------------------------------------------------------------------------------------------
def check_state_dict(
    state: Mapping[str, Any], config: str | os.PathLike | Mapping[str, Any], source: str | os.PathLike | None = None
) -> None:
    """Check that ``state`` has exactly the keys and shapes of ``ADMUNet(config).state_dict()``, in floating point.

    The network is built on the ``meta`` device (no weights allocated). The first mismatch is the first unexpected,
    misshapen or non-floating tensor in the checkpoint's order, else the first missing key in the network's order.

    Args:
        state: the checkpoint's state dict.
        config: the architecture (:func:`resolve_config`).
        source: the file it came from, named in the message.

    Raises:
        WeightsError: naming the first mismatch (``unexpected key 'k'``, ``missing key 'k'`` or
            ``k: checkpoint shape (a, b) but config 'ffhq256' expects (c, d)``) and counting the others by kind.
    """
    cfg = resolve_config(config)
    want, name = _meta_shapes(cfg), cfg["name"]
    problems: list[tuple[str, str]] = []  # (kind, message), checkpoint order then network order
    for key, value in state.items():
        if key not in want:
            problems.append(("unexpected", f"unexpected key {key!r} (config {name!r} has no such tensor)"))
        elif not isinstance(value, Tensor) or not value.is_floating_point():
            what = f"dtype {value.dtype}" if isinstance(value, Tensor) else f"a {type(value).__name__}"
            problems.append(("not floating point", f"{key}: {what}, expected a floating-point tensor"))
        elif tuple(value.shape) != want[key]:
            shape = tuple(value.shape)
            problems.append(
                ("of another shape", f"{key}: checkpoint shape {shape} but config {name!r} expects {want[key]}")
            )
    problems += [
        ("missing", f"missing key {k!r} (config {name!r} expects shape {s})") for k, s in want.items() if k not in state
    ]
    if not problems:
        return
    first, rest = problems[0][1], [kind for kind, _ in problems[1:]]
    others = ""
    if rest:
        counts = ", ".join(f"{rest.count(kind)} {kind}" for kind in dict.fromkeys(rest))
        others = f"; and {len(rest)} other mismatch{'es' if len(rest) > 1 else ''} ({counts})"
    prefix = f"{source}: " if source is not None else ""
    raise WeightsError(
        f"{prefix}the checkpoint does not fit the ADM network of config {name!r}: {first}{others} (weights of another "
        "architecture: give the config the checkpoint was trained with)",
        source,
    )


def _earlier_conversion(out: Path) -> bool:
    """Whether ``out`` holds a ``config.json`` of family ``adm`` (a folder this converter wrote)."""
    try:
        return json.loads((out / CONFIG).read_text()).get("family") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False


def convert_adm(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    config: str | os.PathLike | Mapping[str, Any],
    command: str | None = None,
    *,
    key: str | None = None,
) -> Path:
    """Convert a guided-diffusion checkpoint into the folder ``out``: ``model.safetensors`` + ``config.json``.

    Everything is checked before anything is written: the config (:func:`resolve_config`), the output folder, the
    checkpoint (read with ``torch.load(weights_only=True)`` only, :func:`invgen.convert.read_state_dict`: a pickled
    object other than tensors and plain containers is refused), its keys and shapes (:func:`check_state_dict`) and
    its values (finite). The files are then written into a hidden folder inside ``out`` and moved into place, so a
    failure leaves ``out`` as it was (no new files; a folder created for it is removed).

    ``out`` may be missing or empty, or hold an earlier conversion (a ``config.json`` of family ``adm``), whose
    ``model.safetensors`` and ``config.json`` are replaced (its other files are kept). Any other non-empty folder is
    refused, so a conversion never mixes its files with unrelated ones.

    ``config.json`` records: ``family: "adm"``, ``name``, the architecture (``net``), ``schedule``,
    ``parametrization: "eps"``, ``learned_variance`` and ``learned_variance_use`` (the variance half is dropped: denoise
    uses the epsilon half), ``data_range``, ``image_shape``, ``parameters``, ``dtype``, the source file's name, key and
    SHA-256, the ``command`` and, under ``sha256``, the tensors file's own SHA-256
    (:func:`invgen.train.verify.write_config`, checked by every loader).

    Args:
        checkpoint: the guided-diffusion ``.pt`` file (a state dict, or a dict holding one under ``key``).
        out: the folder to write.
        config: the architecture the checkpoint was trained with: a name of :data:`ADM_CONFIGS`, a JSON file or a dict.
        command: the command that made the folder, recorded in ``config.json`` (default: this call).
        key: the checkpoint's key holding the state dict (default: the checkpoint itself, else ``state_dict``, ``ema``
            or ``model``).

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: a bad config (the key and what was expected).
        FileError: ``out`` is a file, not writable, or a non-empty folder that is not an earlier conversion.
        WeightsError: the checkpoint is missing, unreadable, refused by the ``weights_only`` load, holds no state dict,
            does not fit the config (the first mismatch) or holds NaN/Inf.

    Example:
        >>> convert_adm("ffhq_10m.pt", "weights/ffhq-adm", config="ffhq256")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    from invgen.convert import read_state_dict
    from invgen.files import check_output_dir, sha256_file
    from invgen.train.verify import check_finite, write_config

    cfg = resolve_config(config)
    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out, "out")
    if out.is_dir() and any(out.iterdir()) and not _earlier_conversion(out):
        raise FileError(
            f"out {out}: a non-empty folder that is not an earlier ADM conversion (no config.json of family "
            f"{FAMILY!r}); give a new or empty folder",
            path=out,
        )
    state = read_state_dict(checkpoint, key)
    check_state_dict(state, cfg, source=checkpoint)
    check_finite(state, checkpoint)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    saved = {
        "name": cfg["name"],
        "family": FAMILY,
        "net": {k: cfg[k] for k in ARCH_DEFAULTS},
        "schedule": cfg["schedule"],
        "parametrization": cfg["parametrization"],
        "learned_variance": cfg["learn_sigma"],
        "learned_variance_use": LEARNED_VARIANCE_USE
        if cfg["learn_sigma"]
        else "none: the network outputs epsilon only",
        "data_range": cfg["data_range"],
        "image_shape": [cfg["in_channels"], cfg["image_size"], cfg["image_size"]],
        "parameters": sum(v.numel() for v in state.values()),
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "source": {"file": checkpoint.name, "key": key, "sha256": sha256_file(checkpoint)},
        "command": command or f"convert_adm({str(checkpoint)!r}, {str(out)!r}, config={cfg['name']!r})",
    }
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".converting-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir()
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(staging / WEIGHTS), {"format": "pt"})
        write_config(staging, saved, weights=(WEIGHTS,))
        # the tensors first, then the config recording their checksum: an interruption between the two moves leaves
        # a folder that fails the checksum when loaded, never one that loads other weights
        os.replace(staging / WEIGHTS, out / WEIGHTS)
        os.replace(staging / CONFIG, out / CONFIG)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def load_adm(
    folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32
) -> tuple[ADMUNet, dict[str, Any]]:
    """The network of a folder written by :func:`convert_adm`, checked, in eval mode without gradients.

    ``model.safetensors`` is checked before use against the SHA-256 that ``config.json`` records (and for truncation,
    foreign formats, NaN/Inf: :func:`invgen.train.verify.read_tensors`), its keys and shapes against the config
    (:func:`check_state_dict`), then loaded with ``load_state_dict(strict=True)``. Nothing is unpickled.

    Args:
        folder: the converted folder.
        device: where the network goes.
        dtype: its dtype (a torch dtype or its name, e.g. ``"float16"``).

    Returns:
        ``(net, config)``: the :class:`ADMUNet` and the folder's ``config.json`` as a dict (``schedule``,
        ``parametrization``, ``learned_variance``, ``data_range``, ...).

    Raises:
        WeightsError: naming the file: a missing or broken ``config.json``, not of family ``adm``, without the
            tensors' checksum, a missing, altered (checksum mismatch) or damaged ``model.safetensors``, or tensors that
            do not fit the config.
    """
    from invgen.train.verify import SHA_KEY, config_errors, read_config, read_tensors

    folder = Path(folder)
    saved = read_config(folder)
    if saved.get("family") != FAMILY:
        raise WeightsError(
            f"{folder / CONFIG}: family {saved.get('family')!r}, expected {FAMILY!r} (a folder written by convert_adm)",
            folder / CONFIG,
        )
    sha = (saved.get(SHA_KEY) or {}).get(WEIGHTS)
    if sha is None:
        raise WeightsError(
            f"{folder / CONFIG}: records no SHA-256 of {WEIGHTS} (key {SHA_KEY!r}); convert the checkpoint again",
            folder / CONFIG,
        )
    with config_errors(folder / CONFIG, "the ADM network"):
        cfg = resolve_config(saved)
    state = read_tensors(folder / WEIGHTS, sha256=sha)
    check_state_dict(state, cfg, source=folder / WEIGHTS)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    with torch.device("meta"):
        net = ADMUNet(cfg)
    net.load_state_dict(state, strict=True, assign=True)
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False), saved


class ADMConverter:
    """``invgen convert adm CHECKPOINT --config NAME|FILE.json --out DIR [--key KEY]``: :func:`convert_adm` as a
    command, in the shape of the trainers (``add_arguments(parser)``, ``run(options)``)."""

    name = FAMILY
    description = (
        "convert a guided-diffusion (ADM) checkpoint (a .pt state dict, read with weights_only=True) into "
        "model.safetensors + config.json, checked key by key against the architecture"
    )

    def __call__(self) -> ADMConverter:  # a registry factory: ``entry.create()`` returns the converter
        return self

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add ``CHECKPOINT``, ``--config``, ``--out`` and ``--key`` to ``parser``."""
        parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the guided-diffusion .pt file (a state dict)")
        parser.add_argument(
            "--config",
            required=True,
            metavar="NAME|FILE.json",
            help=f"the architecture it was trained with: {', '.join(ADM_CONFIGS)}, or a JSON file of "
            "guided-diffusion's flags (image_size, num_channels, ...; missing ones take guided-diffusion's defaults)",
        )
        parser.add_argument(
            "--out",
            required=True,
            metavar="DIR",
            help="the folder to write (new, empty, or an earlier conversion, which is replaced)",
        )
        parser.add_argument("--key", metavar="KEY", help="the checkpoint's key holding the state dict (default: found)")

    def run(self, options: argparse.Namespace) -> int:
        """Convert, then print one line: what was written, the parameter count and the seconds taken.

        Args:
            options: the parsed ``checkpoint``, ``config``, ``out``, ``key`` (and, optionally, ``command_line``: the
                command recorded in ``config.json``; default ``invgen convert adm ...`` rebuilt from the options).

        Returns:
            0 (errors are raised: ``ValueError`` for the config, ``FileError`` for ``--out``, ``WeightsError`` for the
            checkpoint, each one line in the CLI).
        """
        start = time.perf_counter()
        argv = [str(options.checkpoint), "--config", str(options.config), "--out", str(options.out)]
        argv += ["--key", options.key] if options.key else []
        # the CLI may set options.command_line (how it was called); else the equivalent command is recorded
        command = getattr(options, "command_line", None) or shlex.join(["invgen", "convert", FAMILY, *argv])
        out = convert_adm(options.checkpoint, options.out, options.config, command=command, key=options.key)
        saved = json.loads((out / CONFIG).read_text())
        print(
            f"wrote {out / WEIGHTS} and {CONFIG}: ADM {saved['name']!r}, {saved['parameters']:,} parameters "
            f"({saved['dtype']}), in {time.perf_counter() - start:.1f} s"
        )
        return 0
