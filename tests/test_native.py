"""recenv.core.native: the hand-written CPU kernels equal the torch forms they replace, bit for
bit, and refuse bad input. Where a C++ compiler and ninja exist (CI), the kernels must build:
a broken build fails here instead of silently slowing the compiled step."""

from __future__ import annotations

import importlib.util
import pickle
import shutil

import pytest
import torch

import recenv
from recenv.core import native
from recenv.core.market import NextUser

TOOLCHAIN = shutil.which("g++") is not None and (
    shutil.which("ninja") is not None or importlib.util.find_spec("ninja") is not None
)


def test_kernels_build_where_the_toolchain_exists():
    if not TOOLCHAIN:
        pytest.skip("no C++ compiler or ninja here")
    assert native.available(), native._STATE.get("error")


def _greedy(obs, k, feature):
    """Each agent's slate: its k unmasked candidates highest on one feature."""
    return {
        a: torch.where(o["action_mask"], o["candidates"][..., feature], -torch.inf).topk(k).indices
        for a, o in obs.items()
    }


def _random_request(env, gen):
    """A user-feature batch and a uniform block as a request would draw them (random, so the
    lists are read at many positions, including their ends)."""
    feats = torch.rand(env.num_envs, env.config.num_topics + 2, generator=gen) * 2 - 0.5
    block = torch.rand(env.num_envs, env._block_width, generator=gen)
    block[0] = 0.0  # the heads of every list
    block[1] = 1.0 - 2**-24  # their ends (uniforms are < 1)
    return feats, block


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"num_items": 3000, "item_stats_size": 128},  # counters shared modulo W
        {"num_agents": 3, "num_candidates": 12, "horizon": 7},  # episode ends: stale stamps
        {"retrieval_interest": 0.0, "retrieval_popular": 0.6, "retrieval_fresh": 0.4},
        {"retrieval_interest": 1.0, "retrieval_popular": 0.0, "retrieval_fresh": 0.0},
        {"num_items": 40, "num_candidates": 12, "fresh_window": 3},  # many duplicates
        # A row table (~2.6 MB) past any core's L2: the kernel prefetches the rows too.
        {"num_items": 20_000, "item_stats_size": 2000},
        # 70 candidates per agent: lists past the rank sort's 64, sorted by std::sort.
        {"num_items": 3000, "num_candidates": 70},
    ],
    ids=[
        "default",
        "hashed-counters",
        "three-agents-short",
        "no-interest",
        "interest-only",
        "tiny",
        "rows-prefetched",
        "long-lists",
    ],
)
def test_candidates_equal_the_torch_form(config):
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=6, seed=11, **config)
    obs = env.reset()
    gen = torch.Generator().manual_seed(3)
    k = env.config.slate_size
    for step in range(25):
        obs, *_ = env.step(_greedy(obs, k, feature=0))
        index = env._list_index(*_random_request(env, gen))
        want = env._candidates_torch(index)  # eager: the torch form
        got = env._candidates_native(index)
        for name, w, g in zip(("items", "features", "mask"), want, got, strict=True):
            assert w.dtype == g.dtype and w.shape == g.shape, name
            assert torch.equal(w, g), f"{name} differ at step {step}"
        assert not got[2].all(), "no duplicate or unarrived candidate was tested"


