"""From a config to a finished search: Ray, the searcher, the Tuner, MLflow and the report.

``run(config)`` starts (or joins) Ray, validates the config against the evaluator before any
trial runs, opens the MLflow parent run, runs ``tune.Tuner`` and returns the report.
``resume(experiment_dir)`` continues a search whose driver died; ``report(experiment_dir)``
rebuilds the report from disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretune.objectives.base import ObjectiveSet, check_objectives
from paretune.platform.config import OPTUNA_ALGORITHMS, ConfigError, ExperimentConfig, load_config
from paretune.platform.report import SearchReport, build_report, rows_from_results
from paretune.spaces import SearchSpace, make_space

logger = logging.getLogger(__name__)

STATE_FILE = "paretune.json"
CONFIG_FILE = "config.yaml"


@dataclass
class Prepared:
    """Everything built from a config before Ray runs anything."""

    config: ExperimentConfig
    space: SearchSpace
    objectives: ObjectiveSet
    evaluator_settings: dict[str, Any]


@dataclass
class RunResult:
    """What a finished search hands back."""

    experiment_dir: Path
    report: SearchReport
    parent_run_id: str | None
    mlflow_experiment_id: str | None


# ---------------------------------------------------------------------- preparation
def prepare(config: ExperimentConfig) -> Prepared:
    """Build space, objectives and evaluator settings; raise ConfigError naming any bad field."""
    from paretune.objectives import make_evaluator

    try:
        space = make_space(config.space.name, config.space.restrict)
    except ValueError as exc:
        raise ConfigError(f"space.restrict = {config.space.restrict!r}: {exc}") from None
    objectives = config.objective_set()
    settings = config.evaluator.model_dump(exclude={"kind"})
    # Trials run in their own directories: make file paths absolute here, in the driver.
    for key in ("path", "data_path"):
        if settings.get(key):
            settings[key] = str(Path(settings[key]).expanduser().resolve())
    if config.evaluator.kind == "train":
        settings["seed"] = config.seed
    try:
        evaluator = make_evaluator(config.evaluator.kind, **settings)
        available = evaluator.metrics()
    except FileNotFoundError as exc:
        raise ConfigError(f"evaluator.path = {settings.get('path')!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"evaluator: {exc}") from None
    try:
        check_objectives(objectives, available)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.evaluator.kind == "table":
        # Raw table columns used as objectives (e.g. latency_ms_raspi4) must be returned too.
        from paretune.objectives.table import BASE_METRICS

        settings["extra"] = [n for n in objectives.names if n not in BASE_METRICS]
    for i, o in enumerate(objectives):
        natural = available[o.name].direction
        if natural != o.direction and o.name in (
            "accuracy",
            "test_accuracy",
            "params",
            "flops",
            "latency",
            "energy",
        ):
            logger.warning(
                "objectives[%d]: %s is usually %s, config says %s", i, o.name, natural, o.direction
            )
    return Prepared(config, space, objectives, settings)


def make_searcher(prepared: Prepared) -> Any:
    """The Ray Tune searcher for ``search.algorithm`` (a paretune engine or an Optuna sampler)."""
    from paretune.search_algos import make_engine
    from paretune.search_algos.ray_searcher import ParetoSearcher, make_optuna_searcher

    cfg = prepared.config
    algorithm = cfg.search.algorithm
    params = dict(cfg.search.params)
    try:
        if algorithm in OPTUNA_ALGORITHMS:
            return make_optuna_searcher(
                algorithm, prepared.space, prepared.objectives, seed=cfg.seed, **params
            )
        engine = make_engine(
            algorithm, prepared.space, prepared.objectives, seed=cfg.seed, **params
        )
    except TypeError as exc:
        raise ConfigError(
            f"search.params = {params!r}: not accepted by {algorithm!r} ({exc})"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"search.params = {params!r}: {exc}") from None
    return ParetoSearcher(engine)


def searcher_settings(config: ExperimentConfig) -> dict[str, Any]:
    return {
        "algorithm": config.search.algorithm,
        **{f"params.{k}": v for k, v in config.search.params.items()},
    }


# ---------------------------------------------------------------------- Ray
def ensure_ray(config: ExperimentConfig) -> bool:
    """Join the configured cluster or start a local Ray; True when this call started it."""
    import ray

    # Intermediate (per-epoch) results carry only some objectives; Ray must not reject them.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs.update(num_cpus=config.ray.num_cpus, num_gpus=config.ray.num_gpus)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"ray.address = {address!r}: cannot connect to a Ray cluster ({exc})"
        ) from None
    return True


def check_resources(config: ExperimentConfig) -> None:
    """Refuse a per-trial request that no node of the cluster can ever satisfy."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpu, gpu = config.resources.cpu, config.resources.gpu
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= cpu and (gpu == 0 or n["Resources"].get("GPU", 0) >= gpu)
    ]
    if not fits:
        have = [
            {"CPU": n["Resources"].get("CPU", 0), "GPU": n["Resources"].get("GPU", 0)}
            for n in nodes
        ]
        raise ConfigError(
            f"resources = {{cpu: {cpu}, gpu: {gpu}}}: no node of the cluster can run one trial (nodes have {have})"
        )


