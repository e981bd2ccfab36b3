"""Runs: directory layout, TensorBoard event files, checkpoints, exact resume, that a
finished run's directory is never written again, that one process at a time trains a run
(its lock), and that a directory that cannot be used is a clear error."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from experiment_helpers import TINY_ENV, TINY_IQL, tensorboard, tiny_run

import agents
from experiments import cli, comparison, provenance, runner
from experiments.config import CompareConfig, ConfigError
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
    assert cfg["versions"] == provenance.versions()  # the code that made the run
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
    # A run's agent.pt is read with the run's config (it was read as bare: with --env, the
    # env's defaults, horizon 200 for a run trained on its own horizon, silently).
    _, by_file = runner.evaluate_checkpoint(
        d / "agent.pt", episodes=2, seed=5, env_id=s["env"], root=tmp_path / "evals"
    )
    assert by_file == metrics
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


def test_a_diverged_run_stops_training_keeps_its_good_checkpoints_and_says_so(tiny, monkeypatch):
    """Training whose weights become NaN stops at the next checkpoint boundary: no checkpoint
    of the diverged agent is written (pruning would have left only unresumable ones), the
    earlier ones stay and load, a RuntimeWarning names the step and the tensor, the diverged
    agent is evaluated, the run finishes, and its summary and report say it diverged."""
    real, chunks = agents.train, []

    def train_then_diverge(agent, *args, **kwargs):
        out = real(agent, *args, **kwargs)
        chunks.append(1)
        if len(chunks) == 3:  # a chunk is 20 steps, a checkpoint every 40: NaN at step 60
            next(iter(agent.learners.parameters())).data.view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(runner.agents, "train", train_then_diverge)
    cfg = tiny(total_steps=160, checkpoint_every=40, keep_checkpoints=1)
    with pytest.warns(
        RuntimeWarning, match=r"training diverged at step 80 \(the agent's state.* non-finite"
    ):
        res = runner.train(cfg)
    diverged = res.summary["diverged"]
    assert diverged["step"] == 80 and res.summary["env_steps"] == 80
    assert re.match(
        r"the agent's state\['learners'\]\[.*\] holds \d+ non-finite", diverged["where"]
    )
    assert math.isfinite(res.summary["eval"]["return"])  # the diverged agent, evaluated
    assert (res.path / "DONE").exists()
    kept = sorted(p.name for p in (res.path / "checkpoints").iterdir())
    assert kept == ["step_000000000040.pt"]
    assert runner.load_run_checkpoint(res.path / "checkpoints" / kept[0])["loop"]["steps"] == 40
    # A run that did not diverge says so too.
    monkeypatch.setattr(runner.agents, "train", real)
    assert runner.train(tiny(total_steps=80, checkpoint_every=40)).summary["diverged"] is None


# ----------------------------------------------------------------------------------------
# One process per run: the run directory's lock
# ----------------------------------------------------------------------------------------
try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None


def killed_copy(done: Path, suffix: str = "-killed", *, keep_checkpoints: bool = True) -> Path:
    """A copy of a finished run as a process killed before it wrote its results leaves it
    (and, without ``keep_checkpoints``, killed before its first checkpoint)."""
    run = done.with_name(done.name + suffix)
    shutil.copytree(done, run)
    for name in ("DONE", "summary.json", "agent.pt", "curve.csv"):
        (run / name).unlink()
    if not keep_checkpoints:
        shutil.rmtree(run / "checkpoints")
    return run


@contextlib.contextmanager
def hold_lock(directory: Path):
    """Hold ``directory/.lock`` from this process, as a training process does."""
    with open(directory / runner.LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        yield


@pytest.mark.skipif(fcntl is None, reason="runs are locked with fcntl.flock (POSIX)")
def test_a_run_that_is_being_trained_is_not_resumed(tiny, capsys):
    """While a process trains a run (holds its lock), `resume` of it is refused by pid and
    changes nothing in the directory; once the lock is free it resumes exactly."""
    done = runner.train(tiny())
    assert not (done.path / runner.LOCK).exists(), "a finished run keeps no .lock"
    run = killed_copy(done.path)
    with hold_lock(run):
        before = tree(run)
        with pytest.raises(RunError, match=rf"is being trained by pid {os.getpid()} "):
            runner.resume(run)
        assert cli.main(["resume", str(run)]) == 1
        err = capsys.readouterr().err
        assert f"run {str(run)!r} is being trained by pid {os.getpid()}" in err
        assert "Traceback" not in err
        assert tree(run) == before
    resumed = runner.resume(run)
    assert deterministic(resumed.summary) == deterministic(done.summary)
    assert not (run / runner.LOCK).exists()


@contextlib.contextmanager
def lock_held_by_child(directory: Path, seconds: float):
    """A child process that holds ``directory/.lock`` as a training process does, for
    ``seconds``, then exits without removing it (as a worker of a SIGKILLed comparison that
    its watchdog ends); yields the child once it holds the lock."""
    code = (
        "import fcntl, os, socket, sys, time\n"
        "f = open(sys.argv[1], 'a+')\n"
        "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "f.truncate(0); f.write(f'{os.getpid()} {socket.gethostname()}\\n'); f.flush()\n"
        "print('held', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "os._exit(0)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(directory / runner.LOCK), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


@pytest.mark.skipif(fcntl is None, reason="runs are locked with fcntl.flock (POSIX)")
def test_resume_waits_for_a_run_lock_whose_holder_is_exiting(tiny):
    """A `resume` typed within the watchdog's poll of a comparison's SIGKILL met its worker
    still holding the run's lock, and was refused (one a moment later worked): it waits
    (up to runner.LOCK_WAIT_S) for a holder that lets go, then resumes exactly."""
    assert runner.LOCK_WAIT_S > 2 * comparison.PARENT_POLL_S
    done = runner.train(tiny())
    run = killed_copy(done.path)
    with lock_held_by_child(run, 0.5) as child:
        t0 = time.monotonic()
        resumed = runner.resume(run)
        waited = time.monotonic() - t0
        assert child.poll() == 0  # it had let go (by exiting) before the resume went on
    assert waited > 0.2
    assert deterministic(resumed.summary) == deterministic(done.summary)
    assert not (run / runner.LOCK).exists()


@pytest.mark.skipif(fcntl is None, reason="runs are locked with fcntl.flock (POSIX)")
def test_a_run_lock_held_past_the_wait_is_refused_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "LOCK_WAIT_S", 0.3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # refused at the lock, before it is read
    with lock_held_by_child(run, 60) as child:
        before = tree(run)
        t0 = time.monotonic()
        with pytest.raises(RunError) as err:
            runner.resume(run)
        waited = time.monotonic() - t0
        assert tree(run) == before
    assert 0.3 <= waited < 5
    assert str(err.value) == (
        f"run {str(run)!r} is being trained by pid {child.pid} (it holds "
        f"{str(run / runner.LOCK)!r}); nothing was changed. Wait for it to finish, or stop it "
        f"(Ctrl-C or SIGTERM: it checkpoints and stops) and then run: python -m experiments "
        f"resume {run}"
    )


@pytest.mark.skipif(fcntl is None, reason="runs are locked with fcntl.flock (POSIX)")
def test_train_holds_the_run_lock_until_it_returns(tiny, monkeypatch, tmp_path):
    real, probes = agents.train, []

    def train_and_probe(*args, **kwargs):
        out = real(*args, **kwargs)
        (lock,) = (tmp_path / "runs").glob(f"*/{runner.LOCK}")
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                probes.append("free")
            except BlockingIOError:
                probes.append(f.read().split()[0])
        return out

    monkeypatch.setattr(runner.agents, "train", train_and_probe)
    res = runner.train(tiny())
    assert probes and set(probes) == {str(os.getpid())}
    assert not (res.path / runner.LOCK).exists()


@pytest.mark.skipif(fcntl is None, reason="comparisons are locked with fcntl.flock (POSIX)")
def test_a_comparison_that_is_being_worked_on_is_not_resumed(tiny, tmp_path):
    cfg = CompareConfig(agents=("random",), seeds=1, run=tiny(agent="random", agent_overrides=()))
    path = tmp_path / "cmp"
    path.mkdir()
    (path / "compare.json").write_text(json.dumps({"config": cfg.to_dict()}))
    with hold_lock(path):
        before = tree(path)
        with pytest.raises(
            RunError, match=rf"comparison .* is being worked on by pid {os.getpid()}"
        ):
            comparison.resume_comparison(path, quiet=True)
        assert tree(path) == before


# ----------------------------------------------------------------------------------------
# TensorBoard after a resume reads like an uninterrupted run
# ----------------------------------------------------------------------------------------
def test_a_run_killed_before_its_first_checkpoint_restarts_with_clean_tensorboard(tiny):
    """Resume starts such a run over; the killed attempt's scalars are hidden, not doubled."""
    done = runner.train(tiny(checkpoint_every=0))  # its only checkpoint is the final one
    run = killed_copy(done.path, keep_checkpoints=False)
    resumed = runner.resume(run)
    assert resumed.summary["timing"]["resumed_from"] == []
    assert deterministic(resumed.summary) == deterministic(done.summary)
    assert tensorboard(run) == tensorboard(done.path)
    assert tensorboard(run)[1] == 1


