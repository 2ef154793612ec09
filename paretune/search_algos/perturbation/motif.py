"""The motif model of PertNAS: a ridge fit of option values to the observed perturbation effects.

Per decision, option values ``v[d, o]`` are the ridge least-squares fit of ``v[b] - v[a]`` to the
effects of the perturbations ``a -> b`` (per objective, in running scales, clipped); failed
perturbations count as failures of their new option. :func:`fit_motif_model` returns a typed
:class:`MotifModel`; :func:`motif_table_rows` makes the table people read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paretune.spaces.base import Decision

_RIDGE = 0.5  # prior strength pulling option values towards "no effect"


@dataclass(frozen=True)
class MotifModel:
    """The fitted motif model (arrays indexed by decision, option and objective).

    Attributes:
        scale: running scale per objective (the range of everything evaluated).
        values: ``(D, K, m)`` fitted option values in running scales (minimisation).
        counts: ``(D, K)`` observed perturbations from or to each option.
        fails: ``(D, K)`` failed perturbations to each option.
        fail_rate: ``fails / (counts + fails)`` (0 when never observed).
        resid: residual standard deviation per objective (running scales).
    """

    scale: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    fails: np.ndarray
    fail_rate: np.ndarray
    resid: np.ndarray


def fit_motif_model(
    observations: Sequence[Sequence[Any]],
    *,
    num_decisions: int,
    max_options: int,
    scale: np.ndarray,
    effect_clip: float,
) -> MotifModel:
    """Fit option values to ``observations`` (``[decision, old, new, effect or None]``)."""
    D, K, m = num_decisions, max_options, len(scale)
    counts = np.zeros((D, K))
    fails = np.zeros((D, K))
    values = np.zeros((D, K, m))
    resid = np.full(m, 0.1)
    for d, _, b, effect in observations:
        if effect is None:
            fails[d, b] += 1
    obs = [o for o in observations if o[3] is not None]
    if obs:
        idx = np.array([o[:3] for o in obs], dtype=int)
        clip = effect_clip
        eff = np.clip(np.array([o[3] for o in obs]) / scale, -clip, clip)
        d, a, b = idx[:, 0], idx[:, 1], idx[:, 2]
        lap = np.zeros((D, K, K))
        rhs = np.zeros((D, K, m))
        np.add.at(lap, (d, a, a), 1.0)
        np.add.at(lap, (d, b, b), 1.0)
        np.add.at(lap, (d, a, b), -1.0)
        np.add.at(lap, (d, b, a), -1.0)
        np.add.at(rhs, (d, b), eff)
        np.add.at(rhs, (d, a), -eff)
        np.add.at(counts, (d, a), 1.0)
        np.add.at(counts, (d, b), 1.0)
        values = np.linalg.solve(lap + _RIDGE * np.eye(K)[None], rhs)
        residual = eff - (values[d, b] - values[d, a])
        resid = np.sqrt((np.sum(residual**2, axis=0) + 0.02) / (len(obs) + 2))
    total = counts + fails
    return MotifModel(
        scale=scale,
        values=values,
        counts=counts,
        fails=fails,
        fail_rate=np.where(total > 0, fails / np.maximum(total, 1.0), 0.0),
        resid=resid,
    )


def motif_table_rows(
    model: MotifModel,
    decisions: Sequence[Decision],
    allowed: Sequence[Sequence[int]],
    objective_names: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per (decision, option) of the full space (see ``PerturbationEvolution.motif_table``)."""
    values, counts, fails = model.values, model.counts, model.fails
    names = objective_names
    rows = []
    for k, dec in enumerate(decisions):
        observed = [o for o in range(len(dec.options)) if counts[k, o] > 0]
        centre = values[k, observed].mean(axis=0) if observed else np.zeros(len(names))
        for o, option in enumerate(dec.options):
            seen = counts[k, o] > 0
            eff = values[k, o] - centre
            dominated = any(
                np.all(values[k, q] <= values[k, o]) and np.any(values[k, q] < values[k, o])
                for q in observed
                if q != o
            )
            row: dict[str, Any] = {
                "decision": dec.name,
                "option": option,
                "count": int(counts[k, o]),
                "failures": int(fails[k, o]),
            }
            for j, n in enumerate(names):
                row[f"effect_{n}"] = float(eff[j]) if seen else float("nan")
            if seen:
                row["score"] = float(-eff.mean() - model.fail_rate[k, o])
            elif fails[k, o] > 0:  # only ever failed: the worst score, not a blank
                row["score"] = float(-model.fail_rate[k, o])
            else:
                row["score"] = float("nan")
            row["motif"] = bool(seen and not dominated)
            row["kept"] = bool(o in allowed[k])
            rows.append(row)
    return rows
