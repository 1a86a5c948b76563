"""SHA-256 verification of dataset files against the checksums shipped with invgen.

``checksums.json`` (package data, written by ``python -m invgen.data.make_checksums``) maps every registered dataset
to the files it reads, by path relative to the data root (``INVGEN_DATA``), and their SHA-256. A factory called with
``verify=True`` checks each file it reads; a missing file raises :class:`DataNotFoundError`, a differing one
:class:`DataChecksumError` naming the file, the expected and the actual hash.

Hashing runs at about 1 GB/s (SHA-NI), so verifying a whole set costs 1 to 20 ms (CIFAR-10's 19 MB archive: 15 ms)
and there is no cache across processes; within a process a file is hashed once while its (size, mtime_ns) stay the
same.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from invgen.data.datasets import DataNotFoundError
from invgen.errors import InvgenError
from invgen.files import sha256_file

MANIFEST = Path(__file__).with_name("checksums.json")


class DataChecksumError(InvgenError, ValueError):
    """A dataset file's SHA-256 differs from the one invgen ships for it (or none is known for it)."""


@functools.cache
def _manifest() -> dict[str, dict[str, str]]:
    return json.loads(MANIFEST.read_text())["datasets"]


def manifest_files(name: str) -> dict[str, str]:
    """``{path relative to the data root: sha256}`` of every file the registered dataset ``name`` may read."""
    datasets = _manifest()
    if name not in datasets:
        raise InvgenError(
            f"no checksums shipped for dataset {name!r} in {MANIFEST.name}; expected one of {sorted(datasets)}"
        )
    return dict(datasets[name])


_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}  # (absolute path, size, mtime_ns) -> sha256, for this process


def file_hashes(paths: list[Path]) -> dict[Path, str]:
    """SHA-256 of each file, hashed once per process while its (size, mtime_ns) stay the same."""
    out: dict[Path, str] = {}
    for p in paths:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        with _lock:
            digest = _hashes.get(key)
        if digest is None:
            digest = sha256_file(p)
            with _lock:
                _hashes[key] = digest
        out[p] = digest
    return out


def check_files(root: Path, files: Mapping[str, str], dataset: str, verify: bool = True) -> None:
    """Check that every file exists under ``root`` and, with ``verify``, has the expected SHA-256.

    Args:
        root: the data root (or the folder the relative paths start from).
        files: ``{relative path: expected sha256}``.
        dataset: the dataset's name, for the messages.
        verify: hash the files too (else only their presence is checked).

    Raises:
        DataNotFoundError: a file is missing.
        DataChecksumError: a file's hash differs (the first one found, with the expected and actual hash).
    """
    paths = {rel: root / rel for rel in sorted(files)}
    missing = [rel for rel, p in paths.items() if not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"dataset {dataset!r}: {len(missing)} of {len(paths)} files missing under the data root {str(root)!r} "
            f"(INVGEN_DATA or root=), e.g. {missing[0]!r}; expected the files listed in invgen/data/{MANIFEST.name}"
        )
    if not verify:
        return
    actual = file_hashes(list(paths.values()))
    for rel, p in paths.items():
        if actual[p] != files[rel]:
            raise DataChecksumError(
                f"dataset {dataset!r}: file {str(p)!r} has sha256 {actual[p]}, expected {files[rel]} "
                f"(the copy under INVGEN_DATA differs from the one invgen was built against; pass verify=False to "
                f"use it anyway)"
            )


def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``sha256sum`` listing (``<hash>  <path>`` per line, ``*`` for binary mode) into ``{path: hash}``."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.lstrip(" *")
        if len(digest) != 64 or not name:
            raise ValueError(f"{path}:{n}: expected '<64 hex digits>  <path>', got {line!r}")
        out[name] = digest.lower()
    return out
