"""The Ray Tune adapter: any paretune engine as a ``ray.tune.search.Searcher``.

``ParetoSearcher(engine)`` maps Ray trial ids to engine proposals, turns the engine's
``ObjectiveSet`` into Ray's ``metric=[...]``/``mode=[...]``, passes failed trials and NaN or
infinite results to the engine as failures, and saves/restores through the engine's
``state_dict`` (never by pickling the engine's internals). A trial's config is::

    {"arch": "<architecture string>", "proposal": {"id": 7, "meta": {...}}}

``make_optuna_searcher`` builds Ray's ``OptunaSearch`` with NSGA-II, TPE or a Gaussian-process
sampler (Bayesian optimisation) over the same space;
its trial configs hold one key per decision instead of ``arch``.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, Proposal
from paretune.spaces.base import SearchSpace

STATE_FORMAT = "paretune-searcher/1"
EVENTS_FILE = "paretune-searcher-events.jsonl"

logger = logging.getLogger(__name__)


class ParetoSearcher(Searcher):
    """Ray Tune searcher that drives a paretune ask/tell engine.

    Args:
        engine: the engine; its objectives define the metrics and modes Ray sees.
        max_trials: hand out at most this many distinct proposals, then tell Ray the search is
            finished (the launcher sets ``search.num_samples``; after a resume it also counts
            trials Ray's snapshot missed).
        events_path: an append-only JSON-lines log of every ask and tell (see
            :meth:`restore_from_dir`); ``None`` keeps none.

    Ray saves the searcher with the experiment every few seconds; a driver killed in between
    would forget the proposals made and results told since. The event log closes that window:
    on restore, the events after the snapshot are replayed into the engine (asks are checked to
    give the same proposal id and architecture, the engine being seeded and deterministic), so
    the engine's state is the one at the kill. Proposals handed out after the snapshot whose
    trials Ray does not know and that did not finish are handed out again under new trial ids;
    those that finished are kept (their results are in the journal) and count toward
    ``max_trials``.
    """

    def __init__(
        self,
        engine: Engine,
        max_trials: int | None = None,
        events_path: str | os.PathLike | None = None,
    ) -> None:
        objectives = engine.objectives
        super().__init__(metric=objectives.names, mode=objectives.modes)
        self.engine = engine
        self.max_trials = max_trials
        self.events_path = None if events_path is None else str(events_path)
        self._reset_bookkeeping()

    def _reset_bookkeeping(self) -> None:
        self._live: dict[str, Proposal] = {}
        # proposal id -> trained weights of that trial (results that carry ``weights_path``)
        self._weights: dict[int, str] = {}
        # proposal id -> Ray trial id, so that a child's run names its parent trial
        self._trial_of: dict[int, str] = {}
        self._handed_out = 0  # distinct proposals given to Ray
        self._requeue: list[Proposal] = []  # proposals to hand out again (lost with a driver)
        self._events = 0  # events in the log, as of this state

    # ------------------------------------------------------------------ Ray callbacks
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """The objectives come from the engine; a conflicting ``TuneConfig.metric`` is refused."""
        if metric is not None and metric not in self.engine.objectives.names:
            return False
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._requeue:
            proposal = self._requeue.pop(0)
        else:
            if self.max_trials is not None and self._handed_out >= self.max_trials:
                return Searcher.FINISHED
            proposal = self.engine.ask()
            if proposal is None:
                # Nothing in flight and nothing to propose: the engine can never propose again.
                if not self.engine.pending:
                    return Searcher.FINISHED
                return None
            self._handed_out += 1
        self._bind(trial_id, proposal)
        self._log({"e": "ask", "trial": trial_id, "id": proposal.id, "arch": list(proposal.arch)})
        meta = dict(proposal.meta)
        parent = meta.get("parent")
        if parent is not None and int(parent) in self._trial_of:
            meta["parent_trial"] = self._trial_of[int(parent)]
        if parent is not None and int(parent) in self._weights:
            # Weight inheritance: the child starts from its parent's trained weights.
            meta["parent_checkpoint"] = self._weights[int(parent)]
        return {
            "arch": self.engine.space.encode(proposal.arch),
            "proposal": {"id": proposal.id, "meta": meta},
        }

    def _bind(self, trial_id: str, proposal: Proposal) -> None:
        self._live[trial_id] = proposal
        self._trial_of[proposal.id] = trial_id

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate results are not used by the engines (the final one is)."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._live:
            return
        if error or result is None:
            reason = "trial errored" if error else "trial ended without a result"
            self._complete(trial_id, None, reason)
            return
        values = {name: result.get(name) for name in self.engine.objectives.names}
        if not self.engine.objectives.is_valid(values):
            self._complete(
                trial_id, None, f"missing or non-finite objective values: {_show(values)}"
            )
            return
        weights = result.get("weights_path")
        self._complete(trial_id, values, None, weights if isinstance(weights, str) else None)

    def _complete(
        self,
        trial_id: str,
        values: Mapping[str, Any] | None,
        error: str | None,
        weights_path: str | None = None,
        *,
        log: bool = True,
    ) -> None:
        proposal = self._live.pop(trial_id)
        if log:
            self._log(
                {
                    "e": "tell",
                    "trial": trial_id,
                    "id": proposal.id,
                    "values": values,
                    "error": error,
                    "weights": weights_path,
                }
            )
        if values is None:
            self.engine.tell_failure(proposal, error or "failed")
            return
        if weights_path is not None:
            self._weights[proposal.id] = weights_path
        self.engine.tell(proposal, dict(values))

    # ------------------------------------------------------------------ event log
    def _log(self, event: dict[str, Any]) -> None:
        if self.events_path is None:
            return
        with open(self.events_path, "a") as f:
            f.write(json.dumps(event) + "\n")
        self._events += 1

    def _read_events(self) -> list[dict[str, Any]]:
        if self.events_path is None or not os.path.isfile(self.events_path):
            return []
        events = []
        with open(self.events_path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:  # e.g. a torn last line (killed mid-write)
                    logger.warning(
                        "%s line %d: cannot be read (%s); events from there on are not replayed",
                        self.events_path,
                        number,
                        exc.msg,
                    )
                    break
                events.append(event)
        return events

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Ray's restore, then the events logged after that snapshot (see the class doc)."""
        super().restore_from_dir(checkpoint_dir)
        known = set(self._live)  # trials in Ray's snapshot
        events = self._read_events()
        snapshot = self._events
        self._events = snapshot + self._replay(events[snapshot:])
        if self._events < len(events):  # diverged: keep the log consistent with this state
            with open(self.events_path, "w") as f:  # type: ignore[arg-type]
                f.writelines(json.dumps(e) + "\n" for e in events[: self._events])
        # Handed out after the snapshot, unknown to Ray and unfinished: hand out again.
        for trial_id in [t for t in self._live if t not in known]:
            self._requeue.append(self._live.pop(trial_id))
        self._requeue.sort(key=lambda p: p.id)

    def _take_handed_out(self, proposal_id: int) -> Proposal | None:
        """A proposal handed out before (queued again, or bound to a lost trial), unbound."""
        for p in self._requeue:
            if p.id == proposal_id:
                self._requeue.remove(p)
                return p
        for trial_id, p in self._live.items():
            if p.id == proposal_id:
                return self._live.pop(trial_id)
        return None

    def _replay(self, events: list[dict[str, Any]]) -> int:
        """Apply logged events to the engine; returns how many were applied."""
        for n, event in enumerate(events):
            if event["e"] == "ask":
                proposal = self._take_handed_out(event["id"])
                if proposal is None:
                    proposal = self.engine.ask()
                    if proposal is None:
                        logger.warning("searcher event log: the engine stops at event %d", n)
                        return n
                    self._handed_out += 1
                    if proposal.id != event["id"] or list(proposal.arch) != event["arch"]:
                        logger.warning(
                            "searcher event log diverges from the engine at event %d "
                            "(proposal %s, logged %s); continuing from there",
                            n,
                            proposal.id,
                            event["id"],
                        )
                        self._requeue.append(proposal)
                        return n
                self._bind(event["trial"], proposal)
            elif event["trial"] in self._live:
                self._complete(
                    event["trial"], event["values"], event["error"], event["weights"], log=False
                )
        return len(events)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "engine": self.engine.state_dict(),
            "live": {tid: p.to_dict() for tid, p in self._live.items()},
            "weights": {str(k): v for k, v in self._weights.items()},
            "trials": {str(k): v for k, v in self._trial_of.items()},
            "handed_out": self._handed_out,
            "requeue": [p.to_dict() for p in self._requeue],
            "events": self._events,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a paretune searcher state (format {state.get('format')!r})")
        self.engine.load_state_dict(state["engine"])
        self._live = {tid: Proposal.from_dict(p) for tid, p in state["live"].items()}
        self._weights = {int(k): v for k, v in state.get("weights", {}).items()}
        self._trial_of = {int(k): v for k, v in state.get("trials", {}).items()}
        self._handed_out = int(state.get("handed_out", len(self._trial_of)))
        self._requeue = [Proposal.from_dict(p) for p in state.get("requeue", [])]
        self._events = int(state.get("events", 0))

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
            "max_trials": self.max_trials,
            "events_path": self.events_path,
        }

    def __setstate__(self, data: dict[str, Any]) -> None:
        args, kwargs = data["init_args"]
        engine = data["engine_cls"](*args, **kwargs)
        Searcher.__init__(self, metric=data["metric"], mode=data["mode"])
        self.engine = engine
        self.max_trials = data.get("max_trials")
        self.events_path = data.get("events_path")
        self._reset_bookkeeping()
        self.set_state(json.loads(data["state"]))

    @property
    def live_trials(self) -> dict[str, Proposal]:
        return dict(self._live)


