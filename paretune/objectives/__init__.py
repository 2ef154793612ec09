"""How a candidate is measured: objectives, evaluators, datasets and predictors."""

from __future__ import annotations

from paretune.objectives.base import (
    DIRECTIONS,
    SOURCES,
    Evaluation,
    Evaluator,
    MetricInfo,
    Objective,
    ObjectiveSet,
    check_objectives,
)

__all__ = [
    "DIRECTIONS",
    "SOURCES",
    "Evaluation",
    "Evaluator",
    "MetricInfo",
    "Objective",
    "ObjectiveSet",
    "check_objectives",
]
