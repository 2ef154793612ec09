"""PertNAS scoring: the motif model's use (scales, acquisition, Tchebycheff) and global narrowing.

The motif model of the perturbation observations (:mod:`.motif`) scores one-edit candidates
for the lineages and the archive local search, against the archive plus the predicted points
of the perturbations in flight; options whose effect is dominated within their decision are
pruned from the engine's space. A mixin of
:class:`~paretune.search_algos.perturbation.engine.PerturbationEvolution`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from paretune.search_algos.perturbation.motif import MotifModel, fit_motif_model
from paretune.search_algos.random_search import UnseenSampler


class MotifScoring:
    """Motif-model scoring and global narrowing of the ``pertnas`` engine (a mixin)."""

    # ------------------------------------------------------------------ motif model
    def _scale(self) -> np.ndarray:
        """Running scale per objective: the range of everything evaluated (1 while unknown)."""
        if self._model_cache is not None:
            return self._model_cache.scale
        if len(self._points) < 2:
            return np.ones(len(self.objectives))
        span = self._points.max(axis=0) - self._points.min(axis=0)
        return np.where(span > 0, span, 1.0)

    def _model(self) -> MotifModel:
        """The motif model of the observations so far (cached until the next result)."""
        if self._model_cache is None:
            self._model_cache = fit_motif_model(
                self.observations,
                num_decisions=self.space.num_decisions,
                max_options=max(len(d.options) for d in self.space.decisions),
                scale=self._scale(),
                effect_clip=self.params["effect_clip"],
            )
        return self._model_cache

    def _option_counts(self) -> np.ndarray:
        model = self._model()
        return model.counts + model.fails

    def _weighted_option_scores(self, weight: Sequence[float]) -> np.ndarray:
        """Per (decision, option): higher is better for the trade-off ``weight``."""
        model = self._model()
        return -(model.values @ np.asarray(weight)) - model.fail_rate

    def _acquisition(self, cands: np.ndarray, weight: Sequence[float] | None) -> np.ndarray:
        """Score one-edit candidates ``(parent, decision, old, new)``; higher is better.

        Without ``weight``: the additive-epsilon improvement of the optimistic prediction over
        the archive and the predictions in flight. With ``weight`` (a lineage): minus the
        predicted weighted Tchebycheff value. Options that failed before are penalised.
        """
        model = self._model()
        scale, values, counts, resid = model.scale, model.values, model.counts, model.resid
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
        penalty = model.fail_rate[k, b]
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
            v = model.values
            pts.append((self._point(parent) / model.scale + v[k, b] - v[k, a])[None, :])
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
        values, counts = model.values, model.counts + model.fails
        need, margin = self.params["prune_min_count"], self.params["prune_margin"]
        new_allowed = []
        for k, allowed in enumerate(self.space.allowed):
            keep = []
            for o in allowed:
                dominated = counts[k, o] >= need and any(
                    counts[k, q] >= need
                    and model.fail_rate[k, o] >= model.fail_rate[k, q]
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