def saved_state_file(experiment_dir: str | os.PathLike) -> str | None:
    """The searcher state Ray restores from ``experiment_dir`` (its newest), if any."""
    files = glob.glob(os.path.join(experiment_dir, Searcher.CKPT_FILE_TMPL.format("*")))
    return max(files) if files else None


def check_saved_state(searcher: Searcher, experiment_dir: str | os.PathLike) -> None:
    """Raise ValueError naming the file when the searcher state Ray would restore is unusable.

    A ``ParetoSearcher`` state is JSON and is loaded into ``searcher`` (a fresh one) to check
    it whole; Optuna's is a pickle, which is only checked to be there and not empty.
    """
    path = saved_state_file(experiment_dir)
    if path is None:
        raise ValueError(
            f"{experiment_dir}: no searcher state (searcher-state-*.pkl) to resume from"
        )
    if not isinstance(searcher, ParetoSearcher):
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: the searcher state is empty")
        return
    try:
        with open(path, encoding="utf-8") as f:
            searcher.set_state(json.load(f))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path}: the searcher state is damaged ({type(exc).__name__}: {exc})"
        ) from None


def _show(values: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return repr(v)

    return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in values.items()) + "}"


class _ConstraintsFromToldValues:
    """Mixin for an Optuna sampler: each trial's limit violations (<= 0 is feasible), computed
    from the objective values the trial is told, for the sampler's constrained domination.

    Optuna calls ``constraints_func`` from ``after_trial`` before the told values are stored on
    the trial; ``after_trial`` receives them, so they are kept for that call.
    """

    def _set_limits(self, objectives: ObjectiveSet) -> None:
        self._limited = [(i, o) for i, o in enumerate(objectives) if o.limit is not None]
        self._told: dict[int, Any] = {}

    def _constraints(self, trial: Any) -> list[float]:
        values = self._told.get(trial.number)
        if values is None:  # a pruned trial: no values
            return [math.inf] * len(self._limited)
        return [o.violation(float(values[i])) for i, o in self._limited]

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        if values is not None:
            self._told[trial.number] = list(values)
        try:
            super().after_trial(study, trial, state, values)  # type: ignore[misc]
        finally:
            self._told.pop(trial.number, None)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _PicklableLocks:
    """Mixin for an Optuna sampler: pickled without its thread locks, which come back new
    (Optuna 5's genetic samplers hold a lock; Ray pickles the searcher with the Tuner)."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_paretune_locks"] = [k for k, v in state.items() if isinstance(v, _LOCK_TYPES)]
        for key in state["_paretune_locks"]:
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        locks = state.pop("_paretune_locks", [])
        self.__dict__.update(state)
        for key in locks:
            setattr(self, key, threading.Lock())


class NSGAIISampler(_PicklableLocks, optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II, picklable."""


