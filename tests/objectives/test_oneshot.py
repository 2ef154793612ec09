"""The one-shot evaluator: shared weights, BN recalibration, costs of the compact network."""

from __future__ import annotations

import pytest
import torch

from paretune.objectives import make_evaluator
from paretune.objectives.measure import count_params
from paretune.objectives.oneshot import SupernetEvaluator, cached_supernet
from paretune.objectives.supernet_train import SupernetTrainer
from paretune.objectives.train import TrainEvaluator
from paretune.spaces.nb201 import NB201Space

FAST = dict(latency_repeats=2, latency_warmup=0, energy_meter="estimate", bn_batches=3)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    space = NB201Space().restrict({"e0_1": ["nor_conv_3x3", "skip_connect"]})
    t = SupernetTrainer(space, channels=4, cells_per_stage=1, epochs=2, batch_size=64)
    t.train()
    folder = tmp_path_factory.mktemp("supernet")
    t.save(folder)
    return folder


def test_scores_and_measures_the_compact_network(checkpoint):
    spec = {"kind": "nb201", "restrict": {"e0_1": ["nor_conv_3x3", "skip_connect"]}}
    ev = make_evaluator("supernet", checkpoint=str(checkpoint), channels=4, space=spec, **FAST)
    assert isinstance(ev, SupernetEvaluator)
    arch = (3, 3, 2, 1, 3, 1)
    result = ev.evaluate(arch)
    v = result.values
    assert 0 <= v["accuracy"] <= 100 and 0 <= v["test_accuracy"] <= 100
    assert v["accuracy"] > 20  # trained shared weights beat chance (10%) on digits
    stand_alone = TrainEvaluator(channels=4, cells_per_stage=1).build(arch)
    assert v["params"] == pytest.approx(count_params(stand_alone))
    assert v["flops"] > 0 and v["latency"] > 0 and v["energy"] > 0
    assert result.sources["accuracy"] == "estimated" and result.sources["params"] == "measured"
    assert result.extras["supernet_epoch"] == 2
    # deterministic (same BN batches), and the supernet is read once per process
    assert ev.evaluate(arch).values["accuracy"] == v["accuracy"]
    assert ev.supernet()[0] is cached_supernet(checkpoint, ev.device)[0]
    # a different architecture scores differently
    scores = ev.score([arch, (3, 0, 0, 0, 0, 0)])
    assert scores[0] != scores[1]


def test_bn_recalibration_and_finetune_change_the_score(checkpoint):
    spec = {"kind": "nb201", "restrict": {"e0_1": ["nor_conv_3x3", "skip_connect"]}}
    arch = (3, 3, 3, 3, 3, 3)
    common = dict(checkpoint=str(checkpoint), channels=4, space=spec, **FAST)
    plain = SupernetEvaluator(**{**common, "bn_batches": 0}).network(arch)
    recal = SupernetEvaluator(**common).network(arch)
    tuned = SupernetEvaluator(**common, finetune_steps=3).network(arch)
    bn = [m for m in recal.modules() if isinstance(m, torch.nn.BatchNorm2d)][1]
    bn_plain = [m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)][1]
    assert not torch.equal(bn.running_mean, bn_plain.running_mean)
    w = dict(recal.named_parameters())
    changed = [n for n, p in tuned.named_parameters() if not torch.equal(p, w[n])]
    assert changed


def test_errors_name_the_problem(checkpoint):
    ev = SupernetEvaluator(channels=4, **FAST)
    with pytest.raises(ValueError, match="evaluator.checkpoint is not set"):
        ev.evaluate((3,) * 6)
    ev = SupernetEvaluator(checkpoint=str(checkpoint), channels=4, **FAST)  # full space
    with pytest.raises(ValueError, match="not in the supernet"):
        ev.evaluate((0,) * 6)  # none on edge 0->1 was pruned from the supernet
    with pytest.raises(ValueError, match="has no supernet"):
        SupernetEvaluator(space={"kind": "mobilenet"})