def test_candidates_reject_bad_input():
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    topic, pop, fresh = env._list_index(*_random_request(env, gen))
    with pytest.raises(RuntimeError, match=r"list index .* out of"):
        env._candidates_native((topic, pop + env.catalog.by_pop.numel(), fresh))
    with pytest.raises(RuntimeError, match="popular index"):
        env._candidates_native((topic, pop.int(), fresh))  # wrong dtype
    by_pop = env.catalog.by_pop
    try:
        env.catalog.by_pop = torch.full_like(by_pop, env.config.num_items)  # no such item
        with pytest.raises(RuntimeError, match=r"candidate item .* out of"):
            env._candidates_native((topic, pop, fresh))
    finally:
        env.catalog.by_pop = by_pop
    stats = env.item_stats
    try:
        env.item_stats = stats.long()  # counters of the wrong dtype
        with pytest.raises(RuntimeError, match="stats"):
            env._candidates_native((topic, pop, fresh))
    finally:
        env.item_stats = stats


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"num_items": 3000, "item_stats_size": 16},  # many items share a counter
        {"num_agents": 3, "horizon": 5},  # episode ends: stale stamps restart at 0
    ],
    ids=["default", "hashed-counters", "three-agents-short"],
)
def test_count_exposures_equals_the_torch_form(config):
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=6, seed=5, **config)
    env.reset()
    gen = torch.Generator().manual_seed(1)
    N, P = env.num_envs, env.config.num_agents * env.config.slate_size
    for step in range(30):
        # Random pages with repeats (items on two agents' slates), random exposures and clicks.
        page = torch.randint(0, min(env.config.num_items, 40), (N, P), generator=gen)
        visible = torch.rand(N, P, generator=gen) < 0.7
        chosen = page[torch.arange(N), torch.randint(0, P, (N,), generator=gen)]
        clicked = torch.rand(N, generator=gen) < 0.5
        before = env.item_stats.clone()
        env._count_exposures_torch(page, visible, chosen, clicked)
        want, env.item_stats = env.item_stats, before
        env._count_exposures(page, visible, chosen, clicked)  # the kernel (CPU)
        assert torch.equal(env.item_stats, want), f"counters differ at step {step}"
        if step % 7 == 6:
            env.episode += 1  # a new episode: every stamp is now stale


def test_count_exposures_rejects_bad_input_and_leaves_the_counters():
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    env.reset()
    P = env.config.num_agents * env.config.slate_size
    page = torch.zeros(2, P, dtype=torch.int64)
    visible, clicked = torch.ones(2, P, dtype=torch.bool), torch.ones(2, dtype=torch.bool)
    before = env.item_stats.clone()
    bad = page.clone()
    bad[1, -1] = env.config.num_items
    with pytest.raises(RuntimeError, match=r"page item .* out of"):
        env._count_exposures(bad, visible, page[:, 0], clicked)
    with pytest.raises(RuntimeError, match=r"chosen item .* out of"):
        env._count_exposures(page, visible, torch.tensor([0, -1]), clicked)
    with pytest.raises(RuntimeError, match="visible"):
        env._count_exposures(page, visible.int(), page[:, 0], clicked)
    assert torch.equal(env.item_stats, before)


@pytest.mark.parametrize(
    "config, top",
    [
        ({}, 40),  # small counts: the histogram
        ({"num_items": 3000, "item_stats_size": 16}, 40),  # hashed counters
        ({}, 100_000),  # a few huge counts (long horizons): the sort
    ],
    ids=["default", "hashed-counters", "huge-counts"],
)
def test_item_metrics_equal_the_torch_form(config, top):
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=7, seed=5, **config)
    env.reset()
    gen = torch.Generator().manual_seed(3)
    N, W = env.num_envs, env.config.stats_size
    stats = env.item_stats.view(N, W, 3)
    env.episode.copy_(torch.randint(1, 4, (N,), generator=gen))
    # Stamps of this episode or older ones, sparse exposures with ties, up to ``top``.
    stale = torch.rand(N, W, generator=gen) < 0.3
    stats[:, :, 0] = torch.where(stale, env.episode[:, None] - 1, env.episode[:, None]).int()
    counts = torch.randint(0, top + 1, (N, W), generator=gen)
    counts = torch.where(
        torch.rand(N, W, generator=gen) < 0.6, 0, counts % 5 + (counts > 30) * counts
    )
    stats[:, :, 1] = counts.int()
    stats[2, :, 1] = 0  # nothing exposed: Gini 0
    stats[3, :, 0] = env.episode[3].int() - 1  # exposures of an older episode only
    stats[4, :, 0], stats[4, :, 1] = env.episode[4].int(), 7  # all exposed equally
    for ended in (torch.arange(N), torch.tensor([6, 0, 3]), torch.zeros(0, dtype=torch.int64)):
        got, want = env._item_metrics(ended), env._item_metrics_torch(ended)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype == torch.float32
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, equal_nan=True)
    metrics = env._item_metrics(torch.arange(N))
    assert metrics["exposure_gini"][2] == metrics["exposure_gini"][3] == 0
    # Every counter exposed equally: with exact counters Gini 0 and coverage 1; with W
    # hashed counters of I items the I - W items without a counter are unshown (Gini 1 - W/I)
    # and a full table leaves the coverage unknown: NaN (it read 1, the whole catalog).
    I = env.config.num_items
    assert metrics["exposure_gini"][4] == pytest.approx(1 - W / I, abs=1e-6)
    assert metrics["coverage"][4].isnan() if W < I else metrics["coverage"][4] == 1
    with pytest.raises(RuntimeError, match=r"ended market 7 out of \[0, 7\)"):
        env._item_metrics(torch.tensor([0, 7]))
    stats[5, 0, 0], stats[5, 0, 1] = env.episode[5].int(), -1  # a corrupt table
    with pytest.raises(RuntimeError, match="negative exposure count"):
        env._item_metrics(torch.tensor([5]))


