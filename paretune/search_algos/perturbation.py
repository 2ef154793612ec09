"""Perturbation evolution: a PertNAS-style multi-objective search by one-edit perturbations.

PertNAS (Ahmad, Xie, Zhang, DAC 2023; ``docs/algorithms.md`` section 1) evolves a small population
of compact networks, perturbs one operation on one edge at a time, measures what each
perturbation does, keeps the operations whose perturbation matters ("motifs"), and narrows every
edge from all operations to the best two (coarse selection) and then to one (fine selection).
This engine is that loop as an asynchronous ask/tell engine over any discrete space and any
number of objectives. On a table (NB201) it is a **PertNAS-style approximation**, not PertNAS
itself: there is no weight sharing or recovery fine-tune, a perturbation is a one-edit change of
a single-path architecture, and its effect is the difference of two looked-up evaluations.

Design
------
* **Perturbations and the motif table.** Every proposal except a seed is a one-edit perturbation
  of an evaluated (or in-flight) parent: decision ``d`` changes from option ``a`` to ``b``. When
  both results are known, the effect ``child - parent`` per objective (minimisation units) is
  recorded; a failed child is recorded as a failure of ``(d, b)``, never as a zero. For each
  decision the option values ``v[d, o]`` are the ridge least-squares fit of ``v[b] - v[a]`` to
  the observed effects (so a change from any option informs both options involved), after
  normalising each effect by the running scale (the range of every value evaluated so far) and
  clipping it (``effect_clip``) so that a rare collapse does not drown every other observation.
  The motif table (:meth:`PerturbationEvolution.motif_table`) lists, per (decision, option), the
  count, the failures, the mean effect per objective relative to the decision's average option,
  a score and flags; it is derived from the stored observations, so it survives
  ``state_dict`` / ``load_state_dict``. An option is a *motif* when its effect vector is not
  dominated by another option of the same decision.
* **Population and lineages.** ``population_size`` lineages (PertNAS's ``P = 4`` population)
  each own one compact architecture, a trade-off weight vector over the objectives (round 0
  spreads them over the simplex, later rounds draw new ones) and a mask of allowed options per
  decision. A lineage runs PertNAS's phases:

  1. ``expand``: perturb its architecture once per decision (``perturbations_per_parent``), to
     the least observed option in round 0 (balanced motif coverage) and afterwards to the option
     the motif model expects to help most. All of these may be in flight at once.
  2. ``coarse``: once its own expand results are in, keep the ``coarse_keep`` options per
     decision with the best weighted motif score (paper: 2), and spend ``coarse_steps``
     evaluations on the most promising one-edit perturbations inside that mask around the
     lineage's best architectures (the motif model's prediction chooses them).
  3. ``fine``: visit the decisions one at a time (PertNAS's perturb-and-compare), evaluate the
     other kept option in the lineage's best architecture, and keep the one that scores better
     under the lineage's weights (paper: 1 option); the mask ends as a single architecture.

  Then the lineage starts a new round from the archive member that is best for a new trade-off
  weight, with the mask reset to the engine's space. Narrowing is therefore *per region of the
  front*: each lineage collapses to one architecture for its own trade-off, and successive rounds
  with different weights cover the front instead of collapsing the whole search onto one point.
* **Global narrowing.** An option whose motif effect is dominated, with margin and enough
  observations (``prune_min_count``), by another option of the same decision helps no trade-off
  under the motif model; it is removed from the engine's space (``self.space`` is restricted
  and stays restricted, also after ``load_state_dict``).
* **Archive local search.** A share ``local_fraction`` of the proposals, and every proposal for
  which no lineage has work (a lineage waiting for its own results), are one-edit perturbations
  of members of the Pareto archive of everything evaluated: the candidate whose optimistic
  motif-model prediction improves the archive (plus predictions for proposals in flight) by the
  largest additive epsilon is chosen. This phase is called ``local``.
* **Asynchrony.** There is no generation barrier: lineages wait only for their own results
  (expand -> coarse, and one comparison at a time in fine), while other lineages and the
  archive local search keep proposing. ``ask`` returns ``None`` only when no unproposed
  architecture is left in the space.

State (``state_dict``): the lineages, the perturbation observations (the motif table), the
parent links still waiting for a result, the pruned space, the round counter and the RNG. The
archive is derived from the history.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import moocore
import numpy as np

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos import register
from paretune.search_algos.base import Engine, Proposal, Record
from paretune.search_algos.random_search import UnseenSampler
from paretune.spaces.base import Arch, SearchSpace

PHASES = ("seed", "expand", "coarse", "fine", "local")


@dataclass
class Lineage:
    """One population member: a compact architecture, its trade-off weights and its narrowing.

    Attributes:
        slot: position in the population.
        round: how many PertNAS rounds this slot has started (0 for the first).
        weight: trade-off weights over the (normalised, minimised) objectives, summing to 1.
        phase: ``seed``, ``expand``, ``coarse`` or ``fine``.
        anchor: proposal id of the lineage's current architecture (its best so far).
        mask: per decision, the option indices this lineage may still use.
        members: proposal ids evaluated or proposed within this round of the lineage.
        waiting: proposal ids whose results the lineage needs before it can move on.
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


# Switches of the design under study (ablations); any other keyword is a mistake.
EXPERIMENTAL_PARAMS = (
    "uniform_design",
    "uniform_seeds",
    "balanced_expand",
    "motif_seeds",
    "local_layers",
    "local_parent",
    "hvc_gamma",
    "hvc_top",
    "lineage_scalar",
    "near_tol",
)


