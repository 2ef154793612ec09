"""Training of a weight-sharing supernet (no Ray), with resumable checkpoints.

:class:`SupernetTrainer` trains a :class:`~paretune.spaces.supernet.CellSupernet` of an NB201 or
DARTS space on a real dataset (:mod:`paretune.objectives.data`) with SGD (momentum, weight
decay, cosine schedule per step, gradient clipping). ``sampling`` says how each step's network
is chosen:

* ``uniform``: one path per step, each edge's operation uniform over its options (SPOS,
  Guo et al. 2020); DARTS: an allowed input pair per node, then the two edges' operations;
* ``logits``: one path per step drawn from ``softmax(logits[e])`` per edge (a searcher's
  distribution, e.g. TND's; ``trainer.logits`` may be changed between steps), or from
  ``trainer.sampler(rng)`` when a callable is set;
* ``weighted``: every edge is the softmax-weighted sum of its options (DARTS); with
  ``arch_lr > 0`` the architecture logits are trained too (first-order DARTS: one Adam step on
  a validation batch before each weight step), else they stay fixed.

Checkpoints (:meth:`SupernetTrainer.save`) are a folder with ``supernet-eNNNN.pt`` (plain
``state_dict`` s: network, optimizer, schedule, architecture logits, the batch-order RNG; saved
with ``torch.save``) and ``supernet.json`` (everything needed to rebuild the network, the epoch,
the history and the path-sampling RNG). The JSON is written last and names its ``.pt``, so a
folder is always consistent. Loading uses ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretune.objectives.data import DATASETS, Dataset, load_dataset
from paretune.objectives.train_loop import resolve_device
from paretune.spaces.base import SearchSpace
from paretune.spaces.supernet import CellSupernet, build_supernet

CHECKPOINT_JSON = "supernet.json"
FORMAT_VERSION = 1
SAMPLING = ("uniform", "logits", "weighted")


def space_spec_of(space: SearchSpace) -> dict[str, Any]:
    """``{"kind", "restrict"}`` of an nb201 or darts space (plain data: rebuilt anywhere)."""
    spec: dict[str, Any] = {"kind": space.name}
    if space.is_restricted:
        spec["restrict"] = space.allowed_names()
    return spec


def space_from(spec_or_space: SearchSpace | Mapping[str, Any] | None) -> SearchSpace:
    """The space of a spec ``{"kind", "restrict"}`` (``None``: NB201) or the space itself."""
    if isinstance(spec_or_space, SearchSpace):
        return spec_or_space
    from paretune.spaces import make_space

    spec = dict(spec_or_space or {"kind": "nb201"})
    kind = spec.pop("kind", "nb201")
    restrict = spec.pop("restrict", None)
    return make_space(kind, restrict, **spec)


def supernet_kwargs(
    space: SearchSpace,
    data: Dataset,
    channels: int,
    cells_per_stage: int,
    build: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The supernet's network settings, as :class:`~paretune.objectives.train.TrainEvaluator`
    builds the same space (so extracted networks equal its stand-alone ones)."""
    common: dict[str, Any] = {
        "channels": channels,
        "input_size": data.input_size,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
    }
    if space.name == "darts":
        common["layers"] = 3 * cells_per_stage
    else:
        common["cells_per_stage"] = cells_per_stage
    common.update(build or {})
    return common


