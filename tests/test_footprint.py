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
