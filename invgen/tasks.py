"""The named tasks of ``invgen solve`` and the files it writes.

A *task* is an operator with its options and noise, described by command-line words: ``colorize``, ``sr``,
``inpaint``, ``sketch``, ``denoise``, ``deblur``, ``exemplar``. :func:`build_task` makes the operator;
:func:`solve_image` reads an observation (or a clean image with ``degrade=True``), samples the posterior and writes
each sample, the posterior mean, the per-pixel standard deviation, a contact sheet and, with a reference,
``metrics.json`` (for ``sketch`` always: the edge agreement of the samples with the binary sketch, see
:func:`solve_image`).

The ``exemplar`` task is exemplar-guided inpainting (:mod:`invgen.operators.exemplar`): the image is inpainted with
the inpaint task's mask options, guided by the image file ``TaskOptions.exemplar``; the observation file is the
inpainting observation (the seen pixels), and the exemplar's embedding is joined to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.errors import InvgenError, ShapeError

TASKS = ("colorize", "sr", "inpaint", "sketch", "denoise", "deblur", "exemplar")


class TaskError(InvgenError, ValueError):
    """A task was asked for with options or an image it cannot take."""


@dataclass
class TaskOptions:
    """Options of the command-line tasks (each task reads the ones it uses)."""

    scale: int = 4
    sr_kernel: str = "block"
    mask: str = "box"
    box_size: float | None = None
    ratio: float = 0.7
    mask_seed: int = 0
    blur: str = "gaussian"
    blur_sigma: float = 1.5
    blur_size: int | None = None
    threshold: float = 0.2
    noise: float = 0.05
    exemplar: str | None = None  # the exemplar task's exemplar image file (--exemplar)
    tau_scale: float = 1.0  # the exemplar task's factor on the calibrated tau (--tau-scale; < 1 pulls harder)
    extra: dict[str, Any] = field(default_factory=dict)


def read_exemplar(options: TaskOptions, max_pixels: int | None = None) -> Tensor:
    """The exemplar task's exemplar image ``(C, H, W)`` in [0, 1], read from ``options.exemplar`` with the project's
    image opener; a :class:`TaskError` naming ``--exemplar`` when it is not given, missing or unreadable."""
    if not options.exemplar:
        raise TaskError(
            "the exemplar task needs an exemplar image: pass --exemplar FILE (TaskOptions.exemplar), the image whose "
            "content should fill the masked region"
        )
    try:
        return _read(options.exemplar, "--exemplar", max_pixels)
    except FileNotFoundError as exc:
        raise TaskError(
            f"--exemplar {options.exemplar}: no such file (expected the exemplar image of the exemplar task)"
        ) from exc
    except OSError as exc:  # a FileError: a folder, an empty, truncated or non-image file, too many pixels
        raise TaskError(f"{exc} (expected the exemplar image of the exemplar task)") from exc


def _mask_options(options: TaskOptions) -> tuple[str, dict[str, Any]]:
    """The inpaint (and exemplar) mask of the task options: ``(mask, options)``; a mask file is passed as its path."""
    kind = options.mask
    if kind == "box":
        return kind, {"box_size": options.box_size if options.box_size is not None else 0.5}
    if kind == "random":
        return kind, {"ratio": options.ratio, "seed": options.mask_seed}
    if kind == "freeform":
        return kind, {"seed": options.mask_seed}
    if kind == "half":
        return kind, {}
    if not Path(kind).is_file():
        raise TaskError(f"--mask {kind!r}: expected box, random, freeform, half or a mask image file")
    return str(Path(kind)), {}


def build_task(
    task: str,
    options: TaskOptions,
    channels: int,
    size: tuple[int, int] | None = None,
    exemplar: Tensor | None = None,
) -> Any:
    """The operator (with Gaussian noise ``options.noise``) of a named task for images with ``channels`` channels.

    Args:
        task: one of :data:`TASKS`.
        options: the task options.
        channels: the images' channel count.
        size: the images' ``(H, W)``: needed by the ``exemplar`` task for a generated mask (its box must be known
            before any image is seen); other tasks ignore it.
        exemplar: the ``exemplar`` task's exemplar image; default: read from ``options.exemplar``
            (:func:`read_exemplar`).
    """
    import invgen

    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    noise = {"name": "gaussian", "std": float(options.noise)}
    if task == "exemplar":
        e = exemplar if exemplar is not None else read_exemplar(options)
        mask, kw = _mask_options(options)
        if mask in ("box", "random", "freeform", "half"):  # generated: placed for the image size
            if size is None:
                raise TaskError(f"the exemplar task with --mask {mask} needs the image size (H, W) to place the mask")
            kw["size"] = tuple(int(v) for v in size)
        return invgen.operator(
            "exemplar", mask=mask, exemplar=e, channels=channels, noise=noise, tau_scale=options.tau_scale, **kw
        )
    if task == "colorize":
        if channels != 3:
            raise TaskError(f"colorize needs a colour (3-channel) prior, the prior has {channels} channel(s)")
        return invgen.operator("colorize", noise=noise)
    if task == "sr":
        return invgen.operator("superres", scale=options.scale, kernel=options.sr_kernel, noise=noise)
    if task == "denoise":
        return invgen.operator("identity", noise=noise)
    if task == "deblur":
        if options.blur == "gaussian":
            kw: dict[str, Any] = {"sigma": options.blur_sigma}
            if options.blur_size is not None:
                kw["size"] = options.blur_size
        elif options.blur == "motion":
            kw = {"size": options.blur_size or 9, "seed": options.mask_seed}
        else:
            kw = {}
        return invgen.operator("blur", kernel=options.blur, noise=noise, **kw)
    if task == "sketch":
        return invgen.operator("sketch", threshold=options.threshold, channels=channels, noise=noise)
    # inpaint
    mask, kw = _mask_options(options)
    return invgen.operator("inpaint", mask=mask, noise=noise, **kw)


def _prior_shape(prior: Any) -> tuple[int, int, int] | None:
    shape = getattr(prior, "image_shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _as_observation(img: Tensor, task: str, op: Any, prior_shape: tuple[int, int, int] | None, path: str) -> Tensor:
    """Check that a read image is an observation of the task for the prior, with errors that say what fits."""
    c = int(img.shape[0])
    gray_like = c == 3 and bool((img[0] == img[1]).all() and (img[1] == img[2]).all())
    want_c = 1 if task in ("colorize", "sketch") else (prior_shape[0] if prior_shape else c)
    if c != want_c:
        if want_c == 1 and gray_like:
            img = img[:1]
        else:
            raise ShapeError(
                f"{path}: the {task} task observes {want_c}-channel images for this prior, the file has {c} "
                "channel(s) (pass --degrade to make the observation from a clean image)"
            )
    if prior_shape is not None:
        x_shape = op.input_shape((1, *img.shape))
        if tuple(x_shape[1:]) != prior_shape:
            raise ShapeError(
                f"{path}: a {img.shape[1]}x{img.shape[2]} observation of task {task!r} means a "
                f"{x_shape[2]}x{x_shape[3]} image with {x_shape[1]} channel(s), but the prior is defined on "
                f"{prior_shape[1]}x{prior_shape[2]} images with {prior_shape[0]} channel(s)"
            )
    return img


def _check_clean(img: Tensor, prior_shape: tuple[int, int, int] | None, path: str) -> Tensor:
    if prior_shape is None:
        return img
    c = int(img.shape[0])
    if c != prior_shape[0]:
        gray_like = c == 3 and bool((img[0] == img[1]).all() and (img[1] == img[2]).all())
        if prior_shape[0] == 1 and gray_like:
            img = img[:1]
        elif prior_shape[0] == 3 and c == 1:
            raise ShapeError(f"{path}: a gray image, but the prior models colour (3-channel) images")
        else:
            raise ShapeError(f"{path}: {c} channel(s), but the prior models {prior_shape[0]}-channel images")
    if tuple(img.shape[1:]) != prior_shape[1:]:
        raise ShapeError(
            f"{path}: {img.shape[1]}x{img.shape[2]}, but the prior is defined on {prior_shape[1]}x{prior_shape[2]} "
            "images (resize or crop it first, or use a prior that accepts any size)"
        )
    return img


def save_png(x: Tensor, path: str | os.PathLike) -> None:
    """Write ``(C, H, W)`` in [0, 1] (C = 1 or 3) as an 8-bit PNG."""
    import numpy as np
    from PIL import Image

    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(np.moveaxis(arr, 0, -1), "RGB")
    img.save(path)


def image_grid(x: Tensor, cols: int, fill: float = 1.0) -> Tensor:
    """Tile images row by row into one image, the last row padded with ``fill``.

    Shape: ``(N, C, H, W)`` -> ``(C, rows H, cols W)`` with ``rows = ceil(N / cols)``.
    """
    n, c, h, w = x.shape
    rows = -(-n // cols)
    pad = torch.full((rows * cols - n, c, h, w), fill, dtype=x.dtype, device=x.device)
    return torch.cat([x, pad]).reshape(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w)


def _sheet_row(tiles: list[tuple[str, Tensor]], min_tile: int = 96) -> Any:
    """A PIL image of one row of labelled tiles ``(title, (C, H, W) in [0, 1])``, nearest-upscaled to at least
    ``min_tile`` px."""
    import numpy as np
    from PIL import Image, ImageDraw

    h = max(int(t.shape[1]) for _, t in tiles)
    w = max(int(t.shape[2]) for _, t in tiles)
    k = max(1, -(-min_tile // max(h, w)))
    pad, top = 4, 16
    sheet = Image.new("RGB", (len(tiles) * (w * k + pad) + pad, h * k + top + pad), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for i, (title, t) in enumerate(tiles):
        t = t.detach().cpu().clamp(0, 1)
        if t.shape[0] == 1:
            t = t.repeat(3, 1, 1)
        arr = (t * 255).round().to(torch.uint8).numpy()
        tile = Image.fromarray(np.moveaxis(arr, 0, -1), "RGB")
        tile = tile.resize((int(t.shape[2]) * k, int(t.shape[1]) * k), Image.NEAREST)
        x0 = pad + i * (w * k + pad)
        sheet.paste(tile, (x0, top))
        draw.text((x0, 2), title, fill=(0, 0, 0))
    return sheet


def contact_sheet(tiles: list[tuple[str, Tensor]], path: str | os.PathLike, min_tile: int = 96) -> None:
    """One row of labelled tiles ``(title, (C, H, W) in [0, 1])``, nearest-upscaled to at least ``min_tile`` px."""
    _sheet_row(tiles, min_tile).save(path)


def contact_sheets(rows: list[list[tuple[str, Tensor]]], path: str | os.PathLike) -> None:
    """Rows of :func:`contact_sheet` stacked into one PNG on white (saved as gray when every row is gray: a third of
    the size); the examples' sheets."""
    from PIL import Image

    parts = [_sheet_row(tiles) for tiles in rows]
    sheet = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), (255, 255, 255))
    top = 0
    for p in parts:
        sheet.paste(p, (0, top))
        top += p.height
    r, g, b = sheet.split()
    gray = r.tobytes() == g.tobytes() == b.tobytes()
    (sheet.convert("L") if gray else sheet).save(path, optimize=True)


