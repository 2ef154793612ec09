"""From a config to a finished search: Ray, the searcher, the Tuner, MLflow and the report.

``run(config)`` starts (or joins) Ray, validates the config against the evaluator before any
trial runs, opens the MLflow parent run, runs ``tune.Tuner`` and returns the report.
``resume(experiment_dir)`` continues a search whose driver died; ``report(experiment_dir)``
rebuilds the report from disk.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import socket
import time
import urllib.request
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paretune.objectives.base import ObjectiveSet, check_objectives
from paretune.platform.config import OPTUNA_ALGORITHMS, ConfigError, ExperimentConfig, load_config
from paretune.platform.report import SearchReport, build_report, rows_from_results
from paretune.spaces import SearchSpace, make_space
from paretune.spaces.nb201 import cheapest_arch

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
    evaluator: Any
    predictor_settings: dict[str, Any] | None = None


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
    from paretune.objectives.predictor import attach_predictor, resolve_predictor_settings

    try:
        predictor = resolve_predictor_settings(
            config.predictor.model_dump(), config.mlflow.tracking_uri
        )
    except ValueError as exc:
        raise ConfigError(f"predictor: {exc}") from None
    try:
        evaluator = make_evaluator(config.evaluator.kind, **settings)
    except FileNotFoundError as exc:
        raise ConfigError(f"evaluator.path = {settings.get('path')!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"evaluator: {exc}") from None
    try:
        evaluator = attach_predictor(evaluator, predictor)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise ConfigError(f"predictor.path = {config.predictor.path!r}: {exc}") from None
    available = evaluator.metrics()
    try:
        check_objectives(objectives, available)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.evaluator.kind == "table":
        # Raw table columns used as objectives (e.g. latency_ms_raspi4) must be returned too.
        from paretune.objectives.table import BASE_METRICS

        predicted = (predictor or {}).get("metric")
        settings["extra"] = [
            n for n in objectives.names if n not in BASE_METRICS and n != predicted
        ]
        evaluator = attach_predictor(make_evaluator(config.evaluator.kind, **settings), predictor)
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
    check_limits(config, space, objectives, evaluator)
    return Prepared(config, space, objectives, settings, evaluator, predictor)


def _accepts(algorithm: str, parameter: str) -> bool:
    import inspect

    from paretune.search_algos import ENGINES, engine_names

    engine_names()  # loads the built-in engines
    return parameter in inspect.signature(ENGINES[algorithm].__init__).parameters


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
        if "budget" not in params and _accepts(algorithm, "budget"):
            params["budget"] = cfg.search.num_samples  # e.g. TND spreads its stages over it
        engine = make_engine(
            algorithm, prepared.space, prepared.objectives, seed=cfg.seed, **params
        )
        if cfg.screening.enabled:
            from paretune.objectives.predictor import predictor_function
            from paretune.search_algos.screening import screen_engine

            engine = screen_engine(
                engine, predictor_function(prepared.predictor_settings), cfg.screening.model_dump()
            )
    except TypeError as exc:
        raise ConfigError(
            f"search.params = {params!r}: not accepted by {algorithm!r} ({exc})"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"search.params = {params!r}: {exc}") from None
    return ParetoSearcher(engine, max_trials=cfg.search.num_samples)


def check_limits(
    config: ExperimentConfig, space: SearchSpace, objectives: ObjectiveSet, evaluator: Any
) -> None:
    """Refuse limits that no architecture of the space can meet, naming the best reachable value.

    Exact on the table (every architecture is looked up); for training, the parameter and FLOP
    limits are checked against the cheapest architecture of the space.
    """
    limited = [(i, o) for i, o in enumerate(objectives) if o.limit is not None]
    if not limited:
        return
    if config.evaluator.kind == "table":
        table = getattr(evaluator, "inner", evaluator)  # under a predictor wrapper
        limited = [(i, o) for i, o in limited if o.name in table.metrics()]
        if not limited:
            return
        names = [o.name for _, o in limited]
        values, _ = table.matrix(names, space)
        feasible = np.ones(len(values), dtype=bool)
        for k, (i, o) in enumerate(limited):
            ok = values[:, k] * o.sign <= o.limit * o.sign
            if not ok.any():
                best = values[:, k].min() if o.direction == "min" else values[:, k].max()
                raise ConfigError(
                    f"objectives[{i}].limit = {o.limit!r}: no architecture meets it "
                    f"(best {o.name} in the space: {best:.6g})"
                )
            feasible &= ok
        if not feasible.any():
            raise ConfigError(
                f"objectives limits {dict(zip(names, [o.limit for _, o in limited], strict=True))}: "
                "each can be met, but no architecture meets all of them at once"
            )
        return
    cheap = [(i, o) for i, o in limited if o.name in ("params", "flops") and o.direction == "min"]
    if cheap and hasattr(evaluator, "build"):
        from paretune.objectives.measure import count_flops, count_params

        data = evaluator.data()
        model = evaluator.build(cheapest_arch(space), data)
        shape = (1, data.in_channels, data.input_size, data.input_size)
        costs = {"params": count_params(model), "flops": count_flops(model, shape)}
        for i, o in cheap:
            if costs[o.name] > o.limit:
                raise ConfigError(
                    f"objectives[{i}].limit = {o.limit!r}: no architecture meets it "
                    f"(the cheapest architecture of the space has {o.name} = {costs[o.name]:.6g})"
                )


# ---------------------------------------------------------------------- Ray
def ensure_ray(config: ExperimentConfig) -> bool:
    """Join the configured cluster or start a local Ray; True when this call started it."""
    import ray

    # Intermediate (per-epoch) results carry only some objectives; Ray must not reject them.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # With a tracking server MLflow prints a "View run" line per ended run: thousands of trials.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS") or None
    field = "ray.address" if config.ray.address else "RAY_ADDRESS"
    if address is not None and address not in ("auto", "local"):
        check_reachable(address, field)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs.update(num_cpus=config.ray.num_cpus, num_gpus=config.ray.num_gpus)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"{field} = {address!r}: cannot connect to a Ray cluster ({exc})"
        ) from None
    return True


def check_reachable(address: str, field: str, timeout: float = 3.0) -> None:
    """Fail fast (instead of hanging) when ``host:port`` does not accept connections."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{field} = {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"{field} = {address!r}: nothing answers there ({exc})") from None


