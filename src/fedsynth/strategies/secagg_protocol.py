"""The secure-sum protocol both sides share: message types, state key, fixed-point defaults, vector sources, the
settings check, and the encoding of vectors as integers modulo ``2**k`` with their masks (ChaCha20 keyed by a seed).

The server flow is :func:`fedsynth.strategies.secure_sum.secure_sum`, the site stages are in
:mod:`fedsynth.strategies.secagg_site`; every name here is also importable from :mod:`fedsynth.strategies.secure_sum`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from fedsynth.errors import FedsynthError, Problem
from fedsynth.strategies import records
from fedsynth.strategies.site import SiteRuntime

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
    "stash": "fedsynth.strategies.secagg_protocol:stashed_vector",
    "domain.histograms": "fedsynth.strategies.secure_domain:histogram_vector",
    "domain.moments": "fedsynth.strategies.secure_domain:moment_vector",
}

#: Prefix of the site-state key under which a site keeps the vector it computed for the next secure sum.
STASH_PREFIX = "secagg-stash:"


def stash_vector(site: SiteRuntime, tag: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Keep ``arrays`` in the site's state under ``tag`` for the next secure sum (source ``stash``).

    A strategy's ordinary handler computes what the site contributes (a weighted weight update, mixture
    statistics) and stashes it instead of replying with it; the secure sum that follows reads it back. Only one
    vector is kept: an older one (a round the site was left out of) is dropped.
    """
    for key in [k for k in site.state if k.startswith(STASH_PREFIX)]:
        del site.state[key]
    site.state[STASH_PREFIX + tag] = records.to_array_record({k: np.asarray(v) for k, v in arrays.items()})


def stashed_vector(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``stash``: the arrays stashed under ``request["tag"]`` (each read once).

    ``request["max_abs"]``, when given, is the fixed point's clipping range: a value beyond it is an error rather
    than a silently clipped weight.
    """
    key = STASH_PREFIX + str(request["tag"])
    if key not in site.state:
        raise FedsynthError(f"secure sum: this site holds no vector for {request['tag']!r}")
    arrays = records.from_array_record(site.state[key])
    del site.state[key]
    limit = request.get("max_abs")
    if limit is not None and any(a.size and float(np.max(np.abs(a))) > float(limit) for a in arrays.values()):
        raise FedsynthError("secure sum: a value exceeds the fixed-point range (raise modulus_bits or fraction_bits)")
    return arrays


#: Key under which the collect stage hands a vector source the noise split it verified against its own session
#: (:func:`verified_noise_request`); a key of that name in the coordinator's request is dropped first.
VERIFIED_NOISE_SHARES = "secagg_verified_noise_shares"


def verified_noise_request(request: Mapping[str, Any], *, threshold: int, n_sites: int) -> dict[str, Any]:
    """The request a vector source runs on at the collect stage: ``request`` with its noise split checked.

    Under a privacy budget (``dp_noise_std`` in the request) each site adds σ²/``dp_min_sites`` to what it masks
    (:func:`~fedsynth.privacy.noise.site_noise_std`), so a sum carries σ² only if at least ``dp_min_sites``
    vectors are in it. The site itself releases its unmasking shares only when at least ``threshold`` sites are
    active (:func:`~fedsynth.strategies.secagg_site.handle_unmask`), so any sum that can be unmasked holds at
    least ``threshold`` vectors; ``dp_min_sites`` is therefore accepted only in ``[1, threshold]`` (and at most
    the session's sites). A larger number (a coordinator asking each site for less noise than any unmaskable
    sum needs) is refused. The verified number travels on under :data:`VERIFIED_NOISE_SHARES`, which
    :func:`masked_noise_std` requires: the masked path's noise cannot be drawn without this check.

    Parameters
    ----------
    request : mapping
        The ``request`` the collect message carries (flat settings for the vector source).
    threshold : int
        The session's Shamir threshold, as the site stored it at the setup stage.
    n_sites : int
        The sites of the session (those that shared keys).

    Returns
    -------
    dict
        ``request`` without any coordinator-given :data:`VERIFIED_NOISE_SHARES`, plus the verified split when it
        asks for noise.

    Raises
    ------
    DisclosureRefused
        ``dp_min_sites`` missing, not a whole number, under 1, over ``threshold`` or over ``n_sites``; no value
        of the site is named.
    """
    from fedsynth.strategies.policy import DisclosureRefused

    out = {k: v for k, v in request.items() if k != VERIFIED_NOISE_SHARES}
    if "dp_noise_std" not in out:
        return out
    asked = out.get("dp_min_sites")
    most = min(int(threshold), int(n_sites))
    if not isinstance(asked, (int, np.integer)) or isinstance(asked, bool) or not 1 <= int(asked) <= most:
        # Short and number-free: a site's error text is scrubbed of numbers and cut at 300 characters.
        raise DisclosureRefused(
            "refused: dp_min_sites is over the secure sum's threshold, so a sum unmasked with fewer sites would "
            "carry less than the accounted noise; nothing was released. Ask for dp_min_sites at most the threshold "
            "(run the secure sum with threshold >= min_sites)"
        )
    out[VERIFIED_NOISE_SHARES] = int(asked)
    return out


def masked_noise_std(request: Mapping[str, Any]) -> float:
    """The noise standard deviation a site adds to a vector it masks: σ/√``dp_min_sites`` with the split the
    collect stage verified (:func:`verified_noise_request`), never the message's own.

    Raises
    ------
    FedsynthError
        The request did not pass the collect stage's check (no verified split): nothing is drawn.
    """
    from fedsynth.privacy.noise import site_noise_std

    if VERIFIED_NOISE_SHARES not in request:
        raise FedsynthError("secure sum: a masked vector's noise is drawn only at the collect stage, after its "
                            "noise split was checked against the session; nothing was released")
    return site_noise_std(float(request["dp_noise_std"]), int(request[VERIFIED_NOISE_SHARES]),
                          secure_aggregation=True)


def word_dtype(modulus_bits: int) -> np.dtype[Any]:
    return np.dtype(np.uint32 if modulus_bits <= 32 else np.uint64)


def mod_mask(modulus_bits: int) -> np.uint64:
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
    return words & mod_mask(modulus_bits)


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
    return names, dims, flat.view(np.uint64) & mod_mask(modulus_bits)


def decode_vector(
    words: np.ndarray, names: Sequence[str], dims: Sequence[int], *, modulus_bits: int, fraction_bits: int | None
) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_vector` for a sum: words mod 2**k -> signed integers (or fixed point) by name."""
    u = np.asarray(words, dtype=np.uint64) & mod_mask(modulus_bits)
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


def seed_of(shared_key: bytes) -> bytes:
    # generate_shared_key returns the HKDF output base64-encoded (a Fernet key); the mask seed is the raw 32 bytes.
    return base64.urlsafe_b64decode(shared_key)


def pairwise_mask(sk1: bytes, pk1_other: bytes, size: int, modulus_bits: int) -> np.ndarray:
    shared = generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(pk1_other))
    return prg_mask(seed_of(shared), size, modulus_bits)


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
