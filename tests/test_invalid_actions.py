"""Bad input is refused clearly and leaves the market untouched (DESIGN §4, "clear errors").

Each kind of invalid slate raises ``ValueError`` whose message names the agent, the slot (where
there is one) and the allowed range or values; the rejected step changes nothing: every tensor
the ``BatchedMarket`` holds is the same before and after, and on the PettingZoo face the next
valid step gives exactly what a twin env that never saw the bad input gives.
``invalid_slate="repair"`` instead drops invalid slots and counts them.
"""

from __future__ import annotations

import copy
import math
import re
import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence

import recenv

MARKET = "recenv/Market-v0"


def _range_pattern(C: int) -> str:
    """The allowed index range, written ``0..C-1`` or ``[0, C-1]``."""
    return rf"0(\.\.|, ){C - 1}\b"


def _pz_env_with_masked_candidate(env_id: str, kwargs: dict, **extra):
    """A PettingZoo env (seed fixed) stepped until agent_1 has a masked candidate; returns the
    env, its current observation and that candidate's index."""
    env = recenv.make(env_id, seed=0, new_item_fraction=0.5, **kwargs, **extra)
    obs, _ = env.reset()
    for _ in range(50):
        masked = np.flatnonzero(obs["agent_1"]["action_mask"] == 0)
        if len(masked):
            return env, obs, int(masked[0])
        obs, *_ = env.step(_valid(env, obs))
    pytest.skip("no masked candidate appeared")


def _valid(env, obs) -> dict[str, np.ndarray]:
    """A valid slate for every agent: the first K unmasked candidates."""
    K = env.config.slate_size
    return {a: np.flatnonzero(obs[a]["action_mask"])[:K] for a in env.agents}


def _bad_actions(env, obs, masked: int) -> dict[str, tuple[dict, str, int | None]]:
    """Named invalid action dicts -> (actions, message pattern, slot or None)."""
    K, C = env.config.slate_size, env.config.num_candidates
    good = _valid(env, obs)
    ok = good["agent_1"]
    with_slot = lambda k, v: {**good, "agent_1": np.r_[ok[:k], v, ok[k + 1 :]]}  # noqa: E731
    slot = K - 1
    return {
        "out_of_range": (with_slot(slot, C), rf"{C}.*{_range_pattern(C)}", slot),
        "negative": (with_slot(slot, -1), rf"-1.*{_range_pattern(C)}", slot),
        "duplicate": (with_slot(slot, ok[0]), r"twice|duplicate", slot),
        "masked": (with_slot(slot, masked), rf"{masked}.*mask", slot),
        "too_long": ({**good, "agent_1": np.r_[ok, ok[0]]}, rf"{K}.*{_range_pattern(C)}", None),
        "float": (
            {**good, "agent_1": ok.astype(np.float64)},
            rf"(float|dtype).*{_range_pattern(C)}",
            None,
        ),
        "nan": (
            {**good, "agent_1": np.r_[ok[:-1], np.nan]},
            rf"NaN.*{_range_pattern(C)}",
            None,
        ),
        "bool": ({**good, "agent_1": np.ones(K, dtype=bool)}, r"dtype", None),
    }


CASES = ["out_of_range", "negative", "duplicate", "masked", "too_long", "float", "nan", "bool"]


@pytest.mark.parametrize("case", CASES)
def test_pettingzoo_rejects_invalid_slate_and_is_untouched(
    env_id, small, case, snapshot, assert_same
):
    """Each invalid slate raises ValueError naming agent_1, the bad slot and the allowed range;
    then a valid step gives exactly what a twin env (same seed, same history, never saw the bad
    input) gives, and the core's tensors did not change."""
    kwargs = small(env_id)
    env, obs, masked = _pz_env_with_masked_candidate(env_id, kwargs)
    twin, twin_obs, _ = _pz_env_with_masked_candidate(env_id, kwargs)
    actions, pattern, slot = _bad_actions(env, obs, masked)[case]
    before = snapshot(env.core)
    with pytest.raises(ValueError) as err:
        env.step(actions)
    msg = str(err.value)
    assert "agent_1" in msg, msg
    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"
    if slot is not None:
        assert f"slot {slot}" in msg, msg
    assert_same(before, snapshot(env.core))
    assert env.agents == env.possible_agents
    assert data_equivalence(env.step(_valid(env, obs)), twin.step(_valid(twin, twin_obs)))


