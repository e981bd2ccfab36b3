"""A fake CUDA device on a machine without a GPU, enough for inductor to generate a graph's Triton
kernels and for Triton to compile each of them to a cubin, with no GPU and no CUDA driver.

Why: the GPU machines are lent rarely and briefly, and the first one lent spent its session
finding that every compiled CUDA step failed to build (Triton refused a 32-bit constant,
``rng.weyl``). A kernel that Triton or ``ptxas`` refuses fails the same way here, on any
CPU, in under a minute: Triton's front end, its passes and ``ptxas`` (shipped inside the
``triton`` wheel) need no device; only loading and launching a kernel do, and nothing here
does either. What this cannot see: anything decided by running on the GPU (autotuning picks
among the configs built here; out-of-memory; wrong numbers; speed).

What is faked (:func:`install`, process-wide and for the rest of the process: call it in a
process of its own, as ``experiments.cuda_build`` does, never in a simulator's):

- ``torch.cuda``: available, one device with the properties of :data:`DEVICES` (an H100 by
  default: compute capability 9.0, 132 SMs), its random state, current device and stream;
  the same for torch's CUDA device interface, which inductor asks.
- A no-op device guard for CUDA (``fake_cuda_guard.cpp``, built once like the native
  kernels): torch's Python bindings enter one for a tensor's device before indexing and
  some operators, and a CPU-only build has none for CUDA (a CUDA build's own would ask the
  driver: the fake one replaces it).
- Triton's active driver: a CUDA driver object that reports the target (``cuda``, the
  capability, warp 32) without loading ``libcuda``.
- Inductor: its pattern tables are built from CPU examples (its initialisation would
  allocate real CUDA tensors); its constant folding evaluates its one-element values on the
  CPU (only the values are read); launchers are not made (they load the cubin on a device);
  ``shape_padding`` is off (it decides by timing matmuls on the device; the real build may
  pad a matmul that is built unpadded here).

Graph inputs are fake tensors (:class:`torch._subclasses.FakeTensorMode`) on ``cuda:0``;
:func:`graph_on_cuda` moves a graph captured on the CPU there. This leans on torch's and
Triton's internals (tested with torch 2.13 CPU and triton 3.5 / 3.7 / 3.9, and with torch
2.11.0+cu130 and its triton 3.6.0, the GPU machines' pair): where they changed, the
fakes fail to install or the build fails outside Triton, and :func:`build` says so as
:class:`HarnessError`, distinct from a kernel that does not build (:class:`KernelBuildError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from experiments.bench_env import patched

GUARD_SOURCE = Path(__file__).with_name("fake_cuda_guard.cpp")

# Properties of the devices a build can be made for (torch.cuda.get_device_properties' names).
DEVICES: dict[str, dict[str, Any]] = {
    "h100": {
        "name": "NVIDIA H100 80GB HBM3 (faked)",
        "major": 9,
        "minor": 0,
        "multi_processor_count": 132,
        "total_memory": 80 * 2**30,
        "L2_cache_size": 50 * 2**20,
        "shared_memory_per_block_optin": 232_448,
    },
    "a100": {
        "name": "NVIDIA A100-SXM4-80GB (faked)",
        "major": 8,
        "minor": 0,
        "multi_processor_count": 108,
        "total_memory": 80 * 2**30,
        "L2_cache_size": 40 * 2**20,
        "shared_memory_per_block_optin": 166_912,
    },
    # The GPU this project was lent (the H100's die, sm_90, with 141 GB of HBM3e).
    "h200": {
        "name": "NVIDIA H200 (faked)",
        "major": 9,
        "minor": 0,
        "multi_processor_count": 132,
        "total_memory": 140 * 2**30,
        "L2_cache_size": 50 * 2**20,
        "shared_memory_per_block_optin": 232_448,
    },
}
# Peak memory bandwidth, bytes/s (NVIDIA's data sheets: H100 SXM5 3.35 TB/s, A100 SXM4
# 80 GB 2.039 TB/s, H200 SXM 4.8 TB/s): the ceiling experiments.cuda_build divides by a
# graph's estimated traffic. A real kernel reaches a fraction of it (gathers far less).
PEAK_BANDWIDTH: dict[str, float] = {"h100": 3.35e12, "a100": 2.039e12, "h200": 4.8e12}
_COMMON = {
    "regs_per_multiprocessor": 65_536,
    "max_threads_per_multi_processor": 2048,
    "max_threads_per_block": 1024,
    "warp_size": 32,
    "gcnArchName": "",
    "is_integrated": False,
}

# The inductor settings a fake build needs beside a market's own (see the module's docstring):
# no matmul padding (decided by timing on the device); kernels compiled in this process (a
# worker process would not have the fakes); every graph built anew, not loaded from
# inductor's caches (where a build made elsewhere could stand in for this one).
BUILD_OPTIONS = {"shape_padding": False, "compile_threads": 1, "force_disable_caches": True}
# Inductor's estimate of the bytes each Triton kernel reads and writes ("kernel_num_gb" in its
# metadata) is made when kernels are benchmarked; this switch turns it on and changes nothing
# else while combo kernels are off (inductor's default; ``benchmark_kernel`` would also add a
# benchmark harness to each kernel's module and print its path).
TRAFFIC_OPTIONS = {"benchmark_combo_kernel": True, "combo_kernels": False}
# Whether this torch's inductor makes that estimate under TRAFFIC_OPTIONS: 2.13's does;
# 2.11's (the GPU machines') only under ``benchmark_kernel`` or ``profile_bandwidth``, which
# change the generated module, so its builds here come without traffic.
ESTIMATES_TRAFFIC = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 13)


class HarnessError(RuntimeError):
    """The fake device could not be set up, or a build failed outside Triton: a torch or
    Triton whose internals differ from what this module patches (says nothing about the
    graph)."""


class KernelBuildError(RuntimeError):
    """Triton or ``ptxas`` refused a kernel of the graph: the build a GPU would make fails."""


class Kernel(NamedTuple):
    """A Triton kernel of a built graph: its name, the configs compiled for the autotuner
    to pick from, and inductor's estimate of the bytes one call reads and writes (None
    where inductor made none)."""

    name: str
    configs: int
    bytes: float | None


@dataclasses.dataclass
class Build:
    """One graph built for the fake device: its Triton kernels in build order (none under
    the interpreter, which compiles nothing); the calls it makes outside Triton (``extern``:
    name, inductor's estimate of the bytes read and written), such as cuBLAS's ``bmm``; the
    seconds the build took; and the compiled graph: callable only under the interpreter
    (:func:`interpreting`), on CPU tensors, where each kernel runs in Triton's interpreter.

    Traffic figures are inductor's estimates from the graph's sizes, not measurements:
    each buffer a kernel touches counted once per distinct index it is read or written at
    (at most its size), at its dtype's size; not cache lines, not reuse in caches."""

    kernels: list[Kernel]
    extern: list[tuple[str, int]]
    seconds: float
    call: Callable[..., Any]

    @property
    def traffic(self) -> float | None:
        """Estimated bytes one call of the graph reads and writes, Triton kernels and
        extern calls together; None when a kernel has no estimate."""
        if any(k.bytes is None for k in self.kernels):
            return None
        return sum(k.bytes for k in self.kernels if k.bytes) + sum(b for _, b in self.extern)


_BUILT: list[Kernel] = []  # kernels compiled since the last build began
_EXTERN: list[tuple[str, int]] = []  # the calls outside Triton of the graphs built since
_COMPILING: list[str | None] = [None]  # the kernel being compiled
_INSTALLED: dict[str, Any] = {}


def installed() -> str | None:
    """The device :func:`install` faked in this process (a key of :data:`DEVICES`), or None."""
    return _INSTALLED.get("device")


def triton_version() -> str | None:
    """The installed Triton's version, or None without one (``pip install triton``)."""
    try:
        import triton
    except ImportError:
        return None
    return str(triton.__version__)


def interpreting() -> bool:
    """Whether Triton's interpreter runs kernels in this process (``TRITON_INTERPRET=1``, set
    before Triton is imported): then inductor's kernels are not compiled but run, one program
    after another on numpy arrays, on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def install(device: str = "h100") -> None:
    """Fake a CUDA device of kind ``device`` (a key of :data:`DEVICES`) in this process, for
    good. Raises :class:`HarnessError` where it cannot: a real GPU in sight (build on it
    instead), no Triton, no C++ toolchain for the guard, or internals that moved.

    The torch may be CPU-only (CI's 2.13) or a CUDA build on a machine without a GPU (PyPI's
    torch 2.11.0+cu130 with its Triton 3.6.0, the GPU machines' versions: checked in
    session 66): its CUDA guard is replaced by the fake one, and nothing reaches its driver.

    Under Triton's interpreter (:func:`interpreting`), a built graph also runs: the buffers
    its wrapper allocates "on the GPU" are CPU tensors, and the ``libdevice`` calls of its
    kernels (CUDA's math library, which the interpreter cannot call) are Triton's own math
    (``experiments.fake_cuda_libdevice``): results agree with a GPU's to rounding, not bit
    for bit."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: one of {sorted(DEVICES)}")
    if installed() is not None:
        if installed() != device:
            raise HarnessError(f"a fake {installed()!r} is already installed in this process")
        return
    if torch.cuda.is_available():
        # A real device's driver, streams and allocator would meet the fakes half-way.
        raise HarnessError(
            f"torch {torch.__version__} sees a GPU: compile and time the step on it "
            "(experiments/gpu_check.sh); the fake device is for machines without one"
        )
    if triton_version() is None:
        raise HarnessError("Triton is not installed (pip install triton, or the cuda-build extra)")
    props = types.SimpleNamespace(**DEVICES[device], **_COMMON)
    capability = (props.major, props.minor)
    try:
        _load_guard()
        _fake_torch_cuda(props, capability)
        _fake_triton_driver(capability)
        _adapt_inductor()
        if interpreting():
            _run_on_the_cpu()
    except HarnessError:
        raise
    except Exception as e:  # an internal that moved: AttributeError, ImportError, ...
        raise HarnessError(f"could not fake a CUDA device: {type(e).__name__}: {e}") from e
    _INSTALLED["device"] = device


def _load_guard() -> None:
    from torch.utils.cpp_extension import load

    from recenv.core.native import _build_guard

    name = "recenv_fake_cuda_guard"
    try:
        with _build_guard(name):
            load(name=name, sources=[str(GUARD_SOURCE)], is_python_module=False, verbose=False)
    except Exception as e:
        raise HarnessError(f"the fake CUDA guard did not build: {type(e).__name__}: {e}") from e


def _fake_torch_cuda(props: types.SimpleNamespace, capability: tuple[int, int]) -> None:
    def constant(value: Any) -> Callable[..., Any]:
        return lambda *args, **kwargs: value

    empty_state = torch.zeros(16, dtype=torch.uint8)
    import torch.cuda.random as cuda_random

    fakes = {
        "is_available": constant(True),
        "is_initialized": constant(True),
        "device_count": constant(1),
        "current_device": constant(0),
        "set_device": constant(None),
        "_lazy_init": constant(None),
        "_exchange_device": constant(0),
        "_maybe_exchange_device": constant(0),
        "get_device_properties": constant(props),
        "get_device_capability": constant(capability),
        "get_device_name": constant(props.name),
    }
    for name, fake in fakes.items():
        setattr(torch.cuda, name, fake)
    # A fake tensor on a CUDA device first allocates a real one (for autograd's CUDA
    # context) where torch.cuda.is_available(), as it now says: in a CUDA build of torch
    # that reaches the driver, which this machine lacks. Nothing here runs backward.
    import torch._subclasses.fake_tensor as fake_tensor

    fake_tensor.init_gpu_context = lambda device: None  # type: ignore[assignment]
    # Dynamo and AOTAutograd save and restore the CUDA random state around tracing.
    random_state = {
        "get_rng_state": constant(empty_state),
        "set_rng_state": constant(None),
        "get_rng_state_all": constant([empty_state]),
        "set_rng_state_all": constant(None),
    }
    for module in (torch.cuda, cuda_random):
        for name, fake in random_state.items():
            setattr(module, name, fake)
    # The stream the generated module asks for (never used: nothing launches).
    for name in ("_cuda_getCurrentRawStream", "_cuda_getDevice"):
        setattr(torch._C, name, constant(0))

    from torch._dynamo.device_interface import CudaInterface

    interface = {
        "get_device_properties": props,
        "current_device": 0,
        "set_device": None,
        "device_count": 1,
        "exchange_device": 0,
        "maybe_exchange_device": 0,
        "synchronize": None,
        "get_raw_stream": 0,
        "is_bf16_supported": True,
    }
    for name, value in interface.items():
        setattr(CudaInterface, name, staticmethod(constant(value)))
    for name in ("get_device_properties", "current_device", "set_device"):
        setattr(CudaInterface.Worker, name, staticmethod(constant(interface[name])))
    # Cached as False where something asked before the device was faked.
    import torch.utils._triton as torch_triton

    torch_triton.has_triton.cache_clear()
    torch_triton.has_triton_package.cache_clear()


def _fake_triton_driver(capability: tuple[int, int]) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.driver import CudaDriver, CudaLauncher
    from triton.runtime.driver import driver

    class TargetOnlyDriver(CudaDriver):
        """Names the target; loads no ``libcuda`` (its base's constructor would)."""

        def __init__(self) -> None:
            self.launcher_cls = CudaLauncher
            self.get_device_capability = lambda device=None: capability
            self.get_current_stream = lambda device=None: 0
            self.get_current_device = lambda: 0
            self.set_current_device = lambda device: None

        def get_current_target(self) -> Any:
            return GPUTarget("cuda", capability[0] * 10 + capability[1], 32)

    fake = TargetOnlyDriver()
    driver._default = fake
    driver._active = fake


def _adapt_inductor() -> None:
    from torch._inductor import constant_folding
    from torch._inductor.fx_passes import joint_graph
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    from torch.fx.node import map_aggregate

    # Pattern tables from CPU examples: built for CUDA, their initialisation allocates real
    # CUDA tensors. (The patterns match graphs of any device.)
    patterns = joint_graph.lazy_init
    joint_graph.lazy_init = lambda *args, **kwargs: patterns(torch.device("cpu"))

    # Constant folding evaluates one-element values for real, on the graph's device.
    run_node = constant_folding.ConstantFolder.run_node
    cpu = torch.device("cpu")

    def on_cpu(value: Any) -> Any:
        return cpu if isinstance(value, torch.device) and value.type == "cuda" else value

    def run_node_on_cpu(self: Any, node: torch.fx.Node) -> Any:
        kwargs = node.kwargs
        node.kwargs = map_aggregate(kwargs, on_cpu)  # type: ignore[assignment,unused-ignore]
        try:
            return run_node(self, node)
        finally:
            node.kwargs = kwargs

    constant_folding.ConstantFolder.run_node = run_node_on_cpu  # type: ignore[method-assign]

    # Compiled (triton.compile: front end, passes, ptxas), not loaded: record instead.
    def record_instead_of_loading(self: Any) -> None:
        num_gb = self.inductor_meta.get("kernel_num_gb")
        nbytes = None if num_gb is None else float(num_gb) * 1e9
        _BUILT.append(Kernel(self.fn.__name__, len(self.compile_results), nbytes))

    CachingAutotuner._make_launchers = record_instead_of_loading  # type: ignore[method-assign]
    precompile = CachingAutotuner.precompile

    def precompile_named(self: Any, *args: Any, **kwargs: Any) -> Any:
        _COMPILING[0] = self.fn.__name__  # named by a KernelBuildError
        return precompile(self, *args, **kwargs)

    CachingAutotuner.precompile = precompile_named  # type: ignore[method-assign]
    CachingAutotuner._dynamic_scale_rblock = lambda self: None  # type: ignore[method-assign]


class _Libdevice:
    """``libdevice`` for the interpreter: the forms of ``experiments.fake_cuda_libdevice``;
    any other function is named in a :class:`HarnessError` (add its form there)."""

    def __init__(self, forms: dict[str, Any]) -> None:
        self._forms = forms

    def __getattr__(self, name: str) -> Any:
        try:
            return self._forms[name]
        except KeyError:
            raise HarnessError(
                f"libdevice.{name} has no interpreter form in experiments.fake_cuda_libdevice"
            ) from None


def _run_on_the_cpu() -> None:
    import torch._inductor.runtime.triton_helpers as triton_helpers

    from experiments import fake_cuda_libdevice

    # The wrapper's allocations (read when the generated module is imported).
    def empty_strided_on_cpu(size: Any, stride: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.empty_strided(size, stride, dtype=dtype)

    fakes = [
        # Generated kernels import it from here (`from ...triton_helpers import libdevice`).
        (triton_helpers, "libdevice", _Libdevice(fake_cuda_libdevice.FORMS)),
        (torch._C._dynamo.guards, "_empty_strided_cuda", empty_strided_on_cpu),
    ]
    for owner, name, fake in fakes:
        setattr(owner, name, fake)


CUDA = torch.device("cuda", 0)


def graph_on_cuda(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` (captured on the CPU) with every CPU device among its nodes' arguments (factory
    calls' ``device=``) on ``cuda:0``, in place; returned. A graph holding tensor constants
    is refused (they would stay on the CPU)."""
    from torch.fx.node import map_aggregate

    constants = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    if constants:
        raise HarnessError(f"the graph holds tensor constants {constants[:5]}: not moved")

    def to_cuda(value: Any) -> Any:
        return CUDA if isinstance(value, torch.device) and value.type == "cpu" else value

    for node in gm.graph.nodes:
        node.args = map_aggregate(node.args, to_cuda)  # type: ignore[assignment,unused-ignore]
        node.kwargs = map_aggregate(node.kwargs, to_cuda)  # type: ignore[assignment,unused-ignore]
    gm.recompile()
    return gm


def fake_inputs(tensors: Iterable[Any]) -> list[Any]:
    """Fake tensors on ``cuda:0`` with the sizes, strides and dtypes of ``tensors`` (other
    inputs, such as ints, as they are), all of one fake mode."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return [
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=CUDA)
            if isinstance(t, torch.Tensor)
            else t
            for t in tensors
        ]


def build(
    gm: torch.fx.GraphModule,
    inputs: Sequence[Any],
    options: dict[str, Any],
    wide_index: bool = False,
) -> Build:
    """Compile ``gm`` (on ``cuda:0``, :func:`graph_on_cuda`) with inductor for the faked
    device, ``inputs`` as :func:`fake_inputs` makes them and the inductor ``options`` the
    step is compiled with (plus :data:`BUILD_OPTIONS`): every Triton kernel of the graph
    compiled to a cubin. ``wide_index``: every kernel with 64-bit indices, the form inductor
    gives a kernel that touches a buffer of 2^31 elements or more (a batch too large to
    trace on this machine), instead of 32-bit ones where the sizes allow. Raises
    :class:`KernelBuildError` when Triton or ``ptxas`` refuses one, :class:`HarnessError`
    when the build fails elsewhere. The kernels' and extern calls' traffic is estimated
    (:class:`Build`), except under the interpreter."""
    if installed() is None:
        raise HarnessError("install() the fake device first")
    import torch._inductor.config as inductor_config
    from torch._inductor.codegen.simd_kernel_features import SIMDKernelFeatures
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.graph import GraphLowering

    _BUILT.clear()
    _EXTERN.clear()
    _COMPILING[0] = None
    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as patches:
            if wide_index:
                patches.enter_context(
                    patched(SIMDKernelFeatures, "select_index_dtype", lambda self: torch.int64)
                )
            traffic: dict[str, Any] = {}
            # Traffic for cubin builds only: an interpreted build runs, in the form its
            # comparison with the eager step was tested in.
            if not interpreting():
                traffic = TRAFFIC_OPTIONS
                patches.enter_context(
                    patched(GraphLowering, "codegen", _recording_extern(GraphLowering.codegen))
                )
            patches.enter_context(inductor_config.patch({**options, **BUILD_OPTIONS, **traffic}))
            call = compile_fx(gm, list(inputs))
    except Exception as e:
        refusal = _triton_error(e)
        if refusal is not None:
            raise KernelBuildError(f"{_COMPILING[0]}: {_summary(refusal)}") from e
        raise HarnessError(f"the build failed outside Triton: {_summary(e)}") from e
    return Build(
        kernels=list(_BUILT),
        extern=list(_EXTERN),
        seconds=time.perf_counter() - start,
        call=call,  # type: ignore[arg-type]
    )


def _recording_extern(codegen: Callable[..., Any]) -> Callable[..., Any]:
    """``GraphLowering.codegen`` that also records each call of the graph outside Triton
    (its kernel's name, inductor's estimate of the bytes it reads and writes) in
    ``_EXTERN``: the scheduler's nodes exist once the code is generated."""
    from torch._inductor.ir import MultiOutput
    from torch._inductor.scheduler import ExternKernelSchedulerNode

    def codegen_recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = codegen(self, *args, **kwargs)
        for node in self.scheduler.nodes:
            # (A MultiOutput only names an output of the call before it: no call, no bytes.)
            if isinstance(node, ExternKernelSchedulerNode) and not isinstance(
                node.node, MultiOutput
            ):
                name = str(getattr(node.node, "python_kernel_name", None) or node.get_name())
                if name == GATHER_ROWS:
                    inputs: list[Any] = list(getattr(node.node, "inputs", ()))
                    nbytes = _gather_bytes(self.sizevars, *inputs[:2])
                else:
                    nbytes = int(node.get_read_write_buffers_sizes())
                _EXTERN.append((name, nbytes))
        return out

    return codegen_recording


# recenv's row gather kept out of the fused loops (recenv.core.indexing.rows): opaque to
# inductor, whose estimate counts every byte of its table (128 MB at 10^6 items) read.
GATHER_ROWS = "torch.ops.recenv.gather_rows.default"


def _gather_bytes(sizevars: Any, table: Any, idx: Any) -> int:
    """Bytes ``table.index_select(0, idx)`` moves: the indices read, the rows read and written
    out (inductor IR nodes, sizes as the graph's hints)."""
    hint = sizevars.optimization_hint  # (as inductor's estimate_kernel_num_bytes)
    n = math.prod(int(hint(s)) for s in idx.get_size())
    row = math.prod(int(hint(s)) for s in table.get_size()[1:])
    return n * idx.get_dtype().itemsize + 2 * n * row * table.get_dtype().itemsize


def _triton_error(e: BaseException) -> BaseException | None:
    """The exception from Triton's compiler or ``ptxas`` (its module is under ``triton``)
    that ``e`` is, was raised from, or wraps; None where there is none."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if type(x).__module__.split(".")[0] == "triton":
            return x
        todo += [x.__cause__, x.__context__, getattr(x, "inner_exception", None)]
    return None


def _summary(e: BaseException) -> str:
    """``e``'s kind, its first line and its last (Triton's compilation errors put the
    kernel source between the location and the message)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    text = f"{type(e).__name__}: {lines[0]}"
    return f"{text} ... {lines[-1]}" if len(lines) > 1 else text
