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

from paretune.spaces.base import Arch

ENUMERATE_LIMIT = 20_000  # candidates scored at once when the space is enumerated
POOL_DRAWS = 2_000  # random candidates per proposal on larger spaces
_PRIOR = 1.0  # ridge prior precision, in units of the noise variance


class GlobalModelSearch:
    """Model proposals of the ``pertnas`` engine (a mixin of the engine)."""

    def _features(self, archs: np.ndarray) -> np.ndarray:
        """One-hot rows (decision-major) of integer architectures ``(n, D)``."""
        offsets = self._feature_offsets()
        x = np.zeros((len(archs), int(offsets[-1])), dtype=float)
        if len(archs):
            x[np.arange(len(archs))[:, None], archs + offsets[None, :-1]] = 1.0
        return x

    def _feature_offsets(self) -> np.ndarray:
        sizes = [len(d.options) for d in self.space.decisions]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def _fit_global(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """``(weights, intercept, posterior covariance factor, noise sd)`` or ``None``."""
        rows = [r for r in range(len(self._id_of_row)) if self._violations[r] <= 0] or list(
            range(len(self._id_of_row))
        )
        if len(rows) < 2:
            return None
        archs = np.array([self._proposal(self._id_of_row[r]).arch for r in rows], dtype=np.int64)
        x = self._features(archs)
        y = self._points[rows] / self._scale()
        mean = y.mean(axis=0)
        a = x.T @ x + _PRIOR * np.eye(x.shape[1])
        a_inv = np.linalg.inv(a)
        w = a_inv @ x.T @ (y - mean)
        resid = y - mean - x @ w
        dof = max(len(rows) - 1, 1)
        noise = np.sqrt((np.sum(resid**2, axis=0) + 1e-4) / dof)
        return w, mean, a_inv, noise

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
        offsets = self._feature_offsets()
        tries = np.zeros(int(offsets[-1]))
        fails = np.zeros(int(offsets[-1]))
        for pid, proposal in self._by_id.items():
            cols = np.asarray(proposal.arch, dtype=np.int64) + offsets[:-1]
            tries[cols] += 1.0
            if pid in self._failed:
                fails[cols] += 1.0
        return fails / (tries + 1.0)

    def _model_proposal(self) -> tuple[Arch, dict[str, Any]] | None:
        """The unproposed architecture whose optimistic prediction improves the front most."""
        fit = self._fit_global()
        if fit is None:
            return None
        cands = self._candidate_archs()
        if not len(cands):
            return None
        w, mean, a_inv, noise = fit
        x = self._features(cands)
        mu = mean + x @ w
        sd = np.sqrt(np.maximum(((x @ a_inv) * x).sum(axis=1), 0.0))[:, None] * noise
        y = mu - self.params["model_exploration"] * sd
        ref = [self._front_points()] if self._front else []
        pending = [p.arch for p in self.pending.values()]
        if pending:
            ref.append(mean + self._features(np.array(pending, dtype=np.int64)) @ w)
        if ref:
            r = np.vstack(ref)
            score = np.full(len(y), np.inf)
            for chunk in range(0, len(r), 64):  # memory: candidates x reference points
                part = r[chunk : chunk + 64]
                score = np.minimum(
                    score, np.min(np.max(part[None, :, :] - y[:, None, :], axis=2), axis=1)
                )
        else:
            score = -y.sum(axis=1)
        score = score - x @ self._option_fail_rates() + 1e-9 * self.rng.random(len(score))
        arch = tuple(int(o) for o in cands[int(np.argmax(score))])
        meta = self._meta(None, None, "model", None)
        meta["source"] = "model"
        return self._issue(None, arch, meta)
