"""``paretune ui``: the MLflow UI of an experiment, with light settings.

:func:`start_ui` starts ``mlflow server`` (one worker, no job execution) on a tracking store,
waits until it answers and returns the process and the URL of the experiment's runs page.
:func:`main_ui` does the same for an experiment directory (or a config file), prints the URL
and serves until interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from paretune.platform.redact import redact_uri

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
FRONT_FILTER = "tags.pareto = 'front'"
UI_LOG = "mlflow-ui.log"  # the server's output, in the experiment directory


class UIError(RuntimeError):
    """The UI could not be started (bad store, port taken, server exited or never answered)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def experiment_url(
    base_url: str,
    experiment_id: str,
    search_filter: str | None = None,
    order_by: str | None = None,
    ascending: bool = False,
) -> str:
    """The MLflow UI page of an experiment's runs, optionally filtered and ordered.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:5000``.
        experiment_id: the MLflow experiment id.
        search_filter: a runs filter, e.g. ``tags.pareto = 'front'``.
        order_by: a sort key, e.g. ``metrics.`accuracy``` or ``attributes.run_name``. The UI
            nests trial runs under their parent (collapsed) only when sorted by start time, so
            any other key lists them flat.
        ascending: the sort order.
    """
    url = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
    query: dict[str, str] = {}
    if search_filter:
        query["searchFilter"] = search_filter
    if order_by:
        query["orderByKey"] = order_by
        query["orderByAsc"] = "true" if ascending else "false"
    if query:
        url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return url


def front_url(base_url: str, experiment_id: str, objective: tuple[str, str] | None = None) -> str:
    """The experiment's Pareto-front trials, flat, best first on ``(name, direction)``."""
    if objective is None:
        return experiment_url(
            base_url, experiment_id, FRONT_FILTER, "attributes.run_name", ascending=True
        )
    name, direction = objective
    return experiment_url(
        base_url, experiment_id, FRONT_FILTER, f"metrics.`{name}`", ascending=direction == "min"
    )


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def experiment_id_of(tracking_uri: str, experiment_name: str) -> str:
    """The id of ``experiment_name`` in the store; raises :class:`UIError` when it is not there."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri).get_experiment_by_name(experiment_name)
    if exp is None:
        raise UIError(
            f"no MLflow experiment named {experiment_name!r} in {redact_uri(tracking_uri)}"
        )
    return str(exp.experiment_id)


def _sqlite_file(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def wait_until_up(
    url: str,
    process: subprocess.Popen | None = None,
    timeout: float = 120.0,
    log: str | os.PathLike | None = None,
) -> None:
    """Poll the ``/health`` of the server of ``url`` until it answers 200.

    Args:
        url: any URL of the server (the experiment page returned by :func:`start_ui` works).
        process: the server process; if it exits first, :class:`UIError` says why.
        timeout: seconds to wait.
        log: the server's output file, quoted in the error.
    """
    parts = urllib.parse.urlsplit(url)
    health = f"{parts.scheme}://{parts.netloc}/health"
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            log_path = Path(log) if log else None
            tail = (
                log_path.read_text(errors="replace")[-2000:]
                if log_path and log_path.is_file()
                else ""
            )
            raise UIError(f"mlflow server exited with code {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(health, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise UIError(f"mlflow server at {health} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def start_ui(
    tracking_uri: str,
    experiment_name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    experiment_id: str | None = None,
    timeout: float = 120.0,
    log_file: str | os.PathLike | None = None,
    wait: bool = True,
) -> tuple[subprocess.Popen | None, str]:
    """Start the MLflow UI on a tracking store and wait until it answers.

    A local store (``sqlite:///...``) gets its own ``mlflow server`` with one worker and job
    execution off, on ``port`` (a free one when ``None``), in a new process group (stop it
    with :func:`stop_ui`). An ``http(s)://`` tracking URI is a server already: nothing is
    started and the process is ``None``.

    Args:
        tracking_uri: the experiment's tracking URI.
        experiment_name: the MLflow experiment to show (its id is looked up).
        host: the address to listen on.
        port: the port; ``None`` picks a free one.
        experiment_id: the experiment's id, when known (skips the look-up).
        timeout: seconds to wait for the server to answer.
        log_file: where the server's output goes; by default a temporary file, removed once
            the server answers (or failed to, after its tail was quoted in the error).
        wait: wait until the server answers; with ``False`` return at once (call
            :func:`wait_until_up` before using it).

    Returns:
        ``(process, url)``: the server process (``None`` for a remote store) and the URL of the
        experiment's runs page (of the server's root when no experiment is given).

    Raises:
        UIError: the store or experiment does not exist, or the server did not come up.
    """
    if is_remote(tracking_uri):
        base = tracking_uri.rstrip("/")
        if experiment_id is None and experiment_name is not None:
            experiment_id = experiment_id_of(tracking_uri, experiment_name)
        if wait:
            wait_until_up(base, None, min(timeout, 10.0))
        shown = redact_uri(base)  # the URL is printed: no credentials
        return None, experiment_url(shown, experiment_id) if experiment_id else shown + "/"
    db = _sqlite_file(tracking_uri)
    if db is not None and not db.is_file():
        raise UIError(f"{redact_uri(tracking_uri)}: no such database file ({db.resolve()})")
    if experiment_id is None and experiment_name is not None:
        experiment_id = experiment_id_of(tracking_uri, experiment_name)
    port = port or free_port(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if s.connect_ex((host, port)) == 0:
            raise UIError(f"port {port} on {host} is already in use (pass another port)")
    if db is not None:
        tracking_uri = f"sqlite:///{db.resolve()}"
    temporary = not log_file
    if log_file:
        log = Path(log_file)
    else:
        fd, name = tempfile.mkstemp(prefix="paretune-ui-", suffix=".log")
        os.close(fd)
        log = Path(name)
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--workers",
        "1",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if not Path(cmd[0]).is_file():
        cmd[0:1] = [sys.executable, "-m", "mlflow"]
    env = {**os.environ, **SERVER_ENV}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(db.resolve().parent) if db is not None else None,
            start_new_session=True,  # its own process group: stop_ui ends the workers too
        )
    base = f"http://{host}:{port}"
    try:
        if wait:
            try:
                wait_until_up(base, process, timeout, log)
            except BaseException:
                stop_ui(process)
                raise
    finally:
        if temporary:  # the server keeps writing to its open file; nothing is left behind
            log.unlink(missing_ok=True)
    return process, experiment_url(base, experiment_id) if experiment_id else base + "/"


def stop_ui(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Stop a server started by :func:`start_ui` and its workers (its process group)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@dataclass(frozen=True)
class UITarget:
    """Where an experiment is tracked."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str | None
    first_objective: tuple[str, str] | None = None