def check_tracking_uri(config: ExperimentConfig, timeout: float = 5.0) -> None:
    """An HTTP tracking server must answer its health check before the search starts."""
    uri = config.mlflow.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    # Fail fast and let the tracker's own queue retry, instead of MLflow's long backoff.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"mlflow.tracking_uri = {uri!r}: the tracking server does not answer ({exc})"
        ) from None


def check_resources(config: ExperimentConfig) -> None:
    """Refuse a per-trial request that no node of the cluster can ever satisfy."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = config.resources
    need = {"CPU": res.cpu, "GPU": res.gpu, "memory": (res.memory_mb or 0) * 2**20}
    fits = [
        n for n in nodes if all(n["Resources"].get(k, 0) >= v for k, v in need.items() if v > 0)
    ]
    if not fits:
        have = [
            {
                "CPU": n["Resources"].get("CPU", 0),
                "GPU": n["Resources"].get("GPU", 0),
                "memory_mb": round(n["Resources"].get("memory", 0) / 2**20),
            }
            for n in nodes
        ]
        raise ConfigError(
            f"resources = {{cpu: {res.cpu}, gpu: {res.gpu}, memory_mb: {res.memory_mb}}}: "
            f"no node of the cluster can run one trial (nodes have {have})"
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
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(
                name, artifact_location=artifact_location(config.mlflow.tracking_uri, name)
            )
        )
    except Exception as exc:  # noqa: BLE001 - any store/transport error means "unreachable"
        raise ConfigError(
            f"mlflow.tracking_uri = {config.mlflow.tracking_uri!r}: cannot reach the tracking store ({exc})"
        ) from None
    enable_sqlite_wal(config.mlflow.tracking_uri)
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


def enable_sqlite_wal(tracking_uri: str) -> None:
    """Put a SQLite tracking store in write-ahead-log mode (kept in the file).

    Each MLflow write is a transaction; in WAL mode a commit costs one sequential append
    instead of rewriting the database and its journal, about 2x faster per trial here, and
    readers (the MLflow UI) no longer block the writer. In WAL mode a commit need not wait for
    the disk either (see :func:`~paretune.platform.mlflow_writer.sqlite_fast_commits`).
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    import sqlite3

    from paretune.platform.mlflow_writer import sqlite_fast_commits

    path = Path(tracking_uri.removeprefix("sqlite:///")).expanduser()
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        con.execute("PRAGMA journal_mode=WAL")
    # Commits without an fsync each (synchronous=NORMAL) for this process's MLflow connections
    # to the file: the parent run's summary and the Pareto tags at the end are many small writes.
    sqlite_fast_commits(tracking_uri)