def solve_image(
    image: str | os.PathLike,
    task: str,
    prior_name: str,
    out: str | os.PathLike,
    *,
    solver: str | None = None,
    n_samples: int = 8,
    seed: int = 0,
    degrade: bool = False,
    reference: str | os.PathLike | None = None,
    options: TaskOptions | None = None,
    solver_options: dict[str, Any] | None = None,
    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips"),
    device: str = "cpu",
    prior_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    max_pixels: int | None = None,
    max_memory: int | str | None = None,
) -> dict[str, Any]:
    """Solve one image file: read, (degrade), sample, write files; return the summary written to ``info.json``.

    Args:
        image: the observation y (a PNG/JPEG), or a clean image with ``degrade=True`` (then the reference by default).
        task: one of :data:`TASKS`.
        prior_name: a registered prior.
        out: output folder (created).
        solver: a registered solver (default: as :func:`invgen.solve` chooses, by what the operator offers; the
            choice is in ``info["extras"]["default_solver"]``).
        n_samples: posterior samples N.
        degrade: apply the task's operator (and noise, seeded) to ``image`` first.
        reference: a clean image to score against (``metrics.json``).
            For ``sketch``, ``metrics.json`` also holds ``edge_f1`` and ``edge_chamfer``
            (:mod:`invgen.metrics.edges`) of the mean and of each sample against the clean binary sketch:
            ``make_sketch`` of the reference (``degrade=True``: of the image) when there is one, else the
            observation itself, taken as a drawing and thresholded at 0.5 (``metrics.json["edge_sketch"]`` says
            which). Then ``metrics.json`` is written even without a reference.
        options: task options; solver_options: options of the solver; prior_options: options of the prior's
            factory (``invgen.prior(prior_name, **prior_options)``, e.g. ``{"precision": "bfloat16"}``).
        progress: a progress bar over the network calls, as in :func:`invgen.solve` (None: for large problems only).
        max_pixels: the most pixels an input image may have (default :func:`invgen.files.max_pixels`).
        max_memory: the memory limit of :func:`invgen.solve` (None: ``INVGEN_MAX_MEMORY``, else the device's).

    Before any work (no prior is built, nothing is written), the output folder is checked for writability, the
    device against those of this machine, and the image files are read: a bad one raises a ``FileError`` naming
    the file (and the option, ``--image`` or ``--reference``).
    """
    import invgen
    from invgen.checks import check_device
    from invgen.files import check_output_dir

    options = options or TaskOptions()
    out = check_output_dir(out, "out")
    check_device(device, "device")
    raw = _read(image, "--image", max_pixels)
    ref_raw = _read(reference, "--reference", max_pixels) if reference is not None else None
    exemplar = read_exemplar(options, max_pixels) if task == "exemplar" else None
    prior_options = dict(prior_options or {})
    prior_kw = dict(prior_options)
    if _accepts_device(prior_name):
        prior_kw.setdefault("device", device)
    prior = invgen.prior(prior_name, **prior_kw)
    shape = _prior_shape(prior)
    channels = shape[0] if shape is not None else int(raw.shape[0]) if task != "colorize" else 3
    size = (int(shape[1]), int(shape[2])) if shape is not None else (int(raw.shape[1]), int(raw.shape[2]))
    op = build_task(task, options, channels, size=size, exemplar=exemplar).to(device)
    # the exemplar task observes the seen pixels (its inpaint part) and joins the exemplar's embedding to them
    seen = op.parts[0] if task == "exemplar" else op
    x_ref: Tensor | None = None
    if degrade:
        x_ref = _check_clean(raw, shape, str(image))
        gen = torch.Generator().manual_seed(seed)
        y = seen.measure(x_ref[None], generator=gen)[0]
    else:
        y = _as_observation(raw, task, seen, shape, str(image))
    if task == "exemplar":
        y = op.observe(y[None])[0]
    if ref_raw is not None:
        x_ref = _check_clean(ref_raw, shape, str(reference))
        x_shape = op.input_shape((1, *y.shape))
        if tuple(x_ref.shape) != tuple(x_shape[1:]):
            raise ShapeError(f"--reference {reference}: shape {tuple(x_ref.shape)}, expected {tuple(x_shape[1:])}")
    post = invgen.solve(
        y[None].to(device),
        op,
        prior,
        solver=solver,
        n_samples=n_samples,
        seed=seed,
        progress=progress,
        max_memory=max_memory,
        **(solver_options or {}),
    )
    # what is written and scored: the samples clamped to [0, 1] (the metrics refuse anything else); the mean and std
    # leave out the samples that solve() flagged as far off the data (info.json lists them under "warnings")
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed solve leaves nothing behind
    clamped = post.clamped(0, 1)
    samples = clamped.samples[:, 0].cpu()  # (N, C, H, W)
    mean = clamped.mean[0].cpu()
    std = clamped.std[0].cpu()
    for k in range(samples.shape[0]):
        save_png(samples[k], out / f"sample_{k:03d}.png")
    save_png(mean, out / "mean.png")
    std_max = float(std.max())
    save_png(std / std_max if std_max > 0 else std, out / "std.png")
    if task == "exemplar":
        y_view = op.split(y[None])[0][0]  # the seen pixels
    else:
        y_view = y if y.dim() == 3 and y.shape[0] in (1, 3) else op.pinv(y[None])[0]
    save_png(y_view.clamp(0, 1), out / "observation.png")
    tiles = [("y", y_view.cpu())]
    if x_ref is not None:
        tiles.insert(0, ("reference", x_ref))
    if exemplar is not None:
        tiles.append(("exemplar", _exemplar_tile(op, exemplar, tuple(y_view.shape))))
    tiles += [(f"sample {k + 1}", samples[k]) for k in range(min(samples.shape[0], 8))]
    tiles += [("mean", mean), ("std/max", std / std_max if std_max > 0 else std)]
    contact_sheet(tiles, out / "contact_sheet.png")
    op_config = op.config()
    if task == "exemplar":  # the file, not the image tensor; and how close each sample's box came to the exemplar
        op_config["exemplar"] = str(options.exemplar)
    info: dict[str, Any] = {
        "image": str(image),
        "task": task,
        "operator": op_config,
        "prior": prior_name,
        "prior_options": prior_options,
        "solver": post.solver,
        "n_samples": n_samples,
        "seed": seed,
        "degrade": degrade,
        "nfe": post.nfe,
        "seconds": post.seconds,
        "std_max": std_max,
        "extras": {k: v for k, v in post.extras.items() if isinstance(v, (int, float, str))},
        "warnings": list(post.warnings),
    }
    if task == "exemplar":
        info["exemplar"] = _exemplar_summary(op, samples, options)
    result: dict[str, Any] | None = None
    if x_ref is not None:
        from invgen.metrics.lpips import lpips_available

        ref = x_ref[None]
        result = {"mean": {}, "samples": {}, "samples_mean": {}}
        offline = not lpips_available()
        if offline and "lpips" in metrics:  # never a download: say what is missing instead
            metrics = tuple(m for m in metrics if m != "lpips")
            result["skipped"] = {
                "lpips": "no LPIPS weights offline: this build lacks the shipped AlexNet trunk; set "
                "INVGEN_LPIPS_WEIGHTS (AlexNet safetensors)"
            }
        for name in metrics:
            fn = invgen.registry.get("metrics", name).factory
            result["mean"][name] = float(fn(mean[None], ref)[0])
            per = fn(samples, ref.expand(samples.shape[0], -1, -1, -1))
            result["samples"][name] = [float(v) for v in per]
            result["samples_mean"][name] = float(per.mean())
        if samples.shape[0] > 1:
            from invgen.metrics.posterior import diversity

            kind = "lpips" if min(samples.shape[-2:]) >= 32 and not offline else "l2"
            result["diversity"] = {kind: float(diversity(samples[:, None], metric=kind)[0])}
    if task == "sketch":  # the edges against the clean binary sketch: the reference's, else the drawing itself
        from invgen.metrics.edges import edge_chamfer, edge_f1
        from invgen.operators.sketch import make_sketch

        if x_ref is not None:
            sketch, source = make_sketch(x_ref[None]), "make_sketch(reference)"
        else:
            sketch, source = (y[None].cpu() > 0.5).to(samples.dtype), "the observation (drawing) > 0.5"
        if result is None:
            result = {"mean": {}, "samples": {}, "samples_mean": {}}
        result["edge_sketch"] = source
        for name, fn in (("edge_f1", edge_f1), ("edge_chamfer", edge_chamfer)):
            result["mean"][name] = float(fn(mean[None], sketch)[0])
            per = fn(samples, sketch)
            result["samples"][name] = [float(v) for v in per]
            result["samples_mean"][name] = float(per.mean())
    if result is not None:
        (out / "metrics.json").write_text(json.dumps(result, indent=1))
        info["metrics"] = result
    (out / "info.json").write_text(json.dumps(info, indent=1, default=str))
    return info


