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
  "all ``skip_connect``"), which span the cost extremes of a cell space. On other spaces the
  largest group of decisions sharing an option list takes the role of the edges and the other
  decisions follow at the same relative rank (``design_cells``: DARTS's 8 single-operation
  cells; on MobileNet all kernel 3 / expansion 3 / depth 2 up to kernel 7 / expansion 6 /
  depth 4). ``initial_design = "random"`` skips this.
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
  flight) by the largest additive epsilon. A share ``extreme_share`` of these turns (0.1) goes
  to the ends of the front instead: the objectives take turns, and the child of the objective's
  best feasible result predicted best for that objective alone is proposed (``meta["source"] =
  "extreme"``). With many proposals in flight the hypervolume order moves on from a member whose
  children are still pending, which delays reaching the front's ends (on NB201 acc-params the
  top-accuracy cells); these turns keep pushing them (measured in ``benchmarks/search_quality.py``).
* **Model proposals** (phase ``model``, :mod:`.global_model`): from ``model_start`` results on,
  a share ``model_fraction`` of the proposals (fading linearly to none at ``model_horizon``
  times the number of (decision, option) pairs results, NB201: 150) is the unproposed
  architecture whose optimistic prediction under an additive one-hot ridge model of every
  result improves the archive, plus the predicted points of all proposals in flight, by the
  largest additive epsilon. The model uses the first ~100 results better than one-edit steps
  alone, and proposals in flight count at their predicted values (a constant liar), so K
  proposals asked at once spread along the predicted front.
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
``fine``, ``local`` or ``model``; a model proposal has no parent), ``generation`` (parent's + 1; seeds 0), ``lineage`` and ``round`` (or
``None``), ``source`` for seeds and model proposals (``design``, ``balanced``, ``motifs``,
``random``, ``model``), and the edit
as indices (``decision_index``, ``old_index``, ``new_index``).

State (``state_dict``): parameters, lineages, perturbation observations (the motif table),
parent links still waiting for a result, the weight and design cursors, the pruned space and
the RNG (the last two through the base class). The archive and all caches are derived from the
history.

Modules: :mod:`.engine` (the engine), :mod:`.lineage` (the lineage state machine),
:mod:`.motif` (the motif model), :mod:`.archive_search` (the archive local search),
:mod:`.global_model` (the model proposals), :mod:`.scoring` (the motif model's acquisition
and global narrowing).

Parameter defaults: ``population_size=4``, ``coarse_keep=2``, ``fine_keep=1`` are the paper's.
The others were chosen on the NB201 table with seeds disjoint from the benchmark's (see the
parameter list).
"""

from __future__ import annotations

from paretune.search_algos.perturbation.engine import (
    INITIAL_DESIGNS,
    PHASES,
    PerturbationEvolution,
    design_cells,
)
from paretune.search_algos.perturbation.lineage import Lineage
from paretune.search_algos.perturbation.motif import MotifModel, fit_motif_model

__all__ = [
    "INITIAL_DESIGNS",
    "PHASES",
    "Lineage",
    "MotifModel",
    "PerturbationEvolution",
    "design_cells",
    "fit_motif_model",
]