def absolute_tracking_uri(uri: str) -> str:
    """A SQLite URI with an absolute path, so it means the same from any directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve())
    return uri


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """For a SQLite store, keep artifacts beside the database (not in the working directory)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a server decides where its artifacts go
    db = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve()
    return (db.parent / "mlartifacts" / experiment).as_uri()


def trial_dirs(experiment_dir: Path, report: SearchReport) -> dict[str, Path]:
    """``{trial id: folder}`` holding each trial's files (weights) in the experiment directory."""
    from paretune.platform.trainable import TRIALS_DIR

    return {r.trial_id: experiment_dir / TRIALS_DIR / r.trial_id for r in report.rows}


def write_searcher_inspection(prepared: Prepared, experiment_dir: Path) -> list[Path]:
    """Write the engine's inspection tables (e.g. the motif table) from its last saved state.

    Files go to ``<experiment_dir>/searcher/`` as CSV and heat-map PNG; the parent run gets them
    under ``searcher/``. Optuna searchers have none. A failure here is logged, never raised: the
    search itself is done.
    """
    from paretune.platform import artifacts

    if prepared.config.search.algorithm in OPTUNA_ALGORITHMS:
        return []
    try:
        state = artifacts.searcher_state_from_dir(segment_dirs(experiment_dir)[-1])
        if state is None:
            return []
        searcher = make_searcher(prepared)
        searcher.set_state(state)
        return artifacts.write_inspection_tables(
            searcher.engine.inspection_tables(), experiment_dir / artifacts.SEARCHER_ARTIFACTS
        )
    except Exception as exc:  # noqa: BLE001 - inspection files are extras
        logger.warning("searcher inspection tables not written: %s", exc)
        return []


def picture_rows(config: ExperimentConfig, report: SearchReport) -> list[Any]:
    """The trials whose runs get a cell picture (``mlflow.cell_pictures``)."""
    pictures = config.mlflow.cell_pictures
    if pictures == "auto":
        pictures = "all" if config.evaluator.kind == "train" else "front"
    return report.rows if pictures == "all" else report.front if pictures == "front" else []


