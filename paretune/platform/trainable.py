"""The function trainable every trial runs: decode the architecture, evaluate it, report.

Evaluators are built once per worker process and cached (``reuse_actors=True`` keeps the
process), so the NB201 table or a dataset is loaded once, not once per trial. On a resume, a
trial that Ray runs again although the journal shows it finished before the driver was killed
gets its recorded result replayed (``replay``), not a second evaluation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from paretune.objectives import make_evaluator
from paretune.objectives.base import ObjectiveSet
from paretune.objectives.predictor import attach_predictor
from paretune.platform.experiment import TRIALS_DIR
from paretune.platform.guard import MemoryGuard
from paretune.platform.tracking import RAY_RESULT_KEYS
from paretune.spaces.base import Arch, SearchSpace

_EVALUATORS: dict[str, Any] = {}


class TrialFailure(RuntimeError):
    """An evaluation produced unusable values (NaN, infinite, missing); the trial fails."""


def get_evaluator(kind: str, settings: Mapping[str, Any]) -> Any:
    """The evaluator for these settings, built once per process."""
    key = json.dumps([kind, dict(settings)], sort_keys=True, default=str)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = make_evaluator(kind, **settings)
    return _EVALUATORS[key]


def arch_from_config(space: SearchSpace, config: Mapping[str, Any]) -> Arch:
    """The architecture of a trial: ``config["arch"]`` or one key per decision (Optuna, grid)."""
    if "arch" in config:
        return space.decode(config["arch"])
    return space.from_params({d.name: config[d.name] for d in space.decisions if d.name in config})


def check_finite(values: Mapping[str, Any], objectives: ObjectiveSet) -> None:
    """Raise ``TrialFailure`` naming every objective that is missing, NaN or infinite."""
    bad = {}
    for name in objectives.names:
        v = values.get(name)
        if v is None:
            bad[name] = "missing"
            continue
        try:
            if not math.isfinite(float(v)):
                bad[name] = v
        except (TypeError, ValueError):
            bad[name] = v
    if bad:
        raise TrialFailure(f"objective values not finite: {bad}")


def _placement() -> dict[str, Any]:
    """Where the trial runs: Ray node id and the GPU ids Ray gave it."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids())}


def run_trial(
    config: dict[str, Any],
    *,
    space: SearchSpace | Mapping[str, Any],
    objectives: ObjectiveSet,
    evaluator_kind: str,
    evaluator_settings: Mapping[str, Any],
    cpus_per_trial: float = 1.0,
    memory_limit_mb: float | None = None,
    experiment_dir: str | None = None,
    replay: Mapping[str, Mapping[str, Any]] | None = None,
    predictor_settings: Mapping[str, Any] | None = None,
    evaluator_wrapper: Callable[[Any], Any] | None = None,
) -> None:
    """Ray Tune function trainable (bind the keyword arguments with ``tune.with_parameters``).

    ``evaluator_wrapper`` gets the trial's evaluator and returns the one that evaluates (tests
    wrap it to inject faults: ``paretune.run(config, evaluator_wrapper=...)``).
    """
    context = tune.get_context()
    record = (replay or {}).get(context.get_trial_id())
    if record is not None:  # finished before the driver died (the journal): not run again
        if record["status"] != "ok":
            raise TrialFailure(f"failed before the driver restarted: {record.get('error')}")
        tune.report(
            {k: v for k, v in record["result"].items() if k not in RAY_RESULT_KEYS or k == "final"}
        )
        return

    if isinstance(space, Mapping):  # the space's spec: rebuilt here, never unpickled
        from paretune.objectives.python_evaluator import space_from_spec

        space = space_from_spec(space)
    arch = arch_from_config(space, config)
    arch_text = space.encode(arch)
    settings = dict(evaluator_settings)
    if evaluator_kind in ("train", "supernet") and settings.get("threads") is None:
        settings["threads"] = max(1, int(cpus_per_trial))
    evaluator = get_evaluator(evaluator_kind, settings)
    if predictor_settings:
        evaluator = attach_predictor(evaluator, predictor_settings, space=space)
    if evaluator_wrapper is not None:
        evaluator = evaluator_wrapper(evaluator)
    proposal = config.get("proposal") or {}
    # Weights and other files of the trial live in the experiment's storage directory (shared
    # by every node on a cluster), not in Ray's node-local staging folder, so that a child on
    # another node can inherit them and the front's models can be logged at the end.
    if experiment_dir:
        trial_dir = str(Path(experiment_dir) / TRIALS_DIR / context.get_trial_id())
        Path(trial_dir).mkdir(parents=True, exist_ok=True)
    else:
        trial_dir = context.get_trial_dir()
    where = _placement()

    def report_intermediate(metrics: dict[str, Any]) -> None:
        tune.report({**metrics, **where})

    started_at = time.time()
    with MemoryGuard(memory_limit_mb) as guard:
        evaluation = evaluator.evaluate(
            arch, report_intermediate, meta=proposal.get("meta", {}), trial_dir=trial_dir
        )
    check_finite(evaluation.values, objectives)
    final = evaluation.as_report()
    final.update(where)
    # When it was measured: a result replayed after a restart keeps these (it was not re-run).
    final["started_at"] = started_at
    final["evaluated_at"] = time.time()
    final["arch"] = arch_text
    if memory_limit_mb is not None:
        final["peak_rss_mb"] = guard.peak_mb
    final["final"] = True
    tune.report(final)
