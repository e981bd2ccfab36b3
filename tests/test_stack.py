"""A compiled graph's buffers on the C stack (recenv.core.stack), and the fallback-free
forms a one-market graph needs for it (recenv.core.indexing.prefix_sum, the one-hot interest
sum of recenv.core.users). The face's own graph is checked in tests/test_compile.py."""

import pytest
import torch

import recenv
from recenv.core.indexing import PREFIX_SUM_UNROLL, prefix_sum

stack = pytest.importorskip("recenv.core.stack")
from recenv.core.warm import InductorCapture  # noqa: E402

OPTIONS = {"cpp_wrapper": True, "size_asserts": False}


def _weights(n, m, seed=0):
    """Non-negative weights over many magnitudes, with exact zeros (as the arrival has)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, m, generator=g) * torch.exp(6 * torch.randn(n, m, generator=g))
    return torch.where(torch.rand(n, m, generator=g) < 0.2, 0.0, w)


@pytest.mark.parametrize("m", [1, 2, 16, 25, PREFIX_SUM_UNROLL, PREFIX_SUM_UNROLL + 1])
def test_prefix_sum_is_atens_cumsum_bit_for_bit(m):
    w = _weights(500, m)
    assert torch.equal(prefix_sum(w), w.cumsum(dim=1))


def test_row_cumsum_is_the_cpus_cumsum_on_every_device(monkeypatch):
    """``row_cumsum`` calls ATen's cumsum only where that is the CPU's kernel, else (CUDA,
    or a graph that must not call out) the unrolled adds: the CPU's bits either way."""
    from recenv.core import indexing

    w = _weights(200, 25, seed=2)
    calls = []
    real = torch.Tensor.cumsum
    monkeypatch.setattr(torch.Tensor, "cumsum", lambda x, dim: calls.append(dim) or real(x, dim))
    assert torch.equal(indexing.row_cumsum(w), real(w, 1)) and calls == [1]
    assert torch.equal(indexing.row_cumsum(w, fuse=True), real(w, 1)) and calls == [1]
    monkeypatch.setattr(indexing, "ATEN_CUMSUM_EXACT_ON", frozenset())  # the CPU as CUDA
    assert torch.equal(indexing.row_cumsum(w), real(w, 1)) and calls == [1]
    wide = _weights(10, PREFIX_SUM_UNROLL + 1, seed=3)  # too wide to unroll: cumsum itself
    assert torch.equal(indexing.row_cumsum(wide), real(wide, 1)) and calls == [1, 1]


def test_prefix_sum_compiled_is_atens_cumsum_bit_for_bit():
    """Inductor keeps the float64 running sum (no reassociation, no float32 shortcut)."""
    w = _weights(300, 25, seed=1)
    compiled = torch.compile(prefix_sum, backend=InductorCapture(OPTIONS), dynamic=False)
    assert torch.equal(compiled(w), w.cumsum(dim=1))


def _source(capture):
    return capture.graph.compiled.source_code


def _two_calls(fn, x):
    """``fn`` compiled with stack buffers; outputs of two calls on ``x`` and ``x + 1``, the
    first call's cloned right after it, and the generated C++."""
    from torch._functorch import config as functorch_config

    capture = InductorCapture(OPTIONS, stack=True)
    compiled = torch.compile(fn, backend=capture, dynamic=False)
    # Without AOTAutograd's cache: a hit would hand the graph back without passing through
    # the capture (as recenv.core.warm does for a market's first call).
    with functorch_config.patch(enable_autograd_cache=False):
        first = compiled(x)
    kept = [t.clone() for t in first]
    second = compiled(x + 1)
    return first, kept, second, _source(capture)


def _intermediates(x):
    y = torch.sin(x * 2 + 1) * 3  # intermediates of a few fused loops
    z = (y * y).amax(dim=1, keepdim=True)
    return y + z, (y - z)[1:3], z.exp()


