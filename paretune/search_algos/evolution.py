"""Multi-objective regularized (aging) evolution, asynchronous.

Real et al.'s regularized evolution with a multi-objective tournament:

* while the population has fewer than ``population_size`` members, every ``ask`` proposes a
  random architecture not proposed before (more than ``population_size`` random ones when some
  fail or many are in flight);
* after that, every ``ask`` draws ``sample_size`` members at random, takes the best of them by
  constrained non-dominated rank within the sample and then by crowding distance within that
  rank (ties broken at random), and proposes a one-edit mutation of it that was not proposed
  before (an unproposed two-edit mutation when all one-edit ones were, then a random unproposed
  architecture; ``None`` once the space is exhausted);
* every successful result joins the population in arrival order, and the oldest member dies when
  the population exceeds ``population_size``. Failures never join the population.

There is no generation barrier: results may arrive in any order and ``ask`` never waits.

Defaults (``population_size=20, sample_size=10``) come from a sweep on the NB201 table
(``benchmarks/search_quality.py`` convention, acc-lat-energy and acc-params, budgets 100/300/1000,
P in {10, 20, 30, 50, 100} x S in {2, 5, 10, 15, 20, 25, 30, 50}, 20-50 seeds): S = 2 or 5 is
clearly worse (weak selection), P = 50-100 wastes budget 100 on random seeding, and P = 20, S = 10
was within one standard error of the best setting in all six cells (50 fresh seeds: gaps
0.039/0.020/0.0074 and 0.075/0.038/0.0165), where other settings were best in some cells and
clearly worse in others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, Record
from paretune.search_algos.params import positive_int
from paretune.search_algos.pareto import crowding_distance, non_dominated_sort
from paretune.search_algos.random_search import UnseenSampler
from paretune.spaces.base import Arch, SearchSpace


class RegularizedEvolution(Engine):
    """Asynchronous multi-objective regularized evolution.

    Args:
        space: the search space (possibly restricted).
        objectives: the objectives (directions and limits drive the tournament).
        seed: seed of the RNG.
        population_size: ``P``, the number of living members (the oldest dies beyond it); also
            the number of random architectures that seed the population.
        sample_size: ``S``, the members drawn for each tournament (capped at the population).
    """

    name = "regularized_evolution"

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectiveSet,
        seed: int = 0,
        population_size: int = 20,
        sample_size: int = 10,
    ) -> None:
        super().__init__(space, objectives, seed=seed)
        self.population_size = positive_int("population_size", population_size)
        self.sample_size = positive_int("sample_size", sample_size)
        self.population: deque[Record] = deque()
        # Minimisation vector and limit violation of each living member, by proposal id.
        self._points: dict[int, np.ndarray] = {}
        self._violations: dict[int, float] = {}
        self._sampler = UnseenSampler(space)

    # ------------------------------------------------------------------ engine hooks
    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        if self._sampler.exhausted:
            return None
        if len(self.population) < self.population_size:
            arch = self._sampler.sample(self.rng)
            meta: dict[str, Any] = {"phase": "random", "generation": 0}
        else:
            parent = self._tournament()
            arch, edits = self._mutate(parent.proposal.arch)
            if edits == 0:
                meta = {"phase": "random", "generation": 0}
            else:
                meta = {
                    "phase": "mutation",
                    "parent": parent.proposal.id,
                    "generation": int(parent.proposal.meta.get("generation", 0)) + 1,
                    "edits": edits,
                }
        if arch is None:  # pragma: no cover - exhaustion is caught above
            return None
        self._sampler.add(arch)
        return arch, meta

    def _on_result(self, record: Record) -> None:
        self._sampler.add(record.proposal.arch)
        self._join(record)
        while len(self.population) > self.population_size:
            dead = self.population.popleft()
            self._points.pop(dead.proposal.id, None)
            self._violations.pop(dead.proposal.id, None)

    def _join(self, record: Record) -> None:
        self.population.append(record)
        self._points[record.proposal.id] = self.objectives.vector(record.values)
        self._violations[record.proposal.id] = self.objectives.violation(record.values)

    def _on_failure(self, record: Record) -> None:
        self._sampler.add(record.proposal.arch)

    def _state(self) -> dict[str, Any]:
        return {
            "population_size": self.population_size,
            "sample_size": self.sample_size,
            "population": [r.proposal.id for r in self.population],
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.population_size = positive_int("population_size", state["population_size"])
        self.sample_size = positive_int("sample_size", state["sample_size"])
        by_id = {r.proposal.id: r for r in self.history if not r.failed}
        missing = [i for i in state["population"] if i not in by_id]
        if missing:
            raise ValueError(
                f"population members {missing} have no successful result in the history"
            )
        self.population = deque()
        self._points, self._violations = {}, {}
        for i in state["population"]:
            self._join(by_id[i])
        seen = [r.proposal.arch for r in self.history] + [p.arch for p in self.pending.values()]
        self._sampler = UnseenSampler(self.space, seen)

    # ------------------------------------------------------------------ operators
    def _tournament(self) -> Record:
        """The best of ``sample_size`` members: constrained rank, then crowding, then at random."""
        k = min(self.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        sample = [self.population[int(i)] for i in picks]
        if k == 1:
            return sample[0]
        points = np.stack([self._points[r.proposal.id] for r in sample])
        violations = np.array([self._violations[r.proposal.id] for r in sample])
        first = non_dominated_sort(points, violations)[0]
        if len(first) > 1:
            crowding = crowding_distance(points[first])
            first = first[crowding == crowding.max()]
        if len(first) > 1:
            return sample[int(first[self.rng.integers(len(first))])]
        return sample[int(first[0])]

    def _mutate(self, parent: Arch) -> tuple[Arch | None, int]:
        """An unproposed child of ``parent`` and its edit distance (0: a random architecture)."""
        seen = self._sampler.seen
        # Neighbours of an architecture inside the space are inside; one outside (the space was
        # restricted after it was evaluated) has neighbours that keep its excluded options.
        inside = self.space.contains if not self.space.contains(parent) else _always
        ones = [a for a in self.space.neighbors(parent) if inside(a)]
        fresh = [a for a in ones if a not in seen]
        if fresh:
            return fresh[int(self.rng.integers(len(fresh)))], 1
        twos = list(
            dict.fromkeys(
                b
                for a in ones
                for b in self.space.neighbors(a)
                if b != parent and b not in seen and inside(b)
            )
        )
        if twos:
            return twos[int(self.rng.integers(len(twos)))], 2
        return self._sampler.sample(self.rng), 0


def _always(arch: Arch) -> bool:
    return True
