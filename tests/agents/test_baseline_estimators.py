"""The learning baselines compute what their docstrings say, recomputed here from the
transitions they learned from: LinUCB's ridge regression and upper confidence bound, and the
popularity agent's per-item tables. Each run crosses episode ends, so the transitions hold
auto-reset rows, which carry no feedback and must add nothing."""

from __future__ import annotations

import pytest
import torch

import agents
from agents.ensemble import normalize_scores
from agents.features import ObsLayout, linear_features
from agents.rollout import train


def _calls(agent, env, steps: int, methods=("learn",)) -> list[tuple[str, object]]:
    """Train ``agent`` for ``steps`` env steps; the calls of ``methods`` it received, in
    order, as ``(method, argument)`` (``begin_episode``'s argument may be ``None``)."""
    calls: list[tuple[str, object]] = []
    for method in methods:
        real = getattr(agent, method)

        def recording(arg=None, _real=real, _method=method):
            calls.append((_method, arg))
            return _real(arg)

        setattr(agent, method, recording)
    train(agent, env, steps, seed=3)
    learned = [tr for m, tr in calls if m == "learn"]
    assert any(not bool(tr.valid.all()) for tr in learned), "no auto-reset row was crossed"
    return calls


def _recorded(agent, env, steps: int):
    """Train ``agent`` for ``steps`` env steps; the transitions it learned from."""
    return [tr for _, tr in _calls(agent, env, steps)]


def _slot_payoffs(tr, a: str, target: str) -> torch.Tensor:
    """``[N, K]`` each slot's payoff: 1 (click) or the click's engagement on the clicked
    slot, 0 elsewhere."""
    K = tr.actions[a].shape[1]
    hit = torch.arange(K)[None, :] == tr.clicked_slot[a][:, None]
    y = tr.engagement[a][:, None] if target == "engagement" else torch.ones(1, 1)
    return hit * y


