"""Zero-shot pruning before the search (the config's ``prune:`` section), and proxy objectives.

:func:`apply_pruning` runs in the driver while the experiment is prepared: it samples
``prune.samples`` architectures of the space (seeded), scores each with the zero-cost proxies
``prune.proxy`` (torch, one batch, :class:`~paretune.objectives.proxies.ProxyScorer`), turns the
scores into option fitness and removes the worst ``prune.ratio`` of each decision's options
(:func:`paretune.search_algos.pruning.prune`, rule ``proxy`` or the front-protecting ``front``),
then restricts the space with ``SearchSpace.restrict``. Any engine and evaluator then search
what is left.

What was removed is recorded in the config itself (``prune.removed`` and ``prune.fitness``,
filled in here): the experiment folder's ``config.yaml``, the MLflow parent run's params
(``prune.removed.<decision>``) and its ``config.yaml`` artifact all show it, and a resumed
experiment restricts the space from ``prune.removed`` without scoring again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from paretune.platform.config_common import ConfigError
from paretune.search_algos.pruning import combined_rank, prune, select_decisions
from paretune.spaces.base import SearchSpace

logger = logging.getLogger(__name__)


def _scorer(config: Any, space: SearchSpace, names: list[str]) -> Any:
    from paretune.objectives.proxies import ProxyScorer

    p = config.prune
    try:
        return ProxyScorer(
            space,
            names,
            dataset=p.dataset,
            batch_size=p.batch_size,
            seed=config.seed if p.seed is None else p.seed,
            input_size=p.input_size,
            build=p.build,
            data_path=p.data_path,
        )
    except ValueError as exc:
        raise ConfigError(f"prune: {exc}") from None


def apply_pruning(config: Any, space: SearchSpace) -> SearchSpace:
    """``space`` pruned as ``config.prune`` says (unchanged without a ``prune`` section)."""
    p = getattr(config, "prune", None)
    if p is None:
        return space
    if p.removed is not None:  # already scored (a resume): the same restriction again
        return _restrict(space, p.removed)
    try:
        select_decisions(space, p.decisions)  # a bad pattern is refused before any scoring
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    proxies = [p.proxy] if isinstance(p.proxy, str) else list(p.proxy)
    names = list(dict.fromkeys([*proxies, *([p.cost] if p.rule == "front" else [])]))
    scorer = _scorer(config, space, names)
    rng = np.random.default_rng(config.seed if p.seed is None else p.seed)
    archs = [space.sample(rng) for _ in range(p.samples)]
    start = time.perf_counter()
    values = [scorer.scores(a) for a in archs]
    columns = []
    from paretune.objectives.proxies import PROXIES

    for name in proxies:
        sign = 1.0 if PROXIES[name] == "max" else -1.0
        columns.append([sign * v[name] for v in values])
    scores = combined_rank(columns)
    costs = [v[p.cost] for v in values] if p.rule == "front" else None
    try:
        chosen = select_decisions(space, p.decisions)
        result = prune(
            space, archs, scores, ratio=p.ratio, rule=p.rule, costs=costs, decisions=chosen
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    pruned = space.restrict(result.allowed)
    removed = result.removed_names(space)
    fitness = {
        d.name: {d.options[o]: round(f, 4) for o, f in fit.items() if f == f}
        for d, fit in zip(space.decisions, result.fitness, strict=True)
    }
    p.fitness = fitness
    p.removed = removed
    logger.info(
        "prune: %d architectures scored with %s in %.1fs; space %d -> %d architectures; removed %s",
        len(archs),
        "+".join(proxies),
        time.perf_counter() - start,
        space.size,
        pruned.size,
        removed,
    )
    return pruned


def _restrict(space: SearchSpace, removed: dict[str, list[str]]) -> SearchSpace:
    keep = {}
    names = space.decision_names()
    for decision, options in removed.items():
        if decision not in names:
            raise ConfigError(
                f"prune.removed.{decision}: not a decision of space {space.name!r} "
                f"(decisions: {', '.join(names)})"
            )
        d = space.decisions[names.index(decision)]
        allowed = space.allowed[names.index(decision)]
        kept = [d.options[i] for i in allowed if d.options[i] not in options]
        if not kept:
            raise ConfigError(f"prune.removed.{decision} = {options!r}: removes every option")
        keep[decision] = kept
    try:
        return space.restrict(keep)
    except ValueError as exc:
        raise ConfigError(f"prune.removed: {exc}") from None


def proxy_settings(config: Any, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluator's ``proxies`` setting for objectives with ``source: proxy`` (or ``None``)."""
    names = [o.name for o in config.objectives if getattr(o, "source", None) == "proxy"]
    if not names:
        return None
    from paretune.objectives.proxies import PROXIES

    for i, o in enumerate(config.objectives):
        if o.name in names and o.name not in PROXIES:
            raise ConfigError(
                f"objectives[{i}].name = {o.name!r}: not a proxy for source 'proxy' "
                f"(allowed: {', '.join(PROXIES)})"
            )
    p = getattr(config, "prune", None)
    out: dict[str, Any] = {"names": names, "space": dict(spec), "seed": config.seed}
    if p is not None:
        out.update(dataset=p.dataset, batch_size=p.batch_size, build=p.build)
        if p.input_size is not None:
            out["input_size"] = p.input_size
        if p.seed is not None:
            out["seed"] = p.seed
    return out


def add_proxy_settings(config: Any, settings: dict[str, Any], spec: dict[str, Any]) -> None:
    """Add ``settings["proxies"]`` for proxy objectives (and keep them out of a table's
    ``extra`` columns)."""
    proxies = proxy_settings(config, spec)
    if proxies is None:
        return
    settings["proxies"] = proxies
    if "extra" in settings:
        settings["extra"] = [n for n in settings["extra"] if n not in proxies["names"]]
