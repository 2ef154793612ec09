"""NAS-LID phase: settings, the split of a trained supernet, inheritance, leaf scoring, and
(slow) the whole of ``paretune run conf/nas_lid_digits.yaml``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from paretune.objectives.oneshot import SupernetEvaluator
from paretune.objectives.supernet_train import SupernetTrainer, read_checkpoint
from paretune.platform.config import ConfigError
from paretune.platform.nas_lid import check_split, inherit, split_supernet
from tests.platform.cli import ROOT, run_paretune, tail


def test_split_settings_are_checked_with_one_line() -> None:
    assert check_split({"parts": 4})["k"] == 20
    for bad, match in (
        ({"parts": 3}, "split.parts = 3: must be a power of 2"),
        ({"partition": "kmeans"}, "split.partition = 'kmeans'"),
        ({"method": "grad"}, "split.method = 'grad'"),
        ({"bogus": 1}, "split.bogus = 1: unknown"),
        ({"batch_size": 10}, "batch_size = 10: must exceed k = 20"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_split(bad)


def test_the_shipped_config_runs_the_nas_lid_phase() -> None:
    from paretune.platform import phases
    from paretune.platform.config_loading import load_config
    from paretune.platform.nas_lid import NasLidPhase

    config = load_config(ROOT / "conf" / "nas_lid_digits.yaml")
    assert phases.phase_name(config) == "nas_lid"
    phase = phases.phase_for(config)
    assert isinstance(phase, NasLidPhase) and phase.split["parts"] == 2
    plain = load_config(ROOT / "conf" / "oneshot_digits.yaml")
    assert phases.phase_name(plain) == "supernet_training"
    bad = load_config(ROOT / "conf" / "nas_lid_digits.yaml", ["evaluator.split.parts=3"])
    with pytest.raises(ConfigError, match="split.parts = 3"):
        phases.phase_for(bad)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # untrained (its initial weights): the split's mechanics do not need a trained supernet
    trainer = SupernetTrainer({"kind": "nb201"}, channels=4, cells_per_stage=1, epochs=1, seed=0)
    folder = tmp_path_factory.mktemp("root")
    trainer.save(folder)
    return folder


@pytest.mark.slow  # ~5 s idle, 47 s on the shared box
def test_split_then_children_inherit_and_leaves_score(root: Path, tmp_path: Path) -> None:
    full = [[0, 1, 2, 3, 4]] * 6
    split = check_split({"repeats": 1, "batch_size": 32})
    rec = split_supernet(root, full, split, seed=0)
    assert len(rec["scores"]) == 6 and rec["score"] == max(rec["scores"].values())
    e = rec["edge"]
    assert sorted(sum(rec["groups"], [])) == [0, 1, 2, 3, 4]
    assert [c[e] for c in rec["children"]] == [sorted(g) for g in rec["groups"]]
    assert all(c[:e] + c[e + 1 :] == full[:5] for c in rec["children"])

    leaves = []
    for i, child in enumerate(rec["children"]):
        t = SupernetTrainer(
            {"kind": "nb201"}, channels=4, cells_per_stage=1, epochs=1, edge_options=child
        )
        assert inherit(t, root) > 0
        _, parent = read_checkpoint(root)
        for k, v in t.net.state_dict().items():
            assert torch.equal(v, parent["model"][k]), k
        # the child holds only its group's operations on the split edge
        ops = set(t.net.cells[0].edges[e].ops.keys())
        assert ops == {t.net.ops[k] for k in child[e]}
        with torch.no_grad():  # mark each leaf so that we see which one scored
            t.net.classifier.bias.fill_(float(i))
        t.save(tmp_path / f"leaf{i}")
        leaves.append({"checkpoint": str(tmp_path / f"leaf{i}"), "edge_options": child})
    ev = SupernetEvaluator(checkpoint=str(root), channels=4, leaves=leaves)
    for i, child in enumerate(rec["children"]):
        arch = [child[d][0] for d in range(6)]
        net, _ = ev.supernet(arch)
        assert float(net.classifier.bias[0].detach()) == float(i)
        assert ev.network(arch) is not None


@pytest.mark.slow
def test_paretune_run_nas_lid_digits(tmp_path: Path) -> None:
    out = run_paretune(
        "run",
        str(ROOT / "conf" / "nas_lid_digits.yaml"),
        f"storage.path={tmp_path / 'runs'}",
        "evaluator.epochs=2",
        "evaluator.split.finetune_epochs=1",
        "evaluator.split.repeats=1",
        "search.num_samples=6",
        "evaluator.channels=4",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    assert out.returncode == 0, tail(out)
    assert "6 trials, 0 failed" in out.stdout
    handovers = list(tmp_path.rglob("phases/nas_lid/handover.json"))
    assert len(handovers) == 1
    record = json.loads(handovers[0].read_text())
    assert len(record["leaves"]) == 2 and len(record["splits"]) == 1
    e = record["splits"][0]["edge"]
    groups = sorted(sorted(leaf["edge_options"][e]) for leaf in record["leaves"])
    assert sorted(sum(groups, [])) == [0, 1, 2, 3, 4] and all(groups)
    for leaf in record["leaves"]:
        assert (Path(leaf["checkpoint"]) / "supernet.json").is_file()
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        keys = {k for (k,) in con.execute("select distinct key from metrics")}
    assert {"nas_lid_split_score", "nas_lid_leaf0_train_accuracy"} <= keys, sorted(keys)[:20]

    # A crash after the fine-tuning, before the hand-over: resume re-reads the split record and
    # the level's Tune run, trains nothing again and hands over the same leaves.
    phase_dir = handovers[0].parent
    split_file = phase_dir / "split-0-0.json"
    split_mtime = split_file.stat().st_mtime_ns
    handovers[0].unlink()
    (experiment,) = (tmp_path / "runs").iterdir()
    again = run_paretune("resume", str(experiment))
    assert again.returncode == 0, tail(again)
    assert split_file.stat().st_mtime_ns == split_mtime
    assert json.loads(handovers[0].read_text())["leaves"] == record["leaves"]
