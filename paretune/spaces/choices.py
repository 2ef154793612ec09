"""User-defined categorical spaces: named decisions with lists of option values.

``ChoicesSpace({"depth": [2, 3, 4], "width": [16, 32, 64]})`` has two decisions; an
architecture is a tuple of option indices, encoded as ``depth=3,width=32`` and handed to a
user's evaluator as ``{"depth": 3, "width": 32}`` (:meth:`ChoicesSpace.to_dict`, the option
values with their YAML types).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from paretune.spaces.base import Arch, Decision, SearchSpace

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
Scalar = str | int | float | bool


def _check_value(name: str, value: Any) -> str:
    if not isinstance(value, Scalar) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(
            f"decisions.{name}: option {value!r} is not allowed (allowed: strings, integers, "
            "finite numbers, booleans)"
        )
    text = str(value)
    if not text or any(c in text for c in ",=\n") or text != text.strip():
        raise ValueError(
            f"decisions.{name}: option {value!r} is not allowed (allowed: a non-empty value "
            "without ',', '=', line breaks or surrounding spaces)"
        )
    return text


class ChoicesSpace(SearchSpace):
    """Categorical decisions from a mapping ``{name: [option values]}`` (in mapping order).

    Raises:
        ValueError: no decisions, a bad decision name, an empty or duplicate option list, or an
            option value that is not a scalar, naming the decision and the value.
    """

    name = "choices"

    def __init__(
        self,
        decisions: Mapping[str, Sequence[Scalar]],
        allowed: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if not isinstance(decisions, Mapping) or not decisions:
            raise ValueError(
                f"decisions = {decisions!r}: expected a non-empty mapping "
                "{name: [option, ...]} (e.g. {depth: [2, 3, 4]})"
            )
        out, values = [], {}
        for name, options in decisions.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(
                    f"decisions: name {name!r} is not allowed (allowed: letters, digits, '_' "
                    "and '.', not starting with a digit)"
                )
            if isinstance(options, str | bytes) or not isinstance(options, Sequence) or not options:
                raise ValueError(
                    f"decisions.{name} = {options!r}: expected a non-empty list of options"
                )
            texts = tuple(_check_value(name, v) for v in options)
            if len(set(texts)) != len(texts):
                raise ValueError(f"decisions.{name} = {list(options)!r}: options repeat")
            out.append(Decision(name, texts))
            values[name] = tuple(options)
        self.values: dict[str, tuple[Scalar, ...]] = values
        super().__init__(out, allowed, name="choices")

    def to_dict(self, arch: Sequence[int]) -> dict[str, Scalar]:
        """``{decision: option value}`` with the values as given (ints stay ints)."""
        arch = self.validate(arch)
        return {d.name: self.values[d.name][i] for d, i in zip(self.decisions, arch, strict=True)}

    def from_dict(self, values: Mapping[str, Any]) -> Arch:
        """Inverse of :meth:`to_dict`."""
        return self.from_params({k: str(v) for k, v in values.items()})
