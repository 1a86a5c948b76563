"""LPIPS (Zhang et al., 2018): learned perceptual distance, AlexNet trunk, version 0.1, from the ``lpips`` package.

Where the weights come from (nothing is downloaded for the default ``net="alex"``):

- the linear layers (``lin0`` ... ``lin4``) are the ``lpips`` package's own files, which it loads itself;
- the AlexNet trunk is the safetensors file named by the environment variable ``INVGEN_LPIPS_WEIGHTS`` when it is
  set (keys of torchvision's ``alexnet().features``: ``0.weight`` ... ``10.bias``), else the copy shipped with
  invgen, ``invgen/metrics/weights/lpips-alexnet/features.safetensors`` (torchvision's ImageNet AlexNet in float16,
  4.9 MB, loaded back to float32; its origin, licences and checks are in the ``SOURCE.txt`` beside it). The shipped
  copy gives the published distances 0.722 and 0.138 on the LPIPS reference images (0.72188 / 0.13755, against
  0.72186 / 0.13755 with the float32 file).
- ``net="vgg"`` and ``net="squeeze"`` take the ``lpips`` package's usual path: torchvision's ImageNet weights,
  downloaded into the torch hub cache on first use.

Models are built once per (net, device, weights file) and cached, in eval mode and with frozen parameters.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.checks import check_image, check_range
from invgen.errors import ShapeError, UnknownNameError, WeightsError
from invgen.metrics.psnr import check_pair

WEIGHTS_ENV = "INVGEN_LPIPS_WEIGHTS"
# the AlexNet trunk shipped in the package (float16; SOURCE.txt beside it); INVGEN_LPIPS_WEIGHTS overrides it
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "lpips-alexnet" / "features.safetensors"
MIN_SIZE = 32
NETS = ("alex", "vgg", "squeeze")

_CACHE: dict[tuple[str, str, str | None], torch.nn.Module] = {}
_LOCK = threading.Lock()


class LPIPSWeightsError(WeightsError, RuntimeError):
    """The backbone weights file does not match the network (missing, unexpected or misshapen tensors)."""


def _load_backbone(model: torch.nn.Module, path: str) -> None:
    """Copy the tensors of a safetensors file with torchvision ``features`` keys into ``model.net``'s slices.

    lpips splits ``alexnet().features`` into ``slice1`` ... ``slice5`` whose modules keep the torchvision indices as
    names, so ``net.slice2.3.weight`` is ``features.3.weight``. Every parameter of the trunk must be in the file,
    with its shape, and the file must hold nothing else.
    """
    from invgen.train.verify import CONFIG, SHA_KEY, read_config, read_tensors

    if not os.path.isfile(path):
        where = f"{WEIGHTS_ENV}={path!r}" if os.environ.get(WEIGHTS_ENV) else f"the shipped LPIPS weights {path!r}"
        raise FileNotFoundError(f"{where}: no such file (expected the LPIPS AlexNet safetensors file)")
    sha = None
    if Path(path).resolve() == SHIPPED_WEIGHTS.resolve():  # the shipped copy's SHA-256 is in the config beside it
        sha = (read_config(SHIPPED_WEIGHTS.parent / CONFIG).get(SHA_KEY) or {}).get(SHIPPED_WEIGHTS.name)
    state = read_tensors(path, sha256=sha)
    targets: dict[str, torch.nn.Parameter] = {}
    for _, block in model.net.named_children():
        for pname, param in block.named_parameters():
            targets[pname] = param
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    if missing or unexpected:
        raise LPIPSWeightsError(
            f"{path}: the AlexNet trunk needs the keys {sorted(targets)}; missing {missing}, unexpected {unexpected}"
        )
    with torch.no_grad():
        for key, param in targets.items():
            tensor = state[key]
            if tuple(tensor.shape) != tuple(param.shape):
                raise LPIPSWeightsError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, the network expects {tuple(param.shape)}"
                )
            param.copy_(tensor.to(param.dtype))


# torchvision's ImageNet AlexNet checkpoint, the file the lpips package downloads into torch hub's cache
TORCHVISION_ALEXNET = "alexnet-owt-7be5be79.pth"


def alex_weights() -> str | None:
    """The AlexNet trunk file :func:`lpips_model` loads: ``INVGEN_LPIPS_WEIGHTS`` if set, else the shipped copy
    (None only in a build that lacks it, where the lpips package would download torchvision's)."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return override
    return str(SHIPPED_WEIGHTS) if SHIPPED_WEIGHTS.is_file() else None


def lpips_available(net: str = "alex") -> bool:
    """Whether :func:`lpips` can run without a download: always for AlexNet (the trunk ships with invgen, or
    ``INVGEN_LPIPS_WEIGHTS`` names one), else when torchvision's AlexNet checkpoint is already in torch hub's cache.
    Callers that must work offline (``invgen solve``, the demo) leave LPIPS out, and say so, when this is False."""
    if net != "alex":
        return False
    return alex_weights() is not None or os.path.isfile(
        os.path.join(torch.hub.get_dir(), "checkpoints", TORCHVISION_ALEXNET)
    )


def lpips_model(net: str = "alex", device: torch.device | str | None = None) -> torch.nn.Module:
    """The cached ``lpips.LPIPS`` model (version 0.1, eval mode, frozen) for a trunk and a device.

    Args:
        net: the trunk: ``"alex"`` (the default: the shipped trunk, or ``INVGEN_LPIPS_WEIGHTS``),
            ``"vgg"`` or ``"squeeze"`` (these always take the lpips package's torchvision download path).
        device: where the model lives (default CPU).

    Returns:
        The model; its ``net`` (trunk), ``scaling_layer`` and ``lins`` are what :func:`lpips` uses.

    Raises:
        UnknownNameError: for an unknown ``net``.
        LPIPSWeightsError: if the file in ``INVGEN_LPIPS_WEIGHTS`` does not fit the AlexNet trunk.
        FileNotFoundError: if ``INVGEN_LPIPS_WEIGHTS`` names no file.

    Example:
        >>> model = lpips_model("alex")  # doctest: +SKIP
    """
    if net not in NETS:
        raise UnknownNameError(f"lpips: unknown net {net!r} (known: {', '.join(NETS)})")
    dev = torch.device(device if device is not None else "cpu")
    weights = alex_weights() if net == "alex" else None
    key = (net, str(dev), weights)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            import lpips as lpips_package

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`, which lpips passes
                model = lpips_package.LPIPS(
                    net=net, version="0.1", pretrained=True, pnet_rand=weights is not None, verbose=False
                )
            if weights is not None:
                _load_backbone(model, weights)
            model = model.to(dev).eval().requires_grad_(False)
            _CACHE[key] = model
    return model


def _prepare(x: Tensor, name: str = "x", who: str = "lpips") -> Tensor:
    """Check channels, size and range; repeat gray to RGB; float32 in [0, 1] -> the model's [-1, 1] input."""
    check_image(x, name, channels=(1, 3))
    check_range(
        x,
        name,
        who=who,
        fix=f"clamp predictions explicitly before scoring them, {name}.clamp(0, 1), if they leave "
        "[0, 1] only slightly (solver samples may)",
    )
    h, w = x.shape[-2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ShapeError(
            f"lpips: {name} has spatial size {(h, w)}, AlexNet needs at least {MIN_SIZE}x{MIN_SIZE} "
            "(pad small images, e.g. 28x28 MNIST by 2 pixels of background, or use an l2 metric)"
        )
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return 2.0 * x.to(torch.float32) - 1.0


def _features(model: Any, x: Tensor) -> list[Tensor]:
    """Unit-normalised (over channels) trunk activations of a prepared ``[-1, 1]`` batch."""
    from lpips import normalize_tensor

    return [normalize_tensor(f) for f in model.net(model.scaling_layer(x))]


def _distance(model: Any, f0: list[Tensor], f1: list[Tensor], spatial: bool, size: tuple[int, int]) -> Tensor:
    """Sum over layers of the spatial mean of the linearly weighted squared feature differences, ``(B,)``."""
    total = f0[0].new_zeros(f0[0].shape[0])
    for lin, a, b in zip(model.lins, f0, f1):
        d = lin((a - b) ** 2)  # (B, 1, h, w)
        if spatial:
            d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        total = total + d.mean(dim=(1, 2, 3))
    return total


def lpips(x: Tensor, ref: Tensor, net: str = "alex", spatial: bool = False) -> Tensor:
    """LPIPS distance (version 0.1) between each prediction and its reference; 0 for identical images.

    Images in [0, 1] are scaled to [-1, 1] as the network expects; inputs are not clamped, and values outside
    [0, 1] (beyond 1e-6) raise (divide 0..255 images by 255; clamp solver samples first). Gray images (C = 1)
    are repeated to three channels. Gradients flow to inputs that require them; otherwise no graph is built.
    See the module docstring for where the weights come from (the shipped AlexNet trunk, or
    ``INVGEN_LPIPS_WEIGHTS``).

    Args:
        x: predictions in [0, 1].
        ref: references in [0, 1].
        net: the trunk, ``"alex"`` (see :func:`lpips_model`).
        spatial: if True, upsample each layer's distance map bilinearly to the input size before averaging it
            (``lpips.LPIPS(spatial=True)`` followed by a mean: the protocol of the published reference distances);
            if False, average each layer at its own resolution (the lpips default). The two differ slightly (by
            2e-5 on the reference images).

    Returns:
        One distance per image, in ``x``'s dtype.

    Raises:
        ShapeError: if the shapes differ, C is not 1 or 3, or H or W is below 32.
        RangeError: for NaN/Inf or values outside [0, 1].

    Shape:
        x, ref: ``(B, C, H, W)`` with C in {1, 3} and H, W >= 32 -> ``(B,)``.

    Example:
        >>> x = torch.rand(2, 3, 64, 64)
        >>> lpips(x, x)  # doctest: +SKIP
        tensor([0., 0.])
    """
    check_pair(x, ref, who="lpips")
    a, b = _prepare(x, "x"), _prepare(ref.to(x.device), "ref")
    model = lpips_model(net, x.device)
    with torch.set_grad_enabled(torch.is_grad_enabled() and (x.requires_grad or ref.requires_grad)):
        d = _distance(model, _features(model, a), _features(model, b), spatial, tuple(x.shape[-2:]))
    return d.to(x.dtype)
