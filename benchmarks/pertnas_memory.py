"""Peak memory of one PertNAS trial, and of the engine, for 5 and for 10 options per edge.

PertNAS's claim (``docs/algorithms.md`` section 1.1): it trains compact, single-path networks, so
the memory of a search does not grow with the size of the search space, whereas a weight-sharing
supernet keeps every candidate operation of every edge in memory. This benchmark measures both
sides of that claim on two spaces with the NB201 cell (6 edges):

* ``nb201``: the 5 NB201 operations (``none``, ``skip_connect``, ``nor_conv_1x1``,
  ``nor_conv_3x3``, ``avg_pool_3x3``); networks built by the package's ``NB201Network``.
* ``wide``: twice the options per edge, the 5 above plus ``nor_conv_5x5``, ``dil_conv_3x3``,
  ``sep_conv_3x3``, ``sep_conv_5x5`` (DARTS's dilated and separable convolutions) and
  ``max_pool_3x3``. The package's builder knows only the NB201 operations, so this script builds
  these networks with a local operation table on the same macro layout (checked to give the
  package's network, tensor for tensor, on NB201 cells).

**One trial** = build the network, train ``--steps`` SGD steps, then measure it (validation
accuracy, parameters, FLOPs, batch-1 latency), in a fresh Python process per measurement so that
no allocator cache or high-water mark leaks from one measurement into another. Measured:

* ``RSS increase``: the process's peak resident memory during the trial (``VmHWM`` from
  ``/proc/self/status``, reset through ``/proc/self/clear_refs`` just before the trial; where
  that is not possible, ``ru_maxrss``) minus the resident memory just before it (after imports,
  data and a warm-up of torch's autograd on a throwaway network, which every trial pays alike);
* ``tracemalloc peak``: Python-heap allocations during the trial. Torch's CPU tensors are not
  allocated through Python's allocator, so this is the Python-side overhead only;
* ``torch.cuda.max_memory_allocated`` when the trials run on CUDA (``--device cuda``, or
  ``auto`` where CUDA is available): the peak is reset just before the trial and read after
  it; otherwise the table says ``no GPU``.

CUDA cannot be used in a process forked from one that initialised it ("Cannot re-initialize
CUDA in forked subprocess"), and the forkserver's preloaded modules query CUDA. So a CUDA
measurement runs in a *spawned* process (a fresh interpreter that pays torch's import, seconds
per measurement), the parent only asks NVML whether a GPU exists
(``PYTORCH_NVML_BASED_CUDA_CHECK``, which leaves CUDA uninitialised), and CPU measurements keep
the forkserver.

The trials are the architectures the ``pertnas`` engine proposes in each space (engine seed 0,
driven by a cheap analytic stand-in for the objectives, since only *which* architectures it
proposes matters here): its single-operation design cells (one per operation, the extremes of a
cell's cost) and ``--extra`` later proposals spread over its first ``--proposals``. For contrast,
the same measurement of a weight-sharing supernet: every edge holds all the space's operations,
summed (PertNAS's expanded edge, or DARTS without the softmax weights).

**The engine**: ``tracemalloc`` of the ``pertnas`` engine built and driven for ``--asks``
ask/tell rounds in a fresh process (memory still held at the end, and the peak), and the size of
its ``state_dict`` as JSON.

Reading the table: a trial's memory is that of the one compact network it trains, so it depends
on which operations that network uses, not on how many the space offers. The row "same 5 NB201
single-op cells" measures identical networks in both runs (ratio 1.00: nothing in a trial
depends on the space), and the per-operation rows show what each operation's single-op cell
costs; a trial in the 10-option space can cost more than one in the NB201 space only because it
may use a heavier operation (the separable convolutions keep about twice the activations of
``nor_conv_3x3``), while the supernet pays for every operation at once. Which architectures are
measured depends on the stand-in objectives that steered the engine (see ``_QUALITY``).

Usage::

    python benchmarks/pertnas_memory.py           # both configs: ~4 min idle, ~11 min loaded
    python benchmarks/pertnas_memory.py --configs digits --steps 2
    python benchmarks/pertnas_memory.py --device cuda   # trials on the GPU (spawned processes)
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretune.spaces.nb201 import NB201_EDGES, NB201_OPS  # noqa: E402

EXTRA_OPS = ("nor_conv_5x5", "dil_conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3")
SPACES: dict[str, tuple[str, ...]] = {"nb201": NB201_OPS, "wide": NB201_OPS + EXTRA_OPS}

# name: (channels, cells per stage, input size, batch, data); "digits" is the package's default
# training config on scikit-learn's digits, "cifar" the NB201 network at CIFAR-10 scale (random
# images of that shape: memory does not depend on pixel values).
CONFIGS: dict[str, dict[str, Any]] = {
    "digits": {"channels": 8, "cells": 1, "size": 8, "in_channels": 1, "batch": 64},
    "cifar": {"channels": 16, "cells": 5, "size": 32, "in_channels": 3, "batch": 32},
}
MIB = 1024.0 * 1024.0


# ---------------------------------------------------------------------- the 10-option network
def make_wide_op(name: str, channels: int):
    """One operation at ``channels`` channels, stride 1: NB201's own, or a DARTS one."""
    from torch import nn

    from paretune.spaces.nb201_model import ReLUConvBN, make_op

    c = channels
    if name in NB201_OPS:
        return make_op(name, c)
    if name == "nor_conv_5x5":
        return ReLUConvBN(c, c, 5, 1, 2)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)

    def dil(k: int, dilation: int) -> nn.Module:  # ReLU, depthwise (dilated), pointwise, BN
        pad = dilation * (k - 1) // 2
        return nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, padding=pad, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    if name == "dil_conv_3x3":
        return dil(3, 2)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = 3 if name == "sep_conv_3x3" else 5
        return nn.Sequential(dil(k, 1), dil(k, 1))
    raise ValueError(f"unknown operation {name!r} (known: {list(SPACES['wide'])})")


