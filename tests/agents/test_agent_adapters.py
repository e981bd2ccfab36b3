"""The PettingZoo adapter feeds an agent exactly what the batched face would.

A learning agent that is deterministic given its inputs (LinUCB exploring by its UCB, MF and
IQL without ε) plays one episode on ``recenv.make(seed=s)`` and one on
``recenv.make_vec(num_envs=1, seed=s)``: the same slates at every step and the same learned
state at the end prove that observations, clicks and engagement reach it identically.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import agents
import recenv

HORIZON = 30
DETERMINISTIC = {
    "linucb": {},
    "mf": {"epsilon": 0.0},
    "iql": {"eps_start": 0.0, "eps_end": 0.0, "learning_starts": 8, "batch_size": 8,
            "update_every": 2, "hidden": (16,), "buffer_size": 500},
}  # fmt: skip


def _learned(agent) -> list[torch.Tensor]:
    state = agent.state_dict()
    state.pop("generator", None)
    flat: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            flat.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(state)
    return flat


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
@pytest.mark.parametrize("flatten", [False, True])
def test_pettingzoo_face_matches_batched_face(name, flatten):
    config = DETERMINISTIC[name]
    vec = recenv.make_vec("recenv/Market-v0", num_envs=1, seed=4, horizon=HORIZON)
    batched_agent = agents.make_agent(name, vec, **config)
    slates_b = []
    obs = vec.reset(seed=4)
    batched_agent.begin_episode()
    for _ in range(HORIZON):
        actions = batched_agent.act(obs, explore=True)
        slates_b.append({a: s[0].tolist() for a, s in actions.items()})
        nxt, rew, term, trunc, info = vec.step(actions)
        tr = agents.Transition.from_step(vec.agents, obs, actions, rew, nxt, term, trunc, info)
        batched_agent.observe(tr)
        batched_agent.learn(tr)
        obs = nxt
    assert bool(trunc.all())

    env = recenv.make("recenv/Market-v0", seed=4, horizon=HORIZON, flatten_obs=flatten)
    pz_agent = agents.make_agent(name, env, **config)
    pz = agents.PettingZooAgent(pz_agent, env)
    obs, infos = env.reset(seed=4)
    pz.begin_episode()
    slates_p = []
    while env.agents:
        actions = pz.act(obs, infos, explore=True)
        assert all(isinstance(v, np.ndarray) and v.dtype == np.int64 for v in actions.values())
        slates_p.append({a: s.tolist() for a, s in actions.items()})
        nxt, rew, term, trunc, next_infos = env.step(actions)
        pz.step(obs, actions, rew, nxt, term, trunc, next_infos, prev_infos=infos)
        obs, infos = nxt, next_infos

    assert slates_p == slates_b
    for x, y in zip(_learned(batched_agent), _learned(pz_agent), strict=True):
        assert torch.allclose(x.float(), y.float(), atol=1e-5)


def test_adapter_refuses_a_batch_of_markets():
    vec = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    with pytest.raises(ValueError, match="one market"):
        agents.PettingZooAgent(agents.make_agent("random", vec), vec)


def test_run_episodes_needs_every_live_agent():
    env = recenv.make("recenv/Market-v0", seed=0, horizon=5)
    lone = agents.make_agent("random", env, agent_ids=["agent_0"])
    with pytest.raises(ValueError, match=r"combine agents with agents\.Team"):
        agents.run_episodes(lone, env)
    team = agents.Team([lone, agents.make_agent("oracle", env, agent_ids=["agent_1"])])
    (returns,) = agents.run_episodes(team, env, seed=0)
    assert set(returns) == {"agent_0", "agent_1"}


def test_the_adapter_copies_the_faces_read_only_views():
    """The face's observations are read-only views of the market's tensors: the batch the
    adapter builds must not share their memory (an agent's in-place edit would reach the
    market) and must not make torch warn about a non-writable array."""
    env = recenv.make("recenv/Market-v0", seed=0, horizon=5)
    pz = agents.PettingZooAgent(agents.make_agent("random", env), env)
    obs, _ = env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = pz.to_batch("agent_0", obs["agent_0"])
    before = obs["agent_0"]["candidates"].copy()
    batch["candidates"].add_(1.0)
    np.testing.assert_array_equal(obs["agent_0"]["candidates"], before)


# ----------------------------------------------------------------------------------------
# An agent as a fixed opponent of the single-agent views
# ----------------------------------------------------------------------------------------
def _view_rollout(make_opponent, steps: int = 12):
    """Rewards and observations of agent_0 (first K legal candidates each step) against
    ``make_opponent(market)`` in ``SingleAgentVectorEnv``."""
    from recenv.integrations.gymnasium_vector import SingleAgentVectorEnv

    market = recenv.make_vec("recenv/Market-v0", num_envs=3, seed=2, num_items=500, horizon=8)
    view = SingleAgentVectorEnv(market, opponents=make_opponent(market), tensors=True)
    obs, _ = view.reset(seed=2)
    K = market.config.slate_size
    out = []
    for _ in range(steps):
        slate = torch.sort((~obs["action_mask"].bool()).to(torch.int8), dim=1, stable=True)
        obs, reward, *_ = view.step(slate.indices[:, :K])
        out.append((reward.clone(), obs["candidates"].clone()))
    return out


def test_an_agent_serves_as_a_fixed_opponent_of_the_single_agent_view():
    """``agents.AgentOpponent``: the oracle agent built for agent_1 of the view's market
    plays what the view's built-in ``"oracle"`` opponent plays, step for step."""
    builtin = _view_rollout(lambda market: "oracle")
    wrapped = _view_rollout(
        lambda m: agents.AgentOpponent(agents.make_agent("oracle", m, agent_ids=["agent_1"]),
                                       "agent_1")
    )  # fmt: skip
    for (r1, o1), (r2, o2) in zip(builtin, wrapped, strict=True):
        assert torch.equal(r1, r2) and torch.equal(o1, o2)
    popularity = _view_rollout(
        lambda m: agents.AgentOpponent(
            agents.make_agent("popularity", m, agent_ids=["agent_1"]), "agent_1"
        )
    )
    assert any(
        not torch.equal(r1, r2) for (r1, _), (r2, _) in zip(builtin, popularity, strict=True)
    )


