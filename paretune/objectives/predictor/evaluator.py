"""The predicted-latency objective, and the predictor as a plain function for screening.

:class:`PredictedLatency` wraps any evaluator (table or training) and adds one metric, by default
``predicted_latency`` (ms, ``min``, source ``predicted``), computed by a trained
:class:`~paretune.objectives.predictor.model.LatencyPredictor` before the inner evaluation; it is
in every intermediate report too, so it can be an objective or carry a limit like any other.

:class:`PredictorFunction` is ``arch -> predicted latency`` for
:class:`paretune.search_algos.screening.ScreenedEngine`: it holds only the predictor's location,
loads it on first use and caches predictions, so it pickles small (Ray pickles the searcher).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from paretune.objectives.base import Evaluation, Evaluator, MetricInfo, ReportFn
from paretune.objectives.predictor.model import LatencyPredictor
from paretune.objectives.predictor.store import load_predictor
from paretune.spaces.base import Arch, SearchSpace

PREDICTED_METRIC = "predicted_latency"
PREDICTOR_KEYS = ("path", "device", "metric", "tracking_uri")


@functools.lru_cache(maxsize=8)
def _cached_predictor(location: str, tracking_uri: str | None) -> LatencyPredictor:
    return load_predictor(location, tracking_uri)


def _predictor_of(
    predictor: LatencyPredictor | str | os.PathLike,
    tracking_uri: str | None,
    space: SearchSpace | None = None,
) -> LatencyPredictor:
    """The predictor (loaded once per process), checked against ``space`` when given: a
    predictor trained on other decisions raises ``ValueError`` naming both spaces."""
    if not isinstance(predictor, LatencyPredictor):
        predictor = _cached_predictor(str(predictor), tracking_uri)
    if space is not None:
        predictor.use_space(space)
    return predictor


class PredictedLatency:
    """An evaluator that adds a predicted latency to another evaluator's metrics.

    Args:
        inner: the evaluator whose metrics are kept.
        predictor: a :class:`LatencyPredictor`, a folder, or an MLflow artifact URI.
        device: which of the predictor's devices (optional when it has one).
        metric: the name of the added metric.
        tracking_uri: MLflow tracking URI for a ``runs:/`` predictor.
        space: the space of the architectures (checked against the predictor's; needed only
            for the cell graphs of a space that is not built in).

    Raises:
        ValueError: the metric name is one of the inner evaluator's, the device is unknown, or
            the predictor was trained on another space.
    """

    def __init__(
        self,
        inner: Evaluator,
        predictor: LatencyPredictor | str | os.PathLike,
        device: str | None = None,
        metric: str = PREDICTED_METRIC,
        tracking_uri: str | None = None,
        space: SearchSpace | None = None,
    ) -> None:
        self.inner = inner
        self.predictor = _predictor_of(predictor, tracking_uri, space)
        self.device = device
        self.metric = metric
        self.predictor._device_index(device)  # raises naming the devices
        if metric in inner.metrics():
            raise ValueError(
                f"predictor.metric = {metric!r}: the evaluator already has a metric of that name"
            )

    def metrics(self) -> Mapping[str, MetricInfo]:
        """The inner evaluator's metrics plus the predicted latency."""
        out = dict(self.inner.metrics())
        out[self.metric] = MetricInfo("ms", "min", "predicted")
        return out

    def check_limits(self, objectives: Any, space: Any) -> None:
        """The inner evaluator's limit check (the predicted metric has none up front)."""
        check = getattr(self.inner, "check_limits", None)
        if check is not None:
            check(objectives, space)

    def predict(self, arch: Arch) -> float:
        return self.predictor.predict_one(arch, self.device)

    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """The inner evaluation with the predicted latency added (and in every report)."""
        value = self.predict(arch)
        wrapped = None
        if report is not None:

            def wrapped(metrics: dict[str, Any]) -> None:
                report({**metrics, self.metric: value})

        evaluation = self.inner.evaluate(arch, wrapped, **context)
        evaluation.values[self.metric] = value
        evaluation.sources[self.metric] = "predicted"
        evaluation.extras.setdefault("predictor_device", self.device or self.predictor.devices[0])
        return evaluation

    def __repr__(self) -> str:
        return f"PredictedLatency({self.inner!r}, device={self.device!r}, metric={self.metric!r})"


