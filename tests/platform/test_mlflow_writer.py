"""The MLflow writer process behind MlflowTracker, without Ray: sessions, a dying writer, an
orphaned writer, a store that fails or vanishes. Trials are stand-ins with the attributes Ray's
have."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from paretune.platform import mlflow_writer, tracking, writer_link
from paretune.platform.parent_run import enable_sqlite_wal


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("writer")
    parent = client.create_run(exp).info.run_id
    enable_sqlite_wal(uri)
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent)


def trial(i: int, status: str = "TERMINATED") -> SimpleNamespace:
    result = {"accuracy": 0.5 + i / 100, "latency": 1.0, "source": "table", "timestamp": 1000 + i}
    result["training_iteration"] = 1
    return SimpleNamespace(
        trial_id=f"t{i:03d}",
        config={"arch": f"|arch{i}|", "proposal": {"id": i, "meta": {"phase": "random"}}},
        last_result=result,
        status=status,
        error_file=None,
    )


def tracker(store) -> tracking.MlflowTracker:
    t = tracking.MlflowTracker(
        store.uri,
        store.exp,
        store.parent,
        "random",
        arch_params=lambda c: {"cell": c["arch"]},
        retry_s=0.2,
    )
    t.setup()
    return t


def run_trials(t: tracking.MlflowTracker, trials: list) -> None:
    for tr in trials:
        t.on_trial_start(0, [], tr)
        t.on_trial_result(0, [], tr, tr.last_result)
        t.on_trial_complete(0, [], tr)


def check_runs(store, n: int) -> None:
    runs = store.client.search_runs(
        [store.exp], f"tags.mlflow.parentRunId = '{store.parent}'", max_results=1000
    )
    ids = [r.data.tags["trial_id"] for r in runs]
    assert sorted(ids) == [f"t{i:03d}" for i in range(n)]  # one run each, never two
    for r in runs:
        i = int(r.data.tags["trial_id"][1:])
        assert r.info.status == "FINISHED"
        assert r.info.run_name == f"trial-t{i:03d}"
        assert r.data.metrics["accuracy"] == pytest.approx(0.5 + i / 100)
        assert r.data.params == {"cell": f"|arch{i}|"}
        tags = r.data.tags
        assert tags["source"] == "table" and tags["status"] == "ok"
        assert tags["searcher"] == "random" and tags["meta.phase"] == "random"


def test_a_writer_process_writes_every_trial_and_exits_at_the_end(store):
    t = tracker(store)
    assert t.writer.kind == "process"
    proc = t.writer.proc
    run_trials(t, [trial(i) for i in range(5)])
    t.on_experiment_end([])
    check_runs(store, 5)
    assert set(t.get_state()["runs"]) == {f"t{i:03d}" for i in range(5)}
    assert proc.wait(timeout=30) == 0  # a process per search, none kept in a module-level pool
    assert t.store_problem is None

    # The next search in this driver starts its own writer.
    t2 = tracker(store)
    assert t2.writer.proc is not proc
    run_trials(t2, [trial(i) for i in range(5, 8)])
    t2.on_experiment_end([])
    check_runs(store, 8)


def test_a_dead_writer_is_replaced_and_nothing_is_lost(store):
    t = tracker(store)
    run_trials(t, [trial(i) for i in range(4)])
    t.writer.proc.kill()
    t.writer.proc.wait()
    run_trials(t, [trial(i) for i in range(4, 8)])
    t.on_experiment_end([])
    check_runs(store, 8)


def test_a_thread_writer_does_the_same(store, monkeypatch):
    monkeypatch.setenv("PARETUNE_MLFLOW_WRITER", "thread")
    t = tracker(store)
    assert t.writer.kind == "thread"
    run_trials(t, [trial(i) for i in range(4)])
    t.on_experiment_end([])
    check_runs(store, 4)


def test_an_orphaned_writer_finishes_what_was_queued(store, tmp_path):
    # A driver that dies (SIGKILL, with its process group) right after its last event.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.platform.test_mlflow_writer import run_trials, trial, tracker
        from types import SimpleNamespace
        store = SimpleNamespace(uri={store.uri!r}, exp={store.exp!r}, parent={store.parent!r})
        t = tracker(store)
        print(t.writer.proc.pid, flush=True)
        run_trials(t, [trial(i) for i in range(6)])
        os.killpg(0, signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    writer_pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the orphaned writer did not exit")
    check_runs(store, 6)


def test_pareto_tags_are_written_as_trials_end(store):
    from paretune.objectives import Objective, ObjectiveSet

    t = tracker(store)
    t.objectives = ObjectiveSet(
        [Objective("accuracy", "max"), Objective("latency", "min", limit=2.0)]
    )
    values = {  # in the order they end
        "t000": (0.50, 1.0),  # front when it ends, overturned by t001 later
        "t001": (0.60, 1.0),  # front
        "t002": (0.55, 1.5),  # dominated by t001: for good
        "t003": (0.90, 3.0),  # breaks the latency limit: dominated by every feasible trial
        "t004": (float("nan"), 1.0),  # not a number: failed, like the report says
    }
    trials = []
    for i, (acc, lat) in enumerate(values.values()):
        tr = trial(i)
        tr.last_result.update(accuracy=acc, latency=lat)
        trials.append(tr)
    run_trials(t, trials)
    assert t.finish_writes(timeout=60)
    expected = {"t000": "front", "t001": "front", "t002": "dominated"}
    expected.update(t003="dominated", t004="failed")
    assert t.pareto_tags == expected
    runs = store.client.search_runs([store.exp], f"tags.mlflow.parentRunId = '{store.parent}'")
    assert {r.data.tags["trial_id"]: r.data.tags["pareto"] for r in runs} == expected


def test_the_tracker_keeps_little_per_ended_trial(store):
    """A long search ends thousands of trials: the tracker keeps their ids and run ids (the
    driver's own strings), and names only the few ``front`` and ``failed`` tags it sent."""
    from paretune.objectives import Objective, ObjectiveSet

    t = tracker(store)
    t.set_state({"runs": {}, "ended": ["t999"]})  # ended in an earlier driver: not tagged here
    t.objectives = ObjectiveSet([Objective("accuracy", "max")])
    trials, own_ids = [trial(i) for i in range(40)], []
    for tr in trials:
        tr.trial_id = "".join(["t", f"{int(tr.trial_id[1:]):03d}"])  # a string of its own
        tr.last_result["accuracy"] = 0.9 if tr.trial_id == "t005" else 0.5 - len(own_ids) / 1000
        own_ids.append(tr.trial_id)
    trials[7].last_result["accuracy"] = float("nan")
    run_trials(t, trials)
    assert t.finish_writes(timeout=60)
    assert not t._started and not t._unwritten  # nothing per trial beyond the ids
    own = {id(tr.trial_id) for tr in trials}
    assert {id(k) for k in t.runs} == own  # no second copy from the writer's replies
    assert t._tagged_front == {"t000", "t005"} and t._tagged_failed == {"t007"}
    assert len(t.pareto_tags) == 40 and "t999" not in t.pareto_tags
    assert t.pareto_tags["t001"] == "dominated" and t.pareto_tags["t005"] == "front"


def test_the_end_waits_for_a_slow_store_that_keeps_writing(store, monkeypatch):
    # Every trial's write takes at least 0.25 s (a slow server), 16 of them at least 4 s: the
    # wait at the end gives up only after `timeout` seconds without progress, so with a
    # timeout of 2 s it still ends with all written. No clock is read by the test itself.
    monkeypatch.setenv("PARETUNE_MLFLOW_WRITER", "thread")
    real_write = mlflow_writer.WriterCore._write

    def slow_write(self, trial_id, work):
        time.sleep(0.25)
        real_write(self, trial_id, work)

    t = tracker(store)
    run_trials(t, [trial(0)])
    assert t.flush(timeout=60)  # the writer is up and the store warm
    monkeypatch.setattr(mlflow_writer.WriterCore, "_write", slow_write)
    run_trials(t, [trial(i) for i in range(1, 17)])
    assert t.finish_writes(timeout=2.0)
    check_runs(store, 17)


def test_the_writer_logs_cell_pictures_after_the_trials_runs(store):
    t = tracker(store)
    run_trials(t, [trial(i) for i in range(3)])
    cell = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    # t002's architecture cannot be drawn: it is left to the driver (not in `pictured`).
    t.log_cell_pictures({"t000": cell, "t001": cell, "t002": "|arch2|"})
    assert t.finish_writes(timeout=60)
    assert t.pictured == {"t000", "t001"}
    for trial_id, run_id in t.runs.items():
        files = [f.path for f in store.client.list_artifacts(run_id)]
        assert files == (["cell.png"] if trial_id in t.pictured else [])


def test_unwritten_messages_wait_on_disk_and_their_files_go_once_written(monkeypatch):
    """A writer behind a slow server can fall behind by more trials the longer a search runs:
    the messages it has not written wait in temporary files (a SpoolRef each in the driver),
    files roll over and are closed once all their messages are written; without a temporary
    file (a full disk) they wait in memory."""
    monkeypatch.setattr(writer_link.Spool, "CHUNK_BYTES", 100)
    spool = writer_link.Spool()
    messages = [bytes([i]) * (30 + i) for i in range(8)]
    refs = [spool.put(m) for m in messages]
    assert all(isinstance(r, writer_link.SpoolRef) and r.chunk is not None for r in refs)
    assert [spool.get(r) for r in refs] == messages
    assert [r.chunk for r in refs] == [0, 0, 0, 0, 1, 1, 1, 2]  # 30+31+32+33, 34+35+36, 37
    assert sorted(spool._files) == [0, 1, 2]
    first = spool._files[0]
    spool.release(refs[:3])
    assert not first.closed  # one of its messages is still unwritten
    spool.release(refs[3:4])
    assert first.closed and sorted(spool._files) == [1, 2]
    assert [spool.get(r) for r in refs[4:]] == messages[4:]
    spool.release(refs[7:])  # the current file, emptied: it starts over
    assert os.fstat(spool._files[2].fileno()).st_size == 0
    again = spool.put(b"next")
    assert (again.chunk, again.offset) == (2, 0) and spool.get(again) == b"next"
    assert [spool.get(r) for r in refs[4:7]] == messages[4:7]

    def no_file(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(writer_link.tempfile, "TemporaryFile", no_file)
    spool.put(b"x" * 200)  # fills file 2 past the roll-over size
    kept = [spool.put(b"in memory %d" % i) for i in range(3)]
    assert all(r.chunk is None for r in kept) and len(set(kept)) == 3
    assert [spool.get(r) for r in kept] == [b"in memory %d" % i for i in range(3)]
    assert [spool.get(r) for r in refs[4:7]] == messages[4:7]  # files made before still serve
    spool.release(kept + refs[4:7])
    assert not spool._in_memory and 1 not in spool._files

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.undo()  # temporary files again
    full = writer_link.Spool()
    first = full.put(b"on disk")
    monkeypatch.setattr(writer_link.os, "pwrite", disk_full)
    second = full.put(b"in memory")
    assert first.chunk == 0 and second.chunk is None
    untouched = writer_link.Spool()
    assert untouched.put(b"never on disk").chunk is None
    assert not untouched._files  # no file kept open for a message that went to memory
    assert full.get(first) == b"on disk" and full.get(second) == b"in memory"


def test_a_store_removed_during_the_search_is_reported_without_tracebacks(
    store, tmp_path, capfd, caplog
):
    """`rm mlflow.db*` mid-search: the record is gone. The tracker says so (for the launcher to
    print with the sync-mlflow hint and exit non-zero), and neither the writer process nor the
    driver prints a traceback, however many writes fail."""
    t = tracker(store)
    run_trials(t, [trial(i) for i in range(3)])
    assert t.flush(timeout=60)
    assert t.store_problem is None
    for f in tmp_path.glob("mlflow.db*"):
        f.unlink()
    run_trials(t, [trial(i) for i in range(3, 9)])
    t.finish_writes(timeout=5)
    problem = t.store_problem
    assert problem is not None and str(tmp_path / "mlflow.db") in problem
    assert "removed" in problem or "replaced" in problem
    assert "paretune sync-mlflow" in problem
    err = capfd.readouterr().err
    assert "Traceback" not in err and "sqlalchemy" not in err.lower()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert all("\n" not in w for w in warnings)


def test_a_store_replaced_during_the_search_is_reported(store, tmp_path):
    t = tracker(store)
    run_trials(t, [trial(0)])
    assert t.flush(timeout=60)
    db = tmp_path / "mlflow.db"
    (tmp_path / "other.db").write_bytes(db.read_bytes())
    os.replace(tmp_path / "other.db", db)  # a copy put in its place: not this search's file
    t.finish_writes(timeout=5)
    assert "was replaced during the search" in (t.store_problem or "")


def test_failing_writes_warn_once_per_kind_in_one_line_without_credentials():
    from paretune.platform.writer_messages import (
        End,
        Start,
        StoreProblem,
        WriterSettings,
        WriterWarning,
    )

    uri = "postgresql://paretune:s3cret-pw@db.example:5432/mlflow"

    class Page(list):
        token = None

    class DeadStore:
        calls = 0

        def search_runs(self, *args, **kwargs):
            return Page()

        def create_run(self, *args, **kwargs):
            DeadStore.calls += 1
            raise RuntimeError(
                f"(psycopg2.OperationalError) could not connect to {uri}\n"
                + "\n".join(f"[SQL: INSERT INTO runs ... row {i}]" for i in range(500))
            )

    replies: list = []
    settings = WriterSettings(uri, "1", "parent", retry_s=0.01, batch_s=0.0)
    core = mlflow_writer.WriterCore(settings, replies.append)
    core._client = DeadStore()
    core.submit(Start("t0", {}, {}))
    core.submit(End("t0", "FINISHED", {}))
    core.give_up_at = time.monotonic() + 0.5  # then it stops retrying (no tracker to wait)
    core.submit(mlflow_writer.Close())
    core.run()
    assert DeadStore.calls > 3  # retried, and
    warnings = [r.text for r in replies if isinstance(r, WriterWarning)]
    assert len(warnings) == 1  # reported once
    (text,) = warnings
    assert "\n" not in text and "[SQL" not in text and len(text) < 500
    assert "s3cret-pw" not in text and "paretune:***@db.example" in text
    assert "paretune sync-mlflow <experiment dir>" in text
    assert not [r for r in replies if isinstance(r, StoreProblem)]  # unreachable, not lost


def test_one_writer_per_experiment_through_a_lock_in_its_folder(tmp_path):
    """The writer of a resumed search waits for an orphaned one of the same experiment; the
    lock is a file in the experiment folder (none in /tmp), held while a session writes."""
    import fcntl

    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    with mlflow_writer.session_lock(str(exp_dir)):
        lock = exp_dir / mlflow_writer.LOCK_FILE
        with open(lock, "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go at the end of the session
    with mlflow_writer.session_lock(None):  # no folder: no lock, no file anywhere
        pass