def build_network(ops_per_edge: list[tuple[str, ...]], cfg: dict[str, Any], num_classes: int):
    """The NB201 macro network whose edge ``k`` sums the operations ``ops_per_edge[k]``.

    One operation per edge is a single-path (compact) network, all of them the supernet.
    """
    import torch
    from torch import nn

    from paretune.spaces.nb201_model import ResNetBasicBlock

    class Edge(nn.Module):
        def __init__(self, names: tuple[str, ...], c: int) -> None:
            super().__init__()
            self.ops = nn.ModuleList(make_wide_op(n, c) for n in names)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.ops[0](x)
            for op in self.ops[1:]:
                out = out + op(x)
            return out

    class Cell(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            single = all(len(names) == 1 for names in ops_per_edge)
            self.ops = nn.ModuleList(
                make_wide_op(names[0], c) if single else Edge(names, c) for names in ops_per_edge
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nodes, k = [x], 0
            for dst in range(1, 4):
                total = self.ops[k](nodes[0])
                for src in range(1, dst):
                    total = total + self.ops[k + src](nodes[src])
                nodes.append(total)
                k += dst
            return nodes[-1]

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = cfg["channels"]
            self.stem = nn.Sequential(
                nn.Conv2d(cfg["in_channels"], c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            )
            layers: list[nn.Module] = []
            c_prev = c
            for stage, c_curr in enumerate((c, 2 * c, 4 * c)):
                if stage > 0:
                    layers.append(ResNetBasicBlock(c_prev, c_curr))
                    c_prev = c_curr
                layers.extend(Cell(c_curr) for _ in range(cfg["cells"]))
            self.cells = nn.Sequential(*layers)
            self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c_prev, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.global_pooling(self.lastact(self.cells(self.stem(x))))
            return self.classifier(torch.flatten(x, 1))

    return Network()


def check_local_builder() -> None:
    """The local builder gives the package's NB201 network on NB201 cells (names and shapes)."""
    import torch

    from paretune.spaces.nb201_model import NB201Network

    cfg = CONFIGS["cifar"]
    ops = ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none", "nor_conv_3x3")
    torch.manual_seed(0)
    ours = build_network([(o,) for o in ops], cfg, 10).state_dict()
    theirs = NB201Network(ops, channels=16, cells_per_stage=5).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


# ---------------------------------------------------------------------- which architectures
def _op_costs(ops: tuple[str, ...], channels: int) -> list[float]:
    from paretune.objectives.measure import count_params

    return [count_params(make_wide_op(o, channels)) for o in ops]


# Stand-in accuracy gain per operation (only used to steer the engine's proposals).
_QUALITY = {
    "none": 0.0,
    "skip_connect": 1.0,
    "avg_pool_3x3": 1.5,
    "max_pool_3x3": 1.4,
    "nor_conv_1x1": 2.0,
    "nor_conv_3x3": 3.0,
    "nor_conv_5x5": 3.2,
    "dil_conv_3x3": 2.7,
    "sep_conv_3x3": 3.1,
    "sep_conv_5x5": 3.3,
}


def make_space(name: str):
    from paretune.spaces.base import Decision, SearchSpace
    from paretune.spaces.nb201 import edge_name

    ops = SPACES[name]
    return SearchSpace([Decision(edge_name(s, d), ops) for s, d in NB201_EDGES], name=name)


def stand_in(space_name: str):
    """Analytic objectives: a quality sum with an interaction, and the cells' parameters."""
    ops = SPACES[space_name]
    cost = _op_costs(ops, 16)

    def values(arch) -> dict[str, float]:
        quality = sum(_QUALITY[ops[o]] for o in arch) + 0.1 * (sum(arch) % 7)
        return {"accuracy": 60.0 + quality, "params": 0.1 + sum(cost[o] for o in arch)}

    return values


def engine_run(space_name: str, asks: int, seed: int = 0):
    """A ``pertnas`` engine driven ``asks`` ask/tell rounds on the stand-in objectives."""
    from paretune.objectives.base import ObjectiveSet
    from paretune.search_algos import make_engine

    objectives = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))
    engine = make_engine("pertnas", make_space(space_name), objectives, seed=seed)
    values = stand_in(space_name)
    proposals = []
    for _ in range(asks):
        p = engine.ask()
        if p is None:
            break
        engine.tell(p, values(p.arch))
        proposals.append(p)
    return engine, proposals


def trial_archs(space_name: str, proposals: int, extra: int) -> list[tuple[str, ...]]:
    """The design cells, then ``extra`` later proposals spread over the first ``proposals``."""
    _, props = engine_run(space_name, proposals)
    ops = SPACES[space_name]
    design = [p for p in props if p.meta.get("source") == "design"]
    rest = [p for p in props if p.meta.get("source") != "design"]
    step = max(1, len(rest) // max(extra, 1))
    picked = design + rest[::step][:extra]
    return [tuple(ops[i] for i in p.arch) for p in picked]


# ---------------------------------------------------------------------- child: one measurement
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def measure_trial(
    ops: list[str] | None, supernet: str | None, config: str, steps: int, device: str = "cpu"
) -> dict:
    """One trial in this (fresh) process: build, train ``steps`` steps, measure on ``device``."""
    import torch

    from paretune.objectives.measure import count_flops, count_params, measure_latency

    torch.set_num_threads(1)
    cfg = CONFIGS[config]
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.init()  # first CUDA use of this process: fails here, clearly, if it cannot
    gen = torch.Generator().manual_seed(0)
    if config == "digits":
        from paretune.objectives.data import load_dataset

        data = load_dataset("digits")
        x_train, y_train = data.train.x, data.train.y
        x_val, y_val = data.valid.x, data.valid.y
        classes = data.num_classes
    else:
        classes = 10
        shape = (cfg["batch"] * steps, cfg["in_channels"], cfg["size"], cfg["size"])
        x_train, y_train = torch.rand(shape, generator=gen), torch.randint(0, 10, (shape[0],))
        x_val, y_val = x_train[: cfg["batch"]], y_train[: cfg["batch"]]
    # Warm up on a throwaway network (autograd, SGD, the FLOP counter, the latency timer and
    # their lazy imports), so that what every trial pays alike is not counted as its memory.
    warm = torch.nn.Sequential(
        torch.nn.Conv2d(cfg["in_channels"], 4, 3, padding=1), torch.nn.BatchNorm2d(4)
    ).to(dev)
    warm_opt = torch.optim.SGD(warm.parameters(), lr=0.01, momentum=0.9)
    warm(x_val[:2].to(dev)).sum().backward()
    warm_opt.step()
    count_flops(warm, (1, cfg["in_channels"], cfg["size"], cfg["size"]))
    measure_latency(warm, x_val[:1], device=dev, warmup=0, repeats=1, threads=1)
    del warm, warm_opt
    gc.collect()
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _status_kib("VmRSS")
    hwm_reset = _reset_peak_rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()

    torch.manual_seed(0)
    if supernet is not None:
        model = build_network([SPACES[supernet]] * len(NB201_EDGES), cfg, classes)
    elif set(ops) <= set(NB201_OPS):
        from paretune.spaces.nb201_model import NB201Network

        model = NB201Network(
            ops,
            channels=cfg["channels"],
            cells_per_stage=cfg["cells"],
            input_size=cfg["size"],
            in_channels=cfg["in_channels"],
            num_classes=classes,
        )
    else:
        model = build_network([(o,) for o in ops], cfg, classes)
    model = model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    order = torch.randperm(len(x_train), generator=gen)
    for step in range(steps):
        idx = order[(step * cfg["batch"]) % len(x_train) :][: cfg["batch"]]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[idx].to(dev)), y_train[idx].to(dev))
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x_val.to(dev)).argmax(1).cpu() == y_val).float().mean()) * 100
    params = count_params(model)
    flops = count_flops(model, (1, cfg["in_channels"], cfg["size"], cfg["size"]))
    latency = measure_latency(model, x_val[:1], device=dev, warmup=2, repeats=5, threads=1)
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - started
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if hwm_reset:
        rss_peak_kib = _status_kib("VmHWM")
        how = "VmHWM"
    else:
        rss_peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, maxrss_before)
        how = "ru_maxrss"
    return {
        "rss_increase_mib": (rss_peak_kib - rss_before) / 1024.0,
        "rss_peak_mib": rss_peak_kib / 1024.0,
        "rss_method": how,
        "tracemalloc_peak_mib": py_peak / MIB,
        "cuda_peak_mib": torch.cuda.max_memory_allocated(dev) / MIB if cuda else None,
        "device": str(dev),
        "params_m": params,
        "flops_m": flops,
        "latency_ms": latency,
        "accuracy": acc,
        "seconds": seconds,
    }


