"""The user dynamics do what DESIGN §3 (step 8) says: boredom, interest drift, satisfaction and
churn, loyalty under platform choice — each driven by a scripted policy with a fixed seed.

The policies read the user table (latent state) or ``oracle_scores()`` where they need to: these
are experiments on the simulator, not agents. Margins are several times the spread seen across
seeds, so they survive changes of the random streams.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import recenv

MARKET = "recenv/Market-v0"


def _best_slates(env: recenv.BatchedMarket) -> torch.Tensor:
    return env.oracle_slates()


def _worst_slates(env: recenv.BatchedMarket) -> torch.Tensor:
    """Each agent's K unmasked candidates of lowest true utility."""
    s = env.oracle_scores()
    s = torch.where(env.cand_mask, -s, torch.full_like(s, -math.inf))
    return s.topk(env.config.slate_size, dim=2).indices


def _act(env: recenv.BatchedMarket, slates: torch.Tensor) -> tuple:
    return env.step({a: slates[:, i] for i, a in enumerate(env.agents)})


def _current_users(env: recenv.BatchedMarket) -> torch.Tensor:
    """[N, U] users that belong to the current episode (seen at least once)."""
    return env.user_epoch == env.episode[:, None]


# --------------------------------------------------------------------------------------------
# Boredom
# --------------------------------------------------------------------------------------------
def _topic_slates(env: recenv.BatchedMarket, obs, topic: torch.Tensor) -> torch.Tensor:
    """Each agent's K unmasked candidates with the most weight on ``topic`` [N]."""
    T, K = env.config.num_topics, env.config.slate_size
    out = []
    for a in env.agents:
        cand = obs[a]["candidates"][..., :T]  # topics come first in the candidate features
        w = cand.gather(2, topic[:, None, None].expand(-1, cand.shape[1], 1)).squeeze(2)
        w = w + 1e-6 * torch.arange(w.shape[1])  # a fixed tie-break
        w = torch.where(obs[a]["action_mask"], w, torch.full_like(w, -math.inf))
        out.append(w.topk(K, dim=1).indices)
    return torch.stack(out, dim=1)


def _boredom_run(topic_of_step, seed=0, **overrides):
    """One user per market (so the same user comes back every step), 4 pure topics; every agent
    shows items of ``topic_of_step(favourite, t)``. Returns per-step mean click probability,
    the user's final boredom and interest, their favourite topic and their initial interest."""
    cfg = dict(
        num_items=500,
        horizon=40,
        num_topics=4,
        max_item_topics=1,
        num_users=1,
        churn_threshold=0.0,  # nobody churns: one user per market would end the episode
    )
    cfg.update(overrides)
    env = recenv.make_vec(MARKET, num_envs=32, seed=seed, **cfg)
    L = env.layout
    obs = env.reset()
    start = env.users[:, 0, L.interest].clone()
    favourite = start.argmax(1)  # the user's latent favourite topic
    p_click = []
    for t in range(cfg["horizon"] - 1):
        obs, _, _, _, info = _act(env, _topic_slates(env, obs, topic_of_step(favourite, t)))
        p_click.append(float((1 - info["choice_probs"][:, -1]).mean()))
    row = env.users[:, 0]
    return torch.tensor(p_click), row[:, L.boredom], row[:, L.interest], favourite, start


def _mono(favourite, t):
    return favourite


def _diverse(favourite, t):
    return (favourite + t) % 4


def test_repeating_one_topic_builds_boredom_and_lowers_clicks():
    """Showing a user their favourite topic over and over raises their boredom with it (well
    above a policy that rotates topics) and their click probability falls from the first 5 to
    the last 20 steps; with boredom switched off, the same policy and seed do not lose clicks —
    so boredom is the cause."""
    p_mono, bored_mono, _, fav, _ = _boredom_run(_mono)
    _, bored_div, _, _, _ = _boredom_run(_diverse)
    p_calm, bored_calm, _, _, _ = _boredom_run(_mono, boredom_growth=0.0, boredom_exposure=0.0)
    b_fav = bored_mono.gather(1, fav[:, None]).mean()
    assert b_fav > 0.5
    assert b_fav > 1.5 * bored_div.gather(1, fav[:, None]).mean()
    assert (bored_calm == 0).all()

    early, late = p_mono[:5].mean(), p_mono[-20:].mean()
    assert late < early - 0.1, (early, late)
    assert p_calm[-20:].mean() > p_calm[:5].mean() - 0.02
    assert p_calm[-20:].mean() > late + 0.2


