"""The NB201 cell as a graph for the latency predictor (operations on nodes).

An NB201 cell has 4 feature-map nodes and 6 edges, each carrying one operation. The predictor
sees the usual "operations on nodes" form (as in BRP-NAS): 8 graph nodes, the cell's input,
the 6 operations in standard edge order (``0->1, 0->2, 1->2, 0->3, 1->3, 2->3``) and the
cell's output. Data flows from the input to every operation leaving node 0, from an operation
``i->j`` to every operation leaving node ``j``, and from every operation entering node 3 to the
output. A ``none`` operation passes nothing, so by default it keeps its node (its one-hot type
still counts) but loses its arcs: whether the output is reachable from the input at all, which
decides whether a compiler can drop the whole cell, is then a property of the graph.

Node features are one-hot types (``input``, ``output``, then the 5 NB201 operations) followed by
two structural flags computed from the arcs: the node is reachable from the input, and the
output is reachable from the node. A compiler that removes dead operations (TFLite on the
phones and the Raspberry Pi) keeps exactly the nodes with both flags set; a framework that runs
every operation (PyTorch on the GPUs) pays for all of them, and the one-hot types still say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from paretune.spaces.nb201 import NB201_EDGES, NB201_OPS

NODE_TYPES: tuple[str, ...] = ("input", "output", *NB201_OPS)
FLAGS: tuple[str, ...] = ("from_input", "to_output")
NUM_FEATURES = len(NODE_TYPES) + len(FLAGS)
NUM_NODES = len(NB201_EDGES) + 2
_NONE = NB201_OPS.index("none")


def nb201_graph(arch: Sequence[int], prune_none: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Adjacency and one-hot node features of one NB201 cell.

    Args:
        arch: 6 operation indices in standard edge order.
        prune_none: drop the arcs of ``none`` operations (they pass no data).

    Returns:
        ``(adjacency, features)``: an ``8 x 8`` float array with ``adjacency[u, v] = 1`` when data
        flows from node ``u`` to node ``v``, and an ``8 x 9`` float array (7 one-hot types, 2
        flags).
    """
    ops = [int(i) for i in arch]
    if len(ops) != len(NB201_EDGES) or any(not 0 <= i < len(NB201_OPS) for i in ops):
        raise ValueError(
            f"nb201_graph: {tuple(arch)!r} is not an NB201 architecture "
            f"({len(NB201_EDGES)} operation indices in 0..{len(NB201_OPS) - 1})"
        )
    out = NUM_NODES - 1
    adj = np.zeros((NUM_NODES, NUM_NODES), dtype=np.float32)
    feats = np.zeros((NUM_NODES, NUM_FEATURES), dtype=np.float32)
    feats[0, 0] = 1.0
    feats[out, 1] = 1.0
    live = [not (prune_none and op == _NONE) for op in ops]
    for k, ((src, dst), op) in enumerate(zip(NB201_EDGES, ops, strict=True)):
        node = k + 1
        feats[node, 2 + op] = 1.0
        if not live[k]:
            continue
        if src == 0:
            adj[0, node] = 1.0
        for m, (src2, _) in enumerate(NB201_EDGES):
            if src2 == dst and live[m]:
                adj[node, m + 1] = 1.0
        if dst == 3:
            adj[node, out] = 1.0
    # Nodes are in topological order (input, edges by destination, output).
    fwd = np.zeros(NUM_NODES, dtype=bool)
    fwd[0] = True
    for v in range(1, NUM_NODES):
        fwd[v] = bool((adj[:, v] > 0)[fwd].any()) if v else True
    bwd = np.zeros(NUM_NODES, dtype=bool)
    bwd[out] = True
    for u in range(NUM_NODES - 2, -1, -1):
        bwd[u] = bool((adj[u] > 0)[bwd].any())
    feats[:, len(NODE_TYPES)] = fwd
    feats[:, len(NODE_TYPES) + 1] = bwd
    return adj, feats


def nb201_graphs(
    archs: Sequence[Sequence[int]], prune_none: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked :func:`nb201_graph` of many architectures: ``(n, 8, 8)`` and ``(n, 8, 9)``."""
    if len(archs) == 0:
        return (
            np.zeros((0, NUM_NODES, NUM_NODES), dtype=np.float32),
            np.zeros((0, NUM_NODES, NUM_FEATURES), dtype=np.float32),
        )
    pairs = [nb201_graph(a, prune_none) for a in archs]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
