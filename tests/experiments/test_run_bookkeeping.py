"""What a run counts: its budget, its evaluation plan, the curve's points and their means,
the order of its checkpoints, and the global RNGs a resume brings back. Each stated by a
known answer (the mutation audit's runner mutants survived every other test)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from experiment_helpers import killed_copy

import agents
from experiments import runner


def test_episode_point_means_over_episodes_and_sums_the_focal_agents_shares():
    """Per-agent metrics as ``name/agent``; the focal agents' ``return`` is their mean and
    their ``market_share`` their summed share (a team's share of the market), both averaged
    over episodes; per-episode scalars are averaged."""
    episodes = {
        "return": torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]]),
        "market_share": torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.3, 0.3]]),
        "length": torch.tensor([5, 7]),
    }
    point = runner.episode_point(episodes, ["a0", "a1", "a2"], ["a0", "a1"])
    assert point["episodes"] == 2.0
    assert point["return"] == pytest.approx(2.5)  # (1 + 2 + 3 + 4) / 4
    assert point["market_share"] == pytest.approx(0.7)  # (0.7 + 0.7) / 2
    assert point["return/a2"] == pytest.approx(9.0) and point["market_share/a0"] == pytest.approx(
        0.3
    )
    assert point["length"] == pytest.approx(6.0)
    solo = runner.episode_point(episodes, ["a0", "a1", "a2"], ["a1"])
    assert solo["return"] == pytest.approx(3.0) and solo["market_share"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("num_envs", "episodes", "plan"),
    [(4, 5, (4, 2)), (4, 8, (4, 2)), (4, 9, (4, 3)), (8, 3, (3, 1)), (1, 1, (1, 1))],
)
def test_eval_plan_plays_whole_episodes_on_every_market_rounding_up(num_envs, episodes, plan):
    assert runner.eval_plan(num_envs, episodes) == plan


def test_a_budget_that_is_not_a_multiple_of_the_markets_is_rounded_up(tiny):
    """``total_steps=162`` on 4 markets: 41 batched steps, 164 env steps (never fewer than
    asked); 5 evaluation episodes on 4 markets: 2 each, 8."""
    result = runner.train(tiny(total_steps=162, eval_episodes=5, checkpoint_every=0))
    assert result.summary["env_steps"] == 164
    assert result.summary["eval"]["episodes"] == 8.0
    names = [p.name for p in (result.path / "checkpoints").glob("*.pt")]
    assert names == ["step_000000000164.pt"]


def test_the_curve_counts_each_training_episode_once(tiny):
    """Each curve point is over the episodes that ended since the previous point: their
    counts add up to the run's training episodes."""
    result = runner.train(tiny(log_every=8))
    counts = [p["episodes"] for p in result.curve]
    assert len([c for c in counts if c]) > 2
    assert sum(counts) == result.summary["train_episodes"] > 0


def test_checkpoints_are_ordered_by_step_past_twelve_digits(tmp_path):
    """The step is padded to 12 digits; from 10**12 steps on a name has 13, which sorts
    before the 12-digit ones by name: the newest would read as the oldest and be pruned."""
    run_dir = runner.RunDir(tmp_path)
    run_dir.checkpoint_dir.mkdir()
    for step in (10**12, 999_999_999_000, 5):
        (run_dir.checkpoint_dir / f"step_{step:012d}.pt").write_bytes(b"")
    assert [p.name for p in run_dir.checkpoints()] == [
        "step_000000000005.pt",
        "step_999999999000.pt",
        "step_1000000000000.pt",
    ]
    run_dir.prune_checkpoints(1)
    assert [p.name for p in run_dir.checkpoints()] == ["step_1000000000000.pt"]


def test_resume_brings_back_the_global_rngs(tiny, monkeypatch, tmp_path):
    """A checkpoint holds torch's, numpy's and Python's global RNG states, so third-party
    code that draws from them (here: a draw before each training chunk) draws after a resume
    what it drew in the uninterrupted run."""
    draws: list[tuple[float, float, float]] = []
    train = agents.train

    def drawing(*args, **kwargs):
        draws.append((float(torch.rand(())), float(np.random.rand()), random.random()))  # noqa: NPY002
        return train(*args, **kwargs)

    monkeypatch.setattr(agents, "train", drawing)
    full = runner.train(tiny())
    full_draws, draws[:] = list(draws), []
    copy = killed_copy(full.path, tmp_path / "killed", last_step=80)
    torch.manual_seed(12345)  # what this process drew before is not what the run drew
    np.random.seed(12345)  # noqa: NPY002
    random.seed(12345)
    runner.resume(copy)
    assert len(draws) >= 2 and draws == full_draws[-len(draws) :]