def measure_engine(space_name: str, asks: int) -> dict:
    """Memory held by a ``pertnas`` engine (and its history) after ``asks`` ask/tell rounds."""
    engine_run(space_name, 20, seed=1)  # lazy imports and caches outside the measurement
    gc.collect()
    tracemalloc.start()
    engine, proposals = engine_run(space_name, asks)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state = json.dumps(engine.state_dict())
    return {
        "engine_current_kib": current / 1024.0,
        "engine_peak_kib": peak / 1024.0,
        "state_json_kib": len(state) / 1024.0,
        "asks": len(proposals),
    }


def _child(job: dict) -> dict:
    if job["kind"] == "engine":
        return measure_engine(job["space"], job["asks"])
    return measure_trial(
        job.get("ops"), job.get("supernet"), job["config"], job["steps"], job.get("device", "cpu")
    )


def _child_entry(job: dict, conn) -> None:
    try:
        conn.send(("ok", _child(job)))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        import traceback

        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


_CONTEXT = None


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU, asked through NVML so that this process does not
    initialise CUDA (``PYTORCH_NVML_BASED_CUDA_CHECK=1``; torch falls back to the CUDA runtime
    only where NVML cannot answer)."""
    import torch

    before = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        return bool(torch.cuda.is_available())
    finally:
        if before is None:
            del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = before


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` where a GPU is visible, else ``cpu``; ``cuda`` without one exits."""
    if device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--device {device!r} is unknown (allowed: auto, cpu, cuda)")
    if device == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if device == "cuda":
        raise SystemExit("--device cuda: torch sees no CUDA GPU here (use cpu or auto)")
    return "cpu"


