"""Registered datasets: ids, sizes and golden pixel means of the real sets, views, configs and checksum checks."""

from __future__ import annotations

import collections
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import invgen
from invgen import builtin, registry
from invgen.data import DataChecksumError, DataNotFoundError, from_config
from invgen.data.sets import SPECS
from invgen.errors import ShapeError
from invgen.operators.color import LUMA_601

NAMES = {
    "mnist",
    "fashion-mnist",
    "cifar10",
    "set5",
    "set14",
    "set12",
    "bsd68",
    "cbsd68",
    "kodak24",
    "ffhq256-100",
    "folder",
}


# --- the registry and the manifest (no data needed) --------------------------------------------------------------
def test_every_dataset_is_registered_with_its_spec():
    assert set(invgen.list_datasets()) >= NAMES
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in NAMES)
    for name, spec in SPECS.items():
        meta = registry.get("datasets", name).meta
        assert (meta["description"], meta["shape"], meta["files"]) == (spec.description, spec.shape, spec.files)
    assert {row[0] for row in builtin.DATASETS} == set(SPECS) | {"folder"}


def test_manifest_lists_every_file_of_every_set():
    manifest = json.loads((Path(invgen.__file__).parent / "data" / "checksums.json").read_text())["datasets"]
    counts = {n: len(f) for n, f in manifest.items()}
    assert counts == {
        "mnist": 4,
        "fashion-mnist": 4,
        "cifar10": 1,
        "set5": 5,
        "set14": 14,
        "set12": 12,
        "bsd68": 68,
        "cbsd68": 68,
        "kodak24": 24,
        "ffhq256-100": 100,
    }
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for files in manifest.values() for h in files.values())
    assert all(not p.startswith("data/") for files in manifest.values() for p in files)


def test_manifest_is_what_make_checksums_writes(data_dir):
    sums = data_dir.parent / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"no SHA256SUMS beside {data_dir}")
    from invgen.data.make_checksums import build
    from invgen.data.verify import MANIFEST, read_sha256sums

    assert build(read_sha256sums(sums)) == json.loads(MANIFEST.read_text())


# --- the real sets -----------------------------------------------------------------------------------------------
# name: (count, first id, last id, channels, fixed shape, {image shape: count} or None to skip reading them all)
SETS = {
    "mnist": (10000, "00000", "09999", 1, (1, 32, 32), None),
    "fashion-mnist": (10000, "00000", "09999", 1, (1, 32, 32), None),
    "cifar10": (10000, "00000", "09999", 3, (3, 32, 32), None),
    "set5": (
        5,
        "baby",
        "woman",
        3,
        None,
        {(3, 512, 512): 1, (3, 288, 288): 1, (3, 256, 256): 1, (3, 280, 280): 1, (3, 344, 228): 1},
    ),
    "set14": (
        14,
        "baboon",
        "zebra",
        3,
        None,
        {
            (3, 480, 500): 1,
            (3, 576, 720): 1,
            (3, 512, 512): 4,
            (3, 288, 352): 2,
            (3, 361, 250): 1,
            (3, 276, 276): 1,
            (3, 362, 500): 1,
            (3, 512, 768): 1,
            (3, 656, 529): 1,
            (3, 391, 586): 1,
        },
    ),
    "set12": (12, "01", "12", 1, None, {(1, 256, 256): 7, (1, 512, 512): 5}),
    "bsd68": (68, "test001", "test068", 1, None, {(1, 481, 321): 15, (1, 321, 481): 53}),
    "cbsd68": (68, "101085", "351093", 3, None, {(3, 481, 321): 15, (3, 321, 481): 53}),
    "kodak24": (24, "kodim01", "kodim24", 3, (3, 500, 500), {(3, 500, 500): 24}),
    "ffhq256-100": (100, "00000", "00099", 3, (3, 256, 256), {(3, 256, 256): 100}),
}


@pytest.mark.parametrize("name", sorted(SETS))
def test_set_ids_and_shapes(data_dir, name):
    count, first, last, channels, shape, shapes = SETS[name]
    ds = invgen.dataset(name)
    assert ds.name == name and len(ds) == count and ds.ids[0] == first and ds.ids[-1] == last
    assert len(set(ds.ids)) == count and ds.channels == channels and ds.shape == shape
    assert ds.description == SPECS[name].description
    if shapes is not None:
        images = ds.images()
        assert collections.Counter(tuple(x.shape) for x in images) == shapes
        assert all(x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 for x in images)
    else:
        x = ds.image(-1)
        assert tuple(x.shape) == shape and x.dtype == torch.float32


