"""The experiment config: pydantic models of the YAML files in ``conf/``.

``load_config(path, overrides)`` reads a YAML file, applies ``key=value`` overrides (dotted keys,
values parsed as YAML) and validates everything. A bad file raises :class:`ConfigError`, whose
message names the field, the value and what is allowed, one line per problem.

This module gathers the public names of ``config_evaluation`` and ``config_sections`` (the
sections), ``config_experiment`` (the whole config, cross-field checks) and ``config_loading``
(files, overrides, error messages).
"""

from __future__ import annotations

from paretune.platform.config_common import ConfigError
from paretune.platform.config_evaluation import (
    SPACE_KINDS,
    EvaluatorConfig,
    ObjectiveConfig,
    PythonEvaluatorConfig,
    SpaceConfig,
    TableEvaluatorConfig,
    TrainEvaluatorConfig,
)
from paretune.platform.config_experiment import ExperimentConfig
from paretune.platform.config_loading import (
    apply_overrides,
    config_from_dict,
    format_validation_error,
    load_config,
    parse_override,
    read_config_data,
)
from paretune.platform.config_sections import (
    MLFLOW_EXPERIMENT_MAX,
    MLFLOW_SCHEMES,
    NAME_MAX,
    OPTUNA_ALGORITHMS,
    FailureConfig,
    MlflowConfig,
    ModelsConfig,
    PredictorConfig,
    RayConfig,
    ResourcesConfig,
    SchedulerConfig,
    ScreeningConfig,
    SearchConfig,
    StorageConfig,
    algorithm_parameters,
    check_tracking_uri_value,
    tracking_uri_problem,
)

__all__ = [
    "ConfigError",
    "EvaluatorConfig",
    "ExperimentConfig",
    "FailureConfig",
    "MLFLOW_EXPERIMENT_MAX",
    "MLFLOW_SCHEMES",
    "MlflowConfig",
    "ModelsConfig",
    "NAME_MAX",
    "OPTUNA_ALGORITHMS",
    "ObjectiveConfig",
    "PredictorConfig",
    "PythonEvaluatorConfig",
    "RayConfig",
    "ResourcesConfig",
    "SPACE_KINDS",
    "SchedulerConfig",
    "ScreeningConfig",
    "SearchConfig",
    "SpaceConfig",
    "StorageConfig",
    "TableEvaluatorConfig",
    "TrainEvaluatorConfig",
    "algorithm_parameters",
    "apply_overrides",
    "check_tracking_uri_value",
    "config_from_dict",
    "format_validation_error",
    "load_config",
    "parse_override",
    "read_config_data",
    "tracking_uri_problem",
]
