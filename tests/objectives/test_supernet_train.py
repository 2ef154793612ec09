"""Supernet training: SPOS, sampled from logits, DARTS-weighted; checkpoints resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paretune.objectives.supernet_train import (
    CHECKPOINT_JSON,
    SupernetTrainer,
    load_supernet,
    read_checkpoint,
)
from paretune.spaces.darts import DartsSpace
from paretune.spaces.nb201 import NB201Space

SMALL = dict(channels=4, cells_per_stage=1, batch_size=128, epochs=2)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_from_checkpoint_is_exact(tmp_path):
    straight = SupernetTrainer(NB201Space(), **SMALL)
    straight.train()
    assert straight.done and len(straight.history) == 2
    assert straight.samples == 2 * len(straight.data().train)

    first = SupernetTrainer(NB201Space(), **SMALL)
    first.train(until=1)
    first.save(tmp_path)
    assert not _same_weights(first.net, straight.net)
    second = SupernetTrainer(NB201Space(), **SMALL)
    second.load(tmp_path)
    assert second.epoch == 1
    second.train()
    assert _same_weights(second.net, straight.net)
    losses = [h["train_loss"] for h in second.history]
    assert losses == [h["train_loss"] for h in straight.history]
    assert second.samples == straight.samples
    # one .pt per folder, named by the sidecar
    second.save(tmp_path)
    assert [p.name for p in tmp_path.glob("*.pt")] == ["supernet-e0002.pt"]
    meta = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    assert meta["epoch"] == 2 and meta["done"] is True


def test_load_refuses_other_settings_and_bad_files(tmp_path):
    t = SupernetTrainer(NB201Space(), **SMALL)
    t.save(tmp_path)
    other = SupernetTrainer(NB201Space(), **{**SMALL, "channels": 6})
    with pytest.raises(ValueError, match="channels = 4, this training has 6"):
        other.load(tmp_path)
    with pytest.raises(ValueError, match="no supernet.json"):
        read_checkpoint(tmp_path / "missing")
    (tmp_path / "supernet-e0000.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="unreadable"):
        read_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="sampling='fair' is unknown"):
        SupernetTrainer(NB201Space(), sampling="fair")
    with pytest.raises(ValueError, match="logits has shape"):
        SupernetTrainer(NB201Space(), sampling="logits", logits=[[0.0] * 5] * 2)


def test_load_supernet_gives_the_trained_network(tmp_path):
    space = NB201Space().restrict({"e0_1": ["nor_conv_3x3", "skip_connect"]})
    t = SupernetTrainer(space, **{**SMALL, "epochs": 1})
    t.train()
    t.save(tmp_path)
    net, meta = load_supernet(tmp_path)
    assert not net.training
    assert net.edge_options == t.net.edge_options
    assert _same_weights(net, t.net)
    assert meta["settings"]["space"]["restrict"]["e0_1"] == ["skip_connect", "nor_conv_3x3"]


def test_logits_sampling_follows_the_distribution():
    space = NB201Space()
    logits = np.full((6, 5), -20.0)
    logits[:, 3] = 0.0  # nor_conv_3x3 everywhere
    t = SupernetTrainer(space, **{**SMALL, "epochs": 1}, sampling="logits", logits=logits)
    assert {tuple(t.next_path()) for _ in range(10)} == {(3,) * 6}
    t.logits = np.zeros((6, 5))
    assert len({tuple(t.next_path()) for _ in range(30)}) > 5
    t.sampler = lambda rng: [1] * 6
    assert t.next_path() == [1] * 6


def _two_op_darts() -> DartsSpace:
    space = DartsSpace()
    ops = ["skip_connect", "sep_conv_3x3"]
    return space.restrict({n: ops for n in space.decision_names() if "_op" in n})


def test_weighted_darts_trains_the_architecture_logits():
    t = SupernetTrainer(
        _two_op_darts(),
        channels=4,
        cells_per_stage=1,
        batch_size=256,
        epochs=1,
        sampling="weighted",
        arch_lr=0.01,
    )
    before = t.logits.copy()
    t.train()
    assert np.abs(t.logits - before).max() > 0
    assert np.isfinite(t.history[-1]["train_loss"])
    fixed = SupernetTrainer(
        _two_op_darts(),
        channels=4,
        cells_per_stage=1,
        batch_size=256,
        epochs=1,
        sampling="weighted",
    )
    fixed.train()
    assert np.array_equal(fixed.logits, np.zeros_like(fixed.logits))


def test_split_seed_and_bn_weight_decay_options(tmp_path):
    # split_seed: two seeds train on one split; without it each seed has its own split
    a = SupernetTrainer(NB201Space(), **SMALL, seed=1, split_seed=0)
    b = SupernetTrainer(NB201Space(), **SMALL, seed=0)
    c = SupernetTrainer(NB201Space(), **SMALL, seed=1)
    assert torch.equal(a.data().valid.y, b.data().valid.y)
    assert not torch.equal(c.data().valid.y, b.data().valid.y)
    with pytest.raises(ValueError, match="split_seed=1.5 must be an integer or None"):
        SupernetTrainer(NB201Space(), split_seed=1.5)
    # bn_weight_decay=False: 1-D parameters (BN weights, biases) get no weight decay
    d = SupernetTrainer(NB201Space(), **SMALL, bn_weight_decay=False)
    groups = d.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    assert groups[0]["weight_decay"] == d.weight_decay > 0
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["params"]
    assert sum(len(g["params"]) for g in groups) == len(list(d.net.parameters()))
    assert len(b.optimizer.param_groups) == 1
    # the defaults keep the sidecar's settings as before; set options are recorded and checked
    assert "split_seed" not in b.settings() and "bn_weight_decay" not in b.settings()
    d.save(tmp_path)
    with pytest.raises(ValueError, match="bn_weight_decay = False, this training has None"):
        SupernetTrainer(NB201Space(), **SMALL).load(tmp_path)
    SupernetTrainer(NB201Space(), **SMALL, bn_weight_decay=False).load(tmp_path)
