"""Weight files checked before use: checksums, safetensors framing, finite values, keys and shapes, config.json.

A weight folder's ``config.json`` records the SHA-256 of each tensors file it describes::

    "sha256": {"model.safetensors": "9f86d0..."}

:func:`read_tensors` checks, in order and before anything is handed to torch: the file exists and is not empty, it is
not a pickle or another format (pickles are never loaded: :data:`CONVERT_COMMAND` converts them), its safetensors
header is whole and the file as long as the header says, its SHA-256 is the recorded one, and after loading every
floating tensor is finite. :func:`check_state` compares a state dict with a network's (missing, unexpected and
misshapen tensors, the first few of each), and :func:`config_errors` turns a missing key or a bad value met while
building a network from ``config.json`` into an error naming the file and the key. Every failure is a
:class:`~invgen.errors.WeightsError` naming the file and what is wrong.

Cost, measured on the largest shipped file (``diffusion-cifar10``, 6.3 MB, 180 tensors; a busy 2-core CPU, one
thread, medians): SHA-256 5 ms, the framing check 0.1 ms, the finite check 2 ms, safetensors' own load 2 ms, and
``invgen.prior("diffusion-cifar10")`` 34 ms with all of them.

Example:
    >>> from invgen.train.verify import read_config, read_tensors, load_state  # doctest: +SKIP
    >>> config = read_config("my-prior")  # doctest: +SKIP
    >>> sha = config["sha256"]["model.safetensors"]  # doctest: +SKIP
    >>> state = read_tensors("my-prior/model.safetensors", sha256=sha)  # doctest: +SKIP
    >>> load_state(MyNet(**config["net"]), state, "my-prior/model.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from invgen.errors import WeightsError
from invgen.files import sha256_file

CONFIG = "config.json"
SHA_KEY = "sha256"
CONVERT_COMMAND = "python -m invgen.convert FILE FOLDER"
SHOWN = 5  # how many offending keys an error lists
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else "")


# -- config.json ------------------------------------------------------------------------------------------------------
def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a weight folder (or the file itself), as a dict.

    Raises:
        WeightsError: the file is missing, empty, not UTF-8 JSON, not a JSON object, or its ``sha256`` entry is not a
            mapping of file names to 64 hex digits.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / CONFIG
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise WeightsError(f"{path}: {what} (a weight folder holds config.json and its tensors file)", path)
    raw = path.read_bytes()
    if not raw.strip():
        raise WeightsError(f"{path}: empty file (expected the JSON config of the weights)", path)
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected JSON", path) from None
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"{path}: broken JSON at line {exc.lineno} column {exc.colno}: {exc.msg} (a truncated or hand-edited "
            "config; restore it or export the weights again)",
            path,
        ) from None
    if not isinstance(cfg, dict):
        raise WeightsError(f"{path}: expected a JSON object, got a JSON {type(cfg).__name__}", path)
    sums = cfg.get(SHA_KEY)
    if sums is not None and (
        not isinstance(sums, dict) or not all(isinstance(v, str) and _HEX64.fullmatch(v) for v in sums.values())
    ):
        raise WeightsError(
            f"{path}: key {SHA_KEY!r}: expected {{file name: 64 lowercase hex digits}}, got {sums!r}", path
        )
    return cfg


@contextmanager
def config_errors(path: str | os.PathLike, what: str = "the network") -> Iterator[None]:
    """Turn a ``KeyError``, ``TypeError``, ``ValueError`` or ``AttributeError`` raised while building ``what`` from a
    config into a :class:`WeightsError` naming the config file and the key (``missing key 'flow'``)."""
    try:
        yield
    except WeightsError:
        raise
    except KeyError as exc:
        key = exc.args[0] if exc.args else "?"
        raise WeightsError(f"{path}: incomplete config: missing key {key!r} (needed to build {what})", path) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise WeightsError(f"{path}: broken config: {what} cannot be built from it ({exc})", path) from exc


def write_config(
    folder: str | os.PathLike, config: dict[str, Any], weights: tuple[str, ...] = ("model.safetensors",)
) -> dict[str, Any]:
    """Write ``folder/config.json`` atomically, recording the SHA-256 of each of ``weights`` present in the folder
    under ``"sha256"``; returns the written dict. Call it after the tensors file is exported."""
    folder = Path(folder)
    cfg = dict(config)
    sums = dict(cfg.get(SHA_KEY) or {})
    for name in weights:
        if (folder / name).is_file():
            sums[name] = sha256_file(folder / name)
    if sums:
        cfg[SHA_KEY] = sums
    tmp = folder / f"{CONFIG}.tmp"
    tmp.write_text(json.dumps(cfg, indent=1) + "\n")
    tmp.replace(folder / CONFIG)
    return cfg


# -- the tensors file -------------------------------------------------------------------------------------------------
_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive (torch.save's format: a pickle inside)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x1f\x8b", "a gzip file"),
    (b"SQLite format 3", "a SQLite database"),
)


def _foreign_format(head: bytes) -> str | None:
    """What a file that is not safetensors looks like, from its first bytes (None: it may be safetensors)."""
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]}: torch.save's legacy format or pickle.dump)"
    if head[:1] in (b"(", b"]", b"}", b"c"):
        return "probably a pickle (protocol 0 or 1)"
    return None


def _not_safetensors(path: Path, what: str) -> WeightsError:
    return WeightsError(
        f"{path}: {what}, not a safetensors file: pickles are never loaded; convert a torch checkpoint with "
        f"`{CONVERT_COMMAND}` (it reads tensors only, never code)",
        path,
    )


def check_framing(path: str | os.PathLike) -> int:
    """Check that ``path`` is a whole safetensors file without loading it; returns its size in bytes.

    Raises:
        WeightsError: missing, a folder, empty, a pickle or another format, a damaged header, or shorter (truncated)
            or longer than its header says.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder, expected a safetensors file", path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file (expected the safetensors tensors of the weights)", path)
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes); the export or the copy did not finish", path)
    with open(path, "rb") as f:
        head = f.read(16)
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
        if not (len(head) > 8 and head[8:9] == b"{" and n <= _MAX_HEADER):  # not the start of a safetensors file
            if size < 9 and not _foreign_format(head):
                raise WeightsError(
                    f"{path}: truncated: {size} bytes, a safetensors file starts with an 8-byte length "
                    "and a JSON header",
                    path,
                )
            raise _not_safetensors(path, _foreign_format(head) or f"unknown content (first bytes {head[:8].hex(' ')})")
        if 8 + n > size:
            raise WeightsError(
                f"{path}: truncated: {size} bytes, the safetensors header alone needs {8 + n}; fetch or export it "
                "again",
                path,
            )
        f.seek(8)
        try:
            header = json.loads(f.read(n).decode("utf-8"))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise WeightsError(f"{path}: damaged safetensors header (not the JSON table of tensors)", path) from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise WeightsError(
            f"{path}: truncated: {size} bytes, its header describes {expected} bytes (the copy or download was cut "
            "short; fetch or export it again)",
            path,
        )
    if size > expected:
        raise WeightsError(f"{path}: damaged: {size - expected} bytes after the last tensor its header describes", path)
    return size


