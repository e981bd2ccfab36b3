"""A compiled step called with as little machinery per call as is sound.

At one market the step's compiled graph runs in ~50 us, and the layers around it cost about
as much again: Dynamo's frame hook (guards over ~40 tensors, the stance context), then
AOTAutograd's runtime wrapper (grad mode, version counters, the generated prologue and
epilogue, three more Python frames), then inductor's ``CompiledFxGraph.__call__``. This module
removes what does nothing for a market's step:

- :func:`outside_deterministic_mode` builds (and guards) the graph in torch's default
  algorithm mode whatever the caller's;
- :func:`own_code` gives each market's step its own code object, so Dynamo's per-code cache
  holds that market's graph alone (:func:`warm_unguarded` relies on it having one entry);
- :func:`warm_unguarded` calls, once the first call has compiled the step, the function
  Dynamo generated for it (load the inputs, call the graph, replay the attribute writes)
  directly, without the frame hook;
- :class:`InductorCapture` is inductor as ``torch.compile(backend="inductor", options=...)``
  runs it, which also keeps the graph it compiled when AOTAutograd's runtime wrapper around
  that graph has nothing to do but bump the mutated inputs' version counters; the generated
  function then calls the graph through :func:`thin_call` instead of through the wrapper,
  and where inductor's Python function around a C++-wrapper graph only converts tensors to
  handles and back, enters the graph's C++ entry point itself (:func:`cpp_entry`).

The market decides when each applies (``BatchedMarket.compile``); tests in
``tests/test_compile.py`` and ``tests/test_warm.py`` check that the fast paths are taken and
stay on the eager trajectory.
"""

from __future__ import annotations

import contextlib
import operator
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

import torch
from torch._functorch import config as functorch_config


class WarmStep(Protocol):
    """What :func:`warm_unguarded` returns: the step, and ``reguard()`` (the next call goes
    through Dynamo's guards again)."""

    reguard: Callable[[], None]

    def __call__(self, *args: Any) -> Any: ...


class ThinCall(Protocol):
    """What :func:`thin_call` returns: the graph's call, flagged ``thin`` for the tests."""

    thin: bool

    def __call__(self, *args: Any) -> Any: ...


def own_code(method: types.MethodType) -> types.MethodType:
    """``method`` bound to a private copy of its function's code object.

    Dynamo keeps compiled graphs per code object and, past ``recompile_limit`` (8) entries,
    silently runs the Python instead. Markets of different sizes each add an entry, so a
    process that builds more than a few compiled markets (a benchmark, a sweep, the tests)
    would quietly lose compilation; a code object per market keeps its cache its own.

    That cache is dropped when the object ``method`` is bound to is collected. Dynamo maps
    each code it generates back to its source code (``orig_code_map``, keyed weakly by the
    generated code, which the source code's cache entry holds), so a source code object
    nothing else refers to is kept alive by its own cache, and with it the graph and what
    Dynamo installed for it in the module's globals (``__compiled_fn_*``): 5-9 MB a compiled
    market, for the life of the process, in one that builds markets one after another.
    """
    fn = method.__func__
    code = fn.__code__.replace()  # an equal but distinct code object
    own = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    # (The callback holds the code, which refers to nothing of the object's.)
    weakref.finalize(method.__self__, _forget_code, code).atexit = False
    own.__kwdefaults__, own.__doc__, own.__qualname__ = (
        fn.__kwdefaults__,
        fn.__doc__,
        fn.__qualname__,
    )
    return types.MethodType(own, method.__self__)


def _forget_code(code: types.CodeType) -> None:
    """Drop Dynamo's cache entries for ``code`` (its graphs, and through their cleanup the
    globals Dynamo installed for them); nothing where this torch lacks the call."""
    try:
        from torch._dynamo.eval_frame import reset_code
    except ImportError:
        return
    reset_code(code)


def _patch_existing(config: Any, **values: Any) -> contextlib.AbstractContextManager[None]:
    """``config.patch(**values)`` for the settings this torch has (a torch config module
    raises on a name it lacks): the settings patched here only trim overheads, and torch
    releases before they existed (``record_runtime_overhead`` is not in 2.6) run without
    them."""
    return config.patch(**{k: v for k, v in values.items() if hasattr(config, k)})


@contextlib.contextmanager
def deterministic_algorithms(on: bool | None) -> Iterator[None]:
    """Torch's deterministic-algorithms mode set to ``on`` inside (``None``: left as it is),
    and put back as it was on the way out, warn-only flag included."""
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if on is not None:
        torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)


