"""Evaluation by real training: build the space's network, train it, measure it.

:class:`TrainEvaluator` trains the network of an architecture (any space with a ``build``:
``nb201`` by default, ``darts``, ``mobilenet``, ``macro``, or a user's space) with SGD (momentum, weight decay,
cosine schedule per step) on a real dataset (:mod:`paretune.objectives.data`), reports the
validation accuracy after every epoch, and returns

================  ====  ===================================================================
metric            unit  meaning (source)
================  ====  ===================================================================
``accuracy``      %     final validation accuracy (``measured``)
``test_accuracy`` %     final test accuracy (``measured``)
``params``        M     trainable parameters (``measured``)
``flops``         M     multiply-adds at batch 1 (``measured``)
``latency``       ms    median latency at batch 1 on the trial's device (``measured``)
``latency_batch`` ms    median latency of one batch of ``latency_batch_size`` (``measured``)
``latency_onnx``  ms    batch-1 latency in ONNX Runtime, only with ``onnx_latency=True``
``energy``        mJ    energy per image over a fixed inference window (total drawn)
``energy_dynamic`` mJ   the same window's energy per image above the device's idle power
``energy_train``  J     energy of the trial's training (all epochs, with validation)
================  ====  ===================================================================

Energy is measured by a meter of :mod:`paretune.objectives.energy` (NVML on a GPU: source
``measured-nvml``; RAPL on a CPU: ``measured-rapl``) where the hardware allows, else estimated
by the analytic model with ``energy_coefficients`` (``estimated``); it is never 0 for
"unsupported". Each evaluation's ``sources`` say which, and its extras say why a meter was not
used (``energy_meter_error``).

``energy_dynamic``: before the inference window the meter reads ``energy_idle_s`` seconds with
no work queued (the device synchronised first); the idle power times the window's length is
subtracted from the window's energy (extras ``energy_idle_w``, ``energy_dynamic_method``). A
result below 0 (work within the meter's noise) is reported as 0 (the raw value in
``energy_dynamic_raw_mj``). The analytic model has no idle part, so when it is used
``energy_dynamic`` equals ``energy``. Choose which is the objective in the config.

Weights: with a ``trial_dir``, the trained ``state_dict`` is saved to ``trial_dir/weights.pt``
with ``weights.json`` (architecture and build settings) beside it. When the proposal's
``meta["parent_checkpoint"]`` names such a file (or its folder), every tensor whose name and
shape match is copied from it before training, except those of edges whose operation differs
from the parent's (they start fresh), and the network trains for ``finetune_epochs``; a missing
or unreadable file falls back to training from scratch (extras ``inherit_error``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretune.objectives.base import Evaluation, MetricInfo, ReportFn
from paretune.objectives.data import DATASETS, Dataset, load_dataset
from paretune.objectives.energy import (
    METER_KINDS,
    POWERCAP_ROOT,
    SOURCE_ESTIMATED,
    EnergyCoefficients,
    EnergyMeter,
    make_energy_meter,
)
from paretune.objectives.measure import (
    count_energy_inputs,
    count_params,
    measure_latency,
)
from paretune.objectives.train_loop import (
    WEIGHTS_FILE,
    WEIGHTS_META_FILE,
    _batch_of,
    accuracy,
    inherit_weights,
    resolve_device,
    train_epochs,
)
from paretune.objectives.train_measure import inference_energy, inference_window
from paretune.spaces.base import Arch, SearchSpace
from paretune.spaces.nb201 import NB201Space


def measure_costs(
    ev: Any, model: nn.Module, data: Dataset
) -> tuple[dict[str, float], dict[str, str], dict[str, Any], Any]:
    """The costs of a built network: params, FLOPs (MMACs), latency and inference energy, their
    sources, extras and the energy model's counts (``ev``: a TrainEvaluator or alike)."""
    shape = (1, data.in_channels, data.input_size, data.input_size)
    counts = count_energy_inputs(model, shape)
    lat, extras = ev._latencies(model, data)
    energies, energy_sources, energy_extras = inference_energy(ev, model, data, counts)
    extras.update(energy_extras)
    costs = {"params": count_params(model), "flops": counts.macs_m, **lat, **energies}
    sources = {name: "measured" for name in costs}
    sources.update(energy_sources)
    return costs, sources, extras, counts


