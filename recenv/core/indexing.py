"""Row lookups and writes by flat index, and exact sorting forms that fuse when compiled.

``table[idx]`` (advanced indexing) on CPU is several times slower than ``index_select`` /
``index_copy_`` on a flattened view (measured: 12.6 ms vs 2.3 ms for 164k rows of 3 ints), and
the step is made of such lookups. These helpers keep the fast form readable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def rows(table: torch.Tensor, idx: torch.Tensor, separate: bool = False) -> torch.Tensor:
    """``table[idx]`` for a contiguous ``table`` [R, ...] and integer ``idx`` of any shape.

    ``separate=True`` keeps the gather out of a compiled graph's fused loops (ATen's
    ``index_select``, called as an opaque op): for a table far larger than the caches every
    row is a miss, and a loop that only copies rows keeps many misses in flight, where a fused
    loop computing between lookups waits on each (1,024 markets, 10^6 items: the step
    ~10-25 % faster). For a table that stays in cache it costs a buffer and a call (~10 %
    slower), so callers choose by table size. Eager, both are the same call.
    """
    flat = idx.reshape(-1)
    out = _gather_rows(table, flat) if separate else table.index_select(0, flat)
    return out.view(*idx.shape, *table.shape[1:])


@torch.library.custom_op("recenv::gather_rows", mutates_args=())
def _gather_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table.index_select(0, idx)`` as an op inductor does not fuse (see :func:`rows`)."""
    return table.index_select(0, idx)


