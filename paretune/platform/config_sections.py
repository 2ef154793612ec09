"""Config sections of how the search runs: search, scheduler, resources, Ray, storage,
failures, models, MLflow, predictor and screening."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from paretune.platform.config_common import ConfigError, _Strict

OPTUNA_ALGORITHMS = ("nsga2", "tpe", "gp")
# The engines named for a paper that run it as published with weight sharing (``mode: supernet``);
# ``mode: standalone`` (the default) evaluates every proposal as an independent trial.
SUPERNET_MODE_ALGORITHMS = ("pertnas", "tnd")


class SearchConfig(_Strict):
    """The search algorithm: a paretune engine name or an Optuna sampler (``nsga2``, ``tpe``,
    ``gp``).

    ``segment_size``: Ray Tune keeps every trial of one ``Tuner.fit`` in the driver's memory
    until it returns (tens of KB each). A longer search runs as consecutive fits of this many
    trials with one searcher throughout (the segments are Ray experiments under
    ``<experiment>/segments/``), so the driver's memory stays flat however long it runs.
    """

    algorithm: str = "random"
    mode: Literal["standalone", "supernet"] = "standalone"
    num_samples: int = Field(20, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    segment_size: int = Field(500, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        from paretune.search_algos import engine_names

        allowed = [*engine_names(), *OPTUNA_ALGORITHMS]
        if value not in allowed:
            raise ValueError(f"unknown search algorithm (allowed: {', '.join(allowed)})")
        return value

    @model_validator(mode="after")
    def _mode_of_algorithm(self) -> SearchConfig:
        if self.mode == "supernet" and self.algorithm not in SUPERNET_MODE_ALGORITHMS:
            raise ValueError(
                f"search.mode = 'supernet' with search.algorithm = {self.algorithm!r}: only "
                f"{', '.join(SUPERNET_MODE_ALGORITHMS)} have a supernet mode (others search "
                "one-shot through evaluator.kind: supernet)"
            )
        return self

    @model_validator(mode="after")
    def _known_params(self) -> SearchConfig:
        if not self.params or self.mode == "supernet":  # the phase checks those (phases.py)
            return self
        allowed = algorithm_parameters(self.algorithm)
        if allowed is None:
            return self
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(
                f"search.params.{unknown[0]} = {self.params[unknown[0]]!r}: not a parameter of "
                f"search.algorithm {self.algorithm!r} (allowed: {', '.join(allowed) or 'none'})"
            )
        return self


# Set by paretune itself, not through search.params.
_SET_BY_PARETUNE = {"self", "space", "objectives", "seed"}
_OPTUNA_SET_BY_PARETUNE = {"self", "seed", "constraints_func"}


def algorithm_parameters(algorithm: str) -> list[str] | None:
    """The ``search.params`` an algorithm accepts (its constructor's keyword parameters), or
    ``None`` when its constructor takes any keyword."""
    import inspect

    if algorithm in OPTUNA_ALGORITHMS:
        import optuna

        cls = {
            "nsga2": optuna.samplers.NSGAIISampler,
            "tpe": optuna.samplers.TPESampler,
            "gp": optuna.samplers.GPSampler,
        }[algorithm]
        skip = _OPTUNA_SET_BY_PARETUNE
    else:
        from paretune.search_algos import ENGINES, engine_names

        engine_names()  # registers the built-in engines
        cls = ENGINES[algorithm]
        skip = _SET_BY_PARETUNE
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params
        if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


class SchedulerConfig(_Strict):
    """Optional early stopping of training trials (ASHA on accuracy)."""

    kind: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class ResourcesConfig(_Strict):
    """Resources per trial; fractions of a GPU share one device.

    ``memory_mb`` reserves memory with Ray's scheduler and arms the trial's OOM guard, which
    stops a trial whose process grows beyond it (the trial fails with that reason).
    """

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    memory_mb: float | None = Field(None, gt=0)


class RayConfig(_Strict):
    """Where trials run: a local Ray (``address: null``) or a cluster (``auto`` / ``ray://...``)."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)


class StorageConfig(_Strict):
    """Where Ray writes the experiment (shared storage on a cluster)."""

    path: str = "runs"


class FailureConfig(_Strict):
    """Retries per failing trial, and whether one failure stops the search."""

    max_failures: int = Field(0, ge=-1)
    fail_fast: bool = False


class ModelsConfig(_Strict):
    """MLflow models of the final Pareto front (training evaluator only)."""

    log_front: bool = True
    register_name: str | None = Field(None, min_length=1)


#: MLflow's tracking stores by URI scheme ("": a local path); a database scheme may name its
#: driver (``postgresql+psycopg2``). Plugins may add schemes; these are MLflow's own.
MLFLOW_SCHEMES = (
    "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
    "databricks-uc", "uc",
)  # fmt: skip
MLFLOW_EXPERIMENT_MAX = 500  # mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH
NAME_MAX = 100  # the experiment folder is <name>-<date>-<time>; file names stop at 255 bytes


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot use ``uri`` as a tracking URI, or ``None``."""
    from urllib.parse import urlparse

    if not uri.strip():
        return (
            "empty tracking URI (allowed: a path or a URI with scheme "
            + ", ".join(MLFLOW_SCHEMES)
            + ")"
        )
    if uri in ("databricks", "databricks-uc", "uc"):
        return None
    scheme = urlparse(uri).scheme.lower()
    if not scheme:
        return None  # a local path: MLflow's file store
    if scheme.split("+", 1)[0] not in MLFLOW_SCHEMES:
        return f"unknown scheme {scheme!r} (allowed: {', '.join(MLFLOW_SCHEMES)}, or a path)"
    return None


def check_tracking_uri_value(uri: str, field: str = "mlflow.tracking_uri") -> str:
    """``uri`` if MLflow accepts its scheme; else :class:`ConfigError` naming ``field``."""
    problem = tracking_uri_problem(uri)
    if problem:
        raise ConfigError(f"{field} = {uri!r}: {problem}")
    return uri


class MlflowConfig(_Strict):
    """Tracking: SQLite by default, any tracking URI (e.g. ``http://host:5000``) when configured."""

    enabled: bool = True
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str | None = Field(None, min_length=1, max_length=MLFLOW_EXPERIMENT_MAX)
    # A picture of the cell in each trial run: "all" trials, the "front" only, or "none";
    # "auto": all when training (seconds per trial), the front on the table (milliseconds per
    # trial, where drawing every cell would cost more than the trials).
    cell_pictures: Literal["auto", "all", "front", "none"] = "auto"

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        problem = tracking_uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class PredictorConfig(_Strict):
    """A trained latency predictor adding a ``predicted`` metric (``predicted_latency``, ms).

    ``path``: its folder (``predictor.json`` + ``predictor.pt``) or an MLflow artifact URI such
    as ``runs:/<run_id>/latency_predictor``; ``device``: which of its devices; ``tracking_uri``:
    for ``runs:/`` URIs (default: ``mlflow.tracking_uri``).
    """

    path: str | None = None
    device: str | None = None
    metric: str = Field("predicted_latency", min_length=1)
    tracking_uri: str | None = None


class ScreeningConfig(_Strict):
    """Predictor screening: candidates predicted beyond a limit by more than ``margin``
    (relative) are rejected without a trial, at most ``max_screens`` per proposal.
    ``objective``: the limited objective the predictor estimates (default: the first with a
    limit)."""

    enabled: bool = False
    objective: str | None = None
    margin: float = Field(0.1, ge=0)
    max_screens: int = Field(20, ge=0)


class PruneConfig(_Strict):
    """Zero-shot pruning before the search: ``samples`` architectures are scored with the
    zero-cost ``proxy`` (a name or a list, combined by mean rank), each option's fitness is the
    mean normalised rank of the samples using it, and the worst ``ratio`` of every decision's
    options is removed (``rule: proxy``), or of those not used by the sample's non-dominated
    set of (proxy, ``cost``) (``rule: front``). ``removed`` and ``fitness`` are filled in by
    paretune (a resume restricts from ``removed`` without scoring again)."""

    proxy: str | list[str] = "synflow"
    ratio: float = Field(0.5, ge=0, lt=1)
    samples: int = Field(100, ge=2)
    rule: Literal["proxy", "front"] = "proxy"
    cost: str = "params"
    seed: int | None = None
    dataset: Literal["digits", "mnist", "cifar10"] = "digits"
    data_path: str | None = None
    batch_size: int = Field(64, ge=2)
    input_size: int | None = Field(None, ge=8)
    build: dict[str, Any] = Field(default_factory=dict)
    decisions: str | list[str] | None = None  # globs of decision names to prune (all: None)
    removed: dict[str, list[str]] | None = None
    fitness: dict[str, dict[str, float]] | None = None

    @field_validator("proxy", "cost")
    @classmethod
    def _known_proxy(cls, value: str | list[str]) -> str | list[str]:
        from paretune.objectives.proxies import PROXIES

        for name in [value] if isinstance(value, str) else value:
            if name not in PROXIES:
                raise ValueError(f"{name!r} is not a proxy (allowed: {', '.join(PROXIES)})")
        if isinstance(value, list) and not value:
            raise ValueError(f"no proxy given (allowed: {', '.join(PROXIES)})")
        return value
