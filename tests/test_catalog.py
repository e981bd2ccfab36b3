"""The catalog and the retrieval stage (DESIGN §3 "Items", step 2): ownership, cold start, and
the candidate sets every agent receives."""

from __future__ import annotations

import pytest
import torch

import recenv
from recenv.core.catalog import build_catalog
from recenv.core.config import MarketConfig

MARKET = "recenv/Market-v0"


def _walk(env: recenv.BatchedMarket, steps: int, random_policy, check) -> None:
    """Step ``env`` with random valid slates, calling ``check(env, obs)`` at every request
    (including the first one and those after auto-resets)."""
    g = torch.Generator().manual_seed(0)
    K = env.config.slate_size
    obs = env.reset()
    for _ in range(steps):
        check(env, obs)
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, *_ = env.step(acts)
    check(env, obs)


def _candidate_invariants(env: recenv.BatchedMarket, obs) -> None:
    cat, cfg = env.catalog, env.config
    K = cfg.slate_size
    for i, a in enumerate(env.agents):
        ids, mask = obs[a]["candidate_ids"], obs[a]["action_mask"]
        assert torch.equal(ids, env.cand[:, i]) and torch.equal(mask, env.cand_mask[:, i])
        # Ownership: an agent only ever gets items it owns (or shared ones).
        owner = cat.owner[ids]
        assert ((owner == i) | (owner == -1)).all(), f"{a} got another agent's item"
        # Cold start: no item that has not arrived yet is offered unmasked.
        arrived = cat.arrival[ids] <= env.t[:, None]
        assert (arrived | ~mask).all(), f"{a} offered an item before its arrival"
        # At least K unmasked candidates, and no duplicate among the unmasked ones.
        assert (mask.sum(1) >= K).all()
        for n in range(env.num_envs):
            live = ids[n][mask[n]]
            assert live.unique().numel() == live.numel(), f"{a} got a duplicate candidate"


def test_candidate_sets(env_id, small, random_policy):
    """At every request of two episodes, on every preset: each agent's candidates are items it
    owns (``catalog.owner``), unmasked candidates have arrived (``arrival <= t``), at least K
    are unmasked, unmasked ids are distinct, and the observation's ids and mask are the
    market's ``cand`` / ``cand_mask``."""
    kwargs = small(env_id, horizon=20)
    env = recenv.make_vec(env_id, num_envs=8, seed=0, **kwargs)
    _walk(env, 2 * env.config.horizon + 1, random_policy, _candidate_invariants)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ownership": "shared"},
        {"new_item_fraction": 0.9, "num_items": 1000},
        {"num_agents": 4, "num_items": 600},
        {"num_topics": 2, "max_item_topics": 1},
        {"num_items": 5000, "item_stats_size": 1024},
        {"retrieval_interest": 1.0, "retrieval_popular": 0.0, "retrieval_fresh": 0.0},
        {"retrieval_interest": 0.0, "retrieval_popular": 0.0, "retrieval_fresh": 1.0},
        {"slate_size": 20, "num_candidates": 20},
    ],
    ids=[
        "shared",
        "mostly_new",
        "four_agents",
        "two_topics",
        "hashed_stats",
        "interest_only",
        "fresh_only",
        "K_equals_C",
    ],
)
def test_candidate_sets_under_stress(random_policy, overrides):
    """The same invariants for catalog shapes that stress retrieval: shared ownership, 90 % of
    items arriving late, more agents, few topics, hashed item statistics, a single retrieval
    source, and K = C."""
    kwargs = {"num_items": 500, "horizon": 25, **overrides}
    env = recenv.make_vec(MARKET, num_envs=6, seed=3, **kwargs)
    _walk(env, 30, random_policy, _candidate_invariants)


def test_ownership_is_a_partition():
    """``ownership="partition"`` gives every item exactly one owner among the A agents, in
    near-equal shares (±1 item); ``"shared"`` marks every item -1."""
    cfg = MarketConfig(num_agents=3, num_items=1000)
    owner = build_catalog(cfg).owner
    assert ((owner >= 0) & (owner < 3)).all()
    counts = torch.bincount(owner, minlength=3)
    assert counts.sum() == 1000 and counts.max() - counts.min() <= 1
    shared = build_catalog(MarketConfig(num_items=1000, ownership="shared")).owner
    assert (shared == -1).all()


def test_catalog_contents():
    """Items as DESIGN §3 describes them: sparse topic vectors (1..max_item_topics non-zero
    weights summing to 1), a long-tail popularity prior summing to 1, positive lengths,
    non-negative prices, and arrival times in [0, H) with about ``new_item_fraction`` late."""
    cfg = MarketConfig(num_items=4000, max_item_topics=3, price_scale=2.0, horizon=100)
    cat = build_catalog(cfg)
    nnz = (cat.topics > 0).sum(1)
    assert ((nnz >= 1) & (nnz <= 3)).all()
    torch.testing.assert_close(cat.topics.sum(1), torch.ones(4000))
    torch.testing.assert_close(cat.popularity.sum(), torch.tensor(1.0))
    top = cat.popularity.sort(descending=True).values
    assert top[:40].sum() > 0.3  # the top 1 % of items hold a large share: a long tail
    assert (cat.length > 0).all() and (cat.price >= 0).all() and (cat.price > 0).any()
    assert ((cat.arrival >= 0) & (cat.arrival < cfg.horizon)).all()
    late = (cat.arrival > 0).float().mean()
    assert abs(late - cfg.new_item_fraction) < 0.03  # binomial sd ≈ 0.006 at I = 4000


