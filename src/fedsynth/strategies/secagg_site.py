"""The site side of secure summation: the four stage handlers (key pairs, encrypted shares, masked vector,
unmasking shares) a site runs, with the protocol's state kept in the site's ``state`` between messages.

See :mod:`fedsynth.strategies.secure_sum` for the protocol and its trust model; every name here is also importable
from there.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from flwr.app import Message, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

from fedsynth.errors import FedsynthError, ValidationError
from fedsynth.strategies import records
from fedsynth.strategies.secagg_protocol import (
    COLLECT,
    SETUP,
    SHARE_KEYS,
    STATE_KEY,
    UNMASK,
    VECTOR_SOURCES,
    VectorSource,
    encode_vector,
    mod_mask,
    pairwise_mask,
    prg_mask,
    settings_problems,
    verified_noise_request,
    word_dtype,
)
from fedsynth.strategies.site import SiteHandler, SiteRuntime, message_config

log = logging.getLogger(__name__)


def _load_state(site: SiteRuntime, session: str, expected: str) -> dict[str, Any]:
    if STATE_KEY not in site.state:
        raise FedsynthError(f"secure sum: no session at this site for stage {expected}")
    state = records.from_config_record(site.state[STATE_KEY])
    if state["session"] != session:
        raise FedsynthError(f"secure sum: stage {expected} is for another session than this site's")
    if state["stage"] != expected:
        raise FedsynthError(f"secure sum: stage {expected} arrived after stage {state['stage']}")
    return state


def _save_state(site: SiteRuntime, state: Mapping[str, Any]) -> None:
    site.state[STATE_KEY] = records.to_config_record(state)


def handle_setup(msg: Message, site: SiteRuntime) -> RecordDict:
    """Stage 0: fresh key pairs for this session (any earlier session at this site is dropped)."""
    cfg = message_config(msg)
    nid = int(msg.metadata.dst_node_id)
    nodes = [int(n) for n in cfg["node_ids"]]
    if nid not in nodes:
        raise FedsynthError("secure sum: this site is not among the session's sites")
    threshold = int(cfg["threshold"])
    fraction_bits = int(cfg["fraction_bits"])
    problems = settings_problems(
        len(nodes), threshold=threshold, modulus_bits=int(cfg["modulus_bits"]),
        fraction_bits=None if fraction_bits < 0 else fraction_bits, clipping_range=float(cfg["clipping_range"]),
    )
    if problems:
        raise ValidationError("Settings of the secure sum", problems)
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    state = {
        "session": str(cfg["session"]), "stage": "share_keys", "nid": nid, "threshold": threshold,
        "modulus_bits": int(cfg["modulus_bits"]), "fraction_bits": fraction_bits,
        "clipping_range": float(cfg["clipping_range"]),
        "sk1": private_key_to_bytes(sk1), "pk1": public_key_to_bytes(pk1),
        "sk2": private_key_to_bytes(sk2), "pk2": public_key_to_bytes(pk2),
    }
    _save_state(site, state)
    return RecordDict({"keys": records.to_config_record({"pk1": state["pk1"], "pk2": state["pk2"]})})


def handle_share_keys(msg: Message, site: SiteRuntime) -> RecordDict:
    """Stage 1: self-mask seed, Shamir shares of it and of ``sk1``, each encrypted for the site it goes to."""
    cfg = message_config(msg)
    state = _load_state(site, str(cfg["session"]), "share_keys")
    nid = int(state["nid"])
    nodes = [int(n) for n in cfg["node_ids"]]
    pk1s, pk2s = [bytes(k) for k in cfg["pk1"]], [bytes(k) for k in cfg["pk2"]]
    if len(nodes) < int(state["threshold"]):
        raise FedsynthError("secure sum: fewer sites than the threshold")
    if len(set(pk1s + pk2s)) != 2 * len(nodes):
        raise FedsynthError("secure sum: some public keys are identical")
    if nid not in nodes or pk1s[nodes.index(nid)] != state["pk1"] or pk2s[nodes.index(nid)] != state["pk2"]:
        raise FedsynthError("secure sum: this site's own public keys were relayed wrongly")
    seed = os.urandom(32)
    b_shares = create_shares(seed, int(state["threshold"]), len(nodes))
    sk1_shares = create_shares(bytes(state["sk1"]), int(state["threshold"]), len(nodes))
    dsts: list[int] = []
    ciphertexts: list[bytes] = []
    for i, node in enumerate(nodes):
        if node == nid:
            own_b, own_sk1 = b_shares[i], sk1_shares[i]
            continue
        key = generate_shared_key(bytes_to_private_key(bytes(state["sk2"])), bytes_to_public_key(pk2s[i]))
        ciphertexts.append(encrypt(key, share_keys_plaintext_concat(nid, node, b_shares[i], sk1_shares[i])))
        dsts.append(node)
    state.update(
        stage="collect", seed=seed, node_ids=nodes, pk1s=pk1s, pk2s=pk2s,
        share_owners=[nid], b_shares=[own_b], sk1_shares=[own_sk1],
    )
    _save_state(site, state)
    return RecordDict({"shares": records.to_config_record({"dsts": dsts, "ciphertexts": ciphertexts})})


def _make_collect(sources: Mapping[str, VectorSource | str]) -> SiteHandler:
    def handle_collect(msg: Message, site: SiteRuntime) -> RecordDict:
        """Stage 2: store the shares sent to this site, mask the site's vector and return it."""
        cfg = message_config(msg)
        state = _load_state(site, str(cfg["session"]), "collect")
        nid, k = int(state["nid"]), int(state["modulus_bits"])
        nodes, pk1s, pk2s = list(state["node_ids"]), list(state["pk1s"]), list(state["pk2s"])
        srcs = [int(s) for s in cfg.get("srcs", [])]
        if len(srcs) + 1 < int(state["threshold"]):
            raise FedsynthError("secure sum: fewer sites than the threshold shared keys")
        owners, b_shares, sk1_shares = list(state["share_owners"]), list(state["b_shares"]), list(state["sk1_shares"])
        for src, ct in zip(srcs, cfg.get("ciphertexts", []), strict=True):
            if src not in nodes or src == nid:
                raise FedsynthError("secure sum: shares relayed from a site outside the session")
            key = generate_shared_key(
                bytes_to_private_key(bytes(state["sk2"])), bytes_to_public_key(pk2s[nodes.index(src)])
            )
            actual_src, dst, b_share, sk1_share = share_keys_plaintext_separate(decrypt(key, bytes(ct)))
            if actual_src != src or dst != nid:
                raise FedsynthError("secure sum: relayed shares name another sender or receiver")
            owners.append(src)
            b_shares.append(b_share)
            sk1_shares.append(sk1_share)
        name = str(cfg["source"])
        if name not in sources:
            raise FedsynthError(f"secure sum: this site has no vector source named {name!r}")
        fn = _resolve(sources[name])
        request = records.from_config_record(msg.content["request"]) if "request" in msg.content else {}
        # Under a budget the site checks the noise split against its own session before anything is computed:
        # any sum it helps unmask must carry the accounted sigma^2 (one check for every vector source).
        request = verified_noise_request(request, threshold=int(state["threshold"]), n_sites=len(nodes))
        fraction_bits = int(state["fraction_bits"])
        names, dims, words = encode_vector(
            fn(request, site), modulus_bits=k, fraction_bits=None if fraction_bits < 0 else fraction_bits,
            clipping_range=float(state["clipping_range"]),
        )
        words = words + prg_mask(bytes(state["seed"]), words.size, k)
        for src in srcs:
            mask = pairwise_mask(bytes(state["sk1"]), pk1s[nodes.index(src)], words.size, k)
            words = words + mask if nid > src else words - mask
        words &= mod_mask(k)
        # The seed stays in the state: the server may need its shares, never the seed itself.
        state.update(stage="unmask", share_owners=owners, b_shares=b_shares, sk1_shares=sk1_shares, neighbours=srcs)
        _save_state(site, state)
        return RecordDict(
            {
                "masked": records.to_array_record({"vector": words.astype(word_dtype(k))}),
                "layout": records.to_config_record({"names": names, "dims": dims}),
            }
        )

    return handle_collect