def _random_status(env, gen):
    """Random users' status around each market's clock: stamps of this episode or an older
    one, users back, between sessions or churned (and back or not), some markets with every
    user churned; and a served user's row (or none: -1) whose status differs from the
    table's."""
    N, U = env.num_envs, env.config.num_users
    t = torch.randint(0, 20, (N,), generator=gen).float()
    env.user_epoch.copy_(env.episode[:, None] - torch.randint(0, 2, (N, U), generator=gen))
    env.user_status[:, 0] = t[:, None] + torch.randint(-3, 4, (N, U), generator=gen).float()
    env.user_status[:, 1] = (torch.rand(N, U, generator=gen) < 0.3).float()
    gone = torch.rand(N, generator=gen) < 0.2  # every user churned and away
    env.user_epoch[gone] = env.episode[gone, None]
    env.user_status[gone, 0] = t[gone, None] + 5
    env.user_status[gone, 1] = 1.0
    served = torch.randint(-1, U, (N,), generator=gen)
    row = env.users[env._arange, served.clamp(min=0)].clone()
    status = env._status
    row[:, status.start] = t + torch.randint(-2, 3, (N,), generator=gen).float()
    row[:, status.start + 1] = (torch.rand(N, generator=gen) < 0.5).float()
    return t, (served, row)


@pytest.mark.parametrize(
    "config",
    [{}, {"num_users": 1}, {"num_users": 1000}, {"num_users": 7, "num_agents": 3}],
    ids=["default", "one-user", "1000-users", "seven-users"],
)
def test_next_user_equals_the_torch_form(config):
    """The next user, whether they were ready and whether every user is gone, as the torch
    form draws them: random statuses, with and without a served user's row, uniforms at the
    ends of [0, 1) (the first user, the last), at the default and at other clocks."""
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=67, seed=1, **config)
    env.reset()
    gen = torch.Generator().manual_seed(4)
    seen = {"gone": set(), "ready": set()}
    for trial in range(40):
        t, patch = _random_status(env, gen)
        uniforms = torch.rand(env.num_envs, 1, generator=gen)
        uniforms[0], uniforms[1] = 0.0, 1.0 - 2**-24
        args = (uniforms, patch if trial % 2 else None, t if trial % 3 else None)
        got = env._next_user(*args)
        want = env._next_user_torch(*args)
        assert type(got) is type(want) is NextUser
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and torch.equal(g, w), trial
        seen["gone"] |= set(got.all_gone.tolist())
        seen["ready"] |= set(got.ready.tolist())
    assert seen == {"gone": {True, False}, "ready": {True, False}}


def _next_user_request(num_envs: int, seed: int):
    """A reset market with random users' status: ``(env, (uniforms, patch, t))``, the
    arguments of one ``_next_user`` call."""
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=num_envs, seed=seed)
    env.reset()
    gen = torch.Generator().manual_seed(seed + 3)
    t, patch = _random_status(env, gen)
    return env, (torch.rand(env.num_envs, 1, generator=gen), patch, t)


def test_next_user_reads_tables_of_another_layout():
    """Tables replaced from outside in other strides (a restored checkpoint's) are read
    right: the market hands the kernel contiguous copies."""
    env, request = _next_user_request(9, 2)
    want = env._next_user_torch(*request)
    for name in ("activity", "user_epoch"):
        table = getattr(env, name)
        padded = table.new_zeros(table.shape[0], table.shape[1] + 3)[:, : table.shape[1]]
        setattr(env, name, padded.copy_(table))
    env.user_status = env.user_status.transpose(1, 2).contiguous().transpose(1, 2)
    assert not env.activity.is_contiguous() and not env.user_status.is_contiguous()
    got = env._next_user(*request)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_next_user_draws_the_same_with_and_without_the_row_prefetch(monkeypatch):
    """The arriving user's row is only prefetched: the draw is the same without it."""
    from recenv.core import market

    env, request = _next_user_request(33, 6)
    with_rows = env._next_user(*request)
    monkeypatch.setattr(market, "_PREFETCH_ARRIVING_ROWS", False)
    without = env._next_user(*request)
    assert all(torch.equal(a, b) for a, b in zip(with_rows, without, strict=True))


