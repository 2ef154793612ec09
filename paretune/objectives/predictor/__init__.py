"""SurgeNAS-style latency predictor: a graph network over the cell DAG (plain torch), on any
space: cell graphs for cell spaces (NB201, DARTS), a one-hot encoding and an MLP otherwise.

- :mod:`.graph`: the NB201 cell as an 8-node graph (operations on nodes, one-hot types).
- :mod:`.encoding`: how each space reaches the network (``nb201``, ``cell-graph``, ``one-hot``).
- :mod:`.model`: :class:`GCNLatencyNet`, :class:`MLPLatencyNet` and :class:`LatencyPredictor`
  (fit, predict, save, load).
- :mod:`.data`: training pairs from the NB201 table, networks measured here, an experiment's
  ``trials.csv`` or MLflow.
- :mod:`.store`: save/load as an MLflow artifact (``runs:/<run>/latency_predictor``).
- :mod:`.evaluator`: the ``predicted_latency`` objective (:class:`PredictedLatency`) and the
  predictor as a plain function for screening (:class:`PredictorFunction`).

Example::

    pairs = table_pairs(path, devices=["pixel3"])
    predictor = LatencyPredictor().fit(pairs.archs, pairs.latencies)
    darts = DartsSpace()  # any space: measured latencies of a few sampled networks
    pairs = measured_pairs(darts, archs, (1, 3, 32, 32), build={"channels": 8, "layers": 5})
    predictor = LatencyPredictor(space=darts).fit(pairs.archs, pairs.latencies)
    uri = log_predictor(predictor, run_id, tracking_uri)
    evaluator = PredictedLatency(TableEvaluator(path), uri, tracking_uri=tracking_uri)
"""

from __future__ import annotations

from paretune.objectives.predictor.data import (
    LatencyPairs,
    measured_pairs,
    mlflow_pairs,
    table_pairs,
    trials_csv_pairs,
)
from paretune.objectives.predictor.encoding import ENCODINGS, make_encoding
from paretune.objectives.predictor.evaluator import (
    PREDICTED_METRIC,
    PredictedLatency,
    PredictorFunction,
    attach_predictor,
    predictor_function,
    resolve_predictor_settings,
)
from paretune.objectives.predictor.graph import nb201_graph, nb201_graphs
from paretune.objectives.predictor.model import (
    GCNLatencyNet,
    LatencyPredictor,
    MLPLatencyNet,
    PredictorSettings,
)
from paretune.objectives.predictor.store import ARTIFACT_PATH, load_predictor, log_predictor

__all__ = [
    "ARTIFACT_PATH",
    "ENCODINGS",
    "PREDICTED_METRIC",
    "GCNLatencyNet",
    "LatencyPairs",
    "LatencyPredictor",
    "MLPLatencyNet",
    "PredictedLatency",
    "PredictorFunction",
    "PredictorSettings",
    "attach_predictor",
    "load_predictor",
    "log_predictor",
    "make_encoding",
    "measured_pairs",
    "mlflow_pairs",
    "nb201_graph",
    "nb201_graphs",
    "predictor_function",
    "resolve_predictor_settings",
    "table_pairs",
    "trials_csv_pairs",
]
