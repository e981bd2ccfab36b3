"""The memory and traffic figures the benchmark reports come from the core's own accounting:
check that accounting against the tensors the core really holds and produces."""

from __future__ import annotations

import pytest
import torch

import recenv
from recenv.core import footprint, hugepages
from recenv.core.market import BatchedMarket


def _env(n, **cfg):
    env = recenv.make_vec("recenv/Market-v0", num_envs=n, seed=0, **cfg)
    env.reset()
    return env


def test_state_nbytes_counts_every_per_market_tensor_and_scales_with_the_batch():
    small, big = _env(2), _env(6)
    assert big.state_nbytes() == 3 * small.state_nbytes()
    held = [
        big.users,
        big.user_status,
        big.user_epoch,
        big.activity,
        big.item_stats,
        big.cand,
        big.cand_mask,
    ]
    held += list(big._obs_parts)
    assert big.state_nbytes() >= sum(x.numel() * x.element_size() for x in held)
    # The catalog is shared by all markets and not counted per market.
    catalog = big.catalog.item_rows
    assert catalog.shape[0] != big.num_envs


def test_state_nbytes_grows_with_users_as_the_packed_row_says():
    few, many = _env(3, num_users=10), _env(3, num_users=110)
    # Packed row, its dense status copy (available_at, churned), episode stamp, activity.
    per_user = many.layout.width * 4 + 2 * 4 + 8 + 4
    assert many.state_nbytes() - few.state_nbytes() == 3 * 100 * per_user


def test_step_traffic_parts_add_up_and_cover_the_observation_written():
    env = _env(4)
    traffic = env.step_traffic_bytes()
    parts = {k: traffic[k] for k in ("users", "item_stats", "observation", "actions_rewards_info")}
    assert set(traffic) == {*parts, "total", "catalog", "total_with_catalog"}
    assert traffic["total"] == sum(parts.values())
    # The catalog (static, shared by every market) is not state: apart from the total.
    assert traffic["total_with_catalog"] == traffic["total"] + traffic["catalog"]
    assert all(v > 0 for v in traffic.values())
    assert _env(8).step_traffic_bytes()["total"] == 2 * traffic["total"]
    obs = env.observe()
    written = sum(x.numel() * x.element_size() for x in env._obs_parts)
    written += sum(
        obs[a][k].numel() * obs[a][k].element_size()
        for a in env.agents
        for k in ("action_mask", "candidate_ids")
    )
    written += env.user.numel() * env.user.element_size()
    assert traffic["observation"] == written
    assert isinstance(traffic["total"], int) and torch.is_tensor(env.users)


def test_step_traffic_of_the_users_is_the_two_users_rows_and_every_users_status():
    """A step reads and writes two users' packed rows (the current user's, served; the
    arriving one's, drawn), reads every user's status (churned, available at, episode stamp)
    and activity weight once and writes the two users' status, and reads and writes the
    current user's index: in the live tables' own sizes."""

    def nbytes(t):
        return t.element_size() * t[0].numel()  # one market's

    env = _env(3)
    U = env.config.num_users
    row = nbytes(env.users) // U
    status = (nbytes(env.user_status) + nbytes(env.user_epoch)) // U
    want = 2 * 2 * row + (U + 2) * status + nbytes(env.activity) + 2 * env.user.element_size()
    assert env.step_traffic_bytes()["users"] == 3 * want


@pytest.mark.parametrize("topology", ["shared_page", "platform_choice"])
def test_step_traffic_counts_the_step_outputs_at_their_dtypes(topology):
    """The written part of ``actions_rewards_info`` is the rewards, ends and info tensors a
    step returns, byte for byte (int64 fields at 8 bytes, bools at 1)."""

    def nbytes(x):
        if torch.is_tensor(x):
            return x.numel() * x.element_size()
        return sum(nbytes(v) for v in x.values()) if isinstance(x, dict) else 0

    env = _env(4, topology=topology)
    cfg = env.config
    slate = env.oracle_slates()
    _, rewards, terminated, truncated, info = env.step(
        {a: slate[:, i] for i, a in enumerate(env.agents)}
    )
    written = nbytes(rewards) + nbytes(terminated) + nbytes(truncated) + nbytes(info)
    actions_read = 2 * cfg.num_agents * cfg.slate_size * 8  # the slates, then their item ids
    assert env.step_traffic_bytes()["actions_rewards_info"] == actions_read * 4 + written


