"""Save, load and continue: reloaded agents act identically; foreign or damaged checkpoints
raise a clear ``ValueError``."""

from __future__ import annotations

import warnings

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


# ----------------------------------------------------------------------------------------
# Env sizes, failed loads, older formats, generators from another device
# ----------------------------------------------------------------------------------------
def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _snapshot(agent):
    """A copy of the agent's state (``state_dict`` shares the live parameters' storage)."""
    return agents.base._map_tensors(agent.state_dict(), lambda t: t.detach().clone())


@pytest.mark.parametrize("name", ["mappo", "qmix"])
def test_env_sizes_that_set_input_widths_are_checked(name, market, tmp_path):
    """``embed_dim`` changes the global state's width (what MAPPO's critic and QMIX's mixer
    read) and nothing the actors see: training on, or loading a checkpoint of, an env with
    another is refused naming the sizes, before a step runs or a weight is overwritten."""
    small = {"mappo": {"rollout_steps": 4},
             "qmix": {"learning_starts": 16, "batch_size": 8, "update_every": 4}}[name]  # fmt: skip
    env = market(reward_mode="cooperative")
    other = market(reward_mode="cooperative", embed_dim=4)
    mine = f"embed_dim=8, state_dim={env.config.state_dim}"
    theirs = f"embed_dim=4, state_dim={other.config.state_dim}"
    agent = agents.make_agent(name, env, **small)
    with pytest.raises(ValueError, match=rf"an env with {mine}; this env has .* and {theirs}$"):
        agents.train(agent, other, 4 * 10)
    path = tmp_path / f"{name}.pt"
    agents.make_agent(name, other, **small).save(path)
    before = _snapshot(agent)
    with pytest.raises(ValueError, match=rf"written for an env with {theirs}; .* has {mine} "):
        agent.load(path)
    assert _same_state(before, _snapshot(agent))


@pytest.mark.parametrize(
    ("name", "last_key"), [("iql", "updates"), ("mappo", "updates"), ("qmix", "updates"),
                           ("mf", "rhs")]
)  # fmt: skip
def test_a_state_that_fails_to_apply_leaves_the_agent_unchanged(name, last_key, env_for, tmp_path):
    """A checkpoint whose header fits but whose state breaks after the generator, networks and
    optimiser were applied (its last-read entry is missing): the load raises and the agent
    keeps every part of its own state, generator included."""
    fast = {"iql": LEARN_FAST["iql"],
            "qmix": {"learning_starts": 32, "batch_size": 16, "update_every": 8},
            "mappo": {"rollout_steps": 8}}.get(name, {})  # fmt: skip
    env = env_for(name, num_envs=4, horizon=25, seed=0)
    source = agents.make_agent(name, env, **fast)
    agents.train(source, env, 4 * 40)  # weights, optimiser and generator move on
    path = tmp_path / f"{name}.pt"
    source.save(path)
    payload = torch.load(path, weights_only=True)
    del payload["state"][last_key]
    torch.save(payload, path)

    agent = agents.make_agent(name, env, **fast)
    before = _snapshot(agent)
    assert not _same_state(before, _snapshot(source))
    with pytest.raises(ValueError, match=r"does not fit this agent \(left unchanged\)"):
        agent.load(path)
    assert _same_state(before, _snapshot(agent))


def _damaged(name, env, tmp_path, fast, damage):
    """A trained ``name`` agent's checkpoint with ``damage(payload)`` applied, and a fresh
    agent of the same config to load it into."""
    source = agents.make_agent(name, env, **fast)
    agents.train(source, env, 4 * 40)
    path = tmp_path / f"{name}.pt"
    source.save(path)
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    return path, agents.make_agent(name, env, **fast)


def _group(payload):
    """The first parameter group of MAPPO's optimiser (its settings)."""
    return payload["state"]["optimizer"]["param_groups"][0]


def _moments(payload):
    """The first parameter's entries in MAPPO's optimiser (step, exp_avg, exp_avg_sq)."""
    return payload["state"]["optimizer"]["state"][0]


