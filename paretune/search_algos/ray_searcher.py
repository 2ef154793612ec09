"""The one Ray Tune adapter: any paretune engine as a ``ray.tune.search.Searcher``.

``ParetoSearcher(engine)`` maps Ray trial ids to engine proposals, turns the engine's
``ObjectiveSet`` into Ray's ``metric=[...]``/``mode=[...]``, passes failed trials and NaN or
infinite results to the engine as failures, and saves/restores through the engine's
``state_dict`` (never by pickling the engine's internals). A trial's config is::

    {"arch": "<architecture string>", "proposal": {"id": 7, "meta": {...}}}

``make_optuna_searcher`` builds Ray's ``OptunaSearch`` with NSGA-II or TPE over the same space;
its trial configs hold one key per decision instead of ``arch``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, Proposal
from paretune.spaces.base import SearchSpace

STATE_FORMAT = "paretune-searcher/1"


class ParetoSearcher(Searcher):
    """Ray Tune searcher that drives a paretune ask/tell engine.

    Args:
        engine: the engine; its objectives define the metrics and modes Ray sees.
    """

    def __init__(self, engine: Engine) -> None:
        objectives = engine.objectives
        super().__init__(metric=objectives.names, mode=objectives.modes)
        self.engine = engine
        self._live: dict[str, Proposal] = {}
        # proposal id -> trained weights of that trial (results that carry ``weights_path``)
        self._weights: dict[int, str] = {}

    # ------------------------------------------------------------------ Ray callbacks
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """The objectives come from the engine; a conflicting ``TuneConfig.metric`` is refused."""
        if metric is not None and metric not in self.engine.objectives.names:
            return False
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        proposal = self.engine.ask()
        if proposal is None:
            # Nothing in flight and nothing to propose: the engine can never propose again.
            if not self.engine.pending:
                return Searcher.FINISHED
            return None
        self._live[trial_id] = proposal
        meta = dict(proposal.meta)
        parent = meta.get("parent")
        if parent is not None and int(parent) in self._weights:
            # Weight inheritance: the child starts from its parent's trained weights.
            meta["parent_checkpoint"] = self._weights[int(parent)]
        return {
            "arch": self.engine.space.encode(proposal.arch),
            "proposal": {"id": proposal.id, "meta": meta},
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate results are not used by the engines (the final one is)."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        proposal = self._live.pop(trial_id, None)
        if proposal is None:
            return
        if error or result is None:
            reason = "trial errored" if error else "trial ended without a result"
            self.engine.tell_failure(proposal, reason)
            return
        values = {name: result.get(name) for name in self.engine.objectives.names}
        if not self.engine.objectives.is_valid(values):
            self.engine.tell_failure(
                proposal, f"missing or non-finite objective values: {_show(values)}"
            )
            return
        if isinstance(result.get("weights_path"), str):
            self._weights[proposal.id] = result["weights_path"]
        self.engine.tell(proposal, values)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "engine": self.engine.state_dict(),
            "live": {tid: p.to_dict() for tid, p in self._live.items()},
            "weights": {str(k): v for k, v in self._weights.items()},
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a paretune searcher state (format {state.get('format')!r})")
        self.engine.load_state_dict(state["engine"])
        self._live = {tid: Proposal.from_dict(p) for tid, p in state["live"].items()}
        self._weights = {int(k): v for k, v in state.get("weights", {}).items()}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher with the tuner: rebuild the engine from its constructor
        # arguments and load its state_dict, rather than pickling its internals.
        return {
            "engine_cls": type(self.engine),
            "init_args": self.engine.init_args,
            "state": json.dumps(self.get_state()),
            "metric": self._metric,
            "mode": self._mode,
        }

    def __setstate__(self, data: dict[str, Any]) -> None:
        args, kwargs = data["init_args"]
        engine = data["engine_cls"](*args, **kwargs)
        Searcher.__init__(self, metric=data["metric"], mode=data["mode"])
        self.engine = engine
        self._live = {}
        self._weights = {}
        self.set_state(json.loads(data["state"]))

    @property
    def live_trials(self) -> dict[str, Proposal]:
        return dict(self._live)


def _show(values: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return repr(v)

    return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in values.items()) + "}"


def optuna_constraints(trial: Any) -> list[float]:
    """Optuna ``constraints_func``: the limit violations a trial was told (<= 0 is feasible)."""
    return list(trial.user_attrs.get("constraints", []))


def make_optuna_searcher(
    algorithm: str,
    space: SearchSpace,
    objectives: ObjectiveSet,
    seed: int = 0,
    **params: Any,
) -> Searcher:
    """Ray's ``OptunaSearch`` with Optuna's NSGA-II (``nsga2``) or TPE (``tpe``) sampler.

    ``params`` go to the sampler (e.g. ``population_size`` for NSGA-II, ``n_startup_trials``
    for TPE). Objective limits become Optuna constraints (the samplers' constrained
    domination), with each trial's violations attached before it is told.
    """
    import optuna

    limited = [o for o in objectives if o.limit is not None]
    if limited:
        params.setdefault("constraints_func", optuna_constraints)
    if algorithm == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, **params)
    elif algorithm == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, **params)
    else:
        raise ValueError(f"unknown Optuna algorithm {algorithm!r} (allowed: nsga2, tpe)")
    distributions = {
        d.name: optuna.distributions.CategoricalDistribution([d.options[i] for i in allowed])
        for d, allowed in zip(space.decisions, space.allowed, strict=True)
    }

    if not limited:
        return OptunaSearch(
            space=distributions, metric=objectives.names, mode=objectives.modes, sampler=sampler
        )
    return ConstrainedOptunaSearch(
        objectives,
        space=distributions,
        metric=objectives.names,
        mode=objectives.modes,
        sampler=sampler,
    )


class ConstrainedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that attaches each trial's limit violations before telling Optuna."""

    def __init__(self, objectives: ObjectiveSet, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objectives = objectives

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result and self.objectives.is_valid(result):
            limited = [o for o in self.objectives if o.limit is not None]
            ot_trial.set_user_attr(
                "constraints", [o.violation(float(result[o.name])) for o in limited]
            )
        super().on_trial_complete(trial_id, result, error)
