"""The NAS-Bench-Macro network (Su et al., CVPR 2021) for an architecture of 8 layer codes.

Layout (the benchmark's README): a 3x3 Conv-BN-ReLU stem with 32 channels; 8 layers in 3
stages of 2, 3 and 3 layers at 64, 128 and 256 channels, the first layer of a stage with stride
2; a 1x1 Conv-BN-ReLU to 1280 channels, global average pooling and Linear(1280, classes).
Codes: ``0`` identity (a 1x1 stride-2 Conv-BN in a stage's first layer), ``1`` MobileNetV2
inverted residual with expansion 3 and a 3x3 depthwise conv, ``2`` expansion 6 and 5x5. At 10
classes the parameter count equals the table's ``params_m`` for every architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from paretune.spaces.macro_stages import MACRO_STAGES
from paretune.spaces.mobilenet_model import InvertedResidual

STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# code -> (kernel, expansion) of the inverted residual
BLOCKS: dict[int, tuple[int, int]] = {1: (3, 3), 2: (5, 6)}


class MacroNetwork(nn.Module):
    """The chain network for 8 layer codes (0, 1 or 2)."""

    def __init__(self, codes: Sequence[int], *, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        codes = [int(c) for c in codes]
        if len(codes) != sum(MACRO_STAGES) or any(c not in (0, 1, 2) for c in codes):
            raise ValueError(f"MacroNetwork: codes={codes!r} must be 8 codes 0, 1 or 2")
        for field, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"MacroNetwork: {field}={value!r} must be a positive integer")
        self.codes = tuple(codes)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, STEM_CHANNELS, 3, 1, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        ]
        c, k = STEM_CHANNELS, 0
        for n, out in zip(MACRO_STAGES, STAGE_CHANNELS, strict=True):
            for j in range(n):
                code, stride = codes[k], 2 if j == 0 else 1
                k += 1
                if code == 0:
                    if j == 0:
                        layers += [nn.Conv2d(c, out, 1, 2, bias=False), nn.BatchNorm2d(out)]
                else:
                    kernel, expansion = BLOCKS[code]
                    layers.append(InvertedResidual(c, out, stride, kernel, expansion))
                c = out
        layers += [
            nn.Conv2d(c, HEAD_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(HEAD_CHANNELS),
            nn.ReLU(inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
