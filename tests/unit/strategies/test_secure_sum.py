"""Secure summation: the sum is exact (counts) or within 1e-5 (fixed point), one site's masked vector looks uniform
to the server, a site dropping after sharing keys is recovered from and recorded, and sites refuse misuse."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message
from scipy import stats

from fedsynth.errors import FedsynthError, ValidationError
from fedsynth.strategies import records
from fedsynth.strategies import secure_sum as ss
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.site import SiteRuntime, handle

N_SITES = 3


def _site_vectors(kind: str, site: SiteRuntime) -> dict[str, np.ndarray]:
    """A deterministic vector per site, from the site's seed (what a count table or a weight update would be)."""
    rng = np.random.default_rng(100 + site.seed)
    if kind == "counts":
        # Small counts, mostly zeros: the opposite of uniform, so the uniformity test has something to hide.
        return {"table_a": rng.poisson(0.7, size=(40, 50)).astype(np.int64), "table_b": rng.poisson(3.0, 2000)}
    return {
        "layer.weight": rng.normal(0.0, 0.5, size=(30, 40)).astype(np.float32),
        "layer.bias": rng.normal(0.0, 2.0, size=40),
    }


def _source(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    return _site_vectors(str(request["kind"]), site)


def _grid(**kwargs: Any) -> InProcessGrid:
    sites = [SiteRuntime(f"site-{i}", pd.DataFrame(), None, seed=i) for i in range(N_SITES)]  # type: ignore[arg-type]
    return InProcessGrid(sites, handlers=ss.site_handlers({"test.vectors": _source}), **kwargs)


def _plain_sum(grid: InProcessGrid, kind: str, nodes: Iterable[int]) -> dict[str, np.ndarray]:
    vectors = [_site_vectors(kind, grid.sites[n]) for n in nodes]
    return {k: sum(np.asarray(v[k], dtype=np.float64 if kind == "weights" else np.int64) for v in vectors) for k in vectors[0]}


class DroppingGrid(InProcessGrid):
    """An in-process grid on which one node stops answering from one stage on (its replies never arrive)."""

    def __init__(self, *args: Any, drop_nodes: set[int], from_stage: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop_nodes = drop_nodes
        self.from_stage = ss.STAGES.index(from_stage)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = super().send_and_receive(messages, timeout=timeout)
        return [
            r
            for r in replies
            if not (r.metadata.src_node_id in self.drop_nodes
                    and ss.STAGES.index(r.metadata.message_type) >= self.from_stage)
        ]


def test_secure_sum_of_counts_equals_plain_sum_exactly() -> None:
    # Setup
    grid = _grid()
    nodes = grid.get_node_ids()

    # Run
    for bits in (32, 64):
        got = ss.secure_sum(grid, nodes, {"kind": "counts"}, source="test.vectors", modulus_bits=bits)

        # Assert
        want = _plain_sum(grid, "counts", nodes)
        assert sorted(got.arrays) == sorted(want)
        for key in want:
            assert got.arrays[key].dtype == np.int64
            np.testing.assert_array_equal(got.arrays[key], want[key])
        assert got.included == sorted(nodes) and got.dropped == {}


def test_secure_sum_of_weights_within_fixed_point_error() -> None:
    # Setup
    grid = _grid()
    nodes = grid.get_node_ids()
    f = ss.DEFAULT_FRACTION_BITS

    # Run
    got = ss.secure_sum(grid, nodes, {"kind": "weights"}, source="test.vectors", fraction_bits=f)

    # Assert: each site rounds to the nearest 2**-f, so the sum is off by at most n_sites * 2**-(f+1)
    want = _plain_sum(grid, "weights", nodes)
    for key in want:
        assert got.arrays[key].shape == want[key].shape
        np.testing.assert_allclose(got.arrays[key], want[key], rtol=1e-5, atol=0)
        assert np.max(np.abs(got.arrays[key] - want[key])) <= N_SITES * 2.0 ** -(f + 1)


def test_negative_integers_sum_in_twos_complement() -> None:
    # Setup: hand-computed: (-5) + 7 + (-10) = -8 and 1 + 1 + 1 = 3
    values = {0: [-5, 1], 1: [7, 1], 2: [-10, 1]}
    sites = [SiteRuntime(f"s{i}", pd.DataFrame(), None, seed=i) for i in range(3)]  # type: ignore[arg-type]
    grid = InProcessGrid(
        sites, handlers=ss.site_handlers({"fixed": lambda req, site: {"v": np.array(values[site.seed])}})
    )

    # Run
    got = ss.secure_sum(grid, grid.get_node_ids(), {}, source="fixed", modulus_bits=16)

    # Assert
    np.testing.assert_array_equal(got.arrays["v"], [-8, 3])


@pytest.fixture
def seeded_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key pairs and mask seeds from a seeded generator, so a statistical test sees one fixed draw (the protocol
    takes them from the operating system's randomness: a seeded mask would be a known mask)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    rng = np.random.default_rng(7)

    def key_pair() -> tuple[Any, Any]:
        sk = ec.derive_private_key(int(rng.integers(1, 2**62)), ec.SECP384R1())
        return sk, sk.public_key()

    from fedsynth.strategies import secagg_site  # where the sites draw their secrets

    monkeypatch.setattr(secagg_site, "generate_key_pairs", key_pair)
    monkeypatch.setattr(secagg_site, "os", SimpleNamespace(urandom=lambda n: rng.bytes(n)))


@pytest.mark.usefixtures("seeded_secrets")
def test_server_view_of_one_masked_vector_is_uniform() -> None:
    # Setup
    grid = _grid(keep_messages=True)
    nodes = grid.get_node_ids()
    bits = 32

    # Run
    got = ss.secure_sum(grid, nodes, {"kind": "counts"}, source="test.vectors", modulus_bits=bits)

    # Assert: what the server received from the first site (4,000 entries) is uniform on [0, 2**32) ...
    masked = [
        records.from_array_record(r.content["masked"])["vector"]
        for r in grid.received
        if r.metadata.message_type == ss.COLLECT and r.metadata.src_node_id == nodes[0]
    ]
    assert len(masked) == 1 and masked[0].size == 4000 and masked[0].dtype == np.uint32
    scaled = masked[0].astype(np.float64) / 2.0**bits
    assert stats.kstest(scaled, "uniform").pvalue > 0.01
    high_byte = (masked[0] >> 24).astype(np.int64)
    assert stats.chisquare(np.bincount(high_byte, minlength=256)).pvalue > 0.01
    # ... and the control, the same site's plain counts on the same scale, fails both tests.
    plain = np.concatenate([a.ravel() for _, a in sorted(_site_vectors("counts", grid.sites[nodes[0]]).items())])
    assert stats.kstest(plain.astype(np.float64) / 2.0**bits, "uniform").pvalue < 1e-6
    assert stats.chisquare(np.bincount(plain >> 24, minlength=256) + 1e-9).pvalue < 1e-6
    # Nothing else the server received carries the vector: setup and share stages send keys and ciphertexts only.
    kinds = {r.metadata.message_type: set(r.content.keys()) for r in grid.received}
    assert kinds == {ss.SETUP: {"keys"}, ss.SHARE_KEYS: {"shares"}, ss.COLLECT: {"masked", "layout"}, ss.UNMASK: {"shares"}}
    np.testing.assert_array_equal(got.arrays["table_b"], _plain_sum(grid, "counts", nodes)["table_b"])


@pytest.mark.parametrize("kind", ["counts", "weights"])
def test_site_dropping_after_sharing_keys_is_recovered_and_recorded(kind: str) -> None:
    # Setup: the last site shares its keys, then never sends its masked vector
    base = _grid()
    nodes = base.get_node_ids()
    grid = DroppingGrid(list(base.sites.values()), handlers=base.handlers, drop_nodes={nodes[-1]}, from_stage=ss.COLLECT)
    f = ss.DEFAULT_FRACTION_BITS if kind == "weights" else None

    # Run
    got = ss.secure_sum(grid, nodes, {"kind": kind}, source="test.vectors", fraction_bits=f, threshold=2)

    # Assert: the sum of the two remaining sites, and the dropout named with its stage
    want = _plain_sum(grid, kind, nodes[:-1])
    for key in want:
        if kind == "counts":
            np.testing.assert_array_equal(got.arrays[key], want[key])
        else:
            np.testing.assert_allclose(got.arrays[key], want[key], rtol=1e-5, atol=0)
    assert got.included == sorted(nodes[:-1])
    assert list(got.dropped) == [nodes[-1]] and got.dropped[nodes[-1]].startswith("collect")


def test_site_dropping_at_setup_is_left_out() -> None:
    # Setup
    base = _grid()
    nodes = base.get_node_ids()
    grid = DroppingGrid(list(base.sites.values()), handlers=base.handlers, drop_nodes={nodes[0]}, from_stage=ss.SETUP)

    # Run
    got = ss.secure_sum(grid, nodes, {"kind": "counts"}, source="test.vectors", threshold=2)

    # Assert
    want = _plain_sum(grid, "counts", nodes[1:])
    for key in want:
        np.testing.assert_array_equal(got.arrays[key], want[key])
    assert got.dropped.keys() == {nodes[0]} and got.dropped[nodes[0]].startswith("setup")


def test_too_many_dropouts_fail_without_revealing_a_vector() -> None:
    # Setup: two of three sites drop after sharing keys; the threshold is 2
    base = _grid()
    nodes = base.get_node_ids()
    grid = DroppingGrid(
        list(base.sites.values()), handlers=base.handlers, drop_nodes={nodes[0], nodes[1]}, from_stage=ss.COLLECT,
        keep_messages=True,
    )

    # Run / Assert
    with pytest.raises(FedsynthError, match="only 1 sites answered collect; the threshold is 2"):
        ss.secure_sum(grid, nodes, {"kind": "counts"}, source="test.vectors", threshold=2)
    assert not [m for m in grid.sent if m.metadata.message_type == ss.UNMASK]


def test_settings_problems_are_listed_at_once() -> None:
    # Setup
    grid = _grid()

    # Run / Assert
    with pytest.raises(ValidationError) as err:
        ss.secure_sum(grid, grid.get_node_ids(), {}, source="test.vectors", threshold=5, modulus_bits=70,
                      fraction_bits=61)
    text = str(err.value)
    assert "threshold" in text and "modulus_bits" in text and "fraction_bits" in text
    with pytest.raises(ValidationError, match="n_sites \\* clipping_range"):
        ss.secure_sum(grid, grid.get_node_ids(), {}, source="test.vectors", modulus_bits=32, fraction_bits=30)
    with pytest.raises(ValidationError, match="sites"):
        ss.secure_sum(grid, [grid.get_node_ids()[0]], {}, source="test.vectors")


def _run_to_unmask(grid: InProcessGrid) -> tuple[str, list[int]]:
    """Stages 0-2 by hand (as the server would), so a test can send its own unmask request."""
    nodes = grid.get_node_ids()
    session = "s1"
    setup = {"stage": "setup", "node_ids": nodes, "threshold": 2, "modulus_bits": 32, "fraction_bits": -1,
             "clipping_range": 1.0}
    keys = {}
    for n in nodes:
        reply = handle(ss.handle_setup, Message(ss._config(session, **setup), dst_node_id=n,
                                                 message_type=ss.SETUP), grid.sites[n])
        keys[n] = records.from_config_record(reply.content["keys"])
    share = ss._config(session, stage="share_keys", node_ids=nodes, pk1=[keys[n]["pk1"] for n in nodes],
                       pk2=[keys[n]["pk2"] for n in nodes])
    inbox: dict[int, tuple[list[int], list[bytes]]] = {n: ([], []) for n in nodes}
    for n in nodes:
        reply = handle(ss.handle_share_keys, Message(share, dst_node_id=n, message_type=ss.SHARE_KEYS), grid.sites[n])
        got = records.from_config_record(reply.content["shares"])
        for dst, ct in zip(got["dsts"], got["ciphertexts"], strict=True):
            inbox[int(dst)][0].append(n)
            inbox[int(dst)][1].append(ct)
    collect = grid.handlers[ss.COLLECT]
    for n in nodes:
        content = ss._config(session, stage="collect", srcs=inbox[n][0], ciphertexts=inbox[n][1], source="test.vectors")
        content["request"] = records.to_config_record({"kind": "counts"})
        reply = handle(collect, Message(content, dst_node_id=n, message_type=ss.COLLECT), grid.sites[n])
        assert not reply.has_error()
    return session, nodes


@pytest.mark.parametrize(
    ("active", "dead"),
    [([0], []), ([0, 1], [1]), ([0, 1], [2, 0])],
    ids=["fewer-than-threshold", "both-active-and-dead", "itself-dead"],
)
def test_site_refuses_an_unmask_that_would_reveal_a_vector(active: list[int], dead: list[int]) -> None:
    # Setup
    grid = _grid()
    session, nodes = _run_to_unmask(grid)
    content = ss._config(session, stage="unmask", active=[nodes[i] for i in active], dead=[nodes[i] for i in dead])

    # Run
    reply = handle(ss.handle_unmask, Message(content, dst_node_id=nodes[0], message_type=ss.UNMASK), grid.sites[nodes[0]])

    # Assert: an error reply, and no share left the site
    assert reply.has_error() and "no shares are released" in str(reply.error.reason)


def test_site_refuses_stages_out_of_order() -> None:
    # Setup
    grid = _grid()
    node = grid.get_node_ids()[0]
    content = ss._config("nope", stage="unmask", active=[1, 2], dead=[])

    # Run
    reply = handle(ss.handle_unmask, Message(content, dst_node_id=node, message_type=ss.UNMASK), grid.sites[node])

    # Assert
    assert reply.has_error()


def test_prg_mask_is_deterministic_per_seed_and_reduced_modulo() -> None:
    # Setup
    seed_a, seed_b = bytes(range(32)), bytes(range(1, 33))

    # Run
    a1, a2, b = ss.prg_mask(seed_a, 1000, 20), ss.prg_mask(seed_a, 1000, 20), ss.prg_mask(seed_b, 1000, 20)

    # Assert
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, b)
    assert int(a1.max()) < 2**20


def test_encode_decode_round_trip() -> None:
    # Setup
    arrays = {"b": np.array([[1.25, -3.5]]), "a": np.array(2.0)}

    # Run
    names, dims, words = ss.encode_vector(arrays, modulus_bits=64, fraction_bits=8, clipping_range=10.0)
    back = ss.decode_vector(words, names, dims, modulus_bits=64, fraction_bits=8)

    # Assert: shapes (also 0-d) and exact values on the 2**-8 grid
    assert names == ["a", "b"] and dims == [0, 2, 1, 2]
    assert back["a"].shape == () and float(back["a"]) == 2.0
    np.testing.assert_array_equal(back["b"], [[1.25, -3.5]])


def test_integer_sum_refuses_float_vectors() -> None:
    # Run / Assert
    with pytest.raises(TypeError, match="integer arrays"):
        ss.encode_vector({"w": np.array([0.5])}, modulus_bits=32, fraction_bits=None, clipping_range=1.0)


def test_every_site_answers_the_protocol_stages() -> None:
    # Setup / Run
    from fedsynth.strategies.site import all_site_handlers

    handlers = all_site_handlers()

    # Assert
    assert set(ss.STAGES) <= set(handlers)