def handle_unmask(msg: Message, site: SiteRuntime) -> RecordDict:
    """Stage 3: shares of ``b`` for active sites and of ``sk1`` for dead ones, never both for one site."""
    cfg = message_config(msg)
    state = _load_state(site, str(cfg["session"]), "unmask")
    nid = int(state["nid"])
    active = [int(n) for n in cfg.get("active", [])]
    dead = [int(n) for n in cfg.get("dead", [])]
    owners = [int(n) for n in state["share_owners"]]
    if len(active) < int(state["threshold"]):
        raise FedsynthError("secure sum: fewer active sites than the threshold; no shares are released")
    if set(active) & set(dead) or nid in dead or nid not in active:
        raise FedsynthError("secure sum: a site is named both active and dead; no shares are released")
    if not set(active) | set(dead) <= set(owners):
        raise FedsynthError("secure sum: shares asked for sites that did not share keys with this site")
    b_shares, sk1_shares = list(state["b_shares"]), list(state["sk1_shares"])
    out_nodes = active + dead
    out_shares = [b_shares[owners.index(n)] for n in active] + [sk1_shares[owners.index(n)] for n in dead]
    del site.state[STATE_KEY]  # one unmask per session: a second request finds nothing
    return RecordDict({"shares": records.to_config_record({"node_ids": out_nodes, "shares": out_shares})})


def _resolve(source: VectorSource | str) -> VectorSource:
    if callable(source):
        return source
    module, _, attr = source.partition(":")
    fn: VectorSource = getattr(importlib.import_module(module), attr)
    return fn


def site_handlers(extra_sources: Mapping[str, VectorSource] | None = None) -> dict[str, SiteHandler]:
    """The four stage handlers a site runs, knowing :data:`VECTOR_SOURCES` plus ``extra_sources``."""
    sources: dict[str, VectorSource | str] = {**VECTOR_SOURCES, **dict(extra_sources or {})}
    return {SETUP: handle_setup, SHARE_KEYS: handle_share_keys, COLLECT: _make_collect(sources), UNMASK: handle_unmask}


#: The protocol's site handlers with the built-in vector sources.
SITE_HANDLERS: dict[str, SiteHandler] = site_handlers()
