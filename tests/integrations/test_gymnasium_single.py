"""recenv.integrations.gymnasium_single: one market, one learner, as a gymnasium.Env."""

from __future__ import annotations

import functools

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from recenv.integrations.gymnasium_single import SingleAgentEnv, make_single_agent_env
from recenv.integrations.gymnasium_vector import make_single_agent_vec

MARKET = "recenv/Market-v0"
SMALL = {"num_items": 300, "horizon": 8}


def _slate(obs, rng):
    """A valid slate from the observation's mask, drawn with ``rng``."""
    return rng.choice(np.flatnonzero(obs["action_mask"]), size=3, replace=False)


@pytest.mark.parametrize("flatten_obs", [False, True])
def test_gymnasium_env_checker_passes(flatten_obs):
    """``check_env`` steps with ``action_space.sample()``, which knows no action mask: a
    masked candidate in it is refused under ``invalid_slate="raise"`` (14 of 40 checks
    failed so), so the env repairs, as for any sampler that ignores the mask."""
    env = make_single_agent_env(
        MARKET, seed=0, flatten_obs=flatten_obs, invalid_slate="repair", **SMALL
    )
    check_env(env, skip_render_check=True)


def test_it_replays_the_one_market_vector_view_step_for_step():
    single = make_single_agent_env(MARKET, opponents="random", **SMALL)
    vector = make_single_agent_vec(MARKET, num_envs=1, opponents="random", **SMALL)
    obs, info = single.reset(seed=7)
    vobs, _ = vector.reset(seed=7)
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(SMALL["horizon"]):
        for key in obs:
            np.testing.assert_array_equal(obs[key], vobs[key][0], err_msg=key)
        slate = _slate(obs, rng)
        obs, reward, terminated, truncated, info = single.step(slate)
        vobs, vreward, vterm, vtrunc, vinfo = vector.step(slate[None])
        assert isinstance(reward, float) and reward == vreward[0]
        assert (terminated, truncated) == (bool(vterm[0]), bool(vtrunc[0]))
        assert info["engagement"] == pytest.approx(float(vinfo["engagement"][0]), abs=0)
        assert "reset" not in info and "_engagement" not in info
        total += reward
    assert truncated and info["episode_metrics"]["return"] == pytest.approx(total, rel=1e-6)
    assert np.isscalar(info["episode_metrics"]["ctr"])


def test_an_ended_episode_waits_for_reset():
    env = make_single_agent_env(MARKET, seed=3, **SMALL)
    obs, _ = env.reset()
    rng = np.random.default_rng(1)
    for _ in range(SMALL["horizon"]):
        obs, _, terminated, truncated, _ = env.step(_slate(obs, rng))
    assert truncated or terminated
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(_slate(obs, rng))
    obs, _ = env.reset()  # no seed: the market's streams continue into a new episode
    obs, reward, terminated, truncated, _ = env.step(_slate(obs, rng))
    assert not (terminated or truncated) and np.isfinite(reward)
    fresh = make_single_agent_env(MARKET, **SMALL)
    with pytest.raises(RuntimeError, match="call reset"):
        fresh.step(np.arange(3))


def test_a_refused_slate_names_the_agent_and_changes_nothing():
    def trajectory(refuse_first: bool):
        env = make_single_agent_env(MARKET, seed=5, opponents="random", **SMALL)
        obs, _ = env.reset()
        rng = np.random.default_rng(2)
        if refuse_first:
            for bad, message in [
                (np.arange(4), r"shape \(4,\), expected \(3,\)"),
                (np.array([0, 0, 1]), "agent_0"),
                ([[0, 1, 2]], r"shape \(1, 3\)"),
                (np.ma.masked_array([0, 1, 2], mask=[0, 1, 0]), "mask"),
            ]:
                with pytest.raises(ValueError, match=message):
                    env.step(bad)
        out = []
        for _ in range(4):
            obs, reward, *_ = env.step(_slate(obs, rng))
            out.append((reward, obs["candidate_ids"].copy()))
        return out

    for (r1, c1), (r2, c2) in zip(trajectory(True), trajectory(False), strict=True):
        assert r1 == r2
        np.testing.assert_array_equal(c1, c2)


def test_the_view_must_be_one_numpy_market():
    with pytest.raises(ValueError, match="holds 2 markets"):
        SingleAgentEnv(make_single_agent_vec(MARKET, num_envs=2, **SMALL))
    with pytest.raises(ValueError, match="tensors=True"):
        SingleAgentEnv(make_single_agent_vec(MARKET, num_envs=1, tensors=True, **SMALL))
    with pytest.raises(TypeError, match="SingleAgentVectorEnv"):
        SingleAgentEnv(object())  # type: ignore[arg-type]
    env = make_single_agent_env(MARKET, **SMALL)
    with pytest.raises(ValueError, match="no options"):
        env.reset(options={"x": 1})


