"""The ``tnd`` engine's final local search: which evaluated architecture to perturb, and how.

A mixin of :class:`~paretune.search_algos.shrinking.engine.ProgressiveShrinking` (it uses the
engine's points, front and reward settings from :mod:`.rewards`). Parents come in the order of
``_local_scores``, a front member pushed down by its children in flight; the child is the
parent's unseen one-edit neighbour that an additive model of every result
(:mod:`paretune.search_algos.additive_model`) predicts to stand out most (``local_child=
"model"``), or a random one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from paretune.search_algos.additive_model import (
    AdditiveFit,
    epsilon_improvement,
    fit_additive,
    one_hot,
    option_fail_rates,
)
from paretune.spaces.base import Arch

# Spaces up to this size are enumerated to find what is still unseen.
ENUMERATE_LIMIT = 50_000
# Local-search parents: a front member's score is divided by (1 + its local children in flight)**3.
PENDING_DISCOUNT = 3.0


class LocalSearch:
    """The final local search of the ``tnd`` engine (a mixin of the engine)."""

    # ------------------------------------------------------------------ parents
    def _propose_local(self, probs: np.ndarray) -> tuple[Arch, dict[str, Any]] | None:
        """Local search: an unseen one-edit neighbour of the most promising evaluated arch.

        Parents are tried in the order of :meth:`_local_scores` (feasible first, ties at
        random); the child is the neighbour of best :meth:`_child_scores` (``local_child=
        "model"``) or a random one; when every neighbour of every evaluated arch is seen, an
        unseen random arch.
        """
        n = len(self._points)
        if n:
            scores = self._spread_pending(self._local_scores())
            order = np.lexsort((self.rng.random(n), -scores, self._viol > 0))
            for i in order:
                parent = self._points[int(i)]
                nbrs = [a for a in self._full_space.neighbors(parent[0]) if a not in self._seen]
                if nbrs:
                    return self._emit(self._pick_child(nbrs), probs, "local", parent=parent[1])
        for _ in range(100):
            arch = self._full_space.sample(self.rng)
            if arch not in self._seen:
                return self._emit(arch, probs, "local")
        if self._full_space.size <= ENUMERATE_LIMIT:
            rest = [a for a in self._full_space if a not in self._seen]
            if rest:
                return self._emit(rest[int(self.rng.integers(len(rest)))], probs, "local")
        return None

    def _pick_child(self, children: list[Arch]) -> Arch:
        """The child to propose among a parent's unseen neighbours (see ``local_child``)."""
        scores = self._child_scores(children) if self.local_child == "model" else None
        if scores is None:  # random children, or the model has fewer than two results
            return children[int(self.rng.integers(len(children)))]
        return children[int(np.argmax(scores + 1e-9 * self.rng.random(len(scores))))]

    def _spread_pending(self, scores: np.ndarray) -> np.ndarray:
        """Local-search scores with a positive score (a front member's) divided by
        ``(1 + c)**3`` for its ``c`` local children in flight: with K in flight the pending
        proposals go to the next front members, not K neighbours of one parent told back
        together. With one in flight nothing is pending at an ask: the plain order."""
        pending: dict[int, int] = {}
        for p in self.pending.values():
            parent = p.meta.get("parent")
            if p.meta.get("phase") == "local" and parent is not None:
                pending[int(parent)] = pending.get(int(parent), 0) + 1
        if not pending:
            return scores
        out = np.array(scores, dtype=float)
        for row, (_, pid) in enumerate(self._points):
            c = pending.get(pid, 0)
            if c and out[row] > 0:
                out[row] /= (1.0 + c) ** PENDING_DISCOUNT
        return out

    # ------------------------------------------------------------------ children
    def _child_scores(self, children: Sequence[Arch]) -> np.ndarray | None:
        """How promising each unevaluated child is under the additive model; ``None`` before
        the model has two results.

        ``"pareto"``: the additive-epsilon improvement of the child's optimistic prediction
        (``local_exploration`` posterior standard deviations better than the mean) over the
        feasible front and the predicted points of every proposal in flight (a constant liar:
        K children asked at once spread instead of piling onto one predicted point).
        ``"product"``: the optimistic predicted product reward (fitted additively, as one
        objective). Options that failed before are penalised.
        """
        fit = self._additive_fit()
        if fit is None:
            return None
        x = self._one_hot(children)
        y = fit.optimistic(x, self.local_exploration)
        if self.reward == "pareto" and len(self._front):
            ref = [self._normalised("observed")[np.asarray(self._front, dtype=int)]]
            pending = [p.arch for p in self.pending.values()]
            if pending:
                ref.append(fit.mean(self._one_hot(pending)))
            score = epsilon_improvement(y, np.vstack(ref))
        else:
            score = -y.sum(axis=1)  # product: one column, minus the reward in its range
        return score - x @ self._option_fail_rates()

    def _additive_fit(self) -> AdditiveFit | None:
        """The additive model of the feasible results (all while none is feasible), cached."""
        n = len(self._points)
        if self._fit_cache is None or self._fit_cache[0] != n:
            rows = np.flatnonzero(self._viol <= 0)
            if len(rows) < 2:
                rows = np.arange(n)
            fit = None
            if len(rows) >= 2:
                x = self._one_hot([self._points[r][0] for r in rows])
                if self.reward == "product":  # minimised, scaled to the rewards' range
                    r = np.asarray(self._scalar, dtype=float)
                    span = r.max() - r.min()
                    y = ((r.max() - r) / (span if span > 0 else 1.0))[rows, None]
                else:
                    y = self._normalised("observed")[rows]
                fit = fit_additive(x, y)
            self._fit_cache = (n, fit)
        return self._fit_cache[1]

    def _option_fail_rates(self) -> np.ndarray:
        """Per one-hot feature: failed results with that option / (results with it + 1)."""
        failed = np.array([r.failed for r in self.history], dtype=bool)
        return option_fail_rates(self._one_hot([r.proposal.arch for r in self.history]), failed)

    def _one_hot(self, archs: Sequence[Arch]) -> np.ndarray:
        """One-hot rows of ``archs`` over the full space's options."""
        a = np.asarray(archs, dtype=np.int64).reshape(-1, len(self._sizes))
        return one_hot(a, [int(k) for k in self._sizes])
