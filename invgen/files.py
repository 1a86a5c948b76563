"""Files and folders given by the user: images opened with clear errors and a pixel limit, output folders checked
for writability before any work.

Every failure is a :class:`~invgen.errors.FileError` (an ``OSError``) whose message starts with the path and says
what was expected and what came: a missing file, a folder, an empty, truncated or undecodable file, an image above
the pixel limit (:func:`max_pixels`), an output folder that cannot be written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invgen.errors import FileError

# images with more pixels than this are refused before they are decoded (8192 x 8192); INVGEN_MAX_PIXELS, the CLI's
# --max-pixels or max_pixels= raise it
DEFAULT_MAX_PIXELS = 8192 * 8192
RAISE_PIXELS = "raise it with --max-pixels on the command line, max_pixels= in Python, or INVGEN_MAX_PIXELS"


def max_pixels(value: int | None = None) -> int:
    """The pixel limit of images read from files: ``value`` if given, else ``INVGEN_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`."""
    if value is None:
        env = os.environ.get("INVGEN_MAX_PIXELS")
        if env is None or not env.strip():
            return DEFAULT_MAX_PIXELS
        try:
            value = int(float(env))
        except ValueError:
            raise FileError(f"INVGEN_MAX_PIXELS: expected a number of pixels, got {env!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_pixels: expected an integer >= 1, got {value!r}")
    return value


def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path to an existing, non-empty regular file (``FileNotFoundError`` or :class:`FileError`)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, f"no such {what}", str(p))
    if p.is_dir():
        raise FileError(f"{p}: expected {_article(what)} {what}, got a folder", path=p)
    if p.stat().st_size == 0:
        raise FileError(f"{p}: expected {_article(what)} {what}, got an empty file (0 bytes)", path=p)
    return p


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def load_npy(path: str | os.PathLike, what: str = "array") -> Any:
    """Read a ``.npy`` file as a numpy array; never unpickles (``allow_pickle=False``).

    Raises:
        FileNotFoundError: no such file.
        FileError: a folder, an empty or truncated file, a pickled (object) array, or not a ``.npy`` file.
    """
    import numpy as np

    p = check_input_file(path, f".npy {what} file")
    with open(p, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY":
        raise FileError(f"{p}: expected a .npy {what} file, got a file without the .npy header ({head!r}...)", path=p)
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        why = "a pickled (object) array: pickles are never loaded" if "pickle" in str(exc) else str(exc)
        raise FileError(f"{p}: expected a .npy {what} of numbers, got {why}", path=p) from exc
    except (OSError, EOFError) as exc:
        raise FileError(f"{p}: expected a .npy {what}, got a truncated or non-.npy file ({exc})", path=p) from exc


@contextmanager
def open_image(path: str | os.PathLike, *, limit: int | None = None) -> Iterator[Any]:
    """Open and decode an image file with PIL, refusing what cannot be an image.

    The header is read first: an image with more than ``limit`` pixels (default :func:`max_pixels`) is refused
    before its data are decoded, so a decompression bomb costs nothing (this check replaces PIL's own
    ``MAX_IMAGE_PIXELS`` one while the header is read). The data are then decoded in full, so a truncated file
    fails here, with its name.

    Args:
        path: the image file.
        limit: the most pixels (width x height) accepted.

    Yields:
        The loaded ``PIL.Image.Image``.

    Raises:
        FileNotFoundError: no such file.
        FileError: a folder, an empty file, a format PIL cannot identify, more than ``limit`` pixels, or data that
            cannot be decoded (truncated or corrupt).
    """
    from PIL import Image, UnidentifiedImageError

    p = check_input_file(path, "image file")
    limit = max_pixels(limit)
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # our own check below, on the header, replaces PIL's for this file
            try:
                im = Image.open(p)
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit
    except UnidentifiedImageError as exc:
        with open(p, "rb") as f:
            head = f.read(8)
        raise FileError(
            f"{p}: expected an image file PIL can read (PNG, JPEG, BMP, TIFF, ...), got a file of unknown format "
            f"({p.stat().st_size} bytes starting with {head!r})",
            path=p,
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise FileError(
            f"{p}: an image file whose header cannot be read: the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc})",
            path=p,
        ) from exc
    except Image.DecompressionBombError as exc:
        raise FileError(f"{p}: above the image pixel limit of {limit} ({exc}); {RAISE_PIXELS}", path=p) from exc
    with im:
        w, h = im.size
        if w * h > limit:
            raise FileError(
                f"{p}: a {w}x{h} image ({w * h} pixels), above the limit of {limit} pixels; {RAISE_PIXELS}", path=p
            )
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            raise FileError(
                f"{p}: the {im.format or 'image'} data of a {w}x{h} image cannot be decoded: the file is truncated "
                f"or corrupt ({type(exc).__name__}: {exc})",
                path=p,
            ) from exc
        yield im


def check_output_dir(path: str | os.PathLike, option: str = "out") -> Path:
    """Check, before any work, that the output folder ``path`` can be created and written (nothing is created).

    Args:
        path: the folder (existing or to be created).
        option: how it was given, for the message (``"--out"``).

    Returns:
        ``path`` as a Path.

    Raises:
        FileError: ``path`` is a file, sits under a file, or its nearest existing folder cannot be written.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FileError(f"{option} {p}: expected a folder to write into, got an existing file", path=p)
    base = p
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise FileError(f"{option} {p}: cannot create the folder: {base} is a file, not a folder", path=p)
    try:
        fd, probe = tempfile.mkstemp(prefix=".invgen-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "the folder" if base == p else f"it would be created in {base}, which"
        raise FileError(
            f"{option} {p}: expected a writable folder, but {where} is not writable ({exc.strerror or exc})", path=p
        ) from exc
    return p


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits (read in 1 MiB chunks): the one checksum of data files,
    frozen observations and weight files."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
