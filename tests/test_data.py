"""Tests for hvit_sweeps.data: readers, splits and both loader kinds (CPU only, small data)."""

from __future__ import annotations

import pickle
import struct
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torchvision.datasets import cifar as tv_cifar

from hvit_sweeps.config import DataConfig, build_config
from hvit_sweeps.data import fashion_mnist, folder
from hvit_sweeps.data.describe import describe_dataset
from hvit_sweeps.data.info import CIFAR100_CLASSES, DatasetInfo
from hvit_sweeps.data.loaders import make_loaders
from hvit_sweeps.data.splits import DatasetSplits, Split, _stratified_split, load_dataset
from hvit_sweeps.errors import HvitError

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- fixtures


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, like the real CIFAR files (made by Python 2's cPickle).

    Python 3 pickles bytes as bytes, which torchvision's pickle.load(encoding="latin1")
    would keep as b"data" keys; Python 2 strings load as "data", as in the real files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_python2_str


def _write_python2_pickle(path: Path, content: dict) -> None:
    with path.open("wb") as handle:
        _Python2Pickler(handle, protocol=2).dump(content)


def _cifar_batch(count: int, *, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),  # rows: RRR..GGG..BBB
        b"fine_labels": [k % 100 for k in range(count)],
        b"coarse_labels": [k % 20 for k in range(count)],
        b"filenames": [f"img_{k}.png".encode() for k in range(count)],
    }


@pytest.fixture
def cifar_root(tmp_path: Path) -> tuple[Path, dict, dict]:
    """A tiny cifar-100-python/ folder in the real pickle format."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = _cifar_batch(300, seed=0), _cifar_batch(100, seed=1)
    meta = {
        b"fine_label_names": [name.encode() for name in CIFAR100_CLASSES],
        b"coarse_label_names": [f"super_{k}".encode() for k in range(20)],
    }
    for name, content in (("train", train), ("test", test), ("meta", meta)):
        _write_python2_pickle(folder / name, content)
    return tmp_path, train, test


def _write_tree(root: Path, split: str, classes: dict[str, int], *, mode: str = "RGB") -> None:
    for k, (name, count) in enumerate(classes.items()):
        (root / split / name).mkdir(parents=True)
        for i in range(count):
            colour = (40 * k + i, 10 * i, 200) if mode == "RGB" else 40 * k + i
            Image.new(mode, (20, 20), colour).save(root / split / name / f"{i}.png")


def _folder(root: Path) -> DataConfig:
    return DataConfig(dataset=f"folder:{root}", val_split=0.34)


def _coded_splits(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int = 100) -> DatasetSplits:
    """Splits over hand-made images, with mean 0 / std 1 so x * 255 gives the pixels back."""
    channels = images.shape[1]
    info = DatasetInfo(
        name="coded",
        num_classes=num_classes,
        channels=channels,
        image_size=images.shape[-1],
        class_names=tuple(str(k) for k in range(num_classes)),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        synthetic=True,
        hflip=True,
    )
    split = Split(images=images, labels=labels)
    return DatasetSplits(info=info, train=split, val=split, test=split, fingerprint="-")


def _label_coded(count: int) -> DatasetSplits:
    """Channel 0 is the constant label * 2, channel 1 the sample index: content ties to label."""
    labels = torch.arange(count) % 100
    images = torch.zeros((count, 2, 32, 32), dtype=torch.uint8)
    images[:, 0] = (labels * 2).view(-1, 1, 1).to(torch.uint8)
    images[:, 1] = torch.arange(count).view(-1, 1, 1).to(torch.uint8)
    return _coded_splits(images, labels)


def _position_coded(count: int) -> DatasetSplits:
    """Channel 0 encodes the column (10 + 5x), channel 1 the row (10 + 5y); padding stays 0."""
    ramp = (10 + 5 * torch.arange(32)).to(torch.uint8)
    image = torch.stack([ramp.view(1, 32).expand(32, 32), ramp.view(32, 1).expand(32, 32)])
    return _coded_splits(image.expand(count, 2, 32, 32).contiguous(), torch.arange(count) % 100)


def _offsets(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dy, flipped) of each crop of a position-coded batch."""
    pixels = (x * 255).round().long()
    row = pixels[:, 0, 16, :]  # columns 4..27 are never padding, whatever the offset
    flipped = row[:, 4] > row[:, 27]
    unflipped = torch.where(flipped[:, None], row.flip(1), row)
    return (unflipped[:, 4] - 10) // 5, (pixels[:, 1, 4, 16] - 10) // 5, flipped


