"""Every agent trains and acts the same whatever ``torch.set_default_dtype`` says.

``torch.set_default_dtype(torch.float64)`` is process-wide and common in scientific code.
Before the agents named their dtypes, IQL, IPPO, MAPPO and LinUCB stopped at their first
update with ``RuntimeError: mat1 and mat2 must have the same dtype`` (float64 layers met
float32 observations), and the others drew their exploration, random keys and initial
weights from other bits of the same seeded generators (float64 draws).
"""

from __future__ import annotations

import pytest
import torch

import agents
from tests.agents.test_agent_smoke import SMOKE_CONFIG


def _trained(name: str, env_for) -> tuple[dict, dict]:
    """Agent ``name``'s state after 96 env steps of learning on 4 short Market-v0 markets, and
    the episode metrics of a greedy evaluation after it."""
    env = env_for(name, num_envs=4, seed=1, horizon=5)
    agent = agents.make_agent(name, env, **SMOKE_CONFIG.get(name, {}))
    agents.train(agent, env, 96, seed=0)
    return agent.state_dict(), agents.evaluate(agent, env, seed=1).episodes


def _assert_same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        # torch's optimizers keep their step count in the default dtype (float64 under it; a
        # count, read as a Python number by the update): its value must agree, not its dtype.
        if not where.endswith(".step"):
            assert a.dtype == b.dtype, f"{where}: {a.dtype} against {b.dtype}"
        assert torch.equal(a, b.to(a.dtype)), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", agents.registered_agents())
def test_an_agent_trains_the_same_under_a_float64_default_dtype(name, env_for):
    before = torch.get_default_dtype()
    try:
        runs = []
        for dtype in (torch.float32, torch.float64):
            torch.set_default_dtype(dtype)
            runs.append(_trained(name, env_for))
    finally:
        torch.set_default_dtype(before)
    _assert_same(runs[0][0], runs[1][0], f"{name} state")
    _assert_same(runs[0][1], runs[1][1], f"{name} evaluation")
