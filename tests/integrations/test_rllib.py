"""Ray RLlib (new API stack): PPO trains on a recenv env with 2 env runners on a local Ray,
with one shared policy and with one policy per agent.

Ray tests share one local Ray (the ``local_ray`` fixture, always shut down) and one xdist
group: run the suite with ``--dist loadgroup`` so they land on one worker (without it they
still pass, each worker starting its own Ray).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

import recenv  # noqa: E402
from experiments import rllib_train  # noqa: E402
from experiments.rllib_train import TrainConfig, main, train  # noqa: E402
from recenv.integrations.rllib import env_creator  # noqa: E402
from tests.conftest import CALLER_SETTINGS, caller_setting  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")

TINY = {
    "iterations": 2,
    "num_env_runners": 2,
    "rollout_fragment_length": 16,
    "train_batch_size": 64,
    "minibatch_size": 32,
    "num_epochs": 1,
    "hidden": "32",
    "env_config": (("horizon", 16), ("num_items", 500)),
}


def _check_summary(summary, modules):
    assert summary["modules"] == modules
    rows = summary["iterations"]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[1]["env_steps_sampled_lifetime"] > rows[0]["env_steps_sampled_lifetime"] > 0
    assert sorted(rows[-1]["learners"]) == modules
    for stats in rows[-1]["learners"].values():
        assert stats["total_loss"] is not None and math.isfinite(stats["total_loss"])
    returns = [r["episode_return_mean"] for r in rows if r["episode_return_mean"] is not None]
    assert returns and all(math.isfinite(x) for x in returns)


def test_shared_policy_trains_two_iterations(local_ray, tmp_path):
    import torch

    cfg = TrainConfig(policies="shared", seed=1, out=str(tmp_path / "run"), **TINY)
    deterministic = torch.are_deterministic_algorithms_enabled()
    summary = train(cfg, log=lambda *_: None)
    # RLlib's seeding turns torch's deterministic algorithms on in the driver (its local
    # learner); the run sets the mode back as it found it.
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    _check_summary(summary, ["shared"])
    assert ray.is_initialized()  # a run leaves a Ray it did not start running
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["iterations"] == summary["iterations"]


def test_per_agent_policies_with_dict_obs_from_the_command_line(local_ray, tmp_path):
    out = tmp_path / "run"
    argv = ["--policies", "per-agent", "--obs", "dict", "--seed", "2", "--out", str(out)]
    for key, value in TINY.items():
        if key == "env_config":
            for k, v in value:
                argv += ["--set", f"env.{k}={v}"]
        else:
            argv += ["--" + key.replace("_", "-"), str(value)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    _check_summary(summary, ["agent_0", "agent_1"])
    assert summary["config"]["env_config"] == {"horizon": 16, "num_items": 500}


def test_refuses_an_existing_output_dir_before_starting_ray(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("results")
    assert main(["--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "results"


def test_bad_arguments_are_clear_errors(capsys):
    assert main(["--set", "env.horizn=5"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["--env", "recenv/Nope-v0"]) == 2
    assert "registered ids" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rllib_train.config_from_args(["--policies", "teams"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-epochs", "0"], "num_epochs=0 must be >= 1"),
        (["--hidden", ","], "hidden=',' must be a comma-separated list of positive ints"),
        (["--hidden", "64,x"], "hidden='64,x' must be a comma-separated list of positive ints"),
        (["--hidden", "64,0"], "hidden='64,0' must be a comma-separated list of positive ints"),
        (["--hidden", ""], "hidden='' must be a comma-separated list of positive ints"),
        (["--lr", "-1"], "lr=-1.0 must be a finite number > 0"),
        (["--lr", "nan"], "lr=nan must be a finite number > 0"),
        (["--gamma", "2"], "gamma=2.0 must be in [0, 1]"),
        (["--gamma", "nan"], "gamma=nan must be in [0, 1]"),
        (["--train-batch-size", "0", "--minibatch-size", "0"], "train_batch_size=0 must be >= 1"),
        (["--minibatch-size", "0"], "minibatch_size=0 must be >= 1"),
        (["--num-cpus", "-1"], "num_cpus=-1 must be >= 0"),
        (["--seed", "-1"], "seed=-1 must be in [0, 2**32 - 1 - num_env_runners]"),
        (["--seed", str(2**32 - 2)], "seed=4294967294 must be in [0, 2**32 - 1 - num_env"),
        (
            ["--train-batch-size", "64", "--minibatch-size", "128"],
            "minibatch_size=128 must be <= train_batch_size=64",
        ),
    ],
)
def test_bad_numbers_are_refused_before_ray_starts(argv, message, monkeypatch, capsys):
    """Regression test: these reached RLlib (an ``UnboundLocalError`` for 0 epochs, an
    ``IndexError`` or an int() error naming no flag for the hidden sizes, after Ray had
    started) or were taken silently (a negative learning rate, a discount of 2)."""

    def no_ray(cfg):
        raise AssertionError("Ray started")

    monkeypatch.setattr(rllib_train, "_init_ray", no_ray)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_every_setting_reaches_rllibs_ppo_config():
    """Each option of the command reaches the ``PPOConfig`` it builds (no Ray started): a
    setting dropped on the way trains with RLlib's default (gamma 0.99, one market per
    runner) without a word."""
    argv = ["--gamma", "0.9", "--lr", "0.002", "--num-env-runners", "1",
            "--num-envs-per-env-runner", "3", "--rollout-fragment-length", "20",
            "--train-batch-size", "120", "--minibatch-size", "40", "--num-epochs", "2",
            "--hidden", "16,8", "--seed", "5", "--policies", "per-agent",
            "--set", "env.horizon=30"]  # fmt: skip
    algo = rllib_train.build_algo_config(rllib_train.config_from_args(argv))
    assert (algo.gamma, algo.lr, algo.seed) == (0.9, 0.002, 5)
    assert (algo.train_batch_size_per_learner, algo.minibatch_size, algo.num_epochs) == (
        120, 40, 2,
    )  # fmt: skip
    assert (algo.num_env_runners, algo.num_envs_per_env_runner) == (1, 3)
    assert algo.rollout_fragment_length == 20
    assert algo.model_config["fcnet_hiddens"] == [16, 8]
    # The markets of one runner learn their count (each gets its own seed: rllib.py).
    assert algo.env_config == {
        "env_id": "recenv/Market-v0", "obs": "flat", "envs_per_env_runner": 3, "horizon": 30,
    }  # fmt: skip
    assert sorted(algo.policies) == ["agent_0", "agent_1"]


def test_hidden_sizes_parse():
    assert TrainConfig(hidden=" 64, 32 ").hidden_sizes == [64, 32]
    assert TrainConfig(hidden="16").hidden_sizes == [16]


def test_ray_workers_get_a_fixed_hash_seed(monkeypatch):
    """RLlib orders agents by string hashing: every Ray worker of a run starts with the
    driver's fixed ``PYTHONHASHSEED`` (the job's ``runtime_env``), locally and on a cluster."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert rllib_train._init_ray(TrainConfig())
    assert calls[-1]["runtime_env"] == {"env_vars": {"PYTHONHASHSEED": "0"}}
    assert rllib_train._init_ray(TrainConfig(address="auto", ship_package=True))
    assert calls[-1]["address"] == "auto"
    assert calls[-1]["runtime_env"] == {
        "py_modules": [recenv],
        "env_vars": {"PYTHONHASHSEED": "0"},
    }


