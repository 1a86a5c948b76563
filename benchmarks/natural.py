"""Restoration tables of a natural-image (any-size, fully convolutional) gray diffusion prior on the classic test sets:
super-resolution on Set5 and Set14, inpainting and deblurring on BSD68 (optionally Set12), each diffusion solver
beside the classical baselines, plus the speed of one denoiser call.

Protocol (every cell: PSNR and SSIM of the posterior mean, LPIPS of the samples, solver seconds and NFE per image):

* **Super-resolution x2, x4** (``sr``) on Set5 (``eval/Set5/HR``) and Set14, the convention of the SR papers (VDSR,
  EDSR): the 8-bit RGB image -> its Y channel of YCbCr (ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` on uint8 images,
  ``Y = round(16 + 65.481 R + 128.553 G + 24.966 B)`` with R, G, B in [0, 1], kept on [0, 1] as ``Y / 255``),
  mod-cropped to the scale, degraded by our ``superres`` operator with the antialiased bicubic kernel (MATLAB's
  ``imresize``; the check below compares it with the Set5 ``LR_bicubic`` files), **noiseless** (std 0: DDRM, DDNM
  and PiGDM take it through the operator's SVD, DiffPIR as an exact projection). PSNR/SSIM on Y with ``scale``
  border pixels shaved. Baselines: bicubic upsampling of the LR image (MATLAB ``imresize`` upscaling, built here as
  a matrix), ``pinv`` and ``tikhonov``; the published bicubic figures are printed beside ours.
* **Inpainting** (``inpaint``) on BSD68 centre crops 256x256 (gray), noise std 0.01: (a) the DDNM mask
  (``eval/masks_ddnm/mask.npy``, 256x256, 1 = observed, 26 % missing), (b) free-form brush-stroke masks
  (``invgen.operators.masks.freeform_mask``, hole ratio in [0.1, 0.5], seed = image index), (c) the DDRM text mask
  (``eval/masks_ddrm_text/lorem3.npy``, 256x256, 1 = observed, 14 % missing). The fixed masks are centre-cropped
  when the crop is smaller than 256 and nearest-resized when it is larger. Baselines ``pinv``, ``tikhonov``, ``tv``.
* **Deblurring** (``deblur``) on BSD68 centre crops 256x256, noise std 0.01, circular convolution (our ``blur``
  operator): a 25x25 Gaussian of sigma 1.6, and the 8 motion kernels of Levin et al. 2009
  (``eval/blur_kernels/Levin09.mat``, a MATLAB v7.3 file read with ``h5py``: ``pip install -e ".[bench]"``; image ``i``
  uses kernel ``i % 8``).
  Baselines ``pinv`` (the truncated pseudo-inverse, ``rcond = 1e-6``), ``tikhonov``, ``tv``.

Common rules: ground truths and outputs are rounded to 8 bits (clipped to [0, 255]) before PSNR and SSIM; SSIM is
the setting of Wang et al. 2004 (11-tap Gaussian window, sigma 1.5, population covariance) as in the SR papers'
MATLAB code; LPIPS (AlexNet v0.1, gray repeated to RGB) is averaged over the N samples, each rounded to 8 bits.
Observations are drawn once per image (torch generator seeded with ``seed + image index``) and shared by every
method; the solver's seed is ``seed + image index`` too. Seconds are the solver's wall time per image
(``Posterior.seconds``, metrics excluded); NFE counts batched denoiser calls per image. DDRM, DDNM and PiGDM need an
operator with an SVD (``has_svd``): the blur operator has none, so they are skipped on deblurring with the reason
printed. DPS (backpropagates through the network, expensive) runs with ``--dps``.

Speed: seconds per megapixel of one ``prior.denoise(x, sigma)`` call (batch 1; the second of two calls at each size)
at 481x321 and 512x512 and, where the prior tiles large images (``prior.tile``), at 2048x2048; sizes the prior tiles
are also timed as one whole-image call (up to 1 megapixel). Memory: the peak resident set size of the process during
the first call above its resident size just before it, after glibc's ``malloc_trim`` (Linux ``VmHWM`` after a reset
through ``/proc/self/clear_refs``; the CPU process' memory, not GPU memory).

``--clip-denoised`` clamps the prior's denoiser output to [0, 1] (off by default: the tables measure the prior as it
is; the option shows how much of a solver's result is lost to out-of-range denoised estimates).

Usage:
    INVGEN_DATA=../shared/data python benchmarks/natural.py --prior diffusion-natural-gray --out docs/natural \
        [--tasks sr,inpaint,deblur] [--solvers ddrm,ddnm,diffpir,pigdm] [--dps] [--steps 20] [--samples 2] \
        [--images N] [--seed 0] [--threads T] [--clip-denoised] [--variant diffpir:lam=28,spacing=uniform ...]
    python benchmarks/natural.py --prior-path /path/to/folder ...   # config.json + model.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import invgen

DIFFUSION_SOLVERS = ("ddrm", "ddnm", "diffpir", "pigdm", "dps")
SVD_SOLVERS = frozenset({"ddrm", "ddnm", "pigdm"})


def split_method(method: str) -> tuple[str, dict[str, Any]]:
    """``"diffpir(lam=28,spacing=uniform)"`` -> ``("diffpir", {"lam": 28, "spacing": "uniform"})``: a method label of
    the tables and its solver with options (``--variant``; values read as int, else float, else str); a plain name has
    no options."""
    name, sep, rest = method.partition("(")
    if not sep:
        return method, {}
    options: dict[str, Any] = {}
    for pair in rest.rstrip(")").split(","):
        key, _, value = (part.strip() for part in pair.partition("="))
        for kind in (int, float, str):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                continue
    return name, options


def parse_variant(text: str) -> str:
    """``--variant diffpir:lam=28,spacing=uniform`` -> the method label ``"diffpir(lam=28,spacing=uniform)"``."""
    name, sep, opts = text.partition(":")
    if name not in DIFFUSION_SOLVERS or not sep or "=" not in opts:
        raise SystemExit(
            f"--variant: expected SOLVER:KEY=VALUE[,KEY=VALUE] with SOLVER in {DIFFUSION_SOLVERS}, got {text!r}"
        )
    return f"{name}({opts})"


TASKS = ("sr", "inpaint", "deblur")
SR_SETS = ("set5", "set14")
SR_SCALES = (2, 4)
SR_BASELINES = ("bicubic", "pinv", "tikhonov")
GRAY_BASELINES = ("pinv", "tikhonov", "tv")
NOISE_STD = {"sr": 0.0, "inpaint": 0.01, "deblur": 0.01}
INPAINT_MASKS = ("ddnm", "freeform", "text")
DEBLUR_KERNELS = ("gaussian", "levin")
MASK_FILES = {"ddnm": "eval/masks_ddnm/mask.npy", "text": "eval/masks_ddrm_text/lorem3.npy"}
LEVIN_FILE = "eval/blur_kernels/Levin09.mat"
SR_LR_FOLDER = "eval/Set5/LR_bicubic"
SPEED_SIZES = ((321, 481), (512, 512))
SPEED_TILED = (2048, 2048)
SPEED_SIGMA = 0.1

# Bicubic interpolation, Y channel, scale pixels shaved: (PSNR dB, SSIM). Kim et al. 2016 (VDSR), Table 3; the same
# figures are in Lim et al. 2017 (EDSR), Table 3.
PUBLISHED_BICUBIC = {
    "set5": {2: (33.66, 0.9299), 4: (28.42, 0.8104)},
    "set14": {2: (30.24, 0.8688), 4: (26.00, 0.7027)},
}
SET_TITLES = {"set5": "Set5", "set14": "Set14", "bsd68": "BSD68", "set12": "Set12"}
CELL_TITLES = {
    "ddnm": "DDNM mask",
    "freeform": "free-form",
    "text": "DDRM text",
    "gaussian": "Gaussian",
    "levin": "Levin",
}


# --- colour, cropping, 8-bit rounding ----------------------------------------------------------------------------
def rgb_to_y(rgb: Tensor) -> Tensor:
    """Y of YCbCr (ITU-R BT.601, MATLAB ``rgb2ycbcr``) on the [0, 1] scale, unrounded: ``(16 + 65.481 R + 128.553 G
    + 24.966 B) / 255`` for R, G, B in [0, 1].

    Shape:
        ``(..., 3, H, W)`` -> ``(..., 1, H, W)``.
    """
    if rgb.shape[-3] != 3:
        raise ValueError(f"rgb_to_y: expected 3 channels at dim -3, got shape {tuple(rgb.shape)}")
    w = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).reshape(3, 1, 1)
    y = 16.0 + (rgb.to(torch.float64) * w).sum(dim=-3, keepdim=True)
    return (y / 255.0).to(rgb.dtype)


def quantize(x: Tensor) -> Tensor:
    """Round to 8 bits on the [0, 1] scale (clipped to [0, 255] first), keeping the dtype."""
    return (x.to(torch.float64) * 255.0).round().clamp(0.0, 255.0).div(255.0).to(x.dtype)


def y_channel_8bit(rgb: Tensor) -> Tensor:
    """The 8-bit Y channel MATLAB's ``rgb2ycbcr`` gives for a uint8 image, on [0, 1]. Shape: ``(3, H, W)`` ->
    ``(1, H, W)``; a gray image ``(1, H, W)`` is treated as R = G = B."""
    if rgb.shape[-3] == 1:
        rgb = rgb.expand(*rgb.shape[:-3], 3, *rgb.shape[-2:])
    return quantize(rgb_to_y(rgb.to(torch.float64))).to(torch.float32)


def mod_crop(x: Tensor, scale: int) -> Tensor:
    """Crop the bottom and right so that H and W are multiples of ``scale`` (the SR convention)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def shave(x: Tensor, border: int) -> Tensor:
    """Drop ``border`` pixels on every side (nothing for ``border = 0``)."""
    return x[..., border:-border, border:-border] if border > 0 else x


