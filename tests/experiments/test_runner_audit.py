"""Runner audit: nothing is ever written into a finished run or comparison through ``--root``
or ``report --out`` (symlinks and relative paths included); evaluating a checkpoint on an env
it does not fit is a clear error; a comparison whose run directories cannot be read as one run
per cell is refused by name before anything trains; a resumed run removes the temporary files
a killed process left. Each test fails on the code before the audit."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from experiment_helpers import tiny_run, tree

from experiments import cli, comparison, report, runner
from experiments.config import CompareConfig, ConfigError
from experiments.runner import RunError

BASELINE = dict(agent="random", agent_overrides=(), total_steps=40, checkpoint_every=20)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run and a finished comparison (of random, two seeds), a few seconds."""
    root = tmp_path_factory.mktemp("done") / "runs"
    run = runner.train(tiny_run(root, **BASELINE)).path
    cfg = CompareConfig(agents=("random",), seeds=2, run=tiny_run(root, **BASELINE))
    cmp = comparison.compare(cfg, quiet=True).path
    return run, cmp


def test_nothing_is_created_inside_a_finished_run_or_comparison(
    finished, tmp_path, monkeypatch, capsys
):
    """``train --root``, ``compare`` (run.root), ``evaluate --root`` and ``report --out``
    into a finished run or comparison (directly, below it, through a symlink, or relative to
    the working directory) are config errors that leave it untouched: a new directory there
    would change the finished directory (and a finished comparison's report would count it)."""
    run, cmp = finished
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    before = {run: tree(run), cmp: tree(cmp)}
    for root in (run, cmp, run / "checkpoints", cmp / "new" / "deeper", link / "x"):
        with pytest.raises(ConfigError, match="finished"):
            runner.train(tiny_run(root, **BASELINE))
        with pytest.raises(ConfigError, match="finished"):
            runner.evaluate_checkpoint(run, episodes=2, root=root, quiet=True)
        cfg = CompareConfig(agents=("random",), seeds=1, run=tiny_run(root, **BASELINE))
        with pytest.raises(ConfigError, match="finished"):
            comparison.compare(cfg, quiet=True)
    # The command line: exit 2 (a usage error), for a relative path too.
    monkeypatch.chdir(run.parent)
    assert cli.main(["evaluate", run.name, "--root", run.name, "--episodes", "2"]) == 2
    assert cli.main(["report", str(cmp), "--out", str(run / "figures")]) == 2
    assert cli.main(["report", str(cmp), "--out", f"{run.name}/figures"]) == 2
    assert "finished" in capsys.readouterr().err
    assert {run: tree(run), cmp: tree(cmp)} == before


def test_a_plain_file_named_done_does_not_make_a_directory_finished(tmp_path):
    """Only a run, comparison or evaluation directory with DONE is finished: a stray file
    named DONE in some parent directory does not refuse everything below it."""
    (tmp_path / "DONE").write_text("")
    res = runner.train(tiny_run(tmp_path / "runs", **BASELINE))
    assert (res.path / "DONE").is_file()


def test_evaluating_on_an_env_the_checkpoint_does_not_fit_is_a_clear_error(
    finished, tmp_path, capsys
):
    run, _ = finished
    before = tree(run)
    root = tmp_path / "evals"
    with pytest.raises(RunError, match=r"agent\.pt.*cannot be evaluated on recenv/Video-v0"):
        runner.evaluate_checkpoint(run, env_id="recenv/Video-v0", episodes=2, root=root)
    args = ["evaluate", str(run / "agent.pt"), "--env", "recenv/Video-v0", "--root", str(root)]
    assert cli.main([*args, "--episodes", "2"]) == 1
    assert "cannot be evaluated on recenv/Video-v0" in capsys.readouterr().err
    assert not root.exists() and tree(run) == before


def _unfinished_copy(cmp: Path, dest: Path) -> Path:
    """``cmp`` as a comparison killed after its runs finished (no report, no DONE)."""
    shutil.copytree(cmp, dest)
    for f in dest.iterdir():
        if f.is_file() and f.name != "compare.json":
            f.unlink()
    return dest


