"""Bad inputs, as an adversarial user would give them, through the Python API, the files it reads (images, masks,
kernels, weights, output folders) and the CLI (every command, the benchmark store's databases included).

Every case asserts the exception type (for the CLI: exit status 2 and one line on stderr without a traceback) and
that the message names what was expected and what came. Tiny tensors, analytic priors and the cheap baselines keep
the module fast. Broken plugins, weights in depth and concurrent benchmark runs have their own modules
(test_plugin_isolation.py, test_weights_verify.py, test_bench_store.py).
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import invgen
from invgen.checks import check_device
from invgen.cli import main
from invgen.data.sets import read_image
from invgen.errors import (
    DeviceError,
    FileError,
    MemoryLimitError,
    MissingCapabilityError,
    NonFiniteError,
    OptionError,
    RangeError,
    ShapeError,
    UnknownNameError,
    WeightsError,
)
from invgen.files import check_output_dir
from invgen.operators.kernels import load_kernel
from invgen.operators.masks import load_mask
from invgen.tasks import save_png, solve_image
from invgen.train.verify import read_config, read_tensors

CUDA = torch.cuda.is_available()
NOISE = {"name": "gaussian", "std": 0.1}
NAN = float("nan")


def op(name: str = "identity", **kw):
    return invgen.operator(name, noise=NOISE, **kw)


def gmm():
    return invgen.prior("gmm", image_shape=(1, 4, 4))


def y(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = shape or (1, 1, 4, 4)
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


class Net(invgen.Prior):
    """A denoiser with a float32 parameter (a 1x1 convolution): stands for any network prior."""

    name = "test-net"
    capabilities = frozenset({"denoiser"})
    image_shape = (1, 4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((1, 1, 1, 1), 0.9))

    def denoise(self, x, sigma):
        return torch.nn.functional.conv2d(x, self.w)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` 8-bit gray pixels and holds almost no data: a decompression bomb's
    header (the real ones inflate gigabytes from a few kilobytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """One folder of good and bad files, made once."""
    d = tmp_path_factory.mktemp("bad-inputs")
    save_png(torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)), d / "ok.png")
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(d / "ok.jpg")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("hello, this is not an image\n")
    data = (d / "ok.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    jpg = (d / "ok.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "folder.png").mkdir()
    (d / "bomb.png").write_bytes(png_header(100_000, 100_000))
    np.save(d / "array.npy", np.ones((4, 4)))
    (d / "array.png").write_bytes((d / "array.npy").read_bytes())
    (d / "gzip.png").write_bytes(gzip.compress(data))
    np.save(d / "zero.npy", np.zeros((3, 3)))
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object))
    (d / "empty.npy").write_bytes(b"")
    (d / "text.npy").write_text("1 2 3\n")
    npy = (d / "array.npy").read_bytes()
    (d / "truncated.npy").write_bytes(npy[: len(npy) - 40])
    (d / "garbage.mat").write_text("not a MATLAB file " * 20)
    Image.new("L", (5, 5), 0).save(d / "black.png")
    (d / "file.txt").write_text("a file, not a folder\n")
    from safetensors.torch import save_file

    (d / "w").mkdir()
    save_file({"a": torch.zeros(4)}, d / "w" / "ok.safetensors")
    (d / "w" / "empty.safetensors").write_bytes(b"")
    torch.save({"a": torch.zeros(2)}, d / "w" / "pickle.safetensors")
    st = (d / "w" / "ok.safetensors").read_bytes()
    (d / "w" / "truncated.safetensors").write_bytes(st[:-8])
    save_file({"a": torch.full((4,), NAN)}, d / "w" / "nan.safetensors")
    for name, text in (("broken", "{bad json"), ("list", "[1, 2]")):
        (d / name).mkdir()
        (d / name / "config.json").write_text(text)
    con = sqlite3.connect(d / "foreign.sqlite")  # a SQLite database of someone else's
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    (d / "bad.yaml").write_text("name: [\n")
    (d / "suite.yaml").write_text(
        "name: t\nseeds: [0]\nsamples: 1\ndatasets:\n  - name: mnist\n    count: 1\ntasks:\n"
        "  - {name: sr4, operator: superres, options: {scale: 4}, noise: 0.05}\nsolvers:\n  - pinv\n"
    )
    return d


# -- the Python API: solve, its observation, prior, solver, sizes and seed --------------------------------------------
def case(id_: str, exc: type[BaseException], needles: str, fn, marks=()):
    """One bad input: ``fn`` raises ``exc`` whose message holds each of the ``" | "``-separated ``needles``."""
    return pytest.param(fn, exc, tuple(needles.split(" | ")), id=id_, marks=marks)


def sv(obs=None, operator=None, prior=None, **kw):
    """``invgen.solve`` with a good default for what the case does not break (pinv on a 4x4 denoising problem)."""
    kw.setdefault("solver", "pinv")
    return invgen.solve(y() if obs is None else obs, op() if operator is None else operator, prior, **kw)


def z(dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(1, 1, 4, 4, dtype=dtype)


def blur(kernel=None, **kw):
    return invgen.operator("blur", **({"kernel": kernel} if kernel is not None else {}), **kw)


no_cuda = pytest.mark.skipif(CUDA, reason="this machine has CUDA")
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
not_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
API_CASES = [
    # the observation y
    case("y-list", TypeError, "expected a torch.Tensor | list", lambda: sv([[0.5]])),
    case("y-numpy", TypeError, "expected a torch.Tensor | ndarray", lambda: sv(np.zeros((1, 1, 4, 4)))),
    case("y-none", TypeError, "expected a torch.Tensor | NoneType", lambda: invgen.solve(None, op(), solver="pinv")),
    case("y-int64", TypeError, "floating point | int64", lambda: sv(z(torch.long))),
    case("y-uint8", TypeError, "floating point | uint8 | / 255", lambda: sv(z(torch.uint8))),
    case("y-bool", TypeError, "floating point | torch.bool", lambda: sv(z(torch.bool))),
    case("y-complex", TypeError, "floating point | complex64", lambda: sv(z(torch.complex64))),
    case(
        "y-nan",
        NonFiniteError,
        "expected finite values | 4 NaN/Inf",
        lambda: sv(y().index_fill(3, torch.tensor([0]), NAN)),
    ),
    case("y-inf", NonFiniteError, "expected finite values | 16 NaN/Inf", lambda: sv(y() / 0)),
    case("y-3d", ShapeError, "(B, C, H, W) | (1, 4, 4)", lambda: sv(y(1, 4, 4))),
    case("y-2d-superres", ShapeError, "(B, C, H, W) | (4, 4)", lambda: sv(y(4, 4), op("superres", scale=2))),
    case("y-5d", ShapeError, "(B, C, H, W) | (1, 1, 1, 4, 4)", lambda: sv(y(1, 1, 1, 4, 4))),
    case("y-size-vs-prior", ShapeError, "(1, 4, 4) | (1, 8, 8)", lambda: sv(y(1, 1, 8, 8), prior=gmm())),
    case("y-channels-vs-prior", ShapeError, "(1, 4, 4) | (3, 4, 4)", lambda: sv(y(1, 3, 4, 4), prior=gmm())),
    case("y-sr-vs-prior", ShapeError, "(1, 4, 4) | (1, 8, 8)", lambda: sv(y(), op("superres", scale=2), gmm())),
    # the operator
    case("operator-str", TypeError, "expected an invgen operator | str", lambda: invgen.solve(y(), "identity")),
    case("operator-none", TypeError, "expected an invgen operator | NoneType", lambda: invgen.solve(y(), None)),
    case("operator-unknown", UnknownNameError, "unknown operator 'identiy' | 'identity'", lambda: op("identiy")),
    case("superres-scale-0", ValueError, "integer >= 2 | got 0", lambda: op("superres", scale=0)),
    case("superres-scale-str", ValueError, "integer >= 2 | 'x'", lambda: op("superres", scale="x")),
    case("measure-range", RangeError, "[0, 1] | [2, 2]", lambda: op().measure(torch.full((1, 1, 4, 4), 2.0))),
    case("measure-255", RangeError, "[0, 1] | by 1/255", lambda: op().measure(torch.full((1, 1, 4, 4), 255.0))),
    case("measure-nan", NonFiniteError, "finite | NaN", lambda: op().measure(torch.full((1, 1, 4, 4), NAN))),
    case("measure-3d", ShapeError, "(B, C, H, W) | add a batch dimension", lambda: op().measure(torch.rand(1, 4, 4))),
    # the prior
    case("prior-unknown", UnknownNameError, "unknown prior 'gmx' | did you mean", lambda: sv(prior="gmx")),
    case(
        "prior-lacks-capability",
        MissingCapabilityError,
        "needs the capability 'generator' | offers",
        lambda: sv(prior=gmm(), solver="latent_map"),
    ),
    case(
        "prior-option-unknown",
        OptionError,
        "unknown option(s) ['bogus'] | image_shape",
        lambda: invgen.prior("gmm", image_shape=(1, 4, 4), bogus=1),
    ),
    case(
        "prior-option-str-for-int",
        OptionError,
        "option seed expects an int | 'abc'",
        lambda: invgen.prior("gmm", image_shape=(1, 4, 4), seed="abc"),
    ),
    case(
        "prior-option-float-for-int",
        OptionError,
        "option k expects an int | 2.5",
        lambda: invgen.prior("gmm", image_shape=(1, 4, 4), k=2.5),
    ),
    case(
        "prior-device-bogus",
        DeviceError,
        "expected a device | 'gpu'",
        lambda: invgen.prior("diffusion-mnist", device="gpu"),
    ),
    case(
        "prior-device-index",
        DeviceError,
        "'cuda:99' | available devices: cpu",
        lambda: invgen.prior("diffusion-mnist", device="cuda:99"),
    ),
    case(
        "prior-device-float",
        DeviceError,
        "expected a device name | float",
        lambda: invgen.prior("diffusion-mnist", device=1.5),
    ),
    case(
        "prior-device-cuda",
        DeviceError,
        "CUDA is not available | available devices: cpu",
        lambda: invgen.prior("diffusion-mnist", device="cuda"),
        marks=no_cuda,
    ),
    case(
        "prior-on-other-device",
        DeviceError,
        "y is on cpu | are on meta",
        lambda: sv(prior=Net().to("meta"), solver="ddnm", steps=2),
    ),
    # the solver and its options
    case(
        "solver-unknown", UnknownNameError, "unknown solver 'pinvv' | did you mean 'pinv'", lambda: sv(solver="pinvv")
    ),
    case("solver-int", TypeError, "expected a name or an invgen Solver | int", lambda: sv(solver=42)),
    case(
        "solver-object-and-options",
        TypeError,
        "only be given together with a solver name | Solver",
        lambda: sv(solver=invgen.solver("pinv"), steps=3),
    ),
    case("option-unknown", OptionError, "unknown option(s) ['stepz'] | steps", lambda: invgen.solver("mala", stepz=3)),
    case(
        "option-str-for-float",
        OptionError,
        "option eta expects a float | 'abc' (str)",
        lambda: invgen.solver("ddim", eta="abc"),
    ),
    case(
        "option-none-for-float",
        OptionError,
        "option eta expects a float | None",
        lambda: invgen.solver("ddim", eta=None),
    ),
    case(
        "option-str-for-int",
        OptionError,
        "option steps expects an int | '10' (str)",
        lambda: invgen.solver("mala", steps="10"),
    ),
    case(
        "option-float-for-int",
        OptionError,
        "option steps expects an int | 2.5",
        lambda: invgen.solver("mala", steps=2.5),
    ),
    case(
        "option-bool-for-int",
        OptionError,
        "option steps expects an int | True",
        lambda: invgen.solver("mala", steps=True),
    ),
    case(
        "option-str-for-bool",
        OptionError,
        "option clip expects a bool | 'yes'",
        lambda: invgen.solver("ddnm", clip="yes"),
    ),
    case(
        "option-int-for-str",
        OptionError,
        "option guidance expects a string | 1 (int)",
        lambda: invgen.solver("dps", guidance=1),
    ),
    case("option-via-solve", OptionError, "expects an int | 'x'", lambda: sv(prior=gmm(), solver="mala", steps="x")),
    case(
        "option-via-default-solver",
        OptionError,
        "expects an int | 'x'",
        lambda: sv(prior=gmm(), solver=None, steps="x"),
    ),
    # samples, memory, seed
    case("n-zero", ValueError, "integer >= 1 | got 0", lambda: sv(n_samples=0)),
    case("n-negative", ValueError, "integer >= 1 | -3", lambda: sv(n_samples=-3)),
    case("n-float", ValueError, "integer >= 1 | 1.5", lambda: sv(n_samples=1.5)),
    case("n-str", ValueError, "integer >= 1 | '2'", lambda: sv(n_samples="2")),
    case("n-bool", ValueError, "integer >= 1 | True", lambda: sv(n_samples=True)),
    case(
        "n-1e9",
        MemoryLimitError,
        "n_samples=1000000000 | TiB | above the memory limit of | INVGEN_MAX_MEMORY",
        lambda: sv(y(1, 1, 32, 32), n_samples=10**9),
    ),
    case("n-1e12", MemoryLimitError, "estimated | above the memory limit of", lambda: sv(n_samples=10**12)),
    case(
        "max-memory-small",
        MemoryLimitError,
        "needs an estimated 3 KiB | limit of 1 KiB (max_memory)",
        lambda: sv(n_samples=8, max_memory="1K"),
    ),
    case("max-memory-bad", ValueError, "max_memory: expected a memory size | 'lots'", lambda: sv(max_memory="lots")),
    case("max-memory-negative", ValueError, "memory size > 0 | -5", lambda: sv(max_memory=-5)),
    case("seed-str", TypeError, "seed: expected an integer or None | 'abc'", lambda: sv(seed="abc")),
    case("seed-float", TypeError, "seed: expected an integer or None | 1.5", lambda: sv(seed=1.5)),
    # noise models
    case(
        "noise-dict-no-name",
        OptionError,
        "needs its 'name' | gaussian, poisson | {'std': 0.1}",
        lambda: invgen.operator("identity", noise={"std": 0.1}),
    ),
    case(
        "noise-dict-unknown-name",
        UnknownNameError,
        "unknown noise model 'laplace' | gaussian",
        lambda: invgen.operator("identity", noise={"name": "laplace", "b": 1}),
    ),
    case(
        "noise-dict-unknown-key",
        OptionError,
        "unknown option(s) sigma | it takes std",
        lambda: invgen.operator("identity", noise={"name": "gaussian", "sigma": 0.1}),
    ),
    case("noise-std-negative", RangeError, "finite std >= 0 | -0.1", lambda: invgen.noise("gaussian", std=-0.1)),
    case("noise-std-nan", RangeError, "finite std >= 0 | nan", lambda: invgen.noise("gaussian", std=NAN)),
    case(
        "noise-std-str",
        OptionError,
        "std: expected a number | 'abc' (str)",
        lambda: invgen.noise("gaussian", std="abc"),
    ),
    case("noise-std-none", OptionError, "expected a number | NoneType", lambda: invgen.noise("gaussian", std=None)),
    case("noise-poisson-rate-0", RangeError, "rate > 0 | got 0", lambda: invgen.noise("poisson", rate=0)),
    case(
        "noise-number",
        TypeError,
        "expected an invgen noise model | float",
        lambda: invgen.operator("identity", noise=0.05),
    ),
    case(
        "noise-list",
        TypeError,
        "expected an invgen noise model | list",
        lambda: invgen.operator("identity", noise=[0.05]),
    ),
    # blur kernels
    case("blur-zero", RangeError, "sum to a positive number | sum of 0", lambda: blur(torch.zeros(3, 3))),
    case("blur-negative", RangeError, "sum to a positive number | sum of -9", lambda: blur(-torch.ones(3, 3))),
    case("blur-cancelling", RangeError, "positive number | sum of 0", lambda: blur(torch.tensor([[1.0, -1.0]]))),
    case(
        "blur-per-item-zero",
        RangeError,
        "positive number | kernel 1 of 2",
        lambda: blur(torch.stack([torch.ones(3, 3) / 9, torch.zeros(3, 3)])),
    ),
    case("blur-nan", RangeError, "expected finite values | NaN", lambda: blur(torch.full((3, 3), NAN))),
    case("blur-empty", ShapeError, "non-empty | (1, 0, 3)", lambda: blur(torch.zeros(0, 3))),
    case("blur-4d", ShapeError, "(kh, kw) or (B, kh, kw) | (1, 2, 3, 3)", lambda: blur(torch.ones(1, 2, 3, 3))),
    case("blur-unknown-name", FileNotFoundError, "neither a kernel type | gausian", lambda: blur("gausian")),
    case(
        "blur-option-misplaced",
        TypeError,
        "intensity do not apply | sigma, size",
        lambda: blur("gaussian", intensity=0.5),
    ),
    case("blur-sigma-0", RangeError, "finite values > 0 | 0", lambda: blur("gaussian", sigma=0)),
    case("blur-motion-size-2", ShapeError, "size >= 3 | got 2", lambda: blur("motion", size=2)),
    case("blur-rcond", RangeError, "[0, 1) | 1.0", lambda: blur(rcond=1.0)),
    case(
        "blur-kernel-above-image",
        ShapeError,
        "kernel (9x9) | image (4x4)",
        lambda: sv(operator=blur(torch.ones(9, 9) / 81, noise=NOISE)),
    ),
    # devices
    case("device-gpu", DeviceError, "expected a device (available here: cpu | 'gpu'", lambda: check_device("gpu")),
    case("device-empty", DeviceError, "expected a device | ''", lambda: check_device("")),
    case("device-none", DeviceError, "expected a device name | NoneType", lambda: check_device(None)),
    case("device-cuda-99", DeviceError, "'cuda:99' | available devices: cpu", lambda: check_device("cuda:99")),
    case("device-meta", DeviceError, "meta is not available | available devices: cpu", lambda: check_device("meta")),
    case(
        "device-cuda",
        DeviceError,
        "CUDA is not available | available devices: cpu",
        lambda: check_device("cuda"),
        marks=no_cuda,
    ),
]


@pytest.mark.parametrize(("fn", "exc", "needles"), API_CASES)
def test_api_bad_input(fn, exc, needles):
    with pytest.raises(exc) as err:
        fn()
    text = str(err.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in: {text}"


@pytest.mark.parametrize(
    ("value", "exc", "needles"),
    [
        pytest.param("1K", MemoryLimitError, ("above the memory limit", "INVGEN_MAX_MEMORY"), id="env-memory-small"),
        pytest.param("lots", ValueError, ("INVGEN_MAX_MEMORY: expected a memory size", "'lots'"), id="env-memory-bad"),
    ],
)
def test_api_bad_memory_limit_from_the_environment(monkeypatch, value, exc, needles):
    monkeypatch.setenv("INVGEN_MAX_MEMORY", value)
    with pytest.raises(exc) as err:
        sv(n_samples=8)
    assert all(n in str(err.value) for n in needles), str(err.value)


# -- files: images, masks, kernels, output folders -------------------------------------------------------------------
def image(name: str, **kw):
    return lambda d: read_image(d / name, **kw)


def solve_file(image: str = "ok.png", out: str = "o", reference: str | None = None, **kw):
    def run(d: Path):
        ref = d / reference if reference else None
        return solve_image(d / image, "denoise", "gmm", d / out, reference=ref, **kw)

    return run


def weights(name: str, **kw):
    return lambda d: read_tensors(d / "w" / name, **kw)


FILE_CASES = [
    case("image-empty", FileError, "expected an image file | empty file (0 bytes)", image("empty.png")),
    case("image-text", FileError, "PIL can read | unknown format | b'hello, t'", image("text.png")),
    case(
        "image-truncated-png",
        FileError,
        "PNG data of a 8x8 image cannot be decoded | truncated",
        image("truncated.png"),
    ),
    case(
        "image-truncated-jpeg",
        FileError,
        "truncated.jpg: an image file whose header | truncated",
        image("truncated.jpg"),
    ),
    case("image-folder", FileError, "expected an image file | got a folder", image("folder.png")),
    case("image-missing", FileNotFoundError, "no such image file | missing.png", image("missing.png")),
    case(
        "image-bomb", FileError, "100000x100000 | above the limit of 67108864 pixels | --max-pixels", image("bomb.png")
    ),
    case("image-max-pixels", FileError, "8x8 image (64 pixels) | limit of 10 pixels", image("ok.png", max_pixels=10)),
    case("image-max-pixels-0", ValueError, "max_pixels: expected an integer >= 1 | 0", image("ok.png", max_pixels=0)),
    case("image-npy-named-png", FileError, "PIL can read | \\x93NUMPY", image("array.png")),
    case("image-gzip-named-png", FileError, "PIL can read | unknown format", image("gzip.png")),
    case("mask-empty", FileError, "expected an image file | empty file", lambda d: load_mask(d / "empty.png")),
    case("mask-text", FileError, "PIL can read | unknown format", lambda d: load_mask(d / "text.png")),
    case("mask-bomb", FileError, "100000x100000 | above the limit", lambda d: load_mask(d / "bomb.png")),
    case(
        "mask-npy-pickled",
        FileError,
        ".npy mask of numbers | pickles are never loaded",
        lambda d: load_mask(d / "pickled.npy"),
    ),
    case("mask-npy-text", FileError, ".npy mask file | without the .npy header", lambda d: load_mask(d / "text.npy")),
    case("mask-npy-empty", FileError, "expected a .npy mask file | empty file", lambda d: load_mask(d / "empty.npy")),
    case("mask-missing", FileNotFoundError, "mask file | does not exist", lambda d: load_mask(d / "missing.png")),
    case("kernel-npy-empty", FileError, ".npy kernel file | empty file", lambda d: load_kernel(d / "empty.npy")),
    case(
        "kernel-npy-truncated",
        FileError,
        "expected a .npy kernel | truncated",
        lambda d: load_kernel(d / "truncated.npy"),
    ),
    case(
        "kernel-npy-pickled",
        FileError,
        ".npy kernel of numbers | never loaded",
        lambda d: load_kernel(d / "pickled.npy"),
    ),
    case(
        "kernel-mat-garbage",
        FileError,
        "MATLAB .mat kernel file | scipy cannot read",
        lambda d: load_kernel(d / "garbage.mat"),
    ),
    case("kernel-png-text", FileError, "PIL can read | unknown format", lambda d: load_kernel(d / "text.png")),
    case("kernel-png-black", RangeError, "black.png | all black", lambda d: load_kernel(d / "black.png")),
    case("kernel-npy-zero-sum", RangeError, "sum to a positive number | zero.npy", lambda d: blur(str(d / "zero.npy"))),
    case(
        "out-is-a-file",
        FileError,
        "expected a folder to write into | existing file",
        lambda d: check_output_dir(d / "file.txt"),
    ),
    case(
        "out-under-a-file",
        FileError,
        "cannot create the folder | file.txt is a file",
        lambda d: check_output_dir(d / "file.txt/x"),
    ),
    case(
        "out-in-proc",
        FileError,
        "expected a writable folder | /proc",
        lambda d: check_output_dir("/proc/x"),
        marks=linux,
    ),
    case("solve-image-out-is-a-file", FileError, "out | existing file", solve_file(out="file.txt")),
    case("solve-image-device", DeviceError, "'cuda:99' | available devices", solve_file(device="cuda:99")),
    case("solve-image-empty", FileError, "--image | empty file", solve_file("empty.png")),
    case("solve-image-reference", FileError, "--reference | unknown format", solve_file(reference="text.png")),
    # weight files (invgen.train.verify: what every shipped or converted weight folder goes through)
    case("weights-empty", WeightsError, "empty.safetensors: empty file (0 bytes)", weights("empty.safetensors")),
    case(
        "weights-pickle",
        WeightsError,
        "not a safetensors file | pickles are never loaded",
        weights("pickle.safetensors"),
    ),
    case("weights-truncated", WeightsError, "truncated | its header describes", weights("truncated.safetensors")),
    case("weights-nan", WeightsError, "nan.safetensors | hold NaN or Inf", weights("nan.safetensors")),
    case("weights-missing", WeightsError, "missing.safetensors: no such file", weights("missing.safetensors")),
    case("weights-checksum", WeightsError, "checksum mismatch | 0000", weights("ok.safetensors", sha256="0" * 64)),
    case("config-broken-json", WeightsError, "config.json: broken JSON | line 1", lambda d: read_config(d / "broken")),
    case(
        "config-not-an-object",
        WeightsError,
        "expected a JSON object | got a JSON list",
        lambda d: read_config(d / "list"),
    ),
    case("config-missing", WeightsError, "config.json: no such file", lambda d: read_config(d / "w")),
]


@pytest.mark.parametrize(("fn", "exc", "needles"), FILE_CASES)
def test_file_bad_input(files, fn, exc, needles):
    with pytest.raises(exc) as err:
        fn(files)
    text = str(err.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in: {text}"


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        pytest.param("10", ("limit of 10 pixels", "INVGEN_MAX_PIXELS"), id="env-pixels-small"),
        pytest.param("many", ("INVGEN_MAX_PIXELS: expected a number of pixels", "'many'"), id="env-pixels-bad"),
    ],
)
def test_file_bad_pixel_limit_from_the_environment(files, monkeypatch, value, needles):
    monkeypatch.setenv("INVGEN_MAX_PIXELS", value)
    with pytest.raises(FileError) as err:
        read_image(files / "ok.png")
    assert all(n in str(err.value) for n in needles), str(err.value)


@not_root
def test_file_read_only_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(FileError, match=r"expected a writable folder, but the folder is not writable"):
            check_output_dir(ro, "--out")
        with pytest.raises(FileError, match=r"would be created in .*ro, which is not writable"):
            check_output_dir(ro / "sub", "--out")
    finally:
        ro.chmod(0o700)


# -- the CLI: one line on stderr, exit status 2, before any work -------------------------------------------------------
SOLVE = ["solve", "--task", "denoise", "--prior", "gmm", "--prior-option", "image_shape=[1, 8, 8]", "--no-progress"]


def solve(*extra: str, image: str = "ok.png", out: str = "out", solver: str = "tikhonov") -> list[str]:
    """``invgen solve`` on the good 8x8 image with gmm and tikhonov, but for what the case changes."""
    args = [*SOLVE, "--image", f"{{d}}/{image}", "--out", out if out.startswith("/") else f"{{d}}/{out}"]
    return [*args, *(["--solver", solver] if solver else []), *extra]


def bench(action: str, *extra: str) -> list[str]:
    """``invgen bench ACTION`` on the tiny suite (``run``) or a database (``report``) in the files folder."""
    target = {"run": ["{d}/suite.yaml", "--db", "{d}/b.sqlite"], "report": ["{d}/b.sqlite"]}.get(action, [])
    return ["bench", action, *target, *extra]


def cli(id_: str, needles: str, argv: list[str], status: int = 2, marks=()):
    """One bad command line: exit ``status`` and one stderr line holding each of the ``" | "``-separated needles."""
    return pytest.param(argv, status, tuple(needles.split(" | ")), id=id_, marks=marks)


CLI_CASES = [
    # --image and the other image files
    cli("image-empty", "--image | empty.png: expected an image file | empty file (0 bytes)", solve(image="empty.png")),
    cli("image-text", "--image | PIL can read | unknown format", solve(image="text.png")),
    cli("image-truncated-png", "--image | cannot be decoded | truncated", solve(image="truncated.png")),
    cli("image-truncated-jpeg", "--image | header cannot be read | truncated", solve(image="truncated.jpg")),
    cli("image-folder", "--image | got a folder", solve(image="folder.png")),
    cli("image-missing", "--image | missing.png: no such file | expected an image file", solve(image="missing.png")),
    cli("image-bomb", "--image | 100000x100000 | limit of 67108864 pixels | --max-pixels", solve(image="bomb.png")),
    cli("image-npy", "--image | PIL can read | NUMPY", solve(image="array.npy")),
    cli(
        "max-pixels", "--image | (64 pixels), above the limit of 10 pixels | --max-pixels", solve("--max-pixels", "10")
    ),
    cli("max-pixels-0", "argument --max-pixels | integer >= 1, got 0", solve("--max-pixels", "0")),
    cli("max-pixels-abc", "argument --max-pixels | integer >= 1, got 'abc'", solve("--max-pixels", "abc")),
    cli("reference-empty", "--reference | empty file", solve("--reference", "{d}/empty.png")),
    cli("reference-bomb", "--reference | above the limit", solve("--reference", "{d}/bomb.png")),
    cli("mask-empty", "empty.png | empty file", solve("--task", "inpaint", "--mask", "{d}/empty.png")),
    cli(
        "mask-pickled",
        "pickled.npy | pickles are never loaded",
        solve("--task", "inpaint", "--mask", "{d}/pickled.npy"),
    ),
    cli("blur-zero-sum", "sum to a positive number | sum of 0", solve("--task", "deblur", "--blur", "{d}/zero.npy")),
    cli("blur-black-png", "black.png | all black", solve("--task", "deblur", "--blur", "{d}/black.png")),
    cli(
        "blur-pickled", "pickled.npy | pickles are never loaded", solve("--task", "deblur", "--blur", "{d}/pickled.npy")
    ),
    # --out, checked before any work
    cli("out-is-a-file", "--out | expected a folder to write into | existing file", solve(out="file.txt")),
    cli("out-under-a-file", "--out | cannot create the folder | is a file", solve(out="file.txt/sub")),
    cli("out-in-proc", "--out /proc/x | expected a writable folder", solve(out="/proc/x"), marks=linux),
    # --device
    cli("device-gpu", "--device | 'gpu' | available here: cpu", solve("--device", "gpu")),
    cli("device-cuda-99", "--device | 'cuda:99' | available devices: cpu", solve("--device", "cuda:99")),
    cli("device-cuda", "--device | CUDA is not available | devices: cpu", solve("--device", "cuda"), marks=no_cuda),
    # --option, --prior-option
    cli("option-float-abc", "--option eta=abc | expects a float | 'abc'", solve("--option", "eta=abc", solver="ddim")),
    cli("option-int-abc", "--option steps=abc | expects an int | 'abc'", solve("--option", "steps=abc", solver="mala")),
    cli("option-int-float", "--option steps=2.5 | expects an int | 2.5", solve("--option", "steps=2.5", solver="mala")),
    cli(
        "option-bool-str",
        "--option clip=maybe | expects a bool | 'maybe'",
        solve("--option", "clip=maybe", solver="ddnm"),
    ),
    cli(
        "option-unknown",
        "--option stepz=1 | unknown option(s) ['stepz'] | steps",
        solve("--option", "stepz=1", solver="mala"),
    ),
    cli("option-no-equals", "--option expects KEY=VALUE | 'steps'", solve("--option", "steps", solver="mala")),
    cli("option-default-solver", "--option steps=abc | expects an int", solve("--option", "steps=abc", solver="")),
    cli(
        "prior-option-str-for-int",
        "--prior-option seed=abc | expects an int | 'abc'",
        solve("--prior-option", "seed=abc"),
    ),
    cli(
        "prior-option-unknown",
        "--prior-option bogus=1 | unknown option(s) ['bogus']",
        solve("--prior-option", "bogus=1"),
    ),
    cli("prior-option-no-equals", "--prior-option expects KEY=VALUE | 'seed'", solve("--prior-option", "seed")),
    # numbers
    cli("n-zero", "argument -n | integer >= 1, got 0", solve("-n", "0")),
    cli("n-abc", "argument -n | 'abc'", solve("-n", "abc")),
    cli("n-1e9", "n_samples=1000000000 | above the memory limit | --max-memory", solve("-n", "1000000000")),
    cli(
        "max-memory", "needs an estimated | above the memory limit | max_memory", solve("-n", "4", "--max-memory", "1K")
    ),
    cli("max-memory-bad", "argument --max-memory | expected a memory size | 'lots'", solve("--max-memory", "lots")),
    cli("steps-zero", "argument --steps | integer >= 1, got 0", solve("--steps", "0", solver="mala")),
    cli("noise-negative", "argument --noise | number >= 0 | '-1'", solve("--noise", "-1")),
    cli("noise-nan", "argument --noise | finite number >= 0 | 'nan'", solve("--noise", "nan")),
    cli("seed-abc", "argument --seed | invalid int value | 'abc'", solve("--seed", "abc")),
    cli("task-unknown", "argument --task | invalid choice | 'dehaze'", solve("--task", "dehaze")),
    cli("scale-0", "scale must be an integer >= 2 | got 0", solve("--task", "sr", "--scale", "0")),
    cli("box-size-0", "box_size | (0, 1] | got 0.0", solve("--task", "inpaint", "--box-size", "0")),
    # names
    cli("prior-unknown", "unknown prior 'gmx' | did you mean", solve("--prior", "gmx")),
    cli("solver-unknown", "unknown solver 'pinvv' | did you mean 'pinv'", solve(solver="pinvv")),
    cli("solver-needs-capability", "needs the capability 'generator' | offers", solve(solver="latent_map")),
    cli(
        "image-required",
        "the following arguments are required | --image",
        ["solve", "--task", "denoise", "--prior", "gmm"],
    ),
    # the other commands
    cli("bench-validate-missing", "no suite file | missing.yaml", bench("validate", "{d}/missing.yaml")),
    cli("bench-validate-bad-yaml", "bad.yaml: | not valid YAML", bench("validate", "{d}/bad.yaml")),
    cli("bench-validate-empty", "empty.png | a suite is a mapping | NoneType", bench("validate", "{d}/empty.png")),
    cli("bench-run-device", "--device | 'gpu' | available here: cpu", bench("run", "--device", "gpu")),
    cli("bench-run-report-is-a-file", "--report | existing file", bench("run", "--report", "{d}/file.txt")),
    cli("bench-run-frozen-is-a-file", "--frozen | existing file", bench("run", "--frozen", "{d}/file.txt")),
    cli(
        "bench-run-db-under-a-file",
        "file.txt | is a file, not a folder",
        ["bench", "run", "{d}/suite.yaml", "--db", "{d}/file.txt/b"],
    ),
    cli("bench-report-out-is-a-file", "--out | existing file", bench("report", "--out", "{d}/file.txt")),
    cli("bench-report-missing-db", "missing.sqlite", ["bench", "report", "{d}/missing.sqlite"]),
    cli(
        "bench-report-foreign-db",
        "foreign.sqlite | not an invgen benchmark database",
        ["bench", "report", "{d}/foreign.sqlite"],
    ),
    cli("bench-report-not-a-db", "text.png | not a SQLite database", ["bench", "report", "{d}/text.png"]),
    cli("bench-report-folder", "folder.png | is a folder, not a database file", ["bench", "report", "{d}/folder.png"]),
    cli(
        "bench-run-foreign-db",
        "foreign.sqlite | refusing to touch it",
        ["bench", "run", "{d}/suite.yaml", "--db", "{d}/foreign.sqlite"],
    ),
    cli("train-steps-negative", "argument --steps | positive integer, got -1", ["train", "diffusion", "--steps", "-1"]),
    cli("bench-unknown-action", "argument ACTION | invalid choice | 'rum'", ["bench", "rum", "x"]),
    cli("demo-out-is-a-file", "--out | existing file", ["demo", "--out", "{d}/file.txt"]),
    cli("train-unknown", "unknown trainer 'difusion' | diffusion", ["train", "difusion"]),
    cli("unknown-command", "invalid choice | 'solv'", ["solv"]),
    cli("check-prior-unknown", "unknown prior 'gmx' | did you mean", ["check-prior", "gmx"]),
]


@pytest.mark.parametrize(("argv", "status", "needles"), CLI_CASES)
def test_cli_bad_input(files, capsys, argv, status, needles):
    argv = [a.replace("{d}", str(files)) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own refusals (one line too: invgen's parser)
        rc = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == status, (rc, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("invgen"), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    assert not (files / "out").exists()  # nothing was written: the checks come before any work


# -- what works: mixed dtypes are computed, --debug shows the traceback ------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_observation_dtypes_with_a_float32_network_are_computed_in_float32(dtype):
    net = Net()
    y32 = y()
    ref = invgen.solve(y32, op(), net, solver="ddnm", steps=2, seed=0)
    post = invgen.solve(y32.to(dtype), op(), net, solver="ddnm", steps=2, seed=0)
    assert post.samples.dtype == torch.float32
    tol = 0 if dtype == torch.float64 else 0.05
    torch.testing.assert_close(post.samples, ref.samples, atol=tol + 1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.float32], ids=str)
def test_observation_dtypes_with_a_parameter_free_prior(dtype):
    """Analytic priors compute in their input's dtype: float64 stays float64, half precision is raised to float32."""
    post = invgen.solve(y(dtype=dtype), op(), gmm(), solver="tikhonov", n_samples=2, seed=0)
    assert post.samples.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert bool(torch.isfinite(post.samples).all())


def test_cli_debug_shows_the_traceback(files, capsys):
    argv = [a.replace("{d}", str(files)) for a in solve(image="text.png")]
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnidentifiedImageError" in err, err
    assert err.splitlines()[-1].startswith("invgen solve: --image"), err
    assert main([*argv, "--debug"]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_cli_checks_the_output_folder_before_loading_the_prior(files, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise AssertionError("the prior was built before --out was checked")

    monkeypatch.setattr(invgen, "prior", boom)
    argv = [a.replace("{d}", str(files)) for a in solve(out="file.txt")]
    assert main(argv) == 2
    assert "--out" in capsys.readouterr().err
