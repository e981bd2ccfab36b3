"""Runner audit: nothing is ever written into a finished run or comparison through ``--root``
or ``report --out`` (symlinks and relative paths included); evaluating a checkpoint on an env
it does not fit is a clear error; a comparison whose run directories cannot be read as one run
per cell is refused by name before anything trains; a resumed run removes the temporary files
a killed process left. Each test fails on the code before the audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from experiment_helpers import tiny_run, tree

from experiments import cli, comparison, runner
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