@pytest.mark.parametrize("damage", ["config", "duplicate", "summary"])
def test_a_comparison_with_unreadable_or_duplicate_runs_is_refused_by_name(
    finished, tmp_path, damage
):
    """Resume used to skip a run whose config.json it could not read and train the cell
    again (the finished comparison then held two runs of one cell: `report` counted three
    seeds where runs.csv had two), to pick one of two runs of a cell at random, and to fail
    with a JSON traceback on a damaged summary.json only after training the cells before it.
    Now each is a RunError naming the file, before anything is written."""
    _, cmp = finished
    part = _unfinished_copy(cmp, tmp_path / cmp.name)
    first, second = sorted(d for d in part.iterdir() if d.is_dir())
    for name in ("DONE", "summary.json", "curve.csv", "agent.pt"):  # killed after a checkpoint
        (first / name).unlink()
    if damage == "config":
        bad = second / "config.json"
        bad.write_text("{not json")
        match = "config.json"
    elif damage == "duplicate":
        shutil.copytree(second, part / (second.name + "-copy"))
        bad = part / (second.name + "-copy")
        match = "two run directories"
    else:
        bad = second / "summary.json"
        bad.write_text('{"env": ')
        match = "summary.json"
    before = tree(part)
    with pytest.raises(RunError, match=match) as err:
        comparison.resume_comparison(part, quiet=True)
    assert str(bad) in str(err.value)
    assert tree(part) == before


def test_resume_removes_the_temporary_files_a_killed_process_left(tmp_path):
    """A process killed while writing a checkpoint (or any file) leaves its ``.NAME.tmp-PID``
    behind; the resumed run used to keep it forever (a checkpoint's size: replay buffers)."""
    res = runner.train(tiny_run(tmp_path / "runs", **BASELINE))
    d = res.path
    for name in ("DONE", "summary.json", "curve.csv", "agent.pt"):  # killed after a checkpoint
        (d / name).unlink()
    stale = [
        d / "checkpoints" / ".step_000000000040.pt.tmp-999999999",
        d / ".summary.json.tmp-999999999",
    ]
    for f in stale:
        f.write_bytes(b"partial")
    keep = d / "notes.tmp-1"  # not one of the runner's temporary names
    keep.write_text("mine")
    again = runner.resume(d, quiet=True)
    assert again.summary["eval"] == res.summary["eval"]
    assert [f for f in stale if f.exists()] == []
    assert keep.read_text() == "mine"
    assert json.loads((d / "summary.json").read_text())["env_steps"] == 40


def test_an_opponent_on_a_one_agent_env_is_a_config_error(tmp_path, capsys):
    """Exit 2 like every other value the env or the agents refuse (it was a RunError: exit
    1), for train and compare, with no directory created."""
    common = ["--agent", "random", "--opponent", "random", "--total-steps", "20"]
    common += ["--num-envs", "2", "--root", str(tmp_path / "runs")]
    common += ["--set", "env.num_agents=1", "env.horizon=10"]
    for command in ("train", "compare"):
        assert cli.main([command, *common]) == 2, command
        assert "needs an env with >= 2 agents" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_train_refuses_a_root_that_is_an_unfinished_comparison(finished, tmp_path, capsys):
    """``train --root CMP`` into a comparison that is not finished made a run its next
    ``resume`` adopted (and its report counted) whatever the run's other settings; the
    command line now refuses it (exit 2) before anything is written."""
    _, cmp = finished
    part = _unfinished_copy(cmp, tmp_path / cmp.name)
    before = tree(part)
    argv = ["train", "--agent", "random", "--root", str(part), "--set", "total_steps=40"]
    assert cli.main(argv) == 2
    assert "is a comparison directory" in capsys.readouterr().err
    assert tree(part) == before


