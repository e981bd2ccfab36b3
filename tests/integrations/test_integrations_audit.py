"""Regression tests from an audit of the RL-library integrations (Gymnasium vector env)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recenv
from recenv.integrations.gymnasium_vector import (
    RandomSlatePolicy,
    SingleAgentVectorEnv,
    make_single_agent_vec,
)

MARKET = "recenv/Market-v0"
SMALL = {"num_items": 500, "horizon": 8}


def _trajectory(env: SingleAgentVectorEnv, steps: int) -> list[np.ndarray]:
    """The learner plays the oracle; rewards, candidate ids and clicks of every step."""
    out = []
    for _ in range(steps):
        obs, reward, _, _, info = env.step(env.market.oracle_slates()[:, 0].numpy())
        out += [reward, obs["candidate_ids"], info["clicked"]]
    return out


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 3), np.int64),  # a repeated candidate
        np.array([[0, 1, 99], [0, 1, 2]]),  # out of range
        np.full((2, 3), np.nan),
        np.zeros((3, 3), np.int64),  # wrong num_envs
    ],
    ids=["duplicate", "out-of-range", "nan", "shape"],
)
def test_refused_step_leaves_random_opponents_as_they_were(bad):
    """A step the core refuses changes nothing. Regression test: the random opponents drew
    their slates before the core checked the learner's, so a refused step advanced their
    generator and every later step differed from an env that never got the bad action."""

    def run(refuse: bool):
        env = make_single_agent_vec(MARKET, num_envs=2, seed=5, opponents="random", **SMALL)
        env.reset()
        if refuse:
            with pytest.raises(ValueError, match="agent_0"):
                env.step(bad)
        (policy,) = env.opponents.values()
        next_draw = policy(env.market.observe()["agent_1"]).clone()
        return next_draw, env

    draw_ok, env_ok = run(False)
    draw_refused, env_refused = run(True)
    torch.testing.assert_close(draw_refused, draw_ok)
    # The draw above advanced both generators alike; the trajectories then agree.
    for got, want in zip(_trajectory(env_refused, 10), _trajectory(env_ok, 10), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.int64), np.full((2, 3), np.nan)])
def test_a_refused_learner_slate_never_calls_the_opponents(bad):
    """The learner's slate is checked before any opponent acts, so a custom stochastic
    opponent's random state is untouched by a refused step. Regression test: the opponents
    were called first, and only the built-in random ones were put back."""
    calls = []

    def opponent(obs):
        calls.append(1)
        return RandomSlatePolicy(3, seed=0)(obs)

    env = make_single_agent_vec(MARKET, num_envs=2, seed=5, opponents=opponent, **SMALL)
    env.reset()
    with pytest.raises(ValueError, match="agent_0"):
        env.step(bad)
    assert calls == []
    env.step(env.market.oracle_slates()[:, 0].numpy())
    assert calls == [1]


class _SeedableOpponent:
    """A custom opponent with a ``seed(int)`` method (random valid slates)."""

    def __init__(self):
        self.policy = RandomSlatePolicy(3)
        self.seeds: list[int] = []

    def seed(self, seed: int) -> None:
        self.seeds.append(seed)
        self.policy.seed(seed)

    def __call__(self, obs):
        return self.policy(obs)


def test_constructor_seed_seeds_custom_opponents_like_a_seeded_reset():
    """``make_single_agent_vec(seed=s)`` then ``reset()`` equals ``reset(seed=s)``, custom
    opponents with a ``seed`` method included. Regression test: the constructor's seed reached
    only the built-in random opponents, so a seeded env with a custom stochastic opponent
    was not reproducible until the first seeded reset."""

    def run(ctor_seed, reset_seed):
        opponent = _SeedableOpponent()
        env = make_single_agent_vec(MARKET, num_envs=2, seed=ctor_seed, opponents=opponent, **SMALL)
        env.reset(seed=reset_seed)
        return _trajectory(env, 2 * SMALL["horizon"]), opponent.seeds

    (traj_a, seeds_a), (traj_b, seeds_b) = run(4, None), run(None, 4)
    assert seeds_a == seeds_b and len(seeds_a) == 1
    for a, b in zip(traj_a, traj_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_constructor_refuses_an_out_of_range_seed_clearly():
    """Regression test: ``SingleAgentVectorEnv(market, seed=2**70)`` failed in torch's
    ``manual_seed`` ("Overflow when unpacking long long") instead of naming the range."""
    market = recenv.make_vec(MARKET, num_envs=2, seed=0, **SMALL)
    with pytest.raises(ValueError, match=r"seed=.* out of range"):
        SingleAgentVectorEnv(market, seed=2**70)
