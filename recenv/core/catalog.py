"""The item catalog: static data shared by every market of a batch, plus retrieval indices.

The catalog is part of the scenario (drawn from ``catalog_seed`` with a ``torch.Generator``), not
of the episode, so 10^6 items cost memory once, not per market. Retrieval never scores the
catalog: each agent's items are pre-sorted into lists (by topic and popularity, by popularity, by
arrival time) and a request draws positions in those lists, so a step costs the same for 10^3 or
10^6 items.

Shapes: ``I`` items, ``T`` topics, ``D`` embedding dim, ``A`` agents, ``M`` longest list.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recenv.core import hugepages
from recenv.core.config import MarketConfig
from recenv.core.footprint import check_catalog_fits
from recenv.core.indexing import lookup_table
from recenv.core.modes import normal_tensors


class ItemRow:
    """Column layout of :attr:`Catalog.item_rows` for ``T`` topics and ``D`` embedding dims."""

    def __init__(self, num_topics: int, embed_dim: int):
        T, D = num_topics, embed_dim
        self.features = slice(0, T + 6)  # the candidate features, as observed
        self.topics = slice(0, T)
        self.length = T
        self.price = T + 1
        self.observed_quality = T + 2
        self.arrival = T + 3  # the first per-request slot holds the arrival step
        self.embed = slice(T + 6, T + 6 + D)
        self.quality = T + 6 + D
        self.novelty = T + 7 + D
        self.width = -(-(T + 8 + D) // 16) * 16  # whole 64-byte lines


@dataclass
class Catalog:
    topics: torch.Tensor  # [I, T] float, sparse rows summing to 1
    embed: torch.Tensor  # [I, D] float, latent embedding: N(0, 1/D) entries, E|e|^2 = 1
    quality: torch.Tensor  # [I] float
    quality_noise: torch.Tensor  # [I] float, fixed noise on the observed quality
    length: torch.Tensor  # [I] float > 0, time cost
    price: torch.Tensor  # [I] float >= 0
    popularity: torch.Tensor  # [I] float, prior share, sums to 1 (Zipf-like long tail)
    owner: torch.Tensor  # [I] int64 agent id, -1 when shared
    arrival: torch.Tensor  # [I] int64 step at which the item appears (0 = from the start)
    main_topic: torch.Tensor  # [I] int64
    # Retrieval lists, per agent; padded with a valid item and bounded by the *_len tensors.
    by_topic: torch.Tensor  # [A, T, M] int32 item ids, each topic's items by popularity (desc)
    by_topic_len: torch.Tensor  # [A, T] int64
    by_pop: torch.Tensor  # [A, M] int32 item ids by popularity (desc)
    by_pop_len: torch.Tensor  # [A] int64
    by_arrival: torch.Tensor  # [A, M] int32 item ids by arrival (asc)
    arrival_sorted: torch.Tensor  # [A, M] arrival steps, ascending; padding = huge
    head: torch.Tensor  # [A, K] the K most popular items present from t=0 (always retrievable)

    # What a step reads at random: the item rows (built on first use) and the retrieval lists.
    # Large ones lie on huge pages (recenv.core.hugepages): with 4 KiB pages each lookup into
    # a 10^6-item catalog's 122 MiB of rows also misses the TLB, and on this VM the nested
    # page walk is not hidden by the candidates kernel's prefetches (1.07-1.10x on the 10^6-item
    # step at 1,024 markets; performance-log.md, "Forty-first session"). Small catalogs (the
    # default 2,000 items) stay on plain pages.
    _HUGE_PAGE_TABLES = ("by_topic", "by_pop", "by_arrival", "_item_rows")

    def __post_init__(self) -> None:
        hugepages.rehome_tables(self, self._HUGE_PAGE_TABLES)

    def __getstate__(self) -> dict:
        # The tables, not their huge-page buffers' slack (up to 2 MiB each).
        return hugepages.compact_tables(self.__dict__.copy(), self._HUGE_PAGE_TABLES)

    def __setstate__(self, state: dict) -> None:
        # A copy made inside the caller's inference mode (recenv.core.modes).
        self.__dict__.update({k: normal_tensors(v) for k, v in state.items()})
        hugepages.rehome_tables(self, self._HUGE_PAGE_TABLES)

    @property
    def item_rows(self) -> torch.Tensor:
        """Everything a step reads of an item, one row each, ``[I, R]`` float32 (layout in
        :class:`ItemRow`): a row is whole 64-byte cache lines, so a lookup in a catalog too
        large for the cache costs two line fetches instead of one per attribute table.

        The first ``T + 6`` columns are the item's candidate features as agents observe them
        (topics, length, price, observed noisy quality, then three slots for the per-request
        features log1p clicks, log1p exposures and age, the first of which holds the arrival
        step, exact in float32 below 2^24); then the latent embedding, the true quality and
        the novelty. Built on first use."""
        f = self.__dict__.get("_item_rows")
        if f is None:
            lay = ItemRow(self.topics.shape[1], self.embed.shape[1])
            f = hugepages.full((self.num_items, lay.width), 0, torch.float32, self.length.device)
            f[:, lay.topics] = self.topics
            f[:, lay.length] = self.length
            f[:, lay.price] = self.price
            f[:, lay.observed_quality] = self.quality + self.quality_noise
            f[:, lay.arrival] = self.arrival.to(torch.float32)
            f[:, lay.embed] = self.embed
            f[:, lay.quality] = self.quality
            f[:, lay.novelty] = self.novelty
            self.__dict__["_item_rows"] = f
        return f

    @property
    def novelty(self) -> torch.Tensor:
        """Self-information of each item under the popularity prior, ``-log2(popularity)``,
        ``[I]`` float32 (a :func:`~recenv.core.indexing.lookup_table`). Built on first use."""
        f = self.__dict__.get("_novelty")
        if f is None:
            f = lookup_table(lambda p: -torch.log2(p.clamp(min=1e-12)), self.popularity)
            self.__dict__["_novelty"] = f
        return f

    @property
    def num_items(self) -> int:
        return self.topics.shape[0]

    def tables(self) -> dict[str, torch.Tensor]:
        """The catalog's tables by field (not the item rows derived from them)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def to(self, device: torch.device | str) -> Catalog:
        return Catalog(**{k: v.to(device) for k, v in self.tables().items()})