# ---------------------------------------------------------------------- MLflow
def open_parent_run(
    config: ExperimentConfig, run_name: str, experiment_dir: Path
) -> tuple[str, str]:
    """Create the MLflow experiment (if needed) and the parent run; returns (experiment id, run id)."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    name = config.mlflow.experiment or config.name
    try:
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
    except Exception as exc:  # noqa: BLE001 - any store/transport error means "unreachable"
        raise ConfigError(
            f"mlflow.tracking_uri = {config.mlflow.tracking_uri!r}: cannot reach the tracking store ({exc})"
        ) from None
    objectives = [o.model_dump() for o in config.objectives]
    tags = {
        "searcher": config.search.algorithm,
        "space": config.space.name,
        "evaluator": config.evaluator.kind,
        "objectives": json.dumps(objectives),
        "experiment_dir": str(experiment_dir),
        "paretune.role": "experiment",
    }
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    params = [Param(k, v[:6000]) for k, v in config.flat_params().items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    client.log_batch(
        run.info.run_id, tags=[RunTag(f"objective.{o['name']}", o["direction"]) for o in objectives]
    )
    client.log_text(run.info.run_id, config.to_yaml(), "config.yaml")
    return exp_id, run.info.run_id


def finish_parent_run(
    config: ExperimentConfig, state: dict[str, Any], report: SearchReport, paths: dict[str, Path]
) -> None:
    """Summary metrics, hypervolume history, front tags and artifacts; ends the parent run."""
    import mlflow.entities as me
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    run_id = state["parent_run_id"]
    ts = int(time.time() * 1000)
    metrics = [
        me.Metric("num_trials", len(report.rows), ts, 0),
        me.Metric("failed_trials", report.num_failed, ts, 0),
        me.Metric("front_size", len(report.front), ts, 0),
    ]
    metrics += [me.Metric(f"best_{k}", v, ts, 0) for k, v in report.best().items()]
    metrics += [
        me.Metric("hypervolume", hv, ts, step) for step, hv in enumerate(report.hv_history, start=1)
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.set_tag(run_id, "hypervolume_reference", report.reference_source)
    for path in paths.values():
        client.log_artifact(run_id, str(path), "report")
    front_ids = {r.trial_id for r in report.front}
    for trial_id, trial_run in state.get("trial_runs", {}).items():
        client.set_tag(trial_run, "pareto", "front" if trial_id in front_ids else "dominated")
    client.set_terminated(run_id, status="FINISHED")


# ---------------------------------------------------------------------- run
def run(
    config: ExperimentConfig | str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    verbose: int = 1,
) -> RunResult:
    """Run the experiment of ``config`` (a validated config or a YAML path) to the end."""
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides or [])
    elif overrides:
        raise ValueError("overrides apply to a YAML path, not to a loaded config")
    prepared = prepare(config)
    searcher = make_searcher(prepared)
    started_ray = ensure_ray(config)
    try:
        check_resources(config)
        run_name = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        storage = Path(config.storage.path).expanduser().resolve()
        experiment_dir = storage / run_name
        experiment_dir.mkdir(parents=True, exist_ok=False)
        (experiment_dir / CONFIG_FILE).write_text(config.to_yaml())
        state: dict[str, Any] = {"run_name": run_name, "storage": str(storage)}
        if config.mlflow.enabled:
            exp_id, parent_id = open_parent_run(config, run_name, experiment_dir)
            state.update(mlflow_experiment_id=exp_id, parent_run_id=parent_id)
        _write_state(experiment_dir, state)
        tuner = _build_tuner(prepared, searcher, state, verbose=verbose)
        grid = tuner.fit()
        return _finish(prepared, experiment_dir, state, grid)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def resume(experiment_dir: str | os.PathLike, *, verbose: int = 1) -> RunResult:
    """Continue a search whose driver stopped: finished trials are kept, the searcher's state restored."""
    from ray import tune

    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, state = load_experiment(experiment_dir)
    prepared = prepare(config)
    started_ray = ensure_ray(config)
    try:
        trainable = _trainable(prepared)
        if not tune.Tuner.can_restore(str(experiment_dir)):
            raise ConfigError(f"{experiment_dir}: no Ray Tune experiment state to resume from")
        tuner = tune.Tuner.restore(
            str(experiment_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        grid = tuner.fit()
        return _finish(prepared, experiment_dir, state, grid)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def report(experiment_dir: str | os.PathLike) -> SearchReport:
    """Rebuild the report of a (finished or interrupted) experiment from its directory."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, _ = load_experiment(experiment_dir)
    prepared = prepare(config)
    grid = ResultGrid(ExperimentAnalysis(str(experiment_dir)))
    return _report_from_grid(prepared, grid)


def load_experiment(experiment_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and paretune state saved in an experiment directory."""
    cfg_path = experiment_dir / CONFIG_FILE
    state_path = experiment_dir / STATE_FILE
    if not cfg_path.is_file() or not state_path.is_file():
        raise ConfigError(
            f"{experiment_dir}: not a paretune experiment directory (no {CONFIG_FILE} / {STATE_FILE})"
        )
    return load_config(cfg_path), json.loads(state_path.read_text())


def _write_state(experiment_dir: Path, state: dict[str, Any]) -> None:
    tmp = experiment_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(experiment_dir / STATE_FILE)


def _trainable(prepared: Prepared) -> Any:
    from ray import tune

    from paretune.platform.trainable import run_trial

    cfg = prepared.config
    fn = tune.with_parameters(
        run_trial,
        space=prepared.space,
        objectives=prepared.objectives,
        evaluator_kind=cfg.evaluator.kind,
        evaluator_settings=prepared.evaluator_settings,
        cpus_per_trial=cfg.resources.cpu,
    )
    return tune.with_resources(fn, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})


def _build_tuner(prepared: Prepared, searcher: Any, state: dict[str, Any], *, verbose: int) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from paretune.platform.tracking import MlflowTracker
    from paretune.platform.trainable import arch_from_config

    cfg = prepared.config
    scheduler = None
    if cfg.scheduler.kind == "asha":
        scheduler = ASHAScheduler(
            metric="accuracy",
            mode="max",
            time_attr="training_iteration",
            max_t=cfg.evaluator.epochs,
            grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    callbacks = []
    if cfg.mlflow.enabled:
        space = prepared.space
        callbacks.append(
            MlflowTracker(
                tracking_uri=cfg.mlflow.tracking_uri,
                experiment_id=state["mlflow_experiment_id"],
                parent_run_id=state["parent_run_id"],
                searcher=cfg.search.algorithm,
                arch_params=lambda c: space.to_params(arch_from_config(space, c)),
            )
        )
    return tune.Tuner(
        _trainable(prepared),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.search.num_samples,
            max_concurrent_trials=cfg.search.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=state["run_name"],
            storage_path=state["storage"],
            failure_config=tune.FailureConfig(
                max_failures=cfg.failure.max_failures, fail_fast=cfg.failure.fail_fast
            ),
            callbacks=callbacks,
            verbose=verbose,
        ),
    )


def _report_from_grid(prepared: Prepared, grid: Any) -> SearchReport:
    from paretune.platform.trainable import arch_from_config

    space = prepared.space
    rows = rows_from_results(
        list(grid), prepared.objectives, lambda c: space.encode(arch_from_config(space, c))
    )
    return build_report(rows, prepared.objectives)


def _finish(
    prepared: Prepared, experiment_dir: Path, state: dict[str, Any], grid: Any
) -> RunResult:
    cfg = prepared.config
    rep = _report_from_grid(prepared, grid)
    paths = rep.write(experiment_dir / "report")
    if cfg.mlflow.enabled:
        state["trial_runs"] = _trial_runs(cfg, state)
        _write_state(experiment_dir, state)
        finish_parent_run(cfg, state, rep, paths)
    return RunResult(
        experiment_dir, rep, state.get("parent_run_id"), state.get("mlflow_experiment_id")
    )


def _trial_runs(config: ExperimentConfig, state: dict[str, Any]) -> dict[str, str]:
    """``{trial id: MLflow run id}`` of the nested runs under the parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    out: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs(
            [state["mlflow_experiment_id"]],
            filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'",
            max_results=1000,
            page_token=token,
        )
        out.update({r.data.tags.get("trial_id", r.info.run_id): r.info.run_id for r in page})
        token = page.token
        if not token:
            return out