# The memory check before allocation (recenv.core.footprint).


@pytest.mark.parametrize("seed", range(4))
def test_market_nbytes_is_what_a_reset_batch_holds(seed):
    """The check's estimate, from the config alone, equals the tables a reset batch holds, for
    random configs (users, agents, candidates, topics, embedding, counter table vary)."""
    from test_random_configs import random_config

    env = recenv.make_vec("recenv/Market-v0", num_envs=3, seed=seed, **random_config(seed))
    env.reset()
    assert env.state_nbytes() == 3 * footprint.market_nbytes(env.config)


def test_a_batch_larger_than_the_available_memory_is_refused_by_name(monkeypatch):
    per_market = footprint.market_nbytes(_env(1).config)
    monkeypatch.setattr(footprint, "available_bytes", lambda device: 10 * per_market)
    # The catalog is held before this check (and is checked by its own, below): not counted.
    monkeypatch.setattr(footprint, "catalog_nbytes", lambda cfg, **parts: 0)
    allocated = []
    real_full = hugepages.full
    monkeypatch.setattr(
        hugepages, "full", lambda *a, **k: allocated.append(a) or real_full(*a, **k)
    )
    with pytest.raises(ValueError, match="num_envs=11 x num_users=25") as e:
        recenv.make_vec("recenv/Market-v0", num_envs=11, seed=0)
    assert "at most 10 markets fit" in str(e.value)
    assert "RECENV_MEMORY_CHECK=0" in str(e.value)
    assert isinstance(e.value.__cause__, MemoryError)
    # Refused before the first per-market table (the shared catalog is built before).
    assert [shape for shape, *_ in allocated if shape[0] == 11] == []
    recenv.make_vec("recenv/Market-v0", num_envs=10, seed=0).reset()  # what fits is built
    assert [shape for shape, *_ in allocated if shape[0] == 10]
    # The same refusal from the class itself, and the switch that turns the check off.
    cfg = _env(1).config
    with pytest.raises(MemoryError, match="at most 10 markets fit"):
        BatchedMarket(cfg, 11)
    monkeypatch.setenv("RECENV_MEMORY_CHECK", "0")
    BatchedMarket(cfg, 11)


def test_nothing_is_checked_where_the_available_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(footprint, "available_bytes", lambda device: None)
    footprint.check_fits(_env(1).config, 10**9)


