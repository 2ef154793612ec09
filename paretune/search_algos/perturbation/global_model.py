"""PertNAS model proposals: an additive (one-hot ridge) model of every result, optimistic front.

Every evaluated architecture is a row of one-hot features (one per decision and option); per
objective (minimisation, running scales) a Bayesian ridge regression fits an additive value per
option. Candidates are the unproposed architectures of the engine's space (all of them when the
space has at most ``ENUMERATE_LIMIT``, else random draws plus the one-edit neighbours of the
archive); each is scored by the additive-epsilon improvement of its optimistic prediction
(``model_exploration`` posterior standard deviations better than the mean) over the archive and
the predicted points of every proposal in flight. Proposals in flight thus count as results
already obtained at their predicted values (a constant liar): K proposals asked at once spread
along the predicted front instead of piling onto one point. Failed results are not fitted;
each option's failure rate is subtracted from the score. A mixin of
:class:`~paretune.search_algos.perturbation.engine.PerturbationEvolution`.
"""

from __future__ import annotations

import itertools
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

ENUMERATE_LIMIT = 20_000  # candidates scored at once when the space is enumerated
POOL_DRAWS = 2_000  # random candidates per proposal on larger spaces


class GlobalModelSearch:
    """Model proposals of the ``pertnas`` engine (a mixin of the engine)."""

    def _features(self, archs: np.ndarray) -> np.ndarray:
        """One-hot rows (decision-major) of integer architectures ``(n, D)``."""
        return one_hot(archs, [len(d.options) for d in self.space.decisions])

    def _fit_global(self) -> AdditiveFit | None:
        """The additive model of the feasible results (all results while none is feasible)."""
        rows = [r for r in range(len(self._id_of_row)) if self._violations[r] <= 0] or list(
            range(len(self._id_of_row))
        )
        if len(rows) < 2:
            return None
        archs = np.array([self._proposal(self._id_of_row[r]).arch for r in rows], dtype=np.int64)
        return fit_additive(self._features(archs), self._points[rows] / self._scale())

    def _candidate_archs(self) -> np.ndarray:
        """Unproposed architectures inside the engine's space to score (see module doc)."""
        space = self.space
        if space.size <= ENUMERATE_LIMIT:
            key = tuple(tuple(a) for a in space.allowed)
            if getattr(self, "_enum_cache", None) is None or self._enum_cache[0] != key:
                grid = np.array(list(itertools.product(*space.allowed)), dtype=np.int64)
                codes = grid.astype(self._radix.dtype) @ self._radix
                self._enum_cache = (key, grid, codes)
            _, grid, codes = self._enum_cache
            return grid[~np.isin(codes, self._seen_array())]
        draws = [self._sampler.sample(self.rng) for _ in range(POOL_DRAWS)]
        cands = {a for a in draws if a is not None}
        for r in self._front:
            arch = self._proposal(self._id_of_row[r]).arch
            cands.update(n for n in space.neighbors(arch) if self._fresh(n))
        return np.array(sorted(cands), dtype=np.int64).reshape(-1, space.num_decisions)

    def _option_fail_rates(self) -> np.ndarray:
        """Per one-hot feature: failed results with that option / (results with it + 1)."""
        ids = list(self._by_id)
        archs = np.array([self._by_id[i].arch for i in ids], dtype=np.int64)
        failed = np.array([i in self._failed for i in ids], dtype=bool)
        return option_fail_rates(
            self._features(archs.reshape(-1, self.space.num_decisions)), failed
        )

    def _model_proposal(self) -> tuple[Arch, dict[str, Any]] | None:
        """The unproposed architecture whose optimistic prediction improves the front most."""
        fit = self._fit_global()
        if fit is None:
            return None
        cands = self._candidate_archs()
        if not len(cands):
            return None
        x = self._features(cands)
        y = fit.optimistic(x, self.params["model_exploration"])
        ref = [self._front_points()] if self._front else []
        pending = [p.arch for p in self.pending.values()]
        if pending:
            ref.append(fit.mean(self._features(np.array(pending, dtype=np.int64))))
        score = epsilon_improvement(y, np.vstack(ref)) if ref else -y.sum(axis=1)
        score = score - x @ self._option_fail_rates() + 1e-9 * self.rng.random(len(score))
        arch = tuple(int(o) for o in cands[int(np.argmax(score))])
        meta = self._meta(None, None, "model", None)
        meta["source"] = "model"
        return self._issue(None, arch, meta)
