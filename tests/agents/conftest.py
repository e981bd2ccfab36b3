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


def supported_mode_kwargs(name: str, mode: str) -> dict:
    """``{"reward_mode": …}`` when agent ``name`` does not support ``mode`` (e.g. value
    decomposition is for cooperative markets), else ``{}``."""
    import agents

    cls = agents.agent_class(name)
    supported = getattr(cls, "supports_reward_modes", (mode,))
    return {} if mode in supported else {"reward_mode": supported[0]}


@pytest.fixture
def env_for():
    """``env_for(name, env_id="recenv/Market-v0", face="batched", **kw)``: an env of ``env_id``
    whose reward mode agent ``name`` supports (``face="pettingzoo"`` for ``recenv.make``)."""

    def build(name: str, env_id: str = MARKET, face: str = "batched", **kw):
        if face == "batched":
            kw.setdefault("num_envs", 4)
            env = recenv.make_vec(env_id, **kw)
        else:
            env = recenv.make(env_id, **kw)
        fix = supported_mode_kwargs(name, env.config.reward_mode)
        if fix:
            return build(name, env_id, face, **{**kw, **fix})
        return env

    return build
