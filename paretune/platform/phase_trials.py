"""The Ray Tune trials of the weight-sharing phases: one set-up for every phase that trains.

A phase (:mod:`paretune.platform.phases`) trains shared weights as Ray Tune trials whose
checkpoints live in the experiment's storage, so a restarted trial or ``paretune resume``
continues them. The pieces every such phase repeats live here:

- inside the trial: :func:`trial_settings` (``device: gpu-if-given`` resolved on the trial's
  node), :func:`restore_from_tune` (continue from Ray's checkpoint), :func:`report_checkpoint`
  (one report with the state saved as a checkpoint) and :func:`train_reporting` (a
  :class:`~paretune.objectives.supernet_train.SupernetTrainer` trained to its end, a report
  and checkpoint per epoch);
- in the driver: :func:`fit_trials` (the Tune run ``<storage>/<name>``: resources, storage,
  checkpoints kept, failures retried; restored when it exists) and :func:`write_record`
  (an atomic JSON record); :func:`final_searcher` (the phase's final genotypes retrained as the
  search's trials);
- MLflow: :func:`parent_run_id`, :func:`start_phase_run` (a child run of the parent, tag
  ``paretune.role = phase``) and :func:`log_batches` (within MLflow's batch limits).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune

from paretune.platform.searcher import ParetoSearcher
from paretune.search_algos.shrinking.final import FinalGenotypes

GPU_IF_GIVEN = "gpu-if-given"
# MLflow's limits per log_batch request
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100


class Checkpointable(Protocol):
    """What a trial's state offers: saved to and loaded from a folder."""

    def save(self, folder: Any) -> Any: ...

    def load(self, folder: Any) -> Any: ...


# ---------------------------------------------------------------------- inside a trial
def trial_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` whose ``device: gpu-if-given`` is ``cuda`` when Ray gave the
    trial a GPU that torch sees, else ``cpu``."""
    out = dict(settings)
    if out.get("device") == GPU_IF_GIVEN:
        import torch

        out["device"] = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return out


def restore_from_tune(state: Checkpointable) -> bool:
    """Load Ray's checkpoint of this trial into ``state``; ``False`` when there is none."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        state.load(folder)
    return True


def report_checkpoint(metrics: Mapping[str, Any], state: Checkpointable) -> None:
    """``tune.report`` of ``metrics`` with ``state`` saved as the checkpoint."""
    with tempfile.TemporaryDirectory() as folder:
        state.save(folder)
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))


def train_reporting(
    trainer: Any,
    extra: Callable[[Any], Mapping[str, Any]],
    *,
    idle: Mapping[str, Any] | None = None,
) -> None:
    """Train ``trainer`` to its last epoch, reporting each epoch's metrics and ``extra(trainer)``
    with a checkpoint. A trainer already done (restored after its last epoch) reports its last
    epoch again (``idle`` without a history) and trains nothing."""

    def report(metrics: Mapping[str, Any], t: Any) -> None:
        report_checkpoint({**metrics, **extra(t)}, t)

    if trainer.done:
        report(dict(trainer.history[-1]) if trainer.history else dict(idle or {}), trainer)
        return
    trainer.train(on_epoch=report)


# ---------------------------------------------------------------------- in the driver
def fit_trials(
    trainable: Callable[..., Any],
    *,
    storage: str | os.PathLike,
    name: str,
    resources: Mapping[str, float],
    max_failures: int,
    verbose: int,
    parameters: Mapping[str, Any] | None = None,
    param_space: dict[str, Any] | None = None,
    tune_config: tune.TuneConfig | None = None,
    keep: int = 2,
) -> tune.ResultGrid:
    """Run the Tune run ``<storage>/<name>`` of ``trainable`` to its end and return its results.

    ``parameters`` go to the trainable through ``tune.with_parameters``; each trial gets
    ``resources``; Ray keeps ``keep`` checkpoints per trial and retries a failed trial
    ``max_failures`` times. A run already in ``storage`` (a resume) is restored and continued,
    its unfinished and errored trials included."""
    if parameters is not None:
        trainable = tune.with_parameters(trainable, **parameters)
    trainable = tune.with_resources(trainable, dict(resources))
    path = str(Path(storage) / name)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=verbose,
            ),
        )
    return tuner.fit()


def write_record(path: str | os.PathLike, record: Any, *, indent: int = 1) -> None:
    """Write ``record`` as JSON to ``path`` atomically (a reader sees the old or the new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=indent))
    tmp.replace(path)


def final_searcher(
    prepared: Any,
    config: Any,
    archs: Sequence[Sequence[int]] = (),
    meta: Sequence[Mapping[str, Any]] | None = None,
) -> ParetoSearcher:
    """The searcher that hands out a phase's final genotypes ``archs`` (with ``meta``) as the
    search's trials, ``search.num_samples`` at most; without ``archs`` the placeholder before the
    phase has run (a resume or a report loads its state into it)."""
    engine = FinalGenotypes(
        prepared.space, prepared.objectives, seed=config.seed, archs=archs, meta=meta
    )
    return ParetoSearcher(engine, max_trials=config.search.num_samples)


# ---------------------------------------------------------------------- MLflow
def parent_run_id(config: Any, state: Mapping[str, Any]) -> str | None:
    """The experiment's MLflow parent run, or ``None`` when MLflow is off or there is none."""
    if not config.mlflow.enabled:
        return None
    return state.get("parent_run_id") or None


def start_phase_run(
    client: Any, state: Mapping[str, Any], run_name: str, phase: str, **tags: str
) -> str:
    """A child run of the parent run ``state["parent_run_id"]`` for a phase's work (tags
    ``paretune.role = phase``, ``phase`` and ``tags``); its run id. The caller ends it."""
    run = client.create_run(
        state["mlflow_experiment_id"],
        run_name=run_name,
        tags={
            "mlflow.parentRunId": state["parent_run_id"],
            "paretune.role": "phase",
            "phase": phase,
            **tags,
        },
    )
    return run.info.run_id


def log_batches(
    client: Any,
    run_id: str,
    *,
    metrics: Sequence[Any] = (),
    params: Sequence[Any] = (),
    metrics_per_batch: int = METRICS_PER_BATCH,
) -> None:
    """Log ``metrics`` then ``params`` (MLflow entities) to ``run_id`` in batches that MLflow
    accepts."""
    for i in range(0, len(metrics), metrics_per_batch):
        client.log_batch(run_id, metrics=list(metrics[i : i + metrics_per_batch]))
    for i in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=list(params[i : i + PARAMS_PER_BATCH]))


__all__ = [
    "GPU_IF_GIVEN",
    "final_searcher",
    "fit_trials",
    "log_batches",
    "parent_run_id",
    "report_checkpoint",
    "restore_from_tune",
    "start_phase_run",
    "train_reporting",
    "trial_settings",
    "write_record",
]