def test_next_user_rejects_bad_input():
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=4, seed=0)
    env.reset()
    op = torch.ops.recenv.next_user
    status, epoch, activity = env.user_status, env.user_epoch, env.activity
    served, served_status = torch.zeros(4, dtype=torch.int64), torch.zeros(4, 2)
    ok = (status, epoch, activity, env.episode, env.t, served, served_status, torch.zeros(4))
    ok += (env.users,)
    op(*ok, 1e-6)
    op(*ok[:-1], env.users[:0], 1e-6)  # no rows to prefetch
    op(*ok[:-1], env.users.transpose(1, 2).contiguous().transpose(1, 2), 1e-6)  # not prefetched
    bad = [
        (0, status[:, :1], "status: contiguous float32"),
        (1, epoch.int(), "epoch: contiguous int64"),
        (2, activity[:, :3], "activity: contiguous float32"),
        (3, env.episode[:3], "episode"),
        (4, env.t.double(), "t: contiguous float32"),
        (5, served[:2], "served"),
        (6, served_status.t(), "served_status"),
        (7, torch.zeros(4, 2), "uniforms"),
        (8, env.users[:2], "users: float32"),
        (8, env.users.double(), "users: float32"),
    ]
    for i, value, message in bad:
        args = list(ok)
        args[i] = value
        with pytest.raises(RuntimeError, match=message):
            op(*args, 1e-6)


def _checks(env, actions):
    """``env._check_actions(actions)`` with the kernel and with the torch form."""
    assert env._native_kernels
    with_kernel = env._check_actions(actions)
    env._native_kernels = False
    try:
        return with_kernel, env._check_actions(actions)
    finally:
        env._native_kernels = True


@pytest.mark.parametrize(
    "config",
    [{}, {"num_agents": 3, "slate_size": 5, "num_candidates": 12}, {"slate_size": 1}],
    ids=["default", "three-agents-k5", "k1"],
)
def test_check_slates_equals_the_torch_form(config):
    """Random slates with out-of-range indices (either side), repeats (of valid and of
    out-of-range values), masked candidates and markets about to reset; and valid slates
    (all_ok true). Inputs of another integer dtype are converted first."""
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=33, seed=3, invalid_slate="repair", **config)
    obs = env.reset()
    gen = torch.Generator().manual_seed(2)
    N, K, C = env.num_envs, env.config.slate_size, env.config.num_candidates
    all_ok_seen = set()
    for trial in range(60):
        if trial % 3 == 0:
            acts = {a: torch.randint(-3, C + 3, (N, K), generator=gen) for a in env.agents}
        elif trial % 3 == 1:  # few distinct values: many repeats
            acts = {a: torch.randint(-1, 3, (N, K), generator=gen) for a in env.agents}
        else:  # valid slates, as a policy gives them
            acts = _greedy(obs, K, feature=trial % 4)
        if trial % 2:
            acts = {a: x.int() for a, x in acts.items()}
        env.needs_reset = torch.rand(N, generator=gen) < (0.0 if trial % 5 else 0.5)
        if trial % 3 == 2 and trial % 4 < 2:
            # One bad slot, in a market about to reset (ignored: all_ok stays true) or not.
            n = int(env.needs_reset.nonzero()[0]) if env.needs_reset.any() else trial % N
            acts[env.agents[-1]] = acts[env.agents[-1]].clone()
            acts[env.agents[-1]][n, 0] = C + trial % 2
        (idx, valid, repaired), want = _checks(env, acts)
        assert torch.equal(idx, want[0]) and torch.equal(valid, want[1]), trial
        assert torch.equal(repaired, want[2]) and repaired.dtype == torch.float32, trial
        # Markets about to reset ignore their slates: nothing shown, nothing repaired.
        ignored = env.needs_reset
        assert not valid[ignored].any() and not repaired[ignored].any(), trial
        slates = [x.long() for x in acts.values()]
        got_ok = torch.ops.recenv.check_slates(slates, env.cand_mask, env.needs_reset)[3]
        want_ok = env._validity(torch.stack(slates, 1))[3]
        assert bool(got_ok) == bool(want_ok), trial
        all_ok_seen.add(bool(got_ok))
    assert all_ok_seen == {True, False}