def center_crop(x: Tensor, size: int) -> Tensor:
    """The centred ``size x size`` crop (the whole axis where it is shorter than ``size``)."""
    h, w = x.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return x[..., top : top + size, left : left + size]


def psnr_shaved(x: Tensor, ref: Tensor, border: int = 0) -> float:
    """PSNR (dB, peak 1) of one image pair ``(C, H, W)`` after shaving ``border`` pixels, in float64."""
    a, b = shave(x, border).to(torch.float64), shave(ref, border).to(torch.float64)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


# --- MATLAB imresize upscaling (the bicubic baseline) ------------------------------------------------------------
def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    a = np.abs(t)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))


def upscale_matrix(n: int, scale: int) -> Tensor:
    """``(n * scale, n)`` float64 matrix of MATLAB ``imresize(x, scale, 'bicubic')`` along one axis (upscaling: the
    plain cubic kernel, no antialiasing; weights normalised per output sample; symmetric padding at the borders)."""
    out = n * scale
    u = np.arange(1, out + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinates
    idx = np.floor(u - 2)[:, None] + np.arange(6)[None, :]
    weights = _cubic(u[:, None] - idx)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n)]
    m = np.zeros((out, n))
    np.add.at(m, (np.repeat(np.arange(out), 6), cols.ravel()), weights.ravel())
    return torch.from_numpy(m)