def test_stack_graph_keeps_intermediates_on_the_stack_and_returns_fresh_tensors():
    """Intermediates are C arrays; each returned tensor (a view of one included) is a heap
    tensor of its own: a later call never writes into an earlier call's outputs."""
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    first, kept, second, source = _two_calls(_intermediates, x)
    assert "ArrayRefTensor<" in source  # something lives on the stack
    assert source.count("aoti_torch_empty_strided(") <= 3  # the outputs at most
    for got, want in zip(first, _intermediates(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # sin, exp: rounding
    for got, want in zip(second, _intermediates(x + 1), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # sin, exp: rounding
    for a, k, b in zip(first, kept, second, strict=True):
        assert torch.equal(a, k)  # not overwritten by the second call
        assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()


def test_a_returned_stack_buffer_is_copied_out(monkeypatch):
    """The second guard: were a returned buffer put on the stack anyway, the return copies
    it into a fresh heap tensor (never inductor's per-thread cached output)."""
    from torch._inductor.codegen.cpp_wrapper_cpu_array_ref import CppWrapperCpuArrayRef

    monkeypatch.setattr(
        stack.StackBuffers,
        "can_stack_allocate_buffer",
        CppWrapperCpuArrayRef.can_stack_allocate_buffer,
    )

    def fn(x):
        return (torch.cos(x) * 2 + 1,)

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    with torch._inductor.config.patch(fx_graph_cache=False):
        first, kept, second, source = _two_calls(fn, x)
    assert ").release())" in source  # the copy-out wrapping of a stack buffer
    torch.testing.assert_close(first[0], fn(x)[0])
    torch.testing.assert_close(second[0], fn(x + 1)[0])
    assert torch.equal(first[0], kept[0])
    assert first[0].untyped_storage().data_ptr() != second[0].untyped_storage().data_ptr()


def test_swap_is_undone_and_other_graphs_compile_as_before():
    from torch._inductor.codegen import common

    common.init_backend_registration()
    before = common.device_codegens["cpu"]
    with stack.stack_buffers():
        assert common.device_codegens["cpu"].cpp_wrapper_codegen is stack.StackBuffers
    assert common.device_codegens["cpu"] is before
    with pytest.raises(RuntimeError), stack.stack_buffers():
        raise RuntimeError("a failed compilation")
    assert common.device_codegens["cpu"] is before


@pytest.mark.parametrize(
    ("num_envs", "cfg", "expected"),
    [
        (1, {}, True),
        (2, {}, False),  # batches keep their graph (and the native kernels)
        (1, {"num_users": PREFIX_SUM_UNROLL + 1}, False),  # the arrival's cumsum stays
        (1, {"num_topics": PREFIX_SUM_UNROLL + 1}, False),  # the topic draw's cumsum stays
    ],
)
def test_which_markets_compile_for_the_stack(num_envs, cfg, expected):
    env = recenv.make_vec("recenv/Market-v0", num_envs=num_envs, seed=0, **cfg)
    assert not env._stack_graph
    env.compile()  # decides; the graph is traced at the first step
    assert env._stack_graph is expected


_HEAP_RUN = """
import contextlib, torch, recenv, recenv.core.stack as stack
stack.stack_buffers = contextlib.nullcontext  # buffers on the heap, where glibc checks them
eager = recenv.make_vec("recenv/Market-v0", num_envs=1, seed=2, num_topics=24, horizon=6)
compiled = recenv.make_vec("recenv/Market-v0", num_envs=1, seed=2, num_topics=24, horizon=6)
compiled.compile()
for env in (eager, compiled):
    env.reset(seed=2)
for _ in range(8):
    s = eager.oracle_slates()
    acts = {a: s[:, i] for i, a in enumerate(eager.agents)}
    eager.step(acts), compiled.step(acts)
    assert torch.equal(eager.cand, compiled.cand) and torch.equal(eager.user, compiled.user)
print("ok")
"""


def test_one_market_graph_with_24_topics_matches_eager_in_bounds():
    """A market with 24 topics (ECommerce-v0's), run with its graph's buffers on the heap, in
    a process of its own, where an out-of-bounds write aborts instead of passing unseen. Its
    compiled steps once diverged from eager from the first step (and at 20 topics aborted):
    the counter-based uniforms wrapped an int32 product that inductor's C++ turned into a
    signed overflow the compiler exploited (see tests/test_compile.py's random-draw test)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _HEAP_RUN], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
