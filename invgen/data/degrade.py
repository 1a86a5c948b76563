"""Frozen degraded datasets: every observation y of a suite is made once, stored with a checksum, and reused.

One safetensors file per (dataset, task, seed) holds, for every image id, the ground truth ``x/<id>`` ``(C, H, W)``
and the observation ``y/<id>`` (the operator's output shape without the batch dimension), plus what pins the
operator down: for each image size the operator's noiseless response to a seeded probe (``probe_in/<H>x<W>``,
``probe_out/<H>x<W>``) and, where the operator has them, its mask (``mask/<H>x<W>``) or kernel (``kernel``). The
metadata holds the image ids, the dataset and task configs and the seed. ``manifest.json`` beside the files lists
each file's sha256, checked whenever a file is read; a rebuilt operator must reproduce the stored probe response,
so a change of mask, kernel or matrix generator is caught rather than silently mixed into old results.

Noise is drawn per image from a generator seeded by ``(seed, dataset, task, image id)``, so y does not depend on
the order or the batching of images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.errors import InvgenError
from invgen.files import sha256_file


class FrozenDataError(InvgenError, RuntimeError):
    """A frozen observation file is missing, altered, or no longer matches its operator."""


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across processes and platforms)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _size_key(shape: tuple[int, ...]) -> str:
    return f"{shape[-2]}x{shape[-1]}"


@dataclass
class Frozen:
    """The frozen observations of one (dataset, task, seed).

    Attributes:
        path: the safetensors file.
        sha256: its checksum (the integrity check against the manifest).
        content: the digest of its tensors and metadata, independent of the file layout (safetensors does not
            order its header deterministically), part of every benchmark cell's id.
        ids: image ids in dataset order.
        x: ground truths by id, ``(C, H, W)``.
        y: observations by id (the operator's output shape without the batch dimension).
        task: the task config (operator name, options, noise), enough to rebuild the operator.
    """

    path: Path
    sha256: str
    content: str
    ids: list[str]
    x: dict[str, Tensor]
    y: dict[str, Tensor]
    task: dict[str, Any]
    dataset: dict[str, Any]
    seed: int
    probes: dict[str, tuple[Tensor, Tensor]]

    def operator(self) -> Any:
        """The task's operator (with its noise model), checked against the stored probe responses."""
        op = build_operator(self.task)
        for key, (pin, pout) in self.probes.items():
            out = op(pin[None].to(torch.float32))[0]
            if out.shape != pout.shape or not torch.allclose(out, pout, atol=1e-5, rtol=1e-5):
                raise FrozenDataError(
                    f"{self.path}: the operator of task {self.task['name']!r} no longer reproduces its frozen response "
                    f"at size {key} (the mask, kernel or matrix changed since the observations were made); delete "
                    "the file and run `invgen bench degrade` again"
                )
        return op


def build_operator(task: dict[str, Any], x_shape: tuple[int, ...] | None = None) -> Any:
    """The task's operator; with ``x_shape`` ``(C, H, W)`` it is bound to that input shape (``Operator.bind_shape``:
    ``sensing`` needs it to solve observations before it has seen an image)."""
    import invgen

    op = invgen.operator(task["operator"], **task.get("options", {}), noise=dict(task["noise"]))
    return op if x_shape is None else op.bind_shape(tuple(x_shape))


def frozen_name(dataset_label: str, dataset_config: dict[str, Any], task: dict[str, Any], seed: int) -> str:
    key = hashlib.sha256(json.dumps([dataset_config, task, seed], sort_keys=True, default=str).encode()).hexdigest()
    return f"{dataset_label}__{task['name']}__seed{seed}__{key[:10]}.safetensors"


def freeze(
    root: str | os.PathLike,
    dataset: Any,
    dataset_label: str,
    task: dict[str, Any],
    seed: int,
) -> Frozen:
    """Make (once) and return the frozen observations of ``dataset`` under ``task`` with noise ``seed``.

    Args:
        root: the folder of frozen files (with its ``manifest.json``).
        dataset: an invgen dataset (``ids``, ``image(i)``, ``config()``).
        dataset_label: the suite's label of the dataset (part of file names and of noise seeds).
        task: ``{"name", "operator", "options", "noise"}``.
        seed: the noise seed.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = frozen_name(dataset_label, dataset.config(), task, seed)
    path = root / name
    if path.is_file() and name in _manifest(root):
        return load_frozen(path)
    with _locked(root):  # two runs freezing into one folder: one writes, the other then reads its file
        if path.is_file() and name in _manifest(root):
            return load_frozen(path)
        return _freeze(root, path, name, dataset, dataset_label, task, seed)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on ``root/manifest.lock`` (``flock``: released by the system if the process dies; no lock
    where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(root / "manifest.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _freeze(
    root: Path, path: Path, name: str, dataset: Any, dataset_label: str, task: dict[str, Any], seed: int
) -> Frozen:
    from safetensors.torch import save_file

    import invgen

    op = build_operator(task)
    tensors: dict[str, Tensor] = {}
    ids = list(dataset.ids)
    sizes: dict[str, tuple[int, ...]] = {}
    for i, image_id in enumerate(ids):
        x = dataset.image(i).to(torch.float32)
        gen = torch.Generator().manual_seed(derive_seed(seed, dataset_label, task["name"], image_id))
        y = op.measure(x[None], generator=gen)[0]
        tensors[f"x/{image_id}"] = x.contiguous()
        tensors[f"y/{image_id}"] = y.detach().to(torch.float32).contiguous().clone()
        sizes.setdefault(_size_key(tuple(x.shape)), tuple(x.shape))
    for key, shape in sizes.items():
        pin = torch.rand(shape, generator=torch.Generator().manual_seed(derive_seed("probe", key)))
        tensors[f"probe_in/{key}"] = pin
        # clone: the identity operator returns its input, and safetensors refuses tensors that share memory
        tensors[f"probe_out/{key}"] = op(pin[None])[0].detach().to(torch.float32).contiguous().clone()
        if hasattr(op, "mask_for"):
            tensors[f"mask/{key}"] = op.mask_for((1, *shape)).to(torch.float32).contiguous()
    if isinstance(getattr(op, "kernel", None), Tensor):
        tensors["kernel"] = op.kernel.to(torch.float32).contiguous()
    meta = {
        "ids": json.dumps(ids),
        "dataset": json.dumps(dataset.config(), sort_keys=True, default=str),
        "dataset_label": dataset_label,
        "task": json.dumps(task, sort_keys=True, default=str),
        "seed": str(int(seed)),
        "invgen_version": invgen.__version__,
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    _record(root, name, sha256_file(path))
    return load_frozen(path)


def load_frozen(path: str | os.PathLike) -> Frozen:
    """Read a frozen file, verifying its checksum against the manifest beside it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FrozenDataError(f"missing frozen observation file {str(path)!r}; run `invgen bench degrade SUITE`")
    manifest = _manifest(path.parent)
    expected = manifest.get(path.name)
    actual = sha256_file(path)
    if expected is None:
        raise FrozenDataError(f"{path}: not listed in {path.parent / 'manifest.json'}; run `invgen bench degrade`")
    if actual != expected:
        raise FrozenDataError(
            f"{path}: checksum mismatch (manifest {expected[:16]}..., file {actual[:16]}...): the frozen observations "
            "were altered; delete the file and run `invgen bench degrade` again"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    ids = json.loads(meta["ids"])
    probes = {
        k.split("/", 1)[1]: (tensors[k], tensors["probe_out/" + k.split("/", 1)[1]])
        for k in tensors
        if k.startswith("probe_in/")
    }
    identity = {k: v for k, v in meta.items() if k != "invgen_version"}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return Frozen(
        path=path,
        sha256=actual,
        content=digest.hexdigest(),
        ids=ids,
        x={i: tensors[f"x/{i}"] for i in ids},
        y={i: tensors[f"y/{i}"] for i in ids},
        task=json.loads(meta["task"]),
        dataset=json.loads(meta["dataset"]),
        seed=int(meta["seed"]),
        probes=probes,
    )


def _manifest(root: Path) -> dict[str, str]:
    p = root / "manifest.json"
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def _record(root: Path, name: str, digest: str) -> None:
    manifest = _manifest(root)
    manifest[name] = digest
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, root / "manifest.json")
