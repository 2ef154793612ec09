"""A user's own model searched by paretune: a small CNN on scikit-learn's digits.

The search space is written in YAML (``conf/custom_space.yaml``, a ``choices`` space with
``width``, ``depth`` and ``kernel``); paretune calls :func:`evaluate` in every trial with the
architecture as a dict and a ``report`` callable, and reads back the metrics the objectives
name::

    paretune run conf/custom_space.yaml

or from Python: ``paretune.run("conf/custom_space.yaml")``. The function can also be called
directly::

    from custom_model import evaluate
    evaluate({"width": 16, "depth": 2, "kernel": 3}, report=lambda **m: print(m))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


def make_model(width: int, depth: int, kernel: int) -> nn.Module:
    """``depth`` conv-BN-ReLU layers of ``width`` channels with ``kernel``x``kernel`` filters."""
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(depth):
        layers += [
            nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


def _data(seed: int) -> tuple[torch.Tensor, ...]:
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def evaluate(
    arch: dict[str, Any],
    report: Callable[..., None],
    epochs: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Train the CNN of ``arch`` and return its validation accuracy (%), parameters (M) and
    CPU latency at batch 1 (ms); ``report(epoch=..., accuracy=...)`` after every epoch."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = make_model(int(arch["width"]), int(arch["depth"]), int(arch["kernel"]))
    xtr, ytr, xva, yva = _data(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        for i in range(0, len(xtr), 64):
            opt.zero_grad()
            loss_fn(model(xtr[i : i + 64]), ytr[i : i + 64]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = 100.0 * float((model(xva).argmax(1) == yva).float().mean())
        report(epoch=epoch, accuracy=accuracy)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    with torch.no_grad():
        one = xva[:1]
        times = []
        for _ in range(10):
            started = time.perf_counter()
            model(one)
            times.append(time.perf_counter() - started)
    return {"accuracy": accuracy, "params": params, "latency": 1e3 * float(np.median(times))}


if __name__ == "__main__":
    print(evaluate({"width": 16, "depth": 2, "kernel": 3}, report=lambda **m: print(m)))