def finish_parent_run(
    config: ExperimentConfig,
    state: dict[str, Any],
    report: SearchReport,
    paths: dict[str, Path],
    experiment_dir: Path | None = None,
    *,
    pictured: Collection[str] = (),
    drawn: Mapping[str, bytes] | None = None,
    known_tags: Mapping[str, str] | None = None,
    known_runs: Mapping[str, str] | None = None,
) -> None:
    """Summary, front tags, cell pictures, front models and artifacts; ends the parent run.

    ``pictured``: trials whose runs already have their cell picture (the tracker's writer).
    ``drawn``: cell pictures already drawn (``{arch: PNG}``); the others are drawn here.
    ``known_tags``: ``{trial id: pareto tag}`` known to be written (none are read back).
    ``known_runs``: ``{trial id: run id}`` of every trial run, all complete (from the tracker
    of a fresh search); without it the runs are looked up and unfinished ones ended.
    """
    from mlflow.tracking import MlflowClient

    from paretune.platform import artifacts
    from paretune.platform.tracking import existing_trial_runs

    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    run_id = state["parent_run_id"]
    searcher_state = None
    if experiment_dir is not None:
        searcher_state = artifacts.searcher_state_from_dir(segment_dirs(experiment_dir, state)[-1])
    artifacts.log_parent_summary(
        client, run_id, report, config, paths=paths, searcher_state=searcher_state
    )
    if known_runs is not None:
        trial_runs = {tid: (rid, "FINISHED") for tid, rid in known_runs.items()}
    else:
        trial_runs = existing_trial_runs(client, state["mlflow_experiment_id"], run_id)
    run_of = {tid: rid for tid, (rid, _) in trial_runs.items()}
    artifacts.tag_pareto(
        client,
        run_of,
        {r.trial_id for r in report.front},
        failed_ids={r.trial_id for r in report.rows if not r.ok},
        known=known_tags,
    )
    for trial_run, status in trial_runs.values():
        if status == "RUNNING":
            # Started before a driver died and not resumed by Ray: end it, saying so.
            client.set_tag(trial_run, "status", "interrupted")
            client.set_terminated(trial_run, status="KILLED")
    try:  # extras: the parent run must still end
        inspection = experiment_dir / artifacts.SEARCHER_ARTIFACTS if experiment_dir else None
        if inspection is not None and inspection.is_dir():
            client.log_artifacts(run_id, str(inspection), artifacts.SEARCHER_ARTIFACTS)
        artifacts.log_cell_pictures(
            client,
            {
                run_of[r.trial_id]: r.arch
                for r in picture_rows(config, report)
                if r.trial_id in run_of and r.trial_id not in pictured
            },
            drawn=drawn,
        )
        if config.evaluator.kind == "train" and config.models.log_front:
            artifacts.log_front_models(
                config.mlflow.tracking_uri,
                report.front,
                run_of,
                trial_dirs(experiment_dir, report) if experiment_dir else {},
                register_name=config.models.register_name,
            )
    except Exception as exc:  # noqa: BLE001 - pictures and models are extras
        logger.warning("MLflow cell pictures / front models not logged: %s", exc)
    status = "FINISHED" if any(r.ok for r in report.rows) or not report.rows else "FAILED"
    client.set_terminated(run_id, status=status)


# ---------------------------------------------------------------------- run
class SearchFailed(RuntimeError):
    """Every trial of a search failed; the message gives the most common reasons."""


