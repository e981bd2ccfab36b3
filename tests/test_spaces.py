"""The slate action space (DESIGN §4 "Slate actions and the official tests"): a
``MultiDiscrete([C] * K)`` whose ``sample(mask)`` draws K distinct unmasked candidates from a 1-D
mask and whose ``contains`` checks distinctness."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from recenv.spaces import SlateSpace


def test_is_a_multidiscrete():
    """Trainers that only know MultiDiscrete see ``MultiDiscrete([C] * K)``."""
    s = SlateSpace(20, 3)
    assert isinstance(s, spaces.MultiDiscrete)
    np.testing.assert_array_equal(s.nvec, [20, 20, 20])
    assert s.shape == (3,)


def test_sample_with_mask_is_distinct_and_unmasked():
    """``sample(mask)`` returns K distinct indices, all unmasked, for 1-D int8 and bool masks;
    every unmasked candidate gets drawn eventually (uniform over the allowed ones)."""
    s = SlateSpace(10, 3, seed=0)
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], dtype=np.int8)
    seen = set()
    for m in (mask, mask.astype(bool)):
        for _ in range(200):
            x = s.sample(m)
            assert x.shape == (3,) and len(set(x.tolist())) == 3
            assert m[x].all()
            assert s.contains(x)
            seen.update(x.tolist())
    assert seen == set(np.flatnonzero(mask).tolist())


def test_sample_without_mask_and_with_tuple_mask():
    """Without a mask: K distinct indices in range. Gymnasium's per-slot tuple of masks: their
    intersection is used."""
    s = SlateSpace(6, 4, seed=1)
    for _ in range(50):
        x = s.sample()
        assert len(set(x.tolist())) == 4 and ((x >= 0) & (x < 6)).all()
    per_slot = tuple(np.array([1, 1, 1, 1, 0, 1], dtype=np.int8) for _ in range(4))
    per_slot = (np.array([1, 1, 1, 1, 1, 0], dtype=np.int8), *per_slot[1:])
    for _ in range(50):
        x = s.sample(per_slot)
        assert set(x.tolist()) == {0, 1, 2, 3}


def test_sample_refuses_bad_masks():
    """A mask of the wrong shape, or with fewer than K unmasked candidates, or a
    ``probability`` argument, raises ValueError saying why."""
    s = SlateSpace(5, 3)
    with pytest.raises(ValueError, match="shape"):
        s.sample(np.ones(4, dtype=np.int8))
    with pytest.raises(ValueError, match="3"):
        s.sample(np.array([1, 1, 0, 0, 0], dtype=np.int8))
    with pytest.raises(ValueError, match="probability"):
        s.sample(probability=np.ones(5))


def test_contains():
    """``contains`` accepts K distinct in-range integers and refuses duplicates, out-of-range
    values and wrong shapes."""
    s = SlateSpace(5, 3)
    assert s.contains(np.array([0, 4, 2]))
    assert not s.contains(np.array([1, 1, 2]))
    assert not s.contains(np.array([0, 5, 2]))
    assert not s.contains(np.array([0, 1]))


def test_seeded_sampling_is_reproducible():
    """Two spaces seeded alike sample alike (PettingZoo's ``seed_test`` relies on it)."""
    a, b = SlateSpace(20, 3, seed=5), SlateSpace(20, 3, seed=5)
    mask = np.ones(20, dtype=np.int8)
    assert all(np.array_equal(a.sample(mask), b.sample(mask)) for _ in range(20))


def test_constructor_and_equality():
    """K > C is refused; equality compares (C, K)."""
    with pytest.raises(ValueError, match="slate_size"):
        SlateSpace(3, 4)
    assert SlateSpace(7, 2) == SlateSpace(7, 2) and SlateSpace(7, 2) != SlateSpace(7, 3)


def test_contains_refuses_what_the_env_refuses():
    """``contains`` agrees with the env's check: a bool array (``[True, False]`` reads as
    indices 1, 0 to numpy) is not a slate, as ``step`` refuses its dtype; integer dtypes of
    any width are slates.

    Regression test: ``MultiDiscrete.contains`` casts bool to int, so ``contains`` said yes
    to a slate that ``step`` rejects."""
    s = SlateSpace(5, 2)
    assert not s.contains(np.array([True, False]))
    assert not s.contains([True, False])
    for dtype in (np.int8, np.uint8, np.int32, np.int64):
        assert s.contains(np.array([3, 1], dtype=dtype))


@pytest.mark.parametrize(
    "mask",
    [np.linspace(0.1, 1.0, 6), np.full(6, 2, dtype=np.int8), np.array([1, 1, 1, -1, 0, 1])],
    ids=["probabilities", "twos", "minus_one"],
)
def test_sample_refuses_a_mask_that_is_not_binary(mask):
    """A mask must hold 0/1 (or bools): a vector of scores or probabilities passed by
    mistake raises ValueError instead of counting every nonzero entry as allowed.

    Regression test: ``np.flatnonzero`` treated 0.1 and 2 as "unmasked"."""
    s = SlateSpace(6, 3, seed=0)
    with pytest.raises(ValueError, match="binary"):
        s.sample(mask)
    with pytest.raises(ValueError, match="binary"):
        s.sample(tuple(mask for _ in range(3)))
