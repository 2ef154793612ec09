"""PertNAS archive local search: one-edit children of the most valuable archive members.

Parents are the members of the Pareto archive in order of their exclusive hypervolume
contribution discounted by the children already proposed from them; the child is the unproposed
one-edit neighbour that the motif model predicts to improve the archive most. A share
``extreme_share`` of the turns perturbs each objective's best member in turn instead. A mixin of
:class:`~paretune.search_algos.perturbation.engine.PerturbationEvolution`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import moocore
import numpy as np

from paretune.search_algos.pareto import hv_contributions, reference_point
from paretune.spaces.base import Arch


class ArchiveSearch:
    """Archive local search of the ``pertnas`` engine (a mixin of the engine)."""

    # ------------------------------------------------------------------ archive local search
    def _local_proposal(self) -> tuple[Arch, dict[str, Any]] | None:
        """Perturb the most valuable archive member with unproposed neighbours."""
        extreme = self._extreme_proposal()
        if extreme is not None:
            return extreme
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

    def _extreme_proposal(self) -> tuple[Arch, dict[str, Any]] | None:
        """On its share of turns: the child of an objective's best member predicted best for it.

        The objectives take turns; the best feasible member of the objective is perturbed (the
        next best when its neighbourhood is exhausted, up to 8 members).
        """
        share = self.params.get("extreme_share", 0.0)
        if share <= 0 or len(self._front) < 2:
            return None
        self._extreme_credit += share
        if self._extreme_credit < 1.0:
            return None
        self._extreme_credit -= 1.0
        j = self._extreme_turn % len(self.objectives)
        self._extreme_turn += 1
        feasible = np.flatnonzero(self._violations <= 0)
        rows = feasible[np.argsort(self._points[feasible, j], kind="stable")[:8]]
        weight = np.eye(len(self.objectives))[j]
        for row in rows:
            cands = self._candidates([self._id_of_row[int(row)]], self.space.allowed)
            if len(cands):
                best = cands[int(np.argmax(self._acquisition(cands, weight)))]
                pid, k, _, o = (int(x) for x in best)
                arch, meta = self._perturbation(None, pid, k, o, "local")
                meta["source"] = "extreme"
                return arch, meta
        return None

    def _archive_order(self) -> list[int]:
        """Archive rows by hypervolume contribution discounted by their children so far."""
        rows = list(self._front)
        if len(rows) <= 1:
            return rows
        pts = self._points[rows] / self._scale()
        # Members with equal values (different archs) share their value's contribution.
        hvc = hv_contributions(pts, reference_point(pts), shared_duplicates=True)
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
