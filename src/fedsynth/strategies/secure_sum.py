"""Secure summation (SecAgg+ stages) over Flower's message API: the server learns the sum over sites, never one site's vector.

Flower 1.41's SecAgg+ (``flwr.server.workflow.SecAggPlusWorkflow`` with ``secaggplus_mod``) only works through its
legacy strategy API, which fedsynth does not use, so its stages are rebuilt here as four ``grid.send_and_receive``
rounds with custom message types, from Flower's own primitives (``flwr.supercore.primitives.asymmetric``: ECDH key
pairs on SECP384R1; ``flwr.common.secure_aggregation.crypto``: HKDF shared keys, Fernet encryption, Shamir shares;
``secaggplus_utils``: the share plaintext layout) and the ``cryptography`` package:

0. ``query.secagg_setup``       each site makes two fresh key pairs (``sk1/pk1`` for pairwise masks, ``sk2/pk2`` to
   encrypt shares) and returns the public keys;
1. ``query.secagg_share_keys``  the server broadcasts every public key; each site draws its self-mask seed ``b``,
   splits ``b`` and ``sk1`` into Shamir shares (``threshold`` of them reconstruct), and returns one share pair per
   other site, encrypted with the key it agrees with that site (the server relays ciphertexts it cannot read);
2. ``query.secagg_collect``     the server relays the ciphertexts; each site stores its shares, computes its vector
   (a *vector source*: a named callback over the request and its own rows), encodes it as integers modulo
   ``2**modulus_bits`` (counts as they are, floats in fixed point), adds ``PRG(b)`` and, for every other site
   ``v``, ``+PRG(s_uv)`` or ``-PRG(s_uv)`` (sign by node id, so each pair cancels in the sum), and returns it;
3. ``query.secagg_unmask``      the server names the sites whose masked vectors arrived (active) and those that
   dropped after sharing keys (dead); each site returns its share of ``b`` for every active site and of ``sk1`` for
   every dead one, never both for one site. The server rebuilds those secrets from ``threshold`` shares, removes
   the self masks of the active sites and the dead sites' pairwise masks, and decodes the sum.

Every site masks against every other site (SecAgg+ with its neighbour graph complete, i.e. SecAgg: a federation
of hospitals has few sites). Trust model (DESIGN.md §6): an honest-but-curious coordinator that follows the
protocol sees public keys, ciphertexts it cannot decrypt, masked vectors that are uniform modulo ``2**k``, and the
sum; it can rebuild a site's self mask only when that site's masked vector arrived, and a dropped site's pairwise
key only when its vector did not. A sum over two sites tells each of them the other's vector if they see the sum.

Differences from Flower's code, and why: masks come from ChaCha20 (``cryptography``) keyed with the full 32-byte
seed, not ``pseudo_rand_gen`` (it folds the seed to 32 bits for ``numpy.random.RandomState``: a curious server
could search 2**32 seeds, and its ``randint(0, range - 1)`` never draws the top value); floats are rounded to
nearest in fixed point, not Flower's stochastic ``quantize`` (unseeded global randomness and int32, too coarse for
1e-5 relative). Secrets (key pairs, ``b``) come from the operating system's randomness on purpose: a seeded mask
would be a known mask. The sum itself is deterministic.
"""

from __future__ import annotations

import base64
import importlib
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from flwr.app import Message, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
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

from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.strategies import records
from fedsynth.strategies.site import SiteHandler, SiteRuntime, message_config

log = logging.getLogger(__name__)

SETUP = "query.secagg_setup"
SHARE_KEYS = "query.secagg_share_keys"
COLLECT = "query.secagg_collect"
UNMASK = "query.secagg_unmask"
#: The protocol's message types, in the order they are sent.
STAGES = (SETUP, SHARE_KEYS, COLLECT, UNMASK)

#: Key of the protocol's state in a site's ``state`` (Flower's ``context.state``: a message may run in a fresh process).
STATE_KEY = "secagg"

#: Fixed-point defaults for float vectors: values clipped to +-2**10, rounded to 2**-40 (about 9e-13).
DEFAULT_CLIPPING_RANGE = 1024.0
DEFAULT_FRACTION_BITS = 40

#: A vector source: (request settings, the site) -> named arrays. Integer arrays for an integer sum, float
#: arrays for a fixed-point sum; every site must return the same names and shapes for the same request.
VectorSource = Callable[[Mapping[str, Any], SiteRuntime], Mapping[str, np.ndarray]]

