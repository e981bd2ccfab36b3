"""Long-run stability: what must not grow or recompile over millions of steps, many episodes,
resets and markets built one after another in one process.

Benchmarks time a few thousand steps; a slow leak or a silent recompilation shows only in
long runs. Nothing here is timed: the tests count what would make a long run slower or
larger (Dynamo's compiled frames and cache entries, the warm step's direct path, the graphs
Dynamo keeps, live markets, open file descriptors, memory mappings, threads, Python objects).
Found by a bug hunt: a collected compiled market left its graph behind (5-9 MB each, for the
life of the process).
"""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
import torch

import recenv
import recenv.core.market as market_module
from experiments import snapshot
from experiments.runner import ENV_STATIC

MARKET = "recenv/Market-v0"
# Small enough to step in milliseconds; the compiled builds share it, so the second one
# reads the first one's graph from inductor's cache.
SMALL = {"horizon": 5, "num_items": 300, "num_users": 8}


def _topk_actions(env, obs, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A valid random slate per agent: [N, K] indices of unmasked candidates."""
    K = env.config.slate_size
    return {
        a: (o["action_mask"].float() + torch.rand(o["action_mask"].shape, generator=generator))
        .topk(K, dim=1)
        .indices
        for a, o in obs.items()
    }


def _run(env, obs, steps: int, generator: torch.Generator):
    for _ in range(steps):
        obs = env.step(_topk_actions(env, obs, generator))[0]
    return obs


def _warm(step) -> dict[str, object]:
    """What the warm step (recenv.core.warm.warm_unguarded) holds: whether it has compiled,
    whether it calls Dynamo's generated function directly, and its code's cache entries."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    cells = dict(zip(step.__code__.co_freevars, step.__closure__, strict=True))
    code = cells["method"].cell_contents.__func__.__code__
    return {
        "warm": cells["warm"].cell_contents,
        "direct": cells["direct"].cell_contents is not None,
        "entries": len(_debug_get_cache_entry_list(code)),
    }


def _compiled_fns() -> set[str]:
    """The names of the compiled graphs Dynamo installed in recenv.core.market's globals."""
    return {name for name in vars(market_module) if name.startswith("__compiled_fn")}


# --------------------------------------------------------------------------------------------
# Compiled markets: no recompilation over a run's events
# --------------------------------------------------------------------------------------------
def test_compiled_batch_compiles_once_over_resets_refusals_and_restores():
    """A compiled batch compiles its step once and keeps calling it directly through auto-
    resets, ``reset(seed=...)``, ``reset()``, ``state()``, a refused action, another thread
    count and a snapshot restore: a recompilation would add cache entries (past Dynamo's limit
    of 8 the step runs eagerly, 2-5x slower, with no error) and drop the direct call."""
    from torch._dynamo.utils import counters

    g = torch.Generator().manual_seed(0)
    env = recenv.make_vec(MARKET, num_envs=2, seed=0, compile=True, **SMALL)
    obs = _run(env, env.reset(seed=0), 2, g)
    frames = counters["frames"]["total"]
    assert _warm(env._serve) == {"warm": True, "direct": True, "entries": 1}

    obs = _run(env, obs, 3 * SMALL["horizon"], g)  # episodes end and markets auto-reset
    obs = _run(env, env.reset(seed=7), 3, g)
    obs = _run(env, env.reset(), 3, g)
    env.state()
    obs = _run(env, env.reset(), 1, g)  # no market about to reset: every action is checked
    bad = {a: torch.zeros_like(v) for a, v in _topk_actions(env, obs, g).items()}
    with pytest.raises(ValueError, match="invalid slate"):
        env.step(bad)
    obs = _run(env, obs, 2, g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2 if threads == 1 else 1)
        obs = _run(env, obs, 2, g)
    finally:
        torch.set_num_threads(threads)
    saved = snapshot.snapshot(env, skip=ENV_STATIC)
    obs = _run(env, obs, 2, g)
    snapshot.restore(env, saved)  # the next call evaluates the guards once: they hold
    _run(env, env.observe(), 3, g)

    assert counters["frames"]["total"] == frames, "the step was compiled again"
    assert _warm(env._serve) == {"warm": True, "direct": True, "entries": 1}


# --------------------------------------------------------------------------------------------
# Markets built one after another
# --------------------------------------------------------------------------------------------
def test_a_collected_compiled_market_leaves_no_graph_behind():
    """Regression test: each compiled market steps through its own copy of the step's code
    (``recenv.core.warm.own_code``). Dynamo maps the code it generates back to that copy
    (``orig_code_map``, weakly keyed by the generated code, which the copy's cache entry
    holds), so the copy kept itself alive through its own cache after the market was
    collected, with the graph and the ``__compiled_fn_*`` Dynamo installed in
    recenv.core.market's globals: 5-9 MB a compiled market, never given back in a process
    (a notebook, a sweep) that builds markets one after another. The market now drops its
    codes' cache entries when it is collected."""
    before = _compiled_fns()
    g = torch.Generator().manual_seed(0)
    env = recenv.make_vec(MARKET, num_envs=2, seed=0, compile=True, **SMALL)
    _run(env, env.reset(seed=0), 2, g)
    code = _warm_code(env._serve)
    graphs = _compiled_fns() - before
    assert graphs, "the market's step installed no graph: nothing to check"
    gone = weakref.ref(env)
    del env
    gc.collect()
    assert gone() is None
    assert code() is None, "the market's step code outlived the market"
    assert not graphs & _compiled_fns(), "the market's graph stayed in the module's globals"


def _warm_code(step) -> weakref.ref:
    cells = dict(zip(step.__code__.co_freevars, step.__closure__, strict=True))
    return weakref.ref(cells["method"].cell_contents.__func__.__code__)


def _process_resources() -> dict[str, int]:
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "maps": sum(1 for _ in open("/proc/self/maps")),
        "threads": len(os.listdir("/proc/self/task")),
    }


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc (Linux)")
def test_markets_built_one_after_another_give_everything_back():
    """Eager markets (batched, with tables on huge pages, and the PettingZoo face) built and
    dropped in a loop, as a notebook does: each is collected, and file descriptors, memory
    mappings (huge-page tables are mappings of their own) and threads stay as they were."""
    config = {**SMALL, "num_users": 4096}  # a user table above hugepages.MIN_BYTES at 8 envs

    def build(i: int) -> weakref.ref:
        if i % 2:
            face = recenv.make(MARKET, seed=i, **config)
            face.reset(seed=i)
            return weakref.ref(face.core)
        batch = recenv.make_vec(MARKET, num_envs=8, seed=i, **config)
        _run(batch, batch.reset(seed=i), 2, torch.Generator().manual_seed(i))
        return weakref.ref(batch)

    build(0), build(1)  # first builds load what a process loads once
    gc.collect()
    start = _process_resources()
    refs = [build(i) for i in range(2, 22)]  # 10 batches, 10 faces
    gc.collect()
    assert not [r for r in refs if r() is not None], "a dropped market is still alive"
    now = _process_resources()
    # Not exact: in a busy process (an xdist worker) a thread or a malloc arena may come or
    # go meanwhile. Anything kept per market would add 10 or more.
    grown = {k: now[k] - start[k] for k in start}
    assert all(v < 5 for v in grown.values()), (start, now)


