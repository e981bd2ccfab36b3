"""An audit of what agents observe (DESIGN §3 step 3: "It never sees latent state"), by
interventions: two markets identical but for one hidden quantity (the users' taste or hidden
interests, the items' true quality and embedding, a competitor's slate, a slate the viewer
never saw, an earlier episode) must hand every agent the same observation wherever the
design says that quantity is not seen, while the intervention does reach the latent state
(``state()``, or another agent's observation) so that the test is not vacuous.

Also pinned here: the global ``state()`` holds what its docstring lists; the action mask marks
exactly the candidates a slate may hold (arrived, first copy), each accepted and every other
refused; spaces and info layouts stay the same through resets and episode ends; the
observations a step hands out are never changed by later steps; and every agent that does not
declare itself privileged acts on its observation alone (decentralised execution).
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from test_random_configs import random_config

import recenv
from agents.registry import agent_class, make_agent, registered_agents
from recenv.core.catalog import Catalog
from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.core.users import Population

MARKET = "recenv/Market-v0"
PRESETS = (MARKET, "recenv/ECommerce-v0", "recenv/Music-v0", "recenv/Video-v0")
# Presets whose slates share one page (Video's viewer visits one platform).
SHARED_PAGE = (MARKET, "recenv/ECommerce-v0", "recenv/Music-v0")


def _keyed_slates(obs, agents, K: int, keys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each agent's top-K unmasked candidates by its random ``keys`` [N, C]: a valid slate that
    is a function of the agent's own mask and keys only."""
    return {
        a: keys[a].masked_fill(~obs[a]["action_mask"], -1.0).topk(K, dim=1).indices for a in agents
    }