def test_item_rows_hold_each_item_attribute_in_whole_cache_lines():
    """The one per-item table a step reads: every column equals the catalog field it copies
    (the candidate features first, as agents observe them), rows are whole 64-byte lines, and
    a market builds it at construction (never inside a compiled step)."""
    from recenv.core.catalog import ItemRow

    cfg = MarketConfig(num_items=300, num_topics=5, embed_dim=3, price_scale=1.0)
    cat = build_catalog(cfg)
    lay, rows = ItemRow(5, 3), cat.item_rows
    assert rows.shape == (300, lay.width) and (lay.width * 4) % 64 == 0
    assert torch.equal(rows[:, lay.topics], cat.topics)
    assert torch.equal(rows[:, lay.embed], cat.embed)
    for col, field in [
        (lay.length, cat.length),
        (lay.price, cat.price),
        (lay.observed_quality, cat.quality + cat.quality_noise),
        (lay.arrival, cat.arrival.float()),
        (lay.quality, cat.quality),
        (lay.novelty, cat.novelty),
    ]:
        assert torch.equal(rows[:, col], field)
    assert rows.shape[1] >= lay.features.stop == cfg.candidate_dim
    env = recenv.make_vec(MARKET, num_envs=1, seed=0, num_items=300)
    assert "_item_rows" in env.catalog.__dict__


def test_retrieval_lists_are_int32_ids_of_the_agents_items():
    cfg = MarketConfig(num_items=500)
    cat = build_catalog(cfg)
    for lists in (cat.by_topic, cat.by_pop, cat.by_arrival):
        assert lists.dtype == torch.int32
        assert ((lists >= 0) & (lists < cfg.num_items)).all()
    mine = cat.owner[cat.by_pop[0, : int(cat.by_pop_len[0])].long()]
    assert ((mine == 0) | (mine < 0)).all()


def test_catalog_is_part_of_the_scenario():
    """The catalog comes from ``catalog_seed``, not from the env seed: two envs with different
    seeds share it; another ``catalog_seed`` gives another catalog."""
    a = recenv.make_vec(MARKET, num_envs=1, seed=1, num_items=500).catalog
    b = recenv.make_vec(MARKET, num_envs=1, seed=2, num_items=500).catalog
    c = recenv.make_vec(MARKET, num_envs=1, seed=1, num_items=500, catalog_seed=1).catalog
    assert torch.equal(a.topics, b.topics) and torch.equal(a.owner, b.owner)
    assert not torch.equal(a.topics, c.topics)


def test_new_items_reach_agents():
    """Cold start works: items that arrive during the episode are offered (unmasked) after
    their arrival, so fresh items can be recommended at all."""
    env = recenv.make_vec(MARKET, num_envs=8, seed=0, num_items=500, horizon=40)
    seen_new = torch.zeros((), dtype=torch.bool)

    def check(env, obs):
        nonlocal seen_new
        late = env.catalog.arrival[env.cand] > 0
        seen_new |= (late & env.cand_mask).any()

    obs = env.reset()
    for _ in range(39):
        check(env, obs)
        s = env.oracle_slates()
        obs, *_ = env.step({a: s[:, i] for i, a in enumerate(env.agents)})
    assert bool(seen_new)


def test_every_valid_config_builds():
    """A config that passes validation builds a working market: for tiny catalogs (8 items,
    2 agents, C = K = 3) and 20 catalog seeds, the env builds, resets, and offers K unmasked
    candidates to every agent.

    Regression test: validation used the expected number of items present at t=0 while the
    catalog drew arrivals at random, so an agent could own fewer than K of them and the build
    failed in ``torch.stack`` (RuntimeError)."""
    for catalog_seed in range(20):
        kwargs = dict(num_items=8, num_candidates=3, slate_size=3, catalog_seed=catalog_seed)
        MarketConfig(**kwargs)  # validates
        env = recenv.make_vec(MARKET, num_envs=1, seed=0, **kwargs)
        env.reset()
        assert (env.cand_mask.sum(2) >= 3).all()


def test_item_draws_follow_their_configured_distributions():
    """Each item attribute has the distribution its config field names: ``price_scale`` the
    *mean* price, ``mean_item_length`` the *mean* length (log-normal both, so the mean needs
    its correction), ``quality_std`` and ``quality_noise`` the standard deviations of the
    quality and of its observed noise, and ``zipf_exponent`` the exponent of the popularity
    prior: the item of popularity rank r holds a share proportional to r^-s. The latent
    embeddings have N(0, 1/D) entries (``Catalog.embed``: unit expected squared norm). Over
    200,000 items the means' standard errors are ~0.15 % of them; the tolerances are 1 %."""
    cfg = MarketConfig(
        num_items=200_000,
        price_scale=2.0,
        mean_item_length=1.5,
        quality_std=0.7,
        quality_noise=0.4,
        zipf_exponent=1.3,
    )
    cat = build_catalog(cfg)
    assert float(cat.price.double().mean()) == pytest.approx(2.0, rel=0.01)
    assert float(cat.length.double().mean()) == pytest.approx(1.5, rel=0.01)
    assert float(cat.quality.double().std()) == pytest.approx(0.7, rel=0.01)
    assert abs(float(cat.quality.double().mean())) < 0.01
    assert float(cat.quality_noise.double().std()) == pytest.approx(0.4, rel=0.01)
    assert float(cat.embed.double().pow(2).sum(1).mean()) == pytest.approx(1.0, rel=0.01)
    by_rank = cat.popularity.double().sort(descending=True).values
    ranks = torch.tensor([2.0, 10.0, 1000.0], dtype=torch.float64)
    torch.testing.assert_close(
        by_rank[0] / by_rank[ranks.long() - 1], ranks**1.3, rtol=1e-4, atol=0
    )