def _loader_config(kind: str, **options: object) -> DataConfig:
    return DataConfig(dataset="synthetic", loader=kind, num_workers=0, **options)


# --------------------------------------------------------------------------- config


# An unknown dataset name is rejected with the list of valid ones.
def test_config_rejects_unknown_dataset() -> None:
    with pytest.raises(ValidationError, match="cifar100, cifar10, fashion-mnist, synthetic or folder:PATH"):
        DataConfig(dataset="imagenet")


# image_size is only accepted for folder: datasets.
def test_config_image_size_only_for_folders() -> None:
    with pytest.raises(ValidationError, match="folder"):
        DataConfig(dataset="cifar100", image_size=64)
    assert DataConfig(dataset="folder:/x", image_size=64).image_size == 64


# describe_dataset gives static CIFAR-100 facts without any files.
def test_describe_cifar100_is_static(tmp_path: Path) -> None:
    info = describe_dataset(DataConfig(data_dir=tmp_path / "absent"))
    assert (info.num_classes, info.channels, info.image_size) == (100, 3, 32)
    assert len(info.class_names) == 100 and info.class_names == tuple(sorted(info.class_names))
    assert info.label == "cifar100" and not info.synthetic


# --------------------------------------------------------------------------- CIFAR


# A real-format cifar-100-python/ folder round-trips pixels and labels exactly.
def test_cifar100_reads_real_pickle_format(cifar_root: tuple[Path, dict, dict]) -> None:
    root, train, test = cifar_root
    splits = load_dataset(DataConfig(data_dir=root, download=False), seed=0)
    assert splits.info.num_classes == 100
    assert splits.sizes == {"train": 200, "val": 100, "test": 100}  # 3 per class: 1 to val
    written = test[b"data"]
    assert splits.test.images.dtype == torch.uint8 and splits.test.images.shape == (100, 3, 32, 32)
    assert splits.test.images[0, 0, 0, 1] == written[0, 1]  # (c=0, y=0, x=1)
    assert splits.test.images[0, 1, 2, 3] == written[0, 1024 + 2 * 32 + 3]  # (c=1, y=2, x=3)
    assert splits.test.labels.tolist() == test[b"fine_labels"]
    label_of = {row.tobytes(): label for row, label in zip(train[b"data"], train[b"fine_labels"], strict=True)}
    for split in (splits.train, splits.val):
        for image, label in zip(split.images, split.labels, strict=True):
            assert label_of[image.flatten().numpy().tobytes()] == label


# A missing CIFAR folder with downloading off is a clean HvitError naming the folder.
def test_cifar100_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(HvitError, match="cifar-100-python.*downloading is off"):
        load_dataset(DataConfig(data_dir=tmp_path, download=False), seed=0)


# A failed download (no network) is a clean HvitError too.
def test_cifar100_missing_download_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(HvitError, match="cifar-100-python.*could not be downloaded"):
        load_dataset(DataConfig(data_dir=tmp_path, download=True), seed=0)


