"""Small CNN classifiers trained by the project, one per dataset: the feature space of :mod:`invgen.metrics.frechet`.

The network is three ``conv 3x3 -> BatchNorm -> ReLU -> max-pool 2`` stages (32 -> 16 -> 8 -> 4 pixels), an average
pool to ``2 x 2``, a fully connected feature layer with ReLU (128 values: the *features*) and a linear head over the
10 classes. Inputs are ``(B, C, 32, 32)`` images in [0, 1] (mapped to [-1, 1] inside). About 0.16M parameters
(0.6 MB in float32).

Shipped weights live in ``invgen/metrics/weights/classifier-<dataset>/`` (``model.safetensors`` + ``config.json``
holding the architecture, the exact training command, the test accuracy and the training time), for ``mnist``,
``fashion-mnist`` and ``cifar10``. Nothing is downloaded. Retrain one with::

    python -m invgen.metrics.classifier train --dataset mnist --epochs 3 --out DIR

(seeded; CPU by default; ``--threads 1`` for reproducible timings) and evaluate a folder with::

    python -m invgen.metrics.classifier eval --dataset mnist --weights DIR
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invgen.checks import check_image
from invgen.errors import InvgenError, ShapeError, UnknownNameError

WEIGHTS = Path(__file__).parent / "weights"
DATASETS = ("mnist", "fashion-mnist", "cifar10")
FLIP_OK = {"mnist": False, "fashion-mnist": True, "cifar10": True}

_CACHE: dict[tuple[str, str], Classifier] = {}
_LOCK = threading.Lock()


class ClassifierWeightsError(InvgenError, FileNotFoundError):
    """The classifier weights of a dataset are not shipped (or the folder given does not hold them)."""


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of :class:`Classifier` (stored in ``config.json`` under ``"net"``)."""

    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)
    pool: int = 2
    feature_dim: int = 128
    num_classes: int = 10
    image_size: int = 32

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class Classifier(nn.Module):
    """Conv stages, average pool, a ``feature_dim`` feature layer and a linear head (module docstring).

    Shape:
        x: ``(B, C, H, W)`` in [0, 1] -> ``features(x)``: ``(B, feature_dim)``; ``forward(x)``: logits
        ``(B, num_classes)``.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        layers.append(nn.AdaptiveAvgPool2d(config.pool))
        self.trunk = nn.Sequential(*layers)
        self.feature = nn.Linear(c_in * config.pool**2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations (after ReLU), ``(B, feature_dim)``."""
        h = self.trunk(2.0 * x - 1.0)
        return F.relu(self.feature(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> Classifier:
        """Rebuild from ``config.json`` + ``model.safetensors`` in ``folder``; eval mode, frozen."""
        from invgen.train.verify import CONFIG, SHA_KEY, config_errors, load_state, read_config, read_tensors

        folder = Path(folder)
        if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
            raise ClassifierWeightsError(f"{str(folder)!r}: expected config.json and model.safetensors")
        cfg = read_config(folder)
        state = read_tensors(folder / "model.safetensors", sha256=(cfg.get(SHA_KEY) or {}).get("model.safetensors"))
        with config_errors(folder / CONFIG, "the classifier"):
            net = cls(ClassifierConfig.from_dict(cfg["net"]))
        load_state(net, state, folder / "model.safetensors")
        return net.to(device).eval().requires_grad_(False)


def check_dataset(dataset: str) -> str:
    """Raise :class:`UnknownNameError` unless ``dataset`` is one of :data:`DATASETS` (those with a classifier)."""
    if dataset not in DATASETS:
        raise UnknownNameError(f"classifier: unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    return dataset


def weights_folder(dataset: str) -> Path:
    """``invgen/metrics/weights/classifier-<dataset>``."""
    return WEIGHTS / f"classifier-{check_dataset(dataset)}"


def classifier_config(dataset: str) -> dict[str, Any]:
    """The shipped ``config.json`` of a dataset's classifier (command, accuracy, seconds, architecture)."""
    return json.loads((weights_folder(dataset) / "config.json").read_text())


def load_classifier(dataset: str, device: torch.device | str | None = None) -> Classifier:
    """The shipped classifier of ``dataset``, built once per (dataset, device) and cached (eval mode, frozen).

    Args:
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        device: where it lives (default CPU).

    Raises:
        UnknownNameError: for another dataset.
        ClassifierWeightsError: if this build does not ship the weights.
    """
    folder = weights_folder(dataset)
    dev = torch.device(device if device is not None else "cpu")
    key = (dataset, str(dev))
    with _LOCK:
        net = _CACHE.get(key)
        if net is None:
            if not (folder / "model.safetensors").is_file():
                raise ClassifierWeightsError(f"the classifier weights of {dataset!r} are not shipped in this build")
            net = Classifier.from_pretrained(folder, dev)
            _CACHE[key] = net
    return net


def check_input(x: object, net: Classifier, dataset: str, name: str = "x") -> Tensor:
    """Raise unless ``x`` is a ``(B, C, S, S)`` batch in [0, 1] with the classifier's channels and size."""
    cfg = net.config
    check_image(x, name)
    assert isinstance(x, Tensor)
    want = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if tuple(x.shape[1:]) != want:
        raise ShapeError(
            f"{name}: the {dataset} classifier takes (B, {', '.join(map(str, want))}) images, got shape "
            f"{tuple(x.shape)}" + (" (gray vs RGB: wrong dataset?)" if x.shape[1] != cfg.in_channels else "")
        )
    if x.shape[0] < 1:
        raise ShapeError(f"{name}: empty batch, shape {tuple(x.shape)}")
    check_image(x, name, clean=True)
    return x


@torch.no_grad()
def apply(net: Classifier, x: Tensor, fn: str, batch_size: int = 500) -> Tensor:
    """``net.features`` or ``net.forward`` over ``x`` in batches (float32, the net's device); the result on CPU."""
    device = next(net.parameters()).device
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device=device, dtype=torch.float32)
        out.append((net.features(xb) if fn == "features" else net(xb)).cpu())
    return torch.cat(out)


def predict(x: Tensor, dataset: str) -> Tensor:
    """Class predicted by the shipped classifier of ``dataset`` for each image.

    Shape:
        x: ``(B, C, 32, 32)`` in [0, 1] (C = 1 for MNIST and Fashion-MNIST, 3 for CIFAR-10) -> ``(B,)`` int64.
    """
    net = load_classifier(dataset, x.device if isinstance(x, Tensor) else None)
    check_input(x, net, dataset)
    return apply(net, x, "logits").argmax(dim=1)


def label_consistency(x: Tensor, labels: Tensor, dataset: str) -> float:
    """Fraction of images that the shipped classifier of ``dataset`` assigns to the given labels.

    On real test images this is the classifier's test accuracy; on class-conditional samples (or on posterior
    samples whose ground-truth label is known) it says how often the sample still shows its class.

    Args:
        x: images in [0, 1].
        labels: one class index per image.
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.

    Returns:
        A float in [0, 1].

    Shape:
        x: ``(B, C, 32, 32)``; labels: ``(B,)``.

    Example:
        >>> from invgen.data import mnist
        >>> x, y = mnist("test")  # doctest: +SKIP
        >>> label_consistency(x[:2000], y[:2000], "mnist")  # doctest: +SKIP
        0.991
    """
    pred = predict(x, dataset)
    labels = torch.as_tensor(labels)
    if labels.shape != pred.shape:
        raise ShapeError(f"labels: expected one label per image, shape {tuple(pred.shape)}, got {tuple(labels.shape)}")
    return float((pred == labels.to(pred.device)).double().mean())


# ----------------------------------------------------------------------------------------------------- training


def _augment(x: Tensor, gen: torch.Generator, flip: bool, crop: int) -> Tensor:
    """Random horizontal flips (if ``flip``) and random crops after zero padding by ``crop`` pixels."""
    b = x.shape[0]
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if crop:
        h, w = x.shape[-2:]
        padded = F.pad(x, (crop, crop, crop, crop))
        dy = torch.randint(0, 2 * crop + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * crop + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None]).reshape(b, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w)[None]).reshape(b, 1, 1, w)
        batch = torch.arange(b).reshape(b, 1, 1, 1)
        chan = torch.arange(x.shape[1]).reshape(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    return x


@torch.no_grad()
def accuracy(net: Classifier, x: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` classified as ``labels`` (eval mode)."""
    was_training = net.training
    net.eval()
    pred = apply(net, x, "logits", batch_size).argmax(dim=1)
    net.train(was_training)
    return float((pred == labels).double().mean())


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train a classifier on the train split, evaluate it on the test split, write ``config.json`` + weights."""
    from safetensors.torch import save_file

    from invgen.data import load_dataset
    from invgen.train.verify import write_config

    if args.threads:
        torch.set_num_threads(args.threads)
    check_dataset(args.dataset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_dataset(args.dataset, "train")
    x_test, y_test = load_dataset(args.dataset, "test")
    if args.limit:
        x_train, y_train, x_test, y_test = (t[: args.limit] for t in (x_train, y_train, x_test, y_test))
    cfg = ClassifierConfig(
        in_channels=x_train.shape[1],
        channels=tuple(int(c) for c in args.channels.split(",")),
        feature_dim=args.feature_dim,
        image_size=x_train.shape[-1],
    )
    net = Classifier(cfg)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    n = x_train.shape[0]
    steps_per_epoch = n // args.batch_size
    total = steps_per_epoch * args.epochs
    warmup = min(200, total // 10)
    flip = FLIP_OK[args.dataset] and not args.no_flip
    step, t0, cpu0, log = 0, time.time(), time.process_time(), []
    net.train()
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=gen)
        running, correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            xb = _augment(x_train[idx], gen, flip, args.crop)
            yb = y_train[idx]
            lr = args.lr * min(1.0, (step + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = net(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += loss.item() * yb.shape[0]
            correct += int((logits.argmax(1) == yb).sum())
            seen += yb.shape[0]
            if step % 100 == 0:
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step}/{total} loss {running / seen:.4f} "
                    f"train acc {correct / seen:.4f} {time.time() - t0:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
        test_acc = accuracy(net, x_test, y_test)
        log.append(
            {
                "epoch": epoch + 1,
                "train_loss": round(running / seen, 5),
                "train_accuracy": round(correct / seen, 5),
                "test_accuracy": round(test_acc, 5),
                "seconds": round(time.time() - t0, 1),
                "cpu_seconds": round(time.process_time() - cpu0, 1),
            }
        )
        print(f"epoch {epoch + 1}: test accuracy {test_acc:.4f} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    net.eval()
    test_acc = accuracy(net, x_test, y_test)
    config = {
        "name": f"classifier-{args.dataset}",
        "dataset": args.dataset,
        "net": cfg.to_dict(),
        "parameters": sum(p.numel() for p in net.parameters()),
        "features": "ReLU output of the feature layer (the input of the linear head)",
        "test_accuracy": round(test_acc, 5),
        "test_images": int(x_test.shape[0]),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "command": "python -m invgen.metrics.classifier " + " ".join(shlex.quote(a) for a in args.argv),
        "training": {k: v for k, v in vars(args).items() if k not in ("func", "out", "argv")},
        "log": log,
        "torch": torch.__version__,
    }
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"))
    config = write_config(out, config)  # records the SHA-256 of model.safetensors
    print(f"test accuracy {test_acc:.4f}, {seconds:.0f}s ({cpu_seconds:.0f}s CPU) -> {out}", file=sys.stderr)
    return config


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Test accuracy of the weights in ``--weights`` (default: the shipped ones)."""
    from invgen.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.weights) if args.weights else weights_folder(args.dataset)
    net = Classifier.from_pretrained(folder)
    x, y = load_dataset(args.dataset, "test")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    acc = accuracy(net, x, y)
    print(json.dumps({"dataset": args.dataset, "weights": str(folder), "images": int(x.shape[0]), "accuracy": acc}))
    return {"accuracy": acc}


def main(argv: list[str] | None = None) -> int:
    from invgen.train.checkpoint import positive_int

    parser = argparse.ArgumentParser(prog="python -m invgen.metrics.classifier", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a classifier and write config.json + model.safetensors to --out")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--channels", default="32,64,128", help="channels of the conv stages")
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--crop", type=int, default=0, help="random-crop augmentation: zero padding in pixels (0: none)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (never used for mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images of each split (smoke tests)")
    p.set_defaults(func=train)
    e = sub.add_parser("eval", help="test accuracy of a weights folder (default: the shipped one)")
    e.add_argument("--dataset", required=True, choices=DATASETS)
    e.add_argument("--weights", default=None)
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--threads", type=int, default=0)
    e.set_defaults(func=evaluate)
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
