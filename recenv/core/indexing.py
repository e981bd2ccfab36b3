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
