"""The supernet-ranking benchmark's stand-alone options (lr, warm-up, gradient clipping)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import supernet_ranking as sr
from paretune.objectives.train import TrainEvaluator

ARCH = (3, 1, 3, 1, 1, 3)  # NB201: 3x3 convs and skips


@pytest.fixture(scope="module")
def ev() -> TrainEvaluator:
    torch.set_num_threads(1)
    return TrainEvaluator(channels=8, seed=0, energy_meter="estimate")


def test_lr_warmup_and_clip_change_training(ev):
    base = sr.standalone_accuracy(ev, ARCH, 2, seed=0)[0]
    assert base > 60.0  # learns on digits in two epochs
    # a tiny peak lr or a tiny gradient-norm clip leave the network near chance
    assert sr.standalone_accuracy(ev, ARCH, 2, seed=0, lr=1e-7)[0] < base - 20
    assert sr.standalone_accuracy(ev, ARCH, 2, seed=0, clip=1e-9)[0] < base - 20
    warm = sr.standalone_accuracy(ev, ARCH, 2, seed=0, warmup=0.5)[0]
    assert warm != base


@pytest.mark.parametrize(
    "argv, field",
    [
        (["--sa-warmup", "1.0"], "--sa-warmup=1.0"),
        (["--sa-clip", "-1"], "--sa-clip=-1.0"),
        (["--sa-lr", "0"], "--sa-lr=0.0"),
    ],
)
def test_bad_options_end_in_one_line(argv, field):
    with pytest.raises(SystemExit) as info:
        sr.main(["--spaces", "nb201", *argv])
    assert str(info.value).startswith(field)


def test_ground_truth_probe_without_supernets(tmp_path, capsys):
    out = tmp_path / "probe.txt"
    argv = ["--spaces", "nb201", "--archs", "3", "--seeds", "2", "--sa-epochs", "1"]
    sr.main([*argv, "--sn-variants", "", "--sa-clip", "5", "--out", str(out)])
    text = out.read_text()
    assert "stand-alone split-half (ceiling)" in text
    assert "params (capacity) vs stand-alone" in text
    assert "supernet" not in text.split("scored on")[1].replace("supernets", "")
