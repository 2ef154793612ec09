"""The ``tnd`` stage schedule: options kept per decision and stage, and stage lengths."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Without a budget hint, every stage before the last lasts this many results.
DEFAULT_STAGE_LENGTH = 100
# With a budget hint: stage 0 gets up to half the budget (less for small budgets, where the
# policy has too few REINFORCE steps to pay off), every later shrinking stage 5%.
FIRST_STAGE_FRACTION = 0.5
FIRST_STAGE_FULL_BUDGET = 1000
LATER_STAGE_FRACTION = 0.05


def default_schedule(num_options: int) -> list[int]:
    """Options kept per stage: 5 -> 3 -> 2 -> 1 for NB201, else halving down to 1."""
    if num_options == 5:
        return [5, 3, 2, 1]
    out = [num_options]
    while out[-1] > 1:
        out.append(math.ceil(out[-1] / 2))
    return out


def decision_schedules(sizes: Sequence[int], schedule: Sequence[int] | None) -> list[list[int]]:
    """Options kept per decision and stage.

    Without ``schedule`` the stages follow :func:`default_schedule` of the largest decision and
    every decision shrinks in proportion to its own option count: ``ceil(n * s / s_max)`` (NB201:
    5 -> 3 -> 2 -> 1 on every edge; with 9 and 2 options, 9 -> 5 -> 3 -> 2 -> 1 and
    2 -> 2 -> 1 -> 1 -> 1). A given ``schedule`` is a count per stage for every decision,
    capped at the decision's options.
    """
    if schedule is None:
        steps = default_schedule(max(sizes))
        top = steps[0]
        return [[-(-n * s // top) for s in steps] for n in sizes]
    return [[min(n, int(s)) for s in schedule] for n in sizes]


def default_stage_fractions(budget: int, stages: int) -> list[float]:
    """Fractions of ``budget`` for the ``stages`` stages before the last (see module doc)."""
    first = FIRST_STAGE_FRACTION * min(1.0, budget / FIRST_STAGE_FULL_BUDGET)
    return [first] + [LATER_STAGE_FRACTION] * (stages - 1)
