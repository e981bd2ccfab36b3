"""The observation layout the agents read matches what the simulator writes."""

from __future__ import annotations

import torch

from agents.features import ObsLayout, linear_features, pair_features


def test_candidate_columns_match_the_simulator(market):
    env = market(num_envs=8, horizon=50)
    obs = env.reset()
    lay = ObsLayout(env.config.num_topics)
    cat = env.catalog
    seen_click = False
    for _ in range(40):
        for a in env.agents:
            o = obs[a]
            ids = o["candidate_ids"]
            c = o["candidates"]
            assert torch.allclose(c[..., lay.cand_topics], cat.topics[ids])
            assert torch.allclose(c[..., lay.cand_length], cat.length[ids])
            assert torch.allclose(c[..., lay.cand_price], cat.price[ids])
            assert torch.allclose(
                c[..., lay.cand_quality], cat.quality[ids] + cat.quality_noise[ids]
            )
            # log1p counts: non-negative, and an item clicked more than exposed is impossible
            assert (c[..., lay.cand_clicks] >= 0).all()
            assert (c[..., lay.cand_clicks] <= c[..., lay.cand_exposures] + 1e-6).all()
            seen_click |= bool((c[..., lay.cand_clicks] > 0).any())
        acts = {a: obs[a]["candidates"][..., lay.cand_quality].masked_fill(
            ~obs[a]["action_mask"], -1e9).topk(env.config.slate_size, 1).indices
            for a in env.agents}  # fmt: skip
        obs, *_ = env.step(acts)
    assert seen_click


def test_history_profile_follows_own_clicks(market):
    """The history's first T columns grow with the topics of the agent's own clicked items."""
    env = market(num_envs=16, horizon=50)
    obs = env.reset()
    lay = ObsLayout(env.config.num_topics)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        acts = {a: torch.rand(obs[a]["action_mask"].shape, generator=g).masked_fill(
            ~obs[a]["action_mask"], -1).topk(env.config.slate_size, 1).indices
            for a in env.agents}  # fmt: skip
        obs, _, _, _, _info = env.step(acts)
    profile = obs["agent_0"]["history"][:, lay.history_profile]
    assert (profile >= 0).all() and profile.sum() > 0


def test_feature_shapes(market):
    env = market()
    obs = env.reset()["agent_0"]
    lay = ObsLayout(env.config.num_topics)
    c = env.config
    assert pair_features(lay, obs).shape == (
        4,
        c.num_candidates,
        lay.pair_dim(c.user_dim, c.history_dim, c.candidate_dim),
    )
    assert linear_features(lay, obs).shape == (4, c.num_candidates, lay.linear_dim())


def test_pair_and_linear_features_by_hand():
    """One request, two candidates, T = 2 topics, every column written out: the pair features
    are the context (user, history), the candidate's own columns, then the crosses (observed
    interest x item topics, own clicked-topic profile x item topics, and the sum of each);
    the linear features a bias, the candidate's six scalars, its topics and the crosses."""
    lay = ObsLayout(2)
    obs = {
        "user": torch.tensor([[0.5, 2.0, 0.3, 0.7]]),  # interests (2), depth, visits
        "history": torch.tensor([[3.0, -1.0, 4.0, 1.0, 0.2, 9.0]]),  # profile (2), ...
        "candidates": torch.tensor(
            [[[1.0, 0.0, 11, 12, 13, 14, 15, 16], [0.25, 0.75, 21, 22, 23, 24, 25, 26]]]
        ),
    }
    crosses = torch.tensor(
        [
            [0.5, 0.0, 3.0, 0.0, 0.5, 3.0],
            [0.125, 1.5, 0.75, -0.75, 1.625, 0.0],
        ]
    )
    ctx = torch.cat([obs["user"][0], obs["history"][0]])
    want_pair = torch.stack(
        [torch.cat([ctx, obs["candidates"][0, c], crosses[c]]) for c in range(2)]
    )
    torch.testing.assert_close(pair_features(lay, obs), want_pair[None])
    want_linear = torch.stack(
        [
            torch.cat(
                [
                    torch.ones(1),
                    obs["candidates"][0, c, 2:],
                    obs["candidates"][0, c, :2],
                    crosses[c],
                ]
            )
            for c in range(2)
        ]
    )
    torch.testing.assert_close(linear_features(lay, obs), want_linear[None])
