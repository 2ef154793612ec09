"""Sweeps: many searches of one base config at once on one Ray cluster (``paretune sweep``).

A sweep file names a base config and the members' overrides (a grid, a list, or both)::

    name: algorithms
    base: nb201_tabular.yaml          # relative to the sweep file
    overrides: {search.num_samples: 200}
    grid: {search.algorithm: [regularized_evolution, tnd, nsga2], seed: [0, 1, 2, 3, 4]}
    members: [{name: fast, search.params.targets: {latency: 5}}]   # optional list
    max_concurrent_searches: 4
    ray: {address: null, num_cpus: null, num_gpus: null}

Every member is validated (config, data, searcher) before anything starts. The driver then
starts a local Ray head (or joins ``ray.address`` / ``$RAY_ADDRESS``) and runs each member as an
ordinary ``paretune run`` in a child process joined to that cluster by its explicit address,
at most ``max_concurrent_searches`` at once. The sweep folder holds ``sweep.yaml`` (the spec),
``sweep.json`` (the state: members, status, experiment folders, MLflow ids) and
``members/<member>/`` (``config.yaml``, ``log.txt`` and the member's experiment folder under
``runs/``). In MLflow the sweep has a parent run of its own; each member's parent run gets the
tag ``paretune.sweep`` (the sweep's run id) and ``paretune.sweep.member``.
``paretune resume SWEEP_DIR`` keeps finished members, resumes the ones that were running and
starts the rest.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paretune.platform.config import ConfigError, config_from_dict, read_config_data

SPEC_FILE = "sweep.yaml"
STATE_FILE = "sweep.json"
MEMBERS_DIR = "members"
SPEC_KEYS = ("name", "base", "overrides", "grid", "members", "max_concurrent_searches", "ray")
RAY_KEYS = ("address", "num_cpus", "num_gpus")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
POLL_S = 0.5

logger = logging.getLogger(__name__)


class SweepFailed(RuntimeError):
    """Some members failed (the others ran to the end); the message names them."""

    def __init__(self, message: str, result: SweepResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class Member:
    """One search of a sweep: its name, its overrides (``{dotted key: value}``) and config."""

    name: str
    overrides: dict[str, Any]
    config: Any = None  # the validated ExperimentConfig

    @property
    def group(self) -> str:
        """Its overrides without the seed: members of one group differ only by seed."""
        rest = {k: v for k, v in self.overrides.items() if k != "seed"}
        return ", ".join(f"{k}={_short(v)}" for k, v in rest.items()) or "all"


@dataclass
class Spec:
    """A parsed sweep file."""

    name: str
    base: Path
    overrides: dict[str, Any]
    members: list[Member]
    max_concurrent_searches: int
    ray: dict[str, Any] = field(default_factory=dict)


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text


def _override_items(mapping: Any, where: str) -> dict[str, Any]:
    if mapping is None:
        return {}
    if isinstance(mapping, list):  # ["key=value", ...] as on the command line
        from paretune.platform.config_loading import parse_override

        out = {}
        for item in mapping:
            path, value = parse_override(str(item))
            out[".".join(path)] = value
        return out
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} = {mapping!r}: expected a mapping of dotted keys to values")
    return {str(k): v for k, v in mapping.items()}


def read_spec(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Parse a sweep file; ``overrides`` (``key=value``) apply to every member."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(SPEC_KEYS)})")
    if "base" not in data:
        raise ConfigError(f"{path}: base is missing (the experiment YAML the members start from)")
    base = (path.parent / str(data["base"])).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base = {data['base']!r}: no such file ({base})")
    name = str(data.get("name") or path.stem)
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{path}: name = {name!r}: only letters, digits, '_', '.' and '-'")
    common = _override_items(data.get("overrides"), "overrides")
    common.update(_override_items(list(overrides), "command line"))
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: grid = {grid!r}: expected {{dotted key: [values]}}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} = {values!r}: expected a non-empty list")
    listed = data.get("members") or [{}]
    if not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed):
        raise ConfigError(f"{path}: members: expected a list of mappings of dotted keys")
    members: list[Member] = []
    for i, entry in enumerate(listed):
        entry = dict(entry)
        label = entry.pop("name", None)
        for combo in itertools.product(*grid.values()):
            over = {**dict(zip(grid, combo, strict=True)), **entry}
            parts = [str(label)] if label is not None else []
            parts += [
                f"{k.rsplit('.', 1)[-1]}-{_short(v)}" for k, v in zip(grid, combo, strict=True)
            ]
            mname = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts) or f"m{i}")
            members.append(Member(mname, over))
    names = [m.name for m in members]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{path}: member names repeat: {repeated} (give each list entry a name)")
    mcs = data.get("max_concurrent_searches", 2)
    if not isinstance(mcs, int) or isinstance(mcs, bool) or mcs < 1:
        raise ConfigError(f"{path}: max_concurrent_searches = {mcs!r}: a whole number >= 1")
    ray_cfg = data.get("ray") or {}
    if not isinstance(ray_cfg, dict) or set(ray_cfg) - set(RAY_KEYS):
        raise ConfigError(f"{path}: ray = {ray_cfg!r}: allowed keys {', '.join(RAY_KEYS)}")
    ray_cfg = dict(ray_cfg)
    for key in RAY_KEYS:  # `ray.address=...` on the command line or in overrides: the sweep's
        if ray_cfg.get(key) is None and common.get(f"ray.{key}") is not None:
            ray_cfg[key] = common[f"ray.{key}"]
    return Spec(name, base, common, members, mcs, dict(ray_cfg))


def _items(overrides: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


def member_config_data(spec: Spec, member: Member, member_dir: Path) -> dict[str, Any]:
    """The member's config mapping: base + sweep overrides + its own, stored in the sweep."""
    data = read_config_data(spec.base, _items({**spec.overrides, **member.overrides}))
    from paretune.platform.parent_run import absolute_tracking_uri

    data["name"] = f"{data.get('name', spec.name)}-{member.name}"
    data.setdefault("storage", {})
    data["storage"] = {**(data["storage"] or {}), "path": str(member_dir / "runs")}
    mlflow = dict(data.get("mlflow") or {})
    if mlflow.get("tracking_uri"):  # relative sqlite paths: the driver's folder, as `run` does
        mlflow["tracking_uri"] = absolute_tracking_uri(str(mlflow["tracking_uri"]))
    mlflow.setdefault("experiment", spec.name)
    data["mlflow"] = mlflow
    ray_cfg = dict(data.get("ray") or {})
    ray_cfg.pop("address", None)  # the sweep hands every member its cluster's address
    data["ray"] = ray_cfg
    return data