def test_boredom_decays_between_visits():
    """Boredom decays by ``boredom_decay`` per step between a user's visits (applied when the
    user comes back): a user seen at t0 and again at t1 arrives with boredom × decay^(t1-t0)."""
    env = recenv.make_vec(MARKET, num_envs=16, seed=4, num_items=500, horizon=60, num_users=3)
    L, decay = env.layout, env.config.boredom_decay
    env.reset()
    after = {}  # (market, user) -> (step the row was last brought up to date, boredom)
    checked = 0
    for t in range(40):
        users = env.user.clone()
        for n in range(env.num_envs):
            u = int(users[n])
            if (n, u) in after:
                t0, b0 = after[n, u]
                now = env.users[n, u, L.boredom]
                torch.testing.assert_close(now, b0 * decay ** (t - t0), rtol=1e-4, atol=1e-6)
                checked += int(t - t0 > 1)
        _act(env, env.oracle_slates())
        for n in range(env.num_envs):
            u = int(users[n])
            # A user who comes straight back has already been brought up to date for step t+1.
            t_row = t + 1 if int(env.user[n]) == u else t
            after[n, u] = (t_row, env.users[n, u, L.boredom].clone())
    assert checked > 100  # enough returns after a gap of more than one step


# --------------------------------------------------------------------------------------------
# Interest drift, satisfaction, budget: one request, exactly
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("topology", ["shared_page", "platform_choice"])
def test_one_request_updates_the_user_as_configured(topology):
    """One request's effect on the requesting user's row, per config meaning:
    a click moves interest ``interest_drift`` of the way toward the clicked item's topics (no
    click: unchanged); boredom grows by ``boredom_growth`` × clicked topics +
    ``boredom_exposure`` × the mean topics of the items the user saw (under
    ``platform_choice`` one platform's slate, or none); without a click satisfaction drops
    by ``satisfaction_rate × expectation`` and the budget by ``browse_cost``; the visit
    count (whose ``log(1 + visits)`` agents observe) goes up by one, and the session depth
    by one unless the session ended."""
    env = recenv.make_vec(
        MARKET, num_envs=256, seed=5, num_items=500, horizon=60, topology=topology
    )
    cfg, L, cat = env.config, env.layout, env.catalog
    env.reset()
    seen_click = seen_skip = 0
    for _ in range(10):
        n = torch.arange(env.num_envs)
        u = env.user.clone()
        before = env.users[n, u].clone()
        _, _, _, _, info = _act(env, env.oracle_slates())
        # Compare only where another user arrives next (a returning user's row is updated
        # again on arrival: lazy boredom decay).
        other = env.user != u
        after = env.users[n, u][other]
        before = before[other]
        clicked = info["clicked"][other]
        item = info["chosen_item"][other].clamp(min=0)
        shown = info["shown"].flatten(1)[other]
        vis = (shown >= 0).float()
        shown_topics = (cat.topics[shown.clamp(min=0)] * vis[..., None]).sum(1)
        shown_topics = shown_topics / vis.sum(1, keepdim=True).clamp(min=1)
        item_topics = cat.topics[item] * clicked[:, None]
        d = cfg.interest_drift
        expected_interest = torch.where(
            clicked[:, None],
            (1 - d) * before[:, L.interest] + d * cat.topics[item],
            before[:, L.interest],
        )
        torch.testing.assert_close(after[:, L.interest], expected_interest)
        expected_boredom = (
            before[:, L.boredom]
            + cfg.boredom_growth * item_topics
            + cfg.boredom_exposure * shown_topics
        )
        torch.testing.assert_close(after[:, L.boredom], expected_boredom)
        skip = ~clicked
        sat = (before[:, L.satisfaction] - cfg.satisfaction_rate * cfg.expectation).clamp(0, 1)
        torch.testing.assert_close(after[skip, L.satisfaction], sat[skip])
        budget = before[:, L.budget] - cfg.browse_cost
        keep = skip & (budget > 0)
        torch.testing.assert_close(after[keep, L.budget], budget[keep])
        torch.testing.assert_close(after[:, L.visits], before[:, L.visits] + 1)
        on = after[:, L.depth] > 0  # else the session ended (or the user churned)
        torch.testing.assert_close(after[on, L.depth], before[on, L.depth] + 1)
        seen_click += int(clicked.sum())
        seen_skip += int(skip.sum())
    assert seen_click > 100 and seen_skip > 100