def test_worker_processes_replay_in_process_envs():
    """``gymnasium.vector.AsyncVectorEnv`` (worker processes, the default start method) over
    single envs gives what the same envs give stepped in this process."""
    make = functools.partial(make_single_agent_env, MARKET, opponents="random", **SMALL)

    def run(vector_cls):
        envs = vector_cls([make, make], autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP)
        try:
            obs, _ = envs.reset(seed=11)
            rewards = []
            for t in range(5):
                slates = np.stack(
                    [np.flatnonzero(m)[t % 2 : t % 2 + 3] for m in obs["action_mask"]]
                )
                obs, reward, *_ = envs.step(slates)
                rewards.append(reward)
            return np.stack(rewards), obs["candidate_ids"]
        finally:
            envs.close()

    (r_async, c_async), (r_sync, c_sync) = (
        run(gymnasium.vector.AsyncVectorEnv),
        run(gymnasium.vector.SyncVectorEnv),
    )
    np.testing.assert_array_equal(r_async, r_sync)
    np.testing.assert_array_equal(c_async, c_sync)
    assert r_sync.shape == (5, 2) and r_sync.sum() > 0


def test_stable_baselines3_checks_and_trains_on_it(tmp_path, monkeypatch):
    """SB3's own env checker passes, and PPO trains on two of these envs in worker processes
    (``SubprocVecEnv``, SB3's default start method) with the flat and the ``Dict`` layout
    (``invalid_slate="repair"``: SB3 samples each slot on its own)."""
    sb3 = pytest.importorskip("stable_baselines3")
    # learn() makes a log dir in /tmp (SB3-<time>) unless SB3_LOGDIR names one: two a run.
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    for flat, policy in ((True, "MlpPolicy"), (False, "MultiInputPolicy")):
        make = functools.partial(
            make_single_agent_env, MARKET, flatten_obs=flat, invalid_slate="repair", **SMALL
        )
        sb3_check_env(make())
        venv = make_vec_env(make, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
        try:
            model = sb3.PPO(policy, venv, n_steps=16, batch_size=32, n_epochs=1, seed=0)
            model.learn(64)
            assert model.num_timesteps == 64
        finally:
            venv.close()


def test_every_scenario_has_a_gymnasium_make_id_that_replays_the_function():
    """``gymnasium.make("recenv/Market-SingleAgent-v0", ...)`` is ``make_single_agent_env``
    of the id with the same keyword arguments (behind Gymnasium's checker and order
    wrappers, no time limit): the same observations and rewards step for step."""
    import recenv
    from recenv.registry import gymnasium_id

    for env_id in recenv.registered_ids():
        assert gymnasium_id(env_id) in gymnasium.registry, env_id
    made = gymnasium.make("recenv/Market-SingleAgent-v0", opponents="oracle", **SMALL)
    assert made.spec.max_episode_steps is None and made.spec.kwargs["env_id"] == MARKET
    direct = make_single_agent_env(MARKET, opponents="oracle", **SMALL)
    obs, _ = made.reset(seed=4)
    dobs, _ = direct.reset(seed=4)
    rng = np.random.default_rng(2)
    for _ in range(SMALL["horizon"]):
        for key in obs:
            np.testing.assert_array_equal(obs[key], dobs[key], err_msg=key)
        slate = _slate(obs, rng)
        obs, reward, terminated, truncated, _ = made.step(slate)
        dobs, dreward, dterm, dtrunc, _ = direct.step(slate)
        assert (reward, terminated, truncated) == (dreward, dterm, dtrunc)
    assert truncated
    with pytest.raises(ValueError, match="opponent of agent_1"):
        gymnasium.make("recenv/Market-SingleAgent-v0", opponents="nobody")


def test_ids_registered_later_get_one_and_a_fresh_process_finds_them(tmp_path):
    """``recenv.register`` adds the Gymnasium id too; in a fresh process
    ``gymnasium.make("recenv:...")`` imports recenv and finds the built-in ids."""
    import subprocess
    import sys

    import recenv
    from recenv.registry import _REGISTRY

    try:
        recenv.register("testlab/Tiny-v3", "recenv.scenarios.market:build")
        assert "testlab/Tiny-SingleAgent-v3" in gymnasium.registry
        env = gymnasium.make("testlab/Tiny-SingleAgent-v3", num_items=300, horizon=3)
        assert env.unwrapped.market.config.num_items == 300
    finally:
        _REGISTRY.pop("testlab/Tiny-v3", None)
        gymnasium.registry.pop("testlab/Tiny-SingleAgent-v3", None)
    code = (
        "import gymnasium, sys\n"
        "env = gymnasium.make('recenv:recenv/Video-SingleAgent-v0', num_items=600, horizon=4)\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert 'recenv' in sys.modules and obs['action_mask'].shape == (25,)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
