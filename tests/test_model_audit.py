"""An audit of the simulation model against DESIGN §3 and the scenario pages: each mechanism
recomputed from scratch (the latent user row, the catalog's tables, the step infos) and
compared with what the simulator does. The other tests check the simulator against its own
intermediate values (the click frequencies against ``info["choice_probs"]``, the metrics
against the step infos); these rebuild those values from the model's definition.

Statistical tests: fixed seeds, tolerances of several standard errors of the sample at hand
(stated per test), so they are deterministic and a real divergence fails them by far.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recenv

MARKET = "recenv/Market-v0"
PRESETS = (MARKET, "recenv/ECommerce-v0", "recenv/Music-v0", "recenv/Video-v0")


def _random_slates(obs, agents, K: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniformly random valid slates: K distinct unmasked candidates per agent, ``[N, K]``."""
    return {
        a: (torch.rand(obs[a]["action_mask"].shape, generator=g) + 2.0 * obs[a]["action_mask"])
        .topk(K, dim=1)
        .indices
        for a in agents
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_choice_probabilities_recomputed_from_the_latent_state(preset):
    """``info["choice_probs"]`` [N, P+1] is the conditional logit of DESIGN §3 step 6 computed
    from scratch: from the requesting user's latent row (interest, boredom) and constants
    (taste, price sensitivity), the catalog's tables for the shown items, and the page
    position (agent blocks rotating with the step on a shared page; the slot alone on the
    visited platform under ``platform_choice``):
    ``u = w_i interest·topics + w_t taste·embed + w_q quality − w_b boredom·topics − s_u price
    − b log2(1 + position)``, softmax over the visible entries and ``no_click_utility``,
    divided by the temperature. 64 markets × 20 requests, random slates."""
    env = recenv.make_vec(preset, num_envs=64, seed=3, horizon=40)
    cfg, cat, L = env.config, env.catalog, env.layout
    N, A, K = env.num_envs, cfg.num_agents, cfg.slate_size
    P = A * K
    agent, slot = torch.arange(P) // K, torch.arange(P) % K
    g = torch.Generator().manual_seed(0)
    obs = env.reset()
    for _ in range(20):
        row = env.users[torch.arange(N), env.user].clone()
        taste, sens = env.user_const.taste.clone(), env.user_const.price_sensitivity.clone()
        t = env.t.clone()
        acts = _random_slates(obs, env.agents, K, g)
        items = env.cand.gather(2, torch.stack([acts[a] for a in env.agents], 1)).view(N, P)
        if cfg.topology == "shared_page":
            block = (agent[None] + t.long()[:, None]) % A
            position = block * K + slot
        else:
            position = slot.expand(N, P)
        topics = cat.topics[items]
        u = (
            cfg.interest_weight * (topics * row[:, None, L.interest]).sum(-1)
            + cfg.taste_weight * (cat.embed[items] * taste[:, None]).sum(-1)
            + cfg.quality_weight * cat.quality[items]
            - cfg.boredom_weight * (topics * row[:, None, L.boredom]).sum(-1)
            - sens[:, None] * cat.price[items]
            - cfg.position_bias * torch.log2(1.0 + position.float())
        )
        obs, _, _, _, info = env.step(acts)
        visible = info["shown"].view(N, P) >= 0
        logits = torch.where(visible, u, -math.inf)
        logits = torch.cat([logits, torch.full((N, 1), cfg.no_click_utility)], 1)
        want = torch.softmax(logits / cfg.temperature, dim=1)
        torch.testing.assert_close(info["choice_probs"], want, atol=1e-5, rtol=1e-4)


def test_platform_visits_follow_the_loyalty_logit():
    """Under ``platform_choice`` (Video-v0) the platform a viewer visits is drawn from
    ``softmax(loyalty_weight · loyalty_a, leave_utility)`` of the viewer's row before the
    request: over 256 markets × 30 requests (7,680 draws) each platform's and leaving's
    frequency is within 4 standard errors (sqrt(Σ p(1-p)) / n, ~0.004) of the mean
    probability, also among the draws where that option was likelier than its median and
    among the rest (the marginals alone hardly move with the loyalty weight, which sets
    how far the viewers' probabilities spread), and a viewer who leaves sees nothing."""
    env = recenv.make_vec("recenv/Video-v0", num_envs=256, seed=4, num_items=900, horizon=40)
    cfg, L = env.config, env.layout
    N, A = env.num_envs, cfg.num_agents
    g = torch.Generator().manual_seed(4)
    obs = env.reset()
    probs, hits = [], []
    for _ in range(30):
        loyalty = env.users[torch.arange(N), env.user][:, L.loyalty]
        logits = torch.cat([cfg.loyalty_weight * loyalty, torch.full((N, 1), cfg.leave_utility)], 1)
        obs, _, _, _, info = env.step(_random_slates(obs, env.agents, cfg.slate_size, g))
        live = ~info["reset"]
        probs.append(torch.softmax(logits, 1)[live].double())
        hits.append(torch.nn.functional.one_hot(info["platform"][live], A + 1).double())
        left = info["platform"] == A
        assert (info["shown"][left] == -1).all()
    p, h = torch.cat(probs), torch.cat(hits)
    for j in range(A + 1):
        likelier = p[:, j] >= p[:, j].median()
        for rows in (slice(None), likelier, ~likelier):
            pj, hj = p[rows, j], h[rows, j]
            sigma = torch.sqrt((pj * (1 - pj)).sum()) / pj.numel()
            assert abs(float(hj.mean() - pj.mean())) <= 4 * float(sigma), (j, hj.mean(), pj.mean())


def test_arrivals_follow_activity():
    """DESIGN §3 step 1: a user arrives sampled by activity among the active users. With
    sessions that never end and no churn every user is active, so each market's requests
    are a multinomial sample of its users weighted by ``activity`` [N, U]: the chi-square
    statistic over 128 markets × 25 users × 100 requests is within 5 standard deviations
    (sqrt(2 · dof)) of its mean, the degrees of freedom ``N (U - 1)``; and the most active
    quarter of the users makes more requests than the least active quarter."""
    H = 100
    env = recenv.make_vec(
        MARKET,
        num_envs=128,
        seed=6,
        num_items=500,
        horizon=H,
        session_budget=1e6,
        churn_threshold=0.0,
    )
    N, U, K = env.num_envs, env.config.num_users, env.config.slate_size
    g = torch.Generator().manual_seed(6)
    obs = env.reset()
    counts = torch.zeros(N, U, dtype=torch.float64)
    for _ in range(H):
        counts[torch.arange(N), env.user] += 1
        obs, *_ = env.step(_random_slates(obs, env.agents, K, g))
    activity = env.activity.double()
    expected = H * activity / activity.sum(1, keepdim=True)
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = N * (U - 1)
    assert abs(stat - dof) <= 5 * math.sqrt(2 * dof), (stat, dof)
    order = activity.argsort(1)
    q = U // 4
    assert counts.gather(1, order[:, -q:]).sum() > 3 * counts.gather(1, order[:, :q]).sum()


def test_satisfaction_churn_and_retention_recomputed_from_the_step_infos():
    """DESIGN §3 step 8 and the episode metrics, rebuilt per user from the step infos alone:
    every user starts at ``satisfaction_init``; each request moves the requester's
    satisfaction by ``satisfaction_rate · (fit − expectation)`` (fit = sigmoid of the clicked
    item's utility, 0 without a click), clamped to [0, 1]; below ``churn_threshold`` the user
    churns and (``return_prob=0``) never arrives again; the episode terminates exactly when
    every user has churned. At each market's first episode end, ``retention`` is the share
    of users not churned and ``satisfaction`` the mean over all users (unseen ones at the
    initial value)."""
    N, U = 24, 6
    env = recenv.make_vec(
        MARKET,
        num_envs=N,
        seed=7,
        num_items=500,
        num_users=U,
        horizon=60,
        return_prob=0.0,
        churn_threshold=0.55,
        expectation=0.5,
        satisfaction_rate=0.1,
    )
    cfg, K = env.config, env.config.slate_size
    sat = np.full((N, U), cfg.satisfaction_init, dtype=np.float32)
    churned = np.zeros((N, U), dtype=bool)
    first_done = np.zeros(N, dtype=bool)
    g = torch.Generator().manual_seed(7)
    obs = env.reset()
    terminated_seen = truncated_seen = 0
    while not first_done.all():
        user = obs[env.agents[0]]["user_id"].numpy().copy()
        obs, _, term, trunc, info = env.step(_random_slates(obs, env.agents, K, g))
        fit = torch.where(info["clicked"], torch.sigmoid(info["utility"]["total"]), 0.0).numpy()
        for n in np.flatnonzero(~first_done & ~info["reset"].numpy()):
            u = user[n]
            assert not churned[n, u], "a churned user arrived without return_prob"
            s = sat[n, u] + np.float32(cfg.satisfaction_rate) * (
                fit[n] - np.float32(cfg.expectation)
            )
            sat[n, u] = np.clip(s, 0.0, 1.0)
            churned[n, u] = sat[n, u] < cfg.churn_threshold
            assert bool(term[n]) == churned[n].all()
            if term[n] or trunc[n]:
                ep = info["episode"]
                assert float(ep["retention"][n]) == pytest.approx(1.0 - churned[n].mean())
                assert float(ep["satisfaction"][n]) == pytest.approx(sat[n].mean(), abs=1e-5)
                first_done[n] = True
                terminated_seen += bool(term[n])
                truncated_seen += bool(trunc[n])
    assert terminated_seen and truncated_seen  # both ends were checked


def test_session_gap_budget_refill_and_churn_return_wait():
    """After a session runs out the user stays away ``floor(session_gap · (0.5 + v))`` steps
    (``available_at = t + 1 + gap``, v uniform) and gets a new budget ``session_budget ·
    (0.5 + v')``; a churned user waits a geometric number of steps (``return_prob`` per step,
    at least 1). Gap frequencies against the exact distribution (gap 5: 2 and 7 with 0.1,
    3..6 with 0.2) within 4 standard errors; the budgets within their range and their mean
    within 4 standard errors of ``session_budget``; the churn wait's mean within 4 standard
    errors of ``1 / return_prob``. A churned user comes back with ``satisfaction_init``
    (config: "satisfaction of a new or returning user"): their first request back moves
    satisfaction from there."""
    p = 0.1
    env = recenv.make_vec(
        MARKET,
        num_envs=128,
        seed=8,
        num_items=500,
        num_users=10,
        horizon=60,
        session_budget=1.0,
        session_gap=5,
        return_prob=p,
        churn_threshold=0.62,
    )
    cfg, L, K = env.config, env.layout, env.config.slate_size
    N = env.num_envs
    g = torch.Generator().manual_seed(8)
    obs = env.reset()
    gaps, budgets, waits = [], [], []
    churned = torch.zeros(N, cfg.num_users, dtype=torch.bool)  # this episode's, so far
    returns = 0
    for _ in range(50):
        n, u, t = torch.arange(N), env.user.clone(), env.t.clone()
        obs, _, _, _, info = env.step(_random_slates(obs, env.agents, K, g))
        live = ~info["reset"]
        after = env.users[n, u]  # the arrival changes neither status nor budget
        back = live & churned[n, u]
        fit = torch.where(info["clicked"], torch.sigmoid(info["utility"]["total"]), 0.0)
        sat = cfg.satisfaction_init + cfg.satisfaction_rate * (fit - cfg.expectation)
        torch.testing.assert_close(after[back, L.satisfaction], sat[back].clamp(0, 1))
        returns += int(back.sum())
        churned[info["reset"]] = False
        churned[n[live], u[live]] = after[live, L.churned] > 0
        away = after[:, L.available_at] - t - 1
        # The session depth restarts at 0 exactly when the request ended the session or
        # the user churned.
        ended = live & (after[:, L.depth] == 0)
        churn = ended & (after[:, L.churned] > 0)
        session = ended & ~churn
        gaps += away[session].tolist()
        budgets += after[session, L.budget].tolist()
        waits += away[churn].tolist()
    gaps_t = torch.tensor(gaps)
    assert len(gaps) > 1000 and len(waits) > 200 and returns > 100, (len(gaps), len(waits), returns)
    want = {2: 0.1, 3: 0.2, 4: 0.2, 5: 0.2, 6: 0.2, 7: 0.1}
    assert set(gaps_t.long().tolist()) <= set(want)
    for k, q in want.items():
        freq = float((gaps_t == k).double().mean())
        assert abs(freq - q) <= 4 * math.sqrt(q * (1 - q) / len(gaps)), (k, freq, q)
    b = torch.tensor(budgets, dtype=torch.float64)
    assert ((b >= 0.5 * cfg.session_budget) & (b < 1.5 * cfg.session_budget)).all()
    assert abs(float(b.mean()) - cfg.session_budget) <= 4 * math.sqrt(1 / 12 / len(b))
    w = torch.tensor(waits, dtype=torch.float64)
    assert (w >= 1).all() and (w == w.round()).all()
    sd = math.sqrt((1 - p) / p**2 / len(w))
    assert abs(float(w.mean()) - 1 / p) <= 4 * sd, (float(w.mean()), 1 / p, sd)


def test_purchase_converts_with_the_clicks_sigmoid_and_pays_the_price():
    """ECommerce-v0 (DESIGN §3 step 7, e-commerce): a click converts with probability
    ``sigmoid(utility)`` of the utility that drew it and then earns exactly the item's price;
    an unconverted click earns 0. Over 128 markets × 40 requests of oracle slates (~3,000
    clicks) the conversion rate is within 4 standard errors (sqrt(Σ p(1-p)) / n) of the
    mean sigmoid."""
    env = recenv.make_vec("recenv/ECommerce-v0", num_envs=128, seed=9, num_items=900)
    cat = env.catalog
    env.reset()
    probs, bought = [], []
    for _ in range(40):
        slate = env.oracle_slates()
        _, _, _, _, info = env.step({a: slate[:, i] for i, a in enumerate(env.agents)})
        c = info["clicked"] & ~info["reset"]
        value = info["engagement"][c]
        price = cat.price[info["chosen_item"][c]]
        assert ((value == 0) | (value == price)).all()
        probs.append(torch.sigmoid(info["utility"]["total"][c]).double())
        bought.append((value > 0).double())
    p, b = torch.cat(probs), torch.cat(bought)
    n = p.numel()
    assert n > 2000
    sigma = float(torch.sqrt((p * (1 - p)).sum())) / n
    assert abs(float(b.mean() - p.mean())) <= 4 * sigma, (float(b.mean()), float(p.mean()), sigma)


@pytest.mark.parametrize(
    ("preset", "mode"),
    [(MARKET, "competitive"), (MARKET, "mixed"), ("recenv/Video-v0", "mixed")],
)
def test_optional_terms_are_added_before_the_mixed_mode_combines(preset, mode):
    """DESIGN §3 step 9 (and Market-v0's page): the welfare (clicked item's utility, to its
    agent), diversity (intra-list diversity of the agent's visible slate) and fairness (mean
    novelty of its visible items over log2 I) terms are added to each agent's own engagement;
    ``competitive`` pays that, ``mixed`` gives ``(1 − w) own + w Σ own``. Under
    ``platform_choice`` only the visited platform's slate is visible, so the other platforms'
    terms are 0. Every other step agent 0 repeats a slot (``invalid_slate="repair"`` drops
    it): its terms are over the slots left, the mean novelty over the items it showed."""
    from recenv.core.metrics import intra_list_diversity

    wel, div, fair = 0.5, 0.3, 0.7
    w = 0.4 if mode == "mixed" else 0.0
    env = recenv.make_vec(
        preset,
        num_envs=16,
        seed=10,
        num_items=900,
        reward_mode=mode,
        welfare_weight=wel,
        diversity_weight=div,
        fairness_weight=fair,
        invalid_slate="repair",
        **({"team_weight": w} if mode == "mixed" else {}),
    )
    cat, A = env.catalog, env.config.num_agents
    env.reset()
    repaired = 0
    for step in range(10):
        slate = env.oracle_slates()
        if step % 2:
            slate[:, 0, -1] = slate[:, 0, 0]
        _, rew, _, _, info = env.step({a: slate[:, i] for i, a in enumerate(env.agents)})
        shown = info["shown"]  # [N, A, K], -1 where not visible
        vis, items = shown >= 0, shown.clamp(min=0)
        novelty = cat.novelty[items] / math.log2(env.config.num_items)
        tail = (novelty * vis).sum(2) / vis.sum(2).clamp(min=1)
        won = info["chosen_agent"][:, None] == torch.arange(A)
        own = won * (info["engagement"] + wel * info["utility"]["total"])[:, None]
        own = own + div * intra_list_diversity(cat.topics[items], vis) + fair * tail
        got = torch.stack([rew[a] for a in env.agents], 1)
        if mode == "competitive":
            torch.testing.assert_close(got, own)  # float32's default tolerance
        else:
            want = (1 - w) * own + w * own.sum(1, keepdim=True)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if env.config.topology == "platform_choice":
            visited = info["platform"][:, None] == torch.arange(A)
            assert (~vis.any(2) | visited).all()
        repaired += int((vis[:, 0].sum(1) == env.config.slate_size - 1).sum())
    assert repaired > 0


def test_history_and_candidate_features_recomputed_from_the_step_infos():
    """DESIGN §3 step 3, the observation's contents rebuilt from the step infos alone (no
    episode ends: churn off, horizon past the steps run):

    - ``history[a]`` [T+4]: the agent's own history with the user, each of the user's
      requests decaying it ×0.8 and adding (clicked item's topics if the agent won it, the
      visible share of its slate, 1 if it won, the engagement it won), then the steps since
      the user's last request over H (1 before the first);
    - ``candidates[a]`` [C, T+6]: topics, length, price, quality plus its fixed noise,
      log(1 + clicks) and log(1 + exposures) of the item in this market this episode, and
      its age over H."""
    N, U, H = 16, 5, 200
    env = recenv.make_vec(
        MARKET, num_envs=N, seed=11, num_items=500, num_users=U, horizon=H, churn_threshold=0.0
    )
    cfg, cat = env.config, env.catalog
    A, K, T, I = cfg.num_agents, cfg.slate_size, cfg.num_topics, cfg.num_items
    hist = torch.zeros(N, U, A, T + 3)
    last = torch.full((N, U), -1.0)
    clicks = torch.zeros(N, I)
    exposures = torch.zeros(N, I)
    static = torch.cat(
        [
            cat.topics,
            cat.length[:, None],
            cat.price[:, None],
            (cat.quality + cat.quality_noise)[:, None],
        ],
        dim=1,
    )
    n = torch.arange(N)
    g = torch.Generator().manual_seed(11)
    obs = env.reset()
    revisits = 0
    for _ in range(60):
        u, t = env.user.clone(), env.t.clone()
        since = torch.where(last[n, u] < 0, 1.0, ((t - last[n, u]) / H).clamp(max=1.0))
        revisits += int((last[n, u] >= 0).sum())
        for i, a in enumerate(env.agents):
            h = obs[a]["history"]
            torch.testing.assert_close(h[:, : T + 3], hist[n, u, i], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(h[:, T + 3], since)
            ids, feats = obs[a]["candidate_ids"], obs[a]["candidates"]
            torch.testing.assert_close(feats[:, :, : T + 3], static[ids])
            torch.testing.assert_close(feats[:, :, T + 3], torch.log1p(clicks.gather(1, ids)))
            torch.testing.assert_close(feats[:, :, T + 4], torch.log1p(exposures.gather(1, ids)))
            age = ((t[:, None] - cat.arrival[ids]) / H).clamp(min=0)
            torch.testing.assert_close(feats[:, :, T + 5], age)
        obs, _, _, _, info = env.step(_random_slates(obs, env.agents, K, g))
        assert not info["reset"].any()
        shown, vis = info["shown"], info["shown"] >= 0  # [N, A, K]
        won = (info["chosen_agent"][:, None] == torch.arange(A)).float()  # [N, A]
        item = info["chosen_item"].clamp(min=0)
        add = torch.cat(
            [
                won[:, :, None] * cat.topics[item][:, None, :],
                vis.float().mean(2, keepdim=True),
                won[:, :, None],
                (won * info["engagement"][:, None])[:, :, None],
            ],
            dim=2,
        )
        hist[n, u] = 0.8 * hist[n, u] + add
        last[n, u] = t
        for m in range(N):
            exposures[m].index_add_(0, shown[m][vis[m]], torch.ones(int(vis[m].sum())))
            if info["clicked"][m]:
                clicks[m, item[m]] += 1
    assert revisits > 500
