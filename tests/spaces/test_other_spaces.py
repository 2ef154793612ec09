"""The mobilenet, choices and macro spaces, and make_space for every kind."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from paretune.spaces import (
    SPACES,
    ChoicesSpace,
    MacroSpace,
    MobileNetSpace,
    NB201Space,
    make_space,
)


def test_mobilenet_v2_configuration_matches_torchvision_parameter_count() -> None:
    space = MobileNetSpace()
    arch = space.mobilenet_v2()
    net = space.build(arch)  # 1000 classes, width 1.0
    assert sum(p.numel() for p in net.parameters()) == 3_504_872  # torchvision mobilenet_v2
    blocks = space.blocks(arch)
    assert [b.channels for b in blocks] == [24] * 2 + [32] * 3 + [64] * 4 + [96] * 3 + [160] * 3 + [
        320
    ]
    assert {(b.kernel, b.expansion) for b in blocks} == {(3, 6)}


def test_mobilenet_decisions_canonical_and_small_model() -> None:
    space = MobileNetSpace()
    names = space.decision_names()
    assert names[:3] == ["s1_depth", "s1_b1_kernel", "s1_b1_expand"]
    assert {len(d.options) for d in space.decisions} == {3}
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    canon = space.canonical(arch)
    assert space.blocks(canon) == space.blocks(arch)
    assert space.decode(space.encode(arch)) == arch
    small = space.build(arch, num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1)
    with torch.no_grad():
        assert small.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    bigger = space.from_params({**space.to_params(arch), "s3_depth": "4", "s3_b4_kernel": "7"})
    assert len(space.blocks(bigger)) >= len(space.blocks(arch))


def test_choices_space_hands_typed_values_and_reads_its_strings() -> None:
    space = make_space(
        "choices", decisions={"depth": [2, 3, 4], "width": [16, 32, 64], "act": ["relu", "gelu"]}
    )
    assert isinstance(space, ChoicesSpace) and space.size == 18
    arch = space.decode("depth=3,width=32,act=gelu")
    assert arch == (1, 1, 1)
    assert space.encode(arch) == "depth=3,width=32,act=gelu"
    assert space.to_dict(arch) == {"depth": 3, "width": 32, "act": "gelu"}
    assert space.from_dict({"depth": 3, "width": 32, "act": "gelu"}) == arch
    small = space.restrict({"width": ["16"]})
    assert small.size == 6 and small.to_dict(small.sample(np.random.default_rng(0)))["width"] == 16


@pytest.mark.parametrize(
    ("decisions", "match"),
    [
        ({}, "non-empty mapping"),
        ({"depth": []}, "decisions.depth"),
        ({"depth": [2, 2]}, "options repeat"),
        ({"1bad": [1]}, "name '1bad'"),
        ({"w": [[1, 2]]}, r"option \[1, 2\]"),
        ({"w": ["a,b"]}, "option 'a,b'"),
        ({"w": [float("nan")]}, "option nan"),
    ],
)
def test_choices_space_refuses_bad_decisions(decisions, match) -> None:
    with pytest.raises(ValueError, match=match):
        ChoicesSpace(decisions)


def test_macro_space_uses_the_benchmark_keys_and_canonical_form() -> None:
    space = make_space("macro")
    assert isinstance(space, MacroSpace) and space.size == 3**8
    arch = space.decode("2-2-2-1-2-2-2-0")
    assert space.encode(arch) == "2-2-2-1-2-2-2-0"
    assert space.decode("22212220") == arch
    assert space.canonical(space.decode("2-2-2-1-2-2-0-2")) == arch
    # the README's count of distinct networks
    assert len({space.canonical(a) for a in space}) == 3969
    # index order: itertools.product("012", repeat=8)
    assert [space.encode(a) for a in itertools.islice(iter(space), 2)] == [
        "0-0-0-0-0-0-0-0",
        "0-0-0-0-0-0-0-1",
    ]
    for bad in ("2-2-2", "2-2-2-1-2-2-2-3", 22212220):
        with pytest.raises(ValueError, match="NAS-Bench-Macro"):
            space.decode(bad)
    # a restricted space still names an architecture from before the restriction (pertnas
    # perturbs such parents back inside the space and records the parent's name)
    narrowed = space.restrict([[0, 1]] + [[0, 1, 2]] * 7)
    assert narrowed.encode(arch) == "2-2-2-1-2-2-2-0" and not narrowed.contains(arch)


def test_make_space_for_every_kind_and_its_errors() -> None:
    assert set(SPACES) == {"nb201", "darts", "mobilenet", "macro", "choices", "python"}
    assert isinstance(make_space("nb201"), NB201Space)
    assert make_space("nb201", {"e0_1": ["none"]}).size == 5**5
    assert make_space("macro", restrict={"layer1": ["1", "2"]}).size == 2 * 3**7
    with pytest.raises(ValueError, match="unknown space 'nb301'"):
        make_space("nb301")
    with pytest.raises(ValueError, match=r"space 'darts': unknown settings \['decisions'\]"):
        make_space("darts", decisions={"a": [1]})
    with pytest.raises(ValueError, match=r"missing settings \['decisions'\]"):
        make_space("choices")


def test_python_space_from_a_users_factory(tmp_path) -> None:
    (tmp_path / "user_space_mod.py").write_text(
        "from paretune.spaces import ChoicesSpace\n"
        "def make(depth=(1, 2)):\n"
        "    return ChoicesSpace({'depth': list(depth), 'kernel': [3, 5]})\n"
        "def not_a_space():\n"
        "    return 42\n"
        "def broken():\n"
        "    raise RuntimeError('no GPU here')\n"
        "VALUE = 3\n"
    )
    space = make_space("python", factory="user_space_mod:make", sources=str(tmp_path))
    assert space.size == 4 and space.to_dict((1, 1)) == {"depth": 2, "kernel": 5}
    bigger = make_space(
        "python",
        factory="user_space_mod:make",
        args={"depth": [1, 2, 3]},
        restrict={"kernel": ["3"]},
    )
    assert bigger.size == 3
    cases = [
        ({"factory": "user_space_mod"}, "expected 'module:function'"),
        ({"factory": "no_such_mod_xyz:make"}, "module 'no_such_mod_xyz' not found"),
        ({"factory": "user_space_mod:missing"}, "has no attribute 'missing'"),
        ({"factory": "user_space_mod:VALUE"}, "int is not callable"),
        ({"factory": "user_space_mod:not_a_space"}, "returned int, expected"),
        ({"factory": "user_space_mod:broken"}, "failed: RuntimeError: no GPU here"),
        ({"factory": "user_space_mod:make", "args": [1]}, "space.args"),
        ({"factory": "user_space_mod:make", "sources": str(tmp_path / "nope")}, "not a folder"),
    ]
    for settings, match in cases:
        with pytest.raises(ValueError, match=match):
            make_space("python", **settings)
    with pytest.raises(ValueError, match=r"missing settings \['factory'\]"):
        make_space("python")


def test_cell_graphs_and_canonical_for_every_kind() -> None:
    from paretune.spaces.darts import DARTS_V2

    nb201 = NB201Space()
    arch = nb201.decode(
        "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|"
    )
    assert nb201.cell_graphs(arch) == {
        "cell": [
            (0, 1, "nor_conv_3x3"),
            (0, 2, "skip_connect"),
            (1, 2, "none"),
            (0, 3, "nor_conv_1x1"),
            (1, 3, "avg_pool_3x3"),
            (2, 3, "none"),
        ]
    }
    assert nb201.canonical(arch) == arch
    darts = make_space("darts")
    graphs = darts.cell_graphs(darts.decode(DARTS_V2))
    assert graphs["normal"][-1] == (2, 5, "dil_conv_3x3") and len(graphs["reduce"]) == 8
    assert {d for _, d, _ in graphs["normal"]} == {2, 3, 4, 5}
    for kind in ("mobilenet", "macro"):
        space = make_space(kind)
        assert space.cell_graphs(space.sample(np.random.default_rng(0))) is None
