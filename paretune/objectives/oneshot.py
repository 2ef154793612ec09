"""One-shot evaluation: score an architecture with a trained supernet's shared weights.

:class:`SupernetEvaluator` (``evaluator.kind: supernet``) reads a supernet checkpoint
(:mod:`paretune.objectives.supernet_train`; loaded once per process and cached), extracts the
architecture's compact network with the shared weights copied in, optionally fine-tunes it for a
few steps, recalibrates its batch-norm statistics on training batches, and returns

================  ====  ======================================================================
metric            unit  meaning (source)
================  ====  ======================================================================
``accuracy``      %     validation accuracy with the inherited weights (``estimated``: a
                        one-shot estimate of the stand-alone accuracy)
``test_accuracy`` %     the same on the test split (``estimated``)
``params``        M     of the compact network (``measured``)
``flops``         M     multiply-adds at batch 1 of the compact network (``measured``)
``latency``       ms    median batch-1 latency of the compact network (``measured``)
``latency_batch`` ms    median latency of a batch of ``latency_batch_size`` (``measured``)
``energy``        mJ    per image, metered where possible, else estimated (as ``train``)
``energy_dynamic`` mJ   the same above idle power
================  ====  ======================================================================

The costs are measured exactly as :class:`~paretune.objectives.train.TrainEvaluator` measures
them (the compact network is the network it would train). The supernet settings (dataset,
channels, epochs, sampling, ...) are those of the training (:class:`SupernetTrainer`): the
``supernet_training`` phase of ``paretune run`` trains it and sets ``checkpoint``; a config may
also name the folder of a supernet trained before.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretune.objectives.base import Evaluation, MetricInfo, ReportFn
from paretune.objectives.data import Dataset
from paretune.objectives.supernet_train import CHECKPOINT_JSON, SAMPLING, load_supernet
from paretune.objectives.train import METRICS as TRAIN_METRICS
from paretune.objectives.train import TrainEvaluator, measure_costs
from paretune.objectives.train_loop import accuracy
from paretune.spaces.base import Arch
from paretune.spaces.supernet import CellSupernet, recalibrate_bn

METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("%", "max", "estimated"),
    "test_accuracy": MetricInfo("%", "max", "estimated"),
    **{
        k: v
        for k, v in TRAIN_METRICS.items()
        if k in ("params", "flops", "latency", "latency_batch", "energy", "energy_dynamic")
    },
}
# Settings of the supernet's training (used by the training phase; recorded here so that one
# config section holds them all).
TRAINING_SETTINGS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "grad_clip",
    "sampling",
    "arch_lr",
    "train_cpu",
    "train_gpu",
)

# (resolved checkpoint folder, sidecar mtime, device) -> (supernet, sidecar)
_SUPERNETS: dict[tuple[str, float, str], tuple[CellSupernet, dict[str, Any]]] = {}


def cached_supernet(
    checkpoint: str | os.PathLike, device: torch.device
) -> tuple[CellSupernet, dict[str, Any]]:
    """The supernet of ``checkpoint`` on ``device``, read once per process (re-read when the
    checkpoint's sidecar changes)."""
    folder = Path(checkpoint).expanduser().resolve()
    try:
        mtime = (folder / CHECKPOINT_JSON).stat().st_mtime
    except OSError:
        mtime = -1.0
    key = (str(folder), mtime, str(device))
    if key not in _SUPERNETS:
        for old in [k for k in _SUPERNETS if k[0] == key[0] and k[2] == key[2]]:
            del _SUPERNETS[old]
        _SUPERNETS[key] = load_supernet(folder, device)
    return _SUPERNETS[key]


class SupernetEvaluator:
    """One-shot evaluation with a trained supernet; see the module docstring.

    Args:
        checkpoint: folder of the supernet checkpoint (set by the training phase).
        dataset, data_path, channels, cells_per_stage, build, seed, val_fraction,
            test_fraction: as :class:`TrainEvaluator` (and the supernet's training).
        epochs, batch_size, lr, momentum, weight_decay, grad_clip, sampling, arch_lr,
            train_cpu,
            train_gpu: the supernet's training (the phase reads them; not used here).
        bn_batches: training batches of ``bn_batch_size`` that recalibrate batch norm.
        bn_batch_size: their size (``None``: ``batch_size``).
        finetune_steps: SGD steps on training batches before scoring (0: none).
        finetune_lr: their learning rate (momentum and weight decay as the training's).
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: ``torch.set_num_threads`` for the trial.
        latency_*, energy_*, onnx_latency, rapl_root, energy_coefficients: as
            :class:`TrainEvaluator`, on the compact network.
        space: the space's spec ``{"kind", "restrict"}`` (``None``: NB201).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        dataset: str = "digits",
        data_path: str | os.PathLike | None = None,
        channels: int = 8,
        cells_per_stage: int = 1,
        build: Mapping[str, Any] | None = None,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        sampling: str = "uniform",
        arch_lr: float = 0.0,
        train_cpu: float | None = None,
        train_gpu: float | None = None,
        bn_batches: int = 10,
        bn_batch_size: int | None = None,
        finetune_steps: int = 0,
        finetune_lr: float = 0.01,
        device: str = "cpu",
        threads: int | None = None,
        latency_batch_size: int = 1,
        latency_warmup: int = 5,
        latency_repeats: int = 20,
        onnx_latency: bool = False,
        energy_meter: Any = "auto",
        energy_batch_size: int = 32,
        energy_batches: int = 20,
        energy_warmup: int = 2,
        energy_min_window_s: float = 0.5,
        energy_idle_s: float = 0.5,
        rapl_root: str | os.PathLike = "/sys/class/powercap",
        energy_coefficients: Any = None,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        space: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        leaves: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        owner = "SupernetEvaluator"
        for field, value, low in (
            ("bn_batches", bn_batches, 0),
            ("finetune_steps", finetune_steps, 0),
            ("epochs", epochs, 1),
        ):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{owner}: {field}={value!r} must be an integer >= {low}")
        if bn_batch_size is not None and (isinstance(bn_batch_size, bool) or bn_batch_size < 2):
            raise ValueError(f"{owner}: bn_batch_size={bn_batch_size!r} must be an integer >= 2")
        if not (math.isfinite(finetune_lr) and finetune_lr >= 0):
            raise ValueError(f"{owner}: finetune_lr={finetune_lr!r} must be a finite number >= 0")
        if sampling not in SAMPLING:
            raise ValueError(
                f"{owner}: sampling={sampling!r} is unknown (allowed: {list(SAMPLING)})"
            )
        space_spec = dict(space or {"kind": "nb201"})
        if space_spec.get("kind") not in ("nb201", "darts"):
            raise ValueError(
                f"{owner}: space.kind = {space_spec.get('kind')!r} has no supernet "
                "(evaluator.kind = 'supernet' supports nb201 and darts)"
            )
        # The measurement (and the data split) of the compact network, as the train evaluator.
        self.measure = TrainEvaluator(
            dataset=dataset,
            data_path=data_path,
            epochs=1,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            channels=channels,
            cells_per_stage=cells_per_stage,
            device=device,
            threads=threads,
            latency_batch_size=latency_batch_size,
            latency_warmup=latency_warmup,
            latency_repeats=latency_repeats,
            onnx_latency=onnx_latency,
            energy_meter=energy_meter,
            energy_batch_size=energy_batch_size,
            energy_batches=energy_batches,
            energy_warmup=energy_warmup,
            energy_min_window_s=energy_min_window_s,
            energy_idle_s=energy_idle_s,
            rapl_root=rapl_root,
            energy_coefficients=energy_coefficients,
            save_weights=False,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            space=space_spec,
            build=build,
        )
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        # NAS-LID (paretune.platform.nas_lid): sub-supernets {"checkpoint", "edge_options"};
        # an architecture is scored with the one holding it. ``split``: its settings (phase's).
        self.leaves = [dict(leaf) for leaf in leaves or []]
        self.space = self.measure.space
        self.device = self.measure.device
        self.threads = threads
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.bn_batches = int(bn_batches)
        self.bn_batch_size = int(bn_batch_size or batch_size)
        self.finetune_steps = int(finetune_steps)
        self.finetune_lr = float(finetune_lr)

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> Mapping[str, MetricInfo]:
        base = self.measure.metrics()
        out = dict(METRICS)
        for name in ("energy", "energy_dynamic"):
            out[name] = base[name]
        if "latency_onnx" in base:
            out["latency_onnx"] = base["latency_onnx"]
        return out

    def data(self) -> Dataset:
        return self.measure.data()

    def supernet(self, arch: Arch | None = None) -> tuple[CellSupernet, dict[str, Any]]:
        """The trained supernet (cached per process) and its checkpoint's sidecar (with
        NAS-LID's ``leaves``: the sub-supernet holding ``arch``)."""
        if self.checkpoint is None:
            raise ValueError(
                "evaluator.checkpoint is not set: the supernet_training phase of `paretune run` "
                "sets it, or name the folder of a trained supernet"
            )
        root = cached_supernet(self.checkpoint, self.device)
        if not self.leaves or arch is None:
            return root
        from paretune.objectives.lid import leaf_checkpoint

        return cached_supernet(leaf_checkpoint(self.leaves, root[0].path_of(arch)), self.device)

    def _batches(self, split: Any, count: int, size: int, offset: int = 0) -> list[torch.Tensor]:
        """``count`` seeded batches of ``size`` indices into ``split`` (the same every call)."""
        g = torch.Generator().manual_seed(self.seed + 7919 * (offset + 1))
        order = torch.randperm(len(split), generator=g)
        out = []
        for b in range(count):
            idx = order[(b * size) % len(split) :][:size]
            if len(idx) < 2:
                idx = order[:size]
            out.append(idx)
        return out

    def network(self, arch: Arch) -> nn.Module:
        """The compact network of ``arch`` with the supernet's weights, fine-tuned (if set)
        and batch-norm recalibrated, in eval mode."""
        net, _ = self.supernet(arch)
        model = net.extract(arch)
        data = self.data()
        train = data.train
        if self.finetune_steps > 0:
            model.train()
            opt = torch.optim.SGD(
                model.parameters(),
                lr=self.finetune_lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
            loss_fn = nn.CrossEntropyLoss()
            for idx in self._batches(train, self.finetune_steps, self.batch_size, offset=1):
                opt.zero_grad(set_to_none=True)
                x = train.x[idx].to(self.device)
                loss_fn(model(x), train.y[idx].to(self.device)).backward()
                opt.step()
        if self.bn_batches > 0:
            batches = [
                train.x[idx] for idx in self._batches(train, self.bn_batches, self.bn_batch_size)
            ]
            recalibrate_bn(model, batches, batches=self.bn_batches, device=self.device)
        model.eval()
        return model

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """Score ``arch`` with the shared weights and measure its compact network."""
        arch = self.space.validate(arch)
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        try:
            return self._evaluate(arch)
        finally:
            torch.set_num_threads(before)

    def _evaluate(self, arch: Arch) -> Evaluation:
        started = time.perf_counter()
        net, meta = self.supernet(arch)
        data = self.data()
        try:
            model = self.network(arch)
        except ValueError as exc:
            raise ValueError(f"architecture {self.space.encode(arch)!r}: {exc}") from None
        score_time = time.perf_counter() - started
        val_acc = accuracy(model, data.valid, self.device)
        test_acc = accuracy(model, data.test, self.device)
        started = time.perf_counter()
        costs, cost_sources, extras, _ = measure_costs(self.measure, model, data)
        sources = {"accuracy": "estimated", "test_accuracy": "estimated", **cost_sources}
        return Evaluation(
            values={"accuracy": val_acc, "test_accuracy": test_acc, **costs},
            sources=sources,
            extras={
                "accuracy_method": "one-shot: supernet weights, BN recalibrated"
                + (f", {self.finetune_steps} fine-tune steps" if self.finetune_steps else ""),
                "supernet_checkpoint": str(self.checkpoint),
                "supernet_epoch": int(meta.get("epoch", -1)),
                "bn_batches": self.bn_batches,
                "finetune_steps": self.finetune_steps,
                "score_time_s": score_time,
                "measure_time_s": time.perf_counter() - started,
                "device": str(self.device),
                **extras,
            },
        )

    def score(self, archs: Sequence[Arch]) -> list[float]:
        """Validation accuracy (%) of each architecture with the shared weights (no costs)."""
        data = self.data()
        return [
            accuracy(self.network(self.space.validate(a)), data.valid, self.device) for a in archs
        ]

    def __repr__(self) -> str:
        return f"SupernetEvaluator(checkpoint={self.checkpoint!r}, device={str(self.device)!r})"


__all__ = ["METRICS", "TRAINING_SETTINGS", "SupernetEvaluator", "cached_supernet"]
