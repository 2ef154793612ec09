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


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.name)
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
        ConfigError, match=r"search\.budget: unknown key \(allowed: algorithm, num_samples"
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
    with pytest.raises(ConfigError, match=r"evaluator.path = '/no/such/nb201'.*not found"):
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
    from paretune.platform.cli import parse

    args = parse(["run", "conf/quickstart.yaml", "a.b=1", "-q", "search.num_samples=2"])
    assert args.quiet and args.overrides == ["a.b=1", "search.num_samples=2"]
    assert parse(["run", "c.yaml", "-q"]).overrides == []
    with pytest.raises(SystemExit):  # anything else stays an error, as argparse says it
        parse(["run", "c.yaml", "-q", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["report", "dir", "x=1"])
