"""The new user's path, as typed: build the table from a loopback mirror, then run a tabular
config from another folder with no ``PARETUNE_NB201`` (``paretune`` entry point, subprocesses)."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT.parent / "shared" / "benchmarks" / "nb201" / "sources"
PARETUNE = Path(sys.executable).with_name("paretune")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.mark.slow
@pytest.mark.skipif(not SOURCES.is_dir(), reason=f"needs the NB201 sources in {SOURCES}")
def test_build_from_a_mirror_then_run_a_tabular_config_from_elsewhere(tmp_path):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SOURCES))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if k != "PARETUNE_NB201"}
    # As a new user, on a Ray of its own: not the test session's cluster, which Ray would
    # otherwise join (RAY_ADDRESS, or the newest cluster on this machine).
    env["RAY_ADDRESS"] = "local"
    env["PARETUNE_DATA"] = str(tmp_path / "data")
    work = tmp_path / "elsewhere"
    work.mkdir()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        build = subprocess.run(
            [str(PARETUNE), "data", "build", "nb201", "--sources", url],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert build.returncode == 0, build.stderr
    table = tmp_path / "data" / "benchmarks" / "nb201" / "nb201.csv.gz"
    assert f"nb201: built {table}" in build.stdout
    listed = subprocess.run(
        [str(PARETUNE), "data", "list"], cwd=work, env=env, capture_output=True, text=True
    )
    assert str(table) in listed.stdout

    run = subprocess.run(
        [
            str(PARETUNE), "run", str(ROOT / "conf" / "nb201_tabular.yaml"), "-q",
            "search.num_samples=4", "search.max_concurrent=2", "mlflow.enabled=false",
        ],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "4 trials, 0 failed" in run.stdout