def _single_threaded() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def _context(job: dict):
    """``spawn`` for a CUDA measurement, else the shared ``forkserver`` (made once)."""
    global _CONTEXT
    _single_threaded()
    if str(job.get("device", "cpu")).startswith("cuda"):
        return multiprocessing.get_context("spawn")
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(
            [
                "torch",
                "torch._dynamo",  # imported by the first optimizer: seconds, not per trial
                "sklearn.datasets",
                "paretune.objectives.data",
                "paretune.objectives.measure",
                "paretune.spaces.nb201_model",
                "paretune.search_algos.perturbation",
            ]
        )
    return _CONTEXT


def run_child(job: dict) -> dict:
    """Run one measurement in a fresh process and return its result.

    On the CPU each measurement is a new process forked from a ``forkserver`` that has only
    imported torch and paretune (it never ran a tensor operation), so no allocator cache,
    thread pool or memory high-water mark carries over between measurements, without paying the
    imports again. A CUDA measurement (``job["device"]`` ``cuda``) is a spawned process: CUDA
    cannot run in a forked one once the forkserver's imports have queried it.
    """
    ctx = _context(job)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(job, child))
    proc.start()
    child.close()
    try:
        status, result = parent.recv()
    except EOFError:
        status, result = "error", "the measurement process died without a result"
    proc.join()
    if status != "ok":
        raise RuntimeError(f"measurement {job} failed: {result}")
    return result


