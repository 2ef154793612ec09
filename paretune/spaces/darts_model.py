"""DARTS's evaluation network (``NetworkCIFAR`` of Liu et al.) for a genotype.

Layout, for ``C`` channels and ``L`` cells::

    stem: Conv3x3(in_channels -> 3C) + BN
    L cells; cells L//3 and 2L//3 are reduction cells (stride 2, channels doubled)
    head: global average pool, Linear(4 C_last -> num_classes)
    auxiliary head (off by default) on the output of cell 2L//3, as in DARTS (assumes 8x8 there)

A cell preprocesses its two inputs with ReLU-Conv1x1-BN (a factorized reduction when the
previous cell reduced), applies the genotype's 8 operations (stride 2 on the cell inputs of a
reduction cell) and concatenates its 4 intermediate nodes. Operations as in DARTS's
``operations.py``: ``sep_conv`` is two stacked ReLU-depthwise-pointwise-BN blocks, ``dil_conv``
one dilated ReLU-depthwise-pointwise-BN block, pools have no BN (evaluation model), ``skip_connect``
at stride 2 is a factorized reduction, ``none`` gives zeros. Convolutions have no bias and every
BatchNorm is affine. The factorized reduction pads its shifted branch so odd sizes (7x7) work;
on even sizes it is DARTS's exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from paretune.spaces.darts_ops import DARTS_OPS, Genotype


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU, dilated depthwise conv, pointwise conv, BN."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in,
                c_in,
                kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=c_in,
                bias=False,
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked ReLU-depthwise-pointwise-BN blocks (the first carries the stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1),
            DilConv(c_in, c_out, kernel, 1, padding, 1),
        )


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the spatial size: two 1x1 stride-2 convs on ``x`` and on ``x`` shifted by one."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce: c_out={c_out} must be even")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """One DARTS operation at ``channels`` channels."""
    c = channels
    if name == "none":
        return Zero(stride)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2)
    raise ValueError(f"unknown DARTS operation {name!r} (operations: {list(DARTS_OPS)})")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` (scaling the rest)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class DartsCell(nn.Module):
    """One cell of the evaluation network."""

    def __init__(
        self,
        edges: Sequence[tuple[str, int]],
        concat: Sequence[int],
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        self.steps = len(edges) // 2
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.indices = [int(i) for _, i in edges]
        self.ops = nn.ModuleList(
            make_op(name, c, 2 if reduction and index < 2 else 1) for name, index in edges
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            total = None
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS's auxiliary classifier (for an 8x8 input)."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DartsNetwork(nn.Module):
    """DARTS's ``NetworkCIFAR``: ``forward`` returns the logits; with ``auxiliary`` in training
    mode the auxiliary logits are kept in ``self.logits_aux``.

    Args:
        genotype: the cells.
        channels: ``C``, channels of the first cells (doubled at each reduction).
        layers: ``L``, the number of cells.
        in_channels: channels of the input images.
        num_classes: outputs of the classifier.
        auxiliary: add the auxiliary head (off by default).
        drop_path_prob: drop-path probability in training (0: off).
    """

    def __init__(
        self,
        genotype: Genotype,
        *,
        channels: int = 36,
        layers: int = 20,
        in_channels: int = 3,
        num_classes: int = 10,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        for field, value in (
            ("channels", channels),
            ("layers", layers),
            ("in_channels", in_channels),
            ("num_classes", num_classes),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"DartsNetwork: {field}={value!r} must be a positive integer")
        if layers < 3:
            raise ValueError(f"DartsNetwork: layers={layers!r} must be at least 3")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"DartsNetwork: drop_path_prob={drop_path_prob!r} must be in [0, 1)")
        self.genotype = genotype
        self.layers = layers
        self.auxiliary = bool(auxiliary)
        self.drop_path_prob = float(drop_path_prob)
        self.logits_aux: torch.Tensor | None = None

        c_curr = 3 * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.aux_position = 2 * layers // 3
        c_aux = c_prev
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            edges, concat = (
                (genotype.reduce, genotype.reduce_concat)
                if reduction
                else (genotype.normal, genotype.normal_concat)
            )
            cell = DartsCell(edges, concat, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_prev
        if self.auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary and self.training:
                self.logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        return self.classifier(torch.flatten(out, 1))
