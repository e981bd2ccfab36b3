"""experiments.slate_quality: the one-step value it scores slates by, what its rules must
satisfy on the true model, reproducibility, and the compare_agents experiment around it."""

from __future__ import annotations

import json
import math

import pytest
import torch

import agents
import recenv
from experiments import compare_agents, slate_quality

TINY_IQL = dict(learning_starts=32, batch_size=16, update_every=8, hidden=(16,), buffer_size=500)


def test_one_step_value_is_the_logit_share_of_click_values():
    cfg = recenv.make_vec("recenv/Market-v0", num_envs=1).config
    u = torch.tensor([[cfg.no_click_utility, cfg.no_click_utility + 1.0, -3.0]])
    v = torch.tensor([[2.0, 4.0, 9.0]])
    slate = torch.tensor([[1, 0]])
    w = [math.exp(1.0 / cfg.temperature), 1.0]  # relative to no click's weight of 1
    expected = (w[0] * 4.0 + w[1] * 2.0) / (1.0 + sum(w))
    got = slate_quality.one_step_value(u, v, slate, cfg)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def trained():
    env = recenv.make_vec("recenv/Market-v0", num_envs=4, seed=0, horizon=20)
    agent = agents.make_agent("iql", env, seed=0, **TINY_IQL)
    agents.train(agent, env, 200, seed=0)
    return agent


def test_the_value_rule_leads_on_the_true_model_and_runs_reproduce(trained):
    """The greedy value rule on the true model is at least the utility oracle's and random's
    choice on average (80 requests of 2 agents), and a second measurement with the same seed
    gives the same figures."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=8, seed=5, horizon=20)
    first = slate_quality.measure(trained, env, steps=5, seed=5)
    assert set(first) == set(slate_quality.RULES + slate_quality.CORRELATIONS[:2])
    assert first["value_oracle"] >= first["utility_oracle"]
    assert first["value_oracle"] > first["random"]
    assert all(-1.0 <= first[k] <= 1.0 for k in slate_quality.CORRELATIONS[:2])
    assert slate_quality.measure(trained, env, steps=5, seed=5) == first


def test_a_regression_on_the_true_utilities_reads_them_from_the_observations(trained):
    """The supervised reference learns something real: held out, its predictions correlate
    with the true utilities (a network fitted on noise would give about 0), and a second fit
    with the same seed gives the same figure."""
    env = recenv.make_vec("recenv/Market-v0", num_envs=8, seed=5, horizon=20)
    r = slate_quality.readable_utility(trained, env, steps=6, seed=5, epochs=20)
    assert 0.3 < r <= 1.0, r
    assert slate_quality.readable_utility(trained, env, steps=6, seed=5, epochs=20) == r


def test_it_measures_an_iql_agent_of_every_env_agent_only():
    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    with pytest.raises(ValueError, match="'iql' agent that controls every env agent"):
        slate_quality.measure(agents.make_agent("random", env), env, steps=1, seed=0)


def test_compare_agents_writes_the_slate_quality_table(tmp_path):
    out = tmp_path / "sq"
    compare_agents.main(
        [
            "--experiment", "slate_quality", "--budget", "100", "--seeds", "2",
            "--num-envs", "2", "--eval-envs", "2", "--steps", "2", "--out", str(out),
            "--iql", json.dumps(dict(TINY_IQL, learning_starts=40)),
        ]
    )  # fmt: skip
    md = out.with_suffix(".md").read_text()
    assert "| value_oracle |" in md and "corr_gain_value" in md
    assert "2 requests of a greedy rollout in each of 2 fresh markets" in md
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert set(results["mean"]) == set(slate_quality.RULES + slate_quality.CORRELATIONS)
    assert len(results["per_seed"]) == 2
