"""The fit of a log, formula by formula, on logs small enough to work by hand: implicit ALS's
objective and normal equations (Hu, Koren & Volinsky 2008), the confidence weights, and the
fitted quality, interests, topics and first appearances that ``recenv/FromLog-v0`` builds its
market from. (``test_data.py`` checks that ALS recovers planted blocks and matches the
``implicit`` library on MovieLens; these pin what it computes.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recenv.data import InteractionLog
from recenv.data import fit as fit_module
from recenv.data.fit import RATING_PRIOR, fit_log, sparse_topics
from recenv.data.mf import fit_als

# Three users, four items; user 0 consumed item 1 twice (a repeated pair: weights add up).
USERS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
ITEMS = np.array([0, 1, 1, 2, 3, 0, 2, 3])
COUNTS = np.array([4.0, 1.0, 2.0, 7.0, 1.0, 3.0, 5.0, 9.0])


def count_log(rating=COUNTS, kind="count", timestamp=None) -> InteractionLog:
    return InteractionLog(
        user=USERS,
        item=ITEMS,
        rating=rating,
        timestamp=timestamp,
        user_ids=np.arange(3),
        item_ids=np.arange(4),
        rating_kind=kind,
    )


def preference_and_confidence(weights, alpha) -> tuple[np.ndarray, np.ndarray]:
    """Hu et al.'s tables ``[U, I]``: preference 1 and confidence ``1 + alpha * w`` where the
    pair was observed (``w`` its summed weights), preference 0 and confidence 1 elsewhere."""
    W = np.zeros((3, 4))
    np.add.at(W, (USERS, ITEMS), weights)
    P = np.zeros((3, 4))
    P[USERS, ITEMS] = 1.0
    return P, np.where(P > 0, 1.0 + alpha * W, 1.0)


def objective(x, y, weights, alpha, reg) -> float:
    """Hu et al.'s objective over every (user, item) pair, per pair: the confidence-weighted
    squared error of the preference, plus ``reg`` times the factors' squared norms."""
    x, y = x.double().numpy(), y.double().numpy()
    P, C = preference_and_confidence(weights, alpha)
    err = C * (P - x @ y.T) ** 2
    return float((err.sum() + reg * ((x**2).sum() + (y**2).sum())) / 12)


@pytest.mark.parametrize(
    ("confidence", "weights"),
    [("binary", np.ones(8)), ("linear", COUNTS), ("log", np.log1p(COUNTS))],
)
def test_als_reports_its_objective_over_every_pair(confidence, weights):
    """The loss ``fit_als`` reports is the objective at its factors: each interaction
    weighs 1 (binary), its count (linear) or ``log1p`` of it (log); a repeated pair's weights
    add up; the unobserved pairs count with confidence 1 and preference 0."""
    alpha, reg = 2.0, 0.5
    mf = fit_als(
        count_log(),
        factors=2,
        regularization=reg,
        alpha=alpha,
        iterations=3,
        confidence=confidence,
    )
    want = objective(mf.user_factors, mf.item_factors, weights, alpha, reg)
    assert mf.loss == pytest.approx(want, rel=1e-6)


def test_each_half_iteration_solves_its_side_of_the_normal_equations():
    """With two factors the solver's three conjugate-gradient steps are an exact solve, so
    the last half-iteration's item factors are the least-squares answer given the user
    factors: ``y_i = (Xᵀ C_i X + λ I)⁻¹ Xᵀ C_i p_i``."""
    alpha, reg = 3.0, 0.2
    mf = fit_als(
        count_log(), factors=2, regularization=reg, alpha=alpha, iterations=4, confidence="log"
    )
    x = mf.user_factors.double()
    P, C = map(torch.as_tensor, preference_and_confidence(np.log1p(COUNTS), alpha))
    for i in range(4):
        A = x.T @ (C[:, i, None] * x) + reg * torch.eye(2, dtype=torch.float64)
        b = x.T @ (C[:, i] * P[:, i])
        want = torch.linalg.solve(A, b)
        torch.testing.assert_close(mf.item_factors[i].double(), want, rtol=1e-4, atol=1e-6)


def test_quality_is_the_shrunk_mean_rating_in_standard_deviations():
    """Each item's mean rating, shrunk toward the global mean by 10 pseudo-ratings, minus the
    global mean, over the standard deviation of all ratings."""
    ratings = np.array([5.0, 4.5, 4.0, 1.0, 2.0, 3.0, 5.0, 0.5])
    fit = fit_log(count_log(ratings, kind="explicit"), num_topics=2, embed_dim=2)
    m, s = ratings.mean(), ratings.std()
    sums = np.bincount(ITEMS, weights=ratings, minlength=4)
    n = np.bincount(ITEMS, minlength=4)
    want = ((sums + RATING_PRIOR * m) / (n + RATING_PRIOR) - m) / s
    np.testing.assert_allclose(fit.quality.numpy(), want, rtol=1e-6)


def test_interests_are_the_confidence_weighted_mean_topics_of_the_users_items():
    """A count log (confidence ``log1p(count)``): user ``u``'s interests are the mean of its
    items' topic vectors, each weighted by ``log1p`` of the count (a pair twice, twice)."""
    fit = fit_log(count_log(), num_topics=2, embed_dim=2, max_item_topics=2)
    w = torch.as_tensor(np.log1p(COUNTS), dtype=torch.float64)
    for u in range(3):
        rows = torch.as_tensor(np.flatnonzero(USERS == u))
        mix = (w[rows, None] * fit.topics.double()[torch.as_tensor(ITEMS)[rows]]).sum(0)
        torch.testing.assert_close(fit.interest[u].double(), mix / mix.sum(), rtol=1e-5, atol=0)


def test_first_seen_is_each_items_earliest_timestamp():
    stamps = np.array([50.0, 9.0, 70.0, 30.0, 80.0, 20.0, 10.0, 60.0])
    fit = fit_log(count_log(timestamp=stamps), num_topics=2, embed_dim=2)
    assert fit.first_seen.tolist() == [20.0, 9.0, 10.0, 60.0]


def test_topic_vectors_are_a_sharpened_softmax_over_the_nearest_topics():
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8]])
    got = sparse_topics(sim, max_topics=2, sharpness=10.0)
    e = math.exp(10 * (0.5 - 0.9))
    want = torch.tensor([[1 / (1 + e), e / (1 + e), 0.0], [0.0, 0.0, 0.0]])
    e = math.exp(10 * (0.3 - 0.8))
    want[1, 1], want[1, 2] = e / (1 + e), 1 / (1 + e)
    torch.testing.assert_close(got, want)


def test_topic_centroids_weigh_items_by_log_popularity(monkeypatch):
    """The k-means of the item factors weighs each item by ``log1p`` of its interactions, so
    that popular items place the topics."""
    seen = []
    kmeans = fit_module.spherical_kmeans

    def spy(unit, weights, k, **kw):
        seen.append(weights.clone())
        return kmeans(unit, weights, k, **kw)

    monkeypatch.setattr(fit_module, "spherical_kmeans", spy)
    fit_log(count_log(), num_topics=2, embed_dim=2)
    (weights,) = seen
    counts = np.bincount(ITEMS, minlength=4)
    np.testing.assert_allclose(weights.numpy(), np.log1p(counts))