def test_runtime_env_helper(monkeypatch):
    from recenv.integrations.rllib import runtime_env

    base = {"env_vars": {"A": "1"}, "pip": ["x"]}
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    assert runtime_env(base) == {"env_vars": {"A": "1", "PYTHONHASHSEED": "7"}, "pip": ["x"]}
    assert base == {"env_vars": {"A": "1"}, "pip": ["x"]}
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    assert runtime_env() == {"env_vars": {"PYTHONHASHSEED": "0"}}
    assert runtime_env(hash_seed="5") == {"env_vars": {"PYTHONHASHSEED": "5"}}
    with pytest.raises(ValueError, match="hash_seed"):
        runtime_env(hash_seed="random")


def test_policy_mapping_functions_are_recenvs():
    """A checkpoint pickles the mapping function by reference: recenv's, so that restoring
    does not need ``experiments`` (test_rllib_cli restores one)."""
    from recenv.integrations import rllib as recenv_rllib

    shared = rllib_train.build_algo_config(TrainConfig(**{**TINY, "policies": "shared"}))
    assert shared.policy_mapping_fn is recenv_rllib.shared_policy_mapping
    per_agent = rllib_train.build_algo_config(TrainConfig(**{**TINY, "policies": "per-agent"}))
    assert per_agent.policy_mapping_fn is recenv_rllib.per_agent_policy_mapping
    assert per_agent.policy_mapping_fn("agent_1") == "agent_1"


@pytest.mark.parametrize("obs", ["flat", "dict"])
def test_env_creator_gives_an_rllib_multi_agent_env(obs):
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    env = env_creator({"obs": obs, "horizon": 4, "num_items": 500})
    assert isinstance(env, MultiAgentEnv)
    obs_, _ = env.reset(seed=0)
    for agent, o in obs_.items():
        assert env.observation_space[agent].contains(o)
        if obs == "dict":
            assert "user_id" not in o and "candidate_ids" not in o
    rng = np.random.default_rng(0)
    for _ in range(4):  # slots drawn independently: duplicates are repaired, not raised
        actions = {a: rng.integers(0, 20, size=3) for a in env.possible_agents}
        obs_, rew, term, trunc, infos = env.step(actions)
        assert all(math.isfinite(r) for r in rew.values())
    assert trunc["__all__"] and not term["__all__"]
    assert all("repaired_slots" in infos[a] for a in env.possible_agents)


