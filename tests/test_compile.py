"""``compile=True`` runs the same simulation as eager mode.

Inductor may fuse floating-point operations differently, so values agree to rounding; the
discrete outcomes (users, candidates, masks, choices) of a short run are identical because
their decisions are far from ties on this seed. Compilation takes tens of seconds, so this
file checks one small configuration at two batch sizes.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
import torch

import recenv

# diversity_weight: the reward includes the slates' diversity, which compiled steps compute
# by another form (metrics.intra_list_diversity_by_sums), so the rewards compare it too.
SMALL = {"num_items": 400, "horizon": 12, "num_users": 8, "diversity_weight": 0.5}


@pytest.fixture
def algorithm_mode():
    """``torch.use_deterministic_algorithms`` for the test, set back as it was after it."""
    from recenv.core.warm import deterministic_algorithms

    with deterministic_algorithms(None):
        yield torch.use_deterministic_algorithms


def _run(env, steps):
    """Obs, rewards and ends of ``steps`` steps under the myopic oracle (deterministic)."""
    trace = []
    env.reset(seed=3)
    for _ in range(steps):
        slates = env.oracle_slates()
        obs, rew, term, trunc, info = env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
        trace.append((obs, rew, term, trunc, info["chosen_item"]))
    return trace


def test_compiled_random_draws_equal_eager():
    """The counter-based blocks (``rng.uniforms``) are the same bits compiled as eager at
    every width tried, and a fresh user drawn from one (``users.draw_user``) the same to
    rounding, at every topic count tried. Regression: ``arange(int32) * golden`` became
    ``Vectorized<int32_t>::arange(base, step)`` in inductor's C++, whose ``base + 2 * step``
    overflows a signed int (undefined); g++ -O3 dropped the stores of that vectorised block,
    so at 24 topics a compiled user's observation noise was NaN or stale memory."""
    from recenv.core import rng
    from recenv.core.config import MarketConfig
    from recenv.core.users import UserLayout, draw_user, user_block_width

    widths = (1, 7, 8, 9, 17, 31, 52, 60, 68, 100, 131)
    configs = [MarketConfig(num_topics=t) for t in (16, 20, 24, 33)]

    def draws(pre):
        blocks = [rng.uniforms(pre, w) for w in widths]
        for cfg in configs:
            layout = UserLayout(cfg.num_topics, cfg.num_agents)
            row, const = draw_user(cfg, layout, rng.uniforms(pre, user_block_width(cfg)))
            blocks += [row, const.taste, const.noise, const.visible, const.price_sensitivity]
        return blocks

    pre = rng.prefix(rng.seed_to_key(torch.arange(5)), torch.arange(5) * 7, rng.STREAM_USER)
    compiled = torch.compile(draws, dynamic=False, options={"cpp_wrapper": True})
    for i, (want, got) in enumerate(zip(draws(pre), compiled(pre), strict=True)):
        if i < len(widths) or not want.is_floating_point():
            assert torch.equal(want, got), i
        else:  # through log, sqrt, cos, exp: vectorised libm may differ in the last bit
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=str(i))


# An integer literal past int32 in index arithmetic: ``2654435769*x0``, ``(-6562126108L) +
# ((-1640531527L)*x1)``: a 10-digit-or-longer number multiplying or offset next to an index
# variable (x0, x1, ...), in C++ or Triton.
_WIDE_INDEX_LITERAL = re.compile(
    r"\d{10,}L?\)?\s*\*\s*\(?x\d|\bx\d+\)?\s*\*\s*\(?-?\d{10,}|\(-?\d{10,}L?\)\s*\+\s*\(+-?\d+L?\)?\*x\d"
)


