"""The memory and traffic figures the benchmark reports come from the core's own accounting:
check that accounting against the tensors the core really holds and produces."""

from __future__ import annotations

import pytest
import torch

import recenv


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
