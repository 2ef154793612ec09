"""Training pairs for the latency predictor: (architecture, latency) from four places.

- :func:`table_pairs`: the NB201 table's device columns (``latency_ms_<device>``).
- :func:`measured_pairs`: networks of any buildable space measured here (CPU or GPU latency
  with :func:`paretune.objectives.measure.measure_latency`).
- :func:`trials_csv_pairs`: an earlier paretune experiment's ``report/trials.csv`` (what
  ``paretune run``/``report`` writes under the experiment directory).
- :func:`mlflow_pairs`: the nested trial runs of an MLflow experiment (their ``arch`` tag and a
  latency metric).

The last two read architectures of any space (``space=``, default NB201) from their text form.

Values whose logged source is ``predicted`` or ``estimated`` are left out by default: a
predictor trained on predictions would learn nothing new. An architecture measured several times
keeps the median of its measurements.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paretune.spaces.base import Arch, SearchSpace
from paretune.spaces.nb201 import NB201Space

EXCLUDED_SOURCES = ("predicted", "estimated")


@dataclass
class LatencyPairs:
    """Architectures and their latencies (ms) per device; NaN where a device has none.

    Attributes:
        archs: the architectures, each once.
        latencies: ``{device: array aligned with archs}``.
        origin: where the pairs come from (kept in the predictor's metadata).
        skipped: rows left out and why (counts).
    """

    archs: list[Arch]
    latencies: dict[str, np.ndarray]
    origin: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def devices(self) -> list[str]:
        return list(self.latencies)

    def subset(self, rows: Sequence[int]) -> LatencyPairs:
        """The pairs at ``rows`` (e.g. a training split)."""
        rows = [int(i) for i in rows]
        return LatencyPairs(
            [self.archs[i] for i in rows],
            {d: v[rows] for d, v in self.latencies.items()},
            self.origin,
            dict(self.skipped),
        )


def _collect(
    items: Iterable[tuple[Arch, float]], device: str, origin: str, skipped: dict[str, int]
) -> LatencyPairs:
    by_arch: dict[Arch, list[float]] = defaultdict(list)
    for arch, value in items:
        by_arch[arch].append(value)
    archs = sorted(by_arch)
    values = np.array([float(np.median(by_arch[a])) for a in archs], dtype=np.float64)
    return LatencyPairs(archs, {device: values}, origin, skipped)


def _usable(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def table_pairs(
    path: str | os.PathLike | None = None,
    devices: Sequence[str] = ("pixel3",),
    archs: Sequence[Sequence[int]] | None = None,
) -> LatencyPairs:
    """Latencies of the NB201 table's device columns.

    Args:
        path: the table file or folder (``None``: ``$PARETUNE_NB201``).
        devices: device names (the column is ``latency_ms_<device>``).
        archs: the architectures to include (default: all 15,625).

    Raises:
        ValueError: an unknown device, naming the available ones.
    """
    from paretune.objectives.table import TableEvaluator

    table = TableEvaluator(path)
    available = sorted(
        c.removeprefix("latency_ms_") for c in table.metrics() if c.startswith("latency_ms_")
    )
    unknown = [d for d in devices if d not in available]
    if unknown:
        raise ValueError(f"table_pairs: unknown devices {unknown} (available: {available})")
    if archs is None:
        values, rows = table.matrix([f"latency_ms_{d}" for d in devices])
    else:
        space = NB201Space()
        subset = _ArchList([space.validate(a) for a in archs])
        values, rows = table.matrix([f"latency_ms_{d}" for d in devices], space=subset)
    return LatencyPairs(
        list(rows),
        {d: np.asarray(values[:, k], dtype=np.float64) for k, d in enumerate(devices)},
        f"table:{table.path}",
    )


class _ArchList:
    """A fixed list of NB201 architectures with the little of a space ``matrix`` needs."""

    name = "nb201-list"

    def __init__(self, archs: list[Arch]) -> None:
        self._archs = archs

    def __iter__(self):
        return iter(self._archs)


def trials_csv_pairs(
    path: str | os.PathLike,
    metric: str = "latency",
    device: str | None = None,
    exclude_sources: Sequence[str] = EXCLUDED_SOURCES,
    space: SearchSpace | None = None,
) -> LatencyPairs:
    """Latencies an earlier experiment measured, from its ``trials.csv``.

    Args:
        path: the ``trials.csv``, its ``report`` folder, or the experiment directory.
        metric: the latency column (an objective of that experiment).
        device: the name the device gets in the predictor (default: ``metric``).
        exclude_sources: sources (column ``source/<metric>``) whose values are left out.
        space: the experiment's space (default: NB201).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "trials.csv" if (p / "trials.csv").is_file() else p / "report" / "trials.csv"
    if not p.is_file():
        raise FileNotFoundError(f"trials_csv_pairs: no trials.csv at {str(path)!r}")
    space = NB201Space() if space is None else space
    skipped: dict[str, int] = defaultdict(int)
    items: list[tuple[Arch, float]] = []
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        if metric not in (reader.fieldnames or []):
            raise ValueError(
                f"trials_csv_pairs: {str(p)!r} has no column {metric!r} (columns: {reader.fieldnames})"
            )
        for row in reader:
            if row.get("status", "ok") != "ok":
                skipped["failed trial"] += 1
                continue
            if row.get(f"source/{metric}", "") in exclude_sources:
                skipped[f"source {row[f'source/{metric}']}"] += 1
                continue
            value = _usable(row.get(metric))
            if value is None:
                skipped["no usable value"] += 1
                continue
            try:
                arch = space.decode(row.get("arch", ""))
            except ValueError:
                skipped[f"not an architecture of {space.name}"] += 1
                continue
            items.append((arch, value))
    return _collect(items, device or metric, f"trials:{p}", dict(skipped))


def mlflow_pairs(
    tracking_uri: str,
    experiment: str | None = None,
    *,
    parent_run_id: str | None = None,
    metric: str = "latency",
    device: str | None = None,
    exclude_sources: Sequence[str] = EXCLUDED_SOURCES,
    space: SearchSpace | None = None,
) -> LatencyPairs:
    """Latencies logged to MLflow by earlier trials (finished runs with an ``arch`` tag).

    Args:
        tracking_uri: the MLflow tracking URI (e.g. ``sqlite:///mlflow.db``).
        experiment: the MLflow experiment name or id (default: the parent run's experiment).
        parent_run_id: only the nested runs of this parent run (one paretune search).
        metric: the latency metric.
        device: the name the device gets in the predictor (default: ``metric``).
        exclude_sources: sources (tag ``source/<metric>``) whose values are left out.
        space: the experiment's space (default: NB201).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment is None and parent_run_id is None:
        raise ValueError("mlflow_pairs: give an experiment or a parent_run_id")
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp = client.get_experiment(experiment)
            except Exception:  # noqa: BLE001 - any lookup error means "not found"
                exp = None
        if exp is None:
            raise ValueError(f"mlflow_pairs: no MLflow experiment {experiment!r} at {tracking_uri}")
        exp_id = exp.experiment_id
    else:
        exp_id = client.get_run(parent_run_id).info.experiment_id
    filters = ["attributes.status = 'FINISHED'"]
    if parent_run_id is not None:
        filters.append(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    space = NB201Space() if space is None else space
    skipped: dict[str, int] = defaultdict(int)
    items: list[tuple[Arch, float]] = []
    token = None
    while True:
        page = client.search_runs(
            [exp_id], " and ".join(filters), max_results=1000, page_token=token
        )
        for run in page:
            tags, metrics = run.data.tags, run.data.metrics
            if "arch" not in tags:
                skipped["no arch tag"] += 1
                continue
            if tags.get(f"source/{metric}", "") in exclude_sources:
                skipped[f"source {tags[f'source/{metric}']}"] += 1
                continue
            value = _usable(metrics.get(metric))
            if value is None:
                skipped["no usable value"] += 1
                continue
            try:
                arch = space.decode(tags["arch"])
            except ValueError:
                skipped[f"not an architecture of {space.name}"] += 1
                continue
            items.append((arch, value))
        token = page.token
        if not token:
            break
    where = f"mlflow:{tracking_uri}#{exp_id}" + (f"/{parent_run_id}" if parent_run_id else "")
    return _collect(items, device or metric, where, dict(skipped))


def measured_pairs(
    space: SearchSpace,
    archs: Sequence[Sequence[int]],
    input_shape: Sequence[int],
    *,
    build: dict[str, Any] | None = None,
    device: str = "cpu",
    name: str | None = None,
    warmup: int = 5,
    repeats: int = 15,
    threads: int | None = 1,
    rounds: int = 1,
    clock: str = "wall",
    seed: int = 0,
    progress: Any = None,
) -> LatencyPairs:
    """Latencies (ms) of ``archs`` measured here: each is built (``space.build(arch, **build)``)
    and timed at ``input_shape`` (e.g. ``(1, 3, 32, 32)``) with
    :func:`~paretune.objectives.measure.measure_latency`.

    On a busy machine other work only ever adds time: with ``rounds > 1`` every network is
    measured once per round (the networks kept built, in a new random order each round, so a
    busy spell does not hit the same networks every time) and keeps its fastest round. With
    ``clock="cpu"`` (CPU, one thread) each call is timed by the thread's CPU time
    (``time.thread_time`` in ``torch.utils.benchmark.Timer``) instead of the wall clock: the
    time the network costs the processor, which other processes' load does not inflate (on an
    idle machine the two agree).

    Args:
        space: a space with a network builder (NB201, DARTS, MobileNet, macro).
        archs: the architectures.
        input_shape: the input batch's shape.
        build: keyword arguments of ``space.build`` (e.g. ``channels``, ``width_mult``).
        device: where to run (``cpu``, ``cuda``).
        name: the device's name in the pairs (default: ``device``).
        warmup, repeats, threads: as :func:`measure_latency` (per round).
        rounds: measurements per network; the smallest median is kept.
        clock: ``wall`` (:func:`measure_latency`) or ``cpu`` (the thread's CPU time).
        seed: the rounds' order.
        progress: called with ``(done, total)`` after each measurement (optional).
    """
    import torch

    from paretune.objectives.measure import measure_latency

    if not callable(getattr(space, "build", None)):
        raise ValueError(f"measured_pairs: space {space.name!r} has no network builder")
    if rounds < 1:
        raise ValueError(f"measured_pairs: rounds={rounds!r} must be >= 1")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"measured_pairs: clock={clock!r} is unknown (allowed: wall, cpu)")
    if clock == "cpu" and (device != "cpu" or threads != 1):
        raise ValueError(
            f"measured_pairs: clock='cpu' times one CPU thread (device={device!r}, "
            f"threads={threads!r}; needs device='cpu', threads=1)"
        )
    measure = measure_latency if clock == "wall" else _cpu_time_latency
    archs = [space.validate_full(a) for a in archs]
    example = torch.randn(*[int(v) for v in input_shape])
    models: dict[int, Any] = {}
    best = np.full(len(archs), np.inf)
    rng = np.random.default_rng(seed)
    total = rounds * len(archs)
    done = 0
    for r in range(rounds):
        order = np.arange(len(archs)) if r == 0 else rng.permutation(len(archs))
        for i in order:
            model = models.get(int(i)) or space.build(archs[i], **(build or {}))
            if rounds > 1:
                models[int(i)] = model
            ms = measure(
                model, example, device=device, warmup=warmup, repeats=repeats, threads=threads
            )
            best[i] = min(best[i], ms)
            done += 1
            if progress is not None:
                progress(done, total)
    origin = f"measured:{space.name}:{device}:{clock}:{tuple(int(v) for v in input_shape)}"
    return _collect(zip(archs, best.tolist(), strict=True), name or device, origin, {})


def _cpu_time_latency(
    model: Any, example: Any, *, device: str, warmup: int, repeats: int, threads: int | None
) -> float:
    """Median thread CPU time (ms) of ``model(example)`` over ``repeats`` single calls, timed
    by ``torch.utils.benchmark.Timer`` with ``time.thread_time`` (one thread, on the CPU)."""
    import time

    import torch
    from torch.utils import benchmark

    was_training = model.training
    model.eval()
    timer = benchmark.Timer(
        "model(x)", globals={"model": model, "x": example}, timer=time.thread_time, num_threads=1
    )
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(example)
            times = [timer.timeit(1).median for _ in range(repeats)]
    finally:
        model.train(was_training)
    return float(np.median(times)) * 1e3
