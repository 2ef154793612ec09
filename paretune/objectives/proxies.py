"""Zero-cost proxies: scores of an untrained network from one mini-batch (or none).

Written from the papers' definitions (torch only):

* ``synflow`` (Tanaka et al. 2020, "Pruning neural networks without any data"): every weight
  replaced by its absolute value, batch norm removed, an all-ones input of batch 1 in double
  precision; R = sum of the output; score = sum over the weights of Conv/Linear layers of
  ``theta * dR/dtheta``. Data-free.
* ``naswot`` (Mellor et al. 2021, "Neural architecture search without training", v2): the binary
  code of every ReLU's input (``x > 0``) per image; K_H[i, j] = number of units where images i
  and j agree (N_A minus the Hamming distance); score = log|det K_H|.
* ``jacov`` (NASWOT v1): the Jacobians J_i = d(sum of output_i)/d(input_i), flattened; their
  correlation matrix C over the batch, eigenvalues v; score = -sum(log(v + k) + 1/(v + k)),
  k = 1e-5.
* ``grad_norm`` (Abdelfattah et al. 2021): sum over Conv/Linear weights of ``||dL/dW||_2``,
  L the cross-entropy of the batch.
* ``snip`` (Lee et al. 2019): sum over Conv/Linear weights of ``|W * dL/dW|``.
* ``fisher`` (Theis et al. 2018, as used by Abdelfattah et al.): per channel of every
  Conv/Linear output a, ``0.5 * mean_batch((sum_spatial a * dL/da) ** 2)``, summed.
* ``params`` (millions) and ``flops`` (millions of multiply-adds at batch 1, ``torch.utils.
  flop_counter`` through :func:`~paretune.objectives.measure.count_flops`).

Every score uses a fresh network initialised from ``seed`` (the same for every architecture), so a
score is a function of the architecture alone; :class:`ProxyScorer` caches scores per
architecture (its canonical form).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from paretune.objectives.base import Evaluation, MetricInfo, ReportFn
from paretune.spaces.base import Arch, SearchSpace

#: proxy name -> direction (a larger synflow... predicts a better network; params/flops: cost).
PROXIES: dict[str, str] = {
    "synflow": "max",
    "naswot": "max",
    "jacov": "max",
    "grad_norm": "max",
    "snip": "max",
    "fisher": "max",
    "params": "min",
    "flops": "min",
}
PROXY_UNITS = {"params": "M", "flops": "M"}
DATA_FREE = ("synflow", "params", "flops")
# Proxies computed from one cross-entropy backward pass (shared, same init and batch).
_LOSS_PROXIES = ("grad_norm", "snip", "fisher")
#: Default network settings per space kind (the NB201 paper's network, small DARTS).
BUILD_DEFAULTS: dict[str, dict[str, Any]] = {
    "nb201": {"channels": 16, "cells_per_stage": 5},
    "darts": {"channels": 16, "layers": 8},
}
INPUT_DEFAULTS: dict[str, int] = {"mobilenet": 224}


def check_proxy_names(names: Sequence[str], field: str = "proxy") -> list[str]:
    """``names`` as a list, or ``ValueError`` naming the first unknown one and the allowed."""
    names = [names] if isinstance(names, str) else list(names)
    for n in names:
        if n not in PROXIES:
            raise ValueError(f"{field} = {n!r}: unknown proxy (allowed: {', '.join(PROXIES)})")
    if not names:
        raise ValueError(f"{field}: no proxy given (allowed: {', '.join(PROXIES)})")
    return names


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _without_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every batch-norm layer replaced by the identity."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    return model


def _logits(out: Any) -> torch.Tensor:
    """The logits of a forward pass (models may return ``(logits, aux)``)."""
    return out[0] if isinstance(out, tuple | list) else out


# --------------------------------------------------------------------------- proxies
def synflow(model: nn.Module, input_shape: Sequence[int]) -> float:
    """SynFlow of ``model`` (data-free; see the module docstring)."""
    net = _without_bn(model).double()
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    net.zero_grad()
    x = torch.ones((1, *input_shape[1:]), dtype=torch.float64)
    _logits(net(x)).sum().backward()
    total = 0.0
    for layer in _weighted_layers(net):
        if layer.weight.grad is not None:
            total += float((layer.weight * layer.weight.grad).sum().detach())
    return total


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K_H| of the binary ReLU codes over the batch ``x`` (NASWOT v2)."""
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        code = (inputs[0].detach().reshape(n, -1) > 0).double()
        kernel.add_(code @ code.t() + (1.0 - code) @ (1.0 - code).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -math.inf


def jacov(model: nn.Module, x: torch.Tensor) -> float:
    """The Jacobian-covariance score of NASWOT v1 (higher: less correlated Jacobians)."""
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    _logits(model(x)).sum().backward()
    jac = x.grad.detach().reshape(x.shape[0], -1).double().numpy()
    with np.errstate(all="ignore"):
        corr = np.corrcoef(jac)
    if not np.all(np.isfinite(corr)):
        return -math.inf
    v = np.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-np.sum(np.log(np.abs(v) + k) + 1.0 / (np.abs(v) + k)))


