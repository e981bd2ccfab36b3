"""Save, load and continue: reloaded agents act identically; foreign or damaged checkpoints
raise a clear ``ValueError``."""

from __future__ import annotations

import pytest
import torch

import agents

LEARN_FAST = {
    "iql": {"learning_starts": 64, "batch_size": 32, "update_every": 8, "hidden": (32,),
            "buffer_size": 2_000},
}  # fmt: skip


def _copy_obs(obs):
    return {a: {k: v.clone() for k, v in o.items()} for a, o in obs.items()}


@pytest.mark.parametrize("name", agents.registered_agents())
def test_reloaded_agent_acts_identically(name, env_for, tmp_path):
    env = env_for(name, num_envs=4, horizon=25, seed=0)
    agent = agents.make_agent(name, env, **LEARN_FAST.get(name, {}))
    agents.train(agent, env, 4 * 40)
    path = tmp_path / f"{name}.pt"
    agent.save(path)
    obs = _copy_obs(env.observe())

    for again in (agents.load_agent(path, env), _fresh_then_load(name, env, path)):
        assert type(again) is type(agent)
        for explore in (False, True):  # exploring too: the generator state is restored
            state = agent.generator.get_state()
            mine = agent.act(obs, explore)
            agent.generator.set_state(state)
            theirs = again.act(obs, explore)
            again.load(path)  # rewind the copy's generator for the next round
            for a in env.agents:
                assert torch.equal(mine[a], theirs[a]), (name, explore, a)


def _fresh_then_load(name, env, path):
    agent = agents.make_agent(name, env, **LEARN_FAST.get(name, {}))
    agent.load(path)
    return agent


def test_continued_training_matches_uninterrupted(market, tmp_path):
    """IQL with its replay buffer in the checkpoint: saving, loading and training on gives the
    same parameters as training straight through."""
    config = {**LEARN_FAST["iql"], "save_buffer": True}
    env = market(num_envs=4, horizon=25, seed=3)
    agent = agents.make_agent("iql", env, **config)
    agents.train(agent, env, 4 * 50, seed=3)
    path = tmp_path / "iql.pt"
    agent.save(path)
    again = agents.load_agent(path, env)

    env_a, env_b = market(num_envs=4, horizon=25), market(num_envs=4, horizon=25)
    agents.train(agent, env_a, 4 * 50, seed=11)
    agents.train(again, env_b, 4 * 50, seed=11)
    assert agent.updates == again.updates > 0
    for p, q in zip(agent.learners.parameters(), again.learners.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoint_of_another_agent_is_refused(market, tmp_path):
    env = market()
    path = tmp_path / "linucb.pt"
    agents.make_agent("linucb", env).save(path)
    with pytest.raises(
        ValueError, match="holds agent 'linucb'; expected a checkpoint of agent 'iql'"
    ):
        agents.make_agent("iql", env).load(path)


def test_checkpoint_with_other_config_or_env_is_refused(market, tmp_path):
    env = market()
    path = tmp_path / "iql.pt"
    agents.make_agent("iql", env, hidden=(32,)).save(path)
    with pytest.raises(ValueError, match=r"different config.*hidden"):
        agents.make_agent("iql", env, hidden=(64,)).load(path)
    with pytest.raises(ValueError, match="num_candidates"):
        agents.make_agent("iql", market(num_candidates=12), hidden=(32,)).load(path)
    with pytest.raises(ValueError, match="agent_ids"):
        agents.make_agent("iql", env, hidden=(32,), agent_ids=["agent_1"]).load(path)


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty", "not_an_agent", "pickled_object", "future_version"],
)
def test_damaged_or_foreign_files_are_refused(damage, market, tmp_path):
    env = market()
    agent = agents.make_agent("linucb", env)
    path = tmp_path / "ckpt.pt"
    agent.save(path)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x89PNG not a checkpoint" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_an_agent":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "pickled_object":
        torch.save({"header": {"agent": "linucb"}, "state": torch.nn.Linear(2, 2)}, path)
    elif damage == "future_version":
        payload = torch.load(path, weights_only=True)
        payload["header"]["format_version"] = 99
        torch.save(payload, path)
    with pytest.raises(ValueError, match="checkpoint"):
        agent.load(path)
    with pytest.raises(ValueError, match="checkpoint"):
        agents.load_agent(path, env)


def test_team_checkpoint_round_trip(market, tmp_path):
    env = market()
    team = agents.make_team(env, {"agent_0": "linucb", "agent_1": "popularity"})
    agents.train(team, env, 4 * 30)
    path = tmp_path / "team.pt"
    team.save(path)
    again = agents.load_agent(path, env)
    obs = env.observe()
    mine, theirs = team.act(obs), again.act(obs)
    assert all(torch.equal(mine[a], theirs[a]) for a in env.agents)
    other = agents.make_team(env, {"agent_0": "popularity", "agent_1": "linucb"})
    with pytest.raises(ValueError, match="holds a team"):
        other.load(path)