def test_compiled_random_draws_keep_wide_constants_out_of_index_arithmetic(monkeypatch):
    """Triton refuses an integer literal past int32 next to an int32 index ("Scalar
    2654435769 is out of range for type int32"), which is how every compiled CUDA step failed
    to build on the first GPU lent (torch 2.11): inductor had folded ``rng.uniforms``'s
    ``arange(width) * 0x9E3779B9`` into index arithmetic, offsets of the block's slices and
    all. CPU tests cannot build Triton kernels, but inductor's C++ holds the same index
    expressions: with the CPU treated as Triton is (``rng.FOLD_WEYL_ON`` empty), the C++ of a
    block drawn and sliced as the step does holds no such literal, and the numbers are the
    same bits as the CPU's own form (which folds, as the last check shows)."""
    from torch._inductor.utils import run_and_get_code

    from recenv.core import rng

    def draw(pre):
        u = rng.uniforms(pre, 24)
        return u[:, 4:9] * u[:, 13:18] + u[:, 19:24]

    def compiled_code(pre):  # a new graph each time: the guards read rng.FOLD_WEYL_ON
        with torch._inductor.config.patch(fx_graph_cache=False):
            got, code = run_and_get_code(torch.compile(draw, dynamic=False), pre)
        assert torch.equal(got, draw(pre))
        return "\n".join(code)

    pre = rng.prefix(rng.seed_to_key(torch.arange(6)), torch.arange(6) * 3, rng.STREAM_STEP)
    cpu_form = draw(pre)
    with monkeypatch.context() as m:
        m.setattr(rng, "FOLD_WEYL_ON", frozenset())
        for width in (1, 24, 4096):  # another int64 form, the same low 32 bits
            golden = torch.arange(width) * 0x9E3779B9
            assert not torch.equal(rng.weyl(width, pre.device), golden) or width == 1
            assert torch.equal(rng.weyl(width, pre.device) & 0xFFFFFFFF, golden & 0xFFFFFFFF)
        assert torch.equal(draw(pre), cpu_form)
        code = compiled_code(pre)
    assert "x0" in code or "x1" in code  # the kernels' code was read
    assert not _WIDE_INDEX_LITERAL.findall(code)
    assert _WIDE_INDEX_LITERAL.findall(compiled_code(pre))  # the CPU's form: folded


@pytest.mark.parametrize(
    ("num_envs", "separate_gathers", "native", "num_topics", "deterministic", "topology"),
    [
        (1, False, True, 16, False, "shared_page"),
        (32, False, True, 16, False, "shared_page"),
        (32, True, False, 16, False, "shared_page"),
        (32, False, False, 16, False, "shared_page"),
        # Video-v0's and ECommerce-v0's topic counts (their fresh users once came out wrong).
        (1, False, True, 24, False, "shared_page"),
        (32, False, True, 20, False, "shared_page"),
        # Both markets stepped, and the compiled one built, under deterministic algorithms.
        (32, False, True, 16, True, "shared_page"),
        # The user first picks a platform (Video-v0's topology): its own draw and page.
        (32, False, True, 16, False, "platform_choice"),
    ],
)
def test_compiled_step_matches_eager(
    num_envs,
    separate_gathers,
    native,
    num_topics,
    deterministic,
    topology,
    monkeypatch,
    algorithm_mode,
):
    """``separate_gathers``: the item rows are gathered by the opaque op that compiled steps
    use for item tables past ``SEPARATE_GATHER_BYTES`` (large catalogs). ``native``: the
    candidates and the counters' update come from recenv.core.native's kernels (when they
    build here), or, with ``RECENV_NATIVE=0``, from the torch forms, in both markets.
    With the kernels, every state table lies on huge pages where the machine allows it (as
    large tables do by default), so the compiled step's inputs are views of larger buffers
    (recenv.core.hugepages); without, they are plain tensors."""
    if not native:
        monkeypatch.setenv("RECENV_NATIVE", "0")
    elif num_envs > 1:
        monkeypatch.setattr(recenv.core.hugepages, "MIN_BYTES", 1)
    algorithm_mode(deterministic)
    kwargs = {**SMALL, "num_topics": num_topics, "topology": topology}
    eager = recenv.make_vec("recenv/Market-v0", num_envs=num_envs, seed=3, **kwargs)
    compiled = recenv.make_vec("recenv/Market-v0", num_envs=num_envs, seed=3, **kwargs)
    if separate_gathers:
        compiled.SEPARATE_GATHER_BYTES = 0  # this small catalog counts as large
    compiled.compile()
    assert compiled._separate_gathers == separate_gathers
    assert compiled._native_kernels == (native and recenv.core.native.available())
    huge = recenv.core.hugepages.is_advised(compiled.item_stats)
    assert huge == (native and num_envs > 1 and recenv.core.hugepages.enabled())
    steps = 2 * SMALL["horizon"] + 2  # crosses an auto-reset
    for (o1, r1, te1, tr1, c1), (o2, r2, te2, tr2, c2) in zip(
        _run(eager, steps), _run(compiled, steps), strict=True
    ):
        assert torch.equal(c1, c2)
        assert torch.equal(te1, te2) and torch.equal(tr1, tr2)
        for a in eager.agents:
            torch.testing.assert_close(r1[a], r2[a], rtol=1e-4, atol=1e-5)
            for key, x in o1[a].items():
                if x.is_floating_point():
                    torch.testing.assert_close(x, o2[a][key], rtol=1e-4, atol=1e-5)
                else:
                    assert torch.equal(x, o2[a][key]), key


