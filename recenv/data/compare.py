"""Measures for comparing simulated with real behaviour (count vectors over items or users).

Plain numpy functions of non-negative count vectors; the fidelity report
(``experiments/fidelity.py``) and the tests use them.
"""

from __future__ import annotations

import math

import numpy as np

from recenv.core.config import check_int


def _vector(metric: str, name: str, x, *, counts: bool = True) -> np.ndarray:
    """``x`` as a 1-D float64 array of finite values (``>= 0`` when they are ``counts``), or
    ValueError naming the metric and the argument: NaN, negative or 2-D input gave plausible
    numbers (``js_distance([nan, 2], [1, 0]) = 0``, ``top_share([-5, 1, 1], 0.34) = 2e12``)."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{metric}: {name} is not a vector of numbers ({e})") from None
    allowed = "finite counts >= 0" if counts else "finite numbers"
    if a.ndim != 1:
        raise ValueError(f"{metric}: {name} must be a 1-D vector of {allowed}, got shape {a.shape}")
    bad = (~np.isfinite(a) | (a < 0)) if counts else ~np.isfinite(a)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{metric}: {name} must hold {allowed}; {name}[{k}] is {float(a[k])!r}")
    return a


def gini(x: np.ndarray) -> float:
    """Gini coefficient of a count vector: 0 when all are equal, toward 1 when one holds all."""
    x = np.sort(_vector("gini", "x", x))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def top_share(x: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total held by the top ``ceil(fraction * len(x))`` entries (at least one);
    ``fraction`` in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    x = np.sort(_vector("top_share", "x", x))[::-1]
    k = max(1, math.ceil(fraction * len(x) - 1e-9))  # 0.07 * 100 is 7.000000000000001
    return float(x[:k].sum() / max(x.sum(), 1e-12))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two count vectors of one length
    (an all-zero vector counts as no mass: its distance to any other is ``sqrt(1/2)``)."""
    p, q = _vector("js_distance", "p", p), _vector("js_distance", "q", q)
    _same_length(p, q)
    p = p / max(np.sum(p), 1e-12)
    q = q / max(np.sum(q), 1e-12)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return float(math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q))))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (NaN when either vector is
    constant)."""
    # Ranks take any finite values, not only counts (a NaN was ranked as the largest value).
    a = _vector("spearman", "a", a, counts=False)
    b = _vector("spearman", "b", b, counts=False)
    _same_length(a, b)
    return float(np.corrcoef(_rank(a), _rank(b))[0, 1])


def _same_length(a, b) -> None:
    if np.shape(a) != np.shape(b) or np.ndim(a) != 1:
        raise ValueError(
            f"expected two vectors of one length, got shapes {np.shape(a)}, {np.shape(b)}"
        )


def _rank(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv.reshape(-1), weights=ranks)
    return (sums / counts)[inv.reshape(-1)]


def distinct_pairs(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int):
    """Distinct (user, item) pairs counted per item and per user: ``(users per item [I],
    items per user [U])``. A log that records each consumption once (MovieLens) counts the
    same way."""
    num_users = check_int("distinct_pairs: num_users", num_users, 0)
    num_items = check_int("distinct_pairs: num_items", num_items, 0)
    # An id out of range was folded into another pair (item 5 of 3 counted as user + 1's 2).
    users = _ids("users", users, num_users)
    items = _ids("items", items, num_items)
    if users.shape != items.shape:
        raise ValueError(
            f"distinct_pairs: users and items must be of one length, got {users.shape}, "
            f"{items.shape}"
        )
    key = np.unique(users * num_items + items)
    return (
        np.bincount(key % num_items, minlength=num_items),
        np.bincount(key // num_items, minlength=num_users),
    )


def _ids(name: str, x, n: int) -> np.ndarray:
    """``x`` as a 1-D int64 array of ids in ``[0, n)``, or ValueError naming ``name``."""
    a = np.asarray(x)
    if a.size == 0:
        a = a.astype(np.int64)  # np.asarray([]) is float64
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"distinct_pairs: {name} must be a 1-D integer vector, got shape {a.shape}, "
            f"dtype {a.dtype}"
        )
    bad = (a < 0) | (a >= n)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"distinct_pairs: {name} must be ids in [0, {n}); {name}[{k}] is {a[k]}")
    return a.astype(np.int64, copy=False)
