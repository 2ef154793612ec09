"""The function trainable every trial runs: decode the architecture, evaluate it, report.

Evaluators are built once per worker process and cached (``reuse_actors=True`` keeps the
process), so the NB201 table or a dataset is loaded once, not once per trial.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ray import tune

from paretune.objectives.base import ObjectiveSet
from paretune.spaces.base import Arch, SearchSpace

_EVALUATORS: dict[str, Any] = {}


class TrialFailure(RuntimeError):
    """An evaluation produced unusable values (NaN, infinite, missing); the trial fails."""


def get_evaluator(kind: str, settings: Mapping[str, Any]) -> Any:
    """The evaluator for these settings, built once per process."""
    from paretune.objectives import make_evaluator

    key = json.dumps([kind, dict(settings)], sort_keys=True, default=str)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = make_evaluator(kind, **settings)
    return _EVALUATORS[key]


def arch_from_config(space: SearchSpace, config: Mapping[str, Any]) -> Arch:
    """The architecture of a trial: ``config["arch"]`` or one key per decision (Optuna, grid)."""
    if "arch" in config:
        return space.decode(config["arch"])
    return space.from_params({d.name: config[d.name] for d in space.decisions if d.name in config})


def _check_finite(values: Mapping[str, Any], objectives: ObjectiveSet) -> None:
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


def run_trial(
    config: dict[str, Any],
    *,
    space: SearchSpace,
    objectives: ObjectiveSet,
    evaluator_kind: str,
    evaluator_settings: Mapping[str, Any],
    cpus_per_trial: float = 1.0,
) -> None:
    """Ray Tune function trainable (bind the keyword arguments with ``tune.with_parameters``)."""
    arch = arch_from_config(space, config)
    settings = dict(evaluator_settings)
    if evaluator_kind == "train" and settings.get("threads") is None:
        settings["threads"] = max(1, int(cpus_per_trial))
    evaluator = get_evaluator(evaluator_kind, settings)
    proposal = config.get("proposal") or {}
    context = {"meta": proposal.get("meta", {}), "trial_dir": tune.get_context().get_trial_dir()}

    def report_intermediate(metrics: dict[str, Any]) -> None:
        tune.report(dict(metrics))

    evaluation = evaluator.evaluate(arch, report_intermediate, **context)
    _check_finite(evaluation.values, objectives)
    final = evaluation.as_report()
    final["arch"] = space.encode(arch)
    final["final"] = True
    tune.report(final)
