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
        # Beyond what torch holds: an int64 overflow was a TypeError in torch.zeros, a float
        # over float32's range a RuntimeError inside Adam.
        ("buffer_size", 2**63, r"buffer_size=9223372036854775808 must be an int in \[-2\*\*63"),
        ("lr", 1e300, r"lr=1e\+300 must lie within float32's range"),
        ("eps_start", -1e39, r"eps_start=-1e\+39 must lie within float32's range"),
    ]:
        with pytest.raises(ValueError, match=expect):
            agents.make_agent("iql", env, **{key: value})
    for name in ("epsilon_greedy", "mf", "ensemble"):
        # (A float field stores a real number as a float: the int 2 is named as 2.0.)
        with pytest.raises(ValueError, match=r"epsilon=2\.0 must lie in"):
            agents.make_agent(name, env, epsilon=2)
    agent = agents.make_agent("iql", env, batch_size=np.int64(64), lr=1)
    assert type(agent.config.batch_size) is int and type(agent.config.lr) is float
    assert agent.config.lr == 1

    @dataclasses.dataclass(frozen=True)
    class PluginConfig(AgentConfig):
        limit: float | None = option(None, "a union: the plug-in's own to check")

    assert PluginConfig(limit="off").limit == "off"


def test_sizes_no_memory_holds_are_refused_naming_agent_and_field(market):
    """A size in the config that the allocator refuses raises ValueError naming the agent
    and the field: where the agent is built (network widths, tables), or on first use for
    storage allocated mid-run (IQL's replay buffer, MAPPO's rollout), which was the
    allocator's bare RuntimeError inside ``train``. Legal sizes still build and train."""
    env = market(horizon=10)
    for name, cfg in [
        ("mf", {"dim": 10**12}),
        ("iql", {"hidden": (10**12,)}),
        ("mf", {"dim": 2**63 - 1}),
    ]:
        with pytest.raises(ValueError, match=rf"agent '{name}': the sizes of config .*lower"):
            agents.make_agent(name, env, **cfg)
    for name, cfg, field in [
        ("iql", {"buffer_size": 10**12}, "buffer_size=1000000000000"),
        ("ippo", {"rollout_steps": 10**12}, "rollout_steps=1000000000000 at 4 markets"),
    ]:
        agent = agents.make_agent(name, env, **cfg)
        with pytest.raises(ValueError, match=rf"agent '{name}': {field} needs [\d,.]+ GiB"):
            agents.train(agent, env, 20)
    agents.train(agents.make_agent("iql", env, buffer_size=256, batch_size=8), env, 20)


def test_storage_larger_than_the_available_memory_is_refused_before_zeroing(market, monkeypatch):
    """Storage the allocator would grant (address space is overcommitted) but memory cannot
    hold is refused before it is zeroed, naming the agent, the field and what is available:
    zeroing it would have ended in the OOM killer, not an error."""
    from recenv.core import footprint

    monkeypatch.setattr(footprint, "available_bytes", lambda device: 1 << 20)
    env = market(horizon=10)
    agent = agents.make_agent("iql", env, buffer_size=10**5, batch_size=8)
    with pytest.raises(
        ValueError,
        match=r"agent 'iql': buffer_size=100000 needs [\d.]+ GiB of storage on cpu, but "
        r"0.00 GiB available on cpu \(RECENV_MEMORY_CHECK=0",
    ):
        agents.train(agent, env, 20)
    monkeypatch.setenv("RECENV_MEMORY_CHECK", "0")
    agents.train(agents.make_agent("iql", env, buffer_size=10**4, batch_size=8), env, 20)


INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("name", "key", "value", "expect"),
    [
        ("iql", "max_grad_norm", -1.0, r"max_grad_norm=-1.0 must lie in \(0.0, inf\]"),
        ("iql", "lr", INF, r"lr=inf must lie in \(0.0, inf\)"),
        ("iql", "lr", 0.0, r"lr=0.0 must lie in \(0.0, inf\)"),
        ("iql", "hidden", (0,), r"hidden=\(0,\) must be a tuple of ints in \[1, inf\]"),
        ("iql", "hidden", (64, -4), r"hidden=\(64, -4\) must be a tuple of ints in \[1, inf\]"),
        ("iql", "hidden", ("64",), r"hidden=\('64',\) must be a tuple of ints"),
        ("iql", "hidden", (32.0,), r"hidden=\(32.0,\) must be a tuple of ints"),
        ("iql", "choice_hidden", (True,), r"choice_hidden=\(True,\) must be a tuple of ints"),
        ("iql", "learning_starts", -100, r"learning_starts=-100 must lie in \[0, inf\]"),
        ("iql", "metrics_every", 0, r"metrics_every=0 must lie in \[1, inf\]"),
        ("mappo", "clip", -0.2, r"clip=-0.2 must lie in \[0.0, inf\]"),
        ("mappo", "vf_coef", -0.5, r"vf_coef=-0.5 must lie in \[0.0, inf\)"),
        ("mappo", "max_grad_norm", -1.0, r"max_grad_norm=-1.0 must lie in \(0.0, inf\]"),
        ("ippo", "lr", -1e-3, r"lr=-0.001 must lie in \(0.0, inf\)"),
        ("ippo", "critic_hidden", (0,), r"critic_hidden=\(0,\) must be a tuple of ints"),
        ("qmix", "mixer_embed", 0, r"mixer_embed=0 must lie in \[1, inf\]"),
        ("qmix", "hypernet_hidden", -3, r"hypernet_hidden=-3 must lie in \[1, inf\]"),
        ("vdn", "max_grad_norm", -1.0, r"max_grad_norm=-1.0 must lie in \(0.0, inf\]"),
        ("mf", "confidence", -5.0, r"confidence=-5.0 must lie in \[0.0, inf\)"),
        ("mf", "lr", -0.05, r"lr=-0.05 must lie in \[0.0, inf\)"),
        ("mf", "lr", INF, r"lr=inf must lie in \[0.0, inf\)"),
        ("mf", "reg", -1.0, r"reg=-1.0 must lie in \[0.0, inf\)"),
        ("epsilon_greedy", "prior_count", -1.0, r"prior_count=-1.0 must lie in \[0.0, inf\)"),
        ("ensemble", "weights", (NAN, 1.0), r"weights=\(nan, 1.0\) must be a tuple of floats"),
        ("ensemble", "weights", (INF, 1.0), r"weights=\(inf, 1.0\) must be a tuple of floats in"),
    ],
)
def test_out_of_range_hyperparameters_are_refused(env_for, name, key, value, expect):
    """Values that would train nonsense silently (a negative gradient-norm clip ascends the
    loss; lr=inf; an empty hidden layer) or crash deep inside torch are refused where the
    config is built, naming the agent, its config, the field and the allowed values."""
    env = env_for(name)
    with pytest.raises(ValueError, match=rf"^agent '{name}': \w+Config: {expect}"):
        agents.make_agent(name, env, **{key: value})


def test_hyperparameters_at_the_edges_of_their_ranges_are_accepted(market):
    env = market()
    iql = agents.make_agent("iql", env, max_grad_norm=INF, hidden=[np.int64(8), 4])
    assert iql.config.hidden == (8, 4) and all(type(h) is int for h in iql.config.hidden)
    assert agents.make_agent("mf", env, lr=0.0, reg=0.0, confidence=0.0).config.lr == 0.0
    assert agents.make_agent("mappo", env, clip=0.0, vf_coef=0.0, value_clip=0.0)
    assert agents.make_agent("ensemble", env, weights=(2, -0.5)).weights == [2.0, -0.5]
    assert agents.make_agent("epsilon_greedy", env, prior_count=0.0)


def test_seeds_must_fit_int64(market):
    """A seed outside int64 was torch's "Overflow when unpacking long long", naming nothing; an
    ensemble also seeds member j with seed + 1000 j, which must fit too."""
    env = market()
    for seed in (2**63, -(2**63) - 1, 2**64 - 1, 2**100):
        for name in ("random", "iql"):
            with pytest.raises(
                ValueError,
                match=rf"^agent '{name}': \w+: seed={seed} must (lie in|be an int in) \[-",
            ):
                agents.make_agent(name, env, seed=seed)
    for seed in (-(2**63), 2**63 - 1, np.int64(-1)):
        assert agents.make_agent("iql", env, seed=seed).config.seed == seed
    top = 2**63 - 1 - 2000  # two members by default
    ensemble = agents.make_agent("ensemble", env, seed=top)
    assert [m.config.seed for m in ensemble.members] == [top + 1000, top + 2000]
    with pytest.raises(
        ValueError, match=rf"agent 'ensemble': seed={top + 1} must lie in .*{top}\]"
    ):
        agents.make_agent("ensemble", env, seed=top + 1)


