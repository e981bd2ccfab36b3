"""PettingZoo's own contract checkers, run on every registered id (DESIGN §4).

The checkers sample actions with ``action_space(agent).sample(mask)``; our ``SlateSpace`` draws
K distinct unmasked candidates from the 1-D ``action_mask``, so the default (rejecting) env
passes them. Two checkers sample *without* a mask and therefore need ``invalid_slate="repair"``
(see the comments at those tests).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    seed_test,
    state_test,
)
from pettingzoo.utils.conversions import parallel_to_aec

import recenv
from recenv.spaces import SlateSpace

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the checkers' style hints

FLAT = pytest.mark.parametrize("flatten_obs", [False, True], ids=["dict_obs", "flat_obs"])


@FLAT
def test_parallel_api(env_id, small, flatten_obs):
    """``parallel_api_test`` over two whole episodes (auto-reset is the caller's job).

    With ``flatten_obs=True`` the mask lives in ``infos``, but ``parallel_api_test`` only looks
    for a mask inside a dict observation and otherwise samples unmasked slates; the env must then
    repair (drop) masked slots instead of rejecting them."""
    policy = "repair" if flatten_obs else "raise"
    env = recenv.make(
        env_id, seed=0, flatten_obs=flatten_obs, invalid_slate=policy, **small(env_id)
    )
    parallel_api_test(env, num_cycles=2 * env.config.horizon + 5)


@FLAT
def test_aec_api(env_id, small, flatten_obs):
    """``api_test`` on the AEC conversion; it reads the mask from obs or from infos, so the
    rejecting default is used."""
    env = parallel_to_aec(recenv.make(env_id, seed=0, flatten_obs=flatten_obs, **small(env_id)))
    api_test(env, num_cycles=2 * env.unwrapped.config.horizon + 5)


@FLAT
def test_seed(env_id, small, flatten_obs):
    """``seed_test`` on the AEC conversion: two envs reset with seed 42 produce identical
    observations, rewards, infos and masks step after step, across a whole episode."""
    kwargs = small(env_id, horizon=20)
    seed_test(
        lambda: parallel_to_aec(recenv.make(env_id, flatten_obs=flatten_obs, **kwargs)),
        num_cycles=25,
    )


def _repairing_module(env_id: str, flatten_obs: bool, **config) -> types.SimpleNamespace:
    """A module-like namespace with the PettingZoo factories ``parallel_env(max_cycles=...)``
    and ``env(max_cycles=...)``.

    ``max_cycles_test`` and ``state_test`` call ``action_space(agent).sample()`` without a
    mask, so slots may point at masked candidates; a rejecting env would (rightly) raise, so
    these factories build the env with ``invalid_slate="repair"``, the documented option for
    trainers that sample without the mask."""

    def parallel_env(max_cycles: int):
        return recenv.make(
            env_id,
            max_cycles=max_cycles,
            invalid_slate="repair",
            flatten_obs=flatten_obs,
            **config,
        )

    def env(max_cycles: int):
        return parallel_to_aec(parallel_env(max_cycles))

    return types.SimpleNamespace(parallel_env=parallel_env, env=env)


@FLAT
def test_max_cycles(env_id, small, flatten_obs):
    """``max_cycles_test``: ``max_cycles`` (alias of ``horizon``) truncates after exactly that
    many parallel steps, on both the parallel and the AEC env."""
    config = {k: v for k, v in small(env_id).items() if k != "horizon"}
    mod = _repairing_module(env_id, flatten_obs, **config)
    max_cycles_test(mod)


@FLAT
def test_state(env_id, small, flatten_obs):
    """``state_test``: ``state_space`` is a Box and every ``state()`` lies in it. The AEC env
    repairs slates because ``state_test`` samples actions without the mask."""
    kwargs = small(env_id)
    aec = parallel_to_aec(
        recenv.make(env_id, seed=0, flatten_obs=flatten_obs, invalid_slate="repair", **kwargs)
    )
    par = recenv.make(env_id, seed=0, flatten_obs=flatten_obs, **kwargs)
    state_test(aec, par, num_cycles=kwargs["horizon"] + 5)


def test_state_is_finite_and_documented_size(env_id, small):
    """``state()`` is a finite float32 vector of ``config.state_dim`` at every step: masked
    candidates contribute 0, never -inf (which ``state_test`` only warns about)."""
    env = recenv.make(env_id, seed=1, **small(env_id))
    obs, _ = env.reset()
    while env.agents:
        s = env.state()
        assert s.dtype == np.float32 and s.shape == (env.config.state_dim,)
        assert np.isfinite(s).all()
        assert env.state_space.contains(s)
        obs, *_ = env.step(
            {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
        )


def test_spaces_created_once(env_id, small):
    """Spaces are created once and reused (DESIGN §4): the same objects before and after
    resets and steps, and the action space is a MultiDiscrete ``SlateSpace``."""
    from gymnasium.spaces import MultiDiscrete

    env = recenv.make(env_id, seed=0, **small(env_id))
    before = {a: (env.observation_space(a), env.action_space(a)) for a in env.possible_agents}
    obs, _ = env.reset()
    env.step({a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents})
    env.reset(seed=3)
    for a in env.possible_agents:
        assert env.observation_space(a) is before[a][0]
        assert env.action_space(a) is before[a][1]
        assert isinstance(env.action_space(a), SlateSpace)
        assert isinstance(env.action_space(a), MultiDiscrete)


@FLAT
def test_observations_in_space_and_mask_location(env_id, small, flatten_obs):
    """Every observation lies in its space; the mask is a 1-D int8 array of length C with at
    least K ones, in the obs dict by default and in ``infos`` with ``flatten_obs=True``."""
    env = recenv.make(env_id, seed=2, flatten_obs=flatten_obs, **small(env_id))
    C, K = env.config.num_candidates, env.config.slate_size
    obs, infos = env.reset()
    while env.agents:
        acts = {}
        for a in env.agents:
            assert env.observation_space(a).contains(obs[a])
            mask = infos[a]["action_mask"] if flatten_obs else obs[a]["action_mask"]
            assert mask.dtype == np.int8 and mask.shape == (C,) and mask.sum() >= K
            if flatten_obs:
                assert isinstance(obs[a], np.ndarray) and obs[a].ndim == 1
                np.testing.assert_array_equal(obs[a][-C:], mask.astype(np.float32))
            acts[a] = env.action_space(a).sample(mask)
        obs, _, _, _, infos = env.step(acts)


def test_flat_observation_is_each_agents_dict_observation_in_order(env_id, small):
    """``flatten_obs=True``: each agent's observation is its own dict observation's user,
    history, candidates (row-major) and action mask (float32), concatenated in that order;
    checked along one trajectory of both faces (same seed, same slates)."""
    kwargs = small(env_id)
    flat, plain = (recenv.make(env_id, seed=4, flatten_obs=f, **kwargs) for f in (True, False))
    f_obs, _ = flat.reset(seed=4)
    d_obs, _ = plain.reset(seed=4)
    histories_differ = False
    for _ in range(plain.config.horizon):  # one episode
        if not plain.agents:  # it ended early (every user churned)
            break
        acts = {}
        for a in plain.agents:
            o = d_obs[a]
            parts = [o["user"], o["history"], o["candidates"].reshape(-1)]
            want = np.concatenate([*parts, o["action_mask"].astype(np.float32)])
            np.testing.assert_array_equal(f_obs[a], want)
            acts[a] = plain.action_space(a).sample(o["action_mask"])
        first, *others = plain.agents
        histories_differ |= any(
            not np.array_equal(d_obs[first]["history"], d_obs[b]["history"]) for b in others
        )
        f_obs, *_ = flat.step(acts)
        d_obs, *_ = plain.step(acts)
    assert histories_differ or len(plain.possible_agents) == 1  # the check could tell them apart


def test_agents_leave_at_episode_end_and_step_after_end_raises(env_id, small):
    """Agents leave ``agents`` the step their episode ends; stepping a finished episode is an
    error that says to reset; ``reset()`` brings every agent back."""
    env = recenv.make(env_id, seed=0, **small(env_id, horizon=5))
    obs, _ = env.reset()
    for _ in range(5):
        assert env.agents == env.possible_agents
        obs, _, _, trunc, _ = env.step(
            {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
        )
    assert all(trunc.values()) and env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    env.reset()
    assert env.agents == env.possible_agents


def test_render_ansi(env_id, small):
    """``render_mode="ansi"`` returns a text frame naming the env; no render mode returns None;
    an unknown mode is refused, naming the allowed ones (``"human"``: see test_face_audit)."""
    env = recenv.make(env_id, seed=0, render_mode="ansi", **small(env_id))
    obs, _ = env.reset()
    env.step({a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents})
    frame = env.render()
    assert isinstance(frame, str) and env_id in frame and "shown=" in frame
    assert recenv.make(env_id, seed=0, **small(env_id)).render() is None
    with pytest.raises(ValueError, match=r"render_mode='rgb_array'.*'human', 'ansi'"):
        recenv.make(env_id, render_mode="rgb_array", **small(env_id))


def test_render_names_the_step_the_batched_face_reports(env_id, small):
    """The frame's chosen agent, item and engagement (derived from the face's packed row and
    shown slates) are market 0's ``info`` of the batched face on the same seed and slates."""
    kwargs = small(env_id, horizon=6)
    env = recenv.make(env_id, seed=4, render_mode="ansi", **kwargs)
    vec = recenv.make_vec(env_id, num_envs=1, seed=4, **kwargs)
    env.reset(), vec.reset()
    clicks = 0
    for _ in range(5):
        slates = {a: env.oracle_slate(a) for a in env.agents}
        env.step(slates)
        *_, info = vec.step({a: torch.as_tensor(s)[None] for a, s in slates.items()})
        agent, item = int(info["chosen_agent"][0]), int(info["chosen_item"][0])
        clicks += agent >= 0
        frame = env.render()
        assert f"shown={info['shown'][0].tolist()} " in frame
        assert f"chosen_agent={agent} item={item} " in frame
        assert f"engagement={float(info['engagement'][0]):.3f}" in frame
    assert clicks, "no click in five oracle steps: the item check saw only -1"