def validate(spec: Spec, sweep_dir: Path) -> list[str]:
    """Build and check every member (config, data, searcher); one line per bad member."""

    problems = []
    optuna_log = logging.getLogger("optuna")
    level = optuna_log.level
    optuna_log.setLevel(logging.WARNING)  # not a "new study" line per member
    try:
        _validate(spec, sweep_dir, problems)
    finally:
        optuna_log.setLevel(level)
    return problems


def _validate(spec: Spec, sweep_dir: Path, problems: list[str]) -> None:
    from paretune.platform.prepare import make_searcher, prepare

    for m in spec.members:
        try:
            data = member_config_data(spec, m, sweep_dir / MEMBERS_DIR / m.name)
            m.config = config_from_dict(data, source=f"member {m.name}")
            make_searcher(prepare(m.config))
        except ConfigError as exc:
            text = " ".join(str(exc).split())
            problems.append(
                text if text.startswith(f"member {m.name}") else f"member {m.name}: {text}"
            )


# --------------------------------------------------------------------------- state


def write_state(sweep_dir: Path, state: dict[str, Any]) -> None:
    tmp = sweep_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(sweep_dir / STATE_FILE)


def read_state(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{sweep_dir}: not a paretune sweep folder ({exc})") from None
    if not isinstance(state, dict) or "members" not in state:
        raise ConfigError(f"{sweep_dir}: not a paretune sweep folder (no members in {STATE_FILE})")
    return state


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a sweep folder (holds ``sweep.json``)."""
    return (Path(path) / STATE_FILE).is_file()


def member_experiment_dir(member_dir: Path) -> Path | None:
    """The member's experiment folder (the one with a paretune.json under ``runs/``)."""
    found = sorted(p.parent for p in (member_dir / "runs").glob("*/paretune.json"))
    return found[-1] if found else None


# --------------------------------------------------------------------------- cluster


def start_cluster(spec: Spec) -> tuple[str, bool]:
    """The address members join: ``ray.address`` / ``$RAY_ADDRESS``, else a local head started
    here (``ray.num_cpus`` / ``num_gpus``). Returns it and whether this process started Ray."""
    import ray

    from paretune.platform.cluster import check_reachable

    address = spec.ray.get("address") or os.environ.get("RAY_ADDRESS") or None
    if address in ("local", None):
        ray.init(
            num_cpus=spec.ray.get("num_cpus"),
            num_gpus=spec.ray.get("num_gpus"),
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        return ray.get_runtime_context().gcs_address, True
    if address != "auto":
        check_reachable(address, "ray.address")
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"ray.address = {address!r}: cannot connect ({exc})") from None
    gcs = ray.get_runtime_context().gcs_address
    return (address if address.startswith("ray://") else gcs), True


# --------------------------------------------------------------------------- running


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Members end when the sweep driver dies (Linux); ``paretune resume`` continues them."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _command(mstate: dict[str, Any], member_dir: Path) -> list[str]:
    """``paretune run`` for a member never started, ``paretune resume`` for one that was."""
    base = [sys.executable, "-m", "paretune"]
    exp = member_experiment_dir(member_dir)
    if exp is not None and _restorable(exp):
        return [*base, "resume", str(exp), "-q"]
    if exp is not None:  # died before Ray saved anything: start it again, keep the old aside
        shutil.move(str(exp), str(member_dir / f"abandoned-{exp.name}-{int(time.time())}"))
    return [*base, "run", str(member_dir / "config.yaml"), "-q"]


def _restorable(exp: Path) -> bool:
    from paretune.platform.experiment import load_experiment
    from paretune.platform.phases import phase_name
    from paretune.platform.tuning import restorable_segment

    try:
        config, state = load_experiment(exp)
    except ConfigError:
        return False
    return restorable_segment(exp, state) is not None or phase_name(config) is not None


def _last_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if x.startswith("paretune:")]
    return (errors or lines or ["no output"])[-1].strip()[:300]


