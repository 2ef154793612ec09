"""A sweep of TND-NAS reward settings, merged into one Pareto front (as the paper makes its front).

TND-NAS's product reward ``acc * prod_k (m_k / T_k) ** w_k`` gives one trade-off per setting of
targets ``T_k`` and exponents ``w_k``; the paper's front is the union of several such searches.
This script runs one search per setting (each its own Ray Tune experiment and MLflow parent run,
all in one MLflow experiment), then merges their trials into one front and writes it::

    python examples/tnd_sweep.py                                  # conf/tnd_nb201.yaml, 4 settings
    python examples/tnd_sweep.py search.num_samples=100 --out runs/my-sweep
    python examples/tnd_sweep.py --setting fast:latency=10^-0.05 --setting acc:latency=10^-0.005
    python examples/tnd_sweep.py --config conf/tnd_digits.yaml evaluator.epochs=2

A setting is ``NAME:OBJ=T^W[,OBJ=T^W...]``: objective ``OBJ`` gets target ``T`` and exponent
``W`` (``(m / T) ** W``; ``W < 0`` penalises a cost above its target). ``key=value`` arguments
override the base config as in ``paretune run``. Setting ``i`` uses seed ``seed + i`` (independent
runs; ``--seed-step 0`` gives every setting the base seed). Every setting's config is validated
before the first search starts.

Output folder (``--out``; default ``<storage.path>/<name>-sweep-<date>``): ``trials.csv`` and
``pareto_front.csv`` (with an ``origin`` column: the setting), ``pareto_front.png``,
``sweep_front.png`` (the trials coloured by setting), ``hypervolume.png``,
``parallel_coordinates.png`` (3+ objectives) and ``sweep.json`` (settings, experiment
directories, MLflow parent runs, the summary table).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretune.platform.config import (  # noqa: E402
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    read_config_data,
)
from paretune.platform.report import (  # noqa: E402
    OriginSummary,
    SearchReport,
    merge_reports,
    plot_origins,
    summarize_origins,
)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "tnd_nb201.yaml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Setting:
    """One reward setting: ``{objective: T_k}`` and ``{objective: w_k}`` (same keys)."""

    name: str
    targets: dict[str, float] = field(default_factory=dict)
    exponents: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.targets:
            return "accuracy only"
        return ", ".join(f"{k}={self.targets[k]:g}^{self.exponents[k]:g}" for k in self.targets)


# For conf/tnd_nb201.yaml (CIFAR-10 accuracy, Pixel 3 latency in ms, Pi 5 energy in mJ). The
# targets are about the table's medians (10.7 ms, 7.1 mJ). With one exponent per objective the
# target only scales the reward (m/T)^w = m^w * T^-w, so the exponents set the trade-off;
# latency spans 1-37 ms on the table, so small exponents already move the optimum a lot: on the
# whole table these four settings are maximised by (valid accuracy, latency, energy) =
# (91.57, 21.3, 15.6), (87.83, 2.67, 2.52), (84.63, 1.06, 1.85) and (88.06, 4.01, 2.43).
DEFAULT_SETTINGS = (
    Setting("accurate", {"latency": 10.0, "energy": 7.0}, {"latency": -0.005, "energy": -0.005}),
    Setting("balanced", {"latency": 10.0, "energy": 7.0}, {"latency": -0.02, "energy": -0.02}),
    Setting("low-latency", {"latency": 10.0}, {"latency": -0.05}),
    Setting("low-energy", {"energy": 7.0}, {"energy": -0.05}),
)


def parse_setting(text: str, index: int = 0) -> Setting:
    """``NAME:OBJ=T^W[,OBJ=T^W...]`` (``NAME:`` optional, default ``s<index>``)."""
    name, sep, rest = text.partition(":")
    if not sep:
        name, rest = f"s{index}", text
    name = name.strip()
    if not NAME_PATTERN.match(name):
        raise ValueError(f"setting {text!r}: name {name!r} must match {NAME_PATTERN.pattern}")
    targets: dict[str, float] = {}
    exponents: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        obj, eq, value = part.partition("=")
        t, caret, w = value.partition("^")
        obj = obj.strip()
        if not eq or not caret or not obj:
            raise ValueError(f"setting {text!r}: {part!r} is not OBJ=T^W (e.g. latency=10^-0.05)")
        if obj in targets:
            raise ValueError(f"setting {text!r}: {obj!r} is given twice")
        try:
            targets[obj], exponents[obj] = float(t), float(w)
        except ValueError:
            raise ValueError(f"setting {text!r}: {part!r}: T and W must be numbers") from None
    return Setting(name, targets, exponents)


def setting_config(
    base: Mapping[str, Any], setting: Setting, source: str, seed_offset: int = 0
) -> ExperimentConfig:
    """The base config searching with ``setting``'s product reward, named after it.

    The experiment is ``<name>-<setting>`` (its own run directory and MLflow parent run); the
    MLflow experiment is the base one (``mlflow.experiment``, else the base name), so a sweep's
    parent runs sit together. Base ``targets`` / ``exponents`` are replaced, not merged. The
    seed is the base seed plus ``seed_offset``.
    """
    data = copy.deepcopy(dict(base))
    seed = data.get("seed", 0)
    if seed_offset and isinstance(seed, int):  # anything else is left to validation
        data["seed"] = seed + int(seed_offset)
    search = data.setdefault("search", {}) or {}
    data["search"] = search
    algorithm = search.get("algorithm", "tnd")
    if algorithm != "tnd":
        raise ConfigError(f"{source}: search.algorithm = {algorithm!r}: a TND sweep needs 'tnd'")
    params = dict(search.get("params") or {})
    params.update(reward="product", targets=setting.targets, exponents=setting.exponents)
    search["params"] = params
    data["name"] = f"{data.get('name')}-{setting.name}"
    mlflow = data.setdefault("mlflow", {}) or {}
    data["mlflow"] = mlflow
    mlflow["experiment"] = mlflow.get("experiment") or base.get("name")
    return config_from_dict(data, source=f"{source} [setting {setting.name}]")


@dataclass
class SweepResult:
    """What a finished sweep hands back."""

    settings: list[Setting]
    results: list[Any]  # launcher.RunResult, one per setting
    merged: SearchReport
    summary: list[OriginSummary]
    out_dir: Path
    paths: dict[str, Path]


def sweep(
    config: str | Path = DEFAULT_CONFIG,
    settings: Sequence[Setting] = DEFAULT_SETTINGS,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    *,
    seed_step: int = 1,
    verbose: int = 0,
) -> SweepResult:
    """Run one search per setting, merge their trials into one front and write it to ``out_dir``.

    Setting ``i`` searches with seed ``seed + i * seed_step``: independent runs by default (with
    one seed, every setting's first REINFORCE batch is the same uniform draw); ``seed_step=0``
    gives all the base seed. Every setting's config is built and validated first (a problem
    raises ``ConfigError`` before any trial runs). Ray is started once for the whole sweep (or
    joined if running).
    """
    from paretune.platform import launcher
    from paretune.platform.cluster import ensure_ray
    from paretune.platform.prepare import make_searcher, prepare

    settings = list(settings)
    if not settings:
        raise ConfigError("no settings to sweep")
    names = [s.name for s in settings]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"setting names repeat: {repeated}")
    path = Path(config)
    base = read_config_data(path, overrides)
    base_config = config_from_dict(base, source=str(path))
    configs = [
        setting_config(base, s, str(path), seed_offset=i * seed_step)
        for i, s in enumerate(settings)
    ]
    for setting, cfg in zip(settings, configs, strict=True):  # before anything runs
        try:
            make_searcher(prepare(cfg))
        except ConfigError as exc:
            raise ConfigError(f"setting {setting.name!r}: {exc}") from None

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(
        out_dir
        if out_dir is not None
        else Path(base_config.storage.path).expanduser() / f"{base_config.name}-sweep-{stamp}"
    )
    started_ray = ensure_ray(base_config)
    try:
        results = []
        for setting, cfg in zip(settings, configs, strict=True):
            if verbose:
                print(f"--- setting {setting.name}: {setting.describe()}", flush=True)
            result = launcher.run(cfg, verbose=verbose)
            if result.parent_run_id:
                _tag_parent_run(cfg, result.parent_run_id, base_config.name, stamp, setting)
            results.append(result)
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    merged = merge_reports([r.report for r in results], names)
    by_origin = {o.origin: o for o in summarize_origins(merged)}
    summary = [by_origin[n] for n in names]
    paths = merged.write(out)
    paths["sweep_plot"] = out / "sweep_front.png"
    plot_origins(merged, paths["sweep_plot"])
    paths["sweep"] = out / "sweep.json"
    paths["sweep"].write_text(
        json.dumps(
            {
                "config": str(path),
                "overrides": list(overrides),
                "reference": None
                if merged.reference is None
                else {  # raw units (the report keeps it as a minimisation vector)
                    o.name: float(v * o.sign)
                    for o, v in zip(merged.objectives, merged.reference, strict=True)
                },
                "reference_source": merged.reference_source,
                "settings": [
                    {
                        "name": s.name,
                        "seed": cfg.seed,
                        "targets": s.targets,
                        "exponents": s.exponents,
                        "experiment_dir": str(r.experiment_dir),
                        "mlflow_parent_run": r.parent_run_id,
                        **{k: v for k, v in vars(o).items() if k != "origin"},
                    }
                    for s, cfg, r, o in zip(settings, configs, results, summary, strict=True)
                ],
                "merged": {
                    "trials": len(merged.rows),
                    "failed": merged.num_failed,
                    "front": len(merged.front),
                    "front_archs": len({r.arch for r in merged.front}),
                    "hypervolume": merged.hypervolume,
                },
            },
            indent=2,
        )
    )
    return SweepResult(settings, results, merged, summary, out, paths)


def _tag_parent_run(
    cfg: ExperimentConfig, run_id: str, sweep_name: str, stamp: str, setting: Setting
) -> None:
    """Tags that find a sweep's parent runs in MLflow (``tags.sweep = '...'``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    client.set_tag(run_id, "sweep", f"{sweep_name}-sweep-{stamp}")
    client.set_tag(run_id, "sweep.setting", setting.name)
    client.set_tag(run_id, "sweep.reward", setting.describe())


