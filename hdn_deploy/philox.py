"""Philox4x32-10 and Box-Muller in vectorised numpy: the CPU path and the oracle of the
latent contract (:mod:`hdn_deploy.latents`); :mod:`hdn_deploy.latents_cuda` is the same
arithmetic as a CUDA kernel.

Source: J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers: as
easy as 1, 2, 3", SC11 (2011), and its reference implementation Random123 (``philox.h``):
10 rounds of::

    hi0, lo0 = mulhilo32(0xD2511F53, c0);  hi1, lo1 = mulhilo32(0xCD9E8D57, c2)
    c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0

with the key bumped by (0x9E3779B9, 0xBB67AE85) mod 2**32 before every round but the
first. Words are held in uint64 arrays (values < 2**32) so that the 32 x 32 -> 64-bit
product is one exact numpy multiply. Checked against Random123's ``kat_vectors`` in
``tests/runtime/test_philox.py``.

Uniforms and normals (the mapping the CUDA kernel repeats exactly)::

    u(w)  = ((w >> 9) * 2 + 1) * 2**-24        # float32, exact: 2**23 odd values in (0, 1)
    r     = sqrt(-2 * log(u(w_even)))          # float32 log, sqrt
    theta = u(w_odd) * float32(2 * pi)         # float32
    normals (lane 0, 1, 2, 3) = r01 cos t01, r01 sin t01, r23 cos t23, r23 sin t23

where (r01, t01) come from words (0, 1) and (r23, t23) from words (2, 3). ``u`` never is
0 or 1, so ``log`` is finite; ``|normal| <= sqrt(48 ln 2) = 5.77`` (the tail beyond,
probability 8e-9, is cut off).
"""
from __future__ import annotations

import numpy as np

__all__ = ["philox4x32", "box_muller", "ROUNDS"]

ROUNDS = 10
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_TWO_PI = np.float32(2.0 * np.pi)
_INV_2_24 = np.float32(2.0**-24)


def philox4x32(counter: tuple[np.ndarray | int, ...], key: tuple[int, int]) -> list[np.ndarray]:
    """Philox4x32-10 of broadcastable counter words under one key.

    Parameters
    ----------
    counter : 4 integer arrays or ints, values in ``[0, 2**32)``
        Counter words ``c0 .. c3``; broadcast against each other.
    key : (int, int)
        Key words ``k0, k1`` in ``[0, 2**32)``.

    Returns
    -------
    list of 4 numpy.ndarray
        uint64 arrays of the broadcast shape holding the output words (< 2**32).

    Notes
    -----
    Words are combined by broadcasting until every word has the full shape (when the
    counter varies along separate axes, the first two rounds work on small arrays), then
    in place.

    Examples
    --------
    >>> [hex(int(w)) for w in philox4x32((0, 0, 0, 0), (0, 0))]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c = [np.asarray(w).astype(np.uint64) for w in counter]
    shape = np.broadcast_shapes(*(w.shape for w in c))
    k0, k1 = int(key[0]), int(key[1])
    r = 0
    while r < ROUNDS and any(w.shape != shape for w in c):
        p0, p1 = c[0] * _M0, c[2] * _M1
        c = [(p1 >> _SHIFT32) ^ c[1] ^ np.uint64(k0), p1 & _MASK32,
             (p0 >> _SHIFT32) ^ c[3] ^ np.uint64(k1), p0 & _MASK32]
        k0, k1, r = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF, r + 1
    c0, c1, c2, c3 = (np.array(w, dtype=np.uint64) for w in c)  # writable, full shape
    p0, p1 = np.empty_like(c0), np.empty_like(c0)
    for r in range(r, ROUNDS):
        np.multiply(c0, _M0, out=p0)
        np.multiply(c2, _M1, out=p1)
        np.right_shift(p1, _SHIFT32, out=c0)  # c0 = hi1 ^ c1 ^ k0
        c0 ^= c1
        c0 ^= np.uint64(k0)
        np.bitwise_and(p1, _MASK32, out=c1)  # c1 = lo1
        np.right_shift(p0, _SHIFT32, out=c2)  # c2 = hi0 ^ c3 ^ k1
        c2 ^= c3
        c2 ^= np.uint64(k1)
        np.bitwise_and(p0, _MASK32, out=c3)  # c3 = lo0
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return [c0, c1, c2, c3]


def _uniform(word: np.ndarray) -> np.ndarray:
    """float32 ``((w >> 9) * 2 + 1) * 2**-24`` (exact; in (0, 1))."""
    u = (word >> np.uint64(9)).astype(np.int32).astype(np.float32)  # < 2**23: exact
    u *= np.float32(2.0)
    u += np.float32(1.0)
    u *= _INV_2_24
    return u


def box_muller(words: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Four standard normals per Philox output: float32 of shape ``(*words[0].shape, 4)``.

    Lane ``j`` of the last axis is the ``j``-th normal of the mapping in the module
    docstring. ``out`` (float32, that shape) is filled in place when given.
    """
    shape = words[0].shape
    if out is None:
        out = np.empty((*shape, 4), dtype=np.float32)
    if not shape:  # one counter: work on 1-element views (ufunc outputs must be arrays)
        box_muller([w.reshape(1) for w in words], out=out.reshape(1, 4))
        return out
    for pair in (0, 1):
        r = _uniform(words[2 * pair])
        np.log(r, out=r)
        r *= np.float32(-2.0)
        np.sqrt(r, out=r)
        theta = _uniform(words[2 * pair + 1])
        theta *= _TWO_PI
        np.multiply(r, np.cos(theta), out=out[..., 2 * pair])
        np.multiply(r, np.sin(theta), out=out[..., 2 * pair + 1])
    return out
