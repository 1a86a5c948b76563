"""Convert a torch checkpoint (``torch.save`` pickle) into a weight folder: ``model.safetensors`` + ``config.json``.

invgen never unpickles weights when it loads a prior; this is the one-time conversion. The checkpoint is read with
``torch.load(..., weights_only=True)``, which rebuilds tensors and plain containers only and refuses any other
object, so converting a file cannot run code from it. The state dict is the checkpoint itself or the mapping under
``--key`` (default: the first of ``state_dict``, ``ema``, ``model`` that holds tensors). The folder's ``config.json``
(kept when it exists, else ``{}``) gets the SHA-256 of the new tensors file; the network's own keys (e.g. ``net``)
are the plugin's to write.

Usage::

    python -m invgen.convert checkpoint.pt my-prior/ [--key ema]

Example:
    >>> from invgen.convert import convert_checkpoint
    >>> convert_checkpoint("checkpoint.pt", "my-prior")  # doctest: +SKIP

:func:`read_state_dict` is the one safe reader of foreign checkpoints (also used by the ADM converter,
``invgen_plugins.diffusion.adm``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from invgen.errors import WeightsError

KEYS = ("state_dict", "ema", "model")


def _tensors(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _reason(exc: Exception) -> str:
    """The line of torch's long, multi-line refusal that says what it met (``Unsupported global: GLOBAL print``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Unsupported") or ("WeightsUnpickler error: Unsupported" in line):
            return line.replace("WeightsUnpickler error: ", "").split(" was not an allowed")[0]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]


def read_state_dict(source: str | Path, key: str | None = None) -> dict[str, Any]:
    """The state dict (a mapping of names to tensors) held by the torch checkpoint ``source``, read safely.

    The file is read with ``torch.load(source, map_location="cpu", weights_only=True)`` and nothing else: tensors and
    plain containers only, so reading a file cannot run code from it. The state dict is the checkpoint itself, or the
    mapping under ``key`` (default: the first of ``state_dict``, ``ema``, ``model`` that holds only tensors).

    Args:
        source: the checkpoint (``.pt``, ``.pth``, ``.bin``: a ``torch.save`` file).
        key: the checkpoint's key holding the state dict; None finds it as above.

    Returns:
        ``{name: tensor}`` on the CPU, in the checkpoint's order and dtypes.

    Raises:
        WeightsError: naming the file: missing, a folder, unreadable, refused by the ``weights_only`` load (what it
            met, e.g. ``Unsupported global: GLOBAL mymodule.MyClass``), or holding no mapping of tensors there.
    """
    import torch

    source = Path(source)
    if not source.exists():
        raise WeightsError(f"{source}: no such file (expected a torch checkpoint to convert)", source)
    if source.is_dir():
        raise WeightsError(f"{source}: is a folder, expected a torch checkpoint file (.pt, .pth)", source)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise WeightsError(f"{source}: cannot be read ({exc.strerror or exc})", source) from None
    except Exception as exc:
        raise WeightsError(
            f"{source}: not a checkpoint torch.load(weights_only=True) can read ({_reason(exc)}); only tensors and "
            "plain containers are converted, never other pickled objects",
            source,
        ) from None
    candidates = [key] if key else [None, *KEYS]
    for k in candidates:
        part = obj if k is None else (obj.get(k) if isinstance(obj, dict) else None)
        if _tensors(part):
            return {str(name): tensor for name, tensor in part.items()}
    keys = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
    where = f"under key {key!r}" if key else f"at the top level or under {', '.join(KEYS)}"
    raise WeightsError(f"{source}: no mapping of tensors {where} (found {keys}); pass --key", source)


def convert_checkpoint(
    source: str | Path, folder: str | Path, key: str | None = None, name: str = "model.safetensors"
) -> Path:
    """Write the state dict of the torch checkpoint ``source`` to ``folder/name`` and its SHA-256 to
    ``folder/config.json``; returns the tensors file.

    Raises:
        WeightsError: the checkpoint cannot be read with ``weights_only=True`` or holds no mapping of tensors
            (:func:`read_state_dict`).
    """
    from safetensors.torch import save_file

    from invgen.train.verify import read_config, write_config

    folder = Path(folder)
    state = read_state_dict(source, key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(folder / name)
    config = read_config(folder) if (folder / "config.json").is_file() else {}
    write_config(folder, config, weights=(name,))
    return folder / name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m invgen.convert", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="the torch checkpoint (.pt, .pth, .bin)")
    parser.add_argument("folder", help="the weight folder to write (model.safetensors + config.json)")
    parser.add_argument("--key", help="the checkpoint's key holding the state dict (default: found)")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.source, args.folder, key=args.key)
    except WeightsError as exc:
        print(f"invgen convert: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and the SHA-256 of it in {out.parent / 'config.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