def test_interests_drift_toward_consumed_topics():
    """Consuming a topic the user is not most interested in pulls their interest toward it over
    an episode (only through clicks: with ``interest_drift=0`` interests never move)."""
    other = lambda fav, t: (fav + 1) % 4  # noqa: E731
    no_boredom = dict(boredom_growth=0.0, boredom_exposure=0.0)
    _, _, interest, fav, start = _boredom_run(other, seed=1, **no_boredom)
    target = (fav + 1) % 4
    gain = interest.gather(1, target[:, None]) - start.gather(1, target[:, None])
    assert (gain >= -1e-6).all()
    assert gain.mean() > 0.3, gain.mean()
    _, _, frozen, _, start = _boredom_run(other, seed=1, interest_drift=0.0)
    torch.testing.assert_close(frozen, start)


# --------------------------------------------------------------------------------------------
# Churn
# --------------------------------------------------------------------------------------------
def _episode_end(env, policy, steps):
    """Run ``policy`` until every market's first episode ends; per-market metrics and flags."""
    env.reset()
    metrics, term, trunc = {}, {}, {}
    for _ in range(steps):
        _, _, te, tr, info = _act(env, policy(env))
        if "episode" in info:
            for n in info["_episode"].nonzero().flatten().tolist():
                if n not in metrics:
                    metrics[n] = {k: v[n].clone() for k, v in info["episode"].items()}
                    term[n], trunc[n] = bool(te[n]), bool(tr[n])
        if len(metrics) == env.num_envs:
            break
    assert len(metrics) == env.num_envs
    return metrics, term, trunc


def test_bad_recommendations_make_users_churn():
    """Always showing the worst candidates (by true utility) drives satisfaction down and users
    away: retention at the episode's end is far below the oracle's (seen: < 0.35 vs 1.0), and
    some markets lose every user (terminated) even though churned users may return.
    ``satisfaction_rate=0.25`` (default 0.1) makes a user churn after a handful of bad requests,
    so a 40-step episode with 4 users shows it."""
    kwargs = dict(num_items=500, num_users=4, horizon=40, satisfaction_rate=0.25)
    worst, w_term, _ = _episode_end(
        recenv.make_vec(MARKET, num_envs=16, seed=1, **kwargs), _worst_slates, 41
    )
    best, b_term, _ = _episode_end(
        recenv.make_vec(MARKET, num_envs=16, seed=1, **kwargs), _best_slates, 41
    )
    mean = lambda ms, k: sum(float(m[k]) for m in ms.values()) / len(ms)  # noqa: E731
    assert mean(best, "retention") > 0.9
    assert mean(worst, "retention") < mean(best, "retention") - 0.5
    assert mean(worst, "satisfaction") < mean(best, "satisfaction") - 0.4
    assert sum(w_term.values()) >= 4 and sum(b_term.values()) == 0


@pytest.mark.parametrize("compile", [False, True])
def test_dense_user_status_mirrors_the_packed_rows(compile):
    """``user_status`` is the dense copy of each user's (available_at, churned) that the
    per-step scans read: after sessions end, users churn and return, and episodes reset, it
    equals those columns of the packed rows everywhere, eager and compiled."""
    kwargs = dict(num_items=300, num_users=5, horizon=15, satisfaction_rate=0.3, return_prob=0.2)
    env = recenv.make_vec(MARKET, num_envs=6, seed=2, compile=compile, **kwargs)
    env.reset()
    L = env.layout
    churned_seen = 0.0
    for _ in range(40):
        _act(env, _worst_slates(env))
        columns = env.users[:, :, L.available_at : L.churned + 1].transpose(1, 2)  # [N, 2, U]
        assert torch.equal(env.user_status, columns)
        churned_seen += float(columns[:, 1].sum())
    assert churned_seen > 0  # the run exercised churn, not only session gaps


_NO_RETURN = dict(num_items=500, num_users=4, horizon=100, return_prob=0.0, satisfaction_rate=0.25)


def test_all_users_churn_without_return_terminates():
    """With ``return_prob=0`` and the worst recommendations every user churns for good: every
    market terminates (not truncates) before the horizon, with retention 0."""
    env = recenv.make_vec(MARKET, num_envs=16, seed=2, **_NO_RETURN)
    env.reset()
    ended = torch.zeros(16, dtype=torch.bool)
    for _ in range(100):
        _, _, te, tr, info = _act(env, _worst_slates(env))
        assert not bool(tr.any())
        if bool(te.any()):
            idx = te.nonzero().flatten()
            assert (info["episode"]["retention"][idx] == 0).all()
            assert (info["episode"]["length"][idx] < 100).all()
        ended |= te
        if bool(ended.all()):
            break
    assert ended.all()