def _set_moment(payload, shape=None, drop=False):
    """The first parameter's ``exp_avg`` in MAPPO's optimiser, reshaped or dropped."""
    moments = payload["state"]["optimizer"]["state"][0]
    if drop:
        del moments["exp_avg"]
    else:
        moments["exp_avg"] = torch.zeros(shape)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        # copy_ broadcast a number over the whole table: the counts became 7 everywhere.
        ("popularity", lambda p: p["state"].__setitem__("clicks", 7),
         r"state\['clicks'\] is a int; expected a tensor"),
        ("popularity", lambda p: p["state"].__setitem__("clicks", torch.ones(1, 1)),
         r"state\['clicks'\] has shape \(1, 1\)"),
        # an AttributeError from the generator's restore
        ("random", lambda p: p["state"].__setitem__("generator", None),
         r"state\['generator'\] is a NoneType; expected a tensor"),
        ("mappo", lambda p: p["state"]["optimizer"]["param_groups"][0].__setitem__("lr", "0.1"),
         r"\['lr'\] is '0.1'; expected a number"),
        # Adam's moments: accepted, then an error (or a broadcast) at the next update.
        ("mappo", lambda p: _set_moment(p, shape=(1,)), r"'exp_avg' has shape \(1,\)"),
        ("mappo", lambda p: _set_moment(p, drop=True), r"parameters hold different entries"),
        # Loaded silently, then a KeyError / a complex power at the next update, or trained
        # on: a deleted or out-of-range setting, a damaged moment, NaN weights, a counter
        # that int() truncated, a replay ring no run could reach.
        ("mappo", lambda p: _group(p).pop("lr"), r"optimizer: param_groups\[0\] lacks \['lr'\]"),
        ("mappo", lambda p: _group(p).update(lr=-1.0), r"Invalid learning rate: -1.0"),
        ("mappo", lambda p: _group(p).update(lr=float("nan")), r"is nan; expected a finite"),
        ("mappo", lambda p: _group(p).update(betas=(2.0, 0.5)), r"Invalid beta parameter"),
        ("mappo", lambda p: _group(p).update(betas=(0.9,)), r"expected 2 finite numbers"),
        ("mappo", lambda p: _group(p).update(foreach=3.5), r"expected None or a bool"),
        ("mappo", lambda p: _moments(p).update(step=torch.tensor(-5.0)),
         r"'step' is -5.0; expected a whole number >= 0"),
        ("mappo", lambda p: _moments(p)["exp_avg_sq"].neg_().sub_(1),
         r"'exp_avg_sq' of a parameter holds negative values"),
        ("mappo", lambda p: _moments(p)["exp_avg"].view(-1)[0].fill_(float("inf")),
         r"\['exp_avg'\] holds 1 non-finite value"),
        ("mappo", lambda p: p["state"]["value_stats"]["var"].fill_(-1.0),
         r"value_stats: state\['var'\] holds 2 negative entries"),
        ("iql", lambda p: next(iter(p["state"]["learners"].values())).fill_(float("nan")),
         r"\['learners'\]\['[^']*'\] holds \d+ non-finite values .*diverged"),
        ("iql", lambda p: p["state"].update(env_steps=3.7), r"\['env_steps'\] is 3.7"),
        ("iql", lambda p: p["state"].update(updates=-1), r"\['updates'\] is -1"),
        ("iql", lambda p: p["state"]["buffers"][0].update(size=10**4),
         r"replay buffer .*size=10000 exceeds the capacity 2000"),
        ("iql", lambda p: p["state"]["buffers"][0].update(size=10),
         r"stored rows \{'user': \d+.*\} are not size=10"),
        ("iql", lambda p: p["state"]["buffers"][0].update(pos=3),
         r"pos=3 is not size=\d+ \(the ring is not full yet\)"),
        # Loaded, then a bare "row keys differ" at the first add of the resumed run.
        ("iql", lambda p: p["state"]["buffers"][0]["storage"].pop("reward"),
         r"buffer_size=2000: row keys lack \['reward'\] and have unexpected \[\]"),
        ("iql", lambda p: p["state"]["buffers"][0]["storage"].update(extra=torch.zeros(1)),
         r"row keys lack \[\] and have unexpected \['extra'\]"),
        ("popularity", lambda p: p["state"]["exposures"].view(-1)[:4].fill_(-1.0),
         r"agent 'popularity': state\['exposures'\] holds 4 negative entries"),
        ("epsilon_greedy", lambda p: p["state"]["count"].view(-1)[0].fill_(-2.0),
         r"state\['count'\] holds 1 negative entries"),
    ],
)  # fmt: skip
def test_a_state_of_the_wrong_kind_or_shape_is_refused(name, damage, message, env_for, tmp_path):
    """Damage that fits the header and that ``load_state_dict`` would have taken (or failed on
    with a raw AttributeError): a ValueError naming the place, the agent left unchanged, and
    ``load_agent`` refusing the file too."""
    env = env_for(name, num_envs=4, horizon=25, seed=0)
    fast = {"mappo": {"rollout_steps": 8}, "iql": {**LEARN_FAST["iql"], "save_buffer": True}}
    path, agent = _damaged(name, env, tmp_path, fast.get(name, {}), damage)
    before = _snapshot(agent)
    refused = r"does not fit this agent \(left unchanged\): .*"
    with pytest.raises(ValueError, match=refused + message):
        agent.load(path)
    assert _same_state(before, _snapshot(agent))
    with pytest.raises(ValueError, match=message):
        agents.load_agent(path, env)