def test_env_docstring_is_the_scenario_page(env_id, small):
    """``help(env)`` shows the scenario's page (its module docstring names the env)."""
    env = recenv.make(env_id, seed=0, **small(env_id))
    name = env_id.split("/")[-1]
    assert env.__doc__ and name in env.__doc__
    assert env.metadata["name"] == name


def test_observations_are_read_only_and_edits_cannot_change_the_market(env_id, small):
    """The Dict observation's arrays are views of the core's tensors (no copy per step);
    they are read-only, so an in-place edit raises instead of changing the market (the ids
    are what the next step reads) or another agent's shared ``user`` array. A copy can be
    edited, and the next step equals a twin's that never saw the edit.

    Regression test: ``obs[a]["candidate_ids"][:] = 0`` changed the items the next slate
    named, and scaling ``obs[a]["user"]`` per agent scaled the one shared array twice."""
    env = recenv.make(env_id, seed=0, **small(env_id))
    twin = recenv.make(env_id, seed=0, **small(env_id))
    obs, _ = env.reset()
    twin.reset()
    for a in env.agents:
        for key, x in obs[a].items():
            if key != "action_mask":
                with pytest.raises(ValueError, match="read-only"):
                    x[...] = 0
        mine = obs[a]["candidate_ids"].copy()
        mine[:] = 0
    K = env.config.slate_size
    step = {a: np.flatnonzero(obs[a]["action_mask"])[:K] for a in env.agents}
    assert data_equivalence(env.step(step), twin.step(step))
