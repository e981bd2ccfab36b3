"""Configurations at the edges of what ``MarketConfig`` accepts, on both faces.

A config the market accepts must step without NaN or infinite rewards, observations or
``state()``; one it cannot step so must be refused when it is built, naming the field and its
allowed values. Found by a bug hunt at the ends of every field's range (the structural edges,
one user, one agent, K = C, C = I, one topic, horizon 1, hashed counters, are covered by
``test_random_configs.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recenv
from recenv.core.config import (
    MAX_VALUE_SCALE,
    VALUE_SCALES,
    InvalidConfig,
    MarketConfig,
)

MARKET = "recenv/Market-v0"


# --------------------------------------------------------------------------------------------
# Scales of lengths, budgets, noise and rewards (MAX_VALUE_SCALE)
# --------------------------------------------------------------------------------------------
# Each was accepted at float32's largest values and then stepped into inf or NaN.
UNBOUNDED_CASES = [
    # exp(s z - s**2 / 2) with s z = inf and s**2 / 2 = inf: NaN engagement and rewards
    {"engagement_noise": 3e38},
    # infinite item lengths in the observation; NaN rewards (0 * inf) for the agents not clicked
    {"mean_item_length": 3e38},
    # the session budget overflows: state() holds budget / session_budget = inf
    {"session_budget": 3e38},
    # infinite user features and observed qualities
    {"feature_noise": 3e38},
    {"quality_noise": 3e38},
    # infinite rewards; NaN under reward_mode='mixed' with team_weight=1 (0 * inf)
    {"fairness_weight": 3e38, "reward_mode": "mixed", "team_weight": 1.0},
    {"welfare_weight": 3e38},
    {"diversity_weight": 3e38, "reward_mode": "cooperative"},
]


@pytest.mark.parametrize("overrides", UNBOUNDED_CASES, ids=lambda o: next(iter(o)))
def test_scales_that_overflowed_float32_are_refused_on_every_face(overrides):
    """Regression test: each of these configs was accepted and its market then gave NaN or
    infinite rewards, observations or state within a few steps. Each is refused when built
    (``MarketConfig``, ``make``, ``make_vec``), naming the field, its value and the bound."""
    name = next(iter(overrides))
    for build in (
        lambda **k: MarketConfig(**k),
        lambda **k: recenv.make(MARKET, **k),
        lambda **k: recenv.make_vec(MARKET, num_envs=2, **k),
    ):
        with pytest.raises(InvalidConfig) as err:
            build(**overrides)
        msg = str(err.value)
        assert f"{name}=3e+38 must be <= 1e6" in msg, msg
        assert "float32" in msg and "MAX_VALUE_SCALE" in msg, msg


@pytest.mark.parametrize("name", VALUE_SCALES)
def test_each_value_scale_is_bounded_and_the_bound_is_allowed(name):
    """Past 1e6 refused by name; 1e6 itself allowed. Negative values stay the non-negativity
    (or positivity) rules' to name, once, without the bound."""
    with pytest.raises(InvalidConfig, match=rf"{name}=2000000.0 must be <= 1e6"):
        MarketConfig(**{name: 2 * MAX_VALUE_SCALE})
    assert getattr(MarketConfig(**{name: MAX_VALUE_SCALE}), name) == MAX_VALUE_SCALE
    with pytest.raises(InvalidConfig) as err:
        MarketConfig(**{name: -1.0})
    assert name in str(err.value) and "1e6" not in str(err.value)


def test_several_value_scales_are_reported_together():
    with pytest.raises(InvalidConfig) as err:
        MarketConfig(mean_item_length=1e38, engagement_noise=1e38, quality_std=1e38)
    msg = str(err.value)
    for part in ("mean_item_length=1e+38", "engagement_noise=1e+38", "quality_std=1e+38"):
        assert part in msg, msg