@pytest.mark.parametrize("target", ["engagement", "click"])
def test_linucb_is_ridge_regression_scored_by_its_upper_bound(market, target):
    """LinUCB (Li et al., 2010), per env agent: ``A = λI + Σ x xᵀ`` and ``b = Σ y x`` over
    every shown slot of the real steps, ``θ = A⁻¹ b``; candidates score ``θ·x + α √(xᵀ A⁻¹
    x)`` while exploring and ``θ·x`` greedily."""
    env = market(num_envs=6, horizon=7, num_items=300)
    alpha, ridge = 0.7, 2.0
    agent = agents.make_agent("linucb", env, alpha=alpha, ridge=ridge, target=target, seed=1)
    seen = _recorded(agent, env, 6 * 20)
    layout = ObsLayout(env.config.num_topics)
    d = layout.linear_dim()
    for i, a in enumerate(env.agents):
        A = ridge * torch.eye(d, dtype=torch.float64)
        b = torch.zeros(d, dtype=torch.float64)
        for tr in seen:
            x = linear_features(layout, tr.obs[a]).double()  # [N, C, d]
            slate = tr.actions[a]
            xs = x.gather(1, slate[..., None].expand(-1, -1, d))[tr.valid]  # [n, K, d]
            y = _slot_payoffs(tr, a, target)[tr.valid].double()
            A += torch.einsum("nkd,nke->de", xs, xs)
            b += torch.einsum("nkd,nk->d", xs, y)
        torch.testing.assert_close(agent.A[i], A, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(agent.b[i], b, rtol=1e-10, atol=1e-9)
        theta = torch.linalg.solve(A, b)
        torch.testing.assert_close(agent.theta[i].double(), theta, rtol=1e-4, atol=1e-5)

        obs = env.observe()
        x = linear_features(layout, obs[a]).double()
        mean = x @ theta
        width = torch.einsum("ncd,de,nce->nc", x, torch.linalg.inv(A), x).sqrt()
        greedy = agent.score_agent(i, obs[a], explore=False).double()
        explore = agent.score_agent(i, obs[a], explore=True).double()
        torch.testing.assert_close(greedy, mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(explore, mean + alpha * width, rtol=1e-4, atol=1e-4)
        assert float(width.min()) > 0.01  # the bound is not negligible here


@pytest.mark.parametrize(
    ("name", "kwargs", "target"),
    [
        ("popularity", {"source": "own"}, "click"),
        ("epsilon_greedy", {"target": "engagement", "prior_count": 2.0}, "engagement"),
        ("epsilon_greedy", {"target": "click"}, "click"),
    ],
)
def test_item_tables_count_each_shown_items_feedback(market, name, kwargs, target):
    """Per catalog item, the summed payoff (``target``) and the impressions of the agent's
    shown slots on the real steps: the popularity agent's ``clicks`` / ``exposures``
    (``source="own"``), ε-greedy's ``payoff`` / ``count``; ε-greedy scores an item
    ``(payoff + c0 m) / (count + c0)``, ``m`` the mean payoff of all impressions, ``c0``
    its ``prior_count``; the popularity agent ``log(1 + clicks) - 1e-3 log(1 +
    exposures)``, each agent from its own tables."""
    env = market(num_envs=6, horizon=7, num_items=300)
    agent = agents.make_agent(name, env, seed=1, **kwargs)
    seen = _recorded(agent, env, 6 * 20)
    payoff_t, count_t = (
        (agent.clicks, agent.exposures) if name == "popularity" else (agent.payoff, agent.count)
    )
    I = env.config.num_items
    for i, a in enumerate(env.agents):
        payoff = torch.zeros(I, dtype=torch.float64)
        count = torch.zeros(I, dtype=torch.float64)
        for tr in seen:
            items = tr.obs[a]["candidate_ids"].gather(1, tr.actions[a])[tr.valid].flatten()
            y = _slot_payoffs(tr, a, target)[tr.valid].double().flatten()
            payoff.index_add_(0, items, y)
            count.index_add_(0, items, torch.ones_like(y))
        torch.testing.assert_close(payoff_t[i].double(), payoff, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(count_t[i].double(), count, rtol=0, atol=0)
        obs_a = env.observe()[a]
        ids = obs_a["candidate_ids"]
        if name == "epsilon_greedy":
            c0 = agent.config.prior_count
            want = (payoff[ids] + c0 * payoff.sum() / count.sum()) / (count[ids] + c0)
        else:  # most clicked first, ties to the less exposed
            want = torch.log1p(payoff[ids]) - 1e-3 * torch.log1p(count[ids])
        got = agent.score_agent(i, obs_a).double()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_market_popularity_ranks_by_the_observed_clicks_then_fewer_exposures(market):
    """``source="market"`` scores each candidate by this market's clicks on it this episode,
    as the observation carries them, less 1e-3 x its exposures (ties to the less shown)."""
    env = market(num_envs=6, horizon=7, num_items=300)
    agent = agents.make_agent("popularity", env, source="market")
    train(agent, env, 6 * 5, seed=3)
    layout = ObsLayout(env.config.num_topics)
    obs = env.observe()
    for i, a in enumerate(env.agents):
        cands = obs[a]["candidates"]
        clicks, exposures = cands[..., layout.cand_clicks], cands[..., layout.cand_exposures]
        assert bool((clicks > 0).any()) and bool((exposures > clicks).any())
        want = clicks - 1e-3 * exposures
        torch.testing.assert_close(agent.score_agent(i, obs[a]), want)


@pytest.mark.parametrize(
    ("target", "user_scope"), [("click", "episode"), ("engagement", "population")]
)
def test_mf_is_weighted_least_squares_with_users_folded_in(market, target, user_scope):
    """MF (Hu, Koren & Volinsky, 2008), replayed here row by row in float64 from the calls it
    received: a shown slot's label ``y`` (1 or the engagement on the clicked slot, else 0)
    weighs ``c = 1 + α`` when clicked and 1 when passed over, 0 on a dropped (auto-reset)
    row. A user's vector is folded in before the step's feedback, ``p = (λI + Σ c q qᵀ)⁻¹
    Σ c (y − μ − b) q`` over their earlier slots (this market's episode, or every market's
    and episode's with ``user_scope="population"``); then one SGD step of the weighted
    squared error, ``q += lr (c e p − reg q)``, ``b += lr (c e − reg b)`` per shown slot
    (``e = y − μ − b − p·q``, all from the values before the step) and ``μ += lr Σ c e / Σ
    c``; candidates score ``μ + b + p·q``."""
    env = market(num_envs=4, horizon=5, num_items=200)
    lam, alpha, lr, reg = 0.5, 3.0, 0.1, 0.05
    agent = agents.make_agent(
        "mf", env, dim=4, lr=lr, reg=reg, confidence=alpha, fold_in_reg=lam, target=target,
        user_scope=user_scope, epsilon=0.2, seed=1,
    )  # fmt: skip
    item, bias, mu = (
        agent.item.double().clone(),
        agent.item_bias.double().clone(),
        agent.mu.double().clone(),
    )
    item0 = item.clone()
    # 4 x 10 steps end mid-episode.
    calls = _calls(agent, env, 4 * 10, ("observe", "learn", "begin_episode"))

    d, N = agent.config.dim, env.num_envs
    gram: dict[tuple, torch.Tensor] = {}  # (agent, [market,] user) -> Σ c q qᵀ
    rhs: dict[tuple, torch.Tensor] = {}

    def key(i, n, u):
        return (i, u) if user_scope == "population" else (i, n, u)

    def fold_in(k):
        g = gram.get(k, torch.zeros(d, d, dtype=torch.float64))
        return torch.linalg.solve(
            lam * torch.eye(d, dtype=torch.float64) + g,
            rhs.get(k, torch.zeros(d, dtype=torch.float64)),
        )

    def slots(tr, a):
        """Per row: the user, and (item, y, c) per shown slot; none on a dropped row."""
        items = tr.slate_feedback(a, target)[0]
        y = _slot_payoffs(tr, a, target)
        for n in range(N):
            shown = []
            if bool(tr.seen(a)[n]):
                for k in range(items.shape[1]):
                    clicked = int(tr.clicked_slot[a][n]) == k
                    shown.append((int(items[n, k]), float(y[n, k]), 1.0 + alpha * clicked))
            yield n, int(tr.obs[a]["user_id"][n]), shown

    vecs: dict[tuple, torch.Tensor] = {}

    def observe(i, a, tr):
        rows = list(slots(tr, a))
        for n, u, _ in rows:  # every user's vector before any of this step's terms
            vecs[i, n] = fold_in(key(i, n, u))
        for n, u, shown in rows:
            k = key(i, n, u)
            for j, y, c in shown:
                q = item[i, j]
                gram[k] = gram.get(k, 0) + c * torch.outer(q, q)
                rhs[k] = rhs.get(k, 0) + c * (y - mu[i] - bias[i, j]) * q

    def learn(i, a, tr):
        d_item, d_bias = torch.zeros_like(item[i]), torch.zeros_like(bias[i])
        err_sum, conf_sum = 0.0, 0.0
        for n, _, shown in slots(tr, a):
            p = vecs[i, n]
            for j, y, c in shown:
                e = c * (y - mu[i] - bias[i, j] - p @ item[i, j])
                d_item[j] += lr * (e * p - reg * item[i, j])
                d_bias[j] += lr * (e - reg * bias[i, j])
                err_sum, conf_sum = err_sum + e, conf_sum + c
        item[i] += d_item
        bias[i] += d_bias
        mu[i] += lr * err_sum / max(conf_sum, 1.0)

    for method, arg in calls:
        if method == "begin_episode":
            if user_scope == "episode":
                ends = range(N) if arg is None else arg.nonzero().flatten().tolist()
                for k in [k for k in gram if k[1] in ends]:
                    del gram[k], rhs[k]
            continue
        for i, a in enumerate(env.agents):
            (observe if method == "observe" else learn)(i, a, arg)

    torch.testing.assert_close(agent.item.double(), item, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(agent.item_bias.double(), bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(agent.mu.double(), mu, rtol=1e-4, atol=1e-5)
    assert float((item - item0).abs().max()) > 1e-3 and float(bias.abs().max()) > 1e-3  # it learned
    U = env.config.num_users
    want_gram = torch.zeros(agent.gram.shape, dtype=torch.float64)
    want_rhs = torch.zeros(agent.rhs.shape, dtype=torch.float64)
    for k in gram:  # the user tables: slot u, or market n's u at n * U + u
        slot = k[-1] if user_scope == "population" else k[1] * U + k[2]
        want_gram[k[0], slot], want_rhs[k[0], slot] = gram[k], rhs[k]
    assert len(gram) > 2 * N
    torch.testing.assert_close(agent.gram.double(), want_gram, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(agent.rhs.double(), want_rhs, rtol=1e-4, atol=1e-5)
    obs = env.observe()
    for i, a in enumerate(env.agents):
        ids = obs[a]["candidate_ids"]
        p = torch.stack([fold_in(key(i, n, int(obs[a]["user_id"][n]))) for n in range(N)])
        want = mu[i] + bias[i][ids] + torch.einsum("nd,ncd->nc", p, item[i][ids])
        torch.testing.assert_close(
            agent.score_agent(i, obs[a]).double(), want, rtol=1e-4, atol=1e-5
        )


def test_ensemble_blends_its_members_normalised_scores_by_weight(market):
    """The ensemble scores ``Σ_j w_j norm(s_j)`` over its members' candidate scores, each
    normalised over the request's unmasked candidates (z-score: their mean and population
    std; masked candidates 0), and every member learns from the transitions it is given."""
    s = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    z = 1.5**0.5  # (3 - 2) / sqrt(2 / 3)
    torch.testing.assert_close(
        normalize_scores(s, mask, "zscore"), torch.tensor([[-z, 0.0, z, 0.0]]), atol=1e-5, rtol=0
    )

    env = market(num_envs=3, horizon=10, num_items=200)
    weights = (2.0, -0.5)
    ens = agents.make_agent(
        "ensemble", env, members=["popularity", ["linucb", {"ridge": 1.0}]], weights=weights,
        normalize="zscore", seed=0,
    )  # fmt: skip
    ridge = ens.members[1].A.clone()
    train(ens, env, 3 * 12, seed=1)
    assert not torch.equal(ens.members[1].A, ridge), "a member did not learn"
    obs = env.observe()
    for i, a in enumerate(env.agents):
        m = obs[a]["action_mask"]
        members = [normalize_scores(x.score_agent(i, obs[a]), m, "zscore") for x in ens.members]
        want = weights[0] * members[0] + weights[1] * members[1]
        torch.testing.assert_close(ens.score_agent(i, obs[a]), want)
        assert float(members[1].abs().max()) > 0.1  # the second member has a say
