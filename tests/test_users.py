"""A fresh user's draw (``recenv.core.users.draw_user``) has the distribution its config
documents: sparse interests over 1-3 distinct topics (DESIGN §3), the *mean* price
sensitivity and session budget the fields name, topics observable with probability
``feature_visible`` under noise of std ``feature_noise``, and the observable features'
definition (the session depth over 10, ``log(1 + visits)``).

Each check draws 200,000 users from independent uniforms; its tolerance is several standard
errors of the statistic (stated beside it), far below the effect of a wrong constant.
"""

from __future__ import annotations

import math

import pytest
import torch

from recenv.core.config import MarketConfig
from recenv.core.users import (
    UserLayout,
    draw_user,
    observable_features,
    user_block_width,
)

N = 200_000


def _draw(seed: int = 0, **overrides):
    cfg = MarketConfig(**overrides)
    layout = UserLayout(cfg.num_topics, cfg.num_agents)
    g = torch.Generator().manual_seed(seed)
    # Uniforms strictly inside (0, 1), as the counter-based streams give them.
    u = torch.rand(N, user_block_width(cfg), generator=g, dtype=torch.float64)
    block = (u * (1 - 2.0**-23) + 2.0**-24).float()
    row, const = draw_user(cfg, layout, block)
    return cfg, layout, row, const


@pytest.mark.parametrize("num_topics", [1, 2, 3, 20])
def test_interests_are_one_to_three_distinct_topics_equally_often(num_topics):
    """Each user is interested in k = 1..min(3, T) distinct topics, k uniform, weights summing
    to one. At T = 3 a user with three topics must hold all three: a draw that let the
    second and third topic coincide would leave a third of the users with fewer."""
    _cfg, L, row, _ = _draw(num_topics=num_topics, max_item_topics=min(3, num_topics))
    interest = row[:, L.interest]
    assert bool((interest >= 0).all())
    torch.testing.assert_close(interest.sum(1), torch.ones(N))
    k = (interest > 0).sum(1)
    k_max = min(3, num_topics)
    assert int(k.min()) >= 1 and int(k.max()) <= k_max
    share = torch.bincount(k, minlength=k_max + 1)[1:].double() / N
    # Standard error of a share of 1/3 over 200k users: 0.001.
    torch.testing.assert_close(
        share, torch.full((k_max,), 1.0 / k_max, dtype=torch.float64), atol=0.006, rtol=0
    )
    # Every topic equally likely to be among a user's interests (its share: k_mean / T).
    picked = (interest > 0).double().mean(0)
    want = (k_max + 1) / 2 / num_topics
    torch.testing.assert_close(picked, torch.full_like(picked, want), atol=0.008, rtol=0)


@pytest.mark.parametrize("embed_dim", [4, 16])
def test_taste_has_unit_spread_against_an_item(embed_dim):
    """The latent taste has N(0, 4/D) entries (``UserConstants.taste``): expected squared
    norm 4, so against an item's N(0, 1/D) embedding (``Catalog.embed``) the taste term
    ``taste_weight x taste . embed`` has variance 4/D."""
    _, _, _, const = _draw(embed_dim=embed_dim)
    # Standard error of the mean squared norm: sqrt(2 D) (4 / D) / sqrt(N), 0.1-0.2 % of 4.
    assert float(const.taste.double().pow(2).sum(1).mean()) == pytest.approx(4.0, rel=0.01)
    assert abs(float(const.taste.double().mean())) < 0.01


@pytest.mark.parametrize("price_sensitivity", [0.5, 2.0])
def test_price_sensitivity_averages_the_configured_mean(price_sensitivity):
    """``price_sensitivity`` is the users' *mean* sensitivity (config): uniform on
    [0, 2 x mean]."""
    _cfg, _, _, const = _draw(price_sensitivity=price_sensitivity)
    s = const.price_sensitivity
    assert float(s.min()) >= 0.0 and float(s.max()) <= 2 * price_sensitivity
    # Standard error of the mean: mean / sqrt(3 N) = 0.0013 x mean.
    assert float(s.mean()) == pytest.approx(price_sensitivity, rel=0.01)
    assert float(s.std()) == pytest.approx(price_sensitivity / math.sqrt(3), rel=0.01)


@pytest.mark.parametrize("session_budget", [8.0, 0.5])
def test_session_budget_averages_the_configured_mean(session_budget):
    """``session_budget`` is the *mean* budget of a session (config): log-normal around it
    with mean exactly the setting (``exp(0.5 G - 0.125)`` has mean one)."""
    _cfg, L, row, _ = _draw(session_budget=session_budget)
    budget = row[:, L.budget]
    assert bool((budget > 0).all())
    # Standard error of the mean: sqrt(exp(0.25) - 1) / sqrt(N) = 0.0012 x mean.
    assert float(budget.mean()) == pytest.approx(session_budget, rel=0.008)
    # The log-budget: normal with std 0.5.
    assert float(budget.log().std()) == pytest.approx(0.5, rel=0.01)


def test_a_fresh_user_starts_the_episode_as_configured():
    """Satisfaction at ``satisfaction_init``, no visits, boredom, depth or history yet."""
    _cfg, L, row, _ = _draw(satisfaction_init=0.55)
    assert bool((row[:, L.satisfaction] == torch.tensor(0.55)).all())
    for part in (L.boredom, L.history):
        assert bool((row[:, part] == 0).all())
    assert bool((row[:, L.visits] == 0).all()) and bool((row[:, L.depth] == 0).all())


@pytest.mark.parametrize(("feature_visible", "feature_noise"), [(0.75, 0.1), (0.3, 0.5)])
def test_observable_features_are_a_noisy_partial_view(feature_visible, feature_noise):
    """Each topic's interest is observable with probability ``feature_visible``; each
    feature carries Gaussian noise of std ``feature_noise``; then the session depth over 10
    and ``log(1 + visits)`` (DESIGN §3: "a noisy, partial view")."""
    cfg, L, row, const = _draw(feature_visible=feature_visible, feature_noise=feature_noise)
    T = cfg.num_topics
    assert const.visible is not None and const.noise is not None
    # Standard error of the share: sqrt(p (1 - p) / (N T)) < 0.0003.
    assert float(const.visible.double().mean()) == pytest.approx(feature_visible, abs=0.002)
    assert float(const.noise.std()) == pytest.approx(feature_noise, rel=0.005)
    depth, visits = torch.tensor([0.0, 3.0, 12.0]), torch.tensor([0.0, 1.0, 7.0])
    row = L.assemble(row[:3], depth=depth[:, None], visits=visits[:, None])  # later in a session
    const3 = type(const)(
        const.taste[:3], const.price_sensitivity[:3], const.visible[:3], const.noise[:3]
    )
    feats = observable_features(cfg, L, row, const3)
    want = torch.where(const3.visible, row[:, L.interest], 0.0) + const3.noise
    torch.testing.assert_close(feats[:, :T], want, rtol=0, atol=0)
    torch.testing.assert_close(feats[:, T], depth / 10.0)
    torch.testing.assert_close(feats[:, T + 1], torch.log1p(visits))
