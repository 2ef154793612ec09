"""From a config to a finished search: run, resume and report.

``run(config)`` checks everything that can be checked before a trial runs, opens the MLflow
parent run, runs the search in Ray Tune and returns the report. ``resume(experiment_dir)``
continues a search whose driver died (Ray's restore: resume only folders you trust);
``report(experiment_dir)`` rebuilds the report from paretune's own files. The jobs live in
their own modules: :mod:`~paretune.platform.prepare` (config to space, objectives, evaluator,
searcher), :mod:`~paretune.platform.cluster` (Ray and reachability),
:mod:`~paretune.platform.experiment` (the folder and its state file),
:mod:`~paretune.platform.parent_run` (MLflow), :mod:`~paretune.platform.tuning` (Ray Tune)
and :mod:`~paretune.platform.results` (the report).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from paretune.platform import artifacts
from paretune.platform.cluster import (
    check_resources,
    check_tracking_uri,
    ensure_ray,
    set_environment_defaults,
)
from paretune.platform.config import ConfigError, ExperimentConfig, load_config
from paretune.platform.experiment import (
    create_experiment_dir,
    load_experiment,
    segment_dirs,
    write_state,
)
from paretune.platform.parent_run import (
    absolute_tracking_uri,
    end_parent_run,
    finish_parent_run,
    open_parent_run,
    picture_rows,
    reopen_parent_run,
)
from paretune.platform.phases import phase_name, run_phase
from paretune.platform.prepare import Prepared, make_searcher, prepare
from paretune.platform.redact import redact_uri
from paretune.platform.report import SearchReport
from paretune.platform.results import (
    SearchFailed,
    failure_summary,
    search_report,
    write_searcher_inspection,
)
from paretune.platform.searcher import EVENTS_FILE, ParetoSearcher, check_saved_state
from paretune.platform.sync import keep_interrupted_runs, sync_lost_trial_runs
from paretune.platform.tuning import (
    EvaluatorWrapper,
    fit,
    fit_segments,
    known_trial_ids,
    make_tracker,
    restorable_segment,
    restore_tuner,
)
from paretune.platform.writer_messages import short_reason

__all__ = ["RunResult", "SearchFailed", "report", "resume", "run"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished search hands back."""

    experiment_dir: Path
    report: SearchReport
    parent_run_id: str | None
    mlflow_experiment_id: str | None
    # Set when MLflow lost part of the record (e.g. the SQLite store was removed during the
    # search): the message, with the ``paretune sync-mlflow`` hint. The CLI exits non-zero.
    tracking_problem: str | None = None


def run(
    config: ExperimentConfig | str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    verbose: int = 1,
    evaluator_wrapper: EvaluatorWrapper | None = None,
) -> RunResult:
    """Run the experiment of ``config`` (a validated config or a YAML path) to the end.

    Everything that can be checked before a trial runs is checked first (config, data paths,
    objectives, limits, searcher parameters, Ray address, resources, MLflow); a problem raises
    :class:`ConfigError`. If every trial fails, :class:`SearchFailed` is raised after the
    report and MLflow are written. ``evaluator_wrapper`` gets the trial function and returns
    the one Ray runs (tests inject faults with it).
    """
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides or [])
    elif overrides:
        raise ValueError("overrides apply to a YAML path, not to a loaded config")
    set_environment_defaults()
    prepared = prepare(config)
    searcher = make_searcher(prepared)
    if config.mlflow.enabled:
        check_tracking_uri(config)
    started_ray = ensure_ray(config)
    try:
        check_resources(config)
        experiment_dir, state = create_experiment_dir(config)
        uri = absolute_tracking_uri(config.mlflow.tracking_uri)
        if redact_uri(uri) == uri:  # never a password on disk (the UI then reads config.yaml)
            state["mlflow_tracking_uri"] = uri
        if config.mlflow.enabled:
            exp_id, parent_id = open_parent_run(config, state["run_name"], experiment_dir)
            state.update(mlflow_experiment_id=exp_id, parent_run_id=parent_id)
        write_state(experiment_dir, state)
        prepared, searcher = run_phase(prepared, searcher, experiment_dir, state, verbose=verbose)
        return _search(prepared, searcher, experiment_dir, state, verbose, evaluator_wrapper)
    finally:
        if started_ray:
            ray.shutdown()


def _search(
    prepared: Prepared,
    searcher: Any,
    experiment_dir: Path,
    state: dict[str, Any],
    verbose: int,
    evaluator_wrapper: EvaluatorWrapper | None,
) -> RunResult:
    """The search's own trials from the first, then the report (Ray is up, the folder made)."""
    if isinstance(searcher, ParetoSearcher):  # replayed on resume (see its doc)
        searcher.events_path = str(experiment_dir / EVENTS_FILE)
    config = prepared.config
    tracker = make_tracker(prepared, state, experiment_dir) if config.mlflow.enabled else None
    try:
        fit_segments(
            prepared,
            searcher,
            state,
            experiment_dir,
            tracker=tracker,
            verbose=verbose,
            wrapper=evaluator_wrapper,
        )
        return _finish(prepared, experiment_dir, state, tracker=tracker)
    finally:
        if tracker is not None:  # after an error; at once when _finish did it
            tracker.finish_writes(timeout=10)


