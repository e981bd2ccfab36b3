"""The shared train/evaluate loop: auto-reset transitions, episode bookkeeping, budgets."""

from __future__ import annotations

import re

import pytest
import torch

import agents
import recenv
from agents.base import Transition


class Recorder(agents.agent_class("random")):
    """A random agent that records what the rollout hands it."""

    name = "recorder"
    learns = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, object]] = []

    def observe(self, transition: Transition) -> None:
        self.calls.append(("observe", transition))

    def learn(self, transition: Transition):
        self.calls.append(("learn", transition))
        return {}

    def begin_episode(self, mask=None) -> None:
        self.calls.append(("begin", None if mask is None else mask.clone()))


def test_auto_reset_transitions_are_marked_and_episodes_begin(market):
    env = market(num_envs=3, horizon=5)
    agent = Recorder(env)
    result = agents.train(agent, env, 3 * 13)
    kinds = [k for k, _ in agent.calls]
    assert kinds[0] == "begin" and agent.calls[0][1] is None  # after env.reset()
    transitions = [t for k, t in agent.calls if k == "learn"]
    assert len(transitions) == 13
    assert kinds.count("observe") == 13
    for t, tr in enumerate(transitions):
        # Horizon 5: steps 4 and 10 end episodes, steps 5 and 11 are auto-reset steps.
        assert bool(tr.truncated.all()) == (t in (4, 10))
        assert bool((~tr.valid).all()) == (t in (5, 11))
        assert bool(tr.valid.all()) == (t not in (5, 11))
        if t in (5, 11):
            for a in env.agents:
                assert (tr.rewards[a] == 0).all()
                assert (tr.clicked_slot[a] == -1).all()
    begins = [m for k, m in agent.calls[1:] if k == "begin"]
    assert len(begins) == 2 and all(bool(m.all()) for m in begins)
    # The begin call comes right after the auto-reset step's learn, before the next act.
    i = kinds.index("begin", 1)
    assert kinds[i - 1] == "learn" and not bool(agent.calls[i - 1][1].valid.any())
    assert result.num_episodes == 6
    assert torch.equal(result.episodes["length"], torch.full((6,), 5.0))


def test_truncated_transition_carries_the_final_observation(market):
    env = market(num_envs=2, horizon=4)
    agent = Recorder(env)
    agents.train(agent, env, 2 * 4)
    last = [t for k, t in agent.calls if k == "learn"][-1]
    assert bool(last.truncated.all()) and not bool(last.terminated.any())
    final = env.observe()
    for a in env.agents:
        assert torch.equal(last.next_obs[a]["candidates"], final[a]["candidates"])


def test_evaluate_runs_one_episode_per_market_without_learning(market):
    env = market(num_envs=4, horizon=6)
    agent = Recorder(env)
    result = agents.evaluate(agent, env, episodes_per_env=2, seed=5)
    kinds = [k for k, _ in agent.calls]
    assert "learn" not in kinds and "observe" in kinds
    assert result.num_episodes == 8
    assert result.episodes["return"].shape == (8, 2)
    summary = agents.summarize(result.episodes, env.agents)
    assert {"ctr", "retention", "return/agent_0", "return/agent_1"} <= set(summary)


def test_evaluation_is_reproducible(market):
    env = market(num_envs=4, horizon=10)
    a = agents.evaluate(agents.make_agent("popularity", env), env, seed=9)
    b = agents.evaluate(agents.make_agent("popularity", env), env, seed=9)
    for k in a.episodes:
        assert torch.equal(a.episodes[k], b.episodes[k]), k


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a, env, pz: agents.train(a, env, -5), "env_steps=-5 must be an int >= 0"),
        (lambda a, env, pz: agents.train(a, env, "10"), "env_steps='10' must be an int >= 0"),
        (lambda a, env, pz: agents.train(a, env, 2.5), "env_steps=2.5 must be an int >= 0"),
        (lambda a, env, pz: agents.train(a, env, True), "env_steps=True must be an int >= 0"),
        (
            lambda a, env, pz: agents.evaluate(a, env, episodes_per_env=0),
            "episodes_per_env=0 must be an int >= 1",
        ),
        (
            lambda a, env, pz: agents.run_episodes(agents.make_agent("random", pz), pz, 0),
            "episodes=0 must be an int >= 1",
        ),
        (
            lambda a, env, pz: agents.run_episodes(
                agents.make_agent("random", pz), pz, 1, max_steps=0
            ),
            "max_steps=0 must be an int >= 1",
        ),
    ],
)
def test_budgets_that_are_not_counts_are_refused(market, call, message):
    """``int()`` took ``"10"``, ``2.5`` and ``True``, and a negative budget ran nothing and
    reported ``env_steps=-4``: each is now a ValueError naming the argument."""
    env = market(num_envs=4)
    pz = recenv.make("recenv/Market-v0", seed=0, horizon=5)
    with pytest.raises(ValueError, match=re.escape(message)):
        call(agents.make_agent("random", env), env, pz)


def test_a_zero_budget_trains_nothing(market):
    env = market(num_envs=4)
    assert agents.train(agents.make_agent("random", env), env, 0).env_steps == 0


# Small networks (fast), and an ensemble with a member that draws (its generator is reseeded).
SMALL = {
    "iql": {"hidden": (8,), "choice_hidden": (8,)},
    "mappo": {"actor_hidden": (8,), "critic_hidden": (8,)},
    "ippo": {"actor_hidden": (8,), "critic_hidden": (8,)},
    "vdn": {"hidden": (8,)},
    "qmix": {"hidden": (8,)},
    "ensemble": {"members": ("random", "popularity"), "epsilon": 0.5},
}


@pytest.mark.parametrize("name", agents.registered_agents())
def test_one_agent_evaluated_twice_with_one_seed_plays_the_same_episodes(name, env_for):
    """``evaluate(agent, env, seed=s)`` twice gave the random agent (and every agent that
    draws while acting) other episodes the second time: its generator went on from where the
    first evaluation left it. A seed now reseeds the agent's generators too (Agent.reseed)."""
    env = env_for(name, num_envs=3, seed=0, horizon=8, num_items=200, num_users=6)
    agent = agents.make_agent(name, env, **SMALL.get(name, {}))
    a = agents.evaluate(agent, env, seed=4)
    b = agents.evaluate(agent, env, seed=4)
    explored = agents.evaluate(agent, env, seed=4, explore=True)  # the ε draws too
    again = agents.evaluate(agent, env, seed=4, explore=True)
    for k in a.episodes:
        assert torch.equal(a.episodes[k], b.episodes[k]), k
        assert torch.equal(explored.episodes[k], again.episodes[k]), k
