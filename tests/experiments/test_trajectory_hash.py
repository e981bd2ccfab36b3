"""``trajectory_hash`` sees every part of a trajectory, and says when two trees differ.

Every speed change is kept only if ``python -m experiments.trajectory_hash --base HEAD~1``
reads "7 of 7 configurations identical". That verdict is worth what the digest feeds: a
digest that skipped the rewards, the info dicts, ``state()`` or the PettingZoo face would
pass a change that alters them. Here one element of one part of one step is nudged by its
smallest step (a float's next value, a flag flipped, an int + 1) and the digest must move;
and the verdict is read from stand-in digests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recenv
from experiments import trajectory_hash as th

SMALL = {"steps": 4, "num_envs": 2, "face_steps": 4}
NUDGED_STEP = 2  # the step (1-based) whose output is nudged


def _nudge_leaf(x):
    """``x`` with its first element moved by the smallest step of its type (a copy)."""
    if isinstance(x, torch.Tensor):
        y = x.clone().reshape(-1)
        if y.dtype == torch.bool:
            y[0] = ~y[0]
        elif y.dtype.is_floating_point:
            y[0] = torch.nextafter(y[0], torch.tensor(math.inf, dtype=y.dtype))
        else:
            y[0] += 1
        return y.view(x.shape)
    if isinstance(x, np.ndarray):
        y = x.copy().reshape(-1)
        y[0] = np.nextafter(y[0], np.inf) if y.dtype.kind == "f" else y[0] + 1
        return y.reshape(x.shape)
    if isinstance(x, bool):
        return not x
    if isinstance(x, float):
        return math.nextafter(x, math.inf)
    return x + 1


def _nudge(x, path):
    """A copy of the nested ``x`` with the leaf at ``path`` (keys / indices) nudged."""
    if not path:
        return _nudge_leaf(x)
    key, rest = path[0], path[1:]
    if isinstance(x, dict):
        return {**x, key: _nudge(x[key], rest)}
    parts = list(x)
    parts[key] = _nudge(parts[key], rest)
    return type(x)(parts)


class _Nudged:
    """An env whose ``step`` output (``("step", *path)``) or ``state()`` (``("state",)``) is
    nudged at step :data:`NUDGED_STEP`; it counts ``oracle_slates`` calls."""

    def __init__(self, env, where):
        self._env, self._where, self._steps, self.oracle_calls = env, where, 0, 0

    def __getattr__(self, name):
        return getattr(self._env, name)

    def step(self, actions):
        out = self._env.step(actions)
        self._steps += 1
        if self._where[0] == "step" and self._steps == NUDGED_STEP:
            out = _nudge(out, self._where[1:])
        return out

    def state(self):
        s = self._env.state()
        if self._where == ("state",) and self._steps == NUDGED_STEP:
            s = _nudge(s, ())
        return s

    def oracle_slates(self, *args, **kwargs):
        self.oracle_calls += 1
        return self._env.oracle_slates(*args, **kwargs)


def _digest_with(monkeypatch, batched=None, face=None):
    """The small digest of Market-v0 with the batched env's or the face's output nudged at
    ``batched`` / ``face`` (see :class:`_Nudged`); returns ``(digest, the batched env)``."""
    made = {}
    make_vec, make = recenv.make_vec, recenv.make

    def nudged_vec(*args, **kwargs):
        made["vec"] = _Nudged(make_vec(*args, **kwargs), batched or ("none",))
        return made["vec"]

    def nudged_face(*args, **kwargs):
        return _Nudged(make(*args, **kwargs), face or ("none",))

    monkeypatch.setattr(recenv, "make_vec", nudged_vec)
    monkeypatch.setattr(recenv, "make", nudged_face)
    return th.digest("recenv/Market-v0", {}, **SMALL), made["vec"]


@pytest.fixture(scope="module")
def plain():
    return th.digest("recenv/Market-v0", {}, **SMALL)


def test_the_stand_in_env_changes_nothing_unnudged(monkeypatch, plain):
    digest, env = _digest_with(monkeypatch)
    assert digest == plain
    # Random and oracle slates alternate: the oracle's path is in the trajectory too.
    assert env.oracle_calls == SMALL["steps"] // 2


BATCHED_PARTS = [
    ("step", 0, "agent_0", "candidates"),  # observation
    ("step", 0, "agent_1", "user_id"),
    ("step", 1, "agent_1"),  # reward
    ("step", 2),  # terminated
    ("step", 3),  # truncated
    ("step", 4, "utility", "total"),  # info
    ("step", 4, "shown"),
    ("state",),
]
FACE_PARTS = [
    ("step", 0, "agent_1", "history"),  # observation
    ("step", 1, "agent_0"),  # reward (a Python float)
    ("step", 2, "agent_0"),  # terminated (a bool)
    ("step", 3, "agent_1"),  # truncated
    ("step", 4, "agent_1", "engagement"),  # info
    ("step", 4, "agent_0", "chosen_slot"),  # info (an int)
    ("state",),
]


@pytest.mark.parametrize("where", BATCHED_PARTS, ids=str)
def test_every_part_of_a_batched_step_reaches_the_digest(monkeypatch, plain, where):
    assert _digest_with(monkeypatch, batched=where)[0] != plain


@pytest.mark.parametrize("where", FACE_PARTS, ids=str)
def test_every_part_of_a_face_step_reaches_the_digest(monkeypatch, plain, where):
    assert _digest_with(monkeypatch, face=where)[0] != plain


def test_the_verdict_names_each_configuration_that_differs(monkeypatch, capsys):
    here = {"market {}": "a" * 64, "video {}": "b" * 64, "new {}": "c" * 64}
    monkeypatch.setattr(th, "digests", lambda *args: dict(here))
    monkeypatch.setattr(th, "digests_at", lambda *args: dict(here))
    assert th.main(["--base", "BASE"]) == 0
    assert "3 of 3 configurations identical to BASE" in capsys.readouterr().out

    base = {"market {}": "a" * 64, "video {}": "d" * 64}  # one differs, one is new here
    monkeypatch.setattr(th, "digests_at", lambda *args: dict(base))
    assert th.main(["--base", "BASE"]) == 1
    out = capsys.readouterr().out
    assert "1 of 3 configurations identical to BASE: the change alters trajectories" in out
    lines = {line.split("  ")[1]: line for line in out.splitlines() if "  " in line}
    assert lines["market {}"].endswith("identical")
    assert "DIFFERS (base dddddddddddddddd)" in lines["video {}"]
    assert "DIFFERS (base None)" in lines["new {}"]
