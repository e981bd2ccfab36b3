"""The learning baselines compute what their docstrings say, recomputed here from the
transitions they learned from: LinUCB's ridge regression and upper confidence bound, and the
popularity agent's per-item tables. Each run crosses episode ends, so the transitions hold
auto-reset rows, which carry no feedback and must add nothing."""

from __future__ import annotations

import pytest
import torch

import agents
from agents.features import ObsLayout, linear_features
from agents.rollout import train


def _recorded(agent, env, steps: int):
    """Train ``agent`` for ``steps`` env steps; the transitions it learned from."""
    seen = []
    learn = agent.learn

    def recording(tr):
        seen.append(tr)
        return learn(tr)

    agent.learn = recording
    train(agent, env, steps, seed=3)
    assert any(not bool(tr.valid.all()) for tr in seen), "no auto-reset row was crossed"
    return seen


def _slot_payoffs(tr, a: str, target: str) -> torch.Tensor:
    """``[N, K]`` each slot's payoff: 1 (click) or the click's engagement on the clicked
    slot, 0 elsewhere."""
    K = tr.actions[a].shape[1]
    hit = torch.arange(K)[None, :] == tr.clicked_slot[a][:, None]
    y = tr.engagement[a][:, None] if target == "engagement" else torch.ones(1, 1)
    return hit * y


@pytest.mark.parametrize("target", ["engagement", "click"])
def test_linucb_is_ridge_regression_scored_by_its_upper_bound(market, target):
    """LinUCB (Li et al., 2010), per env agent: ``A = λI + Σ x xᵀ`` and ``b = Σ y x`` over
    every shown slot of the real steps, ``θ = A⁻¹ b``; candidates score ``θ·x + α √(xᵀ A⁻¹
    x)`` while exploring and ``θ·x`` greedily."""
    env = market(num_envs=6, horizon=7, num_items=300)
    alpha, ridge = 0.7, 2.0
    agent = agents.make_agent("linucb", env, alpha=alpha, ridge=ridge, target=target, seed=1)
    seen = _recorded(agent, env, 6 * 20)
    layout = ObsLayout(env.config.num_topics)
    d = layout.linear_dim()
    for i, a in enumerate(env.agents):
        A = ridge * torch.eye(d, dtype=torch.float64)
        b = torch.zeros(d, dtype=torch.float64)
        for tr in seen:
            x = linear_features(layout, tr.obs[a]).double()  # [N, C, d]
            slate = tr.actions[a]
            xs = x.gather(1, slate[..., None].expand(-1, -1, d))[tr.valid]  # [n, K, d]
            y = _slot_payoffs(tr, a, target)[tr.valid].double()
            A += torch.einsum("nkd,nke->de", xs, xs)
            b += torch.einsum("nkd,nk->d", xs, y)
        torch.testing.assert_close(agent.A[i], A, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(agent.b[i], b, rtol=1e-10, atol=1e-9)
        theta = torch.linalg.solve(A, b)
        torch.testing.assert_close(agent.theta[i].double(), theta, rtol=1e-4, atol=1e-5)

        obs = env.observe()
        x = linear_features(layout, obs[a]).double()
        mean = x @ theta
        width = torch.einsum("ncd,de,nce->nc", x, torch.linalg.inv(A), x).sqrt()
        greedy = agent.score_agent(i, obs[a], explore=False).double()
        explore = agent.score_agent(i, obs[a], explore=True).double()
        torch.testing.assert_close(greedy, mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(explore, mean + alpha * width, rtol=1e-4, atol=1e-4)
        assert float(width.min()) > 0.01  # the bound is not negligible here


@pytest.mark.parametrize(
    ("name", "kwargs", "target"),
    [
        ("popularity", {"source": "own"}, "click"),
        ("epsilon_greedy", {"target": "engagement", "prior_count": 2.0}, "engagement"),
        ("epsilon_greedy", {"target": "click"}, "click"),
    ],
)
def test_item_tables_count_each_shown_items_feedback(market, name, kwargs, target):
    """Per catalog item, the summed payoff (``target``) and the impressions of the agent's
    shown slots on the real steps: the popularity agent's ``clicks`` / ``exposures``
    (``source="own"``), ε-greedy's ``payoff`` / ``count``; ε-greedy scores an item
    ``(payoff + c0 m) / (count + c0)``, ``m`` the mean payoff of all impressions, ``c0``
    its ``prior_count``."""
    env = market(num_envs=6, horizon=7, num_items=300)
    agent = agents.make_agent(name, env, seed=1, **kwargs)
    seen = _recorded(agent, env, 6 * 20)
    payoff_t, count_t = (
        (agent.clicks, agent.exposures) if name == "popularity" else (agent.payoff, agent.count)
    )
    I = env.config.num_items
    for i, a in enumerate(env.agents):
        payoff = torch.zeros(I, dtype=torch.float64)
        count = torch.zeros(I, dtype=torch.float64)
        for tr in seen:
            items = tr.obs[a]["candidate_ids"].gather(1, tr.actions[a])[tr.valid].flatten()
            y = _slot_payoffs(tr, a, target)[tr.valid].double().flatten()
            payoff.index_add_(0, items, y)
            count.index_add_(0, items, torch.ones_like(y))
        torch.testing.assert_close(payoff_t[i].double(), payoff, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(count_t[i].double(), count, rtol=0, atol=0)
        if name == "epsilon_greedy":
            c0 = agent.config.prior_count
            ids = env.observe()[a]["candidate_ids"]
            want = (payoff[ids] + c0 * payoff.sum() / count.sum()) / (count[ids] + c0)
            got = agent.score_agent(i, env.observe()[a]).double()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