def test_pettingzoo_rejects_missing_and_unknown_agents(env_id, small, snapshot, assert_same):
    """A missing agent and an unknown agent raise ValueError naming that agent and listing the
    valid agents; the env is untouched (a later valid step equals a twin's)."""
    env = recenv.make(env_id, seed=0, **small(env_id))
    twin = recenv.make(env_id, seed=0, **small(env_id))
    obs, _ = env.reset()
    twin.reset()
    good = _valid(env, obs)
    before = snapshot(env.core)
    with pytest.raises(ValueError) as err:
        env.step({a: v for a, v in good.items() if a != "agent_1"})
    assert "agent_1" in str(err.value) and "missing" in str(err.value)
    with pytest.raises(ValueError) as err:
        env.step({**good, "agent_99": good["agent_0"]})
    assert "agent_99" in str(err.value) and "agent_0" in str(err.value)
    assert_same(before, snapshot(env.core))
    assert data_equivalence(env.step(good), twin.step(good))


def test_pettingzoo_rejects_unreadable_action(env_id, small):
    """An action that is not an array of numbers (None, strings) raises ValueError naming the
    agent."""
    env = recenv.make(env_id, seed=0, **small(env_id))
    obs, _ = env.reset()
    good = _valid(env, obs)
    for bad in (None, ["a", "b", "c"]):
        with pytest.raises(ValueError, match="agent_0"):
            env.step({**good, "agent_0": bad})


def test_pettingzoo_wrong_rank_message_names_expected_shape_and_range(small):
    """A scalar or a 2-D slate is refused with a message that names the agent, the expected
    shape (K,) and the allowed index range.

    Regression test: the message said only "expected a 1-D slate of candidate indices"."""
    env = recenv.make(MARKET, seed=0, **small(MARKET))
    obs, _ = env.reset()
    K, C = env.config.slate_size, env.config.num_candidates
    good = _valid(env, obs)
    for bad in (np.int64(1), good["agent_1"][None, :]):
        with pytest.raises(ValueError) as err:
            env.step({**good, "agent_1": bad})
        msg = str(err.value)
        assert "agent_1" in msg and str(K) in msg and re.search(_range_pattern(C), msg), msg


# --------------------------------------------------------------------------------------------
# The batched core
# --------------------------------------------------------------------------------------------
def _batched_with_masked(env_id, kwargs):
    env = recenv.make_vec(env_id, num_envs=3, seed=0, new_item_fraction=0.5, **kwargs)
    env.reset()
    for _ in range(50):
        if not bool(env.cand_mask[:, 1].all()):
            return env
        _step_oracle(env)
    pytest.skip("no masked candidate appeared")


def _step_oracle(env):
    s = env.oracle_slates()
    return env.step({a: s[:, i] for i, a in enumerate(env.agents)})


