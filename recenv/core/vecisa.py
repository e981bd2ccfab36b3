"""The vector width of inductor's CPU code, pinned in its compilation cache key.

Inductor generates a CPU graph's loops for one vector ISA: the best the CPU has, or the one
``ATEN_CPU_CAPABILITY`` names (``avx2``, ``avx512``, ``default``). torch 2.13's FX-graph
cache key leaves that choice out, while the C++ it caches is compiled again, at load time,
with the flags of the ISA picked then. So a graph cached under AVX-512 (loops of 16 float
lanes) and loaded under AVX2 (the same machine with ``ATEN_CPU_CAPABILITY=avx2``, or an
inductor cache directory shared by machines of different ISAs) is built as 16-lane loops over
8-lane vectors, which read and write past their buffers (the compiled 4,096-market step
segfaulted), and loaded with no vector ISA (``default``) it does not compile. Inductor's option
``cpp.simdlen`` is part of the key; set to the width inductor would pick anyway, it changes
no generated code (the ISA with that width comes first in the same list) and keeps graphs of
different ISAs apart. ``tests/test_vecisa.py`` shows the stale build and the fix.
"""

from __future__ import annotations


def cpu_simdlen() -> int:
    """Inductor's ``cpp.simdlen`` for the vector ISA it picks here (its ``cpp.simdlen`` if
    set, else ``ATEN_CPU_CAPABILITY``'s, else the CPU's best): the ISA's width in bits, or 1
    (scalar code) where none is picked."""
    from torch._inductor import cpu_vec_isa

    return cpu_vec_isa.pick_vec_isa().bit_width() or 1


class NoCppCompiler(RuntimeError):
    """``compile=True`` on the CPU where inductor finds no working C++ compiler."""


def require_cpp_compiler() -> None:
    """Raise :class:`NoCppCompiler` (a ``RuntimeError``) saying what to do when inductor
    finds no working C++ compiler (a CPU graph is C++ compiled on the first step); without
    it the failure is ``InvalidCxxCompiler`` from deep inside inductor. Inductor's own search
    (``CXX``, then ``g++`` / ``clang++``) decides; a torch whose inductor has no such search
    is not checked here."""
    try:
        from torch._inductor import cpp_builder, exc
    except ImportError:
        return
    search = getattr(cpp_builder, "get_cpp_compiler", None)
    failure = getattr(exc, "InvalidCxxCompiler", None)
    if search is None or failure is None:
        return
    try:
        search()
    except failure as e:
        raise NoCppCompiler(
            f"compile=True on the CPU needs a C++ compiler for torch inductor, and none works "
            f"here ({str(e).strip() or type(e).__name__}). Install g++ or clang++ (or point "
            "CXX at one), or use compile=False: the eager step simulates the same market, "
            "2-10x slower"
        ) from None
