"""A batch's memory, known before it is allocated, and a clear refusal when it cannot fit.

A batched market allocates its per-market tables at once and fills them (zeros, the huge-page
fill), so a batch too large for the machine fails in one of two unhelpful ways: a single table
larger than memory is refused by the kernel (``OSError: [Errno 12] Cannot allocate memory``,
naming nothing), and tables that each fit but together do not are granted by Linux's memory
overcommit and then touched until the OOM killer ends the process, taking whatever else it
held. :func:`check_fits` runs before the first table is allocated and refuses such a batch
with an error that names ``num_envs``, ``num_users``, the bytes needed and the bytes
available, and how many markets would fit. :func:`check_horizon_fits` does the same for the
lookup tables a market builds once, whose size grows with the horizon (:func:`horizon_nbytes`),
and :func:`check_catalog_fits` for the catalog shared by all markets (:func:`catalog_nbytes`),
before its first table is drawn: ``num_items=10**9`` or a huge ``embed_dim`` / ``num_topics``
is refused by name instead of failing in either of those ways while the catalog is built.

:func:`market_nbytes` is the bytes of one market's tables as
:meth:`~recenv.core.market.BatchedMarket.state_nbytes` counts them once the batch is reset
(a test holds the two equal over random configs). A step also needs its temporaries and
outputs beside them (peak RSS ~1.15x the tables at 16,384 markets of 1,000 users, eager), and
the catalog and a population are shared by all markets and already allocated when the check
runs; the check refuses only a batch whose tables alone exceed what is available, one that
memory could not hold anyway. ``RECENV_MEMORY_CHECK=0`` in the environment turns it off.
"""

from __future__ import annotations

import os

import torch

from recenv.core.config import MarketConfig
from recenv.core.users import UserLayout

_MEMINFO = "/proc/meminfo"
# cgroup v2, then v1: a container's limit, which /proc/meminfo does not show.
_CGROUP_LIMITS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)


def market_nbytes(cfg: MarketConfig) -> int:
    """Bytes of one market's tables (state, current request, observation) under ``cfg``, as
    ``BatchedMarket.state_nbytes() / num_envs`` reads once the batch is reset."""
    A, U, C = cfg.num_agents, cfg.num_users, cfg.num_candidates
    T, D, W = cfg.num_topics, cfg.embed_dim, cfg.stats_size
    f4, i8 = 4, 8
    clocks = 3 * i8 + f4 + 1 + i8  # key, counter, episode; t; needs_reset; arange
    users = U * (UserLayout(T, A).width * f4 + 2 * f4 + i8 + f4)  # rows, status, epoch, activity
    items = W * 3 * 4  # (episode stamp, exposures, clicks) int32
    request = i8 + A * C * (i8 + 1) + (D + 1) * f4  # user, candidates + mask, taste + price
    accumulators = 2 * A * f4 + 4 * f4
    observation = (T + 2) * f4 + A * (T + 4) * f4 + A * C * (T + 6) * f4
    return clocks + users + items + request + accumulators + observation


def horizon_nbytes(cfg: MarketConfig) -> int:
    """Peak bytes of the lookup tables a market builds once for ``cfg`` (not per market),
    which grow with the horizon: ``log1p`` of the item counts ``0..H*A*K`` (built in float64
    from an int64 range, kept in float32: 8 + 8 + 8 B an entry at the peak, 4 B kept), each
    agent's items arrived by each step ``[A, H + 1]`` int64 (the per-agent rows and their
    stack), and the boredom decay powers ``[H + 1]`` (as the counts' table). At the longest
    horizon, 2**24, with ``horizon x num_agents x slate_size`` near its 2**31 limit, they
    need ~56 GiB: allocated unchecked, Linux's overcommit grants each of them and the process
    touches them until the OOM killer ends it."""
    H, A = cfg.horizon, cfg.num_agents
    counts = H * A * cfg.slate_size + 1
    return 28 * counts + 2 * A * (H + 1) * 8 + 8 * (H + 1) + 28 * (H + 1)


def catalog_nbytes(cfg: MarketConfig, *, tables: bool = True, rows: bool = True) -> int:
    """A lower bound of the bytes of the catalog of ``cfg``
    (:class:`~recenv.core.catalog.Catalog`), counting only the tables every catalog holds, at
    their dtypes: the check built on it (:func:`check_catalog_fits`) never refuses a catalog
    that would fit.

    ``tables``: what :func:`~recenv.core.catalog.build_catalog` returns, with ``I`` items, ``T``
    topics, ``D`` embedding dims, ``A`` agents: the topic weights and embeddings
    ``I x (T + D)`` float32, five float32 item columns (quality, its noise, length, price,
    popularity) and three int64 ones (owner, arrival, main topic), 44 B an item; each agent's
    lists by popularity and by arrival (int32 ids) and its arrival steps (int64), ``A x M x
    16`` B with ``M`` its longest list, at least ``I`` (``ownership="shared"``) or ``ceil(I /
    A)`` (some agent owns that many); its lists by topic, ``A x T x Mt`` int32 with ``Mt`` at
    least ``ceil(M / T)``, and their lengths ``A x (T + 1)`` int64. ``rows``: what a market
    builds from them on first use, the item rows ``I x R`` float32
    (:class:`~recenv.core.catalog.ItemRow`: ``R`` is ``T + D + 8`` rounded up to 16) and the
    novelty ``I`` float32.

    Not counted: the build's temporaries (the topic draw alone holds ~29 B an item-topic at
    its peak), the heads (``A x K``), a scenario's second set of lists (Music-v0 redraws the
    ownership), huge-page slack, and longer lists than the bound (a partition is rarely even);
    a test holds the estimate between half the tables a built catalog holds and all of them."""
    return _catalog_nbytes(cfg, cfg.num_items, tables, rows)


