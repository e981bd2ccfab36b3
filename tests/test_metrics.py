"""Episode metrics and rewards (DESIGN §3): present on both faces at an episode's end with sane
values; the metric functions are right on known inputs; the reward modes combine each agent's
own value as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recenv
from recenv.core.metrics import (
    EPISODE_METRICS,
    coverage_from_counters,
    gini,
    intra_list_diversity,
    intra_list_diversity_by_sums,
)

MARKET = "recenv/Market-v0"


# --------------------------------------------------------------------------------------------
# Metric functions on known inputs
# --------------------------------------------------------------------------------------------
def test_gini_known_vectors():
    """Gini: 0 for equal exposure, (n-1)/n when one item gets everything, 0.25 for 1,2,3,4
    (mean absolute difference / (2 × mean) = 1.25 / 5), 0 for an all-zero row; order does not
    matter."""
    x = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [4.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(gini(x), torch.tensor([0.0, 0.75, 0.25, 0.0]))
    assert gini(torch.tensor([[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]])).item() == pytest.approx(0.9)


@pytest.mark.parametrize("ild", [intra_list_diversity, intra_list_diversity_by_sums])
def test_intra_list_diversity_known_vectors(ild):
    """Mean pairwise (1 - cosine): orthogonal topics -> 1, identical -> 0, 45 degrees ->
    1 - 1/sqrt(2); invalid slots are left out, fewer than two valid items -> 0. Both forms
    (the similarity matrix, and the sums the compiled step uses)."""
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    both = [1.0, 1.0]
    topics = torch.tensor([[e0, e1, e1], [e0, e0, e0], [e0, both, e0], [e0, e1, e1]])
    valid = torch.tensor(
        [[True, True, False], [True, True, True], [True, True, False], [True, False, False]]
    )
    expected = torch.tensor([1.0, 0.0, 1 - 1 / math.sqrt(2), 0.0])
    torch.testing.assert_close(ild(topics, valid), expected)
    three = torch.tensor([[e0, e1, both]])
    # pairs: (e0,e1)=1, (e0,both)=1-1/√2, (e1,both)=1-1/√2 -> mean
    mean = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    assert ild(three, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(mean, rel=1e-6)


@pytest.mark.parametrize("K", [1, 2, 3, 5, 10])
def test_intra_list_diversity_by_sums_equals_the_matrix_form(K):
    """The sums form equals the similarity-matrix form up to float32 rounding on random
    slates: non-negative and signed topic vectors, zero vectors, identical items, any
    pattern of invalid slots (leading batch dimensions kept)."""
    g = torch.Generator().manual_seed(K)
    topics = torch.rand(64, 4, K, 16, generator=g) ** 3
    topics[0] = topics[0, :, :1]  # identical items: diversity 0
    topics[1, :, 0] = 0.0  # zero topic vectors: similarity 0 with everything
    topics[2:8] -= 0.3  # signed vectors: distances up to 2
    valid = torch.rand(64, 4, K, generator=g) < 0.7
    valid[8] = True
    valid[9] = False
    a = intra_list_diversity(topics, valid)
    b = intra_list_diversity_by_sums(topics, valid)
    assert b.shape == a.shape == (64, 4)
    torch.testing.assert_close(b, a, rtol=0, atol=2e-6)
    assert (b >= 0).all() and (b <= 2).all()
    assert (b[9] == 0).all()


# --------------------------------------------------------------------------------------------
# Episode metrics on both faces
# --------------------------------------------------------------------------------------------
def _check_metric_ranges(m: dict, num_agents: int, horizon: int, shared_page: bool) -> None:
    assert 0.0 <= m["ctr"] <= 1.0
    assert m["engagement_per_request"] >= 0.0
    assert 0.0 <= m["retention"] <= 1.0
    assert 0.0 < m["coverage"] <= 1.0
    assert 0.0 <= m["exposure_gini"] <= 1.0
    assert 0.0 <= m["diversity"] <= 1.0
    assert m["novelty"] >= 0.0
    assert 0.0 <= m["satisfaction"] <= 1.0
    assert 1 <= m["length"] <= horizon
    share = m["market_share"]
    assert len(share) == num_agents and all(0.0 <= s <= 1.0 for s in share)
    if m["ctr"] > 0 or not shared_page:  # clicks (platform visits) happened
        assert sum(share) == pytest.approx(1.0, abs=1e-5)


def test_episode_metrics_pettingzoo(env_id, small, random_policy):
    """At the last step of an episode every agent's info has ``episode`` with exactly the
    documented metrics; ``return`` is that agent's summed reward; the rest is shared and in
    range (CTR in [0, 1], market share sums to 1 when there were choices, Gini in [0, 1],
    coverage in (0, 1], ...). Steps before the end carry no episode metrics."""
    env = recenv.make(env_id, seed=0, **small(env_id))
    cfg = env.config
    obs, _ = env.reset()
    for i, a in enumerate(env.possible_agents):
        env.action_space(a).seed(i)
    returns = dict.fromkeys(env.possible_agents, 0.0)
    while env.agents:
        acts = {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
        obs, rew, _, _, infos = env.step(acts)
        for a, r in rew.items():
            returns[a] += r
        if env.agents:
            assert all("episode" not in infos[a] for a in env.possible_agents)
    shared = None
    for a in env.possible_agents:
        m = infos[a]["episode"]
        # "r" and "l" repeat the own return and the length under the keys Gymnasium's and
        # SB3's episode statistics read.
        assert set(m) == set(EPISODE_METRICS) | {"r", "l"}
        assert m["return"] == pytest.approx(returns[a], rel=1e-4, abs=1e-4)
        assert m["r"] == m["return"] and m["l"] == m["length"]
        rest = {k: v for k, v in m.items() if k not in ("return", "r")}
        assert shared is None or rest == shared
        shared = rest
        _check_metric_ranges(m, cfg.num_agents, cfg.horizon, cfg.topology == "shared_page")


def test_episode_metrics_batched(env_id, small, random_policy):
    """The batched face reports the same metrics as ``[N]`` / ``[N, A]`` tensors, with
    ``info["_episode"]`` marking the markets that ended; ``return`` equals the summed rewards of
    the episode, and the values are in range."""
    N = 8
    env = recenv.make_vec(env_id, num_envs=N, seed=0, **small(env_id))
    cfg = env.config
    g = torch.Generator().manual_seed(0)
    obs = env.reset()
    returns = torch.zeros(N, cfg.num_agents)
    ended = torch.zeros(N, dtype=torch.bool)
    for _ in range(cfg.horizon):
        acts = {a: random_policy(obs[a]["action_mask"], cfg.slate_size, g) for a in env.agents}
        obs, rew, term, trunc, info = env.step(acts)
        returns += torch.stack([rew[a] for a in env.agents], dim=1) * ~ended[:, None]
        if "episode" in info:
            ep = info["episode"]
            assert set(ep) == set(EPISODE_METRICS)
            assert torch.equal(info["_episode"], term | trunc)
            for n in info["_episode"].nonzero().flatten().tolist():
                if ended[n]:
                    continue
                torch.testing.assert_close(ep["return"][n], returns[n], rtol=1e-4, atol=1e-4)
                m = {k: (v[n].tolist() if v.dim() > 1 else float(v[n])) for k, v in ep.items()}
                _check_metric_ranges(m, cfg.num_agents, cfg.horizon, cfg.topology == "shared_page")
            ended |= info["_episode"]
        else:
            assert not bool((term | trunc).any())
    assert ended.all()


# --------------------------------------------------------------------------------------------
# Reward modes
# --------------------------------------------------------------------------------------------
NO_EXTRA_TERMS = dict(welfare_weight=0.0, diversity_weight=0.0, fairness_weight=0.0)


@pytest.mark.parametrize("mode", ["competitive", "cooperative", "mixed"])
def test_reward_modes(env_id, small, random_policy, mode):
    """With the optional terms off, an agent's own value is the engagement of the click it won
    (``info["engagement"]`` where ``info["chosen_agent"]`` is that agent, else 0), and:
    competitive reward = own; cooperative = the team total for every agent (equal across
    agents); mixed = (1 - w) own + w team, with ``team_weight`` w = 0.3."""
    env = recenv.make_vec(
        env_id,
        num_envs=16,
        seed=1,
        reward_mode=mode,
        team_weight=0.3,
        **NO_EXTRA_TERMS,
        **small(env_id),
    )
    A, K = env.config.num_agents, env.config.slate_size
    g = torch.Generator().manual_seed(1)
    obs = env.reset()
    clicked_steps = 0
    for _ in range(20):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, rew, _, _, info = env.step(acts)
        r = torch.stack([rew[a] for a in env.agents], dim=1)
        won = info["chosen_agent"][:, None] == torch.arange(A)[None, :]
        own = won * info["engagement"][:, None]
        team = own.sum(1, keepdim=True).expand_as(own)
        expected = {"competitive": own, "cooperative": team, "mixed": 0.7 * own + 0.3 * team}
        torch.testing.assert_close(r, expected[mode], rtol=1e-5, atol=1e-6)
        if mode == "cooperative":
            assert (r == r[:, :1]).all()
        clicked_steps += int(info["clicked"].sum())
    assert clicked_steps > 0


def test_welfare_term_adds_chosen_utility(small, random_policy):
    """``welfare_weight`` w adds w × the chosen item's utility to the agent that won the click
    (competitive mode)."""
    env = recenv.make_vec(
        MARKET,
        num_envs=16,
        seed=2,
        welfare_weight=0.5,
        diversity_weight=0.0,
        fairness_weight=0.0,
        **small(MARKET),
    )
    A, K = env.config.num_agents, env.config.slate_size
    g = torch.Generator().manual_seed(2)
    obs = env.reset()
    for _ in range(15):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, rew, _, _, info = env.step(acts)
        r = torch.stack([rew[a] for a in env.agents], dim=1)
        won = (info["chosen_agent"][:, None] == torch.arange(A)[None, :]).float()
        expected = won * (info["engagement"] + 0.5 * info["utility"]["total"])[:, None]
        torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-5)


def test_diversity_term_rewards_diverse_slates(small, random_policy):
    """``diversity_weight`` w adds w × the intra-list diversity of the agent's shown slate
    (computed here from the catalog's topic vectors of ``info["shown"]``)."""
    env = recenv.make_vec(
        MARKET,
        num_envs=16,
        seed=3,
        welfare_weight=0.0,
        diversity_weight=0.7,
        fairness_weight=0.0,
        **small(MARKET),
    )
    A, K = env.config.num_agents, env.config.slate_size
    topics = env.catalog.topics
    g = torch.Generator().manual_seed(3)
    obs = env.reset()
    for _ in range(15):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, rew, _, _, info = env.step(acts)
        r = torch.stack([rew[a] for a in env.agents], dim=1)
        shown = info["shown"]  # [N, A, K], -1 where not shown
        ild = intra_list_diversity(topics[shown.clamp(min=0)], shown >= 0)
        won = (info["chosen_agent"][:, None] == torch.arange(A)[None, :]).float()
        expected = won * info["engagement"][:, None] + 0.7 * ild
        expected = expected * ~info["reset"][:, None]
        torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-5)


