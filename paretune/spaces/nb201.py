"""The NAS-Bench-201 cell space: 4 nodes, 6 edges, 5 operations per edge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paretune.spaces.base import Arch, Decision, SearchSpace
from paretune.spaces.nb201_ops import NB201_EDGES, NB201_OPS

if TYPE_CHECKING:
    from torch import nn


_EXAMPLE = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|"

# Operations from the fewest parameters and multiply-adds to the most.
_COST_ORDER = ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")


def edge_name(src: int, dst: int) -> str:
    return f"e{src}_{dst}"


def cheapest_arch(space: SearchSpace) -> Arch:
    """The architecture with the fewest parameters and FLOPs: per edge the cheapest allowed op."""
    return tuple(
        min(allowed, key=lambda i, d=d: _COST_ORDER.index(d.options[i]))
        for d, allowed in zip(space.decisions, space.allowed, strict=True)
    )


class NB201Space(SearchSpace):
    """NAS-Bench-201's cell: decision ``e{i}_{j}`` is the operation on the edge from node i to j.

    Architectures encode to the standard NB201 string, e.g.
    ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
    """

    name = "nb201"

    def __init__(self, allowed: Sequence[Sequence[int]] | None = None) -> None:
        decisions = [Decision(edge_name(s, d), NB201_OPS) for s, d in NB201_EDGES]
        super().__init__(decisions, allowed, name="nb201")

    def encode(self, arch: Sequence[int]) -> str:
        ops = [NB201_OPS[i] for i in arch]
        nodes = []
        k = 0
        for dst in range(1, 4):
            nodes.append("|" + "|".join(f"{ops[k + src]}~{src}" for src in range(dst)) + "|")
            k += dst
        return "+".join(nodes)

    def decode(self, text: str) -> Arch:
        """Parse an NB201 string; raises ``ValueError`` naming the value and what is malformed."""
        if not isinstance(text, str):
            raise ValueError(
                f"not an NB201 architecture string: {text!r} ({type(text).__name__}); expected "
                f"a string like {_EXAMPLE!r}"
            )
        nodes = text.strip().split("+")
        if len(nodes) != 3:
            raise ValueError(
                f"not an NB201 architecture string (expected 3 nodes joined by '+', like "
                f"{_EXAMPLE!r}): {text!r}"
            )
        arch: list[int] = []
        for dst, node in enumerate(nodes, start=1):
            items = [p for p in node.strip("|").split("|") if p]
            if len(items) != dst:
                raise ValueError(f"node {dst} of {text!r} has {len(items)} inputs, expected {dst}")
            for src, item in enumerate(items):
                op, _, src_text = item.partition("~")
                if src_text != str(src):
                    raise ValueError(f"edge {item!r} in {text!r}: expected input ~{src}")
                if op not in NB201_OPS:
                    raise ValueError(
                        f"unknown operation {op!r} in {text!r} (operations: {list(NB201_OPS)})"
                    )
                arch.append(NB201_OPS.index(op))
        return self.validate(arch)

    def cell_graphs(self, arch: Sequence[int]) -> dict[str, list[tuple[int, int, str]]]:
        """The cell's 6 edges ``(source, target, operation)``, in the standard edge order."""
        arch = self.validate(arch)
        return {"cell": [(s, d, NB201_OPS[i]) for (s, d), i in zip(NB201_EDGES, arch, strict=True)]}

    def build(
        self,
        arch: Sequence[int],
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
        input_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> nn.Module:
        """The torch network of NB201 for this cell (see :mod:`paretune.spaces.nb201_model`)."""
        from paretune.spaces.nb201_model import NB201Network

        return NB201Network(
            [NB201_OPS[i] for i in self.validate(arch)],
            channels=channels,
            cells_per_stage=cells_per_stage,
            input_size=input_size,
            in_channels=in_channels,
            num_classes=num_classes,
        )
