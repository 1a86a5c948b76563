"""FD-<dataset>-CNN: the Frechet formula against closed forms, the shipped classifiers, and pinned MNIST figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import invgen
from invgen.errors import RangeError, ShapeError, UnknownNameError
from invgen.metrics import classifier as clf
from invgen.metrics import frechet

D64 = torch.float64


def _random_spd(d: int, gen: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=gen, dtype=D64)
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * torch.eye(d, dtype=D64)


# ------------------------------------------------------------------------------------------------ the formula


def test_fd_one_dimensional_closed_form():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    value = frechet.frechet_distance_from_statistics(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[0.25]])
    )
    assert value == pytest.approx(9.0 + 1.5**2, rel=1e-12)


def test_fd_commuting_covariances_closed_form():
    # Covariances diagonal in the same rotated basis: FD = |dm|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    gen = torch.Generator().manual_seed(1)
    d = 64
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=D64))
    a = torch.rand(d, generator=gen, dtype=D64) * 3
    b = torch.rand(d, generator=gen, dtype=D64) * 3
    a[:5] = 0.0  # singular covariances are allowed
    m1, m2 = torch.randn(d, generator=gen, dtype=D64), torch.randn(d, generator=gen, dtype=D64)
    expected = float((m1 - m2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    value = frechet.frechet_distance_from_statistics(m1, q @ torch.diag(a) @ q.T, m2, q @ torch.diag(b) @ q.T)
    assert value == pytest.approx(expected, rel=1e-8)  # zero eigenvalues: sqrt turns 1e-16 round-off into 1e-8


def test_fd_general_covariances_match_scipy_sqrtm():
    # The pytorch-fid formula tr sqrtm(S1 S2), on non-commuting full-rank covariances.
    scipy_linalg = pytest.importorskip("scipy.linalg")
    gen = torch.Generator().manual_seed(2)
    d = 128
    s1, s2 = _random_spd(d, gen), _random_spd(d, gen)
    m1, m2 = torch.randn(d, generator=gen, dtype=D64), torch.randn(d, generator=gen, dtype=D64)
    root = scipy_linalg.sqrtm((s1 @ s2).numpy())
    expected = float((m1 - m2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * root.real.trace())
    value = frechet.frechet_distance_from_statistics(m1, s1, m2, s2)
    assert value == pytest.approx(expected, rel=1e-9)
    assert value == pytest.approx(frechet.frechet_distance_from_statistics(m2, s2, m1, s1), rel=1e-10)


def test_fd_of_identical_rank_deficient_statistics_is_zero():
    gen = torch.Generator().manual_seed(3)
    s = _random_spd(128, gen, rank=20)  # like features with dead units: the naive sqrtm route loses precision here
    m = torch.randn(128, generator=gen, dtype=D64)
    assert frechet.frechet_distance_from_statistics(m, s, m, s) < 1e-9 * float(torch.trace(s))


def test_fd_statistics_shape_errors():
    i = torch.eye(3, dtype=D64)
    with pytest.raises(ShapeError, match="cov2"):
        frechet.frechet_distance_from_statistics(torch.zeros(3), i, torch.zeros(3), torch.eye(2))
    with pytest.raises(ShapeError, match="mu2"):
        frechet.frechet_distance_from_statistics(torch.zeros(3), i, torch.zeros(2), i)


# ---------------------------------------------------------------------------------------- shipped classifiers


@pytest.mark.parametrize("dataset", clf.DATASETS)
def test_shipped_classifier_files(dataset):
    folder = clf.weights_folder(dataset)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["command"].startswith(f"python -m invgen.metrics.classifier train --dataset {dataset} ")
    assert cfg["net"]["in_channels"] == (3 if dataset == "cifar10" else 1)
    assert cfg["net"]["feature_dim"] == 128 and cfg["test_images"] == 10000
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    assert cfg["train_seconds"] > 0 and 0 < cfg["test_accuracy"] <= 1


@pytest.mark.parametrize(("dataset", "minimum"), [("mnist", 0.988), ("fashion-mnist", 0.915)])
def test_shipped_classifier_accuracy(data_dir, dataset, minimum):
    # On the first 2000 test images: 0.9910 (mnist), 0.9225 (fashion-mnist); on all 10000 see config.json.
    from invgen.data import load_dataset

    x, y = load_dataset(dataset, "test", root=data_dir)
    acc = invgen.metrics.label_consistency(x[:2000], y[:2000], dataset)
    assert acc > minimum


@pytest.mark.slow
def test_shipped_cifar10_classifier_accuracy(data_dir):
    from invgen.data import cifar10

    x, y = cifar10("test", root=data_dir)  # decoding the JPEG archive takes ~15-30 s: slow
    # every 5th image: 200 per class (the split is ordered by class); measured 0.7625 (0.7567 on all 10000)
    assert invgen.metrics.label_consistency(x[::5], y[::5], "cifar10") > 0.75


def test_classifier_is_loaded_once_and_frozen():
    net = clf.load_classifier("mnist")
    assert clf.load_classifier("mnist") is net
    assert not net.training and not any(p.requires_grad for p in net.parameters())


# ------------------------------------------------------------------------------------------- FD on MNIST


_MNIST: dict[str, torch.Tensor] = {}


def _mnist_test(data_dir) -> torch.Tensor:
    if "x" not in _MNIST:
        from invgen.data import mnist

        _MNIST["x"] = mnist("test", root=data_dir)[0]
    return _MNIST["x"]


def test_features_shape_and_dtype(data_dir):
    x = _mnist_test(data_dir)[:10]
    f = frechet.features(x, "mnist")
    assert f.shape == (10, 128) and f.dtype == torch.float32
    # batch-independent (eval-mode BatchNorm), up to float32 rounding of batch-size-dependent conv kernels
    torch.testing.assert_close(f[3:4], frechet.features(x[3:4], "mnist"), rtol=1e-5, atol=1e-5)


def test_fd_of_a_set_with_itself_is_zero_and_fd_is_symmetric(data_dir):
    x = _mnist_test(data_dir)
    a, b = x[:500], x[500:1000]
    assert frechet.frechet_distance(a, a, "mnist") < 1e-6
    sa, sb = frechet.feature_statistics(a, "mnist"), frechet.feature_statistics(b, "mnist")
    ab = frechet.frechet_distance(a, sb, "mnist")  # images or their (mean, cov) on either side
    assert ab == frechet.frechet_distance(sb, sa, "mnist") == frechet.frechet_distance_from_statistics(*sa, *sb)
    assert ab > 0.5


def _blur(x: torch.Tensor) -> torch.Tensor:
    t = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-0.5 * t**2)
    k2 = (k[:, None] * k[None, :]) / k.sum() ** 2
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), k2[None, None])


def test_fd_separates_degraded_images_from_the_floor(data_dir):
    # 1000 MNIST test images: two disjoint halves (the floor at 500 vs 500), then the second half degraded.
    x = _mnist_test(data_dir)[:1000]
    a, b = x[:500], x[500:]
    gen = torch.Generator().manual_seed(0)
    noisy = (b + 0.1 * torch.randn(b.shape, generator=gen)).clamp(0, 1)
    floor = frechet.frechet_distance(a, b, "mnist")
    fd_noise = frechet.frechet_distance(a, noisy, "mnist")
    fd_blur = frechet.frechet_distance(a, _blur(b).clamp(0, 1), "mnist")
    # Pinned with the shipped classifier-mnist (float32 features: a few 1e-4 relative between CPUs at most).
    assert floor == pytest.approx(1.1033, rel=5e-3)
    assert fd_noise == pytest.approx(8.108, rel=5e-3)
    assert fd_blur == pytest.approx(76.90, rel=5e-3)
    assert fd_noise > 5 * floor and fd_blur > 50 * floor


# --------------------------------------------------------------------------------------------- input errors


def test_input_errors(data_dir):
    x = _mnist_test(data_dir)[:4]
    with pytest.raises(ShapeError, match="gray vs RGB"):
        frechet.features(x.expand(-1, 3, -1, -1), "mnist")
    with pytest.raises(ShapeError, match="gray vs RGB"):
        frechet.features(x, "cifar10")
    with pytest.raises(ShapeError, match=r"\(B, 1, 32, 32\)"):
        frechet.features(x[..., 2:30, 2:30], "mnist")
    with pytest.raises(ShapeError, match="x_reference"):
        frechet.frechet_distance(x, x[0], "mnist")
    with pytest.raises(ShapeError, match="at least 2 images"):
        frechet.frechet_distance(x[:1], x, "mnist")
    with pytest.raises(RangeError, match=r"x_samples.*\[0, 1\]"):
        frechet.frechet_distance(x + 0.5, x, "mnist")
    with pytest.raises(RangeError, match="NaN"):
        frechet.features(x * math.nan, "mnist")
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        frechet.features(x, "svhn")
    with pytest.raises(ShapeError, match="one label per image"):
        invgen.metrics.label_consistency(x, torch.zeros(3, dtype=torch.long), "mnist")


def test_metrics_package_exposes_the_sample_quality_metrics_lazily():
    import invgen.metrics as m

    assert m.frechet_distance is frechet.frechet_distance
    assert m.label_consistency is clf.label_consistency
    assert {"frechet_distance", "feature_statistics", "label_consistency"} <= set(m.__all__)


def test_sample_quality_metrics_are_not_imported_with_the_package():
    # `python -m invgen.metrics.classifier` must not find its module already imported by `invgen.metrics`.
    code = "import sys, invgen.metrics; assert 'invgen.metrics.classifier' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_command_writes_a_loadable_seeded_classifier(data_dir, tmp_path):
    argv = ["train", "--dataset", "mnist", "--epochs", "1", "--limit", "256", "--batch-size", "64", "--threads", "1"]
    for name in ("a", "b"):
        clf.main([*argv, "--out", str(tmp_path / name)])
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["command"] == "python -m invgen.metrics.classifier " + " ".join([*argv, "--out", str(tmp_path / "a")])
    assert cfg["test_images"] == 256 and cfg["training"]["seed"] == 0
    net_a, net_b = (clf.Classifier.from_pretrained(tmp_path / n) for n in ("a", "b"))
    for (key, pa), pb in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(pa, pb), key  # same seed, same weights
    assert not net_a.training
