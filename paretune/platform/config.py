"""The experiment config: pydantic models of the YAML files in ``conf/``.

``load_config(path, overrides)`` reads a YAML file, applies ``key=value`` overrides (dotted keys,
values parsed as YAML) and validates everything. A bad file raises :class:`ConfigError`, whose
message names the field, the value and what is allowed, one line per problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from paretune.objectives.base import Objective, ObjectiveSet


class ConfigError(ValueError):
    """A config that cannot run; the message says which field, which value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


SPACE_KINDS = ("nb201", "darts", "mobilenet", "choices", "macro", "python")
# The settings of each kind besides ``restrict`` (paretune.spaces.SPACE_SETTINGS, kept light here).
_SPACE_SETTINGS: dict[str, tuple[str, ...]] = {
    "nb201": (),
    "darts": (),
    "mobilenet": (),
    "macro": (),
    "choices": ("decisions",),
    "python": ("factory", "args", "sources"),
}
_SPACE_REQUIRED: dict[str, tuple[str, ...]] = {"choices": ("decisions",), "python": ("factory",)}


class SpaceConfig(_Strict):
    """What is searched: ``kind`` (``name`` is accepted as its old spelling), the kind's own
    settings (``decisions`` for ``choices``; ``factory``, ``args``, ``sources`` for ``python``)
    and ``restrict``, a subset of options per decision, by name."""

    kind: str = "nb201"
    restrict: dict[str, list[str]] | None = None
    decisions: dict[str, list[Any]] | None = None
    factory: str | None = None
    args: dict[str, Any] | None = None
    sources: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_is_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "name" in data:
            data = dict(data)
            name = data.pop("name")
            if "kind" in data and data["kind"] != name:
                raise ValueError(
                    f"space.name = {name!r}, space.kind = {data['kind']!r}: give one of them "
                    "(name is the old spelling of kind)"
                )
            data["kind"] = name
        return data

    @field_validator("sources")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """Relative to where paretune runs; kept absolute in the experiment's saved config."""
        return None if value is None else str(Path(value).expanduser().resolve())

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in SPACE_KINDS:
            raise ValueError(f"unknown space kind (allowed: {', '.join(SPACE_KINDS)})")
        return value

    @model_validator(mode="after")
    def _settings_of_kind(self) -> SpaceConfig:
        allowed = _SPACE_SETTINGS[self.kind]
        for key in ("decisions", "factory", "args", "sources"):
            value = getattr(self, key)
            if value is not None and key not in allowed:
                raise ValueError(
                    f"space.{key} = {_short(value)}: not a setting of space.kind = {self.kind!r} "
                    f"(its settings: {', '.join(allowed) or 'none'}, restrict)"
                )
        for key in _SPACE_REQUIRED.get(self.kind, ()):
            if getattr(self, key) is None:
                example = {
                    "decisions": "decisions: {depth: [2, 3, 4], width: [16, 32]}",
                    "factory": "factory: 'my_module:make_space'",
                }[key]
                raise ValueError(
                    f"space.kind = {self.kind!r}: space.{key} is required (e.g. {example})"
                )
        if self.kind == "choices":
            from paretune.spaces.choices import ChoicesSpace

            try:
                ChoicesSpace(self.decisions)
            except ValueError as exc:
                raise ValueError(f"space.{exc}") from None
        return self

    @property
    def name(self) -> str:
        """The space's kind (the old name of the field)."""
        return self.kind

    def settings(self) -> dict[str, Any]:
        """The kind's own settings, as ``make_space`` takes them (``restrict`` apart)."""
        return {
            key: getattr(self, key)
            for key in _SPACE_SETTINGS[self.kind]
            if getattr(self, key) is not None
        }

    def spec(self, resolve: bool = False) -> dict[str, Any]:
        """``{"kind": ..., **settings}``: plain data from which a trial rebuilds the
        (unrestricted) space; ``resolve``: ``sources`` as an absolute path (trials run
        elsewhere)."""
        out = {"kind": self.kind, **self.settings()}
        if resolve and out.get("sources"):
            out["sources"] = str(Path(out["sources"]).expanduser().resolve())
        return out

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        for key in ("decisions", "factory", "args", "sources"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class TableEvaluatorConfig(_Strict):
    """Look values up in the NAS-Bench-201 table (path from here or ``$PARETUNE_NB201``)."""

    kind: Literal["table"] = "table"
    path: str | None = None
    dataset: str = "cifar10"
    fidelity: int = 200
    latency_device: str = "pixel3"
    energy_device: str = "pi5_onnx"
    # Any other benchmark table: metric -> column, the column of architecture strings, and
    # the benchmark's name (its table from $PARETUNE_<NAME> or the data cache when no path).
    columns: dict[str, str] | None = None
    arch_column: str | None = None
    benchmark: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")

    @model_validator(mode="after")
    def _mapping_settings(self) -> TableEvaluatorConfig:
        if self.columns is None:
            for key in ("arch_column", "benchmark"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"evaluator.{key} = {getattr(self, key)!r}: only with evaluator.columns "
                        "(a column per metric, e.g. {accuracy: cifar10_test_acc})"
                    )
            return self
        if not self.columns:
            raise ValueError(
                "evaluator.columns = {}: name at least one metric's column "
                "(e.g. {accuracy: cifar10_test_acc})"
            )
        nb201 = sorted(
            {"dataset", "fidelity", "latency_device", "energy_device"} & set(self.model_fields_set)
        )
        if nb201:
            raise ValueError(
                f"evaluator.{nb201[0]} = {getattr(self, nb201[0])!r}: a NAS-Bench-201 setting, "
                "not used with evaluator.columns (map the metrics to columns instead)"
            )
        if self.path is None and self.benchmark is None:
            raise ValueError(
                "evaluator.columns: give evaluator.path (the table file) or evaluator.benchmark "
                "(its name: the table from $PARETUNE_<NAME> or the data cache)"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if self.columns is None:
            for key in ("columns", "arch_column", "benchmark"):
                out.pop(key, None)
        else:
            for key in ("dataset", "fidelity", "latency_device", "energy_device"):
                out.pop(key, None)
        return out


class PythonEvaluatorConfig(_Strict):
    """A user's own evaluation: ``function`` (``module:function``) is called in each trial as
    ``function(arch: dict, report, **args)`` and returns ``{metric: value}`` (or
    ``{metric: (value, source)}``); the objectives name the metrics it must return.
    ``sources``: folders put on ``sys.path`` (relative to where ``paretune`` runs)."""

    kind: Literal["python"] = "python"
    function: str
    sources: list[str] = Field(default_factory=list)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        """Relative to where paretune runs; kept absolute so that the experiment's saved
        config (report, resume) finds them from anywhere."""
        return [str(Path(s).expanduser().resolve()) for s in value]

    @field_validator("function")
    @classmethod
    def _spec(cls, value: str) -> str:
        import re

        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", value):
            raise ValueError("expected 'module:function' (e.g. 'my_model:evaluate')")
        return value


class TrainEvaluatorConfig(_Strict):
    """Train each architecture for real and measure it."""

    kind: Literal["train"] = "train"
    dataset: Literal["digits", "mnist", "cifar10"] = "digits"
    data_path: str | None = Field(None, validate_default=True)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    channels: int = Field(8, ge=1)
    cells_per_stage: int = Field(1, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    latency_batch_size: int = Field(1, ge=1)
    energy_coefficients: dict[str, float] | None = None
    latency_warmup: int = Field(5, ge=0)
    latency_repeats: int = Field(20, ge=1)
    onnx_latency: bool = False
    energy_meter: Literal["auto", "nvml", "rapl", "estimate"] = "auto"
    energy_batch_size: int = Field(32, ge=1)
    energy_batches: int = Field(20, ge=1)
    energy_warmup: int = Field(2, ge=0)
    energy_min_window_s: float = Field(0.5, ge=0)
    energy_idle_s: float = Field(0.5, gt=0)
    rapl_root: str = "/sys/class/powercap"
    finetune_epochs: int | None = Field(None, ge=1)
    save_weights: bool = True
    # Further keyword arguments of the space's network builder (e.g. darts: {layers: 5};
    # mobilenet: {width_mult: 0.25, stem_stride: 1}).
    build: dict[str, Any] | None = None

    @field_validator("data_path")
    @classmethod
    def _data_present(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Datasets read from disk are checked here, before anything starts (not when the
        config is read only to look at a finished experiment: context ``check_data=False``)."""
        from paretune.objectives.data import check_data_path

        dataset = info.data.get("dataset")
        if dataset is not None and (info.context or {}).get("check_data", True):
            problem = check_data_path(dataset, value)
            if problem:
                raise ValueError(problem)
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if self.build is None:
            out.pop("build", None)
        return out


EvaluatorConfig = Annotated[
    TableEvaluatorConfig | TrainEvaluatorConfig | PythonEvaluatorConfig,
    Field(discriminator="kind"),
]
_EVALUATOR_TAGS = ("table", "train", "python")


class ObjectiveConfig(_Strict):
    """One objective. ``limit``: upper bound (min) / lower bound (max). ``reference``: HV reference."""

    name: str
    direction: Literal["min", "max"]
    limit: float | None = None
    reference: float | None = None


OPTUNA_ALGORITHMS = ("nsga2", "tpe", "gp")


class SearchConfig(_Strict):
    """The search algorithm: a paretune engine name or an Optuna sampler (``nsga2``, ``tpe``,
    ``gp``).

    ``segment_size``: Ray Tune keeps every trial of one ``Tuner.fit`` in the driver's memory
    until it returns (tens of KB each). A longer search runs as consecutive fits of this many
    trials with one searcher throughout (the segments are Ray experiments under
    ``<experiment>/segments/``), so the driver's memory stays flat however long it runs.
    """

    algorithm: str = "random"
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
    def _known_params(self) -> SearchConfig:
        if not self.params:
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


class ExperimentConfig(_Strict):
    """A whole experiment, as written in a ``conf/*.yaml`` file."""

    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    evaluator: EvaluatorConfig = Field(default_factory=TrainEvaluatorConfig)
    objectives: list[ObjectiveConfig] = Field(min_length=1)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    failure: FailureConfig = Field(default_factory=FailureConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        names = [o.name for o in self.objectives]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"objectives = {names}: {', '.join(map(repr, dupes))} repeats (each name once)"
            )
        refs = [o.reference is not None for o in self.objectives]
        if any(refs) and not all(refs):
            raise ValueError(
                "objectives: give a hypervolume 'reference' for every objective or for none"
            )
        if self.scheduler.kind == "asha" and self.evaluator.kind == "table":
            raise ValueError(
                "scheduler.kind = 'asha': early stopping needs per-epoch reports "
                "(evaluator.kind = 'train' or 'python')"
            )
        if self.scheduler.kind == "asha" and "accuracy" not in names:
            raise ValueError("scheduler.kind = 'asha': needs an 'accuracy' objective to stop on")
        if self.models.register_name and self.evaluator.kind != "train":
            raise ValueError(
                "models.register_name: models are logged for evaluator.kind = 'train' only"
            )
        return self

    @model_validator(mode="after")
    def _predictor_space(self) -> ExperimentConfig:
        if self.predictor.path and self.space.kind != "nb201":
            raise ValueError(
                f"predictor.path = {self.predictor.path!r}: the latency predictor reads NB201 "
                f"cells only, not space.kind = {self.space.kind!r}"
            )
        return self

    @model_validator(mode="after")
    def _screening_consistent(self) -> ExperimentConfig:
        if not self.screening.enabled:
            return self
        if not self.predictor.path:
            raise ValueError("screening.enabled = True: needs predictor.path (a saved predictor)")
        if self.search.algorithm in OPTUNA_ALGORITHMS:
            raise ValueError(
                f"screening.enabled = True: works with paretune engines, not search.algorithm = "
                f"{self.search.algorithm!r}"
            )
        limited = [o.name for o in self.objectives if o.limit is not None]
        wanted = self.screening.objective
        if wanted is None and not limited:
            raise ValueError("screening.enabled = True: no objective has a limit to screen against")
        if wanted is not None and wanted not in limited:
            raise ValueError(
                f"screening.objective = {wanted!r}: not an objective with a limit (allowed: {limited})"
            )
        return self

    # ------------------------------------------------------------------ derived objects
    def objective_set(self) -> ObjectiveSet:
        objectives = tuple(Objective(o.name, o.direction, limit=o.limit) for o in self.objectives)
        reference = None
        if all(o.reference is not None for o in self.objectives):
            reference = {o.name: float(o.reference) for o in self.objectives}
        return ObjectiveSet(objectives, reference)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat_params(self) -> dict[str, str]:
        """The config flattened to ``{"a.b.c": "value"}`` (for MLflow params)."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, Mapping) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                for i, v in enumerate(value):
                    walk(f"{prefix}.{i}", v)
            else:
                out[prefix] = str(value)

        walk("", self.model_dump(mode="json"))
        return out


# ---------------------------------------------------------------------- loading
def _format_loc(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _EVALUATOR_TAGS and text.endswith("evaluator"):
            continue  # the discriminator tag pydantic inserts into the location
        else:
            text += f".{part}" if text else str(part)
    return text or "(config)"


def _lookup(data: Any, loc: Iterable[Any]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def format_validation_error(error: ValidationError, data: Mapping[str, Any]) -> str:
    """One line per problem: ``field = value: what is wrong / allowed``.

    A check across fields (a model validator) names its fields itself: its message is
    printed without the section's value.
    """
    lines = []
    for e in error.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p in _EVALUATOR_TAGS)]
        where = _format_loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = _lookup(data, loc[:-1]) if len(loc) > 1 else data
            lines.append(f"{where}: unknown key{_allowed_keys_hint(error, e, parent)}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required field is missing")
        else:
            value = e.get("input", _lookup(data, loc))
            if isinstance(value, Mapping) and e["type"] == "value_error":
                top = where.split(".")[0].split("[")[0]
                lines.append(msg if not loc or msg.startswith(top) else f"{where}: {msg}")
            else:
                lines.append(f"{where} = {_short(value)}: {msg}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut in the middle when longer than ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 20]}...{text[-8:]}{size}"


def _allowed_keys_hint(error: ValidationError, e: Mapping[str, Any], parent: Any) -> str:
    model = _model_at(ExperimentConfig, [p for p in e["loc"][:-1]], parent)
    if model is None:
        return ""
    return f" (allowed: {', '.join(model.model_fields)})"


def _model_at(model: type[BaseModel], loc: list[Any], data: Any) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        if part in _EVALUATOR_TAGS:
            model = {
                "table": TableEvaluatorConfig,
                "train": TrainEvaluatorConfig,
                "python": PythonEvaluatorConfig,
            }[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        nxt = _first_model(ann)
        if nxt is None:
            return None
        model = nxt
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. search.num_samples=50)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: value is not valid YAML ({_yaml_problem(exc)})"
        ) from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; list items by index (``objectives.0.limit=2``)."""
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {item!r}: {where} is not an index of a {len(node)}-item list"
                    )
                node = node[int(part)]
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict | list):
                    raise ConfigError(f"override {item!r}: {where} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(
                    f"override {item!r}: {last} is not an index of a {len(node)}-item list"
                )
            node[int(last)] = value
        else:
            node[last] = value
    return data


def config_from_dict(
    data: Mapping[str, Any], source: str = "config", *, check_data: bool = True
) -> ExperimentConfig:
    """Validate a dict; raises :class:`ConfigError` with one line per problem.

    ``check_data``: check that a dataset read from disk (``evaluator.data_path``) is there.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return ExperimentConfig.model_validate(dict(data), context={"check_data": check_data})
    except ValidationError as exc:
        lines = format_validation_error(exc, data)
        head = f"{source}: " if "\n" not in lines else f"{source}: invalid config\n"
        raise ConfigError(head + lines) from None


def read_config_data(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The mapping of a YAML experiment with ``key=value`` overrides applied, not yet validated."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the config as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return apply_overrides(data, overrides)


def load_config(
    path: str | os.PathLike, overrides: Iterable[str] = (), *, check_data: bool | None = None
) -> ExperimentConfig:
    """Read and validate a YAML experiment, applying ``key=value`` overrides.

    ``check_data``: check ``evaluator.data_path`` (see :func:`config_from_dict`); ``None``:
    check unless ``path`` is the saved config of an experiment directory (beside its
    ``paretune.json``), which ``report``, ``sync-mlflow`` and ``ui`` read without the data.
    """
    if check_data is None:
        check_data = not (Path(path).parent / "paretune.json").is_file()
    return config_from_dict(
        read_config_data(path, overrides), source=str(path), check_data=check_data
    )
