"""Progressive shrinking (TND-NAS style): REINFORCE on per-decision logits, shrunk stage by stage.

The engine keeps one logit per (decision, option). A proposal is a discrete architecture drawn
from the softmax over the options still allowed. Results arrive in any order and are buffered;
every ``batch_size`` (M) results one REINFORCE step updates the logits as in the TND-NAS code:
moving baseline ``b <- b + 0.95 (mean R - b)`` (``b`` = the first batch mean at first),
gradient ``mean_j (R_j - b) grad(-log pi(a_j))``, norm clipping at 5, Adam with betas
(0.5, 0.999) and L2 weight decay 1e-3. The learning rate is 0.3, not the paper's 6e-3: on a
table a run has tens of REINFORCE steps, not thousands, and 6e-3 leaves the policy uniform.

A stage ends after a configured number of *results* (never wall-clock time), then the
lowest-probability options of every decision are dropped, each decision in proportion to its
own option count (NB201: 5 -> 3 -> 2 -> 1 options; 9 -> 5 -> 3 -> 2 -> 1 next to 2 -> 2 -> 1 -> 1
-> 1, see ``decision_schedules``; ties keep the lower option index) and ``self.space`` becomes the restricted space. Results of
proposals made before a shrink that fall outside the new space are recorded (history, archive)
but never enter the gradient; keep stage lengths well above the number of trials in flight.
Stage lengths: ``stage_lengths``, else fractions of a ``budget`` hint (stage 0 gets
``0.5 * min(1, budget / 1000)`` of it, every later shrinking stage 5%), else 100 results each.

Rewards (``reward``):

- ``"product"``: the paper's MnasNet form ``acc * prod_k (m_k / T_k) ** w_k`` with targets
  ``T_k`` and exponents ``w_k`` for any objectives named in ``targets`` / ``exponents``; with
  none it is the accuracy alone. Ratios ``m_k / T_k`` are floored at ``1e-3``, so a zero cost
  gives a large but finite reward, and a negative accuracy counts as 0.
- ``"pareto"`` (default): a target-free reward, the *exclusive additive-epsilon margin* of a
  result against every other architecture evaluated, objectives min-max normalised over what the
  engine has seen: ``R_j = min_{a != j} max_k (y_ak - y_jk)`` (minimisation). It is positive for
  a non-dominated result (by how far it stands out of the rest of the front, so gap fillers and
  extensions earn most), zero for a tie and minus its distance to the front when dominated.
  Infeasible results (a violated limit) get ``-1 - violation``, below every feasible one.

A failed trial gets the minimum reward of its batch and of the last ``reward_window`` rewards
(``-1`` for Pareto / ``0`` for product if nothing is known yet): it is pushed down like the
worst result seen, never NaN and never a crash.

Duplicates are avoided: a sample already evaluated (or in flight) is redrawn up to
``resample`` times, then drawn exactly from the policy conditioned on "not yet seen" when the
allowed space is small enough to enumerate (else an unseen one-edit neighbour). A stage whose
allowed space has nothing unseen left ends early.

Once the space is shrunk to a single architecture the policy has converged. With
``final="local"`` (default) the engine then spends the rest of the budget on a local search of
its archive in the space it was given: an unseen one-edit neighbour of the most promising
evaluated architecture. For ``"pareto"``, front members come first, ordered by their exclusive
hypervolume in front-normalised units (``local_order="hv"``, exact, through moocore)
or by their margin (``"margin"``), then dominated ones by distance to the front; for
``"product"`` the order is the product reward. A parent's children in flight push it down the
order. Which neighbour (``local_child``): ``"model"`` (default) fits an additive one-hot ridge
model to every result (:mod:`paretune.search_algos.additive_model`, as ``pertnas``'s model
proposals) and takes the neighbour whose optimistic prediction (``local_exploration`` = 0.5
posterior standard deviations) stands out most of the front and of the predicted points of every
proposal in flight; ``"random"`` takes any. With ``final="stop"`` ``ask`` returns ``None``.
On NB201 most of the final quality comes from this phase; the policy stages decide where it
starts.

Proposal meta: ``stage``, ``probability`` (of the architecture under the current policy, 0 for
local-search proposals outside the shrunk space), ``generation`` (REINFORCE steps so far),
``phase`` (``"policy"`` or ``"local"``) and, for local search, ``parent`` (a proposal id).
"""

from __future__ import annotations

from paretune.search_algos.shrinking.engine import (
    FINALS,
    LOCAL_ORDERS,
    REWARDS,
    ProgressiveShrinking,
)
from paretune.search_algos.shrinking.schedule import (
    decision_schedules,
    default_schedule,
    default_stage_fractions,
)

__all__ = [
    "FINALS",
    "LOCAL_ORDERS",
    "REWARDS",
    "ProgressiveShrinking",
    "decision_schedules",
    "default_schedule",
    "default_stage_fractions",
]
