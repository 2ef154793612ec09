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
from pathlib import Path
from typing import Any

from ray import tune

from paretune.objectives.tnd_stage import check_params, read_stage_json
from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.phase_checks import check_phase_config
from paretune.platform.phase_trials import (
    final_searcher,
    fit_trials,
    log_batches,
    parent_run_id,
    report_checkpoint,
    restore_from_tune,
    write_record,
)
from paretune.platform.prepare import Prepared
from paretune.platform.results import SearchFailed
from paretune.platform.searcher import ParetoSearcher

NAME = "tnd_supernet"
RECORD = "stages.json"
SPACE_OPS = {"nb201": 5, "darts": 8}


def stage_trainable(cfg: dict[str, Any]) -> None:
    """One TND stage as a Ray Tune function trainable (continues from its checkpoint)."""
    from paretune.objectives.tnd_stage import TNDStage
    from paretune.objectives.train import TrainEvaluator

    cfg = cfg["tnd"]
    ev = TrainEvaluator(**cfg["evaluator"])
    stage = TNDStage(
        ev, cfg["stage"], cfg["edge_options"], cfg["params"], cfg["objectives"], cfg["seed"]
    )
    restore_from_tune(stage)
    while not stage.done:
        metrics = stage.train_epoch()
        report_checkpoint({k: v for k, v in metrics.items() if isinstance(v, int | float)}, stage)


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
        return final_searcher(prepared, self.config)

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
            write_record(root / RECORD, {"stages": stages})
            self._log_mlflow(state, result, root)
            edge_options = result["edge_options"]
        finals = stages[-1]["final"]
        meta = [{"tnd_stages": self.num_stages} for _ in finals]
        return prepared, final_searcher(prepared, self.config, finals, meta)

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
        path = root / name
        result = fit_trials(
            stage_trainable,
            storage=root,
            name=name,
            resources={"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
            max_failures=cfg.failure.max_failures,
            verbose=min(verbose, 1),
            param_space={"tnd": self._stage_config(prepared, s, edge_options)},
            tune_config=tune.TuneConfig(num_samples=1),
            keep=1,
        )[0]
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

    def _log_mlflow(self, state: dict[str, Any], result: dict[str, Any], root: Path) -> None:
        run_id = parent_run_id(self.config, state)
        if run_id is None:
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
        log_batches(client, run_id, metrics=metrics)
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


__all__ = ["TNDSupernetPhase", "compute_of", "make_phase", "stage_trainable"]