def test_check_slates_raises_as_the_torch_form_and_leaves_the_market():
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=4, seed=0)
    obs = env.reset()
    acts = _greedy(obs, env.config.slate_size, feature=0)
    acts["agent_1"] = acts["agent_1"].clone()
    acts["agent_1"][2, 1] = acts["agent_1"][2, 0]  # a repeat in market 2
    before = env.state().clone()
    messages = []
    for native_on in (True, False):
        env._native_kernels = native_on
        with pytest.raises(ValueError, match="agent agent_1, env 2, slot 1") as e:
            env.step(acts)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "appears twice" in messages[0]
    assert torch.equal(env.state(), before)


def test_check_slates_rejects_bad_input():
    if not native.available():
        pytest.skip("native kernels not built here")
    mask = torch.ones(4, 2, 20, dtype=torch.bool)
    reset = torch.zeros(4, dtype=torch.bool)
    ok = torch.zeros(4, 3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"slates\[1\]: contiguous int64"):
        torch.ops.recenv.check_slates([ok, ok[:, :2]], mask, reset)
    with pytest.raises(RuntimeError, match=r"slates\[0\]: contiguous int64"):
        torch.ops.recenv.check_slates([ok.int(), ok], mask, reset)
    with pytest.raises(RuntimeError, match="mask: contiguous bool"):
        torch.ops.recenv.check_slates([ok], mask, reset)  # one slate, two agents' masks
    with pytest.raises(RuntimeError, match="needs_reset"):
        torch.ops.recenv.check_slates([ok, ok], mask, reset[:3])


_EDGE_INT64 = [0, 1, -1, 2**63 - 1, -(2**63), 2**32 - 1, 2**32, -(2**31)]


@pytest.mark.parametrize("width", [0, 1, 2, 67, 300])
@pytest.mark.parametrize("split", [False, True])
def test_block_uniforms_equal_the_torch_form(width, split):
    """``recenv::block_uniforms`` equals ``rng.block``'s torch form bit for bit: keys,
    counters and indices over all 64 bits (the wrapping products and logical shifts), every
    stream, and widths past the Weyl sequence's first lap of 32 bits."""
    if not native.available():
        pytest.skip("native kernels not built here")
    from recenv.core import rng

    gen = torch.Generator().manual_seed(width + 7 * split)
    n = 64 + len(_EDGE_INT64)
    key = torch.cat(
        [torch.tensor(_EDGE_INT64), torch.randint(-(2**63), 2**63 - 1, (64,), generator=gen)]
    )
    counter = torch.cat(
        [torch.tensor(_EDGE_INT64[::-1]), torch.randint(0, 2**40, (64,), generator=gen)]
    )
    index = torch.randint(-(2**31), 2**31, (n,), generator=gen) if split else None
    for stream in (rng.STREAM_STEP, rng.STREAM_USER, rng.STREAM_POPULATION, 0, 2**40 + 3):
        torch_form = rng.block(key, counter, stream, width, index=index)
        kernel = rng.block(key, counter, stream, width, index=index, native=True)
        assert kernel.dtype == torch_form.dtype == torch.float32
        assert kernel.shape == (n, width)
        assert torch.equal(kernel, torch_form), stream
    # Strided inputs (rng.block hands the kernel contiguous copies) give the same numbers.
    strided = (key[::2], counter[::2], 1, width)
    sub = None if index is None else index[::2]
    assert torch.equal(rng.block(*strided, index=sub, native=True), rng.block(*strided, index=sub))


def test_block_uniforms_rejects_bad_input():
    if not native.available():
        pytest.skip("native kernels not built here")
    key = torch.arange(4)
    op = torch.ops.recenv.block_uniforms
    with pytest.raises(RuntimeError, match="key: contiguous int64"):
        op(key.int(), key, 1, None, 3)
    with pytest.raises(RuntimeError, match="counter: contiguous int64"):
        op(key, key[:3], 1, None, 3)
    with pytest.raises(RuntimeError, match="index: contiguous int64"):
        op(key, key, 1, key[:2], 3)
    with pytest.raises(RuntimeError, match="stream"):
        op(key, key, -1, None, 3)
    with pytest.raises(RuntimeError, match="width"):
        op(key, key, 1, None, -1)


