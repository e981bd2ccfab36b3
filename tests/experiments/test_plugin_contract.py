"""The runner with plug-in agents that bend the agent protocol (from an audit that wrote an
external plug-in package): a tensor or vector metric from ``learn()``, a state that
``torch.load(weights_only=True)`` cannot read, a factory plug-in's seed and config keys, and a
run checkpoint whose agent state holds a foreign key. Each agent is defined here and
registered for the test (``agents.registry._REGISTRY``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from experiment_helpers import killed_copy, tiny_run, tree

import agents
from experiments import cli, runner
from experiments.config import RunConfig
from experiments.runner import RunError

RandomAgent = agents.agent_class("random")
ENV = (("horizon", 5), ("num_items", 100), ("num_users", 8))
TINY = dict(
    num_envs=2,
    total_steps=24,
    log_every=4,
    checkpoint_every=8,
    eval_episodes=2,
    agent_overrides=(),
    env_overrides=ENV,
)


class TensorMetric(RandomAgent):
    """Reports its loss as a 0-d tensor, as many plug-ins would."""

    name = "tensor_metric"

    def learn(self, transition):
        return {"losses/t": torch.tensor(0.5)}


class VectorMetric(RandomAgent):
    name = "vector_metric"

    def learn(self, transition):
        return {"losses/v": torch.ones(3)}


class NumpyState(RandomAgent):
    name = "numpy_state"

    def state_dict(self):
        return {**super().state_dict(), "hist": np.zeros(3)}


def _seeded_factory(env, agent_ids=None, seed=0):
    return RandomAgent(env, RandomAgent.Config(seed=seed), agent_ids=agent_ids)


def _kwargs_factory(env, agent_ids=None, **config):
    return RandomAgent(env, RandomAgent.Config(**config), agent_ids=agent_ids)


def _unseeded_factory(env, agent_ids=None):
    return RandomAgent(env, RandomAgent.Config(seed=7), agent_ids=agent_ids)


@pytest.fixture
def plugins(monkeypatch):
    for name, target in {
        "tensor_metric": TensorMetric,
        "vector_metric": VectorMetric,
        "numpy_state": NumpyState,
        "seeded_factory": _seeded_factory,
        "kwargs_factory": _kwargs_factory,
        "unseeded_factory": _unseeded_factory,
    }.items():
        monkeypatch.setitem(agents.registry._REGISTRY, name, target)
    monkeypatch.setattr(runner, "_UNSEEDED_WARNED", set())


def _killed(done: Path, where: Path) -> Path:
    """A copy of the finished run ``done`` as a process killed after its step-16 checkpoint
    leaves it."""
    return killed_copy(done, where, 16)


def test_a_tensor_metric_is_logged_summarized_and_resumed_as_a_float(plugins, tmp_path):
    """It was kept raw in ``loop.last_metrics``: saved into every checkpoint (which ``resume``
    then refused as damaged), and the run crashed writing summary.json (``Object of type
    Tensor is not JSON serializable``)."""
    done = runner.train(tiny_run(tmp_path / "runs", agent="tensor_metric", **TINY)).path
    summary = json.loads((done / "summary.json").read_text())
    assert summary["train_metrics"] == {"losses/t": 0.5}
    ckpt = runner.load_run_checkpoint(done / "checkpoints" / "step_000000000016.pt")
    assert ckpt["loop"]["last_metrics"] == {"losses/t": 0.5}
    run = _killed(done, tmp_path / "copy")
    again = runner.resume(run, quiet=True)
    assert again.summary["train_metrics"] == {"losses/t": 0.5}
    assert again.summary["eval"] == summary["eval"]


def test_a_run_checkpoint_holding_a_tensor_metric_still_resumes(plugins, tmp_path):
    """Checkpoints written before metrics were checked hold the tensor: they were refused as
    damaged (and so was every earlier one); they resume now, with the metric as a float."""
    done = runner.train(tiny_run(tmp_path / "runs", agent="random", **TINY)).path
    run = _killed(done, tmp_path / "copy")
    for path in (run / "checkpoints").glob("*.pt"):
        payload = torch.load(path, weights_only=True)
        payload["loop"]["last_metrics"] = {"losses/t": torch.tensor(0.5)}
        torch.save(payload, path)
    again = runner.resume(run, quiet=True)
    assert json.loads((run / "summary.json").read_text())["eval"] == again.summary["eval"]


def test_a_vector_metric_stops_the_run_naming_the_agent_and_metric(plugins, tmp_path, capsys):
    """It crashed TensorBoard's logging (``float()`` of a vector) with a bare traceback."""
    cfg = tiny_run(tmp_path / "runs", agent="vector_metric", **TINY)
    with pytest.raises(RunError) as err:
        runner.train(cfg)
    text = str(err.value)
    assert "agent 'vector_metric': learn() returned metric 'losses/v'" in text
    assert "a tensor of shape (3,)" in text and "0-d tensor" in text
    assert "Nothing after step 0 was logged or checkpointed" in text
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    args = ["train", "--agent", "vector_metric", "--set", f"root={tmp_path / 'cli'}"]
    args += ["--set", "total_steps=8", "--set", "num_envs=2", "--set", "env.horizon=5"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "error: run " in err and "'losses/v'" in err and "Traceback" not in err


def test_a_state_torch_cannot_read_back_is_not_checkpointed(plugins, tmp_path):
    """Run checkpoints holding a NumPy array were written, then every ``resume`` refused them
    as damaged."""
    cfg = tiny_run(tmp_path / "runs", agent="numpy_state", **TINY)
    with pytest.raises(RunError, match=r"state\['hist'\] is a numpy.ndarray.*weights_only"):
        runner.train(cfg)
    (run,) = (tmp_path / "runs").iterdir()
    assert not any((run / "checkpoints").glob("*.pt"))


def test_a_factory_plugin_gets_the_runs_seed(plugins, tmp_path):
    """The seed went only to agents with a Config: every seed of a comparison built a factory
    plug-in with its own default seed."""
    for name in ("seeded_factory", "kwargs_factory"):
        cfg = RunConfig(agent=name, seed=5, opponent=name, num_envs=2, env_overrides=ENV)
        env = runner.make_env(cfg)
        team = runner.make_lineup(cfg, env)
        assert [m.config.seed for m in team.members] == [5, 5 + runner.OPPONENT_SEED_OFFSET]
        explicit = RunConfig(agent=name, seed=5, agent_overrides=(("seed", 9),))
        assert runner.make_lineup(explicit, env).config.seed == 9


def test_a_factory_that_takes_no_seed_is_warned_about_once(plugins, tmp_path):
    cfg = RunConfig(agent="unseeded_factory", seed=5, num_envs=2, env_overrides=ENV)
    env = runner.make_env(cfg)
    with pytest.warns(UserWarning, match="'unseeded_factory' is a factory plug-in .* seed"):
        agent = runner.make_lineup(cfg, env)
    assert agent.config.seed == 7  # its own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runner.make_lineup(cfg, env)


def test_an_unknown_config_key_of_a_factory_is_a_config_error(plugins, tmp_path, capsys):
    """``train --agent factory --set agent.bogus=1`` was a raw TypeError traceback."""
    for name, valid in (("seeded_factory", "valid keys: ['seed']"), ("kwargs_factory", "")):
        root = tmp_path / name
        args = ["train", "--agent", name, "--set", "agent.bogus=1", "--set", f"root={root}"]
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("config error:") and "Traceback" not in err
        assert f"agent {name!r}" in err and "['bogus']" in err and valid in err
        assert not root.exists()


def test_a_foreign_key_in_a_run_checkpoints_agent_state_is_refused(plugins, tmp_path):
    """``load_state_dict`` reads the keys it knows: a foreign one was resumed silently."""
    done = runner.train(tiny_run(tmp_path / "runs", agent="random", **TINY)).path
    run = _killed(done, tmp_path / "copy")
    bad = run / "checkpoints" / "step_000000000016.pt"
    payload = torch.load(bad, weights_only=True)
    payload["state"]["foo"] = torch.zeros(2)
    torch.save(payload, bad)
    before = tree(run)
    with pytest.raises(RunError, match=r"damaged: state holds unexpected key\(s\) \['foo'\]"):
        runner.resume(run, quiet=True)
    assert tree(run) == before
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['foo'\]"):
        agents.make_agent("random", runner.make_env(runner.read_run_config(run))).load(bad)


def test_describe_agent_lists_a_factory_plugins_keys_and_seeding(plugins, capsys):
    """``describe agent`` said only "a factory plug-in without a declared config"; it names
    the keys the factory takes and whether the run's seed reaches it."""
    from experiments import cli

    expected = {
        "seeded_factory": "its keyword parameters ['seed']",
        "kwargs_factory": "any (**kwargs)",
        "unseeded_factory": "its keyword parameters []",
    }
    for name, keys in expected.items():
        assert cli.main(["describe", "agent", name]) == 0
        out = capsys.readouterr().out
        assert f"keys: {keys}" in out
        assert ("seed: no" in out) == (name == "unseeded_factory"), out
