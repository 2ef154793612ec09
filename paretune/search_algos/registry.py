"""The engine registry: engines by name, ``make_engine`` and ``engine_names``.

Built-in engines register themselves with :func:`register` when their module is imported;
:func:`make_engine` and :func:`engine_names` import them on first use.
"""

from __future__ import annotations

from typing import Any

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine
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
    """The names of every registered engine, sorted."""
    _load_builtin_engines()
    return sorted(ENGINES)
