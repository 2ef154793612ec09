"""SurgeNAS-style latency predictor: a graph network over the cell DAG (plain torch).

- :mod:`.graph`: the NB201 cell as an 8-node graph (operations on nodes, one-hot types).
- :mod:`.model`: :class:`GCNLatencyNet` and :class:`LatencyPredictor` (fit, predict, save, load).
- :mod:`.data`: training pairs from the NB201 table, an experiment's ``trials.csv`` or MLflow.
- :mod:`.store`: save/load as an MLflow artifact (``runs:/<run>/latency_predictor``).
- :mod:`.evaluator`: the ``predicted_latency`` objective (:class:`PredictedLatency`) and the
  predictor as a plain function for screening (:class:`PredictorFunction`).

Example::

    pairs = table_pairs(path, devices=["pixel3"])
    predictor = LatencyPredictor().fit(pairs.archs, pairs.latencies)
    uri = log_predictor(predictor, run_id, tracking_uri)
    evaluator = PredictedLatency(TableEvaluator(path), uri, tracking_uri=tracking_uri)
"""

from __future__ import annotations

from paretune.objectives.predictor.data import (
    LatencyPairs,
    mlflow_pairs,
    table_pairs,
    trials_csv_pairs,
)
from paretune.objectives.predictor.evaluator import (
    PREDICTED_METRIC,
    PredictedLatency,
    PredictorFunction,
    attach_predictor,
    predictor_function,
    resolve_predictor_settings,
)
from paretune.objectives.predictor.graph import nb201_graph, nb201_graphs
from paretune.objectives.predictor.model import GCNLatencyNet, LatencyPredictor, PredictorSettings
from paretune.objectives.predictor.store import ARTIFACT_PATH, load_predictor, log_predictor

__all__ = [
    "ARTIFACT_PATH",
    "PREDICTED_METRIC",
    "GCNLatencyNet",
    "LatencyPairs",
    "LatencyPredictor",
    "PredictedLatency",
    "PredictorFunction",
    "PredictorSettings",
    "attach_predictor",
    "load_predictor",
    "log_predictor",
    "mlflow_pairs",
    "nb201_graph",
    "nb201_graphs",
    "predictor_function",
    "resolve_predictor_settings",
    "table_pairs",
    "trials_csv_pairs",
]