def test_block_uniforms_only_in_eager_steps():
    """Eager CPU steps draw their uniforms by the kernel; a compiled step keeps the torch
    form, which inductor fuses into its loops (an opaque call would split them)."""
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=2)
    assert env._native_rng
    assert not recenv.make_vec("recenv/Market-v0", num_envs=2, compile=True)._native_rng
    env._native_kernels = False
    assert not env._native_rng


def test_used_by_cpu_steps_eager_and_compiled():
    if not native.available():
        pytest.skip("native kernels not built here")
    threads = torch.get_num_threads()
    try:
        for n, t in ((1, 1), (64, 2)):
            torch.set_num_threads(t)
            assert recenv.make_vec("recenv/Market-v0", num_envs=n, compile=True)._native_kernels
    finally:
        torch.set_num_threads(threads)
    env = recenv.make_vec("recenv/Market-v0", num_envs=2)
    assert env._native_kernels and pickle.loads(pickle.dumps(env))._native_kernels


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("RECENV_NATIVE", "0")
    assert not native.available()
    env = recenv.make_vec("recenv/Market-v0", num_envs=64, seed=0, compile=True)
    assert env.compiled and not env._native_kernels
    assert not recenv.make_vec("recenv/Market-v0", num_envs=2)._native_kernels


def test_eager_trajectories_equal_with_and_without_the_kernel():
    """End to end, eager: the same markets stepped with the kernel and with the torch form
    give identical observations, rewards, ends and infos (auto-resets included)."""
    if not native.available():
        pytest.skip("native kernels not built here")
    cfg = {"num_agents": 3, "horizon": 6, "num_items": 500, "item_stats_size": 64}
    envs = [recenv.make_vec("recenv/Market-v0", num_envs=5, seed=2, **cfg) for _ in range(2)]
    envs[1]._native_kernels = False
    obs = [e.reset() for e in envs]
    k, ended = envs[0].config.slate_size, 0
    for _ in range(15):
        acts = _greedy(obs[0], k, feature=1)
        out = [e.step(acts) for e in envs]
        obs = [o[0] for o in out]
        for a in envs[0].agents:
            for key in obs[0][a]:
                assert torch.equal(obs[0][a][key], obs[1][a][key]), (a, key)
        for x, y in zip(out[0][1:4], out[1][1:4], strict=True):
            assert (
                all(torch.equal(x[a], y[a]) for a in x)
                if isinstance(x, dict)
                else torch.equal(x, y)
            )
        assert torch.equal(out[0][4]["chosen_item"], out[1][4]["chosen_item"])
        assert ("episode" in out[0][4]) == ("episode" in out[1][4])
        for key, value in out[0][4].get("episode", {}).items():
            assert torch.equal(value, out[1][4]["episode"][key]), key
        ended += "episode" in out[0][4]
    assert ended >= 2  # the item metrics were compared


def test_module_reload_keeps_the_op():
    """A notebook's autoreload re-executes the module: defining the op again would raise."""
    importlib.reload(native)
    ops = ("candidates", "count_exposures", "item_metrics", "check_slates", "next_user")
    ops += ("block_uniforms",)
    assert all(hasattr(torch.ops.recenv, op) for op in ops)


def test_op_schemas_have_no_default_arguments():
    """A compiled step's cached C++ calls each op with the arguments its graph was traced
    with. An argument left at its default drops out of the graph's text, so after a change
    of the op's argument list the graph cache can serve C++ built against the old list
    (seen in the forty-first session: "aoti_torch_call_dispatcher ... API call failed").
    With no defaults, every change of an op's arguments changes every graph's text."""
    ops = ("candidates", "count_exposures", "item_metrics", "check_slates", "next_user")
    for name in (*ops, "block_uniforms"):
        schema = getattr(torch.ops.recenv, name).default._schema
        defaults = [a.name for a in schema.arguments if a.default_value is not None]
        assert not defaults, f"recenv::{name} has defaults for {defaults}"


