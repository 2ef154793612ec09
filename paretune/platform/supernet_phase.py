"""The ``supernet_training`` phase: train the supernet of ``evaluator.kind: supernet`` as a Ray
Tune trial, then hand the one-shot trials the checkpoint.

The training trial (:func:`train_supernet_trial`) runs :class:`SupernetTrainer` on the GPU when
it is given one (``evaluator.train_gpu``, default 1 when ``resources.gpu > 0``), reports every
epoch with a Ray checkpoint (the trainer's checkpoint folder), which Ray persists under
``<experiment>/phases/supernet_training/`` (the experiment's storage, readable from every node),
and resumes from the newest one when Ray restarts it (a failure) or restores it (``paretune
resume``). When it ends, ``phases/supernet_training/handover.json`` names the final checkpoint;
the search's evaluator settings then carry ``checkpoint`` (and the seed and the restricted space
the supernet was built for), so every one-shot trial, on any node, reads the same weights.

MLflow: the training shows as a child run ``supernet_training`` of the parent run (tag
``paretune.role = phase``) with its per-epoch metrics, its settings as params and the
checkpoint's sidecar as an artifact. Run again (resume) after the handover, the phase returns the
same settings at once and trains nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from paretune.objectives import make_evaluator
from paretune.objectives.oneshot import TRAINING_SETTINGS
from paretune.objectives.supernet_train import CHECKPOINT_JSON, SupernetTrainer, space_spec_of
from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.phase_trials import (
    fit_trials,
    log_batches,
    parent_run_id,
    restore_from_tune,
    start_phase_run,
    train_reporting,
    trial_settings,
    write_record,
)
from paretune.platform.prepare import Prepared

PHASE_NAME = "supernet_training"
PHASES_DIR = "phases"
HANDOVER_FILE = "handover.json"


def train_supernet_trial(
    config: dict[str, Any], *, trainer_settings: dict[str, Any], resume_from: str | None = None
) -> None:
    """Ray Tune function trainable: train the supernet, one report and checkpoint per epoch.

    It continues from Ray's checkpoint when Ray restarts or restores it, else from the
    checkpoint folder ``resume_from`` (a training that ended before its last epoch)."""
    import torch

    trainer = SupernetTrainer(**trial_settings(trainer_settings))
    resumed_from = None
    if restore_from_tune(trainer):
        resumed_from = trainer.epoch
    elif resume_from is not None:
        trainer.load(resume_from)
        resumed_from = trainer.epoch
    where = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "device": str(trainer.device),
        "resumed_from_epoch": -1 if resumed_from is None else resumed_from,
    }
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)

    def extra(t: SupernetTrainer) -> dict[str, Any]:
        out: dict[str, Any] = {**where, "supernet_done": t.done, "steps": t.steps}
        if t.device.type == "cuda":
            out["cuda_max_memory_mb"] = torch.cuda.max_memory_allocated(t.device) / 2**20
        return out

    # restored after its last epoch: report it again, train nothing
    train_reporting(trainer, extra, idle={"epoch": trainer.epoch})


class SupernetTrainingPhase:
    """Train the supernet once (resumably) and point the evaluator at its checkpoint."""

    name = PHASE_NAME

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config

    # ------------------------------------------------------------------ settings
    def trainer_settings(self, prepared: Prepared) -> dict[str, Any]:
        """The :class:`SupernetTrainer` settings of the config (plain data)."""
        ev = prepared.evaluator_settings
        out: dict[str, Any] = {
            "space": space_spec_of(prepared.space),
            "dataset": ev.get("dataset", "digits"),
            "data_path": ev.get("data_path"),
            "channels": ev.get("channels", 8),
            "cells_per_stage": ev.get("cells_per_stage", 1),
            "build": ev.get("build"),
            "seed": self.config.seed,
            "threads": max(1, int(self.resources()["cpu"])),
        }
        for key in TRAINING_SETTINGS:
            if key in ev and key not in ("train_cpu", "train_gpu"):
                out[key] = ev[key]
        gpu = self.resources()["gpu"]
        out["device"] = "gpu-if-given" if gpu > 0 else "cpu"
        return out

    def resources(self) -> dict[str, float]:
        ev = self.config.evaluator
        cpu = getattr(ev, "train_cpu", None) or self.config.resources.cpu
        gpu = getattr(ev, "train_gpu", None)
        if gpu is None:
            gpu = 1.0 if self.config.resources.gpu > 0 else 0.0
        return {"cpu": float(cpu), "gpu": float(gpu)}

    def handover(self, prepared: Prepared, checkpoint: str) -> Prepared:
        """``prepared`` with the evaluator settings pointing at ``checkpoint``."""
        settings = dict(prepared.evaluator_settings)
        settings["checkpoint"] = str(checkpoint)
        settings["seed"] = self.config.seed
        settings["space"] = space_spec_of(prepared.space)
        try:
            evaluator = make_evaluator("supernet", **settings)
        except ValueError as exc:
            raise ConfigError(f"evaluator: {exc}") from None
        return dataclasses.replace(prepared, evaluator_settings=settings, evaluator=evaluator)

    # ------------------------------------------------------------------ run
    def run(
        self,
        prepared: Prepared,
        searcher: Any,
        experiment_dir: Path,
        state: dict[str, Any],
        *,
        verbose: int = 1,
    ) -> tuple[Prepared, Any]:
        given = prepared.evaluator_settings.get("checkpoint")
        if given:  # a supernet trained before: nothing to train
            if not (Path(given) / CHECKPOINT_JSON).is_file():
                raise ConfigError(
                    f"evaluator.checkpoint = {given!r}: no supernet checkpoint there "
                    f"({CHECKPOINT_JSON} missing)"
                )
            return self.handover(prepared, given), searcher
        phase_dir = Path(experiment_dir) / PHASES_DIR / self.name
        handover_path = phase_dir / HANDOVER_FILE
        if handover_path.is_file():
            record = json.loads(handover_path.read_text())
            return self.handover(prepared, record["checkpoint"]), searcher
        result = self._fit(prepared, phase_dir.parent, verbose, self.name)
        # A training trial that ended before its last epoch (stopped, or restored after it
        # ended early): a new trial continues from its checkpoint.
        for k in range(1, 4):
            if result.error is not None or result.checkpoint is None:
                break
            if (result.metrics or {}).get("supernet_done", True):
                break
            result = self._fit(
                prepared,
                phase_dir.parent,
                verbose,
                f"{self.name}-continued-{k}",
                resume_from=result.checkpoint.path,
            )
        if result.error is not None or result.checkpoint is None:
            raise ConfigError(
                f"the supernet training trial failed ({type(result.error).__name__ if result.error else 'no checkpoint'}"
                f": {str(result.error).strip().splitlines()[-1] if result.error else ''}); "
                f"see {phase_dir}; `paretune resume {experiment_dir}` continues from its checkpoint"
            )
        checkpoint = result.checkpoint.path
        metrics = dict(result.metrics or {})
        record = {
            "checkpoint": checkpoint,
            "epochs": metrics.get("epoch"),
            "node_id": metrics.get("node_id"),
            "device": metrics.get("device"),
            "resources": self.resources(),
            "finished_at": time.time(),
        }
        record["mlflow_run_id"] = self._log_mlflow(state, checkpoint, result)
        write_record(handover_path, record, indent=2)
        return self.handover(prepared, checkpoint), searcher

    def _fit(
        self,
        prepared: Prepared,
        storage: Path,
        verbose: int,
        name: str,
        resume_from: str | None = None,
    ) -> Any:
        grid = fit_trials(
            train_supernet_trial,
            storage=storage,
            name=name,
            resources=self.resources(),
            max_failures=self.config.failure.max_failures,
            verbose=verbose,
            parameters={
                "trainer_settings": self.trainer_settings(prepared),
                "resume_from": resume_from,
            },
            tune_config=tune.TuneConfig(num_samples=1),
        )
        return grid[0]

    def _log_mlflow(self, state: dict[str, Any], checkpoint: str, result: Any) -> str | None:
        """A child run of the parent with the training's metrics; its id (None without MLflow)."""
        if parent_run_id(self.config, state) is None:
            return None
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.config.mlflow.tracking_uri)
        run_id = start_phase_run(client, state, self.name, self.name)
        try:
            sidecar = json.loads((Path(checkpoint) / CHECKPOINT_JSON).read_text())
            now = int(time.time() * 1000)
            metrics = [
                Metric(f"supernet_{k}", float(v), now, int(h["epoch"]))
                for h in sidecar.get("history", [])
                for k, v in h.items()
                if k != "epoch" and isinstance(v, int | float)
            ]
            params = [
                Param(k, json.dumps(v)[:6000]) for k, v in sidecar.get("settings", {}).items()
            ]
            params.append(Param("checkpoint", checkpoint))
            log_batches(client, run_id, metrics=metrics, params=params)
            client.log_dict(run_id, sidecar, f"supernet/{CHECKPOINT_JSON}")
            client.set_terminated(run_id, status="FINISHED")
        except Exception:  # noqa: BLE001 - MLflow is a view; the handover matters
            client.set_terminated(run_id, status="FAILED")
        return run_id


def make_phase(config: ExperimentConfig) -> SupernetTrainingPhase:
    """The phase object (see :mod:`paretune.platform.phases`)."""
    return SupernetTrainingPhase(config)


__all__ = ["HANDOVER_FILE", "PHASE_NAME", "SupernetTrainingPhase", "make_phase"]
