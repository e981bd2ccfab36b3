"""Smoke matrix: every registered agent x every registered env, on both faces.

Each cell runs a few hundred env steps (in a reward mode the agent supports: value decomposition
runs its presets in cooperative mode) across several episode ends (a shortened horizon) with
learning on, so auto-reset handling, learning updates and the PettingZoo adapter all run. The
env itself rejects any invalid slate, so finishing is the check, plus finite metrics.
"""

from __future__ import annotations

import math

import pytest

import agents

# Small learning settings so the learners update within a smoke run; other agents (and
# plug-ins) run with their defaults.
SMOKE_CONFIG = {
    "iql": {
        "learning_starts": 64,
        "batch_size": 32,
        "update_every": 8,
        "hidden": (32,),
        "buffer_size": 1000,
    },
    "ensemble": {"members": ("popularity", "linucb", "mf")},
}
# Small networks and buffers so the matrix stays fast, and replay learners update within the
# smoke budget (their defaults would not start learning before it ends).
for _name in ("mappo", "ippo"):
    SMOKE_CONFIG[_name] = {"rollout_steps": 8, "actor_hidden": (32,), "critic_hidden": (32,)}
for _name in ("vdn", "qmix"):
    SMOKE_CONFIG[_name] = {
        "learning_starts": 64,
        "batch_size": 32,
        "update_every": 8,
        "hidden": (32,),
        "buffer_size": 1000,
    }
BATCHED_ENVS, BATCHED_STEPS = 4, 240  # 60 batched steps of 4 markets, horizon 20
PZ_STEPS = 200  # horizon 40: five episodes


def _config(name: str) -> dict:
    return dict(SMOKE_CONFIG.get(name, {}))


@pytest.mark.parametrize("name", agents.registered_agents())
def test_batched_face(name, env_id, small, env_for):
    env = env_for(name, env_id, num_envs=BATCHED_ENVS, seed=1, **small(env_id, horizon=20))
    agent = agents.make_agent(name, env, **_config(name))
    result = agents.train(agent, env, BATCHED_STEPS)
    assert result.env_steps >= BATCHED_STEPS
    assert result.num_episodes >= 2
    for v in result.episodes["return"].flatten().tolist():
        assert math.isfinite(v)
    for _, metrics in result.metrics:
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    # Evaluated in another env of the same scenario with another number of markets.
    other = env_for(name, env_id, num_envs=3, seed=2, **small(env_id, horizon=20))
    ev = agents.evaluate(agent, other, seed=7)
    assert ev.num_episodes == other.num_envs


@pytest.mark.parametrize("name", agents.registered_agents())
def test_pettingzoo_face(name, env_id, small, env_for):
    env = env_for(name, env_id, face="pettingzoo", seed=1, **small(env_id, horizon=40))
    agent = agents.make_agent(name, env, **_config(name))
    episodes = agents.run_episodes(
        agent, env, episodes=100, learn=True, explore=True, seed=3, max_steps=PZ_STEPS
    )
    assert len(episodes) >= 2
    for ret in episodes:
        assert set(ret) == set(env.possible_agents)
        assert all(math.isfinite(v) for v in ret.values())
