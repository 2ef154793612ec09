"""What an engine wrapper (screening, deduplication) hands through to the engine it wraps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import InspectionTable, Proposal, Record
from paretune.spaces.base import Arch, SearchSpace


class EngineWrapper:
    """Delegates the engine interface to ``self.inner`` (set by the subclass's ``__init__``).

    A subclass overrides what it changes (``ask``, ``tell``, its state); anything else an
    engine offers is the inner engine's.
    """

    inner: Any

    @property
    def space(self) -> SearchSpace:
        return self.inner.space

    @property
    def objectives(self) -> ObjectiveSet:
        return self.inner.objectives

    @property
    def seed(self) -> int:
        return self.inner.seed

    @property
    def pending(self) -> dict[int, Proposal]:
        return self.inner.pending

    @property
    def history(self) -> list[Record]:
        return self.inner.history

    @property
    def num_told(self) -> int:
        return self.inner.num_told

    def tell(self, proposal: Proposal, values: Mapping[str, float]) -> bool:
        return self.inner.tell(proposal, values)

    def tell_failure(self, proposal: Proposal, error: str = "failed") -> bool:
        return self.inner.tell_failure(proposal, error)

    def was_told(self, proposal: Proposal) -> bool:
        return self.inner.was_told(proposal)

    def successes(self) -> list[Record]:
        return self.inner.successes()

    def archive(self) -> list[Record]:
        return self.inner.archive()

    def evaluated_archs(self) -> set[Arch]:
        return self.inner.evaluated_archs()

    def inspection_tables(self) -> list[InspectionTable]:
        return self.inner.inspection_tables()

    def __getattr__(self, name: str) -> Any:
        # Anything else an engine offers (e.g. an engine-specific property) is the inner one's.
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)
