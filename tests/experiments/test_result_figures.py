"""What each figure the result scripts report means (``experiments.compare_marl``,
``experiments.compare_agents``, ``experiments.fidelity``): which markets a row is evaluated
on, over which agents and episodes it is averaged, which PPO updates the critic's fit is
read from, whose column a head-to-head row reads, how a confidence interval and a seed
spread are computed, what a hit rate, a CTR and a Spearman column count. Each is recomputed
here from an evaluation of its own, or from stubbed training, evaluation or simulation
whose figures are known."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from experiment_helpers import tiny_log

import agents
import recenv
from experiments import compare_agents, compare_marl, fidelity, report
from recenv.data import load_log

ENV = "recenv/Market-v0"


def _marl_args(*extra: str):
    return compare_marl._args(["--out", "unused", "--num-envs", "2", "--eval-envs", "3",
                               "--horizon", "5", "--steps", "8", *extra])  # fmt: skip


def _episodes_of(name: str, train_seed: int, eval_seed: int, **market) -> dict:
    """``name``'s greedy episodes on 3 held-out markets of ``eval_seed``, the agent built
    on 2 training markets of ``train_seed`` (as the scripts build a baseline: no training)."""
    train = recenv.make_vec(ENV, num_envs=2, seed=train_seed, **market)
    agent = agents.make_agent(name, train, seed=train_seed)
    held_out = recenv.make_vec(ENV, num_envs=3, seed=eval_seed, **market)
    return agents.evaluate(agent, held_out, seed=eval_seed).episodes


def test_a_compare_marl_row_averages_every_agent_on_its_held_out_markets():
    """``return`` is the mean over episodes *and agents* (competitive: the two differ),
    ``engagement_total`` an episode's whole engagement (per request x requests), both on the
    held-out markets of seed + EVAL_SEED_OFFSET."""
    seed = 3
    row = compare_marl.run_one("popularity", "competitive", seed, _marl_args(), {})
    ep = _episodes_of("popularity", seed, seed + compare_marl.EVAL_SEED_OFFSET,
                      reward_mode="competitive", horizon=5)  # fmt: skip
    ret = ep["return"].double()
    assert ret.shape[1] == 2 and not torch.equal(ret[:, 0], ret[:, 1])
    assert row["return"] == pytest.approx(ret.mean().item())
    total = (ep["engagement_per_request"].double() * ep["length"]).mean().item()
    assert row["engagement_total"] == pytest.approx(total)
    assert total != pytest.approx(ep["engagement_per_request"].double().mean().item())
    for k in ("ctr", "retention", "diversity"):
        assert row[k] == pytest.approx(ep[k].double().mean().item())


def _fake_training(explained_variance: list[float]):
    """``agents.train``'s result with these PPO updates' explained variances (and metrics
    rows without one between them, as a run logs)."""
    metrics = []
    for i, v in enumerate(explained_variance):
        metrics += [(i, {"charts/explained_variance": v}), (i, {"charts/episodic_return": 0.0})]
    return lambda *a, **k: SimpleNamespace(env_steps_per_second=5.0, seconds=2.0, metrics=metrics)


def test_the_critics_fit_is_read_from_the_last_quarter_of_updates(monkeypatch):
    monkeypatch.setattr(compare_marl.agents, "train", _fake_training([0.0] * 6 + [0.5, 1.0]))
    row = compare_marl.run_one("mappo", "cooperative", 0, _marl_args(), {})
    assert row["critic_ev"] == pytest.approx(0.75)  # the last 2 of 8
    assert (row["sps"], row["train_seconds"]) == (5.0, 2.0)


def test_each_head_to_head_row_reads_its_own_agents_column(monkeypatch):
    """Five agents in three groups: agent_k's row holds column k of the held-out episodes
    (not its position within its group)."""
    monkeypatch.setattr(compare_marl.agents, "train", _fake_training([]))
    columns = torch.arange(5.0).expand(3, 5)
    monkeypatch.setattr(
        compare_marl.agents,
        "evaluate",
        lambda *a, **k: SimpleNamespace(episodes={"return": columns, "market_share": columns / 10}),
    )
    rows = compare_marl.run_head_to_head("mappo", 0, _marl_args())
    assert [r["agent"] for r in rows] == [
        "agent_0 (mappo)", "agent_1 (mappo)", "agent_2 (iql)", "agent_3 (iql)",
        "agent_4 (popularity)",
    ]  # fmt: skip
    assert [r["return"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r["market_share"] for r in rows] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_the_learning_checks_seed_spread_is_the_sample_standard_deviation(monkeypatch):
    monkeypatch.setattr(compare_marl, "learning_check", lambda name, seed: float(seed))
    out = compare_marl.spread([0, 1, 2, 3])
    assert set(out) == set(compare_marl.LEARNING_CHECKS)
    for cell in out.values():
        assert cell["values"] == [0.0, 1.0, 2.0, 3.0]
        assert cell["sd"] == pytest.approx(statistics.stdev([0, 1, 2, 3]))
        assert (cell["mean"], cell["min"], cell["max"]) == (1.5, 0.0, 3.0)


def test_compare_agents_intervals_are_the_reports_student_t_intervals():
    """Mean over seeds ± the 95 % t half-width with n - 1 degrees of freedom, exact (the
    script had a table of its own, rounded to the tabulated df at or below), NaN from one
    seed; a non-finite seed leaves no interval."""
    values = [1.0, 2.0, 3.0, 4.0]
    half = report.t_quantile(0.975, 3) * statistics.stdev(values) / 2.0
    assert compare_agents.mean_ci(values) == pytest.approx((2.5, half))
    assert half == pytest.approx(2.0543, abs=1e-4)  # t(0.975, 3) = 3.1824
    twelve = [float(v) for v in range(12)]  # df 11: 2.201 (the old table read df 10's 2.228)
    _, ci = compare_agents.mean_ci(twelve)
    assert ci == pytest.approx(2.201 * statistics.stdev(twelve) / math.sqrt(12), rel=1e-3)
    assert math.isnan(compare_agents.mean_ci([1.0])[1])
    mean, ci = compare_agents.mean_ci([1.0, math.nan])
    assert math.isnan(mean) and math.isnan(ci)
    runs = [{"metrics": {"ctr": v}} for v in values]
    agg = compare_agents.aggregate(runs)
    assert agg["mean"]["ctr"] == 2.5 and agg["ci95"]["ctr"] == pytest.approx(half)


def test_a_compare_agents_run_is_evaluated_on_markets_of_its_own_seed_plus_100000():
    args = SimpleNamespace(num_envs=2, eval_envs=3, device="cpu", budget=0)
    out = compare_agents.run_one("popularity", {}, ENV, {"horizon": 5}, 4, args)
    ep = _episodes_of("popularity", 4, 100_004, horizon=5)
    total = (ep["engagement_per_request"] * ep["length"]).mean().item()
    assert out["metrics"]["engagement_total"] == pytest.approx(total)
    assert out["metrics"] == pytest.approx(
        {**agents.summarize(ep, ["agent_0", "agent_1"]), "engagement_total": total}
    )


def test_fidelity_hit_rates_read_the_first_held_out_item_and_any():
    """HR@10 next: the first held-out item (time order) among the recommendations; any:
    one of them there; over every test user, those with no recommendations included."""
    held = {0: [5, 7], 1: [3], 2: [-1, 4], 3: [8]}
    recs = {0: [7, 1], 1: [3, 2], 2: [9]}
    assert fidelity.hit_rates(held, recs) == {"hr@10_next": 0.25, "hr@10_any": 0.5}


def test_fidelity_ranks_a_users_choices_by_count_then_first_choice():
    items = 10
    chosen = [(0, 3), (1, 2), (0, 5), (0, 5), (0, 3), (0, 7), (1, 9), (1, 9), (0, 7), (0, 7)]
    pairs = torch.tensor([u * items + i for u, i in chosen])
    got = fidelity.choices_by_count(pairs, items)
    assert {u: v.tolist() for u, v in got.items()} == {0: [7, 3, 5], 1: [9, 2]}


def test_fidelity_rows_read_the_simulated_counts(tmp_path, monkeypatch):
    """With the simulation stubbed: it is asked for as many requests as the train part has
    interactions (no ``--requests``); CTR is clicks over requests served; the Spearman
    column "vs test" correlates with each item's held-out count (here the simulated counts
    are those counts: 1), "vs train" with its train count."""
    path = tiny_log(tmp_path)
    log = load_log(path)
    train, test = log.time_split(0.2, by="user")
    train_c = train.compact()
    # (a per-user split: every held-out user also has train interactions)
    ids = {i: k for k, i in enumerate(train_c.item_ids.tolist())}
    held_out = np.zeros(train_c.num_items)
    for i in log.item_ids[test.item].tolist():
        if i in ids:
            held_out[ids[i]] += 1
    asked = []

    def simulate(market, policy, requests, seed):
        asked.append(requests)
        users = np.ones(train_c.num_users)
        return fidelity.Simulated(
            item_clicks=2 * held_out, user_clicks=users, item_users=held_out.copy(),
            user_items=users, user_requests=users, choices={}, requests=int(8 * held_out.sum()),
            seconds=0.0,
        )  # fmt: skip

    monkeypatch.setattr(fidelity, "simulate", simulate)
    args = fidelity.Args(log=str(path), policies=("random",), num_envs=2)
    row = fidelity.evaluate_split(log, "user", args)["rows"]["simulated (random)"]
    assert asked == [len(train_c)]
    assert row["ctr"] == 0.25 and row["requests"] == 8 * held_out.sum()
    assert row["repeat_share"] == 0.5
    assert row["spearman_items_test"] == pytest.approx(1.0)
    assert row["spearman_items"] < 0.9


def test_compare_agents_iql_settings_follow_the_budget_and_yield_to_overrides():
    """epsilon decays over the first half of the budget, updates start after 1,000 steps;
    ``--iql KEY=VALUE`` overrides either."""
    assert compare_agents.iql_config(8_000, {}) == {"learning_starts": 1_000,
                                                   "eps_decay_steps": 4_000}  # fmt: skip
    assert compare_agents.iql_config(8_000, {"learning_starts": 40, "lr": 1e-3}) == {
        "learning_starts": 40, "eps_decay_steps": 4_000, "lr": 1e-3,
    }  # fmt: skip
    assert compare_agents.iql_config(1, {"eps_decay_steps": 9})["eps_decay_steps"] == 9
