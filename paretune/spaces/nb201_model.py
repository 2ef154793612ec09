"""The NAS-Bench-201 macro network (``TinyNetwork`` of the NB201 paper) for any cell.

Layout, for ``C`` channels and ``N`` cells per stage::

    stem: Conv3x3(in_channels -> C) + BN
    stage 1: N cells at C channels
    reduction: ResNet basic block (C -> 2C, stride 2)
    stage 2: N cells at 2C channels
    reduction: ResNet basic block (2C -> 4C, stride 2)
    stage 3: N cells at 4C channels
    head: BN + ReLU, global average pool, Linear(4C -> num_classes)

A cell has 4 nodes; node ``j`` is the sum over ``i < j`` of ``op_ij(node_i)``; the cell's output is
node 3. Operations: ``none`` (zeros), ``skip_connect`` (identity), ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU-Conv-BN), ``avg_pool_3x3`` (stride 1, padding 1, padding not counted).
Convolutions have no bias and every BatchNorm is affine, as in NB201, so at ``C=16, N=5`` and 10
classes the parameter count equals the table's ``cifar10_params_m``.

The reductions halve the spatial size (rounding up), so 8x8, 28x28 and 32x32 inputs all work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from paretune.spaces.nb201_ops import NB201_EDGES, NB201_OPS


class ReLUConvBN(nn.Sequential):
    """ReLU, a bias-free convolution, then an affine BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` operation: an all-zero tensor of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """One NB201 operation at ``channels`` channels, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 operation {name!r} (operations: {list(NB201_OPS)})")


class NB201Cell(nn.Module):
    """The NB201 cell: a 4-node DAG with one operation per edge, in standard edge order."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != len(NB201_EDGES):
            raise ValueError(
                f"ops has {len(ops)} entries, an NB201 cell has {len(NB201_EDGES)} edges"
            )
        self.ops = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for dst in range(1, 4):
            total = self.ops[k](nodes[0])
            for src in range(1, dst):
                total = total + self.ops[k + src](nodes[src])
            nodes.append(total)
            k += dst
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """NB201's reduction block: two ReLU-Conv-BN 3x3 (the first with stride 2) plus a shortcut.

    The shortcut is a 2x2 average pool followed by a bias-free 1x1 convolution.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            # ceil_mode keeps odd sizes (e.g. 7x7 from MNIST) aligned with the strided conv.
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 network for one cell.

    Args:
        ops: the 6 operation names of the cell, in the standard edge order
            ``0->1, 0->2, 1->2, 0->3, 1->3, 2->3``.
        channels: ``C``, the channels of the first stage (doubled at each reduction).
        cells_per_stage: ``N``, cells in each of the 3 stages.
        input_size: height and width of the (square) input; only checked to be positive.
        in_channels: channels of the input images.
        num_classes: outputs of the classifier.
    """

    def __init__(
        self,
        ops: Sequence[str],
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
        input_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        ops = list(ops)
        for field, value in (
            ("channels", channels),
            ("cells_per_stage", cells_per_stage),
            ("input_size", input_size),
            ("in_channels", in_channels),
            ("num_classes", num_classes),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"NB201Network: {field}={value!r} must be a positive integer")
        bad = [op for op in ops if op not in NB201_OPS]
        if bad:
            raise ValueError(
                f"NB201Network: unknown operations {bad} (operations: {list(NB201_OPS)})"
            )
        if len(ops) != len(NB201_EDGES):
            raise ValueError(
                f"NB201Network: ops has {len(ops)} entries, expected {len(NB201_EDGES)}"
            )
        self.ops = tuple(ops)
        self.input_size = input_size
        self.in_channels = in_channels

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
            layers.extend(NB201Cell(ops, c_curr) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.cells(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(torch.flatten(x, 1))
