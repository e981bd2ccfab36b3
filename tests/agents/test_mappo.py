"""MAPPO and IPPO: the centralized critic's wiring, the Plackett-Luce slate distribution, GAE
across episode ends, learning, checkpoints, and the action mask."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import agents
import recenv
from agents.base import Transition, slate_from_scores
from agents.features import pair_features
from agents.mappo import IPPOAgent, MAPPOAgent, ValueNorm, sample_slate, slate_log_prob
from experiments.compare_marl import learning_check

MARKET = "recenv/Market-v0"
SMALL = {"rollout_steps": 8, "epochs": 2, "minibatches": 2, "actor_hidden": (32,)}


def valid_slates(slate: torch.Tensor, mask: torch.Tensor) -> bool:
    distinct = (slate[:, :, None] != slate[:, None, :]).sum((1, 2)) == slate.shape[
        1
    ] ** 2 - slate.shape[1]
    return bool(distinct.all()) and bool(mask.gather(1, slate).all())


# ----------------------------------------------------------------------------------------
# The critic is centralized for MAPPO, local for IPPO
# ----------------------------------------------------------------------------------------
def test_mappo_critic_reads_state_and_ippo_critic_reads_only_local_obs(market):
    """Perturb ``state()`` with the observations fixed, then the observations with the state
    fixed: MAPPO's values move only with the state, IPPO's only with the observations. The
    values come through ``critic_inputs``, the same path ``learn`` stores for GAE."""
    env = market(num_envs=8, seed=3, reward_mode="cooperative")
    mappo = agents.make_agent("mappo", env, seed=1)
    ippo = agents.make_agent("ippo", env, seed=1)
    assert mappo.needs_state and not ippo.needs_state
    obs = env.reset(seed=3)
    state = env.state()
    g = torch.Generator().manual_seed(0)
    state2 = state + torch.randn(state.shape, generator=g)
    obs2 = {
        a: {**o, "user": o["user"] + 0.5, "candidates": o["candidates"] + 0.5}
        for a, o in obs.items()
    }

    def moved(agent, o1, s1, o2, s2) -> bool:
        v1, v2 = agent.value(o1, s1), agent.value(o2, s2)
        return any(not torch.allclose(v1[a], v2[a]) for a in v1)

    assert moved(mappo, obs, state, obs, state2)
    assert not moved(mappo, obs, state, obs2, state)
    assert not moved(ippo, obs, state, obs, state2)
    assert moved(ippo, obs, state, obs2, state)
    # What learning stores as the critic's input is the state itself for MAPPO.
    x = mappo.critic_inputs(obs, state)
    assert torch.equal(x.expand(-1, 2, -1), state[:, None].expand(-1, 2, -1))
    assert ippo.critic_inputs(obs, None).shape[-1] != state.shape[-1]
    with pytest.raises(ValueError, match="needs the global state"):
        mappo.critic_inputs(obs, None)


def test_ippo_critic_pools_each_agents_unmasked_candidates(market):
    """IPPO's critic input for agent ``a``: the mean and the maximum of its pair features over
    its *unmasked* candidates; what masked candidates hold does not reach it."""
    env = market(num_envs=4, seed=0)
    ippo = agents.make_agent("ippo", env, seed=1)
    obs = env.reset(seed=0)
    g = torch.Generator().manual_seed(1)
    keep = {a: torch.rand(o["action_mask"].shape, generator=g) < 0.6 for a, o in obs.items()}
    obs = {a: {**o, "action_mask": o["action_mask"] & keep[a]} for a, o in obs.items()}
    x = ippo.critic_inputs(obs, None)  # [N, A, 2F]
    for i, a in enumerate(env.agents):
        pairs, mask = pair_features(ippo.layout, obs[a]), obs[a]["action_mask"]
        assert bool((~mask).any(1).all()) and bool(mask.any(1).all())
        for n in range(4):
            mine = pairs[n][mask[n]]
            torch.testing.assert_close(x[n, i], torch.cat([mine.mean(0), mine.amax(0)]))
    junk = {
        a: {**o, "candidates": torch.where(o["action_mask"][..., None], o["candidates"], 1e3)}
        for a, o in obs.items()
    }
    assert torch.equal(ippo.critic_inputs(junk, None), x)


@pytest.mark.parametrize("name", ["mappo", "ippo"])
def test_each_agent_acts_with_its_own_actor_greedily_or_by_sampling(market, name):
    """With ``shared_actor=False`` agent ``i``'s logits come from ``actors[i]`` alone; greedy
    acting (``explore=False``) is the top-K unmasked logits, every time; exploring samples."""
    env = market(num_envs=8, seed=0)
    agent = agents.make_agent(name, env, shared_actor=False, **SMALL)
    assert len(agent.actors) == len(env.agents) == 2
    obs = env.reset(seed=0)
    before = [agent.logits(i, obs[a]) for i, a in enumerate(env.agents)]
    with torch.no_grad():
        for p in agent.actors[1].parameters():
            p.add_(0.5)
    after = [agent.logits(i, obs[a]) for i, a in enumerate(env.agents)]
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1])
    K = env.config.slate_size
    greedy = agent.act(obs, explore=False)
    for i, a in enumerate(env.agents):
        want = slate_from_scores(after[i], obs[a]["action_mask"], K)
        assert torch.equal(greedy[a], want)
    assert all(torch.equal(s, greedy[a]) for a, s in agent.act(obs, explore=False).items())
    sampled = [agent.act(obs, explore=True) for _ in range(5)]
    assert any(not torch.equal(s[a], greedy[a]) for s in sampled for a in env.agents)


def test_mappo_gets_the_state_through_the_rollout(market):
    env = market(num_envs=2, seed=0, reward_mode="cooperative")
    mappo = agents.make_agent("mappo", env, **SMALL)
    seen = []
    original = mappo.learn

    def spy(tr: Transition):
        seen.append((tr.state, tr.next_state))
        return original(tr)

    mappo.learn = spy
    agents.train(mappo, env, 4)
    assert seen[0][0] is not None and seen[0][0].shape == (2, env.config.state_dim)


# ----------------------------------------------------------------------------------------
# The slate distribution
# ----------------------------------------------------------------------------------------
def test_plackett_luce_log_probs_are_exact_and_sampling_matches():
    """``slate_log_prob`` sums to one over every ordered slate of distinct unmasked candidates,
    gives masked ones no mass, and Gumbel-top-k draws follow it."""
    logits = torch.tensor([[1.0, -0.5, 0.3, 2.0, 9.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    slates = torch.tensor(list(itertools.permutations(range(5), 2)))
    log_p, _ = slate_log_prob(logits.expand(len(slates), -1), mask.expand(len(slates), -1), slates)
    p = log_p.exp()
    legal = mask[0, slates].all(1)
    assert torch.allclose(p[legal].sum(), torch.tensor(1.0), atol=1e-6)
    assert p[~legal].max() < 1e-30
    n = 40_000
    g = torch.Generator().manual_seed(0)
    drawn = sample_slate(logits.expand(n, -1), mask.expand(n, -1), 2, g)
    code = drawn[:, 0] * 5 + drawn[:, 1]
    freq = torch.bincount(code, minlength=25).float() / n
    expect = torch.zeros(25).index_put_((slates[:, 0] * 5 + slates[:, 1],), p)
    assert (freq - expect).abs().max() < 0.01


def test_entropy_estimate_of_a_uniform_policy():
    """Uniform logits over C candidates: the per-step estimate is exactly log C + log(C-1)."""
    C = 6
    slate = torch.tensor([[0, 1], [3, 5]])
    _, ent = slate_log_prob(torch.zeros(2, C), torch.ones(2, C, dtype=torch.bool), slate)
    assert torch.allclose(ent, torch.tensor(math.log(C) + math.log(C - 1)).expand(2))


def random_masks(n: int, C: int, K: int, g: torch.Generator) -> torch.Tensor:
    """``[n, C]`` masks with at least ``K`` legal candidates; the first fifth exactly ``K``."""
    keep = torch.rand(n, C, generator=g) < torch.rand(n, 1, generator=g)
    forced = torch.rand(n, C, generator=g).argsort(1)[:, :K]
    exact = torch.zeros(n, C, dtype=torch.bool).scatter(1, forced, True)
    masks = keep | exact
    masks[: n // 5] = exact[: n // 5]
    return masks


@pytest.mark.parametrize("name", ["mappo", "ippo"])
def test_mask_is_never_violated(market, name):
    """10^5 sampled slates (and greedy ones) over random masks, a fifth of them with exactly K
    legal candidates, from an actor whose logits are blown up to extremes."""
    env = market(num_envs=50, seed=0)
    agent = agents.make_agent(name, env, seed=0, actor_hidden=(16,))
    obs = {a: {k: v.repeat(10, *([1] * (v.dim() - 1))) for k, v in o.items()}
           for a, o in env.reset(seed=0).items()}  # fmt: skip
    C, K = env.config.num_candidates, env.config.slate_size
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        agent.actors[0][-1].weight.mul_(1e3)
    total = 0
    for _ in range(5):
        masks = {a: random_masks(500, C, K, g) for a in env.agents}
        o = {a: {**obs[a], "action_mask": masks[a]} for a in env.agents}
        for _ in range(20):
            for a, slate in agent.act(o, explore=True).items():
                assert valid_slates(slate, masks[a])
                total += slate.shape[0]
        for a, slate in agent.act(o, explore=False).items():
            assert valid_slates(slate, masks[a])
    assert total >= 100_000


# ----------------------------------------------------------------------------------------
# GAE and value normalisation
# ----------------------------------------------------------------------------------------
def test_gae_cuts_at_episode_ends_drops_reset_rows_and_bootstraps_truncations(market):
    """One market, five steps: the episode is truncated at t=1, t=2 is the auto-reset row,
    a new episode runs t=3..4 and is terminated at t=4."""
    env = market(num_envs=1, reward_mode="cooperative")
    agent = agents.make_agent("ippo", env, gamma=0.9, gae_lambda=0.5, rollout_steps=5)
    g, lam = 0.9, 0.5
    r = torch.tensor([1.0, 2.0, 0.0, 3.0, 4.0])
    v = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    v_next = torch.tensor([11.0, 21.0, 31.0, 41.0, 51.0])
    ro = {
        "reward": r[:, None, None].expand(5, 1, 2),
        "terminated": torch.tensor([0, 0, 0, 0, 1]).bool()[:, None],
        "ended": torch.tensor([0, 1, 0, 0, 1]).bool()[:, None],
        "valid": torch.tensor([1, 1, 0, 1, 1]).bool()[:, None],
    }
    adv = agent._gae(ro, v[:, None, None].expand(5, 1, 2), v_next[:, None, None].expand(5, 1, 2))
    d = r + g * v_next - v
    d[4] = r[4] - v[4]  # terminated: no bootstrap
    expect = torch.tensor([d[0] + g * lam * d[1], d[1], 0.0, d[3] + g * lam * d[4], d[4]])
    assert torch.allclose(adv[:, 0, 0], expect)
    assert torch.allclose(adv[:, 0, 1], expect)


@pytest.mark.parametrize("name", ["mappo", "ippo"])
@pytest.mark.parametrize("between", ["train", "evaluate", "run_episodes"])
def test_gae_does_not_chain_across_an_env_reset_between_calls(market, name, between):
    """A rollout left part-filled by one call continues in the next; an env reset in between
    (``train(reset=True)``, an ``evaluate``, a new ``run_episodes`` after ``max_steps``) starts
    new episodes, so the last step stored before it is ended: its advantage is its own TD
    error (bootstrapped), with nothing of the unrelated steps after the reset."""
    if between == "run_episodes":
        env = recenv.make(MARKET, seed=0, horizon=30)
        agent = agents.make_agent(name, env, **SMALL)
        agents.run_episodes(agent, env, learn=True, explore=True, seed=0, max_steps=5)
    else:
        env = market(num_envs=4, seed=0, horizon=30)
        agent = agents.make_agent(name, env, **SMALL)
        agents.train(agent, env, 4 * 5, seed=0)
    t = agent.pos - 1
    assert t == 4  # 5 of 8 rollout steps stored, mid-episode
    seen = {}
    gae = agent._gae

    def spy(ro, values, next_values):
        seen.update(ro=ro, values=values, next_values=next_values)
        seen["adv"] = gae(ro, values, next_values)
        return seen["adv"]

    agent._gae = spy
    if between == "train":
        agents.train(agent, env, 4 * 3, seed=123)
    elif between == "evaluate":
        agents.evaluate(agent, env, seed=5)
        agents.train(agent, env, 4 * 3, reset=False)
    else:
        agents.run_episodes(agent, env, learn=True, explore=True, seed=1, max_steps=3)
    ro, adv = seen["ro"], seen["adv"]
    assert bool(ro["ended"][t].all())
    assert not bool(ro["ended"][t + 1 :].any())  # only the reset cut the rollout
    alive = (~ro["terminated"][t]).float()[:, None]
    delta = ro["reward"][t] + 0.95 * alive * seen["next_values"][t] - seen["values"][t]
    assert torch.allclose(adv[t], delta, atol=1e-6)


def test_value_clip_is_centred_on_the_critics_output(market):
    """The clipped value loss keeps the critic within ``value_clip`` of where it started: at
    the first minibatch of an update the critic has not moved, so the clip window's centre is
    its output and the clipped and unclipped losses coincide — also at the first update, when
    the return statistics jump from their initial (0, 1)."""
    env = market(num_envs=4, seed=0, horizon=30)
    agent = agents.make_agent("mappo", env, **SMALL)
    assert agent.config.value_norm and agent.config.value_clip > 0
    first = {}  # update -> its first minibatch's (v, clip centre, target, loss)
    value_loss = agent._value_loss

    def spy(v, old, target):
        loss = value_loss(v, old, target)
        first.setdefault(agent.updates, (v.detach(), old, target, loss.detach()))
        return loss

    agent._value_loss = spy
    agents.train(agent, env, 4 * 8 * 3, seed=0)
    assert agent.updates == 3 and sorted(first) == [0, 1, 2]
    for v, old, target, loss in first.values():
        assert torch.allclose(v, old, atol=1e-5)
        assert torch.allclose(loss, (v - target) ** 2, atol=1e-5)


def test_value_loss_is_the_larger_of_the_plain_and_the_clipped_error(market):
    """``_value_loss``: with ``value_clip = c`` the critic's value ``v`` is also scored
    clipped to ``old ± c``, and the larger squared error counts (PPO's value clipping);
    without it, the plain squared error."""
    env = market(num_envs=2)
    agent = agents.make_agent("mappo", env, value_clip=0.2, **SMALL)
    old = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    v = torch.tensor([0.5, -0.5, 1.1, 0.5, 2.0])
    target = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0])
    clipped = torch.tensor([0.2, -0.2, 1.1, 0.8, 1.2])
    want = torch.maximum((v - target) ** 2, (clipped - target) ** 2)
    torch.testing.assert_close(agent._value_loss(v, old, target), want)
    assert bool((want > (v - target) ** 2).any())  # the clip decides some of them
    plain = agents.make_agent("mappo", env, value_clip=0.0, **SMALL)
    torch.testing.assert_close(plain._value_loss(v, old, target), (v - target) ** 2)


def test_policy_loss_is_ppos_clipped_surrogate(market):
    """``_policy_loss``: ``-mean(min(r a, clip(r, 1 - ε, 1 + ε) a))``; with ``norm_adv`` the
    advantages are standardised over the minibatch first (mean 0, std 1)."""
    env = market(num_envs=2)
    ratio = torch.tensor([[0.5, 1.0], [1.1, 1.5], [0.9, 2.0]])
    adv = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]])

    def surrogate(a, eps):
        return -torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a).mean()

    raw = agents.make_agent("mappo", env, clip=0.2, norm_adv=False, **SMALL)
    torch.testing.assert_close(raw._policy_loss(ratio, adv), surrogate(adv, 0.2))
    assert not torch.allclose(surrogate(adv, 0.2), surrogate(adv, 0.4))  # the clip binds
    normed = agents.make_agent("mappo", env, clip=0.2, norm_adv=True, **SMALL)
    z = (adv - adv.mean()) / adv.std()
    torch.testing.assert_close(normed._policy_loss(ratio, adv), surrogate(z, 0.2))


def test_the_entropy_term_is_a_bonus(market):
    """``_loss = pg + vf_coef x value loss - ent_coef x entropy``: more entropy, less loss
    (the bonus keeps the policy exploring; with the sign flipped, training ran as well on
    these budgets but narrowed the policy instead, so no learning test notices)."""
    env = market(num_envs=2)
    agent = agents.make_agent("mappo", env, vf_coef=0.5, ent_coef=0.1, **SMALL)
    pg, v_loss = torch.tensor(1.0), torch.tensor(2.0)
    assert float(agent._loss(pg, v_loss, torch.tensor(3.0))) == pytest.approx(2.0 - 0.3)
    assert agent._loss(pg, v_loss, torch.tensor(4.0)) < agent._loss(pg, v_loss, torch.tensor(3.0))


def test_value_norm_tracks_running_moments():
    vn = ValueNorm(2)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(100, 2, generator=g) * torch.tensor([1.0, 5.0]) + 3 for _ in range(5)]
    for x in xs:
        vn.update(x)
    allx = torch.cat(xs)
    assert torch.allclose(vn.mean, allx.mean(0), atol=1e-4)
    assert torch.allclose(vn.var, allx.var(0, unbiased=False), rtol=1e-3)
    y = torch.randn(7, 2, generator=g)
    assert torch.allclose(vn.denormalize(vn.normalize(y)), y, atol=1e-5)


def test_an_update_fits_the_critic_to_normalised_returns_in_epochs_of_minibatches(market):
    """One update of ``rollout_steps`` x N stored steps, ``B`` of them real (the auto-reset
    rows left out): the returns are ``GAE + V`` of those rows; the return statistics take them
    in, and the critic's targets are the returns normalised by the updated statistics; each
    of ``epochs`` passes visits every row once, in ``minibatches`` minibatches of ⌈B / m⌉
    rows; the explained variance is ``1 - Var(returns - V) / Var(returns)``. (No other test
    read the targets: the critic regressed on the advantages, or on raw returns, and every
    learning test still passed.)"""
    env = market(num_envs=4, seed=0, horizon=5)  # an episode end inside the rollout
    epochs, minibatches, L = 3, 2, 8
    agent = agents.make_agent(
        "mappo", env, rollout_steps=L, epochs=epochs, minibatches=minibatches, actor_hidden=(32,)
    )
    assert agent.config.value_norm
    seen: dict = {"targets": []}
    gae, value_loss = agent._gae, agent._value_loss

    def gae_spy(ro, values, next_values):
        seen.update(valid=ro["valid"].clone(), values=values.clone())
        seen["adv"] = gae(ro, values, next_values)
        return seen["adv"]

    def value_loss_spy(v, old, target):
        seen["targets"].append(target.clone())
        return value_loss(v, old, target)

    agent._gae, agent._value_loss = gae_spy, value_loss_spy
    metrics: list = []
    agents.train(agent, env, 4 * L, seed=0, callback=lambda n, m: metrics.append(m))
    assert agent.updates == 1 and len(metrics) == 1

    valid = seen["valid"].flatten()
    returns = (seen["adv"] + seen["values"]).flatten(0, 1)[valid]  # [B, A]
    values = seen["values"].flatten(0, 1)[valid]
    B = returns.shape[0]
    assert 0 < B < 4 * L  # the auto-reset rows are not in it
    torch.testing.assert_close(agent.value_stats.mean, returns.mean(0), rtol=1e-4, atol=1e-4)
    size = -(-B // minibatches)
    assert [t.shape[0] for t in seen["targets"]] == [size, B - size] * epochs
    want = agent.value_stats.normalize(returns).sort(0).values
    for e in range(epochs):  # each epoch: every row once, in some order
        got = torch.cat(seen["targets"][e * minibatches : (e + 1) * minibatches])
        torch.testing.assert_close(got.sort(0).values, want)
    explained = 1 - (returns - values).var() / returns.var()
    assert metrics[0]["charts/explained_variance"] == pytest.approx(float(explained), rel=1e-5)


# ----------------------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------------------
def test_mappo_beats_random_on_cooperative_market():
    """``experiments.compare_marl.learning_check``: 3072 env steps on 16 cooperative
    Market-v0 markets (horizon 50, seed 0), greedy return on 32 held-out markets.

    Seed spread over seeds 0-9 (``python -m experiments.compare_marl --spread --seeds 10
    --out DIR``; experiments/results/2026-12-06/marl_spread, 2026-12-06):
    MAPPO 31.34 ± 1.25 (min 29.68), mean ± sd; random 14.47 at every seed (its evaluation on the
    held-out markets is seeded, so the training seed does not reach it).
    Seed 0: MAPPO 31.62 vs random 14.47. The margin asked, +8, is below the worst MAPPO
    seed's (+15.2)."""
    learned, baseline = learning_check("mappo"), learning_check("random")
    assert learned > baseline + 8.0, (learned, baseline)


# ----------------------------------------------------------------------------------------
# Configurations, faces, checkpoints
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mappo", "ippo"])
@pytest.mark.parametrize("shared", [True, False])
def test_trains_on_every_setting(market, name, shared):
    env = market(num_envs=4, seed=2, horizon=12, reward_mode="competitive")
    agent = agents.make_agent(name, env, shared_actor=shared, **SMALL)
    assert len(agent.actors) == (1 if shared else 2)
    result = agents.train(agent, env, 4 * 40)
    assert result.num_episodes >= 4 and agent.updates == 5
    for _, m in result.metrics:
        assert all(math.isfinite(v) for v in m.values()), m


def test_one_of_several_agents_on_the_pettingzoo_face():
    env = recenv.make(MARKET, seed=0, horizon=15, reward_mode="cooperative")
    agent = agents.make_agent("mappo", env, **SMALL)
    returns = agents.run_episodes(agent, env, episodes=3, learn=True, explore=True, seed=0)
    assert len(returns) == 3 and agent.updates == 45 // 8
    team = agents.Team(
        [agents.make_agent("mappo", env, agent_ids=["agent_0"], **SMALL),
         agents.make_agent("random", env, agent_ids=["agent_1"])]
    )  # fmt: skip
    assert len(agents.run_episodes(team, env, episodes=1, learn=True, explore=True)) == 1


@pytest.mark.parametrize("name", ["mappo", "ippo"])
def test_save_load_continue(market, tmp_path, name):
    env = market(num_envs=4, seed=5, horizon=20, reward_mode="cooperative")
    agent = agents.make_agent(name, env, seed=3, **SMALL)
    agents.train(agent, env, 4 * 24)
    path = tmp_path / f"{name}.pt"
    agent.save(path)
    clone = agents.load_agent(path, env)
    assert type(clone) is type(agent) and clone.updates == agent.updates == 3
    obs = env.reset(seed=9)
    state = env.state()
    for method, args in (("act", (obs,)), ("value", (obs, state)), ("act", (obs, True))):
        mine, theirs = getattr(agent, method)(*args), getattr(clone, method)(*args)
        assert all(torch.equal(mine[a], theirs[a]) for a in env.agents), method
    # Both keep learning identically (the sampling above drew from the restored generator).
    r1 = agents.train(agent, env, 4 * 16, seed=11)
    r2 = agents.train(clone, env, 4 * 16, seed=11)
    assert agent.updates == clone.updates == 5
    for (s1, m1), (s2, m2) in zip(r1.metrics, r2.metrics, strict=True):
        assert s1 == s2 and m1 == pytest.approx(m2)
    with pytest.raises(ValueError, match="different config"):
        agents.make_agent(name, env, seed=3, **{**SMALL, "epochs": 3}).load(path)


def test_ippo_is_mappo_with_a_local_critic():
    assert issubclass(IPPOAgent, MAPPOAgent)
    assert MAPPOAgent.centralized_critic and not IPPOAgent.centralized_critic
    assert agents.agent_class("ippo").Config is agents.agent_class("mappo").Config


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mappo", "ippo"])
def test_cuda(name):
    env = recenv.make_vec(MARKET, num_envs=8, seed=0, device="cuda", horizon=10)
    agent = agents.make_agent(name, env, **SMALL)
    agents.train(agent, env, 8 * 20)
    assert agent.updates == 2
    assert next(agent.critic.parameters()).device.type == "cuda"
