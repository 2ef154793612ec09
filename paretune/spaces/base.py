"""Discrete architecture spaces: an ordered list of categorical decisions.

An architecture is a tuple of option indices, one per decision, always indexing the *full*
option list of its decision. A restricted space (``restrict``) only narrows which indices are
allowed, so an architecture and its string encoding mean the same thing in every restriction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Arch = tuple[int, ...]


def as_arch(arch: Sequence[int]) -> Arch:
    """``arch`` as a tuple of ints: the same object when it is one already (a search keeps
    one per trial, so copies would cost memory)."""
    if type(arch) is tuple and all(type(i) is int for i in arch):
        return arch
    return tuple(int(i) for i in arch)


@dataclass(frozen=True)
class Decision:
    """One categorical choice of an architecture (e.g. the operation on one edge)."""

    name: str
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError(f"decision {self.name!r} has no options")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"decision {self.name!r} has duplicate options: {self.options}")


class SearchSpace:
    """An ordered list of decisions, optionally restricted to a subset of options per decision.

    Args:
        decisions: the decisions, in encoding order.
        allowed: per decision, the sorted option indices that may be used; ``None`` allows all.
        name: a short name used in logs and configs.
    """

    name = "space"

    def __init__(
        self,
        decisions: Sequence[Decision],
        allowed: Sequence[Sequence[int]] | None = None,
        name: str | None = None,
    ) -> None:
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        if name is not None:
            self.name = name
        if allowed is None:
            allowed = [range(len(d.options)) for d in self.decisions]
        if len(allowed) != len(self.decisions):
            raise ValueError(
                f"allowed has {len(allowed)} entries, the space has {len(self.decisions)} decisions"
            )
        self.allowed: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(set(int(i) for i in a))) for a in allowed
        )
        for d, a in zip(self.decisions, self.allowed, strict=True):
            if not a:
                raise ValueError(f"decision {d.name!r}: no option left after restriction")
            bad = [i for i in a if not 0 <= i < len(d.options)]
            if bad:
                raise ValueError(f"decision {d.name!r}: option indices {bad} out of range")

    # ---------------------------------------------------------------- basics
    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    @property
    def size(self) -> int:
        """Number of architectures in the (restricted) space."""
        return math.prod(len(a) for a in self.allowed)

    @property
    def is_restricted(self) -> bool:
        return any(
            len(a) < len(d.options) for d, a in zip(self.decisions, self.allowed, strict=True)
        )

    def decision_names(self) -> list[str]:
        return [d.name for d in self.decisions]

    def contains(self, arch: Sequence[int]) -> bool:
        return len(arch) == self.num_decisions and all(
            int(i) in a for i, a in zip(arch, self.allowed, strict=True)
        )

    def validate(self, arch: Sequence[int]) -> Arch:
        """Return ``arch`` as a tuple, or raise ``ValueError`` saying what is wrong with it."""
        arch = as_arch(arch)
        if len(arch) != self.num_decisions:
            raise ValueError(
                f"architecture has {len(arch)} decisions, space {self.name!r} has {self.num_decisions}"
            )
        for d, a, i in zip(self.decisions, self.allowed, arch, strict=True):
            if i not in a:
                allowed = [d.options[j] for j in a]
                raise ValueError(
                    f"decision {d.name!r}: option index {i} not allowed (allowed: {allowed})"
                )
        return arch

    # ---------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> Arch:
        """One architecture drawn uniformly from the (restricted) space."""
        return tuple(int(a[rng.integers(len(a))]) for a in self.allowed)

    def neighbors(self, arch: Sequence[int]) -> list[Arch]:
        """Every architecture that differs from ``arch`` in exactly one decision."""
        arch = tuple(arch)
        out: list[Arch] = []
        for k, a in enumerate(self.allowed):
            for option in a:
                if option != arch[k]:
                    out.append(arch[:k] + (option,) + arch[k + 1 :])
        return out

    def mutate(self, arch: Sequence[int], rng: np.random.Generator) -> Arch:
        """One uniformly chosen one-edit neighbour (``arch`` itself if it has none)."""
        options = self.neighbors(arch)
        if not options:
            return tuple(arch)
        return options[int(rng.integers(len(options)))]

    def canonical(self, arch: Sequence[int]) -> Arch:
        """One representative of the architectures that build the same network as ``arch``.

        The default is ``arch`` itself; spaces with unused decisions (e.g. MobileNet's block slots
        beyond a stage's depth, NAS-Bench-Macro's identities) override it. It ignores the
        restriction: the same network has the same representative in every restriction.
        """
        return as_arch(arch)

    def validate_full(self, arch: Sequence[int]) -> Arch:
        """Like :meth:`validate`, but against every option of the unrestricted space."""
        arch = as_arch(arch)
        if len(arch) != self.num_decisions or any(
            not 0 <= i < len(d.options) for d, i in zip(self.decisions, arch, strict=True)
        ):
            raise ValueError(
                f"not an architecture of space {self.name!r}: {arch!r} "
                f"({self.num_decisions} option indices expected)"
            )
        return arch

    def cell_graphs(self, arch: Sequence[int]) -> dict[str, list[tuple[int, int, str]]] | None:
        """For cell spaces, each cell as ``(source node, target node, operation)`` edges (for
        pictures and graph predictors); ``None`` for spaces that are not cells."""
        return None

    def __iter__(self) -> Iterator[Arch]:
        """All architectures of the (restricted) space, in lexicographic order."""
        return (tuple(p) for p in itertools.product(*self.allowed))

    # ---------------------------------------------------------------- encoding
    def encode(self, arch: Sequence[int]) -> str:
        """A human-readable string; subclasses use their benchmark's standard format."""
        return ",".join(
            f"{d.name}={d.options[i]}" for d, i in zip(self.decisions, arch, strict=True)
        )

    def decode(self, text: str) -> Arch:
        """Inverse of :meth:`encode`; raises ``ValueError`` naming the value and the expected form."""
        expected = ",".join(f"{d.name}=<option>" for d in self.decisions)
        if not isinstance(text, str):
            raise ValueError(
                f"not an architecture string of space {self.name!r}: {text!r} "
                f"({type(text).__name__}); expected {expected!r}"
            )
        items = [p.split("=", 1) for p in text.split(",")]
        if any(len(item) != 2 for item in items):
            raise ValueError(f"architecture string {text!r}: expected {expected!r}")
        parts = dict(items)
        unknown = sorted(set(parts) - set(self.decision_names()))
        missing = [d.name for d in self.decisions if d.name not in parts]
        if unknown or missing:
            raise ValueError(
                f"architecture string {text!r}: missing decisions {missing}, unknown {unknown} "
                f"(expected {expected!r})"
            )
        return self.from_params(parts)

    def to_params(self, arch: Sequence[int]) -> dict[str, str]:
        """The architecture as ``{decision name: option name}`` (for trackers and Optuna)."""
        return {d.name: d.options[i] for d, i in zip(self.decisions, arch, strict=True)}

    def from_params(self, params: Mapping[str, str]) -> Arch:
        """Inverse of :meth:`to_params`; unknown option names raise ``ValueError``."""
        arch = []
        for d in self.decisions:
            if d.name not in params:
                raise ValueError(f"missing decision {d.name!r}")
            value = params[d.name]
            if value not in d.options:
                raise ValueError(
                    f"decision {d.name!r}: unknown option {value!r} (options: {list(d.options)})"
                )
            arch.append(d.options.index(value))
        return self.validate(arch)

    # ---------------------------------------------------------------- restriction
    def restrict(
        self, allowed: Sequence[Sequence[int]] | Mapping[str, Sequence[str]]
    ) -> SearchSpace:
        """A copy of this space with fewer options per decision.

        Args:
            allowed: per decision, the option indices to keep (a sequence aligned with
                ``decisions``), or a mapping ``{decision name: [option names]}`` where decisions
                not named keep their current options. Options must already be allowed here.
        """
        if isinstance(allowed, Mapping):
            unknown = set(allowed) - set(self.decision_names())
            if unknown:
                raise ValueError(
                    f"restrict: unknown decisions {sorted(unknown)} (decisions: {self.decision_names()})"
                )
            idx: list[Sequence[int]] = []
            for d, a in zip(self.decisions, self.allowed, strict=True):
                if d.name not in allowed:
                    idx.append(a)
                    continue
                names = allowed[d.name]
                bad = [n for n in names if n not in d.options]
                if bad:
                    raise ValueError(
                        f"restrict: decision {d.name!r}: unknown options {bad} (options: {list(d.options)})"
                    )
                idx.append([d.options.index(n) for n in names])
            allowed = idx
        if len(allowed) != self.num_decisions:
            raise ValueError(
                f"restrict: {len(allowed)} entries given, space {self.name!r} has {self.num_decisions} decisions"
            )
        for d, old, new in zip(self.decisions, self.allowed, allowed, strict=True):
            extra = set(new) - set(old)
            if extra:
                raise ValueError(
                    f"restrict: decision {d.name!r}: options {sorted(extra)} are not in the current space"
                )
        return self._with_allowed(allowed)

    def _with_allowed(self, allowed: Sequence[Sequence[int]]) -> SearchSpace:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        SearchSpace.__init__(clone, self.decisions, allowed, self.name)
        return clone

    def allowed_names(self) -> dict[str, list[str]]:
        return {
            d.name: [d.options[i] for i in a]
            for d, a in zip(self.decisions, self.allowed, strict=True)
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, decisions={self.num_decisions}, size={self.size})"
