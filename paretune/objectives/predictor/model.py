"""SurgeNAS-style latency predictor: a small graph network over the cell DAG (an MLP elsewhere).

The architecture reaches the network through an encoding (:mod:`.encoding`): NB201's cell graph,
any other cell space's cells as one graph (DARTS), or a one-hot vector per decision for spaces
that are not cells (MobileNet, NAS-Bench-Macro, choices, python), read by :class:`MLPLatencyNet`.

:class:`GCNLatencyNet` is a directed graph convolutional network in plain torch. Each layer
mixes a node's own state with the mean of its predecessors' and the mean of its successors'
states (separate weights for each direction), then LayerNorm and ReLU; after ``layers`` rounds
the mean of all nodes and the output node's state go through a 2-layer MLP to one output per
device (a multi-device model shares the graph trunk; each device has its own output).

:class:`LatencyPredictor` fits an ensemble of such networks on (architecture, latency) pairs:
targets are log-latencies standardised per device with the median and MAD (so a relative
error costs the same on a fast and a slow device, and ranking is what is learned), Huber loss
(a few wild measurements do not dominate), Adam with cosine decay.
Missing targets (NaN) of a multi-device training set are masked out. It saves to a folder
(``predictor.pt``: the ensemble's state dicts; ``predictor.json``: devices, settings, the target
normalisation and training facts) and loads back from one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretune.objectives.predictor.encoding import (
    Encoding,
    encoding_from_meta,
    make_encoding,
)
from paretune.objectives.predictor.graph import NODE_TYPES
from paretune.spaces.base import SearchSpace

FORMAT = "paretune-latency-predictor/2"
FORMAT_V1 = "paretune-latency-predictor/1"  # NB201 only, read as the ``nb201`` encoding
WEIGHTS_FILE = "predictor.pt"
META_FILE = "predictor.json"
LOSSES = ("huber", "mse")


@dataclass(frozen=True)
class PredictorSettings:
    """Architecture and training settings of a :class:`LatencyPredictor`.

    Attributes:
        hidden: width of the graph layers and the MLP.
        layers: graph convolution layers (2 to 4 reach across the 8-node NB201 graph).
        epochs: passes over the training pairs.
        batch_size: pairs per step.
        lr: Adam's initial learning rate (cosine-annealed to 0).
        weight_decay: Adam's weight decay.
        ensemble: independently initialised networks whose predictions are averaged.
        prune_none: drop the arcs of ``none`` operations (see :mod:`.graph`).
        loss: ``huber`` (robust to the few outliers a device's measurements have, e.g. the
            cells whose output is disconnected, which some compilers fold to almost nothing)
            or ``mse``, on the standardised log-latency.
        robust: standardise with the median and the MAD instead of the mean and the std.
        offset: a fraction of the median latency added before the log (0: plain log).
        seed: seeds initialisation and batch order.
    """

    hidden: int = 64
    layers: int = 4
    epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    ensemble: int = 3
    prune_none: bool = True
    loss: str = "huber"
    robust: bool = True
    offset: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("hidden", 1), ("layers", 1), ("epochs", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"PredictorSettings.{name}={value!r} must be an integer >= {low}")
        if (
            isinstance(self.ensemble, bool)
            or int(self.ensemble) != self.ensemble
            or self.ensemble < 1
        ):
            raise ValueError(
                f"PredictorSettings.ensemble={self.ensemble!r} must be an integer >= 1"
            )
        if self.loss not in LOSSES:
            raise ValueError(
                f"PredictorSettings.loss={self.loss!r} is unknown (allowed: {list(LOSSES)})"
            )
        for name in ("lr", "weight_decay", "offset"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PredictorSettings.{name}={value!r} must be a finite number >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictorSettings:
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"PredictorSettings: unknown fields {unknown} (allowed: {allowed})")
        return cls(**dict(data))


class DirectedGraphConv(nn.Module):
    """``h' = relu(norm(W [h, mean_pred(h), mean_succ(h)] + b))``: one linear map of the node's
    state, the mean of its predecessors' and the mean of its successors' states."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * c_in, c_out)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, h: torch.Tensor, a_in: torch.Tensor, a_out: torch.Tensor) -> torch.Tensor:
        msg = self.lin(torch.cat([h, a_in @ h, a_out @ h], dim=-1))
        return torch.relu(self.norm(msg))