def run(
    config: ExperimentConfig | str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    verbose: int = 1,
) -> RunResult:
    """Run the experiment of ``config`` (a validated config or a YAML path) to the end.

    Everything that can be checked before a trial runs is checked first (config, data paths,
    objectives, limits, searcher parameters, Ray address, resources, MLflow); a problem raises
    :class:`ConfigError`. If every trial fails, :class:`SearchFailed` is raised after the
    report and MLflow are written.
    """
    from paretune.search_algos.ray_searcher import EVENTS_FILE, ParetoSearcher

    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides or [])
    elif overrides:
        raise ValueError("overrides apply to a YAML path, not to a loaded config")
    prepared = prepare(config)
    searcher = make_searcher(prepared)
    if config.mlflow.enabled:
        check_tracking_uri(config)
    started_ray = ensure_ray(config)
    try:
        check_resources(config)
        run_name = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        storage = Path(config.storage.path).expanduser().resolve()
        experiment_dir = storage / run_name
        experiment_dir.mkdir(parents=True, exist_ok=False)
        (experiment_dir / CONFIG_FILE).write_text(config.to_yaml())
        state: dict[str, Any] = {
            "run_name": run_name,
            "storage": str(storage),
            "mlflow_tracking_uri": absolute_tracking_uri(config.mlflow.tracking_uri),
        }
        if config.mlflow.enabled:
            exp_id, parent_id = open_parent_run(config, run_name, experiment_dir)
            state.update(mlflow_experiment_id=exp_id, parent_run_id=parent_id)
        _write_state(experiment_dir, state)
        if isinstance(searcher, ParetoSearcher):  # replayed on resume (see its doc)
            searcher.events_path = str(experiment_dir / EVENTS_FILE)
        tracker = make_tracker(prepared, state) if config.mlflow.enabled else None
        try:
            grid = _fit_segments(
                prepared, searcher, state, experiment_dir, tracker=tracker, verbose=verbose
            )
            return _finish(prepared, experiment_dir, state, grid, tracker=tracker)
        finally:
            if tracker is not None:  # after an error; at once when _finish did it
                tracker.finish_writes(timeout=10)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def resume(experiment_dir: str | os.PathLike, *, verbose: int = 1) -> RunResult:
    """Continue a search whose driver stopped.

    Finished trials are kept (those after Ray's last snapshot are replayed from the journal,
    not re-run), the searcher continues from its saved state, interrupted trials run again
    and reuse their MLflow runs, and the parent run is reused. The newest segment is restored;
    the segments still to come then run as in :func:`run`.
    """
    from ray import tune

    from paretune.search_algos.ray_searcher import EVENTS_FILE, ParetoSearcher

    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, state = load_experiment(experiment_dir)
    prepared = prepare(config)
    segment = _restorable_segment(experiment_dir, state)
    if config.mlflow.enabled:
        check_tracking_uri(config)
    started_ray = ensure_ray(config)
    try:
        check_resources(config)
        if config.mlflow.enabled:
            from mlflow.tracking import MlflowClient

            MlflowClient(config.mlflow.tracking_uri).update_run(
                state["parent_run_id"], status="RUNNING"
            )
        tuner = tune.Tuner.restore(
            str(segment),
            trainable=_trainable(prepared, experiment_dir, finished_since_snapshot(experiment_dir)),
            resume_unfinished=True,
            resume_errored=False,
        )
        grid = _fit(tuner)
        del tuner
        tracker = None
        done = len(known_trial_ids(experiment_dir))
        if done < config.search.num_samples:
            # Segments still to come: the searcher as the restored segment left it.
            searcher = make_searcher(prepared)
            if isinstance(searcher, ParetoSearcher):
                searcher.events_path = str(experiment_dir / EVENTS_FILE)
            searcher.restore_from_dir(str(segment))
            tracker = make_tracker(prepared, state) if config.mlflow.enabled else None
            try:
                grid = _fit_segments(
                    prepared,
                    searcher,
                    state,
                    experiment_dir,
                    tracker=tracker,
                    verbose=verbose,
                    done=done,
                    first=len(segment_dirs(experiment_dir, state)),
                )
            finally:
                if tracker is not None:
                    tracker.finish_writes(timeout=10)
        if config.mlflow.enabled:
            _sync_lost_trial_runs(prepared, state, experiment_dir)
        return _finish(prepared, experiment_dir, state, grid, tracker=tracker)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _sync_lost_trial_runs(prepared: Prepared, state: dict[str, Any], experiment_dir: Path) -> None:
    """Give MLflow runs to trials whose writes died with the previous driver (journal only)."""
    from mlflow.tracking import MlflowClient

    from paretune.platform.sync import SyncSummary, sync_trial_runs

    uri = prepared.config.mlflow.tracking_uri
    try:
        sync_trial_runs(
            MlflowClient(uri),
            prepared,
            state["mlflow_experiment_id"],
            state["parent_run_id"],
            experiment_dir,
            SyncSummary(uri, state["parent_run_id"]),
        )
    except Exception as exc:  # noqa: BLE001 - `paretune sync-mlflow` can do it later
        logger.warning("MLflow runs of earlier trials not checked (%s); run sync-mlflow", exc)


def finished_since_snapshot(experiment_dir: Path) -> dict[str, dict[str, Any]]:
    """Journal records of trials that finished after Ray's last snapshot (Ray will run them again)."""
    from paretune.platform.journal import JOURNAL_FILE, TrialJournal

    journal = TrialJournal(experiment_dir / JOURNAL_FILE).load()
    done = {
        t.trial_id
        for segment in segment_dirs(experiment_dir)
        for t in segment_trials(segment)
        if t.status in ("TERMINATED", "ERROR")
    }
    return {tid: rec for tid, rec in journal.items() if tid not in done}


def known_trial_ids(experiment_dir: Path) -> set[str]:
    """Every trial of the search: Ray's, in all segments, and the journal's."""
    from paretune.platform.journal import JOURNAL_FILE, TrialJournal

    ids = set(TrialJournal(experiment_dir / JOURNAL_FILE).load())
    for segment in segment_dirs(experiment_dir):
        ids.update(t.trial_id for t in segment_trials(segment))
    return ids


def report(experiment_dir: str | os.PathLike) -> SearchReport:
    """Rebuild the report of a (finished or interrupted) experiment from its directory."""
    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, _ = load_experiment(experiment_dir)
    prepared = prepare(config)
    return search_report(prepared, experiment_dir)


# ---------------------------------------------------------------------- segments
SEGMENTS_DIR = "segments"