def _keys(agents, shape, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {a: torch.rand(shape, generator=g) for a in agents}


def _differing(obs1, obs2, N: int) -> dict[tuple[str, str], torch.Tensor]:
    """``{(agent, key): [N] bool}``: the markets where that observation field differs."""
    return {(a, k): (obs1[a][k] != obs2[a][k]).reshape(N, -1).any(1) for a in obs1 for k in obs1[a]}


def _latent_twin_catalog(catalog: Catalog, g: torch.Generator) -> Catalog:
    """``catalog`` with other latent embeddings and true qualities but the same observed
    (noisy) qualities: ``quality + quality_noise`` kept bit for bit (items where float32
    rounding would change it keep their quality)."""
    t = catalog.tables()
    q, noise = t["quality"], t["quality_noise"]
    q2 = q + torch.randn(q.shape, generator=g)
    noise2 = (q + noise) - q2
    same = (q2 + noise2) == (q + noise)
    assert same.float().mean() > 0.5
    return Catalog(
        **{
            **t,
            "embed": torch.randn(t["embed"].shape, generator=g),
            "quality": torch.where(same, q2, q),
            "quality_noise": torch.where(same, noise2, noise),
        }
    )


def _population(cfg: MarketConfig, g: torch.Generator) -> Population:
    """Random users: interests, taste and activity."""
    U, T, D = cfg.num_users, cfg.num_topics, cfg.embed_dim
    interest = torch.rand(U, T, generator=g)
    interest = interest / interest.sum(1, keepdim=True)
    return Population(interest, torch.randn(U, D, generator=g), torch.rand(U, generator=g) + 0.1)


@pytest.mark.parametrize("preset", PRESETS)
def test_hidden_user_and_item_quantities_leave_the_first_observation_alone(preset):
    """At the first request, markets that differ only in the items' latent embeddings and
    true qualities (observed quality kept), in the users' latent taste, or in interests that
    are all hidden (``feature_visible=0``: the features are noise) give every agent the same
    observation, every field; ``state()`` sees each difference."""
    env_id, N, g = preset, 4, torch.Generator().manual_seed(0)
    cfg = recenv.make_vec(env_id, num_envs=1, seed=0).config
    base = BatchedMarket(cfg, N, seed=3)
    twin = BatchedMarket(cfg, N, seed=3, catalog=_latent_twin_catalog(base.catalog, g))
    pop = _population(cfg, g)
    other_taste = Population(pop.interest, torch.randn_like(pop.taste), pop.activity)
    tasted = [BatchedMarket(cfg, N, seed=3, population=p) for p in (pop, other_taste)]
    blind = MarketConfig.from_kwargs(cfg, feature_visible=0.0)
    other_interest = Population(_population(cfg, g).interest, pop.taste, pop.activity)
    hidden = [BatchedMarket(blind, N, seed=3, population=p) for p in (pop, other_interest)]
    for name, (m1, m2) in {
        "items' latent": (base, twin),
        "users' taste": tasted,
        "hidden interests": hidden,
    }.items():
        o1, o2 = m1.reset(), m2.reset()
        for (a, k), d in _differing(o1, o2, N).items():
            assert not d.any(), f"{env_id}: {name} reached {a}'s {k!r}"
        assert not torch.equal(m1.state(), m2.state()), f"{env_id}: {name} not in state()"


@pytest.mark.parametrize("preset", [MARKET, "recenv/Video-v0"])
def test_latent_differences_reach_observations_only_through_clicks(preset):
    """Markets that differ in the items' latent embeddings and true qualities and in the users'
    taste, played with the same slates: every agent's observation is the same in each market
    until its first click (in either): before one, the user's response is the same (no click,
    no time spent) and nothing latent may show. (Clicks made rarer, no-click utility 6, for
    click-free stretches to test.)"""
    env_id, N, g = preset, 32, torch.Generator().manual_seed(1)
    preset_config = recenv.make_vec(env_id, num_envs=1, seed=0).config
    cfg = MarketConfig.from_kwargs(preset_config, horizon=12, no_click_utility=6.0)
    catalog = BatchedMarket(cfg, 1, seed=0).catalog
    m1 = BatchedMarket(cfg, N, seed=5, catalog=catalog, population=_population(cfg, g))
    pop2 = Population(
        m1.population.interest, torch.randn_like(m1.population.taste), m1.population.activity
    )
    m2 = BatchedMarket(cfg, N, seed=5, catalog=_latent_twin_catalog(catalog, g), population=pop2)
    o1, o2 = m1.reset(), m2.reset()
    clean = torch.ones(N, dtype=torch.bool)
    checked = 0
    for t in range(30):
        for (a, k), d in _differing(o1, o2, N).items():
            assert not (d & clean).any(), f"step {t}: {a}'s {k!r} differs before any click"
        checked += int(clean.sum())
        keys = _keys(m1.agents, o1[m1.agents[0]]["action_mask"].shape, g)
        K = cfg.slate_size
        o1, _, _, _, i1 = m1.step(_keyed_slates(o1, m1.agents, K, keys))
        o2, _, _, _, i2 = m2.step(_keyed_slates(o2, m2.agents, K, keys))
        clean &= ~(i1["clicked"] | i2["clicked"])
    assert checked > 4 * N, "too few click-free steps to test anything"
    assert not clean.all(), "no market ever clicked"


@pytest.mark.parametrize("preset", SHARED_PAGE)
def test_a_competitors_slate_reaches_an_agent_only_through_the_users_choice(preset):
    """Shared pages with partitioned catalogs and exact item counters: at each step a copy of
    the market is stepped with another slate for agent_1 (everyone else's the same). Where the
    user's choice is the same (the same item of the same agent, the same engagement) and not
    agent_1's, every other agent's next observation and (competitive) reward are the same: a
    competitor's slate is not observed, only the user's response to the page. (Under
    ``ownership="shared"`` or hashed counters, ``num_items > item_stats_size``, the
    candidates' exposure counts are the market's and do show the items other agents showed:
    documented on the Market-v0 page.) And whatever the user chose, an agent's history with the
    next user (when it is the same user in both) follows that agent's own outcome alone.
    agent_1's own observation does differ: the intervention is real."""
    env_id, N, g = preset, 32, torch.Generator().manual_seed(2)
    env = recenv.make_vec(env_id, num_envs=N, seed=6, horizon=40)
    cfg = env.config
    assert cfg.ownership == "partition" and cfg.stats_size >= cfg.num_items
    others = [a for a in env.agents if a != "agent_1"]
    obs = env.reset()
    checked, seen_by_agent_1, histories = 0, 0, 0
    for t in range(25):
        twin = pickle.loads(pickle.dumps(env))
        shape = obs["agent_0"]["action_mask"].shape
        keys = _keys(env.agents, shape, g)
        slates = _keyed_slates(obs, env.agents, cfg.slate_size, keys)
        other = _keyed_slates(obs, ["agent_1"], cfg.slate_size, _keys(["agent_1"], shape, g))
        o2, r2, _, _, i2 = twin.step({**slates, **other})
        obs, r1, _, _, i1 = env.step(slates)
        same = (
            (i1["chosen_agent"] == i2["chosen_agent"])
            & (i1["chosen_item"] == i2["chosen_item"])
            & (i1["engagement"] == i2["engagement"])
            & (i1["chosen_agent"] != 1)
        )
        diff = _differing(obs, o2, N)
        for (a, k), d in diff.items():
            if a != "agent_1":
                assert not (d & same).any(), f"step {t}: agent_1's slate reached {a}'s {k!r}"
        # An agent's history with the next user follows its own outcome alone, whoever else
        # won the click (the same user next, in both).
        for i, a in enumerate(others):
            j = env.agents.index(a)
            won1, won2 = i1["chosen_agent"] == j, i2["chosen_agent"] == j
            own = (won1 == won2) & (~won1 | (i1["engagement"] == i2["engagement"]))
            own &= ~won1 | (i1["chosen_item"] == i2["chosen_item"])
            own &= obs[a]["user_id"] == o2[a]["user_id"]
            assert not (diff[(a, "history")] & own).any(), f"step {t}: {a}'s history"
            histories += int(own.sum()) if i == 0 else 0
        if cfg.reward_mode == "competitive":
            for a in others:
                assert torch.equal(r1[a][same], r2[a][same]), f"step {t}: {a}'s reward"
        seen_by_agent_1 += int((diff[("agent_1", "candidates")] & same).sum())
        checked += int(same.sum())
    assert checked > 5 * N and seen_by_agent_1 > 0 and histories > checked


@pytest.mark.parametrize(
    "config",
    [
        {},
        {
            "reward_mode": "mixed",
            "welfare_weight": 1.0,
            "diversity_weight": 1.0,
            "fairness_weight": 1.0,
        },
    ],
    ids=["preset", "mixed-with-every-reward-term"],
)
def test_a_slate_the_viewer_never_sees_leaves_no_trace(config):
    """``platform_choice`` (Video-v0): the viewer visits one platform or none; two markets in
    which the platforms not visited show other slates stay the same in everything an agent or
    a critic reads: every agent's observation, the rewards (the optional diversity and
    long-tail terms of an unseen slate included), the flags, every info field and
    ``state()``, step after step and through an episode end."""
    env_id, N, g = "recenv/Video-v0", 16, torch.Generator().manual_seed(5)
    m1 = recenv.make_vec(env_id, num_envs=N, seed=7, horizon=15, **config)
    m2 = recenv.make_vec(env_id, num_envs=N, seed=7, horizon=15, **config)
    g2 = torch.Generator().manual_seed(6)
    o1, o2 = m1.reset(), m2.reset()
    K, changed = m1.config.slate_size, 0
    for t in range(40):
        shape = o1["agent_0"]["action_mask"].shape
        s1 = _keyed_slates(o1, m1.agents, K, _keys(m1.agents, shape, g))
        r1 = m1.step(s1)
        visited = r1[4]["platform"]  # drawn before the slates are read
        alt = _keyed_slates(o2, m2.agents, K, _keys(m2.agents, shape, g2))
        s2 = {
            a: torch.where((visited == i)[:, None], s1[a], alt[a]) for i, a in enumerate(m1.agents)
        }
        changed += sum(int((s2[a] != s1[a]).any(1).sum()) for a in m1.agents)
        r2 = m2.step(s2)
        for (a, k), d in _differing(r1[0], r2[0], N).items():
            assert not d.any(), f"step {t}: an unseen slate reached {a}'s {k!r}"
        for a in m1.agents:
            assert torch.equal(r1[1][a], r2[1][a]), f"step {t}: {a}'s reward"
        assert torch.equal(r1[2], r2[2]) and torch.equal(r1[3], r2[3]), f"step {t}: flags"
        for key, value in r1[4].items():
            if torch.is_tensor(value):
                assert torch.equal(value, r2[4][key]), f"step {t}: info[{key!r}]"
            elif isinstance(value, dict):
                for sub, v in value.items():
                    assert torch.equal(v, r2[4][key][sub]), f"step {t}: info[{key!r}][{sub!r}]"
        assert torch.equal(m1.state(), m2.state()), f"step {t}: state()"
        o1, o2 = r1[0], r2[0]
    assert changed > 100


@pytest.mark.parametrize("preset", [MARKET, "recenv/Video-v0"])
def test_nothing_of_an_ended_episode_reaches_the_next(preset):
    """Two markets with one seed played differently for an episode, then alike: from the
    next episode's first request on (after an auto-reset, and after an unseeded ``reset()``
    mid-episode) every observation is the same: an episode starts from its seed's stream
    alone, not from what the previous one did to the users and item counters."""
    env_id, N, H = preset, 8, 6
    m1 = recenv.make_vec(env_id, num_envs=N, seed=8, horizon=H, churn_threshold=0.0)
    m2 = recenv.make_vec(env_id, num_envs=N, seed=8, horizon=H, churn_threshold=0.0)
    K = m1.config.slate_size
    g1, g2, g = (torch.Generator().manual_seed(s) for s in (10, 11, 12))
    o1, o2 = m1.reset(), m2.reset()
    shape = o1["agent_0"]["action_mask"].shape
    for phase in ("auto-reset", "reset()"):
        # An episode played differently: to its end (the horizon), or half of it.
        for _ in range(H if phase == "auto-reset" else H // 2):
            o1, *_ = m1.step(_keyed_slates(o1, m1.agents, K, _keys(m1.agents, shape, g1)))
            o2, *_ = m2.step(_keyed_slates(o2, m2.agents, K, _keys(m2.agents, shape, g2)))
        if phase == "reset()":
            assert not m1.needs_reset.any()
            o1, o2 = m1.reset(), m2.reset()
        else:
            assert m1.needs_reset.all()
        # The next episode played alike (after an auto-reset step, two of them, the second
        # starting the next phase's episode).
        for t in range(H + 2):
            keys = _keys(m1.agents, shape, g)
            o1, r1, *_ = m1.step(_keyed_slates(o1, m1.agents, K, keys))
            o2, r2, *_ = m2.step(_keyed_slates(o2, m2.agents, K, keys))
            for (a, k), d in _differing(o1, o2, N).items():
                assert not d.any(), f"{phase}, step {t}: {a}'s {k!r} remembers the last episode"
            assert all(torch.equal(r1[a], r2[a]) for a in m1.agents), f"{phase}, step {t}"


@pytest.mark.parametrize("preset", [MARKET, "recenv/Video-v0"])
def test_state_holds_what_its_docstring_lists(preset):
    """``state()`` (the centralized critics' input) is laid out as ``BatchedMarket.state``
    says: the current user's latent interest, boredom, taste, satisfaction, budget over the
    mean budget, t / H and loyalty; each agent's candidates' true utility (0 where masked) and
    mask; the churned share, the mean satisfaction, the share of users seen this episode and
    the market share of choices so far. Its size is ``config.state_dim``."""
    env_id, N = preset, 6
    env = recenv.make_vec(env_id, num_envs=N, seed=9, horizon=25)
    cfg, L = env.config, env.layout
    T, D, A, C, U = cfg.num_topics, cfg.embed_dim, cfg.num_agents, cfg.num_candidates, cfg.num_users
    platform = cfg.topology == "platform_choice"
    g, n = torch.Generator().manual_seed(13), torch.arange(N)
    obs = env.reset()
    seen = torch.zeros(N, U, dtype=torch.bool)
    choices = torch.zeros(N, A)
    for _ in range(40):
        seen[n, env.user] = True
        s = env.state()
        assert s.shape == (N, cfg.state_dim)
        parts = s.split([T, T, D, 1, 1, 1, A, A * C, A * C, 1, 1, 1, A], dim=1)
        row = env.users[n, env.user]
        assert torch.equal(parts[0], row[:, L.interest]) and torch.equal(
            parts[1], row[:, L.boredom]
        )
        assert torch.equal(parts[2], env.user_const.taste)
        assert torch.equal(parts[3][:, 0], row[:, L.satisfaction])
        torch.testing.assert_close(parts[4][:, 0], row[:, L.budget] / cfg.session_budget)
        torch.testing.assert_close(parts[5][:, 0], env.t / cfg.horizon)
        assert torch.equal(parts[6], row[:, L.loyalty])
        mask = torch.stack([obs[a]["action_mask"] for a in env.agents], 1)
        assert torch.equal(parts[7].view(N, A, C), torch.where(mask, env.oracle_scores(), 0.0))
        assert torch.equal(parts[8].view(N, A, C), mask.float())
        current = env.user_epoch == env.episode[:, None]
        status = env.users[:, :, L.available_at] > env.t[:, None]
        churned = current & (env.users[:, :, L.churned] > 0) & status
        torch.testing.assert_close(parts[9][:, 0], churned.float().mean(1))
        sat = torch.where(current, env.users[:, :, L.satisfaction], cfg.satisfaction_init)
        torch.testing.assert_close(parts[10][:, 0], sat.mean(1))
        torch.testing.assert_close(parts[11][:, 0], seen.float().mean(1))
        total = choices.sum(1, keepdim=True)
        share = torch.where(total > 0, choices / total.clamp(min=1), 1.0 / A)
        torch.testing.assert_close(parts[12], share)
        K = cfg.slate_size
        obs, _, _, _, info = env.step(
            _keyed_slates(obs, env.agents, K, _keys(env.agents, mask[:, 0].shape, g))
        )
        # A step that starts a new episode (info["reset"]) serves no request.
        restart = info["reset"]
        seen[restart], choices[restart] = False, 0.0
        chosen = info["platform"] if platform else info["chosen_agent"]
        choices += (chosen[:, None] == torch.arange(A)).float()


@pytest.mark.parametrize("seed", [0, 3, 5, 7, 10, 14])
def test_the_mask_marks_exactly_the_candidates_a_slate_may_hold(seed):
    """On random markets (hashed counters, fresh items, duplicates across retrieval lists):
    ``action_mask`` is 1 exactly for the first copy of an item that has arrived by the market's
    clock (candidates are listed by catalog id), and ``check_slate`` accepts a slate with any
    unmasked candidate and refuses one with any masked candidate."""
    cfg = {**random_config(seed), "invalid_slate": "raise"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hashed counters are warned about
        env = recenv.make_vec(MARKET, num_envs=1, seed=seed, **cfg)
    K, g = cfg["slate_size"], torch.Generator().manual_seed(seed)
    obs = env.reset()
    for t in range(min(2 * cfg["horizon"] + 2, 10)):
        for a in env.agents if not env.needs_reset[0] else ():  # (ignored actions)
            ids, mask = obs[a]["candidate_ids"][0], obs[a]["action_mask"][0]
            assert torch.equal(ids, ids.sort().values), f"step {t} {a}: not listed by id"
            first = torch.cat([torch.ones(1, dtype=torch.bool), ids[1:] != ids[:-1]])
            arrived = env.catalog.arrival[ids] <= env.t[0]
            assert torch.equal(mask, first & arrived), f"step {t} {a}: mask"
            allowed = mask.nonzero().flatten().tolist()
            for c in range(len(ids)):
                rest = [x for x in allowed if x != c][: K - 1]
                slate = torch.tensor([[c, *rest]])
                if mask[c]:
                    env.check_slate(a, slate)
                else:
                    with pytest.raises(ValueError, match="is masked"):
                        env.check_slate(a, slate)
        keys = _keys(env.agents, obs["agent_0"]["action_mask"].shape, g)
        obs, *_ = env.step(_keyed_slates(obs, env.agents, K, keys))


def _layout(d: dict) -> dict:
    """The keys of an info dict with each value's type (dtype and shape for arrays; a nested
    dict's own layout)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _layout(v)
        elif isinstance(v, np.ndarray):
            out[k] = ("ndarray", str(v.dtype), v.shape)
        else:
            out[k] = type(v).__name__
    return out


@pytest.mark.parametrize("seed", [1, 2, 4, 6])
@pytest.mark.parametrize("flatten_obs", [False, True])
def test_spaces_and_info_layouts_hold_through_resets_and_episode_ends(seed, flatten_obs):
    """The PettingZoo face over three episodes of a random market, slates drawn by
    ``action_space(agent).sample(mask)``: every slate sampled is in the action space and
    accepted; every observation is in its space and ``state()`` in ``state_space``; rewards
    are floats and flags bools; every step's infos have one layout (keys, types, dtypes,
    shapes), the episode-end step adds ``episode`` with one layout, and reset infos have one
    layout too."""
    cfg = random_config(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = recenv.make(MARKET, seed=seed, flatten_obs=flatten_obs, **cfg)
    layouts: dict[str, dict] = {}

    def same_layout(kind: str, info: dict) -> None:
        assert _layout(info) == layouts.setdefault(kind, _layout(info)), kind

    for _ in range(3):
        obs, infos = env.reset()
        for a in env.agents:
            assert env.observation_space(a).contains(obs[a])
            same_layout("reset", infos[a])
        while env.agents:
            masks = {a: (infos if flatten_obs else obs)[a]["action_mask"] for a in env.agents}
            actions = {a: env.action_space(a).sample(masks[a]) for a in env.agents}
            assert all(env.action_space(a).contains(x) for a, x in actions.items())
            obs, rewards, term, trunc, infos = env.step(actions)
            assert env.state_space.contains(env.state())
            for a in obs:
                assert env.observation_space(a).contains(obs[a])
                assert type(rewards[a]) is float and type(term[a]) is type(trunc[a]) is bool
                info = dict(infos[a])
                if "episode" in info:
                    same_layout("episode", {"episode": info.pop("episode")})
                same_layout("step", info)
    assert "episode" in layouts


def test_observations_handed_out_are_never_changed_by_later_steps():
    """The observations, rewards and infos a step returns (numpy views on the PettingZoo face,
    the market's tensors on the batched face) hold the values of that step after the market
    has stepped on and reset: a replay buffer may keep them without copying."""
    face = recenv.make(MARKET, seed=0, horizon=8)
    obs, _ = face.reset()
    kept = []
    for _ in range(20):
        if not face.agents:
            obs, _ = face.reset()
        actions = {a: face.action_space(a).sample(obs[a]["action_mask"]) for a in face.agents}
        obs, _, _, _, infos = face.step(actions)
        kept.append(((obs, infos), copy.deepcopy((obs, infos))))
    for (o, i), (o_copy, i_copy) in kept:
        for a in o:
            for k in o[a]:
                np.testing.assert_array_equal(o[a][k], o_copy[a][k])
            np.testing.assert_array_equal(i[a]["shown"], i_copy[a]["shown"])
    env = recenv.make_vec(MARKET, num_envs=3, seed=0, horizon=8)
    g = torch.Generator().manual_seed(0)
    obs, kept = env.reset(), []
    for _ in range(20):
        keys = _keys(env.agents, obs["agent_0"]["action_mask"].shape, g)
        step = env.step(_keyed_slates(obs, env.agents, env.config.slate_size, keys))
        obs = step[0]
        kept.append((step, copy.deepcopy(step)))
    for (o, r, te, tr, i), (o_c, r_c, te_c, tr_c, i_c) in kept:
        assert torch.equal(te, te_c) and torch.equal(tr, tr_c)
        for a in o:
            assert torch.equal(r[a], r_c[a])
            for k in o[a]:
                assert torch.equal(o[a][k], o_c[a][k]), k
        for k, v in i.items():
            if torch.is_tensor(v):
                assert torch.equal(v, i_c[k]), k


@pytest.mark.parametrize("mode", ["competitive", "cooperative"])
def test_agents_that_are_not_privileged_act_on_their_observations_alone(mode):
    """Decentralised execution: every registered agent for the reward mode that does not declare
    ``needs_privileged``, bound to either of two markets whose observations are the same but
    whose latent state differs (the users' interests, all hidden, and taste; the items'
    embeddings and true qualities), acts the same (greedy and exploring, one seed): its slates
    read the observation, never ``state()`` nor the simulator, even where it learns from
    ``state()`` (MAPPO's critic, QMIX's mixer). The privileged oracles do tell the markets
    apart: the latent difference is there to be read."""
    N, g = 4, torch.Generator().manual_seed(14)
    preset_config = recenv.make_vec(MARKET, num_envs=1, seed=0, reward_mode=mode).config
    cfg = MarketConfig.from_kwargs(preset_config, feature_visible=0.0)
    pop = _population(cfg, g)
    other = Population(_population(cfg, g).interest, torch.randn_like(pop.taste), pop.activity)
    m1 = BatchedMarket(cfg, N, seed=1, population=pop)
    twin = _latent_twin_catalog(m1.catalog, g)
    m2 = BatchedMarket(cfg, N, seed=1, population=other, catalog=twin)
    o1, o2 = m1.reset(), m2.reset()
    assert not any(d.any() for d in _differing(o1, o2, N).values())
    for name in registered_agents():
        cls = agent_class(name)
        if mode not in cls.supports_reward_modes:
            continue
        agent = make_agent(name, m1)
        for explore in (False, True):
            acts = []
            for m, o in ((m1, o1), (m2, o2)):
                agent.bind(m)
                agent.begin_episode(None)
                agent.reseed(5)
                acts.append(agent.act(o, explore))
            same = all(torch.equal(acts[0][a], acts[1][a]) for a in acts[0])
            assert same != cls.needs_privileged, f"{name} (explore={explore})"
