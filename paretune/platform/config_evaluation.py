"""Config sections of what is searched and how it is measured: space, evaluator, objectives."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from paretune.platform.config_common import _short, _Strict

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


class SupernetEvaluatorConfig(_Strict):
    """One-shot evaluation with a weight-sharing supernet (``paretune.objectives.oneshot``):
    the ``supernet_training`` phase trains it (as a Ray Tune trial, checkpoints in the
    experiment's storage), then every trial scores its architecture with the shared weights and
    measures the extracted compact network. ``checkpoint``: a supernet trained before (the
    phase then trains nothing). Spaces: nb201 and darts."""

    kind: Literal["supernet"] = "supernet"
    checkpoint: str | None = None
    dataset: Literal["digits", "mnist", "cifar10"] = "digits"
    data_path: str | None = Field(None, validate_default=True)
    channels: int = Field(8, ge=1)
    cells_per_stage: int = Field(1, ge=1)
    build: dict[str, Any] | None = None
    # the supernet's training
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float = Field(5.0, ge=0)
    sampling: Literal["uniform", "weighted"] = "uniform"  # SPOS paths, or DARTS's weighted sum
    arch_lr: float = Field(0.0, ge=0)  # weighted: Adam rate of the architecture logits (0: fixed)
    train_cpu: float | None = Field(None, gt=0)  # default: resources.cpu
    train_gpu: float | None = Field(None, ge=0)  # default: 1 when resources.gpu > 0, else 0
    # one-shot scoring
    bn_batches: int = Field(10, ge=0)
    bn_batch_size: int | None = Field(None, ge=2)
    finetune_steps: int = Field(0, ge=0)
    finetune_lr: float = Field(0.01, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    latency_batch_size: int = Field(1, ge=1)
    latency_warmup: int = Field(5, ge=0)
    latency_repeats: int = Field(20, ge=1)
    energy_meter: Literal["auto", "nvml", "rapl", "estimate"] = "auto"
    energy_batch_size: int = Field(32, ge=1)
    energy_batches: int = Field(20, ge=1)
    energy_warmup: int = Field(2, ge=0)
    energy_min_window_s: float = Field(0.5, ge=0)
    energy_idle_s: float = Field(0.5, gt=0)
    energy_coefficients: dict[str, float] | None = None
    split: dict[str, Any] | None = None  # NAS-LID's split (paretune.platform.nas_lid checks it)

    _data_present = field_validator("data_path")(TrainEvaluatorConfig._data_present.__func__)

    @field_validator("checkpoint")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        for key in ("build", "checkpoint", "split"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


EvaluatorConfig = Annotated[
    TableEvaluatorConfig | TrainEvaluatorConfig | PythonEvaluatorConfig | SupernetEvaluatorConfig,
    Field(discriminator="kind"),
]
_EVALUATOR_TAGS = ("table", "train", "python", "supernet")


class ObjectiveConfig(_Strict):
    """One objective. ``limit``: upper bound (min) / lower bound (max). ``reference``: HV reference."""

    name: str
    direction: Literal["min", "max"]
    limit: float | None = None
    reference: float | None = None
    # "proxy": a zero-cost proxy of the untrained network (paretune.objectives.proxies)
    source: Literal["proxy"] | None = None