def segment_dirs(experiment_dir: Path, state: Mapping[str, Any] | None = None) -> list[Path]:
    """The Ray Tune experiments of a search, in order (see ``search.segment_size``).

    The first is the experiment directory itself; later ones are ``segments/segment-NNN``
    inside it, listed in the paretune state file as they start.
    """
    if state is None:
        state_path = experiment_dir / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    return [experiment_dir, *(experiment_dir / name for name in state.get("segments", []))]


def segment_trials(segment: Path) -> list[Any]:
    """Ray's trials of one segment (none when it saved no state yet)."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from paretune.platform.memory import without_result_dataframes

    if not tune.Tuner.can_restore(str(segment)):
        return []
    with without_result_dataframes():
        return list(ExperimentAnalysis(str(segment)).trials)


def _restorable_segment(experiment_dir: Path, state: dict[str, Any]) -> Path:
    """The newest segment with Ray state; a later one that saved none is forgotten."""
    from ray import tune

    while state.get("segments") and not tune.Tuner.can_restore(
        str(experiment_dir / state["segments"][-1])
    ):
        state["segments"].pop()  # the driver died as it started: it starts again
        _write_state(experiment_dir, state)
    newest = segment_dirs(experiment_dir, state)[-1]
    if not tune.Tuner.can_restore(str(newest)):
        raise ConfigError(f"{experiment_dir}: no Ray Tune experiment state to resume from")
    return newest


def _fit_segments(
    prepared: Prepared,
    searcher: Any,
    state: dict[str, Any],
    experiment_dir: Path,
    *,
    tracker: Any,
    verbose: int,
    done: int = 0,
    first: int = 0,
) -> Any:
    """Run segments ``first``, ``first + 1``, ... until ``search.num_samples`` trials exist.

    ``done`` trials exist already. Returns the last segment's ``ResultGrid`` (the earlier
    ones are read back from disk for the report, see :func:`search_report`); a segment that
    ends short (the searcher has nothing more to propose) is the last.
    """
    from paretune.platform.memory import release_free_heap

    search = prepared.config.search
    grid = None
    segment = first
    while done < search.num_samples:
        size = min(search.segment_size, search.num_samples - done)
        if segment > 0:
            state.setdefault("segments", []).append(f"{SEGMENTS_DIR}/segment-{segment:03d}")
            _write_state(experiment_dir, state)
        grid = None  # the previous segment's trials go before the next one's come
        gc.collect()  # Ray leaves the finished segment in reference cycles
        release_free_heap()
        tuner = _build_tuner(
            prepared,
            searcher,
            state,
            experiment_dir,
            tracker=tracker,
            verbose=verbose,
            segment=segment,
            num_samples=size,
        )
        grid = _fit(tuner)
        del tuner
        done += len(grid)
        segment += 1
        if len(grid) < size:
            break
    return grid


def search_report(prepared: Prepared, experiment_dir: Path, last_grid: Any = None) -> SearchReport:
    """The report of every segment's results and the journal-only trials.

    ``last_grid``: the newest segment's ``ResultGrid`` when at hand (else read from disk).
    Trials are numbered across segments in the order they were created.
    """
    from ray import tune

    from paretune.platform.trainable import arch_from_config

    space = prepared.space

    def arch_of(config: Mapping[str, Any]) -> str:
        return space.encode(arch_from_config(space, config))

    segments = segment_dirs(experiment_dir)
    rows: list[Any] = []
    results: list[Any] = []
    for i, segment in enumerate(segments):
        if i == len(segments) - 1 and last_grid is not None:
            part = list(last_grid)
        elif tune.Tuner.can_restore(str(segment)):
            part = list(_result_grid(segment))
        else:
            continue
        rows += rows_from_results(part, prepared.objectives, arch_of, first_number=len(results))
        results += part
    # A trial that finished after Ray's last snapshot of a driver that then died is unknown to
    # Ray after the resume, but its result is in the journal and the searcher was told (see
    # ParetoSearcher): it belongs in the report. Its creation index died with Ray's state, so
    # it is numbered after the trials Ray knows, in the journal's order.
    last = max((r.number for r in rows), default=0)
    for i, res in enumerate(journal_only_results(experiment_dir, results), start=1):
        (row,) = rows_from_results([res], prepared.objectives, arch_of)
        row.number = last + i
        rows.append(row)
    rows.sort(key=lambda r: (r.number, r.trial_id))
    return build_report(rows, prepared.objectives)


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


def _result_grid(experiment_dir: Path) -> Any:
    from ray.tune import ExperimentAnalysis, ResultGrid

    from paretune.platform.memory import without_result_dataframes

    with without_result_dataframes():
        return ResultGrid(ExperimentAnalysis(str(experiment_dir)))


def _trainable(
    prepared: Prepared, experiment_dir: Path, replay: dict[str, dict[str, Any]] | None = None
) -> Any:
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
        memory_limit_mb=cfg.resources.memory_mb,
        experiment_dir=str(experiment_dir),
        replay=replay,
        faults=cfg.faults.model_dump() if cfg.faults.active else None,
        predictor_settings=prepared.predictor_settings,
    )
    resources: dict[str, float] = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    if cfg.resources.memory_mb:
        resources["memory"] = cfg.resources.memory_mb * 2**20
    return tune.with_resources(fn, resources)


def default_concurrency(config: ExperimentConfig) -> int:
    """Trials the cluster can run at once with the per-trial resources.

    Ray lets a custom searcher keep only one trial pending unless a concurrency limit is set,
    which would leave the cluster idle between trials; this is that limit.
    """
    import ray

    total = ray.cluster_resources()
    res = config.resources
    limits = [total.get("CPU", 1) / res.cpu]
    if res.gpu > 0:
        limits.append(total.get("GPU", 0) / res.gpu)
    return max(1, int(min(limits)))


def _fit(tuner: Any) -> Any:
    """``tuner.fit()`` without Ray's TensorBoard logger or result DataFrames, and without the
    log-once keys of its final experiment-state save (see :mod:`paretune.platform.memory`)."""
    from paretune.platform.memory import (
        forget_encoder_log_keys,
        without_result_dataframes,
        without_tensorboard,
    )

    with without_tensorboard(), without_result_dataframes():
        grid = tuner.fit()
    forget_encoder_log_keys()
    return grid


def make_tracker(prepared: Prepared, state: dict[str, Any]) -> Any:
    """The MLflow callback of a new search; :func:`run` waits for its writes itself."""
    from paretune.platform.tracking import MlflowTracker
    from paretune.platform.trainable import arch_from_config

    cfg, space = prepared.config, prepared.space
    return MlflowTracker(
        tracking_uri=cfg.mlflow.tracking_uri,
        experiment_id=state["mlflow_experiment_id"],
        parent_run_id=state["parent_run_id"],
        searcher=cfg.search.algorithm,
        arch_params=lambda c: space.to_params(arch_from_config(space, c)),
        objectives=prepared.objectives,
        wait_at_end=False,
    )


def _build_tuner(
    prepared: Prepared,
    searcher: Any,
    state: dict[str, Any],
    experiment_dir: Path,
    *,
    tracker: Any = None,
    verbose: int,
    segment: int = 0,
    num_samples: int | None = None,
) -> Any:
    """The Tuner of one segment: the experiment directory itself, or ``segments/segment-NNN``."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from paretune.platform.journal import JOURNAL_FILE, JournalCallback
    from paretune.platform.memory import TrimFinishedTrials

    cfg = prepared.config
    scheduler = None
    if cfg.scheduler.kind == "asha":
        scheduler = ASHAScheduler(
            metric="accuracy",
            mode="max",
            time_attr="training_iteration",
            # epochs reports, then the final one (test accuracy, sources): never stop that.
            max_t=cfg.evaluator.epochs + 1,
            grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    # The journal first: a trial is on disk before anything else hears of it. Ray's own
    # JSON and CSV results are named, so that fit() under memory.without_tensorboard() adds
    # no TensorBoard writer per trial; the trimming goes last (it keeps what the others read).
    callbacks: list[Any] = [JournalCallback(experiment_dir / JOURNAL_FILE)]
    callbacks += [JsonLoggerCallback(), CSVLoggerCallback()]
    if tracker is not None:
        callbacks.append(tracker)
    callbacks.append(TrimFinishedTrials(keep_metrics=prepared.objectives.names))
    return tune.Tuner(
        _trainable(prepared, experiment_dir),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples or cfg.search.num_samples,
            max_concurrent_trials=cfg.search.max_concurrent or default_concurrency(cfg),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=state["run_name"] if segment == 0 else f"segment-{segment:03d}",
            storage_path=state["storage"] if segment == 0 else str(experiment_dir / SEGMENTS_DIR),
            failure_config=tune.FailureConfig(
                max_failures=cfg.failure.max_failures, fail_fast=cfg.failure.fail_fast
            ),
            callbacks=callbacks,
            verbose=verbose,
        ),
    )


