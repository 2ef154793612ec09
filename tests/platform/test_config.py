"""Config loading: YAML, overrides, and one clear line per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from paretune.platform.config import ConfigError, apply_overrides, config_from_dict, load_config
from paretune.platform.prepare import prepare

CONF = Path(__file__).resolve().parents[2] / "conf"


def minimal(**changes) -> dict:
    data = {
        "name": "t",
        "evaluator": {"kind": "table"},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "params", "direction": "min"},
        ],
    }
    data.update(changes)
    return data


def _run_configs() -> list:
    """conf/'s experiment configs (sweep files, a ``base:`` and members, are checked in
    tests/platform/test_confs_e2e.py)."""
    import yaml

    return [p for p in sorted(CONF.glob("*.yaml")) if "base" not in yaml.safe_load(p.read_text())]


@pytest.mark.parametrize("path", _run_configs(), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.objectives


def test_overrides_set_nested_values_and_list_items():
    data = minimal()
    apply_overrides(
        data, ["search.num_samples=300", "objectives.1.limit=0.5", "evaluator.dataset=cifar100"]
    )
    cfg = config_from_dict(data)
    assert cfg.search.num_samples == 300
    assert cfg.objectives[1].limit == 0.5
    assert cfg.evaluator.dataset == "cifar100"
    assert cfg.objective_set()["params"].limit == 0.5


def test_load_config_applies_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    cfg = load_config(path, ["seed=7", "resources.cpu=0.5"])
    assert (cfg.seed, cfg.resources.cpu) == (7, 0.5)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"evaluatr": {}}, "evaluatr: unknown key"),
        ({"search": {"num_samples": "many"}}, "search.num_samples = 'many'"),
        (
            {"search": {"algorithm": "gradient_descent"}},
            "search.algorithm = 'gradient_descent': unknown search algorithm",
        ),
        (
            {"objectives": [{"name": "accuracy", "direction": "up"}]},
            "objectives[0].direction = 'up'",
        ),
        ({"objectives": []}, "objectives = []"),
        ({"resources": {"cpu": 0}}, "resources.cpu = 0"),
        ({"evaluator": {"kind": "train", "epochs": 0}}, "evaluator.epochs = 0"),
        ({"evaluator": {"kind": "train", "dataset": "imagenet"}}, "evaluator.dataset = 'imagenet'"),
        (
            {"evaluator": {"kind": "table", "dataset": "cifar10", "batch": 3}},
            "evaluator.batch: unknown key (allowed: kind, path",
        ),
        ({"name": "has space"}, "name = 'has space'"),
    ],
)
def test_bad_fields_are_named_with_value_and_allowed(changes, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(minimal(**changes))
    assert expected in str(info.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(
        ConfigError, match=r"search\.budget: unknown key \(allowed: algorithm, mode, num_samples"
    ):
        config_from_dict(minimal(search={"budget": 3}))


def test_bad_override_syntax_is_reported():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(minimal(), ["search.num_samples"])
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(minimal(), ["objectives.5.limit=1"])


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_wrong_table_path_names_the_field():
    cfg = config_from_dict(minimal(evaluator={"kind": "table", "path": "/no/such/nb201"}))
    with pytest.raises(
        ConfigError, match=r"evaluator.path = '/no/such/nb201': no NAS-Bench-201 table at"
    ):
        prepare(cfg)


def test_unknown_objective_lists_available_metrics(nb201_path):
    cfg = config_from_dict(
        minimal(
            evaluator={"kind": "table", "path": str(nb201_path)},
            objectives=[{"name": "latncy", "direction": "min"}],
        )
    )
    with pytest.raises(
        ConfigError, match=r"objectives\[0\]\.name = 'latncy'.*available: .*'latency'"
    ):
        prepare(cfg)


def test_unknown_device_lists_available_devices(nb201_path):
    cfg = config_from_dict(
        minimal(evaluator={"kind": "table", "path": str(nb201_path), "latency_device": "toaster"})
    )
    with pytest.raises(ConfigError, match=r"toaster.*pixel3"):
        prepare(cfg)


def test_bad_restriction_is_reported():
    cfg = config_from_dict(minimal(space={"name": "nb201", "restrict": {"e0_1": ["conv_9x9"]}}))
    with pytest.raises(ConfigError, match=r"space.restrict.*conv_9x9"):
        prepare(cfg)


def test_cli_takes_overrides_before_and_after_options(capsys):
    """``paretune run c.yaml a=1 -q b=2``: both overrides reach the config (cli.main, as typed)."""
    from paretune.platform import cli

    code = cli.main(["run", str(CONF / "quickstart.yaml"), "seed=x", "-q", "bogus_key=1"])
    err = capsys.readouterr().err
    assert code == 2 and "seed = 'x'" in err and "bogus_key: unknown key" in err
    code = cli.main(["run", str(CONF / "quickstart.yaml"), "-q", "search.num_samples=0"])
    assert code == 2 and "search.num_samples = 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # anything else stays an error, as argparse says it
        cli.main(["run", "c.yaml", "-q", "--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["report", "dir", "x=1"])


# ---------------------------------------------------------------------- bad input, as typed
QUICKSTART = str(CONF / "quickstart.yaml")


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``paretune ARGS`` through the entry point's main; (exit code, stderr)."""
    from paretune.platform import cli

    code = cli.main(args)
    return code, capsys.readouterr().err.strip()


