"""The simulator's contracts over random market configurations, not just the presets.

The other tests pin the presets (and a few chosen variations); bugs in a simulator like this one
hide in the corners of the config space: one agent, a slate as large as the candidate list, a
catalog just large enough, hashed item counters, zero noise, extreme temperatures, churn that
never returns or always does. :func:`random_config` draws a valid config from the whole space,
leaning on the edges, with the categorical fields (topology, page order, response, reward
mode, ownership, invalid-slate policy) cycled by the seed so that a handful of seeds covers
each of their values. Every test here checks invariants that hold for any valid config.
"""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import numpy as np
import pytest
import torch

import recenv
from agents.registry import agent_class, load_agent, make_agent, registered_agents
from agents.rollout import evaluate, train
from recenv.core.config import (
    INVALID_SLATE_POLICIES,
    OWNERSHIPS,
    PAGE_ORDERS,
    RESPONSES,
    REWARD_MODES,
    TOPOLOGIES,
    InvalidConfig,
    MarketConfig,
)

MARKET = "recenv/Market-v0"


def random_config(seed: int, max_horizon: int = 12) -> dict[str, Any]:
    """A valid ``MarketConfig`` as keyword arguments, drawn from ``seed`` (see module doc)."""
    r = random.Random(seed)
    for _ in range(100):
        cfg = _draw(r, seed, max_horizon)
        try:
            MarketConfig(**cfg)
        except InvalidConfig:  # rare: a catalog one item short after rounding, say
            continue
        return cfg
    raise AssertionError(f"no valid config drawn for seed {seed}")