def _positive_int(owner: str, field: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{owner}: {field}={value!r} must be an integer >= {low}")
    if value < low:
        raise ValueError(f"{owner}: {field}={value!r} must be an integer >= {low}")
    return int(value)


class SupernetTrainer:
    """Trains a supernet; see the module docstring.

    Args:
        space: an nb201 or darts space (restricted or not) or its spec ``{"kind", "restrict"}``.
        dataset: ``digits``, ``mnist`` or ``cifar10``.
        data_path: the CIFAR-10 folder (``cifar10`` only).
        channels: ``C`` of the network.
        cells_per_stage: NB201's ``N``; DARTS gets ``layers = 3 * cells_per_stage``.
        build: further network settings (e.g. ``{"layers": 5}`` for darts).
        edge_options: allowed operation indices per edge (default: from the space).
        epochs: total training epochs (a resumed run continues up to it).
        batch_size, lr, momentum, weight_decay: SGD with a cosine schedule per step.
        grad_clip: gradient-norm clipping (0: off).
        sampling: ``uniform``, ``logits`` or ``weighted``.
        logits: per edge ``len(ops)`` numbers (``logits`` and ``weighted``; default zeros).
        arch_lr: Adam learning rate of the logits in ``weighted`` mode (0: fixed).
        device: ``cpu``, ``cuda``, ``cuda:K`` or ``auto``.
        threads: ``torch.set_num_threads`` during training (``None``: unchanged).
        seed: seeds the initial weights, the batch order, the paths and the data split.
        split_seed: seeds the data split instead (``None``: ``seed``), so that supernets of
            several seeds train on one split.
        bn_weight_decay: ``False`` exempts batch-norm weights and all biases from weight decay
            (Yu et al. 2020); ``True`` (default) decays every parameter.
        val_fraction, test_fraction: the data split (as the other evaluators).
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        dataset: str = "digits",
        data_path: str | os.PathLike | None = None,
        channels: int = 8,
        cells_per_stage: int = 1,
        build: Mapping[str, Any] | None = None,
        edge_options: Sequence[Sequence[int]] | None = None,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        sampling: str = "uniform",
        logits: Sequence[Sequence[float]] | None = None,
        arch_lr: float = 0.0,
        device: str = "cpu",
        threads: int | None = None,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int | None = None,
        bn_weight_decay: bool = True,
    ) -> None:
        owner = "SupernetTrainer"
        if dataset not in DATASETS:
            raise ValueError(f"{owner}: dataset={dataset!r} is unknown (allowed: {list(DATASETS)})")
        if sampling not in SAMPLING:
            raise ValueError(
                f"{owner}: sampling={sampling!r} is unknown (allowed: {list(SAMPLING)})"
            )
        self.epochs = _positive_int(owner, "epochs", epochs)
        self.batch_size = _positive_int(owner, "batch_size", batch_size, 2)
        self.channels = _positive_int(owner, "channels", channels)
        self.cells_per_stage = _positive_int(owner, "cells_per_stage", cells_per_stage)
        for field, value in (
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("grad_clip", grad_clip),
            ("arch_lr", arch_lr),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{owner}: {field}={value!r} must be a finite number >= 0")
        self.space = space_from(space)
        self.space_spec = space_spec_of(self.space)
        self.dataset = dataset
        self.data_path = None if data_path is None else str(data_path)
        self.build_options = dict(build or {})
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.grad_clip = float(grad_clip)
        self.sampling = sampling
        self.arch_lr = float(arch_lr)
        self.device = resolve_device(device)
        self.threads = threads
        self.seed = int(seed)
        if split_seed is not None and (
            isinstance(split_seed, bool) or int(split_seed) != split_seed
        ):
            raise ValueError(f"{owner}: split_seed={split_seed!r} must be an integer or None")
        self.split_seed = None if split_seed is None else int(split_seed)
        self.bn_weight_decay = bool(bn_weight_decay)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.sampler: Callable[[np.random.Generator], list[int | None]] | None = None

        data = self.data()
        self.net_settings = supernet_kwargs(
            self.space, data, self.channels, self.cells_per_stage, self.build_options
        )
        torch.manual_seed(self.seed)
        try:
            self.net: CellSupernet = build_supernet(self.space, edge_options, **self.net_settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{owner}: {exc}") from None
        self.net.to(self.device)
        n_ops = len(self.net.ops)
        if logits is None:
            logits = np.zeros((self.net.num_edges, n_ops))
        arr = np.asarray(logits, dtype=np.float64)
        if arr.shape != (self.net.num_edges, n_ops):
            raise ValueError(
                f"{owner}: logits has shape {arr.shape}, expected ({self.net.num_edges}, {n_ops}) "
                "(one row of len(ops) numbers per edge)"
            )
        self.alpha = torch.tensor(arr, dtype=torch.float32, device=self.device)
        self.alpha.requires_grad_(sampling == "weighted" and self.arch_lr > 0)
        self.steps_per_epoch = math.ceil(len(data.train) / self.batch_size)
        self.optimizer = torch.optim.SGD(
            self._param_groups(),
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.epochs * self.steps_per_epoch
        )
        self.arch_optimizer = (
            torch.optim.Adam([self.alpha], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
            if self.alpha.requires_grad
            else None
        )
        self.generator = torch.Generator().manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self.samples = 0  # training images seen (sample-steps: the compute spent)
        self.steps = 0
        self.history: list[dict[str, float]] = []

    def _param_groups(self) -> list[dict[str, Any]]:
        """One group (every parameter decayed), or two when ``bn_weight_decay`` is off:
        parameters of 1 dimension (batch-norm weights, biases) get no weight decay."""
        params = list(self.net.parameters())
        if self.bn_weight_decay:
            return [{"params": params}]
        return [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    # ------------------------------------------------------------------ data and paths
    def data(self) -> Dataset:
        return load_dataset(
            self.dataset,
            path=self.data_path,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed if self.split_seed is None else self.split_seed,
        )

    @property
    def logits(self) -> np.ndarray:
        return self.alpha.detach().cpu().numpy().astype(np.float64)

    @logits.setter
    def logits(self, value: Sequence[Sequence[float]]) -> None:
        arr = torch.as_tensor(np.asarray(value, dtype=np.float32), device=self.device)
        if arr.shape != self.alpha.shape:
            raise ValueError(
                f"logits has shape {tuple(arr.shape)}, expected {tuple(self.alpha.shape)}"
            )
        with torch.no_grad():
            self.alpha.copy_(arr)

    def edge_weights(self) -> list[torch.Tensor | None]:
        """Per edge the softmax of the logits over its allowed options (``None``: no option)."""
        out: list[torch.Tensor | None] = []
        for e, options in enumerate(self.net.edge_options):
            if not options:
                out.append(None)
                continue
            mask = torch.full_like(self.alpha[e], -math.inf)
            mask[options] = 0.0
            out.append(torch.softmax(self.alpha[e] + mask, dim=-1))
        return out

    def next_path(self) -> list[int | None]:
        """The path of the next step (``uniform`` and ``logits`` modes)."""
        if self.sampler is not None:
            return self.net.check_path(self.sampler(self.rng))
        if self.sampling == "logits":
            return self.net.sample_path(self.rng, self.logits)
        return self.net.sample_path(self.rng)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sampling == "weighted":
            return self.net(x, weights=self.edge_weights())
        return self.net(x, path=self.next_path())

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> dict[str, float]:
        """One epoch over the training split; returns its metrics (also kept in ``history``)."""
        if self.epoch >= self.epochs:
            raise ValueError(f"the supernet has trained all its {self.epochs} epochs")
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        try:
            return self._train_epoch()
        finally:
            torch.set_num_threads(before)

    def _train_epoch(self) -> dict[str, float]:
        data = self.data()
        train, dev = data.train, self.device
        n = len(train)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.randperm(n, generator=self.generator)
        val_order = torch.randperm(len(data.valid), generator=self.generator)
        self.net.train()
        total = correct = seen = 0.0
        started = time.perf_counter()
        for step, i in enumerate(range(0, n, self.batch_size)):
            idx = order[i : i + self.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                self.schedule.step()
                continue
            x = train.x[idx].to(dev, non_blocking=True)
            y = train.y[idx].to(dev, non_blocking=True)
            if self.arch_optimizer is not None:
                j = (step * self.batch_size) % max(len(val_order) - 1, 1)
                vidx = val_order[j : j + self.batch_size]
                if len(vidx) >= 2:
                    self.arch_optimizer.zero_grad(set_to_none=True)
                    vx = data.valid.x[vidx].to(dev)
                    loss_fn(self._forward(vx), data.valid.y[vidx].to(dev)).backward()
                    self.arch_optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            out = self._forward(x)
            loss = loss_fn(out, y)
            loss.backward()
            if self.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            total += float(loss.detach()) * len(idx)
            correct += float((out.detach().argmax(1) == y).sum())
            seen += len(idx)
            self.steps += 1
        self.samples += int(seen)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "train_loss": total / max(seen, 1),
            "train_accuracy": 100.0 * correct / max(seen, 1),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "samples": self.samples,
            "epoch_time_s": time.perf_counter() - started,
        }
        self.history.append(metrics)
        return metrics

    def train(
        self,
        until: int | None = None,
        on_epoch: Callable[[dict[str, float], SupernetTrainer], None] | None = None,
    ) -> list[dict[str, float]]:
        """Train up to epoch ``until`` (default: ``epochs``), calling ``on_epoch`` after each."""
        until = self.epochs if until is None else min(int(until), self.epochs)
        while self.epoch < until:
            metrics = self.train_epoch()
            if on_epoch is not None:
                on_epoch(metrics, self)
        return self.history

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    # ------------------------------------------------------------------ checkpoints
    def settings(self) -> dict[str, Any]:
        """Everything that defines this training (plain data), kept in the JSON sidecar."""
        out: dict[str, Any] = {
            "space": self.space_spec,
            "edge_options": self.net.edge_options,
            "net": self.net_settings,
            "dataset": self.dataset,
            "data_path": self.data_path,
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
            "build": self.build_options,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "grad_clip": self.grad_clip,
            "sampling": self.sampling,
            "arch_lr": self.arch_lr,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }
        # new options appear only when set, so older checkpoints still match on resume
        if self.split_seed is not None:
            out["split_seed"] = self.split_seed
        if not self.bn_weight_decay:
            out["bn_weight_decay"] = False
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the checkpoint of the current epoch to ``folder``; returns the JSON's path."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        name = f"supernet-e{self.epoch:04d}.pt"
        state = {
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "alpha": self.alpha.detach().cpu(),
            "arch_optimizer": None
            if self.arch_optimizer is None
            else self.arch_optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        tmp = out / f".{name}.tmp"
        torch.save(state, tmp)
        tmp.replace(out / name)
        meta = {
            "format": FORMAT_VERSION,
            "weights": name,
            "epoch": self.epoch,
            "samples": self.samples,
            "steps": self.steps,
            "done": self.done,
            "settings": self.settings(),
            "history": self.history,
            "rng": self.rng.bit_generator.state,
            "saved_at": time.time(),
        }
        tmp_json = out / f".{CHECKPOINT_JSON}.tmp"
        tmp_json.write_text(json.dumps(meta, indent=1))
        tmp_json.replace(out / CHECKPOINT_JSON)
        for old in out.glob("supernet-e*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return out / CHECKPOINT_JSON

    def load(self, folder: str | os.PathLike) -> None:
        """Continue from the checkpoint in ``folder`` (written by :meth:`save` with the same
        settings; a different training raises ``ValueError`` naming the first difference)."""
        meta, state = read_checkpoint(folder, map_location="cpu")
        mine = json.loads(json.dumps(self.settings()))
        theirs = meta["settings"]
        for key in sorted(set(mine) | set(theirs)):
            if key != "data_path" and mine.get(key) != theirs.get(key):
                raise ValueError(
                    f"checkpoint {str(folder)!r}: {key} = {theirs.get(key)!r}, this training has "
                    f"{mine.get(key)!r}"
                )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        with torch.no_grad():
            self.alpha.copy_(state["alpha"].to(self.device))
        if self.arch_optimizer is not None and state.get("arch_optimizer") is not None:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = meta["rng"]
        self.epoch = int(meta["epoch"])
        self.samples = int(meta["samples"])
        self.steps = int(meta["steps"])
        self.history = list(meta["history"])


def read_checkpoint(
    folder: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sidecar JSON and the tensors of a checkpoint folder (``torch.load`` with
    ``weights_only=True``); ``ValueError`` naming the folder when it is not one."""
    folder = Path(folder).expanduser()
    meta_path = folder / CHECKPOINT_JSON
    if not meta_path.is_file():
        raise ValueError(f"supernet checkpoint {str(folder)!r}: no {CHECKPOINT_JSON} there")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"supernet checkpoint {str(meta_path)!r} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"supernet checkpoint {str(meta_path)!r}: format {meta.get('format')!r} "
            f"(this paretune reads {FORMAT_VERSION})"
        )
    weights = folder / str(meta.get("weights", ""))
    if weights.parent != folder or not weights.is_file():
        raise ValueError(f"supernet checkpoint {str(folder)!r}: weights {str(weights)!r} missing")
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(
            f"supernet checkpoint {str(weights)!r} is unreadable ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"supernet checkpoint {str(weights)!r}: not a supernet state")
    return meta, state


def load_supernet(
    folder: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[CellSupernet, dict[str, Any]]:
    """The trained supernet of a checkpoint folder (eval mode, on ``device``) and its sidecar."""
    meta, state = read_checkpoint(folder, map_location="cpu")
    settings = meta["settings"]
    space = space_from(settings["space"])
    net = build_supernet(space, settings["edge_options"], **settings["net"])
    net.load_state_dict(state["model"])
    net.to(device)
    net.eval()
    meta = dict(meta)
    meta["alpha"] = state["alpha"].numpy().tolist()
    return net, meta


__all__ = [
    "CHECKPOINT_JSON",
    "SAMPLING",
    "SupernetTrainer",
    "load_supernet",
    "read_checkpoint",
    "space_from",
    "space_spec_of",
    "supernet_kwargs",
]
