"""Reproducibility from a seed (DESIGN §1): the same seed gives the same trajectory, different
seeds differ, and ``reset(seed=None)`` after a seeded reset continues deterministically."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.utils.env_checker import data_equivalence

import recenv


def _rollout(env, steps: int, feature_policy, reset_seed=None):
    """(obs, rewards, terminations, truncations, infos) of ``steps`` PettingZoo steps, with
    explicit unseeded resets between episodes; actions from the observation only."""
    K = env.config.slate_size
    obs, infos = env.reset(seed=reset_seed)
    out = [(obs, infos)]
    for _ in range(steps):
        if not env.agents:
            obs, infos = env.reset()
            out.append((obs, infos))
        acts = {
            a: feature_policy(obs[a]["candidates"], obs[a]["action_mask"], K).numpy()
            for a in env.agents
        }
        step = env.step(acts)
        obs = step[0]
        out.append(step)
    return out


def test_same_seed_same_trajectory(env_id, small, feature_policy):
    """Two envs made with the same seed give identical observations, rewards, flags and infos
    over two episodes (including the unseeded reset between them)."""
    kwargs = small(env_id, horizon=12)
    a = _rollout(recenv.make(env_id, seed=123, **kwargs), 26, feature_policy)
    b = _rollout(recenv.make(env_id, seed=123, **kwargs), 26, feature_policy)
    assert data_equivalence(a, b)


def test_seed_in_make_equals_seed_in_reset(env_id, small, feature_policy):
    """``make(id, seed=s).reset()`` equals ``make(id).reset(seed=s)``."""
    kwargs = small(env_id, horizon=12)
    a = _rollout(recenv.make(env_id, seed=9, **kwargs), 14, feature_policy)
    b = _rollout(recenv.make(env_id, **kwargs), 14, feature_policy, reset_seed=9)
    assert data_equivalence(a, b)


def test_different_seeds_differ(env_id, small, feature_policy):
    """Different seeds give different users and candidates from the first observation on."""
    kwargs = small(env_id)
    a = recenv.make(env_id, seed=1, **kwargs).reset()[0]
    b = recenv.make(env_id, seed=2, **kwargs).reset()[0]
    assert not data_equivalence(a, b)
    va = recenv.make_vec(env_id, num_envs=4, seed=0, **kwargs).reset()
    ids = va["agent_0"]["candidate_ids"]
    assert len({tuple(row.tolist()) for row in ids}) > 1, "markets of one batch are identical"


def test_unseeded_reset_continues_deterministically(env_id, small, feature_policy):
    """After ``reset(seed=s)``, ``reset()`` starts a new episode that differs from the first
    but is the same for two envs with the same history; ``reset(seed=s)`` again replays the
    first episode exactly, whatever happened in between (no state leaks across a seeded
    reset)."""
    kwargs = small(env_id, horizon=10)
    env = recenv.make(env_id, **kwargs)
    twin = recenv.make(env_id, **kwargs)
    first = _rollout(env, 10, feature_policy, reset_seed=77)
    twin_first = _rollout(twin, 10, feature_policy, reset_seed=77)
    assert data_equivalence(first, twin_first)
    second = _rollout(env, 10, feature_policy, reset_seed=None)
    twin_second = _rollout(twin, 10, feature_policy, reset_seed=None)
    assert data_equivalence(second, twin_second)
    assert not data_equivalence(first, second)
    # Another unseeded episode, stopped half-way, then a seeded reset: the first episode again.
    _rollout(env, 4, feature_policy, reset_seed=None)
    again = _rollout(env, 10, feature_policy, reset_seed=77)
    assert data_equivalence(first, again)


def test_batched_seeded_reset_replays(env_id, small, feature_policy):
    """On the batched face ``reset(seed=s)`` after some steps replays exactly what a fresh env
    reset with ``s`` gives (observations and rewards over 12 steps)."""
    kwargs = small(env_id, horizon=8)
    used = recenv.make_vec(env_id, num_envs=3, seed=5, **kwargs)
    fresh = recenv.make_vec(env_id, num_envs=3, **kwargs)
    K = used.config.slate_size
    obs = used.reset()
    for _ in range(11):
        obs, *_ = used.step(
            {a: feature_policy(obs[a]["candidates"], obs[a]["action_mask"], K) for a in used.agents}
        )
    oa, ob = used.reset(seed=40), fresh.reset(seed=40)
    for _ in range(12):
        for a in used.agents:
            for k in oa[a]:
                assert torch.equal(oa[a][k], ob[a][k]), k
        acts = {
            a: feature_policy(oa[a]["candidates"], oa[a]["action_mask"], K) for a in used.agents
        }
        oa, ra, *_ = used.step(acts)
        ob, rb, *_ = fresh.step(acts)
        for a in used.agents:
            assert torch.equal(ra[a], rb[a])


def test_unseeded_envs_differ(env_id, small):
    """Without any seed, two envs draw fresh seeds from the OS: their first observations
    differ (the chance that 2 x 20 candidate ids coincide is negligible)."""
    kwargs = small(env_id)
    a = recenv.make(env_id, **kwargs).reset()[0]
    b = recenv.make(env_id, **kwargs).reset()[0]
    assert not all(
        np.array_equal(a[x]["candidate_ids"], b[x]["candidate_ids"])
        and np.array_equal(a[x]["user"], b[x]["user"])
        for x in a
    )