def test_a_run_killed_after_its_evaluation_resumes_without_a_second_evaluation_point(tiny):
    """Killed after the final evaluation was logged but before DONE: the resumed run logs the
    evaluation again, and TensorBoard shows it once, with the final step's training scalars."""
    done = runner.train(tiny())
    run = done.path.with_name(done.path.name + "-killed")
    shutil.copytree(done.path, run)
    for name in ("DONE", "summary.json", "curve.csv"):
        (run / name).unlink()
    resumed = runner.resume(run)
    assert resumed.summary["timing"]["resumed_from"] == ["step_000000000160.pt"]
    assert deterministic(resumed.summary) == deterministic(done.summary)
    scalars, _ = tensorboard(run)
    assert [s for s, _ in scalars["eval/return"]] == [160]
    assert (scalars, 1) == tensorboard(done.path)


def test_a_checkpoint_without_step_scalars_still_resumes(tiny):
    """Checkpoints written before the loop state had ``step_scalars`` resume as before."""
    done = runner.train(tiny())
    run = killed_copy(done.path)
    ckpt = run / "checkpoints" / "step_000000000080.pt"
    payload = torch.load(ckpt, weights_only=True)
    del payload["loop"]["step_scalars"]
    torch.save(payload, ckpt)
    resumed = runner.resume(run, checkpoint=ckpt)
    assert deterministic(resumed.summary) == deterministic(done.summary)


