"""The Ray Tune side of a search: the trainable, the Tuner of each segment, fit and restore.

A long search runs as consecutive ``Tuner.fit`` segments (``search.segment_size``) with one
searcher throughout (see :mod:`paretune.platform.memory`). ``resume`` restores the newest
segment with Ray's ``Tuner.restore``: that reads Ray's experiment state, which Ray may have
pickled, so only folders the user trusts are resumed (README). The report and ``sync-mlflow``
never come here: they read paretune's own files (:mod:`paretune.platform.results`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler

from paretune.platform.cluster import default_concurrency
from paretune.platform.config import ConfigError
from paretune.platform.experiment import (
    SEGMENTS_DIR,
    segment_dirs,
    segment_name,
    write_state,
)
from paretune.platform.journal import JOURNAL_FILE, JournalCallback, TrialJournal
from paretune.platform.memory import (
    TrimFinishedTrials,
    forget_encoder_log_keys,
    release_free_heap,
    without_tensorboard,
)
from paretune.platform.prepare import Prepared
from paretune.platform.tracking import MlflowTracker
from paretune.platform.trainable import arch_from_config, run_trial

# What ``run(..., evaluator_wrapper=...)`` takes: it gets a trial's evaluator and returns the
# one that evaluates (tests inject faults with it). It is pickled to the workers.
EvaluatorWrapper = Callable[[Any], Any]


def make_trainable(
    prepared: Prepared,
    experiment_dir: Path,
    replay: dict[str, dict[str, Any]] | None = None,
    wrapper: EvaluatorWrapper | None = None,
) -> Any:
    """The trial function with its parameters and per-trial resources bound."""
    cfg = prepared.config
    fn = tune.with_parameters(
        run_trial,
        # A user's space (kind python) travels as its spec: trials import it themselves.
        space=prepared.space_spec if cfg.space.kind == "python" else prepared.space,
        objectives=prepared.objectives,
        evaluator_kind=cfg.evaluator.kind,
        evaluator_settings=prepared.evaluator_settings,
        cpus_per_trial=cfg.resources.cpu,
        memory_limit_mb=cfg.resources.memory_mb,
        experiment_dir=str(experiment_dir),
        replay=replay,
        predictor_settings=prepared.predictor_settings,
        evaluator_wrapper=wrapper,
    )
    resources: dict[str, float] = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    if cfg.resources.memory_mb:
        resources["memory"] = cfg.resources.memory_mb * 2**20
    return tune.with_resources(fn, resources)


def fit(tuner: Any) -> Any:
    """``tuner.fit()`` without Ray's TensorBoard logger, and without the log-once keys of its
    final experiment-state save (see :mod:`paretune.platform.memory`)."""
    with without_tensorboard():
        grid = tuner.fit()
    forget_encoder_log_keys()
    return grid


def build_tuner(
    prepared: Prepared,
    searcher: Any,
    state: dict[str, Any],
    experiment_dir: Path,
    *,
    tracker: Any = None,
    verbose: int,
    segment: int = 0,
    num_samples: int | None = None,
    first_number: int = 0,
    wrapper: EvaluatorWrapper | None = None,
) -> Any:
    """The Tuner of one segment: the experiment directory itself, or ``segments/segment-NNN``.

    ``first_number``: trials created before this segment (the journal numbers trials across
    segments with it).
    """
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
    callbacks: list[Any] = [
        JournalCallback(experiment_dir / JOURNAL_FILE, segment=segment, first_number=first_number)
    ]
    callbacks += [JsonLoggerCallback(), CSVLoggerCallback()]
    if tracker is not None:
        callbacks.append(tracker)
    callbacks.append(TrimFinishedTrials(keep_metrics=prepared.objectives.names))
    return tune.Tuner(
        make_trainable(prepared, experiment_dir, wrapper=wrapper),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples or cfg.search.num_samples,
            max_concurrent_trials=cfg.search.max_concurrent or default_concurrency(cfg),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=state["run_name"] if segment == 0 else Path(segment_name(segment)).name,
            storage_path=state["storage"] if segment == 0 else str(experiment_dir / SEGMENTS_DIR),
            failure_config=tune.FailureConfig(
                max_failures=cfg.failure.max_failures, fail_fast=cfg.failure.fail_fast
            ),
            callbacks=callbacks,
            verbose=verbose,
        ),
    )


def fit_segments(
    prepared: Prepared,
    searcher: Any,
    state: dict[str, Any],
    experiment_dir: Path,
    *,
    tracker: Any,
    verbose: int,
    done: int = 0,
    first: int = 0,
    wrapper: EvaluatorWrapper | None = None,
) -> None:
    """Run segments ``first``, ``first + 1``, ... until ``search.num_samples`` trials exist.

    ``done`` trials exist already; a segment that ends short (the searcher has nothing more
    to propose) is the last.
    """
    search = prepared.config.search
    segment = first
    while done < search.num_samples:
        size = min(search.segment_size, search.num_samples - done)
        if segment > 0:
            state.setdefault("segments", []).append(segment_name(segment))
            write_state(experiment_dir, state)
        gc.collect()  # Ray leaves the finished segment in reference cycles
        release_free_heap()
        tuner = build_tuner(
            prepared,
            searcher,
            state,
            experiment_dir,
            tracker=tracker,
            verbose=verbose,
            segment=segment,
            num_samples=size,
            first_number=done,
            wrapper=wrapper,
        )
        created = len(fit(tuner))
        del tuner
        done += created
        segment += 1
        if created < size:
            break


# ---------------------------------------------------------------------- resume (Ray's state)
def segment_trials(segment: Path) -> list[Any]:
    """Ray's trials of one segment (none when it saved no state yet). Reads Ray's state."""
    if not tune.Tuner.can_restore(str(segment)):
        return []
    return list(ExperimentAnalysis(str(segment)).trials)


def restorable_segment(experiment_dir: Path, state: dict[str, Any]) -> Path | None:
    """The newest segment with Ray state (None: Ray saved none); a later one is forgotten."""
    while state.get("segments") and not tune.Tuner.can_restore(
        str(experiment_dir / state["segments"][-1])
    ):
        state["segments"].pop()  # the driver died as it started: it starts again
        write_state(experiment_dir, state)
    newest = segment_dirs(experiment_dir, state)[-1]
    return newest if tune.Tuner.can_restore(str(newest)) else None


def restore_tuner(
    prepared: Prepared, experiment_dir: Path, segment: Path, wrapper: EvaluatorWrapper | None
) -> Any:
    """Ray's restore of ``segment``; trials the journal shows finished are replayed, not run."""
    try:
        return tune.Tuner.restore(
            str(segment),
            trainable=make_trainable(
                prepared, experiment_dir, finished_since_snapshot(experiment_dir), wrapper
            ),
            resume_unfinished=True,
            resume_errored=False,
        )
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds for a damaged state
        raise ConfigError(
            f"{segment}: Ray cannot restore this experiment state ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); "
            "remove the damaged file or start a new search"
        ) from None


def finished_since_snapshot(experiment_dir: Path) -> dict[str, dict[str, Any]]:
    """Journal records of trials that finished after Ray's last snapshot (Ray will run them again)."""
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
    ids = set(TrialJournal(experiment_dir / JOURNAL_FILE).load())
    for segment in segment_dirs(experiment_dir):
        ids.update(t.trial_id for t in segment_trials(segment))
    return ids


def make_tracker(prepared: Prepared, state: dict[str, Any], experiment_dir: Path) -> MlflowTracker:
    """The MLflow callback of a new search; :func:`run` waits for its writes itself."""
    cfg, space = prepared.config, prepared.space
    return MlflowTracker(
        tracking_uri=cfg.mlflow.tracking_uri,
        experiment_id=state["mlflow_experiment_id"],
        parent_run_id=state["parent_run_id"],
        searcher=cfg.search.algorithm,
        arch_params=lambda c: space.to_params(arch_from_config(space, c)),
        objectives=prepared.objectives,
        wait_at_end=False,
        experiment_dir=experiment_dir,
    )