@register
class PerturbationEvolution(Engine):
    """PertNAS-style perturbation evolution with a multi-objective motif table.

    Args:
        space: the search space (possibly restricted).
        objectives: the objectives (directions and limits).
        seed: seed of the RNG.
        population_size: lineages run at once (PertNAS: 4).
        perturbations_per_parent: expand-phase perturbations per lineage round; ``None`` gives one
            per decision (PertNAS expands every edge of each member once).
        coarse_keep: options per decision kept by the coarse selection (PertNAS: 2).
        fine_keep: options per decision kept by the fine selection (PertNAS: 1).
        coarse_steps: evaluations per lineage round in the coarse phase; ``None`` gives one per
            decision.
        local_fraction: share of proposals spent on archive local search besides the lineages.
        exploration: optimism of the motif model (standard deviations subtracted from the
            predicted minimisation values).
        effect_clip: perturbation effects are clipped to this many running scales.
        prune_min_count: observations an option needs before it can be pruned from the space.
        prune_margin: how much (in running scales) a dominated option must be worse.
    """

    name = "pertnas"

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectiveSet,
        seed: int = 0,
        population_size: int = 4,
        perturbations_per_parent: int | None = None,
        coarse_keep: int = 2,
        fine_keep: int = 1,
        coarse_steps: int | None = None,
        local_fraction: float = 0.5,
        exploration: float = 0.5,
        effect_clip: float = 0.3,
        prune_min_count: int = 8,
        prune_margin: float = 0.0,
        acquisition: str = "hvi",
        hvi_candidates: int = 24,
        **extra: Any,
    ) -> None:
        super().__init__(space, objectives, seed=seed)
        unknown = sorted(set(extra) - set(EXPERIMENTAL_PARAMS))
        if unknown:
            raise TypeError(
                f"PerturbationEvolution got unknown parameters {unknown} "
                f"(experimental ones allowed: {sorted(EXPERIMENTAL_PARAMS)})"
            )
        self.params: dict[str, Any] = {
            "population_size": _positive_int("population_size", population_size),
            "perturbations_per_parent": _optional_positive(
                "perturbations_per_parent", perturbations_per_parent
            ),
            "coarse_keep": _positive_int("coarse_keep", coarse_keep),
            "fine_keep": _positive_int("fine_keep", fine_keep),
            "coarse_steps": _optional_positive("coarse_steps", coarse_steps, allow_zero=True),
            "local_fraction": _fraction("local_fraction", local_fraction),
            "exploration": _non_negative("exploration", exploration),
            "effect_clip": _positive_float("effect_clip", effect_clip),
            "prune_min_count": _positive_int("prune_min_count", prune_min_count),
            "prune_margin": _non_negative("prune_margin", prune_margin),
            "acquisition": str(acquisition),
            "hvi_candidates": _positive_int("hvi_candidates", hvi_candidates),
            **extra,
        }
        if self.params["fine_keep"] > self.params["coarse_keep"]:
            raise ValueError(f"fine_keep ({fine_keep}) must not exceed coarse_keep ({coarse_keep})")
        self._reset_dynamic_state()

    # ------------------------------------------------------------------ parameters
    @property
    def population_size(self) -> int:
        return self.params["population_size"]

    @property
    def perturbations_per_parent(self) -> int:
        p = self.params["perturbations_per_parent"]
        return self.space.num_decisions if p is None else p

    @property
    def coarse_steps(self) -> int:
        c = self.params["coarse_steps"]
        return self.space.num_decisions if c is None else c

    # ------------------------------------------------------------------ state bookkeeping
    def _reset_dynamic_state(self) -> None:
        m = len(self.objectives)
        self.lineages: list[Lineage] = []
        # Perturbation observations: [decision, old option, new option, effect list | None].
        self.observations: list[list[Any]] = []
        # child proposal id -> parent proposal id, for perturbations whose effect is not known yet.
        self._links: dict[int, int] = {}
        self._local_credit = 0.0
        self._turn = 0
        self._weight_order: list[int] = []
        self._uniform_order: list[int] = []
        self._design_done = False
        # Derived caches (rebuilt from the history).
        self._points = np.zeros((0, m))
        self._violations = np.zeros(0)
        self._by_id: dict[int, Proposal] = {}
        self._children: dict[int, int] = {}
        self._row_of_id: dict[int, int] = {}
        self._id_of_row: list[int] = []
        self._row_of_arch: dict[Arch, int] = {}
        self._failed: set[int] = set()
        self._front: list[int] = []
        self._sampler = UnseenSampler(self.space)
        self._model_cache: dict[str, Any] | None = None
        self._seen_cache: np.ndarray | None = None
        self._fronts_cache: tuple[int, list[list[int]]] | None = None
        sizes = [len(d.options) for d in self.space.decisions]
        self._num_options_max = max(sizes)
        radix = [1]
        for size in sizes[:-1]:
            radix.append(radix[-1] * size)
        # Architecture codes (mixed radix); Python integers when the space is too large for int64.
        dtype = np.int64 if radix[-1] * sizes[-1] < 2**62 else object
        self._radix = np.array(radix, dtype=dtype)
        self._seen_codes: list[int] = []

    def _state(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "lineages": [ln.to_dict() for ln in self.lineages],
            "observations": [list(o) for o in self.observations],
            "links": [[c, p] for c, p in self._links.items()],
            "local_credit": self._local_credit,
            "turn": self._turn,
            "weight_order": list(self._weight_order),
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.params = dict(state["params"])
        self._reset_dynamic_state()
        self.lineages = [Lineage.from_dict(d) for d in state["lineages"]]
        self.observations = [list(o) for o in state["observations"]]
        self._links = {int(c): int(p) for c, p in state["links"]}
        self._local_credit = float(state["local_credit"])
        self._turn = int(state["turn"])
        self._weight_order = [int(i) for i in state["weight_order"]]
        for record in self.history:
            self._ingest(record)
        for proposal in self.pending.values():
            self._mark_seen(proposal.arch)

    # ------------------------------------------------------------------ results
    def _on_result(self, record: Record) -> None:
        self._ingest(record)
        self._resolve_links(record.proposal.id)
        self._release(record.proposal.id)

    def _on_failure(self, record: Record) -> None:
        self._ingest(record)
        self._resolve_links(record.proposal.id)
        self._release(record.proposal.id)

    def _ingest(self, record: Record) -> None:
        """Add a finished record to the derived caches (points, archive, seen set)."""
        pid = record.proposal.id
        self._by_id[pid] = record.proposal
        self._mark_seen(record.proposal.arch)
        self._model_cache = None
        if record.failed:
            self._failed.add(pid)
            return
        arch = record.proposal.arch
        if arch in self._row_of_arch:  # a repeat: the archive keeps the first occurrence
            self._row_of_id[pid] = self._row_of_arch[arch]
            return
        row = len(self._id_of_row)
        point = self.objectives.vector(record.values)
        self._points = np.vstack([self._points, point[None, :]])
        self._violations = np.append(self._violations, self.objectives.violation(record.values))
        self._row_of_id[pid] = row
        self._id_of_row.append(pid)
        self._row_of_arch[arch] = row
        self._update_front(row)

    def _update_front(self, row: int) -> None:
        p, v = self._points[row], self._violations[row]
        front = np.array(self._front, dtype=int)
        if len(front):
            fp, fv = self._points[front], self._violations[front]
            if np.any(_cdom(fp, fv, p, v)):
                return
            keep = ~_cdom_rev(p, v, fp, fv)
            self._front = [int(r) for r in front[keep]]
        self._front.append(row)

    def _resolve_links(self, pid: int) -> None:
        """Record the effect of every perturbation whose child and parent are now both known."""
        finished = []
        for child, parent in self._links.items():
            if child == pid or parent == pid:
                if self._known(child) and self._known(parent):
                    finished.append(child)
        for child in sorted(finished):
            parent = self._links.pop(child)
            self._observe(child, parent)

    def _known(self, pid: int) -> bool:
        return pid in self._failed or pid in self._row_of_id

    def _observe(self, child: int, parent: int) -> None:
        if parent in self._failed:
            return  # nothing to compare with
        proposal = self._proposal(child)
        meta = proposal.meta
        d = int(meta["decision_index"])
        a, b = int(meta["old_index"]), int(meta["new_index"])
        if child in self._failed:
            self.observations.append([d, a, b, None])
        else:
            effect = self._points[self._row_of_id[child]] - self._points[self._row_of_id[parent]]
            self.observations.append([d, a, b, [float(x) for x in effect]])
        self._model_cache = None

    def _proposal(self, pid: int) -> Proposal:
        proposal = self.pending.get(pid)
        if proposal is None:
            proposal = self._by_id[pid]
        return proposal

    def _release(self, pid: int) -> None:
        for ln in self.lineages:
            if pid in ln.waiting:
                ln.waiting.remove(pid)

    # ------------------------------------------------------------------ proposing
    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        self._maybe_prune()
        if self._sampler.exhausted:
            return None
        if self.params.get("uniform_design", False) and not self._design_done:
            arch = self._uniform_seed()
            if arch is not None:
                return self._issue(
                    None, arch, self._meta(None, arch, None, "seed", None), wait=False
                )
            self._design_done = True
        if len(self.lineages) < self.population_size:
            if self.params.get("uniform_design", False) and self._front:
                return self._anchor_new_lineage()
            return self._seed_new_lineage()
        self._local_credit += self.params["local_fraction"]
        if self._local_credit >= 1.0:
            self._local_credit -= 1.0
            proposal = self._local_proposal()
            if proposal is not None:
                return proposal
        for _ in range(len(self.lineages)):
            ln = self.lineages[self._turn % len(self.lineages)]
            self._turn += 1
            proposal = self._lineage_step(ln)
            if proposal is not None:
                return proposal
        proposal = self._local_proposal()
        if proposal is not None:
            return proposal
        return self._random_proposal("local")

    def _seed_new_lineage(self) -> tuple[Arch, dict[str, Any]]:
        """A round-0 lineage: a seed that uses rarely-seeded options (balanced coverage)."""
        slot = len(self.lineages)
        ln = Lineage(slot=slot, round=0, weight=self._initial_weight(slot))
        ln.mask = [list(a) for a in self.space.allowed]
        self.lineages.append(ln)
        used = [np.zeros(len(d.options)) for d in self.space.decisions]
        for other in self.lineages[:-1]:
            if other.members:
                arch = self._proposal(other.members[0]).arch
                for k, o in enumerate(arch):
                    used[k][o] += 1
        arch = None
        if self.params.get("uniform_seeds", False):
            arch = self._uniform_seed()
        for _ in range(64 if arch is None else 0):
            arch = tuple(
                int(self.rng.choice([o for o in a if used[k][o] == min(used[k][i] for i in a)]))
                for k, a in enumerate(self.space.allowed)
            )
            if arch not in self._sampler.seen:
                break
        else:
            if arch is None or arch in self._sampler.seen:
                arch = self._sampler.sample(self.rng)
        meta = self._meta(None, arch, None, "seed", ln)
        return self._issue(ln, arch, meta, wait=True, anchor=True)

    def _anchor_new_lineage(self) -> tuple[Arch, dict[str, Any]] | None:
        """A round-0 lineage anchored on the archive member best for its weights."""
        slot = len(self.lineages)
        ln = Lineage(slot=slot, round=0, weight=self._initial_weight(slot))
        ln.mask = [list(a) for a in self.space.allowed]
        self.lineages.append(ln)
        rows = np.array(self._front)
        g = self._tchebycheff(rows, ln.weight)
        ln.anchor = self._id_of_row[int(rows[int(np.argmin(g))])]
        ln.members = [ln.anchor]
        ln.phase = "expand"
        ln.todo = self._expand_order()
        return self._propose()

    def _uniform_seed(self) -> Arch | None:
        """A not yet used single-operation cell (one option name on every decision), if any."""
        names = [
            set(d.options[i] for i in a)
            for d, a in zip(self.space.decisions, self.space.allowed, strict=True)
        ]
        common = sorted(
            set.intersection(*names), key=lambda n: self.space.decisions[0].options.index(n)
        )
        if not self._uniform_order:
            self._uniform_order = [int(i) for i in self.rng.permutation(len(common))]
        while self._uniform_order:
            name = common[self._uniform_order.pop(0)]
            arch = tuple(d.options.index(name) for d in self.space.decisions)
            if self._fresh(arch):
                return arch
        return None

    def _initial_weight(self, slot: int) -> list[float]:
        """Round-0 weights: each objective's corner first, then the centre of the simplex."""
        m = len(self.objectives)
        if slot < m:
            w = np.eye(m)[slot]
        elif slot == m:
            w = np.full(m, 1.0 / m)
        else:
            return self._new_weight()
        return _soften(w)

    def _new_weight(self) -> list[float]:
        """The next weight of a shuffled lattice on the simplex (cycled; fresh order per cycle)."""
        lattice = _simplex_lattice(len(self.objectives), max(2 * self.population_size, 8))
        if not self._weight_order:
            self._weight_order = [int(i) for i in self.rng.permutation(len(lattice))]
        return _soften(lattice[self._weight_order.pop(0)])

    def _issue(
        self, ln: Lineage | None, arch: Arch, meta: dict[str, Any], wait: bool, anchor: bool = False
    ) -> tuple[Arch, dict[str, Any]]:
        pid = self._next_id  # the id ``ask`` gives this proposal
        self._mark_seen(arch)
        if meta.get("parent") is not None:
            self._links[pid] = int(meta["parent"])
            self._children[int(meta["parent"])] = self._children.get(int(meta["parent"]), 0) + 1
        if ln is not None:
            ln.members.append(pid)
            if wait:
                ln.waiting.append(pid)
            if anchor:
                ln.anchor = pid
        return arch, meta

    def _meta(
        self,
        parent: int | None,
        arch: Arch,
        edit: tuple[int, int, int] | None,
        phase: str,
        ln: Lineage | None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "parent": parent,
            "parent_arch": None,
            "decision": None,
            "old_option": None,
            "new_option": None,
            "phase": phase,
            "generation": 0,
            "lineage": None if ln is None else ln.slot,
            "round": None if ln is None else ln.round,
        }
        if parent is not None and edit is not None:
            pp = self._proposal(parent)
            k, a, b = edit
            dec = self.space.decisions[k]
            meta.update(
                parent_arch=self.space.encode(pp.arch),
                decision=dec.name,
                old_option=dec.options[a],
                new_option=dec.options[b],
                generation=int(pp.meta.get("generation", 0)) + 1,
                decision_index=k,
                old_index=a,
                new_index=b,
            )
        return meta

    def _fresh(self, arch: Arch) -> bool:
        """True when ``arch`` is inside the space and was never proposed."""
        return arch not in self._sampler.seen and self.space.contains(arch)

    def _random_proposal(self, phase: str) -> tuple[Arch, dict[str, Any]] | None:
        arch = self._sampler.sample(self.rng)
        if arch is None:
            return None
        return self._issue(None, arch, self._meta(None, arch, None, phase, None), wait=False)

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
                    k = ln.todo.pop(0)
                    proposal = self._expand_proposal(ln, k)
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
                self._settle_anchor(ln)
                while ln.todo:
                    proposal = self._fine_proposal(ln, ln.todo[0])
                    if proposal is not None:
                        return proposal
                if ln.waiting:
                    return None
                if restarted:
                    return None
                restarted = True
                proposal = self._restart(ln, reseed=False)
                if proposal is not None:
                    return proposal

    def _expand_order(self) -> list[int]:
        n = self.space.num_decisions
        order = [int(k) for k in self.rng.permutation(n)]
        reps = self.perturbations_per_parent
        return [order[i % n] for i in range(reps)]

    def _expand_proposal(self, ln: Lineage, k: int) -> tuple[Arch, dict[str, Any]] | None:
        """Perturb decision ``k`` of the lineage's anchor."""
        parent = self._proposal(ln.anchor).arch
        options = [o for o in ln.mask[k] if o != parent[k]]
        cands = [parent[:k] + (o,) + parent[k + 1 :] for o in options]
        fresh = [(o, c) for o, c in zip(options, cands, strict=True) if self._fresh(c)]
        if not fresh:
            return None
        if ln.round == 0 and self.params.get("balanced_expand", True):
            counts = self._option_counts()[k]
            low = min(counts[o] for o, _ in fresh)
            pick = [(o, c) for o, c in fresh if counts[o] == low]
            o, child = pick[int(self.rng.integers(len(pick)))]
        else:
            scores = self._acquisition([(ln.anchor, k, parent[k], o) for o, _ in fresh], ln.weight)
            o, child = fresh[int(np.argmax(scores))]
        meta = self._meta(ln.anchor, child, (k, parent[k], o), "expand", ln)
        return self._issue(ln, child, meta, wait=True)

    def _enter_coarse(self, ln: Lineage) -> None:
        self._settle_anchor(ln)
        scores = self._weighted_option_scores(ln.weight)
        keep = self.params["coarse_keep"]
        mask = []
        for k, allowed in enumerate(self.space.allowed):
            opts = [o for o in ln.mask[k] if o in allowed]
            if not opts:
                opts = list(allowed)
            opts.sort(key=lambda o, k=k: (-scores[k][o], o))
            kept = opts[:keep]
            mask.append(sorted(kept))
        ln.mask = mask
        ln.phase = "coarse"
        ln.steps_left = self.coarse_steps
        ln.todo = []

    def _coarse_proposal(self, ln: Lineage) -> tuple[Arch, dict[str, Any]] | None:
        """The best one-edit perturbation inside the lineage's mask around its best members."""
        parents = self._lineage_parents(ln)
        cands = self._candidates(parents, ln.mask)
        if not len(cands):
            # Apply the motifs: move the anchor one edit into the mask.
            return self._project_proposal(ln)
        scores = self._acquisition(cands, ln.weight)
        pid, k, a, o = (int(x) for x in cands[int(np.argmax(scores))])
        arch = self._proposal(pid).arch
        child = arch[:k] + (o,) + arch[k + 1 :]
        meta = self._meta(pid, child, (k, a, o), "coarse", ln)
        return self._issue(ln, child, meta, wait=True)

    def _project_proposal(self, ln: Lineage) -> tuple[Arch, dict[str, Any]] | None:
        arch = self._proposal(ln.anchor).arch
        scores = self._weighted_option_scores(ln.weight)
        best = None
        for k, opts in enumerate(ln.mask):
            if arch[k] in opts:
                continue
            o = max(opts, key=lambda o, k=k: scores[k][o])
            child = arch[:k] + (o,) + arch[k + 1 :]
            if child in self._sampler.seen or not self.space.contains(child):
                continue
            gain = scores[k][o] - scores[k][arch[k]]
            if best is None or gain > best[0]:
                best = (gain, k, o, child)
        if best is None:
            return None
        _, k, o, child = best
        meta = self._meta(ln.anchor, child, (k, arch[k], o), "coarse", ln)
        return self._issue(ln, child, meta, wait=True)

    def _lineage_parents(self, ln: Lineage, limit: int = 4) -> list[int]:
        """The lineage's best evaluated members by its weighted Tchebycheff score."""
        rows = [self._row_of_id[p] for p in ln.members if p in self._row_of_id]
        if not rows:
            return [ln.anchor] if ln.anchor is not None else []
        rows = sorted(set(rows))
        g = self._tchebycheff(np.array(rows), ln.weight)
        order = np.argsort(g, kind="stable")[:limit]
        return [self._id_of_row[rows[int(i)]] for i in order]

    def _settle_anchor(self, ln: Lineage) -> None:
        """Move the anchor to the lineage's best evaluated member."""
        best = self._lineage_parents(ln, limit=1)
        if best and best[0] in self._row_of_id:
            ln.anchor = best[0]

    def _enter_fine(self, ln: Lineage) -> None:
        self._settle_anchor(ln)
        anchor = self._proposal(ln.anchor).arch
        # Decisions whose mask still has several options; the anchor's option is always kept.
        todo = []
        for k, opts in enumerate(ln.mask):
            if anchor[k] not in opts:
                opts.append(anchor[k])
                opts.sort()
            if len(opts) > self.params["fine_keep"]:
                todo.append(k)
        order = self.rng.permutation(len(todo))
        ln.todo = [todo[int(i)] for i in order]
        ln.phase = "fine"

    def _fine_proposal(self, ln: Lineage, k: int) -> tuple[Arch, dict[str, Any]] | None:
        """Compare the kept options of decision ``k`` in the anchor; narrow when all are known."""
        anchor = self._proposal(ln.anchor).arch
        opts = ln.mask[k]
        variants = {o: anchor[:k] + (o,) + anchor[k + 1 :] for o in opts}
        for o, child in variants.items():
            if child not in self._sampler.seen and self.space.contains(child):
                meta = self._meta(ln.anchor, child, (k, anchor[k], o), "fine", ln)
                return self._issue(ln, child, meta, wait=True)
        # Every variant is known (evaluated, failed or outside the space): keep the best ones.
        scored = []
        for o, child in variants.items():
            row = self._row_of_arch.get(child)
            if row is None:
                continue  # failed or never evaluated: not kept
            scored.append((float(self._tchebycheff(np.array([row]), ln.weight)[0]), o, row))
        scored.sort()
        keep = [o for _, o, _ in scored[: self.params["fine_keep"]]] or [anchor[k]]
        ln.mask[k] = sorted(keep)
        if scored:
            ln.anchor = self._id_of_row[scored[0][2]]
        ln.todo.pop(0)
        return None

    def _restart(self, ln: Lineage, reseed: bool) -> tuple[Arch, dict[str, Any]] | None:
        """Start the lineage's next round for new trade-off weights.

        The new compact architecture is the one that applies the best motif of every decision
        for the new weights when it was never evaluated (a seed built from the motif table);
        otherwise the archive member best for the new weights.
        """
        ln.round += 1
        ln.weight = self._new_weight()
        ln.mask = [list(a) for a in self.space.allowed]
        ln.members, ln.waiting, ln.todo = [], [], []
        ln.steps_left = 0
        motif_arch = self._motif_arch(ln.weight) if self.params.get("motif_seeds", True) else None
        if motif_arch is not None and self._fresh(motif_arch):
            ln.phase = "seed"
            meta = self._meta(None, motif_arch, None, "seed", ln)
            meta["source"] = "motifs"
            return self._issue(ln, motif_arch, meta, wait=True, anchor=True)
        if reseed or not self._front:
            arch = self._sampler.sample(self.rng)
            if arch is None:
                return None
            ln.phase = "seed"
            meta = self._meta(None, arch, None, "seed", ln)
            meta["source"] = "random"
            return self._issue(ln, arch, meta, wait=True, anchor=True)
        rows = np.array(self._front)
        g = self._tchebycheff(rows, ln.weight)
        ln.anchor = self._id_of_row[int(rows[int(np.argmin(g))])]
        ln.members = [ln.anchor]
        ln.phase = "expand"
        ln.todo = self._expand_order()
        return None

    def _motif_arch(self, weight: Sequence[float]) -> Arch | None:
        """The architecture with the best motif of every decision for ``weight``."""
        if not self.observations:
            return None
        scores = self._weighted_option_scores(weight)
        counts = self._option_counts()
        arch = []
        for k, allowed in enumerate(self.space.allowed):
            observed = [o for o in allowed if counts[k, o] > 0] or list(allowed)
            arch.append(max(observed, key=lambda o, k=k: (scores[k][o], -o)))
        return tuple(arch)

    # ------------------------------------------------------------------ archive local search
    def _local_proposal(self) -> tuple[Arch, dict[str, Any]] | None:
        cands = np.zeros((0, 4), dtype=np.int64)
        if self.params.get("local_parent", "all") == "hvc":
            for row in self._hvc_order():
                cands = self._archive_candidates([row])
                if len(cands):
                    break
        else:
            cands = self._archive_candidates(self._front)
        if not len(cands):
            rest = [r for layer in self._next_layers() for r in layer]
            cands = self._archive_candidates(rest)
        if not len(cands):
            return None
        scores = self._acquisition(cands, None)
        pid, k, a, o = (int(x) for x in cands[int(np.argmax(scores))])
        arch = self._proposal(pid).arch
        child = arch[:k] + (o,) + arch[k + 1 :]
        return self._issue(
            None, child, self._meta(pid, child, (k, a, o), "local", None), wait=False
        )

    def _hvc_order(self) -> list[int]:
        """Archive rows (and rows within ``near_tol`` of it) by discounted HV contribution."""
        rows = list(self._front)
        scale = self._scale()
        pts = self._points[rows] / scale
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        ref = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
        if len(rows) == 1:
            hvc = np.ones(1)
        else:
            uniq, inv = np.unique(pts, axis=0, return_inverse=True)
            hvc = moocore.hv_contributions(uniq, ref=ref)[np.asarray(inv).reshape(-1)]
        tol = self.params.get("near_tol", 0.0)
        if tol > 0 and len(self._points) > len(rows):
            others = np.setdiff1d(np.arange(len(self._points)), np.array(rows))
            q = self._points[others] / scale - tol
            dom = np.any(
                np.all(pts[None, :, :] <= q[:, None, :], axis=2)
                & np.any(pts[None, :, :] < q[:, None, :], axis=2),
                axis=1,
            )
            near = others[~dom & np.all(q < ref, axis=1)]
            if len(near):
                inside = pts[np.all(pts < ref, axis=1)]
                base = moocore.hypervolume(inside, ref=ref)
                gains = np.array(
                    [
                        moocore.hypervolume(
                            np.vstack([inside, self._points[r] / scale - tol]), ref=ref
                        )
                        - base
                        for r in near
                    ]
                )
                rows = rows + [int(r) for r in near]
                hvc = np.concatenate([hvc, gains])
        kids = np.array([self._children.get(self._id_of_row[r], 0) for r in rows], dtype=float)
        score = hvc / (1.0 + kids) ** self.params.get("hvc_gamma", 1.0)
        order = np.argsort(-score, kind="stable")
        return [rows[int(i)] for i in order]

    def _archive_candidates(self, rows: Sequence[int]) -> np.ndarray:
        return self._candidates([self._id_of_row[r] for r in rows], self.space.allowed)

    def _candidates(self, pids: Sequence[int], mask: Sequence[Sequence[int]]) -> np.ndarray:
        """Unproposed one-edit children ``(parent id, decision, old, new)`` inside ``mask``.

        A child must also lie inside the engine's space (a parent evaluated before a pruning
        may only be moved back inside).
        """
        if not len(pids):
            return np.zeros((0, 4), dtype=np.int64)
        D = self.space.num_decisions
        K = self._num_options_max
        ok = np.zeros((D, K), dtype=bool)
        inside = np.zeros((D, K), dtype=bool)
        for k, (m, a) in enumerate(zip(mask, self.space.allowed, strict=True)):
            inside[k, list(a)] = True
            ok[k, [o for o in m if o in a]] = True
        archs = np.array([self._proposal(p).arch for p in pids], dtype=np.int64)
        codes = archs.astype(self._radix.dtype) @ self._radix
        out_of_space = ~inside[np.arange(D)[None, :], archs]  # (n, D)
        n_out = out_of_space.sum(axis=1)
        seen = self._seen_array()
        parts = []
        for k in range(D):
            # Every other decision must be inside the space.
            other_ok = (n_out - out_of_space[:, k]) == 0
            opts = np.flatnonzero(ok[k])
            if not len(opts):
                continue
            sel = other_ok[:, None] & (archs[:, k][:, None] != opts[None, :])
            i, j = np.nonzero(sel)
            if len(i):
                parts.append(np.stack([i, np.full(len(i), k), archs[i, k], opts[j]], axis=1))
        if not parts:
            return np.zeros((0, 4), dtype=np.int64)
        cand = np.concatenate(parts)
        child = (
            codes[cand[:, 0]]
            + (cand[:, 3] - cand[:, 2]).astype(self._radix.dtype) * self._radix[cand[:, 1]]
        )
        cand = cand[~np.isin(child, seen)]
        # Duplicate children (two parents, same child) are fine: the best-scored one is taken.
        cand[:, 0] = np.asarray(pids, dtype=np.int64)[cand[:, 0]]
        return cand

    def _seen_array(self) -> np.ndarray:
        if self._seen_cache is None or len(self._seen_cache) != len(self._seen_codes):
            self._seen_cache = np.array(self._seen_codes, dtype=self._radix.dtype)
        return self._seen_cache

    def _mark_seen(self, arch: Arch) -> None:
        if arch not in self._sampler.seen:
            self._sampler.add(arch)
            self._seen_codes.append(
                sum(int(o) * int(r) for o, r in zip(arch, self._radix, strict=True))
            )

    def _next_layers(self) -> list[list[int]]:
        """Rows of the next non-dominated layers after the archive (at least 32 rows in all)."""
        n = len(self._id_of_row)
        if n == 0:
            return []
        if self._fronts_cache is None or self._fronts_cache[0] != n:
            rest = np.setdiff1d(np.arange(n), np.array(self._front, dtype=int))
            out: list[list[int]] = []
            size = 0
            while len(rest) and (size < 32 or len(out) < 3):
                # Feasible points first, by non-domination; infeasible ones by violation.
                feasible = rest[self._violations[rest] <= 0]
                if len(feasible):
                    layer = feasible[moocore.is_nondominated(self._points[feasible])]
                else:
                    layer = rest[np.argsort(self._violations[rest], kind="stable")[:8]]
                out.append([int(r) for r in layer])
                size += len(layer)
                rest = np.setdiff1d(rest, layer)
            self._fronts_cache = (n, out)
        return self._fronts_cache[1]

    # ------------------------------------------------------------------ motif model
    def _scale(self) -> np.ndarray:
        if self._model_cache is not None:
            return self._model_cache["scale"]
        if len(self._points) < 2:
            return np.ones(len(self.objectives))
        span = self._points.max(axis=0) - self._points.min(axis=0)
        return np.where(span > 0, span, 1.0)

    def _model(self) -> dict[str, Any]:
        """Option values per decision (normalised), residual spread and counts, cached."""
        if self._model_cache is not None:
            return self._model_cache
        D = self.space.num_decisions
        K = max(len(d.options) for d in self.space.decisions)
        m = len(self.objectives)
        scale = self._scale()
        clip = self.params["effect_clip"]
        lap = np.zeros((D, K, K))
        rhs = np.zeros((D, K, m))
        counts = np.zeros((D, K))
        fails = np.zeros((D, K))
        obs = [o for o in self.observations if o[3] is not None]
        for d, _a, b, effect in self.observations:
            if effect is None:
                fails[d, b] += 1
        values = np.zeros((D, K, m))
        resid = np.full(m, 0.1)
        if obs:
            arr = np.array([[o[0], o[1], o[2]] for o in obs], dtype=int)
            eff = np.clip(np.array([o[3] for o in obs]) / scale, -clip, clip)
            d, a, b = arr[:, 0], arr[:, 1], arr[:, 2]
            np.add.at(lap, (d, a, a), 1.0)
            np.add.at(lap, (d, b, b), 1.0)
            np.add.at(lap, (d, a, b), -1.0)
            np.add.at(lap, (d, b, a), -1.0)
            np.add.at(rhs, (d, b), eff)
            np.add.at(rhs, (d, a), -eff)
            np.add.at(counts, (d, a), 1.0)
            np.add.at(counts, (d, b), 1.0)
            ridge = 0.5
            values = np.linalg.solve(lap + ridge * np.eye(K)[None], rhs)
            pred = values[d, b] - values[d, a]
            n = len(obs)
            resid = np.sqrt((np.sum((eff - pred) ** 2, axis=0) + 0.01 * 2) / (n + 2))
        self._model_cache = {
            "scale": scale,
            "values": values,
            "counts": counts,
            "fails": fails,
            "resid": resid,
        }
        return self._model_cache

    def _option_counts(self) -> np.ndarray:
        return self._model()["counts"] + self._model()["fails"]

    def _weighted_option_scores(self, weight: Sequence[float]) -> np.ndarray:
        """Per (decision, option): higher is better for the trade-off ``weight``."""
        model = self._model()
        w = np.asarray(weight)
        score = -(model["values"] @ w)
        total = model["counts"] + model["fails"]
        fail_rate = np.where(total > 0, model["fails"] / np.maximum(total, 1), 0.0)
        return score - fail_rate

    def _acquisition(
        self,
        cands: np.ndarray | Sequence[tuple[int, int, int, int]],
        weight: Sequence[float] | None,
    ) -> np.ndarray:
        """Optimistic additive-epsilon improvement of each candidate over the archive."""
        model = self._model()
        scale = model["scale"]
        values, counts, resid = model["values"], model["counts"], model["resid"]
        cands = np.asarray(cands, dtype=np.int64).reshape(-1, 4)
        parent_rows = np.array(
            [self._row_of_id.get(int(p), -1) for p in cands[:, 0]], dtype=np.int64
        )
        k, a, b = cands[:, 1], cands[:, 2], cands[:, 3]
        known = parent_rows >= 0
        base = np.zeros((len(cands), len(scale)))
        if known.any():
            base[known] = self._points[parent_rows[known]] / scale
        if (~known).any():  # parent in flight: use its own prediction (or the archive's mean)
            base[~known] = self._front_points().mean(axis=0) if self._front else 0.0
        mu = base + values[k, b] - values[k, a]
        sd = (
            resid[None, :]
            * np.sqrt(1.0 / (1.0 + counts[k, a]) + 1.0 / (1.0 + counts[k, b]))[:, None]
        )
        if self.params["acquisition"] == "random":
            return self.rng.random(len(cands))
        if self.params["acquisition"] == "ts":
            y = mu + self.params["exploration"] * sd * self.rng.standard_normal(mu.shape)
        else:
            y = mu - self.params["exploration"] * sd
        ref = self._reference_points()
        if len(ref) == 0:
            score = -y.sum(axis=1)
        else:
            score = np.min(np.max(ref[None, :, :] - y[:, None, :], axis=2), axis=1)
        total = counts + model["fails"]
        fail_rate = np.where(total > 0, model["fails"] / np.maximum(total, 1), 0.0)
        score = score - fail_rate[k, b]
        if self.params["acquisition"] == "hvi" and len(ref) and len(cands) > 1:
            score = self._hvi_rerank(y, ref, score)
        if weight is not None and self.params.get("lineage_scalar", True):
            # A lineage works for its own trade-off: the predicted weighted Tchebycheff value.
            w = np.asarray(weight)
            ideal = self._points.min(axis=0) / scale
            z = y - ideal
            g = np.max(w * z, axis=1) + 1e-3 * (z @ w)
            score = -g - fail_rate[k, b] + 1e-3 * np.tanh(score)
        elif weight is not None:
            w = np.asarray(weight)
            score = score - 1e-3 * (y @ w)
        return score + 1e-9 * self.rng.random(len(cands))

    def _hvi_rerank(self, y: np.ndarray, ref: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Rank the best candidates by epsilon by their hypervolume improvement instead."""
        top = np.argsort(-eps, kind="stable")[: self.params["hvi_candidates"]]
        lo, hi = ref.min(axis=0), ref.max(axis=0)
        r = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
        inside = ref[np.all(ref < r, axis=1)]
        base = moocore.hypervolume(inside, ref=r) if len(inside) else 0.0
        out = eps - (np.max(eps[top]) - np.min(eps) + 1.0) * 2  # everything else ranks below
        for i in top:
            yi = np.minimum(y[i], r - 1e-9)
            hv = moocore.hypervolume(np.vstack([inside, yi[None, :]]), ref=r)
            out[i] = (hv - base) * 1e3 + eps[i] * 1e-3
        return out

    def _front_points(self) -> np.ndarray:
        return self._points[np.array(self._front, dtype=int)] / self._scale()

    def _reference_points(self) -> np.ndarray:
        pts = [self._front_points()] if self._front else []
        fantasies = self._fantasies()
        if len(fantasies):
            pts.append(fantasies)
        return np.vstack(pts) if pts else np.zeros((0, len(self.objectives)))

    def _fantasies(self) -> np.ndarray:
        """Predicted points of pending perturbations, so concurrent proposals spread out."""
        model = self._model()
        scale = model["scale"]
        out = []
        for p in self.pending.values():
            meta = p.meta
            parent = meta.get("parent")
            if parent is None or parent not in self._row_of_id:
                continue
            k, a, b = meta["decision_index"], meta["old_index"], meta["new_index"]
            out.append(
                self._points[self._row_of_id[parent]] / scale
                + model["values"][k, b]
                - model["values"][k, a]
            )
        return np.array(out) if out else np.zeros((0, len(self.objectives)))

    def _tchebycheff(self, rows: np.ndarray, weight: Sequence[float]) -> np.ndarray:
        """Weighted Tchebycheff distance of rows to the ideal point (normalised; lower is better)."""
        scale = self._scale()
        ideal = self._points.min(axis=0)
        z = (self._points[rows] - ideal) / scale
        w = np.asarray(weight)
        return np.max(w * z, axis=1) + 1e-3 * (z @ w)

    # ------------------------------------------------------------------ global narrowing
    def _maybe_prune(self) -> None:
        """Remove options whose motif effect is dominated by another option of the decision."""
        model = self._model()
        values, counts, fails = model["values"], model["counts"], model["fails"]
        min_count = self.params["prune_min_count"]
        margin = self.params["prune_margin"]
        new_allowed = []
        changed = False
        for k, allowed in enumerate(self.space.allowed):
            keep = []
            for o in allowed:
                dominated = False
                if counts[k, o] + fails[k, o] >= min_count:
                    for q in allowed:
                        if q == o or counts[k, q] < min_count:
                            continue
                        diff = values[k, o] - values[k, q]
                        if np.all(diff >= margin) and np.any(diff > margin):
                            dominated = True
                            break
                if not dominated:
                    keep.append(o)
            if len(keep) < len(allowed):
                changed = True
            new_allowed.append(keep or list(allowed))
        if changed:
            self.space = self.space.restrict(new_allowed)
            seen = self._sampler.seen
            self._sampler = UnseenSampler(self.space, seen)
            for ln in self.lineages:
                ln.mask = [
                    [o for o in m if o in a] or list(a)
                    for m, a in zip(ln.mask, self.space.allowed, strict=True)
                ]

    # ------------------------------------------------------------------ inspection
    def motif_table(self) -> list[dict[str, Any]]:
        """One row per (decision, option): count, failures, mean effects, score and flags.

        ``effect_<objective>`` is the option's fitted effect in running scales of that objective
        (minimisation units, relative to the decision's average option: negative helps);
        ``score`` is minus their mean (higher is better); ``motif`` says the effect vector is not
        dominated within the decision; ``kept`` says the option is still in the engine's space.
        """
        model = self._model()
        values, counts, fails = model["values"], model["counts"], model["fails"]
        names = self.objectives.names
        rows = []
        for k, dec in enumerate(self.space.decisions):
            opts = list(range(len(dec.options)))
            observed = [o for o in opts if counts[k, o] > 0]
            centre = values[k, observed].mean(axis=0) if observed else np.zeros(len(names))
            for o in opts:
                eff = values[k, o] - centre
                dominated = any(
                    np.all(values[k, q] <= values[k, o]) and np.any(values[k, q] < values[k, o])
                    for q in observed
                    if q != o
                )
                row: dict[str, Any] = {
                    "decision": dec.name,
                    "option": dec.options[o],
                    "count": int(counts[k, o]),
                    "failures": int(fails[k, o]),
                }
                for j, n in enumerate(names):
                    row[f"effect_{n}"] = float(eff[j]) if counts[k, o] > 0 else float("nan")
                row["score"] = float(-eff.mean()) if counts[k, o] > 0 else float("nan")
                row["motif"] = bool(counts[k, o] > 0 and not dominated)
                row["kept"] = bool(o in self.space.allowed[k])
                rows.append(row)
        return rows


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
        pts = [
            np.array(c, dtype=float) / h
            for c in itertools.product(range(h + 1), repeat=m)
            if sum(c) == h
        ]
        if len(pts) >= at_least:
            return np.stack(pts)
        h += 1


def _cdom(fp: np.ndarray, fv: np.ndarray, p: np.ndarray, v: float) -> np.ndarray:
    """Which rows of ``fp`` (violations ``fv``) constrained-dominate the point ``p``."""
    le = np.all(fp <= p, axis=1)
    lt = np.any(fp < p, axis=1)
    feas = fv <= 0
    if v <= 0:
        return feas & le & lt
    return feas | (~feas & (fv < v))


def _cdom_rev(p: np.ndarray, v: float, fp: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Which rows of ``fp`` are constrained-dominated by the point ``p``."""
    le = np.all(p <= fp, axis=1)
    lt = np.any(p < fp, axis=1)
    feas = fv <= 0
    if v <= 0:
        return (feas & le & lt) | ~feas
    return ~feas & (v < fv)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _optional_positive(name: str, value: Any, allow_zero: bool = False) -> int | None:
    if value is None:
        return None
    if allow_zero and not isinstance(value, bool) and int(value) == value and int(value) == 0:
        return 0
    return _positive_int(name, value)


def _fraction(name: str, value: Any) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return v


def _non_negative(name: str, value: Any) -> float:
    v = float(value)
    if not v >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def _positive_float(name: str, value: Any) -> float:
    v = float(value)
    if not v > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v