@pytest.mark.parametrize("name", ["iql", "mappo", "qmix"])
def test_building_an_agent_leaves_the_global_random_state_alone(env_for, monkeypatch, name):
    """Seeded initialisation reseeds neither the global CPU generator nor, as
    ``torch.manual_seed`` would, the CUDA ones (which ``fork_rng(devices=[])`` does not
    restore): on a GPU machine building an agent would reseed the user's CUDA stream."""
    env = env_for(name)
    calls = []
    for module in (torch.cuda, torch.mps, torch.xpu):
        for fn in ("manual_seed", "manual_seed_all"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, lambda *a, _f=fn: calls.append(_f))
    cpu = torch.random.get_rng_state()
    a = agents.make_agent(name, env, seed=5)
    assert calls == [] and torch.equal(cpu, torch.random.get_rng_state())
    torch.manual_seed(12345)  # the global state does not change the init either
    calls.clear()
    b = agents.make_agent(name, env, seed=5)
    for p, q in zip(_parameters(a), _parameters(b), strict=True):
        assert torch.equal(p, q)


def _parameters(agent):
    nets = [getattr(agent, k, None) for k in ("learners", "actors", "critic", "utilities", "mixer")]
    return [p for net in nets if net is not None for p in net.parameters()]


def test_config_lists_become_tuples(market):
    agent = agents.make_agent("iql", market(), hidden=[32, 32])
    assert agent.config.hidden == (32, 32)


def test_agent_ids_must_be_env_agents(market):
    env = market()
    with pytest.raises(ValueError, match="agent_ids"):
        agents.make_agent("random", env, agent_ids=["agent_7"])
    # One env agent may be named alone (it was split into characters and refused).
    assert agents.make_agent("random", env, agent_ids="agent_1").agent_ids == ["agent_1"]


@pytest.mark.parametrize("name", agents.registry.registered_agents())
def test_act_names_the_agent_ids_missing_from_obs(env_for, name):
    """Every registered agent's act(), and a plug-in's, refuses obs without an entry for an
    env agent it acts for, naming the agent, the ids and what obs held (it was a bare
    KeyError from inside the policy); an agent built for one env agent needs only that one."""
    env = env_for(name)
    obs = env.reset()
    agent = agents.make_agent(name, env)
    partial = {a: o for a, o in obs.items() if a != "agent_1"}
    with pytest.raises(ValueError, match=rf"agent '{name}': obs has no entry for env agent\(s\) "
                       r"\['agent_1'\].*obs holds \['agent_0'\]"):  # fmt: skip
        agent.act(partial)
    with pytest.raises(ValueError, match=rf"agent '{name}': act\(\) takes obs as"):
        agent.act([obs["agent_0"]])
    assert set(agent.act(obs)) == set(env.agents)

    class Plugin(agents.base.ScoringAgent):
        name = "plugin"

        def act(self, obs, explore=False):
            return {a: obs[a]["action_mask"].int().topk(self.slate_size).indices for a in obs}

    with pytest.raises(ValueError, match=r"agent 'plugin': obs has no entry .*\['agent_0'\]"):
        Plugin(env, agent_ids=["agent_0"]).act({"agent_1": obs["agent_1"]})
    assert set(Plugin(env, agent_ids=["agent_0"]).act({"agent_0": obs["agent_0"]})) == {"agent_0"}


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


def test_a_team_of_members_built_for_different_envs_is_refused(market):
    """Found only at the first ``train`` (by ``bind``) before; now when the team is built,
    naming the member and the sizes that differ."""
    rnd = agents.make_agent("random", market(), agent_ids=["agent_0"])
    other = agents.make_agent("linucb", market(num_items=500), agent_ids=["agent_1"])
    with pytest.raises(ValueError, match=r"team member 1 \('linucb'\) .*num_items=500 .*"
                       r"against num_items=2000"):  # fmt: skip
        agents.Team([rnd, other])


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


def test_a_plugins_scores_of_another_shape_are_refused_naming_it(market):
    """A ScoringAgent plug-in whose ``score_agent`` returns scores that are not ``[N, C]``
    (here ``[N, 3]``, or not a tensor) gets a ValueError naming it and the expected shape;
    it was a broadcasting RuntimeError inside the slate's top-k."""
    env = market()

    class ThreeScores(agents.ScoringAgent):
        name = "three_scores"

        def score_agent(self, i, obs_a, explore=False):
            return torch.zeros(obs_a["action_mask"].shape[0], 3)

    class ListScores(ThreeScores):
        name = "list_scores"

        def score_agent(self, i, obs_a, explore=False):
            return [0.0]

    obs = env.reset(seed=0)
    C = obs["agent_0"]["action_mask"].shape[1]
    with pytest.raises(
        ValueError, match=rf"'three_scores': .* 'agent_0' returned \(4, 3\); .*\(4, {C}\)"
    ):
        ThreeScores(env).act(obs)
    with pytest.raises(ValueError, match=r"'list_scores': .* returned list"):
        agents.train(ListScores(env), env, 8)
