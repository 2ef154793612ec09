"""How the latency predictor sees an architecture of any space: three encodings.

- ``nb201``: the NB201 cell as an 8-node graph (:mod:`.graph`), read by the graph network.
- ``cell-graph``: any cell space (one whose :meth:`SearchSpace.cell_graphs` returns cells, e.g.
  DARTS's normal and reduction cell), read by the same graph network. Per cell, its states are
  nodes (``input`` for states no edge enters, ``state`` otherwise), each chosen edge is an
  operation node between its source and target state (``src -> op -> dst``), and a ``cell_out``
  node gathers every non-input state (DARTS concatenates them); one ``output`` node, last, gathers
  the cells. Features: one-hot node type (``input``, ``output``, ``cell_out``, ``state``, then the
  operations), one-hot cell, and the ``from_input``/``to_output`` flags. Arcs of ``none``
  operations are dropped (``prune_none``) as for NB201. Graphs of different sizes are padded
  with masked nodes.
- ``one-hot``: every other space (MobileNet, NAS-Bench-Macro, choices, python): the architecture's
  :meth:`~SearchSpace.canonical` form as one one-hot block per decision, read by an MLP.

An encoding describes itself as plain JSON (:meth:`meta`), saved with the predictor; loading
rebuilds it from that and, for cell graphs of a space that is not built in, from the space the
caller hands over (:func:`encoding_from_meta`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from paretune.objectives.predictor.graph import FLAGS as NB201_FLAGS
from paretune.objectives.predictor.graph import NODE_TYPES as NB201_NODE_TYPES
from paretune.objectives.predictor.graph import NUM_FEATURES as NB201_NUM_FEATURES
from paretune.objectives.predictor.graph import nb201_graphs
from paretune.spaces.base import Arch, Decision, SearchSpace

ENCODINGS = ("auto", "nb201", "cell-graph", "one-hot")
CELL_ROLES: tuple[str, ...] = ("input", "output", "cell_out", "state")
CELL_FLAGS: tuple[str, ...] = ("from_input", "to_output")
NONE_OPS = ("none", "zero")
# Spaces without settings, rebuilt by name when a saved predictor is loaded without its space.
BUILT_IN = ("nb201", "darts", "mobilenet", "macro")


def _decisions_of(space: SearchSpace) -> list[list[Any]]:
    return [[d.name, list(d.options)] for d in space.decisions]


def _first_arch(space: SearchSpace) -> Arch:
    return tuple(a[0] for a in space.allowed)


def is_nb201(space: SearchSpace) -> bool:
    from paretune.spaces.nb201 import NB201Space

    return isinstance(space, NB201Space)


class Encoding:
    """Base: the space, its decisions, and the arch check every encoding does."""

    kind = "base"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def check(self, archs: Sequence[Sequence[int]]) -> list[Arch]:
        return [self.space.validate_full(a) for a in archs]

    def tensors(self, archs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        raise NotImplementedError

    @property
    def is_graph(self) -> bool:
        return self.kind != "one-hot"

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "space": self.space.name,
            "decisions": _decisions_of(self.space),
            "num_features": self.num_features,
        }


class NB201Encoding(Encoding):
    """The NB201 cell graph of :mod:`.graph` (unchanged, so older predictors load)."""

    kind = "nb201"

    def __init__(self, space: SearchSpace, prune_none: bool = True) -> None:
        super().__init__(space)
        self.prune_none = prune_none

    @property
    def num_features(self) -> int:
        return NB201_NUM_FEATURES

    def tensors(self, archs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        adj, feats = nb201_graphs(self.check(archs), self.prune_none)
        return torch.from_numpy(adj), torch.from_numpy(feats)

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "node_types": list(NB201_NODE_TYPES),
            "node_flags": list(NB201_FLAGS),
        }


class CellGraphEncoding(Encoding):
    """Any cell space's cells as one graph (see the module docstring)."""

    kind = "cell-graph"

    def __init__(
        self,
        space: SearchSpace,
        prune_none: bool = True,
        operations: Sequence[str] | None = None,
        cells: Sequence[str] | None = None,
    ) -> None:
        super().__init__(space)
        self.prune_none = prune_none
        sample = space.cell_graphs(_first_arch(space))
        if sample is None:
            raise ValueError(f"space {space.name!r} has no cells (cell_graphs is None)")
        if operations is None:  # every option name, in order, once: a superset of the ops
            seen: dict[str, None] = {}
            for d in space.decisions:
                for o in d.options:
                    seen.setdefault(str(o), None)
            operations = list(seen)
        self.operations = [str(o) for o in operations]
        self.cells = list(sample) if cells is None else [str(c) for c in cells]
        self.node_types = [*CELL_ROLES, *self.operations]

    @property
    def num_features(self) -> int:
        return len(self.node_types) + len(self.cells) + len(CELL_FLAGS)

    def graph(self, arch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Adjacency ``(n, n)`` and features ``(n, f)`` of one architecture; output node last."""
        cells = self.space.cell_graphs(arch) or {}
        unknown = sorted(set(cells) - set(self.cells))
        if unknown:
            raise ValueError(f"cell-graph encoding: unknown cells {unknown} (known: {self.cells})")
        types: list[int] = []
        cell_of: list[int] = []
        arcs: list[tuple[int, int]] = []

        def node(kind: str, cell: int) -> int:
            if kind not in self.node_types:
                raise ValueError(
                    f"cell-graph encoding: unknown operation {kind!r} (known: {self.operations})"
                )
            types.append(self.node_types.index(kind))
            cell_of.append(cell)
            return len(types) - 1

        outs = []
        for c, name in enumerate(self.cells):
            edges = cells.get(name, [])
            targets = {int(d) for _, d, _ in edges}
            states = sorted({int(s) for s, _, _ in edges} | targets)
            idx = {s: node("state" if s in targets else "input", c) for s in states}
            for src, dst, op in edges:
                k = node(str(op), c)
                if self.prune_none and str(op) in NONE_OPS:
                    continue
                arcs += [(idx[int(src)], k), (k, idx[int(dst)])]
            out = node("cell_out", c)
            arcs += [(idx[s], out) for s in states if s in targets]
            outs.append(out)
        final = node("output", -1)
        arcs += [(o, final) for o in outs]
        n = len(types)
        adj = np.zeros((n, n), dtype=np.float32)
        for u, v in arcs:
            adj[u, v] = 1.0
        feats = np.zeros((n, self.num_features), dtype=np.float32)
        feats[np.arange(n), types] = 1.0
        base = len(self.node_types)
        for v, c in enumerate(cell_of):
            if c >= 0:
                feats[v, base + c] = 1.0
        inputs = np.array([t == 0 for t in types])
        feats[:, base + len(self.cells)] = _reach(adj, inputs)
        sink = np.zeros(n, dtype=bool)
        sink[final] = True
        feats[:, base + len(self.cells) + 1] = _reach(adj.T, sink)
        return adj, feats

    def tensors(self, archs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        graphs = [self.graph(a) for a in self.check(archs)]
        size = max((g[0].shape[0] for g in graphs), default=1)
        adj = np.zeros((len(graphs), size, size), dtype=np.float32)
        feats = np.zeros((len(graphs), size, self.num_features), dtype=np.float32)
        mask = np.zeros((len(graphs), size), dtype=np.float32)
        for i, (a, f) in enumerate(graphs):
            pad = size - a.shape[0]  # padding first: the output node stays last
            adj[i, pad:, pad:] = a
            feats[i, pad:] = f
            mask[i, pad:] = 1.0
        return torch.from_numpy(adj), torch.from_numpy(feats), torch.from_numpy(mask)

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "node_types": list(self.node_types),
            "operations": list(self.operations),
            "cells": list(self.cells),
            "node_flags": list(CELL_FLAGS),
        }


def _reach(adj: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Nodes reachable from ``start`` along ``adj``'s arcs (``start`` included)."""
    seen = start.copy()
    frontier = start.copy()
    while frontier.any():
        nxt = (adj[frontier].sum(axis=0) > 0) & ~seen
        seen |= nxt
        frontier = nxt
    return seen.astype(np.float32)


class OneHotEncoding(Encoding):
    """One one-hot block per decision of the architecture's canonical form."""

    kind = "one-hot"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        sizes = [len(d.options) for d in space.decisions]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._width = int(sum(sizes))

    @property
    def num_features(self) -> int:
        return self._width

    def tensors(self, archs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        rows = [self.space.canonical(a) for a in self.check(archs)]
        x = np.zeros((len(rows), self._width), dtype=np.float32)
        if rows:
            cols = np.asarray(rows, dtype=np.int64) + self.offsets
            x[np.arange(len(rows))[:, None], cols] = 1.0
        return (torch.from_numpy(x),)


def make_encoding(space: SearchSpace, kind: str = "auto", prune_none: bool = True) -> Encoding:
    """The encoding of ``kind`` for ``space``; ``auto``: NB201's graph for NB201, a cell graph
    for other cell spaces, one-hot otherwise."""
    if kind not in ENCODINGS:
        raise ValueError(f"predictor encoding {kind!r} is unknown (allowed: {list(ENCODINGS)})")
    if kind == "auto":
        if is_nb201(space):
            kind = "nb201"
        elif space.cell_graphs(_first_arch(space)) is not None:
            kind = "cell-graph"
        else:
            kind = "one-hot"
    if kind == "nb201":
        if not is_nb201(space):
            raise ValueError(f"predictor encoding 'nb201': space {space.name!r} is not NB201")
        return NB201Encoding(space, prune_none)
    if kind == "cell-graph":
        return CellGraphEncoding(space, prune_none)
    return OneHotEncoding(space)


def same_decisions(space: SearchSpace, decisions: Sequence[Sequence[Any]]) -> bool:
    return _decisions_of(space) == [[str(n), [str(o) for o in opts]] for n, opts in decisions]


def describe(decisions: Sequence[Sequence[Any]]) -> str:
    names = [str(d[0]) for d in decisions]
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} decisions ({shown})"


def encoding_from_meta(
    meta: Mapping[str, Any], space: SearchSpace | None, prune_none: bool = True
) -> Encoding | None:
    """The saved encoding, on ``space`` when given (it must have the saved decisions), else on
    the built-in space of the saved name, else (one-hot only) on the saved decisions.

    Returns ``None`` for a cell graph of a space that is not built in and not given (the
    predictor then needs :meth:`LatencyPredictor.use_space` before it predicts).
    """
    kind = meta.get("kind", "nb201")
    name = str(meta.get("space", "nb201"))
    decisions = meta.get("decisions")
    if space is None and name in BUILT_IN:
        from paretune.spaces import make_space

        space = make_space(name)
    if space is not None and decisions is not None and not same_decisions(space, decisions):
        raise ValueError(
            f"this latency predictor was trained on space {name!r} with {describe(decisions)}, "
            f"not space {space.name!r} with {describe(_decisions_of(space))}"
        )
    if space is None:
        if kind != "one-hot" or decisions is None:
            return None
        space = SearchSpace(
            [Decision(str(n), tuple(str(o) for o in opts)) for n, opts in decisions], name=name
        )
    if kind == "nb201":
        return NB201Encoding(space, prune_none)
    if kind == "cell-graph":
        return CellGraphEncoding(space, prune_none, meta.get("operations"), meta.get("cells"))
    if kind == "one-hot":
        return OneHotEncoding(space)
    raise ValueError(f"predictor encoding {kind!r} is unknown (allowed: {list(ENCODINGS[1:])})")
