"""Random search: uniform sampling of the (possibly restricted) space without repeats.

:class:`UnseenSampler` is the reusable part: it draws architectures uniformly from those of a
space not yet seen, by rejection while most of the space is unseen and from a sorted pool of the
rest once half of it has been seen, so that exhausting even a large space stays fast. Which of
the two it uses depends only on what has been seen, so a restored engine draws exactly what the
original would have drawn.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, Record
from paretune.spaces.base import Arch, SearchSpace, as_arch

# Spaces up to this size may be enumerated once more than half of them has been seen.
ENUMERATE_LIMIT = 1 << 21


class UnseenSampler:
    """Uniform draws from the architectures of ``space`` that are not in ``seen``.

    Args:
        space: the space to draw from (restrictions respected).
        seen: architectures already used; ones outside ``space`` are remembered but not counted.
    """

    def __init__(self, space: SearchSpace, seen: Iterable[Arch] = ()) -> None:
        self.space = space
        self.seen: set[Arch] = set()
        self.num_seen_inside = 0
        self._pool: list[Arch] | None = None
        for arch in seen:
            self.add(arch)

    @property
    def exhausted(self) -> bool:
        """True when every architecture of the space has been seen."""
        return self.num_seen_inside >= self.space.size

    def add(self, arch: Arch) -> None:
        """Mark ``arch`` as seen."""
        arch = as_arch(arch)
        if arch in self.seen:
            return
        self.seen.add(arch)
        if not self.space.contains(arch):
            return
        self.num_seen_inside += 1
        if self._pool is not None:
            k = bisect.bisect_left(self._pool, arch)
            if k < len(self._pool) and self._pool[k] == arch:
                del self._pool[k]

    def sample(self, rng: np.random.Generator) -> Arch | None:
        """An unseen architecture drawn uniformly (not marked as seen), or ``None`` when exhausted."""
        size = self.space.size
        if self.exhausted:
            return None
        if size <= ENUMERATE_LIMIT and 2 * self.num_seen_inside > size:
            if self._pool is None:
                self._pool = [a for a in self.space if a not in self.seen]
            return self._pool[int(rng.integers(len(self._pool)))]
        while True:  # fewer than two draws expected: at most half the space is seen
            arch = self.space.sample(rng)
            if arch not in self.seen:
                return arch


class RandomSearch(Engine):
    """Uniform random search without repeats; ``ask`` returns ``None`` once the space is exhausted.

    Args:
        space: the search space (possibly restricted).
        objectives: the objectives (only used for the archive).
        seed: seed of the RNG.
    """

    name = "random"

    def __init__(self, space: SearchSpace, objectives: ObjectiveSet, seed: int = 0) -> None:
        super().__init__(space, objectives, seed=seed)
        self._sampler = UnseenSampler(space)

    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        arch = self._sampler.sample(self.rng)
        if arch is None:
            return None
        self._sampler.add(arch)
        return arch, {"phase": "random"}

    def _on_result(self, record: Record) -> None:
        self._sampler.add(record.proposal.arch)

    def _on_failure(self, record: Record) -> None:
        self._sampler.add(record.proposal.arch)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        seen = [r.proposal.arch for r in self.history] + [p.arch for p in self.pending.values()]
        self._sampler = UnseenSampler(self.space, seen)