@pytest.fixture(params=[False, True], ids=["default", "deterministic_algorithms"])
def deterministic_algorithms(request, algorithm_mode):
    """Runs a test in torch's default mode and with ``torch.use_deterministic_algorithms``
    on (RLlib's seeding turns it on), in which compiled markets still build their graphs in
    the default mode (``recenv.core.warm.outside_deterministic_mode``)."""
    algorithm_mode(request.param)
    return request.param


def test_compiled_pettingzoo_face_matches_eager_and_still_checks_actions(deterministic_algorithms):
    """The face's numpy fast path plus the one-graph step give the eager face's trajectory,
    episode metrics included; a bad slate still raises and leaves the market untouched. In
    both of torch's algorithm modes (see ``deterministic_algorithms``)."""
    eager = recenv.make("recenv/Market-v0", seed=5, **SMALL)
    compiled = recenv.make("recenv/Market-v0", seed=5, compile=True, **SMALL)
    for env in (eager, compiled):
        env.reset(seed=5)
    ended = False
    while eager.agents:
        acts = {a: eager.oracle_slate(a) for a in eager.agents}
        o1, r1, te1, tr1, i1 = eager.step(acts)
        o2, r2, te2, tr2, i2 = compiled.step(acts)
        assert te1 == te2 and tr1 == tr2 and compiled.agents == eager.agents
        for a in o1:
            assert r1[a] == pytest.approx(r2[a], rel=1e-4, abs=1e-5)
            for key, x in o1[a].items():
                torch.testing.assert_close(
                    torch.as_tensor(np.array(x)),
                    torch.as_tensor(np.array(o2[a][key])),
                    rtol=1e-4,
                    atol=1e-5,
                )
            assert i1[a]["chosen_slot"] == i2[a]["chosen_slot"]
            if "episode" in i1[a]:
                ended = True
                for key, v in i1[a]["episode"].items():
                    assert v == pytest.approx(i2[a]["episode"][key], rel=1e-4, abs=1e-5), key
    assert ended

    compiled.reset(seed=6)
    before = compiled.core.users.clone(), compiled.core.counter.clone()
    mask = compiled.core.cand_mask[0, 0]
    masked = int((~mask).nonzero()[0]) if (~mask).any() else None
    good = {a: compiled.oracle_slate(a) for a in compiled.agents}
    bad = dict(good, agent_1=good["agent_1"].copy())
    bad["agent_1"][1] = bad["agent_1"][0]  # a duplicate
    with pytest.raises(ValueError, match=r"agent_1.*twice"):
        compiled.step(bad)
    if masked is not None:
        bad = dict(good, agent_0=good["agent_0"].copy())
        bad["agent_0"][0] = masked
        with pytest.raises(ValueError, match=r"agent_0.*masked"):
            compiled.step(bad)
    assert torch.equal(before[0], compiled.core.users)
    assert torch.equal(before[1], compiled.core.counter)


