"""The ask/tell engine interface shared by every paretune search algorithm.

An engine proposes architectures (``ask``), is told what they scored (``tell``) or that they
failed (``tell_failure``), and can save and restore its whole state as plain JSON-serialisable
data (``state_dict`` / ``load_state_dict``). Engines import neither Ray nor MLflow; the Ray Tune
adapter (:mod:`paretune.platform.searcher`) wraps any of them.

The base class keeps the bookkeeping every engine needs: a seeded numpy RNG, proposal ids, the
proposals in flight, the history of finished evaluations and the constrained Pareto archive.
Subclasses implement ``_propose`` (and optionally ``_on_result`` / ``_on_failure``) and add their
own state through ``_state`` / ``_load_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from paretune.objectives.base import ObjectiveSet
from paretune.spaces.base import Arch, SearchSpace

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)  # slots: a search keeps one per trial
class Proposal:
    """An architecture to evaluate, with metadata for the trainable and the tracker.

    ``meta`` is JSON-serialisable: e.g. ``parent`` (proposal id), ``phase``, ``generation``,
    ``parent_checkpoint`` (a path to inherit weights from).
    """

    id: int
    arch: Arch
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "arch": list(self.arch), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        return cls(int(data["id"]), tuple(int(i) for i in data["arch"]), dict(data.get("meta", {})))


@dataclass(frozen=True)
class InspectionTable:
    """A table that explains an engine's search (e.g. PertNAS's motif table), for people.

    The platform writes it as ``<name>.csv`` and, when ``heatmap`` is set, as ``<name>.png``: a
    heat map with one row per distinct value of the ``heatmap[0]`` columns (joined with ``:``)
    and one column per ``heatmap[1]`` column. Rows are plain dicts so engines need no pandas.
    """

    name: str
    rows: list[dict[str, Any]]
    heatmap: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    title: str = ""
    columns: tuple[str, ...] = ()  # the CSV header when ``rows`` is empty
    colormap: str = "RdYlGn_r"  # matplotlib's name; the default: low values green (good)


@dataclass(frozen=True, slots=True)
class Record:
    """One finished evaluation: the proposal and its values (``None`` when it failed)."""

    proposal: Proposal
    values: dict[str, float] | None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.values is None

    def to_dict(self) -> dict[str, Any]:
        return {"proposal": self.proposal.to_dict(), "values": self.values, "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        return cls(Proposal.from_dict(data["proposal"]), data["values"], data.get("error"))


class SearchEngine(Protocol):
    """What the platform uses of an engine: every :class:`Engine`, and wrappers of one
    (:class:`~paretune.search_algos.screening.ScreenedEngine`)."""

    name: ClassVar[str]
    init_args: tuple[tuple[Any, ...], dict[str, Any]]

    @property
    def space(self) -> SearchSpace: ...

    @property
    def objectives(self) -> ObjectiveSet: ...

    @property
    def pending(self) -> dict[int, Proposal]: ...

    @property
    def history(self) -> list[Record]: ...

    def ask(self) -> Proposal | None: ...

    def tell(self, proposal: Proposal, values: Mapping[str, float]) -> bool: ...

    def tell_failure(self, proposal: Proposal, error: str = "failed") -> bool: ...

    def archive(self) -> list[Record]: ...

    def inspection_tables(self) -> list[InspectionTable]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Engine:
    """Base class of the ask/tell search engines.

    Args:
        space: the search space.
        objectives: the objectives (names, directions, limits).
        seed: seed of the engine's numpy RNG; the same seed gives the same proposals for the
            same sequence of results.
    """

    name: ClassVar[str] = "engine"

    def __new__(cls, *args: Any, **kwargs: Any) -> Engine:
        # Remember the constructor arguments so that a wrapper (the Ray adapter) can rebuild an
        # equal engine and then load its state, instead of pickling the engine's internals.
        obj = super().__new__(cls)
        obj.init_args = (args, dict(kwargs))
        return obj

    def __init__(self, space: SearchSpace, objectives: ObjectiveSet, seed: int = 0) -> None:
        self.space = space
        self.objectives = objectives
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._next_id = 0
        self.pending: dict[int, Proposal] = {}
        self.history: list[Record] = []
        self._told: set[int] = set()  # proposal ids in the history

    # ------------------------------------------------------------------ public API
    def ask(self) -> Proposal | None:
        """The next proposal, or ``None`` when the engine must wait for results (or is done)."""
        proposed = self._propose()
        if proposed is None:
            return None
        arch, meta = proposed
        proposal = Proposal(self._next_id, self._space_for(meta).validate(arch), dict(meta))
        self._next_id += 1
        self.pending[proposal.id] = proposal
        return proposal

    def tell(self, proposal: Proposal, values: Mapping[str, float]) -> bool:
        """Report the objective values of ``proposal``; False when it was ignored.

        Values that are missing, NaN or infinite for any objective count as a failure. A
        proposal is told once: telling a proposal id that is already in the history again (a
        result or a failure) is ignored and returns False, so nothing is recorded twice.
        """
        if self.was_told(proposal):
            return False
        if not self.objectives.is_valid(values):
            bad = {n: values.get(n) for n in self.objectives.names} if values else values
            return self.tell_failure(proposal, f"invalid objective values: {bad}")
        clean = {n: float(values[n]) for n in self.objectives.names}
        self.pending.pop(proposal.id, None)
        record = Record(proposal, clean)
        self._record(record)
        self._on_result(record)
        return True

    def tell_failure(self, proposal: Proposal, error: str = "failed") -> bool:
        """Report that evaluating ``proposal`` failed (never scored as zero); False if ignored.

        Like :meth:`tell`, a proposal already told is ignored.
        """
        if self.was_told(proposal):
            return False
        self.pending.pop(proposal.id, None)
        record = Record(proposal, None, str(error))
        self._record(record)
        self._on_failure(record)
        return True

    def was_told(self, proposal: Proposal) -> bool:
        """True when a result or failure of ``proposal`` (by id) is already in the history."""
        return proposal.id in self._told

    def _record(self, record: Record) -> None:
        self.history.append(record)
        self._told.add(record.proposal.id)

    @property
    def num_told(self) -> int:
        return len(self.history)

    def successes(self) -> list[Record]:
        return [r for r in self.history if not r.failed]

    def archive(self) -> list[Record]:
        """The constrained Pareto archive of every successful evaluation (first occurrence of an arch)."""
        from paretune.search_algos.pareto import constrained_front_indices

        records = self._unique_successes()
        if not records:
            return []
        points = self.objectives.matrix(r.values for r in records)
        violations = np.array([self.objectives.violation(r.values) for r in records])
        return [records[i] for i in constrained_front_indices(points, violations)]

    def _unique_successes(self) -> list[Record]:
        seen: set[Arch] = set()
        out = []
        for r in self.history:
            if r.values is not None and r.proposal.arch not in seen:
                seen.add(r.proposal.arch)
                out.append(r)
        return out

    def evaluated_archs(self) -> set[Arch]:
        return {r.proposal.arch for r in self.history} | {p.arch for p in self.pending.values()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The whole engine state as plain, JSON-serialisable data."""
        return {
            "version": STATE_VERSION,
            "engine": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "next_id": self._next_id,
            "pending": [p.to_dict() for p in self.pending.values()],
            "history": [r.to_dict() for r in self.history],
            "space_allowed": [list(a) for a in self.space.allowed],
            "engine_state": self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state made by :meth:`state_dict` of the same engine class."""
        if state.get("engine") != self.name:
            raise ValueError(f"state is for engine {state.get('engine')!r}, not {self.name!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"state version {state.get('version')} is not supported (expected {STATE_VERSION})"
            )
        self.seed = int(state["seed"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self._next_id = int(state["next_id"])
        self.pending = {p["id"]: Proposal.from_dict(p) for p in state["pending"]}
        self.history = [Record.from_dict(r) for r in state["history"]]
        self._told = {r.proposal.id for r in self.history}
        self.space = self.space._with_allowed(state["space_allowed"])
        self._load_state(state["engine_state"])

    def inspection_tables(self) -> list[InspectionTable]:
        """Tables that explain this search, logged to the parent run at the end (default: none)."""
        return []

    # ------------------------------------------------------------------ for subclasses
    def _space_for(self, meta: Mapping[str, Any]) -> SearchSpace:
        """The space a proposal with ``meta`` is validated against (default: ``self.space``)."""
        return self.space

    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        """Return ``(arch, meta)`` for the next proposal, or ``None`` to wait."""
        raise NotImplementedError

    def _on_result(self, record: Record) -> None:
        """Called after a successful result was added to ``history``."""

    def _on_failure(self, record: Record) -> None:
        """Called after a failure was added to ``history``."""

    def _state(self) -> dict[str, Any]:
        """Engine-specific state (JSON-serialisable)."""
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`_state`."""
