"""SuperSuit + Stable-Baselines3: the parameter-sharing recipe trains PPO on a recenv env."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

pytest.importorskip("supersuit")
pytest.importorskip("stable_baselines3")

import recenv
from recenv.integrations.sb3 import make_sb3_vec_env

MARKET = "recenv/Market-v0"
SMALL = {"num_items": 500, "horizon": 16}


def test_ppo_trains_through_supersuit_and_reward_is_finite(one_thread, tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    # learn() at verbose=0 makes an empty log dir in /tmp unless SB3_LOGDIR names one.
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, **SMALL)
    assert venv.num_envs == 4  # 2 copies x 2 agents, one shared policy
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=128, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    episodes = list(model.ep_info_buffer)
    assert episodes and all(ep["l"] == SMALL["horizon"] for ep in episodes)
    assert all(math.isfinite(ep["r"]) for ep in episodes)
    logged = model.logger.name_to_value
    assert math.isfinite(logged["train/loss"]) and math.isfinite(logged["train/value_loss"])
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (4, 3)
    venv.close()


def test_seed_is_forwarded_to_every_copy():
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, seed=5, **SMALL)
    obs = venv.reset()
    for copy in range(2):
        single, _ = recenv.make(MARKET, seed=5 + copy, flatten_obs=True, **SMALL).reset()
        for a, agent in enumerate(single):
            np.testing.assert_array_equal(obs[2 * copy + a], single[agent])
    # SB3's seed() (what PPO(seed=s) calls) is kept for the next reset.
    assert venv.seed(7) == [7, 7, 8, 8]
    obs = venv.reset()
    single, _ = recenv.make(MARKET, seed=8, flatten_obs=True, **SMALL).reset()
    np.testing.assert_array_equal(obs[2], single["agent_0"])


def test_a_seed_seeds_one_reset_and_later_resets_continue_the_streams():
    """``seed=s`` (or ``seed(s)``) is used by the next reset only: a second ``reset()`` (an
    evaluation after training, say) continues each copy's stream, as a second unseeded reset
    of the PettingZoo env does, instead of replaying the first episode."""
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, seed=5, **SMALL)
    first, again = venv.reset(), venv.reset()
    assert not np.array_equal(first, again)
    for copy in range(2):
        single = recenv.make(MARKET, seed=5 + copy, flatten_obs=True, **SMALL)
        single.reset()
        second, _ = single.reset()
        np.testing.assert_array_equal(again[2 * copy], second["agent_0"])


def test_unseeded_copies_do_not_replay_one_stream():
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, **SMALL)
    obs = venv.reset()
    assert not np.array_equal(obs[0], obs[2])


def test_the_adapter_gives_clones_of_a_used_env_their_own_streams():
    """``SB3Adapter``'s first unseeded reset draws a seed from the OS: clones of an env that
    has already played (its market's stream running, as SuperSuit's cloudpickled copies of
    it would be) start apart, where a plain reset continues the one stream in each."""
    import copy

    from recenv.integrations.sb3 import SB3Adapter

    env = recenv.make(MARKET, seed=3, flatten_obs=True, **SMALL)
    env.reset()
    plain = [copy.deepcopy(env).reset()[0]["agent_0"] for _ in range(2)]
    np.testing.assert_array_equal(*plain)  # what the adapter is there to prevent
    adapted = [SB3Adapter(copy.deepcopy(env)).reset()[0]["agent_0"] for _ in range(2)]
    assert not np.array_equal(*adapted)


def test_horizon_is_a_truncation_with_terminal_observation_and_monitor_stats():
    venv = make_sb3_vec_env(MARKET, num_vec_envs=1, seed=0, **SMALL)
    venv.reset()
    rng = np.random.default_rng(0)
    returns = np.zeros(venv.num_envs)
    for t in range(SMALL["horizon"]):
        actions = np.stack([rng.permutation(20)[:3] for _ in range(venv.num_envs)])
        obs, rewards, dones, infos = venv.step(actions)
        assert np.isfinite(rewards).all()
        assert dones.all() == (t == SMALL["horizon"] - 1)
        returns += rewards
    assert returns.any()
    for info, ret in zip(infos, returns, strict=True):
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == obs[0].shape
        # Monitor's statistics: the slot's summed rewards and the episode's length.
        assert info["episode"]["l"] == SMALL["horizon"]
        assert info["episode"]["r"] == pytest.approx(ret)
        assert "ctr" in info["recenv_episode"]
        assert "repaired_slots" in info


def test_recipe_refuses_settings_it_cannot_honour():
    with pytest.raises(ValueError, match="repair"):
        make_sb3_vec_env(MARKET, invalid_slate="raise", **SMALL)
    with pytest.raises(ValueError, match="flat"):
        make_sb3_vec_env(MARKET, flatten_obs=False, **SMALL)
    with pytest.raises(ValueError, match="overlapping seeds"):
        make_sb3_vec_env(MARKET, num_vec_envs=2, num_cpus=2, seed=0, **SMALL)


BAD_ARGUMENTS = [
    # SuperSuit failed later: an IndexError (0), a TypeError (2.0, "2", seed "7") or nothing
    # at all (num_cpus=-3, a process pool of negative size).
    ({"num_vec_envs": 0}, "num_vec_envs=0 must be an int >= 1"),
    ({"num_vec_envs": 2.0}, "num_vec_envs=2.0 must be an int >= 1"),
    ({"num_vec_envs": "2"}, "num_vec_envs='2' must be an int >= 1"),
    ({"num_vec_envs": True}, "num_vec_envs=True must be an int >= 1"),
    ({"num_cpus": -3}, "num_cpus=-3 must be an int >= 0"),
    ({"num_cpus": "a"}, "num_cpus='a' must be an int >= 0"),
    ({"seed": "7"}, "seed='7' must be an int or None"),
    ({"seed": 1.5}, "seed=1.5 must be an int or None"),
    ({"seed": 2**63 - 1, "num_vec_envs": 2}, "seed=9223372036854775807 out of range"),
]


@pytest.mark.parametrize(
    ("kwargs", "message"), BAD_ARGUMENTS, ids=[repr(k) for k, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_are_refused_up_front(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make_sb3_vec_env(MARKET, **kwargs, **SMALL)


def test_seed_method_checks_its_seed():
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, **SMALL)
    with pytest.raises(ValueError, match=re.escape("seed='3' must be an int or None")):
        venv.seed("3")
    assert venv.seed(np.int64(3)) == [3, 3, 4, 4]  # numpy integers are ints
    venv.close()


def _whole(a):
    return a.astype(np.float64)


def _fraction(a):
    a = a.astype(np.float64)
    a[3, 1] = 1.5
    return a


def _nan(a):
    a = a.astype(np.float64)
    a[2, 0] = np.nan
    return a


BAD_ACTIONS = {
    # (actions from a valid int array, message patterns); vector index i is agent_{i % 2} of
    # market copy i // 2.
    "whole_floats": (_whole, [r"agent_0 \(vector index 0, market copy 0\)", "dtype float64"]),
    "float32": (lambda a: a.astype(np.float32), [r"agent_0 .*index 0", "dtype float32"]),
    "fraction": (_fraction, [r"agent_1 \(vector index 3, market copy 1\)", "slot 1 is 1.5"]),
    "nan": (_nan, [r"agent_0 \(vector index 2, market copy 1\)", "slot 0 is NaN"]),
    "bool": (lambda a: a > 0, [r"agent_0 .*index 0", "dtype bool"]),
    "shape": (lambda a: a[:, :2], [r"shape \(4, 2\).*num_envs=4, slate_size=3", "agent_1"]),
}


@pytest.mark.parametrize("case", list(BAD_ACTIONS))
def test_bad_actions_are_refused_by_agent_and_leave_every_copy_untouched(case):
    """A float (even whole-valued, as on the PettingZoo face), NaN, bool or misshapen action
    array raises ValueError naming the agent, its vector index and copy, and the allowed
    values (was numpy's bare TypeError from SuperSuit's cast, or bool slates of 0s and 1s);
    then the episode goes on exactly as in a twin that never saw the bad input."""
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, seed=3, **SMALL)
    twin = make_sb3_vec_env(MARKET, num_vec_envs=2, seed=3, **SMALL)
    C = int(venv.action_space.nvec[0])
    assert data_equivalence(venv.reset(), twin.reset(), exact=True)
    rng = np.random.default_rng(0)
    valid = lambda: np.stack([rng.permutation(C)[:3] for _ in range(venv.num_envs)])  # noqa: E731
    bad, patterns = BAD_ACTIONS[case]
    with pytest.raises(ValueError) as err:
        venv.step(bad(valid()))
    msg = str(err.value)
    for pattern in [*patterns, rf"\[0, {C - 1}\]"]:
        assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"
    for _ in range(SMALL["horizon"]):
        actions = valid()
        assert data_equivalence(venv.step(actions), twin.step(actions), exact=True)
    venv.close()
    twin.close()


def test_integer_actions_of_any_integer_dtype_or_list_still_step():
    """The check lets every integer form through as before: int32, uint8, a list of lists."""
    venv = make_sb3_vec_env(MARKET, num_vec_envs=1, seed=0, **SMALL)
    twin = make_sb3_vec_env(MARKET, num_vec_envs=1, seed=0, **SMALL)
    venv.reset()
    twin.reset()
    actions = np.array([[0, 1, 2], [3, 4, 5]])
    for given in (actions.astype(np.int32), actions.astype(np.uint8), actions.tolist()):
        assert data_equivalence(venv.step(given), twin.step(actions), exact=True)


def test_a_view_built_and_stepped_in_inference_mode_steps_as_one_built_outside():
    """SuperSuit copies the market it wraps; a view built inside ``torch.inference_mode()``
    (an evaluation script's guard) held a copy of inference tensors and raised "Inplace
    update to inference tensor outside InferenceMode" at its first reset."""
    import torch

    def run(inference: bool) -> list[np.ndarray]:
        with torch.inference_mode(inference):
            venv = make_sb3_vec_env(MARKET, num_vec_envs=2, seed=3, invalid_slate="repair", **SMALL)
            venv.action_space.seed(0)
            out = [venv.reset()]
            for _ in range(8):
                actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
                obs, rewards, dones, _ = venv.step(actions)
                out += [obs, rewards, dones]
        return out

    for a, b in zip(run(False), run(True), strict=True):
        np.testing.assert_array_equal(a, b)
