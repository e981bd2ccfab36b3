"""Independent SlateQ learners: known-answer values, learning on Market-v0, variants, devices.

The seed spread quoted in :func:`test_iql_beats_random_on_market` was measured with this file's
``__main__`` (``python tests/agents/test_iql.py``), which trains and evaluates the same setting
for seeds 0-4.
"""

from __future__ import annotations

import statistics

import pytest
import torch

# tests/agents is on sys.path: pytest puts a test's directory there (no __init__.py here, so
# that this directory never shadows the real ``agents`` package), and so does ``python file``.
from known_answer import TwoStateMarket, click_probs, heuristic_slate, optimal_values
from td_spy import td_of_one_update

import agents
import recenv
from agents.iql import greedy_slate, slate_value

# ----------------------------------------------------------------------------------------
# Known answer
# ----------------------------------------------------------------------------------------
GAMMA = 0.5
KNOWN_ANSWER_CONFIG = dict(
    gamma=GAMMA,
    eps_start=1.0,  # uniformly random slates: Q-learning is off-policy
    eps_end=1.0,
    learning_starts=1000,
    update_every=64,
    batch_size=256,
    hidden=(64, 64),
    lr=3e-3,
    target_tau=0.05,
)
Q_TOLERANCE = 0.1  # absolute, on values between 1 and 3.2 (observed error 0.02-0.04)
P_TOLERANCE = 0.06  # absolute, on click probabilities (observed error 0.01-0.03)


def _state_obs(env: TwoStateMarket) -> dict:
    obs = {k: v[:2].clone() for k, v in env.observe()["agent_0"].items()}
    obs["user"].zero_()
    obs["user"][0, 0] = obs["user"][1, 1] = 1.0  # row s observes state s
    return {"agent_0": obs}


@pytest.mark.parametrize("bootstrap", ["market", "user"])
def test_known_answer_values(bootstrap):
    """On the two-state market (tests/agents/known_answer.py), 20k env steps of IQL bring
    Q̄(s, i) and Q̄(s, ⊥) within 0.1 of the exact SlateQ optimum, and the learned choice
    model within 0.06 of the true click probabilities, with either bootstrap. (User-level
    bootstrapping closed every open request at the horizon as terminal, values biased low by
    up to 0.18; truncations now drop them.)"""
    q_star, q0_star, _, best = optimal_values(GAMMA)
    # Precondition: SlateQ's top-K heuristic picks the optimal slate in both states, so the
    # fixed point IQL converges to is the true optimum.
    assert [heuristic_slate(s, q_star, q0_star) for s in range(2)] == best

    env = TwoStateMarket(num_envs=64, seed=0)
    agent = agents.make_agent("iql", env, bootstrap=bootstrap, **KNOWN_ANSWER_CONFIG)
    agents.train(agent, env, 20_000, seed=0)
    obs = _state_obs(env)
    q_items, q_null = agent.q_values(obs)["agent_0"]
    assert (q_items - q_star).abs().max() < Q_TOLERANCE, (q_items, q_star)
    assert (q_null - q0_star).abs().max() < Q_TOLERANCE, (q_null, q0_star)

    slates = {"agent_0": torch.tensor([[0, 1], [2, 3]])}
    probs = agent.click_probs(obs, slates)["agent_0"]
    for s, slate in enumerate([(0, 1), (2, 3)]):
        truth = torch.tensor(click_probs(s, slate))
        assert (probs[s] - truth).abs().max() < P_TOLERANCE, (s, probs[s], truth)

    # Greedy acting picks the optimal slate in each state.
    greedy = agent.act(obs)["agent_0"]
    assert [tuple(sorted(row.tolist())) for row in greedy] == best


# ----------------------------------------------------------------------------------------
# Learning on Market-v0
# ----------------------------------------------------------------------------------------
LEARNING_BUDGET = 4_000  # env steps: 250 batched steps of 16 markets
LEARNING_CONFIG = dict(
    learning_starts=500,
    eps_decay_steps=2_000,
    update_every=32,
    batch_size=128,
    hidden=(64, 64),
    buffer_size=10_000,
)