def loss_proxies(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str] = _LOSS_PROXIES
) -> dict[str, float]:
    """grad_norm, snip and fisher from one cross-entropy backward pass on ``(x, y)``."""
    layers = _weighted_layers(model)
    acts: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        if out.requires_grad:
            out.retain_grad()
            acts.append(out)

    handles = [m.register_forward_hook(keep) for m in layers] if "fisher" in names else []
    try:
        model.zero_grad()
        loss = nn.functional.cross_entropy(_logits(model(x)), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    out: dict[str, float] = {}
    grads = [(m.weight, m.weight.grad) for m in layers if m.weight.grad is not None]
    if "grad_norm" in names:
        out["grad_norm"] = float(sum(g.detach().norm(2) for _, g in grads))
    if "snip" in names:
        out["snip"] = float(sum((w.detach() * g).abs().sum() for w, g in grads))
    if "fisher" in names:
        total = 0.0
        for a in acts:
            if a.grad is None:
                continue
            prod = a.detach() * a.grad
            per_channel = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
            total += float(0.5 * per_channel.pow(2).mean(0).sum())
        out["fisher"] = total
    return out


def compute_proxies(
    build: Callable[[], nn.Module],
    names: Sequence[str],
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """The proxies ``names`` of the network ``build()`` (initialised from ``seed``).

    ``x, y``: one batch (needed unless every name is data-free); ``input_shape``: the input's
    shape for the data-free ones (default ``x.shape``). ``timings`` (optional) receives the
    seconds each proxy took.
    """
    import time

    names = check_proxy_names(names)
    shape = tuple(input_shape if input_shape is not None else x.shape)  # type: ignore[union-attr]
    if x is None and any(n not in DATA_FREE for n in names):
        raise ValueError(f"proxies {[n for n in names if n not in DATA_FREE]} need a batch")

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        model = build()
        model.train()
        return model

    out: dict[str, float] = {}
    loss_names = [n for n in names if n in _LOSS_PROXIES]
    for name in names:
        if name in out:
            continue
        start = time.perf_counter()
        if name == "synflow":
            out[name] = synflow(fresh(), shape)
        elif name == "naswot":
            out[name] = naswot(fresh(), x)
        elif name == "jacov":
            out[name] = jacov(fresh(), x)
        elif name in _LOSS_PROXIES:
            out.update(loss_proxies(fresh(), x, y, loss_names))
        elif name == "params":
            model = fresh()
            out[name] = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        elif name == "flops":
            from paretune.objectives.measure import count_flops

            model = fresh().eval()
            out[name] = float(count_flops(model, (1, *shape[1:])))
        if timings is not None:
            spent = time.perf_counter() - start
            for n in loss_names if name in _LOSS_PROXIES else [name]:
                timings[n] = spent / (len(loss_names) if name in _LOSS_PROXIES else 1)
    return {n: out[n] for n in names}


# --------------------------------------------------------------------------- data
def proxy_batch(
    dataset: str = "digits",
    batch_size: int = 64,
    input_size: int = 32,
    in_channels: int = 3,
    seed: int = 0,
    data_path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded training batch of ``dataset`` resized to ``input_size`` (bilinear) with its
    channels repeated to ``in_channels`` (standardised per channel)."""
    from paretune.objectives.data import load_dataset

    data = load_dataset(dataset, path=data_path, seed=seed)
    train = data.train
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train.y), size=min(batch_size, len(train.y)), replace=False)
    x = torch.as_tensor(np.asarray(train.x[idx], dtype=np.float32))
    y = torch.as_tensor(np.asarray(train.y[idx], dtype=np.int64))
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = nn.functional.interpolate(
            x, size=(input_size, input_size), mode="bilinear", align_corners=False
        )
    if x.shape[1] != in_channels:
        x = x.mean(1, keepdim=True).repeat(1, in_channels, 1, 1)
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / (x.std(dim=(0, 2, 3), keepdim=True) + 1e-6)
    return x.contiguous(), y


# --------------------------------------------------------------------------- scorer
class ProxyScorer:
    """Zero-cost proxies of a space's architectures, cached per (canonical) architecture.

    Args:
        space: a trainable space (it has ``build``), or a space spec ``{"kind": ..., ...}``.
        names: the proxies to compute (see :data:`PROXIES`).
        dataset: the batch's dataset (``digits``, ``mnist``, ``cifar10``).
        batch_size: images in the batch.
        seed: seeds the network's initialisation and the batch.
        input_size: image side (default: 32, 224 for ``mobilenet``).
        build: keyword arguments of ``space.build`` (default: C=16 N=5 for NB201).
        data_path: folder of CIFAR-10 batches (``cifar10`` only).
        threads: torch threads while scoring (default 1: on a shared machine more threads
            make these small networks many times slower; ``None``: unchanged).
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        names: Sequence[str] = ("synflow",),
        *,
        dataset: str = "digits",
        batch_size: int = 64,
        seed: int = 0,
        input_size: int | None = None,
        build: Mapping[str, Any] | None = None,
        data_path: str | None = None,
        threads: int | None = 1,
    ) -> None:
        if isinstance(space, Mapping):
            from paretune.objectives.python_evaluator import space_from_spec

            space = space_from_spec(dict(space))
        if not callable(getattr(space, "build", None)):
            raise ValueError(
                f"proxies: space {space.name!r} cannot build networks (no build method); "
                "zero-cost proxies need a trainable space"
            )
        self.space = space
        self.names = check_proxy_names(names)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 2:
            raise ValueError(f"proxies.batch_size = {batch_size!r}: must be an integer >= 2")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        kind = getattr(space, "name", "")
        self.input_size = int(input_size or INPUT_DEFAULTS.get(kind, 32))
        params = inspect.signature(space.build).parameters
        kwargs = {**BUILD_DEFAULTS.get(kind, {}), **dict(build or {})}
        if "input_size" in params:
            kwargs.setdefault("input_size", self.input_size)
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown:
            allowed = [p for p in params if p not in ("self", "arch")]
            raise ValueError(f"proxies.build: unknown settings {unknown} (allowed: {allowed})")
        self.build_kwargs = kwargs
        self.in_channels = int(kwargs.get("in_channels", 3))
        self.data_path = data_path
        self.threads = threads
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.cache: dict[Arch, dict[str, float]] = {}
        self.timings: dict[str, list[float]] = {n: [] for n in self.names}

    @property
    def needs_data(self) -> bool:
        return any(n not in DATA_FREE for n in self.names)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batch is None:
            self._batch = proxy_batch(
                self.dataset,
                self.batch_size,
                self.input_size,
                self.in_channels,
                self.seed,
                self.data_path,
            )
        return self._batch

    def scores(self, arch: Sequence[int]) -> dict[str, float]:
        """Every configured proxy of ``arch`` (computed once per canonical architecture)."""
        key = self.space.canonical(self.space.validate_full(arch))
        if key in self.cache:
            return dict(self.cache[key])
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            with torch.random.fork_rng(devices=[]):  # the caller's torch RNG is left as it was
                return self._compute(key)
        finally:
            torch.set_num_threads(previous)

    def _compute(self, key: Arch) -> dict[str, float]:
        if self.needs_data:
            x, y = self.batch()
        else:
            x, y = None, None
        shape = (1, self.in_channels, self.input_size, self.input_size)
        spent: dict[str, float] = {}
        values = compute_proxies(
            lambda: self.space.build(key, **self.build_kwargs),
            self.names,
            x,
            y,
            seed=self.seed,
            input_shape=shape,
            timings=spent,
        )
        for n, t in spent.items():
            self.timings[n].append(t)
        self.cache[key] = values
        return dict(values)

    def __call__(self, arch: Sequence[int]) -> dict[str, float]:
        return self.scores(arch)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_batch"] = None  # rebuilt from the seed where it is unpickled
        return state


class ProxyFunction:
    """``arch -> one proxy's value``: a screening score (``ScreenedEngine(predict=...)``)."""

    def __init__(self, scorer: ProxyScorer, name: str) -> None:
        if name not in scorer.names:
            raise ValueError(f"proxy {name!r} is not computed by this scorer ({scorer.names})")
        self.scorer = scorer
        self.name = name

    def __call__(self, arch: Sequence[int]) -> float:
        return float(self.scorer.scores(arch)[self.name])


# --------------------------------------------------------------------------- evaluator
PROXY_SETTING_KEYS = (
    "names", "space", "dataset", "batch_size", "seed", "input_size", "build", "data_path",
    "threads",
)  # fmt: skip


class ProxyMetrics:
    """An evaluator that adds zero-cost proxies (source ``proxy``) to another's metrics."""

    def __init__(self, inner: Any, scorer: ProxyScorer) -> None:
        self.inner = inner
        self.scorer = scorer

    def metrics(self) -> Mapping[str, MetricInfo]:
        out = dict(self.inner.metrics())
        for n in self.scorer.names:
            out[n] = MetricInfo(PROXY_UNITS.get(n, ""), PROXIES[n], "proxy")
        return out

    def check_limits(self, objectives: Any, space: Any) -> None:
        check = getattr(self.inner, "check_limits", None)
        if check is not None:
            proxies = set(self.scorer.names)
            inner = [o for o in objectives if o.name not in proxies]
            if len(inner) != len(objectives.objectives) and inner:
                objectives = type(objectives)(tuple(inner), None)
            if inner:
                check(objectives, space)

    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        scores = self.scorer.scores(arch)
        sources = {n: "proxy" for n in scores}
        wrapped = None
        if report is not None:

            def wrapped(metrics: dict[str, Any]) -> None:
                report({**metrics, **scores})

        evaluation = self.inner.evaluate(arch, wrapped, **context)
        evaluation.values.update(scores)
        evaluation.sources.update(sources)
        return evaluation

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "scorer"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def attach_proxies(evaluator: Any, settings: Mapping[str, Any] | None) -> Any:
    """``evaluator`` with the proxies ``settings["names"]`` added (``None``: unchanged)."""
    if not settings:
        return evaluator
    unknown = sorted(set(settings) - set(PROXY_SETTING_KEYS))
    if unknown:
        raise ValueError(
            f"proxies: unknown settings {unknown} (allowed: {list(PROXY_SETTING_KEYS)})"
        )
    kwargs = dict(settings)
    space = kwargs.pop("space")
    names = kwargs.pop("names")
    return ProxyMetrics(evaluator, ProxyScorer(space, names, **kwargs))
