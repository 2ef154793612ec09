"""Perturbation evolution: a PertNAS-style multi-objective search by one-edit perturbations.

PertNAS (Ahmad, Xie, Zhang, DAC 2023; ``docs/algorithms.md`` section 1) evolves a small population
of compact networks, perturbs one operation on one edge at a time, measures what each
perturbation does, keeps the operations whose perturbation matters ("motifs"), and narrows every
edge from all operations to the best two (coarse selection) and then to one (fine selection).
This engine is that loop as an asynchronous ask/tell engine over any discrete space and any
number of objectives. On a table (NB201) it is a **PertNAS-style approximation**, not PertNAS
itself: there is no weight sharing and no recovery fine-tune inside the engine (with real
training the trainable inherits the parent's weights, see ``meta["parent"]``), a perturbation is
a one-edit change of a single-path architecture, and its effect is the difference of two
evaluations.

Design
------
* **Perturbations and the motif table.** Every proposal except a seed is a one-edit perturbation
  of a parent: decision ``d`` changes from option ``a`` to ``b``. When both results are known the
  effect ``child - parent`` per objective (minimisation units) is recorded; a failed child is
  recorded as a failure of ``(d, b)``, never as a zero. Per decision, option values ``v[d, o]``
  are the ridge least-squares fit of ``v[b] - v[a]`` to the observed effects (so a change from
  any option informs both options involved), after dividing each effect by the running scale
  (the range of everything evaluated so far) and clipping it (``effect_clip``) so that a rare
  collapse does not drown every other observation. :meth:`PerturbationEvolution.motif_table`
  lists, per (decision, option), counts, failures, the effect per objective, a score and flags.
  An option is a *motif* when its effect vector is not dominated by another option of the same
  decision. The table is derived from the stored observations, so it survives a state round trip.
* **Initial design.** The search starts with the single-operation cells (one option on every
  decision, for each option name that every decision offers; e.g. "all ``nor_conv_3x3``",
  "all ``skip_connect``"), which span the cost extremes of a cell space. ``initial_design =
  "random"`` (or a space whose decisions share no option name) skips this.
* **Population and lineages.** ``population_size`` lineages (PertNAS's ``P = 4``) each own a
  compact architecture (its *anchor*), a trade-off weight vector over the objectives (round 0:
  each objective's corner, then the centre; later rounds walk a shuffled simplex lattice) and a
  mask of allowed options per decision. A lineage runs PertNAS's phases:

  1. ``expand``: perturb its anchor once per decision (``perturbations_per_parent``): in round 0
     to the least observed option (balanced motif coverage), later to the option the motif
     model predicts best for the lineage's weights. All of these may be in flight at once.
  2. ``coarse``: once its own expand results are in, keep per decision the ``coarse_keep``
     options with the best weighted motif score (paper: 2) and spend ``coarse_steps``
     evaluations on the one-edit perturbations inside that mask, around the lineage's best
     members, that the motif model predicts best for the lineage's weights.
  3. ``fine``: visit the decisions one at a time (PertNAS's perturb-and-compare), evaluate the
     other kept option in the anchor, and keep the ``fine_keep`` option(s) that score better under
     the lineage's weights (paper: 1); the mask ends as a single architecture.

  The lineage then starts a new round with new weights from a new compact architecture: the one
  that applies the best motif of every decision for those weights (when never evaluated), else
  the archive member best for them, with the mask reset. Narrowing is therefore *per region of
  the front*: each lineage collapses to one architecture for its own trade-off, and rounds with
  different weights cover the front instead of collapsing the search onto one point.
* **Archive local search** (phase ``local``, a share ``local_fraction`` of the proposals, and any
  proposal for which no lineage has work). Parents are the members of the Pareto archive of
  everything evaluated, taken in order of their exclusive hypervolume contribution divided by
  ``(1 + children already proposed) ** parent_discount`` (so the search spreads along the front
  and keeps returning to its most valuable regions); the child is the parent's unproposed
  one-edit neighbour whose optimistic motif-model prediction (``exploration`` residual standard
  deviations better than the mean) improves the archive (plus the predictions for proposals in
  flight) by the largest additive epsilon.
* **Global narrowing.** An option whose fitted effect is dominated, by more than
  ``prune_margin`` running scales on every objective and with at least ``prune_min_count``
  observations on both sides, by another option of the same decision helps no trade-off under
  the motif model: it is removed from the engine's space (``self.space`` is restricted and
  stays restricted, also after ``load_state_dict``).
* **Asynchrony.** There is no generation barrier: a lineage waits only for its own results
  (expand -> coarse, and one comparison at a time in fine) while the other lineages and the
  archive local search keep proposing. ``ask`` returns ``None`` only when no unproposed
  architecture is left in the space.

Proposal metadata: ``parent`` (proposal id or ``None`` for seeds), ``parent_arch`` (encoded),
``decision``, ``old_option``, ``new_option``, ``phase`` (``seed``, ``expand``, ``coarse``,
``fine`` or ``local``), ``generation`` (parent's + 1; seeds 0), ``lineage`` and ``round`` (or
``None``), ``source`` for seeds (``design``, ``balanced``, ``motifs``, ``random``), and the edit
as indices (``decision_index``, ``old_index``, ``new_index``).

State (``state_dict``): parameters, lineages, perturbation observations (the motif table),
parent links still waiting for a result, the weight and design cursors, the pruned space and
the RNG (the last two through the base class). The archive and all caches are derived from the
history.

Parameter defaults: ``population_size=4``, ``coarse_keep=2``, ``fine_keep=1`` are the paper's.
The others were chosen on the NB201 table with seeds disjoint from the benchmark's (see the
parameter list).
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
from paretune.search_algos.base import Engine, InspectionTable, Proposal, Record
from paretune.search_algos.random_search import UnseenSampler
from paretune.spaces.base import Arch, SearchSpace

PHASES = ("seed", "expand", "coarse", "fine", "local")
INITIAL_DESIGNS = ("uniform", "random")
_RIDGE = 0.5  # prior strength pulling option values towards "no effect"


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
            decision (as many as the expand phase).
        local_fraction: share of the proposals spent on archive local search (0.75: lineages
            alone cover the front too slowly, local search alone loses the motif rounds).
        parent_discount: exponent of the discount of an archive member's hypervolume
            contribution by the children already proposed from it (3: breadth along the front).
        exploration: optimism of the motif model's predictions, in residual standard deviations.
        effect_clip: perturbation effects are clipped to this many running scales.
        prune_min_count: observations both options need before one can prune the other.
        prune_margin: by how much (running scales, every objective) a pruned option is worse.
        initial_design: ``"uniform"`` starts from the single-operation cells, ``"random"`` from
            balanced random seeds.
        motif_seeds: start later lineage rounds from the architecture that applies the best motif
            of every decision for the round's weights.
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
        local_fraction: float = 0.75,
        parent_discount: float = 3.0,
        exploration: float = 2.0,
        effect_clip: float = 0.3,
        prune_min_count: int = 30,
        prune_margin: float = 0.02,
        initial_design: str = "uniform",
        motif_seeds: bool = True,
    ) -> None:
        super().__init__(space, objectives, seed=seed)
        if initial_design not in INITIAL_DESIGNS:
            raise ValueError(
                f"initial_design must be one of {list(INITIAL_DESIGNS)}, got {initial_design!r}"
            )
        self.params: dict[str, Any] = {
            "population_size": _positive_int("population_size", population_size),
            "perturbations_per_parent": _optional_int(
                "perturbations_per_parent", perturbations_per_parent, minimum=1
            ),
            "coarse_keep": _positive_int("coarse_keep", coarse_keep),
            "fine_keep": _positive_int("fine_keep", fine_keep),
            "coarse_steps": _optional_int("coarse_steps", coarse_steps, minimum=0),
            "local_fraction": _fraction("local_fraction", local_fraction),
            "parent_discount": _non_negative("parent_discount", parent_discount),
            "exploration": _non_negative("exploration", exploration),
            "effect_clip": _positive_float("effect_clip", effect_clip),
            "prune_min_count": _positive_int("prune_min_count", prune_min_count),
            "prune_margin": _non_negative("prune_margin", prune_margin),
            "initial_design": initial_design,
            "motif_seeds": bool(motif_seeds),
        }
        if self.params["fine_keep"] > self.params["coarse_keep"]:
            raise ValueError(f"fine_keep ({fine_keep}) must not exceed coarse_keep ({coarse_keep})")
        self._reset()

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

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        """Empty engine state and derived caches (the caches are rebuilt from the history)."""
        m = len(self.objectives)
        self.lineages: list[Lineage] = []
        # Perturbation observations: [decision, old option, new option, effect list | None].
        self.observations: list[list[Any]] = []
        # child proposal id -> parent proposal id, for perturbations whose effect is not known yet.
        self._links: dict[int, int] = {}
        self._local_credit = 0.0
        self._turn = 0
        self._weight_order: list[int] = []
        self._design_order: list[int] | None = None
        self._design_done = self.params["initial_design"] != "uniform"
        self._anchor_on_archive = True
        # Derived caches.
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
        self._layers_cache: tuple[int, list[int]] | None = None
        sizes = [len(d.options) for d in self.space.decisions]
        radix = [1]
        for size in sizes[:-1]:
            radix.append(radix[-1] * size)
        # Architecture codes (mixed radix); Python integers when the space is too large for int64.
        dtype = np.int64 if radix[-1] * sizes[-1] < 2**62 else object
        self._radix = np.array(radix, dtype=dtype)
        self._seen_codes: list[int] = []
        self._seen_cache: np.ndarray | None = None

    def _state(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "lineages": [ln.to_dict() for ln in self.lineages],
            "observations": [list(o) for o in self.observations],
            "links": [[c, p] for c, p in self._links.items()],
            "local_credit": self._local_credit,
            "turn": self._turn,
            "weight_order": list(self._weight_order),
            "design_order": None if self._design_order is None else list(self._design_order),
            "design_done": self._design_done,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.params = dict(state["params"])
        self._reset()
        self.lineages = [Lineage.from_dict(d) for d in state["lineages"]]
        self.observations = [list(o) for o in state["observations"]]
        self._links = {int(c): int(p) for c, p in state["links"]}
        self._local_credit = float(state["local_credit"])
        self._turn = int(state["turn"])
        self._weight_order = [int(i) for i in state["weight_order"]]
        order = state["design_order"]
        self._design_order = None if order is None else [int(i) for i in order]
        self._design_done = bool(state["design_done"])
        proposals = [r.proposal for r in self.history] + list(self.pending.values())
        for proposal in sorted(proposals, key=lambda p: p.id):
            self._count_child(proposal.meta)
        for record in self.history:
            self._ingest(record)
        for proposal in self.pending.values():
            self._mark_seen(proposal.arch)

    # ------------------------------------------------------------------ results
    def _on_result(self, record: Record) -> None:
        self._finish(record)

    def _on_failure(self, record: Record) -> None:
        self._finish(record)

    def _finish(self, record: Record) -> None:
        pid = record.proposal.id
        self._ingest(record)
        self._resolve_links(pid)
        for ln in self.lineages:
            if pid in ln.waiting:
                ln.waiting.remove(pid)

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
        self._points = np.vstack([self._points, self.objectives.vector(record.values)[None, :]])
        self._violations = np.append(self._violations, self.objectives.violation(record.values))
        self._row_of_id[pid] = row
        self._id_of_row.append(pid)
        self._row_of_arch[arch] = row
        self._update_front(row)

    def _update_front(self, row: int) -> None:
        """Keep ``_front`` the constrained non-dominated rows after adding ``row``."""
        p, v = self._points[row], self._violations[row]
        front = np.array(self._front, dtype=int)
        if len(front):
            fp, fv = self._points[front], self._violations[front]
            if np.any(_dominating(fp, fv, p, v)):
                return
            self._front = [int(r) for r in front[~_dominated_by(p, v, fp, fv)]]
        self._front.append(row)

    def _resolve_links(self, pid: int) -> None:
        """Record the effect of every perturbation whose child and parent are now both known."""
        done = [
            c for c, p in self._links.items() if pid in (c, p) and self._known(c) and self._known(p)
        ]
        for child in sorted(done):
            parent = self._links.pop(child)
            if parent in self._failed:
                continue  # nothing to compare with
            meta = self._proposal(child).meta
            d, a, b = int(meta["decision_index"]), int(meta["old_index"]), int(meta["new_index"])
            if child in self._failed:
                self.observations.append([d, a, b, None])
            else:
                effect = self._point(child) - self._point(parent)
                self.observations.append([d, a, b, [float(x) for x in effect]])
            self._model_cache = None

    def _known(self, pid: int) -> bool:
        return pid in self._failed or pid in self._row_of_id

    def _point(self, pid: int) -> np.ndarray:
        return self._points[self._row_of_id[pid]]

    def _proposal(self, pid: int) -> Proposal:
        proposal = self.pending.get(pid)
        return proposal if proposal is not None else self._by_id[pid]

    # ------------------------------------------------------------------ proposing
    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        self._maybe_prune()
        if self._sampler.exhausted:
            return None
        if not self._design_done:
            arch = self._design_cell()
            if arch is not None:
                meta = self._meta(None, None, "seed", None)
                meta["source"] = "design"
                return self._issue(None, arch, meta)
            self._design_done = True
        while len(self.lineages) < self.population_size:
            proposal = self._new_lineage()
            if proposal is not None:
                return proposal
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
        arch = self._sampler.sample(self.rng)
        if arch is None:
            return None
        meta = self._meta(None, None, "seed", None)
        meta["source"] = "random"
        return self._issue(None, arch, meta)

    def _issue(
        self,
        ln: Lineage | None,
        arch: Arch,
        meta: dict[str, Any],
        wait: bool = False,
        anchor: bool = False,
    ) -> tuple[Arch, dict[str, Any]]:
        """Book-keep a proposal that ``ask`` is about to make (with id ``self._next_id``)."""
        pid = self._next_id
        self._mark_seen(arch)
        if meta.get("parent") is not None:
            self._links[pid] = int(meta["parent"])
        self._count_child(meta)
        if ln is not None:
            ln.members.append(pid)
            if wait:
                ln.waiting.append(pid)
            if anchor:
                ln.anchor = pid
        return arch, meta

    def _count_child(self, meta: Mapping[str, Any]) -> None:
        parent = meta.get("parent")
        if parent is not None:
            self._children[int(parent)] = self._children.get(int(parent), 0) + 1

    def _meta(
        self,
        parent: int | None,
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
                decision_index=int(k),
                old_index=int(a),
                new_index=int(b),
            )
        return meta

    def _perturbation(
        self, ln: Lineage | None, parent: int, k: int, new: int, phase: str, wait: bool = True
    ) -> tuple[Arch, dict[str, Any]]:
        """Issue the child of ``parent`` with decision ``k`` set to option ``new``."""
        arch = self._proposal(parent).arch
        child = arch[:k] + (int(new),) + arch[k + 1 :]
        meta = self._meta(parent, (k, arch[k], int(new)), phase, ln)
        return self._issue(ln, child, meta, wait=wait and ln is not None)

    def _fresh(self, arch: Arch) -> bool:
        """True when ``arch`` is inside the space and was never proposed."""
        return arch not in self._sampler.seen and self.space.contains(arch)

    def _mark_seen(self, arch: Arch) -> None:
        if arch not in self._sampler.seen:
            self._sampler.add(arch)
            self._seen_codes.append(
                sum(int(o) * int(r) for o, r in zip(arch, self._radix, strict=True))
            )

    def _seen_array(self) -> np.ndarray:
        if self._seen_cache is None or len(self._seen_cache) != len(self._seen_codes):
            self._seen_cache = np.array(self._seen_codes, dtype=self._radix.dtype)
        return self._seen_cache

    # ------------------------------------------------------------------ initial design, seeds
    def _design_cell(self) -> Arch | None:
        """The next unproposed single-operation cell (one option name on every decision)."""
        names = [
            {d.options[i] for i in a}
            for d, a in zip(self.space.decisions, self.space.allowed, strict=True)
        ]
        common = sorted(
            set.intersection(*names), key=lambda n: self.space.decisions[0].options.index(n)
        )
        if self._design_order is None:
            self._design_order = [int(i) for i in self.rng.permutation(len(common))]
        while self._design_order:
            name = common[self._design_order.pop(0)]
            arch = tuple(d.options.index(name) for d in self.space.decisions)
            if self._fresh(arch):
                return arch
        return None

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

    # ------------------------------------------------------------------ archive local search
    def _local_proposal(self) -> tuple[Arch, dict[str, Any]] | None:
        """Perturb the most valuable archive member with unproposed neighbours."""
        cands = np.zeros((0, 4), dtype=np.int64)
        for row in self._archive_order():
            cands = self._candidates([self._id_of_row[row]], self.space.allowed)
            if len(cands):
                break
        if not len(cands):  # the archive's neighbourhoods are exhausted: the next layers
            pids = [self._id_of_row[r] for r in self._next_layers()]
            cands = self._candidates(pids, self.space.allowed)
        if not len(cands):
            return None
        pid, k, _, o = (int(x) for x in cands[int(np.argmax(self._acquisition(cands, None)))])
        return self._perturbation(None, pid, k, o, "local")

    def _archive_order(self) -> list[int]:
        """Archive rows by hypervolume contribution discounted by their children so far."""
        rows = list(self._front)
        if len(rows) <= 1:
            return rows
        pts = self._points[rows] / self._scale()
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        ref = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
        uniq, inv = np.unique(pts, axis=0, return_inverse=True)
        hvc = moocore.hv_contributions(uniq, ref=ref)[np.asarray(inv).reshape(-1)]
        kids = np.array([self._children.get(self._id_of_row[r], 0) for r in rows], dtype=float)
        score = hvc / (1.0 + kids) ** self.params["parent_discount"]
        return [rows[int(i)] for i in np.argsort(-score, kind="stable")]

    def _next_layers(self) -> list[int]:
        """Rows of the next non-dominated layers after the archive (at least 32 rows)."""
        n = len(self._id_of_row)
        if self._layers_cache is None or self._layers_cache[0] != n:
            rest = np.setdiff1d(np.arange(n), np.array(self._front, dtype=int))
            out: list[int] = []
            while len(rest) and len(out) < 32:
                feasible = rest[self._violations[rest] <= 0]
                if len(feasible):
                    layer = feasible[moocore.is_nondominated(self._points[feasible])]
                else:  # infeasible ones by violation
                    layer = rest[np.argsort(self._violations[rest], kind="stable")[:8]]
                out.extend(int(r) for r in layer)
                rest = np.setdiff1d(rest, layer)
            self._layers_cache = (n, out)
        return self._layers_cache[1]

    def _candidates(self, pids: Sequence[int], mask: Sequence[Sequence[int]]) -> np.ndarray:
        """Unproposed one-edit children ``(parent id, decision, old, new)`` inside ``mask``.

        A child must also lie inside the engine's space: a parent evaluated before a pruning may
        only be moved back inside. Parents must have results.
        """
        pids = [p for p in pids if p in self._row_of_id]
        if not pids:
            return np.zeros((0, 4), dtype=np.int64)
        D = self.space.num_decisions
        K = max(len(d.options) for d in self.space.decisions)
        ok = np.zeros((D, K), dtype=bool)
        inside = np.zeros((D, K), dtype=bool)
        for k, (m, a) in enumerate(zip(mask, self.space.allowed, strict=True)):
            inside[k, list(a)] = True
            ok[k, [o for o in m if o in a]] = True
        archs = np.array([self._proposal(p).arch for p in pids], dtype=np.int64)
        codes = archs.astype(self._radix.dtype) @ self._radix
        out = ~inside[np.arange(D)[None, :], archs]
        n_out = out.sum(axis=1)
        parts = []
        for k in range(D):
            opts = np.flatnonzero(ok[k])
            other_ok = (n_out - out[:, k]) == 0
            i, j = np.nonzero(other_ok[:, None] & (archs[:, k][:, None] != opts[None, :]))
            if len(i):
                parts.append(np.stack([i, np.full(len(i), k), archs[i, k], opts[j]], axis=1))
        if not parts:
            return np.zeros((0, 4), dtype=np.int64)
        cand = np.concatenate(parts)
        delta = (cand[:, 3] - cand[:, 2]).astype(self._radix.dtype) * self._radix[cand[:, 1]]
        cand = cand[~np.isin(codes[cand[:, 0]] + delta, self._seen_array())]
        cand[:, 0] = np.asarray(pids, dtype=np.int64)[cand[:, 0]]
        return cand

    # ------------------------------------------------------------------ motif model
    def _scale(self) -> np.ndarray:
        """Running scale per objective: the range of everything evaluated (1 while unknown)."""
        if self._model_cache is not None:
            return self._model_cache["scale"]
        if len(self._points) < 2:
            return np.ones(len(self.objectives))
        span = self._points.max(axis=0) - self._points.min(axis=0)
        return np.where(span > 0, span, 1.0)

    def _model(self) -> dict[str, Any]:
        """Option values per decision (running scales), residual spread and counts (cached)."""
        if self._model_cache is not None:
            return self._model_cache
        D = self.space.num_decisions
        K = max(len(d.options) for d in self.space.decisions)
        m = len(self.objectives)
        scale = self._scale()
        counts = np.zeros((D, K))
        fails = np.zeros((D, K))
        values = np.zeros((D, K, m))
        resid = np.full(m, 0.1)
        for d, _, b, effect in self.observations:
            if effect is None:
                fails[d, b] += 1
        obs = [o for o in self.observations if o[3] is not None]
        if obs:
            idx = np.array([o[:3] for o in obs], dtype=int)
            clip = self.params["effect_clip"]
            eff = np.clip(np.array([o[3] for o in obs]) / scale, -clip, clip)
            d, a, b = idx[:, 0], idx[:, 1], idx[:, 2]
            lap = np.zeros((D, K, K))
            rhs = np.zeros((D, K, m))
            np.add.at(lap, (d, a, a), 1.0)
            np.add.at(lap, (d, b, b), 1.0)
            np.add.at(lap, (d, a, b), -1.0)
            np.add.at(lap, (d, b, a), -1.0)
            np.add.at(rhs, (d, b), eff)
            np.add.at(rhs, (d, a), -eff)
            np.add.at(counts, (d, a), 1.0)
            np.add.at(counts, (d, b), 1.0)
            values = np.linalg.solve(lap + _RIDGE * np.eye(K)[None], rhs)
            residual = eff - (values[d, b] - values[d, a])
            resid = np.sqrt((np.sum(residual**2, axis=0) + 0.02) / (len(obs) + 2))
        total = counts + fails
        self._model_cache = {
            "scale": scale,
            "values": values,
            "counts": counts,
            "fails": fails,
            "fail_rate": np.where(total > 0, fails / np.maximum(total, 1.0), 0.0),
            "resid": resid,
        }
        return self._model_cache

    def _option_counts(self) -> np.ndarray:
        model = self._model()
        return model["counts"] + model["fails"]

    def _weighted_option_scores(self, weight: Sequence[float]) -> np.ndarray:
        """Per (decision, option): higher is better for the trade-off ``weight``."""
        model = self._model()
        return -(model["values"] @ np.asarray(weight)) - model["fail_rate"]

    def _acquisition(self, cands: np.ndarray, weight: Sequence[float] | None) -> np.ndarray:
        """Score one-edit candidates ``(parent, decision, old, new)``; higher is better.

        Without ``weight``: the additive-epsilon improvement of the optimistic prediction over
        the archive and the predictions in flight. With ``weight`` (a lineage): minus the
        predicted weighted Tchebycheff value. Options that failed before are penalised.
        """
        model = self._model()
        scale, values, counts, resid = (
            model["scale"],
            model["values"],
            model["counts"],
            model["resid"],
        )
        rows = np.array([self._row_of_id.get(int(p), -1) for p in cands[:, 0]], dtype=np.int64)
        k, a, b = cands[:, 1], cands[:, 2], cands[:, 3]
        base = np.zeros((len(cands), len(scale)))
        known = rows >= 0
        base[known] = self._points[rows[known]] / scale
        if (~known).any():  # parent in flight: the archive's mean stands in for it
            base[~known] = self._front_points().mean(axis=0) if self._front else 0.0
        mu = base + values[k, b] - values[k, a]
        sd = (
            resid[None, :]
            * np.sqrt(1.0 / (1.0 + counts[k, a]) + 1.0 / (1.0 + counts[k, b]))[:, None]
        )
        y = mu - self.params["exploration"] * sd
        penalty = model["fail_rate"][k, b]
        if weight is not None:
            w = np.asarray(weight)
            z = y - self._points.min(axis=0) / scale if len(self._points) else y
            score = -(np.max(w * z, axis=1) + 1e-3 * (z @ w)) - penalty
        else:
            ref = self._reference_points()
            if len(ref):
                score = np.min(np.max(ref[None, :, :] - y[:, None, :], axis=2), axis=1)
            else:
                score = -y.sum(axis=1)
            score = score - penalty
        return score + 1e-9 * self.rng.random(len(cands))

    def _front_points(self) -> np.ndarray:
        return self._points[np.array(self._front, dtype=int)] / self._scale()

    def _reference_points(self) -> np.ndarray:
        """The archive plus the predicted points of perturbations in flight (normalised)."""
        model = self._model()
        pts = [self._front_points()] if self._front else []
        for p in self.pending.values():
            parent = p.meta.get("parent")
            if parent is None or parent not in self._row_of_id:
                continue
            k, a, b = p.meta["decision_index"], p.meta["old_index"], p.meta["new_index"]
            v = model["values"]
            pts.append((self._point(parent) / model["scale"] + v[k, b] - v[k, a])[None, :])
        return np.vstack(pts) if pts else np.zeros((0, len(self.objectives)))

    def _tchebycheff(self, rows: np.ndarray, weight: Sequence[float]) -> np.ndarray:
        """Weighted Tchebycheff value of rows (normalised, from the ideal point; lower is better)."""
        z = (self._points[rows] - self._points.min(axis=0)) / self._scale()
        w = np.asarray(weight)
        return np.max(w * z, axis=1) + 1e-3 * (z @ w)

    # ------------------------------------------------------------------ global narrowing
    def _maybe_prune(self) -> None:
        """Remove options whose motif effect is dominated by another option of the decision."""
        model = self._model()
        values, counts = model["values"], model["counts"] + model["fails"]
        need, margin = self.params["prune_min_count"], self.params["prune_margin"]
        new_allowed = []
        for k, allowed in enumerate(self.space.allowed):
            keep = []
            for o in allowed:
                dominated = counts[k, o] >= need and any(
                    counts[k, q] >= need
                    and model["fail_rate"][k, o] >= model["fail_rate"][k, q]
                    and np.all(values[k, o] - values[k, q] > margin)
                    for q in allowed
                    if q != o
                )
                if not dominated:
                    keep.append(o)
            new_allowed.append(keep or list(allowed))
        if any(len(n) < len(a) for n, a in zip(new_allowed, self.space.allowed, strict=True)):
            self.space = self.space.restrict(new_allowed)
            self._sampler = UnseenSampler(self.space, self._sampler.seen)
            for ln in self.lineages:
                ln.mask = [
                    [o for o in m if o in a] or list(a)
                    for m, a in zip(ln.mask, self.space.allowed, strict=True)
                ]

    # ------------------------------------------------------------------ inspection
    def inspection_tables(self) -> list[InspectionTable]:
        """The motif table, as CSV and as a heat map of the effect per objective."""
        effects = tuple(f"effect_{n}" for n in self.objectives.names) + ("score",)
        return [
            InspectionTable(
                "motif_table",
                self.motif_table(),
                heatmap=(("decision", "option"), effects),
                title="PertNAS motif table: fitted effect per objective (negative helps)",
            )
        ]

    def motif_table(self) -> list[dict[str, Any]]:
        """One row per (decision, option) of the full space, for CSV files and heat maps.

        Columns: ``decision``, ``option``, ``count`` (perturbations from or to the option),
        ``failures`` (failed perturbations to it), ``effect_<objective>`` (the fitted effect in
        running scales of that objective, minimisation units, relative to the decision's average
        observed option: negative helps; NaN when never observed), ``score`` (minus the mean
        effect minus the failure rate: higher is better; minus the failure rate for an option
        that only ever failed), ``motif`` (observed and its effect
        vector is not dominated within the decision) and ``kept`` (still in the engine's space).
        """
        model = self._model()
        values, counts, fails = model["values"], model["counts"], model["fails"]
        names = self.objectives.names
        rows = []
        for k, dec in enumerate(self.space.decisions):
            observed = [o for o in range(len(dec.options)) if counts[k, o] > 0]
            centre = values[k, observed].mean(axis=0) if observed else np.zeros(len(names))
            for o, option in enumerate(dec.options):
                seen = counts[k, o] > 0
                eff = values[k, o] - centre
                dominated = any(
                    np.all(values[k, q] <= values[k, o]) and np.any(values[k, q] < values[k, o])
                    for q in observed
                    if q != o
                )
                row: dict[str, Any] = {
                    "decision": dec.name,
                    "option": option,
                    "count": int(counts[k, o]),
                    "failures": int(fails[k, o]),
                }
                for j, n in enumerate(names):
                    row[f"effect_{n}"] = float(eff[j]) if seen else float("nan")
                if seen:
                    row["score"] = float(-eff.mean() - model["fail_rate"][k, o])
                elif fails[k, o] > 0:  # only ever failed: the worst score, not a blank
                    row["score"] = float(-model["fail_rate"][k, o])
                else:
                    row["score"] = float("nan")
                row["motif"] = bool(seen and not dominated)
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
        pts = [c for c in itertools.product(range(h + 1), repeat=m) if sum(c) == h]
        if len(pts) >= at_least:
            return np.array(pts, dtype=float) / h
        h += 1


def _dominating(fp: np.ndarray, fv: np.ndarray, p: np.ndarray, v: float) -> np.ndarray:
    """Which rows of ``fp`` (violations ``fv``) constrained-dominate the point ``p``."""
    feasible = fv <= 0
    if v <= 0:
        return feasible & np.all(fp <= p, axis=1) & np.any(fp < p, axis=1)
    return feasible | (fv < v)


def _dominated_by(p: np.ndarray, v: float, fp: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Which rows of ``fp`` are constrained-dominated by the point ``p``."""
    feasible = fv <= 0
    if v <= 0:
        return ~feasible | (np.all(p <= fp, axis=1) & np.any(p < fp, axis=1))
    return ~feasible & (v < fv)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _optional_int(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")
    return int(value)


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
