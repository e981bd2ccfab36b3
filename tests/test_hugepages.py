"""Large state tables on transparent huge pages (recenv.core.hugepages): same values, same
trajectories, and the advice really reaches the kernel (the VMA's ``hg`` flag) where the
machine allows it."""

from __future__ import annotations

import pickle

import pytest
import torch

import recenv
from experiments import snapshot
from experiments.runner import ENV_STATIC
from recenv.core import hugepages

needs_thp = pytest.mark.skipif(
    not hugepages.enabled("cpu"),
    reason="no transparent huge pages to advise here (not Linux, or THP mode 'never')",
)


def _vm_flags(addr: int) -> set[str]:
    """The ``VmFlags`` of the mapping of this process that holds ``addr``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "VmFlags:":
                return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {addr:#x}")


def _advised(t: torch.Tensor) -> bool:
    """Whether the first and the last byte of ``t`` lie in huge-page-advised mappings."""
    last = t.data_ptr() + t.numel() * t.element_size() - 1
    return "hg" in _vm_flags(t.data_ptr()) and "hg" in _vm_flags(last)


@pytest.mark.parametrize(
    ("shape", "value", "dtype"),
    [
        ((3, 4), 0, torch.float32),  # small: plain torch allocation
        ((1024, 2000, 3), -1, torch.int32),  # 24 MiB
        ((512, 25, 80), 0.5, torch.float32),  # 4 MiB
        ((300, 3001), 7, torch.int64),
        ((2, 1 << 20), True, torch.bool),
    ],
)
def test_full_equals_torch_full(shape, value, dtype):
    t = hugepages.full(shape, value, dtype, "cpu")
    assert t.is_contiguous() and t.device.type == "cpu"
    assert torch.equal(t, torch.full(shape, value, dtype=dtype))


@needs_thp
@pytest.mark.parametrize("nbytes", [hugepages.MIN_BYTES, 3 * hugepages.HUGE_PAGE + 4, 24 << 20])
def test_whole_table_on_advised_pages(nbytes):
    t = hugepages.full((nbytes // 4,), 1, torch.int32, "cpu")
    assert hugepages.is_advised(t) and _advised(t)
    assert t.data_ptr() % hugepages.HUGE_PAGE == 0
    plain = hugepages.compact(t)
    assert torch.equal(plain, t) and not hugepages.is_advised(plain)
    assert plain.untyped_storage().nbytes() == plain.nbytes  # no slack pickled
    again = hugepages.rehome(plain)
    assert hugepages.is_advised(again) and torch.equal(again, t)
    assert hugepages.rehome(again) is again


@needs_thp
def test_compiled_row_write_updates_an_advised_table_in_place():
    """A table starts its storage on the boundary (storage offset 0). From a storage offset,
    inductor cannot update a mutated input in place: it clones the table, writes the rows into
    the clone and copies it back, two passes over the whole table per call (at 4,096 markets
    the user table's two copies were ~16 % of the step)."""
    from torch._inductor.utils import run_and_get_code

    N, U, F = 64, 25, 80  # 512 KiB
    table = hugepages.full((N, U, F), 0.0, torch.float32, "cpu")
    assert hugepages.is_advised(table) and table.storage_offset() == 0 and table._base is None
    flat, rows = torch.arange(N) * U + 3, torch.randn(N, F)

    def write(t, flat, rows):
        t.view(-1, F).index_copy_(0, flat, rows)

    torch._dynamo.reset()
    # Caches off: a cached graph compiled for an input without offset would hide the copy.
    with torch._inductor.config.patch(force_disable_caches=True):
        _, codes = run_and_get_code(torch.compile(write, dynamic=False), table, flat, rows)
    assert torch.equal(table[:, 3], rows) and not table[:, :3].any()
    # A loop over all N * U * F elements is a copy of the whole table.
    assert not any(f"{N * U * F}L" in code for code in codes), "the table was copied"


def test_thp_mode_names_the_bracketed_mode():
    assert hugepages.thp_mode() in (None, "always", "madvise", "never")
    if hugepages.enabled("cpu"):  # advice is given only where the kernel takes it
        assert hugepages.thp_mode() in ("always", "madvise")


def test_small_tables_stay_plain():
    t = hugepages.full((hugepages.MIN_BYTES // 4 - 1,), 0, torch.float32, "cpu")
    assert not hugepages.is_advised(t) and t.untyped_storage().nbytes() == t.nbytes
    assert hugepages.rehome(t) is t and hugepages.compact(t) is t


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("RECENV_HUGE_PAGES", "0")
    assert not hugepages.enabled("cpu")
    t = hugepages.full((1024, 2000, 3), 0, torch.int32, "cpu")
    assert not hugepages.is_advised(t) and t.untyped_storage().nbytes() == t.nbytes
    assert not t.any()
    assert hugepages.rehome(t) is t


def test_other_devices_are_never_advised():
    assert not hugepages.enabled("meta")
    t = hugepages.full((1024, 2000, 3), 0, torch.int32, "meta")
    assert t.device.type == "meta" and t.shape == (1024, 2000, 3)


@needs_thp
def test_market_tables_on_advised_pages_and_after_unpickling():
    # 256 markets of 400 users: every table past MIN_BYTES (activity 400 KiB).
    env = recenv.make_vec("recenv/Market-v0", num_envs=256, seed=0, num_users=400)
    env.reset()
    for name in env._HUGE_PAGE_TABLES:
        table = getattr(env, name)
        assert table.nbytes >= hugepages.MIN_BYTES, name
        assert hugepages.is_advised(table) and _advised(table), name
    blob = pickle.dumps(env)
    copy = pickle.loads(blob)
    assert len(blob) < env.state_nbytes() + (2 << 20)  # the tables, not their buffers
    for name in env._HUGE_PAGE_TABLES:
        assert hugepages.is_advised(getattr(copy, name)), name
        assert torch.equal(getattr(copy, name), getattr(env, name)), name


@needs_thp
def test_large_catalog_tables_on_advised_pages_and_after_unpickling():
    """The item rows and retrieval lists of a large catalog, read at random by every step,
    lie on huge pages, pickle as plain tables, and come back on huge pages; a small catalog's
    stay plain."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, num_items=100_000)
    cat = env.catalog
    # Each table, _item_rows through its property (it is built on first use).
    names = [name.lstrip("_") for name in cat._HUGE_PAGE_TABLES]
    for name in names:
        table = getattr(cat, name)
        assert table.nbytes >= hugepages.MIN_BYTES, name
        assert hugepages.is_advised(table) and _advised(table), name
    blob = pickle.dumps(cat)
    fields = [v for k, v in cat.__dict__.items() if isinstance(v, torch.Tensor)]
    assert len(blob) < sum(t.nbytes for t in fields) + (1 << 20)  # not the buffers' slack
    copy = pickle.loads(blob)
    for name in names:
        assert hugepages.is_advised(getattr(copy, name)), name
        assert torch.equal(getattr(copy, name), getattr(cat, name)), name
    small = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0).catalog
    assert small.item_rows.nbytes < hugepages.MIN_BYTES
    assert not any(hugepages.is_advised(getattr(small, name)) for name in names)


@needs_thp
def test_tables_restored_from_a_run_snapshot_go_back_to_huge_pages(monkeypatch):
    env = recenv.make_vec("recenv/Market-v0", num_envs=256, seed=0, num_users=400)
    env.reset()
    saved = snapshot.snapshot(env, skip=ENV_STATIC)
    assert not hugepages.is_advised(saved["users"]["value"])  # checkpoints hold plain copies
    with monkeypatch.context() as m:  # without the hook, the restored tables stay plain
        m.setattr(snapshot, "RESTORED_HOOK", "no_such_hook")
        snapshot.restore(env, saved)
        assert not hugepages.is_advised(env.users)
    snapshot.restore(env, saved)  # ends with env.state_restored(), which re-homes them
    for name in env._HUGE_PAGE_TABLES:
        assert hugepages.is_advised(getattr(env, name)), name
        assert torch.equal(getattr(env, name), saved[name]["value"]), name


def _rollout(steps: int = 6) -> list[torch.Tensor]:
    env = recenv.make_vec("recenv/Market-v0", num_envs=256, seed=3, num_users=400)
    obs = env.reset()
    k = env.config.slate_size
    out = []
    for _ in range(steps):
        # The first K unmasked candidates: always a valid slate.
        acts = {
            a: torch.where(obs[a]["action_mask"], 0.0, 1.0).argsort(dim=-1, stable=True)[:, :k]
            for a in env.agents
        }
        obs, rewards, term, trunc, _ = env.step(acts)
        out += [rewards[a] for a in env.agents] + [term, trunc, env.users.clone()]
    return [*out, env.item_stats.clone(), env.activity.clone()]


def test_same_trajectory_with_and_without_huge_pages(monkeypatch):
    on = _rollout()
    monkeypatch.setenv("RECENV_HUGE_PAGES", "0")
    off = _rollout()
    assert len(on) == len(off)
    for a, b in zip(on, off, strict=True):
        assert torch.equal(a, b)
