"""The DARTS cell space: decisions, Genotype text both ways, and the published parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretune.spaces import DartsSpace, make_space
from paretune.spaces.darts import DARTS_EDGES, DARTS_OPS, DARTS_V2, PERTNAS, parse_genotype


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params(model: torch.nn.Module, skip_auxiliary: bool = False) -> int:
    return sum(
        p.numel() for k, p in model.named_parameters() if not (skip_auxiliary and "auxiliary" in k)
    )


def test_decisions_cover_both_cells_with_two_inputs_per_node() -> None:
    space = DartsSpace()
    assert space.num_decisions == 22
    sizes = {d.name: len(d.options) for d in space.decisions}
    assert sizes["normal_3_in"] == 3 and sizes["normal_4_in"] == 6 and sizes["reduce_5_in"] == 10
    assert "normal_2_in" not in sizes  # node 2 always takes states 0 and 1
    assert all(
        sizes[f"{c}_{n}_op{k}"] == 8
        for c in ("normal", "reduce")
        for n in range(2, 6)
        for k in (1, 2)
    )
    assert set(DARTS_OPS) >= {"none", "sep_conv_3x3", "dil_conv_5x5", "max_pool_3x3"}
    assert space.size == (3 * 6 * 10) ** 2 * 8**16
    assert len(DARTS_EDGES) == 14 and DARTS_EDGES[:3] == ((0, 2), (1, 2), (0, 3))
    graphs = space.cell_graphs(space.sample(np.random.default_rng(0)))
    assert all((s, d) in DARTS_EDGES for edges in graphs.values() for s, d, _ in edges)
    assert make_space("darts").size == space.size


def test_genotype_text_round_trip_and_input_order() -> None:
    space = DartsSpace()
    arch = space.decode(DARTS_V2)
    text = space.encode(arch)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1),")
    assert "normal_concat=range(2, 6)" in text and "reduce_concat=range(2, 6)" in text
    assert space.decode(text) == arch
    g = space.genotype(arch)
    # DARTS_V2's node 4 lists ('sep_conv_3x3', 1) before ('skip_connect', 0): same node.
    assert g.normal[4:6] == [("skip_connect", 0), ("sep_conv_3x3", 1)]
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = space.sample(rng)
        assert space.decode(space.encode(a)) == a
        parsed = parse_genotype(space.encode(a))
        assert all(
            i < j for (_, i), (_, j) in zip(parsed.normal[::2], parsed.normal[1::2], strict=True)
        )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("__import__('os').system('true')", "Genotype"),
        (DARTS_V2.replace("dil_conv_3x3", "conv_7x1_1x7"), "unknown operation 'conv_7x1_1x7'"),
        (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 0)"), "takes input 0 twice"),
        (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 6)"), "input 6 out of range"),
        (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"), "must be"),
        (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "missing fields"),
        ("Genotype(normal=[", "not Python literal syntax"),
        (None, "not a DARTS genotype"),
    ],
)
def test_bad_genotypes_are_refused_with_the_reason(text, match) -> None:
    with pytest.raises(ValueError, match=match):
        DartsSpace().decode(text)


def test_restrict_keeps_the_encoding() -> None:
    space = DartsSpace().restrict({"normal_2_op1": ["sep_conv_3x3", "skip_connect"]})
    arch = DartsSpace().decode(DARTS_V2)
    assert space.contains(arch)
    assert space.encode(arch) == DartsSpace().encode(arch)
    assert all(
        DartsSpace().to_params(a)["normal_2_op1"] in ("sep_conv_3x3", "skip_connect")
        for a in (space.sample(np.random.default_rng(i)) for i in range(20))
    )


def test_darts_v2_and_pertnas_parameter_counts() -> None:
    """DARTS V2 at C=36, 20 cells, 10 classes: 3.35M (paper: 3.3M); PertNAS's cell: 3.98M."""
    space = DartsSpace()
    v2 = space.build(space.decode(DARTS_V2), channels=36, layers=20, num_classes=10)
    assert params(v2) == 3_349_342
    with_aux = space.build(space.decode(DARTS_V2), auxiliary=True)
    # DARTS's count_parameters_in_MB leaves the auxiliary head out: 3.35 either way.
    assert params(with_aux, skip_auxiliary=True) == 3_349_342
    assert params(with_aux) == 3_825_768
    pert = space.build(space.decode(PERTNAS))
    assert params(pert) == 3_979_414
    assert round(params(pert) / 1e6, 2) == 3.98


def test_network_runs_on_cifar_and_digit_sizes() -> None:
    space = DartsSpace()
    arch = space.decode(PERTNAS)
    net = space.build(arch, channels=4, layers=5, auxiliary=True).train()
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and net.logits_aux.shape == (2, 10)
    small = space.build(arch, channels=4, layers=3, in_channels=1).eval()
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # 28 -> 14 -> 7 -> 4 (odd size)
    rng = np.random.default_rng(1)
    for _ in range(3):  # any sampled genotype, 'none' included, builds and runs
        net = space.build(space.sample(rng), channels=4, layers=3, drop_path_prob=0.2).train()
        out = net(torch.randn(2, 3, 16, 16))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="layers=2"):
        space.build(arch, layers=2)
