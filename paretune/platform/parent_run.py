"""The MLflow parent run of a search: open it, reopen it on resume, finish or end it.

The parent run holds the config (params and ``config.yaml``), the summary, the Pareto tags of
its nested trial runs, cell pictures and the front's models. Its ``objective.*`` tags are
written once, with the summary (:func:`paretune.platform.artifacts.parent_tags`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from paretune.platform import artifacts
from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.experiment import segment_dirs, trial_dirs
from paretune.platform.redact import redact_text, redact_uri
from paretune.platform.report import SearchReport
from paretune.platform.tracking import existing_trial_runs

logger = logging.getLogger(__name__)


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


def enable_sqlite_wal(tracking_uri: str) -> None:
    """Put a SQLite tracking store in write-ahead-log mode (kept in the file).

    Each MLflow write is a transaction; in WAL mode a commit costs one sequential append
    instead of rewriting the database and its journal, about 2x faster per trial here, and
    readers (the MLflow UI) no longer block the writer.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///")).expanduser()
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        con.execute("PRAGMA journal_mode=WAL")


def redacted_params(config: ExperimentConfig) -> dict[str, str]:
    """The config as flat MLflow params, with credentials of the tracking URI redacted."""
    params = config.flat_params()
    if "mlflow.tracking_uri" in params:
        params["mlflow.tracking_uri"] = redact_uri(params["mlflow.tracking_uri"])
    return params


def redacted_yaml(config: ExperimentConfig) -> str:
    """``config.to_yaml()`` with credentials of the tracking URI redacted."""
    uri = config.mlflow.tracking_uri
    shown = redact_uri(uri)
    if shown == uri:
        return config.to_yaml()
    safe = config.model_copy(
        update={"mlflow": config.mlflow.model_copy(update={"tracking_uri": shown})}
    )
    return safe.to_yaml()


def open_parent_run(
    config: ExperimentConfig, run_name: str, experiment_dir: Path
) -> tuple[str, str]:
    """Create the MLflow experiment (if needed) and the parent run; returns (experiment id, run id)."""
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
            f"mlflow.tracking_uri = {redact_uri(config.mlflow.tracking_uri)!r}: "
            f"cannot reach the tracking store ({redact_text(str(exc), config.mlflow.tracking_uri)})"
        ) from None
    enable_sqlite_wal(config.mlflow.tracking_uri)
    tags = {
        "searcher": config.search.algorithm,
        "space": config.space.name,
        "evaluator": config.evaluator.kind,
        "objectives": json.dumps([o.model_dump() for o in config.objectives]),
        "experiment_dir": str(experiment_dir),
        "paretune.role": "experiment",
    }
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    params = [Param(k, v[:6000]) for k, v in redacted_params(config).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    client.log_text(run.info.run_id, redacted_yaml(config), "config.yaml")
    return exp_id, run.info.run_id


def reopen_parent_run(config: ExperimentConfig, state: Mapping[str, Any]) -> None:
    """Mark the parent run RUNNING again (a resume)."""
    MlflowClient(config.mlflow.tracking_uri).update_run(state["parent_run_id"], status="RUNNING")


def end_parent_run(config: ExperimentConfig, state: Mapping[str, Any], status: str) -> None:
    """End the parent run with ``status`` (a search that stopped before its report)."""
    try:
        MlflowClient(config.mlflow.tracking_uri).set_terminated(
            state["parent_run_id"], status=status
        )
    except Exception as exc:  # noqa: BLE001 - the error that stopped the search matters more
        logger.warning("could not end the MLflow parent run (%s)", exc)


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
            folders = (
                trial_dirs(experiment_dir, (r.trial_id for r in report.rows))
                if experiment_dir
                else {}
            )
            artifacts.log_front_models(
                config.mlflow.tracking_uri,
                report.front,
                run_of,
                folders,
                register_name=config.models.register_name,
            )
    except Exception as exc:  # noqa: BLE001 - pictures and models are extras
        logger.warning("MLflow cell pictures / front models not logged: %s", exc)
    status = "FINISHED" if any(r.ok for r in report.rows) or not report.rows else "FAILED"
    client.set_terminated(run_id, status=status)
