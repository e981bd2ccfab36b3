"""GNU OpenMP's thread pool let go of before a ``fork`` (Linux, CPU), so the child can run
parallel regions.

torch's CPU ops, recenv's native kernels (``at::parallel_for``) and a compiled step's loops
run their parallel regions on GNU OpenMP (libgomp), which keeps a pool of threads per thread
that starts regions, from the first region run on two threads or more. ``fork`` copies only
the calling thread, and libgomp does not notice (GCC bug 60035): in the child, the first
parallel region on more than one thread waited forever for pool threads it did not have. A
batched market (from two markets on: every torch op large enough to split) stepped in a child
forked by ``multiprocessing`` (the default start method on Linux before Python 3.14, which
Gymnasium's ``AsyncVectorEnv``, SuperSuit's process vectorisation and many ``Pool`` users
take) from a process that had stepped a market, trained a network or run any torch op on two
or more threads, hung silently on its first step.

:func:`_before_fork` calls libgomp's ``omp_pause_resource_all(omp_pause_hard)`` (OpenMP 5.0)
in the forking thread, which ends that thread's pool; the child then starts a pool of its own
at its first region, on as many threads as torch is set to, and the parent at its next one
(tens of microseconds per ``fork``). Only the forking thread's pool is let go of: the pools of
threads running regions meanwhile are theirs, and a child does not have those threads. Where
the call is missing or fails (a libgomp older than GCC 9), the child runs torch on one thread
instead (:func:`_after_fork_in_child`), as torch's ``DataLoader`` does in its workers. LLVM's
and Intel's OpenMP runtimes handle ``fork`` themselves; ``spawn`` and ``forkserver`` workers
are fresh processes and need none of this.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import torch

_OMP_PAUSE_HARD = 2  # omp_pause_resource_t in <omp.h>
_pausers: dict[str, Callable[[int], int] | None] = {}  # a mapped libgomp -> its call
_unpaused = False  # set before a fork whose libgomp pool could not be let go of


def _libgomps() -> list[str]:
    """Paths of the GNU OpenMP libraries mapped into this process (torch's wheel ships its
    own ``libgomp``; another library may bring the system's), from ``/proc/self/maps``."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(maxsplit=5)[-1].strip() for line in f if "libgomp" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libgomp"))


def _pauser(path: str) -> Callable[[int], int] | None:
    """``omp_pause_resource_all`` of the loaded library ``path``, or None where it lacks it."""
    if path not in _pausers:
        try:
            fn = ctypes.CDLL(path).omp_pause_resource_all  # the library already loaded
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _pausers[path] = fn
    return _pausers[path]


def _before_fork() -> None:
    """End the forking thread's libgomp pool (see the module's docstring); note a failure."""
    global _unpaused
    _unpaused = False
    for path in _libgomps():
        fn = _pauser(path)
        if fn is None or fn(_OMP_PAUSE_HARD) != 0:
            _unpaused = True


def _after_fork_in_child() -> None:
    """One torch thread in a child whose parent's pool could not be let go of."""
    if _unpaused and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