def build_catalog(cfg: MarketConfig) -> Catalog:
    """Draw the catalog of ``cfg`` on the CPU (move it with :meth:`Catalog.to`). A catalog
    larger than the memory available is refused by name before its first table is drawn
    (:func:`~recenv.core.footprint.check_catalog_fits`)."""
    check_catalog_fits(cfg, "cpu", rows=False)  # the item rows are built by the market
    g = torch.Generator().manual_seed(cfg.catalog_seed)
    I, T, D, A = cfg.num_items, cfg.num_topics, cfg.embed_dim, cfg.num_agents
    # Every float draw names its dtype: under torch.set_default_dtype(torch.float64) a draw
    # would take other bits of the generator, and the same seed would give another catalog.
    f32 = torch.float32

    # Sparse topics: 1..max_item_topics topics with Dirichlet-like weights.
    n_topics = torch.randint(1, cfg.max_item_topics + 1, (I,), generator=g)
    order = torch.rand(I, T, generator=g, dtype=f32).argsort(dim=1)
    rank_of_topic = order.argsort(dim=1)
    weights = -torch.log(torch.rand(I, T, generator=g, dtype=f32))
    weights = torch.where(rank_of_topic < n_topics[:, None], weights, torch.zeros_like(weights))
    topics = weights / weights.sum(dim=1, keepdim=True)
    main_topic = topics.argmax(dim=1)

    embed = torch.randn(I, D, generator=g, dtype=f32) / D**0.5
    quality = torch.randn(I, generator=g, dtype=f32) * cfg.quality_std
    quality_noise = torch.randn(I, generator=g, dtype=f32) * cfg.quality_noise
    length = cfg.mean_item_length * torch.exp(0.5 * torch.randn(I, generator=g, dtype=f32) - 0.125)
    price = cfg.price_scale * torch.exp(0.6 * torch.randn(I, generator=g, dtype=f32) - 0.18)

    # Zipf popularity over a random permutation of ranks: the long tail.
    ranks = torch.randperm(I, generator=g).to(torch.float64) + 1.0
    pop = ranks.pow(-cfg.zipf_exponent)
    popularity = (pop / pop.sum()).to(torch.float32)

    if cfg.ownership == "partition":
        owner = torch.randperm(I, generator=g) % A
    else:
        owner = torch.full((I,), -1, dtype=torch.int64)

    is_new = torch.rand(I, generator=g, dtype=f32) < cfg.new_item_fraction
    arrival_time = torch.randint(1, max(2, cfg.horizon), (I,), generator=g)
    arrival = torch.where(is_new, arrival_time, torch.zeros_like(arrival_time))
    arrival = _head_present(cfg, popularity, owner, arrival)

    lists = _retrieval_lists(cfg, popularity, owner, arrival, main_topic)
    return Catalog(
        topics=topics,
        embed=embed,
        quality=quality,
        quality_noise=quality_noise,
        length=length,
        price=price,
        popularity=popularity,
        owner=owner,
        arrival=arrival,
        main_topic=main_topic,
        **lists,
    )


