"""Replay storage and the assembly of bootstrapped transitions, against brute-force references."""

from __future__ import annotations

import pytest
import torch

from agents.buffers import NStepAccumulator, ReplayBuffer, UserVisitAccumulator, row_keys


def test_replay_drops_masked_rows_and_keeps_the_newest():
    buf = ReplayBuffer(5)
    rows = {"x": torch.arange(4.0), "y": torch.arange(4)[:, None].repeat(1, 2)}
    assert buf.add(rows, torch.tensor([True, False, True, True])) == 3
    assert sorted(buf.storage["x"][: len(buf)].tolist()) == [0.0, 2.0, 3.0]
    buf.add({"x": torch.arange(10.0, 14.0), "y": torch.zeros(4, 2, dtype=torch.int64)})
    assert len(buf) == 5
    assert sorted(buf.storage["x"].tolist()) == [3.0, 10.0, 11.0, 12.0, 13.0]
    sample = buf.sample(64, torch.Generator().manual_seed(0))
    assert sample["x"].shape == (64,) and sample["y"].shape == (64, 2)
    assert set(sample["x"].tolist()) <= {3.0, 10.0, 11.0, 12.0, 13.0}
    with pytest.raises(ValueError, match="keys"):
        buf.add({"x": torch.zeros(1)})
    # More rows in one add than the buffer holds: the newest `capacity` of them.
    buf.add({"x": torch.arange(20.0, 28.0), "y": torch.zeros(8, 2, dtype=torch.int64)})
    assert len(buf) == 5 and sorted(buf.storage["x"].tolist()) == [23.0, 24.0, 25.0, 26.0, 27.0]


def test_replay_names_a_row_that_does_not_fit_the_stored_ones():
    """A row of another shape or dtype is refused with the buffer and key named (it was
    index_copy_'s bare message, or a silent cast), the buffer unchanged."""
    buf = ReplayBuffer(5, what="agent 'iql': buffer_size=5")
    buf.add({"x": torch.zeros(2, 3), "y": torch.zeros(2, dtype=torch.int64)})
    for bad, message in (
        ({"x": torch.zeros(1, 4), "y": torch.zeros(1, dtype=torch.int64)}, r"'x' is .* \(4,\)"),
        ({"x": torch.zeros(1, 3), "y": torch.zeros(1)}, r"'y' is torch.float32 \(\) per entry"),
    ):
        with pytest.raises(ValueError, match=r"agent 'iql': buffer_size=5: row " + message):
            buf.add(bad)
    assert len(buf) == 2 and buf.pos == 2


def test_replay_with_keys_refuses_other_rows_and_states():
    keys = row_keys(["x", "reward", "next_x", "terminal", "end", "valid", "user_id"])
    assert keys == {"x", "reward", "next_x", "discount"}
    buf = ReplayBuffer(4, keys=keys)
    row = {k: torch.zeros(2) for k in keys}
    assert buf.add(row) == 2
    with pytest.raises(ValueError, match=r"lack \['discount'\] and have unexpected \['y'\]"):
        buf.add({**{k: v for k, v in row.items() if k != "discount"}, "y": torch.zeros(2)})
    state = buf.state_dict()
    del state["storage"]["reward"]
    fresh = ReplayBuffer(4, keys=keys)
    with pytest.raises(ValueError, match=r"row keys lack \['reward'\]"):
        fresh.load_state_dict(state)
    assert len(fresh) == 0 and not fresh.storage
    fresh.load_state_dict({"storage": {}, "pos": 0, "size": 0})  # empty: nothing to check


def _trajectories():
    """4 markets x 7 steps with episode ends, auto-reset steps and known rewards."""
    T, N = 7, 4
    reward = torch.arange(T * N, dtype=torch.float32).view(T, N) + 1.0
    terminal = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminal[1, 1] = True  # market 1 terminates at step 1 (step 2 is its reset)
    truncated[2, 2] = True  # market 2 is truncated at step 2 (bootstrap from final obs)
    truncated[4, 3] = True
    terminal[5, 0] = True
    end = terminal | truncated
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[1:] = ~end[:-1]  # the step after an end is the auto-reset step
    reward[~valid] = 0.0
    return T, N, reward, terminal, end, valid