def bicubic_upsample(y: Tensor, scale: int) -> Tensor:
    """MATLAB ``imresize(y, scale, 'bicubic')`` of a batch ``(B, C, h, w)`` -> ``(B, C, h * scale, w * scale)``."""
    wh = upscale_matrix(y.shape[-2], scale).to(y.dtype)
    ww = upscale_matrix(y.shape[-1], scale).to(y.dtype)
    return wh @ y @ ww.T


# --- problems ----------------------------------------------------------------------------------------------------
def _noise(std: float) -> Any:
    return invgen.noise("gaussian", std=std)


def fixed_mask(path: Path, size: int) -> Tensor:
    """A mask file (1 = observed) fitted to ``size x size``: centre-cropped when larger, nearest-resized when smaller.

    Shape:
        -> ``(1, 1, size, size)`` float32.
    """
    from invgen.operators.masks import load_mask

    m = load_mask(path)
    if min(m.shape[-2:]) >= size:
        return center_crop(m, size).contiguous()
    return torch.nn.functional.interpolate(m, size=(size, size), mode="nearest")


def sr_cells(sets: list[str], scales: list[int], limit: int, crop: int) -> list[dict[str, Any]]:
    """The SR cells: for each set and scale, the 8-bit Y ground truths (mod-cropped; centre-cropped to ``crop``
    first when ``crop > 0``) and one noiseless ``superres`` operator per image."""
    cells = []
    for name in sets:
        data = invgen.dataset(name)
        n = len(data) if not limit else min(limit, len(data))
        rgb = [data[i] for i in range(n)]
        for s in scales:
            items = []
            for i, x in enumerate(rgb):
                x = center_crop(x, crop) if crop else x
                truth = mod_crop(y_channel_8bit(x), s)
                op = invgen.operator("superres", scale=s, kernel="bicubic", noise=_noise(NOISE_STD["sr"]))
                items.append({"id": data.ids[i], "index": i, "truth": truth, "op": op})
            cells.append(
                {
                    "family": "sr",
                    "key": f"{name}-x{s}",
                    "title": f"{SET_TITLES[name]} x{s}",
                    "dataset": name,
                    "scale": s,
                    "shave": s,
                    "noise_std": NOISE_STD["sr"],
                    "items": items,
                }
            )
    return cells


def gray_images(sets: list[str], limit: int, crop: int) -> dict[str, tuple[list[str], list[Tensor]]]:
    """Centre crops of the gray test sets: ``{set: (ids, [(1, crop, crop)])}``."""
    out = {}
    for name in sets:
        data = invgen.dataset(name)
        n = len(data) if not limit else min(limit, len(data))
        out[name] = ([data.ids[i] for i in range(n)], [center_crop(data[i], crop).contiguous() for i in range(n)])
    return out