def outside_deterministic_mode(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """``compiled`` called with torch's deterministic-algorithms mode off (and put back as it
    was after each call), so that its graph is traced, built and guarded the same whatever
    mode the caller runs in.

    Under ``torch.use_deterministic_algorithms(True)`` inductor builds indexed writes as ATen
    fallback calls (their order with duplicate indices is then fixed), fills new buffers, and
    (through the fallbacks) keeps a C++-wrapper graph's buffers off the stack. Only for
    functions whose every result is independent of the order such writes take (duplicates
    write equal values, no float atomics): they are as deterministic built either way.

    The mode is process-wide: while such a call runs (a compiled market's first step, and
    each step of one whose warm path does not apply, see :func:`warm_unguarded`), other
    threads' torch ops run with it off too."""

    def call(*args: Any) -> Any:
        if not torch.are_deterministic_algorithms_enabled():
            return compiled(*args)
        with deterministic_algorithms(False):
            return compiled(*args)

    return call


def warm_unguarded(
    compiled: Callable[..., Any],
    method: types.MethodType,
    capture: InductorCapture | None = None,
) -> WarmStep:
    """``compiled`` (``torch.compile`` of ``method``, a bound method with its own code object)
    called without Dynamo's per-call machinery once its first call has compiled it.

    Entering the graph through Dynamo's frame hook (guard evaluation over ~40 tensors, the
    stance context, the frame callback) costs about as much as a one-market graph. Once the
    first call has compiled the method into exactly one cache entry with no graph break, the
    code Dynamo generated for it (call the graph, replay the attribute writes) is an ordinary
    code object: it is called directly, as a function over the method's globals. Skipping the
    guards is sound here because nothing they check changes after the first step: the code
    object is the market's own (:func:`own_code`), shapes are static (``dynamic=False``), and
    the market's tensors keep their shapes, dtypes and device for life; where they are
    replaced (a checkpoint's restore), ``call.reguard()`` sends the next call through the
    guards again. Where the entry cannot be read (several entries, a graph break, a torch
    without the debug accessor), calls go through Dynamo with guard evaluation skipped
    (``skip_guard_eval_unsafe``). A stance other than the default one (e.g. ``force_eager``,
    for debugging) is always honoured.

    With ``capture`` (the backend ``compiled`` was built with), the generated function calls
    the graph through :func:`thin_call` when the capture holds it (see
    :class:`InductorCapture`).
    """
    fn = cast(types.FunctionType, method.__func__)  # a plain function: own_code made it
    direct: Callable[..., Any] | None = None
    warm = False

    def call(*args: Any) -> Any:
        nonlocal warm, direct
        stance = getattr(torch._dynamo.eval_frame, "_stance", None)
        if not warm or getattr(stance, "stance", None) != "default":
            # Without the profiler annotations Dynamo would put around the graph call in the
            # code it generates (a context manager entered, and one more Dynamo-disabled
            # function called, on every step, whether or not a profiler runs). Where a
            # capture waits for the graph, without AOTAutograd's cache: a hit would hand the
            # graph back without passing through the capture (inductor's own cache still
            # spares the C++ build).
            no_aot_cache = (
                _patch_existing(functorch_config, enable_autograd_cache=False)
                if capture is not None
                else contextlib.nullcontext()
            )
            no_overhead = _patch_existing(torch._dynamo.config, record_runtime_overhead=False)
            with no_overhead, no_aot_cache:
                out = compiled(*args)
            warm = True
            direct = generated_function(fn, capture.graph if capture is not None else None)
            return out
        if direct is not None:
            return direct(method.__self__, *args)
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            return compiled(*args)

    def reguard() -> None:
        """The next call goes through Dynamo with its guards (and recompiles if they fail)."""
        nonlocal warm, direct
        warm, direct = False, None

    step = cast(WarmStep, call)
    step.reguard = reguard
    return step


def generated_function(
    fn: types.FunctionType, graph: CapturedGraph | None = None
) -> types.FunctionType | None:
    """The function Dynamo generated for ``fn`` (a plain Python function calling its compiled
    graph), or ``None`` unless ``fn``'s code has exactly one cache entry whose code resumes
    nowhere (no graph break: a resume function called outside Dynamo would run eagerly).

    With ``graph`` (the one graph that entry calls), the function calls it through
    :func:`thin_call`, over a copy of ``fn``'s globals in which Dynamo's name for the
    compiled graph is bound to that call."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        entries = _debug_get_cache_entry_list(fn.__code__)
        if len(entries) != 1:
            return None
        code = entries[0].code
        if any(name.startswith("__resume") for name in code.co_names):
            return None
        if code.co_freevars != fn.__code__.co_freevars:
            return None
        scope = fn.__globals__
        graph_names = [n for n in code.co_names if n.startswith("__compiled_fn")]
        if graph is not None and len(graph_names) == 1 and graph_names[0] in scope:
            scope = dict(scope)
            scope[graph_names[0]] = thin_call(graph, scope[graph_names[0]])
        return types.FunctionType(code, scope, fn.__name__, None, fn.__closure__)
    except Exception:  # a torch whose cache entries look different: stay on the safe path
        return None


class CapturedGraph:
    """An inference graph inductor compiled, and what AOTAutograd's wrapper does around it.

    ``compiled`` is inductor's output; its ``current_callable(inputs)`` is the boxed call
    (takes a list, which it empties; returns the outputs as a list); ``num_inputs`` the
    number of inputs Dynamo passes (equal to the graph's: none was deduplicated or merged
    into a synthetic base); ``mutated`` the positions of the inputs the graph writes in
    place, whose version counters the wrapper bumps; ``entry`` the C++ entry point that
    ``current_callable`` wraps, where :func:`cpp_entry` finds one (else ``None``)."""

    __slots__ = ("compiled", "entry", "mutated", "num_inputs")

    def __init__(
        self,
        compiled: Any,
        num_inputs: int,
        mutated: tuple[int, ...],
        entry: Callable[..., Any] | None = None,
    ):
        self.compiled = compiled
        self.num_inputs = num_inputs
        self.mutated = mutated
        self.entry = entry


# The names inductor's Python wrapper around a C++-wrapper graph reads when every input is a
# tensor, the graph has no constants and every output is a tensor (``CppWrapperCpu``'s
# ``_generate_end_jit``): the only forms whose call :func:`thin_call` restates. An allow-list
# of exact tuples, one per wrapper form and Python bytecode seen, so that a shim doing
# anything else (constants appended, scalar outputs, Python-only inputs) keeps its own call.
# Parts of those names: each input made a tensor (``arg if isinstance(arg, torch.Tensor)
# else torch.tensor(arg)``), the tensors turned into handles, the handle list cleared and the
# output handles turned into tensors.
_AS_TENSOR = ("isinstance", "torch", "Tensor", "tensor")
_TO_HANDLES = ("_C", "_aoti", "unsafe_alloc_void_ptrs_from_tensors")
_FROM_HANDLES = ("clear", "alloc_tensors_by_stealing_from_void_ptrs")
_PLAIN_CPP_CALLS = frozenset(
    {
        # torch 2.11-2.13: the tensors' handles in input order, the entry, the outputs. The
        # inputs are made tensors in a list comprehension, which Python <= 3.11 compiles as
        # a code object of its own (its names are not the shim's) and Python >= 3.12
        # inlines (PEP 709).
        ("torch", *_TO_HANDLES, *_FROM_HANDLES),
        (*_AS_TENSOR, *_TO_HANDLES, *_FROM_HANDLES),
        # torch 2.14: the same call, the handles placed by position around the graph's
        # Python-only inputs; "set" is there only when it has none (``set()``, where a set
        # of indices would be a literal), so the handles are again the inputs in order.
        ("set", "len", "enumerate", "append", *_AS_TENSOR, *_TO_HANDLES, "zip", *_FROM_HANDLES),
    }
)


def cpp_entry(compiled: Any, example_inputs: Sequence[Any]) -> Callable[..., Any] | None:
    """The C++ entry point (``list of tensor handles -> list of handles``) that inductor's
    ``compiled.current_callable`` wraps, when that wrapper does nothing else than turn
    the input tensors into handles and the output handles into tensors: a graph compiled with
    ``cpp_wrapper``, every input a tensor, no constants appended, no scalar output. Else
    ``None`` (the Python wrapper is then called as usual)."""
    wrapper = getattr(compiled, "current_callable", None)
    code = getattr(wrapper, "__code__", None)
    closure = getattr(wrapper, "__closure__", None)
    if (
        code is None
        or closure is None
        or code.co_names not in _PLAIN_CPP_CALLS
        or code.co_freevars != ("f",)
        or not all(isinstance(x, torch.Tensor) for x in example_inputs)
    ):
        return None
    entry = closure[0].cell_contents
    return entry if callable(entry) else None


def thin_call(graph: CapturedGraph, wrapped: Callable[..., Any]) -> ThinCall:
    """A stand-in for Dynamo's compiled-graph function ``wrapped`` (AOTAutograd's runtime
    wrapper around ``graph``) that calls the graph directly: bumps the version counters of
    the inputs the graph mutates, as the wrapper does, and returns the graph's outputs (through
    the C++ entry itself where :func:`cpp_entry` found it). A call with another number of
    inputs than the graph's goes to ``wrapped``."""
    n, mutated = graph.num_inputs, graph.mutated
    bump = torch.autograd.graph.increment_version
    # The mutated inputs as a tuple (itemgetter of one index returns the item itself).
    picked = operator.itemgetter(*mutated) if len(mutated) > 1 else None
    if graph.entry is not None:
        # The C++ entry called as inductor's wrapper calls it, without the wrapper's list
        # copy, per-input type check and list clearing (~4 us of a ~190 us face step).
        entry = graph.entry
        to_handles = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors
        to_tensors = torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs

        def run(inputs: Sequence[torch.Tensor]) -> Any:
            # The binding takes any sequence (the args tuple): no list copy per call.
            return to_tensors(entry(to_handles(inputs)))  # type: ignore[arg-type]
    else:

        def run(inputs: Sequence[torch.Tensor]) -> Any:
            return graph.compiled.current_callable(list(inputs))

    def call(*args: Any) -> Any:
        if len(args) != n:
            return wrapped(*args)
        if picked is not None:
            bump(picked(args))
        elif mutated:
            bump((args[mutated[0]],))
        return run(args)

    thin = cast(ThinCall, call)
    thin.thin = True  # read by tests
    return thin


