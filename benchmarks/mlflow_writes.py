"""CPU per trial of the MLflow writer: MlflowClient's three calls against whole-run inserts.

The inserts are an opt-in (``PARETUNE_MLFLOW_SQL_INSERT=1``, see
:mod:`paretune.platform.mlflow_sql`); the client calls are the default. Both ways go through
:class:`paretune.platform.mlflow_writer.WriterCore` (in a thread of this
process, nothing else running) into a fresh SQLite store in WAL mode, with what a tabular
trial sends: its creation tags, six architecture params, one result of a dozen metrics and its
final tags. Repeats alternate the two ways; the table gives the median CPU milliseconds per
trial and their ratio (target for the inserts: at most a third of the client calls).

Usage::

    python benchmarks/mlflow_writes.py --trials 300 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path


def messages(trial_id: str, now_ms: int) -> list:
    from paretune.platform.writer_messages import End, MetricPoint, Result, Start

    tags = {"searcher": "random", "arch": "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|"}
    tags.update({f"meta.{k}": "x" for k in ("phase", "parent", "edit")})
    params = {f"edge_{i}": "nor_conv_3x3" for i in range(6)}
    metrics = [MetricPoint(f"m{i}", 0.1 * i, now_ms, 1) for i in range(12)]
    end_tags = {"status": "ok", "pareto": "dominated", "source": "table", "date": "2026-11-23"}
    return [
        Start(trial_id, tags, params, now_ms),
        Result(trial_id, metrics),
        End(trial_id, "FINISHED", end_tags, now_ms + 50),
    ]


def cpu_ms_per_trial(workdir: Path, trials: int, sql_insert: bool, tag: str) -> float:
    from mlflow.tracking import MlflowClient

    from paretune.platform.mlflow_writer import WriterCore
    from paretune.platform.parent_run import enable_sqlite_wal
    from paretune.platform.writer_messages import Close, Flush, WriterSettings

    uri = f"sqlite:///{workdir / f'{tag}.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(tag)
    parent = client.create_run(exp).info.run_id
    enable_sqlite_wal(uri)
    settings = WriterSettings(uri, exp, parent, sql_insert=sql_insert, batch_s=0.0)
    core = WriterCore(settings, lambda m: None)
    warm = 20  # the store's caches and the first session, not counted
    for i in range(warm):
        for op in messages(f"w{i}", 1_700_000_000_000 + i):
            core.submit(op)
    core.submit(Flush(1))
    thread = threading.Thread(target=core.run)
    thread.start()
    while core.pending():
        time.sleep(0.01)
    start = time.process_time()
    for i in range(trials):
        for op in messages(f"t{i}", 1_700_000_100_000 + i):
            core.submit(op)
    core.submit(Close())
    thread.join()
    used = time.process_time() - start
    found = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'", max_results=5000)
    assert len(found) == trials + warm and all(r.info.status == "FINISHED" for r in found)
    return used / trials * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    runs: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for sql_insert in (False, True) if rep % 2 == 0 else (True, False):
                tag = f"{'insert' if sql_insert else 'client'}{rep}"
                runs[sql_insert].append(cpu_ms_per_trial(Path(tmp), args.trials, sql_insert, tag))
    client, insert = (statistics.median(runs[k]) for k in (False, True))
    print(
        f"\nMLflow writer CPU per trial, SQLite store, {args.trials} trials, median of {args.repeats}\n"
    )
    print(f"{'way':<36}{'ms/trial':>10}  runs")
    print(
        f"{'MlflowClient calls (3 per trial)':<36}{client:>10.1f}  {', '.join(f'{x:.1f}' for x in runs[False])}"
    )
    print(
        f"{'whole-run inserts (mlflow_sql)':<36}{insert:>10.1f}  {', '.join(f'{x:.1f}' for x in runs[True])}"
    )
    ratio = insert / client
    print(
        f"{'ratio inserts / client calls':<36}{ratio:>10.2f}  {'ok' if ratio <= 1 / 3 else 'MISSED'} (target <= 0.33)"
    )


if __name__ == "__main__":
    main()
