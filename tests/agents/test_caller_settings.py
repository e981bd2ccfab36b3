"""Every agent trains and acts the same whatever default dtype or device the caller set.

``torch.set_default_dtype(torch.float64)`` and ``torch.set_default_device("cuda")`` are
process-wide and common in scientific and GPU code. Before the agents named their dtypes,
under a float64 default IQL, IPPO, MAPPO and LinUCB stopped at their first update with
``RuntimeError: mat1 and mat2 must have the same dtype`` (float64 layers met float32
observations), and the others drew their exploration, random keys and initial weights from
other bits of the same seeded generators. Under another default device (the meta device
here, standing in for CUDA) the networks were built there, from a generator the agent's seed
never set, and a transition's actions moved there: every learner failed.
"""

from __future__ import annotations

import pytest
import torch

import agents
from tests.agents.test_agent_smoke import SMOKE_CONFIG
from tests.conftest import CALLER_SETTINGS, caller_setting


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


@pytest.mark.parametrize("setting", sorted(CALLER_SETTINGS))
@pytest.mark.parametrize("name", agents.registered_agents())
def test_an_agent_trains_the_same_under_the_callers_default_dtype_or_device(name, setting, env_for):
    want = _trained(name, env_for)
    with caller_setting(setting):
        got = _trained(name, env_for)
    _assert_same(want[0], got[0], f"{name} state")
    _assert_same(want[1], got[1], f"{name} evaluation")


@pytest.mark.parametrize("name", agents.registered_agents())
def test_an_agent_evaluated_in_inference_mode_trains_after_it(name, env_for):
    """An evaluation under ``torch.inference_mode()`` before training (the usual guard of a
    periodic evaluation) left the market's state, and MF's user tables, as inference tensors:
    every agent's next ``train`` raised "Inplace update to inference tensor outside
    InferenceMode". Now it trains on to the state it reaches after an evaluation outside."""

    def run(inference: bool) -> dict:
        env = env_for(name, num_envs=4, seed=1, horizon=5)
        agent = agents.make_agent(name, env, **SMOKE_CONFIG.get(name, {}))
        with torch.inference_mode(inference):
            agents.evaluate(agent, env, seed=1)
        agents.train(agent, env, 96, seed=0)
        return agent.state_dict()

    _assert_same(run(False), run(True), f"{name} state")


@pytest.mark.parametrize("name", agents.registered_agents())
def test_an_agent_made_or_loaded_in_inference_mode_learns_outside_it(name, env_for, tmp_path):
    """``make_agent`` and ``load_agent`` inside ``torch.inference_mode()`` (an evaluation
    script loading a checkpoint) gave an agent of inference tensors, parameters included: its
    ``train`` outside raised ("Inplace update to inference tensor outside InferenceMode",
    "Inference tensors cannot be saved for backward"). Both build outside the caller's
    inference mode now; the agents train to what agents made and loaded outside it reach."""

    def run(inference: bool) -> tuple[dict, dict]:
        env = env_for(name, num_envs=4, seed=1, horizon=5)
        with torch.inference_mode(inference):
            made = agents.make_agent(name, env, **SMOKE_CONFIG.get(name, {}))
        agents.train(made, env, 48, seed=0)
        path = tmp_path / f"{name}-{inference}.pt"
        made.save(path)
        with torch.inference_mode(inference):
            loaded = agents.load_agent(path, env)
        agents.train(loaded, env, 48, seed=1)
        return made.state_dict(), loaded.state_dict()

    want, got = run(False), run(True)
    for i, what in enumerate(("made", "loaded")):
        _assert_same(want[i], got[i], f"{name} {what}")
