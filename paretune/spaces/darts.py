"""The DARTS cell space: a normal and a reduction cell, 4 intermediate nodes of 2 inputs each.

A DARTS cell has 2 input states (0 and 1: the outputs of the two previous cells) and 4
intermediate nodes (states 2..5); node ``s`` sums two operations applied to two *distinct*
earlier states, and the cell's output concatenates states 2..5. The supernet has 14 candidate
edges per cell (2 + 3 + 4 + 5) and 8 operations per edge (``DARTS_OPS``, ``none`` included).

Decisions, per cell (``normal``, then ``reduce``) and per node ``s`` in 2..5:

* ``{cell}_{s}_in``: the pair of input states, written ``"i-j"`` with ``i < j`` (node 2 has
  only ``0-1``, so it has no such decision; nodes 3, 4, 5 choose among 3, 6 and 10 pairs);
* ``{cell}_{s}_op1`` and ``{cell}_{s}_op2``: the operation on input ``i`` and on input ``j``.

That is 11 decisions per cell and 22 in all. Architectures encode to DARTS's ``Genotype`` text
(``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...],
reduce_concat=range(2, 6))``), with each node's two inputs in ascending order; decoding parses
the text's syntax tree (nothing is evaluated) and accepts the inputs of a node in either order.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from paretune.spaces.base import Arch, Decision, SearchSpace
from paretune.spaces.darts_ops import DARTS_OPS, Genotype

if TYPE_CHECKING:
    from torch import nn

CELLS: tuple[str, ...] = ("normal", "reduce")
NODES: tuple[int, ...] = (2, 3, 4, 5)
CONCAT: tuple[int, ...] = (2, 3, 4, 5)
# The 14 candidate edges of a cell's supernet, (input state, node), in DARTS's order.
DARTS_EDGES: tuple[tuple[int, int], ...] = tuple((i, n) for n in NODES for i in range(n))

_EXAMPLE = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=range(2, 6), "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ...], reduce_concat=range(2, 6))"
)


def input_pairs(node: int) -> tuple[tuple[int, int], ...]:
    """The input-state pairs ``(i, j)``, ``i < j < node``, of intermediate node ``node``."""
    return tuple(itertools.combinations(range(node), 2))


def _pair_name(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


# Genotypes published with DARTS (Liu et al., ICLR 2019) and PertNAS (algorithms.md section 1.6).
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
PERTNAS = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_5x5', 2), ('skip_connect', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_3x3', 0), "
    "('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 2), ('max_pool_3x3', 0), "
    "('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=range(2, 6))"
)


class DartsSpace(SearchSpace):
    """The DARTS cell space (normal and reduction cell); see the module docstring."""

    name = "darts"

    def __init__(self, allowed: Sequence[Sequence[int]] | None = None) -> None:
        decisions = []
        for cell in CELLS:
            for node in NODES:
                if node > 2:
                    pairs = tuple(_pair_name(p) for p in input_pairs(node))
                    decisions.append(Decision(f"{cell}_{node}_in", pairs))
                decisions.append(Decision(f"{cell}_{node}_op1", DARTS_OPS))
                decisions.append(Decision(f"{cell}_{node}_op2", DARTS_OPS))
        super().__init__(decisions, allowed, name="darts")

    # ---------------------------------------------------------------- genotypes
    def genotype(self, arch: Sequence[int]) -> Genotype:
        """The architecture as a :class:`Genotype` (each node's inputs in ascending order)."""
        arch = self.validate(arch)
        k = 0
        cells: dict[str, list[tuple[str, int]]] = {}
        for cell in CELLS:
            edges: list[tuple[str, int]] = []
            for node in NODES:
                pair = (0, 1)
                if node > 2:
                    pair = input_pairs(node)[arch[k]]
                    k += 1
                edges.append((DARTS_OPS[arch[k]], pair[0]))
                edges.append((DARTS_OPS[arch[k + 1]], pair[1]))
                k += 2
            cells[cell] = edges
        return Genotype(cells["normal"], list(CONCAT), cells["reduce"], list(CONCAT))

    def from_genotype(self, genotype: Genotype) -> Arch:
        """Inverse of :meth:`genotype`; raises ``ValueError`` naming what is wrong."""
        arch: list[int] = []
        for cell, edges, concat in (
            ("normal", genotype.normal, genotype.normal_concat),
            ("reduce", genotype.reduce, genotype.reduce_concat),
        ):
            if list(concat) != list(CONCAT):
                raise ValueError(f"{cell}_concat = {list(concat)}: must be [2, 3, 4, 5]")
            if len(edges) != 2 * len(NODES):
                raise ValueError(
                    f"{cell}: {len(edges)} (operation, input) pairs, expected {2 * len(NODES)}"
                )
            for n, node in enumerate(NODES):
                (op_a, in_a), (op_b, in_b) = sorted(edges[2 * n : 2 * n + 2], key=lambda e: e[1])
                for op, src in ((op_a, in_a), (op_b, in_b)):
                    if op not in DARTS_OPS:
                        raise ValueError(
                            f"{cell} node {node}: unknown operation {op!r} "
                            f"(operations: {list(DARTS_OPS)})"
                        )
                    if not 0 <= src < node:
                        raise ValueError(
                            f"{cell} node {node}: input {src} out of range (0..{node - 1})"
                        )
                if in_a == in_b:
                    raise ValueError(
                        f"{cell} node {node}: takes input {in_a} twice (two distinct inputs needed)"
                    )
                if node > 2:
                    arch.append(input_pairs(node).index((in_a, in_b)))
                arch += [DARTS_OPS.index(op_a), DARTS_OPS.index(op_b)]
        return self.validate(arch)

    def cell_graphs(self, arch: Sequence[int]) -> dict[str, list[tuple[int, int, str]]]:
        """Per cell the 8 chosen edges ``(input state, node, operation)``; states 0 and 1 are
        the cell inputs, nodes 2..5 are concatenated into the output."""
        g = self.genotype(arch)
        return {
            cell: [(src, NODES[k // 2], op) for k, (op, src) in enumerate(edges)]
            for cell, edges in (("normal", g.normal), ("reduce", g.reduce))
        }

    # ---------------------------------------------------------------- encoding
    def encode(self, arch: Sequence[int]) -> str:
        g = self.genotype(arch)
        return (
            f"Genotype(normal={g.normal!r}, normal_concat=range(2, 6), "
            f"reduce={g.reduce!r}, reduce_concat=range(2, 6))"
        )

    def decode(self, text: str) -> Arch:
        """Parse DARTS's ``Genotype(...)`` text without evaluating it."""
        if not isinstance(text, str):
            raise ValueError(
                f"not a DARTS genotype: {text!r} ({type(text).__name__}); expected {_EXAMPLE!r}"
            )
        try:
            return self.from_genotype(parse_genotype(text))
        except ValueError as exc:
            raise ValueError(f"DARTS genotype {_short(text)!r}: {exc}") from None

    # ---------------------------------------------------------------- model
    def build(
        self,
        arch: Sequence[int],
        *,
        channels: int = 36,
        layers: int = 20,
        in_channels: int = 3,
        num_classes: int = 10,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
    ) -> nn.Module:
        """DARTS's evaluation network (``NetworkCIFAR``) for this genotype."""
        from paretune.spaces.darts_model import DartsNetwork

        return DartsNetwork(
            self.genotype(arch),
            channels=channels,
            layers=layers,
            in_channels=in_channels,
            num_classes=num_classes,
            auxiliary=auxiliary,
            drop_path_prob=drop_path_prob,
        )


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def parse_genotype(text: str) -> Genotype:
    """Read ``Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)``.

    The text is parsed into a syntax tree and read from literals only (``range(a, b)`` is
    recognised by name); nothing is evaluated. Raises ``ValueError`` saying what is malformed.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"not Python literal syntax; expected {_EXAMPLE!r}") from None
    if not (
        isinstance(tree, ast.Call)
        and isinstance(tree.func, ast.Name | ast.Attribute)
        and (tree.func.id if isinstance(tree.func, ast.Name) else tree.func.attr) == "Genotype"
    ):
        raise ValueError(f"expected a call Genotype(...), like {_EXAMPLE!r}")
    if len(tree.args) > len(_FIELDS):
        raise ValueError(f"Genotype takes {len(_FIELDS)} fields, got {len(tree.args)} positional")
    fields: dict[str, ast.expr] = dict(zip(_FIELDS, tree.args, strict=False))
    for kw in tree.keywords:
        if kw.arg not in _FIELDS or kw.arg in fields:
            raise ValueError(f"unexpected or repeated field {kw.arg!r} (fields: {list(_FIELDS)})")
        fields[kw.arg] = kw.value
    missing = [f for f in _FIELDS if f not in fields]
    if missing:
        raise ValueError(f"missing fields {missing}")
    return Genotype(
        _edges(fields["normal"], "normal"),
        _indices(fields["normal_concat"], "normal_concat"),
        _edges(fields["reduce"], "reduce"),
        _indices(fields["reduce_concat"], "reduce_concat"),
    )


def _int(node: ast.expr, field: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    raise ValueError(f"{field}: expected an integer, got {ast.unparse(node)!r}")


def _edges(node: ast.expr, field: str) -> list[tuple[str, int]]:
    if not isinstance(node, ast.List | ast.Tuple):
        raise ValueError(f"{field}: expected a list of (operation, input) pairs")
    out = []
    for item in node.elts:
        if not (
            isinstance(item, ast.Tuple | ast.List)
            and len(item.elts) == 2
            and isinstance(item.elts[0], ast.Constant)
            and isinstance(item.elts[0].value, str)
        ):
            raise ValueError(f"{field}: expected ('operation', input), got {ast.unparse(item)!r}")
        out.append((item.elts[0].value, _int(item.elts[1], field)))
    return out


def _indices(node: ast.expr, field: str) -> list[int]:
    if isinstance(node, ast.List | ast.Tuple):
        return [_int(e, field) for e in node.elts]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
        and 1 <= len(node.args) <= 2
    ):
        bounds = [_int(a, field) for a in node.args]
        return list(range(*bounds))
    raise ValueError(
        f"{field}: expected a list of states or range(a, b), got {ast.unparse(node)!r}"
    )
