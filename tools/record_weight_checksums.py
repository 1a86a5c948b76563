"""Record the SHA-256 of every shipped tensors file in its folder's ``config.json`` (``"sha256": {file: hex}``).

The shipped weight folders are ``plugins/*/weights/*/`` and ``invgen/metrics/weights/*/``; a folder without a
``config.json`` (the LPIPS trunk) gets one holding only its name and the checksums. invgen checks the recorded value
whenever it loads the file (:func:`invgen.train.verify.read_tensors`). Trainers and ``python -m invgen.convert``
record it themselves (:func:`invgen.train.verify.write_config`); run this after replacing a shipped file by hand.

Usage::

    python tools/record_weight_checksums.py          # write the checksums
    python tools/record_weight_checksums.py --check  # exit 1 if a config lacks or disagrees with one
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invgen.train.verify import CONFIG, SHA_KEY, sha256_file  # noqa: E402


def shipped_folders(root: Path = ROOT) -> list[Path]:
    """Every shipped weight folder: one that holds a ``.safetensors`` file."""
    folders = [*root.glob("plugins/*/weights/*"), *root.glob("invgen/metrics/weights/*")]
    return sorted(f for f in folders if f.is_dir() and any(f.glob("*.safetensors")))


def expected_config(folder: Path) -> tuple[dict, str]:
    """The folder's config with the checksums of its tensors files, and the text to write (``indent=1``, the
    file's own trailing newline kept)."""
    path = folder / CONFIG
    text = path.read_text() if path.is_file() else ""
    cfg = json.loads(text) if text else {"name": folder.name}
    cfg[SHA_KEY] = {f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))}
    return cfg, json.dumps(cfg, indent=1) + ("\n" if text.endswith("\n") or not text else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a missing or wrong checksum")
    args = parser.parse_args(argv)
    stale = []
    for folder in shipped_folders():
        path = folder / CONFIG
        _, text = expected_config(folder)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"recorded {path.relative_to(ROOT)}")
    if args.check and stale:
        print("checksums missing or stale in: " + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
