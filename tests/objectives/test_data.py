"""Real datasets: digits, MNIST-5k and CIFAR-10 python batches, with stratified seeded splits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from paretune.objectives.data import load_dataset


def _check_splits(ds, total: int, classes: int, channels: int, size: int) -> None:
    assert (ds.in_channels, ds.input_size, ds.num_classes) == (channels, size, classes)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == total
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (channels, size, size)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert set(split.y.tolist()) == set(range(classes))


def test_digits_splits_are_stratified_seeded_and_cached():
    ds = load_dataset("digits")
    _check_splits(ds, 1797, 10, 1, 8)
    assert len(ds.valid) == pytest.approx(0.2 * 1797, abs=10)
    assert len(ds.test) == pytest.approx(0.2 * 1797, abs=10)
    assert float(ds.train.x.max()) == 1.0  # 0..16 scaled to [0, 1]
    # stratified: every class holds about the same share of each split
    full = np.bincount(np.concatenate([s.y.numpy() for s in (ds.train, ds.valid, ds.test)]))
    for split in (ds.valid, ds.test):
        share = np.bincount(split.y.numpy(), minlength=10) / full
        assert share.min() > 0.17 and share.max() < 0.23
    assert load_dataset("digits") is ds  # cached per process
    again = load_dataset("digits", seed=0, val_fraction=0.2, test_fraction=0.2)
    assert again is ds
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.test.y, ds.test.y)
    half = load_dataset("digits", val_fraction=0.1, test_fraction=0.5)
    assert len(half.test) == pytest.approx(0.5 * 1797, abs=10)
    assert len(half.valid) == pytest.approx(0.1 * 1797, abs=10)


def test_mnist_is_the_real_5k_subset():
    ds = load_dataset("mnist")
    _check_splits(ds, 5000, 10, 1, 28)
    assert np.bincount(ds.test.y.numpy()).tolist() == [100] * 10


def _write_cifar(folder, per_batch: int = 20, test: int = 10) -> None:
    """Tiny CIFAR-10 python batches in the real format (Python 2 pickles: bytes keys)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        labels = [(b + i) % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(n)  # red channel, top-left pixel: the position in the batch
        data[:, 1024] = 255  # green channel, top-left pixel
        d = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)


def test_cifar10_reads_local_python_batches(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", path=tmp_path, val_fraction=0.2)
    _check_splits(ds, 5 * 20 + 10, 10, 3, 32)
    assert len(ds.test) == 10 and len(ds.valid) == 20
    # test_batch is the test set, in order; channels are laid out R, G, B planes of 32x32
    assert (ds.test.x[:, 0, 0, 0] * 255).round().tolist() == list(range(10))
    assert torch.all(ds.test.x[:, 1, 0, 0] == 1.0)
    assert ds.test.y.tolist() == [(5 + i) % 10 for i in range(10)]
    # the folder holding the batches works too
    assert len(load_dataset("cifar10", path=tmp_path / "cifar-10-batches-py").train) == 80


def test_cifar10_missing_batches_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs the folder holding the python batches"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as info:
        load_dataset("cifar10", path=tmp_path)
    assert "data_batch_1" in str(info.value)


def test_check_data_path_says_what_is_missing_without_reading_data(tmp_path):
    from paretune.objectives.data import check_data_path

    assert check_data_path("digits", None) is None
    assert "needs the folder" in check_data_path("cifar10", None)
    assert "missing ['data_batch_1'" in check_data_path("cifar10", tmp_path)
    _write_cifar(tmp_path / "cifar-10-batches-py")
    assert check_data_path("cifar10", tmp_path) is None


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar10_batches_are_read_as_data_never_unpickled(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "payload-ran"
    with (tmp_path / "data_batch_3").open("wb") as f:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="data_batch_3.*not a CIFAR-10 python batch"):
        load_dataset("cifar10", path=tmp_path)
    assert not marker.exists()


def test_bad_arguments():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'svhn' \(available: \['digits', 'mnist', 'cifar10'\]\)"
    ):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        load_dataset("digits", val_fraction=1.5)
    with pytest.raises(ValueError, match="leaves no training data"):
        load_dataset("digits", val_fraction=0.5, test_fraction=0.5)
