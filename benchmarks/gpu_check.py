"""A short device check, without Ray: CUDA training, NVML energy, CUDA peak memory.

Runs in well under 5 minutes on a GPU machine that has torch, scikit-learn and nvidia-ml-py
(Ray is not needed and not imported):

* **CUDA training**: :class:`~paretune.objectives.train.TrainEvaluator` trains a few NB201 cells
  on digits (``--epochs``, default 2) on ``cuda`` and measures them;
* **NVML energy**: for the same cells, including the all-``none`` cell, the energy per image of
  the inference window (``energy``, total drawn) and above the idle power read just before it
  (``energy_dynamic``), each with its source and method;
* **CUDA peak memory**: ``torch.cuda.max_memory_allocated`` of ``pertnas_memory.py``'s trial
  measurement (a compact cell and the weight-sharing supernet, digits config), each in a spawned
  process as that benchmark does on CUDA.

Everything is printed as one table. On a machine without CUDA it says so in one line and runs
the CPU parts (training and energy on the CPU, where the energy is RAPL or the analytic
estimate; the memory rows without a GPU column). Exit status: 0 when every part that could run
did, 1 when one failed (the table says which and why).

Usage::

    python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --epochs 1 --energy-window-s 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELLS = {
    "all none": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "mixed": "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|"
    "nor_conv_3x3~2|",
    "all nor_conv_3x3": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|"
    "nor_conv_3x3~1|nor_conv_3x3~2|",
}
Row = tuple[str, str, str, str]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="training epochs per cell")
    p.add_argument("--energy-batch", type=int, default=256, help="images per inference batch")
    p.add_argument("--energy-window-s", type=float, default=1.0, help="shortest energy window")
    p.add_argument("--idle-s", type=float, default=1.0, help="idle reading before the window")
    p.add_argument("--steps", type=int, default=2, help="SGD steps of the memory measurement")
    return p.parse_args(argv)


def train_and_energy(device: str, args: argparse.Namespace) -> tuple[list[Row], bool]:
    """Rows of the training and energy checks, and whether they all passed."""
    from paretune.objectives.train import TrainEvaluator

    cuda = device == "cuda"
    ev = TrainEvaluator(
        dataset="digits",
        epochs=args.epochs,
        device=device,
        threads=None if cuda else 1,
        energy_meter="nvml" if cuda else "auto",
        energy_batch_size=args.energy_batch,
        energy_min_window_s=args.energy_window_s,
        energy_idle_s=args.idle_s,
        save_weights=False,
    )
    rows: list[Row] = []
    ok = True
    for name, cell in CELLS.items():
        try:
            started = time.perf_counter()
            result = ev.evaluate(ev.space.decode(cell))
            seconds = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - reported in the table
            rows.append((f"{device} training", name, "FAILED", _why(exc)))
            ok = False
            continue
        v, s, x = result.values, result.sources, result.extras
        rows.append(
            (
                f"{device} training",
                name,
                f"acc {v['accuracy']:.1f} %",
                f"{x['epochs']} epochs in {x['train_time_s']:.1f} s ({seconds:.1f} s in all), "
                f"latency {v['latency']:.3f} ms, {v['flops']:.3f} M MACs",
            )
        )
        window = (
            f", window {x['energy_window_s']:.2f} s / {x['energy_window_images']} images"
            if "energy_window_s" in x
            else ""
        )
        why = f"; no meter: {x['energy_meter_error']}" if "energy_meter_error" in x else ""
        rows.append(
            (
                "energy total",
                name,
                f"{v['energy']:.4g} mJ/img",
                f"{s['energy']} ({x.get('energy_method', 'analytic model')}{window}){why}",
            )
        )
        idle = (
            f"idle {x['energy_idle_w']:.1f} W over {x['energy_idle_s']:.2f} s; "
            if ("energy_idle_w" in x)
            else ""
        )
        raw = (
            f" (raw {x['energy_dynamic_raw_mj']:.4g})"
            if x.get("energy_dynamic_raw_mj", v["energy_dynamic"]) != v["energy_dynamic"]
            else ""
        )
        rows.append(
            (
                "energy above idle",
                name,
                f"{v['energy_dynamic']:.4g} mJ/img{raw}",
                f"{s['energy_dynamic']} ({idle}{x['energy_dynamic_method']})"
                + (f"; {x['energy_dynamic_error']}" if "energy_dynamic_error" in x else ""),
            )
        )
        rows.append(
            (
                "energy of training",
                name,
                f"{v['energy_train']:.4g} J",
                s["energy_train"]
                + (f"; {x['energy_train_error']}" if "energy_train_error" in x else ""),
            )
        )
        if cuda and s["energy"] != "measured-nvml":
            ok = False
            rows.append(("energy total", name, "FAILED", "NVML did not measure on this GPU"))
    return rows, ok


def peak_memory(device: str, steps: int) -> tuple[list[Row], bool]:
    """pertnas_memory.py's trial measurement on ``device``: a compact cell and the supernet."""
    from benchmarks import pertnas_memory as pm

    rows: list[Row] = []
    ok = True
    jobs = {
        "nor_conv_3x3 cell (digits)": {"ops": ["nor_conv_3x3"] * 6},
        "supernet, 5 ops (digits)": {"supernet": "nb201"},
    }
    for name, job in jobs.items():
        full = {"kind": "trial", "config": "digits", "steps": steps, "device": device, **job}
        try:
            r = pm.run_child(full)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            rows.append(("peak memory", name, "FAILED", _why(exc)))
            ok = False
            continue
        cuda = r["cuda_peak_mib"]
        value = f"{cuda:.2f} MiB cuda" if cuda is not None else "no GPU"
        how = "spawned process" if device == "cuda" else "forkserver process"
        rows.append(
            (
                "peak memory",
                name,
                value,
                f"{r['device']}, {how}; RSS +{r['rss_increase_mib']:.1f} MiB ({r['rss_method']}), "
                f"{r['params_m']:.3f} M params",
            )
        )
    return rows, ok


def _why(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last.splitlines()[0][:300]


def table(rows: list[Row]) -> str:
    head: Row = ("check", "subject", "value", "source / detail")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

    def line(r: Row) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]

    rule = "-" * (sum(widths) + 6 + len(head[3]))
    return "\n".join([line(head), rule, *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    from benchmarks.pertnas_memory import cuda_available

    cuda = cuda_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print(
            f"no CUDA here (torch {torch.__version__}): running the CPU parts only; "
            "NVML energy and CUDA peak memory need a GPU"
        )
    rows: list[Row] = [
        (
            "device",
            device,
            torch.cuda.get_device_name(0) if cuda else "cpu",
            f"torch {torch.__version__}, CUDA {torch.version.cuda}",
        )
    ]
    # The memory measurement first: its spawned processes start before this one uses CUDA
    # (they would not need it, spawn starts a fresh interpreter, but it keeps the order clear).
    mem_rows, mem_ok = peak_memory(device, args.steps)
    train_rows, train_ok = train_and_energy(device, args)
    rows += train_rows + mem_rows
    rows.append(("ray imported", "-", str("ray" in sys.modules), "must be False"))
    ok = mem_ok and train_ok and "ray" not in sys.modules
    rows.append(
        ("wall time", "-", f"{time.perf_counter() - started:.0f} s", "passed" if ok else "FAILED")
    )
    print(table(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
