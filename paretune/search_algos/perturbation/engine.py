"""The ``pertnas`` engine: parameters, state, results, proposals and inspection.

See :mod:`paretune.search_algos.perturbation` for the method. The lineage state machine is in
:mod:`.lineage`, the archive local search in :mod:`.archive_search`, the motif model in
:mod:`.motif` and its use (acquisition, global narrowing) in :mod:`.scoring`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, InspectionTable, Proposal, Record
from paretune.search_algos.params import (
    fraction,
    non_negative,
    optional_int,
    positive_float,
    positive_int,
)
from paretune.search_algos.pareto import ConstrainedArchive
from paretune.search_algos.perturbation.archive_search import ArchiveSearch
from paretune.search_algos.perturbation.global_model import GlobalModelSearch
from paretune.search_algos.perturbation.lineage import Lineage, LineageSteps
from paretune.search_algos.perturbation.motif import MotifModel, motif_table_rows
from paretune.search_algos.perturbation.scoring import MotifScoring
from paretune.search_algos.random_search import UnseenSampler
from paretune.spaces.base import Arch, SearchSpace

PHASES = ("seed", "expand", "coarse", "fine", "local", "model")
INITIAL_DESIGNS = ("uniform", "random")


def design_cells(space: SearchSpace) -> list[Arch]:
    """The initial design: the single-operation cells of ``space``, generalised to any space.

    The decisions are grouped by their option lists; the largest group (the first on ties), e.g.
    every edge of a cell space, gets one cell per option name that all its decisions allow, with
    that option on all of them ("all ``nor_conv_3x3``", "all ``skip_connect``"). Every other
    decision takes the option at the same relative rank among its allowed options (the ``r``-th
    of ``m`` cells: position ``r (n - 1) / (m - 1)`` of its ``n``, halves rounded up), so on spaces whose
    options are ordered by size (kernel, expansion, depth, width) the design runs from the
    smallest to the largest network. On NB201 every decision is in the group: the design is the
    5 single-operation cells.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for k, d in enumerate(space.decisions):
        groups.setdefault(d.options, []).append(k)
    options, members = max(groups.items(), key=lambda item: len(item[1]))
    common = set.intersection(*({options[i] for i in space.allowed[k]} for k in members))
    names = sorted(common, key=options.index)
    m = len(names)
    cells = []
    for r, name in enumerate(names):
        arch = []
        for k, d in enumerate(space.decisions):
            if d.options == options:
                arch.append(d.options.index(name))
            else:
                a = space.allowed[k]
                arch.append(
                    int(a[(2 * r * (len(a) - 1) + m - 1) // (2 * (m - 1))] if m > 1 else a[0])
                )
        cells.append(tuple(arch))
    return cells


class PerturbationEvolution(LineageSteps, ArchiveSearch, GlobalModelSearch, MotifScoring, Engine):
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
        model_fraction: share of the proposals taken from the additive model of every result
            (phase ``model``, see :mod:`.global_model`); the rest are split as before.
        model_start: results before model proposals begin (``None``: one per decision plus 2).
        model_exploration: optimism of the additive model, in posterior standard deviations.
        model_horizon: model proposals fade out linearly and end at ``model_horizon`` times the
            number of (decision, option) pairs results (NB201: 150), unless ``model_until``.
        model_until: results at which model proposals end (overrides ``model_horizon``).
        extreme_share: share of the archive local search spent on the best member of each
            objective in turn (its child predicted best for that objective): the front's ends
            are found sooner, also while other children of the old best are still in flight.
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
        model_fraction: float = 0.3,
        model_start: int | None = None,
        model_exploration: float = 1.0,
        model_horizon: float = 5.0,
        model_until: int | None = None,
        extreme_share: float = 0.1,
    ) -> None:
        super().__init__(space, objectives, seed=seed)
        if initial_design not in INITIAL_DESIGNS:
            raise ValueError(
                f"initial_design must be one of {list(INITIAL_DESIGNS)}, got {initial_design!r}"
            )
        self.params: dict[str, Any] = {
            "population_size": positive_int("population_size", population_size),
            "perturbations_per_parent": optional_int(
                "perturbations_per_parent", perturbations_per_parent, minimum=1
            ),
            "coarse_keep": positive_int("coarse_keep", coarse_keep),
            "fine_keep": positive_int("fine_keep", fine_keep),
            "coarse_steps": optional_int("coarse_steps", coarse_steps, minimum=0),
            "local_fraction": fraction("local_fraction", local_fraction),
            "parent_discount": non_negative("parent_discount", parent_discount),
            "exploration": non_negative("exploration", exploration),
            "effect_clip": positive_float("effect_clip", effect_clip),
            "prune_min_count": positive_int("prune_min_count", prune_min_count),
            "prune_margin": non_negative("prune_margin", prune_margin),
            "initial_design": initial_design,
            "motif_seeds": bool(motif_seeds),
            "model_fraction": fraction("model_fraction", model_fraction),
            "model_start": optional_int("model_start", model_start, minimum=0),
            "model_exploration": non_negative("model_exploration", model_exploration),
            "model_horizon": non_negative("model_horizon", model_horizon),
            "model_until": optional_int("model_until", model_until, minimum=0),
            "extreme_share": fraction("extreme_share", extreme_share),
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
    def model_start(self) -> int:
        s = self.params.get("model_start")
        return self.space.num_decisions + 2 if s is None else s

    @property
    def model_until(self) -> int:
        u = self.params.get("model_until")
        if u is None:
            u = self.params["model_horizon"] * sum(len(d.options) for d in self.space.decisions)
        return max(int(u), self.model_start + 1)

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
        self._model_credit = 0.0
        self._extreme_credit = 0.0
        self._extreme_turn = 0
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
        self._archive = ConstrainedArchive()  # keys: rows of ``_points``
        self._sampler = UnseenSampler(self.space)
        self._model_cache: MotifModel | None = None
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
        self._enum_cache: tuple[Any, np.ndarray, np.ndarray] | None = None

    def _state(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "lineages": [ln.to_dict() for ln in self.lineages],
            "observations": [list(o) for o in self.observations],
            "links": [[c, p] for c, p in self._links.items()],
            "local_credit": self._local_credit,
            "model_credit": self._model_credit,
            "extreme_credit": self._extreme_credit,
            "extreme_turn": self._extreme_turn,
            "turn": self._turn,
            "weight_order": list(self._weight_order),
            "design_order": None if self._design_order is None else list(self._design_order),
            "design_done": self._design_done,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.params = dict(state["params"])
        for key, old in (
            ("model_fraction", 0.0),
            ("model_start", None),
            ("model_exploration", 1.0),
            ("model_horizon", 5.0),
            ("model_until", None),
            ("extreme_share", 0.0),
        ):
            self.params.setdefault(key, old)  # a state saved before these parameters: as it ran
        self._reset()
        self.lineages = [Lineage.from_dict(d) for d in state["lineages"]]
        self.observations = [list(o) for o in state["observations"]]
        self._links = {int(c): int(p) for c, p in state["links"]}
        self._local_credit = float(state["local_credit"])
        self._model_credit = float(state.get("model_credit", 0.0))
        self._extreme_credit = float(state.get("extreme_credit", 0.0))
        self._extreme_turn = int(state.get("extreme_turn", 0))
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
        self._archive.add(self._points[row], self._violations[row], key=row)

    @property
    def _front(self) -> list[int]:
        """Rows of the constrained Pareto archive of everything evaluated (first occurrences)."""
        return self._archive.keys

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
        n, start, until = len(self._id_of_row), self.model_start, self.model_until
        if start <= n < until:
            # The additive model pays off early; local search beats it later (its share fades).
            self._model_credit += self.params["model_fraction"] * (until - n) / (until - start)
            if self._model_credit >= 1.0:
                self._model_credit -= 1.0
                proposal = self._model_proposal()
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
        """The next unproposed cell of the initial design (see :func:`design_cells`)."""
        cells = design_cells(self.space)
        if self._design_order is None:
            self._design_order = [int(i) for i in self.rng.permutation(len(cells))]
        while self._design_order:
            i = self._design_order.pop(0)
            if i < len(cells) and self._fresh(cells[i]):  # fewer cells once the space narrowed
                return cells[i]
        return None

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
        return motif_table_rows(
            self._model(), self.space.decisions, self.space.allowed, self.objectives.names
        )