def test_a_final_checkpoint_without_step_scalars_keeps_the_final_steps_training_scalars(tiny):
    """Resumed from a *final* checkpoint written before the loop state had ``step_scalars``,
    the run cannot log the final step's training scalars again, so it must not hide them: it
    purges after the final step (the killed attempt's evaluation point then stays beside the
    new one, as it did before ``step_scalars``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def final_step_tags(path: Path) -> set[str]:
        acc = EventAccumulator(str(path))
        acc.Reload()
        return {
            tag
            for tag in acc.Tags()["scalars"]
            if not tag.startswith("eval/") and 160 in [e.step for e in acc.Scalars(tag)]
        }

    done = runner.train(tiny())
    run = killed_copy(done.path)
    ckpt = run / "checkpoints" / "step_000000000160.pt"
    payload = torch.load(ckpt, weights_only=True)
    assert payload["loop"]["trained"] and payload["loop"]["step_scalars"]
    del payload["loop"]["step_scalars"]
    torch.save(payload, ckpt)
    runner.resume(run, checkpoint=ckpt)
    assert "charts/sps" in final_step_tags(done.path)
    assert final_step_tags(run) == final_step_tags(done.path)


# ----------------------------------------------------------------------------------------
# Interrupts and directories that are not usable
# ----------------------------------------------------------------------------------------
def test_interrupted_crosses_process_boundaries():
    """`compare --jobs N` workers send it back to the parent (pickled)."""
    for e in (
        runner.Interrupted(Path("/runs/r"), 60),
        runner.Interrupted(Path("/runs/c/r"), 60, comparison=Path("/runs/c")),
        runner.Interrupted(None, None, comparison=Path("/runs/c")),
    ):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is runner.Interrupted and str(back) == str(e)
        assert (back.run_dir, back.step, back.comparison) == (e.run_dir, e.step, e.comparison)
        assert str(e).endswith(f"python -m experiments resume {e.resume_path}")


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{not json", "is not readable as a run config"),
        ('{"name": "another project"}', "is not a run config (it has no 'run' object)"),
        # (a whole recorded config with one field changed: a partial one is refused first)
        ({"agent": "nosuch"}, "cannot be resumed here: agent: unknown agent 'nosuch'"),
        ({"env": "recenv/Nope-v0"}, "cannot be resumed here: unknown env"),
        ('{"run": {"agent": "nosuch"}}', "lacks the field(s)"),
        ('{"run": {"seed": "x", "bogus": 1}}', "unknown RunConfig key"),
    ],
)
def test_a_run_directory_that_cannot_be_used_is_a_clear_error(tmp_path, content, expect):
    """Named by its file, with nothing written into the directory (no .lock left either)."""
    run = tmp_path / "run"
    run.mkdir()
    if isinstance(content, dict):
        content = json.dumps({"run": {**tiny_run(tmp_path).to_dict(), **content}})
    (run / "config.json").write_text(content)
    before = tree(run)
    with pytest.raises(RunError, match=re.escape(expect)) as err:
        runner.resume(run)
    assert str(run / "config.json") in str(err.value)
    assert tree(run) == before and sorted(os.listdir(run)) == ["config.json"]
    if "resumed here" not in expect:
        with pytest.raises(RunError, match=re.escape(expect)):
            runner.evaluate_checkpoint(run, root=tmp_path / "evals")
    assert not (tmp_path / "evals").exists()


def test_a_sweep_variant_with_seeds_resume_cannot_count_is_refused(tiny, tmp_path):
    """tune_sweep's `--seeds 0,1,7` is recorded as 3 seeds from run.seed 0 plus the list;
    resume would train and report seed 2 instead of 7, so it refuses and says why."""
    run = tiny(agent="random", agent_overrides=(), seed=0)
    cfg = CompareConfig(agents=("random",), seeds=3, run=run)
    path = tmp_path / "variant"
    path.mkdir()
    head = {"config": cfg.to_dict(), "sweep": {"dir": "sw", "variant": "v", "seeds": [0, 1, 7]}}
    (path / "compare.json").write_text(json.dumps(head))
    before = tree(path)
    with pytest.raises(RunError, match=r"seeds \[0, 1, 7\], which resume cannot train"):
        comparison.resume_comparison(path, quiet=True)
    assert tree(path) == before
    # Seeds it can count (a sweep's default) resume as any comparison's.
    head["sweep"]["seeds"] = [0, 1, 2]
    (path / "compare.json").write_text(json.dumps(head))
    assert comparison.read_compare_config(path) == cfg


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_root_that_cannot_hold_run_directories_is_a_clear_error(tmp_path, capsys, where):
    """A file where the root should be (or above it): a RunError naming the root and the
    field, not the bare ``[Errno 17] File exists``; the command line exits 1 with one line."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    root = blocker if where == "file" else blocker / "runs"
    with pytest.raises(RunError, match=rf"the root '{re.escape(str(root))}' cannot hold run"):
        runner.train(tiny_run(root))
    assert cli.main(["train", "--preset", "smoke", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the root") and "--root" in err and "Traceback" not in err
    assert blocker.read_text() == "not a directory"
