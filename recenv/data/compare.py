"""Measures for comparing simulated with real behaviour (count vectors over items or users).

Plain numpy functions of non-negative count vectors; the fidelity report
(``experiments/fidelity.py``) and the tests use them.
"""

from __future__ import annotations

import math

import numpy as np


def gini(x: np.ndarray) -> float:
    """Gini coefficient of a count vector: 0 when all are equal, toward 1 when one holds all."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def top_share(x: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total held by the top ``ceil(fraction * len(x))`` entries (at least one);
    ``fraction`` in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    x = np.sort(np.asarray(x, dtype=np.float64))[::-1]
    k = max(1, math.ceil(fraction * len(x) - 1e-9))  # 0.07 * 100 is 7.000000000000001
    return float(x[:k].sum() / max(x.sum(), 1e-12))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two count vectors of one length
    (an all-zero vector counts as no mass: its distance to any other is ``sqrt(1/2)``)."""
    _same_length(p, q)
    p = np.asarray(p, dtype=np.float64) / max(np.sum(p), 1e-12)
    q = np.asarray(q, dtype=np.float64) / max(np.sum(q), 1e-12)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return float(math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q))))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (NaN when either vector is
    constant)."""
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
    key = np.unique(np.asarray(users, dtype=np.int64) * num_items + np.asarray(items))
    return (
        np.bincount(key % num_items, minlength=num_items),
        np.bincount(key // num_items, minlength=num_users),
    )