def test_fairness_term_favours_long_tail_items(small):
    """``fairness_weight`` adds a bonus for exposing long-tail items: the agent showing its
    least popular candidates gets a larger bonus than the one showing its most popular, on every
    step; the bonus is the reward difference to a twin run without the term (rewards do not
    change the dynamics, so both runs see the same requests)."""
    pop = None
    bonus = []
    for weight in (0.0, 1.0):
        env = recenv.make_vec(MARKET, num_envs=16, seed=4, fairness_weight=weight, **small(MARKET))
        pop = env.catalog.popularity
        env.reset()
        rewards = []
        for _ in range(15):
            p = torch.where(env.cand_mask, pop[env.cand], torch.full_like(pop[env.cand], math.nan))
            K = env.config.slate_size
            least = torch.where(env.cand_mask, -p, -math.inf).topk(K, dim=2).indices[:, 0]
            most = torch.where(env.cand_mask, p, -math.inf).topk(K, dim=2).indices[:, 1]
            _, rew, _, _, _ = env.step({"agent_0": least, "agent_1": most})
            rewards.append(torch.stack([rew["agent_0"], rew["agent_1"]], dim=1))
        bonus.append(torch.stack(rewards))
    diff = bonus[1] - bonus[0]  # [steps, N, 2]
    assert (diff >= -1e-6).all()
    assert (diff[..., 0] > diff[..., 1]).all()


