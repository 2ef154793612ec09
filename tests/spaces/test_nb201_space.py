"""The NAS-Bench-201 cell space: strings, neighbours, restriction, sampling and size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paretune.spaces import NB201_OPS, Decision, NB201Space, SearchSpace, make_space

INDEX0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


def hamming(a, b) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------- encode / decode
def test_size_and_enumeration(space: NB201Space) -> None:
    assert space.size == 15625 == 5**6
    archs = list(space)
    assert len(archs) == len(set(archs)) == 15625
    assert space.decision_names() == ["e0_1", "e0_2", "e1_2", "e0_3", "e1_3", "e2_3"]


def test_round_trip_over_every_arch(space: NB201Space) -> None:
    strings = set()
    for arch in space:
        text = space.encode(arch)
        assert space.decode(text) == arch
        strings.add(text)
    assert len(strings) == 15625


def test_known_string(space: NB201Space) -> None:
    # Edge order |0->1|+|0->2|1->2|+|0->3|1->3|2->3|.
    arch = space.decode(INDEX0)
    assert [NB201_OPS[i] for i in arch] == [
        "avg_pool_3x3",
        "nor_conv_1x1",
        "skip_connect",
        "nor_conv_1x1",
        "skip_connect",
        "skip_connect",
    ]
    assert space.encode(arch) == INDEX0


def test_decodes_every_table_string(space: NB201Space, nb201_path) -> None:
    table = pd.read_csv(nb201_path, usecols=["index", "arch"], index_col="index")
    archs = [space.decode(s) for s in table["arch"]]
    assert len(set(archs)) == 15625
    assert all(space.encode(a) == s for a, s in zip(archs, table["arch"], strict=True))
    assert table.loc[0, "arch"] == INDEX0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("|none~0|+|none~0|none~1|", "expected 3 nodes"),
        ("", "expected 3 nodes"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 .* has 1 inputs, expected 2"),
        (
            "|none~0|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
            "node 1 .* has 2 inputs, expected 1",
        ),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", r"expected input ~0"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", r"expected input ~0"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv_5x5'"),
    ],
)
def test_malformed_strings_raise_clear_errors(space: NB201Space, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space.decode(text)


@pytest.mark.parametrize("value", [None, 42, b"|none~0|", ["|none~0|"], 3.5])
def test_decode_of_a_non_string_names_the_value_and_the_form(space: NB201Space, value) -> None:
    with pytest.raises(ValueError) as info:
        space.decode(value)
    message = str(info.value)
    assert repr(value) in message and type(value).__name__ in message
    assert "expected a string like '|" in message and "~0|+|" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"None \(NoneType\); expected 'e0_1=<option>,e0_2=<option>"),
        ("e0_1=none", r"missing decisions \['e0_2'"),
        ("e0_1=none,bogus", "expected 'e0_1=<option>"),
        ("e0_1=none,e9_9=none", r"unknown \['e9_9'\]"),
    ],
)
def test_generic_decode_of_malformed_input_raises_clear_errors(text, message) -> None:
    generic = SearchSpace([Decision("e0_1", ("none", "skip")), Decision("e0_2", ("none", "skip"))])
    with pytest.raises(ValueError, match=message):
        generic.decode(text)
    assert generic.decode("e0_1=skip,e0_2=none") == (1, 0)


def test_decode_outside_a_restriction_names_the_allowed_options(space: NB201Space) -> None:
    small = space.restrict({"e0_1": ["nor_conv_3x3"]})
    with pytest.raises(ValueError, match=r"e0_1.*allowed: \['nor_conv_3x3'\]"):
        small.decode(INDEX0)


# ---------------------------------------------------------------------- neighbours
def test_neighbors_full_space(space: NB201Space) -> None:
    for arch in space:
        nbrs = space.neighbors(arch)
        assert len(nbrs) == 24
        assert len(set(nbrs)) == 24
        assert all(hamming(arch, n) == 1 for n in nbrs)


def test_neighbors_restricted_space(space: NB201Space) -> None:
    allowed = [[0, 3], [1, 2, 3], [0, 1, 2, 3, 4], [4], [2, 3, 4, 0], [1, 3]]
    small = space.restrict(allowed)
    expected = sum(len(a) - 1 for a in allowed)  # 1 + 2 + 4 + 0 + 3 + 1
    assert expected == 11
    for arch in small:
        nbrs = small.neighbors(arch)
        assert len(nbrs) == len(set(nbrs)) == expected
        assert all(hamming(arch, n) == 1 and small.contains(n) for n in nbrs)


def test_mutate_returns_a_neighbour(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    for _ in range(50):
        child = space.mutate(arch, rng)
        assert child in space.neighbors(arch)
    single = space.restrict([[i] for i in arch])
    assert single.mutate(arch, rng) == arch  # no neighbour: itself


# ---------------------------------------------------------------------- restriction, sampling
def test_restrict_by_names_and_indices_agree(space: NB201Space) -> None:
    by_names = space.restrict({"e0_1": ["nor_conv_3x3", "skip_connect"], "e2_3": ["none"]})
    by_index = space.restrict([[1, 3], range(5), range(5), range(5), range(5), [0]])
    assert by_names.allowed == by_index.allowed
    assert by_names.size == 2 * 5**4 * 1 == 1250
    assert by_names.is_restricted and not space.is_restricted
    assert list(by_names) == list(by_index)
    assert by_names.allowed_names()["e0_1"] == ["skip_connect", "nor_conv_3x3"]
    # The original space is unchanged.
    assert space.size == 15625


def test_restricted_space_encodes_the_same_strings(space: NB201Space) -> None:
    small = space.restrict({"e0_1": ["nor_conv_3x3"], "e1_3": ["skip_connect", "avg_pool_3x3"]})
    assert small.size == 2 * 5**4
    for arch in small:
        text = small.encode(arch)
        assert text == space.encode(arch)
        assert small.decode(text) == arch == space.decode(text)


def test_sampling_stays_inside_and_covers_the_restriction(space: NB201Space) -> None:
    small = space.restrict([[0, 3], [2], [1, 4], [0, 1, 2], [3], [4]])
    rng = np.random.default_rng(1)
    seen = {small.sample(rng) for _ in range(1000)}
    assert all(small.contains(a) for a in seen)
    assert seen == set(small)  # 12 archs, 1000 draws: all of them
    assert small.size == 12


def test_restriction_of_a_restriction(space: NB201Space) -> None:
    small = space.restrict({"e0_1": ["none", "skip_connect", "nor_conv_3x3"]})
    smaller = small.restrict({"e0_1": ["none"]})
    assert smaller.size == 5**5
    with pytest.raises(ValueError, match="not in the current space"):
        smaller.restrict({"e0_1": ["skip_connect"]})


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        ({"e9_9": ["none"]}, r"unknown decisions \['e9_9'\]"),
        ({"e0_1": ["conv_7x7"]}, r"e0_1.*unknown options \['conv_7x7'\]"),
        ({"e0_1": []}, "no option left"),
        ([[0]] * 5, "5 entries given, .* has 6 decisions"),
        ([[5]] + [[0]] * 5, r"options \[5\] are not in the current space"),
    ],
)
def test_bad_restrictions_raise(space: NB201Space, allowed, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space.restrict(allowed)


def test_make_space_restricts_by_names() -> None:
    small = make_space("nb201", {"e0_2": ["nor_conv_1x1", "nor_conv_3x3"]})
    assert isinstance(small, NB201Space)
    assert small.size == 2 * 5**5
    with pytest.raises(ValueError, match="unknown space"):
        make_space("nb301")


def test_params_round_trip(space: NB201Space) -> None:
    arch = space.decode(INDEX0)
    params = space.to_params(arch)
    assert params["e0_1"] == "avg_pool_3x3"
    assert space.from_params(params) == arch
    with pytest.raises(ValueError, match="unknown option"):
        space.from_params({**params, "e0_1": "conv"})