def test_a_long_face_run_holds_no_more_objects():
    """Many episodes of the PettingZoo face (steps, episode ends, resets with and without a
    seed) leave the same number of tensors and Python objects alive: nothing accumulates per
    step or per episode."""
    env = recenv.make(MARKET, seed=0, **SMALL)
    K = env.config.slate_size
    rng = np.random.default_rng(0)

    def episodes(n: int) -> None:
        for e in range(n):
            obs, _ = env.reset(seed=e) if e % 3 == 0 else env.reset()
            while env.agents:
                acts = {a: np.flatnonzero(o["action_mask"])[:K] for a, o in obs.items()}
                acts = {a: rng.permutation(v) for a, v in acts.items()}
                obs = env.step(acts)[0]
            env.state()

    def alive() -> tuple[int, int]:
        gc.collect()
        objects = gc.get_objects()
        return sum(isinstance(o, torch.Tensor) for o in objects), len(objects)

    episodes(5)  # (the first episodes' one-time objects: caches, warnings' registries)
    alive()
    episodes(5)
    tensors, objects = alive()
    episodes(60)
    now_tensors, now_objects = alive()
    assert now_tensors == tensors
    # Not exact: in a busy process (an xdist worker, torch's and pytest's own threads) a few
    # objects come and go (the suite once read 911,380 against 911,378). Anything kept per
    # episode would add 60 or more, per step thousands.
    assert now_objects - objects < 30, (objects, now_objects)
