"""The engine registry: engines by name, ``make_engine`` and ``engine_names``.

The built-in engines are listed by ``"module:Class"`` path and imported on first access, so
importing this module loads none of them (and the engine modules do not import the registry).
User engines join with :func:`register`; a registered engine takes precedence over a built-in
of the same name.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine
from paretune.spaces.base import SearchSpace

# name -> "module:Class" of the engines shipped with paretune.
BUILTIN_ENGINES: dict[str, str] = {
    "random": "paretune.search_algos.random_search:RandomSearch",
    "regularized_evolution": "paretune.search_algos.evolution:RegularizedEvolution",
    "pertnas": "paretune.search_algos.perturbation.engine:PerturbationEvolution",
    "tnd": "paretune.search_algos.shrinking.engine:ProgressiveShrinking",
}

_registered: dict[str, type[Engine]] = {}
_loaded: dict[str, type[Engine]] = {}


def _load(path: str) -> type[Engine]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class _Engines(Mapping[str, type[Engine]]):
    """Read-only view of every engine by name; built-ins are imported when first looked up."""

    def __getitem__(self, name: str) -> type[Engine]:
        if name in _registered:
            return _registered[name]
        if name not in _loaded:
            _loaded[name] = _load(BUILTIN_ENGINES[name])  # KeyError for an unknown name
        return _loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in _registered or name in BUILTIN_ENGINES

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(_registered) | set(BUILTIN_ENGINES)))

    def __len__(self) -> int:
        return len(set(_registered) | set(BUILTIN_ENGINES))

    def __repr__(self) -> str:
        return f"ENGINES({list(self)})"


ENGINES: Mapping[str, type[Engine]] = _Engines()


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine selectable by its ``name``."""
    _registered[cls.name] = cls
    return cls


def make_engine(
    name: str, space: SearchSpace, objectives: ObjectiveSet, seed: int = 0, **params: Any
) -> Engine:
    """The engine registered as ``name``; unknown parameters raise ``TypeError`` naming them."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r} (available: {sorted(ENGINES)})")
    return ENGINES[name](space, objectives, seed=seed, **params)


def engine_names() -> list[str]:
    """The names of every registered engine, sorted."""
    return sorted(ENGINES)