def test_an_os_error_is_an_error_line_not_a_traceback(tmp_path, capsys):
    """A root below a plain file (NotADirectoryError) exits 1 with an ``error:`` line naming
    the path; it was a traceback (only FileNotFoundError and FileExistsError were caught)."""
    (tmp_path / "a_file").write_text("")
    root = tmp_path / "a_file" / "runs"
    argv = ["train", "--agent", "random", "--root", str(root), "--set", "total_steps=40"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "a_file" in err


# ----------------------------------------------------------------------------------------
# A second audit (each test failed before its fix)
# ----------------------------------------------------------------------------------------
def _deterministic(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timing", "run")}


def test_evaluate_refuses_a_root_that_is_a_comparison_or_a_run(finished, tmp_path):
    """``evaluate RUN --root CMP`` into an unfinished comparison was accepted: its next
    resume and report read the evaluation's summary.json as a run (a phantom unnamed row).
    ``--root RUN`` (or below it) wrote into the evaluated, unfinished run. Both are now the
    config errors `train --root` gives, and nothing is written."""
    run, cmp = finished
    part = _unfinished_copy(cmp, tmp_path / cmp.name)
    inner = sorted(d for d in part.iterdir() if d.is_dir())[0]
    unfinished = tmp_path / "unfinished_run"
    shutil.copytree(run, unfinished)
    for name in ("DONE", "summary.json", "curve.csv"):
        (unfinished / name).unlink()
    before = {part: tree(part), unfinished: tree(unfinished)}
    with pytest.raises(ConfigError, match="is a comparison directory"):
        runner.evaluate_checkpoint(inner, episodes=2, root=part, quiet=True)
    with pytest.raises(ConfigError, match="is a run directory"):
        runner.evaluate_checkpoint(unfinished, episodes=2, root=unfinished, quiet=True)
    for root, path in (
        (unfinished / "checkpoints", unfinished),
        (unfinished / "checkpoints", unfinished / "agent.pt"),
        (unfinished / "new", unfinished / "checkpoints" / "step_000000000040.pt"),
    ):
        with pytest.raises(ConfigError, match="is inside the evaluated run"):
            runner.evaluate_checkpoint(path, episodes=2, root=root, quiet=True)
    assert cli.main(["evaluate", str(unfinished), "--root", str(unfinished)]) == 2
    assert cli.main(["train", "--agent", "random", "--root", str(unfinished)]) == 2
    assert {part: tree(part), unfinished: tree(unfinished)} == before


def test_report_reads_only_the_comparisons_own_runs(finished, tmp_path):
    """An evaluation directory (no config.json) or a run of another cell inside a comparison
    (as an older `evaluate --root CMP` left one) is not one of its runs: resume and report
    ignore them; report counted every */summary.json, and showed an unnamed row."""
    run, cmp = finished
    part = _unfinished_copy(cmp, tmp_path / cmp.name)
    evals = runner.evaluate_checkpoint(run, episodes=2, root=tmp_path / "evals", quiet=True)[0]
    shutil.move(evals, part / evals.name)
    other = runner.train(tiny_run(tmp_path / "other", seed=5, **BASELINE)).path
    shutil.move(other, part / other.name)
    with pytest.raises(RunError, match="2 of 2 runs finished"):
        report.load_comparison(part)
    res = comparison.resume_comparison(part, quiet=True)
    comp = report.load_comparison(part)
    assert [r["seed"] for r in comp.rows] == [0, 1] and [r["n"] for r in comp.table] == [2]
    assert comp.markdown == res.markdown == (cmp / "table.md").read_text()
    assert "|  |" not in comp.markdown


@pytest.mark.parametrize("when", ["last chunk", "evaluation"])
def test_ctrl_c_in_the_last_chunk_or_the_evaluation_stops_and_resumes_exactly(
    when, tmp_path, monkeypatch, capsys
):
    """A Ctrl-C during the final evaluation was a KeyboardInterrupt traceback (agent.pt
    left, no summary); one during the last training chunk was ignored (the run evaluated and
    exited 0). Both now stop as an interrupt during training does: exit 130 with the resume
    command, the final checkpoint kept; resuming evaluates and finishes with the numbers of
    an uninterrupted run."""
    cfg = tiny_run(tmp_path / "runs", **BASELINE)  # 40 steps in chunks of 20
    real_train, real_eval, chunks = runner.agents.train, runner.agents.evaluate, []

    def train(*args, **kwargs):
        out = real_train(*args, **kwargs)
        chunks.append(1)
        if when == "last chunk" and len(chunks) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    def evaluate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the first step sees the stop request
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(runner.agents, "train", train)
    if when == "evaluation":
        monkeypatch.setattr(runner.agents, "evaluate", evaluate)
    argv = ["train", "--agent", "random", "--root", cfg.root, "--total-steps", "40"]
    argv += ["--num-envs", "4", "--log-every", "20", "--checkpoint-every", "20"]
    argv += ["--eval-episodes", "4", "--quiet"]
    argv += ["--set", *(f"env.{k}={v}" for k, v in cfg.env_overrides)]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    (d,) = Path(cfg.root).iterdir()
    assert "interrupted at env step 40; checkpoint written. Continue with:\n  " in err
    assert f"python -m experiments resume {d}" in err and "Traceback" not in err
    assert (d / "checkpoints" / "step_000000000040.pt").is_file()
    assert not (d / "DONE").exists() and not (d / "summary.json").exists()
    monkeypatch.setattr(runner.agents, "train", real_train)
    monkeypatch.setattr(runner.agents, "evaluate", real_eval)
    resumed = runner.resume(d, quiet=True)
    same = dataclasses.replace(runner.read_run_config(d), root=str(tmp_path / "fresh"))
    fresh = runner.train(same, quiet=True)
    assert _deterministic(resumed.summary) == _deterministic(fresh.summary)
    assert resumed.summary["env_steps"] == 40 and resumed.summary["eval"]["episodes"] == 4


def test_evaluate_records_what_it_ran(finished, tmp_path, capsys, monkeypatch):
    """Its summary.json held only evaluated/checkpoint/env/seed/eval; now also the config,
    the versions and commit, and the command, as a run's config.json. And 5 episodes on 4
    markets ran 8 without a word: both counts are recorded and a notice says so."""
    run, _ = finished
    root = tmp_path / "evals"
    argv = ["evaluate", str(run), "--episodes", "5", "--root", str(root)]
    monkeypatch.setattr(sys, "argv", ["experiments", *argv])
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "5 evaluation episodes rounded up to 8: 2 in each of 4 markets" in err
    (d,) = root.iterdir()
    s = json.loads((d / "summary.json").read_text())
    assert s["episodes"] == {"requested": 5, "run": 8, "markets": 4, "per_market": 2}
    assert s["eval"]["episodes"] == 8
    saved = json.loads((run / "config.json").read_text())
    assert s["run"] == saved["run"] and s["agents"] == saved["agents"]
    assert s["env_config"] == saved["env_config"]
    assert {"python", "torch", "recenv", "git", "git_dirty"} <= set(s["versions"])
    assert s["command"] == ["experiments", *argv]


def test_a_checkpoint_of_another_config_names_the_keys_that_differ(finished, tmp_path):
    """``resume RUN --checkpoint OTHER_RUN/checkpoints/...`` said only "another config"."""
    run, _ = finished
    mine = runner.train(
        tiny_run(
            tmp_path / "runs",
            **{**BASELINE, "seed": 3, "agent_overrides": (("seed", 9),)},
        )
    ).path
    for name in ("DONE", "summary.json"):
        (mine / name).unlink()
    before = tree(mine)
    with pytest.raises(RunError) as err:
        runner.resume(mine, checkpoint=run / "checkpoints" / "step_000000000020.pt")
    text = str(err.value)
    assert "(the checkpoint's vs this run's: agent.seed: (unset) vs 9; " in text
    assert "; seed: 0 vs 3)" in text and f"root: {str(run.parent)!r} vs " in text
    assert tree(mine) == before
    differ = runner.config_differences({f"k{i}": i for i in range(13)}, {})
    assert differ.startswith("k0: 0 vs (unset); k1: 1 vs (unset)")
    assert differ.endswith("; and 3 more") and differ.count(" vs ") == 10