class InductorCapture(torch._TorchCompileInductorWrapper):
    """The ``inductor`` backend with ``options`` (what ``torch.compile(backend="inductor",
    options=options)`` builds), which also keeps, in ``graph``, the graph it compiled when
    the call of that graph needs nothing from AOTAutograd's runtime wrapper but the version
    bumps :func:`thin_call` repeats: an inference graph (no autograd), no input mutated
    outside the graph, no output aliasing an input or another output, no effect tokens,
    and inputs passed through one to one. Otherwise, or when a second graph is compiled
    (a recompilation), ``graph`` is ``None`` and calls go through the wrapper as usual.
    With ``stack``, graphs compile inside :func:`recenv.core.stack.stack_buffers` (their
    intermediate buffers on the C stack, where the graph allows it).
    """

    def __init__(self, options: dict[str, Any], stack: bool = False):
        super().__init__("default", options, False)
        self.graph: CapturedGraph | None = None
        self.graphs = 0
        self.stack = stack

    def __call__(
        self, model_: Any, inputs_: Sequence[Any], *, config_patches: dict[str, Any] | None = None
    ) -> Any:
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner

        num_inputs = len(inputs_)

        def inner_compile(gm: Any, example_inputs: Sequence[Any], **kwargs: Any) -> Any:
            with _stack_buffers() if self.stack else contextlib.nullcontext():
                out = compile_fx_inner(gm, example_inputs, **kwargs)
            self.graphs += 1
            inference = kwargs.get("is_inference", False) and not kwargs.get("is_backward")
            first = self.graphs == 1 and inference
            self.graph = _capturable(out, num_inputs, example_inputs) if first else None
            return out

        patches = {**self.config, **(config_patches or {})}
        return compile_fx(model_, inputs_, inner_compile=inner_compile, config_patches=patches)


