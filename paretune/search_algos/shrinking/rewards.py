"""Rewards of the ``tnd`` engine and its evaluated points: archive, margins, local-search order.

A mixin of :class:`~paretune.search_algos.shrinking.engine.ProgressiveShrinking` (it uses the
engine's objectives and reward settings); see :mod:`paretune.search_algos.shrinking` for the
rewards' definitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from paretune.search_algos.additive_model import AdditiveFit
from paretune.search_algos.base import Record
from paretune.search_algos.pareto import ConstrainedArchive, hv_contributions, reference_point
from paretune.spaces.base import Arch

RATIO_FLOOR = 1e-3


class ParetoRewards:
    """Rewards and evaluated points of the ``tnd`` engine (a mixin of the engine)."""

    # ------------------------------------------------------------------ rewards
    def rewards(self, batch: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rewards of buffered results (``{"arch", "values"}``; ``values`` None = failed)."""
        ok = [i for i, b in enumerate(batch) if b["values"] is not None]
        out = np.full(len(batch), np.nan)
        if ok:
            if self.reward == "product":
                out[ok] = [self._product_reward(batch[i]["values"]) for i in ok]
            else:
                out[ok] = self._pareto_rewards([batch[i] for i in ok])
        known = [float(r) for r in out[ok]] + self.recent_rewards
        fail = min(known) if known else (0.0 if self.reward == "product" else -1.0)
        out[np.isnan(out)] = fail
        return out

    def _product_reward(self, values: Mapping[str, float]) -> float:
        acc = max(0.0, float(values[self.accuracy])) if self.accuracy is not None else 1.0
        r = acc
        for k, t in self.targets.items():
            ratio = max(float(values[k]) / t, RATIO_FLOOR)
            r *= ratio ** self.exponents[k]
        return float(r) if math.isfinite(r) else 0.0

    # ------------------------------------------------------------------ evaluated points
    def _reset_cache(self) -> None:
        """Distinct evaluated archs as minimisation rows (derived from ``history``)."""
        self._points: list[tuple[Arch, int]] = []  # (arch, proposal id)
        self._point_index: dict[Arch, int] = {}
        self._y = np.zeros((0, len(self.objectives)))
        self._viol = np.zeros(0)
        self._archive = ConstrainedArchive()  # keys: rows
        self._scalar: list[float] = []  # product reward per row (product reward only)
        self._fit_cache: tuple[int, AdditiveFit | None] | None = None  # (rows, fit)

    def _add_point(self, record: Record) -> None:
        arch = record.proposal.arch
        if record.values is None or arch in self._point_index:
            return
        k = len(self._points)
        self._points.append((arch, record.proposal.id))
        self._point_index[arch] = k
        if self.reward == "product":
            self._scalar.append(self._product_reward(record.values))
        y = self.objectives.vector(record.values)
        self._y = np.vstack([self._y, y[None, :]])
        self._viol = np.append(self._viol, self.objectives.violation(record.values))
        self._archive.add(y, self._viol[k], key=k)

    @property
    def _front(self) -> list[int]:
        """The feasible non-dominated rows (none while no result is feasible)."""
        return self._archive.feasible_keys()

    def _normalised(self, how: str = "front") -> np.ndarray:
        """Rows scaled by the range of the current front (all rows where it has no range)."""
        base = self._y[self._front] if how == "front" and len(self._front) > 1 else self._y
        lo = base.min(axis=0)
        span = base.max(axis=0) - lo
        if how == "front":
            full = self._y.max(axis=0) - self._y.min(axis=0)
            span = np.where(span > 0, span, full)
        return (self._y - lo) / np.where(span > 0, span, 1.0)

    def _margins(self, which: Sequence[int]) -> np.ndarray:
        """Exact exclusive additive-epsilon margin of rows ``which`` against every other row."""
        y = self._normalised("observed")
        feasible = self._viol <= 0
        ref_idx = np.flatnonzero(feasible)
        which = np.asarray(list(which), dtype=int)
        # gap[j, a] = max_k (y_a,k - y_j,k); a point is never compared with itself.
        gap = np.max(y[ref_idx][None, :, :] - y[which][:, None, :], axis=2)
        gap[ref_idx[None, :] == which[:, None]] = np.inf
        m = gap.min(axis=1) if len(ref_idx) else np.full(len(which), np.inf)
        out = np.where(np.isfinite(m), m, 1.0)
        bad = ~feasible[which]
        out[bad] = -1.0 - self._viol[which][bad]
        return out

    def _local_scores(self) -> np.ndarray:
        """How promising each row is as a local-search parent under the engine's reward."""
        if self.reward == "product":
            return np.asarray(self._scalar, dtype=float)
        scores = self._front_margins()
        if self.local_order == "hv" and len(self._front):
            front = np.asarray(self._front, dtype=int)
            pts = self._normalised("front")[front]
            contrib = hv_contributions(pts, reference_point(pts))
            top = contrib.max()
            scores[front] = 1.0 + (contrib / top if top > 0 else 0.0)
        return scores

    def _front_margins(self) -> np.ndarray:
        """Margin of every row against the feasible front (cheap; exact for dominated rows)."""
        y = self._normalised("front")
        front = np.asarray(self._front, dtype=int)
        if not len(front):
            return -1.0 - self._viol
        gap = np.max(y[front][None, :, :] - y[:, None, :], axis=2)
        gap[np.arange(len(y))[:, None] == front[None, :]] = np.inf
        m = gap.min(axis=1)
        out = np.where(np.isfinite(m), m, 1.0)
        bad = self._viol > 0
        out[bad] = -1.0 - self._viol[bad]
        return out

    def _pareto_rewards(self, batch: Sequence[Mapping[str, Any]]) -> np.ndarray:
        rows = [self._point_index[tuple(b["arch"])] for b in batch]
        return self._margins(rows)
