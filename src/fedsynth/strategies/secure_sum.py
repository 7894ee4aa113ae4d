"""Secure summation (SecAgg+ stages) over Flower's message API: the server learns the sum over sites, never one site's vector.

This module holds the server flow (:func:`secure_sum`); the shared protocol parts (message types, encoding, masks,
settings) are in :mod:`fedsynth.strategies.secagg_protocol`, the site stages in :mod:`fedsynth.strategies.secagg_site`,
and all are importable from here.

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

Who uses it: everything summed over sites when a strategy's ``secure_aggregation`` is on (default false in
simulation, true in a deployed run, :data:`~fedsynth.strategies.registry.DEPLOYMENT_DEFAULTS`) — the shared domain's
histograms and counts (:mod:`fedsynth.strategies.secure_domain`, sources ``domain.histograms`` and
``domain.moments``), the two-step BN's count tables (``two_step_bn.counts``), FedAvg's weight updates and VAE-BGM's
latent-mixture statistics. The last two are computed by the strategy's own instruction (``train.fit``,
``query.mixture_*`` carrying a ``secagg_tag``), which the site answers with nothing of them: it stashes its
contribution in its state (:func:`stash_vector`) and the secure sum that follows reads it back (source ``stash``,
:func:`sum_stashed`: fixed point with :data:`FLOAT_FRACTION_BITS` fractional bits in 64-bit words). Weighted FedAvg
is the secure sum of ``n_i * w_i`` and of ``n_i``, divided on the server.

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

import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import combine_shares

from fedsynth.errors import FedsynthError, ValidationError
from fedsynth.strategies import records
from fedsynth.strategies.secagg_protocol import (
    COLLECT,
    DEFAULT_CLIPPING_RANGE,
    DEFAULT_FRACTION_BITS,
    SETUP,
    SHARE_KEYS,
    STAGES,
    STASH_PREFIX,
    STATE_KEY,
    UNMASK,
    VECTOR_SOURCES,
    VectorSource,
    decode_vector,
    encode_vector,
    pairwise_mask,
    prg_mask,
    settings_problems,
    stash_vector,
    stashed_vector,
)
from fedsynth.strategies.secagg_site import (
    handle_setup,
    handle_share_keys,
    handle_unmask,
    site_handlers,
)
from fedsynth.strategies.site import SiteHandler, SiteRuntime


def _handle_secure_labels(msg: Message, site: SiteRuntime) -> RecordDict:
    from fedsynth.strategies.secure_domain import handle_labels  # imported on use: it imports this module's users

    return handle_labels(msg, site)


#: What a site answers for secure aggregation: the protocol's four stages with the built-in vector sources, and
#: the label names the secure domain sums over (:mod:`fedsynth.strategies.secure_domain`).
SITE_HANDLERS: dict[str, SiteHandler] = {**site_handlers(), "query.secure_labels": _handle_secure_labels}

__all__ = [
    "COLLECT",
    "DEFAULT_CLIPPING_RANGE",
    "DEFAULT_FRACTION_BITS",
    "FLOAT_FRACTION_BITS",
    "SETUP",
    "SHARE_KEYS",
    "SITE_HANDLERS",
    "STAGES",
    "STASH_PREFIX",
    "STATE_KEY",
    "UNMASK",
    "VECTOR_SOURCES",
    "GridLike",
    "SecureSumResult",
    "VectorSource",
    "decode_vector",
    "default_threshold",
    "encode_vector",
    "float_clipping_range",
    "handle_setup",
    "handle_share_keys",
    "handle_unmask",
    "prg_mask",
    "secure_sum",
    "settings_problems",
    "site_handlers",
    "stash_vector",
    "stashed_vector",
    "sum_stashed",
]

log = logging.getLogger(__name__)

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


# -- server side ---------------------------------------------------------------------------------------------

#: Fractional bits of float sums (weight updates, mixture statistics, domain moments): each site's value is
#: rounded to the nearest ``2**-32`` (error at most ``2**-33``, about 1.2e-10), in 64-bit words.
FLOAT_FRACTION_BITS = 32


def float_clipping_range(n_sites: int, *, modulus_bits: int = 64, fraction_bits: int = FLOAT_FRACTION_BITS) -> float:
    """The widest clipping range ``modulus_bits``-bit words hold for a fixed-point sum over ``n_sites`` sites.

    Half of what :func:`settings_problems` allows (``n_sites * range * 2**fraction_bits < 2**(modulus_bits-1)``):
    ``2**(modulus_bits - 2 - fraction_bits) / n_sites``, e.g. about 3.6e8 for 3 sites with the defaults — far
    above a row count times a weight.
    """
    return float(2 ** (modulus_bits - 2 - fraction_bits)) / max(int(n_sites), 1)


def sum_stashed(
    grid: GridLike, node_ids: Sequence[int], tag: str, *, timeout: float | None = None
) -> SecureSumResult:
    """The secure sum of the float arrays each site stashed under ``tag`` (:func:`stash_vector`), in fixed point.

    A strategy first sends its ordinary instruction with the tag (the site computes its contribution and stashes
    it instead of replying with it), then calls this; :data:`FLOAT_FRACTION_BITS` fractional bits in 64-bit
    words, clipping range :func:`float_clipping_range` (a site whose value exceeds it fails rather than clip).
    """
    clip = float_clipping_range(len(node_ids))
    return secure_sum(
        grid, node_ids, {"tag": tag, "max_abs": clip}, source="stash", modulus_bits=64,
        fraction_bits=FLOAT_FRACTION_BITS, clipping_range=clip, timeout=timeout,
    )


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
    min_sites: int = 0,
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
        :func:`default_threshold` (a majority, at least 2), raised to ``min_sites`` (each site refuses to mask
        noise split over more sites than the threshold).
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
    min_sites : int
        The fewest sites whose vectors the sum may hold, besides ``threshold``: a sum of distributed noise
        calibrated to this many sites (:func:`~fedsynth.privacy.noise.noise_shares`) fails rather than be
        released with less noise than accounted. 0: the threshold alone.

    Returns
    -------
    SecureSumResult
        The summed arrays, the sites in the sum and those dropped (with the stage).

    Raises
    ------
    ValidationError
        Every problem of the settings at once.
    FedsynthError
        Fewer than ``threshold`` (or ``min_sites``) sites remain at some stage, the sites' vectors differ in shape, or too few
        shares came back to unmask.

    Notes
    -----
    Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017; Bell et
    al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020 (SecAgg+); Flower's
    ``SecAggPlusWorkflow`` and ``secaggplus_mod``.
    """
    nodes = sorted({int(n) for n in node_ids})
    # The threshold is at least min_sites: each site refuses to mask noise split over more sites than the fewest
    # a sum may be unmasked with (secagg_protocol.verified_noise_request).
    t = max(default_threshold(len(nodes)), min(int(min_sites), len(nodes))) if threshold is None else int(threshold)
    problems = settings_problems(
        len(nodes), threshold=t, modulus_bits=modulus_bits, fraction_bits=fraction_bits, clipping_range=clipping_range
    )
    if problems:
        raise ValidationError("Settings of the secure sum", problems)
    session = uuid.uuid4().hex
    exchange = _Exchange(grid, session, timeout)
    dropped: dict[int, str] = {}
    need = max(t, int(min_sites))

    def keep(stage: str, ok: Mapping[int, RecordDict], failed: Mapping[int, str]) -> list[int]:
        for node, reason in failed.items():
            dropped[node] = f"{stage}: {reason}"
            log.warning("secure sum %s: node %d dropped at %s: %s", session[:8], node, stage, reason)
        if len(ok) < need:
            what = (f"the noise is calibrated to at least {need} sites" if int(min_sites) >= need
                    else f"the threshold is {t}")
            raise FedsynthError(f"secure sum: only {len(ok)} sites answered {stage}; {what} (dropped: {len(dropped)})")
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
            mask = pairwise_mask(sk1_v, pk1[u], size, modulus_bits)
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