def run_members(
    sweep_dir: Path, state: dict[str, Any], address: str, max_concurrent: int, verbose: int = 1
) -> None:
    """Run every member not finished, ``max_concurrent`` at once, as child processes."""
    env = {**os.environ, "RAY_ADDRESS": address}
    todo = [n for n, m in state["members"].items() if m["status"] != "finished"]
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    while todo or running:
        while todo and len(running) < max_concurrent:
            name = todo.pop(0)
            mdir = sweep_dir / MEMBERS_DIR / name
            ms = state["members"][name]
            cmd = _command(ms, mdir)
            log = open(mdir / "log.txt", "a")  # noqa: SIM115 - closed when the member ends
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[3:])}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )
            running[name] = (proc, log)
            ms.update(status="running", started=time.time(), attempts=ms.get("attempts", 0) + 1)
            write_state(sweep_dir, state)
            if verbose:
                print(f"sweep: {name} {cmd[3]} (pid {proc.pid})", flush=True)
        time.sleep(POLL_S)
        for name, (proc, log) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            log.close()
            del running[name]
            ms = state["members"][name]
            ms["wall_s"] = ms.get("wall_s", 0.0) + time.time() - ms.pop("started")
            exp = member_experiment_dir(sweep_dir / MEMBERS_DIR / name)
            ms["experiment_dir"] = str(exp) if exp else None
            if rc == 0:
                ms.update(status="finished", error=None)
            else:
                ms.update(
                    status="failed", error=f"exit {rc}: {_last_line(log_path(sweep_dir, name))}"
                )
            write_state(sweep_dir, state)
            if verbose:
                print(f"sweep: {name} {ms['status']} ({ms['wall_s']:.0f} s)", flush=True)