#: Vector sources every site knows, by name -> ``"module:function"`` (imported on use).
VECTOR_SOURCES: dict[str, str] = {
    "two_step_bn.counts": "fedsynth.strategies.two_step_bn:count_vectors",
}


class GridLike(Protocol):
    """The part of ``flwr.serverapp.Grid`` the protocol uses."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]: ...


@dataclass
class SecureSumResult:
    """What the server learns from one secure sum.

    Attributes
    ----------
    arrays : dict of str to ndarray
        The sum over the included sites of each named array: ``int64`` for an integer sum, ``float64`` for a
        fixed-point one.
    included : list of int
        Node ids whose vectors are in the sum.
    dropped : dict of int to str
        Node ids left out, with the stage at which they dropped and the (scrubbed) reason.
    """

    arrays: dict[str, np.ndarray]
    included: list[int]
    dropped: dict[int, str] = field(default_factory=dict)


# -- encoding: integers modulo 2**k ---------------------------------------------------------------------------


def _word_dtype(modulus_bits: int) -> np.dtype[Any]:
    return np.dtype(np.uint32 if modulus_bits <= 32 else np.uint64)


def _mod_mask(modulus_bits: int) -> np.uint64:
    return np.uint64((1 << modulus_bits) - 1)


def prg_mask(seed: bytes, size: int, modulus_bits: int) -> np.ndarray:
    """``size`` pseudo-random words uniform modulo ``2**modulus_bits``, from a 32-byte seed.

    The ChaCha20 keystream (``cryptography``) under ``seed`` with a zero nonce, read as little-endian ``uint64``
    and reduced modulo ``2**modulus_bits`` (a power of two, so exactly uniform). Each seed masks one vector of one
    session only (fresh keys every session), which is what makes the fixed nonce safe.
    """
    if len(seed) != 32:
        raise ValueError(f"a mask seed has 32 bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(encryptor.update(bytes(8 * size)), dtype="<u8").astype(np.uint64)
    return words & _mod_mask(modulus_bits)


def encode_vector(
    arrays: Mapping[str, np.ndarray],
    *,
    modulus_bits: int,
    fraction_bits: int | None,
    clipping_range: float,
) -> tuple[list[str], list[int], np.ndarray]:
    """Named arrays -> (sorted names, their dims as ``ndim, *shape`` per array, one flat ``uint64`` vector mod 2**k).

    Integers (``fraction_bits`` None) are taken as they are, in two's complement, and must lie in
    ``[-2**(k-1), 2**(k-1))``; floats are clipped to ``[-clipping_range, clipping_range]`` and rounded to the
    nearest multiple of ``2**-fraction_bits``.

    Raises
    ------
    TypeError
        Float arrays for an integer sum, or non-numeric arrays.
    ValueError
        Non-finite floats, or integers outside the modulus' signed range.
    """
    names = sorted(arrays)
    dims: list[int] = []
    parts: list[np.ndarray] = []
    half = 1 << (modulus_bits - 1)
    for name in names:
        a = np.asarray(arrays[name])
        dims.extend([a.ndim, *a.shape])
        if fraction_bits is None:
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
                raise TypeError("an integer secure sum needs integer arrays from the vector source")
            ints = a.astype(np.int64).ravel()
            if ints.size and (int(ints.min()) < -half or int(ints.max()) >= half):
                raise ValueError(f"integers must lie in [-2**{modulus_bits - 1}, 2**{modulus_bits - 1})")
        else:
            if not np.issubdtype(a.dtype, np.number):
                raise TypeError("a fixed-point secure sum needs numeric arrays from the vector source")
            f = a.astype(np.float64).ravel()
            if not np.isfinite(f).all():
                raise ValueError("a fixed-point secure sum got non-finite values")
            f = np.clip(f, -clipping_range, clipping_range)
            ints = np.rint(f * float(2**fraction_bits)).astype(np.int64)
        parts.append(ints)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return names, dims, flat.view(np.uint64) & _mod_mask(modulus_bits)


def decode_vector(
    words: np.ndarray, names: Sequence[str], dims: Sequence[int], *, modulus_bits: int, fraction_bits: int | None
) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_vector` for a sum: words mod 2**k -> signed integers (or fixed point) by name."""
    u = np.asarray(words, dtype=np.uint64) & _mod_mask(modulus_bits)
    if modulus_bits == 64:
        signed = u.view(np.int64)
    else:
        s = u.astype(np.int64)
        signed = np.where(s >= (1 << (modulus_bits - 1)), s - (1 << modulus_bits), s)
    out: dict[str, np.ndarray] = {}
    d = c = 0
    for name in names:
        ndim = int(dims[d])
        shape = tuple(int(x) for x in dims[d + 1 : d + 1 + ndim])
        size = math.prod(shape)
        part = signed[c : c + size].reshape(shape)
        out[name] = part.astype(np.int64) if fraction_bits is None else part.astype(np.float64) / float(2**fraction_bits)
        d += 1 + ndim
        c += size
    if d != len(dims) or c != len(signed):
        raise ValueError("a masked vector's shapes do not match its length")
    return out


