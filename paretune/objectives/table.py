"""Tabular evaluation on the NAS-Bench-201 table (accuracy, cost and hardware columns).

:class:`TableEvaluator` looks an architecture up in the table and returns, in microseconds,

=================  ==============================  ========================================
metric             column                          meaning
=================  ==============================  ========================================
``accuracy``       ``{dataset}_valid_{fidelity}``  valid accuracy, % (what a search sees)
``test_accuracy``  ``{dataset}_test_{fidelity}``   test accuracy, % (reported beside)
``params``         ``{dataset}_params_m``          parameters, M
``flops``          ``{dataset}_flops_m``           multiply-adds, M
``latency``        ``latency_ms_{latency_device}`` latency, ms
``energy``         ``energy_mj_{energy_device}``   energy per inference, mJ
=================  ==============================  ========================================

Every other numeric column is also a metric under its own name (e.g. ``latency_ms_raspi4``);
name it in ``extra`` to have :meth:`TableEvaluator.evaluate` return it too. Every value's source
is ``table``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from paretune.objectives.base import Evaluation, MetricInfo, ReportFn
from paretune.objectives.nb201_table import (
    DATASETS,
    FIDELITIES,
    energy_devices,
    latency_devices,
    load_table,
    resolve_table_path,
)
from paretune.objectives.safe_pickle import PickleDataError, parse, to_data
from paretune.spaces.base import Arch, SearchSpace
from paretune.spaces.nb201 import NB201_OPS, NB201Space

BASE_METRICS = ("accuracy", "test_accuracy", "params", "flops", "latency", "energy")
_NUM_EDGES = 6
_NUM_OPS = len(NB201_OPS)
_WEIGHTS = np.array([_NUM_OPS ** (_NUM_EDGES - 1 - k) for k in range(_NUM_EDGES)], dtype=np.int64)


def _position(arch: Sequence[int]) -> int:
    """Position of ``arch`` in the lexicographic order of the full NB201 space."""
    return int(np.dot(np.asarray(arch, dtype=np.int64), _WEIGHTS))


def _column_info(column: str) -> MetricInfo:
    """Unit and natural direction of a raw table column."""
    if "_test_" in column or "_valid_" in column:
        return MetricInfo("%", "max", "table")
    if column.endswith("_zen_score"):
        return MetricInfo("", "max", "table")
    if column.endswith("_params_m") or column.endswith("_flops_m"):
        return MetricInfo("M", "min", "table")
    if column.startswith("latency_ms_"):
        return MetricInfo("ms", "min", "table")
    if column.startswith("energy_mj_"):
        return MetricInfo("mJ", "min", "table")
    return MetricInfo("", "min", "table")


@functools.lru_cache(maxsize=4)
def _ordered(path: str, mtime: float) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The table's numeric columns as a float matrix in lexicographic space order.

    Returns ``(values, column names, NB201 index per row)``; row ``p`` is the architecture at
    position ``p`` of ``iter(NB201Space())``.
    """
    df = load_table(path)
    space = NB201Space()
    numeric = [c for c in df.columns if c != "arch" and pd.api.types.is_numeric_dtype(df[c])]
    if len(df) != space.size:
        raise ValueError(f"{path}: {len(df)} rows, the NB201 space has {space.size} architectures")
    positions = np.array([_position(space.decode(s)) for s in df["arch"]], dtype=np.int64)
    if len(np.unique(positions)) != space.size:
        raise ValueError(f"{path}: the 'arch' column repeats architectures")
    order = np.argsort(positions)
    values = df[numeric].to_numpy(dtype=np.float64)[order]
    values.setflags(write=False)
    index = df.index.to_numpy()[order]
    return values, numeric, index