def test_without_ids_spaces_attribute_matches_its_observations():
    """``WithoutIds.observation_spaces`` (the attribute, not only the method) describes the
    stripped observation. Regression test: it was forwarded to the wrapped env's spaces,
    which keep the ids, so ``observation_spaces[a].contains(obs[a])`` was False."""
    from recenv.integrations.rllib import make_pettingzoo_env

    env = make_pettingzoo_env({"obs": "dict", "horizon": 4, "num_items": 500})
    obs, _ = env.reset(seed=0)
    for a in env.possible_agents:
        assert env.observation_spaces[a] is env.observation_space(a)
        assert env.observation_spaces[a].contains(obs[a])


def test_env_keeps_the_agent_order_and_renders():
    """Regression test: RLlib's ``ParallelPettingZooEnv`` listed ``agents`` /
    ``possible_agents`` from a ``set`` (their order changed with ``PYTHONHASHSEED``, process
    to process) and its ``render()`` passed a mode recenv's ``render()`` does not take
    (``TypeError``)."""
    env = env_creator({"horizon": 4, "num_items": 500, "num_agents": 6, "render_mode": "ansi"})
    expected = [f"agent_{i}" for i in range(6)]
    assert env.possible_agents == expected and env.agents == expected
    env.reset(seed=0)
    assert env.render().startswith("recenv/Market-v0 t=0")
    assert env.render_mode == "ansi"  # RLlib's wrapper left it None


def test_markets_of_several_runners_get_distinct_seeds():
    """RLlib seeds env ``i`` of runner ``w`` with ``seed + w + i``: with two envs per runner,
    env 1 of runner 1 and env 0 of runner 2 both got ``seed + 2`` and stepped the same market.
    Told ``envs_per_env_runner``, the env reseeds with ``seed + w * E + i``."""
    from ray.rllib.env.env_context import EnvContext

    small = {"horizon": 4, "num_items": 500}

    def first_obs(worker: int, index: int, per_runner: int, base: int = 10):
        ctx = EnvContext({**small, "envs_per_env_runner": per_runner}, worker_index=worker)
        obs, _ = env_creator(ctx).reset(seed=base + worker + index)  # RLlib's seed
        return obs["agent_0"]

    def market(seed: int):
        return recenv.make("recenv/Market-v0", flatten_obs=True, **small).reset(seed=seed)[0]

    # One env per runner (RLlib's default): the seeds are RLlib's, unchanged.
    assert np.array_equal(first_obs(3, 0, 1), market(13)["agent_0"])
    # Two per runner: runner w's env i is market base + 2w + i, all distinct.
    seeds = {(w, i): 10 + 2 * w + i for w in (1, 2) for i in (0, 1)}
    for (w, i), seed in seeds.items():
        assert np.array_equal(first_obs(w, i, 2), market(seed)["agent_0"])
    assert len(set(seeds.values())) == 4
    assert not np.array_equal(first_obs(1, 1, 2), first_obs(2, 0, 2))
    with pytest.raises(ValueError, match="envs_per_env_runner=0 must be an int >= 1"):
        env_creator({**small, "envs_per_env_runner": 0})


def _rllib_trace(obs_mode: str) -> list:
    """Everything an RLlib env from :func:`env_creator` returns over two short episodes
    (seeded, its unseeded construction-time reset included), with seeded random slots."""
    env = env_creator({"obs": obs_mode, "horizon": 5, "num_items": 500})
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    trace: list = [obs]
    for _ in range(8):
        actions = {a: rng.integers(0, 20, size=3) for a in env.possible_agents}
        obs, rew, term, trunc, infos = env.step(actions)
        trace += [obs, rew, term, trunc, {a: infos[a]["repaired_slots"] for a in obs}]
        if trunc["__all__"] or term["__all__"]:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


@pytest.mark.parametrize("setting", [*sorted(CALLER_SETTINGS), "inference_mode"])
def test_rllib_env_follows_no_caller_setting(setting):
    """The RLlib env under a float64 default dtype, another default device (meta standing in
    for CUDA) or inside ``torch.inference_mode()`` returns what it returns under torch's
    defaults. Built under the default device it failed: RLlib's wrapper resets the env it
    wraps, unseeded, and that first reset's seed draw went to the default device."""
    import torch

    want = _rllib_trace("dict")
    if setting == "inference_mode":
        with torch.inference_mode():
            got = _rllib_trace("dict")
    else:
        with caller_setting(setting):
            got = _rllib_trace("dict")
    assert len(got) == len(want)
    for a, b in zip(want, got, strict=True):
        for agent in a:
            x, y = a[agent], b[agent]
            if isinstance(x, dict):
                assert x.keys() == y.keys()
                assert all(np.array_equal(x[k], y[k]) for k in x), agent
            else:
                assert np.array_equal(x, y), agent