def test_batched_rejects_invalid_slates_and_is_untouched(env_id, small, snapshot, assert_same):
    """On the batched core every kind of bad input raises ValueError naming the agent (and the
    market and slot for slate errors, the range for index errors), and every tensor reachable
    from ``vars(env)``, and the observation, is unchanged; the next valid step then equals that
    of a twin that never saw the bad input."""
    kwargs = small(env_id)
    env, twin = _batched_with_masked(env_id, kwargs), _batched_with_masked(env_id, kwargs)
    K, C = env.config.slate_size, env.config.num_candidates
    good = env.oracle_slates()
    acts = {a: good[:, i].clone() for i, a in enumerate(env.agents)}
    n, c = (~env.cand_mask[:, 1]).nonzero()[0].tolist()

    def with_agent1(x):
        return {**acts, "agent_1": x}

    bad = acts["agent_1"].clone()
    out_of_range, dup, masked = bad.clone(), bad.clone(), bad.clone()
    out_of_range[n, K - 1] = C
    dup[n, K - 1] = dup[n, 0]
    masked[n, K - 1] = c
    cases = [
        (with_agent1(out_of_range), [f"env {n}", f"slot {K - 1}", _range_pattern(C)]),
        (with_agent1(dup), [f"env {n}", f"slot {K - 1}", "twice"]),
        (with_agent1(masked), [f"env {n}", f"slot {K - 1}", "mask"]),
        (with_agent1(bad[:, :-1]), [rf"slate_size={K}", _range_pattern(C)]),
        (with_agent1(bad.float()), ["dtype", _range_pattern(C)]),
        (with_agent1(torch.full((3, K), float("nan"))), ["NaN", _range_pattern(C)]),
        ({a: v for a, v in acts.items() if a != "agent_1"}, ["missing"]),
        ({**acts, "agent_9": bad}, ["agent_9", "agent_0"]),
    ]
    before = snapshot(env)
    for actions, patterns in cases:
        with pytest.raises(ValueError) as err:
            env.step(actions)
        msg = str(err.value)
        assert "agent_1" in msg or "agent_9" in msg, msg
        for p in patterns:
            assert re.search(p, msg), f"{p!r} not in {msg!r}"
        assert_same(before, snapshot(env))
    out, twin_out = env.step(acts), twin.step(acts)
    _assert_tensors_equal(out[:4], twin_out[:4])


def test_check_slate_says_what_step_says_and_changes_nothing(env_id, small, snapshot, assert_same):
    """``BatchedMarket.check_slate(agent, slate)`` refuses one agent's bad slate with the very
    message ``step`` gives, changes nothing, and accepts a good one (and under
    ``invalid_slate="repair"`` checks only the form)."""
    kwargs = small(env_id)
    env = _batched_with_masked(env_id, kwargs)
    K, C = env.config.slate_size, env.config.num_candidates
    good = env.oracle_slates()
    acts = {a: good[:, i].clone() for i, a in enumerate(env.agents)}
    n, c = (~env.cand_mask[:, 1]).nonzero()[0].tolist()
    bad = acts["agent_1"]
    out_of_range, dup, masked = bad.clone(), bad.clone(), bad.clone()
    out_of_range[n, K - 1] = C
    dup[n, K - 1] = dup[n, 0]
    masked[n, K - 1] = c
    before = snapshot(env)
    for x in (out_of_range, dup, masked, bad[:, :-1], bad.float(), torch.full((3, K), math.nan)):
        with pytest.raises(ValueError) as by_step:
            env.step({**acts, "agent_1": x})
        with pytest.raises(ValueError) as by_check:
            env.check_slate("agent_1", x)
        assert str(by_check.value) == str(by_step.value)
        assert_same(before, snapshot(env))
    env.check_slate("agent_1", bad)
    with pytest.raises(ValueError, match="unknown agent 'agent_9'"):
        env.check_slate("agent_9", bad)
    repair = recenv.make_vec(env_id, num_envs=3, seed=0, invalid_slate="repair", **kwargs)
    repair.reset()
    repair.check_slate("agent_1", torch.zeros(3, K, dtype=torch.int64))  # values: repaired
    with pytest.raises(ValueError, match="shape"):
        repair.check_slate("agent_1", torch.zeros(3, K - 1, dtype=torch.int64))


def _assert_tensors_equal(x, y) -> None:
    """Nested dicts/tuples of tensors are equal element for element."""
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            _assert_tensors_equal(x[k], y[k])
    elif isinstance(x, (tuple, list)):
        assert len(x) == len(y)
        for a, b in zip(x, y, strict=True):
            _assert_tensors_equal(a, b)
    else:
        assert torch.equal(x, y)


