"""The Gymnasium vector view of the batched market (one learning agent, fixed opponents).

Market ``n`` of ``make_single_agent_vec(id, num_envs=N, seed=s)`` is the PettingZoo env
``make(id, seed=s + n)`` seen by one agent, across NEXT_STEP auto-resets.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, VectorEnv

import recenv
from recenv.integrations.gymnasium_vector import (
    RandomSlatePolicy,
    SingleAgentVectorEnv,
    make_single_agent_vec,
)

MARKET = "recenv/Market-v0"
SMALL = {"num_items": 500, "horizon": 8}


def test_declares_next_step_autoreset_and_batched_spaces():
    env = make_single_agent_vec(MARKET, num_envs=3, seed=0, **SMALL)
    assert isinstance(env, VectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.metadata["autoreset_mode"].value == env.market.autoreset_mode
    pz = recenv.make(MARKET, seed=0, **SMALL)
    assert env.single_observation_space == pz.observation_space("agent_0")
    assert env.single_action_space == pz.action_space("agent_0")
    assert env.observation_space["candidates"].shape == (3, 20, 22)
    assert env.action_space.shape == (3, 3)
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    flat = make_single_agent_vec(MARKET, num_envs=2, seed=0, flatten_obs=True, **SMALL)
    pz_flat = recenv.make(MARKET, seed=0, flatten_obs=True, **SMALL)
    assert flat.single_observation_space == pz_flat.observation_space("agent_0")
    obs, info = flat.reset()
    assert flat.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:, -20:], info["action_mask"])


def test_markets_equal_pettingzoo_envs_across_autoresets(env_id, small, feature_policy):
    """Agent 0 plays a feature policy, agent 1 the oracle; every market equals a PettingZoo env
    seeded ``s + n``: observations, rewards, flags, infos, episode metrics, reset steps."""
    kwargs, N, seed = small(env_id, horizon=6), 2, 21
    vec = make_single_agent_vec(env_id, num_envs=N, seed=seed, opponents="oracle", **kwargs)
    singles = [recenv.make(env_id, seed=seed + n, **kwargs) for n in range(N)]
    others = vec.market.agents[1:]
    K = vec.market.config.slate_size
    obs, _ = vec.reset()
    single_obs = [e.reset()[0] for e in singles]
    resets = 0
    for t in range(2 * (kwargs["horizon"] + 1) + 2):
        for n in range(N):
            for key, value in single_obs[n]["agent_0"].items():
                np.testing.assert_array_equal(obs[key][n], value, err_msg=f"t={t} n={n} {key}")
        actions = feature_policy(
            torch.as_tensor(obs["candidates"]), torch.as_tensor(obs["action_mask"]), K
        ).numpy()
        opp = [{a: e.oracle_slate(a) for a in others} for e in singles]
        obs, rew, term, trunc, info = vec.step(actions)
        for n, env in enumerate(singles):
            if info["reset"][n]:
                resets += 1
                assert rew[n] == 0.0 and not term[n] and not trunc[n]
                single_obs[n], _ = env.reset()
                continue
            single_obs[n], s_rew, s_term, s_trunc, s_info = env.step(
                {"agent_0": actions[n], **opp[n]}
            )
            assert rew[n] == s_rew["agent_0"] and term[n] == s_term["agent_0"]
            assert trunc[n] == s_trunc["agent_0"]
            assert info["clicked"][n] == s_info["agent_0"]["clicked"]
            assert info["engagement"][n] == pytest.approx(s_info["agent_0"]["engagement"])
            ended = "episode" in s_info["agent_0"]
            assert ended == bool(info.get("_episode_metrics", np.zeros(N, bool))[n])
            if ended:
                ep = info["episode_metrics"]
                assert ep["return"][n] == pytest.approx(s_info["agent_0"]["episode"]["return"])
    assert resets >= N


def test_next_step_reset_step_and_episode_metrics():
    env = make_single_agent_vec(MARKET, num_envs=2, seed=3, **SMALL)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(SMALL["horizon"] - 1):
        acts = [env.single_action_space.sample(obs["action_mask"][n]) for n in range(2)]
        obs, rew, term, trunc, info = env.step(np.stack(acts))
        assert not (term | trunc).any() and "episode_metrics" not in info
    final = np.stack([rng.permutation(np.flatnonzero(m))[:3] for m in obs["action_mask"]])
    obs, rew, term, trunc, info = env.step(final)
    assert trunc.all() and not term.any()
    assert info["_episode_metrics"].all()
    assert set(info["episode_metrics"]) >= {"return", "ctr", "retention", "market_share"}
    assert info["episode_metrics"]["length"].tolist() == [SMALL["horizon"]] * 2
    # The next step starts new episodes and ignores the actions (even invalid ones).
    obs, rew, term, trunc, info = env.step(np.zeros((2, 3), dtype=np.int64))
    assert info["reset"].all() and (rew == 0).all() and not (term | trunc).any()
    assert env.observation_space.contains(obs)


def test_record_episode_statistics_composes():
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(make_single_agent_vec(MARKET, num_envs=2, seed=1, **SMALL))
    obs, _ = env.reset(seed=1)
    for _ in range(SMALL["horizon"]):
        acts = [env.single_action_space.sample(obs["action_mask"][n]) for n in range(2)]
        obs, _, _, _, info = env.step(np.stack(acts))
    assert info["_episode"].all() and (info["episode"]["l"] == SMALL["horizon"]).all()
    np.testing.assert_allclose(info["episode"]["r"], info["episode_metrics"]["return"], rtol=1e-5)


def test_tensor_mode_matches_numpy_mode():
    a = make_single_agent_vec(MARKET, num_envs=2, seed=4, **SMALL)
    b = make_single_agent_vec(MARKET, num_envs=2, seed=4, tensors=True, **SMALL)
    oa, _ = a.reset()
    ob, _ = b.reset()
    for _ in range(SMALL["horizon"] + 2):
        assert all(torch.is_tensor(v) for v in ob.values())
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k].numpy(), err_msg=k)
        acts = b.market.oracle_slates()[:, 0]
        oa, ra, ta, tra, ia = a.step(acts.numpy())
        ob, rb, tb, trb, ib = b.step(acts)
        assert torch.is_tensor(rb) and torch.is_tensor(tb) and torch.is_tensor(ib["reset"])
        np.testing.assert_allclose(ra, rb.numpy())
        np.testing.assert_array_equal(ta, tb.numpy())
        np.testing.assert_array_equal(tra, trb.numpy())
        np.testing.assert_array_equal(ia["reset"], ib["reset"].numpy())


def test_seeded_reset_reproduces_random_opponents():
    def run():
        env = make_single_agent_vec(MARKET, num_envs=2, opponents="random", **SMALL)
        obs, _ = env.reset(seed=9)
        total = np.zeros(2)
        for _ in range(SMALL["horizon"]):
            obs, rew, *_ = env.step(env.market.oracle_slates()[:, 0])
            total += rew
        return total, obs["candidate_ids"]

    (r1, c1), (r2, c2) = run(), run()
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(c1, c2)


def test_a_view_of_a_seeded_market_replays_with_it():
    """``SingleAgentVectorEnv`` seeds its random opponents from the market's
    ``pending_seed`` (the constructor's seed until the first reset takes it), so a view built
    over ``make_vec(..., seed=s)`` plays the trajectory of ``make_single_agent_vec(..., seed=s)``
    and of itself built again; after a reset the market has no pending seed."""
    market = recenv.make_vec(MARKET, num_envs=2, seed=4, **SMALL)
    assert market.pending_seed == 4

    def rewards(env):
        env.reset()
        return np.stack([env.step(env.market.oracle_slates()[:, 0])[1] for _ in range(5)])

    view = SingleAgentVectorEnv(market, opponents="random")
    first = rewards(view)
    assert market.pending_seed is None
    again = SingleAgentVectorEnv(recenv.make_vec(MARKET, num_envs=2, seed=4, **SMALL))
    np.testing.assert_array_equal(first, rewards(again))
    made = make_single_agent_vec(MARKET, num_envs=2, seed=4, opponents="random", **SMALL)
    np.testing.assert_array_equal(first, rewards(made))


def test_refused_seed_reseeds_nothing():
    """A seed past int64 is refused, naming the range, before the opponents are reseeded
    (it was torch's "Overflow when unpacking long long" from an opponent's generator): the
    next unseeded reset continues the streams as if the refused call never happened."""

    def opponent_draws(refuse: bool):
        env = make_single_agent_vec(MARKET, num_envs=2, seed=9, opponents="random", **SMALL)
        env.reset()
        if refuse:
            with pytest.raises(ValueError, match=r"out of range.*2\*\*63 - 2"):
                env.reset(seed=2**70)
        env.reset()
        (policy,) = env.opponents.values()
        return policy(env.market.observe()["agent_1"])

    torch.testing.assert_close(opponent_draws(True), opponent_draws(False))


def test_custom_opponents_and_clear_errors():
    market = recenv.make_vec(MARKET, num_envs=2, seed=0, num_agents=3, **SMALL)
    seen = []

    def lazy(obs):
        seen.append(obs["action_mask"].shape)
        return RandomSlatePolicy(3, seed=0)(obs)

    env = SingleAgentVectorEnv(market, "agent_1", {"agent_0": "oracle", "agent_2": lazy})
    env.reset()
    env.step(market.oracle_slates()[:, 1])
    assert seen == [(2, 20)]
    with pytest.raises(ValueError, match="missing"):
        SingleAgentVectorEnv(market, "agent_1", {"agent_0": "oracle"})
    with pytest.raises(ValueError, match="not in the market"):
        SingleAgentVectorEnv(market, "agent_7")
    with pytest.raises(ValueError, match="neither"):
        SingleAgentVectorEnv(market, "agent_0", "greedy")
    with pytest.raises(ValueError, match="one int"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="invalid slate"):
        env.step(np.zeros((2, 3), dtype=np.int64))


@pytest.mark.parametrize("option", ["flatten_obs", "tensors"])
@pytest.mark.parametrize("bad", ["no", "False", 1, None, np.bool_(True)], ids=repr)
def test_view_options_must_be_bools(option, bad, monkeypatch):
    """``flatten_obs`` and ``tensors`` that are not bools are refused by name, as
    ``recenv.make`` refuses its ``flatten_obs``; ``make_single_agent_vec`` refuses them before
    building the market.

    Regression test: both were coerced with ``bool()``, so ``flatten_obs="no"`` gave flat
    observations and ``tensors="False"`` tensors."""
    market = recenv.make_vec(MARKET, num_envs=2, seed=0, **SMALL)
    with pytest.raises(ValueError, match=rf"^{option}={bad!r} must be a bool"):
        SingleAgentVectorEnv(market, **{option: bad})

    def no_build(*args, **kwargs):
        raise AssertionError("the market was built")

    monkeypatch.setattr(recenv.registry, "make_vec", no_build)
    with pytest.raises(ValueError, match=rf"^{option}={bad!r} must be a bool"):
        make_single_agent_vec(MARKET, num_envs=2, **{option: bad}, **SMALL)


def test_actions_are_read_as_the_market_reads_them():
    """The learner's actions are read as the batched market reads a slate: a masked array is
    refused naming the agent (``np.asarray`` dropped its mask), a big-endian or read-only
    array is read as its values, and an unreadable one gets the market's message."""
    env = make_single_agent_vec(MARKET, num_envs=2, seed=0, opponents="oracle", **SMALL)
    twin = make_single_agent_vec(MARKET, num_envs=2, seed=0, opponents="oracle", **SMALL)
    env.reset()
    twin.reset()
    slates = env.market.oracle_slates()[:, 0].numpy()
    masked = np.ma.array(slates, mask=np.eye(2, 3, dtype=bool))
    with pytest.raises(ValueError, match=r"^action of agent_0: a masked array"):
        env.step(masked)
    with pytest.raises(ValueError, match=r"^action of agent_0: cannot read None.*num_envs=2"):
        env.step(None)
    swapped = slates.astype(">i8")
    swapped.setflags(write=False)
    assert data_equivalence(env.step(swapped), twin.step(slates))


def _opponent_obs(num_envs: int = 4):
    market = recenv.make_vec(MARKET, num_envs=num_envs, seed=1, **SMALL)
    return market.reset()["agent_1"]


def test_copies_of_an_unseeded_random_opponent_draw_apart():
    """An unseeded ``RandomSlatePolicy`` takes its entropy at its first draw, as the market at
    its first unseeded reset: copies made before it (pickled into workers, deep-copied with
    their env) play different moves. Drawn at construction, every copy played the same;
    a seeded policy's copies still replay one another."""
    obs = _opponent_obs()
    unseeded = RandomSlatePolicy(3)
    copies = [pickle.loads(pickle.dumps(unseeded)) for _ in range(4)] + [copy.deepcopy(unseeded)]
    draws = [torch.cat([p(obs) for _ in range(3)]) for p in copies]
    assert len({tuple(d.flatten().tolist()) for d in draws}) == len(draws)
    seeded = RandomSlatePolicy(3, seed=7)
    twins = [pickle.loads(pickle.dumps(seeded)) for _ in range(2)]
    torch.testing.assert_close(twins[0](obs), twins[1](obs), rtol=0, atol=0)
    torch.testing.assert_close(seeded(obs), twins[0].__class__(3, seed=7)(obs), rtol=0, atol=0)


def test_a_refused_step_leaves_an_unseeded_opponent_unseeded():
    """A step that an opponent's bad slate refuses puts the random opponents back where they
    stood, the not-yet-seeded flag included: put back to the generator's state alone, an
    unseeded opponent drew from torch's fixed default seed from then on."""

    def bad_opponent(obs):
        return torch.zeros(obs["action_mask"].shape[0], 3, dtype=torch.int64)  # duplicates

    env = make_single_agent_vec(
        MARKET, num_envs=2, num_agents=3,
        opponents={"agent_1": "random", "agent_2": bad_opponent}, **SMALL,
    )  # fmt: skip
    env.reset()
    random_opponent = env.opponents["agent_1"]
    assert random_opponent.snapshot()[1]  # unseeded: no draw yet
    with pytest.raises(ValueError, match="agent_2"):
        env.step(env.market.oracle_slates()[:, 0])
    assert random_opponent.snapshot()[1]


def test_any_agent_learns_with_the_faces_flat_observations_repairs_and_episode_metrics():
    """The learner need not be agent_0: agent_1 of a three-agent market, with flat
    observations and repaired slates, sees in market ``n`` exactly what the flat PettingZoo env
    seeded ``s + n`` shows agent_1: the same vector (user, history, candidates, mask, in the
    face's order), its own repaired slots and clicks, and every episode metric of its own
    (agent_0, the oracle, repairs nothing and earns another return)."""
    kwargs = {**SMALL, "horizon": 5, "num_agents": 3, "invalid_slate": "repair"}
    N, seed, me = 2, 13, "agent_1"
    vec = make_single_agent_vec(
        MARKET, num_envs=N, seed=seed, agent=me, opponents="oracle", flatten_obs=True, **kwargs
    )
    singles = [recenv.make(MARKET, seed=seed + n, flatten_obs=True, **kwargs) for n in range(N)]
    others = [a for a in vec.market.agents if a != me]
    K = vec.market.config.slate_size
    obs, info = vec.reset()
    single_obs = [e.reset()[0] for e in singles]
    repaired = ended = 0
    for t in range(2 * (kwargs["horizon"] + 1)):
        for n in range(N):
            np.testing.assert_array_equal(obs[n], single_obs[n][me], err_msg=f"t={t} n={n}")
        actions = np.stack([np.flatnonzero(m)[:K] for m in info["action_mask"]])
        if t % 2:
            actions[:, 1] = actions[:, 0]  # a repeated candidate: one slot repaired
        opp = [{a: e.oracle_slate(a) for a in others} for e in singles]
        obs, rew, _, _, info = vec.step(actions)
        for n, env in enumerate(singles):
            if info["reset"][n]:
                single_obs[n], _ = env.reset()
                continue
            single_obs[n], s_rew, _, _, s_info = env.step({me: actions[n], **opp[n]})
            mine = s_info[me]
            assert rew[n] == s_rew[me]
            assert info["repaired_slots"][n] == mine["repaired_slots"]
            assert info["clicked"][n] == mine["clicked"]
            repaired += mine["repaired_slots"]
            if "episode" in mine:
                ended += 1
                got = {k: v[n] for k, v in info["episode_metrics"].items()}
                assert set(got) <= set(mine["episode"])
                for key, value in got.items():
                    face = mine["episode"][key]  # market_share: every agent's, in order
                    want = face[vec.market.agents.index(me)] if isinstance(face, list) else face
                    assert value == pytest.approx(want), key
    assert repaired > 0 and ended >= N


def test_each_random_opponent_draws_its_own_documented_stream():
    """Opponent ``i`` (1-based, in the market's agent order) is seeded ``s + i * 1,000,003``
    by ``reset(seed=s)``: the two random opponents of a three-agent market draw apart, and
    neither replays the market's own seed."""
    vec = make_single_agent_vec(MARKET, num_envs=2, num_agents=3, opponents="random", **SMALL)
    vec.reset(seed=7)
    for i, name in enumerate(("agent_1", "agent_2"), start=1):
        policy = vec.opponents[name]
        assert isinstance(policy, RandomSlatePolicy)
        want = torch.Generator().manual_seed(7 + i * 1_000_003).get_state()
        assert torch.equal(policy.generator.get_state(), want), name
    obs = vec.market.observe()
    same_mask = {"action_mask": obs["agent_1"]["action_mask"]}
    one, two = (vec.opponents[a](same_mask) for a in ("agent_1", "agent_2"))
    assert not torch.equal(one, two)
