"""TorchRL: recenv envs pass ``check_env_specs`` under ``PettingZooWrapper`` and roll out across
episode ends, transition for transition equal to the PettingZoo env."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytest.importorskip("torchrl")

from torchrl.envs.utils import check_env_specs

import recenv
from recenv.integrations.torchrl import group_map, make_torchrl_env

MARKET = "recenv/Market-v0"


def test_check_env_specs_passes(env_id, small):
    env = make_torchrl_env(env_id, seed=0, **small(env_id, horizon=6))
    check_env_specs(env, seed=1)
    assert env.group_map == {"agents": env.possible_agents}
    assert "state" in env.observation_spec.keys()


@pytest.mark.parametrize("grouping", ["per-agent", {"red": ["agent_1"], "blue": ["agent_0"]}])
@pytest.mark.parametrize("flatten_obs", [False, True])
def test_check_env_specs_passes_for_groupings_and_flat_obs(grouping, flatten_obs):
    env = make_torchrl_env(
        MARKET, grouping=grouping, seed=0, flatten_obs=flatten_obs, num_items=500, horizon=6
    )
    check_env_specs(env, seed=1)
    assert env.group_map == group_map(env.possible_agents, grouping)
    group = next(iter(env.group_map))
    if flatten_obs:  # the mask travels in infos: TorchRL still finds it
        assert env.observation_spec[group, "observation"].shape == (1, 498)
    assert env.observation_spec[group, "action_mask"].shape == (1, 3, 20)


def test_rollout_across_episode_ends_equals_the_pettingzoo_env():
    H, seed, kwargs = 6, 3, {"num_items": 500, "horizon": 6}
    env = make_torchrl_env(MARKET, seed=seed, **kwargs)
    td = env.rollout(2 * H + 3, break_when_any_done=False)
    done = td["next", "done"].squeeze(-1)
    assert done.nonzero().flatten().tolist() == [H - 1, 2 * H - 1]
    actions = td["agents", "action"]  # [T, 2, K]
    mask = td["agents", "action_mask"]  # [T, 2, K, C]
    assert actions.shape[1:] == (2, 3) and mask.shape[1:] == (2, 3, 20)
    assert mask.gather(-1, actions.unsqueeze(-1)).all()  # rand() respects the action mask
    assert torch.isfinite(td["next", "agents", "reward"]).all()

    ref = recenv.make(MARKET, seed=seed, invalid_slate="repair", **kwargs)
    ref.reset()  # the wrapper's seeded reset at construction
    obs, _ = ref.reset()  # rollout() resets again, continuing the stream
    for t in range(td.shape[0]):
        for i, agent in enumerate(ref.possible_agents):
            cands = td["agents", "observation", "candidates"][t, i].numpy()
            np.testing.assert_array_equal(cands, obs[agent]["candidates"], err_msg=f"t={t}")
            np.testing.assert_array_equal(mask[t, i, 0].numpy(), obs[agent]["action_mask"] == 1)
        obs, rew, term, trunc, _ = ref.step(
            {a: actions[t, i].numpy() for i, a in enumerate(ref.possible_agents)}
        )
        got = td["next", "agents", "reward"][t].squeeze(-1).tolist()
        assert got == pytest.approx([rew[a] for a in ref.possible_agents])
        assert bool(done[t]) == (any(trunc.values()) or any(term.values()))
        if bool(done[t]):
            obs, _ = ref.reset()  # what the TorchRL wrapper does after a done


def test_group_map_helper():
    agents = ["agent_0", "agent_1", "agent_2"]
    assert group_map(agents) == {"agents": agents}
    assert group_map(agents, "per-agent") == {a: [a] for a in agents}
    teams = {"red": ["agent_0", "agent_2"], "blue": ["agent_1"]}
    assert group_map(agents, teams) == teams
    with pytest.raises(ValueError, match="exactly one group"):
        group_map(agents, {"red": ["agent_0"]})
    with pytest.raises(ValueError, match="allowed"):
        group_map(agents, "teams")
    # TorchRL's own enum, as its users write it.
    from torchrl.envs.utils import MarlGroupMapType

    assert group_map(agents, MarlGroupMapType.ALL_IN_ONE_GROUP) == group_map(agents, "shared")
    assert group_map(agents, MarlGroupMapType.ONE_GROUP_PER_AGENT) == group_map(agents, "per-agent")


AGENTS = ["agent_0", "agent_1"]
BAD_GROUPS = [
    # TorchRL took these and failed during a step: RecursionError ("next", "_reset"), a
    # ValueError about "reward" ("done", ...), TypeError ("state" with return_state, int keys).
    *[({g: AGENTS}, f"group name {g!r} is not allowed") for g in ("next", "done", "terminated")],
    ({"truncated": AGENTS}, "group name 'truncated' is not allowed"),
    ({"_reset": AGENTS}, "group name '_reset' is not allowed"),
    ({"state": AGENTS}, "group name 'state' is not allowed"),
    ({0: ["agent_0"], 1: ["agent_1"]}, "group name 0 is not allowed; group names are non-empty"),
    ({"": AGENTS}, "group name '' is not allowed"),
    ({"red": AGENTS, "blue": []}, "group 'blue' is empty"),
    ({"red": "agent_0", "blue": ["agent_1"]}, "group 'red' must list its agents"),
    ({"red": ["agent_0", "agent_0", "agent_1"]}, "must put each of"),
]


@pytest.mark.parametrize(("grouping", "message"), BAD_GROUPS, ids=[repr(g) for g, _ in BAD_GROUPS])
def test_group_maps_torchrl_cannot_use_are_refused(grouping, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        group_map(AGENTS, grouping)
    with pytest.raises(ValueError, match=re.escape(message)):
        make_torchrl_env(MARKET, grouping=grouping, seed=0, num_items=500, horizon=6)


def test_state_is_a_group_name_only_without_the_state():
    env = make_torchrl_env(
        MARKET, grouping={"state": AGENTS}, return_state=False, seed=0, num_items=500, horizon=6
    )
    check_env_specs(env, seed=1)
    assert env.group_map == {"state": AGENTS}


@pytest.mark.parametrize(("name", "value"), [("return_state", "no"), ("categorical_actions", 0)])
def test_flags_must_be_bools(name, value):
    """They were taken by truthiness: "no" returned the state."""
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r} must be True or False")):
        make_torchrl_env(MARKET, seed=0, num_items=500, horizon=6, **{name: value})