def _draw(r: random.Random, seed: int, max_horizon: int) -> dict[str, Any]:
    def cycle(values: tuple[str, ...], salt: int) -> str:
        return values[(seed + salt) % len(values)]

    A, T = r.randint(1, 4), r.randint(1, 12)
    C = r.randint(1, 24)
    K = r.choice([1, C, r.randint(1, min(C, 5))])
    new = r.choice([0.0, r.uniform(0.0, 0.9)])
    ownership = cycle(OWNERSHIPS, 1)
    # From a catalog barely large enough for C candidates per agent to one with hashed counters.
    barely = math.ceil(C / (1.0 - new)) * (A if ownership == "partition" else 1) + A + 2
    num_items = r.choice([barely, r.randint(200, 3000), r.randint(5000, 40000)])
    shares = [r.random() * r.choice([0, 1, 1]) for _ in range(3)]
    shares = shares if sum(shares) > 0 else [1.0, 0.0, 0.0]
    interest, popular = shares[0] / sum(shares), shares[1] / sum(shares)
    satisfaction_init = r.uniform(0.05, 1.0)
    extras = float((seed // len(REWARD_MODES)) % 2)
    response = cycle(RESPONSES, 0)
    return dict(
        num_agents=A,
        num_topics=T,
        max_item_topics=r.randint(1, min(T, 4)),
        embed_dim=r.randint(1, 8),
        num_users=r.randint(1, 40),
        num_candidates=C,
        slate_size=K,
        horizon=r.randint(1, max_horizon),
        num_items=num_items,
        ownership=ownership,
        new_item_fraction=new,
        item_stats_size=r.choice([1, 7, 4096, r.randint(1, 5000)]),
        zipf_exponent=r.choice([0.0, 1.1, r.uniform(0.0, 3.0)]),
        quality_std=r.choice([0.0, 0.5, 2.0]),
        # (a purchase needs prices: response="purchase" with price_scale=0 is refused)
        price_scale=r.choice([0.0, r.uniform(0.0, 5.0)])
        or (1.0 if response == "purchase" else 0.0),
        mean_item_length=r.uniform(0.05, 5.0),
        retrieval_interest=interest,
        retrieval_popular=popular,
        retrieval_fresh=max(0.0, 1.0 - interest - popular),
        retrieval_skew=r.uniform(1.0, 5.0),
        fresh_window=r.choice([1, 50, r.randint(1, 500)]),
        feature_noise=r.choice([0.0, 0.1, 2.0]),
        feature_visible=r.choice([0.0, 1.0, r.random()]),
        quality_noise=r.choice([0.0, 0.3]),
        topology=cycle(TOPOLOGIES, 0),
        page_order=cycle(PAGE_ORDERS, 3),
        interest_weight=r.uniform(0.0, 5.0),
        taste_weight=r.uniform(0.0, 3.0),
        quality_weight=r.uniform(0.0, 3.0),
        boredom_weight=r.uniform(0.0, 5.0),
        price_sensitivity=r.choice([0.0, r.uniform(0.0, 3.0)]),
        position_bias=r.choice([0.0, 1.0, 5.0]),
        no_click_utility=r.uniform(-5.0, 10.0),
        temperature=r.choice([0.01, 1.0, r.uniform(0.05, 10.0)]),
        loyalty_weight=r.uniform(0.0, 5.0),
        leave_utility=r.uniform(-5.0, 5.0),
        response=response,
        engagement_noise=r.choice([0.0, 0.2, 3.0]),
        interest_drift=r.random(),
        boredom_growth=r.uniform(0.0, 3.0),
        boredom_exposure=r.random(),
        boredom_decay=r.choice([0.0, 1.0, r.random()]),
        satisfaction_init=satisfaction_init,
        satisfaction_rate=r.random(),
        expectation=r.random(),
        loyalty_rate=r.random(),
        session_budget=r.uniform(0.05, 20.0),
        browse_cost=r.choice([0.0, r.uniform(0.0, 3.0)]),
        session_gap=r.randint(0, 10),
        churn_threshold=r.uniform(0.0, 0.999 * satisfaction_init),
        return_prob=r.choice([0.0, 1.0, r.random()]),
        reward_mode=cycle(REWARD_MODES, 0),
        team_weight=r.random(),
        # The optional reward terms: none for half the seeds (every reward mode among them).
        welfare_weight=extras * r.choice([0.0, r.uniform(0.0, 2.0)]),
        diversity_weight=extras * r.choice([0.0, r.uniform(0.0, 2.0)]),
        fairness_weight=extras * r.choice([0.0, r.uniform(0.0, 2.0)]),
        invalid_slate=cycle(INVALID_SLATE_POLICIES, 1),
    )


def random_slates(obs, agents, K: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A uniformly random valid slate per agent and market: K distinct unmasked candidates."""
    out = {}
    for a in agents:
        mask = obs[a]["action_mask"].bool()
        keys = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
        out[a] = keys.topk(K, dim=-1).indices
    return out


def _assert_finite(x: Any, what: str) -> None:
    if torch.is_tensor(x) and x.is_floating_point():
        assert torch.isfinite(x).all(), f"{what} is not finite: {x}"


def _assert_episode_metric(key: str, x: Any, cfg: dict[str, Any], what: str) -> None:
    """Finite, but coverage may be NaN with hashed counters (``num_items >
    item_stats_size``): an episode that exposes every counter has no estimate."""
    if key == "coverage" and cfg["num_items"] > cfg["item_stats_size"]:
        x = torch.as_tensor(x)
        x = x[~x.isnan()]
    _assert_finite(x, what)


def _check_observation(env, obs, cfg: dict[str, Any], where: str) -> None:
    """Finite features; at least K unmasked candidates, distinct, in range, owned by the agent
    (partition) and arrived by the market's clock."""
    K = cfg["slate_size"]
    catalog = env.catalog
    for i, a in enumerate(env.agents):
        for key, value in obs[a].items():
            _assert_finite(value, f"{where} {a} {key}")
        mask = obs[a]["action_mask"].bool()
        assert (mask.sum(-1) >= K).all(), f"{where} {a}: fewer than K={K} unmasked candidates"
        ids = obs[a]["candidate_ids"]
        shown = ids[mask]
        assert ((shown >= 0) & (shown < cfg["num_items"])).all(), f"{where} {a}: ids out of range"
        owner = catalog.owner[ids.clamp(0, cfg["num_items"] - 1)]
        assert ((owner == i) | (owner < 0))[mask].all(), f"{where} {a}: another agent's item"
        arrival = catalog.arrival[ids.clamp(0, cfg["num_items"] - 1)]
        assert (arrival <= env.t[:, None])[mask].all(), f"{where} {a}: item not arrived yet"
        for n in range(ids.shape[0]):
            unmasked = ids[n][mask[n]].tolist()
            assert len(set(unmasked)) == len(unmasked), f"{where} {a} market {n}: duplicates"


def _check_step(env, rewards, info, cfg: dict[str, Any], where: str) -> None:
    """Choice, engagement and rewards consistent with each other and with the reward mode."""
    A, K = cfg["num_agents"], cfg["slate_size"]
    R = torch.stack([rewards[a] for a in env.agents], 1)  # [N, A]
    _assert_finite(R, f"{where} rewards")
    agent, slot, engagement = info["chosen_agent"], info["chosen_slot"], info["engagement"]
    assert ((agent >= -1) & (agent < A)).all() and ((slot >= -1) & (slot < K)).all(), where
    assert torch.equal(agent >= 0, info["clicked"].bool()), f"{where}: clicked vs chosen_agent"
    assert torch.equal(agent >= 0, slot >= 0), f"{where}: chosen_slot vs chosen_agent"
    _assert_finite(engagement, f"{where} engagement")
    assert (engagement >= 0).all() and (engagement[agent < 0] == 0).all(), where
    assert (R[info["reset"].bool()] == 0).all(), f"{where}: reward on an auto-reset step"
    if cfg["reward_mode"] == "cooperative":
        torch.testing.assert_close(R, R[:, :1].expand_as(R), msg=f"{where}: team rewards")
    extra = cfg["welfare_weight"] + cfg["diversity_weight"] + cfg["fairness_weight"]
    if cfg["reward_mode"] == "competitive" and extra == 0:
        won = torch.zeros_like(R)
        won.scatter_(1, agent.clamp(min=0)[:, None], engagement.to(R.dtype)[:, None])
        torch.testing.assert_close(R, won, msg=f"{where}: the winner's engagement, others 0")
    for key, value in info["utility"].items():
        _assert_finite(value, f"{where} utility {key}")
    if "episode" in info:
        ended = info["_episode"].bool()
        for key, value in info["episode"].items():
            _assert_episode_metric(key, value[ended], cfg, f"{where} episode {key}")


@pytest.mark.parametrize("seed", range(12))
def test_random_markets_keep_their_invariants(seed):
    """Over two episodes and their auto-resets, with random valid slates: the observation and
    step invariants above, a finite global state, and a copy pickled at a random step that
    steps on identically."""
    cfg = random_config(seed)
    r = random.Random(~seed)
    env = recenv.make_vec(MARKET, num_envs=r.randint(1, 3), seed=seed, **cfg)
    g = torch.Generator().manual_seed(seed)
    obs = env.reset()
    _check_observation(env, obs, cfg, "reset")
    steps = 2 * cfg["horizon"] + 3
    fork, twin = r.randrange(steps), None
    for t in range(steps):
        if t == fork:
            twin = pickle.loads(pickle.dumps(env))
        actions = random_slates(obs, env.agents, cfg["slate_size"], g)
        obs, rewards, _, _, info = env.step(actions)
        where = f"config {seed} step {t}"
        _check_observation(env, obs, cfg, where)
        _check_step(env, rewards, info, cfg, where)
        _assert_finite(env.state(), f"{where} state")
        if twin is not None:
            twin_obs, twin_rewards, *_ = twin.step(actions)
            for a in env.agents:
                assert torch.equal(twin_rewards[a], rewards[a]), f"{where}: pickled copy"
                for key, value in obs[a].items():
                    assert torch.equal(twin_obs[a][key], value), f"{where}: pickled copy {key}"


@pytest.mark.parametrize("seed", range(12, 20))
def test_random_market_face_equals_its_batched_market(seed):
    """The PettingZoo face and ``make_vec(num_envs=1)`` with one seed: equal observations
    (inside the face's observation spaces) and rewards, through the end of an episode."""
    cfg = random_config(seed)
    face = recenv.make(MARKET, seed=seed, **cfg)
    vec = recenv.make_vec(MARKET, num_envs=1, seed=seed, **cfg)
    face_obs, _ = face.reset()
    vec_obs = vec.reset()
    g = torch.Generator().manual_seed(seed)
    for t in range(cfg["horizon"]):
        for a in vec.agents:
            assert face.observation_space(a).contains(face_obs[a]), f"step {t} {a}"
            for key, value in face_obs[a].items():
                np.testing.assert_array_equal(
                    np.asarray(value), vec_obs[a][key][0].numpy(), err_msg=f"step {t} {a} {key}"
                )
        actions = random_slates(vec_obs, vec.agents, cfg["slate_size"], g)
        vec_obs, vec_rewards, vec_term, vec_trunc, _ = vec.step(actions)
        face_obs, face_rewards, face_term, face_trunc, _ = face.step(
            {a: x[0].numpy() for a, x in actions.items()}
        )
        assert face_rewards == {a: float(x[0]) for a, x in vec_rewards.items()}, f"step {t}"
        assert set(face_term.values()) == {bool(vec_term[0])}, f"step {t}"
        assert set(face_trunc.values()) == {bool(vec_trunc[0])}, f"step {t}"
        if not face.agents:
            break
    assert not face.agents  # ended by the horizon, or earlier when every user churned


def _corrupt(kind: str, slate: torch.Tensor, mask: torch.Tensor, C: int) -> torch.Tensor | None:
    """``slate`` [N, K] made invalid in market 0 as ``kind`` says (None when impossible)."""
    x = slate.clone()
    if kind == "out_of_range":
        x[0, -1] = C
    elif kind == "negative":
        x[0, 0] = -1
    elif kind == "duplicate":
        if x.shape[1] < 2:
            return None
        x[0, 1] = x[0, 0]
    elif kind == "masked":
        masked = (~mask[0]).nonzero().flatten()
        if masked.numel() == 0:
            return None
        x[0, 0] = masked[0]
    elif kind == "nan":
        x = x.float()
        x[0, 0] = math.nan
    elif kind == "fraction":
        x = x.float() + 0.5
    elif kind == "shape":
        x = x[:, :-1] if x.shape[1] > 1 else torch.cat([x, x], 1)
    return x


CORRUPTIONS = ("out_of_range", "negative", "duplicate", "masked", "nan", "fraction", "shape")


@pytest.mark.parametrize("seed", range(20, 26))
def test_refused_slates_leave_random_markets_untouched(seed, snapshot, assert_same):
    """``invalid_slate='raise'``: every kind of bad slate, given to a random agent outside an
    auto-reset step, raises ``ValueError`` naming that agent and changes nothing, so the market
    then steps on exactly as a twin that never saw it."""
    cfg = {**random_config(seed), "invalid_slate": "raise"}
    r = random.Random(seed)
    N = r.randint(1, 3)
    env = recenv.make_vec(MARKET, num_envs=N, seed=seed, **cfg)
    twin = recenv.make_vec(MARKET, num_envs=N, seed=seed, **cfg)
    obs, _ = env.reset(), twin.reset()
    g = torch.Generator().manual_seed(seed)
    K, C = cfg["slate_size"], cfg["num_candidates"]
    refused = 0
    for t in range(2 * cfg["horizon"] + 2):
        actions = random_slates(obs, env.agents, K, g)
        if not bool(env.needs_reset.any()):  # an auto-reset step ignores actions
            agent = r.choice(env.agents)
            bad = _corrupt(r.choice(CORRUPTIONS), actions[agent], obs[agent]["action_mask"], C)
            if bad is not None:
                before = snapshot(env)
                with pytest.raises(ValueError, match=agent):
                    env.step({**actions, agent: bad})
                assert_same(before, snapshot(env))
                refused += 1
        obs, rewards, *_ = env.step(actions)
        twin_obs, twin_rewards, *_ = twin.step(actions)
        for a in env.agents:
            assert torch.equal(rewards[a], twin_rewards[a]), f"step {t} {a}"
            for key, value in obs[a].items():
                assert torch.equal(value, twin_obs[a][key]), f"step {t} {a} {key}"
    assert refused > 0


# Small learning budgets so that every learner updates within a few dozen steps.
FAST_LEARNERS = {
    "iql": dict(batch_size=16, learning_starts=32, update_every=4, buffer_size=400),
    "qmix": dict(batch_size=16, learning_starts=32, update_every=4, buffer_size=400, n_step=3),
    "vdn": dict(batch_size=16, learning_starts=32, update_every=4, buffer_size=400),
    "mappo": dict(rollout_steps=8, epochs=2, minibatches=2),
    "ippo": dict(rollout_steps=8, epochs=2, minibatches=2, shared_actor=False),
}


@pytest.mark.parametrize("seed", range(26, 29))
def test_every_agent_runs_on_random_markets(seed, tmp_path):
    """Each registered agent trains (finite update metrics and episode figures), evaluates,
    and comes back from its checkpoint acting as before, on random markets. Agents made for
    cooperative markets get one (the rest of the config unchanged)."""
    cfg = random_config(seed)
    N = random.Random(seed).randint(1, 3)
    for name in registered_agents():
        kwargs = FAST_LEARNERS.get(name, {})
        env_cfg = dict(cfg)
        modes = agent_class(name).supports_reward_modes
        if cfg["reward_mode"] not in modes:
            env_cfg["reward_mode"] = modes[0]
        env = recenv.make_vec(MARKET, num_envs=N, seed=seed, **env_cfg)
        agent = make_agent(name, env, **kwargs)
        trained = train(agent, env, 40 * N + 7, seed=seed)
        for steps, metrics in trained.metrics:
            for key, value in metrics.items():
                assert math.isfinite(float(value)), f"{name} at {steps}: {key}={value}"
        evaluated = evaluate(agent, env, seed=seed + 1)
        assert evaluated.num_episodes == N, name
        for key, value in {**trained.episodes, **evaluated.episodes}.items():
            _assert_episode_metric(key, value, env_cfg, f"{name} episode {key}")
        path = tmp_path / f"{name}.pt"
        agent.save(path)
        other = recenv.make_vec(MARKET, num_envs=N, seed=seed, **env_cfg)
        loaded = load_agent(path, other)
        for a, e in ((agent, env), (loaded, other)):
            a.bind(e)
            a.begin_episode(None)
        obs, other_obs = env.reset(seed=3), other.reset(seed=3)
        want, got = agent.act(obs), loaded.act(other_obs)
        for a in want:
            assert torch.equal(want[a], got[a]), f"{name}: the loaded agent acts otherwise"