# A corrupt pickle is an HvitError naming the broken file.
def test_cifar100_corrupt_pickle_names_file(cifar_root: tuple[Path, dict, dict]) -> None:
    root, _, _ = cifar_root
    (root / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(HvitError, match=r"cifar-100-python/train is not a readable CIFAR-100 file"):
        load_dataset(DataConfig(data_dir=root, download=False), seed=0)


# --------------------------------------------------------------------------- Fashion-MNIST


# Debian's Fashion-MNIST idx files load as 60000 train+val / 10000 test, 1x28x28, 10 classes.
def test_fashion_mnist_from_debian_files(tmp_path: Path) -> None:
    if not fashion_mnist.FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip("Debian's fashion-mnist files are not installed")
    splits = load_dataset(DataConfig(dataset="fashion-mnist", data_dir=tmp_path, download=False), seed=0)
    assert splits.sizes["train"] + splits.sizes["val"] == 60000 and splits.sizes["test"] == 10000
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.info.num_classes == 10
    assert splits.test.labels.unique().tolist() == list(range(10))


# Fashion-MNIST found nowhere names both places it looked.
def test_fashion_mnist_missing_names_both_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(HvitError, match=r"FashionMNIST/raw/ nor .*system/"):
        load_dataset(DataConfig(dataset="fashion-mnist", data_dir=tmp_path, download=False), seed=0)


# --------------------------------------------------------------------------- synthetic


# Synthetic data has CIFAR-100 shapes, says it is synthetic, and is the same every time.
def test_synthetic_shapes_and_determinism() -> None:
    config = DataConfig(dataset="synthetic", max_train_samples=500, max_eval_samples=200)
    first, second = load_dataset(config, seed=0), load_dataset(config, seed=0)
    assert first.sizes == {"train": 400, "val": 100, "test": 200}  # 5 per class: 1 each to val
    assert first.train.images.shape == (400, 3, 32, 32) and first.train.images.dtype == torch.uint8
    assert first.info.num_classes == 100 and first.info.synthetic and "synthetic" in first.info.label
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 16
    assert load_dataset(config, seed=1).fingerprint != first.fingerprint  # another split


# Synthetic classes are learnable: nearest class mean beats chance by far.
def test_synthetic_is_learnable() -> None:
    splits = load_dataset(DataConfig(dataset="synthetic", max_train_samples=1000, max_eval_samples=200), seed=0)
    train = splits.train.images.float().flatten(1)
    means = torch.stack([train[splits.train.labels == k].mean(0) for k in range(100)])
    guesses = torch.cdist(splits.test.images.float().flatten(1), means).argmin(1)
    assert (guesses == splits.test.labels).float().mean() > 0.5


# --------------------------------------------------------------------------- split


# The val split is stratified, deterministic per seed, seed-dependent, disjoint and complete.
def test_stratified_split_properties() -> None:
    sizes = [2, 3, 7, 10, 25, 40]
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    pool = Split(images=torch.arange(len(labels)).view(-1, 1, 1, 1), labels=labels)  # pixel = index
    train, val = _stratified_split(pool, 0.2, seed=3)
    for k, n in enumerate(sizes):
        assert abs(int((val.labels == k).sum()) - round(n * 0.2)) <= 1

    def ids(split: Split) -> list[int]:
        return split.images.flatten().tolist()

    assert not set(ids(train)) & set(ids(val)) and sorted(ids(train) + ids(val)) == list(range(len(labels)))
    assert ids(_stratified_split(pool, 0.2, seed=3)[1]) == ids(val)
    assert ids(_stratified_split(pool, 0.2, seed=4)[1]) != ids(val)


# max_*_samples caps give exactly that many samples, spread over the classes.
def test_max_samples_caps_are_exact_and_stratified(cifar_root: tuple[Path, dict, dict]) -> None:
    root, _, _ = cifar_root
    config = DataConfig(data_dir=root, download=False, max_train_samples=200, max_eval_samples=50, val_split=0.5)
    splits = load_dataset(config, seed=0)
    assert splits.sizes == {"train": 100, "val": 50, "test": 50}
    assert splits.train.labels.unique().numel() == 100 and max(Counter(splits.test.labels.tolist()).values()) == 1


# --------------------------------------------------------------------------- folder


# A folder tree loads resized to 32 with sorted class names; val/ is used as given.
def test_folder_loads_and_uses_val_dir(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", {"cat": 6, "ant": 6, "bee": 6})
    splits = load_dataset(_folder(tmp_path), seed=0)
    assert splits.info.class_names == ("ant", "bee", "cat") and splits.info.name == f"folder:{tmp_path}"
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.sizes["train"] + splits.sizes["val"] == 18
    assert splits.test is splits.val  # no test/: val doubles as test
    _write_tree(tmp_path, "val", {"cat": 2, "ant": 2, "bee": 2})
    with_val = load_dataset(_folder(tmp_path), seed=0)
    assert with_val.sizes == {"train": 18, "val": 6, "test": 6}
    assert describe_dataset(_folder(tmp_path)).num_classes == 3


# An all-grayscale folder becomes single-channel, with stats measured from train.
def test_folder_grayscale_is_one_channel(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", {"a": 3, "b": 3}, mode="L")
    splits = load_dataset(_folder(tmp_path), seed=0)
    assert splits.info.channels == 1 and splits.train.images.shape[1] == 1
    assert describe_dataset(_folder(tmp_path)).channels == 1
    assert 0 < splits.info.mean[0] < 1


# describe_dataset scans a folder once per process, however many configs ask (a study builds one per trial).
def test_describe_folder_scans_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tree(tmp_path, "train", {"ant": 2, "bee": 2})
    scanned: list[Path] = []
    scan = folder._scan_folder_tree

    def counting_scan(root: Path) -> folder._FolderTree:
        scanned.append(root)
        return scan(root)

    monkeypatch.setattr(folder, "_scan_folder_tree", counting_scan)
    infos = {describe_dataset(_folder(tmp_path)) for _ in range(3)}
    configs = [build_config({"data.dataset": f"folder:{tmp_path}"}) for _ in range(3)]
    assert len(infos) == 1 and len(scanned) == 1
    assert {config.model.num_classes for config in configs} == {2}


# Each folder problem is one HvitError with a distinctive phrase.
@pytest.mark.parametrize(
    ("arrange", "phrase"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "has no train/ folder"),
        (lambda root: (root / "train").mkdir(parents=True), "has no class folders"),
        (lambda root: (root / "train" / "cat").mkdir(parents=True), "has no images"),
    ],
)
def test_folder_layout_errors(tmp_path: Path, arrange, phrase: str) -> None:
    root = tmp_path / "images"
    arrange(root)
    with pytest.raises(HvitError, match=phrase):
        load_dataset(_folder(root), seed=0)


# val/ with other class folders than train/ names the missing class.
def test_folder_val_classes_must_match(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", {"ant": 2, "bee": 2})
    _write_tree(tmp_path, "val", {"ant": 2})
    with pytest.raises(HvitError, match="missing: bee"):
        load_dataset(_folder(tmp_path), seed=0)


# An unreadable image is an HvitError naming the file.
def test_folder_unreadable_image_names_file(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", {"ant": 2})
    (tmp_path / "train" / "ant" / "broken.png").write_bytes(b"garbage bytes")
    with pytest.raises(HvitError, match="broken.png"):
        load_dataset(_folder(tmp_path), seed=0)


# --------------------------------------------------------------------------- loaders


# loader="auto" on a CPU device picks the device loader: batched augmentation, no worker processes.
def test_auto_loader_on_cpu_is_the_device_loader() -> None:
    assert make_loaders(_label_coded(32), _loader_config("auto"), device=CPU, seed=0).kind == "device"


# Without augmentation both kinds yield the same samples per epoch, labels aligned with images.
@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_loaders_yield_every_sample_with_its_label(kind: str) -> None:
    splits = _label_coded(96)
    loaders = make_loaders(splits, _loader_config(kind, augment="none", batch_size=32), device=CPU, seed=0)
    seen = []
    for x, y in loaders.train:
        pixels = (x * 255).round().long()
        assert torch.equal(pixels[:, 0], (2 * y).view(-1, 1, 1).expand(-1, 32, 32))
        seen += pixels[:, 1, 0, 0].tolist()
    assert sorted(seen) == list(range(96))


# With augment="none" the two kinds give identical (unshuffled) eval batches.
def test_loader_kinds_normalize_identically() -> None:
    splits = load_dataset(DataConfig(dataset="synthetic", max_train_samples=100, max_eval_samples=50), seed=0)
    batches = {
        kind: list(make_loaders(splits, _loader_config(kind, augment="none", batch_size=16), device=CPU, seed=0).val)
        for kind in ("cpu", "device")
    }
    for (x_cpu, y_cpu), (x_dev, y_dev) in zip(batches["cpu"], batches["device"], strict=True):
        assert torch.equal(x_cpu, x_dev) and torch.equal(y_cpu, y_dev)


# Basic augmentation crops uniformly over offsets 0..8 and flips about half the samples, in both kinds.
@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_basic_augment_crop_and_flip_statistics(kind: str) -> None:
    loaders = make_loaders(_position_coded(100), _loader_config(kind, batch_size=100), device=CPU, seed=0)
    dx, dy, flipped = (
        torch.cat(parts) for parts in zip(*(_offsets(x) for _ in range(9) for x, _ in loaders.train), strict=True)
    )
    assert len(dx) == 900 and 0.4 < flipped.float().mean() < 0.6
    for offsets in (dx, dy):
        counts = torch.bincount(offsets, minlength=9)
        assert counts.numel() == 9 and counts.min() > 50 and counts.max() < 150  # about 100 each
    x, _ = next(iter(loaders.val))
    dx, dy, flipped = _offsets(x)
    assert (dx == 4).all() and (dy == 4).all() and not flipped.any()  # eval is not augmented


# Train batches have one static shape (drop_last); val keeps every sample.
@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_train_drops_last_val_keeps_all(kind: str) -> None:
    loaders = make_loaders(_label_coded(50), _loader_config(kind, batch_size=16), device=CPU, seed=0)
    assert len(loaders.train) == 3 and [x.shape[0] for x, _ in loaders.train] == [16, 16, 16]
    assert len(loaders.val) == 4 and [x.shape[0] for x, _ in loaders.val] == [16, 16, 16, 2]
    small = make_loaders(_label_coded(10), _loader_config(kind, batch_size=16), device=CPU, seed=0)
    assert [x.shape[0] for x, _ in small.train] == [10]  # smaller than a batch: one batch of all


# MixUp/CutMix give train soft targets that sum to 1; eval labels stay integers.
@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_mixing_gives_soft_targets(kind: str) -> None:
    config = _loader_config(kind, batch_size=16, mixup_alpha=0.4, cutmix_alpha=1.0)
    loaders = make_loaders(_label_coded(32), config, device=CPU, seed=0)
    for _, y in loaders.train:
        assert y.shape == (16, 100) and y.dtype == torch.float32
        assert torch.allclose(y.sum(1), torch.ones(16))
    assert next(iter(loaders.val))[1].dtype == torch.int64


# Same seed, same augmented batches, for each kind and policy (CPU: whatever the worker count).
@pytest.mark.parametrize(
    ("kind", "augment"), [("cpu", "trivialaugment"), ("device", "trivialaugment"), ("device", "randaugment")]
)
def test_augmented_batches_are_reproducible(kind: str, augment: str) -> None:
    splits = load_dataset(DataConfig(dataset="synthetic", max_train_samples=64, max_eval_samples=10), seed=0)

    def first_batch(config: DataConfig, seed: int) -> torch.Tensor:
        return next(iter(make_loaders(splits, config, device=CPU, seed=seed).train))[0]

    config = _loader_config(kind, augment=augment, batch_size=32, mixup_alpha=0.2)
    first = first_batch(config, 0)
    assert first.shape == (32, 3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, first_batch(config, 0)) and not torch.equal(first, first_batch(config, 1))
    if kind == "cpu":
        assert torch.equal(first, first_batch(config.model_copy(update={"num_workers": 2}), 0))


# set_epoch(e) makes a fresh loader draw exactly the e-th pass of a loader that ran from epoch 1.
@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_set_epoch_replays_that_epochs_batches(kind: str) -> None:
    splits = load_dataset(DataConfig(dataset="synthetic", max_train_samples=64, max_eval_samples=10), seed=0)
    config = _loader_config(kind, augment="trivialaugment", batch_size=16, mixup_alpha=0.2)
    straight = make_loaders(splits, config, device=CPU, seed=0).train
    epochs = [list(straight) for _ in range(3)]
    assert not torch.equal(epochs[1][0][0], epochs[2][0][0])  # each epoch draws anew
    resumed = make_loaders(splits, config, device=CPU, seed=0).train
    resumed.set_epoch(3)
    for (x, y), (x_straight, y_straight) in zip(resumed, epochs[2], strict=True):
        assert torch.equal(x, x_straight) and torch.equal(y, y_straight)
