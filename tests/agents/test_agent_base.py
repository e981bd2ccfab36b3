"""The protocol's shared pieces: slates from scores, configs, capability checks, teams."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import agents
from agents.base import AgentConfig, Transition, check_compatible, option, slate_from_scores


def _valid(slate: torch.Tensor, mask: torch.Tensor) -> bool:
    distinct = all(len(set(row.tolist())) == slate.shape[1] for row in slate)
    return distinct and bool(mask.gather(1, slate).all())


def test_slate_from_scores_is_topk_of_masked_scores():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3], [5.0, 4.0, 3.0, 2.0, 1.0]])
    mask = torch.tensor([[True, False, True, True, True], [False, False, True, True, True]])
    slate = slate_from_scores(scores, mask, 2)
    assert slate.tolist() == [[3, 2], [2, 3]]


def test_slate_from_scores_survives_nan_and_inf():
    scores = torch.tensor([[math.nan, -math.inf, math.inf, 0.0]])
    mask = torch.tensor([[True, True, False, False]])
    slate = slate_from_scores(scores, mask, 2)
    assert sorted(slate[0].tolist()) == [0, 1]  # the masked +inf is never picked


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_exploring_slates_are_valid(epsilon):
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(500, 12, generator=g) < 0.5
    mask[:, :3] = True  # at least K = 3 unmasked
    scores = torch.randn(500, 12, generator=g)
    slate = slate_from_scores(scores, mask, 3, epsilon, g)
    assert _valid(slate, mask)
    greedy = slate_from_scores(scores, mask, 3)
    same = (slate == greedy).all(1).float().mean().item()
    if epsilon == 0.0:
        assert same == 1.0
    elif epsilon == 1.0:
        assert same < 0.2


def test_epsilon_is_per_slot():
    """With ε per slot, slot 0 keeps the greedy best with probability ≈ (1 - ε) + ε / C."""
    g = torch.Generator().manual_seed(1)
    N, C, eps = 20_000, 10, 0.4
    scores = torch.arange(C, dtype=torch.float32).expand(N, C)
    slate = slate_from_scores(scores, torch.ones(N, C, dtype=torch.bool), 2, eps, g)
    p_best = (slate[:, 0] == C - 1).float().mean().item()
    assert abs(p_best - ((1 - eps) + eps / C)) < 0.015


def test_unknown_config_keys_list_the_valid_ones(market):
    env = market()
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['alpah'\].*'alpha'"):
        agents.make_agent("linucb", env, alpah=1.0)


def test_every_config_field_has_help():
    for name in agents.registered_agents():
        cls = agents.agent_class(name)
        helps = cls.Config.help()
        assert helps and all(helps.values()), (name, helps)
        assert issubclass(cls.Config, AgentConfig)


def test_config_values_are_checked_against_their_field_types_and_ranges(market):
    """A config field annotated ``bool`` / ``int`` / ``float`` / ``str`` / ``tuple`` refuses
    other values where the config is built, naming the config and field (``lr="x"`` was a
    TypeError inside Adam's check); numpy's ints are ints; ``option(..., within=)`` bounds a
    probability. A plug-in's field of another type is not checked."""
    env = market()
    for key, value, expect in [
        ("lr", "x", r"IQLConfig: lr='x' must be a number \(not NaN\)"),
        ("lr", math.nan, r"lr=nan must be a number"),
        ("lr", True, r"lr=True must be a number"),
        ("batch_size", 3.5, r"batch_size=3.5 must be an int"),
        ("double_q", 1, r"double_q=1 must be a bool"),
        ("bootstrap", 5, r"bootstrap=5 must be a str"),
        ("eps_start", 1.5, r"eps_start=1.5 must lie in \[0.0, 1.0\] \(initial per-slot"),
        ("eps_end", -0.1, r"eps_end=-0.1 must lie in \[0.0, 1.0\]"),
    ]:
        with pytest.raises(ValueError, match=expect):
            agents.make_agent("iql", env, **{key: value})
    for name in ("epsilon_greedy", "mf", "ensemble"):
        with pytest.raises(ValueError, match="epsilon=2 must lie in"):
            agents.make_agent(name, env, epsilon=2)
    agent = agents.make_agent("iql", env, batch_size=np.int64(64), lr=1)
    assert type(agent.config.batch_size) is int and agent.config.lr == 1

    @dataclasses.dataclass(frozen=True)
    class PluginConfig(AgentConfig):
        limit: float | None = option(None, "a union: the plug-in's own to check")

    assert PluginConfig(limit="off").limit == "off"


def test_config_lists_become_tuples(market):
    agent = agents.make_agent("iql", market(), hidden=[32, 32])
    assert agent.config.hidden == (32, 32)


def test_agent_ids_must_be_env_agents(market):
    env = market()
    with pytest.raises(ValueError, match="agent_ids"):
        agents.make_agent("random", env, agent_ids=["agent_7"])


def test_capabilities_refuse_incompatible_envs(market):
    class NoOracle:
        def __init__(self, env):
            self.config, self.agents, self.num_envs = env.config, env.agents, env.num_envs
            self.device = env.device

    with pytest.raises(ValueError, match="needs_privileged"):
        agents.make_agent("oracle", NoOracle(market()))

    class CompetitiveOnly(agents.agent_class("random")):
        supports_reward_modes = ("competitive",)

    with pytest.raises(ValueError, match="reward_mode"):
        check_compatible(CompetitiveOnly, market(reward_mode="cooperative"))


def test_transition_reads_only_own_outcome(market):
    env = market(num_envs=64)
    obs = env.reset()
    actions = agents.make_agent("random", env).act(obs)
    nxt, rew, term, trunc, info = env.step(actions)
    tr = Transition.from_step(env.agents, obs, actions, rew, nxt, term, trunc, info)
    for i, a in enumerate(env.agents):
        won = info["chosen_agent"] == i
        assert torch.equal(tr.clicked_slot[a] >= 0, won)
        assert torch.equal(tr.clicked_slot[a][won], info["chosen_slot"][won])
        items, hit, _ = tr.slate_feedback(a, "engagement")
        assert torch.allclose(hit.sum(1), torch.where(won, info["engagement"], 0.0))
        assert torch.equal(items, obs[a]["candidate_ids"].gather(1, actions[a]))


def test_team_merges_members_and_rejects_overlap(market):
    env = market()
    rnd = agents.make_agent("random", env, agent_ids=["agent_0"])
    pop = agents.make_agent("popularity", env, agent_ids=["agent_1"])
    team = agents.Team([rnd, pop])
    assert team.agent_ids == ["agent_0", "agent_1"]
    obs = env.reset()
    acts = team.act(obs)
    assert set(acts) == {"agent_0", "agent_1"}
    env.step(acts)
    with pytest.raises(ValueError, match="controlled by two"):
        agents.Team([rnd, agents.make_agent("random", env)])
    team2 = agents.make_team(env, {"agent_0": "oracle", "agent_1": ("linucb", {"alpha": 0.1})})
    assert team2.needs_privileged and team2.learns


def test_served_marks_the_visited_platform(market):
    """Under platform_choice only the visited platform's slate reaches the user; bandits and MF
    learn from those rows only (``Transition.seen``)."""
    env = market(num_envs=64, topology="platform_choice")
    obs = env.reset()
    actions = agents.make_agent("random", env).act(obs)
    nxt, rew, term, trunc, info = env.step(actions)
    tr = Transition.from_step(env.agents, obs, actions, rew, nxt, term, trunc, info)
    for i, a in enumerate(env.agents):
        assert torch.equal(tr.served[a], info["platform"] == i)
        assert torch.equal(tr.seen(a), tr.valid & (info["platform"] == i))
        assert not bool((tr.clicked_slot[a] >= 0)[~tr.served[a]].any())