def _capturable(out: Any, num_inputs: int, example_inputs: Sequence[Any]) -> CapturedGraph | None:
    """``out`` (inductor's compiled graph of ``example_inputs``, for a Dynamo graph of
    ``num_inputs``) as a :class:`CapturedGraph` when AOTAutograd's runtime wrapper has
    nothing to do around it (see :class:`InductorCapture`), else ``None``. Reads the metadata
    AOTAutograd leaves in the tracing context."""
    try:
        from torch._functorch._aot_autograd.schemas import OutputType

        context = torch._guards.TracingContext.try_get()
        meta = getattr(context, "fw_metadata", None)
        if meta is None or not hasattr(out, "current_callable"):
            return None
        if (
            not meta.keep_input_mutations
            or meta.num_mutated_inp_runtime_indices
            or meta.num_intermediate_bases
            or meta.tokens
            # Inputs passed through one to one: none deduplicated or merged into a base.
            or not len(example_inputs) == len(meta.input_info) == num_inputs
            or any(o.output_type != OutputType.non_alias for o in meta.output_info)
        ):
            return None
        mutated = tuple(meta.mutated_graph_handled_indices_seen_by_autograd)
        return CapturedGraph(out, num_inputs, mutated, cpp_entry(out, example_inputs))
    except Exception:  # a torch whose metadata looks different: stay on the wrapper
        return None


def _stack_buffers() -> contextlib.AbstractContextManager[None]:
    """:func:`recenv.core.stack.stack_buffers`, or nothing where this torch lacks what it
    swaps (the graph then allocates its buffers on the heap, as any other)."""
    try:
        from recenv.core.stack import stack_buffers
    except ImportError:
        return contextlib.nullcontext()
    return stack_buffers()
