"""The training loop of :class:`~paretune.objectives.train.TrainEvaluator` and its helpers:
the device, the accuracy on a split, and weight inheritance from a parent's checkpoint."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretune.objectives.base import ReportFn
from paretune.objectives.data import Dataset, Split
from paretune.objectives.energy import (
    SOURCE_ESTIMATED,
    estimate_training_energy,
    finite_positive,
)
from paretune.objectives.measure import (
    EnergyCounts,
)
from paretune.spaces.base import Arch

_EVAL_BATCH = 512

WEIGHTS_FILE = "weights.pt"
WEIGHTS_META_FILE = "weights.json"
# Tensors of cell edge k are named cells.<layer>.ops.<k>.<...>.
_EDGE_TENSOR = re.compile(r"^cells\.\d+\.ops\.(\d+)\.")


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch_of(x: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` images from ``x``, repeating it when it has fewer."""
    if len(x) >= size:
        return x[:size]
    reps = math.ceil(size / max(len(x), 1))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:size]


def inherit_weights(
    model: nn.Module, checkpoint: str | os.PathLike, arch: Arch | None = None
) -> tuple[int, str | None]:
    """Copy the tensors of a saved ``state_dict`` into ``model`` where name and shape match.

    Tensors of cell edges whose operation differs from the parent's (when the checkpoint's
    ``weights.json`` names the parent's architecture and ``arch`` is given) are not copied.

    Args:
        model: the network to initialise (changed in place).
        checkpoint: a ``weights.pt`` file or the folder holding it.
        arch: the network's architecture (to skip perturbed edges).

    Returns:
        ``(tensors copied, None)``, or ``(0, reason)`` when nothing could be inherited; the
        model is then unchanged.
    """
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        return 0, f"parent checkpoint {str(path)!r} does not exist"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means "train from scratch"
        return 0, f"parent checkpoint {str(path)!r} is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        return 0, f"parent checkpoint {str(path)!r} is not a state_dict of tensors"
    changed: set[int] = set()
    meta_path = path.with_name(WEIGHTS_META_FILE)
    if arch is not None and meta_path.is_file():
        try:
            parent = json.loads(meta_path.read_text()).get("arch_indices")
            if parent is not None and len(parent) == len(arch):
                changed = {k for k, (a, b) in enumerate(zip(parent, arch, strict=True)) if a != b}
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # no parent architecture: fall back to name and shape
    own = model.state_dict()
    picked: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        target = own.get(name)
        if target is None or target.shape != tensor.shape or target.dtype != tensor.dtype:
            continue
        edge = _EDGE_TENSOR.match(name)
        if edge and int(edge.group(1)) in changed:
            continue
        picked[name] = tensor
    if not picked:
        return 0, f"no tensor of {str(path)!r} matches the network in name and shape"
    with torch.no_grad():
        for name, tensor in picked.items():
            own[name].copy_(tensor.to(own[name].device))
    return len(picked), None


def train_epochs(
    ev: Any,
    model: nn.Module,
    data: Dataset,
    epochs: int,
    costs: Mapping[str, float],
    counts: EnergyCounts,
    energy_source: str,
    extras: dict[str, Any],
    report: ReportFn | None,
) -> tuple[float, float, float, str, float]:
    """Train ``model`` for ``epochs`` with the settings of the evaluator ``ev``, reporting after
    every epoch; returns the validation accuracy, the last training loss, the training energy
    (J) and its source, and the training time (s). Problems go to ``extras``."""
    dev = ev.device
    generator = torch.Generator().manual_seed(ev.seed)
    train = data.train
    n = len(train)
    steps_per_epoch = math.ceil(n / ev.batch_size)
    opt = torch.optim.SGD(
        model.parameters(), lr=ev.lr, momentum=ev.momentum, weight_decay=ev.weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    val_acc = float("nan")
    train_loss = float("nan")
    meter = ev.meter()[0] if energy_source != SOURCE_ESTIMATED else None
    window = None
    if meter is not None:
        try:
            _sync(dev)
            window = meter.start()
        except Exception as exc:  # noqa: BLE001
            extras["energy_train_error"] = f"{type(exc).__name__}: {exc}"
    samples = steps = 0
    started = time.perf_counter()

    def energy_train_so_far(final: bool) -> tuple[float, str]:
        if window is not None:
            try:
                _sync(dev)
                reading = window.stop() if final else window.read()
                if finite_positive(reading.joules):
                    return reading.joules, reading.source
                extras["energy_train_error"] = f"meter read {reading.joules!r} J"
            except Exception as exc:  # noqa: BLE001
                extras["energy_train_error"] = f"{type(exc).__name__}: {exc}"
        joules = estimate_training_energy(
            counts.macs_m,
            counts.weights_m,
            counts.activations_m,
            samples,
            steps,
            ev.energy_coefficients,
        )
        return joules, SOURCE_ESTIMATED

    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        for i in range(0, n, ev.batch_size):
            idx = order[i : i + ev.batch_size]
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
        samples += seen
        steps += steps_per_epoch
        train_loss = total / max(seen, 1)
        val_acc = accuracy(model, data.valid, dev)
        if report is not None:
            so_far, _ = energy_train_so_far(final=False)
            report(
                {
                    "accuracy": val_acc,
                    **costs,
                    "energy_train": so_far,
                    "epoch": epoch,
                    "train_loss": train_loss,
                }
            )
    energy_train, energy_train_source = energy_train_so_far(final=True)
    train_time = time.perf_counter() - started
    return val_acc, train_loss, energy_train, energy_train_source, train_time
