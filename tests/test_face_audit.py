"""The PettingZoo face as a demanding PettingZoo user meets it: PettingZoo's ``render_test``,
observation spaces seeded per agent, and ``make``'s ``max_cycles`` alias named in its errors.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pettingzoo.test import render_test
from pettingzoo.utils.conversions import parallel_to_aec

import recenv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the checkers' style hints

MARKET = "recenv/Market-v0"


def test_pettingzoo_render_test(env_id, small, capsys):
    """PettingZoo's ``render_test`` passes: it builds the env with ``render_mode="human"``
    before trying each of ``metadata["render_modes"]``. ``"human"`` prints the ``"ansi"``
    frame (after ``reset``, each ``step`` and each ``render()`` call) and ``render()`` returns
    None, as Gymnasium's convention says.

    Regression test: ``render_mode="human"`` raised ValueError, so ``render_test`` failed
    before rendering anything."""
    kwargs = small(env_id, horizon=10)

    def env_fn(render_mode=None):
        return parallel_to_aec(recenv.make(env_id, seed=0, render_mode=render_mode, **kwargs))

    render_test(env_fn)
    env = recenv.make(env_id, seed=0, render_mode="human", **kwargs)
    capsys.readouterr()
    obs, _ = env.reset()
    assert env_id in capsys.readouterr().out
    env.step({a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents})
    assert "shown=" in capsys.readouterr().out
    assert env.render() is None and "shown=" in capsys.readouterr().out


def test_observation_spaces_are_seeded_per_agent(small):
    """Each agent has its own observation space object (the same one on every call), so
    seeding one agent's space, as PettingZoo's ``seed_test`` does with ``42 + i`` per agent,
    does not reseed another's.

    Regression test: one ``Dict`` space was shared by every agent; seeding agent_1's space
    changed what agent_0's space sampled after it had been seeded."""
    env = recenv.make(MARKET, seed=0, **small(MARKET))
    s0, s1 = env.observation_space("agent_0"), env.observation_space("agent_1")
    assert s0 is not s1 and s0 == s1
    assert env.observation_space("agent_0") is s0
    s0.seed(42)
    alone = s0.sample()["user"]
    s0.seed(42)
    s1.seed(43)
    np.testing.assert_array_equal(s0.sample()["user"], alone)


@pytest.mark.parametrize("bad", [0, -3, 2.5, None, True])
def test_make_names_max_cycles_in_its_error(small, bad):
    """An invalid ``max_cycles`` (``make``'s PettingZoo alias of ``horizon``) is refused
    with a ValueError that names ``max_cycles`` as given and the allowed values.

    Regression test: the error named only ``horizon=0``, a key the caller never wrote."""
    kwargs = {k: v for k, v in small(MARKET).items() if k != "horizon"}
    with pytest.raises(ValueError, match=rf"max_cycles={bad!r}.*\b1\b"):
        recenv.make(MARKET, max_cycles=bad, **kwargs)


def test_step_before_any_reset_says_so(small):
    """A step before the first ``reset()`` says the env was never reset; after the last step
    of an episode it says the episode is over (it said that in both cases)."""
    env = recenv.make(MARKET, seed=0, **small(MARKET, horizon=1))
    actions = {a: np.arange(env.action_space(a).slate_size) for a in env.possible_agents}
    with pytest.raises(RuntimeError, match="never reset: call reset"):
        env.step(actions)
    obs, _ = env.reset(seed=0)
    actions = {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
    env.step(actions)
    assert not env.agents
    with pytest.raises(RuntimeError, match="episode is over: call reset"):
        env.step(actions)


def test_a_read_only_action_gets_the_clear_error_without_a_torch_warning(small):
    """A read-only action array on the checked path gets the slate error alone (torch's
    "not writable" UserWarning came first, and under ``-W error`` replaced it)."""
    env = recenv.make(MARKET, seed=0, **small(MARKET))
    obs, _ = env.reset(seed=0)
    actions = {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
    actions["agent_0"] = np.zeros_like(actions["agent_0"])  # a repeated candidate
    actions["agent_0"].setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="agent_0"):
            env.step(actions)


@pytest.mark.parametrize("mode", ["ansi", "human"])
def test_render_before_any_reset_says_so(small, mode, capsys):
    """``render()`` before the first ``reset()`` raises the RuntimeError ``step`` raises
    there, and prints nothing (it drew a frame of user 0 at t=0, a request that never was);
    without a render mode it still returns None."""
    env = recenv.make(MARKET, seed=0, render_mode=mode, **small(MARKET))
    with pytest.raises(RuntimeError, match=r"never reset: call reset\(\) before render\(\)"):
        env.render()
    assert capsys.readouterr().out == ""
    assert recenv.make(MARKET, seed=0, **small(MARKET)).render() is None
    env.reset(seed=0)
    assert env.render() is None if mode == "human" else "t=0" in env.render()


def test_reset_options_are_named_when_ignored(small):
    """``reset(options=...)`` with options warns that they are ignored, naming them (they were
    dropped silently); None and {} do not warn. Not refused: PettingZoo's own API checks
    pass ``options={"options": 1}`` to see that ``reset`` takes the argument (``test_parallel_api``
    runs them), and the reset then happens as without options."""
    env = recenv.make(MARKET, seed=0, **small(MARKET))
    twin = recenv.make(MARKET, seed=0, **small(MARKET))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(seed=3, options=None)
        env.reset(seed=3, options={})
    with pytest.warns(UserWarning, match=r"options=\{'mode': 'eval'\} ignored"):
        obs, _ = env.reset(seed=3, options={"mode": "eval"})
    np.testing.assert_array_equal(obs["agent_0"]["user"], twin.reset(seed=3)[0]["agent_0"]["user"])
