"""NAS-Bench-201 cell constants, shared by the space and its network (no torch)."""

from __future__ import annotations

NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
# Edges in the order of the standard string |0->1|+|0->2|1->2|+|0->3|1->3|2->3|.
NB201_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