class GCNLatencyNet(nn.Module):
    """Graph network from (adjacency, one-hot node types) to one log-latency per device.

    Args:
        num_features: one-hot node types.
        num_outputs: devices.
        hidden: width.
        layers: graph convolution layers.
    """

    def __init__(self, num_features: int, num_outputs: int, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.embed = nn.Linear(num_features, hidden)
        self.convs = nn.ModuleList(DirectedGraphConv(hidden, hidden) for _ in range(layers))
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)
        )

    def forward(
        self, adj: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``adj``: ``(B, n, n)`` with ``adj[b, u, v] = 1`` for data flowing u -> v;
        ``feats``: ``(B, n, f)``; ``mask``: ``(B, n)``, 0 for padding nodes (``None``: none).
        The output node is the last. Returns ``(B, num_outputs)``."""
        a_in = adj.transpose(1, 2)  # row v: the predecessors u of v
        a_in = a_in / a_in.sum(dim=2, keepdim=True).clamp(min=1.0)
        a_out = adj / adj.sum(dim=2, keepdim=True).clamp(min=1.0)
        h = self.embed(feats)
        for conv in self.convs:
            h = conv(h, a_in, a_out) + h
        if mask is None:
            mean = h.mean(dim=1)
        else:
            m = mask.unsqueeze(-1)
            mean = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        pooled = torch.cat([mean, h[:, -1]], dim=1)
        return self.head(pooled)


class MLPLatencyNet(nn.Module):
    """MLP from a one-hot architecture vector to one log-latency per device: ``layers`` blocks
    of Linear, LayerNorm and ReLU (residual after the first), then a linear head."""

    def __init__(self, num_features: int, num_outputs: int, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(num_features, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU())
            for _ in range(layers - 1)
        )
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h) + h
        return self.head(h)


def _as_targets(
    latencies: Sequence[float] | np.ndarray | Mapping[str, Sequence[float]],
    devices: Sequence[str] | None,
    n: int,
) -> tuple[np.ndarray, list[str]]:
    if isinstance(latencies, Mapping):
        names = list(latencies) if devices is None else list(devices)
        missing = [d for d in names if d not in latencies]
        if missing:
            raise ValueError(f"LatencyPredictor.fit: no latencies for devices {missing}")
        y = np.stack([np.asarray(latencies[d], dtype=np.float64) for d in names], axis=1)
    else:
        y = np.asarray(latencies, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        names = list(devices) if devices is not None else [f"device{i}" for i in range(y.shape[1])]
        if len(names) != y.shape[1]:
            raise ValueError(
                f"LatencyPredictor.fit: {len(names)} device names for {y.shape[1]} latency columns"
            )
    if y.shape[0] != n:
        raise ValueError(f"LatencyPredictor.fit: {n} architectures but {y.shape[0]} latencies")
    bad = np.isfinite(y) & (y <= 0)
    if bad.any():
        raise ValueError(
            f"LatencyPredictor.fit: latencies must be > 0 (found {int(bad.sum())} values <= 0)"
        )
    return y, names


class LatencyPredictor:
    """An ensemble of :class:`GCNLatencyNet` (cell spaces) or :class:`MLPLatencyNet` (other
    spaces) trained on (architecture, latency) pairs.

    Args:
        settings: a :class:`PredictorSettings` or a dict of its fields; ``None``: defaults.
        space: the space of the architectures (default: NB201).
        encoding: ``auto`` (a graph for cell spaces, one-hot otherwise), ``nb201``,
            ``cell-graph`` or ``one-hot`` (see :mod:`.encoding`).
    """

    def __init__(
        self,
        settings: PredictorSettings | Mapping[str, Any] | None = None,
        space: SearchSpace | None = None,
        encoding: str = "auto",
    ) -> None:
        if settings is None:
            settings = PredictorSettings()
        elif not isinstance(settings, PredictorSettings):
            settings = PredictorSettings.from_dict(settings)
        self.settings = settings
        if space is None:
            from paretune.spaces.nb201 import NB201Space

            space = NB201Space()
        self._encoding: Encoding | None = make_encoding(space, encoding, settings.prune_none)
        self._encoding_meta: dict[str, Any] = self._encoding.meta()
        self.devices: list[str] = []
        self.mean = np.zeros(0)
        self.std = np.ones(0)
        self.shift = np.zeros(0)
        self.nets: list[GCNLatencyNet] = []
        self.info: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.nets)

    @property
    def encoding(self) -> Encoding:
        """The encoding of architectures (raises when a loaded predictor still needs its space)."""
        if self._encoding is None:
            raise ValueError(
                f"this latency predictor reads the cell graphs of space "
                f"{self._encoding_meta.get('space')!r}, which is not built in: hand it the space "
                f"(LatencyPredictor.load(folder, space=...) or use_space(space))"
            )
        return self._encoding

    @property
    def space_name(self) -> str:
        return str(self._encoding_meta.get("space", "nb201"))

    def use_space(self, space: SearchSpace) -> LatencyPredictor:
        """Encode with ``space`` (it must have the decisions the predictor was trained on)."""
        meta = self._encoding_meta
        self._encoding = encoding_from_meta(meta, space, self.settings.prune_none)
        return self

    def _new_net(self) -> nn.Module:
        s = self.settings
        meta = self._encoding_meta  # no space needed: a loaded predictor builds its nets first
        cls = MLPLatencyNet if meta.get("kind") == "one-hot" else GCNLatencyNet
        width = int(meta.get("num_features") or self.encoding.num_features)
        return cls(width, len(self.devices), s.hidden, s.layers)

    def _tensors(self, archs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        return self.encoding.tensors(archs)

    def fit(
        self,
        archs: Sequence[Sequence[int]],
        latencies: Sequence[float] | np.ndarray | Mapping[str, Sequence[float]],
        devices: Sequence[str] | None = None,
        **info: Any,
    ) -> LatencyPredictor:
        """Train on ``archs`` and their latencies (ms).

        Args:
            archs: architectures of the predictor's space (tuples of option indices).
            latencies: one latency per architecture (one device), an ``(n, d)`` array, or
                ``{device: latencies}``; NaN marks a missing value.
            devices: device names (default: the mapping's keys, else ``device0``...).
            **info: extra facts kept in the saved metadata (e.g. ``source="table"``).
        """
        archs = self.encoding.check(archs)
        y, names = _as_targets(latencies, devices, len(archs))
        if len(archs) < 2:
            raise ValueError(f"LatencyPredictor.fit: needs at least 2 pairs, got {len(archs)}")
        counts = np.isfinite(y).sum(axis=0)
        if (counts < 2).any():
            few = [d for d, c in zip(names, counts, strict=True) if c < 2]
            raise ValueError(f"LatencyPredictor.fit: fewer than 2 latencies for devices {few}")
        s = self.settings
        self.devices = names
        self.shift = s.offset * np.nanmedian(y, axis=0)
        logy = np.log(np.where(np.isfinite(y), y, np.nan) + self.shift)
        if s.robust:
            self.mean = np.nanmedian(logy, axis=0)
            std = 1.4826 * np.nanmedian(np.abs(logy - self.mean), axis=0)
        else:
            self.mean = np.nanmean(logy, axis=0)
            std = np.nanstd(logy, axis=0)
        self.std = np.where(std > 1e-8, std, 1.0)
        z = (logy - self.mean) / self.std
        mask = torch.from_numpy(np.isfinite(z).astype(np.float32))
        target = torch.from_numpy(np.nan_to_num(z, nan=0.0).astype(np.float32))
        inputs = self._tensors(archs)
        n = len(archs)
        steps_per_epoch = math.ceil(n / s.batch_size)
        self.nets = []
        losses = []
        for member in range(s.ensemble):
            torch.manual_seed(s.seed * 1000 + member)
            gen = torch.Generator().manual_seed(s.seed * 1000 + member)
            net = self._new_net()
            opt = torch.optim.Adam(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=s.epochs * steps_per_epoch
            )
            net.train()
            last = float("nan")
            for _ in range(s.epochs):
                order = torch.randperm(n, generator=gen)
                total = 0.0
                for i in range(0, n, s.batch_size):
                    idx = order[i : i + s.batch_size]
                    pred = net(*(t[idx] for t in inputs))
                    m = mask[idx]
                    if s.loss == "huber":
                        err = nn.functional.huber_loss(pred, target[idx], reduction="none")
                    else:
                        err = (pred - target[idx]) ** 2
                    loss = (err * m).sum() / m.sum().clamp(min=1.0)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                last = total / n
            net.eval()
            self.nets.append(net)
            losses.append(last)
        self.info = {
            "num_pairs": n,
            "pairs_per_device": {d: int(c) for d, c in zip(names, counts, strict=True)},
            "final_train_loss": float(np.mean(losses)),
            **info,
        }
        return self

    def _device_index(self, device: str | None) -> int:
        if not self.fitted:
            raise RuntimeError("LatencyPredictor: not fitted (call fit or load first)")
        if device is None:
            if len(self.devices) != 1:
                raise ValueError(
                    f"LatencyPredictor: name a device, this predictor has {self.devices}"
                )
            return 0
        if device not in self.devices:
            raise ValueError(
                f"LatencyPredictor: unknown device {device!r} (available: {self.devices})"
            )
        return self.devices.index(device)

    @torch.no_grad()
    def predict_all(self, archs: Sequence[Sequence[int]]) -> np.ndarray:
        """Predicted latencies (ms) of ``archs`` on every device: an ``(n, d)`` array."""
        if not self.fitted:
            raise RuntimeError("LatencyPredictor: not fitted (call fit or load first)")
        archs = self.encoding.check(archs)
        if not archs:
            return np.zeros((0, len(self.devices)))
        inputs = self._tensors(archs)
        outs = []
        for start in range(0, len(archs), 4096):
            part = [t[start : start + 4096] for t in inputs]
            outs.append(torch.stack([net(*part) for net in self.nets]).mean(dim=0).numpy())
        z = np.concatenate(outs).astype(np.float64)
        return np.maximum(np.exp(z * self.std + self.mean) - self.shift, 1e-6)

    def predict(self, archs: Sequence[Sequence[int]], device: str | None = None) -> np.ndarray:
        """Predicted latencies (ms) of ``archs`` on ``device`` (optional for one device)."""
        k = self._device_index(device)
        return self.predict_all(archs)[:, k]

    def predict_one(self, arch: Sequence[int], device: str | None = None) -> float:
        """Predicted latency (ms) of one architecture."""
        return float(self.predict([arch], device)[0])

    # ------------------------------------------------------------------ files
    def meta(self) -> dict[str, Any]:
        """The JSON metadata saved beside the weights."""
        return {
            "format": FORMAT,
            "encoding": dict(self._encoding_meta),
            "devices": list(self.devices),
            "unit": "ms",
            "target": "log latency, standardised per device",
            "shift": [float(v) for v in self.shift],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "settings": asdict(self.settings),
            "info": self.info,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``predictor.pt`` and ``predictor.json`` into ``folder`` (created); returns it."""
        if not self.fitted:
            raise RuntimeError("LatencyPredictor.save: not fitted")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        torch.save([net.state_dict() for net in self.nets], out / WEIGHTS_FILE)
        (out / META_FILE).write_text(json.dumps(self.meta(), indent=2, default=str))
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike, space: SearchSpace | None = None) -> LatencyPredictor:
        """A predictor saved by :meth:`save` (a folder, or its ``predictor.json``/``.pt``).

        ``space``: the space it predicts for; checked against the saved decisions. Without it a
        built-in space is rebuilt by name (a one-hot predictor needs none); a cell graph of a
        space that is not built in then waits for :meth:`use_space`.
        """
        p = Path(folder).expanduser()
        if p.is_file():
            p = p.parent
        meta_path, weights_path = p / META_FILE, p / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"no latency predictor in {str(p)!r} (expected {META_FILE} and {WEIGHTS_FILE})"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") not in (FORMAT, FORMAT_V1):
            raise ValueError(
                f"{str(meta_path)!r}: format {meta.get('format')!r} is not {FORMAT!r} "
                f"(or {FORMAT_V1!r})"
            )
        if meta["format"] == FORMAT_V1:
            if list(meta.get("node_types", [])) != list(NODE_TYPES):
                raise ValueError(
                    f"{str(meta_path)!r}: node types {meta.get('node_types')} differ from "
                    f"{list(NODE_TYPES)}"
                )
            meta["encoding"] = {"kind": "nb201", "space": "nb201"}
        pred = cls.__new__(cls)
        pred.settings = PredictorSettings.from_dict(meta["settings"])
        pred._encoding_meta = dict(meta["encoding"])
        try:
            pred._encoding = encoding_from_meta(
                pred._encoding_meta, space, pred.settings.prune_none
            )
        except ValueError as exc:
            raise ValueError(f"{str(meta_path)!r}: {exc}") from None
        pred.devices = list(meta["devices"])
        pred.mean = np.asarray(meta["mean"], dtype=np.float64)
        pred.std = np.asarray(meta["std"], dtype=np.float64)
        pred.shift = np.asarray(meta.get("shift", [0.0] * len(pred.devices)), dtype=np.float64)
        pred.info = dict(meta.get("info", {}))
        states = torch.load(weights_path, map_location="cpu", weights_only=True)
        if len(states) != pred.settings.ensemble:
            raise ValueError(
                f"{str(weights_path)!r}: {len(states)} networks, settings say {pred.settings.ensemble}"
            )
        pred.nets = []
        for state in states:
            net = pred._new_net()
            net.load_state_dict(state)
            net.eval()
            pred.nets.append(net)
        return pred

    def __repr__(self) -> str:
        status = f"devices={self.devices}" if self.fitted else "not fitted"
        kind = self._encoding_meta.get("kind")
        return (
            f"LatencyPredictor({status}, space={self.space_name!r}, encoding={kind!r}, "
            f"layers={self.settings.layers}, hidden={self.settings.hidden})"
        )
