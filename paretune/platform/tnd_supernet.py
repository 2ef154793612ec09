"""TND-NAS as published, on Ray: ``search.algorithm: tnd`` with ``search.mode: supernet``.

The phase runs the stages of :mod:`paretune.objectives.tnd_stage` one after the other, each as
one Ray Tune trial (the trial's resources from ``resources``; GPU when given) with a fresh
supernet and fresh logits over the options the previous stage kept. A stage trial reports after
every epoch with a checkpoint (supernet weights, optimizer, policy, RNG, cost cache) that Ray
writes to ``<experiment>/phases/tnd_supernet/stage<s>/``; a stage interrupted (a driver killed,
a trial failed) continues from its last checkpoint on ``paretune resume`` (``Tuner.restore``).
A finished stage's result (options kept, probabilities, compute) goes to ``stages.json`` there
and is never trained again.

After the last stage the phase hands the launcher a searcher of the final genotypes (the most
probable architectures of the last stage's distribution, the argmax first; ``search.params.final``
of them, default ``search.num_samples``): they are retrained stand-alone by ``evaluator.kind:
train`` as ordinary trials, tracked in MLflow and reported like any search's trials.

MLflow: each stage's per-epoch metrics go to the parent run as ``tnd_stage<s>_<metric>``
(step = epoch) and the stage records as the artifact ``tnd_supernet/stages.json``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from paretune.objectives.tnd_stage import check_params, read_stage_json
from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.phase_checks import check_phase_config
from paretune.platform.prepare import Prepared
from paretune.platform.results import SearchFailed
from paretune.platform.searcher import ParetoSearcher
from paretune.search_algos.shrinking.final import FinalGenotypes

NAME = "tnd_supernet"
RECORD = "stages.json"
SPACE_OPS = {"nb201": 5, "darts": 8}
# Test hook: a stage trial raises after this epoch (once, when not restored): the resume test.
FAIL_AFTER_ENV = "PARETUNE_TND_FAIL_AFTER_EPOCH"


def _stage_trainable(cfg: dict[str, Any]) -> None:
    """One TND stage as a Ray Tune function trainable (continues from its checkpoint)."""
    from paretune.objectives.tnd_stage import TNDStage
    from paretune.objectives.train import TrainEvaluator

    cfg = cfg["tnd"]
    ev = TrainEvaluator(**cfg["evaluator"])
    stage = TNDStage(
        ev, cfg["stage"], cfg["edge_options"], cfg["params"], cfg["objectives"], cfg["seed"]
    )
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            stage.load(folder)
    fail_after = os.environ.get(FAIL_AFTER_ENV)
    while not stage.done:
        metrics = stage.train_epoch()
        with tempfile.TemporaryDirectory() as folder:
            stage.save(folder)
            tune.report(
                {k: v for k, v in metrics.items() if isinstance(v, int | float)},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )
        if fail_after and checkpoint is None and stage.epoch == int(fail_after) and not stage.done:
            raise RuntimeError(f"{FAIL_AFTER_ENV}={fail_after}: stage trial stopped on purpose")


class TNDSupernetPhase:
    """The phase object of :mod:`paretune.platform.phases`."""

    name = NAME

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.objectives, self.params = check_phase_config(
            config,
            mode="tnd's supernet mode",
            evaluator_reason="retrains its final genotypes stand-alone and needs "
            "evaluator.kind = 'train'",
            spaces=SPACE_OPS,
            networks="supernets",
            check_params=check_params,
            params_args=lambda: (SPACE_OPS[config.space.kind], config.search.num_samples),
        )
        self.num_stages = len(self.params["keep"]) - 1

    def placeholder_searcher(self, prepared: Prepared) -> ParetoSearcher:
        """The searcher before the phase has run (its state loads into it: reports, resume)."""
        engine = FinalGenotypes(prepared.space, prepared.objectives, seed=self.config.seed)
        return ParetoSearcher(engine, max_trials=self.config.search.num_samples)

    # ------------------------------------------------------------------ the phase
    def run(
        self,
        prepared: Prepared,
        searcher: Any,
        experiment_dir: Path,
        state: dict[str, Any],
        *,
        verbose: int = 1,
    ) -> tuple[Prepared, Any]:
        root = Path(experiment_dir).resolve() / "phases" / NAME
        root.mkdir(parents=True, exist_ok=True)
        stages = self.read_record(root)
        edge_options = stages[-1]["edge_options"] if stages else None
        for s in range(len(stages), self.num_stages):
            result = self._run_stage(prepared, root, s, edge_options, verbose)
            stages.append(result)
            self._write_record(root, stages)
            self._log_mlflow(state, result, root)
            edge_options = result["edge_options"]
        finals = stages[-1]["final"]
        engine = FinalGenotypes(
            prepared.space,
            prepared.objectives,
            seed=self.config.seed,
            archs=finals,
            meta=[{"tnd_stages": self.num_stages} for _ in finals],
        )
        return prepared, ParetoSearcher(engine, max_trials=self.config.search.num_samples)

    def _stage_config(self, prepared: Prepared, s: int, edge_options: Any) -> dict[str, Any]:
        return {
            # one torch thread per CPU of the trial (small tensors crawl when threads contend)
            "evaluator": {
                **prepared.evaluator_settings,
                "threads": max(1, int(self.config.resources.cpu)),
            },
            "stage": s,
            "edge_options": edge_options,
            "params": self.params,
            "objectives": self.objectives,
            "seed": self.config.seed,
        }

    def _run_stage(
        self, prepared: Prepared, root: Path, s: int, edge_options: Any, verbose: int
    ) -> dict[str, Any]:
        cfg = self.config
        name = f"stage{s}"
        resources = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
        trainable = tune.with_resources(_stage_trainable, resources)
        path = root / name
        if tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(
                str(path), trainable, resume_errored=True, resume_unfinished=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"tnd": self._stage_config(prepared, s, edge_options)},
                tune_config=tune.TuneConfig(num_samples=1),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(root),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
                    verbose=min(verbose, 1),
                ),
            )
        grid = tuner.fit()
        result = grid[0]
        if result.checkpoint is None:
            raise SearchFailed(
                f"TND stage {s} failed before its first checkpoint: {_why(result.error)}"
            )
        with result.checkpoint.as_directory() as folder:
            meta = read_stage_json(folder)
        if meta.get("result") is None:
            raise SearchFailed(
                f"TND stage {s} stopped at epoch {meta.get('epoch')} ({_why(result.error)}); "
                f"`paretune resume` continues it from {path}"
            )
        out = dict(meta["result"])
        out["history"] = meta["history"]
        return out

    # ------------------------------------------------------------------ records
    @staticmethod
    def read_record(root: Path) -> list[dict[str, Any]]:
        path = Path(root) / RECORD
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text())["stages"])
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"{path}: unreadable TND stage record ({exc})") from None

    @staticmethod
    def _write_record(root: Path, stages: list[dict[str, Any]]) -> None:
        tmp = root / f".{RECORD}.tmp"
        tmp.write_text(json.dumps({"stages": stages}, indent=1))
        tmp.replace(root / RECORD)

    def _log_mlflow(self, state: dict[str, Any], result: dict[str, Any], root: Path) -> None:
        run_id = state.get("parent_run_id")
        if not (self.config.mlflow.enabled and run_id):
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.config.mlflow.tracking_uri)
        s = result["stage"]
        metrics = [
            Metric(f"tnd_stage{s}_{k}", float(v), 0, int(h["epoch"]))
            for h in result["history"]
            for k, v in h.items()
            if k not in ("stage", "epoch") and isinstance(v, int | float) and math.isfinite(v)
        ]
        for i in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[i : i + 500])
        client.log_artifact(run_id, str(root / RECORD), artifact_path=NAME)


def _why(error: Any) -> str:
    """The last line of a trial's error (its message, not Ray's traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "no error recorded"


def make_phase(config: ExperimentConfig) -> TNDSupernetPhase:
    """The phase of ``search.algorithm: tnd`` with ``search.mode: supernet``."""
    return TNDSupernetPhase(config)


def compute_of(stages: list[dict[str, Any]]) -> dict[str, int]:
    """Training images (``train_samples``) and scored images (``eval_samples``) of the stages."""
    return {
        "train_samples": sum(int(s["train_samples"]) for s in stages),
        "eval_samples": sum(int(s["eval_samples"]) for s in stages),
    }


__all__ = ["TNDSupernetPhase", "compute_of", "make_phase"]
