"""recenv.core.native: the hand-written CPU kernels equal the torch forms they replace, bit for
bit, and refuse bad input. Where a C++ compiler and ninja exist (CI), the kernels must build:
a broken build fails here instead of silently slowing the compiled step."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

import recenv
from recenv.core import native
from recenv.core.market import BatchedMarket

TOOLCHAIN = shutil.which("g++") is not None and (
    shutil.which("ninja") is not None or importlib.util.find_spec("ninja") is not None
)


def test_kernels_build_where_the_toolchain_exists():
    if not TOOLCHAIN:
        pytest.skip("no C++ compiler or ninja here")
    assert native.available(), native._STATE.get("error")


def _kernel_args(core, items):
    c = core.config
    return (
        core.catalog.item_rows,
        core.item_stats.view(-1, 3),
        core.episode,
        core.t,
        items,
        core._log1p_counts,
        c.num_topics + 6,
        c.stats_size,
        float(c.horizon),
    )


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"num_items": 3000, "item_stats_size": 128},  # counters shared modulo W
        {"num_agents": 3, "num_candidates": 12, "horizon": 7},  # episode ends: stale stamps
    ],
    ids=["default", "hashed-counters", "three-agents-short-episodes"],
)
def test_candidate_features_equal_the_torch_form(config):
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=6, seed=11, **config)
    obs = env.reset()
    k = env.config.slate_size
    for step in range(25):
        acts = {
            a: torch.where(o["action_mask"], o["candidates"][..., 0], -torch.inf).topk(k).indices
            for a, o in obs.items()
        }
        obs, *_ = env.step(acts)
        items = env.cand.view(env.num_envs, -1).contiguous()
        # Also items no market has shown yet and the catalog's last item.
        extra = torch.tensor([[0, env.config.num_items - 1]] * env.num_envs)
        for x in (items, extra):
            want = env._candidate_features(x)  # eager: the torch form
            got = torch.ops.recenv.candidate_features(*_kernel_args(env, x))
            assert torch.equal(want[0], got[0]), f"features differ at step {step}"
            assert torch.equal(want[1], got[1]), f"arrival mask differs at step {step}"


def test_candidate_features_reject_bad_input():
    if not native.available():
        pytest.skip("native kernels not built here")
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    env.reset()
    bad = torch.tensor([[0, env.config.num_items]] * 2)
    with pytest.raises(RuntimeError, match="out of"):
        torch.ops.recenv.candidate_features(*_kernel_args(env, bad))
    args = list(_kernel_args(env, env.cand.view(2, -1).contiguous()))
    args[1] = args[1].long()  # counters of the wrong dtype
    with pytest.raises(RuntimeError, match="stats"):
        torch.ops.recenv.candidate_features(*args)


def test_used_from_the_batch_size_where_it_pays():
    if not native.available():
        pytest.skip("native kernels not built here")
    small = recenv.make_vec("recenv/Market-v0", num_envs=1, seed=0, compile=True)
    assert not small._native_kernels  # one market: the fused torch form is faster
    n = BatchedMarket.NATIVE_MIN_ENVS
    large = recenv.make_vec("recenv/Market-v0", num_envs=n, seed=0, compile=True)
    assert large._native_kernels
    threads = torch.get_num_threads()
    try:  # compiled under more threads than it pays for: the fused torch form
        torch.set_num_threads(BatchedMarket.NATIVE_MAX_THREADS + 1)
        parallel = recenv.make_vec("recenv/Market-v0", num_envs=n, seed=0, compile=True)
        assert not parallel._native_kernels
    finally:
        torch.set_num_threads(threads)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("RECENV_NATIVE", "0")
    assert not native.available()
    env = recenv.make_vec("recenv/Market-v0", num_envs=64, seed=0, compile=True)
    assert env.compiled and not env._native_kernels
