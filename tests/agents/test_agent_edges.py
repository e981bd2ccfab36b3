"""Edges of checkpoint loading: a checkpoint loads into an agent that has already trained (its
replay rows and per-user tables sized by its own use, not its config), and a state of another
shape is refused by name, not met at the next step."""

from __future__ import annotations

import pytest
import torch

import agents

REPLAY = {"learning_starts": 8, "batch_size": 4, "update_every": 4, "hidden": (8,),
          "buffer_size": 200, "save_buffer": True}  # fmt: skip


def _copy(agent):
    """A copy of ``agent``'s state (``state_dict`` shares the live tensors' storage)."""
    return agents.base._map_tensors(agent.state_dict(), lambda t: t.detach().clone())


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", ["iql", "vdn", "qmix"])
def test_a_checkpoint_with_replay_loads_into_an_agent_that_trained_another_amount(
    name, market, tmp_path
):
    """Rolling a live agent back to an earlier checkpoint (early stopping): its replay buffer
    holds another number of rows than the saved one, which says nothing against the file. It
    was refused ("storage ... has shape (38, ...); this agent's has (20, ...)"); it loads, and
    the agent then equals one the checkpoint was loaded into fresh."""
    env = market(num_envs=2, horizon=10, reward_mode="cooperative")
    source = agents.make_agent(name, env, **REPLAY)
    agents.train(source, env, 40)
    path = tmp_path / f"{name}.pt"
    source.save(path)
    live = agents.make_agent(name, env, **REPLAY)
    agents.train(live, env, 20)
    live.load(path)
    assert _same(_copy(live), _copy(agents.load_agent(path, env)))


@pytest.mark.parametrize("name", ["iql", "vdn"])
def test_replay_rows_of_another_shape_are_refused_by_a_trained_agent(name, market, tmp_path):
    """The buffer's rows are compared row by row (not by their number): a saved row of another
    width is refused naming the buffer and the row, and the agent is left as it was."""
    env = market(num_envs=2, horizon=10, reward_mode="cooperative")
    source = agents.make_agent(name, env, **REPLAY)
    agents.train(source, env, 40)
    path = tmp_path / f"{name}.pt"
    source.save(path)
    payload = torch.load(path, weights_only=True)
    buffer = payload["state"]["buffers"][0] if name == "iql" else payload["state"]["buffer"]
    buffer["storage"]["reward"] = buffer["storage"]["reward"][:, None].repeat(1, 2)
    torch.save(payload, path)
    live = agents.make_agent(name, env, **REPLAY)
    agents.train(live, env, 20)
    before = _copy(live)
    with pytest.raises(ValueError, match=r"left unchanged.*buffer_size=200.*row 'reward'"):
        live.load(path)
    assert _same(before, _copy(live))


def test_mf_checkpoint_loads_into_an_agent_used_at_another_batch_size(market, tmp_path):
    """MF's per-(market, user) tables are sized by the batch it last acted on: a checkpoint
    written at 2 markets was refused by an agent that had evaluated on 4 ("state['rhs'] has
    shape (2, 50, 16); this agent's has (2, 100, 16)"), though a fresh agent takes it."""
    two, four = market(num_envs=2, horizon=10), market(num_envs=4, horizon=10)
    source = agents.make_agent("mf", two)
    agents.train(source, two, 20)
    path = tmp_path / "mf.pt"
    source.save(path)
    live = agents.make_agent("mf", four)
    agents.train(live, four, 20)
    live.load(path)
    assert _same(_copy(live), _copy(agents.load_agent(path, two)))
    agents.evaluate(live, four, seed=0)  # and acts on at its own batch size


@pytest.mark.parametrize(
    ("key", "damage", "message"),
    [
        ("gram", lambda t: t[..., :3, :3].clone(), r"state\['gram'\] has shape \(2, 50, 3, 3\)"),
        ("rhs", lambda t: t[:, :7].clone(), r"state\['rhs'\] has shape \(2, 7, 16\)"),
        ("gram", lambda t: torch.zeros(0), r"state\['gram'\] and state\['rhs'\] are both"),
    ],
)
def test_mf_user_tables_of_another_shape_are_refused(key, damage, message, market, tmp_path):
    """A fresh MF agent (no user tables yet) took any shape of them: a damaged ``gram`` of
    latent width 3 loaded silently, then the next act failed with torch's bare "The size of
    tensor a (3) must match ...". It is refused naming the table and the shape expected."""
    env = market(num_envs=2, horizon=10)
    source = agents.make_agent("mf", env)
    agents.train(source, env, 20)
    path = tmp_path / "mf.pt"
    source.save(path)
    payload = torch.load(path, weights_only=True)
    payload["state"][key] = damage(payload["state"][key])
    torch.save(payload, path)
    fresh = agents.make_agent("mf", env)
    before = _copy(fresh)
    with pytest.raises(ValueError, match=r"left unchanged\): agent 'mf': " + message):
        fresh.load(path)
    assert _same(before, _copy(fresh))


