"""The guided-diffusion (ADM) UNet of Dhariwal & Nichol (2021) and its configurations (conversion: :mod:`.adm_convert`).

OpenAI's guided-diffusion checkpoints (``256x256_diffusion_uncond.pt``, the ``ffhq_10m.pt`` of the DPS paper, ...) are
plain ``torch.save`` state dicts of its ``unet.py`` ``UNetModel``. This file holds, written for invgen:

* :class:`ADMUNet`: that architecture, with exactly guided-diffusion's ``state_dict()`` keys and shapes
  (``time_embed.0.weight``, ``input_blocks.N.0.in_layers.0.weight``, ``middle_block.1.qkv.weight``, ``out.2.bias``,
  ``label_emb.weight``, ...), built from a config (:data:`ADM_CONFIGS` or a JSON file, see :func:`resolve_config`);
* ``adm_convert.convert_adm``: the checkpoint, read with ``torch.load(weights_only=True)`` only and checked key by key
  (:func:`check_state_dict`), written as ``model.safetensors`` + ``config.json`` (architecture, schedule,
  parametrization, source file and SHA-256 of both files);
* ``adm_convert.load_adm``: the converted folder, checksum verified, as an eval-mode network: never unpickles anything;
* ``adm_convert.ADMConverter``: the ``invgen convert adm CHECKPOINT --config NAME --out DIR`` command.

Conventions of the network (those of guided-diffusion): input ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` on the
[-1, 1] data scale, integer training timesteps ``t = 0 .. T - 1`` (any real ``t`` is accepted: the sinusoidal
embedding is continuous), output epsilon, followed by ``C`` variance channels when ``learn_sigma`` (dropped by
invgen: denoising uses the epsilon half).

Example:
    >>> from invgen_plugins.diffusion.adm_convert import convert_adm, load_adm  # doctest: +SKIP
    >>> convert_adm("ffhq_10m.pt", "ffhq-adm", config="ffhq256")  # doctest: +SKIP
    >>> net, config = load_adm("ffhq-adm", device="cuda", dtype=torch.float16)  # doctest: +SKIP
    >>> eps = net(x_t, torch.full((4,), 500.0, device="cuda"))[:, :3]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invgen.errors import ShapeError
from invgen.priors.vp import alphas_cumprod_from_config

FAMILY = "adm"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
LEARNED_VARIANCE_USE = "dropped: denoise uses the epsilon half"

# -- configs -----------------------------------------------------------------------------------------------------------
# Architecture keys and their defaults: guided-diffusion's script flags and model_and_diffusion_defaults(), so a config
# copied from the flags a checkpoint was trained with needs only the flags that were passed.
ARCH_DEFAULTS: dict[str, Any] = {
    "image_size": None,  # required
    "in_channels": 3,
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": None,  # None or "": guided-diffusion's default for the image size
    "attention_resolutions": [16, 8],  # resolutions r (guided-diffusion turns r into the downsample factor size // r)
    "num_heads": 4,
    "num_head_channels": -1,  # -1: num_heads heads; else heads of this many channels (num_heads is then unused)
    "num_heads_upsample": -1,  # -1: num_heads (the decoder's heads when num_head_channels is -1)
    "learn_sigma": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "conv_resample": True,
    "class_cond": False,
    "num_classes": None,  # 1000 when class_cond
    "dropout": 0.0,
}
LINEAR_SCHEDULE: dict[str, Any] = {
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "num_train_timesteps": 1000,
}
COSINE_SCHEDULE: dict[str, Any] = {"beta_schedule": "cosine", "num_train_timesteps": 1000}
OTHER_DEFAULTS: dict[str, Any] = {"schedule": LINEAR_SCHEDULE, "parametrization": "eps", "data_range": [-1.0, 1.0]}
IGNORED_FLAGS = ("use_fp16", "use_checkpoint")  # guided-diffusion flags without effect on keys or outputs
DEFAULT_CHANNEL_MULT = {512: [0.5, 1, 1, 2, 2, 4, 4], 256: [1, 1, 2, 2, 4, 4], 128: [1, 1, 2, 3, 4], 64: [1, 2, 3, 4]}

_IMAGENET = {
    "num_channels": 256,
    "num_res_blocks": 2,
    "attention_resolutions": [32, 16, 8],
    "learn_sigma": True,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}
ADM_CONFIGS: dict[str, dict[str, Any]] = {
    # DPS (Chung et al., 2023) ffhq_10m.pt
    "ffhq256": {
        "image_size": 256,
        "num_channels": 128,
        "num_res_blocks": 1,
        "channel_mult": [1, 1, 2, 2, 4, 4],
        "attention_resolutions": [16],
        "num_heads": 4,
        "num_head_channels": 64,
        "learn_sigma": True,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
        "use_new_attention_order": False,
        "class_cond": False,
        "dropout": 0.0,
        "schedule": LINEAR_SCHEDULE,
    },
    # guided-diffusion's README: 256x256_diffusion_uncond.pt, 256x256_diffusion.pt, 128x128_diffusion.pt, 64x64_...
    "imagenet256-uncond": {"image_size": 256, **_IMAGENET, "num_head_channels": 64, "schedule": LINEAR_SCHEDULE},
    "imagenet256-cond": {
        "image_size": 256,
        **_IMAGENET,
        "num_head_channels": 64,
        "class_cond": True,
        "num_classes": 1000,
        "schedule": LINEAR_SCHEDULE,
    },
    "imagenet128-cond": {
        "image_size": 128,
        **_IMAGENET,
        "num_heads": 4,
        "class_cond": True,
        "num_classes": 1000,
        "schedule": LINEAR_SCHEDULE,
    },
    "imagenet64-cond": {
        "image_size": 64,
        **_IMAGENET,
        "num_channels": 192,
        "num_res_blocks": 3,
        "num_head_channels": 64,
        "use_new_attention_order": True,
        "class_cond": True,
        "num_classes": 1000,
        "dropout": 0.1,
        "schedule": COSINE_SCHEDULE,
    },
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_list(text: Any, key: str, bad: Any) -> list[Any]:
    """A guided-diffusion comma string (``"32,16,8"``), a number or a list, as a list of numbers."""
    if isinstance(text, str):
        try:
            return [float(p) if "." in p else int(p) for p in text.replace(" ", "").split(",") if p]
        except ValueError:
            bad(key, "comma-separated numbers", text)
    if _number(text):
        return [text]
    if isinstance(text, (list, tuple)) and all(_number(v) for v in text):
        return list(text)
    bad(key, "a list of numbers or a comma string", text)
    return []


def _load_named(config: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The raw dict of a name, a JSON file or a dict, and how to call it in messages."""
    if isinstance(config, Mapping):
        raw = dict(config)
        return raw, str(raw.get("name") or "custom")
    if isinstance(config, str) and config in ADM_CONFIGS:
        return {**ADM_CONFIGS[config], "name": config}, config
    path = Path(config)
    if not path.is_file():
        looks_like_file = path.suffix == ".json" or os.sep in str(config)
        what = f"no such file {str(path)!r}" if looks_like_file else f"unknown ADM config name {str(config)!r}"
        raise ValueError(f"{what}: expected one of {', '.join(ADM_CONFIGS)} or a JSON file of the architecture")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"ADM config {path}: not a JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"ADM config {path}: expected a JSON object, got a JSON {type(raw).__name__}")
    return raw, path.name


