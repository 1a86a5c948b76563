"""Write ``checksums.json`` (the SHA-256 of every file a registered dataset reads) from the data's ``SHA256SUMS``.

Usage (from the project root, with the shared data beside it)::

    python -m invgen.data.make_checksums ../shared/SHA256SUMS

``SHA256SUMS`` lists paths such as ``data/mnist/t10k-images-idx3-ubyte.gz``; the manifest keeps them relative to the
data root (``INVGEN_DATA``, the ``data/`` folder), e.g. ``mnist/t10k-images-idx3-ubyte.gz``. The files of each
dataset are those matching the glob patterns of its :data:`invgen.data.sets.SPECS` entry (``*`` stays within one
folder).
"""

from __future__ import annotations

import argparse
import json
from fnmatch import fnmatchcase
from pathlib import Path

from invgen.data.sets import SPECS
from invgen.data.verify import MANIFEST, read_sha256sums


def _matches(rel: str, pattern: str) -> bool:
    return rel.count("/") == pattern.count("/") and fnmatchcase(rel, pattern)


def build(sums: dict[str, str], prefix: str = "data/") -> dict:
    """The manifest: ``{"datasets": {name: {path relative to the data root: sha256}}}``."""
    rel = {p[len(prefix) :]: h for p, h in sums.items() if p.startswith(prefix)}
    datasets = {}
    for name, spec in sorted(SPECS.items()):
        files = {p: h for p, h in sorted(rel.items()) if any(_matches(p, pat) for pat in spec.files)}
        if not files:
            raise SystemExit(f"make_checksums: no file of {name!r} ({', '.join(spec.files)}) in the listing")
        datasets[name] = files
    return {
        "about": "SHA-256 of the files each registered dataset reads, by path relative to the data root "
        "(INVGEN_DATA); written by python -m invgen.data.make_checksums SHA256SUMS",
        "datasets": datasets,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sums", type=Path, help="the data's SHA256SUMS (sha256sum format)")
    parser.add_argument("--prefix", default="data/", help="the data root's path inside the listing (default data/)")
    parser.add_argument("--out", type=Path, default=MANIFEST, help=f"where to write (default {MANIFEST})")
    args = parser.parse_args(argv)
    manifest = build(read_sha256sums(args.sums), args.prefix)
    args.out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    counts = ", ".join(f"{n} {len(f)}" for n, f in manifest["datasets"].items())
    print(f"wrote {args.out}: {counts}")


if __name__ == "__main__":
    main()