def assert_one_line(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\nobjectives: []\n".encode("latin-1"))
    code, err = run_cli(["run", str(path)], capsys)
    assert_one_line(code, err, str(path), "not UTF-8 text (byte 0xe9 at offset 9)")


def test_a_cross_field_check_names_fields_not_the_whole_config(capsys):
    code, err = run_cli(["run", QUICKSTART, "objectives.1.name=accuracy"], capsys)
    assert_one_line(code, err, "objectives = ['accuracy', 'accuracy',", "'accuracy' repeats")
    assert "'seed'" not in err and "'evaluator'" not in err  # not the config dict


def test_a_file_that_is_not_the_table_is_named(capsys):
    code, err = run_cli(
        ["run", str(CONF / "nb201_tabular.yaml"), f"evaluator.path={QUICKSTART}"], capsys
    )
    assert_one_line(code, err, f"{QUICKSTART}: not the NAS-Bench-201 table")


def test_no_table_anywhere_names_the_three_places_and_the_build_command(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PARETUNE_DATA", str(tmp_path))
    monkeypatch.delenv("PARETUNE_NB201", raising=False)
    code, err = run_cli(["run", str(CONF / "nb201_tabular.yaml")], capsys)
    assert_one_line(
        code, err, "evaluator.path", "PARETUNE_NB201", str(tmp_path), "paretune data build nb201"
    )


def test_cifar10_without_its_data_is_refused_before_anything_starts(tmp_path, capsys):
    code, err = run_cli(["run", QUICKSTART, "evaluator.dataset=cifar10"], capsys)
    assert_one_line(code, err, "evaluator.data_path = None:", "needs the folder")
    code, err = run_cli(
        ["run", QUICKSTART, "evaluator.dataset=cifar10", f"evaluator.data_path={tmp_path}"], capsys
    )
    assert_one_line(code, err, f"evaluator.data_path = '{tmp_path}'", "missing ['data_batch_1'")


def test_a_too_long_experiment_name_is_refused_in_the_config(capsys):
    name = "a" * 300
    code, err = run_cli(["run", QUICKSTART, f"name={name}"], capsys)
    assert_one_line(code, err, "name = 'aaaa", "(300 characters)", "at most 100 characters")
    assert name not in err  # the value is shortened, not printed whole


@pytest.mark.parametrize(
    "uri", ["foo://bar", "s3://bucket/mlflow", "postgres://u@h/db", ""], ids=repr
)
def test_a_tracking_uri_mlflow_cannot_use_is_refused(uri, capsys):
    code, err = run_cli(["run", QUICKSTART, f"mlflow.tracking_uri={uri}"], capsys)
    assert_one_line(code, err, "mlflow.tracking_uri = ")
    if uri:
        assert_one_line(code, err, "unknown scheme", "allowed: file, sqlite, postgresql")


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///x.db",
        "postgresql+psycopg2://u@h/db",
        "mysql://h/db",
        "http://h:5000",
        "https://h",
        "databricks",
        "file:///tmp/m",
        "./mlruns",
    ],
)
def test_tracking_uris_mlflow_accepts_pass(uri):
    cfg = config_from_dict(minimal(mlflow={"tracking_uri": uri}))
    assert cfg.mlflow.tracking_uri == uri


def test_sync_mlflow_checks_its_tracking_uri_first(tmp_path, capsys):
    code, err = run_cli(["sync-mlflow", str(tmp_path), "--tracking-uri", "foo://bar"], capsys)
    assert_one_line(code, err, "--tracking-uri = 'foo://bar': unknown scheme 'foo'")


def test_a_too_long_mlflow_experiment_is_blamed_on_itself(capsys):
    code, err = run_cli(["run", QUICKSTART, f"mlflow.experiment={'e' * 600}"], capsys)
    assert_one_line(code, err, "mlflow.experiment = 'eee", "at most 500 characters")
    assert "tracking_uri" not in err


def test_unknown_search_params_list_what_the_engine_accepts(capsys):
    code, err = run_cli(["run", QUICKSTART, "search.params.bogus=1"], capsys)
    assert_one_line(
        code,
        err,
        "search.params.bogus = 1: not a parameter of search.algorithm 'regularized_evolution'",
        "(allowed: population_size, sample_size)",
    )


def test_unknown_optuna_params_list_the_samplers_parameters(capsys):
    code, err = run_cli(
        ["run", QUICKSTART, "search.algorithm=tpe", "search.params.bogus=1"], capsys
    )
    assert_one_line(code, err, "search.params.bogus = 1", "'tpe'", "n_startup_trials")
    assert "seed" not in err.split("allowed:")[1]  # paretune sets the seed


def test_known_search_params_pass():
    from paretune.platform.config import algorithm_parameters
    from paretune.search_algos import ENGINES, engine_names

    for name in engine_names():
        allowed = algorithm_parameters(name)
        assert allowed is None or not {"space", "objectives", "seed", "self"} & set(allowed)
        if allowed:
            cfg = config_from_dict(
                minimal(search={"algorithm": name, "params": {allowed[0]: None}})
            )
            assert cfg.search.params == {allowed[0]: None}
    assert "population_size" in algorithm_parameters("nsga2")
    assert ENGINES  # the registry the check inspects


def test_a_finished_experiments_config_is_read_without_its_dataset(tmp_path):
    """report / sync-mlflow / ui read an experiment's config.yaml on a machine without the data."""
    data = minimal(evaluator={"kind": "train", "dataset": "cifar10", "data_path": "/gone"})
    exp = tmp_path / "runs" / "t-20260101-000000"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="evaluator.data_path = '/gone'"):
        load_config(exp / "config.yaml")  # not yet an experiment: checked
    (exp / "paretune.json").write_text("{}")
    assert load_config(exp / "config.yaml").evaluator.data_path == "/gone"
    with pytest.raises(ConfigError, match="evaluator.data_path = '/gone'"):
        load_config(exp / "config.yaml", check_data=True)