def resume(
    experiment_dir: str | os.PathLike,
    *,
    verbose: int = 1,
    evaluator_wrapper: EvaluatorWrapper | None = None,
) -> RunResult:
    """Continue a search whose driver stopped. Resume only folders you trust (Ray's restore
    reads Ray's experiment state, which may be pickled).

    Finished trials are kept (those after Ray's last snapshot are replayed from the journal,
    not re-run), the searcher continues from its saved state, interrupted trials run again
    and reuse their MLflow runs, and the parent run is reused. The newest segment is restored;
    the segments still to come then run as in :func:`run`.
    """
    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, state = load_experiment(experiment_dir)
    set_environment_defaults()
    prepared = prepare(config)
    segment = restorable_segment(experiment_dir, state)
    has_phase = phase_name(config) is not None
    if segment is None and not has_phase:
        if config.mlflow.enabled and state.get("parent_run_id"):
            end_parent_run(config, state, "KILLED")
        raise ConfigError(
            f"{experiment_dir}: the driver stopped before Ray saved any state, nothing to resume "
            "from; start the search again with `paretune run`"
        )
    searcher = make_searcher(prepared)
    if not has_phase:
        _check_saved_state(searcher, segment)
    if config.mlflow.enabled:
        check_tracking_uri(config)
    started_ray = ensure_ray(config)
    try:
        check_resources(config)
        if config.mlflow.enabled:
            reopen_parent_run(config, state)
        # A weight-sharing phase continues from its checkpoints (or hands over at once when
        # it had finished); a driver that died before the search's first save starts it anew.
        prepared, searcher = run_phase(prepared, searcher, experiment_dir, state, verbose=verbose)
        if segment is None:
            return _search(prepared, searcher, experiment_dir, state, verbose, evaluator_wrapper)
        if has_phase:
            _check_saved_state(searcher, segment)
        tracker = None
        try:
            fit(restore_tuner(prepared, experiment_dir, segment, evaluator_wrapper))
            done = len(known_trial_ids(experiment_dir))
            if done < config.search.num_samples:
                # Segments still to come: the searcher as the restored segment left it.
                if isinstance(searcher, ParetoSearcher):
                    searcher.events_path = str(experiment_dir / EVENTS_FILE)
                searcher.restore_from_dir(str(segment))
                tracker = (
                    make_tracker(prepared, state, experiment_dir) if config.mlflow.enabled else None
                )
                fit_segments(
                    prepared,
                    searcher,
                    state,
                    experiment_dir,
                    tracker=tracker,
                    verbose=verbose,
                    done=done,
                    first=len(segment_dirs(experiment_dir, state)),
                    wrapper=evaluator_wrapper,
                )
        except BaseException:
            if config.mlflow.enabled:
                end_parent_run(config, state, "FAILED")
            raise
        finally:
            if tracker is not None:
                tracker.finish_writes(timeout=10)
        if config.mlflow.enabled:
            if keep_interrupted_runs(config.mlflow.tracking_uri, state):
                tracker = None  # its run ids changed: the parent run looks them up
            sync_lost_trial_runs(prepared, state, experiment_dir)
        return _finish(prepared, experiment_dir, state, tracker=tracker)
    finally:
        if started_ray:
            ray.shutdown()


def _check_saved_state(searcher: Any, segment: Path) -> None:
    try:
        check_saved_state(searcher, segment)
    except ValueError as exc:
        raise ConfigError(
            f"{exc}; delete that file to resume from an older searcher state (when the folder "
            "has one), or start the search again with `paretune run`"
        ) from None


def report(experiment_dir: str | os.PathLike) -> SearchReport:
    """Rebuild the report of a (finished or interrupted) experiment from paretune's own files
    (the journal): it reads no file Ray may have pickled."""
    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, _ = load_experiment(experiment_dir)
    return search_report(prepare(config), experiment_dir)


def _finish(
    prepared: Prepared, experiment_dir: Path, state: dict[str, Any], *, tracker: Any = None
) -> RunResult:
    """Report, plots and the parent run's end.

    With the ``tracker`` of :func:`run`, the writer draws and logs most cell pictures after
    its last trial writes while the report and plots are written here; then it is waited for.
    """
    cfg = prepared.config
    rep = search_report(prepared, experiment_dir)
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
                short_reason(exc, cfg.mlflow.tracking_uri),
                experiment_dir,
            )
    if rep.rows and not any(r.ok for r in rep.rows):
        raise SearchFailed(failure_summary(rep, experiment_dir))
    return RunResult(
        experiment_dir,
        rep,
        state.get("parent_run_id"),
        state.get("mlflow_experiment_id"),
        tracking_problem=tracker.store_problem if tracker is not None else None,
    )