def test_pettingzoo_face_steps_through_its_own_warm_graph(deterministic_algorithms):
    """The face enters the core through ``_serve_face`` (a graph with only what the face
    reads), never through the batched face's ``_serve``, and on the direct warm path, which
    calls the graph without AOTAutograd's runtime wrapper; ``state_restored()`` sends that
    step back through Dynamo's guards once. The same graph in torch's deterministic mode
    (``recenv.core.warm.outside_deterministic_mode``: in it, inductor would call ATen for
    the indexed writes and keep the buffers off the stack; RLlib's seeding turns it on)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    env = recenv.make("recenv/Market-v0", seed=1, compile=True, **SMALL)
    env.reset()

    def step():
        env.step({a: env.oracle_slate(a) for a in env.agents})

    def cells(call):
        return dict(zip(call.__code__.co_freevars, call.__closure__, strict=True))

    def thin(direct):
        """Whether ``direct`` calls its graph without AOTAutograd's runtime wrapper."""
        names = [n for n in direct.__code__.co_names if n.startswith("__compiled_fn")]
        return len(names) == 1 and getattr(direct.__globals__[names[0]], "thin", False)

    step(), step()
    face, serve = cells(env.core._serve_face), cells(env.core._serve)
    assert face["direct"].cell_contents is not None
    # The graph kept by the backend, called directly (recenv.core.warm.thin_call).
    assert face["capture"].cell_contents.graph is not None
    assert thin(face["direct"].cell_contents)
    # ... through its C++ entry point (recenv.core.warm.cpp_entry).
    assert face["capture"].cell_contents.graph.entry is not None
    # One graph without fallback calls (no ATen cumsum, no custom kernel), whose
    # intermediate buffers are C arrays: the only heap tensors it allocates are the ones it
    # returns (recenv.core.stack).
    assert env.core._stack_graph
    source = face["capture"].cell_contents.graph.compiled.source_code
    entry = source[source.index("void inductor_entry_impl(") :]
    # The C shim calls it makes only allocate and move handles: an ATen op called through
    # the shim (aoti_torch_cpu_*, aoti_torch_*_out, the dispatcher) keeps the stack off.
    calls = set(re.findall(r"\baoti_torch_\w+", entry))
    allowed = {
        "aoti_torch_empty_strided",
        "aoti_torch_assign_tensors",
        "aoti_torch_new_uninitialized_tensor",
    }
    assert calls <= allowed, calls - allowed
    assert "ArrayRefTensor<" in entry, {"heap_buffers": entry.count("aoti_torch_empty_strided(")}
    heap = set(re.findall(r"AtenTensorHandle (buf\d+)_handle;", entry))
    returned = set(re.findall(r"output_handles\[\d+\] = .*?\b(buf\d+)\b", entry))
    assert heap and heap <= returned
    # What a step returned stays as it was through the next steps (nothing is reused).
    obs, *_ = env.step({a: env.oracle_slate(a) for a in env.agents})
    kept = {a: {k: np.array(v, copy=True) for k, v in o.items()} for a, o in obs.items()}
    step(), step()
    for a, o in obs.items():
        for k, v in o.items():
            assert np.array_equal(v, kept[a][k]), (a, k)
    entries = _debug_get_cache_entry_list(face["fn"].cell_contents.__code__)
    assert len(entries) == 1
    # Compiled without Dynamo's per-call profiler annotations (a context manager per step).
    assert "record_pregraph_bytecode_enter" not in entries[0].code.co_names
    assert _debug_get_cache_entry_list(serve["fn"].cell_contents.__code__) == []
    env.core.state_restored()
    assert face["direct"].cell_contents is None
    step()
    assert face["direct"].cell_contents is not None
    assert thin(face["direct"].cell_contents)  # guards passed: the same graph, no recompile


def test_each_compiled_market_keeps_its_own_graph_cache():
    """Dynamo falls back to Python, silently, once one code object has ``recompile_limit``
    graphs; markets of different sizes must not share that budget (a benchmark or a sweep
    builds many)."""
    from torch._dynamo.utils import counters

    small = {"num_items": 200, "horizon": 6, "num_users": 4}
    with torch._dynamo.config.patch(recompile_limit=1):
        before = counters["stats"]["unique_graphs"]
        for n in (1, 2):
            env = recenv.make_vec("recenv/Market-v0", num_envs=n, seed=0, compile=True, **small)
            slates = env.reset() and env.oracle_slates()
            env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
        # Both markets compiled their step: two graphs (one code object shared by both
        # would have stopped at one, and the second market would run eagerly).
        assert counters["stats"]["unique_graphs"] - before >= 2


