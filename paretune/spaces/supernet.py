"""Weight-sharing supernets of the NB201 and DARTS cell spaces.

A :class:`CellSupernet` holds, on every edge of every cell, one module per *allowed* operation
(a mixed edge); options pruned by :meth:`SearchSpace.restrict` (or by ``edge_options``) are not
built and hold no weights. It runs in two modes:

* ``net(x, path=path)``: one operation per edge (SPOS); ``path`` is a list, one entry per edge,
  of an operation index (into ``net.ops``) or ``None`` (the edge is not used);
* ``net(x, weights=ws)``: per edge the sum ``sum_k ws[e][k] * op_k(x)`` over the allowed ``k``
  (DARTS: ``ws[e] = softmax(alpha_e)``);
* both: per edge the weights where ``ws[e]`` is a tensor, else the path's operation.

:meth:`CellSupernet.extract` returns the compact stand-alone network, exactly ``space.build(arch)``
with the same settings, with the supernet's weights copied in: in eval mode its output equals the
supernet's single-path output on the same input.

NB201 (:class:`NB201Supernet`): 6 edges in the standard order, one genotype shared by every cell,
network as :class:`~paretune.spaces.nb201_model.NB201Network`. DARTS (:class:`DartsSupernet`):
14 normal + 14 reduce edges (``DARTS_EDGES`` order, normal first), the search-phase network size
by default (8 cells, ``C=16``) but with the evaluation network's operations (affine BN, pools
without BN) so that extraction is exact; an architecture uses 2 edges per node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from paretune.spaces.base import Arch, SearchSpace
from paretune.spaces.supernet_paths import (
    _darts_allowed_pairs,
    _darts_space_options,
    _edge_options,
    sum_edges,
)

Path = list[int | None]
Weights = Sequence[torch.Tensor | None]


class MixedEdge(nn.Module):
    """One edge of a supernet: a module per allowed operation (keyed by operation name)."""

    def __init__(
        self, names: Sequence[str], options: Sequence[int], make: Callable[[str], nn.Module]
    ) -> None:
        super().__init__()
        self.names = tuple(names)
        self.options = [int(k) for k in options]
        self.ops = nn.ModuleDict({self.names[k]: make(self.names[k]) for k in self.options})

    def forward(
        self, x: torch.Tensor, choice: int | None, weights: torch.Tensor | None
    ) -> torch.Tensor | None:
        if weights is not None:
            total = None
            for k in self.options:
                h = weights[k] * self.ops[self.names[k]](x)
                total = h if total is None else total + h
            return total
        if choice is None:
            return None
        return self.ops[self.names[choice]](x)

    def op(self, index: int) -> nn.Module:
        return self.ops[self.names[index]]


class CellSupernet(nn.Module):
    """Base of the cell supernets; see the module docstring for the interface."""

    edge_names: list[str]
    ops: tuple[str, ...]
    edge_options: list[list[int]]

    def __init__(self, space: SearchSpace, settings: dict[str, Any]) -> None:
        super().__init__()
        self.space = space
        self.settings = dict(settings)

    # ------------------------------------------------------------------ paths
    @property
    def num_edges(self) -> int:
        return len(self.edge_names)

    def check_path(self, path: Sequence[int | None]) -> Path:
        """``path`` as a list, or ``ValueError`` naming the edge and the allowed options."""
        if len(path) != self.num_edges:
            raise ValueError(
                f"path has {len(path)} entries, the supernet has {self.num_edges} edges"
            )
        out: Path = []
        for e, k in enumerate(path):
            if k is not None:
                k = int(k)
                if k not in self.edge_options[e]:
                    allowed = [self.ops[i] for i in self.edge_options[e]]
                    raise ValueError(
                        f"edge {self.edge_names[e]!r}: operation index {k} is not in the "
                        f"supernet (allowed: {allowed})"
                    )
            out.append(k)
        return out

    def _check_weights(self, weights: Weights) -> list[torch.Tensor | None]:
        if len(weights) != self.num_edges:
            raise ValueError(
                f"weights has {len(weights)} entries, the supernet has {self.num_edges} edges"
            )
        return list(weights)

    def path_of(self, arch: Sequence[int]) -> Path:
        raise NotImplementedError

    def arch_of(self, path: Sequence[int | None]) -> Arch:
        """The architecture (the space's option indices) of an edge-level path."""
        raise NotImplementedError

    def sample_path(
        self, rng: np.random.Generator, logits: Sequence[Sequence[float]] | None = None
    ) -> Path:
        """A path of a valid architecture: operations uniform over each edge's options, or
        drawn from ``softmax(logits[e])`` restricted to them (``logits``: one row of
        ``len(ops)`` numbers per edge)."""
        raise NotImplementedError

    def _draw(
        self, rng: np.random.Generator, e: int, logits: Sequence[Sequence[float]] | None
    ) -> int:
        options = self.edge_options[e]
        if logits is None:
            return int(options[rng.integers(len(options))])
        z = np.asarray([float(logits[e][k]) for k in options])
        p = np.exp(z - z.max())
        return int(options[rng.choice(len(options), p=p / p.sum())])

    # ------------------------------------------------------------------ extraction
    def extract(self, arch: Sequence[int]) -> nn.Module:
        """The compact network of ``arch`` (``space.build(arch, **settings)``) with this
        supernet's weights copied in (on the supernet's device, in its train/eval mode)."""
        arch = self.space.validate_full(arch)
        path = self.check_path(self.path_of(arch))
        compact = self.space.build(arch, **self._build_kwargs())
        device = next(self.parameters()).device
        compact.to(device)
        self._copy_into(compact, path)
        compact.train(self.training)
        return compact

    def extract_path(self, path: Sequence[int | None]) -> nn.Module:
        """:meth:`extract` from an edge-level path."""
        return self.extract(self.arch_of(self.check_path(path)))

    def _build_kwargs(self) -> dict[str, Any]:
        return dict(self.settings)

    def _copy_into(self, compact: nn.Module, path: Path) -> None:
        raise NotImplementedError


def _load(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict(), strict=True)


# ====================================================================== NB201
class NB201SupernetCell(nn.Module):
    """An NB201 cell whose 6 edges are mixed edges."""

    def __init__(self, options: Sequence[Sequence[int]], channels: int) -> None:
        super().__init__()
        from paretune.spaces.nb201_model import make_op
        from paretune.spaces.nb201_ops import NB201_OPS

        self.edges = nn.ModuleList(
            MixedEdge(NB201_OPS, opts, lambda name: make_op(name, channels)) for opts in options
        )

    def forward(
        self, x: torch.Tensor, path: Path, weights: list[torch.Tensor | None]
    ) -> torch.Tensor:
        nodes = [x]
        k = 0
        for dst in range(1, 4):
            total = sum_edges(self.edges, nodes, k, path, weights)
            nodes.append(x.mul(0.0) if total is None else total)
            k += dst
        return nodes[-1]


class NB201Supernet(CellSupernet):
    """The NB201 network (see :mod:`paretune.spaces.nb201_model`) with supernet cells."""

    def __init__(
        self,
        space: SearchSpace,
        edge_options: Sequence[Sequence[int]] | None = None,
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
        input_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        from paretune.spaces.nb201_model import ResNetBasicBlock
        from paretune.spaces.nb201_ops import NB201_EDGES, NB201_OPS

        settings = dict(
            channels=channels,
            cells_per_stage=cells_per_stage,
            input_size=input_size,
            in_channels=in_channels,
            num_classes=num_classes,
        )
        for field, value in settings.items():
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"NB201Supernet: {field}={value!r} must be a positive integer")
        super().__init__(space, settings)
        self.ops = NB201_OPS
        self.edge_names = [f"{s}->{d}" for s, d in NB201_EDGES]
        self.edge_options = _edge_options(
            edge_options, [list(a) for a in space.allowed], self.edge_names, self.ops
        )
        c = channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(c)
        )
        layers: list[nn.Module] = []
        c_prev = c
        for stage, c_curr in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                layers.append(ResNetBasicBlock(c_prev, c_curr))
                c_prev = c_curr
            layers.extend(
                NB201SupernetCell(self.edge_options, c_curr) for _ in range(cells_per_stage)
            )
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(
        self,
        x: torch.Tensor,
        path: Sequence[int | None] | None = None,
        weights: Weights | None = None,
    ) -> torch.Tensor:
        path, ws = _modes(self, path, weights)
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, path, ws) if isinstance(layer, NB201SupernetCell) else layer(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(torch.flatten(x, 1))

    def path_of(self, arch: Sequence[int]) -> Path:
        return [int(i) for i in self.space.validate_full(arch)]

    def arch_of(self, path: Sequence[int | None]) -> Arch:
        if any(k is None for k in path):
            raise ValueError(f"NB201 path {list(path)}: every edge needs an operation")
        return self.space.validate_full([int(k) for k in path])  # type: ignore[arg-type]

    def sample_path(
        self, rng: np.random.Generator, logits: Sequence[Sequence[float]] | None = None
    ) -> Path:
        return [self._draw(rng, e, logits) for e in range(self.num_edges)]

    def _copy_into(self, compact: nn.Module, path: Path) -> None:
        _load(compact.stem, self.stem)
        for c_layer, s_layer in zip(compact.cells, self.cells, strict=True):
            if isinstance(s_layer, NB201SupernetCell):
                for e, op in enumerate(c_layer.ops):
                    _load(op, s_layer.edges[e].op(path[e]))
            else:
                _load(c_layer, s_layer)
        _load(compact.lastact, self.lastact)
        _load(compact.classifier, self.classifier)


# ====================================================================== DARTS
class DartsSupernetCell(nn.Module):
    """A DARTS cell with all 14 candidate edges as mixed edges."""

    def __init__(
        self,
        options: Sequence[Sequence[int]],
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        from paretune.spaces.darts import DARTS_EDGES
        from paretune.spaces.darts_model import FactorizedReduce, ReLUConvBN, make_op
        from paretune.spaces.darts_ops import DARTS_OPS

        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        self.edges = nn.ModuleList(
            MixedEdge(
                DARTS_OPS,
                opts,
                lambda name, s=(2 if reduction and src < 2 else 1): make_op(name, c, s),
            )
            for opts, (src, _) in zip(options, DARTS_EDGES, strict=True)
        )
        self.multiplier = 4

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        path: Sequence[int | None],
        weights: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for node in range(2, 6):
            total = sum_edges(self.edges, states, e, path, weights)
            e += node
            if total is None:
                base = states[1][:, :, ::2, ::2] if self.reduction else states[1]
                total = base.mul(0.0)
            states.append(total)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(CellSupernet):
    """DARTS's network (search-phase size by default) with supernet cells."""

    def __init__(
        self,
        space: SearchSpace,
        edge_options: Sequence[Sequence[int]] | None = None,
        *,
        channels: int = 16,
        layers: int = 8,
        input_size: int | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        from paretune.spaces.darts import CELLS, DARTS_EDGES
        from paretune.spaces.darts_ops import DARTS_OPS

        settings = dict(
            channels=channels, layers=layers, in_channels=in_channels, num_classes=num_classes
        )
        for field, value in settings.items():
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"DartsSupernet: {field}={value!r} must be a positive integer")
        if layers < 3:
            raise ValueError(f"DartsSupernet: layers={layers!r} must be at least 3")
        super().__init__(space, settings)
        self.input_size = input_size  # not used: the network adapts to any input size
        self.ops = DARTS_OPS
        self.edge_names = [f"{cell}:{s}->{d}" for cell in CELLS for s, d in DARTS_EDGES]
        self.edge_options = _edge_options(
            edge_options, _darts_space_options(space), self.edge_names, self.ops
        )
        self._pairs = _darts_allowed_pairs(space)
        c_curr = 3 * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        n = len(DARTS_EDGES)
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            opts = self.edge_options[n:] if reduction else self.edge_options[:n]
            cell = DartsSupernetCell(opts, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(
        self,
        x: torch.Tensor,
        path: Sequence[int | None] | None = None,
        weights: Weights | None = None,
    ) -> torch.Tensor:
        path, ws = _modes(self, path, weights)
        n = self.num_edges // 2
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            sl = slice(n, None) if cell.reduction else slice(0, n)
            s0, s1 = s1, cell(s0, s1, path[sl], ws[sl])
        out = self.global_pooling(s1)
        return self.classifier(torch.flatten(out, 1))

    def path_of(self, arch: Sequence[int]) -> Path:
        from paretune.spaces.darts import DARTS_EDGES
        from paretune.spaces.darts_ops import DARTS_OPS

        graphs = self.space.cell_graphs(self.space.validate_full(arch))
        path: Path = [None] * self.num_edges
        for c, cell in enumerate(("normal", "reduce")):
            for src, node, op in graphs[cell]:
                path[c * len(DARTS_EDGES) + DARTS_EDGES.index((src, node))] = DARTS_OPS.index(op)
        return path

    def arch_of(self, path: Sequence[int | None]) -> Arch:
        from paretune.spaces.darts import DARTS_EDGES, DartsSpace
        from paretune.spaces.darts_ops import Genotype

        if len(path) != self.num_edges:
            raise ValueError(
                f"path has {len(path)} entries, the supernet has {self.num_edges} edges"
            )
        n = len(DARTS_EDGES)
        cells = []
        for c, cell in enumerate(("normal", "reduce")):
            edges = []
            for node in range(2, 6):
                used = [
                    (self.ops[path[c * n + e]], src)  # type: ignore[index]
                    for e, (src, dst) in enumerate(DARTS_EDGES)
                    if dst == node and path[c * n + e] is not None
                ]
                if len(used) != 2:
                    raise ValueError(
                        f"DARTS path: {cell} node {node} uses {len(used)} edges, exactly 2 needed"
                    )
                edges += used
            cells.append(edges)
        genotype = Genotype(cells[0], [2, 3, 4, 5], cells[1], [2, 3, 4, 5])
        # Option indices are those of the full space (a restriction only narrows them).
        return DartsSpace().from_genotype(genotype)

    def sample_path(
        self, rng: np.random.Generator, logits: Sequence[Sequence[float]] | None = None
    ) -> Path:
        """Per node, an allowed input pair (uniform), then each of its two edges' operation."""
        from paretune.spaces.darts import DARTS_EDGES

        n = len(DARTS_EDGES)
        path: Path = [None] * self.num_edges
        for c in range(2):
            for node in range(2, 6):
                pairs = [
                    p
                    for p in self._pairs[c][node]
                    if self.edge_options[c * n + DARTS_EDGES.index((p[0], node))]
                    and self.edge_options[c * n + DARTS_EDGES.index((p[1], node))]
                ]
                if not pairs:
                    raise ValueError(f"DARTS supernet: no usable input pair for node {node}")
                pair = pairs[int(rng.integers(len(pairs)))]
                for src in pair:
                    e = c * n + DARTS_EDGES.index((src, node))
                    path[e] = self._draw(rng, e, logits)
        return path

    def _build_kwargs(self) -> dict[str, Any]:
        return dict(self.settings)

    def _copy_into(self, compact: nn.Module, path: Path) -> None:
        from paretune.spaces.darts import DARTS_EDGES

        n = len(DARTS_EDGES)
        _load(compact.stem, self.stem)
        for c_cell, s_cell in zip(compact.cells, self.cells, strict=True):
            _load(c_cell.preprocess0, s_cell.preprocess0)
            _load(c_cell.preprocess1, s_cell.preprocess1)
            base = n if s_cell.reduction else 0
            for k, op in enumerate(c_cell.ops):
                node = 2 + k // 2
                e = DARTS_EDGES.index((c_cell.indices[k], node))
                _load(op, s_cell.edges[e].op(path[base + e]))  # type: ignore[arg-type]
        _load(compact.classifier, self.classifier)


def _modes(
    net: CellSupernet, path: Sequence[int | None] | None, weights: Weights | None
) -> tuple[Path, list[torch.Tensor | None]]:
    if path is None and weights is None:
        raise ValueError("a supernet forward needs path=... (single path) or weights=... (mixed)")
    p = net.check_path(path) if path is not None else [None] * net.num_edges
    w = net._check_weights(weights) if weights is not None else [None] * net.num_edges
    return p, w


# ====================================================================== helpers
def build_supernet(
    space: SearchSpace, edge_options: Sequence[Sequence[int]] | None = None, **settings: Any
) -> CellSupernet:
    """The supernet of an ``nb201`` or ``darts`` space (restricted or not).

    ``settings`` are the space's network settings (nb201: ``channels``, ``cells_per_stage``,
    ``input_size``, ``in_channels``, ``num_classes``; darts: ``channels``, ``layers``,
    ``input_size`` (ignored), ``in_channels``, ``num_classes``). An unknown setting or space
    raises ``ValueError`` naming it and what is allowed.
    """
    import inspect

    from paretune.spaces.darts import DartsSpace
    from paretune.spaces.nb201 import NB201Space

    if isinstance(space, NB201Space):
        cls: type[CellSupernet] = NB201Supernet
    elif isinstance(space, DartsSpace):
        cls = DartsSupernet
    else:
        raise ValueError(
            f"build_supernet: space {getattr(space, 'name', space)!r} has no supernet "
            "(supported: nb201, darts)"
        )
    allowed = [
        n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(
            f"build_supernet: {unknown[0]}={settings[unknown[0]]!r} is not a setting of the "
            f"{space.name} supernet (allowed: {', '.join(allowed)})"
        )
    return cls(space, edge_options, **settings)


_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_bn(
    net: nn.Module,
    loader: Iterable[Any],
    path: Sequence[int | None] | None = None,
    batches: int = 10,
    *,
    weights: Weights | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Recompute every BatchNorm's running statistics as the exact average over ``batches``
    batches of ``loader`` (tensors or ``(x, y)`` pairs), running ``net`` on ``path``/``weights``
    (a supernet) or plainly (a compact network). Leaves ``net`` in eval mode; returns it."""
    if device is None:
        device = next(net.parameters()).device
    bns = [m for m in net.modules() if isinstance(m, _BN) and m.track_running_stats]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    kwargs: dict[str, Any] = {}
    if path is not None:
        kwargs["path"] = path
    if weights is not None:
        kwargs["weights"] = weights
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                x = batch[0] if isinstance(batch, tuple | list) else batch
                net(x.to(device), **kwargs)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        net.eval()
    return net


__all__ = [
    "CellSupernet",
    "DartsSupernet",
    "MixedEdge",
    "NB201Supernet",
    "build_supernet",
    "recalibrate_bn",
]