class ConstrainedNSGAIISampler(_ConstraintsFromToldValues, NSGAIISampler):
    """Optuna's NSGA-II with the objectives' limits as constraints."""

    def __init__(self, objectives: ObjectiveSet, **params: Any) -> None:
        self._set_limits(objectives)
        with warnings.catch_warnings():  # deprecated in Optuna 5, kept until 7 (pyproject)
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(constraints_func=self._constraints, **params)


class ConstrainedTPESampler(_ConstraintsFromToldValues, optuna.samplers.TPESampler):
    """Optuna's TPE with the objectives' limits as constraints."""

    def __init__(self, objectives: ObjectiveSet, **params: Any) -> None:
        self._set_limits(objectives)
        with warnings.catch_warnings():  # deprecated in Optuna 5, kept until 7 (pyproject)
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(constraints_func=self._constraints, **params)


class ConstrainedGPSampler(_ConstraintsFromToldValues, optuna.samplers.GPSampler):
    """Optuna's Gaussian-process sampler with the objectives' limits as constraints."""

    def __init__(self, objectives: ObjectiveSet, **params: Any) -> None:
        self._set_limits(objectives)
        with warnings.catch_warnings():  # deprecated in Optuna 5, kept until 7 (pyproject)
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(constraints_func=self._constraints, **params)


