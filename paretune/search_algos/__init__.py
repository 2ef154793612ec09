"""How the next candidate is chosen: ask/tell engines and the one Ray Tune adapter.

Engines are registered in ``ENGINES`` by name; ``make_engine`` builds one. The Ray adapter lives
in :mod:`paretune.search_algos.ray_searcher` and is imported only when used (it needs Ray).
"""

from __future__ import annotations

from typing import Any

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, InspectionTable, Proposal, Record
from paretune.spaces.base import SearchSpace

ENGINES: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine selectable by its ``name``."""
    ENGINES[cls.name] = cls
    return cls


def _load_builtin_engines() -> None:
    # Imported for their @register side effect.
    from paretune.search_algos import evolution, perturbation, random_search, shrinking  # noqa: F401


def make_engine(
    name: str, space: SearchSpace, objectives: ObjectiveSet, seed: int = 0, **params: Any
) -> Engine:
    """The engine registered as ``name``; unknown parameters raise ``TypeError`` naming them."""
    _load_builtin_engines()
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r} (available: {sorted(ENGINES)})")
    return ENGINES[name](space, objectives, seed=seed, **params)


def engine_names() -> list[str]:
    _load_builtin_engines()
    return sorted(ENGINES)


__all__ = [
    "ENGINES",
    "Engine",
    "InspectionTable",
    "Proposal",
    "Record",
    "engine_names",
    "make_engine",
    "register",
]
