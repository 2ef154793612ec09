"""Evaluation by real training: build the NB201 network, train it, measure it.

:class:`TrainEvaluator` trains the network of an architecture with SGD (momentum, weight decay,
cosine schedule per step) on a real dataset (:mod:`paretune.objectives.data`), reports the
validation accuracy after every epoch, and returns

- ``accuracy`` / ``test_accuracy``: final validation / test accuracy, % (``measured``);
- ``params``, ``flops``: trainable parameters and multiply-adds at batch 1, millions
  (``measured``, see :mod:`paretune.objectives.measure`);
- ``latency``: median latency at ``latency_batch_size`` on the trial's device, ms (``measured``);
- ``energy``: per-image energy from :func:`~paretune.objectives.measure.estimate_energy`, mJ
  (``estimated``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from paretune.objectives.base import Evaluation, MetricInfo, ReportFn
from paretune.objectives.data import DATASETS, Dataset, Split, load_dataset
from paretune.objectives.measure import (
    EnergyCoefficients,
    count_flops,
    count_params,
    estimate_energy,
    measure_latency,
)
from paretune.spaces.base import Arch
from paretune.spaces.nb201 import NB201Space

_EVAL_BATCH = 512

METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("%", "max", "measured"),
    "test_accuracy": MetricInfo("%", "max", "measured"),
    "params": MetricInfo("M", "min", "measured"),
    "flops": MetricInfo("M", "min", "measured"),
    "latency": MetricInfo("ms", "min", "measured"),
    "energy": MetricInfo("mJ", "min", "estimated"),
}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked to be usable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device={device!r} is not a torch device (e.g. cpu, cuda, cuda:1, auto)"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here (use cpu or auto)")
    return dev


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on ``split``, in percent (eval mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(split), _EVAL_BATCH):
        x = split.x[i : i + _EVAL_BATCH].to(device, non_blocking=True)
        y = split.y[i : i + _EVAL_BATCH].to(device, non_blocking=True)
        correct += int((model(x).argmax(dim=1) == y).sum())
    return 100.0 * correct / max(len(split), 1)


class TrainEvaluator:
    """Trains the NB201 network of an architecture on a real dataset and measures it.

    Args:
        dataset: ``digits`` (default, 8x8), ``mnist`` (28x28) or ``cifar10`` (32x32).
        data_path: folder of the CIFAR-10 python batches (``cifar10`` only).
        epochs: training epochs (at least 1).
        batch_size: training mini-batch size.
        lr: initial SGD learning rate (cosine-annealed to 0 over all steps).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        channels: ``C`` of the network.
        cells_per_stage: ``N`` of the network.
        device: ``cpu``, ``cuda``, ``cuda:K`` or ``auto`` (CUDA when available).
        threads: ``torch.set_num_threads`` for the trial; ``None`` leaves it alone.
        latency_batch_size: batch size of the latency measurement.
        latency_warmup: untimed forward passes before timing.
        latency_repeats: timed forward passes (the median is reported).
        energy_coefficients: :class:`EnergyCoefficients` or a dict of its fields.
        seed: seeds the initial weights, the batch order and the data split.
        val_fraction: validation fraction of the dataset.
        test_fraction: test fraction of the dataset (not for ``cifar10``).
    """

    def __init__(
        self,
        dataset: str = "digits",
        data_path: str | os.PathLike | None = None,
        epochs: int = 3,
        batch_size: int = 64,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        channels: int = 8,
        cells_per_stage: int = 1,
        device: str = "cpu",
        threads: int | None = None,
        latency_batch_size: int = 1,
        latency_warmup: int = 5,
        latency_repeats: int = 20,
        energy_coefficients: EnergyCoefficients | Mapping[str, float] | None = None,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
    ) -> None:
        if dataset not in DATASETS:
            raise ValueError(
                f"TrainEvaluator: unknown dataset {dataset!r} (available: {list(DATASETS)})"
            )
        for field, value, low in (
            ("epochs", epochs, 1),
            ("batch_size", batch_size, 2),
            ("channels", channels, 1),
            ("cells_per_stage", cells_per_stage, 1),
            ("latency_batch_size", latency_batch_size, 1),
            ("latency_warmup", latency_warmup, 0),
            ("latency_repeats", latency_repeats, 1),
        ):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"TrainEvaluator: {field}={value!r} must be an integer >= {low}")
        if threads is not None and (int(threads) != threads or threads < 1):
            raise ValueError(f"TrainEvaluator: threads={threads!r} must be an integer >= 1 or None")
        for field, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainEvaluator: {field}={value!r} must be a finite number >= 0")
        if energy_coefficients is None or isinstance(energy_coefficients, EnergyCoefficients):
            self.energy_coefficients = energy_coefficients or EnergyCoefficients()
        else:
            allowed = set(EnergyCoefficients.__dataclass_fields__)
            unknown = set(energy_coefficients) - allowed
            if unknown:
                raise ValueError(
                    f"TrainEvaluator: energy_coefficients has unknown fields {sorted(unknown)} "
                    f"(allowed: {sorted(allowed)})"
                )
            self.energy_coefficients = EnergyCoefficients(**energy_coefficients)
        self.dataset = dataset
        self.data_path = data_path
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.channels = int(channels)
        self.cells_per_stage = int(cells_per_stage)
        self.device = resolve_device(device)
        self.threads = threads
        self.latency_batch_size = int(latency_batch_size)
        self.latency_warmup = int(latency_warmup)
        self.latency_repeats = int(latency_repeats)
        self.seed = int(seed)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.space = NB201Space()

    def metrics(self) -> Mapping[str, MetricInfo]:
        """accuracy, test_accuracy, params, flops, latency (measured), energy (estimated)."""
        return dict(METRICS)

    def data(self) -> Dataset:
        """The dataset splits (loaded once per process)."""
        return load_dataset(
            self.dataset,
            path=self.data_path,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
        )

    def build(self, arch: Arch, data: Dataset | None = None) -> nn.Module:
        """The untrained network of ``arch`` for the dataset's shape (seeded by ``seed``)."""
        data = data or self.data()
        torch.manual_seed(self.seed)
        return self.space.build(
            arch,
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            input_size=data.input_size,
            in_channels=data.in_channels,
            num_classes=data.num_classes,
        )

    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """Train and measure ``arch``.

        Args:
            arch: an architecture of the NB201 space.
            report: called after every epoch with ``accuracy`` (valid, %), the costs
                (``params``, ``flops``, ``latency``, ``energy``, measured before training),
                ``epoch`` (from 1) and ``train_loss``.
            **context: ignored (reserved for e.g. weight inheritance).
        """
        arch = self.space.validate(arch)
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        data = self.data()
        dev = self.device
        model = self.build(arch, data).to(dev)
        generator = torch.Generator().manual_seed(self.seed)

        # Costs first: they do not depend on the weights, and every epoch's report carries them,
        # so a trial stopped early by a scheduler still has complete objective values.
        started = time.perf_counter()
        shape = (1, data.in_channels, data.input_size, data.input_size)
        params = count_params(model)
        flops = count_flops(model, shape)
        example = data.test.x[: self.latency_batch_size]
        latency = measure_latency(
            model,
            example,
            device=dev,
            warmup=self.latency_warmup,
            repeats=self.latency_repeats,
            threads=self.threads,
        )
        bs = len(example)
        # Per image: the weights are read once per batch, the static power lasts the batch.
        energy = estimate_energy(flops, params / bs, latency / bs, self.energy_coefficients)
        measure_time = time.perf_counter() - started
        costs = {"params": params, "flops": flops, "latency": latency, "energy": energy}

        started = time.perf_counter()
        train = data.train
        n = len(train)
        steps_per_epoch = math.ceil(n / self.batch_size)
        opt = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        loss_fn = nn.CrossEntropyLoss()
        val_acc = float("nan")
        train_loss = float("nan")
        for epoch in range(1, self.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=generator)
            total, seen = 0.0, 0
            for i in range(0, n, self.batch_size):
                idx = order[i : i + self.batch_size]
                if len(idx) < 2:  # BatchNorm needs more than one sample
                    sched.step()
                    continue
                x = train.x[idx].to(dev, non_blocking=True)
                y = train.y[idx].to(dev, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            train_loss = total / max(seen, 1)
            val_acc = accuracy(model, data.valid, dev)
            if report is not None:
                report({"accuracy": val_acc, **costs, "epoch": epoch, "train_loss": train_loss})
        train_time = time.perf_counter() - started

        test_acc = accuracy(model, data.test, dev)

        return Evaluation(
            values={
                "accuracy": val_acc,
                "test_accuracy": test_acc,
                **costs,
            },
            sources={name: info.source for name, info in METRICS.items()},
            extras={
                "epochs": self.epochs,
                "train_loss": train_loss,
                "train_time_s": train_time,
                "measure_time_s": measure_time,
                "latency_batch_size": bs,
                "device": str(dev),
            },
        )

    def __repr__(self) -> str:
        return (
            f"TrainEvaluator(dataset={self.dataset!r}, epochs={self.epochs}, channels={self.channels}, "
            f"cells_per_stage={self.cells_per_stage}, device={str(self.device)!r})"
        )