def _builder_params(space: SearchSpace, options: Mapping[str, Any]) -> set[str]:
    """The keyword parameters of ``space.build``; raises ValueError for a space without a
    builder or an option it does not take, naming what is allowed."""
    import inspect

    build = getattr(space, "build", None)
    if not callable(build):
        raise ValueError(
            f"space {space.name!r} has no network builder (build): train it with "
            "evaluator.kind = 'python' and your own function"
        )
    params = inspect.signature(build).parameters
    names = {n for n, p in params.items() if n != "arch" and p.kind is not p.VAR_POSITIONAL}
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(
                f"evaluator.build.{unknown[0]} = {options[unknown[0]]!r}: not a parameter of "
                f"space {space.name!r}'s build (allowed: {', '.join(sorted(names))})"
            )
        fixed = sorted(set(options) & {"input_size", "in_channels", "num_classes"})
        if fixed:
            raise ValueError(
                f"evaluator.build.{fixed[0]}: set by the dataset, not in evaluator.build"
            )
    return names


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("%", "max", "measured"),
    "test_accuracy": MetricInfo("%", "max", "measured"),
    "params": MetricInfo("M", "min", "measured"),
    "flops": MetricInfo("M", "min", "measured"),
    "latency": MetricInfo("ms", "min", "measured"),
    "latency_batch": MetricInfo("ms", "min", "measured"),
    "energy": MetricInfo("mJ", "min", SOURCE_ESTIMATED),
    "energy_dynamic": MetricInfo("mJ", "min", SOURCE_ESTIMATED),
    "energy_train": MetricInfo("J", "min", SOURCE_ESTIMATED),
}
ONNX_METRIC = "latency_onnx"


