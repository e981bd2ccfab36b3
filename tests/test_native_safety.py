"""recenv.core.native on the inputs an AddressSanitizer / UndefinedBehaviorSanitizer audit of the
kernels found unchecked (``experiments/native_sanitize.py`` reruns it): a zero ``stats_size``
(an integer division by zero, which killed the process), counts past what the int64 Gini sums
and int32 counters hold (signed overflow); and the edge cases tests/test_native.py does not
step: markets split over two threads (the candidates' pipeline starting mid-batch), no list
entries at all (C = K), one agent, user, candidate and counter, every user churned."""

from __future__ import annotations

import random

import pytest
import torch
from test_random_configs import random_slates

import recenv
from recenv.core import native

L, I32 = torch.int64, torch.int32


@pytest.fixture(autouse=True)
def _kernels():
    if not native.available():
        pytest.skip("native kernels not built here")


def _candidates_args(N: int, W: int) -> list:
    """Valid ``recenv::candidates`` arguments (one agent, one head item, no list entries,
    5 items) for N markets with W counters each."""
    empty_list, no_entries = torch.zeros(1, dtype=I32), torch.zeros(N, 1, 0, dtype=L)
    return [
        torch.zeros(1, 1, dtype=L),  # head
        *(empty_list, no_entries) * 3,  # by_topic, topic_index, by_pop, ..., fresh_index
        torch.zeros(5, 4),  # item_rows
        torch.zeros(N * W, 3, dtype=I32),  # stats
        torch.zeros(N, dtype=L),  # episode
        torch.zeros(N),  # t
        torch.zeros(4),  # log1p_counts
        4,  # num_features
        W,  # stats_size
        10.0,  # horizon
    ]


def test_kernels_refuse_a_zero_stats_size():
    """Counters sit at ``item % stats_size``: with 0 the kernels divided by zero (SIGFPE: the
    process died) where ``item_metrics`` already refused it."""
    args = _candidates_args(2, 1)
    torch.ops.recenv.candidates(*args)  # W = 1: fine
    args[8], args[13] = torch.zeros(0, 3, dtype=I32), 0
    with pytest.raises(RuntimeError, match=r"stats_size \(0\) must be > 0"):
        torch.ops.recenv.candidates(*args)
    stats = torch.zeros(0, 3, dtype=I32)
    page, visible = torch.zeros(2, 3, dtype=L), torch.ones(2, 3, dtype=torch.bool)
    chosen, clicked = torch.zeros(2, dtype=L), torch.ones(2, dtype=torch.bool)
    with pytest.raises(RuntimeError, match=r"stats_size \(0\) must be > 0"):
        torch.ops.recenv.count_exposures(
            stats, torch.zeros(2, dtype=L), page, visible, chosen, clicked, 0, 5
        )


def test_item_metrics_refuse_counts_past_the_gini_sums():
    """The Gini's exact int64 numerator is bounded by total exposures x num_items: a table
    past that (three counters at int32's max, 2**31 items; a market's episode shows fewer
    than 2**31 items) overflowed into a wrong Gini; now refused as a corrupt table. At the
    bound's other side the kernel still equals the torch form."""
    op = torch.ops.recenv.item_metrics
    one = torch.zeros(1, dtype=L)
    stats = torch.tensor([[0, 2**31 - 1, 0]] * 3, dtype=I32)
    with pytest.raises(RuntimeError, match="more exposures than an episode can"):
        op(stats, one, torch.zeros(1, dtype=L), 3, 2**31)
    # Two such counters fit (total x I < 2**63): the Gini of the torch form's float64 sums.
    from recenv.core.metrics import gini

    coverage, g = op(stats[:2], one, torch.zeros(1, dtype=L), 2, 2**31)
    assert coverage.isnan().all()  # every hashed counter exposed: unknown
    assert g == gini(stats[None, :2, 1], 2**31)