def _seed_of(shared_key: bytes) -> bytes:
    # generate_shared_key returns the HKDF output base64-encoded (a Fernet key); the mask seed is the raw 32 bytes.
    return base64.urlsafe_b64decode(shared_key)


def _pairwise_mask(sk1: bytes, pk1_other: bytes, size: int, modulus_bits: int) -> np.ndarray:
    shared = generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(pk1_other))
    return prg_mask(_seed_of(shared), size, modulus_bits)


# -- server side ---------------------------------------------------------------------------------------------


def settings_problems(
    n_sites: int, *, threshold: int, modulus_bits: int, fraction_bits: int | None, clipping_range: float
) -> list[Problem]:
    """Every problem of a secure sum's settings (empty when they are valid)."""
    problems: list[Problem] = []
    if n_sites < 2:
        problems.append(Problem("sites", f"got {n_sites}", "at least 2 (a sum over one site is that site's vector)"))
    if not 2 <= threshold <= max(n_sites, 2):
        problems.append(Problem("threshold", f"got {threshold}", f"an int in [2, {max(n_sites, 2)}] (the number of sites)"))
    if not 8 <= modulus_bits <= 64:
        problems.append(Problem("modulus_bits", f"got {modulus_bits}", "an int in [8, 64]"))
    if fraction_bits is not None:
        if not 0 <= fraction_bits <= 60:
            problems.append(Problem("fraction_bits", f"got {fraction_bits}", "an int in [0, 60]"))
        if not (math.isfinite(clipping_range) and clipping_range > 0):
            problems.append(Problem("clipping_range", f"got {clipping_range}", "a positive finite float"))
        elif 8 <= modulus_bits <= 64 and 0 <= fraction_bits <= 60:
            largest = n_sites * clipping_range * 2.0**fraction_bits
            if largest >= 2.0 ** (modulus_bits - 1):
                problems.append(
                    Problem(
                        "modulus_bits",
                        f"{modulus_bits} bits cannot hold {n_sites} sites x clipping_range {clipping_range} "
                        f"x 2**{fraction_bits}",
                        "n_sites * clipping_range * 2**fraction_bits < 2**(modulus_bits - 1)",
                        "raise modulus_bits or lower fraction_bits or clipping_range",
                    )
                )
    return problems


