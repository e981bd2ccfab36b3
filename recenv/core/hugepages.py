"""Large state tables on transparent huge pages (Linux, CPU).

A batched step reads one random user row and a few dozen random item counters of every
market: thousands of scattered lookups into tables of tens to hundreds of MiB (at 4,096
markets, the user rows are 32 MiB and the item counters 94 MiB). With 4 KiB pages nearly
every lookup also misses the TLB, and on a virtual machine the page walk (nested paging)
costs as much as the cache miss. Backed by 2 MiB pages, those tables need ~70 TLB entries
instead of ~32,000: 1.15x env-steps/s at 4,096 compiled markets on the development machine,
in alternated runs against ``RECENV_HUGE_PAGES=0`` (``experiments/performance-log.md``,
"Eleventh session"; the tenth session's 1.07x-1.21x were measured while the tables still had
a storage offset, see :func:`empty`). Nothing else changes: the tables are ordinary
contiguous CPU tensors, only their pages differ. A large catalog's item rows and retrieval
lists lie on huge pages too (:class:`~recenv.core.catalog.Catalog`): on 4 KiB pages a
prefetch does not hide the page walk of a random row (18 ns a row at any prefetch distance
in a standalone probe of a 122 MiB table, 11.6 ns on huge pages); 1.06x on the 10^6-item
step at 1,024 markets (the tenth session's 0.99x was measured while the tables still had a
storage offset).

How: :func:`empty` maps a byte buffer of its own (``mmap``, private and anonymous: the
table's size rounded up to whole 2 MiB pages, plus one page), advises the kernel
(``madvise(MADV_HUGEPAGE)``) to back its 2 MiB-aligned interior with huge pages before
anything touches it, and returns the table on a storage that starts on that boundary
(storage offset 0: see :func:`empty`), so every page of the table is a huge one once
written (the fill faults them in).
Partial cover is not enough: advising only the aligned interior of a plain allocation gained
about half as much as whole tables at 4,096 markets (one in-process comparison). The cost is
at most 2 MiB more resident memory per table, which is why tables below :data:`MIN_BYTES` are
plain. This needs transparent huge pages in ``always`` or ``madvise`` mode (``/sys/kernel/mm/
transparent_hugepage/enabled``); in ``never`` mode, off Linux, on other devices, or with
``RECENV_HUGE_PAGES=0`` in the environment, the table is a plain ``torch.empty``, and
results are the same either way.

A table's storage is the aligned span of its buffer (up to 2 MiB larger than the table; the
buffer up to 4 MiB): :func:`compact` gives the plain copy to pickle, :func:`rehome` the
advised copy of an unpickled one.
"""

from __future__ import annotations

import errno
import functools
import math
import mmap
import os
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

