"""The whole experiment config and its cross-field checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import (
    Field,
    model_validator,
)

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.platform.config_common import _Strict
from paretune.platform.config_evaluation import (
    EvaluatorConfig,
    ObjectiveConfig,
    SpaceConfig,
    TrainEvaluatorConfig,
)
from paretune.platform.config_sections import (
    NAME_MAX,
    OPTUNA_ALGORITHMS,
    FailureConfig,
    MlflowConfig,
    ModelsConfig,
    PredictorConfig,
    PruneConfig,
    RayConfig,
    ResourcesConfig,
    SchedulerConfig,
    ScreeningConfig,
    SearchConfig,
    StorageConfig,
)


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
    prune: PruneConfig | None = None
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