def _catalog_nbytes(cfg: MarketConfig, I: int, tables: bool, rows: bool) -> int:
    """:func:`catalog_nbytes` of ``cfg`` with ``I`` items."""
    T, D, A = cfg.num_topics, cfg.embed_dim, cfg.num_agents
    f4, i4, i8 = 4, 4, 8
    n = 0
    if tables:
        M = I if cfg.ownership == "shared" else -(-I // A)
        Mt = max(1, -(-M // T))
        items = I * (T + D) * f4 + I * (5 * f4 + 3 * i8)
        lists = A * M * (2 * i4 + i8) + A * T * Mt * i4 + A * (T + 1) * i8
        n += items + lists
    if rows:
        width = -(-(T + 8 + D) // 16) * 16  # ItemRow(T, D).width
        n += I * width * f4 + I * f4
    return n


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _meminfo_available() -> int | None:
    """``MemAvailable + SwapFree`` of ``/proc/meminfo`` in bytes, or None (not Linux)."""
    fields = {}
    try:
        with open(_MEMINFO) as f:
            for line in f:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    if "MemAvailable" not in fields:
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0)


def _cgroup_available() -> int | None:
    for limit_path, usage_path in _CGROUP_LIMITS:
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        # v1 reports "no limit" as a huge number (2^63 rounded to pages).
        if limit is not None and usage is not None and limit < 1 << 60:
            return max(0, limit - usage)
    return None


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory this process can still take on ``device``, in bytes, or None where it cannot
    be read (then nothing is checked). CPU: the smaller of ``/proc/meminfo``'s
    ``MemAvailable + SwapFree`` and the cgroup's limit less its usage; CUDA: the device's
    free memory and what torch's caching allocator holds unused."""
    device = torch.device(device)
    if device.type == "cuda":
        # The driver's free memory, plus what torch's caching allocator holds unused.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    if device.type != "cpu":
        return None
    known = [x for x in (_meminfo_available(), _cgroup_available()) if x is not None]
    return min(known) if known else None


def gib(n: int) -> str:
    """``n`` bytes as ``"22.91 GiB"``."""
    return f"{n / 2**30:.2f} GiB"


def shortfall(nbytes: int, device: torch.device | str = "cpu") -> int | None:
    """The bytes :func:`available_bytes` reports on ``device`` when they are fewer than
    ``nbytes``; None when ``nbytes`` fit, the memory cannot be read, or
    ``RECENV_MEMORY_CHECK=0``."""
    if os.environ.get("RECENV_MEMORY_CHECK", "1") == "0":
        return None
    free = available_bytes(device)
    return free if free is not None and nbytes > free else None


def check_fits(cfg: MarketConfig, num_envs: int, device: torch.device | str = "cpu") -> None:
    """Raise ``MemoryError`` if ``num_envs`` markets' tables (:func:`market_nbytes` each)
    exceed the memory :func:`available_bytes` reports on ``device``; nothing is allocated.

    Skipped where the available memory cannot be read or ``RECENV_MEMORY_CHECK=0``."""
    per_market = market_nbytes(cfg)
    need = per_market * num_envs
    free = shortfall(need, device)
    if free is None:
        return
    raise MemoryError(
        f"num_envs={num_envs} x num_users={cfg.num_users} need {gib(need)} of tables "
        f"({per_market:,} B a market); {gib(free)} available on {torch.device(device)}: at "
        f"most {free // per_market:,} markets fit (RECENV_MEMORY_CHECK=0 skips this check)"
    )


def check_horizon_fits(cfg: MarketConfig, device: torch.device | str = "cpu") -> None:
    """Raise ``MemoryError`` if the horizon's lookup tables (:func:`horizon_nbytes`) exceed
    the memory :func:`available_bytes` reports on ``device``, naming the horizon, agents and
    slate size they grow with; nothing is allocated. Skipped as :func:`check_fits` is."""
    need = horizon_nbytes(cfg)
    free = shortfall(need, device)
    if free is None:
        return
    raise MemoryError(
        f"horizon={cfg.horizon} x num_agents={cfg.num_agents} x slate_size={cfg.slate_size} "
        f"need {gib(need)} of lookup tables; {gib(free)} available on {torch.device(device)}: "
        "lower the horizon (RECENV_MEMORY_CHECK=0 skips this check)"
    )


def check_catalog_fits(
    cfg: MarketConfig,
    device: torch.device | str = "cpu",
    *,
    tables: bool = True,
    rows: bool = True,
) -> None:
    """Raise ``MemoryError`` if the catalog's tables (:func:`catalog_nbytes`, a lower bound;
    ``tables`` and ``rows`` pick its parts as there) exceed the memory :func:`available_bytes`
    reports on ``device``, naming ``num_items``, ``num_topics`` and ``embed_dim`` and how many
    items would fit; nothing is allocated. Skipped as :func:`check_fits` is."""
    I = cfg.num_items
    need = catalog_nbytes(cfg, tables=tables, rows=rows)
    free = shortfall(need, device)
    if free is None:
        return
    # The most items that fit (the estimate grows with num_items): a bisection, no allocation.
    lo, hi = 0, I
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _catalog_nbytes(cfg, mid, tables, rows) <= free:
            lo = mid
        else:
            hi = mid - 1
    # Kept short: the registry's ValueError keeps the first 200 characters.
    raise MemoryError(
        f"num_items={I} x (num_topics={cfg.num_topics} + embed_dim={cfg.embed_dim}) need "
        f"{gib(need)} for the catalog; {gib(free)} available on {torch.device(device)}: at "
        f"most {lo:,} items fit (RECENV_MEMORY_CHECK=0 skips this check)"
    )
