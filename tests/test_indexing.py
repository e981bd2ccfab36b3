"""The fusable forms the compiled step uses must equal the aten ops they replace, exactly."""

from __future__ import annotations

import math

import pytest
import torch

from recenv.core.indexing import (
    first_argmax,
    pick,
    pick_by_select,
    search_sorted_left,
    sort_by_network,
)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 20, 33, 40, 64])
def test_sort_by_network_equals_torch_sort_with_ties(length):
    g = torch.Generator().manual_seed(length)
    for _ in range(30):
        x = torch.randint(-4, 9, (5, 2, length), generator=g)  # many ties
        assert torch.equal(sort_by_network(x), x.sort(dim=-1).values)


@pytest.mark.parametrize("length", [3, 7, 12, 20])
def test_pruned_sorting_network_sorts_every_zero_one_input(length):
    """The 0-1 principle: a comparator network sorts every input iff it sorts every 0/1
    input; all 2**length of them are checked (the pruned network is exact, not just lucky)."""
    codes = torch.arange(2**length)
    bits = (codes[:, None] >> torch.arange(length)) & 1
    assert torch.equal(sort_by_network(bits), bits.sort(dim=-1).values)


@pytest.mark.parametrize("width", [1, 2, 4, 7, 13])
def test_first_argmax_equals_torch_argmax_with_ties(width):
    """The first column of the maximum, as ATen's argmax gives it, ties included (the
    choice's scores tie where entries have probability 0)."""
    g = torch.Generator().manual_seed(width)
    for _ in range(30):
        x = torch.randint(-3, 4, (50, width), generator=g).float()  # many ties
        assert torch.equal(first_argmax(x), x.argmax(dim=1))
    x = torch.rand(200, width, generator=g) * torch.exp(8 * torch.randn(200, width, generator=g))
    assert torch.equal(first_argmax(x), x.argmax(dim=1))


def test_first_argmax_compiled_is_torch_argmax():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (300, 7), generator=g).float() * torch.rand(300, 1, generator=g)
    assert torch.equal(torch.compile(first_argmax, dynamic=False)(x), x.argmax(dim=1))


@pytest.mark.parametrize("width", [1, 3, 6, 9])
def test_pick_by_select_equals_the_gather(width):
    """The chosen entry by selects: ``x[arange(N), col]`` for rows of values and rows of
    rows, every column chosen somewhere, NaN and -0.0 passed through as they are."""
    g = torch.Generator().manual_seed(width)
    col = torch.arange(40) % width
    x = torch.randn(40, width, generator=g)
    x[0, 0], x[1, 1 % width] = -0.0, math.nan
    assert torch.equal(pick_by_select(x, col).view(torch.int32), pick(x, col).view(torch.int32))
    rows = torch.randint(-9, 9, (40, width, 5), generator=g)
    assert torch.equal(pick_by_select(rows, col), rows[torch.arange(40), col])


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


def test_the_steps_lookup_tables_are_their_functions_in_float64_rounded_once():
    """log1p of counts, decay powers, position costs and novelty are float64 values rounded to
    float32 (so no value depends on its place in a vectorised loop), with the configured
    decay used exactly (a float32 pow would use 0.9 -> 0.89999998)."""
    import math

    import recenv
    from recenv.core.choice import position_costs
    from recenv.core.dynamics import decay_powers

    env = recenv.make_vec("recenv/Market-v0", num_envs=1, seed=0, num_items=300, horizon=20)
    cfg = env.config
    k = torch.arange(cfg.horizon + 1, dtype=torch.float64)
    want = torch.tensor([cfg.boredom_decay**i for i in range(cfg.horizon + 1)], dtype=torch.float64)
    assert torch.equal(decay_powers(cfg), want.to(torch.float32))
    assert torch.equal(decay_powers(cfg), torch.pow(cfg.boredom_decay, k).float())
    p = torch.tensor([math.log2(1 + i) for i in range(7)], dtype=torch.float64)
    assert torch.equal(position_costs(7), p.float())
    n = env._log1p_counts.shape[0]
    assert n == cfg.horizon * cfg.num_agents * cfg.slate_size + 1
    want = torch.tensor([math.log1p(i) for i in range(n)], dtype=torch.float64)
    assert torch.equal(env._log1p_counts, want.float())
    pop = env.catalog.popularity.double().clamp(min=1e-12)
    assert torch.equal(env.catalog.novelty, (-torch.log2(pop)).float())
