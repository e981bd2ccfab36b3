"""Regression tests of defects found by an audit of the value-decomposition, baseline, MF,
ensemble and replay code (each failed before its fix)."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import typing

import pytest
import torch

import agents
from agents.buffers import ReplayBuffer
from agents.ensemble import normalize_scores


def test_rank_normalisation_gives_tied_scores_one_rank():
    """A member with no opinion (all scores tied, e.g. popularity at an episode's start) must
    not inject the candidate order into the blend: tied scores share their average rank."""
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 0] = False
    tied = normalize_scores(torch.zeros(2, 5), mask, "rank")
    assert torch.allclose(tied[0], torch.full((5,), 0.5))
    assert tied[1, 0] == 0.0 and torch.allclose(tied[1, 1:], torch.full((4,), 0.5))
    some = normalize_scores(torch.tensor([[1.0, 1.0, 2.0, 2.0, 3.0]]), mask[:1], "rank")
    assert torch.allclose(some, torch.tensor([[0.125, 0.125, 0.625, 0.625, 1.0]]))
    # Distinct scores keep rank / (count - 1), masked candidates 0.
    s = torch.tensor([[3.0, -1.0, 7.0, 0.5, 2.0]])
    m = torch.tensor([[True, True, False, True, True]])
    assert torch.allclose(normalize_scores(s, m, "rank"), torch.tensor([[1.0, 0, 0, 1 / 3, 2 / 3]]))


@pytest.mark.parametrize("name", ["vdn", "qmix", "iql"])
def test_a_buffer_smaller_than_a_batch_is_refused(market, name):
    """Updates wait for ``batch_size`` rows: a smaller buffer meant no update, ever, silently."""
    env = market(num_envs=2, reward_mode="cooperative")
    with pytest.raises(ValueError, match=rf"{name}: buffer_size=64 must be >= batch_size=128"):
        agents.make_agent(name, env, buffer_size=64, batch_size=128)
    agents.make_agent(name, env, buffer_size=128, batch_size=128, hidden=(8,))


def test_mf_learns_nothing_from_dropped_rows(market):
    """Auto-reset rows (``valid`` False) must be dropped: no regularisation step either."""
    env = market(num_envs=4, seed=0)
    agent = agents.make_agent("mf", env, seed=0)
    agent.item_bias.normal_(generator=torch.Generator(agent.device).manual_seed(1))
    obs = env.reset(seed=0)
    actions = agent.act(obs, explore=True)
    nxt, rew, term, trunc, info = env.step(actions)
    tr = agents.Transition.from_step(env.agents, obs, actions, rew, nxt, term, trunc, info)
    dropped = dataclasses.replace(tr, valid=torch.zeros(4, dtype=torch.bool))
    before = [t.clone() for t in (agent.item, agent.item_bias, agent.mu)]
    agent.observe(dropped)
    agent.learn(dropped)
    for old, new in zip(before, (agent.item, agent.item_bias, agent.mu), strict=True):
        assert torch.equal(old, new)
    agent.observe(tr)
    agent.learn(tr)  # a real step still learns
    assert not torch.equal(before[0], agent.item)


def test_replay_state_holds_only_the_filled_rows():
    """A checkpoint of a nearly empty buffer must not write the whole capacity."""
    buf = ReplayBuffer(100_000)
    buf.add({"x": torch.arange(640.0).view(10, 64), "y": torch.arange(10)})
    f = io.BytesIO()
    torch.save(buf.state_dict(), f)
    assert len(f.getvalue()) < 20_000
    clone = ReplayBuffer(100_000)
    clone.load_state_dict(torch.load(io.BytesIO(f.getvalue()), weights_only=True))
    assert len(clone) == 10 and clone.pos == 10
    assert torch.equal(clone.storage["x"][:10], buf.storage["x"][:10])


@pytest.mark.parametrize("spec", [("mf",), 42, ("mf", {"dim": 4}, "extra"), {"name": "mf"}])
def test_a_malformed_ensemble_member_is_refused_clearly(market, spec):
    """Each member is a name or a (name, {config}) pair; anything else raised IndexError,
    TypeError or KeyError from deep inside, or was accepted with parts ignored."""
    env = market(num_envs=2)
    with pytest.raises(ValueError, match=r"'ensemble': members\[1\]=.* agent name or a"):
        agents.make_agent("ensemble", env, members=["popularity", spec])
    agents.make_agent("ensemble", env, members=["popularity", ["mf", {"dim": 4}]])


@pytest.mark.parametrize("name", ["vdn", "iql"])
def test_a_resumed_replay_learner_reports_like_the_uninterrupted_one(market, tmp_path, name):
    """The metrics of the updates since the last report are part of the checkpoint: a saved
    mid-report agent, reloaded, reports at the same steps with the same values."""
    env = market(num_envs=4, seed=5, horizon=20, reward_mode="cooperative")
    small = {"learning_starts": 32, "batch_size": 16, "update_every": 8, "hidden": (16,)}
    agent = agents.make_agent(name, env, seed=3, save_buffer=True, metrics_every=3, **small)
    agents.train(agent, env, 4 * 26)
    assert agent.update_metrics.updates > 0  # saved between two reports
    agent.save(tmp_path / f"{name}.pt")
    clone = agents.load_agent(tmp_path / f"{name}.pt", env)
    r1 = agents.train(agent, env, 4 * 16, seed=11)
    r2 = agents.train(clone, env, 4 * 16, seed=11)
    assert [s for s, _ in r1.metrics] == [s for s, _ in r2.metrics] and r1.metrics
    for (_, m1), (_, m2) in zip(r1.metrics, r2.metrics, strict=True):
        assert m1 == pytest.approx(m2)


@pytest.mark.parametrize(
    "name, field, value, allowed",
    [
        ("mf", "dim", 0, "[1, inf]"),
        ("mf", "fold_in_reg", 0.0, "(0.0, inf)"),
        ("linucb", "ridge", 0.0, "(0.0, inf)"),
        ("linucb", "alpha", -1.0, "[0.0, inf)"),
        ("linucb", "alpha", float("inf"), "[0.0, inf)"),
    ],
)
def test_baseline_bounds_name_the_agent_field_and_interval(market, name, field, value, allowed):
    """MF's and LinUCB's numeric fields declare their intervals (shown by `describe`): an
    error names the agent, the field and the interval (was a bare message without the agent,
    and LinUCB took alpha=inf)."""
    env = market(num_envs=2)
    msg = rf"agent '{name}': \w+Config: {field}={value} must lie in {re.escape(allowed)}"
    with pytest.raises(ValueError, match=msg):
        agents.make_agent(name, env, **{field: value})


def test_linucb_sums_survive_a_condition_number_float32_cannot_hold():
    """LinUCB's A = λI + Σ x xᵀ grows by every observation along the features' main
    directions and stays near λ across the others. Its sums were float32, whose rounding
    drove A's smallest eigenvalue from λ = 1 to 0.73 in 2 M env steps of Market-v0 until
    Cholesky failed mid-run. A = I + 10⁹ u uᵀ (u not along an axis) is such a matrix: in
    float32 the I is lost and A is singular; the float64 sums solve it exactly."""
    import recenv
    from agents.features import linear_features

    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0, horizon=5)
    agent = agents.make_agent("linucb", env)
    d = agent.A.shape[-1]
    u = torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    u = u / u.norm()
    A = torch.eye(d, dtype=torch.float64) + 1e9 * torch.outer(u, u)
    theta = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    state = agent.state_dict()
    state["A"], state["b"] = A.expand(2, d, d).clone(), (A @ theta).expand(2, d).clone()
    agent.load_state_dict(state)
    assert agent.A.dtype == torch.float64 and agent.b.dtype == torch.float64
    assert torch.allclose(agent.theta.double(), theta.expand(2, d), atol=1e-5)
    assert torch.isfinite(agent.A_inv).all()
    with pytest.raises(torch.linalg.LinAlgError):  # what float32 sums met
        torch.linalg.cholesky(A.float())
    # Scoring reads float32 features against the float32 θ and A⁻¹.
    obs = env.reset(seed=0)
    x = linear_features(agent.layout, obs["agent_0"])
    assert agent.score(obs)["agent_0"].shape == x.shape[:2]
    # A non-finite sum (features beyond float range) is named, not a failed factorisation.
    state["A"] = torch.full_like(state["A"], float("inf"))
    with pytest.raises(ValueError, match=r"agent 'linucb': its design matrix .* not finite"):
        agent.load_state_dict(state)


@pytest.mark.parametrize(("name", "config", "table"), [
    ("popularity", {"source": "own"}, "exposures"),
    ("epsilon_greedy", {}, "count"),
])  # fmt: skip
def test_bandit_counts_stay_exact_past_float32s_last_integer(name, config, table):
    """The bandits' per-item counts grow over a whole run; in float32 a count of 2**24 stays
    2**24 when 1 is added, so a long run (a popular item's 16.8 M exposures) stopped
    counting. Started at 2**24, the counts must grow by exactly the exposures served."""
    import recenv

    env = recenv.make_vec("recenv/Market-v0", num_envs=4, seed=1, horizon=6)
    agent = agents.make_agent(name, env, **config)
    state = agent.state_dict()
    state[table] = torch.full_like(state[table], 2.0**24)
    agent.load_state_dict(state)
    served, learn = 0, agent.learn

    def counting_learn(tr):
        nonlocal served
        for a in agent.agent_ids:
            served += int(tr.seen(a).sum()) * tr.actions[a].shape[1]
        return learn(tr)

    agent.learn = counting_learn
    agents.train(agent, env, 4 * 20)
    grown = getattr(agent, table).sum() - 2.0**24 * getattr(agent, table).numel()
    assert served > 0 and grown == served
    assert agent.score(env.reset(seed=2))["agent_0"].dtype == torch.float32


def _float_options() -> list[tuple[str, str]]:
    out = []
    for name in agents.registered_agents():
        cfg = agents.agent_class(name).Config
        hints = typing.get_type_hints(cfg)
        out += [(name, f.name) for f in dataclasses.fields(cfg) if hints[f.name] is float]
    return out


@pytest.mark.parametrize(("name", "field"), _float_options())
def test_no_float_option_takes_nan_or_an_infinity_it_does_not_declare(env_for, name, field):
    """MAPPO's ``ent_coef`` took ±inf and negatives, MF's ``init_std`` inf and -1: the run
    then "diverged" instead of being refused. Every float option of every agent refuses NaN,
    and ±inf unless its declared interval closes there (``max_grad_norm``: inf is "none"),
    by its config or when the agent is built (a ValueError naming the field)."""
    f = next(f for f in dataclasses.fields(agents.agent_class(name).Config) if f.name == field)
    lo, hi = f.metadata.get("within") or (None, None)
    low_open, high_open = f.metadata.get("open_ends") or (False, False)
    env = env_for(name, num_envs=2, horizon=5, num_items=100, num_users=4)
    bad = [math.nan]
    bad += [] if hi == math.inf and not high_open else [math.inf]
    bad += [] if lo == -math.inf and not low_open else [-math.inf]
    for value in bad:
        with pytest.raises(ValueError, match=field):
            agents.make_agent(name, env, **{field: value})


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("mappo", "ent_coef", -0.1),
        ("ippo", "ent_coef", -1.0),
        ("mf", "init_std", -1.0),
        ("mappo", "vf_coef", math.inf),  # declared [0, inf]: an infinite loss weight
    ],
)
def test_a_negative_or_infinite_coefficient_or_spread_is_refused(market, name, field, value):
    with pytest.raises(ValueError, match=rf"{field}={value} must lie in \[0\.0, inf\)"):
        agents.make_agent(name, market(num_envs=2), **{field: value})


def test_mf_engagement_target_regresses_the_clicks_engagement_with_the_same_confidence(market):
    """``target="engagement"``: a shown item's label is the click's engagement (0 passed
    over), its confidence ``1 + α`` per click as with clicks; the user fold-in then sums
    those labels. A bad target is refused naming the agent."""
    env = market(num_envs=8, seed=3)
    by_click = agents.make_agent("mf", env, seed=0)
    by_engagement = agents.make_agent("mf", env, seed=0, target="engagement")
    obs = env.reset(seed=3)
    actions = by_click.act(obs, explore=True)
    nxt, rew, term, trunc, info = env.step(actions)
    tr = agents.Transition.from_step(env.agents, obs, actions, rew, nxt, term, trunc, info)
    for i, a in enumerate(env.agents):
        items_c, y_c, conf_c = by_click._interactions(tr, i, a)
        items_e, y_e, conf_e = by_engagement._interactions(tr, i, a)
        assert torch.equal(items_c, items_e) and torch.equal(conf_c, conf_e)
        assert torch.equal(y_e, tr.slate_feedback(a, "engagement")[1])
        assert torch.equal(y_e > 0, y_c > 0)  # engagement only where there was a click
    clicked = torch.cat([tr.slate_feedback(a, "click")[1] for a in env.agents]).sum()
    assert clicked > 0  # the test would pass vacuously without a click
    by_click.observe(tr)
    by_engagement.observe(tr)
    assert not torch.equal(by_click.rhs, by_engagement.rhs)
    torch.testing.assert_close(by_click.gram, by_engagement.gram, rtol=0, atol=0)
    with pytest.raises(ValueError, match="mf: target='watch' must be 'click' or 'engagement'"):
        agents.make_agent("mf", env, target="watch")


@pytest.mark.parametrize(
    ("name", "new_keys"),
    [
        ("mf", ["target"]),
        ("oracle", ["hide"]),
        ("value_oracle", ["hide", "plan"]),
        ("vdn", ["utility", "choice_hidden", "teammate_value"]),
        ("qmix", ["utility", "choice_hidden", "teammate_value"]),
    ],
)
def test_checkpoints_from_before_a_new_option_load_with_what_they_ran(
    name, new_keys, market, tmp_path
):
    """A header without the options added on 2026-12-06 (MF's ``target``, the oracles'
    ``hide`` and ``plan``, VDN's and QMIX's ``utility``, ``choice_hidden`` and
    ``teammate_value``) reads them as the behaviour it was written with (``LEGACY``): it
    loads, and a resume's header check finds no difference."""
    from agents.base import header_differences

    cooperative_only = "cooperative" if name in ("vdn", "qmix") else "competitive"
    env = market(num_envs=2, horizon=10, reward_mode=cooperative_only)
    agent = agents.make_agent(name, env)
    path = tmp_path / f"{name}.pt"
    agent.save(path)
    payload = torch.load(path, weights_only=True)
    for key in new_keys:
        del payload["header"]["config"][key]
    torch.save(payload, path)
    assert header_differences(payload["header"], agent) == []
    agents.load_agent(path, env)
    agents.make_agent(name, env).load(path)
