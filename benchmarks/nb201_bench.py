"""The NB201 search-quality convention (issue 2, item 7), shared by every benchmark.

* Every objective is turned into minimisation and min-max normalised over the whole table
  (all 15,625 architectures), so each lies in [0, 1].
* The search sees validation accuracy (``{dataset}_valid_200``); the found set is scored with
  test accuracy (``{dataset}_test_200``). Hardware columns are the same for both.
* The true front is the exact Pareto front of the scored (test) objectives over the whole table.
* The reference point is the true front's nadir plus 10% of the front's range per objective.
* Quality is the hypervolume gap ``1 - HV(found) / HV(true front)``: 0 means the true front was
  found, 1 means nothing found dominates the reference point. The found set is every
  architecture evaluated, not only what an engine calls its front.

Example::

    bench = NB201Benchmark(load_table(path), "acc-lat-energy")
    values = bench.values(arch)        # what the engine is told (valid accuracy)
    gap = bench.gap(evaluated_archs)   # scored with test accuracy
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos import pareto
from paretune.search_algos.pareto import hypervolume
from paretune.spaces.base import Arch
from paretune.spaces.nb201 import NB201Space

REFERENCE_MARGIN = 0.1
OBJECTIVE_SET_NAMES = ("acc-lat-energy", "acc-params")


@dataclass(frozen=True)
class BenchObjective:
    """One benchmark objective: the name the engine sees and the table columns behind it."""

    name: str
    direction: str
    search_column: str
    score_column: str

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "min" else -1.0


def bench_objectives(objective_set: str, dataset: str = "cifar10") -> tuple[BenchObjective, ...]:
    """The objectives of a named objective set (see ``OBJECTIVE_SET_NAMES``) for ``dataset``."""
    accuracy = BenchObjective("accuracy", "max", f"{dataset}_valid_200", f"{dataset}_test_200")
    if objective_set == "acc-lat-energy":
        return (
            accuracy,
            BenchObjective("latency", "min", "latency_ms_pixel3", "latency_ms_pixel3"),
            BenchObjective("energy", "min", "energy_mj_pi5_onnx", "energy_mj_pi5_onnx"),
        )
    if objective_set == "acc-params":
        params = f"{dataset}_params_m"
        return (accuracy, BenchObjective("params", "min", params, params))
    raise ValueError(
        f"unknown objective set {objective_set!r} (available: {list(OBJECTIVE_SET_NAMES)})"
    )


# ---------------------------------------------------------------------- convention, as functions
def normalisation_bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective ``(min, max)`` of minimisation points (use the whole table)."""
    p = np.asarray(points, dtype=float)
    return p.min(axis=0), p.max(axis=0)


def normalise(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Min-max normalise minimisation points with the table's bounds."""
    span = np.where(hi > lo, hi - lo, 1.0)
    return (np.asarray(points, dtype=float) - lo) / span


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The distinct non-dominated points of a set of minimisation points."""
    import moocore

    p = np.unique(np.asarray(points, dtype=float), axis=0)
    if len(p) == 0:
        return p
    return p[moocore.is_nondominated(p)]


def reference_point(front: np.ndarray, margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The front's nadir plus ``margin`` times the front's range per objective.

    The Pareto module's rule (:func:`paretune.search_algos.pareto.reference_point`): an
    objective with no range gets ``margin`` times ``max(|nadir|, 1)``, i.e. ``margin`` on these
    objectives, min-max normalised to [0, 1].
    """
    return pareto.reference_point(front, margin)


def hypervolume_gap(found: np.ndarray, front: np.ndarray, reference: np.ndarray) -> float:
    """``1 - HV(found) / HV(front)`` with the given reference point (minimisation points)."""
    true_hv = hypervolume(front, reference)
    if true_hv <= 0:
        raise ValueError("the true front has zero hypervolume at this reference point")
    found = np.asarray(found, dtype=float).reshape(-1, np.asarray(front).shape[1])
    return 1.0 - hypervolume(found, reference) / true_hv


# ---------------------------------------------------------------------- the table, precomputed
class NB201Benchmark:
    """One objective set on the NB201 table, with microsecond look-ups and the exact true front.

    Args:
        table: the NB201 table (:func:`paretune.objectives.nb201_table.load_table`).
        objective_set: a name from ``OBJECTIVE_SET_NAMES``.
        dataset: ``cifar10``, ``cifar100`` or ``imagenet16``.
    """

    def __init__(
        self, table: pd.DataFrame, objective_set: str = "acc-lat-energy", dataset: str = "cifar10"
    ) -> None:
        self.name = objective_set
        self.dataset = dataset
        self.bench_objectives = bench_objectives(objective_set, dataset)
        missing = [
            c
            for o in self.bench_objectives
            for c in (o.search_column, o.score_column)
            if c not in table.columns
        ]
        if missing:
            raise ValueError(f"table lacks columns {sorted(set(missing))}")
        self.objectives = ObjectiveSet.of(*((o.name, o.direction) for o in self.bench_objectives))
        self.space = NB201Space()
        self.archs: list[Arch] = [self.space.decode(s) for s in table["arch"]]
        self.row: dict[Arch, int] = {a: i for i, a in enumerate(self.archs)}
        if len(self.row) != len(self.archs):
            raise ValueError("the table repeats architectures")

        names = self.objectives.names
        search = table[[o.search_column for o in self.bench_objectives]].to_numpy(dtype=float)
        self._search_values: list[dict[str, float]] = [
            dict(zip(names, map(float, row), strict=True)) for row in search
        ]
        self.search_accuracy = search[:, 0]
        self.test_accuracy = table[self.bench_objectives[0].score_column].to_numpy(dtype=float)

        signs = np.array([o.sign for o in self.bench_objectives])
        raw = table[[o.score_column for o in self.bench_objectives]].to_numpy(dtype=float) * signs
        self.lo, self.hi = normalisation_bounds(raw)
        self.scores = normalise(raw, self.lo, self.hi)
        self.front = pareto_front(self.scores)
        self.reference = reference_point(self.front)
        self.true_hypervolume = hypervolume(self.front, self.reference)

    def values(self, arch: Arch) -> dict[str, float]:
        """The objective values the search sees for ``arch`` (raw units, valid accuracy)."""
        return dict(self._search_values[self.row[tuple(arch)]])

    def points(self, archs: Iterable[Arch]) -> np.ndarray:
        """Normalised minimisation points (test accuracy) of ``archs``."""
        rows = [self.row[tuple(a)] for a in archs]
        return self.scores[rows]

    def gap(self, archs: Iterable[Arch]) -> float:
        """Hypervolume gap of the evaluated architectures ``archs`` (repeats allowed)."""
        return hypervolume_gap(self.points(archs), self.front, self.reference)

    def best_test_accuracy(self, archs: Sequence[Arch]) -> float:
        """Test accuracy of the architecture with the best search (valid) accuracy in ``archs``."""
        rows = np.array([self.row[tuple(a)] for a in archs])
        if len(rows) == 0:
            return float("nan")
        return float(self.test_accuracy[rows[np.argmax(self.search_accuracy[rows])]])

    def front_archs(self) -> list[Arch]:
        """Every architecture whose scored point lies on the true front."""
        import moocore

        mask = moocore.is_nondominated(self.scores, keep_weakly=True)
        return [a for a, m in zip(self.archs, mask, strict=True) if m]