def log_path(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / MEMBERS_DIR / name / "log.txt"


# --------------------------------------------------------------------------- entry points


@dataclass
class SweepResult:
    sweep_dir: Path
    state: dict[str, Any]
    report: Any  # sweep_report.SweepReport


def sweep(
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    out_dir: str | os.PathLike | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Validate every member, then run them concurrently and write the sweep report."""
    spec = read_spec(path, overrides)
    probe = config_from_dict(read_config_data(spec.base, _items(spec.overrides)), str(spec.base))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep_dir = Path(
        out_dir or Path(probe.storage.path).expanduser() / f"sweep-{spec.name}-{stamp}"
    ).resolve()
    problems = validate(spec, sweep_dir)
    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} of {len(spec.members)} members are invalid, nothing ran\n"
            + "\n".join(problems)
        )
    sweep_dir.mkdir(parents=True, exist_ok=bool(out_dir))
    if (sweep_dir / STATE_FILE).exists():
        raise ConfigError(f"{sweep_dir}: already a sweep folder (use `paretune resume` on it)")
    (sweep_dir / SPEC_FILE).write_text(Path(path).read_text())
    members = {}
    for m in spec.members:
        mdir = sweep_dir / MEMBERS_DIR / m.name
        mdir.mkdir(parents=True, exist_ok=True)
        (mdir / "config.yaml").write_text(m.config.to_yaml())
        members[m.name] = {"overrides": m.overrides, "group": m.group, "status": "pending"}
    state: dict[str, Any] = {
        "name": spec.name,
        "spec": str(Path(path).resolve()),
        "overrides": list(overrides),
        "max_concurrent_searches": spec.max_concurrent_searches,
        "ray": spec.ray,
        "members": members,
        "created": stamp,
    }
    from paretune.platform.sweep_report import open_sweep_run

    state["mlflow"] = open_sweep_run(probe, spec.name, stamp, sweep_dir, state)
    write_state(sweep_dir, state)
    if verbose:
        print(f"sweep folder: {sweep_dir} ({len(members)} members)", flush=True)
    return _drive(sweep_dir, state, verbose)


def resume_sweep(sweep_dir: str | os.PathLike, *, verbose: int = 1) -> SweepResult:
    """Continue a sweep whose driver stopped: finished members stay, the others (re)start."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    state = read_state(sweep_dir)
    for ms in state["members"].values():
        if ms["status"] in ("running", "failed"):
            ms.pop("started", None)
            ms["status"] = "pending"
    return _drive(sweep_dir, state, verbose)


def _drive(sweep_dir: Path, state: dict[str, Any], verbose: int) -> SweepResult:
    import ray

    from paretune.platform.cluster import set_environment_defaults
    from paretune.platform.sweep_report import build_sweep_report, finish_sweep_run

    set_environment_defaults()
    spec_ray = {"address": None, **state.get("ray", {})}
    address, started = start_cluster(Spec(state["name"], Path(), {}, [], 1, spec_ray))
    t0 = time.time()
    try:
        run_members(sweep_dir, state, address, int(state["max_concurrent_searches"]), verbose)
    finally:
        if started:
            ray.shutdown()
    state["wall_s"] = state.get("wall_s", 0.0) + time.time() - t0
    write_state(sweep_dir, state)
    rep = build_sweep_report(sweep_dir, state)
    finish_sweep_run(sweep_dir, state, rep)
    failed = [n for n, m in state["members"].items() if m["status"] != "finished"]
    result = SweepResult(sweep_dir, state, rep)
    if failed:
        details = "; ".join(f"{n} ({state['members'][n].get('error')})" for n in failed)
        raise SweepFailed(
            f"{len(failed)} of {len(state['members'])} members failed: {details} "
            f"(logs: {sweep_dir}/{MEMBERS_DIR}/<member>/log.txt)",
            result,
        )
    return result
