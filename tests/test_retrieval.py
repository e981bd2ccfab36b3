"""Retrieval (DESIGN §3 step 2) draws what its config says, each source alone: the
interest-matched candidates by the user's observed interests, the popular ones leaning to
the head of the popularity list by ``retrieval_skew``, the fresh ones among the latest
``fresh_window`` arrivals. Each agent's K most popular items are always among the
candidates besides (``Catalog.head``); the checks read the other candidates."""

from __future__ import annotations

import pytest
import torch

import recenv

MARKET = "recenv/Market-v0"
SOURCES = ("retrieval_interest", "retrieval_popular", "retrieval_fresh")


def _market(source: str, num_envs: int = 256, **overrides) -> recenv.BatchedMarket:
    mix = {s: float(s == source) for s in SOURCES}
    return recenv.make_vec(MARKET, num_envs=num_envs, seed=11, **mix, **overrides)


def _retrieved(env: recenv.BatchedMarket) -> tuple[torch.Tensor, torch.Tensor]:
    """The current candidates ``[N, A, C]`` and which of them are not a head item."""
    cand = env.cand
    head = env.catalog.head  # [A, K]
    is_head = (cand[..., None] == head[None, :, None, :]).any(-1)
    return cand, ~is_head


def test_interest_matched_candidates_follow_the_users_observed_interests():
    """With the features noiseless and fully visible, every interest-matched candidate's main
    topic is one the user is interested in (but for the 1e-3 floor every topic keeps), in
    proportion to the interest: a user's heavier topic supplies its share of the
    candidates."""
    env = _market("retrieval_interest", num_items=20_000, feature_noise=0.0, feature_visible=1.0)
    T, L = env.config.num_topics, env.layout
    in_support, heavier, want_heavier = [], [], []
    env.reset()
    for _ in range(4):
        cand, retrieved = _retrieved(env)
        interest = env.users[torch.arange(env.num_envs), env.user][:, L.interest]  # [N, T]
        topic = env.catalog.main_topic[cand]  # [N, A, C]
        weight = interest.gather(1, topic.flatten(1)).view_as(topic)
        in_support.append((weight > 0)[retrieved])
        two = (interest > 0).sum(1) == 2  # users with two topics: the heavier one's share
        top = interest.argmax(1)
        share = ((topic == top[:, None, None]) & retrieved).sum((1, 2)) / retrieved.sum((1, 2))
        heavier.append(share[two])
        mass = interest + 1e-3
        want_heavier.append((mass.max(1).values / mass.sum(1))[two])
        slates = env.oracle_slates()
        env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
    support = torch.cat(in_support).float().mean()
    # The floor gives the other topics T x 1e-3 of the mass: ~2 % of draws at T = 16.
    assert float(support) > 1 - 2 * T * 1e-3, float(support)
    got, want = torch.cat(heavier).mean(), torch.cat(want_heavier).mean()
    assert abs(float(got - want)) < 0.03, (float(got), float(want))


@pytest.mark.parametrize("skew", [1.0, 2.0, 4.0])
def test_popular_candidates_lean_to_the_head_by_retrieval_skew(skew):
    """A popular candidate sits at position ``floor(u^skew n)`` of the agent's popularity
    list of ``n`` items (``u`` uniform), so a share ``0.25^(1/skew)`` of the draws is in the
    list's first quarter (0.25, 0.5, 0.71 for skews 1, 2, 4). The draws that hit a head item
    cannot be told from the head itself and are left out of both counts: position ``h`` is
    drawn with probability ``((h + 1) / n)^(1/skew) - (h / n)^(1/skew)``."""
    env = _market("retrieval_popular", retrieval_skew=skew, num_items=20_000)
    cat, A = env.catalog, env.config.num_agents
    rank = torch.full((env.config.num_items,), -1, dtype=torch.float64)
    length = torch.zeros(env.config.num_items, dtype=torch.float64)
    for a in range(A):
        n = int(cat.by_pop_len[a])
        rank[cat.by_pop[a, :n].long()] = torch.arange(n, dtype=torch.float64)
        length[cat.by_pop[a, :n].long()] = n
    env.reset()
    quarter = []
    for _ in range(3):
        cand, retrieved = _retrieved(env)
        quarter.append((rank[cand] < 0.25 * length[cand])[retrieved])
        slates = env.oracle_slates()
        env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
    want = []
    for a in range(A):
        n = int(cat.by_pop_len[a])
        h = rank[cat.head[a].long()]  # the head's positions, all in the first quarter
        p_head = float((((h + 1) / n) ** (1 / skew) - (h / n) ** (1 / skew)).sum())
        want.append((0.25 ** (1 / skew) - p_head) / (1 - p_head))
    got = torch.cat(quarter).double().mean()
    # ~26k draws: a standard error of 0.003.
    assert float(got) == pytest.approx(sum(want) / A, abs=0.015), want


def test_fresh_candidates_come_from_the_latest_arrivals():
    """Every fresh candidate is among the agent's ``fresh_window`` latest items to have
    arrived by the request (in arrival order), and the draws reach across the window."""
    window = 30
    env = _market(
        "retrieval_fresh",
        num_envs=64,
        num_items=6_000,
        new_item_fraction=0.5,
        horizon=100,
        fresh_window=window,
    )
    cat, A = env.catalog, env.config.num_agents
    env.reset()
    oldest_used = 0
    for _ in range(40):
        cand, retrieved = _retrieved(env)
        for a in range(A):
            for n in range(env.num_envs):
                t = int(env.t[n])
                arrived = cat.by_arrival[a][cat.arrival_sorted[a] <= t].long()
                latest = arrived[-window:]
                picked = cand[n, a][retrieved[n, a]]
                where = (picked[:, None] == latest[None, :]).float().argmax(1)
                assert bool(torch.isin(picked, latest).all()), (t, a, n)
                oldest_used = max(oldest_used, window - int(where.min()))
        slates = env.oracle_slates()
        env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
    assert oldest_used >= window - 2  # the window's oldest items are drawn too
