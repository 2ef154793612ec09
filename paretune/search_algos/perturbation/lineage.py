"""PertNAS lineages: one population member's rounds of expand, coarse and fine selection.

:class:`Lineage` is a lineage's state (saved with the engine); :class:`LineageSteps` is the
state machine that moves a lineage through its phases, mixed into
:class:`~paretune.search_algos.perturbation.engine.PerturbationEvolution` (it uses the engine's
results, motif model and proposal helpers).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from paretune.spaces.base import Arch


@dataclass
class Lineage:
    """One population member: a compact architecture, its trade-off weights and its narrowing.

    Attributes:
        slot: position in the population.
        round: PertNAS rounds this slot has started (0 for the first).
        weight: trade-off weights over the (normalised, minimised) objectives, summing to 1.
        phase: ``seed``, ``expand``, ``coarse`` or ``fine``.
        anchor: proposal id of the lineage's current architecture.
        mask: per decision, the option indices this lineage may still use.
        members: proposal ids evaluated or proposed in this round of the lineage.
        waiting: proposal ids whose results the lineage needs before it moves on.
        todo: decisions still to perturb (expand) or to compare (fine).
        steps_left: evaluations left in the coarse phase.
    """

    slot: int
    round: int
    weight: list[float]
    phase: str = "seed"
    anchor: int | None = None
    mask: list[list[int]] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)
    steps_left: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class LineageSteps:
    """The lineage state machine of the ``pertnas`` engine (a mixin of the engine)."""

    # ------------------------------------------------------------------ new lineages, weights
    def _new_lineage(self) -> tuple[Arch, dict[str, Any]] | None:
        """Add a round-0 lineage, anchored on an archive member when there are results."""
        slot = len(self.lineages)
        ln = Lineage(slot=slot, round=0, weight=self._initial_weight(slot))
        ln.mask = [list(a) for a in self.space.allowed]
        self.lineages.append(ln)
        taken = {other.anchor for other in self.lineages}
        rows = [r for r, pid in enumerate(self._id_of_row) if pid not in taken]
        if rows and self._anchor_on_archive:
            # The best evaluated architecture for its weights that anchors no other lineage.
            g = self._tchebycheff(np.array(rows), ln.weight)
            self._set_anchor(ln, self._id_of_row[rows[int(np.argmin(g))]])
            return None
        arch = self._balanced_seed()
        if arch is None:
            return None
        meta = self._meta(None, None, "seed", ln)
        meta["source"] = "balanced"
        return self._issue(ln, arch, meta, wait=True, anchor=True)

    def _balanced_seed(self) -> Arch | None:
        """A random architecture using, per decision, options the other seeds use least."""
        used = [np.zeros(len(d.options)) for d in self.space.decisions]
        for ln in self.lineages:
            if ln.anchor is not None:
                for k, o in enumerate(self._proposal(ln.anchor).arch):
                    used[k][o] += 1
        for _ in range(64):
            arch = tuple(
                int(self.rng.choice([o for o in a if used[k][o] == min(used[k][i] for i in a)]))
                for k, a in enumerate(self.space.allowed)
            )
            if self._fresh(arch):
                return arch
        return self._sampler.sample(self.rng)

    def _set_anchor(self, ln: Lineage, pid: int) -> None:
        ln.anchor = pid
        ln.members = [pid]
        ln.phase = "expand"
        ln.todo = self._expand_order()

    def _initial_weight(self, slot: int) -> list[float]:
        """Round-0 weights: each objective's corner first, then the centre of the simplex."""
        m = len(self.objectives)
        if slot < m:
            return _soften(np.eye(m)[slot])
        if slot == m:
            return _soften(np.full(m, 1.0 / m))
        return self._new_weight()

    def _new_weight(self) -> list[float]:
        """The next weight of a shuffled simplex lattice (a fresh order per pass)."""
        lattice = _simplex_lattice(len(self.objectives), max(2 * self.population_size, 8))
        if not self._weight_order:
            self._weight_order = [int(i) for i in self.rng.permutation(len(lattice))]
        return _soften(lattice[self._weight_order.pop(0)])

    # ------------------------------------------------------------------ lineages
    def _lineage_step(self, ln: Lineage) -> tuple[Arch, dict[str, Any]] | None:
        """The lineage's next proposal, moving it through its phases; ``None`` while it waits.

        A lineage restarts at most once per call, so a lineage whose region is exhausted costs
        little and leaves the proposal to the others or to the archive local search.
        """
        restarted = False
        while True:
            if ln.phase == "seed":
                # Expand may start while the seed is in flight: effects resolve later.
                if ln.anchor is None or ln.anchor in self._failed:
                    if restarted:
                        return None
                    restarted = True
                    return self._restart(ln, reseed=True)
                ln.phase = "expand"
                ln.todo = self._expand_order()
            if ln.phase == "expand":
                while ln.todo:
                    proposal = self._expand_proposal(ln, ln.todo.pop(0))
                    if proposal is not None:
                        return proposal
                if ln.waiting:
                    return None
                if ln.anchor in self._failed:
                    ln.phase = "seed"
                    continue
                self._enter_coarse(ln)
            if ln.phase == "coarse":
                if ln.steps_left > 0:
                    proposal = self._coarse_proposal(ln)
                    if proposal is not None:
                        ln.steps_left -= 1
                        return proposal
                    ln.steps_left = 0
                if ln.waiting:
                    return None
                self._enter_fine(ln)
            if ln.phase == "fine":
                if ln.waiting:
                    return None
                while ln.todo:
                    proposal = self._fine_proposal(ln, ln.todo[0])
                    if proposal is not None:
                        return proposal
                if restarted:
                    return None
                restarted = True
                proposal = self._restart(ln, reseed=False)
                if proposal is not None:
                    return proposal

    def _expand_order(self) -> list[int]:
        n = self.space.num_decisions
        order = [int(k) for k in self.rng.permutation(n)]
        return [order[i % n] for i in range(self.perturbations_per_parent)]

    def _expand_proposal(self, ln: Lineage, k: int) -> tuple[Arch, dict[str, Any]] | None:
        """Perturb decision ``k`` of the lineage's anchor."""
        parent = self._proposal(ln.anchor).arch
        fresh = [
            o
            for o in ln.mask[k]
            if o != parent[k] and self._fresh(parent[:k] + (o,) + parent[k + 1 :])
        ]
        if not fresh:
            return None
        if ln.round == 0:
            counts = self._option_counts()[k]
            low = min(counts[o] for o in fresh)
            least = [o for o in fresh if counts[o] == low]
            new = least[int(self.rng.integers(len(least)))]
        else:
            cands = np.array([(ln.anchor, k, parent[k], o) for o in fresh], dtype=np.int64)
            new = fresh[int(np.argmax(self._acquisition(cands, ln.weight)))]
        return self._perturbation(ln, ln.anchor, k, new, "expand")

    def _enter_coarse(self, ln: Lineage) -> None:
        """Coarse selection: keep the ``coarse_keep`` best-scored options of every decision."""
        self._settle_anchor(ln)
        scores = self._weighted_option_scores(ln.weight)
        mask = []
        for k, allowed in enumerate(self.space.allowed):
            opts = [o for o in ln.mask[k] if o in allowed] or list(allowed)
            opts.sort(key=lambda o, k=k: (-scores[k][o], o))
            mask.append(sorted(opts[: self.params["coarse_keep"]]))
        ln.mask = mask
        ln.phase = "coarse"
        ln.steps_left = self.coarse_steps
        ln.todo = []

    def _coarse_proposal(self, ln: Lineage) -> tuple[Arch, dict[str, Any]] | None:
        """The best one-edit perturbation inside the lineage's mask around its best members."""
        cands = self._candidates(self._lineage_parents(ln), ln.mask)
        if len(cands):
            pid, k, _, o = (
                int(x) for x in cands[int(np.argmax(self._acquisition(cands, ln.weight)))]
            )
            return self._perturbation(ln, pid, k, o, "coarse")
        # Apply the best motif: move the anchor one edit into the mask.
        arch = self._proposal(ln.anchor).arch
        scores = self._weighted_option_scores(ln.weight)
        best = None
        for k, opts in enumerate(ln.mask):
            if arch[k] in opts:
                continue
            o = max(opts, key=lambda o, k=k: scores[k][o])
            if self._fresh(arch[:k] + (o,) + arch[k + 1 :]):
                gain = scores[k][o] - scores[k][arch[k]]
                if best is None or gain > best[0]:
                    best = (gain, k, o)
        if best is None:
            return None
        return self._perturbation(ln, ln.anchor, best[1], best[2], "coarse")

    def _lineage_parents(self, ln: Lineage, limit: int = 4) -> list[int]:
        """The lineage's best evaluated members by its weighted Tchebycheff score."""
        rows = sorted({self._row_of_id[p] for p in ln.members if p in self._row_of_id})
        if not rows:
            return [ln.anchor] if ln.anchor is not None and ln.anchor in self._row_of_id else []
        g = self._tchebycheff(np.array(rows), ln.weight)
        return [self._id_of_row[rows[int(i)]] for i in np.argsort(g, kind="stable")[:limit]]

    def _settle_anchor(self, ln: Lineage) -> None:
        """Move the anchor to the lineage's best evaluated member."""
        best = self._lineage_parents(ln, limit=1)
        if best:
            ln.anchor = best[0]

    def _enter_fine(self, ln: Lineage) -> None:
        """Fine selection: compare the kept options decision by decision, in random order."""
        self._settle_anchor(ln)
        anchor = self._proposal(ln.anchor).arch
        todo = []
        for k, opts in enumerate(ln.mask):
            if anchor[k] not in opts:  # the anchor's own option is always a contender
                opts.append(anchor[k])
                opts.sort()
            if len(opts) > self.params["fine_keep"]:
                todo.append(k)
        ln.todo = [todo[int(i)] for i in self.rng.permutation(len(todo))]
        ln.phase = "fine"

    def _fine_proposal(self, ln: Lineage, k: int) -> tuple[Arch, dict[str, Any]] | None:
        """Evaluate the anchor's variants for decision ``k``; narrow ``k`` once all are known."""
        anchor = self._proposal(ln.anchor).arch
        variants = {o: anchor[:k] + (o,) + anchor[k + 1 :] for o in ln.mask[k]}
        for o, child in variants.items():
            if self._fresh(child):
                return self._perturbation(ln, ln.anchor, k, o, "fine")
        scored = sorted(
            (float(self._tchebycheff(np.array([row]), ln.weight)[0]), o, row)
            for o, child in variants.items()
            if (row := self._row_of_arch.get(child)) is not None  # failed ones are not kept
        )
        ln.mask[k] = sorted(o for _, o, _ in scored[: self.params["fine_keep"]]) or [anchor[k]]
        if scored:
            ln.anchor = self._id_of_row[scored[0][2]]
        ln.todo.pop(0)
        return None

    def _restart(self, ln: Lineage, reseed: bool) -> tuple[Arch, dict[str, Any]] | None:
        """Start the lineage's next round with new weights (see the module docstring)."""
        ln.round += 1
        ln.weight = self._new_weight()
        ln.mask = [list(a) for a in self.space.allowed]
        ln.members, ln.waiting, ln.todo = [], [], []
        ln.steps_left = 0
        ln.phase = "seed"
        if self.params["motif_seeds"]:
            arch = self._motif_arch(ln.weight)
            if arch is not None and self._fresh(arch):
                meta = self._meta(None, None, "seed", ln)
                meta["source"] = "motifs"
                return self._issue(ln, arch, meta, wait=True, anchor=True)
        if reseed or not self._front:
            arch = self._sampler.sample(self.rng)
            if arch is None:
                return None
            meta = self._meta(None, None, "seed", ln)
            meta["source"] = "random"
            return self._issue(ln, arch, meta, wait=True, anchor=True)
        rows = np.array(self._front)
        g = self._tchebycheff(rows, ln.weight)
        self._set_anchor(ln, self._id_of_row[int(rows[int(np.argmin(g))])])
        return None

    def _motif_arch(self, weight: Sequence[float]) -> Arch | None:
        """The architecture with the best-scored observed option of every decision."""
        if not self.observations:
            return None
        scores = self._weighted_option_scores(weight)
        counts = self._option_counts()
        arch = []
        for k, allowed in enumerate(self.space.allowed):
            observed = [o for o in allowed if counts[k, o] > 0] or list(allowed)
            arch.append(max(observed, key=lambda o, k=k: (scores[k][o], -o)))
        return tuple(arch)


# ---------------------------------------------------------------------- helpers
def _soften(w: np.ndarray, floor: float = 0.1) -> list[float]:
    """Mix a simplex weight with the uniform one so that no objective is ignored."""
    w = np.asarray(w, dtype=float)
    w = (1.0 - floor) * w / w.sum() + floor / len(w)
    return [float(x) for x in w]


def _simplex_lattice(m: int, at_least: int) -> np.ndarray:
    """Das-Dennis points of the m-simplex: the coarsest lattice with ``at_least`` points."""
    if m == 1:
        return np.ones((1, 1))
    h = 1
    while True:
        pts = [c for c in itertools.product(range(h + 1), repeat=m) if sum(c) == h]
        if len(pts) >= at_least:
            return np.array(pts, dtype=float) / h
        h += 1