@_gather_rows.register_fake
def _(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return table.new_empty((idx.shape[0], *table.shape[1:]))


def like(value: torch.Tensor | float, ref: torch.Tensor) -> torch.Tensor:
    """``value`` (a tensor or a Python number) as a tensor of ``ref``'s dtype and device.

    A number is filled on the device (``torch.full``): ``torch.as_tensor`` would build it on
    the host and copy it over, which on CUDA is a copy the host waits for (three a step
    did so, of the ~5 waits a CUDA step had). The same value either way."""
    if isinstance(value, (bool, int, float)):
        return torch.full((), value, dtype=ref.dtype, device=ref.device)
    return torch.as_tensor(value, dtype=ref.dtype, device=ref.device)


def lookup_table(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """``fn(points)`` computed in float64 and rounded to float32: a lookup table for a
    function the step would otherwise evaluate per element (``log1p`` of small counts, decay
    powers, position costs, novelty).

    Tables replace libm calls inside compiled per-market loops, where they were the costliest
    part; computed once in float64, a table's values also do not depend on where an element
    sits in a vectorised loop, which the last bits of vectorised and scalar libm paths can.
    """
    return fn(points.to(torch.float64)).to(torch.float32)


def cell(table: torch.Tensor, n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``table[n, u]`` for ``table`` [N, U, ...] and index vectors ``n``, ``u`` [X]."""
    N, U = table.shape[:2]
    return table.view(N * U, *table.shape[2:]).index_select(0, n * U + u)


# Whether inductor writes a graph input in place through a flat view of it: from torch 2.13
# on; before (seen in 2.11) it cloned the whole table and copied it back on every call.
# (TorchVersion compares with tuples; torch's stubs type __version__ as a plain str.)
VIEW_WRITES_IN_PLACE = torch.__version__ >= (2, 13)  # type: ignore[operator]


def put_at(
    table: torch.Tensor, index: tuple[torch.Tensor, ...], values: torch.Tensor, fused: bool
) -> None:
    """``table[index] = values`` in place: ``index`` holds one index vector [X] for each of
    the table's first ``len(index)`` dimensions, ``values`` is [X, *table.shape[len(index):]].
    Where index tuples repeat, their values must be equal (the order of the writes is not
    defined).

    The form: ``index_copy_`` at the flat row index on a flat view, the fast ATen form and,
    from torch 2.13, a compiled graph's fastest too. Traced for a compiled graph
    (``fused=True``) by an older torch, ``index_put_`` on the table itself: inductor before
    2.13 (seen in 2.11, the GPU machines' torch) cannot write a graph input in place through
    a view, and the flat form made it clone the whole table and copy it back every call (two
    passes over each state table a step). With torch 2.13 that form was 0.96-0.97x at
    4,096 markets (``experiments/performance-log.md``, twenty-third session), so it is used
    only where it is needed.
    """
    if fused and not VIEW_WRITES_IN_PLACE:
        table.index_put_(index, values)
        return
    flat = index[0]
    for size, i in zip(table.shape[1 : len(index)], index[1:], strict=True):
        flat = flat * size + i
    table.view(-1, *table.shape[len(index) :]).index_copy_(0, flat, values)


def pick(x: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``x[arange(N), col]`` for ``x`` [N, P, ...] and ``col`` [N], by ``gather``."""
    index = col.view(-1, 1, *([1] * (x.dim() - 2))).expand(-1, 1, *x.shape[2:])
    return x.gather(1, index).squeeze(1)


def pick_by_select(x: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``x[arange(N), col]`` for ``x`` [N, P, ...] and ``col`` [N] in ``[0, P)``, as ``P - 1``
    elementwise selects (exact): compiled, they stay elementwise across the rows, where a
    gather at a per-row column is an indirect load that keeps inductor from vectorising the
    loop it sits in."""
    col = col.view(-1, *([1] * (x.dim() - 2)))
    out = x[:, 0]
    for j in range(1, x.shape[1]):
        out = torch.where(col == j, x[:, j], out)
    return out


def _merge_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort for ``n`` (a power of two) keys: the compare-exchange
    pairs ``(i, j)``, ``i < j``, in order."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def sort_by_network(x: torch.Tensor) -> torch.Tensor:
    """``x.sort(dim=-1).values`` through a sorting network of min/max ops (exact).

    For short rows in a compiled graph: the ``O(C log^2 C)`` compare-exchanges fuse into one
    vectorised loop over the rows, where an aten sort call handles one short row at a time
    (measured at 8,192 rows of 20: 2.5 ms for aten sort). In eager mode it is hundreds of
    small ops: use ``torch.sort`` there.
    """
    C = x.shape[-1]
    n = 1 << max(0, (C - 1).bit_length())
    cols = list(x.unbind(-1))
    if n > C:  # pad with keys that sort last; they never reach the first C outputs
        big = torch.full_like(cols[0], torch.iinfo(x.dtype).max)
        cols += [big] * (n - C)
    for i, j in _merge_network(n):
        lo, hi = torch.minimum(cols[i], cols[j]), torch.maximum(cols[i], cols[j])
        cols[i], cols[j] = lo, hi
    return torch.stack(cols[:C], dim=-1)


def search_sorted_left(cdf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``torch.searchsorted(cdf, target)`` (left side) for non-decreasing rows ``cdf`` [N, M]
    and ``target`` [N, X]: a branchless binary search of ``log2(M)`` gathers (exact).

    Compiled, the steps fuse into one loop: 4,096 x 18 targets in 16 entries, 1.9 -> 0.6 ms.
    Eager, ``torch.searchsorted`` is faster.
    """
    M = cdf.shape[1]
    pos = torch.zeros_like(target, dtype=torch.int64)  # entries known to be < target
    step = 1 << (M.bit_length() - 1)
    while step:
        probe = pos + step
        below = cdf.gather(1, (probe - 1).clamp(max=M - 1)) < target
        pos = torch.where((probe <= M) & below, probe, pos)
        step >>= 1
    return pos


def first_argmax(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(dim=1)`` of ``x`` [N, M] without NaN (the first column of the maximum; the
    same index as ATen's), as ``M - 1`` elementwise compares: compiled, they stay elementwise
    over the rows, so inductor vectorises them and whatever is fused with them across rows,
    where a reduction over a short row made it one scalar loop per row. Eager, use ATen's."""
    best, index = x[:, 0], torch.zeros_like(x[:, 0], dtype=torch.int64)
    for j in range(1, x.shape[1]):
        better = x[:, j] > best
        best = torch.where(better, x[:, j], best)
        index = torch.where(better, j, index)
    return index


# Above this many columns, prefix_sum is cumsum itself (the unrolled form grows the graph).
PREFIX_SUM_UNROLL = 64

# The devices whose ATen ``cumsum`` of float32 rows is the running float64 sum that
# prefix_sum computes: the CPU's. CUDA's scans in float32 in a tree order (other last bits
# than the CPU's, so other draws near a boundary) and, over rows as short as a market's users
# (25) or topics (16), slowly: two calls were 3.0 of an eager step's 17.0 ms of kernels on an
# H200 at 2^18 markets (experiments/PERFORMANCE.md, "On a GPU"). Module state, so a test can
# run the other devices' form on the CPU.
ATEN_CUMSUM_EXACT_ON = frozenset({"cpu"})


def prefix_sum_unrolls(width: int) -> bool:
    """Whether :func:`prefix_sum` of float32 rows ``width`` wide is the unrolled form
    (fusable, no fallback call in a compiled graph) rather than ``cumsum``."""
    return width <= PREFIX_SUM_UNROLL


def row_cumsum(x: torch.Tensor, fuse: bool = False) -> torch.Tensor:
    """``x.cumsum(dim=1)`` of ``x`` [N, M] with the CPU's bits on every device: ATen's where
    its kernel is the CPU's (``ATEN_CUMSUM_EXACT_ON``) and ``fuse`` is False, else
    :func:`prefix_sum` (``fuse=True``: in a compiled graph that should not call out to
    ATen)."""
    if fuse or x.device.type not in ATEN_CUMSUM_EXACT_ON:
        return prefix_sum(x)
    return x.cumsum(dim=1)


def prefix_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.cumsum(dim=1)`` of a float32 ``x`` [N, M], bit for bit as ATen's CPU kernel
    computes it (a running sum in float64, each prefix rounded to float32), written as
    ``M - 1`` elementwise adds: compiled, they fuse with their neighbours, where inductor
    calls ATen's ``cumsum`` on the CPU (a fallback, which also keeps the graph's buffers
    off the stack; see ``recenv.core.stack``). Wider rows, or other dtypes: ``cumsum``."""
    if x.dtype != torch.float32 or not prefix_sum_unrolls(x.shape[1]):
        return x.cumsum(dim=1)
    M = x.shape[1]
    wide = x.double()
    running = wide[:, 0]
    prefixes = [running]
    for j in range(1, M):
        running = running + wide[:, j]
        prefixes.append(running)
    return torch.stack(prefixes, dim=1).float()


# The devices whose ATen mean sums a reduction with a single output in per-thread pieces
# (see row_mean): the CPU's. Module state, as ATEN_CUMSUM_EXACT_ON.
ROW_MEAN_AS_BATCH_ON = frozenset({"cpu"})


def row_mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean(dim=1)`` of ``x`` [N, M] -> [N], with the same bits whatever torch's thread
    count, and for one row as for the same row in a batch.

    On the CPU, ATen sums a reduction with a single output in per-thread pieces once its
    input has 32,768 elements (its two-pass reduction), and each row of several outputs whole,
    on one thread. So one market's mean over 40,000 users had other last bits on one and on
    two threads, and differed from the same market's in a batch. One row is read here as two
    (an expanded view, no copy), so it is summed as a batch's rows are."""
    if x.shape[0] == 1 and x.device.type in ROW_MEAN_AS_BATCH_ON:
        return x.expand(2, -1).mean(dim=1)[:1]
    return x.mean(dim=1)