class TrainEvaluator:
    """Trains the network of an architecture on a real dataset and measures it.

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
        threads: ``torch.set_num_threads`` for the trial (and ONNX Runtime's intra-op threads);
            ``None`` leaves it alone.
        latency_batch_size: batch size of ``latency_batch`` (``latency`` is always batch 1).
        latency_warmup: untimed forward passes before timing.
        latency_repeats: timed forward passes (the median is reported).
        onnx_latency: also measure ``latency_onnx`` through ONNX Runtime.
        energy_meter: ``auto`` (NVML on a GPU, RAPL on a CPU, where available), ``nvml``,
            ``rapl``, ``estimate`` (always the analytic model), or an :class:`EnergyMeter`.
        energy_batch_size: images per batch of the inference energy window.
        energy_batches: batches in the window (after the warm-up; more when needed to last
            ``energy_min_window_s``).
        energy_warmup: untimed batches before the window.
        energy_min_window_s: shortest window, so that a meter's counter has time to move.
        energy_idle_s: length of the idle reading before the window (``energy_dynamic``).
        rapl_root: the powercap folder for RAPL.
        energy_coefficients: :class:`EnergyCoefficients` or a dict of its fields (estimates).
        finetune_epochs: epochs when weights were inherited from a parent; ``None``: ``epochs``.
        save_weights: save ``weights.pt`` / ``weights.json`` to the trial's directory.
        seed: seeds the initial weights, the batch order and the data split.
        val_fraction: validation fraction of the dataset.
        test_fraction: test fraction of the dataset (not for ``cifar10``).
        space: the space's spec ``{"kind": ..., **settings}``; ``None``: NB201.
        build: further keyword arguments of the space's ``build`` (e.g. darts ``layers``,
            mobilenet ``width_mult`` and ``stem_stride``). ``channels``, ``cells_per_stage``
            and the dataset's shape are passed where the builder takes them; darts's
            ``layers`` defaults to ``3 * cells_per_stage``.
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
        onnx_latency: bool = False,
        energy_meter: str | EnergyMeter = "auto",
        energy_batch_size: int = 32,
        energy_batches: int = 20,
        energy_warmup: int = 2,
        energy_min_window_s: float = 0.5,
        energy_idle_s: float = 0.5,
        rapl_root: str | os.PathLike = POWERCAP_ROOT,
        energy_coefficients: EnergyCoefficients | Mapping[str, float] | None = None,
        finetune_epochs: int | None = None,
        save_weights: bool = True,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        space: Mapping[str, Any] | None = None,
        build: Mapping[str, Any] | None = None,
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
            ("energy_batch_size", energy_batch_size, 1),
            ("energy_batches", energy_batches, 1),
            ("energy_warmup", energy_warmup, 0),
        ):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"TrainEvaluator: {field}={value!r} must be an integer >= {low}")
        for field, value in (("threads", threads), ("finetune_epochs", finetune_epochs)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(
                    f"TrainEvaluator: {field}={value!r} must be an integer >= 1 or None"
                )
        for field, value in (
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("energy_min_window_s", energy_min_window_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainEvaluator: {field}={value!r} must be a finite number >= 0")
        if not (isinstance(energy_idle_s, int | float) and 0 < energy_idle_s < math.inf):
            raise ValueError(
                f"TrainEvaluator: energy_idle_s={energy_idle_s!r} must be a finite number > 0"
            )
        if not isinstance(energy_meter, EnergyMeter) and energy_meter not in METER_KINDS:
            raise ValueError(
                f"TrainEvaluator: energy_meter={energy_meter!r} is unknown "
                f"(allowed: {list(METER_KINDS)} or an EnergyMeter)"
            )
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
        if onnx_latency:
            from paretune.objectives.onnx_latency import onnxruntime_available

            ok, why = onnxruntime_available()
            if not ok:
                raise ValueError(f"TrainEvaluator: onnx_latency=True needs ONNX Runtime: {why}")
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
        self.onnx_latency = bool(onnx_latency)
        self.energy_meter = energy_meter
        self.energy_batch_size = int(energy_batch_size)
        self.energy_batches = int(energy_batches)
        self.energy_warmup = int(energy_warmup)
        self.energy_min_window_s = float(energy_min_window_s)
        self.energy_idle_s = float(energy_idle_s)
        self.rapl_root = rapl_root
        self.finetune_epochs = None if finetune_epochs is None else int(finetune_epochs)
        self.save_weights = bool(save_weights)
        self.seed = int(seed)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        if space is None:
            self.space: SearchSpace = NB201Space()
        else:
            from paretune.objectives.python_evaluator import space_from_spec

            self.space = space_from_spec(space)
        self.build_options = dict(build or {})
        self._builder_params = _builder_params(self.space, self.build_options)
        self._meter: tuple[EnergyMeter | None, str] | None = None

    # ------------------------------------------------------------------ metrics
    def meter(self) -> tuple[EnergyMeter | None, str]:
        """The energy meter of this process (resolved once), or ``None`` and why not."""
        if self._meter is None:
            if isinstance(self.energy_meter, EnergyMeter):
                self._meter = (self.energy_meter, "")
            else:
                self._meter = make_energy_meter(
                    self.energy_meter, str(self.device), rapl_root=self.rapl_root
                )
        return self._meter

    def metrics(self) -> Mapping[str, MetricInfo]:
        """The metrics of the module docstring; the energy source is the one this process's
        meter gives (each evaluation's ``sources`` carry the source of its values)."""
        meter, _ = self.meter()
        out = dict(METRICS)
        if meter is not None:
            for name in ("energy", "energy_dynamic", "energy_train"):
                out[name] = MetricInfo(out[name].unit, out[name].direction, meter.source)
        if self.onnx_latency:
            out[ONNX_METRIC] = MetricInfo("ms", "min", "measured")
        return out

    def data(self) -> Dataset:
        """The dataset splits (loaded once per process)."""
        return load_dataset(
            self.dataset,
            path=self.data_path,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
        )

    def build_kwargs(self, data: Dataset) -> dict[str, Any]:
        """The keyword arguments of the space's ``build`` for the dataset's shape."""
        common = {
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
            "input_size": data.input_size,
            "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "layers": 3 * self.cells_per_stage,
        }
        out = {k: v for k, v in common.items() if k in self._builder_params}
        out.update(self.build_options)
        return out

    def build(self, arch: Arch, data: Dataset | None = None) -> nn.Module:
        """The untrained network of ``arch`` for the dataset's shape (seeded by ``seed``)."""
        data = data or self.data()
        torch.manual_seed(self.seed)
        return self.space.build(arch, **self.build_kwargs(data))

    def check_limits(self, objectives: Any, space: Any) -> None:
        """Raise ValueError when the cheapest architecture of ``space`` exceeds a params or
        FLOPs limit (no architecture can then meet it); other limits are not known up front."""
        from paretune.objectives.measure import count_flops
        from paretune.spaces.nb201 import cheapest_arch

        if not isinstance(self.space, NB201Space):
            return  # the cheapest architecture is known for NB201 only
        cheap = [
            (i, o)
            for i, o in enumerate(objectives)
            if o.limit is not None and o.name in ("params", "flops") and o.direction == "min"
        ]
        if not cheap:
            return
        data = self.data()
        model = self.build(cheapest_arch(space), data)
        shape = (1, data.in_channels, data.input_size, data.input_size)
        costs = {"params": count_params(model), "flops": count_flops(model, shape)}
        for i, o in cheap:
            if costs[o.name] > o.limit:
                raise ValueError(
                    f"objectives[{i}].limit = {o.limit!r}: no architecture meets it "
                    f"(the cheapest architecture of the space has {o.name} = {costs[o.name]:.6g})"
                )

    # ------------------------------------------------------------------ measurement
    def _latencies(self, model: nn.Module, data: Dataset) -> tuple[dict[str, float], dict]:
        dev = self.device
        kw = {"device": dev, "warmup": self.latency_warmup, "repeats": self.latency_repeats}
        one = data.test.x[:1]
        values = {"latency": measure_latency(model, one, threads=self.threads, **kw)}
        extras: dict[str, Any] = {"latency_batch_size": self.latency_batch_size}
        if self.latency_batch_size == 1:
            values["latency_batch"] = values["latency"]
        else:
            batch = _batch_of(data.test.x, self.latency_batch_size)
            values["latency_batch"] = measure_latency(model, batch, threads=self.threads, **kw)
        if self.onnx_latency:
            from paretune.objectives.onnx_latency import measure_onnx_latency

            values[ONNX_METRIC], extras["latency_onnx_provider"] = measure_onnx_latency(
                model, one, threads=self.threads or torch.get_num_threads(), **kw
            )
        return values, extras

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """Train and measure ``arch``.

        Args:
            arch: an architecture of the NB201 space.
            report: called after every epoch with ``accuracy`` (valid, %), the costs measured
                before training (``params``, ``flops``, ``latency``, ``latency_batch``,
                ``energy``, ``energy_dynamic``, and ``latency_onnx`` when on), ``energy_train``
                so far, ``epoch`` (from 1) and ``train_loss``.
            **context: ``meta`` (the proposal's metadata: ``parent_checkpoint`` names weights to
                inherit; also accepted directly) and ``trial_dir`` (where to save the weights).
        """
        arch = self.space.validate(arch)
        meta = context.get("meta") or {}
        checkpoint = meta.get("parent_checkpoint", context.get("parent_checkpoint"))
        trial_dir = context.get("trial_dir")
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        data = self.data()
        dev = self.device
        model = self.build(arch, data).to(dev)

        # Costs first: they do not depend on the weights, and every epoch's report carries them,
        # so a trial stopped early by a scheduler still has complete objective values.
        started = time.perf_counter()
        costs, cost_sources, extras, counts = measure_costs(self, model, data)
        measure_time = time.perf_counter() - started
        sources = {"accuracy": "measured", "test_accuracy": "measured", **cost_sources}
        energy_source = sources["energy"]

        inherited, why = 0, None
        if checkpoint:
            inherited, why = inherit_weights(model, checkpoint, arch)
        epochs = self.epochs
        if inherited and self.finetune_epochs is not None:
            epochs = self.finetune_epochs
        extras.update(inherited=bool(inherited), inherited_tensors=int(inherited))
        if why is not None:
            extras["inherit_error"] = why

        val_acc, train_loss, energy_train, sources["energy_train"], train_time = train_epochs(
            self, model, data, epochs, costs, counts, energy_source, extras, report
        )

        test_acc = accuracy(model, data.test, dev)
        if trial_dir is not None and self.save_weights:
            try:
                extras["weights_path"] = str(
                    self._save_weights(
                        model, arch, data, trial_dir, epochs, checkpoint if inherited else None
                    )
                )
            except (OSError, RuntimeError) as exc:
                extras["weights_error"] = f"{type(exc).__name__}: {exc}"

        return Evaluation(
            values={
                "accuracy": val_acc,
                "test_accuracy": test_acc,
                **costs,
                "energy_train": energy_train,
            },
            sources=sources,
            extras={
                "epochs": epochs,
                "train_loss": train_loss,
                "train_time_s": train_time,
                "measure_time_s": measure_time,
                "device": str(dev),
                **extras,
            },
        )

    def _save_weights(
        self,
        model: nn.Module,
        arch: Arch,
        data: Dataset,
        trial_dir: str | os.PathLike,
        epochs: int,
        parent: str | None,
    ) -> Path:
        out = Path(trial_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        tmp = out / f".{WEIGHTS_FILE}.tmp"
        torch.save(state, tmp)
        tmp.replace(out / WEIGHTS_FILE)
        meta = {
            "arch": self.space.encode(arch),
            "arch_indices": list(arch),
            "space": self.space.name,
            "build": self.build_kwargs(data),
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
            "input_size": data.input_size,
            "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "dataset": self.dataset,
            "epochs": epochs,
            "seed": self.seed,
            "parent_checkpoint": None if parent is None else str(parent),
        }
        (out / WEIGHTS_META_FILE).write_text(json.dumps(meta, indent=2))
        return out / WEIGHTS_FILE

    def __repr__(self) -> str:
        return (
            f"TrainEvaluator(dataset={self.dataset!r}, epochs={self.epochs}, channels={self.channels}, "
            f"cells_per_stage={self.cells_per_stage}, device={str(self.device)!r})"
        )


__all__ = [
    "METRICS",
    "ONNX_METRIC",
    "WEIGHTS_FILE",
    "WEIGHTS_META_FILE",
    "TrainEvaluator",
    "accuracy",
    "inherit_weights",
    "inference_energy",
    "inference_window",
    "resolve_device",
    "train_epochs",
]