def _exemplar_tile(op: Any, exemplar: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The exemplar as the operator sees it (channels converted, centre-cropped to the box's aspect), at the image
    size ``shape`` ``(C, H, W)``, for the contact sheet."""
    import torch.nn.functional as F

    from invgen.operators.exemplar import prepare_exemplar

    top, bottom, left, right = op.box
    e = prepare_exemplar(exemplar, (bottom - top) / (right - left), int(shape[0]))
    return F.interpolate(e, size=tuple(shape[1:]), mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def _exemplar_summary(op: Any, samples: Tensor, options: TaskOptions) -> dict[str, Any]:
    """The exemplar task's figures: the file, the box, tau and each sample's ``||phi(R x) - phi(e)||^2``."""
    from invgen.operators.exemplar import crop_box, embed

    with torch.no_grad():
        target = op.target(int(samples.shape[1]), samples.dtype, samples.device)
        d2 = (embed(crop_box(samples, op.box)) - target).pow(2).sum(dim=1)
    return {
        "file": str(options.exemplar),
        "box": list(op.box),
        "tau": op.tau,
        "embedding_d2": [float(v) for v in d2],
        "embedding_d2_mean": float(d2.mean()),
    }


def _read(path: str | os.PathLike, option: str, max_pixels: int | None) -> Tensor:
    """:func:`invgen.data.sets.read_image`, with the option that named the file in a bad file's message."""
    from invgen.data.sets import read_image
    from invgen.errors import FileError

    try:
        return read_image(path, max_pixels=max_pixels)
    except FileError as exc:
        raise FileError(f"{option} {exc}", path=exc.path) from exc
    except FileNotFoundError as exc:
        raise FileNotFoundError(exc.errno, f"{option} {path}: no such file (expected an image file)") from exc


def _accepts_device(name: str) -> bool:
    import inspect

    from invgen import registry

    try:
        return "device" in inspect.signature(registry.get("priors", name).factory).parameters
    except (TypeError, ValueError):
        return False