def _at_the_bounds(largest_scales, response: str, topology: str, reward_mode: str) -> dict:
    """Every value scale and every utility scale at its bound (``largest_scales``), with
    ``reward_mode`` at ``team_weight=1``, an episode of 12 requests."""
    return largest_scales(
        values=True,
        response=response,
        topology=topology,
        reward_mode=reward_mode,
        team_weight=1.0,
        horizon=12,
    )


BOUND_CASES = [
    ("engagement", "shared_page", "mixed"),
    ("purchase", "shared_page", "cooperative"),
    ("listen", "platform_choice", "mixed"),
    ("watch_time", "platform_choice", "competitive"),
]


@pytest.mark.parametrize("response,topology,reward_mode", BOUND_CASES)
def test_the_largest_allowed_value_scales_step_finite(
    response, topology, reward_mode, largest_scales
):
    """At every bound at once, through an auto-reset: finite rewards, observations, state,
    engagement and episode metrics (coverage exact: num_items <= item_stats_size)."""
    env = recenv.make_vec(
        MARKET,
        num_envs=3,
        seed=4,
        **_at_the_bounds(largest_scales, response, topology, reward_mode),
    )
    obs = env.reset()
    g = torch.Generator().manual_seed(0)
    K = env.config.slate_size
    ended = 0
    for _ in range(2 * env.config.horizon + 1):
        slates = {}
        for a in env.agents:
            keys = torch.rand(obs[a]["action_mask"].shape, generator=g)
            slates[a] = keys.masked_fill(~obs[a]["action_mask"], -1.0).topk(K).indices
        obs, rewards, _, _, info = env.step(slates)
        for a in env.agents:
            assert torch.isfinite(rewards[a]).all(), (a, rewards[a])
            for key, x in obs[a].items():
                assert not x.is_floating_point() or torch.isfinite(x).all(), (a, key)
        assert torch.isfinite(info["engagement"]).all()
        assert torch.isfinite(env.state()).all()
        if "episode" in info:
            ended += 1
            for key, x in info["episode"].items():
                assert torch.isfinite(x).all(), (key, x)
    assert ended > 0