def test_batched_ignores_actions_of_markets_being_reset(small):
    """In NEXT_STEP auto-reset, a market that starts a new episode ignores its actions, so an
    invalid slate there is not an error, for ``step`` nor for ``check_slate``; the other
    markets still check theirs."""
    kwargs = small(MARKET, horizon=3)
    env = recenv.make_vec(MARKET, num_envs=2, seed=0, **kwargs)
    env.reset()
    for _ in range(3):
        _step_oracle(env)
    assert env.needs_reset.all()
    C = env.config.num_candidates
    junk = torch.full((2, env.config.slate_size), C + 5)
    for a in env.agents:
        env.check_slate(a, junk)  # ignored, as step ignores it
    _, rew, _, _, info = env.step({a: junk for a in env.agents})
    assert info["reset"].all() and all((r == 0).all() for r in rew.values())
    with pytest.raises(ValueError, match="out of range"):
        env.check_slate(env.agents[0], junk)
    with pytest.raises(ValueError, match="out of range"):
        env.step({a: junk for a in env.agents})


# --------------------------------------------------------------------------------------------
# invalid_slate="repair"
# --------------------------------------------------------------------------------------------
def test_repair_drops_invalid_slots_and_counts_them(env_id, small):
    """With ``invalid_slate="repair"`` a slate with one duplicate, one masked and one
    out-of-range slot is accepted: the invalid slots are not shown (``shown`` is -1 there, the
    valid first copy is shown) and ``infos[agent]["repaired_slots"]`` counts them; a valid
    slate counts 0."""
    env, obs, masked = _pz_env_with_masked_candidate(env_id, small(env_id), invalid_slate="repair")
    K, C = env.config.slate_size, env.config.num_candidates
    for _ in range(50):
        ok = np.flatnonzero(obs["agent_1"]["action_mask"])
        # Invalid slots last (an out-of-range index last of all), valid ones first.
        bad = [ok[0], masked, C + 3][: K - 1]
        slate = np.array([ok[0], *ok[1 : K - len(bad)], *bad])
        actions = {**_valid(env, obs), "agent_1": slate}
        trial = copy.deepcopy(env)
        _, _, _, _, infos = trial.step(actions)
        # Under platform_choice the user visits one platform (or none): agent_1's page is
        # shown only when it is the one visited, so the check needs a step where it is.
        if env.config.topology != "platform_choice" or (infos["agent_1"]["shown"] >= 0).any():
            break
        obs, *_ = env.step(_valid(env, obs))
        masked_now = np.flatnonzero(obs["agent_1"]["action_mask"] == 0)
        masked = int(masked_now[0]) if len(masked_now) else C + 4  # out of range instead
    else:
        pytest.fail("agent_1's platform was never visited in 50 steps")
    assert infos["agent_1"]["repaired_slots"] == len(bad)
    assert infos["agent_0"]["repaired_slots"] == 0
    shown = infos["agent_1"]["shown"]
    good = K - len(bad)
    np.testing.assert_array_equal(shown[:good], obs["agent_1"]["candidate_ids"][slate[:good]])
    assert (shown[good:] == -1).all()


def test_repair_counts_in_batched_info(small):
    """On the batched core ``info["repaired"]`` is ``[N, A]`` with the number of dropped slots
    per market and agent."""
    env = recenv.make_vec(MARKET, num_envs=2, seed=0, invalid_slate="repair", **small(MARKET))
    env.reset()
    acts = {a: s.clone() for a, s in zip(env.agents, env.oracle_slates().unbind(1), strict=True)}
    acts["agent_0"][1, 1] = acts["agent_0"][1, 0]
    _, _, _, _, info = env.step(acts)
    assert info["repaired"].tolist() == [[0, 0], [1, 0]]