def attach_predictor(
    evaluator: Evaluator,
    settings: Mapping[str, Any] | None,
    space: SearchSpace | None = None,
) -> Evaluator:
    """``evaluator`` with a predicted-latency metric when ``settings["path"]`` is set.

    ``settings`` are those of the config's ``predictor`` section: ``path`` (folder or MLflow
    artifact URI), ``device``, ``metric``, ``tracking_uri``. No settings or no path: the
    evaluator unchanged. Loaded predictors are cached per process. ``space``: the search's
    space, checked against the predictor's.
    """
    if not settings or not settings.get("path"):
        return evaluator
    unknown = sorted(set(settings) - set(PREDICTOR_KEYS))
    if unknown:
        raise ValueError(f"predictor: unknown settings {unknown} (allowed: {list(PREDICTOR_KEYS)})")
    return PredictedLatency(
        evaluator,
        settings["path"],
        device=settings.get("device"),
        metric=settings.get("metric") or PREDICTED_METRIC,
        tracking_uri=settings.get("tracking_uri"),
        space=space,
    )


class PredictorFunction:
    """``arch -> predicted latency (ms)`` from a saved predictor, loaded on first call.

    Args:
        path: the predictor's folder or MLflow artifact URI.
        device: which of its devices.
        tracking_uri: MLflow tracking URI for a ``runs:/`` predictor.
        predictor: an already loaded predictor (not pickled; reloaded from ``path``).
        space: the search's space (checked against the predictor's; pickled with the path).
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        device: str | None = None,
        tracking_uri: str | None = None,
        predictor: LatencyPredictor | None = None,
        space: SearchSpace | None = None,
    ) -> None:
        if path is None and predictor is None:
            raise ValueError("PredictorFunction: give a predictor path (predictor.path)")
        self.path = None if path is None else str(path)
        self.device = device
        self.tracking_uri = tracking_uri
        self.space = space
        self._predictor = predictor
        self._cache: dict[Arch, float] = {}

    @property
    def predictor(self) -> LatencyPredictor:
        if self._predictor is None:
            self._predictor = _predictor_of(self.path, self.tracking_uri, self.space)
            self._predictor._device_index(self.device)
        return self._predictor

    def __call__(self, arch: Arch) -> float:
        key = tuple(int(i) for i in arch)
        if key not in self._cache:
            self._cache[key] = self.predictor.predict_one(key, self.device)
        return self._cache[key]

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            raise TypeError("PredictorFunction without a path cannot be pickled (save it first)")
        return {
            "path": self.path,
            "device": self.device,
            "tracking_uri": self.tracking_uri,
            "space": self.space,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["path"], state["device"], state["tracking_uri"], space=state.get("space")
        )

    def __repr__(self) -> str:
        return f"PredictorFunction({self.path!r}, device={self.device!r})"


def resolve_predictor_settings(
    settings: Mapping[str, Any] | None, tracking_uri: str | None = None
) -> dict[str, Any] | None:
    """The config's ``predictor`` section made usable from any trial's directory.

    A local ``path`` becomes absolute, ``tracking_uri`` defaults to ``tracking_uri`` (the
    experiment's MLflow URI), and a relative SQLite URI becomes absolute (Ray runs trials in
    their own directories). No section or no ``path``: ``None``.
    """
    from pathlib import Path

    from paretune.objectives.predictor.store import is_artifact_uri

    if not settings or not settings.get("path"):
        return None
    out = {k: settings.get(k) for k in PREDICTOR_KEYS}
    unknown = sorted(set(settings) - set(PREDICTOR_KEYS))
    if unknown:
        raise ValueError(f"predictor: unknown settings {unknown} (allowed: {list(PREDICTOR_KEYS)})")
    path = str(out["path"])
    if path.startswith("file://"):
        path = path.removeprefix("file://")
    if not is_artifact_uri(path):
        path = str(Path(path).expanduser().resolve())
    out["path"] = path
    uri = out.get("tracking_uri") or tracking_uri
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve())
    out["tracking_uri"] = uri
    out["metric"] = out.get("metric") or PREDICTED_METRIC
    return out


def predictor_function(
    settings: Mapping[str, Any], space: SearchSpace | None = None
) -> PredictorFunction:
    """The :class:`PredictorFunction` of the config's ``predictor`` section (``space``: the
    search's space, checked against the predictor's on first use)."""
    if not settings or not settings.get("path"):
        raise ValueError("screening needs predictor.path (a saved latency predictor)")
    return PredictorFunction(
        settings["path"], settings.get("device"), settings.get("tracking_uri"), space=space
    )
