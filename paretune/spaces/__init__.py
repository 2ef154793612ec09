"""What is searched: discrete architecture spaces and their torch models."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paretune.spaces.base import Arch, Decision, SearchSpace
from paretune.spaces.choices import ChoicesSpace
from paretune.spaces.darts import DARTS_OPS, DartsSpace
from paretune.spaces.macro import MacroSpace
from paretune.spaces.mobilenet import MobileNetSpace
from paretune.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Space
from paretune.spaces.python import load_object, python_space

SPACES: dict[str, Callable[..., SearchSpace]] = {
    "nb201": NB201Space,
    "darts": DartsSpace,
    "mobilenet": MobileNetSpace,
    "macro": MacroSpace,
    "choices": ChoicesSpace,
    "python": python_space,
}
# The settings each kind requires and those it may take (besides ``restrict``).
SPACE_SETTINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "nb201": ((), ()),
    "darts": ((), ()),
    "mobilenet": ((), ()),
    "macro": ((), ()),
    "choices": (("decisions",), ()),
    "python": (("factory",), ("args", "sources")),
}


def make_space(
    kind: str,
    restrict: Mapping[str, Sequence[str]] | None = None,
    **settings: Any,
) -> SearchSpace:
    """The space of ``kind``, optionally restricted to ``{decision: [options]}``.

    ``settings`` are the kind's own (``choices``: ``decisions={name: [options]}``; ``python``:
    ``factory="module:function"``, optional ``args`` and ``sources``). An unknown kind or
    setting raises ``ValueError`` naming it and what is allowed.
    """
    if kind not in SPACES:
        raise ValueError(f"unknown space {kind!r} (available: {sorted(SPACES)})")
    required, optional = SPACE_SETTINGS[kind]
    allowed = required + optional
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(
            f"space {kind!r}: unknown settings {unknown} (allowed: {list(allowed) or 'none'})"
        )
    missing = [s for s in required if s not in settings]
    if missing:
        raise ValueError(f"space {kind!r}: missing settings {missing}")
    space = SPACES[kind](**settings)
    return space.restrict(restrict) if restrict else space


__all__ = [
    "DARTS_OPS",
    "NB201_EDGES",
    "NB201_OPS",
    "SPACES",
    "SPACE_SETTINGS",
    "Arch",
    "ChoicesSpace",
    "DartsSpace",
    "Decision",
    "MacroSpace",
    "MobileNetSpace",
    "NB201Space",
    "SearchSpace",
    "load_object",
    "make_space",
    "python_space",
]