def resolve_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The complete, validated ADM config of a name, a JSON file or a dict.

    Missing keys take guided-diffusion's defaults (``model_and_diffusion_defaults()``, ``channel_mult`` from the image
    size), so a config needs only the flags a checkpoint was trained with. ``attention_resolutions`` are resolutions
    (``[32, 16, 8]`` or guided-diffusion's ``"32,16,8"``), each of which the network must reach. guided-diffusion's
    ``diffusion_steps`` / ``noise_schedule`` flags are accepted in place of ``schedule``; ``use_fp16`` and
    ``use_checkpoint`` are ignored. A ``config.json`` written by :func:`convert_adm` is accepted too.

    Args:
        config: a name of :data:`ADM_CONFIGS`, the path of a JSON file, or a dict.

    Returns:
        ``{"name", <the architecture keys of ARCH_DEFAULTS>, "schedule", "parametrization", "data_range"}`` with lists
        for ``channel_mult`` and ``attention_resolutions`` (descending) and ``num_classes`` set iff ``class_cond``.

    Raises:
        ValueError: an unknown name (the message lists the known ones), a missing or broken file, or a bad key
            (the message names the key, what was expected and what came).
    """
    raw, label = _load_named(config)
    where = f"ADM config {label!r}"

    def bad(key: str, expected: str, got: Any) -> NoReturn:
        raise ValueError(f"{where}: key {key!r}: expected {expected}, got {got!r}")

    if raw.get("family") == FAMILY and isinstance(raw.get("net"), dict):  # a converted folder's config.json
        raw = {"name": raw.get("name"), **raw["net"], **{k: raw[k] for k in OTHER_DEFAULTS if k in raw}}
    raw.pop("name", None)
    for flag in IGNORED_FLAGS:
        raw.pop(flag, None)
    steps, noise = raw.pop("diffusion_steps", None), raw.pop("noise_schedule", None)
    if steps is not None or noise is not None:
        if "schedule" in raw:
            bad("schedule", "either 'schedule' or guided-diffusion's diffusion_steps/noise_schedule", raw["schedule"])
        raw["schedule"] = {"beta_schedule": noise or "linear", "num_train_timesteps": 1000 if steps is None else steps}
    unknown = [k for k in raw if k not in ARCH_DEFAULTS and k not in OTHER_DEFAULTS]
    if unknown:
        known = ", ".join([*ARCH_DEFAULTS, *OTHER_DEFAULTS])
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known keys: {known})")
    cfg: dict[str, Any] = {"name": label, **ARCH_DEFAULTS, **OTHER_DEFAULTS, **raw}

    size = cfg["image_size"]
    if not (_int(size) and size >= 1):
        bad("image_size", "an integer >= 1 (the training resolution)", size)
    for key in ("in_channels", "num_channels", "num_res_blocks", "num_heads"):
        if not (_int(cfg[key]) and cfg[key] >= 1):
            bad(key, "an integer >= 1", cfg[key])
    for key in ("num_head_channels", "num_heads_upsample"):
        if not (_int(cfg[key]) and (cfg[key] == -1 or cfg[key] >= 1)):
            bad(key, "-1 or an integer >= 1", cfg[key])
    for key in ("learn_sigma", "use_scale_shift_norm", "resblock_updown", "use_new_attention_order", "conv_resample"):
        if not isinstance(cfg[key], bool):
            bad(key, "true or false", cfg[key])
    if not (_number(cfg["dropout"]) and 0 <= cfg["dropout"] < 1):
        bad("dropout", "a number in [0, 1)", cfg["dropout"])
    if not isinstance(cfg["class_cond"], bool):
        bad("class_cond", "true or false", cfg["class_cond"])
    if cfg["num_classes"] is not None and not (_int(cfg["num_classes"]) and cfg["num_classes"] >= 1):
        bad("num_classes", "null or an integer >= 1", cfg["num_classes"])
    if cfg["num_classes"] is not None and "class_cond" not in raw:
        cfg["class_cond"] = True
    if cfg["class_cond"] and cfg["num_classes"] is None:
        cfg["num_classes"] = 1000  # guided-diffusion's NUM_CLASSES
    if not cfg["class_cond"] and cfg["num_classes"] is not None:
        bad("num_classes", "null for an unconditional model (class_cond false)", cfg["num_classes"])

    mult = cfg["channel_mult"]
    if mult is None or mult == "":
        if size not in DEFAULT_CHANNEL_MULT:
            bad(
                "channel_mult",
                f"a list (no default for image_size {size}; defaults exist for {[*DEFAULT_CHANNEL_MULT]})",
                mult,
            )
        mult = DEFAULT_CHANNEL_MULT[size]
    mult = _int_list(mult, "channel_mult", bad)
    if not mult or not all(m > 0 for m in mult):
        bad("channel_mult", "a non-empty list of positive numbers", cfg["channel_mult"])
    cfg["channel_mult"] = [int(m) if float(m).is_integer() else float(m) for m in mult]
    levels = len(mult)
    if size % 2 ** (levels - 1):
        bad("image_size", f"a multiple of 2^{levels - 1} (channel_mult has {levels} levels)", size)
    widths = [int(m * cfg["num_channels"]) for m in mult]
    if any(w < 32 or w % 32 for w in widths):
        bad(
            "num_channels",
            f"channels per level (num_channels x channel_mult = {widths}) that are multiples of 32 (GroupNorm(32))",
            cfg["num_channels"],
        )

    res = _int_list(cfg["attention_resolutions"], "attention_resolutions", bad)
    reached = [size // 2**k for k in range(levels)]
    if not all(_int(r) and r in reached for r in res):
        bad("attention_resolutions", f"resolutions the network reaches ({reached})", cfg["attention_resolutions"])
    cfg["attention_resolutions"] = sorted(set(res), reverse=True)
    attended = {widths[reached.index(r)] for r in res} | {widths[-1]}  # the middle block always attends
    heads_up = cfg["num_heads_upsample"] if cfg["num_heads_upsample"] != -1 else cfg["num_heads"]
    for c in sorted(attended):
        if cfg["num_head_channels"] != -1 and c % cfg["num_head_channels"]:
            bad("num_head_channels", f"a divisor of every attended width {sorted(attended)}", cfg["num_head_channels"])
        if cfg["num_head_channels"] == -1 and (c % cfg["num_heads"] or c % heads_up):
            bad(
                "num_heads",
                f"heads (and num_heads_upsample) dividing every attended width {sorted(attended)}",
                [cfg["num_heads"], cfg["num_heads_upsample"]],
            )

    cfg["schedule"] = _schedule(cfg["schedule"], bad)
    if cfg["parametrization"] != "eps":
        bad("parametrization", "'eps' (guided-diffusion networks predict epsilon)", cfg["parametrization"])
    rng = cfg["data_range"]
    if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(map(_number, rng)) and rng[0] < rng[1]):
        bad("data_range", "[low, high] with low < high (guided-diffusion: [-1, 1])", rng)
    cfg["data_range"] = [float(rng[0]), float(rng[1])]
    return cfg


def _schedule(schedule: Any, bad: Any) -> dict[str, Any]:
    """The validated schedule dict; linear betas default to guided-diffusion's ``1e-4, 0.02`` scaled by 1000 / T."""
    if not isinstance(schedule, Mapping):
        bad("schedule", '{"beta_schedule": "linear" or "cosine", "num_train_timesteps": T, ...}', schedule)
    s = dict(schedule)
    kind, steps = s.get("beta_schedule", "linear"), s.get("num_train_timesteps", 1000)
    if kind not in ("linear", "cosine"):
        bad("schedule", "beta_schedule 'linear' or 'cosine'", kind)
    if not (_int(steps) and steps >= 2):
        bad("schedule", "num_train_timesteps an integer >= 2", steps)
    known = ("beta_schedule", "num_train_timesteps") + (("beta_start", "beta_end") if kind == "linear" else ())
    extra = [k for k in s if k not in known]
    if extra:
        bad("schedule", f"only the keys {list(known)} for a {kind} schedule", extra[0])
    if kind == "cosine":
        return {"beta_schedule": "cosine", "num_train_timesteps": steps}
    start = s.get("beta_start", 1000 / steps * 1e-4)
    end = s.get("beta_end", 1000 / steps * 0.02)
    if not (_number(start) and _number(end) and 0 < start < end < 1):
        bad("schedule", "0 < beta_start < beta_end < 1", [start, end])
    return {"beta_schedule": "linear", "beta_start": start, "beta_end": end, "num_train_timesteps": steps}


def alphas_cumprod(schedule: Mapping[str, Any]) -> Tensor:
    """``abar_t`` of an ADM schedule (a resolved config's ``schedule``: linear or cosine), in float64 as
    guided-diffusion computes it. Shape: ``(num_train_timesteps,)``."""
    return alphas_cumprod_from_config(dict(schedule), dtype=torch.float64)


# -- the network -------------------------------------------------------------------------------------------------------
def _wide(dtype: torch.dtype) -> torch.dtype:
    """At least float32 (float64 stays float64): where guided-diffusion computes in float32 for float16 networks."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in at least float32 and returned in the input's dtype (guided-diffusion's GroupNorm32)."""

    def forward(self, x: Tensor) -> Tensor:
        wide = _wide(x.dtype)
        w, b = self.weight.to(wide), self.bias.to(wide)
        return F.group_norm(x.to(wide), self.num_groups, w, b, self.eps).to(x.dtype)


def timestep_embedding(t: Tensor, dim: int, dtype: torch.dtype = torch.float32, max_period: float = 10000.0) -> Tensor:
    """guided-diffusion's sinusoidal embedding ``[cos(t f_k), sin(t f_k)]``, ``f_k = max_period^(-k / (dim // 2))``,
    of real (not only integer) timesteps, computed in ``dtype``.

    Shape:
        t: ``(B,)``; output: ``(B, dim)`` (a zero column appended when ``dim`` is odd).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _resample(x: Tensor, how: str) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest") if how == "up" else F.avg_pool2d(x, 2, 2)


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding: ``in_layers`` (norm, SiLU, [resample], conv), ``emb_layers``
    (a bias, or a FiLM scale and shift of the second norm), ``out_layers`` (norm, SiLU, dropout, conv), and a 1x1
    ``skip_connection`` when the width changes. Shape: ``(B, cin, H, W)`` -> ``(B, cout, H', W')``."""

    def __init__(
        self, cin: int, emb: int, dropout: float, cout: int, scale_shift: bool, resample: str | None = None
    ) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(32, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.resample = resample  # "up", "down" or None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout if scale_shift else cout))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, cout), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.scale_shift = scale_shift

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.resample:
            h = self.in_layers[1](self.in_layers[0](x))
            h, x = _resample(h, self.resample), _resample(x, self.resample)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions: ``norm``, a 1x1 ``qkv`` projection, heads, ``proj_out``, residual.

    ``new_order`` False is guided-diffusion's ``QKVAttentionLegacy`` (the channels are split into heads first, then
    each head into q, k, v); True is ``QKVAttention`` (q, k, v first, then heads). Shape: ``(B, C, H, W)`` -> same.
    """

    def __init__(self, channels: int, heads: int, head_channels: int, new_order: bool) -> None:
        super().__init__()
        self.heads = heads if head_channels == -1 else channels // head_channels
        self.new_order = new_order
        self.norm = GroupNorm32(32, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        n, ch = height * width, c // self.heads
        if self.new_order:
            q, k, v = (z.reshape(b * self.heads, ch, n) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * ch, n).split(ch, dim=1)
        scale = ch**-0.25  # on q and k both, as guided-diffusion (steadier in float16 than dividing afterwards)
        w = torch.bmm((q * scale).transpose(1, 2), k * scale)  # (B heads, n, n)
        w = torch.softmax(w.to(_wide(w.dtype)), dim=-1).to(w.dtype)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, n)
        return (x + self.proj_out(h)).reshape(b, c, height, width)


class Downsample(nn.Module):
    """Halve the resolution: a stride-2 3x3 conv ``op`` (or 2x2 average pooling). Shape: ``(B, C, H, W)`` -> half."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest), then a 3x3 ``conv`` if any. Shape: ``(B, C, H, W)`` -> double."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class EmbedSequential(nn.Sequential):
    """A sequence of layers; residual blocks also get the embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (the ADM architecture), with its exact ``state_dict()`` keys and shapes.

    The encoder has ``num_res_blocks`` residual blocks per level of ``channel_mult`` (with attention at the
    ``attention_resolutions``) and a downsampling between levels (a residual block with ``resblock_updown``, else a
    strided conv); the middle block is residual, attention, residual; the decoder mirrors the encoder with one more
    block per level, each taking the matching encoder output concatenated. GroupNorm(32) runs in at least float32, so
    the network may be cast to float16 or bfloat16. Dropout acts in train mode only.

    Args:
        config: a name of :data:`ADM_CONFIGS`, a JSON file or a dict (:func:`resolve_config`).

    Attributes:
        config: the resolved config.
        in_channels: C.
        out_channels: C, or 2 C with ``learn_sigma`` (epsilon, then the variance interpolation ``v``).

    Shape:
        x: ``(B, C, H, W)`` with H, W multiples of ``2^(len(channel_mult) - 1)``; timesteps: ``(B,)`` or a scalar;
        y: ``(B,)`` class indices (class-conditional models only); output: ``(B, out_channels, H, W)``.

    Example:
        >>> with torch.device("meta"):  # the architecture without allocating weights
        ...     net = ADMUNet("ffhq256")
        >>> sum(p.numel() for p in net.parameters())
        93563910
    """

    def __init__(self, config: str | os.PathLike | Mapping[str, Any]) -> None:
        super().__init__()
        cfg = self.config = resolve_config(config)
        mc, mult, nrb = cfg["num_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
        emb = 4 * mc
        self.model_channels = mc
        self.in_channels = cfg["in_channels"]
        self.out_channels = self.in_channels * (2 if cfg["learn_sigma"] else 1)
        self.num_classes = cfg["num_classes"]
        self.levels = len(mult)
        attend = {cfg["image_size"] // r for r in cfg["attention_resolutions"]}  # downsample factors
        heads_up = cfg["num_heads_upsample"] if cfg["num_heads_upsample"] != -1 else cfg["num_heads"]

        def res(cin: int, cout: int, resample: str | None = None) -> ResBlock:
            return ResBlock(cin, emb, cfg["dropout"], cout, cfg["use_scale_shift_norm"], resample)

        def attn(c: int, heads: int) -> AttentionBlock:
            return AttentionBlock(c, heads, cfg["num_head_channels"], cfg["use_new_attention_order"])

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb)

        ch = first = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(self.in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers: list[nn.Module] = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attend:
                    layers.append(attn(ch, cfg["num_heads"]))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level < len(mult) - 1:
                down = res(ch, ch, "down") if cfg["resblock_updown"] else Downsample(ch, cfg["conv_resample"])
                self.input_blocks.append(EmbedSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, cfg["num_heads"]), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb + 1):
                layers = [res(ch + skips.pop(), int(m * mc))]
                ch = int(m * mc)
                if ds in attend:
                    layers.append(attn(ch, heads_up))
                if level and i == nrb:
                    layers.append(res(ch, ch, "up") if cfg["resblock_updown"] else Upsample(ch, cfg["conv_resample"]))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(first, self.out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The network's output (epsilon, then the variance channels with ``learn_sigma``) at ``x_t``.

        Args:
            x: the noisy state on the [-1, 1] data scale; computed in the network's dtype, returned in ``x``'s.
            timesteps: the diffusion timesteps, real-valued (``10.5`` is fine), one per image or one for all.
            y: class indices, required by class-conditional networks and refused by the others.

        Shape:
            x: ``(B, C, H, W)``; timesteps: ``(B,)`` or ``()``; y: ``(B,)``; output: ``(B, out_channels, H, W)``.
        """
        step = 2 ** (self.levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % step or x.shape[3] % step:
            raise ShapeError(
                f"ADMUNet: x: expected (B, {self.in_channels}, H, W) with H and W multiples of {step}, got "
                f"{tuple(x.shape)}"
            )
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ShapeError(f"ADMUNet: timesteps: expected shape ({x.shape[0]},) or (), got {tuple(t.shape)}")
        if (y is None) != (self.num_classes is None):
            need = f"class indices y of shape ({x.shape[0]},)" if self.num_classes else "y=None (unconditional)"
            raise ValueError(f"ADMUNet: this network needs {need}, got {'None' if y is None else 'y'}")
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels, _wide(dtype)).to(dtype))
        if y is not None:
            if y.shape != (x.shape[0],) or y.is_floating_point():
                raise ShapeError(f"ADMUNet: y: expected integer class indices of shape ({x.shape[0]},), got {y}")
            emb = emb + self.label_emb(y)
        h, skips = x.to(dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)


def _meta_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ADMUNet(cfg).state_dict().items()}


def parameter_count(config: str | os.PathLike | Mapping[str, Any]) -> int:
    """The number of parameters of the network of ``config``, without allocating its weights."""
    return sum(math.prod(s) for s in _meta_shapes(resolve_config(config)).values())