HUGE_PAGE = 2 << 20
# A table's last huge page is resident whole: up to 2 MiB more than the table. Below 256 KiB
# that would be over 8x its size (and such a table spans a few 4 KiB pages anyway).
MIN_BYTES = 256 << 10
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode (``"always"``, ``"madvise"`` or ``"never"``),
    or None where it cannot be read (not Linux)."""
    try:
        with open(_THP_MODE) as f:
            text = f.read()
    except OSError:
        return None
    start = text.find("[")
    return text[start + 1 : text.find("]", start)] if start >= 0 else None


@functools.cache
def _advisable() -> bool:
    """Whether there is transparent-huge-page advice to give here: Linux, a Python whose
    ``mmap`` knows ``MADV_HUGEPAGE``, and a kernel whose THP mode is not ``never``."""
    return (
        sys.platform.startswith("linux")
        and hasattr(mmap, "MADV_HUGEPAGE")
        and thp_mode() not in (None, "never")
    )


def enabled(device: torch.device | str = "cpu") -> bool:
    """Whether tables on ``device`` get huge-page advice here (read at each call, so
    ``RECENV_HUGE_PAGES=0`` can be set after import)."""
    if torch.device(device).type != "cpu" or os.environ.get("RECENV_HUGE_PAGES", "1") == "0":
        return False
    return _advisable()


def empty(
    shape: Iterable[int], dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``; a CPU table of at least
    :data:`MIN_BYTES`, where :func:`enabled`, lies on advised pages from its first byte to its
    last. Its pages are untouched: fill it next."""
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or not enabled(device):
        return torch.empty(shape, dtype=dtype, device=device)
    span = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    # A private anonymous mapping of its own, not malloc's memory: pages nothing has touched
    # yet, so the fill faults them in as huge ones (memory malloc recycles may already be on
    # 4 KiB pages, more so once recenv.core.heap keeps freed memory in the heap).
    try:
        mapping = mmap.mmap(-1, span + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as e:  # ENOMEM: say so as torch's allocator would, with the table's size
        if e.errno != errno.ENOMEM:
            raise
        raise MemoryError(f"cannot allocate a {shape} {dtype} table ({nbytes:,} bytes)") from e
    buf = np.frombuffer(mapping, dtype=np.uint8)
    off = -buf.ctypes.data % HUGE_PAGE  # a multiple of the 4 KiB page: the mapping starts on one
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE, off, span)
    except OSError:  # advice is never an error
        return torch.empty(shape, dtype=dtype, device=device)
    # The table's storage must start at the boundary (storage offset 0): a compiled step
    # that updates an input with a storage offset cannot update it in place, and copies the
    # whole table twice per step (clone, scatter, copy back). So the storage is the aligned
    # span itself, through numpy (``from_numpy`` starts a storage at the array's first byte
    # and keeps the array, hence ``buf`` and its mapping, alive as long as the storage).
    aligned = torch.from_numpy(buf[off : off + span])
    # torch's stubs list set_ with a stride or with the source alone; ATen's schema takes
    # (source, offset, size) with the contiguous stride as its default.
    return torch.empty(0, dtype=dtype, device="cpu").set_(aligned.untyped_storage(), 0, shape)  # type: ignore[call-overload]


def full(
    shape: Iterable[int], value: float, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``torch.full`` on :func:`empty` (zeros with ``value=0``)."""
    return empty(shape, dtype, device).fill_(value)


def is_advised(t: torch.Tensor) -> bool:
    """Whether ``t`` is a table :func:`empty` laid on advised pages (a storage of whole
    2 MiB pages from a 2 MiB boundary, inside a larger buffer)."""
    storage = t.untyped_storage()
    return (
        t.device.type == "cpu"
        and storage.data_ptr() % HUGE_PAGE == 0
        and storage.nbytes() % HUGE_PAGE == 0
        and t.storage_offset() == 0
    )


def compact(t: torch.Tensor) -> torch.Tensor:
    """A plain copy of an advised table (what pickling should write: not its buffer's
    slack), or ``t`` itself."""
    return t.clone() if is_advised(t) else t


def rehome(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or (a large CPU table, :func:`enabled`, not yet advised) an equal copy
    on advised pages: for tables that arrive by unpickling, whose pages are ordinary ones."""
    if t.numel() * t.element_size() < MIN_BYTES or not enabled(t.device) or is_advised(t):
        return t
    return empty(t.shape, t.dtype, t.device).copy_(t)


def compact_tables(state: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``state`` (a copy of an object's ``__dict__``, for pickling) with each table ``names``
    holds as its :func:`compact` copy; names absent from it are skipped."""
    for name in names:
        if state.get(name) is not None:
            state[name] = compact(state[name])
    return state


def rehome_tables(owner: object, names: Iterable[str]) -> None:
    """Put each table ``names`` that ``owner`` holds in its ``__dict__`` back on advised pages
    (:func:`rehome`): after unpickling, or a restore from outside."""
    for name in names:
        if owner.__dict__.get(name) is not None:
            setattr(owner, name, rehome(owner.__dict__[name]))