def _step(t, reward, terminal, end, valid):
    tag = torch.arange(reward.shape[1]) * 100 + t
    return {
        "x": tag.float(),
        "reward": reward[t],
        "next_x": tag.float() + 0.5,  # "the observation after step t"
        "terminal": terminal[t],
        "end": end[t],
        "valid": valid[t],
    }


@pytest.mark.parametrize("n", [1, 2, 3])
def test_n_step_returns_match_a_reference(n):
    gamma = 0.5
    T, N, reward, terminal, end, valid = _trajectories()
    acc = NStepAccumulator(n, gamma)
    got = {}
    for t in range(T):
        out = acc.push(_step(t, reward, terminal, end, valid))
        if out is None:
            continue
        row, mask = out
        for m in range(N):
            if mask[m]:
                got[int(row["x"][m])] = (
                    float(row["reward"][m]),
                    float(row["next_x"][m]),
                    float(row["discount"][m]),
                )
    expected = {}
    for m in range(N):
        for t in range(T - n + 1):
            if not valid[t, m]:
                continue
            G, j = 0.0, 0
            while True:
                G += gamma**j * float(reward[t + j, m])
                if end[t + j, m] or j == n - 1:
                    break
                j += 1
            disc = 0.0 if terminal[t + j, m] else gamma ** (j + 1)
            expected[m * 100 + t] = (G, m * 100 + t + j + 0.5, disc)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v), k


def test_user_level_returns_pair_each_request_with_the_users_next():
    gamma = 0.9
    # 2 markets, 3 users; user arriving at each step (obs) and at the next step (next obs).
    users = torch.tensor([[0, 1], [1, 1], [0, 2], [2, 0], [1, 0]])
    T, N = 4, 2
    end = torch.zeros(T, N, dtype=torch.bool)
    end[3, 1] = True  # market 1's episode ends at step 3
    got = _user_level_rows(gamma, users, end, terminal=end)
    expected = [
        (1.0, 3.5, gamma),  # market 0: user 1 at step 1 is back in the next obs of step 3
        (100.0, 100.5, gamma),  # market 1: user 1 at step 0 is back at step 1
        (101.0, 103.5, 0.0),  # ... user 1 at step 1: the episode terminates first -> terminal
        (102.0, 103.5, 0.0),  # user 2 at step 2: flushed at the end
        (103.0, 103.5, 0.0),  # user 0 at step 3: flushed at the end
        (0.0, 1.5, gamma),  # market 0: user 0 at step 0 is back at step 2
    ]
    assert sorted(got) == sorted(expected)  # market 0's users 0 (step 2) and 2 still wait
    # Truncated at step 3 instead: market 1's open requests are dropped, not made terminal
    # (their users' next requests lie past the time limit, which they do not observe).
    got = _user_level_rows(gamma, users, end, terminal=torch.zeros_like(end))
    assert sorted(got) == sorted([(1.0, 3.5, gamma), (100.0, 100.5, gamma), (0.0, 1.5, gamma)])


def _user_level_rows(gamma, users, end, terminal):
    """(x, next_x, discount) of every row a UserVisitAccumulator completes over the steps."""
    T, N = end.shape
    acc = UserVisitAccumulator(num_users=3, gamma=gamma)
    got = []
    for t in range(T):
        step = {
            "x": torch.arange(N) * 100.0 + t,
            "reward": torch.ones(N),
            "next_x": torch.arange(N) * 100.0 + t + 0.5,
            "terminal": terminal[t],
            "end": end[t],
            "valid": torch.ones(N, dtype=torch.bool),
            "user_id": users[t],
            "next_user_id": users[t + 1],
        }
        for row, mask in acc.push(step):
            keep = torch.ones(row["x"].shape[0], dtype=torch.bool) if mask is None else mask
            for i in keep.nonzero().flatten().tolist():
                got.append(
                    (
                        float(row["x"][i]),
                        float(row["next_x"][i]),
                        round(float(row["discount"][i]), 6),
                    )
                )
    return got