def test_the_largest_allowed_value_scales_stay_in_the_pettingzoo_spaces(largest_scales):
    """The same bounds on the PettingZoo face: observations inside their spaces, finite
    rewards, utility terms and state."""
    env = recenv.make(
        MARKET, seed=5, **_at_the_bounds(largest_scales, "engagement", "shared_page", "mixed")
    )
    obs, _ = env.reset(seed=5)
    while env.agents:
        for a in env.agents:
            assert env.observation_space(a).contains(obs[a]), a
            for key, x in obs[a].items():
                assert not np.issubdtype(x.dtype, np.floating) or np.isfinite(x).all(), (a, key)
        actions = {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        for a in rewards:
            assert np.isfinite(rewards[a]), a
            assert np.isfinite(list(infos[a]["utility"].values())).all(), a
        assert np.isfinite(env.state()).all()


# --------------------------------------------------------------------------------------------
# make()'s max_cycles (PettingZoo's name for horizon)
# --------------------------------------------------------------------------------------------
def test_max_cycles_past_the_longest_horizon_is_refused_by_its_own_name():
    """Regression test: ``make(max_cycles=2**25)`` was refused by the config as
    ``horizon=33554432 must be <= 16,777,216``, naming a key the caller never wrote (the
    lower end already named ``max_cycles``). The longest allowed episode is still accepted."""
    with pytest.raises(ValueError, match=r"max_cycles=33554432 must be <= 16,777,216 \(2\*\*24\)"):
        recenv.make(MARKET, max_cycles=2**25, num_items=300)
    with pytest.raises(ValueError, match=r"max_cycles=<an int of 5001 digits> must be <= 16,777"):
        recenv.make(MARKET, max_cycles=10**5000, num_items=300)
    env = recenv.make(MARKET, max_cycles=2**24, num_items=300)
    assert env.config.horizon == 2**24


# --------------------------------------------------------------------------------------------
# The lookup tables a long horizon sizes
# --------------------------------------------------------------------------------------------
def test_horizon_tables_larger_than_the_available_memory_are_refused_by_name(monkeypatch):
    """Regression test: the tables a market builds once for its horizon (``log1p`` of every
    item count an episode can reach, ``H x A x K + 1`` entries built in float64; arrivals by
    step, ``[A, H + 1]``) were not counted by the memory check: ``horizon=2**24`` with
    ``num_agents x slate_size = 127`` (allowed: the product is below 2**31) asks for ~56 GiB,
    which overcommit grants piece by piece until the OOM killer ends the process. They are
    checked against the available memory before they are built, and refused naming the
    horizon, agents and slate size; one market's own tables being small changes nothing."""
    from recenv.core import footprint

    cfg = dict(horizon=2**21, num_items=300)  # 2**21 x 2 x 3 counts: ~350 MB at the peak
    need = footprint.horizon_nbytes(MarketConfig(**cfg))
    assert need > 300 * 2**20
    monkeypatch.setattr(footprint, "available_bytes", lambda device: 64 * 2**20)
    with pytest.raises(ValueError, match=r"horizon=2097152 x num_agents=2 x slate_size=3") as e:
        recenv.make_vec(MARKET, num_envs=1, seed=0, **cfg)
    assert "RECENV_MEMORY_CHECK=0" in str(e.value) and "0.06 GiB available" in str(e.value)
    assert isinstance(e.value.__cause__, MemoryError)
    with pytest.raises(ValueError, match=r"horizon=2097152 x num_agents=2"):
        recenv.make(MARKET, max_cycles=2**21, num_items=300)
    recenv.make_vec(MARKET, num_envs=1, seed=0, num_items=300).reset()  # what fits is built


# --------------------------------------------------------------------------------------------
# Reversed (negative-stride) arrays
# --------------------------------------------------------------------------------------------
def _top_k_reversed(scores: np.ndarray, mask: np.ndarray, K: int) -> np.ndarray:
    """The usual top-K idiom: ``argsort`` ascending, reversed, cut; masked candidates last.
    Its result is a view with a negative stride on the last axis."""
    order = np.argsort(np.where(mask.astype(bool), scores, -np.inf), axis=-1)
    top = order[..., ::-1][..., :K]
    assert top.strides[-1] < 0
    return top


def test_batched_face_steps_a_reversed_view_as_the_slate_it_holds():
    """Regression test: a valid slate given as a numpy view with a negative stride (what
    ``np.argsort(s)[:, ::-1][:, :K]`` returns) was refused by torch's "At least one stride in
    the given numpy array is negative" ValueError, naming no agent; the PettingZoo face's fast
    path took the same arrays. It steps exactly as the same slate given contiguous."""
    kwargs = dict(num_envs=3, seed=7, num_items=300, horizon=6)
    env, twin = recenv.make_vec(MARKET, **kwargs), recenv.make_vec(MARKET, **kwargs)
    obs, _ = env.reset(), twin.reset()
    K = env.config.slate_size

    def top_k(obs: dict) -> dict[str, np.ndarray]:
        return {
            a: _top_k_reversed(
                obs[a]["candidates"][..., -4].numpy(), obs[a]["action_mask"].numpy(), K
            )
            for a in env.agents
        }

    for _ in range(2 * env.config.horizon):  # through an auto-reset
        actions = top_k(obs)
        obs, rewards, *_ = env.step(actions)
        twin_obs, twin_rewards, *_ = twin.step({a: x.copy() for a, x in actions.items()})
        for a in env.agents:
            assert torch.equal(rewards[a], twin_rewards[a])
            for key, x in obs[a].items():
                assert torch.equal(x, twin_obs[a][key]), key
    # An invalid reversed slate is refused by the market's own check, naming the agent.
    assert not bool(env.needs_reset[0])  # (a market about to reset ignores its actions)
    actions = top_k(obs)
    bad = np.zeros((3, K), dtype=np.int64)[:, ::-1]
    with pytest.raises(ValueError, match="agent_0, env 0, slot 1: candidate 0 appears twice"):
        env.step({**actions, "agent_0": bad})
    env.check_slate("agent_1", actions["agent_1"])


@pytest.mark.parametrize("invalid_slate", ["raise", "repair"])
def test_pettingzoo_face_reads_reversed_views_off_its_fast_path(invalid_slate):
    """The PettingZoo face checks a step outside its numpy fast path whenever one agent's
    action is not a plain valid array (a list here; an invalid slate to repair): a reversed
    view for another agent then met the same torch error. It steps as the copied slates."""
    kwargs = dict(seed=8, num_items=300, horizon=5, invalid_slate=invalid_slate)
    env, twin = recenv.make(MARKET, **kwargs), recenv.make(MARKET, **kwargs)
    obs, _ = env.reset()
    twin.reset()
    K = env.config.slate_size
    while env.agents:
        first, *rest = env.agents
        actions = {
            a: _top_k_reversed(obs[a]["candidates"][:, -4], obs[a]["action_mask"], K)
            for a in env.agents
        }
        actions[first] = actions[first].tolist()  # off the fast path
        if invalid_slate == "repair":
            actions[rest[0]] = np.repeat(actions[rest[0]][:1], K)[::-1]  # a duplicate: repaired
        obs, rewards, *_, infos = env.step(actions)
        twin_obs, twin_rewards, *_, twin_infos = twin.step(
            {a: np.array(x) for a, x in actions.items()}
        )
        assert rewards == twin_rewards
        for a in obs:
            assert infos[a]["repaired_slots"] == twin_infos[a]["repaired_slots"]
            for key, x in obs[a].items():
                np.testing.assert_array_equal(x, twin_obs[a][key], err_msg=key)


def test_an_interaction_log_of_reversed_arrays_builds_its_market():
    """Regression test: ``InteractionLog(user=u[::-1], item=i[::-1], ...)`` was accepted and
    ``make`` then failed inside the fit with torch's negative-stride ValueError. The log holds
    its arrays with positive strides, and the market equals the one of the copied arrays."""
    from recenv.data.logs import InteractionLog

    r = np.random.default_rng(11)
    U, I = 7, 50
    user = np.concatenate([np.arange(U), r.integers(0, U, 300)])
    item = np.concatenate([np.arange(I), r.integers(0, I, len(user) - I)])
    rating = r.integers(1, 6, len(user)).astype(np.float64)
    arrays = dict(user=user[::-1], item=item[::-1], rating=rating[::-1], timestamp=None)
    ids = dict(user_ids=np.arange(U)[::-1], item_ids=np.arange(I)[::-1])
    log = InteractionLog(**arrays, **ids, rating_kind="explicit")
    for name in ("user", "item", "rating", "user_ids", "item_ids"):
        x = getattr(log, name)
        assert all(s > 0 for s in x.strides), name
        np.testing.assert_array_equal(x, {**arrays, **ids}[name])
    kwargs = dict(num_envs=2, seed=3, num_candidates=5, num_topics=4, embed_dim=3, horizon=5)
    env = recenv.make_vec("recenv/FromLog-v0", log=log, **kwargs)  # fitted here (first)
    copied = InteractionLog(
        **{k: (None if v is None else v.copy()) for k, v in arrays.items()},
        **{k: v.copy() for k, v in ids.items()},
        rating_kind="explicit",
    )
    other = recenv.make_vec("recenv/FromLog-v0", log=copied, **kwargs)
    obs, other_obs = env.reset(), other.reset()
    for a in env.agents:
        for key, x in obs[a].items():
            assert torch.equal(x, other_obs[a][key]), key


# --------------------------------------------------------------------------------------------
# The PettingZoo face's oracle extras
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["agent_9", "Agent_0", 0, None])
def test_oracle_extras_name_an_unknown_agent_and_the_agents(agent):
    """Regression test: ``env.oracle_slate("agent_9")`` (and ``oracle_scores``) raised
    ``list.index``'s bare ``'agent_9' is not in list``; the error names the agents."""
    env = recenv.make(MARKET, seed=0, num_items=300)
    env.reset()
    for extra in (env.oracle_slate, env.oracle_scores):
        with pytest.raises(
            ValueError, match=r"unknown agent .*; agents are \['agent_0', 'agent_1'\]"
        ):
            extra(agent)
    assert env.oracle_slate("agent_1").shape == (env.config.slate_size,)