def team_return(name: str, seed: int, **config) -> float:
    """Train ``name`` for the learning budget (if it learns) on 16 Market-v0 markets, then the
    mean team return (sum over agents) of one greedy episode in 16 fresh markets."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=16, seed=seed)
    agent = agents.make_agent(name, env, seed=seed, **config)
    if agent.learns:
        agents.train(agent, env, LEARNING_BUDGET, seed=seed)
    test_env = recenv.make_vec("recenv/Market-v0", num_envs=16, seed=10_000 + seed)
    result = agents.evaluate(agent, test_env, seed=10_000 + seed)
    return float(result.episodes["return"].sum(1).mean())


def test_iql_beats_random_on_market():
    """IQL vs random on Market-v0 (competitive, default config), seed 0, 4 000 env steps.

    Measured over seeds 0-4 (``python tests/agents/test_iql.py``, team return, mean ± std):
    IQL 133.0 ± 1.8 (130.6 … 135.1), random 56.1 ± 1.5 (54.3 … 58.0); with
    ``slate_selection="top_k"`` IQL gave 130.2 ± 3.0 (125.6 … 133.1). The margin asked for,
    40, is twenty of IQL's standard deviations and about half the measured gap of 77.
    """
    iql = team_return("iql", 0, **LEARNING_CONFIG)
    rnd = team_return("random", 0)
    assert iql - rnd > 40.0, (iql, rnd)


# ----------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant",
    [
        {"shared_params": True},
        {"n_step": 3},
        {"bootstrap": "user"},
        {"double_q": False},
    ],
)
def test_variants_learn_something(variant, market):
    env = market(num_envs=8, horizon=30)
    agent = agents.make_agent(
        "iql", env, learning_starts=100, batch_size=32, update_every=16, hidden=(32,),
        buffer_size=2_000, metrics_every=5, **variant,
    )  # fmt: skip
    result = agents.train(agent, env, 560)
    assert agent.updates > 0 and result.metrics
    last = result.metrics[-1][1]
    assert {"losses/td", "losses/choice_nll", "charts/epsilon"} <= set(last)
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    if variant.get("shared_params"):
        assert len(agent.learners) == 1
    else:
        assert len(agent.learners) == len(env.agents)
    # Evaluation in markets of another batch size, then training resumes on the first env.
    other = market(num_envs=3, horizon=30)
    assert agents.evaluate(agent, other, episodes_per_env=2, seed=1).num_episodes == 6
    agents.train(agent, env, 80)


def test_each_update_moves_the_target_network_by_target_tau(market):
    """Polyak averaging: after each update the target network is ``(1 - τ) θ̄ + τ θ``, ``θ``
    the online Q-network just updated (a hard copy, ``τ = 1``, also learns the known answer
    above, so this is stated on its own); the choice model has no target."""
    env = market(num_envs=4, horizon=30)
    tau = 0.3
    agent = agents.make_agent(
        "iql", env, learning_starts=8, batch_size=8, update_every=4, hidden=(16,),
        target_tau=tau,
    )  # fmt: skip
    checked = []
    update = agent._update

    def spy(lrn, opt, buffer):
        before = [p.detach().clone() for p in lrn.q_target.parameters()]
        update(lrn, opt, buffer)
        online = list(lrn.q.parameters())
        for b, p, pt in zip(before, online, lrn.q_target.parameters(), strict=True):
            torch.testing.assert_close(pt, (1 - tau) * b + tau * p.detach())
        checked.append(not all(torch.equal(b, p) for b, p in zip(before, online, strict=True)))

    agent._update = spy
    agents.train(agent, env, 4 * 10, seed=0)
    assert len(checked) >= 4 and all(checked)  # every update ran, and the networks differed


def test_td_terms_against_a_reference(market, monkeypatch):
    """One update's TD: the prediction is the online ``Q̄(s, clicked item)`` (``Q̄(s, ⊥)``
    without a click); the target is ``r + γ^m Q(s', A')``, ``A'`` SlateQ's greedy slate of
    the *online* ``Q̄`` under the choice model (double DQN), valued by the *target*
    network's ``Q̄`` and the choice model (the slate value). (The known answer above is as
    good with either network picking ``A'``, so it cannot tell them apart.)"""
    env = market(num_envs=6, seed=3, horizon=20)
    agent = agents.make_agent(
        "iql", env, seed=1, learning_starts=32, batch_size=16, update_every=8, hidden=(32,)
    )
    agents.train(agent, env, 6 * 12, seed=0)
    assert agent.updates > 0
    lrn, opt, buffer = agent.learners[0], agent.optimizers[0], agent.buffers[0]
    with torch.no_grad():  # the target network apart from the online one
        for p in lrn.q_target.parameters():
            p.add_(0.1)
    b = buffer.sample(32, torch.Generator().manual_seed(0))
    click, K = b["click"], env.config.slate_size
    assert (click >= 0).any() and (click == -1).any()
    with torch.no_grad():
        pairs, ctx = agent._inputs({k: b[k] for k in ("user", "history", "candidates")}, b["agent"])
        q_items, q_null = lrn.q(pairs, ctx)
        item = b["slate"].gather(1, click.clamp(min=0)[:, None])
        want_q = torch.where(click >= 0, q_items.gather(1, item).squeeze(1), q_null)
        nxt = {k: b["next_" + k] for k in ("user", "history", "candidates")}
        n_pairs, n_ctx = agent._inputs(nxt, b["agent"])
        logits, no_click = lrn.choice(n_pairs, n_ctx)
        online, target = lrn.q(n_pairs, n_ctx), lrn.q_target(n_pairs, n_ctx)
        pick = greedy_slate(lrn.choice, logits, no_click, *online, b["next_mask"], K)
        other = greedy_slate(lrn.choice, logits, no_click, *target, b["next_mask"], K)
        assert not torch.equal(pick, other)  # which network picks matters on this batch
        value = slate_value(lrn.choice, logits, no_click, *target, pick)
        want_target = b["reward"] + b["discount"] * value
    pred, td_target = td_of_one_update(
        monkeypatch, buffer, b, lambda: agent._update(lrn, opt, buffer)
    )
    torch.testing.assert_close(pred, want_q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(td_target, want_target, atol=1e-4, rtol=1e-4)


def test_epsilon_decays_linearly_in_env_steps(market):
    """ε goes from ``eps_start`` to ``eps_end`` linearly over ``eps_decay_steps`` env
    transitions, then stays; greedy acting (``explore=False``) ignores it."""
    env = market(num_envs=4, horizon=30)
    agent = agents.make_agent("iql", env, eps_start=1.0, eps_end=0.1, eps_decay_steps=400)
    for steps, eps in ((0, 1.0), (100, 0.775), (200, 0.55), (400, 0.1), (4000, 0.1)):
        agent.env_steps = steps
        assert agent.epsilon() == pytest.approx(eps)
        assert agent.exploration() == pytest.approx(eps)


def test_metrics_average_over_the_updates_that_ran(market):
    """Until a learner's buffer holds ``batch_size`` rows its scheduled updates are skipped
    (here the first seven: 4 rows a step, 32 needed); they neither count toward
    ``metrics_every`` nor dilute the averaged losses."""
    env = market(num_envs=4, horizon=30)
    agent = agents.make_agent(
        "iql", env, learning_starts=4, batch_size=32, update_every=4, hidden=(16,),
        metrics_every=5,
    )  # fmt: skip
    tds = []
    update = agent._update

    def spy(*args):
        before = float(agent.update_metrics.sums.get("losses/td", 0.0))
        update(*args)
        tds.append(float(agent.update_metrics.sums["losses/td"]) - before)

    agent._update = spy
    reports = []
    agents.train(agent, env, 4 * 20, callback=lambda _, m: reports.append((len(tds), m)))
    assert agent.updates == 20 and len(tds) == 2 * (20 - 7)
    n, first = reports[0]
    assert n == 5 * len(agent.learners)
    assert first["losses/td"] == pytest.approx(sum(tds[:n]) / n, rel=1e-4)


def test_invalid_configs_are_refused(market):
    env = market()
    with pytest.raises(ValueError, match="bootstrap"):
        agents.make_agent("iql", env, bootstrap="episode")
    with pytest.raises(ValueError, match="iql: n_step=3 needs bootstrap='market'"):
        agents.make_agent("iql", env, bootstrap="user", n_step=3)
    # At horizon 1 every request is truncated before its user returns: the buffer stayed
    # empty while `updates` counted on (2,000 steps: 63 "updates", 0 rows), and nothing said so.
    with pytest.raises(ValueError, match=r"iql: bootstrap='user' needs the env's horizon >= 2"):
        agents.make_agent("iql", market(horizon=1), bootstrap="user")
    agents.make_agent("iql", market(horizon=2), bootstrap="user")


def test_controls_a_subset_of_agents(market):
    env = market()
    team = agents.make_team(env, {"agent_0": ("iql", {"learning_starts": 32}), "agent_1": "random"})
    result = agents.train(team, env, 400)
    assert result.env_steps >= 400
    assert team.members[0].agent_ids == ["agent_0"] and len(team.members[0].learners) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    env = recenv.make_vec("recenv/Market-v0", num_envs=32, seed=0, device="cuda", horizon=30)
    agent = agents.make_agent("iql", env, learning_starts=128, batch_size=64, update_every=16)
    agents.train(agent, env, 2_000)
    assert agent.updates > 0
    assert next(agent.learners.parameters()).device.type == "cuda"
    assert agent.buffers[0].storage["user"].device.type == "cuda"


if __name__ == "__main__":  # the seed spread quoted in test_iql_beats_random_on_market
    torch.set_num_threads(1)
    for name, cfg in (("random", {}), ("iql", LEARNING_CONFIG)):
        values = [team_return(name, seed, **cfg) for seed in range(5)]
        print(
            f"{name}: {[round(v, 2) for v in values]} mean {statistics.mean(values):.2f} "
            f"std {statistics.stdev(values):.2f}"
        )