def test_repair_shape_errors_still_raise(small):
    """Repair cannot fix the shape or dtype of an action: those still raise ValueError."""
    env = recenv.make(MARKET, seed=0, invalid_slate="repair", **small(MARKET))
    obs, _ = env.reset()
    good = _valid(env, obs)
    with pytest.raises(ValueError, match="agent_0"):
        env.step({**good, "agent_0": np.r_[good["agent_0"], 0]})
    with pytest.raises(ValueError, match="agent_0"):
        env.step({**good, "agent_0": good["agent_0"].astype(np.float32)})


def test_pettingzoo_refuses_actions_that_are_not_a_dict(small, snapshot, assert_same):
    """Actions that are not a mapping (a list of slates, None) raise ValueError naming the
    agents; the market is untouched (was an AttributeError or TypeError from inside)."""
    env = recenv.make(MARKET, seed=0, **small(MARKET))
    obs, _ = env.reset()
    good = _valid(env, obs)
    before = snapshot(env.core)
    for bad in (list(good.values()), None, tuple(good.items())):
        with pytest.raises(ValueError, match=r"dict keyed by agent.*agent_0"):
            env.step(bad)
    assert_same(before, snapshot(env.core))


def test_unsigned_index_past_int64_is_named_as_given(small, snapshot, assert_same):
    """A uint64 index at or past 2**63 is refused with its own value (the cast to int64 made
    it negative in the message), on both faces, and nothing changes."""
    big = 2**63 + 5
    env = recenv.make(MARKET, seed=0, **small(MARKET))
    obs, _ = env.reset()
    good = _valid(env, obs)
    slate = good["agent_1"].astype(np.uint64)
    slate[-1] = big
    before = snapshot(env.core)
    pattern = rf"agent_1.*{big}.*{_range_pattern(env.config.num_candidates)}"
    with pytest.raises(ValueError, match=pattern):
        env.step({**good, "agent_1": slate})
    assert_same(before, snapshot(env.core))


@pytest.mark.parametrize("bad,edge", [("C+3", "C-1"), ("-1", "0")])
def test_repair_keeps_valid_slot_after_out_of_range_index(small, bad, edge):
    """An out-of-range index is one invalid slot: a later valid slot that holds the index the
    bad one would be clamped to (C-1 for too large, 0 for negative) is kept and shown.

    Regression test: repeats were judged on the clamped indices, so that valid slot was
    dropped as a "duplicate" of the out-of-range one."""
    env = recenv.make_vec(MARKET, num_envs=1, seed=0, invalid_slate="repair", **small(MARKET))
    env.reset()
    C, K = env.config.num_candidates, env.config.slate_size
    bad, edge = {"C+3": C + 3, "-1": -1}[bad], {"C-1": C - 1, "0": 0}[edge]
    for _ in range(100):  # a request where agent_0's candidate `edge` is unmasked
        if bool(env.cand_mask[0, 0, edge]):
            break
        _step_oracle(env)
    mask = env.cand_mask[0, 0]
    others = [int(i) for i in mask.nonzero().flatten() if int(i) != edge][: K - 2]
    acts = {a: s for a, s in zip(env.agents, env.oracle_slates().unbind(1), strict=True)}
    acts["agent_0"] = torch.tensor([[bad, edge, *others]])
    edge_item = int(env.cand[0, 0, edge])
    _, _, _, _, info = env.step(acts)
    assert int(info["repaired"][0, 0]) == 1, info["repaired"]
    assert int(info["shown"][0, 0, 1]) == edge_item


def _unreadable(good: torch.Tensor) -> dict[str, object]:
    """Actions ``[N, K]`` that cannot be read as a slate, by name (``good``: a valid one)."""
    N, K = good.shape
    return {
        "None": None,
        "str": "abc",
        "object": np.array(good.numpy(), dtype=object),
        "past_int64": [[2**70, *range(1, K)], *[list(range(K))] * (N - 1)],
        "ragged": [list(range(K - 1)), *[list(range(K))] * (N - 1)],
        "sparse": good.to_sparse(),
        "masked": np.ma.array(good.numpy(), mask=np.eye(N, K, dtype=bool)),
    }


