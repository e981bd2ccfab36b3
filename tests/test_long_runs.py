"""Long runs and numeric limits: counters, clocks and sums that wrap, stall or lose precision
only after many steps, episodes or updates.

Each test sets the state just short of its limit directly (never billions of steps), steps
through the limit, and compares with a reference that has no limit (exact integers, float64).
Found by a bug hunt after item counters' int32 stamps read as stale from episode 2**31 on (see
``tests/test_edge_configs.py``).
"""

from __future__ import annotations

import copy

import pytest
import torch

import agents
import recenv
from agents.base import Transition
from experiments.config import OPPONENT_SEED_OFFSET, ConfigError, RunConfig
from experiments.runner import RunDir, Trainer
from recenv.core.config import MAX_ITEMS, InvalidConfig, MarketConfig


# --------------------------------------------------------------------------------------------
# Run checkpoints past 10**12 env steps
# --------------------------------------------------------------------------------------------
def test_checkpoints_past_10_to_the_12_steps_keep_the_newest(tmp_path):
    """Regression test: checkpoints are named ``step_<steps>.pt`` with the step padded to 12
    digits and were ordered by name. From 10**12 env steps on a name has 13 digits and sorted
    before every 12-digit one: the checkpoint just written was taken for the oldest and pruned
    at once (``keep_checkpoints``), and resume or evaluate read an older one. They are ordered
    by the step in the name now."""
    cfg = RunConfig(
        env="recenv/Market-v0",
        agent="random",
        num_envs=1,
        total_steps=10,
        eval_episodes=0,
        keep_checkpoints=2,
        root=str(tmp_path),
        quiet=True,
        env_overrides=(("horizon", 5), ("num_items", 300), ("num_users", 8)),
    )
    trainer = Trainer(cfg, RunDir.create(cfg))
    trainer.env.reset(seed=cfg.seed)
    steps = [10**12 - 2000, 10**12 - 1000, 10**12, 10**12 + 1000]
    for i, s in enumerate(steps):
        trainer.loop.iters = trainer.loop.steps = s
        path = trainer.save_checkpoint()
        kept = trainer.dir.checkpoints()
        assert path.exists(), f"the checkpoint of step {s:,} was pruned as it was written"
        assert kept[-1] == path  # the newest, as resume and evaluate take it
        assert [p.name for p in kept] == [f"step_{t:012d}.pt" for t in steps[max(0, i - 1) : i + 1]]
    assert torch.load(kept[-1], weights_only=True)["run"]["steps"] == steps[-1]


# --------------------------------------------------------------------------------------------
# Seeds at the end of int64
# --------------------------------------------------------------------------------------------
def test_run_config_bounds_the_seed_for_the_opponent_offset():
    """Regression test: an opponent is seeded ``seed + OPPONENT_SEED_OFFSET`` (1000), but the
    run config bounded the seed for the markets only: ``seed=2**63 - 1`` with an opponent was
    accepted, and building the lineup then refused ``seed=9223372036854776807``, a seed the
    user never gave. The run config refuses it now, naming the field, its range and why."""
    top = 2**63 - 1 - OPPONENT_SEED_OFFSET
    fields = dict(agent="random", opponent="random", num_envs=1, eval_episodes=0)
    RunConfig(seed=top, **fields)  # the largest seed that fits
    with pytest.raises(ConfigError) as e:
        RunConfig(seed=top + 1, **fields)
    msg = str(e.value)
    assert f"seed={top + 1} must lie in [-2**63, {top}]" in msg, msg
    assert f"the opponent seed + {OPPONENT_SEED_OFFSET:_}" in msg, msg
    RunConfig(seed=2**63 - 1, agent="random", num_envs=1, eval_episodes=0)  # no opponent: fits


# --------------------------------------------------------------------------------------------
# Item counters after a seeded reset, at episode 2**32 - 1
# --------------------------------------------------------------------------------------------
def _first_valid_slates(obs, K):
    """Each agent's first K unmasked candidates, ``[N, K]`` (deterministic, no draws)."""
    return {
        a: torch.argsort((~o["action_mask"]).to(torch.int8), dim=1, stable=True)[:, :K]
        for a, o in obs.items()
    }


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_a_seeded_reset_forgets_item_counts_at_episode_2_to_the_32_minus_1(native, monkeypatch):
    """Regression test: ``reset(seed)`` marked every item counter stale with stamp -1 and kept
    its counts. -1 is also the int32 stamp of episode 2**32 - 1, where every row untouched
    since the reset reads as current: the counts of the episodes before the reset reappeared
    in the observations (clicks and exposures of items not shown in this episode), so a market
    reset with a seed depended on what it did before. The reset zeroes the counts too: the
    market with a history matches a fresh one step for step."""
    if not native:
        monkeypatch.setenv("RECENV_NATIVE", "0")

    def run(history: bool) -> list:
        env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=5, horizon=4)
        assert env._native_kernels == (native and recenv.core.native.available())
        K = env.config.slate_size
        obs = env.reset(seed=5)
        if history:  # one episode and an auto-reset step before the seeded reset
            for _ in range(5):
                obs, *_ = env.step(_first_valid_slates(obs, K))
            assert bool((env.item_stats[:, :, 1] > 0).any())
        obs = env.reset(seed=5)
        # Episode 0 renumbered 2**32 - 1 (int32 stamp -1), its arrived users' stamps with it.
        offset = 2**32 - 1
        env.user_epoch.masked_fill_(env.user_epoch == 0, offset)
        env.episode.add_(offset)
        out = []
        for _ in range(5):
            obs, rewards, _, _, info = env.step(_first_valid_slates(obs, K))
            out.append((obs, rewards, info.get("episode")))
        return out

    for step, (got, want) in enumerate(zip(run(True), run(False), strict=True)):
        for a in got[0]:
            for key, x in got[0][a].items():
                assert torch.equal(x, want[0][a][key]), f"step {step}, {a}, {key}"
            assert torch.equal(got[1][a], want[1][a]), f"step {step}, {a}, reward"
        if want[2] is not None:
            for key, x in got[2].items():
                assert torch.equal(x, want[2][key]), f"step {step}, episode metric {key}"


