"""The memory and traffic figures the benchmark reports come from the core's own accounting:
check that accounting against the tensors the core really holds and produces."""

from __future__ import annotations

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
    parts = {k: v for k, v in traffic.items() if k != "total"}
    assert traffic["total"] == sum(parts.values())
    assert all(v > 0 for v in parts.values())
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