# one image per set: its mean pixel value, computed once from the shared data
GOLDEN = {
    "mnist": ("00000", 0.070672488),
    "fashion-mnist": ("00000", 0.128125004),
    "cifar10": ("00000", 0.607180619),
    "set5": ("butterfly", 0.451026816),
    "set14": ("bridge", 0.446280427),
    "set12": ("01", 0.465586239),
    "bsd68": ("test001", 0.375260405),
    "cbsd68": ("101085", 0.354708893),
    "kodak24": ("kodim01", 0.422995851),
    "ffhq256-100": ("00042", 0.534276179),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_mean(data_dir, name):
    image_id, mean = GOLDEN[name]
    ds = invgen.dataset(name)
    x = ds.image(ds.index(image_id))
    assert x.double().mean().item() == pytest.approx(mean, abs=1e-6)


def test_mnist_matches_the_array_reader(data_dir):
    from invgen.data import mnist

    ds = invgen.dataset("mnist", split="test")
    ref = mnist("test")[0]
    for i in (0, 1, 4242, 9999):
        assert torch.equal(ds.image(i), ref[i])
    assert ds.label(0) == 7  # the first MNIST test digit
    train = invgen.dataset("mnist", split="train", verify=False)
    assert len(train) == 60000 and train.ids[-1] == "59999"
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        invgen.dataset("mnist", split="val")


def test_set14_gray_file_becomes_rgb(data_dir):
    ds = invgen.dataset("set14")
    x = ds.image(ds.index("bridge"))
    assert x.shape == (3, 512, 512) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


# --- select ------------------------------------------------------------------------------------------------------
def test_select_by_ids_and_by_count(data_dir):
    ds = invgen.dataset("set12")
    sub = ds.select(ids=["05", "02"])
    assert sub.ids == ["05", "02"] and len(sub) == 2 and sub.name == "set12"
    assert torch.equal(sub.image(0), ds.image(4))
    assert ds.select(count=3, start=2).ids == ["03", "04", "05"]
    assert ds.select(start=10).ids == ["11", "12"]
    assert len(ds.select(count=0)) == 0
    assert sub.select(ids=["02"]).ids == ["02"]  # a view of a view, by id
    mnist = invgen.dataset("mnist")
    assert mnist.select(ids=[42, "00007"]).ids == ["00042", "00007"]  # ints for index ids


def test_select_errors(data_dir):
    ds = invgen.dataset("set12")
    with pytest.raises(KeyError, match=r"unknown image id '13'; expected one of '01', '02'.*\(12 in all\)"):
        ds.select(ids=["13"])
    with pytest.raises(TypeError, match="ids are file names"):
        ds.select(ids=[1])
    with pytest.raises(ValueError, match="either ids or count/start, not both"):
        ds.select(ids=["01"], count=1)
    with pytest.raises(ValueError, match=r"start=10 \+ count=5 runs past the end \(12 images\)"):
        ds.select(count=5, start=10)
    with pytest.raises(ValueError, match="'03' is selected twice"):
        ds.select(ids=["03", "01", "03"])
    with pytest.raises(TypeError, match="a list of ids"):
        ds.select(ids="01")
    with pytest.raises(IndexError, match="position 12 out of range for 12 images"):
        ds.image(12)


# --- transform ---------------------------------------------------------------------------------------------------
def test_crop_is_central(data_dir):
    ds = invgen.dataset("bsd68")
    x = ds.image(0)  # test001 is 481x321
    view = ds.transform(crop=256)
    assert view.shape == (1, 256, 256) and view.channels == 1
    assert torch.equal(view.image(0), x[:, 112:368, 32:288])
    assert torch.equal(ds.transform(crop=(100, 300)).image(0), x[:, 190:290, 10:310])


def test_crop_larger_than_the_image_is_an_error(data_dir):
    with pytest.raises(ShapeError, match=r"crop 300x300 is larger than ffhq256-100 \(every image is 256x256\)"):
        invgen.dataset("ffhq256-100").transform(crop=300)
    view = invgen.dataset("set12").transform(crop=300)  # sizes vary: checked per image
    assert view.image(7).shape == (1, 300, 300)  # 08 is 512x512
    with pytest.raises(ShapeError, match=r"crop 300x300 is larger than set12 image '01' \(256x256\)"):
        view.image(0)
    with pytest.raises(ValueError, match="crop: expected a positive int or a pair"):
        invgen.dataset("set12").transform(crop=(0, 5))


def test_resize_is_antialiased_bicubic_in_range(data_dir):
    ds = invgen.dataset("kodak24")
    x = ds.image(0)
    view = ds.transform(resize=(64, 96))
    y = view.image(0)
    ref = F.interpolate(x[None], size=(64, 96), mode="bicubic", antialias=True, align_corners=False)[0]
    assert view.shape == (3, 64, 96) and y.shape == (3, 64, 96)
    assert torch.equal(y, ref.clamp(0, 1)) and y.min() >= 0 and y.max() <= 1
    assert y.double().mean().item() == pytest.approx(x.double().mean().item(), abs=2e-3)
    # crop first, then resize
    both = ds.transform(crop=400, resize=100).image(0)
    ref = F.interpolate(x[None, :, 50:450, 50:450], size=(100, 100), mode="bicubic", antialias=True)[0]
    assert torch.equal(both, ref.clamp(0, 1))


def test_gray_and_rgb(data_dir):
    color = invgen.dataset("cbsd68")
    x = color.image(3)
    luma = (x * torch.tensor(LUMA_601).reshape(3, 1, 1)).sum(0, keepdim=True)
    gray = color.transform(gray=True)
    assert gray.channels == 1 and torch.allclose(gray.image(3), luma, atol=1e-7)
    both = color.transform(gray=True, rgb=True).image(3)
    assert both.shape == (3, *x.shape[1:]) and torch.allclose(both[2:], luma, atol=1e-7)
    assert torch.equal(both[0], both[1])
    g = invgen.dataset("set12")
    rgb = g.transform(rgb=True)
    assert rgb.channels == 3 and rgb.shape is None and torch.equal(rgb.image(0), g.image(0).expand(3, -1, -1))
    assert torch.equal(g.transform(gray=True).image(0), g.image(0))  # gray stays gray
    assert invgen.dataset("mnist").transform(rgb=True).shape == (3, 32, 32)


def test_config_rebuilds_the_view_after_json(data_dir):
    view = invgen.dataset("cbsd68").select(ids=["3096", "12084"]).transform(crop=128).transform(resize=32, gray=True)
    cfg = json.loads(json.dumps(view.config()))
    assert cfg == {
        "name": "cbsd68",
        "options": {"root": None},
        "selection": ["3096", "12084"],
        "transform": [
            {"crop": [128, 128], "resize": None, "gray": False, "rgb": False},
            {"crop": None, "resize": [32, 32], "gray": True, "rgb": False},
        ],
    }
    again = from_config(cfg)
    assert again.ids == view.ids and again.shape == (1, 32, 32) == view.shape
    assert torch.equal(again.image(1), view.image(1))
    mnist = invgen.dataset("mnist", split="train", verify=False).select(count=2, start=5)
    assert mnist.config() == {
        "name": "mnist",
        "options": {"split": "train", "root": None},
        "selection": ["00005", "00006"],
        "transform": [],
    }


# --- checksums and missing data ----------------------------------------------------------------------------------
def _copy_set5(data_dir: Path, root: Path) -> Path:
    shutil.copytree(data_dir / "eval" / "Set5" / "HR", root / "eval" / "Set5" / "HR")
    return root / "eval" / "Set5" / "HR"


def test_tampered_file_fails_verification(data_dir, tmp_path):
    clean = tmp_path / "clean"
    _copy_set5(data_dir, clean)
    assert len(invgen.dataset("set5", root=clean)) == 5

    bad = tmp_path / "bad"
    target = _copy_set5(data_dir, bad) / "bird.png"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    expected = "1b20dfba6635f99d501144a949e1568363a91cc08231dc92d9537f883c23c9a8"
    actual = hashlib.sha256(bytes(raw)).hexdigest()
    with pytest.raises(DataChecksumError) as info:
        invgen.dataset("set5", root=bad)
    message = str(info.value)
    assert "bird.png" in message and expected in message and actual in message
    assert len(invgen.dataset("set5", root=bad, verify=False)) == 5  # verify=False reads it anyway


def test_missing_data_errors(data_dir, tmp_path, monkeypatch):
    root = tmp_path / "partial"
    (_copy_set5(data_dir, root) / "head.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"1 of 5 files missing .*INVGEN_DATA.*'eval/Set5/HR/head\.png'"):
        invgen.dataset("set5", root=root)
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        invgen.dataset("bsd68", root=tmp_path / "nowhere")
    monkeypatch.delenv("INVGEN_DATA")
    with pytest.raises(DataNotFoundError, match="set INVGEN_DATA"):
        invgen.dataset("mnist")


# --- folder ------------------------------------------------------------------------------------------------------
def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    (im.convert(mode) if mode else im).save(path)


def test_folder_of_mixed_files(tmp_path):
    gray = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    _save(tmp_path / "b.png", gray)
    _save(tmp_path / "a.png", rgb)
    _save(tmp_path / "c16.png", np.array([[0, 32768], [65535, 1000]], dtype=np.uint16))
    _save(tmp_path / "d.png", rgb, mode="P")
    _save(tmp_path / "e.png", np.dstack([rgb, np.full((2, 2), 7, np.uint8)]))  # RGBA
    (tmp_path / "notes.txt").write_text("not an image")
    ds = invgen.dataset("folder", path=tmp_path)
    assert ds.ids == ["a", "b", "c16", "d", "e"] and ds.channels == 3 and ds.shape == (3, 2, 2)
    assert torch.equal(ds.image(0)[0], torch.ones(2, 2)) and ds.image(0)[1:].abs().max() == 0
    assert torch.equal(ds.image(1), torch.from_numpy(gray).float().div(255).expand(3, -1, -1))
    assert torch.allclose(ds.image(2)[0], torch.tensor([[0, 32768 / 65535], [1.0, 1000 / 65535]]), atol=1e-7)
    assert torch.equal(ds.image(3), ds.image(0)) and torch.equal(ds.image(4), ds.image(0))
    cfg = ds.config()
    assert cfg["name"] == "folder" and cfg["options"]["path"] == str(tmp_path.resolve())
    assert from_config(json.loads(json.dumps(cfg))).ids == ds.ids


def test_folder_gray_sizes_recursive_and_errors(tmp_path):
    _save(tmp_path / "x1.png", np.full((4, 6), 128, np.uint8))
    _save(tmp_path / "x2.png", np.full((5, 3), 64, np.uint8))
    _save(tmp_path / "sub" / "y.png", np.full((4, 6), 32, np.uint8))
    ds = invgen.dataset("folder", path=tmp_path)
    assert ds.ids == ["x1", "x2"] and ds.channels == 1 and ds.shape is None
    assert ds.image(1).shape == (1, 5, 3) and ds.image(1).mean().item() == pytest.approx(64 / 255, abs=1e-7)
    deep = invgen.dataset("folder", path=tmp_path, recursive=True)
    assert deep.ids == ["sub/y", "x1", "x2"]
    _save(tmp_path / "nested" / "deeper" / "z.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataNotFoundError, match=r"no image file .* \(recursive=False\)"):
        invgen.dataset("folder", path=tmp_path / "nested")
    assert invgen.dataset("folder", path=tmp_path / "nested", recursive=True).ids == ["deeper/z"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=r"no image file .* in '.*empty'"):
        invgen.dataset("folder", path=empty)
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        invgen.dataset("folder", path=tmp_path / "missing")


def test_folder_verification(tmp_path):
    _save(tmp_path / "one.png", np.full((3, 3), 9, np.uint8))
    good = hashlib.sha256((tmp_path / "one.png").read_bytes()).hexdigest()
    assert len(invgen.dataset("folder", path=tmp_path, verify=True, checksums={"one.png": good})) == 1
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  one.png\n")
    with pytest.raises(DataChecksumError, match=f"has sha256 {good}, expected {'0' * 64}"):
        invgen.dataset("folder", path=tmp_path, verify=True, checksums=sums)
    with pytest.raises(DataChecksumError, match="no checksum given for 1 of 1 files"):
        invgen.dataset("folder", path=tmp_path, verify=True, checksums={})
    with pytest.raises(ValueError, match="needs checksums="):
        invgen.dataset("folder", path=tmp_path, verify=True)


def test_scikit_image_photos_read_offline_exactly():
    import skimage.data

    from invgen.data.sets import PHOTOS, photo, read_image

    cam = read_image("skimage:camera")
    assert cam.shape == (1, 512, 512) and cam.dtype == torch.float32
    torch.testing.assert_close(cam[0], torch.from_numpy(skimage.data.camera()).float() / 255, rtol=0, atol=0)
    coffee = photo("coffee")
    assert coffee.shape == (3, 400, 600)
    # channels=1 is the ITU-R 601 luma, as for files
    luma = read_image("skimage:coffee", channels=1)
    expected = 0.299 * coffee[0] + 0.587 * coffee[1] + 0.114 * coffee[2]
    torch.testing.assert_close(luma[0], expected, rtol=0, atol=1e-6)
    assert read_image("skimage:moon", channels=3).shape == (3, 512, 512)
    assert len(PHOTOS) == 12 and all(photo(n).min() >= 0 and photo(n).max() <= 1 for n in ("page", "rocket"))
    with pytest.raises(ValueError, match="unknown scikit-image photo 'lena'; expected one of astronaut"):
        read_image("skimage:lena")