def resolve_target(target: str | os.PathLike) -> UITarget:
    """Where the experiment of ``target`` is tracked.

    ``target`` is an experiment directory (``paretune.json`` + ``config.yaml`` written by the
    launcher) or a YAML config. A relative ``sqlite:///`` path is taken from the current
    directory when the file is there, else from the directory the search ran in (found from a
    relative ``storage.path`` and the experiment directory). ``mlflow_tracking_uri`` and
    ``mlflow_experiment_id`` in ``paretune.json`` win over the config when present.

    Raises:
        ConfigError: not an experiment directory or config, or the search was not tracked.
    """
    from paretune.platform.config import ConfigError, load_config

    path = Path(target).expanduser()
    if path.is_dir():
        state_file, cfg_file = path / "paretune.json", path / "config.yaml"
        if not state_file.is_file() or not cfg_file.is_file():
            raise ConfigError(
                f"{path}: not a paretune experiment directory (no config.yaml / paretune.json)"
            )
        state = json.loads(state_file.read_text())
        config = load_config(cfg_file)
        run_dir = _run_directory(path.resolve(), config.storage.path)
    else:
        state, config, run_dir = {}, load_config(path), None
    if not config.mlflow.enabled and "mlflow_tracking_uri" not in state:
        raise ConfigError(f"{target}: mlflow.enabled is false, the search was not tracked")
    uri = state.get("mlflow_tracking_uri") or config.mlflow.tracking_uri
    db = _sqlite_file(uri)
    if db is not None and not db.is_absolute() and not db.is_file() and run_dir is not None:
        if (run_dir / db).is_file():
            uri = f"sqlite:///{(run_dir / db).resolve()}"
    first = config.objectives[0]
    return UITarget(
        tracking_uri=uri,
        experiment_name=config.mlflow.experiment or config.name,
        experiment_id=state.get("mlflow_experiment_id"),
        first_objective=(first.name, first.direction),
    )


def _run_directory(experiment_dir: Path, storage_path: str) -> Path | None:
    """The directory a search ran in, when ``storage.path`` was relative to it."""
    storage = Path(storage_path).expanduser()
    if storage.is_absolute():
        return None
    run_dir = experiment_dir.parent
    for _ in storage.parts:
        run_dir = run_dir.parent
    return run_dir


def open_ui(
    target: str | os.PathLike, host: str = "127.0.0.1", port: int | None = None
) -> tuple[subprocess.Popen | None, str]:
    """:func:`start_ui` for an experiment directory or config file (see :func:`resolve_target`)."""
    t = resolve_target(target)
    return start_ui(t.tracking_uri, t.experiment_name, host, port, experiment_id=t.experiment_id)


def main_ui(
    target: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    stream: TextIO | None = None,
) -> int:
    """``paretune ui TARGET``: start the UI, print the experiment's URLs, serve until Ctrl-C.

    The server's output goes to ``mlflow-ui.log`` in the experiment directory (a config file
    target: a temporary file, removed once the server is up). Prints the experiment's runs
    page and its Pareto-front page (filter ``tags.pareto =
    'front'``, best first on the first objective).

    Returns:
        The exit code: 0 after Ctrl-C (or SIGTERM), 1 when the server stopped by itself.
    """
    stream = stream or sys.stdout
    t = resolve_target(target)
    folder = Path(target).expanduser()
    log_file = folder / UI_LOG if folder.is_dir() else None
    # SIGTERM ends the server too (start_ui stops it when interrupted while waiting for it).
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    process = None
    try:
        process, url = start_ui(
            t.tracking_uri,
            t.experiment_name,
            host,
            port,
            experiment_id=t.experiment_id,
            log_file=log_file,
        )
        base, _, rest = url.partition("/#/experiments/")
        front = front_url(base, rest.split("/", 1)[0], t.first_objective)
        print(f"MLflow UI:    {url}", file=stream, flush=True)
        print(f"Pareto front: {front}", file=stream, flush=True)
        if process is None:
            return 0
        print("Press Ctrl-C to stop.", file=stream, flush=True)
        process.wait()
        print(f"mlflow server stopped (exit code {process.returncode})", file=stream, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_ui(process)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
