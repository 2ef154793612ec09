"""The ``paretune`` command: run, resume and report experiments, open the UI, build benchmark data.

Every error a user can cause ends in one line naming what is wrong (exit code 2).
"""

from __future__ import annotations

import argparse
import sys

from paretune.platform.config import ConfigError, check_tracking_uri_value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paretune", description="Multi-objective NAS on Ray Tune, tracked in MLflow."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the experiment of a YAML config")
    r.add_argument("config", help="path of a YAML experiment, e.g. conf/quickstart.yaml")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.num_samples=50")
    r.add_argument("-q", "--quiet", action="store_true", help="no Ray progress tables")
    sw = sub.add_parser("sweep", help="run many searches of one base config at once (a sweep)")
    sw.add_argument("sweep_file", help="a sweep YAML, e.g. conf/sweep_algorithms.yaml")
    sw.add_argument("overrides", nargs="*", help="key=value overrides for every member")
    sw.add_argument("--out", help="the sweep folder (default: <storage.path>/sweep-<name>-<date>)")
    sw.add_argument("-q", "--quiet", action="store_true", help="no per-member progress lines")
    s = sub.add_parser("resume", help="continue a search or a sweep whose driver stopped")
    s.add_argument("experiment_dir", help="an experiment folder or a sweep folder")
    s.add_argument("-q", "--quiet", action="store_true")
    rep = sub.add_parser("report", help="print the Pareto front of an experiment directory")
    rep.add_argument("experiment_dir")
    sync = sub.add_parser(
        "sync-mlflow",
        help="log to MLflow whatever it missed (after an outage), or rebuild a whole experiment there",
    )
    sync.add_argument("experiment_dir")
    sync.add_argument(
        "--tracking-uri", help="rebuild into this tracking URI instead of the configured one"
    )
    ui = sub.add_parser("ui", help="serve the MLflow UI of an experiment directory (Ctrl-C stops)")
    ui.add_argument("target", help="an experiment directory (runs/<name>-<date>) or a YAML config")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    data = sub.add_parser("data", help="benchmark data: build the NB201 table, list the cache")
    dsub = data.add_subparsers(dest="data_command", required=True)
    build = dsub.add_parser(
        "build", help="build a benchmark table from its public sources into the cache"
    )
    build.add_argument("benchmark", help="the benchmark to build (nb201)")
    build.add_argument(
        "--sources",
        help="a folder or http(s):// base URL holding the source files "
        "(default: their GitHub repositories)",
    )
    dsub.add_parser("list", help="show the benchmark tables in the cache")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``run``'s ``key=value`` overrides may come after its options too."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse stops collecting overrides at the first option (`run c.yaml -q a=1`)
        if args.command in ("run", "sweep") and all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.command == "data":
        return _data(args)
    if args.command == "ui":
        return _ui(args)
    from paretune.platform import launcher

    if args.command == "sweep" or (args.command == "resume" and _is_sweep_dir(args.experiment_dir)):
        return _sweep(args)
    try:
        if args.command in ("run", "resume"):
            if args.command == "run":
                result = launcher.run(args.config, args.overrides, verbose=0 if args.quiet else 1)
            else:
                result = launcher.resume(args.experiment_dir, verbose=0 if args.quiet else 1)
            _print_result(result.report, result.experiment_dir, result.parent_run_id)
            if result.tracking_problem:
                print(
                    f"paretune: MLflow record incomplete: {result.tracking_problem}",
                    file=sys.stderr,
                )
                return 1
        elif args.command == "report":
            rep = launcher.report(args.experiment_dir)
            _print_result(rep, args.experiment_dir, None)
        elif args.command == "sync-mlflow":
            from paretune.platform.sync import sync_mlflow

            if args.tracking_uri is not None:
                check_tracking_uri_value(args.tracking_uri, "--tracking-uri")
            s = sync_mlflow(args.experiment_dir, args.tracking_uri)
            print(
                f"MLflow at {s.tracking_uri}: parent run {s.parent_run_id}; {s.created} trial runs created, "
                f"{s.completed} completed, {s.already_complete} already complete"
            )
    except ConfigError as exc:
        print(f"paretune: error: {exc}", file=sys.stderr)
        return 2
    except launcher.SearchFailed as exc:
        print(f"paretune: search failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _is_sweep_dir(path: str) -> bool:
    from paretune.platform.sweep import is_sweep_dir

    return is_sweep_dir(path)


def _sweep(args: argparse.Namespace) -> int:
    """``paretune sweep FILE`` or ``paretune resume SWEEP_DIR``: the report, then the exit code."""
    from paretune.platform import sweep as sw
    from paretune.platform.sweep_report import format_report

    verbose = 0 if args.quiet else 1
    try:
        if args.command == "sweep":
            result = sw.sweep(args.sweep_file, args.overrides, out_dir=args.out, verbose=verbose)
        else:
            result = sw.resume_sweep(args.experiment_dir, verbose=verbose)
    except ConfigError as exc:
        return _error(str(exc))
    except sw.SweepFailed as exc:
        if exc.result is not None:
            print(format_report(exc.result.report))
        print(f"paretune: sweep failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_report(result.report))
    print(f"sweep folder: {result.sweep_dir}")
    return 0


def _error(message: str) -> int:
    print(f"paretune: error: {message}", file=sys.stderr)
    return 2


def _ui(args: argparse.Namespace) -> int:
    from paretune.platform.ui import UIError, main_ui

    try:
        return main_ui(args.target, args.host, args.port)
    except (UIError, ConfigError) as exc:
        return _error(str(exc))


def _data(args: argparse.Namespace) -> int:
    from paretune.objectives import benchmark_data as bd

    if args.data_command == "list":
        cached = bd.list_cached()
        if not cached:
            print(
                f"no benchmark data in {bd.data_home() / 'benchmarks'} (build it with "
                f"`{bd.BUILD_COMMAND}`)"
            )
            return 0
        for c in cached:
            print(f"{c.name}\t{c.path}\t{c.size / 1e6:.1f} MB\tbuilt {c.built}\tfrom {c.sources}")
        return 0
    try:
        path = bd.build(
            args.benchmark,
            args.sources,
            progress=lambda name: print(f"reading {name}", flush=True),
        )
    except bd.BenchmarkDataError as exc:
        return _error(str(exc))
    print(f"{args.benchmark}: built {path}")
    return 0


def _print_result(report, experiment_dir, parent_run_id) -> None:
    print()
    print("Pareto front")
    print(report.front_table())
    print()
    print(report.summary())
    print(f"experiment directory: {experiment_dir}")
    if parent_run_id:
        print(f"MLflow parent run: {parent_run_id}")


if __name__ == "__main__":
    sys.exit(main())
