"""The search-quality convention of :mod:`benchmarks.nb201_bench` on the NAS-Bench-Macro table.

NAS-Bench-Macro (8 layers x 3 choices, 6,561 architectures, 3,969 distinct networks) has no
validation accuracy: the search sees one seed's test accuracy (``cifar10_test_acc_seed0``) and
the found set is scored with the mean of the three seeds (``cifar10_test_acc``). Costs:
``params_m`` or ``flops_m``. Objectives are min-max normalised over the table, the true front
is the exact front of the scored objectives over the table, the reference point its nadir plus
10% of its range, quality the hypervolume gap. Architectures that are the same network (an
identity moved inside a stage) carry the same record, so they are the same point.

Example::

    bench = MacroBenchmark(load_macro_table(), "acc-params")
    values = bench.values(arch)        # what the engine is told (seed 0's accuracy)
    gap = bench.gap(evaluated_archs)   # scored with the mean accuracy of 3 seeds
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.nb201_bench import (
    BenchObjective,
    normalisation_bounds,
    normalise,
    pareto_front,
    reference_point,
)
from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.pareto import hypervolume
from paretune.spaces.base import Arch
from paretune.spaces.macro import MacroSpace

MACRO_OBJECTIVE_SET_NAMES = ("acc-params", "acc-flops")


def macro_objectives(objective_set: str) -> tuple[BenchObjective, ...]:
    """The objectives of a named NAS-Bench-Macro objective set."""
    accuracy = BenchObjective("accuracy", "max", "cifar10_test_acc_seed0", "cifar10_test_acc")
    if objective_set == "acc-params":
        return (accuracy, BenchObjective("params", "min", "params_m", "params_m"))
    if objective_set == "acc-flops":
        return (accuracy, BenchObjective("flops", "min", "flops_m", "flops_m"))
    raise ValueError(
        f"unknown objective set {objective_set!r} (available: {list(MACRO_OBJECTIVE_SET_NAMES)})"
    )


def resolve_macro_table(path: str | os.PathLike | None = None) -> Path:
    """The table file: ``path``, else ``$PARETUNE_NASBENCH_MACRO``, else ``shared/`` beside the
    repository (a file or its folder); ``FileNotFoundError`` says where it looked."""
    given = path or os.environ.get("PARETUNE_NASBENCH_MACRO")
    p = (
        Path(given).expanduser()
        if given
        else Path(__file__).resolve().parents[2] / "shared/benchmarks/nasbench_macro"
    )
    if p.is_dir():
        p = p / "nasbench_macro.csv.gz"
    if not p.is_file():
        raise FileNotFoundError(
            f"no NAS-Bench-Macro table at {str(p)!r}: pass --table or set PARETUNE_NASBENCH_MACRO "
            "to the table file or its folder"
        )
    return p


def load_macro_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    return pd.read_csv(resolve_macro_table(path), dtype={"arch": str, "trained_arch": str})


class MacroBenchmark:
    """One objective set on the NAS-Bench-Macro table (same interface as ``NB201Benchmark``)."""

    def __init__(self, table: pd.DataFrame, objective_set: str = "acc-params") -> None:
        self.name = objective_set
        self.dataset = "cifar10"
        self.bench_objectives = macro_objectives(objective_set)
        self.objectives = ObjectiveSet.of(*((o.name, o.direction) for o in self.bench_objectives))
        self.space = MacroSpace()
        self.archs: list[Arch] = [self.space.decode(s) for s in table["arch"]]
        self.row: dict[Arch, int] = {a: i for i, a in enumerate(self.archs)}
        if len(self.row) != len(self.archs):
            raise ValueError("the table repeats architectures")
        names = self.objectives.names
        search = table[[o.search_column for o in self.bench_objectives]].to_numpy(dtype=float)
        self._search_values = [dict(zip(names, map(float, r), strict=True)) for r in search]
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
        """The objective values the search sees for ``arch`` (seed 0's accuracy)."""
        return dict(self._search_values[self.row[tuple(arch)]])

    def points(self, archs: Iterable[Arch]) -> np.ndarray:
        return self.scores[[self.row[tuple(a)] for a in archs]]

    def gap(self, archs: Iterable[Arch]) -> float:
        """Hypervolume gap of the evaluated architectures (scored with the 3-seed mean)."""
        found = self.points(archs)
        return 1.0 - hypervolume(found, self.reference) / self.true_hypervolume

    def best_test_accuracy(self, archs: Sequence[Arch]) -> float:
        """Mean accuracy of the architecture with the best seen (seed 0) accuracy."""
        rows = np.array([self.row[tuple(a)] for a in archs])
        if len(rows) == 0:
            return float("nan")
        return float(self.test_accuracy[rows[np.argmax(self.search_accuracy[rows])]])