def test_last_churn_on_the_horizon_step_terminates():
    """A market whose last user churns on the horizon's last step is terminated, not
    truncated (a learner must not bootstrap a terminal state); the others truncate there.

    Regression test: ``terminated`` was masked by ``~truncated``, so that step read as a
    time-limit truncation."""
    env = recenv.make_vec(MARKET, num_envs=16, seed=2, **_NO_RETURN)
    env.reset()
    length = torch.full((16,), -1)
    for step in range(1, 101):
        _, _, te, _, _ = _act(env, _worst_slates(env))
        length = torch.where(te & (length < 0), step, length)
        if bool((length >= 0).all()):
            break
    # The episode lengths above are candidates, not certainties: the horizon shapes a market
    # (items' arrival times, observed ages), so a market may churn out at another step under
    # another horizon. Find a horizon on whose last step some markets, not all, terminate.
    for horizon in sorted(set(length.tolist())):
        env = recenv.make_vec(MARKET, num_envs=16, seed=2, **{**_NO_RETURN, "horizon": horizon})
        env.reset()
        live = torch.ones(16, dtype=torch.bool)  # in their first episode, not yet ended
        for step in range(1, horizon + 1):
            _, _, te, tr, info = _act(env, _worst_slates(env))
            if step < horizon:
                live &= ~te
        if (te & live).any() and (live & ~te).any():
            break
    else:
        pytest.fail("no horizon had some markets, not all, churn out on its last step")
    assert (info["episode"]["retention"][te & live] == 0).all()  # every user churned
    assert torch.equal(tr, live & ~te) and not bool((te & tr).any())


def test_terminal_state_shows_every_user_churned():
    """When a market terminates because every user churned, its user table at that step still
    says so: every user is marked churned (the final observation must not revive one).

    Regression test: the final arrival after termination picked user 0 and ``on_arrival``
    un-churned them and reset their satisfaction."""
    env = recenv.make_vec(MARKET, num_envs=4, seed=2, **_NO_RETURN)
    L = env.layout
    env.reset()
    checked = 0
    for _ in range(100):
        _, _, te, _, _ = _act(env, _worst_slates(env))
        for n in te.nonzero().flatten().tolist():
            assert (env.users[n, :, L.churned] > 0).all(), env.users[n, :, L.churned]
            checked += 1
        if checked == env.num_envs:
            break
    assert checked == env.num_envs


def test_the_arrival_reads_the_requests_status_pass():
    """The users' status is read once a step: the episode-end test's pass
    (``_next_user``) draws the next user too and hands it to the arrival, which would draw
    the same from the same table, clock and served row. Against the arrival drawing again,
    a churn-heavy run is the same bit for bit (users drawn, episode ends, rewards), and ends
    episodes."""
    from recenv.core.market import BatchedMarket

    def run():
        env = recenv.make_vec(MARKET, num_envs=16, seed=2, **_NO_RETURN)
        env.reset()
        out, ended = [], 0
        for _ in range(60):
            _, rew, te, tr, _ = _act(env, _worst_slates(env))
            out += [env.user.clone(), te, tr, *rew.values()]
            ended += int(te.sum())
        return out, ended

    shared, ended = run()
    arrive = BatchedMarket._arrive
    with pytest.MonkeyPatch.context() as m:
        m.setattr(
            BatchedMarket,
            "_arrive",
            lambda self, block, served=None, arrival=None: arrive(self, block, served),
        )
        own, _ = run()
    assert ended > 0  # episodes ended by churn
    assert all(torch.equal(a, b) for a, b in zip(shared, own, strict=True))


def test_all_users_churn_terminates_pettingzoo_face():
    """The same on the PettingZoo face: the episode ends with ``terminations`` True for every
    agent (and ``truncations`` False), and the agents leave."""
    env = recenv.make(MARKET, seed=2, **_NO_RETURN)
    env.reset()
    steps = 0
    while env.agents:
        acts = {a: _worst_slates(env.core)[0, i].numpy() for i, a in enumerate(env.agents)}
        _, _, term, trunc, infos = env.step(acts)
        steps += 1
    assert steps < 100
    assert all(term.values()) and not any(trunc.values())
    assert infos["agent_0"]["episode"]["retention"] == 0.0