# --------------------------------------------------------------------------------------------
# Agents' sums over a whole training run
# --------------------------------------------------------------------------------------------
def test_mf_population_user_sums_keep_counting_after_2_to_the_24_visits():
    """Regression test: with ``user_scope="population"`` MF's fold-in sums ``gram`` (Σ c q qᵀ)
    and ``rhs`` (Σ c r q) of a user grow over the whole training run, and they were float32:
    once a user's sums reached ~2**24 times a visit's terms, a visit's terms rounded away (a
    float32 count stops at 2**24 the same way), and the user's vector stopped learning; Market-
    v0's 25 users reach that near 4e8 env steps. They are float64 now (as the count baselines'
    tables, ``agents.baselines.COUNT_DTYPE``); ``user_scope="episode"`` sums start over every
    episode (at most ``horizon`` visits) and stay float32."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=4, seed=0, horizon=20, num_users=4)
    agent = agents.make_agent("mf", env, user_scope="population", seed=0)
    agents.train(agent, env, 400)  # every user visited ~100 times: sums of a realistic mix
    # The same sums as after 2**25 visits of each user (the same mix of interactions).
    scale = 2**25 / 100
    agent.gram, agent.rhs = (agent.gram * scale).to(agent.gram.dtype), agent.rhs * scale
    exact = copy.deepcopy(agent)  # the same step's terms, added to zero: exact
    exact.gram, exact.rhs = torch.zeros_like(agent.gram), torch.zeros_like(agent.rhs)
    obs = env.observe()
    actions = agent.act(obs, explore=True)
    next_obs, rewards, terminated, truncated, info = env.step(actions)
    tr = Transition.from_step(
        env.agents, obs, actions, rewards, next_obs, terminated, truncated, info, None, None
    )
    before = agent.gram.to(torch.float64, copy=True), agent.rhs.to(torch.float64, copy=True)
    agent.observe(tr)
    exact.observe(tr)
    for name, b, got, want in (
        ("gram", before[0], agent.gram, exact.gram),
        ("rhs", before[1], agent.rhs, exact.rhs),
    ):
        added = got.double() - b
        err = float((added - want.double()).norm() / want.double().norm())
        assert err < 1e-6, f"{name}: one visit's terms added with relative error {err:.3g}"


def test_mf_population_checkpoints_with_float32_user_sums_still_load():
    """A checkpoint written while MF's population sums were float32 loads, widened to float64;
    a table of another dtype is still refused by name."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, horizon=10, num_users=4)
    agent = agents.make_agent("mf", env, user_scope="population", seed=0)
    agents.train(agent, env, 40)
    old = dict(agent.state_dict())
    old["gram"], old["rhs"] = old["gram"].float(), old["rhs"].float()
    fresh = agents.make_agent("mf", env, user_scope="population", seed=1)
    fresh.load_state_dict(old)
    assert fresh.gram.dtype == fresh.rhs.dtype == torch.float64
    assert torch.equal(fresh.gram, old["gram"].double())
    assert torch.equal(fresh.rhs, old["rhs"].double())
    with pytest.raises(
        ValueError, match=r"state\['gram'\] is torch.float16; expected torch.float64"
    ):
        fresh.load_state_dict({**old, "gram": old["gram"].half()})


# --------------------------------------------------------------------------------------------
# Item ids: int32 in the catalog's retrieval lists
# --------------------------------------------------------------------------------------------
def test_a_catalog_past_2_to_the_31_items_is_refused_by_name():
    """The catalog's retrieval lists hold item ids as int32 (half the bytes, read at random
    every step); past 2**31 items they would wrap to negative ids. Only a machine with
    280 GiB or more passes the memory check there, so it was an unchecked bound: the config
    refuses it by name now, on every face, before anything is built."""
    assert MarketConfig(num_items=MAX_ITEMS).num_items == MAX_ITEMS
    for build in (
        lambda **k: MarketConfig(**k),
        lambda **k: recenv.make("recenv/Market-v0", **k),
        lambda **k: recenv.make_vec("recenv/Market-v0", num_envs=1, **k),
    ):
        with pytest.raises(
            InvalidConfig, match=r"num_items=2,147,483,649 must be <= 2,147,483,648 \(2\*\*31\)"
        ):
            build(num_items=MAX_ITEMS + 1)