def catalog_from_arrays(
    cfg: MarketConfig,
    topics: torch.Tensor,
    embed: torch.Tensor,
    popularity: torch.Tensor,
    quality: torch.Tensor | None = None,
) -> Catalog:
    """A catalog from given item arrays (e.g. fitted on an interaction log); the rest is drawn
    from ``cfg`` as in :func:`build_catalog`."""
    base = build_catalog(cfg)
    popularity = (popularity / popularity.sum()).to(torch.float32)
    main_topic = topics.argmax(dim=1)
    arrival = _head_present(cfg, popularity, base.owner, base.arrival)
    lists = _retrieval_lists(cfg, popularity, base.owner, arrival, main_topic)
    return Catalog(
        topics=topics.float(),
        embed=embed.float(),
        quality=base.quality if quality is None else quality.float(),
        quality_noise=base.quality_noise,
        length=base.length,
        price=base.price,
        popularity=popularity,
        owner=base.owner,
        arrival=arrival,
        main_topic=main_topic,
        **lists,
    )


def _head_present(
    cfg: MarketConfig, popularity: torch.Tensor, owner: torch.Tensor, arrival: torch.Tensor
) -> torch.Tensor:
    """``arrival`` with each agent's K most popular items present from t=0, so every request
    has K valid candidates however the arrivals fell (set-up only; a loop over agents)."""
    arrival = arrival.clone()
    order = torch.argsort(popularity, descending=True, stable=True)
    for a in range(cfg.num_agents):
        mine = order[(owner[order] == a) | (owner[order] < 0)]
        arrival[mine[: cfg.slate_size]] = 0
    return arrival


def _retrieval_lists(
    cfg: MarketConfig,
    popularity: torch.Tensor,
    owner: torch.Tensor,
    arrival: torch.Tensor,
    main_topic: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-agent sorted id lists. Built once; a loop over agents here is set-up, not a step."""
    T, A, K = cfg.num_topics, cfg.num_agents, cfg.slate_size
    big = torch.iinfo(torch.int64).max // 4
    by_pop_order = torch.argsort(popularity, descending=True, stable=True)
    per_agent_pop, per_agent_arr, per_agent_topic, heads = [], [], [], []
    for a in range(A):
        mine = by_pop_order[(owner[by_pop_order] == a) | (owner[by_pop_order] < 0)]
        per_agent_pop.append(mine)
        arr_order = torch.argsort(arrival[mine], stable=True)
        per_agent_arr.append(mine[arr_order])
        heads.append(mine[arrival[mine] == 0][:K])
        per_agent_topic.append([mine[main_topic[mine] == t] for t in range(T)])
    M = max(len(p) for p in per_agent_pop)
    Mt = max(1, max(len(x) for lists in per_agent_topic for x in lists))

    def pad(x: torch.Tensor, n: int, fill: int) -> torch.Tensor:
        out = torch.full((n,), fill, dtype=torch.int64)
        out[: len(x)] = x
        return out

    by_pop = torch.stack([pad(p, M, int(p[0])) for p in per_agent_pop])
    by_arrival = torch.stack([pad(p, M, int(p[0])) for p in per_agent_arr])
    arrival_sorted = torch.stack(
        [pad(arrival[p], M, big) for p in per_agent_arr]
    )  # padding sorts last
    by_topic = torch.stack(
        [
            torch.stack(
                [pad(x, Mt, int(x[0]) if len(x) else int(per_agent_pop[a][0])) for x in lists]
            )
            for a, lists in enumerate(per_agent_topic)
        ]
    )
    by_topic_len = torch.tensor([[len(x) for x in lists] for lists in per_agent_topic])
    # An empty topic bucket falls back to the agent's popular list (length 1, its top item).
    by_topic_len = by_topic_len.clamp(min=1)
    # Item ids as int32 (MarketConfig bounds num_items by MAX_ITEMS = 2**31): retrieval reads
    # these lists at random positions, and half the bytes keeps twice as much of their heads
    # in cache.
    return {
        "by_topic": by_topic.to(torch.int32),
        "by_topic_len": by_topic_len,
        "by_pop": by_pop.to(torch.int32),
        "by_pop_len": torch.tensor([len(p) for p in per_agent_pop]),
        "by_arrival": by_arrival.to(torch.int32),
        "arrival_sorted": arrival_sorted,
        "head": torch.stack(heads),
    }
