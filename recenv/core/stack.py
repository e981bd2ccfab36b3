"""Inductor's C++ wrapper with a graph's intermediate buffers on the C stack.

A compiled one-market step allocates every intermediate tensor of its graph per call
(``aoti_torch_empty_strided``: a ``posix_memalign``, a ``TensorImpl``, a ``StorageImpl``, and
their frees), ~50 of them at the defaults; at one market that costs more than the graph's
arithmetic. Inductor can declare such buffers as C arrays instead (its
``CppWrapperCpuArrayRef``, switched on by ``aot_inductor.allow_stack_allocation``), when
every buffer has a static shape, they total at most 100 kB, and the graph calls no fallback
kernel (an op inductor cannot lower, such as ``cumsum`` on the CPU, or a custom op).

That wrapper was written for AOTInductor's minimal interface, where a stack-allocated output
is copied into a buffer cached per thread and handed out again at the next call. Inside
``torch.compile`` that would make the tensors a step returns share their storage with the
next step's (the observations a user keeps, the state the next step reads while writing its
own). :class:`StackBuffers` keeps that from happening: the buffers a graph returns (or
returns views of) are allocated on the heap as usual, and should one still reach the
return on the stack, it is copied into a fresh tensor. Everything else in between lives on
the stack.

Inductor picks its C++ wrapper class when it registers the CPU backend, once per process;
:func:`stack_buffers` swaps this class in for the compilations inside it (the market's own
backend, :class:`recenv.core.warm.InductorCapture`), so other graphs in the process compile
as before. The generated code is cached by inductor under its configuration, which the
context extends by a name of its own, so no other wrapper's code is picked up for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from torch._inductor import config as inductor_config
from torch._inductor import ir
from torch._inductor.codegen import common
from torch._inductor.codegen.cpp_wrapper_cpu_array_ref import CppWrapperCpuArrayRef
from torch._inductor.virtualized import V

# Part of inductor's cache key (it names nothing in a JIT compilation): bump it when the
# generated code of this module changes, so cached code of the old form is not reused.
_CACHE_TAG = "recenv_stack_buffers_v1"
_BUFFER = re.compile(r"\bbuf\d+\b")


class StackBuffers(CppWrapperCpuArrayRef):
    """Inductor's stack-allocating C++ wrapper whose outputs are always heap tensors of
    their own (see the module's docstring)."""

    # Inductor's own objects are typed Any here: private classes that move between releases.
    @staticmethod
    def create(
        is_subgraph: bool,
        subgraph_name: str | None,
        parent_wrapper: Any,
        partition_signatures: Any = None,
    ) -> StackBuffers:
        return StackBuffers()

    def _returned(self) -> set[str]:
        """Names of the buffers the graph returns, or returns views of."""
        names = set()
        for node in V.graph.graph_outputs:
            if isinstance(node, (ir.NoneAsConstantBuffer, ir.ShapeAsConstantBuffer)):
                continue
            names.add(node.get_name())
            if isinstance(node, ir.BaseView):
                names.add(node.unwrap_view().get_name())
        return names

    def can_stack_allocate_buffer(self, buffer: Any) -> bool:
        return super().can_stack_allocate_buffer(buffer) and buffer.get_name() not in (
            self._returned()
        )

    def make_buffer_reuse(self, old: Any, new: Any, delete_old: bool) -> str:
        # A returned buffer never takes over a stack buffer's memory: it gets its own.
        if old.get_name() in self.stack_allocated_buffers and new.get_name() in self._returned():
            return self.make_buffer_allocation(new)
        return super().make_buffer_reuse(old, new, delete_old)

    def generate_return(self, output_refs: list[str]) -> None:
        # Should a stack buffer (or a view of one) still be returned, ``release()`` of an
        # ArrayRefTensor copies it into a new heap tensor; wrapped as an owning handle, the
        # return takes that path instead of the per-thread cache.
        refs = [
            f"RAIIAtenTensorHandle(({ref}).release())"
            if any(name in self.stack_allocated_buffers for name in _BUFFER.findall(ref))
            else ref
            for ref in output_refs
        ]
        return super().generate_return(refs)


@contextlib.contextmanager
def stack_buffers() -> Iterator[None]:
    """Compilations inside use :class:`StackBuffers` as the CPU's C++ wrapper (with
    ``cpp_wrapper=True``), with stack allocation allowed. Not thread-safe: the CPU's
    registration is swapped for the duration (compile on one thread at a time). Markets
    compiled from several threads at once are safe: Dynamo runs every backend, hence
    :class:`recenv.core.warm.InductorCapture` and this context, under its process-wide
    compile lock (``torch._dynamo.convert_frame.compile_lock``)."""
    common.init_backend_registration()
    before = common.device_codegens["cpu"]
    common.device_codegens["cpu"] = dataclasses.replace(before, cpp_wrapper_codegen=StackBuffers)
    try:
        with inductor_config.patch(
            {
                "aot_inductor.allow_stack_allocation": True,
                "aot_inductor.model_name_for_generated_files": _CACHE_TAG,
            }
        ):
            yield
    finally:
        common.device_codegens["cpu"] = before
