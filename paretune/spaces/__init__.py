"""What is searched: discrete architecture spaces and their torch models."""

from __future__ import annotations

from paretune.spaces.base import Arch, Decision, SearchSpace
from paretune.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Space

SPACES = {"nb201": NB201Space}


def make_space(name: str, restrict: dict[str, list[str]] | None = None) -> SearchSpace:
    """The space registered as ``name``, optionally restricted to ``{decision: [options]}``."""
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r} (available: {sorted(SPACES)})")
    space = SPACES[name]()
    return space.restrict(restrict) if restrict else space


__all__ = [
    "NB201_EDGES",
    "NB201_OPS",
    "SPACES",
    "Arch",
    "Decision",
    "NB201Space",
    "SearchSpace",
    "make_space",
]