@pytest.mark.parametrize(
    "case", ["None", "str", "object", "past_int64", "ragged", "sparse", "masked"]
)
def test_batched_refuses_unreadable_actions_by_name_and_is_untouched(
    small, case, snapshot, assert_same
):
    """An action that cannot be read as a slate (None, a string, an object array, an index
    past int64, ragged lists, a sparse tensor, a masked array) is a ValueError naming the agent
    and what a slate is, the same from ``step`` and ``check_slate``, and nothing changes.

    Regression test: these were torch's RuntimeError / TypeError / ValueError naming no agent,
    and a masked array on the PettingZoo face a TypeError comparing int and None."""
    env = recenv.make_vec(MARKET, num_envs=2, seed=0, **small(MARKET))
    env.reset()
    K, C = env.config.slate_size, env.config.num_candidates
    good = env.oracle_slates()
    acts = {a: good[:, i] for i, a in enumerate(env.agents)}
    bad = _unreadable(acts["agent_0"])[case]
    before = snapshot(env)
    with pytest.raises(ValueError) as by_step:
        env.step({**acts, "agent_0": bad})
    with pytest.raises(ValueError) as by_check:
        env.check_slate("agent_0", bad)
    msg = str(by_step.value)
    assert str(by_check.value) == msg
    assert msg.startswith("action of agent_0: "), msg
    assert f"(num_envs=2, slate_size={K})" in msg and re.search(_range_pattern(C), msg), msg
    assert_same(before, snapshot(env))
    if case in ("None", "str", "masked"):  # a one-market slate of the PettingZoo face
        face = recenv.make(MARKET, seed=0, **small(MARKET))
        obs, _ = face.reset()
        one = bad if case != "masked" else np.ma.array(_valid(face, obs)["agent_0"], mask=[0, 1, 0])
        before = snapshot(face.core)
        with pytest.raises(ValueError, match=rf"^action of agent_0: .*{_range_pattern(C)}"):
            face.step({**_valid(face, obs), "agent_0": one})
        assert_same(before, snapshot(face.core))


def test_read_only_and_byte_swapped_slates_are_read_as_given(small):
    """A read-only numpy slate is read without torch's "not writable" UserWarning, and a
    big-endian one (``>i8``) is read as its values, on both faces and on the PettingZoo face's
    fast path (every action an array) as on its checked path (another agent's a list): each
    step equals a twin's given native arrays.

    Regression test: the batched face warned on a read-only array and refused ``>i8`` with
    torch's byte-order message; the PettingZoo face took ``>i8`` on its fast path only."""
    kwargs = small(MARKET)
    env, twin = (recenv.make_vec(MARKET, num_envs=2, seed=0, **kwargs) for _ in range(2))
    env.reset()
    twin.reset()
    for form in ("read_only", "big_endian"):
        slates = env.oracle_slates().unbind(1)
        acts = {a: s.numpy() for a, s in zip(env.agents, slates, strict=True)}
        given = dict(acts)
        given["agent_0"] = acts["agent_0"].astype(">i8" if form == "big_endian" else np.int64)
        given["agent_0"].setflags(write=form != "read_only")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            env.check_slate("agent_0", given["agent_0"])
            out = env.step(given)
        _assert_tensors_equal(out[:4], twin.step(acts)[:4])
    face, face_twin = (recenv.make(MARKET, seed=0, **kwargs) for _ in range(2))
    obs, _ = face.reset()
    face_twin.reset()
    for other in (np.asarray, list):  # the fast path, then the checked one
        acts = _valid(face, obs)
        given = {"agent_0": acts["agent_0"].astype(">i8"), "agent_1": other(acts["agent_1"])}
        obs, *rest = face.step(given)
        assert data_equivalence((obs, *rest), face_twin.step(acts))