# --------------------------------------------------------------------------------------------
# A market's episode count past the int32 stamps of its item counters
# --------------------------------------------------------------------------------------------
def _first_valid_slates(obs, K):
    """Each agent's first K unmasked candidates, ``[N, K]`` (deterministic, no draws)."""
    return {
        a: torch.argsort((~o["action_mask"]).to(torch.int8), dim=1, stable=True)[:, :K]
        for a, o in obs.items()
    }


def _counter_features(env, ids):
    """log1p of this episode's (clicks, exposures) of items ``ids`` [N, C] read straight from
    the counter table (stamp compared as int32, as it is written), ``[N, C, 2]``."""
    W, I = env.config.stats_size, env.config.num_items
    slot = ids % W if W < I else ids
    stats = env.item_stats[torch.arange(env.num_envs)[:, None], slot]  # [N, C, 3]
    current = stats[..., :1] == env.episode.to(torch.int32)[:, None, None]
    counts = torch.where(current, stats[..., 1:], 0)  # exposures, clicks
    return torch.log1p(counts.flip(-1).float()), counts


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_item_counters_are_read_after_the_episode_count_passes_int32(native, monkeypatch):
    """Regression test: item counters are stamped with the episode as int32 (one 12-byte row
    an item) while the market counts episodes in int64. The candidates' read (and the torch
    form of the episode's coverage) compared the int32 stamp with the int64 count, so from
    episode 2**31 on every counter read as stale: zero clicks and exposures in every
    observation, coverage 0 - after ~30 hours of one market at horizon 1. Stamps are now
    compared as int32 wherever they are read (modulo 2**32, as they are written)."""
    if not native:
        monkeypatch.setenv("RECENV_NATIVE", "0")
    env = recenv.make_vec(MARKET, num_envs=2, seed=5, horizon=4)
    assert env._native_kernels == (native and recenv.core.native.available())
    obs = env.reset()
    # Episode 0 renumbered 2**31 - 3, its arrived users' stamps with it: the fourth episode
    # is 2**31, negative as int32.
    offset = 2**31 - 3
    env.user_epoch.masked_fill_(env.user_epoch == 0, offset)
    env.episode.add_(offset)
    S = env._item.arrival  # log1p(clicks), log1p(exposures) follow the static features
    K = env.config.slate_size
    counted = 0
    for step in range(6 * 5):  # six episodes of four requests and an auto-reset step each
        for a, o in obs.items():
            want, counts = _counter_features(env, o["candidate_ids"])
            seen = o["action_mask"]
            got = o["candidates"][..., S : S + 2]
            assert torch.equal(got[seen], want[seen]), f"step {step} {a} episode {env.episode}"
            if bool((env.episode >= 2**31).all()):
                counted += int(counts[seen].sum())
        obs, _, _, _, info = env.step(_first_valid_slates(obs, K))
        if "episode" in info and bool((env.episode >= 2**31).all()):
            assert bool((info["episode"]["coverage"] > 0).all()), info["episode"]["coverage"]
    assert counted > 0  # the wrapped episodes' observations did show counts
