"""How a candidate is measured: objectives, evaluators, datasets and predictors.

Importing this package is light (no torch): the evaluators, datasets and measurement helpers
are imported on first use (``paretune.objectives.TrainEvaluator`` or :func:`make_evaluator`).
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from paretune.objectives.data import DATASETS, Dataset, Split, load_dataset
    from paretune.objectives.energy import (
        EnergyCoefficients,
        EnergyMeter,
        EnergyReading,
        EnergyUnavailable,
        NVMLMeter,
        RAPLMeter,
        estimate_energy,
        estimate_training_energy,
        make_energy_meter,
        trial_gpu_ids,
    )
    from paretune.objectives.measure import count_flops, count_params, measure_latency
    from paretune.objectives.onnx_latency import measure_onnx_latency
    from paretune.objectives.predictor import (
        LatencyPredictor,
        PredictedLatency,
        PredictorFunction,
        attach_predictor,
        load_predictor,
        log_predictor,
        predictor_function,
    )
    from paretune.objectives.python_evaluator import PythonEvaluator
    from paretune.objectives.table import (
        ColumnTableEvaluator,
        TableEvaluator,
        load_hw_nas_bench_pickle,
    )
    from paretune.objectives.train import TrainEvaluator

# kind -> (module, class): imported only when that kind is made.
_EVALUATOR_PATHS: dict[str, tuple[str, str]] = {
    "table": ("paretune.objectives.table", "TableEvaluator"),
    "train": ("paretune.objectives.train", "TrainEvaluator"),
    "python": ("paretune.objectives.python_evaluator", "PythonEvaluator"),
    "supernet": ("paretune.objectives.oneshot", "SupernetEvaluator"),
}
EVALUATOR_KINDS: tuple[str, ...] = tuple(_EVALUATOR_PATHS)

_LAZY: dict[str, str] = {
    "TableEvaluator": "paretune.objectives.table",
    "load_hw_nas_bench_pickle": "paretune.objectives.table",
    "TrainEvaluator": "paretune.objectives.train",
    "PythonEvaluator": "paretune.objectives.python_evaluator",
    "SupernetEvaluator": "paretune.objectives.oneshot",
    "ColumnTableEvaluator": "paretune.objectives.table",
    "DATASETS": "paretune.objectives.data",
    "Dataset": "paretune.objectives.data",
    "Split": "paretune.objectives.data",
    "load_dataset": "paretune.objectives.data",
    "EnergyCoefficients": "paretune.objectives.energy",
    "EnergyMeter": "paretune.objectives.energy",
    "EnergyReading": "paretune.objectives.energy",
    "EnergyUnavailable": "paretune.objectives.energy",
    "NVMLMeter": "paretune.objectives.energy",
    "RAPLMeter": "paretune.objectives.energy",
    "estimate_energy": "paretune.objectives.energy",
    "estimate_training_energy": "paretune.objectives.energy",
    "make_energy_meter": "paretune.objectives.energy",
    "trial_gpu_ids": "paretune.objectives.energy",
    "count_flops": "paretune.objectives.measure",
    "count_params": "paretune.objectives.measure",
    "measure_latency": "paretune.objectives.measure",
    "measure_onnx_latency": "paretune.objectives.onnx_latency",
    "LatencyPredictor": "paretune.objectives.predictor",
    "PredictedLatency": "paretune.objectives.predictor",
    "PredictorFunction": "paretune.objectives.predictor",
    "attach_predictor": "paretune.objectives.predictor",
    "load_predictor": "paretune.objectives.predictor",
    "log_predictor": "paretune.objectives.predictor",
    "predictor_function": "paretune.objectives.predictor",
}


def evaluator_class(kind: str) -> type:
    """The evaluator class registered as ``kind`` (imports only its module)."""
    if kind not in _EVALUATOR_PATHS:
        raise ValueError(f"unknown evaluator kind {kind!r} (available: {list(EVALUATOR_KINDS)})")
    module, name = _EVALUATOR_PATHS[kind]
    return getattr(importlib.import_module(module), name)


def make_evaluator(kind: str, **settings: Any) -> Evaluator:
    """An evaluator of ``kind`` (``table``, ``train`` or ``python``) built from ``settings``.

    A ``table`` with ``columns`` (a column per metric) is any benchmark table
    (:class:`~paretune.objectives.table.ColumnTableEvaluator`), else the NAS-Bench-201 table.

    Raises:
        ValueError: an unknown kind or setting, naming what is allowed.
    """
    settings = dict(settings)
    proxies = settings.pop("proxies", None)  # objectives with source: proxy
    if proxies:
        from paretune.objectives.proxies import attach_proxies

        return attach_proxies(make_evaluator(kind, **settings), proxies)
    cls = evaluator_class(kind)
    if kind == "table" and settings.get("columns") is not None:
        cls = importlib.import_module(_EVALUATOR_PATHS[kind][0]).ColumnTableEvaluator
    params = inspect.signature(cls).parameters
    allowed = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"evaluator {kind!r}: unknown settings {unknown} (allowed: {allowed})")
    return cls(**settings)


def __getattr__(name: str) -> Any:
    if name == "EVALUATORS":
        return {kind: evaluator_class(kind) for kind in EVALUATOR_KINDS}
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'paretune.objectives' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"EVALUATORS"})


__all__ = [
    "DATASETS",
    "ColumnTableEvaluator",
    "DIRECTIONS",
    "EVALUATORS",
    "EVALUATOR_KINDS",
    "SOURCES",
    "Dataset",
    "EnergyCoefficients",
    "EnergyMeter",
    "EnergyReading",
    "EnergyUnavailable",
    "Evaluation",
    "Evaluator",
    "LatencyPredictor",
    "MetricInfo",
    "NVMLMeter",
    "Objective",
    "ObjectiveSet",
    "PredictedLatency",
    "PredictorFunction",
    "RAPLMeter",
    "Split",
    "PythonEvaluator",
    "TableEvaluator",
    "TrainEvaluator",
    "attach_predictor",
    "check_objectives",
    "count_flops",
    "count_params",
    "estimate_energy",
    "estimate_training_energy",
    "evaluator_class",
    "load_dataset",
    "load_hw_nas_bench_pickle",
    "load_predictor",
    "log_predictor",
    "make_energy_meter",
    "make_evaluator",
    "measure_latency",
    "measure_onnx_latency",
    "predictor_function",
    "trial_gpu_ids",
]
