"""The runner end to end, as a user runs it: ``python -m experiments ...``.

- every preset, through ``compare`` (in a subprocess) and ``train``, with a tiny budget;
- a run SIGKILLed at a random moment after its first checkpoint, then resumed, ends with the
  same summary, learning curve and TensorBoard scalars as an uninterrupted run;
- an interrupted comparison (Ctrl-C, also with --jobs 2) names the comparison to resume, is not
  reported as if it were finished, and a damaged one is a clear error.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from experiment_helpers import REPO, cli_env, run_cli

import agents
import recenv
from experiments import cli, comparison, plots, report, runner
from experiments.config import PRESETS, CompareConfig, ConfigError, RunConfig, apply_overrides
from experiments.runner import RunError

# Tiny budgets for any preset: a few batched steps of two markets, short episodes, small
# learners. Keys a preset's agents do not have are not set (NAME.KEY only for NAME's runs).
TINY = [
    "total_steps=32",
    "num_envs=2",
    "eval_episodes=2",
    "log_every=8",
    "checkpoint_every=16",
    "env.horizon=6",
    "iql.learning_starts=8",
    "iql.batch_size=8",
    "iql.update_every=4",
    "iql.hidden=[16]",
    "iql.buffer_size=500",
]
PNGS = ("learning_curves.png", "market_share.png", "final_metrics.png")


def _only_dir(root: Path) -> Path:
    (d,) = [p for p in root.iterdir() if p.is_dir()]
    return d


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_train_every_preset(preset, tmp_path, capsys):
    """In process (the subprocess path is the comparisons' below)."""
    assert cli.main(["train", "--preset", preset, "--root", str(tmp_path), "--set", *TINY]) == 0
    out = capsys.readouterr().out
    run = _only_dir(tmp_path)
    assert (run / "DONE").exists() and (run / "summary.json").exists()
    assert f"run directory: {run}" in out and "tensorboard --logdir" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["agent"] == PRESETS[preset].run.agent and summary["env_steps"] == 32


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_compare_every_preset(preset, tmp_path):
    p = PRESETS[preset]
    seeds = 1 if preset == "paper" else 2  # paper: its whole grid, one seed
    jobs = 2 if preset == "quick" else 1  # the parallel path too (worker processes)
    args = ["--preset", preset, "--root", str(tmp_path), "--seeds", str(seeds), "--jobs", str(jobs)]
    args += ["--set", *TINY]
    proc = run_cli("compare", *args, timeout=600)
    cdir = _only_dir(tmp_path)
    assert cdir.name.startswith(f"{preset}__")
    for name in ("compare.json", "runs.csv", "table.csv", "table.md", "DONE", *PNGS):
        assert (cdir / name).is_file(), name
    for png in PNGS:
        assert (cdir / png).read_bytes()[:4] == b"\x89PNG"
    runs = [d for d in cdir.iterdir() if d.is_dir()]
    assert len(runs) == len(p.envs) * len(p.agents) * seeds
    assert all((d / "DONE").exists() for d in runs)
    table = (cdir / "table.md").read_text()
    assert table in proc.stdout
    for agent in p.agents:
        assert f"| {agent} |" in table
    assert f"over {seeds} seeds" in table
    assert str(cdir) in proc.stdout and "tensorboard --logdir" in proc.stdout


def test_presets_and_describe(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"{name}:" in out
    for args, text in (
        (["describe", "env"], "boredom_growth"),
        (["describe", "agent", "iql"], "eps_decay_steps"),
        (["describe", "run"], "total_steps"),
        (["describe", "compare"], "per_agent"),
    ):
        assert cli.main(args) == 0
        assert text in capsys.readouterr().out


def test_cli_errors_exit_nonzero(tmp_path, capsys):
    bad = run_cli("train", "--set", "env.horizon=soon", "--root", str(tmp_path), check=False)
    assert bad.returncode == 2 and "env.horizon='soon' is not an int" in bad.stderr
    assert not any(tmp_path.iterdir()), "a rejected config creates no run directory"
    assert cli.main(["resume", str(tmp_path)]) == 1
    assert "not a run directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# SIGKILL and resume
# ----------------------------------------------------------------------------------------
KILL_RUN = [
    "train", "--preset", "smoke", "--total-steps", "1200", "--checkpoint-every", "80",
    "--log-every", "40", "--keep-checkpoints", "3", "--seed", "3",
]  # fmt: skip


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
        if tag != "charts/sps"  # wall clock
    }


def _deterministic(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timing", "run")}


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole_root, killed_root = tmp_path / "whole", tmp_path / "killed"
    run_cli(*KILL_RUN, "--root", str(whole_root))
    whole = _only_dir(whole_root)

    delay = random.Random(os.urandom(8)).uniform(0.0, 1.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", *KILL_RUN, "--root", str(killed_root)],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(killed_root.glob("*/checkpoints/step_*.pt")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = _only_dir(killed_root)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "DONE").exists(), f"the run finished within {delay:.2f}s; raise its budget"
    kept = sorted(p.name for p in (killed / "checkpoints").glob("step_*.pt"))

    out = run_cli("resume", str(killed))
    assert (killed / "DONE").exists()
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    context = f"killed {delay:.2f}s after the first checkpoint; checkpoints then: {kept}"
    assert b["timing"]["resumed_from"] == [kept[-1]], context
    assert _deterministic(b) == _deterministic(a), context
    assert (killed / "curve.csv").read_text() == (whole / "curve.csv").read_text(), context
    # TensorBoard: the scalars the killed process wrote after its checkpoint are purged, so
    # every tag reads exactly as in the uninterrupted run.
    assert _scalars(killed) == _scalars(whole), context
    assert str(killed) in out.stdout


def test_an_interrupted_comparison_resumes(tmp_path):
    """Finished runs are kept, unfinished ones resumed, missing ones started; the report is the
    uninterrupted comparison's."""
    cfg = apply_overrides(
        PRESETS["smoke"],
        [("root", str(tmp_path / "a")), *(a.split("=", 1) for a in TINY)],
    )
    whole = comparison.compare(cfg, quiet=True).path
    part = tmp_path / "b" / whole.name
    shutil.copytree(whole, part)
    for name in ("DONE", "table.md", "table.csv", "runs.csv", *PNGS):
        (part / name).unlink()
    runs = sorted(d for d in part.iterdir() if d.is_dir())
    shutil.rmtree(runs[0])  # never started
    for name in ("DONE", "summary.json", "curve.csv", "agent.pt"):  # killed after a checkpoint
        (runs[1] / name).unlink()
    finished = runs[2]
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()}
    comparison.resume_comparison(part, quiet=True)
    assert (part / "table.md").read_text() == (whole / "table.md").read_text()
    assert len((part / "runs.csv").read_text().splitlines()) == 1 + 4
    assert before == {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="finished"):
        comparison.resume_comparison(part)


# ----------------------------------------------------------------------------------------
# Interrupted comparisons, unfinished and damaged ones
# ----------------------------------------------------------------------------------------
SMALL_COMPARE = [
    "--agents", "random,popularity", "--seeds", "2", "--total-steps", "160", "--num-envs", "4",
    "--log-every", "20", "--checkpoint-every", "40", "--eval-episodes", "4",
    "--set", "env.horizon=10", "env.num_items=300", "env.num_users=8",
]  # fmt: skip


def test_an_interrupted_comparison_is_resumed_as_a_comparison_and_not_reported_as_final(
    tmp_path, monkeypatch, capsys
):
    """Ctrl-C in the second run: the message names the comparison (resuming only the run
    would leave the comparison without its table); `report` refuses the unfinished comparison
    unless --partial, which says it is partial; resuming the comparison finishes it."""
    real, chunks = agents.train, []

    def train_then_interrupt(*args, **kwargs):
        out = real(*args, **kwargs)
        chunks.append(1)
        if len(chunks) == 8 + 3:  # a run is 8 chunks: the third chunk of the second run
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(runner.agents, "train", train_then_interrupt)
    assert cli.main(["compare", "--root", str(tmp_path / "runs"), *SMALL_COMPARE]) == 130
    monkeypatch.setattr(runner.agents, "train", real)
    cdir = _only_dir(tmp_path / "runs")
    err = capsys.readouterr().err
    assert f"Continue the comparison with:\n  python -m experiments resume {cdir}\n" in err
    runs = sorted(d for d in cdir.iterdir() if d.is_dir())
    assert len(runs) == 2 and not any(f"resume {d}" in err for d in runs)
    assert not (cdir / runner.LOCK).exists() and not list(cdir.glob(f"*/{runner.LOCK}"))

    assert cli.main(["report", str(cdir)]) == 1
    err = capsys.readouterr().err
    assert "is unfinished" in err and "1 of 4 runs finished" in err and "--partial" in err
    out = tmp_path / "partial"
    notes, draw = [], plots.comparison_figures
    monkeypatch.setattr(
        plots, "comparison_figures", lambda *a, note="": notes.append(note) or draw(*a, note=note)
    )
    assert cli.main(["report", str(cdir), "--partial", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    warning = "> **Unfinished comparison (1 of 4 runs finished): partial results.**"
    assert printed.startswith(warning)
    assert (out / "table.md").read_text().startswith(warning)
    assert notes == ["Unfinished comparison (1 of 4 runs finished): partial results"]
    assert all((out / f"{name}.png").is_file() for name in plots.FIGURES)
    monkeypatch.setattr(plots, "comparison_figures", draw)

    assert cli.main(["resume", str(cdir)]) == 0
    assert (cdir / "DONE").exists() and len([d for d in cdir.iterdir() if d.is_dir()]) == 4
    capsys.readouterr()
    assert cli.main(["report", str(cdir)]) == 0
    printed = capsys.readouterr().out
    assert "Unfinished" not in printed and printed == (cdir / "table.md").read_text() + "\n"


def test_ctrl_c_during_a_parallel_comparison_checkpoints_and_names_the_comparison(tmp_path):
    """`compare --jobs 2` and a Ctrl-C in the terminal (SIGINT to the process group): every
    run in progress checkpoints and stops, and the comparison exits 130 with the command that
    continues it (not a BrokenProcessPool traceback)."""
    root = tmp_path / "runs"
    args = [*SMALL_COMPARE, "--seeds", "1", "--jobs", "2", "--total-steps", "200000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", "compare", "--root", str(root), *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 180
        while len({p.parent.parent for p in root.glob("*/*/checkpoints/step_*.pt")}) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint of both runs within 180 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    cdir = _only_dir(root)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert f"Continue the comparison with:\n  python -m experiments resume {cdir}" in err
    runs = [d for d in cdir.iterdir() if d.is_dir()]
    assert len(runs) == 2
    for run in runs:  # stopped at a checkpoint, lock released
        assert not (run / "DONE").exists() and list(run.glob("checkpoints/step_*.pt"))
        assert not (run / runner.LOCK).exists()
    assert not (cdir / "DONE").exists() and not (cdir / runner.LOCK).exists()


def _compare_fails_naming_resume(tmp_path, capsys) -> Path:
    """Runs the small comparison, which must fail with 'some/run' is damaged followed by the
    command that continues it; returns the comparison's directory."""
    assert cli.main(["compare", "--root", str(tmp_path), *SMALL_COMPARE]) == 1
    err = capsys.readouterr().err
    cdir = _only_dir(tmp_path)
    assert err.startswith("error: 'some/run' is damaged\nThe comparison ")
    assert f"continue it with:\n  python -m experiments resume {cdir}\n" in err
    return cdir


def test_a_failed_run_names_the_comparison_to_resume(tmp_path, monkeypatch, capsys):
    """A run that fails (here: a damaged run directory) stops the comparison with its error,
    followed by the command that continues the comparison once the cause is mended."""
    real, calls = comparison._run_cell, []

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RunError("'some/run' is damaged")
        return real(*args)

    monkeypatch.setattr(comparison, "_run_cell", second_fails)
    cdir = _compare_fails_naming_resume(tmp_path, capsys)
    assert len(calls) == 2 and not (cdir / "DONE").exists()


class _NoteLessRunError(RunError):
    """A RunError as Python 3.10 (recenv's oldest) makes it: exceptions have no add_note."""

    def __getattribute__(self, name: str):
        if name == "add_note":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_a_failed_run_names_the_comparison_to_resume_without_add_note(
    tmp_path, monkeypatch, capsys
):
    """Where exceptions have no add_note (Python 3.10), the failed run's error still stops the
    comparison with the command that continues it: the comparison's note was an
    AttributeError raised in its place, a traceback from the command line."""

    def fails(*args):
        raise _NoteLessRunError("'some/run' is damaged")

    monkeypatch.setattr(comparison, "_run_cell", fails)
    _compare_fails_naming_resume(tmp_path, capsys)


def test_a_failed_run_stops_a_parallel_comparison_as_the_sequential_one_would(tmp_path):
    """Under `--jobs 2` the first run that fails stops the comparison: the runs in progress
    checkpoint and stop, cells not started are not started, and the failure is raised then,
    not once every other cell has trained (the sequential loop stops at it too)."""
    run = RunConfig(
        num_envs=4, total_steps=200_000, log_every=20, checkpoint_every=40, eval_episodes=4,
        root=str(tmp_path), quiet=True,
        env_overrides=(("horizon", 10), ("num_items", 300), ("num_users", 8)),
    )  # fmt: skip
    cfg = CompareConfig(agents=("random",), seeds=3, jobs=2, run=run)
    long_runs = [(replace(run, seed=s).to_dict(), None, True) for s in (1, 2)]
    broken = ({**run.to_dict(), "bogus": 1}, None, True)  # fails in its worker at once
    finished = []
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="bogus"):
        comparison._run_parallel(cfg, [long_runs[0], broken, long_runs[1]], finished.append, True)
    assert time.monotonic() - t0 < 120  # 200,000 steps would take longer
    assert finished == []
    # The third cell may have been queued to the failed run's worker before the failure
    # was seen; started or not, no run went on to finish, and none holds its lock.
    runs = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert len(runs) <= 2
    for d in runs:
        assert not (d / "DONE").exists() and not (d / runner.LOCK).exists()


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{not json", "compare.json' is not readable"),
        ('{"name": "x"}', "has no 'config' object"),
        ("[1, 2]", "has no 'config' object"),
        ('{"config": {"agents": ["nosuch"]}}', "compare.json' cannot be resumed here: agent"),
        ('{"config": {"bogus": 1}}', "unknown CompareConfig key"),
    ],
)
def test_a_damaged_comparison_is_a_clear_error(tmp_path, capsys, content, expect):
    cdir = tmp_path / "cmp"
    cdir.mkdir()
    (cdir / "compare.json").write_text(content)
    commands = [["resume", str(cdir)]]
    if "resumed" not in expect and "CompareConfig" not in expect:  # report needs no config
        commands.append(["report", str(cdir)])
    for command in commands:
        assert cli.main(command) == 1, command
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expect in err, (command, err)
    assert sorted(os.listdir(cdir)) == ["compare.json"]


def test_a_comparison_without_evaluation_reports_the_last_training_window(tmp_path):
    """eval_episodes=0: the table shows each run's last training window, and says so (as
    `train` does), instead of a table of dashes."""
    cfg = cli.resolve(
        cli.build_parser().parse_args(
            ["compare", "--root", str(tmp_path), *SMALL_COMPARE, "--eval-episodes", "0"]
        ),
        single_run=False,
    )
    res = comparison.compare(cfg, quiet=True)
    assert (
        "last training window of each run (no greedy evaluation: eval_episodes=0)" in res.markdown
    )
    assert "–" not in res.markdown
    for row in res.table:
        assert row["metrics_from"] == "train" and math.isfinite(row["return_mean"])
    runs = report.read_csv(res.path / "runs.csv")
    assert all(r["metrics_from"] == "train" and r["return"] == r["train_return"] for r in runs)
    assert report.load_comparison(res.path).markdown == res.markdown


def test_a_parallel_comparison_refuses_an_agent_its_workers_cannot_resolve(tmp_path, monkeypatch):
    """An agent registered in ``__main__`` (a notebook cell, as notebooks/02_custom_agent
    shows) passed validation under ``jobs=2``; the comparison directory was made, then every
    worker (a fresh, spawned Python) failed with "unknown agent". It is refused first now,
    with what to do instead, and nothing is created; with ``jobs=1`` it runs."""

    class NotebookAgent(agents.agent_class("random")):
        name = "notebook_random"

    NotebookAgent.__module__ = "__main__"  # where a notebook cell defines it
    monkeypatch.setitem(agents.registry._REGISTRY, NotebookAgent.name, NotebookAgent)
    root = tmp_path / "runs"
    run = RunConfig(
        num_envs=2, total_steps=8, log_every=4, checkpoint_every=8, eval_episodes=2,
        root=str(root), quiet=True, env_overrides=(("horizon", 4), ("num_items", 100)),
    )  # fmt: skip
    cfg = CompareConfig(agents=("notebook_random", "random"), seeds=1, jobs=2, run=run)
    with pytest.raises(ConfigError) as err:
        comparison.compare(cfg, quiet=True)
    text = str(err.value)
    assert text.startswith("agent(s) ['notebook_random'] cannot run with jobs=2")
    assert "unknown agent 'notebook_random'" in text
    assert "'module:attr'" in text and "entry point" in text and "jobs=1" in text
    assert not root.exists()
    res = comparison.compare(replace(cfg, jobs=1), quiet=True)
    assert [r["agent"] for r in res.rows] == ["notebook_random", "random"]


@pytest.mark.parametrize(
    "members",
    [
        ("popularity", "notebook_random"),
        (("notebook_random", {"seed": 5}), "random"),
        ("random", ("ensemble", {"members": ("popularity", "notebook_random")})),  # nested
    ],
)
def test_a_parallel_comparison_refuses_an_ensemble_member_its_workers_cannot_resolve(
    tmp_path, monkeypatch, members
):
    """The workers' check looked at the agents' own names only: an ensemble whose member was
    registered in ``__main__`` passed it, and each worker failed building the member. Members
    (names, ``(name, {config})`` pairs, nested ensembles) are checked as the agents are."""

    class NotebookAgent(agents.agent_class("random")):
        name = "notebook_random"

    NotebookAgent.__module__ = "__main__"
    monkeypatch.setitem(agents.registry._REGISTRY, NotebookAgent.name, NotebookAgent)
    root = tmp_path / "runs"
    run = RunConfig(
        num_envs=2, total_steps=8, log_every=4, checkpoint_every=8, eval_episodes=0,
        root=str(root), quiet=True, env_overrides=(("horizon", 4), ("num_items", 100)),
    )  # fmt: skip
    cfg = CompareConfig(
        agents=("ensemble",), seeds=1, jobs=2, run=run, per_agent={"ensemble": {"members": members}}
    )
    with pytest.raises(ConfigError) as err:
        comparison.compare(cfg, quiet=True)
    assert str(err.value).startswith("agent(s) ['notebook_random'] cannot run with jobs=2")
    assert not root.exists()
    # As an opponent's member too.
    opp = replace(run, opponent="ensemble", opponent_overrides=(("members", members),))
    with pytest.raises(ConfigError, match=r"agent\(s\) \['notebook_random'\] cannot run"):
        comparison.compare(replace(cfg, agents=("random",), per_agent=(), run=opp), quiet=True)
    assert not root.exists()


def test_a_parallel_comparison_refuses_an_env_its_workers_cannot_resolve(tmp_path, monkeypatch):
    """An env id registered with ``recenv.register`` in this process (a notebook cell) is
    unknown to the spawned workers, as such an agent is: refused before anything is made,
    naming the entry-point group; with ``jobs=1`` it runs."""
    monkeypatch.setattr(recenv.registry, "_REGISTRY", dict(recenv.registry._REGISTRY))
    recenv.register("notebook/Market-v0", "recenv.scenarios.market:build")
    root = tmp_path / "runs"
    run = RunConfig(
        num_envs=2, total_steps=8, log_every=4, checkpoint_every=8, eval_episodes=0,
        root=str(root), quiet=True, env_overrides=(("horizon", 4), ("num_items", 100)),
    )  # fmt: skip
    cfg = CompareConfig(envs=("notebook/Market-v0",), agents=("random",), seeds=1, jobs=2, run=run)
    with pytest.raises(ConfigError) as err:
        comparison.compare(cfg, quiet=True)
    text = str(err.value)
    assert text.startswith("env(s) ['notebook/Market-v0'] cannot run with jobs=2")
    assert "unknown environment id 'notebook/Market-v0'" in text and "'recenv.envs'" in text
    assert not root.exists()
    res = comparison.compare(replace(cfg, jobs=1), quiet=True)
    assert [r["env"] for r in res.rows] == ["notebook/Market-v0"]
