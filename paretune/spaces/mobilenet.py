"""A MobileNetV2/ProxylessNAS-style macro space: per block kernel and expansion, per stage depth.

The network follows MobileNetV2 (Sandler et al.; torchvision's ``mobilenet_v2``): a 3x3 stem
conv (32 channels), a fixed first block (expansion 1, kernel 3, 16 channels), six searchable
stages of inverted-residual blocks, a 1x1 conv to 1280 channels, pooling and a linear classifier.

Decisions:

* ``s{i}_depth`` for stages 1..5 (24, 32, 64, 96 and 160 channels): blocks used, ``2``/``3``/``4``
  (stage 6, 320 channels, always has one block);
* ``s{i}_b{j}_kernel`` (``3``, ``5``, ``7``) and ``s{i}_b{j}_expand`` (``3``, ``4``, ``6``) for
  every block slot ``j`` up to the stage's largest depth.

Slots beyond a stage's depth are unused, so architectures differing only there build the same
network (:meth:`MobileNetSpace.canonical` maps them to one). MobileNetV2 itself is
:meth:`MobileNetSpace.mobilenet_v2`: depths 2, 3, 4, 3, 3 (and 1), kernel 3, expansion 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from paretune.spaces.base import Arch, Decision, SearchSpace
from paretune.spaces.mobilenet_blocks import Block

if TYPE_CHECKING:
    from torch import nn

KERNELS: tuple[str, ...] = ("3", "5", "7")
EXPANSIONS: tuple[str, ...] = ("3", "4", "6")
DEPTHS: tuple[str, ...] = ("2", "3", "4")


class Stage(NamedTuple):
    """A searchable stage: output channels, stride of its first block, depth options."""

    channels: int
    stride: int
    depths: tuple[str, ...]


# MobileNetV2's stages after the fixed first block (t=1, c=16, n=1, s=1).
STAGES: tuple[Stage, ...] = (
    Stage(24, 2, DEPTHS),
    Stage(32, 2, DEPTHS),
    Stage(64, 2, DEPTHS),
    Stage(96, 1, DEPTHS),
    Stage(160, 2, DEPTHS),
    Stage(320, 1, ("1",)),
)
MOBILENET_V2_DEPTHS: tuple[int, ...] = (2, 3, 4, 3, 3, 1)


class MobileNetSpace(SearchSpace):
    """The MobileNetV2-style macro space; see the module docstring."""

    name = "mobilenet"

    def __init__(self, allowed: Sequence[Sequence[int]] | None = None) -> None:
        decisions = []
        for i, stage in enumerate(STAGES, start=1):
            if len(stage.depths) > 1:
                decisions.append(Decision(f"s{i}_depth", stage.depths))
            for j in range(1, max(int(d) for d in stage.depths) + 1):
                decisions.append(Decision(f"s{i}_b{j}_kernel", KERNELS))
                decisions.append(Decision(f"s{i}_b{j}_expand", EXPANSIONS))
        super().__init__(decisions, allowed, name="mobilenet")

    def blocks(self, arch: Sequence[int]) -> list[Block]:
        """The searchable blocks the architecture builds (unused slots left out)."""
        params = self.to_params(self.validate_full(arch))
        out = []
        for i, stage in enumerate(STAGES, start=1):
            depth = int(params.get(f"s{i}_depth", stage.depths[0]))
            for j in range(1, depth + 1):
                out.append(
                    Block(
                        stage.channels,
                        stage.stride if j == 1 else 1,
                        int(params[f"s{i}_b{j}_kernel"]),
                        int(params[f"s{i}_b{j}_expand"]),
                    )
                )
        return out

    def canonical(self, arch: Sequence[int]) -> Arch:
        """``arch`` with unused block slots set to their first option."""
        arch = list(self.validate_full(arch))
        params = self.to_params(arch)
        for k, d in enumerate(self.decisions):
            stage, _, rest = d.name.partition("_")
            if not rest.startswith("b"):
                continue
            i = int(stage[1:])
            depth = int(params.get(f"s{i}_depth", STAGES[i - 1].depths[0]))
            if int(rest[1:].split("_")[0]) > depth:
                arch[k] = 0
        return tuple(arch)

    def mobilenet_v2(self) -> Arch:
        """MobileNetV2's own configuration: its depths, kernel 3, expansion 6."""
        params = {}
        for d in self.decisions:
            if d.name.endswith("_depth"):
                i = int(d.name[1 : d.name.index("_")])
                params[d.name] = str(MOBILENET_V2_DEPTHS[i - 1])
            elif d.name.endswith("_kernel"):
                params[d.name] = "3"
            else:
                params[d.name] = "6"
        return self.from_params(params)

    def build(
        self,
        arch: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        dropout: float = 0.2,
    ) -> nn.Module:
        """The torch network (see :mod:`paretune.spaces.mobilenet_model`)."""
        from paretune.spaces.mobilenet_model import MobileNetNetwork

        return MobileNetNetwork(
            self.blocks(arch),
            num_classes=num_classes,
            in_channels=in_channels,
            width_mult=width_mult,
            stem_stride=stem_stride,
            dropout=dropout,
        )