def check_finite(state: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Raise :class:`WeightsError` naming the tensors of ``state`` that hold NaN or Inf (the first few).

    Tensors of one dtype are checked together, in chunks of about 16 M values (``x - x == 0`` holds exactly for the
    finite values), and one by one only when a chunk fails."""
    groups: dict[torch.dtype, list[tuple[str, Tensor]]] = {}
    for key, t in state.items():
        if t.is_floating_point() and t.numel():
            groups.setdefault(t.dtype, []).append((key, t))
    suspects: list[tuple[str, Tensor]] = []
    for items in groups.values():
        chunk: list[tuple[str, Tensor]] = []
        size = 0
        for i, (key, t) in enumerate(items):
            chunk.append((key, t))
            size += t.numel()
            if size >= 1 << 24 or i == len(items) - 1:
                flat = torch.cat([v.reshape(-1) for _, v in chunk])
                if not bool((flat - flat).eq(0).all()):
                    suspects += chunk
                chunk, size = [], 0
    bad = []
    for key, t in suspects:
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad.append(f"{key} ({int((~finite).sum())} of {t.numel()} values)")
    if bad:
        raise WeightsError(
            f"{path}: {len(bad)} tensor(s) hold NaN or Inf: {_first(bad)} (damaged weights or a diverged training)",
            path,
        )


def read_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu", sha256: str | None = None, finite: bool = True
) -> dict[str, Tensor]:
    """Load a safetensors file after checking it (see the module docstring); never unpickles anything.

    Args:
        path: the ``.safetensors`` file.
        device: where the tensors go (they are checked on the CPU first).
        sha256: the expected SHA-256 (64 hex digits), from the folder's ``config.json``; None skips the checksum.
        finite: check that every floating tensor is finite.

    Raises:
        WeightsError: naming the file, for every problem of the file itself.
    """
    from safetensors.torch import load_file

    path = Path(path)
    check_framing(path)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise WeightsError(
                f"{path}: checksum mismatch: {CONFIG} records sha256 {sha256[:16]}..., the file has {actual[:16]}... "
                "(the file was altered or damaged; restore it, or export the weights and their config again)",
                path,
            )
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors' own checks (overlapping offsets, unknown dtypes, ...)
        raise WeightsError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})", path) from None
    if finite:
        check_finite(state, path)
    if torch.device(device).type != "cpu":
        state = {k: v.to(device) for k, v in state.items()}
    return state


# -- state dict vs network --------------------------------------------------------------------------------------------
def check_state(
    expected: nn.Module | Mapping[str, Tensor], state: Mapping[str, Tensor], path: str | os.PathLike
) -> None:
    """Raise :class:`WeightsError` unless ``state`` has exactly the keys and shapes of ``expected`` (a network or
    its state dict), listing the first few missing, unexpected and misshapen tensors (expected vs found)."""
    want = expected.state_dict() if isinstance(expected, nn.Module) else expected
    shapes = {k: tuple(v.shape) for k, v in want.items()}
    missing = [k for k in shapes if k not in state]
    extra = [k for k in state if k not in shapes]
    wrong = [
        f"{k} expected {shapes[k]} found {tuple(state[k].shape)}"
        for k in shapes
        if k in state and tuple(state[k].shape) != shapes[k]
    ]
    if not (missing or extra or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_first(missing)})")
    if extra:
        parts.append(f"{len(extra)} unexpected ({_first(extra)})")
    if wrong:
        parts.append(f"{len(wrong)} of another shape ({_first(wrong)})")
    name = type(expected).__name__ if isinstance(expected, nn.Module) else "the network"
    raise WeightsError(
        f"{path}: the tensors do not fit {name} built from its config.json: {'; '.join(parts)} (weights of another "
        "architecture, or a config.json that does not describe them)",
        path,
    )


def load_state(module: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike) -> nn.Module:
    """``module.load_state_dict(state)`` after :func:`check_state`; returns ``module``."""
    check_state(module, state, path)
    module.load_state_dict(state)
    return module


__all__ = [
    "CONVERT_COMMAND",
    "check_finite",
    "check_framing",
    "check_state",
    "config_errors",
    "load_state",
    "read_config",
    "read_tensors",
    "sha256_file",
    "write_config",
]