def test_copies_of_a_compiled_market_step_themselves():
    """A deep copy (as vectorising wrappers make) or a pickled copy of a compiled market
    compiles its own step: stepping it leaves the original untouched, and both continue the
    same trajectory."""
    import copy
    import pickle

    small = {"num_items": 200, "horizon": 6, "num_users": 4}
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, compile=True, **small)
    env.reset()

    def step(e):
        s = e.oracle_slates()
        return e.step({a: s[:, i] for i, a in enumerate(e.agents)})

    step(env)
    for clone in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        counter = env.counter.clone()
        assert clone.compiled
        obs_c, rew_c, *_ = step(clone)
        assert torch.equal(env.counter, counter)  # the original did not move
        assert torch.equal(clone.counter, counter + 1)
        twin = copy.deepcopy(env)
        obs_t, rew_t, *_ = step(twin)
        for a in env.agents:
            assert torch.equal(rew_c[a], rew_t[a])
            assert torch.equal(obs_c[a]["candidate_ids"], obs_t[a]["candidate_ids"])


def test_compiled_markets_with_one_seed_step_the_same_trajectory():
    """Reproducibility within the compiled mode (the README's convention): two compiled
    markets built with one seed give bit-equal observations, rewards and ends over steps
    that include an episode end and its auto-reset."""
    small = {"num_items": 200, "horizon": 4, "num_users": 4}
    runs = []
    for _ in range(2):
        env = recenv.make_vec("recenv/Market-v0", num_envs=3, seed=11, compile=True, **small)
        env.reset()
        steps = []
        for _ in range(6):
            s = env.oracle_slates()
            obs, rew, term, trunc, info = env.step({a: s[:, i] for i, a in enumerate(env.agents)})
            steps.append((obs, rew, term, trunc, info["reset"]))
        runs.append(steps)
    for (obs_a, rew_a, term_a, trunc_a, reset_a), (obs_b, rew_b, term_b, trunc_b, reset_b) in zip(
        *runs, strict=True
    ):
        assert torch.equal(reset_a, reset_b)
        assert torch.equal(term_a, term_b) and torch.equal(trunc_a, trunc_b)
        for a in obs_a:
            assert torch.equal(rew_a[a], rew_b[a])
            for k in obs_a[a]:
                assert torch.equal(obs_a[a][k], obs_b[a][k]), (a, k)
    assert any(bool(r.any()) for *_, r in runs[0])  # an auto-reset happened


@pytest.mark.parametrize("num_envs", [1, 2])
def test_warm_compiled_step_calls_dynamos_generated_code_directly(num_envs):
    """After the first step, the step runs Dynamo's generated function without its frame hook
    (the fast path must really be taken, or one-market steps silently lose ~40 % of their
    speed) and stays on the same trajectory as guarded calls; a non-default compiler stance
    (``force_eager``, for debugging) is honoured. One market also calls its graph without
    AOTAutograd's runtime wrapper (recenv.core.warm.thin_call), under every grad mode."""
    from recenv.core.warm import generated_function

    small = {"num_items": 200, "horizon": 6, "num_users": 4}
    fast = recenv.make_vec("recenv/Market-v0", num_envs=num_envs, seed=1, compile=True, **small)
    eager = recenv.make_vec("recenv/Market-v0", num_envs=num_envs, seed=1, **small)
    for env in (fast, eager):
        env.reset()

    def step(e):
        s = e.oracle_slates()
        return e.step({a: s[:, i] for i, a in enumerate(e.agents)})

    step(fast), step(eager)
    cells = dict(zip(fast._serve.__code__.co_freevars, fast._serve.__closure__, strict=True))
    assert cells["direct"].cell_contents is not None
    assert generated_function(cells["fn"].cell_contents) is not None
    capture = cells["capture"].cell_contents
    assert (capture is not None and capture.graph is not None) == (num_envs == 1)
    # Crosses auto-resets; grad modes a training loop steps under; Dynamo's caches cleared by
    # the user (the generated function and its graph stay alive with the market).
    modes = [contextlib.nullcontext, torch.no_grad, torch.inference_mode]
    for k in range(3 * small["horizon"]):
        if k == 3:
            with torch.compiler.set_stance("force_eager"):
                out_f, out_e = step(fast), step(eager)
        else:
            if k == 2 * small["horizon"]:
                torch._dynamo.reset()
            with modes[k % 3]():
                out_f, out_e = step(fast), step(eager)
        assert torch.equal(out_f[4]["chosen_item"], out_e[4]["chosen_item"])
        for a in fast.agents:
            torch.testing.assert_close(out_f[1][a], out_e[1][a], rtol=1e-4, atol=1e-5)
            assert torch.equal(out_f[0][a]["candidate_ids"], out_e[0][a]["candidate_ids"])
    assert torch.equal(fast.counter, eager.counter)


