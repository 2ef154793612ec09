"""Duplicate networks are not evaluated twice: a proposal whose network was measured is answered.

Some spaces hold several architectures per network (``SearchSpace.canonical`` maps them to
one): MobileNet's block slots beyond a stage's depth, NAS-Bench-Macro's identities (6,561
architectures, 3,969 networks). :class:`DeduplicatedEngine` wraps any engine (or a
:class:`~paretune.search_algos.screening.ScreenedEngine`): when the inner engine proposes an
architecture whose canonical network already has a result, that result is told to the inner
engine at once (the record's proposal carries ``meta["duplicate_of"]``, the id of the measured
proposal) and the inner engine is asked again, at most ``max_fills`` times per ``ask``; after
that the proposal is handed out. Failures are not copied (a network that failed may succeed on
another try). Engines learn from the answered twins exactly as from a trial.

Wrap only spaces that override ``canonical`` (:func:`deduplicate` does this): on the others
every architecture is its own network and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paretune.search_algos.base import STATE_VERSION, Proposal, Record
from paretune.search_algos.screening import EngineSpec
from paretune.search_algos.wrapper import EngineWrapper
from paretune.spaces.base import Arch, SearchSpace


class DeduplicatedEngine(EngineWrapper):
    """An engine whose proposals of already measured networks are answered without a trial.

    Args:
        inner: the engine to wrap (or an :class:`EngineSpec` of it).
        max_fills: proposals answered at most per ``ask`` (0: none).
    """

    name = "deduplicated"

    def __init__(self, inner: Any, max_fills: int = 50) -> None:
        if isinstance(inner, EngineSpec):
            inner = inner.build()
        if isinstance(max_fills, bool) or int(max_fills) != max_fills or max_fills < 0:
            raise ValueError(f"dedup.max_fills = {max_fills!r}: must be an integer >= 0")
        self.inner = inner
        self.max_fills = int(max_fills)
        self.num_filled = 0
        # canonical network -> (proposal id, values) of its first successful result
        self._measured: dict[Arch, tuple[int, dict[str, float]]] = {}
        self.init_args = ((EngineSpec.of(inner),), {"max_fills": max_fills})

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Proposal | None:
        for attempt in range(self.max_fills + 1):
            proposal = self.inner.ask()
            if proposal is None:
                return None
            twin = self._measured.get(self.space.canonical(proposal.arch))
            if twin is None or attempt == self.max_fills:
                return proposal
            proposal.meta["duplicate_of"] = twin[0]
            self.num_filled += 1
            self.inner.tell(proposal, dict(twin[1]))
        return None  # pragma: no cover - the loop always returns

    def tell(self, proposal: Proposal, values: Mapping[str, float]) -> bool:
        accepted = self.inner.tell(proposal, values)
        if accepted:
            self._remember(self.inner.history[-1])
        return accepted

    def tell_failure(self, proposal: Proposal, error: str = "failed") -> bool:
        return self.inner.tell_failure(proposal, error)

    def _remember(self, record: Record) -> None:
        if record.failed or record.values is None:
            return
        key = self.space.canonical(record.proposal.arch)
        if key not in self._measured:
            self._measured[key] = (record.proposal.id, dict(record.values))

    def filled_records(self) -> list[Record]:
        """The proposals answered from a measured twin."""
        return [r for r in self.history if "duplicate_of" in r.proposal.meta]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "engine": self.name,
            "inner": self.inner.state_dict(),
            "num_filled": self.num_filled,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("engine") != self.name:
            raise ValueError(f"state is for engine {state.get('engine')!r}, not {self.name!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"state version {state.get('version')} is not supported (expected {STATE_VERSION})"
            )
        self.inner.load_state_dict(state["inner"])
        self.num_filled = int(state.get("num_filled", 0))
        self._measured = {}
        for record in self.history:
            if "duplicate_of" not in record.proposal.meta:
                self._remember(record)

    def __repr__(self) -> str:
        return f"DeduplicatedEngine({self.inner!r}, max_fills={self.max_fills})"


def has_duplicates(space: SearchSpace) -> bool:
    """True when the space maps several architectures to one network (overrides canonical)."""
    return type(space).canonical is not SearchSpace.canonical


def deduplicate(engine: Any, max_fills: int = 50) -> Any:
    """``engine`` wrapped in a :class:`DeduplicatedEngine` when its space has duplicates."""
    return DeduplicatedEngine(engine, max_fills) if has_duplicates(engine.space) else engine