def test_an_opponent_agent_must_control_exactly_its_env_agent():
    market = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, num_items=500, horizon=8)
    both = agents.make_agent("random", market)
    with pytest.raises(
        ValueError, match=r"controls \['agent_0', 'agent_1'\].*agent_ids=\['agent_1'\]"
    ):
        agents.AgentOpponent(both, "agent_1")
    from recenv.integrations.gymnasium_vector import SingleAgentVectorEnv

    with pytest.raises(ValueError, match=r"'popularity' is neither.*agents.AgentOpponent"):
        SingleAgentVectorEnv(market, opponents="popularity")


def test_run_episodes_seeds_episode_e_with_seed_plus_e():
    """Episode ``e`` of ``run_episodes(..., seed=s)`` is the one a call with ``seed=s + e``
    plays first (a deterministic agent, so only the markets' seeds decide)."""
    env = recenv.make("recenv/Market-v0", seed=0, horizon=8)
    agent = agents.make_agent("oracle", env)
    two = agents.run_episodes(agent, env, 2, seed=4)
    assert two[1] == agents.run_episodes(agent, env, 1, seed=5)[0]
    assert two[0] == agents.run_episodes(agent, env, 1, seed=4)[0] != two[1]


def test_the_adapter_tells_the_agent_which_slates_reached_the_user():
    """Under ``topology="platform_choice"`` the user visits one platform a request (or none),
    so the other agents' slates reach nobody: the adapter's transitions mark them unserved
    (``Transition.served``) step for step as the batched face's do, and their rows are not
    the agent's ``seen`` feedback."""
    cfg = {"horizon": HORIZON, "topology": "platform_choice"}
    vec = recenv.make_vec("recenv/Market-v0", num_envs=1, seed=4, **cfg)
    batched = agents.make_agent("popularity", vec)
    obs, want = vec.reset(seed=4), []
    for _ in range(HORIZON):  # the episode: until its termination or truncation
        actions = batched.act(obs)
        nxt, rew, term, trunc, info = vec.step(actions)
        tr = agents.Transition.from_step(vec.agents, obs, actions, rew, nxt, term, trunc, info)
        want.append([bool(tr.served[a][0]) for a in vec.agents])
        obs = nxt
        if bool(tr.ended[0]):
            break
    assert bool(tr.ended[0])
    assert any(not all(row) for row in want)  # some slates reached nobody

    env = recenv.make("recenv/Market-v0", seed=4, **cfg)
    agent, got = agents.make_agent("popularity", env), []
    observe = agent.observe

    def spy(tr):
        got.append([bool(tr.seen(a)[0]) for a in env.possible_agents])
        return observe(tr)

    agent.observe = spy
    agents.run_episodes(agent, env, 1, seed=4)
    assert got == want
