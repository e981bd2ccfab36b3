"""Row lookups and writes by flat index.

``table[idx]`` (advanced indexing) on CPU is several times slower than ``index_select`` /
``index_copy_`` on a flattened view (measured: 12.6 ms vs 2.3 ms for 164k rows of 3 ints), and
the step is made of such lookups. These helpers keep the fast form readable.
"""

from __future__ import annotations

import torch


def rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` for a contiguous ``table`` [R, ...] and integer ``idx`` of any shape."""
    out = table.index_select(0, idx.reshape(-1))
    return out.view(*idx.shape, *table.shape[1:])


def cell(table: torch.Tensor, n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``table[n, u]`` for ``table`` [N, U, ...] and index vectors ``n``, ``u`` [X]."""
    N, U = table.shape[:2]
    return table.view(N * U, *table.shape[2:]).index_select(0, n * U + u)


def put_cell(table: torch.Tensor, n: torch.Tensor, u: torch.Tensor, values: torch.Tensor) -> None:
    """``table[n, u] = values`` in place (each (n, u) pair distinct)."""
    N, U = table.shape[:2]
    table.view(N * U, *table.shape[2:]).index_copy_(0, n * U + u, values)


def pick(x: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``x[arange(N), col]`` for ``x`` [N, P] and ``col`` [N]."""
    return x.gather(1, col[:, None]).squeeze(1)


def sort_by_rank(x: torch.Tensor) -> torch.Tensor:
    """``x.sort(dim=-1).values`` for integer ``x`` [..., C] by counting ranks (exact, stable).

    ``O(C^2)`` compares instead of a sort: inside one compiled graph for a handful of markets
    this fuses into the surrounding kernel, where an aten sort call costs ~20 us of overhead.
    At large batches the real sort is faster; callers choose.
    """
    C = x.shape[-1]
    pos = torch.arange(C, device=x.device)
    before = x[..., None, :] < x[..., :, None]  # [..., i, j]: x_j sorts before x_i
    tie_before = (x[..., None, :] == x[..., :, None]) & (pos[None, :] < pos[:, None])
    rank = (before | tie_before).sum(-1)
    return torch.zeros_like(x).scatter_(-1, rank, x)