def inpaint_cells(
    images: dict[str, tuple[list[str], list[Tensor]]], masks: list[str], crop: int, root: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The inpainting cells (and the reasons of the ones left out, e.g. a missing mask file)."""
    cells, skipped = [], {}
    std = NOISE_STD["inpaint"]
    for kind in masks:
        fixed = None
        if kind in MASK_FILES:
            path = root / MASK_FILES[kind]
            if not path.is_file():
                skipped[kind] = f"mask file {path} not found"
                print(f"inpaint {kind}: skipped ({skipped[kind]})")
                continue
            fixed = fixed_mask(path, crop)
        for name, (ids, xs) in images.items():
            items = []
            for i, x in enumerate(xs):
                if fixed is not None:
                    op = invgen.operator("inpaint", mask=fixed, noise=_noise(std))
                else:
                    op = invgen.operator("inpaint", mask="freeform", seed=i, noise=_noise(std))
                missing = 1.0 - float(op.mask_for((1, *x.shape)).mean())
                items.append({"id": ids[i], "index": i, "truth": x, "op": op, "detail": {"missing": missing}})
            cells.append(
                {
                    "family": "inpaint",
                    "key": f"{name}-{kind}",
                    "title": f"{SET_TITLES[name]} {CELL_TITLES[kind]}",
                    "dataset": name,
                    "mask": kind,
                    "shave": 0,
                    "noise_std": std,
                    "items": items,
                }
            )
    return cells, skipped


def deblur_cells(
    images: dict[str, tuple[list[str], list[Tensor]]], kernels: list[str], root: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The deblurring cells (and the reasons of the ones left out: Levin09.mat missing, or h5py not installed)."""
    cells, skipped = [], {}
    std = NOISE_STD["deblur"]
    for kind in kernels:
        if kind == "levin":
            path = root / LEVIN_FILE
            try:
                from invgen.operators.kernels import load_kernel

                levin = [load_kernel(path, index=k) for k in range(8)]
            except (ImportError, FileNotFoundError) as exc:
                skipped[kind] = str(exc)
                print(f"deblur {kind}: skipped ({exc})")
                continue
        for name, (ids, xs) in images.items():
            items = []
            for i, x in enumerate(xs):
                if kind == "gaussian":
                    op = invgen.operator("blur", kernel="gaussian", sigma=1.6, size=25, noise=_noise(std))
                else:
                    op = invgen.operator("blur", kernel=levin[i % 8], noise=_noise(std))
                detail = {"kernel_index": i % 8} if kind == "levin" else {}
                items.append({"id": ids[i], "index": i, "truth": x, "op": op, "detail": detail})
            cells.append(
                {
                    "family": "deblur",
                    "key": f"{name}-{kind}",
                    "title": f"{SET_TITLES[name]} {CELL_TITLES[kind]}",
                    "dataset": name,
                    "kernel": kind,
                    "shave": 0,
                    "noise_std": std,
                    "items": items,
                }
            )
    return cells, skipped


# --- running one method on one image -----------------------------------------------------------------------------
def supports(method: str, op: Any) -> str | None:
    """None if ``method`` can run on ``op``, else the reason it cannot."""
    method = split_method(method)[0]
    if method in SVD_SOLVERS and not getattr(op, "has_svd", False):
        return f"{method} needs an operator with an SVD (has_svd); {op.name!r} has none"
    if method == "bicubic" and op.name != "superres":
        return "bicubic upsampling is a super-resolution baseline"
    return None


def run_method(
    method: str, prior: Any, op: Any, y: Tensor, *, samples: int, steps: int, seed: int
) -> tuple[Tensor, int, float]:
    """``(samples (N, 1, C, H, W), nfe, seconds)`` of one method on one observation ``y`` ``(1, ...)``."""
    if method == "bicubic":
        t0 = time.perf_counter()
        x = bicubic_upsample(y, op.scale)
        return x[None], 0, time.perf_counter() - t0
    name, options = split_method(method)
    if name in DIFFUSION_SOLVERS:
        post = invgen.solve(y, op, prior, solver=name, n_samples=samples, seed=seed, steps=steps, **options)
        return post.samples, post.nfe, post.seconds
    post = invgen.solve(y, op, solver=method, n_samples=1, seed=seed)  # deterministic baselines: one sample
    return post.samples, post.nfe, post.seconds


def score(samples: Tensor, truth: Tensor, border: int, use_lpips: bool) -> tuple[dict[str, float | None], Tensor]:
    """PSNR and SSIM of the 8-bit posterior mean and the mean LPIPS of the 8-bit samples (module docstring).

    Returns:
        ``(metrics, mean)`` with the unrounded posterior mean ``(C, H, W)``.
    """
    from invgen import metrics

    mean = samples.mean(dim=0)[0].to(torch.float32)
    out8, ref8 = shave(quantize(mean), border), shave(quantize(truth), border)
    res: dict[str, float | None] = {
        "psnr": psnr_shaved(out8, ref8),
        "ssim": float(metrics.ssim(out8[None], ref8[None], gaussian_weights=True, use_sample_covariance=False)[0]),
        "lpips": None,
    }
    if use_lpips:
        s8 = shave(quantize(samples[:, 0].to(torch.float32)), border)
        res["lpips"] = float(metrics.lpips(s8, ref8[None].expand_as(s8)).mean())
    return res, mean


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate_cell(
    cell: dict[str, Any],
    prior: Any,
    methods: list[str],
    *,
    samples: int,
    steps: int,
    seed: int,
    use_lpips: bool,
    device: torch.device,
    verbose: bool = True,
) -> dict[str, Any]:
    """Every method on every image of a cell.

    Returns:
        ``{"methods": {method: {"psnr", "ssim", "lpips", "seconds", "nfe" (means over the images), "per_image":
        {"ids", "psnr", ...}}}, "skipped": {method: reason}, "images": [{"id", ...details}], "figure": {"truth",
        "observation", "means": {method: (C, H, W)}}}`` (the figure holds the first image).
    """
    per: dict[str, dict[str, list]] = {}
    skipped: dict[str, str] = {}
    figure: dict[str, Any] = {"means": {}}
    for k, item in enumerate(cell["items"]):
        i, truth, op = item["index"], item["truth"], item["op"]
        x = truth[None].to(device)
        y = op.measure(x, generator=torch.Generator(device=device).manual_seed(seed + i))
        if k == 0:
            figure["truth"], figure["observation"] = truth, y[0].cpu()
        for method in methods:
            reason = supports(method, op)
            if reason is not None:
                if method not in skipped and verbose:
                    print(f"  {cell['key']}: {method} skipped ({reason})")
                skipped[method] = reason
                continue
            try:
                s, nfe, seconds = run_method(method, prior, op, y, samples=samples, steps=steps, seed=seed + i)
            except (TypeError, ValueError, NotImplementedError, RuntimeError) as exc:  # record it, go on
                skipped[method] = f"failed on {item['id']}: {type(exc).__name__}: {exc}"
                print(f"  {cell['key']} {item['id']}: {method} {skipped[method]}")
                continue
            m, mean = score(s.cpu(), truth, cell["shave"], use_lpips)
            rec = per.setdefault(method, {"ids": [], "psnr": [], "ssim": [], "lpips": [], "seconds": [], "nfe": []})
            for key, v in (("ids", item["id"]), *m.items(), ("seconds", seconds), ("nfe", nfe)):
                rec[key].append(v)
            if k == 0:
                figure["means"][method] = mean.cpu()
            if verbose:
                lp = "-" if m["lpips"] is None else f"{m['lpips']:.3f}"
                print(
                    f"  {cell['key']} {item['id']}: {method:9s} PSNR {m['psnr']:6.2f}  SSIM {m['ssim']:.4f}  "
                    f"LPIPS {lp}  {seconds:7.2f} s  NFE {nfe}",
                    flush=True,
                )
    out = {}
    for method, rec in per.items():
        out[method] = {
            "psnr": _mean(rec["psnr"]),
            "ssim": _mean(rec["ssim"]),
            "lpips": _mean(rec["lpips"]),
            "seconds": _mean(rec["seconds"]),
            "nfe": _mean(rec["nfe"]),
            "per_image": rec,
        }
    images = [{"id": it["id"], **it.get("detail", {})} for it in cell["items"]]
    return {"methods": out, "skipped": skipped, "images": images, "figure": figure}


# --- LR check against the MATLAB files ---------------------------------------------------------------------------
def check_sr_operator(root: Path, scales: list[int]) -> dict[str, Any]:
    """Our ``superres`` bicubic LR against Set5's MATLAB ``LR_bicubic`` files: PSNR between the Y channels (ours:
    the operator on the HR Y, unrounded; theirs: Y of the 8-bit LR RGB file) and the largest 8-bit difference of the
    RGB images (ours rounded per channel). Empty if the files are missing."""
    from invgen.data.sets import read_image

    folder = root / SR_LR_FOLDER
    hr_folder = root / "eval/Set5/HR"
    if not folder.is_dir() or not hr_folder.is_dir():
        return {}
    out = {}
    for s in scales:
        psnrs, max_diff = [], 0
        for hr_path in sorted(hr_folder.glob("*.png")):
            lr_path = folder / f"X{s}" / f"{hr_path.stem}x{s}.png"
            if not lr_path.is_file():
                continue
            hr = mod_crop(read_image(hr_path, channels=3).to(torch.float64), s)
            lr = read_image(lr_path, channels=3).to(torch.float64)
            op = invgen.operator("superres", scale=s, kernel="bicubic")
            ours = op(hr[None])[0]
            if ours.shape != lr.shape:
                continue
            psnrs.append(psnr_shaved(rgb_to_y(ours), rgb_to_y(lr)))
            max_diff = max(max_diff, int(((quantize(ours) - lr).abs() * 255).round().max()))
        if psnrs:
            out[f"x{s}"] = {"y_psnr": float(np.mean(psnrs)), "max_rgb_8bit_diff": max_diff, "images": len(psnrs)}
    return out


# --- speed ---------------------------------------------------------------------------------------------------------
def current_rss_mb() -> float:
    """Resident set size now (``/proc/self/statm``), MiB; nan where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size (``VmHWM``, Linux), else ``ru_maxrss``, MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:  # pragma: no cover
        return False


def release_memory() -> bool:
    """Give freed heap memory back to the OS (glibc ``malloc_trim(0)``, which also releases free pages inside the
    heap), so that the resident size before a call does not already hold the memory of earlier calls. False where
    glibc is missing (the peaks are then lower bounds)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False


@torch.no_grad()
def denoiser_speed(
    prior: Any,
    sizes: list[tuple[int, int]],
    device: torch.device,
    sigma: float = SPEED_SIGMA,
    seed: int = 0,
    untiled_max_pixels: int = 2**20,
) -> list[dict[str, Any]]:
    """Seconds per megapixel of one ``prior.denoise`` call per size (batch 1) and its memory.

    Time: the second of two calls at the size (the first one warms up). Memory: the peak resident set size during
    the first call above the resident size just before it, after :func:`release_memory` (``VmHWM`` reset through
    ``/proc/self/clear_refs``; ``peak_rss_reset`` False: it could not be reset, the figure is then the process' peak
    so far, an upper bound). A size the prior tiles (``prior.tile``) is measured both tiled and, up to
    ``untiled_max_pixels``, as one whole-image call (``tiled`` tells which)."""
    gen = torch.Generator().manual_seed(seed)
    c = getattr(getattr(prior, "net", None), "config", None)
    channels = getattr(c, "in_channels", 1)
    tile = getattr(prior, "tile", None)
    rows = []

    def measure(x: Tensor) -> dict[str, Any]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        released = release_memory()
        before = current_rss_mb()
        was_reset = reset_peak_rss()
        prior.denoise(x, sigma)
        peak = peak_rss_mb()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        prior.denoise(x, sigma)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        h, w = x.shape[-2:]
        row = {
            "size": [h, w],
            "tiled": bool(getattr(prior, "tile", None)) and max(h, w) > prior.tile,
            "seconds": seconds,
            "s_per_mp": seconds / (h * w / 1e6),
            "rss_before_mb": before,
            "peak_rss_above_mb": peak - before,
            "peak_rss_reset": was_reset,
            "memory_released": released,
        }
        if device.type == "cuda":
            row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        print(
            f"speed {h}x{w}{' tiled' if row['tiled'] else ''}: {seconds:.2f} s ({row['s_per_mp']:.2f} s/MP), "
            f"peak RSS +{row['peak_rss_above_mb']:.0f} MiB",
            flush=True,
        )
        return row

    prior.denoise(torch.full((1, channels, 64, 64), 0.5, device=device), sigma)  # one-time initialisation
    for h, w in sizes:
        x = (0.5 + 0.25 * torch.randn(1, channels, h, w, generator=gen)).clamp(0, 1).to(device)
        rows.append(measure(x))
        if tile and max(h, w) > tile and h * w <= untiled_max_pixels:
            try:
                prior.tile = None
                rows.append(measure(x))
            finally:
                prior.tile = tile
    return rows


# --- report ------------------------------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def family_table(family: str, cells: list[dict[str, Any]], results: dict[str, Any], methods: list[str]) -> list[str]:
    """One markdown table: rows = methods, per cell a 'PSNR / SSIM / LPIPS' column and a seconds column."""
    titles = {
        "sr": "Super-resolution (Y channel, noiseless)",
        "inpaint": "Inpainting (noise std 0.01)",
        "deblur": "Deblurring (noise std 0.01)",
    }
    head = "| method | NFE | " + " | ".join(f"{c['title']} PSNR / SSIM / LPIPS | s / img" for c in cells) + " |"
    lines = [f"## {titles[family]}", "", head, "|---|---|" + "---|---|" * len(cells)]
    present = [m for m in methods if any(m in results[c["key"]]["methods"] for c in cells)]
    for m in present:
        nfe = [results[c["key"]]["methods"][m]["nfe"] for c in cells if m in results[c["key"]]["methods"]]
        row = [m, _fmt(max(nfe), ".0f")]
        for c in cells:
            r = results[c["key"]]["methods"].get(m)
            if r is None:
                row += ["n/a", "-"]
            else:
                row += [
                    f"{_fmt(r['psnr'], '.2f')} / {_fmt(r['ssim'], '.4f')} / {_fmt(r['lpips'], '.3f')}",
                    _fmt(r["seconds"], ".2f"),
                ]
        lines.append("| " + " | ".join(row) + " |")
    if family == "sr":
        row = ["bicubic (published)", "-"]
        for c in cells:
            p = PUBLISHED_BICUBIC.get(c["dataset"], {}).get(c["scale"])
            row += [f"{p[0]:.2f} / {p[1]:.4f} / -" if p else "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    images = ", ".join(f"{c['title']}: {len(c['items'])}" for c in cells)
    lines += ["", f"Images per cell: {images}."]
    skipped = {m: r for c in cells for m, r in results[c["key"]]["skipped"].items()}
    for m, r in skipped.items():
        lines.append(f"Skipped: {m} ({r}).")
    if family == "sr":
        lines.append(
            "Published bicubic: Kim et al. 2016 (VDSR) Table 3 / Lim et al. 2017 (EDSR) Table 3 (MATLAB, Y channel, "
            "scale pixels shaved). Our Set14 files are the colour CSet14 set."
        )
    return lines


def render(payload: dict[str, Any], cells: list[dict[str, Any]], methods: list[str]) -> str:
    cfg = payload["config"]
    lines = [
        f"# Restoration with {payload['prior']}: PSNR / SSIM of the posterior mean, LPIPS of the samples",
        "",
        f"{cfg['steps']} steps, {cfg['samples']} samples, seed {cfg['seed']}, {cfg['threads']} torch thread(s) on "
        f"{cfg['device']}; seconds are solver wall time per image (bicubic/pinv/tikhonov/tv: one deterministic "
        "sample). Protocol: benchmarks/natural.py docstring.",
        "",
    ]
    for family in TASKS:
        fam_cells = [c for c in cells if c["family"] == family]
        if fam_cells:
            lines += [*family_table(family, fam_cells, payload["results"], methods), ""]
        for key, reason in payload["skipped_cells"].get(family, {}).items():
            lines.append(f"Cell {family}/{key} left out: {reason}.")
    check = payload.get("checks", {}).get("sr_lr_vs_matlab")
    if check:
        lines += ["## Check: our bicubic LR against Set5's MATLAB LR files", ""]
        for s, r in check.items():
            lines.append(
                f"- {s}: Y PSNR {r['y_psnr']:.2f} dB over {r['images']} images (8-bit rounding of the files alone: "
                f"about 63.7 dB); largest 8-bit RGB difference {r['max_rgb_8bit_diff']}"
            )
        lines.append("")
    if payload.get("speed"):
        lines += [
            "## Speed of one denoiser call (batch 1)",
            "",
            "| size | tiled | seconds | s / megapixel | peak RSS above pre-call RSS (MiB) |",
            "|---|---|---|---|---|",
        ]
        for r in payload["speed"]:
            note = "" if r["peak_rss_reset"] else " (peak not reset: upper bound)"
            lines.append(
                f"| {r['size'][0]}x{r['size'][1]} | {'yes' if r['tiled'] else 'no'} | {r['seconds']:.2f} | "
                f"{r['s_per_mp']:.2f} | {r['peak_rss_above_mb']:.0f}{note} |"
            )
        lines += [
            "",
            "Seconds: the second of two calls. Memory: the peak resident set size of the process during the first call "
            "(Linux VmHWM, reset through /proc/self/clear_refs) minus its resident size just before, after glibc's "
            "malloc_trim (so memory kept from earlier calls does not hide the call's own); CPU memory only.",
        ]
    return "\n".join(lines)


def save_figure(path: Path, cell: dict[str, Any], fig: dict[str, Any], results: dict[str, Any]) -> str | None:
    """Truth / observation / best baseline / best diffusion solver mean of a cell's first image, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    means = fig["means"]
    base = [m for m in means if split_method(m)[0] not in DIFFUSION_SOLVERS]
    diff = [m for m in means if split_method(m)[0] in DIFFUSION_SOLVERS]
    if "truth" not in fig:
        return None
    best_base = max(base, key=lambda m: methods[m]["psnr"]) if base else None
    best_diff = max(diff, key=lambda m: methods[m]["psnr"]) if diff else None
    obs = fig["observation"]
    if cell["family"] == "sr":
        obs = obs.repeat_interleave(cell["scale"], -2).repeat_interleave(cell["scale"], -1)
    panels = [("truth", fig["truth"]), ("observation", obs)]
    for m in (best_base, best_diff):
        if m is not None:
            p = methods[m]["per_image"]["psnr"][0]
            panels.append((f"{m} mean ({p:.2f} dB)", means[m]))
    f, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    f.suptitle(f"{cell['title']} ({cell['items'][0]['id']})", fontsize=10)
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)
    return path.name


class ClippedDenoiser:
    """A prior whose ``denoise`` output is clamped to the image range [0, 1] (the "clip denoised" practice of DDPM
    codebases); everything else is delegated. Only with ``--clip-denoised``: it changes what DDRM, DDNM and DiffPIR
    see, so the default tables measure the prior as it is."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = f"{getattr(inner, 'name', 'prior')}+clip"

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self._inner.denoise(x, sigma).clamp(0.0, 1.0)


def load_prior(args: argparse.Namespace, device: torch.device) -> Any:
    if args.prior_path:
        from invgen_plugins.diffusion.model import DiffusionPrior

        prior = DiffusionPrior.from_pretrained(args.prior_path, device=device)
    else:
        prior = invgen.prior(args.prior)
        prior = prior.to(device) if hasattr(prior, "to") else prior
    if args.tile is not None and hasattr(prior, "tile"):
        prior.tile = args.tile or None  # 0: whole images in one call
    return prior


def _csv(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"{what}: unknown {bad}; expected some of {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prior", help="a registered prior with the denoiser capability")
    src.add_argument("--prior-path", help="a prior folder (config.json + model.safetensors) for DiffusionPrior")
    p.add_argument("--tasks", default="sr,inpaint,deblur", help="some of sr, inpaint, deblur")
    p.add_argument("--solvers", default="ddrm,ddnm,diffpir,pigdm", help="diffusion solvers (dps: see --dps)")
    p.add_argument("--dps", action="store_true", help="also run DPS (backpropagates through the network)")
    p.add_argument("--no-baselines", action="store_true", help="diffusion solvers only")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="a solver with options, as another method: SOLVER:KEY=VALUE[,KEY=VALUE], e.g. diffpir:lam=28",
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=2, help="posterior samples per image")
    p.add_argument("--images", type=int, default=0, help="first N images of each set (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sr-sets", default="set5,set14")
    p.add_argument("--scales", default=",".join(map(str, SR_SCALES)))
    p.add_argument("--sr-crop", type=int, default=0, help="centre-crop SR images to this size first (0: whole)")
    p.add_argument("--gray-sets", default="bsd68", help="sets of the inpainting and deblurring cells (bsd68, set12)")
    p.add_argument("--crop", type=int, default=256, help="centre crop of the inpainting and deblurring images")
    p.add_argument("--masks", default="ddnm,freeform,text")
    p.add_argument("--kernels", default="gaussian,levin")
    p.add_argument(
        "--clip-denoised", action="store_true", help="clamp the prior's denoiser output to [0, 1] (ClippedDenoiser)"
    )
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (it needs INVGEN_LPIPS_WEIGHTS offline)")
    p.add_argument("--no-speed", action="store_true", help="skip the denoiser speed section")
    p.add_argument(
        "--tile", type=int, default=None, help="tile size of the prior's network calls (0: none; default: the prior's)"
    )
    p.add_argument(
        "--speed-sizes", default=",".join(f"{h}x{w}" for h, w in SPEED_SIZES), help="HxW sizes of the speed section"
    )
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default=None, help="folder for results.json, results.md and the figures")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tasks = _csv(args.tasks, TASKS, "--tasks")
    solvers = _csv(args.solvers, DIFFUSION_SOLVERS, "--solvers")
    if args.dps and "dps" not in solvers:
        solvers.append("dps")
    solvers += [parse_variant(v) for v in args.variant]
    from invgen.data.datasets import data_root

    root = data_root(None) if tasks else None
    base_prior = load_prior(args, device)
    prior = ClippedDenoiser(base_prior) if args.clip_denoised else base_prior
    name = getattr(prior, "name", "prior")
    print(f"prior {name}; steps {args.steps}, samples {args.samples}, threads {torch.get_num_threads()}", flush=True)

    cells: list[dict[str, Any]] = []
    skipped_cells: dict[str, dict[str, str]] = {}
    if "sr" in tasks:
        scales = [int(s) for s in args.scales.split(",")]
        cells += sr_cells(_csv(args.sr_sets, SR_SETS, "--sr-sets"), scales, args.images, args.sr_crop)
    if "inpaint" in tasks or "deblur" in tasks:
        images = gray_images(_csv(args.gray_sets, ("bsd68", "set12"), "--gray-sets"), args.images, args.crop)
        if "inpaint" in tasks:
            c, skipped_cells["inpaint"] = inpaint_cells(
                images, _csv(args.masks, INPAINT_MASKS, "--masks"), args.crop, root
            )
            cells += c
        if "deblur" in tasks:
            c, skipped_cells["deblur"] = deblur_cells(images, _csv(args.kernels, DEBLUR_KERNELS, "--kernels"), root)
            cells += c

    results: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    methods_all: list[str] = []
    for cell in cells:
        base = [] if args.no_baselines else list(SR_BASELINES if cell["family"] == "sr" else GRAY_BASELINES)
        methods = base + solvers
        methods_all += [m for m in methods if m not in methods_all]
        print(f"{cell['family']} {cell['key']}: {len(cell['items'])} images, {', '.join(methods)}", flush=True)
        res = evaluate_cell(
            cell,
            prior,
            methods,
            samples=args.samples,
            steps=args.steps,
            seed=args.seed,
            use_lpips=not args.no_lpips,
            device=device,
        )
        figures[cell["key"]] = res.pop("figure")
        results[cell["key"]] = {
            "family": cell["family"],
            "dataset": cell["dataset"],
            "noise_std": cell["noise_std"],
            "shave": cell["shave"],
            **{k: cell[k] for k in ("scale", "mask", "kernel") if k in cell},
            **res,
        }
        if cell["family"] == "sr":
            results[cell["key"]]["published_bicubic"] = PUBLISHED_BICUBIC.get(cell["dataset"], {}).get(cell["scale"])

    checks = {}
    if "sr" in tasks:
        checks["sr_lr_vs_matlab"] = check_sr_operator(root, [int(s) for s in args.scales.split(",")])
    speed = []
    if not args.no_speed:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.speed_sizes.split(",") if s]
        if getattr(base_prior, "tile", None):
            sizes.append(SPEED_TILED)
        speed = denoiser_speed(base_prior, sizes, device)

    payload = {
        "prior": name,
        "prior_path": args.prior_path,
        "config": {
            "steps": args.steps,
            "samples": args.samples,
            "seed": args.seed,
            "images": args.images,
            "solvers": solvers,
            "tasks": tasks,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "sr_crop": args.sr_crop,
            "crop": args.crop,
            "tile": getattr(base_prior, "tile", None),
            "lpips": not args.no_lpips,
            "clip_denoised": args.clip_denoised,
            "torch": torch.__version__,
            "invgen": invgen.__version__,
        },
        "results": results,
        "skipped_cells": skipped_cells,
        "checks": checks,
        "speed": speed,
    }
    text = render(payload, cells, methods_all)
    print(text)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        figs = {}
        if not args.no_figures:
            for family in TASKS:
                first = next((c for c in cells if c["family"] == family), None)
                if first is not None:
                    saved = save_figure(folder / f"{family}.png", first, figures[first["key"]], results[first["key"]])
                    if saved:
                        figs[family] = saved
        payload["figures"] = figs
        if figs:
            text += "\n\n## Figures\n\n" + "\n".join(f"![{f}]({n})" for f, n in figs.items())
        (folder / "results.md").write_text(text + "\n")
        (folder / "results.json").write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
