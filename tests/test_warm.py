"""The warm step's thin graph call (recenv.core.warm): the backend keeps a compiled graph only
when AOTAutograd's runtime wrapper has nothing to do around it but bump version counters,
and the thin call does exactly that and calls the graph; anything else stays on the wrapper.
The market-level checks (the face really takes the thin call, trajectories agree with eager)
are in tests/test_compile.py."""

from __future__ import annotations

import pytest
import torch

from recenv.core.warm import (
    CapturedGraph,
    InductorCapture,
    deterministic_algorithms,
    outside_deterministic_mode,
    thin_call,
)

# Python wrapper and no size asserts: the fastest build that still runs inductor's C++ kernels.
OPTIONS = {"size_asserts": False}


class _Graph:
    """Stands in for inductor's compiled graph: records the boxed inputs it is called with."""

    def __init__(self):
        self.calls = []

    def current_callable(self, inputs):
        self.calls.append(list(inputs))
        out = [inputs[0] + 1]
        inputs.clear()  # inductor's boxed convention: the callee empties the list
        return out


def test_thin_call_bumps_the_mutated_inputs_versions_and_calls_the_graph():
    graph = _Graph()
    a, b, c = torch.zeros(2), torch.zeros(2), torch.zeros(2)
    versions = a._version, b._version, c._version
    call = thin_call(CapturedGraph(graph, 3, (0, 2)), wrapped=None)
    out = call(a, b, c)
    assert torch.equal(out[0], torch.ones(2))
    assert (a._version, b._version, c._version) == (versions[0] + 1, versions[1], versions[2] + 1)
    assert len(graph.calls) == 1 and graph.calls[0][1] is b
    single = thin_call(CapturedGraph(graph, 1, (0,)), wrapped=None)
    single(a)
    assert a._version == versions[0] + 2


def test_thin_call_sends_another_number_of_inputs_to_the_wrapper():
    graph = _Graph()
    seen = []

    def wrapped(*args):
        seen.append(args)
        return ["wrapper"]

    call = thin_call(CapturedGraph(graph, 2, ()), wrapped)
    assert call(torch.zeros(1)) == ["wrapper"]
    assert call(torch.zeros(1), torch.zeros(1), torch.zeros(1)) == ["wrapper"]
    assert graph.calls == [] and len(seen) == 2
    call(torch.zeros(1), torch.zeros(1))
    assert len(graph.calls) == 1


def _compile(fn, *args, options=OPTIONS):
    capture = InductorCapture(options)
    compiled = torch.compile(fn, backend=capture, dynamic=False)
    from torch._functorch import config

    with config.patch(enable_autograd_cache=False):
        out = compiled(*args)
    return capture, out


def test_capture_keeps_a_graph_that_mutates_inputs_in_place_and_calls_it_thin():
    def step(state, x):
        state.add_(x)
        return state * 2, x.sum()

    state, x = torch.zeros(4), torch.arange(4.0)
    capture, out = _compile(step, state, x)
    assert capture.graphs == 1 and capture.graph is not None
    assert capture.graph.num_inputs == 2 and capture.graph.mutated == (0,)
    assert torch.equal(state, x) and torch.equal(out[0], 2 * x)
    # Called thin: the graph's own outputs, and the in-place write, as the wrapper gives them.
    version = state._version
    doubled, total = thin_call(capture.graph, wrapped=None)(state, x)
    assert torch.equal(state, 2 * x) and torch.equal(doubled, 4 * x)
    assert float(total) == 6.0 and state._version == version + 1


@pytest.mark.parametrize("case", ["output_aliases_input", "requires_grad"])
def test_capture_refuses_graphs_whose_wrapper_has_work(case):
    """An output that is a view of an input (the wrapper regenerates it), or a graph autograd
    records (a training graph): no captured graph, so the warm step keeps the wrapper."""
    x = torch.arange(6.0)
    if case == "output_aliases_input":

        def fn(x):
            return x.view(2, 3), x + 1

    else:
        x.requires_grad_(True)

        def fn(x):
            return (x * x).sum()

    capture, _ = _compile(fn, x)
    assert capture.graphs >= 1 and capture.graph is None


def test_a_cpp_wrapper_graph_is_called_through_its_cpp_entry():
    """With inductor's C++ wrapper, the thin call enters the C++ entry point directly (what
    inductor's Python wrapper around it does, without its list copies): the same outputs and
    in-place writes. A graph with the Python wrapper has no such entry and keeps its call."""
    from recenv.core.warm import cpp_entry

    def step(state, x):
        state.mul_(2).add_(x)
        return state.sum(), x * 3

    state, x = torch.ones(4), torch.arange(4.0)
    capture, _ = _compile(step, state, x, options={**OPTIONS, "cpp_wrapper": True})
    graph = capture.graph
    assert graph is not None and graph.entry is not None
    assert cpp_entry(graph.compiled, [state, x]) is graph.entry
    # Not for inputs that are not all tensors (the wrapper converts those itself).
    assert cpp_entry(graph.compiled, [state, 3]) is None
    version = state._version
    total, tripled = thin_call(graph, wrapped=None)(state, x)
    expected = (torch.ones(4) * 2 + x) * 2 + x
    assert torch.equal(state, expected) and state._version == version + 1
    assert float(total) == float(expected.sum()) and torch.equal(tripled, 3 * x)

    python_wrapper, _ = _compile(step, torch.ones(4), x)
    assert python_wrapper.graph is not None and python_wrapper.graph.entry is None


@pytest.mark.parametrize("warn_only", [False, True])
def test_outside_deterministic_mode_calls_with_the_mode_off_and_puts_it_back(warn_only):
    seen = []

    def fn(fail):
        seen.append(torch.are_deterministic_algorithms_enabled())
        if fail:
            raise RuntimeError("boom")
        return 7

    call = outside_deterministic_mode(fn)
    assert call(False) == 7 and seen == [False]  # default mode: called as it is
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        assert call(False) == 7
        with pytest.raises(RuntimeError, match="boom"):
            call(True)
        assert seen == [False, False, False]
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
    finally:
        torch.use_deterministic_algorithms(False)


def test_deterministic_algorithms_puts_back_what_was_changed_inside():
    with deterministic_algorithms(None):  # left as it is, whatever happens inside
        assert not torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_overhead_settings_are_patched_only_where_this_torch_has_them():
    """A torch without one of the settings the warm call trims (``record_runtime_overhead``
    is not in 2.6) runs without it instead of failing on the unknown name."""
    from recenv.core.warm import _patch_existing

    cfg = torch._dynamo.config
    before = cfg.record_runtime_overhead
    with _patch_existing(cfg, record_runtime_overhead=not before, no_such_setting=1):
        assert cfg.record_runtime_overhead == (not before)
        assert not hasattr(cfg, "no_such_setting")
    assert cfg.record_runtime_overhead == before