def test_state_replaced_with_another_layout_is_read_right_after_state_restored():
    """The warm step skips Dynamo's guards and inductor's size asserts are off, so a table
    replaced from outside (a checkpoint's restore) could be read with the layout it was
    compiled for; ``state_restored()`` (which experiments.snapshot.restore calls) makes the
    next step check the guards, which recompile for the new strides."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    small = {"num_items": 200, "horizon": 6, "num_users": 4}
    fast = recenv.make_vec("recenv/Market-v0", num_envs=3, seed=2, compile=True, **small)
    eager = recenv.make_vec("recenv/Market-v0", num_envs=3, seed=2, **small)

    def step(e):
        s = e.oracle_slates()
        return e.step({a: s[:, i] for i, a in enumerate(e.agents)})

    for env in (fast, eager):
        env.reset()
        step(env)
    # The same values in other strides: rows padded (a layout the step reads right eagerly).
    for name in ("users", "activity"):
        t = getattr(fast, name)
        padded = t.new_zeros(*t.shape[:-1], t.shape[-1] + 2)[..., : t.shape[-1]].copy_(t)
        assert torch.equal(padded, t) and padded.stride() != t.stride()
        setattr(fast, name, padded)
    fast.state_restored()
    for _ in range(2 * small["horizon"]):  # crosses auto-resets
        out_f, out_e = step(fast), step(eager)
        assert torch.equal(out_f[4]["chosen_item"], out_e[4]["chosen_item"])
        for a in fast.agents:
            torch.testing.assert_close(out_f[1][a], out_e[1][a], rtol=1e-4, atol=1e-5)
            assert torch.equal(out_f[0][a]["candidate_ids"], out_e[0][a]["candidate_ids"])
    torch.testing.assert_close(fast.users, eager.users, rtol=1e-4, atol=1e-5)
    cells = dict(zip(fast._serve.__code__.co_freevars, fast._serve.__closure__, strict=True))
    assert len(_debug_get_cache_entry_list(cells["fn"].cell_contents.__code__)) == 2


@pytest.mark.parametrize("view_writes", [True, False], ids=["flat_views", "index_put"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "torch_forms"])
def test_compiled_step_writes_the_state_tables_in_place(native, view_writes, monkeypatch):
    """No loop of the compiled step's generated code runs over a whole state table: each
    table is written in place at the rows the step changes. A table copied and written back
    (inductor's way with an input it cannot update in place: one written through a view by
    torch 2.11's inductor, or written twice in one graph) costs two passes over it a step,
    ~16 % of a 4,096-market step for the users alone; on a GPU the same (the torch forms are
    the CUDA step's). Under torch 2.11 the flat-view form fails this (the table is copied).
    The step's values under the index_put_ form are compared with the other form's."""
    from torch._inductor.utils import run_and_get_code

    if view_writes and not recenv.core.indexing.VIEW_WRITES_IN_PLACE:
        pytest.skip("this inductor copies a table written through a view: put_at avoids it")
    if not native:
        monkeypatch.setenv("RECENV_NATIVE", "0")
    # Both forms of indexing.put_at: this torch's, and the other one (index_put_ is what
    # torch < 2.13 traces; the flat views are 2.13's).
    monkeypatch.setattr(recenv.core.indexing, "VIEW_WRITES_IN_PLACE", view_writes)
    env = recenv.make_vec("recenv/Market-v0", num_envs=16, seed=3, **SMALL).compile()
    env.reset()
    slates = env.oracle_slates()
    actions = {a: slates[:, i] for i, a in enumerate(env.agents)}
    torch._dynamo.reset()
    # Caches off: the code is generated, so it can be read.
    with torch._inductor.config.patch(force_disable_caches=True):
        _, codes = run_and_get_code(lambda: env.step(actions))
    code = "\n".join(codes)
    assert "x0<static_cast<int64_t>" in code  # the C++ loops are in what was read
    # The same step written the other way (a fresh market, same seed and actions).
    monkeypatch.setattr(recenv.core.indexing, "VIEW_WRITES_IN_PLACE", not view_writes)
    other = recenv.make_vec("recenv/Market-v0", num_envs=16, seed=3, **SMALL).compile()
    other.reset()
    other.step(actions)
    for name in ("users", "user_status", "user_epoch", "item_stats"):
        assert torch.equal(getattr(env, name), getattr(other, name)), name
    for name in ("users", "user_status", "user_epoch", "item_stats"):
        whole = getattr(env, name).numel()
        assert not re.search(rf"<static_cast<int64_t>\({whole}L\); x0\+=", code), name


@pytest.mark.parametrize("lead", [1, 2, 3])
def test_put_at_fused_form_writes_what_the_flat_form_writes(lead, monkeypatch):
    """Both forms of :func:`recenv.core.indexing.put_at` (the older torch's ``index_put_``
    forced here) write the same table."""
    from recenv.core import indexing
    from recenv.core.indexing import put_at

    monkeypatch.setattr(indexing, "VIEW_WRITES_IN_PLACE", False)

    g = torch.Generator().manual_seed(0)
    shape = (5, 2, 3, 4)
    flat = torch.randperm(int(np.prod(shape[:lead])), generator=g)[:4]
    index = torch.unravel_index(flat, shape[:lead])
    values = torch.randn(4, *shape[lead:], generator=g)
    eager, fused = torch.zeros(shape), torch.zeros(shape)
    put_at(eager, index, values, fused=False)
    put_at(fused, index, values, fused=True)
    assert torch.equal(eager, fused) and eager.abs().sum() > 0
    assert torch.equal(eager.view(-1, *shape[lead:])[flat], values)


def test_without_a_cpp_compiler_compile_says_what_to_do_and_the_market_stays_eager(
    monkeypatch, tmp_path
):
    """Inductor compiles a CPU graph as C++: with no working compiler, ``compile=True`` raised
    ``InvalidCxxCompiler`` from deep inside inductor (traceback through its ISA probe). Now a
    ``NoCppCompiler`` (``RuntimeError``) says to install one or use ``compile=False``, a
    market asked to compile later stays eager, and the runner makes it a config error."""
    from torch._inductor import cpp_builder, exc

    from experiments.config import ConfigError, RunConfig
    from experiments.runner import make_env
    from recenv.core.vecisa import NoCppCompiler

    def no_compiler(*args, **kwargs):
        raise exc.InvalidCxxCompiler()

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(NoCppCompiler, match=r"needs a C\+\+ compiler .*compile=False"):
        recenv.make_vec("recenv/Market-v0", num_envs=2, compile=True, **SMALL)
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, **SMALL)
    with pytest.raises(RuntimeError, match="Install g\\+\\+ or clang\\+\\+"):
        env.compile()
    assert not env.compiled
    env.reset(seed=0)
    env.step({a: s for a, s in zip(env.agents, env.oracle_slates().unbind(1), strict=True)})
    cfg = RunConfig(env="recenv/Market-v0", num_envs=2, compile=True, root=str(tmp_path))
    with pytest.raises(ConfigError, match="compile=true: compile=True on the CPU needs"):
        make_env(cfg)
