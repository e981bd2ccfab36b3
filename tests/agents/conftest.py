"""Fixtures for the agents' tests.

Torch runs single-threaded here: the agents' tensors are small, and on a shared two-core
machine intra-op threads fighting other processes made steps 10-20x slower.
"""

from __future__ import annotations

import pytest
import torch

import recenv

MARKET = "recenv/Market-v0"


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def market():
    """``market(num_envs=4, seed=0, **config)``: a small batched Market-v0."""

    def build(num_envs: int = 4, seed: int = 0, **config):
        config.setdefault("horizon", 30)
        return recenv.make_vec(MARKET, num_envs=num_envs, seed=seed, **config)

    return build
