"""The NAS-Bench-Macro space: 8 layers in 3 stages (2, 3, 3), 3 choices per layer.

Choices: ``0`` identity (a 1x1 stride-2 conv + BN in a stage's first layer), ``1`` MobileNetV2
block with expansion 3 and kernel 3, ``2`` expansion 6 and kernel 5. Architectures encode as
the benchmark's keys: 8 codes joined by ``-``, layer 1 first (``2-2-2-1-2-2-2-0``); the
upstream key without dashes (``22212220``) decodes too. An identity in a non-first layer of a
stage is a no-op, so :meth:`MacroSpace.canonical` moves those to the end of the stage (the
benchmark's ``trained_arch``): 3,969 distinct networks among the 6,561 architectures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paretune.spaces.base import Arch, Decision, SearchSpace
from paretune.spaces.macro_stages import MACRO_STAGES

if TYPE_CHECKING:
    from torch import nn

MACRO_CHOICES: tuple[str, ...] = ("0", "1", "2")
MACRO_CHOICE_NAMES: dict[str, str] = {"0": "id", "1": "ir_3x3_t3", "2": "ir_5x5_t6"}
NUM_LAYERS = sum(MACRO_STAGES)
_EXAMPLE = "2-2-2-1-2-2-2-0"


class MacroSpace(SearchSpace):
    """NAS-Bench-Macro's chain of 8 layers; decision ``layer{i}`` has options ``0``/``1``/``2``."""

    name = "macro"

    def __init__(self, allowed: Sequence[Sequence[int]] | None = None) -> None:
        decisions = [Decision(f"layer{i}", MACRO_CHOICES) for i in range(1, NUM_LAYERS + 1)]
        super().__init__(decisions, allowed, name="macro")

    def encode(self, arch: Sequence[int]) -> str:
        arch = self.validate_full(arch)  # a restriction does not change how an arch is named
        return "-".join(MACRO_CHOICES[i] for i in arch)

    def decode(self, text: str) -> Arch:
        """Parse ``2-2-2-1-2-2-2-0`` (or ``22212220``); ``ValueError`` names the value."""
        if not isinstance(text, str):
            raise ValueError(
                f"not a NAS-Bench-Macro architecture: {text!r} ({type(text).__name__}); "
                f"expected 8 codes 0/1/2 joined by '-', like {_EXAMPLE!r}"
            )
        codes = text.strip().split("-") if "-" in text else list(text.strip())
        if len(codes) != NUM_LAYERS or any(c not in MACRO_CHOICES for c in codes):
            raise ValueError(
                f"not a NAS-Bench-Macro architecture: {text!r}; expected 8 codes 0/1/2 joined "
                f"by '-', like {_EXAMPLE!r}"
            )
        return self.validate([int(c) for c in codes])

    def canonical(self, arch: Sequence[int]) -> Arch:
        """The benchmark's ``trained_arch``: non-first identities moved to the stage's end."""
        arch = self.validate_full(arch)
        out: list[int] = []
        k = 0
        for n in MACRO_STAGES:
            stage = arch[k : k + n]
            rest = [c for c in stage[1:] if c != 0]
            out += [stage[0], *rest, *([0] * (n - 1 - len(rest)))]
            k += n
        return tuple(out)

    def build(
        self, arch: Sequence[int], *, in_channels: int = 3, num_classes: int = 10
    ) -> nn.Module:
        """The benchmark's network (see :mod:`paretune.spaces.macro_model`)."""
        from paretune.spaces.macro_model import MacroNetwork

        return MacroNetwork(self.validate(arch), in_channels=in_channels, num_classes=num_classes)