@pytest.mark.parametrize("key", ["buffers", "optimizers"])
def test_iql_state_missing_a_learners_buffer_or_optimizer_is_refused(key, market, tmp_path):
    """Two learners, two replay buffers saved: a checkpoint holding one loaded silently (the
    second learner kept its own rows, or none), or failed with zip()'s bare "argument 2 is
    shorter than argument 1" for the optimizers. Both name the list and the learners."""
    env = market(num_envs=2, horizon=10)
    source = agents.make_agent("iql", env, **REPLAY)
    agents.train(source, env, 40)
    path = tmp_path / "iql.pt"
    source.save(path)
    payload = torch.load(path, weights_only=True)
    payload["state"][key] = payload["state"][key][:1]
    torch.save(payload, path)
    fresh = agents.make_agent("iql", env, **REPLAY)
    before = _copy(fresh)
    with pytest.raises(
        ValueError, match=rf"agent 'iql': state\['{key}'\] holds 1 entries; expected 2, one per"
    ):
        fresh.load(path)
    assert _same(before, _copy(fresh))


def test_mf_dropping_its_user_tables_for_another_batch_size_drops_both(market, tmp_path):
    """A new episode announced for another number of markets than the tables were built for
    drops them; it dropped ``gram`` alone, so a checkpoint written then held ``rhs`` without
    ``gram``, which loading now refuses: both go, and such a checkpoint loads."""
    env = market(num_envs=2, horizon=10)
    agent = agents.make_agent("mf", env)
    agents.train(agent, env, 20)
    agent.begin_episode(torch.ones(3, dtype=torch.bool))
    assert agent.gram is None and agent.rhs is None
    agent.save(tmp_path / "mf.pt")
    agents.load_agent(tmp_path / "mf.pt", env)


@pytest.mark.parametrize("kind", ["ensemble", "team"])
def test_members_with_replay_load_into_members_that_trained_another_amount(kind, market, tmp_path):
    """An ensemble's and a team's members are laid out by their own ``state_layout``: an IQL
    member's saved replay rows do not have to number what the live member holds."""
    env = market(num_envs=2, horizon=10)

    def build():
        if kind == "ensemble":
            return agents.make_agent("ensemble", env, members=[("iql", REPLAY), "popularity"])
        return agents.Team(
            [
                agents.make_agent("iql", env, agent_ids=["agent_0"], **REPLAY),
                agents.make_agent("random", env, agent_ids=["agent_1"]),
            ]
        )

    source = build()
    agents.train(source, env, 40)
    path = tmp_path / f"{kind}.pt"
    source.save(path)
    live = build()
    agents.train(live, env, 20)
    live.load(path)
    assert _same(_copy(live), _copy(agents.load_agent(path, env)))


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("iql", {"n_step": 0}, "iql: {'n_step': 0, 'batch_size': "),
        ("iql", {"bootstrap": "episode"}, "iql: bootstrap='episode' must be 'market' or 'user'"),
        ("iql", {"gamma": 1.5}, "iql: gamma=1.5 (in [0, 1]) or target_tau="),
        ("mappo", {"epochs": 0}, "mappo: {'rollout_steps': "),
        ("mappo", {"gae_lambda": 2.0}, "mappo: gamma=0.95 and gae_lambda=2.0 must be in [0, 1]"),
        ("mf", {"user_scope": "session"}, "mf: user_scope='session' must be 'episode' or"),
        ("popularity", {"source": "all"}, "popularity: source='all' must be one of"),
        ("ensemble", {"normalize": "max"}, "ensemble: normalize='max' must be one of"),
    ],
)
def test_a_config_out_of_range_is_refused_naming_the_agent_and_value(
    name, overrides, message, market
):
    """Each constructor's refusal names the agent and the value it got (some said only
    "n_step, batch_size and update_every must be >= 1")."""
    with pytest.raises(ValueError) as caught:
        agents.make_agent(name, market(num_envs=2), **overrides)
    assert message in str(caught.value)
