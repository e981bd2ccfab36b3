"""Runs: directory layout, TensorBoard event files, checkpoints, exact resume, and that a
finished run's directory is never written again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from experiment_helpers import TINY_ENV, TINY_IQL

import agents
from experiments import runner
from experiments.config import ConfigError
from experiments.runner import RunError


def tree(path: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``path``: content hash and mtime (ns)."""
    return {
        str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def deterministic(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timing", "run")}


def test_run_directory_layout(tiny):
    res = runner.train(tiny())
    d = res.path
    assert d.name.startswith("Market-v0__iql__0__")
    for name in ("config.json", "summary.json", "curve.csv", "agent.pt", "DONE"):
        assert (d / name).is_file(), name
    assert list(d.glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (d / "checkpoints").glob("*.pt"))
    assert ckpts == [f"step_{s:012d}.pt" for s in (40, 80, 120, 160)]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["run"]["agent"] == "iql" and cfg["run"]["seed"] == 0
    assert cfg["env_config"]["horizon"] == 10 and "boredom_growth" in cfg["env_config"]
    assert cfg["agents"][0]["config"]["learning_starts"] == TINY_IQL["learning_starts"]
    assert cfg["agents"][0]["config"]["seed"] == 0
    s = json.loads((d / "summary.json").read_text())
    assert s == res.summary
    assert s["env_steps"] == 160 and s["eval"]["episodes"] == 4
    for m in ("return", "ctr", "engagement_per_request", "retention", "market_share"):
        assert m in s["eval"] and m in s["train"]
    assert "losses/td" in s["train_metrics"]
    curve = runner.read_curve(d / "curve.csv")
    assert curve == res.curve and [p["step"] for p in curve] == sorted(p["step"] for p in curve)


def test_tensorboard_event_files(tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d = runner.train(tiny(opponent="random")).path
    acc = EventAccumulator(str(d))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "charts/episodic_return",
        "charts/episodic_return_agent_0",
        "charts/episodic_length",
        "charts/sps",
        "losses/td/iql_agent_0",
        "losses/choice_nll/iql_agent_0",
        "rec/ctr",
        "rec/engagement",
        "rec/retention",
        "rec/market_share_agent_0",
        "rec/market_share_agent_1",
        "rec/coverage",
        "rec/diversity",
        "rec/exposure_gini",
        "eval/return",
        "eval/ctr",
    ):
        assert tag in tags, (tag, sorted(tags))
    returns = acc.Scalars("charts/episodic_return")
    assert [e.step for e in returns] == sorted({e.step for e in returns})
    assert "hyperparameters/text_summary" in acc.Tags()["tensors"]


def test_runs_never_share_or_reuse_a_directory(tiny):
    first = runner.train(tiny())
    before = tree(first.path)
    second = runner.train(tiny())  # same config, same seed
    assert second.path != first.path and second.path.parent == first.path.parent
    # Same seed, same results (a run is reproducible from its config).
    assert deterministic(second.summary) == deterministic(first.summary)
    with pytest.raises(RunError, match="finished"):
        runner.resume(first.path)
    out, _ = runner.evaluate_checkpoint(first.path, root=first.path.parent.parent / "evals")
    assert out.parent != first.path and not str(out).startswith(str(first.path))
    rd = runner.RunDir(first.path)
    with pytest.raises(RunError, match="finished"):
        rd.write_json("summary.json", {})
    with pytest.raises(RunError, match="finished"):
        rd.save_torch("checkpoints/step_000000000999.pt", {})
    assert tree(first.path) == before


def test_corrupt_checkpoint_is_a_clear_error_and_loses_nothing(tiny):
    cfg = tiny(total_steps=160, checkpoint_every=40)
    done = runner.train(cfg).path
    run = done.with_name(done.name + "-killed")
    shutil.copytree(done, run)
    for name in ("DONE", "summary.json", "agent.pt", "curve.csv"):
        (run / name).unlink()
    (run / "checkpoints" / "step_000000000160.pt").unlink()
    newest = run / "checkpoints" / "step_000000000120.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write
    before = tree(run)
    with pytest.raises(RunError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert "step_000000000120.pt" in msg and "corrupt" in msg
    assert "No file was changed or removed" in msg and "step_000000000080.pt" in msg
    assert tree(run) == before
    # The older checkpoint still resumes, to the uninterrupted result.
    res = runner.resume(run, checkpoint=run / "checkpoints" / "step_000000000080.pt")
    assert deterministic(res.summary) == deterministic(
        json.loads((done / "summary.json").read_text())
    )
    garbage = run.parent / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="corrupt or unreadable"):
        runner.load_run_checkpoint(garbage)


def test_checkpoint_of_another_layout_version_is_refused_by_name(tiny, tmp_path):
    """A run checkpoint written by a version whose saved state had another layout (e.g. the
    env's user_status [N, U, 2] before version 2) is refused with both versions named, not
    restored attribute by attribute into the wrong shapes."""
    done = runner.train(tiny(total_steps=80, checkpoint_every=40)).path
    payload = torch.load(done / "checkpoints" / "step_000000000040.pt", weights_only=True)
    assert payload["run"]["version"] == runner.CHECKPOINT_VERSION
    payload["run"]["version"] = runner.CHECKPOINT_VERSION - 1
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with pytest.raises(RunError) as err:
        runner.load_run_checkpoint(old)
    msg = str(err.value)
    assert f"version {runner.CHECKPOINT_VERSION - 1}" in msg
    assert f"reads version {runner.CHECKPOINT_VERSION}" in msg


def _cooperative(name: str) -> tuple:
    cls = agents.agent_class(name)
    modes = getattr(cls, "supports_reward_modes", ())
    return (("reward_mode", "cooperative"),) if "competitive" not in modes else ()


def _small_agent_config(name: str) -> tuple:
    """Tiny learning schedules for the learners, defaults for the rest."""
    cls = agents.agent_class(name)
    fields = set(getattr(cls, "Config", agents.AgentConfig).field_names())
    wanted = {
        **TINY_IQL,
        "rollout_steps": 8,
        "num_minibatches": 2,
        "update_epochs": 1,
        "members": ("popularity", "linucb"),
    }
    return tuple(sorted((k, v) for k, v in wanted.items() if k in fields))


@pytest.mark.parametrize("name", agents.registered_agents())
def test_resume_from_a_middle_checkpoint_is_exact(tiny, name):
    """For every registered agent: a run resumed from its step-80 checkpoint (in a copy of its
    directory) ends with the same summary and curve as the uninterrupted run."""

    cfg = tiny(
        agent=name,
        agent_overrides=_small_agent_config(name),
        env_overrides=TINY_ENV + _cooperative(name),
    )
    full = runner.train(cfg)
    copy = full.path.with_name(full.path.name + "-copy")
    shutil.copytree(full.path, copy)
    for name_ in ("DONE", "summary.json", "agent.pt", "curve.csv"):
        (copy / name_).unlink()
    for ck in (copy / "checkpoints").glob("*.pt"):
        if ck.name > "step_000000000080.pt":
            ck.unlink()
    resumed = runner.resume(copy)
    assert resumed.summary["timing"]["resumed_from"] == ["step_000000000080.pt"]
    assert deterministic(resumed.summary) == deterministic(full.summary)
    assert (copy / "curve.csv").read_text() == (full.path / "curve.csv").read_text()


def test_checkpoints_are_agent_checkpoints_and_pruned(tiny):
    d = runner.train(tiny(keep_checkpoints=2, opponent="popularity")).path
    ckpts = sorted((d / "checkpoints").glob("*.pt"))
    assert [c.name for c in ckpts] == ["step_000000000120.pt", "step_000000000160.pt"]
    payload = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    assert payload["run"]["steps"] == 160 and payload["header"]["agent"] == "team"
    env = runner.make_env(runner.RunConfig.from_dict(payload["run"]["config"]))
    for path in (ckpts[-1], d / "agent.pt"):
        agent = agents.load_agent(path, env)
        assert [m.name for m in agent.members] == ["iql", "popularity"]
    assert not list(d.rglob(".*.tmp-*")), "no temporary files are left behind"


def test_evaluate_checkpoint(tiny, tmp_path):
    d = runner.train(tiny(agent="linucb", agent_overrides=())).path
    out, metrics = runner.evaluate_checkpoint(d, episodes=2, seed=5, root=tmp_path / "evals")
    assert metrics["episodes"] == 2 and "ctr" in metrics
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 5 and s["eval"] == metrics and (out / "DONE").exists()
    with pytest.raises(RunError, match="bare agent checkpoint"):
        bare = tmp_path / "bare.pt"
        agent = agents.load_agent(
            d / "agent.pt",
            runner.make_env(
                runner.RunConfig.from_dict(json.loads((d / "config.json").read_text())["run"])
            ),
        )
        agent.save(bare)
        runner.evaluate_checkpoint(bare, root=tmp_path / "evals")
    # Refused before anything is written: no episodes, a seed past int64.
    for bad in ({"episodes": 0}, {"episodes": -3}, {"seed": 2**70}):
        with pytest.raises(ConfigError, match=r"episodes=|seed=.*out of range"):
            runner.evaluate_checkpoint(d, root=tmp_path / "refused", **bad)
    assert not (tmp_path / "refused").exists()


def test_resume_from_the_agent_state_dict_alone_would_differ(tiny, monkeypatch):
    """The exactness checks have teeth: restoring IQL from ``Agent.state_dict`` alone (weights,
    optimizers, generator; not its replay buffer, n-step window or metric sums) changes the
    result, so the full snapshot is what makes resume exact."""
    full = runner.train(tiny())
    copy = full.path.with_name(full.path.name + "-copy")
    shutil.copytree(full.path, copy)
    for name in ("DONE", "summary.json", "agent.pt", "curve.csv"):
        (copy / name).unlink()
    real = runner.snapshot.restore
    monkeypatch.setattr(
        runner.snapshot,
        "restore",
        lambda obj, state: None if isinstance(obj, agents.Agent) else real(obj, state),
    )
    resumed = runner.resume(copy, checkpoint=copy / "checkpoints" / "step_000000000080.pt")
    assert deterministic(resumed.summary) != deterministic(full.summary)


def test_ctrl_c_checkpoints_stops_and_resumes_exactly(tiny, monkeypatch):
    """SIGINT (Ctrl-C) is honoured at the next chunk boundary: a checkpoint is written, the run
    stops with the command to resume it, and resuming gives the uninterrupted result."""
    real, chunks = agents.train, []

    def train_then_interrupt(*args, **kwargs):
        out = real(*args, **kwargs)
        chunks.append(1)
        if len(chunks) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(runner.agents, "train", train_then_interrupt)
    with pytest.raises(runner.Interrupted) as err:
        runner.train(tiny())
    run, step = err.value.run_dir, err.value.step
    assert step == 60 and "python -m experiments resume" in str(err.value)
    assert (run / "checkpoints" / f"step_{step:012d}.pt").is_file()
    assert not (run / "DONE").exists()
    monkeypatch.setattr(runner.agents, "train", real)
    resumed = runner.resume(run)
    assert deterministic(resumed.summary) == deterministic(runner.train(tiny()).summary)