def test_available_bytes_reads_meminfo_and_the_cgroup_limit(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemAvailable:  600 kB\nSwapFree:  100 kB\n")
    v2_max, v2_cur = tmp_path / "memory.max", tmp_path / "memory.current"
    v2_max.write_text("max\n")
    v2_cur.write_text("4096\n")
    monkeypatch.setattr(footprint, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(footprint, "_CGROUP_LIMITS", ((str(v2_max), str(v2_cur)),))
    assert footprint.available_bytes("cpu") == 700 * 1024  # no cgroup limit: meminfo
    v2_max.write_text(f"{300 * 1024 + 4096}\n")
    assert footprint.available_bytes("cpu") == 300 * 1024  # the container's limit is smaller
    v2_max.write_text(f"{10**6 * 1024}\n")
    assert footprint.available_bytes("cpu") == 700 * 1024
    monkeypatch.setattr(footprint, "_MEMINFO", str(tmp_path / "absent"))
    monkeypatch.setattr(footprint, "_CGROUP_LIMITS", ())
    assert footprint.available_bytes("cpu") is None
    assert footprint.available_bytes("meta") is None


def test_a_huge_page_table_the_kernel_refuses_is_a_memory_error(monkeypatch):
    import errno
    import mmap

    if not hugepages.enabled("cpu"):
        pytest.skip("no transparent huge pages here")

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)
    with pytest.raises(MemoryError, match=r"\(1024, 1024\) torch.float32 table"):
        hugepages.empty((1024, 1024), torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_available_bytes_on_cuda_counts_the_allocators_cache():
    total = torch.cuda.get_device_properties(0).total_memory
    before = footprint.available_bytes("cuda")
    assert 0 < before <= total
    x = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    assert footprint.available_bytes("cuda") <= before - (64 << 20) + (2 << 20)
    del x  # back in torch's cache, not the driver's: still available to a market
    assert footprint.available_bytes("cuda") >= before - (2 << 20)


# The catalog's check (recenv.core.footprint.check_catalog_fits): the catalog is shared by all
# markets and built before the batch's check, so it is checked before its first table.


def _catalog_bytes(catalog):
    """Bytes of the tables ``catalog`` holds: (its fields, the item rows and novelty built on
    first use). Huge-page slack is not a table's and not counted."""
    held = {k: v for k, v in vars(catalog).items() if torch.is_tensor(v)}
    tables = sum(v.numel() * v.element_size() for k, v in held.items() if not k.startswith("_"))
    rows = sum(v.numel() * v.element_size() for k, v in held.items() if k.startswith("_"))
    assert set(held) - {k for k in held if not k.startswith("_")} == {"_item_rows", "_novelty"}
    return tables, rows


def _interaction_log():
    import numpy as np

    from recenv.data.logs import InteractionLog

    r = np.random.default_rng(5)
    U, I = 30, 400
    user = np.concatenate([np.arange(U), r.integers(0, U, 3000)])
    item = np.concatenate([np.arange(I), r.integers(0, I, len(user) - I)])
    rating = r.integers(1, 6, len(user)).astype(np.float64)
    ids = dict(user_ids=np.arange(U), item_ids=np.arange(I))
    return InteractionLog(
        user=user, item=item, rating=rating, timestamp=None, rating_kind="explicit", **ids
    )


_CATALOG_CASES = [
    ("recenv/Market-v0", {}),
    ("recenv/Music-v0", {}),
    ("recenv/Video-v0", {}),
    ("recenv/ECommerce-v0", {}),
    ("recenv/Market-v0", dict(ownership="shared", num_items=3000, num_topics=3)),
    ("recenv/Market-v0", dict(num_agents=4, embed_dim=96, num_topics=40, num_items=5000)),
    (
        "recenv/Market-v0",
        dict(num_agents=1, embed_dim=1, num_topics=1, max_item_topics=1, num_items=500),
    ),
    ("recenv/FromLog-v0", dict(num_topics=4, embed_dim=3, num_candidates=5)),
    *[("recenv/Market-v0", f"random-{seed}") for seed in range(4)],
]


@pytest.mark.parametrize(("scenario", "config"), _CATALOG_CASES)
def test_catalog_nbytes_is_a_lower_bound_of_the_tables_a_built_catalog_holds(scenario, config):
    """The estimate, from the config alone, never exceeds the tables a market's catalog holds
    (so the check refuses no catalog that fits) and is at least half of them; the item rows'
    part is exact. FromLog-v0 builds its catalog through ``build_catalog`` too (the drawn
    columns, then the log's topics, embeddings and popularity), so the check applies there."""
    if isinstance(config, str):
        from test_random_configs import random_config

        config = random_config(int(config.split("-")[1]))
    if scenario == "recenv/FromLog-v0":
        config = dict(config, log=_interaction_log())
    env = recenv.make_vec(scenario, num_envs=2, seed=0, **config)
    cfg = env.config
    tables, rows = _catalog_bytes(env.catalog)
    est_tables = footprint.catalog_nbytes(cfg, rows=False)
    est_rows = footprint.catalog_nbytes(cfg, tables=False)
    assert footprint.catalog_nbytes(cfg) == est_tables + est_rows
    assert est_rows == rows
    assert tables / 2 <= est_tables <= tables
    assert (tables + rows) / 2 <= footprint.catalog_nbytes(cfg) <= tables + rows


def _spy_allocations(monkeypatch):
    """Record the catalog's first draw (its generator) and every huge-page table."""
    from recenv.core import catalog as catalog_module

    drawn, tables = [], []
    real_generator, real_full = torch.Generator, hugepages.full

    class Generator(real_generator):  # type: ignore[misc, valid-type]
        def manual_seed(self, seed):
            drawn.append(seed)
            return super().manual_seed(seed)

    monkeypatch.setattr(catalog_module.torch, "Generator", Generator)
    monkeypatch.setattr(hugepages, "full", lambda *a, **k: tables.append(a) or real_full(*a, **k))
    return drawn, tables


@pytest.mark.parametrize("scenario", ["recenv/Market-v0", "recenv/Music-v0"])
def test_a_catalog_larger_than_the_available_memory_is_refused_by_name(monkeypatch, scenario):
    """Regression test: the catalog (``num_items x (num_topics + embed_dim)`` and more, shared
    by all markets) was built before any check, so ``num_items=10**9`` failed with a bare
    ``OSError: [Errno 12]`` or was granted by overcommit and touched until the OOM killer came.
    It is refused before its first draw, naming the sizes, the bytes and how many items fit;
    Music-v0 builds its catalog before the market does, and is refused the same way."""
    from recenv.core.config import MarketConfig

    free = 64 * 2**20
    monkeypatch.setattr(footprint, "available_bytes", lambda device: free)
    drawn, tables = _spy_allocations(monkeypatch)
    with pytest.raises(ValueError, match=r"num_items=1000000 x \(num_topics=") as e:
        recenv.make_vec(scenario, num_envs=1, seed=0, num_items=10**6, embed_dim=64)
    assert isinstance(e.value.__cause__, MemoryError)
    text = str(e.value)
    assert "embed_dim=64" in text and "0.06 GiB available on cpu" in text
    assert "RECENV_MEMORY_CHECK=0" in text
    assert drawn == [] and tables == []  # refused before the catalog's first table
    # "At most N items fit" is the most the estimate allows in what is available.
    fit = int(text.split("at most ")[1].split(" items fit")[0].replace(",", ""))
    cfg = MarketConfig(num_items=fit, embed_dim=64)
    parts = {"rows": False} if scenario == "recenv/Music-v0" else {}
    assert footprint.catalog_nbytes(cfg, **parts) <= free
    assert footprint.catalog_nbytes(MarketConfig(num_items=fit + 1, embed_dim=64), **parts) > free
    # The PettingZoo face the same; what fits is built; the switch turns the check off.
    with pytest.raises(ValueError, match=r"num_items=1000000 x"):
        recenv.make(scenario, num_items=10**6, embed_dim=64)
    recenv.make_vec(scenario, num_envs=1, seed=0).reset()
    assert drawn
    monkeypatch.setattr(footprint, "available_bytes", lambda device: 2**18)
    with pytest.raises(ValueError, match="num_items="):
        recenv.make_vec(scenario, num_envs=1, seed=0)
    monkeypatch.setenv("RECENV_MEMORY_CHECK", "0")
    recenv.make_vec(scenario, num_envs=1, seed=0).reset()


def test_a_given_catalog_is_checked_for_what_the_market_still_allocates(monkeypatch):
    """A catalog given to the market already holds its tables (in memory: not counted again,
    or a catalog that fits would be refused); the item rows it builds from them are checked,
    and refused as a built catalog is, from the class itself as a ``MemoryError``."""
    from recenv.core.catalog import build_catalog
    from recenv.core.config import MarketConfig

    cfg = MarketConfig(num_items=4000, embed_dim=40)
    catalog = build_catalog(cfg)
    rows = footprint.catalog_nbytes(cfg, tables=False)
    monkeypatch.setattr(footprint, "available_bytes", lambda device: rows)  # the rows fit
    assert footprint.catalog_nbytes(cfg) > rows
    BatchedMarket(cfg, 1, catalog=catalog)
    with pytest.raises(MemoryError, match="num_items=4000 x"):
        BatchedMarket(cfg, 1)  # a catalog to build: its tables as well
    monkeypatch.setattr(footprint, "available_bytes", lambda device: rows - 1)
    with pytest.raises(MemoryError, match="embed_dim=40"):
        BatchedMarket(cfg, 1, catalog=catalog)
    monkeypatch.setenv("RECENV_MEMORY_CHECK", "0")
    BatchedMarket(cfg, 1, catalog=catalog)
    BatchedMarket(cfg, 1)