# ---------------------------------------------------------------------- the table
def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="digits,cifar", help=f"of {list(CONFIGS)}")
    p.add_argument("--steps", type=int, default=2, help="SGD steps per trial")
    p.add_argument("--proposals", type=int, default=40, help="pertnas proposals to pick from")
    p.add_argument("--extra", type=int, default=3, help="trials beyond the design cells")
    p.add_argument("--asks", type=int, default=300, help="ask/tell rounds for the engine memory")
    p.add_argument("--no-supernet", action="store_true", help="skip the supernet contrast")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA where available), cpu or cuda: the trials"
    )
    return p.parse_args(argv)


HEAD = f"{'':54s}{'nb201 (5 ops)':>15s}{'wide (10 ops)':>15s}{'ratio 10/5':>12s}"


def _row(label: str, a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{label:54s}{_fmt(a, digits):>15s}{_fmt(b, digits):>15s}{_ratio(b, a):>12s}"


def _stat(res: dict, space: str, key: str, fn) -> float | None:
    vals = [t[key] for t in res[space]["trials"] if t[key] is not None]
    return fn(vals) if vals else None


def config_table(config: str, res: dict[str, dict[str, Any]], steps: int) -> list[str]:
    """The lines of one config's table (trials and supernet, both spaces side by side)."""
    cfg = CONFIGS[config]
    first = res["nb201"]["trials"][0]
    gpu = first["cuda_peak_mib"] is not None
    lines = [
        f"\nconfig {config}: C={cfg['channels']}, N={cfg['cells']}, {cfg['size']}x{cfg['size']} "
        f"input, batch {cfg['batch']}, {steps} SGD steps + measurement; device "
        f"{first['device']}, 1 thread; peak RSS by {first['rss_method']}",
        HEAD,
        "-" * len(HEAD),
        f"{'pertnas trials measured (design cells + later)':54s}"
        f"{len(res['nb201']['trials']):>15d}{len(res['wide']['trials']):>15d}",
    ]
    keys = [("rss_increase_mib", "RSS increase", 1), ("tracemalloc_peak_mib", "tracemalloc", 2)]
    if gpu:
        keys.append(("cuda_peak_mib", "cuda max allocated", 1))
    for key, name, digits in keys:
        for fn, fname in ((statistics.median, "median"), (max, "max")):
            lines.append(
                _row(
                    f"one pertnas trial: {name}, {fname} (MiB)",
                    _stat(res, "nb201", key, fn),
                    _stat(res, "wide", key, fn),
                    digits,
                )
            )
    if not gpu:
        lines.append(f"{'one pertnas trial: cuda max allocated':54s}{'no GPU':>15s}{'no GPU':>15s}")
    med = statistics.median
    lines.append(
        _row(
            "one pertnas trial: params, median (M)",
            _stat(res, "nb201", "params_m", med),
            _stat(res, "wide", "params_m", med),
            3,
        )
    )
    # The same networks (the 5 NB201 single-operation cells) measured in each space's run.
    same = {
        space: [t["rss_increase_mib"] for t in res[space]["trials"] if _single(t) in NB201_OPS]
        for space in SPACES
    }
    if all(same.values()):
        lines.append(
            _row(
                "same 5 NB201 single-op cells: RSS increase, median",
                statistics.median(same["nb201"]),
                statistics.median(same["wide"]),
            )
        )
    s5, s10 = res["nb201"]["supernet"], res["wide"]["supernet"]
    if s5 is not None and s10 is not None:
        lines.append(
            _row(
                "supernet (all ops on every edge): RSS increase (MiB)",
                s5["rss_increase_mib"],
                s10["rss_increase_mib"],
            )
        )
        if gpu:
            lines.append(
                _row(
                    "supernet: cuda max allocated (MiB)", s5["cuda_peak_mib"], s10["cuda_peak_mib"]
                )
            )
        lines.append(_row("supernet: params (M)", s5["params_m"], s10["params_m"], 3))
        lines.append(
            _row(
                "supernet / median pertnas trial, RSS increase",
                s5["rss_increase_mib"] / _stat(res, "nb201", "rss_increase_mib", med),
                s10["rss_increase_mib"] / _stat(res, "wide", "rss_increase_mib", med),
                2,
            )
        )
    # Per operation: the single-operation cells (the design cells of the 10-option space).
    cells = {_single(t): t for t in res["wide"]["trials"] if _single(t) is not None}
    if cells:
        lines.append(
            "single-op cell (one trial), RSS increase in MiB / params in M, per operation:"
        )
        for i in range(0, len(SPACES["wide"]), 5):
            lines.append(
                "  "
                + "  ".join(
                    f"{op} {cells[op]['rss_increase_mib']:.1f}/{cells[op]['params_m']:.3f}"
                    for op in SPACES["wide"][i : i + 5]
                    if op in cells
                )
            )
    return lines


def _single(trial: dict) -> str | None:
    """The operation of a single-operation cell, else ``None``."""
    ops = trial.get("ops")
    return ops[0] if ops and len(set(ops)) == 1 else None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)} (known: {list(CONFIGS)})")
    start = time.perf_counter()
    device = resolve_device(args.device)
    check_local_builder()
    archs = {s: trial_archs(s, args.proposals, args.extra) for s in SPACES}
    lines = []
    for config in configs:
        res: dict[str, dict[str, Any]] = {}
        for space in SPACES:
            jobs = [{"kind": "trial", "ops": list(a)} for a in archs[space]]
            if not args.no_supernet:
                jobs.append({"kind": "trial", "supernet": space})
            out = [
                {
                    **run_child({**j, "config": config, "steps": args.steps, "device": device}),
                    "ops": j.get("ops"),
                }
                for j in jobs
            ]
            sup = None if args.no_supernet else out.pop()
            res[space] = {"trials": out, "supernet": sup}
        lines += config_table(config, res, args.steps)
        print(f"config {config} measured ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    eng = {s: run_child({"kind": "engine", "space": s, "asks": args.asks}) for s in SPACES}
    tail = [
        f"\nthe pertnas engine after {args.asks} ask/tell rounds (tracemalloc, fresh process)",
        HEAD,
        "-" * len(HEAD),
    ]
    for key, label in (
        ("engine_current_kib", "engine + history, held at the end (KiB)"),
        ("engine_peak_kib", "engine, peak while running (KiB)"),
        ("state_json_kib", "state_dict as JSON (KiB)"),
    ):
        tail.append(_row(label, eng["nb201"][key], eng["wide"][key]))
    print("\n".join(lines + tail))
    print(f"\n{time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