def default_threshold(n_sites: int) -> int:
    """Shares needed to rebuild a secret: a majority of the sites, at least 2."""
    return max(2, n_sites // 2 + 1)


class _Exchange:
    """One stage: send one message per node, split the replies into good contents and scrubbed failures."""

    def __init__(self, grid: GridLike, session: str, timeout: float | None) -> None:
        self.grid = grid
        self.session = session
        self.timeout = timeout

    def __call__(self, message_type: str, contents: Mapping[int, RecordDict]) -> tuple[dict[int, RecordDict], dict[int, str]]:
        msgs = [
            Message(content, dst_node_id=node, message_type=message_type, group_id=f"secagg-{self.session}")
            for node, content in contents.items()
        ]
        replies = list(self.grid.send_and_receive(msgs, timeout=self.timeout))
        ok: dict[int, RecordDict] = {}
        failed: dict[int, str] = {}
        for r in replies:
            node = int(r.metadata.src_node_id)
            if node not in contents:
                continue
            if r.has_error():
                failed[node] = records.scrub_text(r.error.reason or f"error code {r.error.code}")
            else:
                ok[node] = r.content
        for node in contents:
            if node not in ok and node not in failed:
                failed[node] = "no reply"
        return ok, failed


def _config(session: str, **settings: Any) -> RecordDict:
    return RecordDict({"config": records.to_config_record({"session": session, **settings})})


def secure_sum(
    grid: GridLike,
    node_ids: Sequence[int],
    request: Mapping[str, Any],
    *,
    source: str,
    threshold: int | None = None,
    modulus_bits: int = 64,
    fraction_bits: int | None = None,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    timeout: float | None = None,
) -> SecureSumResult:
    """Sum one vector per site so that the server learns the sum only (SecAgg+ stages over ``grid``).

    Parameters
    ----------
    grid : GridLike
        Flower grid (or :class:`~fedsynth.strategies.in_process.InProcessGrid`) whose sites answer the
        ``query.secagg_*`` messages (:data:`SITE_HANDLERS`).
    node_ids : sequence of int
        The sites taking part.
    request : mapping
        Flat settings handed to the vector source at each site (they travel as a ``ConfigRecord``).
    source : str
        Name of the vector source the sites run (:data:`VECTOR_SOURCES`, or one given to :func:`site_handlers`).
    threshold : int, optional
        Shares that rebuild a site's secrets, and the fewest sites that must remain at every stage; default
        :func:`default_threshold` (a majority, at least 2).
    modulus_bits : int
        ``k``: sums are computed modulo ``2**k`` and decoded as signed integers in ``[-2**(k-1), 2**(k-1))``.
        Integer sums are exact while the true sum's magnitude stays under ``2**(k-1)``; masked vectors travel as
        ``uint32`` when ``k <= 32``, else ``uint64``.
    fraction_bits : int, optional
        ``None`` for an integer sum; otherwise floats travel in fixed point with this many fractional bits (each
        site's rounding error is at most ``2**-(fraction_bits+1)`` per entry). Use e.g.
        :data:`DEFAULT_FRACTION_BITS` with ``modulus_bits=64``.
    clipping_range : float
        Fixed point only: each site's values are clipped to ``[-clipping_range, clipping_range]``.
    timeout : float, optional
        Seconds each stage waits for replies; a site that does not answer is dropped.

    Returns
    -------
    SecureSumResult
        The summed arrays, the sites in the sum and those dropped (with the stage).

    Raises
    ------
    ValidationError
        Every problem of the settings at once.
    FedsynthError
        Fewer than ``threshold`` sites remain at some stage, the sites' vectors differ in shape, or too few
        shares came back to unmask.

    Notes
    -----
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017; Bell et
    al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020 (SecAgg+); Flower's
    ``SecAggPlusWorkflow`` and ``secaggplus_mod``.
    """
    nodes = sorted({int(n) for n in node_ids})
    t = default_threshold(len(nodes)) if threshold is None else int(threshold)
    problems = settings_problems(
        len(nodes), threshold=t, modulus_bits=modulus_bits, fraction_bits=fraction_bits, clipping_range=clipping_range
    )
    if problems:
        raise ValidationError("Settings of the secure sum", problems)
    session = uuid.uuid4().hex
    exchange = _Exchange(grid, session, timeout)
    dropped: dict[int, str] = {}

    def keep(stage: str, ok: Mapping[int, RecordDict], failed: Mapping[int, str]) -> list[int]:
        for node, reason in failed.items():
            dropped[node] = f"{stage}: {reason}"
            log.warning("secure sum %s: node %d dropped at %s: %s", session[:8], node, stage, reason)
        if len(ok) < t:
            raise FedsynthError(
                f"secure sum: only {len(ok)} sites answered {stage}; the threshold is {t} "
                f"(dropped: {len(dropped)})"
            )
        return sorted(ok)

    # Stage 0: key pairs.
    setup = {
        "stage": "setup",
        "node_ids": nodes,
        "threshold": t,
        "modulus_bits": modulus_bits,
        "fraction_bits": -1 if fraction_bits is None else fraction_bits,
        "clipping_range": float(clipping_range),
    }
    ok, failed = exchange(SETUP, {n: _config(session, **setup) for n in nodes})
    u0 = keep("setup", ok, failed)
    keys = {n: records.from_config_record(ok[n]["keys"]) for n in u0}
    pk1 = {n: bytes(keys[n]["pk1"]) for n in u0}

    # Stage 1: public keys out, encrypted shares back.
    broadcast = _config(session, stage="share_keys", node_ids=u0, pk1=[pk1[n] for n in u0],
                        pk2=[bytes(keys[n]["pk2"]) for n in u0])
    ok, failed = exchange(SHARE_KEYS, {n: broadcast for n in u0})
    u1 = keep("share_keys", ok, failed)
    inbox: dict[int, tuple[list[int], list[bytes]]] = {n: ([], []) for n in u1}
    for src in u1:
        shared = records.from_config_record(ok[src]["shares"])
        for dst, ct in zip(shared["dsts"], shared["ciphertexts"], strict=True):
            if int(dst) in inbox:
                inbox[int(dst)][0].append(src)
                inbox[int(dst)][1].append(bytes(ct))

    # Stage 2: relayed shares in, masked vectors back.
    contents = {}
    for n in u1:
        content = _config(session, stage="collect", srcs=inbox[n][0], ciphertexts=inbox[n][1], source=source)
        content["request"] = records.to_config_record(dict(request))
        contents[n] = content
    ok, failed = exchange(COLLECT, contents)
    u2 = keep("collect", ok, failed)
    layouts = {n: records.from_config_record(ok[n]["layout"]) for n in u2}
    names, dims = list(layouts[u2[0]]["names"]), [int(d) for d in layouts[u2[0]]["dims"]]
    if any(list(lay["names"]) != names or [int(d) for d in lay["dims"]] != dims for lay in layouts.values()):
        raise FedsynthError("secure sum: the sites' vectors differ in names or shapes (same request, same domain?)")
    total = np.zeros(sum(math.prod(dims[i + 1 : i + 1 + dims[i]]) for i in _array_starts(dims)), dtype=np.uint64)
    for n in u2:
        masked = records.from_array_record(ok[n]["masked"])["vector"].astype(np.uint64)
        if masked.shape != total.shape:
            raise FedsynthError("secure sum: a masked vector's length does not match its layout")
        total += masked  # uint64 arithmetic wraps modulo 2**64, a multiple of 2**k

    # Stage 3: shares of the active sites' self-mask seeds and of the dead sites' mask keys.
    dead = [n for n in u1 if n not in u2]
    unmask = _config(session, stage="unmask", active=u2, dead=dead)
    ok, failed = exchange(UNMASK, {n: unmask for n in u2})
    if len(ok) < t:
        raise FedsynthError(f"secure sum: only {len(ok)} sites answered unmask; the threshold is {t}")
    for node, reason in failed.items():
        log.warning("secure sum %s: node %d did not answer unmask (%s); its vector stays in the sum", session[:8], node, reason)
    shares: dict[int, list[bytes]] = {n: [] for n in (*u2, *dead)}
    for reply in ok.values():
        got = records.from_config_record(reply["shares"])
        for owner, share in zip(got["node_ids"], got["shares"], strict=True):
            if int(owner) in shares:
                shares[int(owner)].append(bytes(share))
    for owner, owner_shares in shares.items():
        if len(owner_shares) < t:
            raise FedsynthError(f"secure sum: {len(owner_shares)} shares came back for a site; {t} are needed")
    size = int(total.size)
    for n in u2:
        total -= prg_mask(combine_shares(shares[n]), size, modulus_bits)
    for v in dead:
        sk1_v = combine_shares(shares[v])
        for u in u2:
            mask = _pairwise_mask(sk1_v, pk1[u], size, modulus_bits)
            # Site u added +mask when u > v and -mask otherwise; undo it.
            if u > v:
                total -= mask
            else:
                total += mask
    arrays = decode_vector(total, names, dims, modulus_bits=modulus_bits, fraction_bits=fraction_bits)
    log.info("secure sum %s: %d sites summed, %d dropped", session[:8], len(u2), len(dropped))
    return SecureSumResult(arrays, list(u2), dropped)


def _array_starts(dims: Sequence[int]) -> list[int]:
    starts, d = [], 0
    while d < len(dims):
        starts.append(d)
        d += 1 + int(dims[d])
    return starts


# -- site side -----------------------------------------------------------------------------------------------


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
        fraction_bits = int(state["fraction_bits"])
        names, dims, words = encode_vector(
            fn(request, site), modulus_bits=k, fraction_bits=None if fraction_bits < 0 else fraction_bits,
            clipping_range=float(state["clipping_range"]),
        )
        words = words + prg_mask(bytes(state["seed"]), words.size, k)
        for src in srcs:
            mask = _pairwise_mask(bytes(state["sk1"]), pk1s[nodes.index(src)], words.size, k)
            words = words + mask if nid > src else words - mask
        words &= _mod_mask(k)
        # The seed stays in the state: the server may need its shares, never the seed itself.
        state.update(stage="unmask", share_owners=owners, b_shares=b_shares, sk1_shares=sk1_shares, neighbours=srcs)
        _save_state(site, state)
        return RecordDict(
            {
                "masked": records.to_array_record({"vector": words.astype(_word_dtype(k))}),
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
