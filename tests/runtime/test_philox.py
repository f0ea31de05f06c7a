"""Philox4x32-10 against Random123's published known-answer vectors; Box-Muller mapping."""
from __future__ import annotations

import numpy as np
import pytest

from hdn_deploy.philox import box_muller, philox4x32

# Random123 kat_vectors: counter (4 words), key (2 words) -> output (4 words), hex uint32.
KAT = [
    ("00000000 00000000 00000000 00000000", "00000000 00000000",
     "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    ("ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff",
     "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    ("243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0",
     "d16cfe09 94fdcceb 5001e420 24126ea1"),
]


def _words(text):
    return [int(w, 16) for w in text.split()]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_known_answer_vectors(counter, key, expected):
    got = philox4x32(tuple(_words(counter)), tuple(_words(key)))
    assert [int(w) for w in got] == _words(expected)


def test_vectorised_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(4, 37), dtype=np.uint64)
    key = (0x12345678, 0x9ABCDEF0)
    whole = philox4x32(tuple(counters), key)
    for j in (0, 11, 36):
        single = philox4x32(tuple(int(c[j]) for c in counters), key)
        assert [int(w[j]) for w in whole] == [int(w) for w in single]
    broadcast = philox4x32((counters[0][:, None], 7, counters[2][None, :5], 3), key)
    assert broadcast[0].shape == (37, 5) and broadcast[0].dtype == np.uint64


def test_box_muller_mapping_and_extremes():
    words = [np.array([0, 2**32 - 1, 2**31], dtype=np.uint32) for _ in range(4)]
    z = box_muller(words)
    assert z.shape == (3, 4) and z.dtype == np.float32 and np.isfinite(z).all()
    # w = 0 -> u = 2**-24 (largest radius, angle ~0): lane 0 is r cos(t), lane 1 r sin(t)
    r = np.sqrt(-2 * np.log(np.float32(2.0**-24), dtype=np.float32), dtype=np.float32)
    np.testing.assert_allclose(z[0, 0], r, rtol=1e-6)
    assert abs(z[0, 1]) < 1e-5 and np.abs(z).max() <= 5.78
    # w = 2**32 - 1 -> u = 1 - 2**-24 (tiny radius)
    assert np.abs(z[1]).max() < 1e-3