def test_episode_metrics_only_for_markets_that_ended_and_exact_there():
    """With episodes out of step (churn ends some markets early), the item metrics are
    computed for the ended markets alone: equal to the all-market computation there, and
    every episode metric is zero in the markets that go on."""
    env = recenv.make_vec(
        "recenv/Market-v0",
        num_envs=32,
        seed=0,
        num_users=3,
        churn_threshold=0.4,
        return_prob=0.0,
    )
    obs = env.reset()
    g = torch.Generator().manual_seed(0)
    partial = 0
    for _ in range(80):
        acts = {}
        for a in env.agents:
            mask = obs[a]["action_mask"]
            score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
            acts[a] = score.topk(env.config.slate_size, dim=-1).indices
        obs, _, _, _, info = env.step(acts)
        if "episode" not in info:
            continue
        done = info["_episode"]
        partial += bool((~done).any())
        full = env._item_metrics(torch.arange(env.num_envs))  # every market, as before
        for k, v in full.items():
            assert torch.equal(info["episode"][k][done], v[done]), k
        for k, v in info["episode"].items():
            assert not v[~done].any(), f"{k} is not zero where the episode goes on"
        assert (info["episode"]["length"][done] > 0).all()
    assert partial > 0, "no step ended some markets but not others: the test tests nothing"


