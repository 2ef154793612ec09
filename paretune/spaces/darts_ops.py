"""DARTS cell constants, shared by the space and its network (no torch)."""

from __future__ import annotations

from typing import NamedTuple

DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class Genotype(NamedTuple):
    """DARTS's genotype: per cell 8 ``(operation, input state)`` pairs, two per node."""

    normal: list[tuple[str, int]]
    normal_concat: list[int]
    reduce: list[tuple[str, int]]
    reduce_concat: list[int]