def test_count_exposures_wrap_a_full_counter_as_the_torch_form():
    """A counter at int32's max (a corrupt table) wraps as the torch form's int32 add does,
    instead of a signed overflow (undefined behaviour; UBSan flagged it)."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, num_items=50)
    env.reset()
    P = env.config.num_agents * env.config.slate_size
    stats = env.item_stats.view(2, -1, 3)
    stats[:, :, 0] = env._stamp()[:, None]
    stats[:, :, 1:] = 2**31 - 1
    page = torch.arange(2 * P).view(2, P) % 3
    visible, clicked = torch.ones(2, P, dtype=torch.bool), torch.ones(2, dtype=torch.bool)
    before = env.item_stats.clone()
    env._count_exposures_torch(page, visible, page[:, 0], clicked)
    want, env.item_stats = env.item_stats, before
    env._count_exposures(page, visible, page[:, 0], clicked)  # the kernel
    assert torch.equal(env.item_stats, want)
    assert (env.item_stats.view(2, -1, 3)[:, :3, 1] < 0).all()  # every exposure wrapped


EDGE = {
    # C = K: every candidate is a head item, no source reads its list (n = 0 each).
    "no-list-entries": {"num_candidates": 3, "slate_size": 3, "horizon": 5},
    # One agent, user, candidate and counter; episodes of 3 requests, auto-resets.
    "one-of-everything": {
        "num_agents": 1,
        "num_users": 1,
        "num_candidates": 1,
        "slate_size": 1,
        "num_items": 3,
        "item_stats_size": 1,
        "horizon": 3,
    },
    # Every user churns after a session and never returns: episodes end with all gone.
    "all-churn": {
        "num_users": 2,
        "satisfaction_init": 0.7,
        "churn_threshold": 0.69,
        "return_prob": 0.0,
        "session_gap": 0,
        "horizon": 40,
    },
    # A tiny catalog with hashed counters, candidates past the rank sort (std::sort).
    "tiny-hashed-long-lists": {
        "num_items": 300,
        "num_candidates": 70,
        "item_stats_size": 3,
        "horizon": 5,
    },
}


@pytest.mark.filterwarnings("ignore:item_stats_size=")  # (fewer counters than items)
@pytest.mark.parametrize("config", EDGE.values(), ids=EDGE.keys())
def test_edge_trajectories_equal_with_and_without_the_kernels(config):
    """66 markets on two threads (each kernel's markets split in two ranges: the candidates'
    pipeline starts mid-batch) stepped with the kernels and with the torch forms, random
    slates with invalid slots repaired, auto-resets and episode ends: identical outcomes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        envs = [
            recenv.make_vec(
                "recenv/Market-v0", num_envs=66, seed=3, invalid_slate="repair", **config
            )
            for _ in range(2)
        ]
        envs[1]._native_kernels = False
        obs = [e.reset() for e in envs]
        r, g = random.Random(0), torch.Generator().manual_seed(0)
        N, K, C = 66, envs[0].config.slate_size, envs[0].config.num_candidates
        ended = 0
        for step in range(8):
            if r.random() < 0.3:  # out of range, repeats, masked
                acts = {a: torch.randint(-2, C + 2, (N, K), generator=g) for a in envs[0].agents}
            else:
                acts = random_slates(obs[0], envs[0].agents, K, g)
            out = [e.step(acts) for e in envs]
            obs = [o[0] for o in out]
            for a in envs[0].agents:
                for key in obs[0][a]:
                    assert torch.equal(obs[0][a][key], obs[1][a][key]), (step, a, key)
            for x, y in zip(out[0][1:4], out[1][1:4], strict=True):
                same = (
                    all(torch.equal(x[a], y[a]) for a in x)
                    if isinstance(x, dict)
                    else torch.equal(x, y)
                )
                assert same, step
            info = [o[4] for o in out]
            assert torch.equal(info[0]["chosen_item"], info[1]["chosen_item"]), step
            assert ("episode" in info[0]) == ("episode" in info[1]), step
            for key, value in info[0].get("episode", {}).items():
                torch.testing.assert_close(
                    value, info[1]["episode"][key], rtol=0, atol=0, equal_nan=True
                )
            ended += "episode" in info[0]
        assert ended, "no episode ended: the item metrics were not compared"
    finally:
        torch.set_num_threads(threads)