def make_optuna_searcher(
    algorithm: str,
    space: SearchSpace,
    objectives: ObjectiveSet,
    seed: int = 0,
    **params: Any,
) -> Searcher:
    """Ray's ``OptunaSearch`` with Optuna's NSGA-II (``nsga2``), TPE (``tpe``) or
    Gaussian-process (``gp``, multi-objective Bayesian optimisation) sampler.

    ``params`` go to the sampler (e.g. ``population_size`` for NSGA-II, ``n_startup_trials``
    for TPE and GP). Objective limits become Optuna constraints (the samplers' constrained
    domination), computed from the values each trial is told.
    """
    limited = any(o.limit is not None for o in objectives)
    if algorithm == "nsga2":
        sampler = (
            ConstrainedNSGAIISampler(objectives, seed=seed, **params)
            if limited
            else NSGAIISampler(seed=seed, **params)
        )
    elif algorithm == "tpe":
        sampler = (
            ConstrainedTPESampler(objectives, seed=seed, **params)
            if limited
            else optuna.samplers.TPESampler(seed=seed, **params)
        )
    elif algorithm == "gp":
        sampler = (
            ConstrainedGPSampler(objectives, seed=seed, **params)
            if limited
            else optuna.samplers.GPSampler(seed=seed, **params)
        )
    else:
        raise ValueError(f"unknown Optuna algorithm {algorithm!r} (allowed: nsga2, tpe, gp)")
    distributions = {
        d.name: optuna.distributions.CategoricalDistribution([d.options[i] for i in allowed])
        for d, allowed in zip(space.decisions, space.allowed, strict=True)
    }
    return OptunaSearch(
        space=distributions, metric=objectives.names, mode=objectives.modes, sampler=sampler
    )