# --------------------------------------------------------------------------------------------
# Platform choice: loyalty follows satisfaction
# --------------------------------------------------------------------------------------------
def test_platform_that_serves_badly_loses_loyalty_and_share():
    """Under ``platform_choice`` agent_0 shows its worst items and agent_1 its best: users'
    loyalty moves toward agent_1, agent_1's share of visits grows from the first to the last
    quarter of the episode, and its episode market share is well above one half.

    Initial loyalties are i.i.d. and symmetric (0.3 × N(0, 1) each), so the mean loyalty gap
    over the ~1 000 users seen starts at 0 ± 0.015; ending above 0.2 is the effect, not noise
    (seen: ≈ 0.42). ``loyalty_rate=0.5`` (default 0.2) shows it within 60 requests."""
    H = 60
    env = recenv.make_vec(
        MARKET,
        num_envs=64,
        seed=2,
        num_items=500,
        horizon=H,
        topology="platform_choice",
        loyalty_rate=0.5,
    )
    L = env.layout
    env.reset()
    visits = []
    for _ in range(H):
        slates = torch.stack([_worst_slates(env)[:, 0], _best_slates(env)[:, 1]], dim=1)
        _, _, _, _, info = _act(env, slates)
        visits.append(info["platform"])
    cur = _current_users(env)
    loy = env.users[:, :, L.loyalty]
    gap = ((loy[..., 1] - loy[..., 0]) * cur).sum() / cur.sum()
    assert gap > 0.2, gap
    v = torch.stack(visits)  # [H, N]; A = 2 means the user visited no platform
    q = H // 4
    share = lambda x: (x == 1).float().sum() / (x < 2).float().sum().clamp(min=1)  # noqa: E731
    assert share(v[-q:]) > 0.6 and share(v[-q:]) > share(v[:q]) + 0.05
    assert float(info["episode"]["market_share"][:, 1].mean()) > 0.55


# --------------------------------------------------------------------------------------------
# Invariants of the user table
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("topology", ["shared_page", "platform_choice"])
def test_user_table_invariants(env_id, small, random_policy, topology):
    """Whatever the policy, every user row stays in its domain: interests are a distribution,
    boredom >= 0, satisfaction in [0, 1], loyalty in [-3, 3], budget finite."""
    env = recenv.make_vec(env_id, num_envs=16, seed=6, topology=topology, **small(env_id))
    L, K = env.layout, env.config.slate_size
    g = torch.Generator().manual_seed(6)
    obs = env.reset()
    for _ in range(45):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, *_ = env.step(acts)
        rows = env.users[_current_users(env)]
        interest = rows[:, L.interest]
        assert (interest >= 0).all()
        torch.testing.assert_close(interest.sum(1), torch.ones(len(rows)), atol=1e-5, rtol=0)
        assert (rows[:, L.boredom] >= 0).all()
        assert ((rows[:, L.satisfaction] >= 0) & (rows[:, L.satisfaction] <= 1)).all()
        assert (rows[:, L.loyalty].abs() <= 3).all()
        assert torch.isfinite(rows[:, L.budget]).all()


def test_layout_assemble_equals_slice_writes():
    """``UserLayout.assemble`` (how the dynamics build a row: one concatenation) equals writing
    the same columns one slice at a time, covers every column once, and names unknown keys."""
    from recenv.core.users import UserLayout

    L = UserLayout(num_topics=5, num_agents=3)
    groups = list(L.groups.values())
    assert groups[0].start == 0 and groups[-1].stop == L.width
    assert all(a.stop == b.start for a, b in itertools.pairwise(groups))
    gen = torch.Generator().manual_seed(0)
    row = torch.rand(4, L.width, generator=gen)
    interest, loyalty, t = (torch.rand(4, n, generator=gen) for n in (5, 3, 1))
    want = row.clone()
    want[:, L.interest] = interest
    want[:, L.bored_at] = t[:, 0]
    want[:, L.loyalty] = loyalty
    want[:, L.last_visit] = -1.0
    got = L.assemble(row, interest=interest, bored_at=t[:, 0], loyalty=loyalty, last_visit=-1.0)
    assert torch.equal(got, want)
    assert torch.equal(L.assemble(row), row)  # nothing replaced
    with pytest.raises(KeyError, match=r"unknown user columns.*'budgett'"):
        L.assemble(row, budgett=t[:, 0])
    with pytest.raises(
        ValueError, match=rf"expected {L.width}; given shapes \{{'interest': \(4, 4\)\}}"
    ):
        L.assemble(row, interest=interest[:, :4])
