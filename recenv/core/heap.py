"""Keep the C heap's freed memory for the next step, and its small chunks out of fastbins
(glibc, CPU).

A compiled batched step allocates its outputs and scratch buffers afresh on every call
(observations alone are 14 MiB at 4,096 markets and 58 MiB at 16,384) and frees most of them
before the next one. glibc's ``malloc`` serves an allocation above its mmap threshold (128 KiB,
raised dynamically to at most 32 MiB) with a fresh ``mmap`` and returns it to the kernel on
``free``; it also gives the heap's free top back (``trim``) once it exceeds twice that
threshold. Either way the next step touches new pages, and the kernel zeroes each one in a
page fault: ~400 faults (1 ms of system time) per step at 4,096 markets, ~14,000 (45 ms, a
quarter of the step) at 16,384, measured on the development machine (``getrusage``).

:func:`keep` raises both thresholds to :data:`THRESHOLD` (1 GiB) with ``mallopt``, so
allocations up to that size come from the heap and freed memory stays there for reuse: the
faults drop to a handful per step. The cost: memory freed by allocations up to that size is
no longer handed back to the kernel, so the process's resident size stays near its peak heap
use (a freed 500 MiB tensor stays resident until the heap reuses it; the benchmark's
16,384-market memory check rose from 6.01 to 6.20 GiB); allocations beyond 1 GiB still behave
as before. Results are the same either way; only where the bytes come from differs. Large
state tables do not depend on this: :mod:`recenv.core.hugepages` maps them itself.

:func:`fastbins` turns glibc's fastbins off for a one-market step (``M_MXFAST`` 0). torch
allocates every CPU tensor with ``posix_memalign``, which in glibc before 2.38 never takes a
chunk from the per-thread cache, so a one-market step's ~60 small buffers go through the
arena each call; freed into fastbins, they are merged back (``malloc_consolidate``) whenever
a larger request comes, which a step makes every call. Freed straight into the ordinary bins
instead, they are reused without that pass: 1.12x on the compiled PettingZoo face. The same
setting made the 4,096-market step 0.86x (both ``experiments.ab_commits``, alternated fresh
processes; see ``experiments/PERFORMANCE.md``), so batches keep glibc's fastbins. The
setting is process-wide: the CPU market built last decides it (one market: off; more: back
to glibc's default, 128 bytes, if recenv had turned them off).

A CPU :class:`~recenv.core.market.BatchedMarket` calls :func:`keep` when built or unpickled. It is
process-wide and applied once; ``RECENV_KEEP_HEAP=0`` in the environment (read at that
call) leaves ``malloc`` as it was. Off glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from collections.abc import Callable

THRESHOLD = 1 << 30
_M_MXFAST = 1  # glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where there is none to call."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _tuner() -> Callable[[int, int], int] | None:
    """``mallopt`` to tune with: None off glibc or with ``RECENV_KEEP_HEAP=0`` (read at each
    call) in the environment."""
    if os.environ.get("RECENV_KEEP_HEAP", "1") == "0":
        return None
    return _mallopt()


_kept = False


def keep() -> bool:
    """Raise glibc's trim and mmap thresholds to :data:`THRESHOLD`, once per process, unless
    ``RECENV_KEEP_HEAP=0``. Returns whether the thresholds are raised (by this call or an
    earlier one)."""
    global _kept
    if _kept:
        return True
    fn = _tuner()
    if fn is None:
        return False
    # mallopt returns 1 on success; a glibc that refuses a value keeps its own (and the
    # settings after it are not tried).
    settings = ((_M_TRIM_THRESHOLD, THRESHOLD), (_M_MMAP_THRESHOLD, THRESHOLD))
    _kept = all(fn(param, value) == 1 for param, value in settings)
    return _kept


DEFAULT_MXFAST = 128  # glibc's default fastbin limit on 64-bit machines (64 * 8 / 4 bytes)
_fastbins_off = False


def fastbins(on: bool) -> bool:
    """Turn glibc's fastbins off (``on=False``: for a one-market step) or, if this module had
    turned them off, back on at glibc's default limit (:data:`DEFAULT_MXFAST`); unless
    ``RECENV_KEEP_HEAP=0`` or off glibc. A fastbin limit set by the user
    (``GLIBC_TUNABLES=glibc.malloc.mxfast``) is left alone until a one-market market is built.
    Returns whether fastbins are off after the call."""
    global _fastbins_off
    if on == (not _fastbins_off):
        return _fastbins_off
    fn = _tuner()
    if fn is None:
        return _fastbins_off
    if fn(_M_MXFAST, DEFAULT_MXFAST if on else 0) == 1:
        _fastbins_off = not on
    return _fastbins_off
