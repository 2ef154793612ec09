"""The MobileNetV2-style network of :mod:`paretune.spaces.mobilenet`.

Layers as in torchvision's ``mobilenet_v2``: Conv-BN-ReLU6 stem (32 channels, stride 2), a
first inverted residual of expansion 1 (16 channels), the searched blocks (1x1 expansion
Conv-BN-ReLU6 unless the expansion is 1, a depthwise ``k x k`` Conv-BN-ReLU6 carrying the stride,
a 1x1 projection Conv-BN; a residual when stride 1 and channels unchanged), a 1x1 Conv-BN-ReLU6
to 1280 channels, global average pooling, dropout and a linear classifier. Channel counts are
multiplied by ``width_mult`` and rounded to multiples of 8 as torchvision does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from paretune.spaces.mobilenet_blocks import Block

STEM_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never below 90%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNReLU6(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2's block with a ``kernel x kernel`` depthwise convolution."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(c_in * expansion))
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU6(c_in, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, kernel=kernel, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetNetwork(nn.Module):
    """The network for a list of searched blocks.

    Args:
        blocks: the searched blocks after the fixed first one.
        num_classes: outputs of the classifier.
        in_channels: channels of the input images.
        width_mult: channel multiplier (torchvision's ``width_mult``).
        stem_stride: stride of the stem (2 as in MobileNetV2; 1 for small images).
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        blocks: Sequence[Block],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        for field, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"MobileNetNetwork: {field}={value!r} must be a positive integer")
        if not width_mult > 0:
            raise ValueError(f"MobileNetNetwork: width_mult={width_mult!r} must be positive")
        if stem_stride not in (1, 2):
            raise ValueError(f"MobileNetNetwork: stem_stride={stem_stride!r} must be 1 or 2")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MobileNetNetwork: dropout={dropout!r} must be in [0, 1)")
        self.blocks = tuple(blocks)
        c = make_divisible(STEM_CHANNELS * width_mult)
        last = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, c, stride=stem_stride)]
        first = make_divisible(FIRST_BLOCK_CHANNELS * width_mult)
        layers.append(InvertedResidual(c, first, 1, 3, 1))
        c = first
        for b in self.blocks:
            out = make_divisible(b.channels * width_mult)
            layers.append(InvertedResidual(c, out, b.stride, b.kernel, b.expansion))
            c = out
        layers.append(ConvBNReLU6(c, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
