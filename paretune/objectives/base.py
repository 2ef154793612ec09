"""Objectives (what is optimised, in which direction, under which limit) and the evaluator protocol.

Metric names and units are shared by every evaluator so that a config works on the table and on
real training alike:

========================  ======  =========================================================
name                      unit    meaning
========================  ======  =========================================================
``accuracy``              %       validation accuracy (what a search sees)
``test_accuracy``         %       test accuracy (reported beside, never used to search)
``params``                M       trainable parameters, millions
``flops``                 M       multiply-adds of one forward pass at batch 1, millions
``latency``               ms      inference latency at batch 1 on the configured device
``energy``                mJ      energy per inference on the configured device
========================  ======  =========================================================

Every value carries its ``source``: ``measured`` (and ``measured-nvml``/``measured-rapl``),
``table``, ``predicted`` or ``estimated``, so nobody mistakes an estimate for a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from paretune.spaces.base import Arch

DIRECTIONS = ("min", "max")
SOURCES = ("measured", "measured-nvml", "measured-rapl", "table", "predicted", "estimated")


@dataclass(frozen=True)
class Objective:
    """One objective: a metric name, its direction and an optional limit.

    ``limit`` is an upper bound for ``min`` objectives and a lower bound for ``max`` objectives;
    a violated limit makes an architecture infeasible (constrained domination).
    """

    name: str
    direction: str = "min"
    unit: str = ""
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"objective {self.name!r}: direction {self.direction!r} is not allowed (allowed: min, max)"
            )

    @property
    def sign(self) -> float:
        """+1 for ``min``, -1 for ``max``: multiply a value by it to get a minimisation value."""
        return 1.0 if self.direction == "min" else -1.0

    def violation(self, value: float) -> float:
        """How far ``value`` is beyond the limit (0 when feasible or unlimited)."""
        if self.limit is None:
            return 0.0
        excess = (value - self.limit) * self.sign
        return max(0.0, float(excess))


@dataclass(frozen=True)
class ObjectiveSet:
    """The objectives of a search, with the hypervolume reference point (raw units, optional)."""

    objectives: tuple[Objective, ...]
    reference: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if not self.objectives:
            raise ValueError("at least one objective is needed")
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"objective names repeat: {names}")
        if self.reference is not None:
            missing = set(names) - set(self.reference)
            extra = set(self.reference) - set(names)
            if missing or extra:
                raise ValueError(
                    f"hypervolume reference must name every objective exactly: missing {sorted(missing)}, "
                    f"unknown {sorted(extra)}"
                )

    @classmethod
    def of(
        cls, *objectives: Objective | tuple[str, str], reference: Mapping[str, float] | None = None
    ) -> ObjectiveSet:
        objs = [o if isinstance(o, Objective) else Objective(o[0], o[1]) for o in objectives]
        return cls(tuple(objs), reference)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def __len__(self) -> int:
        return len(self.objectives)

    def __iter__(self):
        return iter(self.objectives)

    def __getitem__(self, name: str) -> Objective:
        for o in self.objectives:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def has_limits(self) -> bool:
        return any(o.limit is not None for o in self.objectives)

    def vector(self, values: Mapping[str, float]) -> np.ndarray:
        """The values as a minimisation vector (``max`` objectives negated)."""
        return np.array([float(values[o.name]) * o.sign for o in self.objectives], dtype=float)

    def matrix(self, rows: Iterable[Mapping[str, float]]) -> np.ndarray:
        rows = list(rows)
        if not rows:
            return np.zeros((0, len(self)))
        return np.stack([self.vector(r) for r in rows])

    def violation(self, values: Mapping[str, float]) -> float:
        """Total limit violation, each term relative to its limit's magnitude (0 = feasible)."""
        total = 0.0
        for o in self.objectives:
            if o.limit is not None:
                total += o.violation(float(values[o.name])) / max(abs(o.limit), 1e-12)
        return total

    def reference_vector(self) -> np.ndarray | None:
        """The reference point as a minimisation vector, or ``None`` when not configured."""
        if self.reference is None:
            return None
        return self.vector(self.reference)

    def is_valid(self, values: Mapping[str, Any] | None) -> bool:
        """True when every objective has a finite numeric value."""
        if values is None:
            return False
        for name in self.names:
            v = values.get(name)
            if v is None or isinstance(v, bool):
                return False
            try:
                if not math.isfinite(float(v)):
                    return False
            except (TypeError, ValueError):
                return False
        return True


@dataclass
class Evaluation:
    """What an evaluator returns: metric values, the source of each, and extras to log."""

    values: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def as_report(self) -> dict[str, Any]:
        """A flat dict for ``tune.report``: values, then ``source/<metric>`` strings, then extras."""
        out: dict[str, Any] = dict(self.values)
        out.update({f"source/{k}": v for k, v in self.sources.items()})
        out.update(self.extras)
        return out


ReportFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class MetricInfo:
    """A metric an evaluator can produce: its unit, natural direction and source."""

    unit: str
    direction: str
    source: str


@runtime_checkable
class Evaluator(Protocol):
    """Turns an architecture into metric values.

    ``report`` (optional) receives intermediate results (e.g. one per epoch) so that a scheduler
    can stop a trial early; the return value is the final evaluation.
    """

    def metrics(self) -> Mapping[str, MetricInfo]:
        """The metrics this evaluator can produce."""
        ...

    def evaluate(
        self, arch: Arch, report: ReportFn | None = None, **context: Any
    ) -> Evaluation: ...


def check_objectives(
    objectives: ObjectiveSet, available: Mapping[str, MetricInfo], where: str = "objectives"
) -> None:
    """Raise ``ValueError`` naming every objective the evaluator cannot produce."""
    for i, o in enumerate(objectives):
        if o.name not in available:
            raise ValueError(
                f"{where}[{i}].name = {o.name!r}: not a metric of this evaluator (available: {sorted(available)})"
            )
