"""From a validated config to what a search needs: space, objectives, evaluator and searcher.

Everything here runs in the driver before Ray runs anything; a problem raises
:class:`~paretune.platform.config.ConfigError` naming the field.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretune.objectives import make_evaluator
from paretune.objectives.base import ObjectiveSet, check_objectives
from paretune.objectives.predictor import (
    attach_predictor,
    predictor_function,
    resolve_predictor_settings,
)
from paretune.platform.config import OPTUNA_ALGORITHMS, ConfigError, ExperimentConfig
from paretune.platform.pruning_stage import add_proxy_settings, apply_pruning
from paretune.platform.searcher import ParetoSearcher, make_optuna_searcher
from paretune.search_algos import ENGINES, engine_names, make_engine
from paretune.search_algos.dedup import deduplicate
from paretune.search_algos.screening import screen_engine
from paretune.spaces import SearchSpace, make_space

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything built from a config before Ray runs anything."""

    config: ExperimentConfig
    space: SearchSpace
    objectives: ObjectiveSet
    evaluator_settings: dict[str, Any]
    evaluator: Any
    predictor_settings: dict[str, Any] | None = None
    # The space as plain data ({"kind", "restrict", **settings}): trials rebuild it from this.
    space_spec: dict[str, Any] | None = None


def prepare(config: ExperimentConfig) -> Prepared:
    """Build space, objectives and evaluator settings; raise ConfigError naming any bad field."""
    spec = config.space.spec(resolve=True)
    try:
        space = make_space(config.space.kind, config.space.restrict, **config.space.settings())
    except ValueError as exc:
        where = "space.restrict" if config.space.restrict else "space"
        value = config.space.restrict if config.space.restrict else spec
        raise ConfigError(f"{where} = {value!r}: {exc}") from None
    space = apply_pruning(config, space)  # prune: scores options, restricts, records removed
    objectives = config.objective_set()
    settings = config.evaluator.model_dump(exclude={"kind"})
    # Trials run in their own directories: make file paths absolute here, in the driver.
    for key in ("path", "data_path"):
        if settings.get(key):
            settings[key] = str(Path(settings[key]).expanduser().resolve())
    if settings.get("sources"):
        settings["sources"] = [str(Path(s).expanduser().resolve()) for s in settings["sources"]]
    if config.evaluator.kind == "train":
        settings["seed"] = config.seed
    if config.space.kind != "nb201" or config.evaluator.kind == "python":
        settings["space"] = spec  # the evaluator rebuilds the (unrestricted) space
    if config.evaluator.kind == "python":
        settings["metrics"] = {o.name: o.direction for o in config.objectives}
    try:
        predictor = resolve_predictor_settings(
            config.predictor.model_dump(), config.mlflow.tracking_uri
        )
    except ValueError as exc:
        raise ConfigError(f"predictor: {exc}") from None
    predicted = (predictor or {}).get("metric")
    if "extra" in settings:
        # Metrics beyond an evaluator's standard ones (raw table columns such as
        # latency_ms_raspi4) are returned when an objective names them.
        settings["extra"] = [n for n in objectives.names if n != predicted]
    add_proxy_settings(config, settings, spec)  # objectives with source: proxy
    evaluator = _build_evaluator(config, settings, predictor, space)
    if config.evaluator.kind == "table":  # the table the driver found (path, env or cache)
        settings.pop("benchmark", None)
        settings["path"] = str(getattr(evaluator, "inner", evaluator).path.resolve())
    available = evaluator.metrics()
    try:
        check_objectives(objectives, available)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for i, o in enumerate(objectives):
        natural = available[o.name].direction
        if natural in ("min", "max") and natural != o.direction:
            logger.warning(
                "objectives[%d]: %s is usually %s, config says %s", i, o.name, natural, o.direction
            )
    check_limits(evaluator, objectives, space)
    spec = {**spec, "restrict": config.space.restrict} if config.space.restrict else spec
    return Prepared(config, space, objectives, settings, evaluator, predictor, spec)


def _build_evaluator(
    config: ExperimentConfig,
    settings: dict[str, Any],
    predictor: dict[str, Any] | None,
    space: SearchSpace | None = None,
) -> Any:
    try:
        evaluator = make_evaluator(config.evaluator.kind, **settings)
    except FileNotFoundError as exc:
        raise ConfigError(f"evaluator.path = {settings.get('path')!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"evaluator: {exc}") from None
    try:
        return attach_predictor(evaluator, predictor, space=space)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise ConfigError(f"predictor.path = {config.predictor.path!r}: {exc}") from None


def check_limits(evaluator: Any, objectives: ObjectiveSet, space: SearchSpace) -> None:
    """Refuse limits that no architecture of the space can meet (the evaluator's own check).

    An evaluator that can tell up front implements ``check_limits(objectives, space)``,
    raising ValueError that names the limit and the best reachable value.
    """
    check = getattr(evaluator, "check_limits", None)
    if check is None:
        return
    try:
        check(objectives, space)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _accepts(algorithm: str, parameter: str) -> bool:
    engine_names()  # loads the built-in engines
    return parameter in inspect.signature(ENGINES[algorithm].__init__).parameters


def make_searcher(prepared: Prepared) -> Any:
    """The Ray Tune searcher for ``search.algorithm`` (a paretune engine or an Optuna sampler)."""
    cfg = prepared.config
    algorithm = cfg.search.algorithm
    params = dict(cfg.search.params)
    if cfg.search.mode == "supernet":
        # The weight-sharing phase (phases.py) checks search.params now (ConfigError naming a
        # bad one) and, after its trials, returns the searcher of the search.
        from paretune.platform.phases import phase_for

        make = getattr(phase_for(cfg), "placeholder_searcher", None)
        return make(prepared) if make is not None else None
    try:
        if algorithm in OPTUNA_ALGORITHMS:
            return make_optuna_searcher(
                algorithm, prepared.space, prepared.objectives, seed=cfg.seed, **params
            )
        if "budget" not in params and _accepts(algorithm, "budget"):
            params["budget"] = cfg.search.num_samples  # e.g. TND spreads its stages over it
        engine = make_engine(
            algorithm, prepared.space, prepared.objectives, seed=cfg.seed, **params
        )
        if cfg.screening.enabled:
            engine = screen_engine(
                engine,
                predictor_function(prepared.predictor_settings, space=prepared.space),
                cfg.screening.model_dump(),
            )
        # Spaces with several architectures per network (macro, mobilenet): each network is
        # measured once; other spaces get the engine itself.
        engine = deduplicate(engine)
    except TypeError as exc:
        raise ConfigError(
            f"search.params = {params!r}: not accepted by {algorithm!r} ({exc})"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"search.params = {params!r}: {exc}") from None
    return ParetoSearcher(engine, max_trials=cfg.search.num_samples)
