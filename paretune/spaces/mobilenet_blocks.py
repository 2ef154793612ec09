"""The block record of a MobileNet-space network, shared by the space and its network."""

from __future__ import annotations

from typing import NamedTuple


class Block(NamedTuple):
    """One inverted-residual block of a built network."""

    channels: int
    stride: int
    kernel: int
    expansion: int
