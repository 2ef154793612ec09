"""The architectures a weight-sharing TND search hands over for stand-alone retraining.

:class:`FinalGenotypes` proposes a fixed list of architectures, in order, once each, and then
nothing; the Ray adapter finishes the search when the list is used up. TND's supernet phase
(:mod:`paretune.platform.tnd_supernet`) builds it from the final stage's distribution, so
the retrained genotypes are ordinary trials, tracked and reported like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine
from paretune.spaces.base import Arch, SearchSpace


class FinalGenotypes(Engine):
    """Proposes ``archs`` in order (meta: ``phase: final``, ``rank``, and ``meta[i]``)."""

    name = "tnd_final"

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectiveSet,
        seed: int = 0,
        *,
        archs: Sequence[Sequence[int]] = (),
        meta: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(space, objectives, seed)
        self.archs: list[Arch] = [space.validate(a) for a in archs]
        self.meta = [dict(m) for m in meta] if meta is not None else [{} for _ in self.archs]
        if len(self.meta) != len(self.archs):
            raise ValueError(f"{len(self.meta)} meta entries for {len(self.archs)} archs")
        self.position = 0

    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        if self.position >= len(self.archs):
            return None
        i = self.position
        self.position += 1
        return self.archs[i], {"phase": "final", "rank": i, **self.meta[i]}

    def _state(self) -> dict[str, Any]:
        return {"position": self.position}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.position = int(state["position"])


__all__ = ["FinalGenotypes"]