def _ild_np(vecs: np.ndarray) -> float:
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-8)
    if len(unit) < 2:
        return 0.0
    return float((1.0 - unit @ unit.T)[~np.eye(len(unit), dtype=bool)].mean())


def _random_valid_slates(obs, K: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A uniformly random slate of ``K`` unmasked candidates per agent and market."""
    acts = {}
    for a, o in obs.items():
        score = torch.rand(o["action_mask"].shape, generator=g)
        acts[a] = score.masked_fill(~o["action_mask"], -1.0).topk(K, dim=-1).indices
    return acts


@pytest.mark.parametrize("scenario_id", [MARKET, "recenv/Video-v0"])
def test_episode_metrics_equal_a_numpy_reference_from_the_step_infos(scenario_id):
    """Each market's metrics are its own episode's only (episodes out of step, auto-reset),
    as EPISODE_METRICS documents them, recomputed in numpy from the per-step infos; the
    novelty is the self-information over log2(num_items), market_share all zero without
    any choice; diversity and novelty average over the requests that showed a slate (under
    Video-v0's platform_choice they averaged over every request, leaves included)."""
    N, I = 3, 60
    env = recenv.make_vec(
        scenario_id,
        num_envs=N,
        seed=0,
        num_items=I,
        num_candidates=6,
        slate_size=3,
        horizon=30,
        num_users=3,
        churn_threshold=0.6,
        expectation=1.0,
        return_prob=0.0,
        session_gap=0,
    )
    A, K, platform = env.config.num_agents, env.config.slate_size, scenario_id != MARKET
    topics = env.catalog.topics.numpy()
    novelty = env.catalog.novelty.numpy() / np.log2(I)
    obs = env.reset(seed=0)
    g = torch.Generator().manual_seed(1)

    def fresh():
        return {"ret": np.zeros(A), "clicks": 0, "eng": 0.0, "ch": np.zeros(A), "t": 0,
                "expo": np.zeros(I), "div": 0.0, "nov": 0.0, "served": 0}  # fmt: skip

    ref, ended, lengths = [fresh() for _ in range(N)], 0, set()
    for _ in range(50):
        acts = _random_valid_slates(obs, K, g)
        obs, rew, _, _, info = env.step(acts)
        for n in range(N):
            if info["reset"][n]:
                ref[n] = fresh()
                continue
            r = ref[n]
            r["t"] += 1
            r["ret"] += np.array([float(rew[a][n]) for a in env.agents])
            r["clicks"] += bool(info["clicked"][n])
            r["eng"] += float(info["engagement"][n])
            who = int(info["platform"][n] if platform else info["chosen_agent"][n])
            if 0 <= who < A and (platform or info["clicked"][n]):
                r["ch"][who] += 1
            shown = info["shown"][n].numpy()
            divs, items = [], []
            for a in range(A):
                s = shown[a][shown[a] >= 0]
                np.add.at(r["expo"], s, 1)
                items += list(s)
                if len(s):
                    divs.append(_ild_np(topics[s]))
            r["served"] += bool(items)  # a viewer who visits no platform sees nothing
            r["div"] += np.mean(divs) if divs else 0.0
            r["nov"] += novelty[items].mean() if items else 0.0
        if "episode" not in info:
            continue
        for n in np.flatnonzero(info["_episode"].numpy()):
            r, t, x = ref[n], max(ref[n]["t"], 1), np.sort(ref[n]["expo"])
            ended += 1
            lengths.add(r["t"])
            gini_ref = ((2 * np.arange(1, I + 1) - I - 1) * x).sum() / (I * x.sum())
            want = {
                "return": r["ret"],
                "ctr": r["clicks"] / t,
                "engagement_per_request": r["eng"] / t,
                "market_share": r["ch"] / r["ch"].sum() if r["ch"].sum() else np.zeros(A),
                "coverage": (r["expo"] > 0).mean(),
                "diversity": r["div"] / max(r["served"], 1),
                "novelty": r["nov"] / max(r["served"], 1),
                "exposure_gini": gini_ref,
                "length": r["t"],
            }
            for k, v in want.items():
                got = info["episode"][k][n].numpy()
                assert np.allclose(got, v, atol=1e-4), (k, n, got, v)
    assert ended > N and len(lengths) > 1, "episodes did not end out of step"


def test_coverage_and_gini_are_over_the_catalog_when_the_counters_are_hashed():
    """With ``num_items > item_stats_size`` the item counters are hashed (item % W), and
    coverage and the exposure Gini were those of the W counters, not the catalog's items
    (coverage 4,000 / 1,024 ~ 4x too high here). Now: coverage the linear-counting estimate
    of the distinct items shown, Gini over the I items (unshown ones 0), each within a few
    percent of the truth recomputed from the per-step infos; exact counters stay exact."""
    I, W = 4000, 1024
    env = recenv.make_vec(
        MARKET, num_envs=4, seed=0, num_items=I, item_stats_size=W, horizon=30, num_users=3
    )
    A, K = env.config.num_agents, env.config.slate_size
    obs = env.reset(seed=0)
    g = torch.Generator().manual_seed(1)
    expo = np.zeros((env.num_envs, I))
    checked = 0
    for _ in range(31):
        acts = _random_valid_slates(obs, K, g)
        obs, _, _, _, info = env.step(acts)
        for n in range(env.num_envs):
            shown = info["shown"][n].numpy()
            np.add.at(expo[n], shown[shown >= 0], 1)
        if "episode" in info:
            for n in np.flatnonzero(info["_episode"].numpy()):
                x = np.sort(expo[n])
                true_cov = (x > 0).mean()
                true_gini = ((2 * np.arange(1, I + 1) - I - 1) * x).sum() / (I * x.sum())
                cov = float(info["episode"]["coverage"][n])
                assert abs(cov / true_cov - 1) < 0.05, (cov, true_cov)
                assert abs(float(info["episode"]["exposure_gini"][n]) - true_gini) < 0.01
                checked += 1
    assert checked == env.num_envs
    assert A * K * 30 < W  # few enough items shown that the estimate is close


def test_coverage_is_nan_once_every_hashed_counter_was_exposed():
    """A full table of hashed counters says only "at least W items were shown": the
    linear-counting estimate is unbounded there. Coverage read 1.0 (the whole catalog) for
    an episode that showed ~40 % of 100,000 items; it is NaN now, on the native and torch
    paths alike, and the market warns at build when an episode can show more items than it
    has counters. An episode that leaves a counter unexposed still gets its estimate."""
    I, W, H = 2000, 16, 60
    with pytest.warns(UserWarning, match=r"item_stats_size=16 counters for num_items=2000"):
        env = recenv.make_vec(
            MARKET, num_envs=3, seed=0, num_items=I, item_stats_size=W, horizon=H, num_users=3
        )
    A, K = env.config.num_agents, env.config.slate_size
    assert H * A * K > W
    obs = env.reset(seed=0)
    g = torch.Generator().manual_seed(1)
    expo = np.zeros((env.num_envs, I))
    checked = 0
    for _ in range(H + 1):
        obs, _, _, _, info = env.step(_random_valid_slates(obs, K, g))
        for n in range(env.num_envs):
            shown = info["shown"][n].numpy()
            np.add.at(expo[n], shown[shown >= 0], 1)
        if "episode" in info:
            for n in np.flatnonzero(info["_episode"].numpy()):
                slots = np.zeros(W, bool)
                slots[np.flatnonzero(expo[n]) % W] = True
                assert slots.all()  # every counter exposed: the case under test
                assert math.isnan(float(info["episode"]["coverage"][n]))
                checked += 1
    assert checked == env.num_envs
    exposed = torch.tensor([W - 1, W, 3])
    cover = coverage_from_counters(exposed, W, I)
    assert cover[0] == pytest.approx(W * math.log(W) / I, rel=1e-6) and cover[1].isnan()
    assert coverage_from_counters(torch.tensor([W]), W, W)[0] == 1  # exact counters: all shown


@pytest.mark.parametrize("config", [{}, {"num_items": 1_000_000}, {"num_items": 4096}])
def test_no_counter_warning_where_an_episode_cannot_fill_the_table(config, recwarn):
    """Market-v0's defaults, a 10^6-item catalog (an episode shows at most 1,200 items against
    4,096 counters) and exact counters build without the hashed-counter warning."""
    recenv.make_vec(MARKET, num_envs=1, seed=0, **config)
    assert not [w for w in recwarn if "item_stats_size" in str(w.message)]