def test_a_header_asking_for_more_memory_than_there_is_is_refused(market, tmp_path):
    """A damaged header's size (MF's latent dimension 10^12) fails the agent's build with an
    allocation error: ``load_agent`` names the file and the header instead."""
    env = market(num_envs=2)
    path = tmp_path / "mf.pt"
    agents.make_agent("mf", env).save(path)
    payload = torch.load(path, weights_only=True)
    payload["header"]["config"]["dim"] = 10**12
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"mf.pt'.*refuses header .*RuntimeError"):
        agents.load_agent(path, env)


def _as_format_1(payload):
    """A checkpoint as agents wrote it before format 2: six env sizes in the header, no
    generator device in the state."""

    def header(h):
        h["format_version"] = 1
        h["env"] = {k: h["env"][k] for k in agents.base.ENV_SHAPES[:6]}
        for m in h.get("members", []):
            header(m)

    def state(s):
        s.pop("generator_device", None)
        for m in s.get("members", []):
            state(m)

    header(payload["header"])
    state(payload["state"])
    return payload


@pytest.mark.parametrize("team", [False, True])
def test_format_1_checkpoints_still_load(team, market, tmp_path):
    """Older checkpoints stay readable: their env is compared on the sizes they recorded (the
    state's shapes check the rest) and their generator state is restored exactly."""
    env = market()
    if team:
        agent = agents.make_team(env, {"agent_0": "linucb", "agent_1": "random"})
    else:
        agent = agents.make_agent("mappo", env, rollout_steps=8)
    agents.train(agent, env, 4 * 20)
    path = tmp_path / "old.pt"
    agent.save(path)
    torch.save(_as_format_1(torch.load(path, weights_only=True)), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no reseeding: the saved state fits
        again = agents.load_agent(path, env)
    obs = _copy_obs(env.observe())
    mine, theirs = agent.act(obs, explore=True), again.act(obs, explore=True)
    assert all(torch.equal(mine[a], theirs[a]) for a in env.agents)
    refusal = "env shapes" if team else r"num_candidates=20; .* has num_candidates=12"
    with pytest.raises(ValueError, match=refusal):
        agents.load_agent(path, market(num_candidates=12))


def test_a_generator_state_from_another_device_type_reseeds(market, tmp_path):
    """A CUDA generator's state (Philox seed and offset, 16 bytes) cannot be set on a CPU
    generator (mt19937, 5056 bytes): loading one reseeds the agent's generator from the saved
    bytes, with a warning, the same way on every load."""
    env = market()
    agent = agents.make_agent("random", env, seed=3)
    path = tmp_path / "random.pt"
    agent.save(path)
    payload = torch.load(path, weights_only=True)
    assert payload["state"]["generator_device"] == "cpu"

    def loaded(saved, device_type):
        payload["state"]["generator"] = saved
        if device_type is None:
            payload["state"].pop("generator_device", None)
        else:
            payload["state"]["generator_device"] = device_type
        torch.save(payload, path)
        again = agents.make_agent("random", env, seed=3)
        with pytest.warns(UserWarning, match="reseeded with"):
            again.load(path)
        return again.generator.get_state()

    philox = torch.arange(16, dtype=torch.uint8)
    first = loaded(philox, "cuda")
    assert torch.equal(first, loaded(philox, "cuda"))  # deterministic
    assert torch.equal(first, loaded(philox, None))  # format 1: judged by the state's size
    assert not torch.equal(first, loaded(philox.flip(0), "cuda"))
    assert not torch.equal(first, agent.generator.get_state())
    # A state of this device type that does not fit is a damaged checkpoint, not reseeded.
    payload["state"]["generator"], payload["state"]["generator_device"] = philox, "cpu"
    torch.save(payload, path)
    before = agent.generator.get_state()
    with pytest.raises(ValueError, match="does not fit this agent"):
        agent.load(path)
    assert torch.equal(before, agent.generator.get_state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["random", "iql", "mappo", "linucb"])
def test_checkpoints_move_between_cpu_and_cuda(name, tmp_path):
    import recenv

    cpu = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, horizon=30)
    gpu = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, horizon=30, device="cuda")
    for source, target in ((cpu, gpu), (gpu, cpu)):
        path = tmp_path / f"{name}-{source.device.type}.pt"
        agents.make_agent(name, source).save(path)
        with pytest.warns(UserWarning, match="reseeded with"):
            again = agents.load_agent(path, target)
        assert again.device.type == target.device.type
        again.act(target.reset(seed=0), explore=True)