def journal_only_results(experiment_dir: Path, results: list[Any]) -> list[Any]:
    """Result-like records of the journal's trials that ``results`` (Ray's) does not hold."""
    from types import SimpleNamespace

    from paretune.platform.journal import JOURNAL_FILE, TrialJournal

    known = {str((r.metrics or {}).get("trial_id") or Path(r.path).name) for r in results}
    out = []
    for trial_id, record in TrialJournal(experiment_dir / JOURNAL_FILE).load().items():
        if trial_id in known:
            continue
        metrics = {k: _number(v) for k, v in record["result"].items()}
        metrics["trial_id"] = trial_id
        error = RuntimeError(record["error"]) if record["status"] == "failed" else None
        out.append(
            SimpleNamespace(metrics=metrics, config=record["config"], error=error, path=None)
        )
    return out


def _number(value: Any) -> Any:
    """Undo the journal's JSON-safe spelling of non-finite floats."""
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def _finish(
    prepared: Prepared,
    experiment_dir: Path,
    state: dict[str, Any],
    grid: Any,
    *,
    tracker: Any = None,
) -> RunResult:
    """Report, plots and the parent run's end.

    With the ``tracker`` of :func:`run`, the writer draws and logs most cell pictures after
    its last trial writes while the report and plots are written here; then it is waited for.
    """
    from paretune.platform import artifacts

    cfg = prepared.config
    rep = search_report(prepared, experiment_dir, grid)
    pictures = picture_rows(cfg, rep) if cfg.mlflow.enabled else []
    # The writer draws two thirds of the cell pictures while the report and its plots are
    # written here, the driver the rest after them: about the same time each.
    share = -(-len(pictures) * 2 // 3) if tracker is not None else 0
    if share:
        tracker.log_cell_pictures({r.trial_id: r.arch for r in pictures[:share]})
    paths = rep.write(experiment_dir / "report")
    write_searcher_inspection(prepared, experiment_dir)
    if cfg.mlflow.enabled:
        try:
            drawn = (
                artifacts.draw_cell_pictures(r.arch for r in pictures[share:]) if share else None
            )
            known_tags = known_runs = None
            pictured: Collection[str] = ()
            if tracker is not None and tracker.finish_writes():
                known_tags, known_runs = tracker.pareto_tags, tracker.runs
                pictured = tracker.pictured
            finish_parent_run(
                cfg,
                state,
                rep,
                paths,
                experiment_dir,
                pictured=pictured,
                drawn=drawn,
                known_tags=known_tags,
                known_runs=known_runs,
            )
        except Exception as exc:  # noqa: BLE001 - the search is done; MLflow can catch up later
            logger.warning(
                "could not finish the MLflow parent run (%s); run `paretune sync-mlflow %s`",
                exc,
                experiment_dir,
            )
    if rep.rows and not any(r.ok for r in rep.rows):
        raise SearchFailed(failure_summary(rep, experiment_dir))
    return RunResult(
        experiment_dir, rep, state.get("parent_run_id"), state.get("mlflow_experiment_id")
    )


def failure_summary(rep: SearchReport, experiment_dir: Path) -> str:
    """``all N trials failed`` with the most common reasons."""
    counts: dict[str, int] = {}
    for r in rep.rows:
        # Group alike errors: the architecture in a message differs from trial to trial.
        reason = re.sub(r"\|[^\s;]*\|", "<arch>", r.error or "unknown")
        counts[reason] = counts.get(reason, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    reasons = "; ".join(f"{n} x {reason}" for reason, n in top)
    return f"all {len(rep.rows)} trials failed ({reasons}); details in {experiment_dir}"