def test_each_checkout_builds_its_own_library(monkeypatch):
    """The build directory's name depends on where the package lies: torch's builder writes
    the sources' absolute paths into it, so two checkouts sharing one rebuilt the library each
    time the other loaded it."""
    here = native._source_tag()
    assert native._source_tag() == here  # stable
    monkeypatch.setattr(native, "__file__", "/elsewhere/recenv/core/native/__init__.py")
    assert native._source_tag() != here


def test_a_restored_snapshot_does_not_carry_the_native_switch(monkeypatch):
    """A run's checkpoint snapshots every attribute of the market, the native-kernel switch
    too: resumed with ``RECENV_NATIVE=0`` (or where the kernels cannot be built), the market
    took the saving process's True and its first step called ``recenv::check_slates``, never
    loaded there (``NotImplementedError``). The switch is decided where the state is restored,
    as on unpickling."""
    from experiments import snapshot

    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    obs = env.reset(seed=0)
    saved = snapshot.snapshot(env, skip=("config", "catalog", "population", "layout"))
    assert saved["_native_kernels"] == native.usable(env.device)
    monkeypatch.setenv("RECENV_NATIVE", "0")
    snapshot.restore(env, saved)
    assert env._native_kernels is False
    K = env.config.slate_size
    slates = {a: obs[a]["action_mask"].float().topk(K, dim=-1).indices for a in env.agents}
    env.step(slates)  # the torch form steps


def _stale_lock_dir(tmp_path, monkeypatch):
    """A build directory under ``tmp_path`` holding the ``lock`` torch's builder leaves when
    its process is killed mid-build."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    build_dir = native._build_directory("recenv_native_test")
    assert build_dir is not None and build_dir.is_relative_to(tmp_path)
    (build_dir / "lock").touch()
    return build_dir


def test_a_build_lock_left_by_a_killed_build_is_removed(tmp_path, monkeypatch):
    """A process killed while building left torch's ``lock``; every later process waited on
    it forever, silently (torch's FileBaton). No live builder holds recenv's flock, so the
    lock is stale: removed, with a warning that says so."""
    build_dir = _stale_lock_dir(tmp_path, monkeypatch)
    with pytest.warns(RuntimeWarning, match="died while building"):
        with native._build_guard("recenv_native_test"):
            assert not (build_dir / "lock").exists()


def test_a_live_builds_lock_is_waited_for_not_removed(tmp_path, monkeypatch):
    import fcntl
    import os
    import threading
    import warnings

    build_dir = _stale_lock_dir(tmp_path, monkeypatch)
    # A live builder: it holds the flock (another open file description conflicts, even in
    # this process) and torch's lock, and removes the lock when its build ends.
    fd = os.open(build_dir / "recenv-build.flock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    entered = threading.Event()
    seen: dict[str, object] = {}

    def build():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with native._build_guard("recenv_native_test"):
                seen["lock"] = (build_dir / "lock").exists()
                entered.set()
        seen["warnings"] = [str(w.message) for w in caught]

    t = threading.Thread(target=build, daemon=True)
    t.start()
    assert not entered.wait(0.5)  # waits for the live build ...
    assert (build_dir / "lock").exists()  # ... and leaves its lock alone
    (build_dir / "lock").unlink()  # the build ends
    os.close(fd)
    t.join(30)
    assert entered.is_set() and seen == {"lock": False, "warnings": []}


@pytest.mark.skipif(not TOOLCHAIN, reason="no C++ compiler or ninja here")
def test_kernels_load_past_a_lock_left_by_a_killed_build(tmp_path, monkeypatch):
    """End to end, in a fresh process: the built library and a stale ``lock`` beside it (as a
    SIGKILLed first build leaves them); loading went on waiting forever before."""
    import os
    import subprocess
    import sys

    assert native.available(), native._STATE.get("error")
    name = "recenv_native_" + native._source_tag()
    built = native._build_directory(name)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    copy = native._build_directory(name)
    assert built is not None and copy is not None and copy != built
    shutil.copytree(
        built, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("lock", "*.flock")
    )
    (copy / "lock").touch()
    code = "from recenv.core import native; print(native.available())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,  # a rebuild takes ~30-60 s; the old code never returned
        env={**os.environ, "PYTHONWARNINGS": "always"},
    )
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    assert "died while building" in out.stderr
    assert not (copy / "lock").exists()
