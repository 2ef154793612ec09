"""An additive (one-hot ridge) model of results and the additive-epsilon improvement score.

Every architecture is a row of one-hot features (one per decision and option); per objective
(minimisation, in the caller's scales) a Bayesian ridge regression with unit prior precision
fits an additive value per option around the mean. Used by ``pertnas``'s model proposals and
``tnd``'s local search to rank unevaluated architectures; the score of a predicted point is how
far it stands out of a set of reference points (the archive, plus the predictions of proposals
in flight as a constant liar).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PRIOR = 1.0  # ridge prior precision, in units of the noise variance


def one_hot(archs: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """One-hot rows (decision-major) of integer architectures ``(n, D)``."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    x = np.zeros((len(archs), int(offsets[-1])), dtype=float)
    if len(archs):
        x[np.arange(len(archs))[:, None], np.asarray(archs) + offsets[None, :-1]] = 1.0
    return x


@dataclass(frozen=True)
class AdditiveFit:
    """A fitted additive model: ``weights (F, m)``, ``intercept (m,)``, ``covariance (F, F)``
    (the posterior covariance factor) and ``noise (m,)`` (residual standard deviation)."""

    weights: np.ndarray
    intercept: np.ndarray
    covariance: np.ndarray
    noise: np.ndarray

    def mean(self, x: np.ndarray) -> np.ndarray:
        """Predicted values of one-hot rows ``x``."""
        return self.intercept + x @ self.weights

    def std(self, x: np.ndarray) -> np.ndarray:
        """Posterior standard deviation of the prediction of one-hot rows ``x``, per objective."""
        var = np.maximum(((x @ self.covariance) * x).sum(axis=1), 0.0)
        return np.sqrt(var)[:, None] * self.noise

    def optimistic(self, x: np.ndarray, exploration: float) -> np.ndarray:
        """Prediction ``exploration`` posterior standard deviations better (lower) than the mean."""
        return self.mean(x) - exploration * self.std(x) if exploration else self.mean(x)


def fit_additive(x: np.ndarray, y: np.ndarray) -> AdditiveFit:
    """Fit one-hot rows ``x (n, F)`` to values ``y (n, m)`` (``n >= 2``)."""
    mean = y.mean(axis=0)
    a_inv = np.linalg.inv(x.T @ x + PRIOR * np.eye(x.shape[1]))
    w = a_inv @ x.T @ (y - mean)
    resid = y - mean - x @ w
    dof = max(len(y) - 1, 1)
    noise = np.sqrt((np.sum(resid**2, axis=0) + 1e-4) / dof)
    return AdditiveFit(w, mean, a_inv, noise)


def epsilon_improvement(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row of ``points`` (minimisation): ``min_r max_k (reference_rk - point_k)``, how far
    it stands out of every reference point (negative: by how much it is dominated)."""
    score = np.full(len(points), np.inf)
    for chunk in range(0, len(reference), 64):  # memory: points x reference points
        part = reference[chunk : chunk + 64]
        score = np.minimum(
            score, np.min(np.max(part[None, :, :] - points[:, None, :], axis=2), axis=1)
        )
    return score


def option_fail_rates(x: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Per one-hot feature of rows ``x``: failed rows with it / (rows with it + 1)."""
    return x[failed].sum(axis=0) / (x.sum(axis=0) + 1.0)
