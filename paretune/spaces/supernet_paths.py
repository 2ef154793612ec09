"""Helpers of the cell supernets (:mod:`paretune.spaces.supernet`): the operations each edge
allows (from a space's restriction or given per edge) and the sum of a node's incoming edges."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from paretune.spaces.base import SearchSpace


def sum_edges(
    edges: nn.ModuleList,
    states: Sequence[torch.Tensor],
    first: int,
    path: Sequence[int | None],
    weights: Sequence[torch.Tensor | None],
) -> torch.Tensor | None:
    """The sum of the edges ``first, first + 1, ...`` from ``states[0], states[1], ...`` into
    one node (``None`` when no edge contributes)."""
    total = None
    for src, state in enumerate(states):
        h = edges[first + src](state, path[first + src], weights[first + src])
        if h is not None:
            total = h if total is None else total + h
    return total


def _darts_allowed_pairs(space: SearchSpace) -> list[dict[int, list[tuple[int, int]]]]:
    """Per cell (normal, reduce), per node, the allowed input pairs of the space."""
    from paretune.spaces.darts import input_pairs

    out: list[dict[int, list[tuple[int, int]]]] = []
    names = space.decision_names()
    for cell in ("normal", "reduce"):
        per: dict[int, list[tuple[int, int]]] = {2: [(0, 1)]}
        for node in range(3, 6):
            d = names.index(f"{cell}_{node}_in")
            per[node] = [input_pairs(node)[i] for i in space.allowed[d]]
        out.append(per)
    return out


def _darts_space_options(space: SearchSpace) -> list[list[int]]:
    """Per edge (normal then reduce, ``DARTS_EDGES`` order) the operations the space allows."""
    from paretune.spaces.darts import DARTS_EDGES

    names = space.decision_names()
    out: list[list[int]] = []
    pairs = _darts_allowed_pairs(space)
    for c, cell in enumerate(("normal", "reduce")):
        for src, node in DARTS_EDGES:
            ops: set[int] = set()
            op1 = space.allowed[names.index(f"{cell}_{node}_op1")]
            op2 = space.allowed[names.index(f"{cell}_{node}_op2")]
            for a, b in pairs[c][node]:
                if src == a:
                    ops.update(op1)
                if src == b:
                    ops.update(op2)
            out.append(sorted(ops))
    return out


def _edge_options(
    given: Sequence[Sequence[int]] | None,
    default: list[list[int]],
    names: list[str],
    ops: tuple[str, ...],
) -> list[list[int]]:
    if given is None:
        return default
    if len(given) != len(names):
        raise ValueError(
            f"edge_options has {len(given)} entries, the supernet has {len(names)} edges"
        )
    out = []
    for name, opts in zip(names, given, strict=True):
        opts = sorted({int(k) for k in opts})
        bad = [k for k in opts if not 0 <= k < len(ops)]
        if bad:
            raise ValueError(
                f"edge_options for edge {name!r}: indices {bad} out of range 0..{len(ops) - 1}"
            )
        out.append(opts)
    return out