def front_table(report: SearchReport) -> str:
    """The merged front with each member's setting, sorted by the first objective."""
    objs = report.objectives.objectives
    extra = [k for k in ("test_accuracy",) if any(k in r.extras for r in report.front)]
    header = ["setting", "trial", *[f"{o.name} ({o.direction})" for o in objs], *extra, "arch"]
    first = objs[0]
    lines = [header]
    for r in sorted(report.front, key=lambda r: r.values[first.name] * first.sign):
        lines.append(
            [
                str(r.origin),
                r.trial_id,
                *[f"{r.values[o.name]:.4g}" for o in objs],
                *[f"{r.extras[k]:.4g}" if k in r.extras else "-" for k in extra],
                r.arch,
            ]
        )
    return "\n".join(_align(lines))


def _align(lines: list[list[str]], right: Sequence[int] = ()) -> list[str]:
    """Columns padded to a common width (``right``: right-aligned), a rule under the header."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return text


def format_table(result: SweepResult) -> str:
    """Per setting and merged: trials, failed, front size, hypervolume, merged-front members."""
    header = ["setting", "reward (T^w)", "trials", "failed", "front", "hypervolume", "on merged"]
    lines = [header]
    for s, o in zip(result.settings, result.summary, strict=True):
        lines.append(
            [
                s.name,
                s.describe(),
                str(o.trials),
                str(o.failed),
                str(o.front),
                f"{o.hypervolume:.6g}",
                str(o.on_merged_front),
            ]
        )
    m = result.merged
    n = len(m.front)
    lines.append(
        ["merged", "", str(len(m.rows)), str(m.num_failed), str(n), f"{m.hypervolume:.6g}", str(n)]
    )
    text = _align(lines, right=range(2, len(header)))
    text.insert(-1, text[1])
    archs = len({r.arch for r in m.front})
    if archs < n:
        text.append(
            f"the merged front has {archs} distinct architectures: some were found by more than "
            "one setting (each copy counts for its setting)"
        )
    ref = "none" if m.reference is None else m.reference_source
    text.append(
        f"front: the setting's own Pareto front; on merged: its members on the merged front; "
        f"hypervolume: all against the merged reference ({ref})"
    )
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A setting is NAME:OBJ=T^W[,OBJ=T^W...], e.g. fast:latency=10^-0.05,energy=7^-0.01",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.num_samples=50")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="base YAML (default: %(default)s)")
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME:OBJ=T^W,...",
        help="a reward setting (repeat; default: "
        + "; ".join(f"{s.name}:{s.describe().replace(', ', ',')}" for s in DEFAULT_SETTINGS)
        + ")",
    )
    p.add_argument("--out", help="output folder (default: <storage.path>/<name>-sweep-<date>)")
    p.add_argument(
        "--seed-step",
        type=int,
        default=1,
        help="setting i searches with seed + i * STEP (default %(default)s; 0: the same seed)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no Ray progress tables")
    args = p.parse_args(argv)
    from paretune.platform import launcher

    try:
        settings = [parse_setting(t, i) for i, t in enumerate(args.setting)] or DEFAULT_SETTINGS
    except ValueError as exc:
        p.error(str(exc))
    try:
        result = sweep(
            args.config,
            settings,
            args.overrides,
            args.out,
            seed_step=args.seed_step,
            verbose=0 if args.quiet else 1,
        )
    except ConfigError as exc:
        print(f"tnd_sweep: error: {exc}", file=sys.stderr)
        return 2
    except launcher.SearchFailed as exc:
        print(f"tnd_sweep: search failed: {exc}", file=sys.stderr)
        return 1
    print()
    print("Merged Pareto front")
    print(front_table(result.merged))
    print()
    print(format_table(result))
    print(f"\noutput: {result.out_dir}")
    for s, r in zip(result.settings, result.results, strict=True):
        run = f", MLflow parent run {r.parent_run_id}" if r.parent_run_id else ""
        print(f"  {s.name}: {r.experiment_dir}{run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
