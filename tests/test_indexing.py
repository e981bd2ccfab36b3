"""The fusable forms the compiled step uses must equal the aten ops they replace, exactly."""

from __future__ import annotations

import pytest
import torch

from recenv.core.indexing import search_sorted_left, sort_by_network


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 20, 33])
def test_sort_by_network_equals_torch_sort_with_ties(length):
    g = torch.Generator().manual_seed(length)
    for _ in range(30):
        x = torch.randint(-4, 9, (5, 2, length), generator=g)  # many ties
        assert torch.equal(sort_by_network(x), x.sort(dim=-1).values)


@pytest.mark.parametrize("entries, targets", [(1, 3), (16, 18), (25, 1), (31, 4)])
def test_search_sorted_left_equals_torch_searchsorted(entries, targets):
    g = torch.Generator().manual_seed(entries)
    for _ in range(30):
        w = torch.rand(6, entries, generator=g)
        w[w < 0.3] = 0.0  # flat stretches: equal cdf entries
        cdf = w.cumsum(1)
        target = torch.rand(6, targets, generator=g) * cdf[:, -1:]
        target[0, 0] = cdf[0, entries // 2]  # exactly on an entry
        target[1, 0] = 0.0
        assert torch.equal(search_sorted_left(cdf, target), torch.searchsorted(cdf, target))
