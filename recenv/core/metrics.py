"""Recommender metrics as batched torch functions (no Python loop over markets)."""

from __future__ import annotations

import torch

# Names of the per-episode metrics, in the order both faces report them.
# The sums behind return, engagement_per_request, diversity and novelty are float32, added a
# step at a time: once a sum is large, each step's term is rounded to its spacing. Measured
# on the presets' own per-step terms (oracle slates, resampled): relative error ~1e-4 at
# horizon 2**20, up to ~4 % at 2**24 (MAX_HORIZON; terms below half the spacing, 0.5 past
# 2**23, are lost). Clicks, requests and choices are integers, exact to 2**24. Summed in
# float64 these would change every episode's metrics in their last bits.
EPISODE_METRICS = (
    "return",  # [A] undiscounted return per agent
    "ctr",  # clicks / requests
    "engagement_per_request",
    # share of users not churned and away at the episode's end (a churned user whose
    # geometric wait is over counts as back, though not drawn to arrive yet)
    "retention",
    # [A] share of user choices (clicks; platform visits under platform_choice); all zero,
    # not 1 / A, in an episode without any choice
    "market_share",
    # share of the catalog's items (all agents') shown at least once; exact while
    # num_items <= item_stats_size, beyond (hashed counters) a linear-counting estimate. Items
    # share counters by item % W, which collides less than the estimate's random hash: it
    # reads high by up to ~12 % where num_items is within a few W and an episode shows ~W / 4
    # items (+37 % at 300 items on 64 counters), within ~4 % from num_items ~ 10 W. NaN when
    # every counter was exposed (the estimate is unbounded there: the episode showed more
    # items than W counters can count; it read 1.0, 100 % of the catalog, for 40 % shown)
    "coverage",
    # mean over the requests (all on a shared page; platform visits under platform_choice)
    # of the mean intra-list diversity of the slates shown; with invalid_slate="repair" a
    # request whose every slate was repaired to nothing counts, as 0
    "diversity",
    # mean over the same requests of the shown items' mean self-information
    # -log2(popularity prior), divided by log2(num_items)
    "novelty",
    # Gini coefficient of the catalog's item exposure counts (unshown items count as 0);
    # with hashed counters items sharing one are merged
    "exposure_gini",
    "satisfaction",  # mean user satisfaction at the episode's end
    "length",  # requests in the episode
)


def gini(x: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Gini coefficient of each row of non-negative ``x`` [N, W] -> [N]; 0 for an all-zero row.
    ``n`` >= W: the population's size, of which the ``n - W`` values not in ``x`` are 0 (the
    items without a counter of their own); default W."""
    # Sorted in its own dtype (int32 counters sort ~1.25x faster than float64), then widened:
    # the conversion is monotonic, so the sorted values are the same either way.
    x = x.sort(dim=1).values.to(torch.float64)
    W = x.shape[1]
    n = W if n is None else n
    if n < W:
        raise ValueError(f"gini: n={n} must be >= the row length {W}")
    # The n - W missing zeros sort first: the row's values take ranks n - W + 1 .. n.
    idx = torch.arange(n - W + 1, n + 1, dtype=x.dtype, device=x.device)
    total = x.sum(dim=1)
    g = ((2 * idx - n - 1) * x).sum(dim=1) / (n * total.clamp(min=1e-12))
    return torch.where(total > 0, g, torch.zeros_like(g)).to(torch.float32)


def coverage_from_counters(exposed: torch.Tensor, W: int, I: int) -> torch.Tensor:
    """Share of the catalog's ``I`` items shown, from ``exposed`` [E] (int): how many of a
    market's ``W`` item counters were exposed -> [E] float32. Exact counters (``W == I``):
    ``exposed / I``. Hashed ones (``W < I``, item % W): items sharing a counter count once, so
    the linear-counting estimate of the distinct items behind them, ``-W ln(1 - exposed /
    W)``, capped at ``I``, over ``I``; NaN for a full table (``exposed == W``), where the
    estimate is unbounded: the table says only "at least W items", and reading that as the
    whole catalog (as it did) reported 100 % for an episode that showed 40 %. As the native
    kernel."""
    if W == I:
        return exposed.float() / I
    frac = exposed.to(torch.float64) / W
    items = (-W * torch.log1p(-frac)).clamp(max=I)
    cover = torch.where(exposed >= W, torch.nan, items / I)
    return cover.to(torch.float32)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` [..., T] with each row scaled to unit length; all-zero rows stay zero."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def intra_list_diversity(topics: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean pairwise (1 - cosine similarity) of the topic vectors in each slate.

    ``topics`` [..., K, T], ``valid`` [..., K] bool -> [...]; 0 for slates with < 2 valid items.
    """
    unit = _unit_rows(topics)
    # Products and a sum, not a matmul, whose float32 result follows torch's process-wide
    # matmul precision (see recenv.core.choice.dot).
    sim = (unit[..., :, None, :] * unit[..., None, :, :]).sum(dim=-1)  # [..., K, K]
    pair = valid[..., :, None] & valid[..., None, :]
    pair = pair & ~torch.eye(valid.shape[-1], dtype=torch.bool, device=valid.device)
    n_pairs = pair.sum(dim=(-1, -2))
    dist = ((1.0 - sim) * pair).sum(dim=(-1, -2))
    return torch.where(n_pairs > 0, dist / n_pairs.clamp(min=1), torch.zeros_like(dist))


def intra_list_diversity_by_sums(topics: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """:func:`intra_list_diversity` without the ``[K, K]`` similarity matrix, equal up to
    rounding: with ``s`` the sum of the valid unit vectors, the similarities of the ordered
    pairs of distinct valid items sum to ``|s|^2`` minus each valid vector's ``|u|^2``, and
    there are ``m (m - 1)`` such pairs for ``m`` valid items.

    One pass over each slate's ``[K, T]`` topics, vectorised over the topics: compiled, the
    matrix form was an extern batched matmul plus a loop over ``K``-wide masked vectors
    (~5 % of a 4,096-market step at K = 3). The result is clamped to the distance's range
    [0, 2], which the subtraction can leave by a rounding error.
    """
    unit = _unit_rows(topics)
    v = valid.to(unit.dtype)
    s = (unit * v[..., None]).sum(dim=-2)  # [..., T]
    own = (unit * unit).sum(dim=-1)  # [..., K]
    m = v.sum(dim=-1)
    n_pairs = m * (m - 1.0)
    sims = (s * s).sum(dim=-1) - (own * v).sum(dim=-1)
    d = ((n_pairs - sims) / n_pairs.clamp(min=1.0)).clamp(0.0, 2.0)
    return torch.where(n_pairs > 0, d, torch.zeros_like(d))