class TableEvaluator:
    """Looks architectures of the NB201 space up in the NAS-Bench-201 table.

    Args:
        path: the table file or its folder; ``None`` reads ``$PARETUNE_NB201``.
        dataset: ``cifar10``, ``cifar100`` or ``imagenet16``.
        fidelity: training epochs of the accuracy columns, 12 or 200.
        latency_device: the ``latency_ms_{device}`` column used for ``latency``.
        energy_device: the ``energy_mj_{device}`` column used for ``energy``.
        extra: further metrics (raw column names) that :meth:`evaluate` returns.

    Raises:
        ValueError: an unknown dataset, fidelity, device or extra column, naming the ones that
            are available.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        dataset: str = "cifar10",
        fidelity: int = 200,
        latency_device: str = "pixel3",
        energy_device: str = "pi5_onnx",
        extra: Sequence[str] = (),
    ) -> None:
        file = resolve_table_path(path)
        df = load_table(file)
        if dataset not in DATASETS:
            raise ValueError(
                f"TableEvaluator: dataset {dataset!r} is not in the table (available: {list(DATASETS)})"
            )
        if fidelity not in FIDELITIES:
            raise ValueError(
                f"TableEvaluator: fidelity {fidelity!r} is not in the table (available: {list(FIDELITIES)})"
            )
        lat = latency_devices(df)
        if latency_device not in lat:
            raise ValueError(
                f"TableEvaluator: latency_device {latency_device!r} is unknown (available: {lat})"
            )
        en = energy_devices(df)
        if energy_device not in en:
            raise ValueError(
                f"TableEvaluator: energy_device {energy_device!r} is unknown (available: {en})"
            )
        self.path = file
        self.dataset = dataset
        self.fidelity = int(fidelity)
        self.latency_device = latency_device
        self.energy_device = energy_device
        self.space = NB201Space()

        values, columns, index = _ordered(str(file.resolve()), file.stat().st_mtime)
        self._values = values
        self._column_pos = {c: i for i, c in enumerate(columns)}
        self._index = index
        #: metric name -> table column
        self.columns: dict[str, str] = {
            "accuracy": f"{dataset}_valid_{fidelity}",
            "test_accuracy": f"{dataset}_test_{fidelity}",
            "params": f"{dataset}_params_m",
            "flops": f"{dataset}_flops_m",
            "latency": f"latency_ms_{latency_device}",
            "energy": f"energy_mj_{energy_device}",
        }
        for metric, column in self.columns.items():
            if column not in self._column_pos:
                raise ValueError(f"{file}: column {column!r} for metric {metric!r} is missing")
        self._metrics: dict[str, MetricInfo] = {
            "accuracy": MetricInfo("%", "max", "table"),
            "test_accuracy": MetricInfo("%", "max", "table"),
            "params": MetricInfo("M", "min", "table"),
            "flops": MetricInfo("M", "min", "table"),
            "latency": MetricInfo("ms", "min", "table"),
            "energy": MetricInfo("mJ", "min", "table"),
        }
        for c in columns:
            self._metrics.setdefault(c, _column_info(c))
        extra = [e for e in extra if e not in BASE_METRICS]
        unknown = [e for e in extra if e not in self._column_pos]
        if unknown:
            raise ValueError(
                f"TableEvaluator: extra metrics {unknown} are not table columns (available: {sorted(self._column_pos)})"
            )
        self.extra = tuple(dict.fromkeys(extra))
        self._names = BASE_METRICS + self.extra
        cols = [self._column_pos[self.columns.get(n, n)] for n in self._names]
        # arch tuple -> (row of python floats, NB201 index): a dict lookup per evaluation.
        picked = values[:, cols].tolist()
        self._rows: dict[Arch, tuple[tuple[float, ...], int]] = {
            arch: (tuple(row), int(i))
            for arch, row, i in zip(self.space, picked, index.tolist(), strict=True)
        }
        self._sources = dict.fromkeys(self._names, "table")

    def metrics(self) -> Mapping[str, MetricInfo]:
        """The six standard metrics plus every numeric table column under its own name."""
        return dict(self._metrics)

    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """The table row of ``arch``; ``report`` is not called (there are no intermediate
        results) and ``context`` is ignored.

        Raises:
            ValueError: ``arch`` is not an architecture of the NB201 space.
        """
        try:
            hit = self._rows.get(arch)
        except TypeError:  # unhashable, e.g. a list
            hit = None
        if hit is None:
            try:
                hit = self._rows.get(tuple(int(i) for i in arch))
            except (TypeError, ValueError):
                hit = None
            if hit is None:
                raise ValueError(
                    f"TableEvaluator: {arch!r} is not an NB201 architecture "
                    f"(6 option indices in 0..{_NUM_OPS - 1})"
                )
        row, index = hit
        return Evaluation(
            values=dict(zip(self._names, row, strict=True)),
            sources=dict(self._sources),
            extras={"nb201_index": index},
        )

    def column_of(self, name: str) -> str:
        """The table column behind a metric name (a raw column maps to itself)."""
        column = self.columns.get(name, name)
        if column not in self._column_pos:
            raise ValueError(
                f"TableEvaluator: unknown metric {name!r} (available: {sorted(self._metrics)})"
            )
        return column

    def matrix(
        self, names: Sequence[str], space: SearchSpace | None = None
    ) -> tuple[np.ndarray, list[Arch]]:
        """Metric values of every architecture, for benchmarks (vectorised).

        Args:
            names: metric names (standard or raw column names), one column each.
            space: the architectures to include, in its iteration order; default the full space.

        Returns:
            ``(values, archs)``: a ``len(archs) x len(names)`` float array and the architectures
            of its rows (all 15,625 in ``iter(NB201Space())`` order by default).
        """
        cols = [self._column_pos[self.column_of(n)] for n in names]
        if space is None:
            archs = list(self.space)
            return self._values[:, cols], archs
        archs = list(space)
        if archs and len(archs[0]) != _NUM_EDGES:
            raise ValueError(f"TableEvaluator.matrix: space {space.name!r} is not an NB201 space")
        rows = np.asarray(archs, dtype=np.int64).reshape(-1, _NUM_EDGES) @ _WEIGHTS
        return self._values[np.ix_(rows, cols)], archs

    def check_limits(self, objectives: Any, space: SearchSpace) -> None:
        """Raise ValueError when no architecture of ``space`` meets the objectives' limits.

        Exact: every architecture is looked up. Limits on metrics the table lacks are skipped.
        """
        limited = [
            (i, o)
            for i, o in enumerate(objectives)
            if o.limit is not None and o.name in self._metrics
        ]
        if not limited:
            return
        values, _ = self.matrix([o.name for _, o in limited], space)
        feasible = np.ones(len(values), dtype=bool)
        for k, (i, o) in enumerate(limited):
            ok = values[:, k] * o.sign <= o.limit * o.sign
            if not ok.any():
                best = values[:, k].min() if o.direction == "min" else values[:, k].max()
                raise ValueError(
                    f"objectives[{i}].limit = {o.limit!r}: no architecture meets it "
                    f"(best {o.name} in the space: {best:.6g})"
                )
            feasible &= ok
        if not feasible.any():
            limits = {o.name: o.limit for _, o in limited}
            raise ValueError(
                f"objectives limits {limits}: each can be met, but no architecture meets all "
                "of them at once"
            )

    def nb201_index(self, arch: Arch) -> int:
        """The NB201 index (the table's ``index``) of ``arch``."""
        return self._rows[tuple(int(i) for i in arch)][1]

    def __repr__(self) -> str:
        return (
            f"TableEvaluator(dataset={self.dataset!r}, fidelity={self.fidelity}, "
            f"latency_device={self.latency_device!r}, energy_device={self.energy_device!r})"
        )


HW_NAS_BENCH_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")


def load_hw_nas_bench_pickle(path: str | os.PathLike, dataset: str) -> pd.DataFrame:
    """The NB201 part of the official HW-NAS-Bench pickle (``HW-NAS-Bench-v1_0.pickle``).

    The pickle holds ``d["nasbench201"][dataset][metric][index]`` with metrics such as
    ``edgegpu_latency``, ``edgegpu_energy``, ``raspi4_latency``, ``edgetpu_latency``,
    ``pixel3_latency``, ``eyeriss_latency``, ``eyeriss_energy``, ``fpga_latency`` and
    ``fpga_energy``; non-numeric entries (``config``) are skipped. The file is never unpickled
    (:mod:`paretune.objectives.safe_pickle` reads it as data), so a crafted pickle cannot run
    code: anything but plain data and numpy values is refused.

    Args:
        path: the pickle file.
        dataset: a key under ``nasbench201`` (``cifar10``, ``cifar100``, ``ImageNet16-120``).

    Returns:
        One float column per metric, indexed by the NB201 index (named ``index``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"HW-NAS-Bench pickle not found: {str(p)!r}")
    try:
        d = to_data(parse(p.read_bytes(), str(p)), str(p))
    except PickleDataError as exc:
        reason = str(exc).removeprefix(f"{p}: ")
        raise ValueError(f"{str(p)!r}: not an HW-NAS-Bench pickle ({reason})") from None
    if not isinstance(d, Mapping) or "nasbench201" not in d:
        keys = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise ValueError(
            f"{str(p)!r}: not an HW-NAS-Bench pickle (no 'nasbench201' key; found {keys})"
        )
    space = d["nasbench201"]
    if dataset not in space:
        raise ValueError(
            f"HW-NAS-Bench: dataset {dataset!r} is unknown (available: {sorted(space)})"
        )
    columns: dict[str, pd.Series] = {}
    for metric, values in space[dataset].items():
        if metric == "config":
            continue
        series = pd.Series(values) if isinstance(values, Mapping) else pd.Series(list(values))
        try:
            columns[metric] = series.astype(np.float64)
        except (TypeError, ValueError):
            continue  # not a numeric metric
    if not columns:
        raise ValueError(f"{str(p)!r}: no numeric metrics under nasbench201/{dataset}")
    df = pd.DataFrame(columns)
    df.index = df.index.astype(np.int64)
    df.index.name = "index"
    return df.sort_index()


TABLE_SUFFIXES = (".csv.gz", ".csv", ".parquet")


def resolve_benchmark_table(path: str | os.PathLike | None, benchmark: str | None) -> Path:
    """The table file of a benchmark: ``path`` (a file, or a folder holding one table), else
    ``$PARETUNE_<BENCHMARK>``, else the data cache ``$PARETUNE_DATA/benchmarks/<benchmark>/``.

    Raises:
        FileNotFoundError: naming where it was looked for.
    """
    from paretune.objectives.benchmark_data import benchmark_dir

    if path is not None and str(path) != "":
        return _one_table(Path(path).expanduser(), "evaluator.path", benchmark)
    if not benchmark:
        raise FileNotFoundError("evaluator.path is not set and no evaluator.benchmark is named")
    env = f"PARETUNE_{benchmark.upper()}"
    if os.environ.get(env):
        return _one_table(Path(os.environ[env]).expanduser(), env, benchmark)
    cached = benchmark_dir(benchmark)
    if cached.is_dir():
        return _one_table(cached, "the data cache", benchmark)
    raise FileNotFoundError(
        f"no {benchmark} table: evaluator.path is not set, {env} is not set and the cache has "
        f"none ({cached}); point evaluator.path or {env} at the table file or its folder"
    )


def _one_table(p: Path, where: str, benchmark: str | None) -> Path:
    if p.is_file():
        return p
    if p.is_dir():
        named = [p / f"{benchmark}{s}" for s in TABLE_SUFFIXES] if benchmark else []
        for file in named:
            if file.is_file():
                return file
        found = sorted(f for f in p.iterdir() if f.name.endswith(TABLE_SUFFIXES))
        if len(found) == 1:
            return found[0]
        raise FileNotFoundError(
            f"{where} = {str(p)!r}: {len(found)} table files in this folder (expected one "
            f"ending in {', '.join(TABLE_SUFFIXES)})"
        )
    raise FileNotFoundError(f"{where} = {str(p)!r}: no such file or folder")


class ColumnTableEvaluator:
    """Looks architectures up in any benchmark table, given which column holds each metric.

    Args:
        columns: ``{metric: column}`` (e.g. ``{accuracy: cifar10_test_acc_seed0}``); every other
            numeric column is returned too, under its own name.
        path: the table file (CSV, gzip CSV or Parquet) or its folder.
        benchmark: the benchmark's name, for ``$PARETUNE_<NAME>`` and the data cache when
            ``path`` is not given.
        arch_column: the column of architecture strings, decoded by the space (default
            ``arch``).
        space: the space's spec (``{"kind": ..., **settings}``); ``None``: NB201.

    Raises:
        ValueError: a missing column, an architecture string the space cannot read, or a
            space architecture repeated; FileNotFoundError: no table.
    """

    def __init__(
        self,
        columns: Mapping[str, str],
        path: str | os.PathLike | None = None,
        benchmark: str | None = None,
        arch_column: str | None = None,
        space: Mapping[str, Any] | None = None,
    ) -> None:
        from paretune.objectives.python_evaluator import space_from_spec

        self.path = resolve_benchmark_table(path, benchmark)
        name = str(self.path)
        df = pd.read_parquet(self.path) if name.endswith(".parquet") else pd.read_csv(self.path)
        self.arch_column = arch_column or "arch"
        self.space = space_from_spec(space)
        self.columns = dict(columns)
        present = [self.arch_column, *self.columns.values()]
        missing = [c for c in present if c not in df.columns]
        if missing:
            raise ValueError(
                f"evaluator.columns: {missing} not in {self.path.name} (columns: "
                f"{', '.join(map(str, df.columns))})"
            )
        numeric = [
            c
            for c in df.columns
            if c != self.arch_column and c != "index" and pd.api.types.is_numeric_dtype(df[c])
        ]
        bad = [c for c in self.columns.values() if c not in numeric]
        if bad:
            raise ValueError(f"evaluator.columns: {bad} are not numeric columns")
        extra = [c for c in numeric if c not in self.columns.values() and c not in self.columns]
        self._names = (*self.columns, *extra)
        picked = df[[*self.columns.values(), *extra]].to_numpy(dtype=np.float64).tolist()
        self._rows: dict[Arch, tuple[float, ...]] = {}
        for text, row in zip(df[self.arch_column].astype(str), picked, strict=True):
            try:
                arch = self.space.validate_full(self.space.decode(text))
            except ValueError as exc:
                raise ValueError(
                    f"{self.path.name}: {self.arch_column} {text!r} is not an architecture of "
                    f"space {self.space.name!r} ({exc})"
                ) from None
            if arch in self._rows:
                raise ValueError(f"{self.path.name}: architecture {text!r} appears twice")
            self._rows[arch] = tuple(row)
        self._metrics = {n: MetricInfo("", "", "table") for n in self.columns}
        for c in extra:
            self._metrics[c] = _column_info(c)

    def metrics(self) -> Mapping[str, MetricInfo]:
        """The mapped metrics and every other numeric column under its own name."""
        return dict(self._metrics)

    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """The table row of ``arch``.

        Raises:
            ValueError: ``arch`` is not in the table.
        """
        row = self._rows.get(tuple(int(i) for i in arch))
        if row is None:
            raise ValueError(
                f"ColumnTableEvaluator: {self.space.encode(arch)!r} is not in {self.path.name}"
            )
        return Evaluation(
            values=dict(zip(self._names, row, strict=True)),
            sources=dict.fromkeys(self._names, "table"),
        )

    def __repr__(self) -> str:
        return f"ColumnTableEvaluator({self.path.name!r}, columns={self.columns})"
