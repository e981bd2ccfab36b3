"""A comparison's integrity: ``compare --jobs N`` workers die with their comparison's process,
and ``report`` / ``resume`` / ``evaluate`` refuse damaged run files (``summary.json``,
``curve.csv``, ``config.json``) by name instead of a traceback or a silently partial table."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from experiment_helpers import tiny_run, tree

from experiments import cli, comparison, report, runner
from experiments.config import (
    CompareConfig,
    ConfigError,
    RunConfig,
    _did_you_mean,
    apply_overrides,
    preset,
    read_config_file,
    validate_run,
)
from experiments.runner import RunError

# The checkout these modules come from (a subprocess must import the same code).
CODE = Path(comparison.__file__).resolve().parents[1]
BASELINES = {"agent_overrides": ()}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(CODE), env.get("PYTHONPATH", "")])
    env["CI"] = "true"
    return env


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie no one reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes"
)


# ----------------------------------------------------------------------------------------
# Workers die with their comparison
# ----------------------------------------------------------------------------------------
def test_the_watchdog_fires_once_the_parent_is_gone_and_not_before():
    """watch_parent(pid) calls its on_orphan as soon as os.getppid() is not pid any more (the
    parent died and the process was re-parented), and never while the parent lives."""
    fired, quiet = threading.Event(), threading.Event()
    comparison.watch_parent(os.getppid(), interval=0.01, on_orphan=quiet.set)
    not_mine = max(os.getppid(), os.getpid()) + 10_000_000  # no process has it
    t0 = time.monotonic()
    comparison.watch_parent(not_mine, interval=0.01, on_orphan=fired.set)
    assert fired.wait(5) and time.monotonic() - t0 < 5
    assert not quiet.wait(0.2)


@linux_only
def test_a_pool_worker_exits_when_its_comparison_is_sigkilled(tmp_path):
    """The worker of a ProcessPoolExecutor set up as compare's (spawn, _worker_init with the
    parent's pid) exits within a second of a SIGKILL to its parent, mid-task; it went on for
    ever (parent pid 1), training and starting queued cells."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import concurrent.futures as cf, multiprocessing, os, sys, time
            from experiments import comparison

            if __name__ == "__main__":
                ctx = multiprocessing.get_context("spawn")
                with cf.ProcessPoolExecutor(
                    1, mp_context=ctx, initializer=comparison._worker_init,
                    initargs=(1, None, os.getpid()),
                ) as pool:
                    print(pool.submit(os.getpid).result(), flush=True)
                    pool.submit(time.sleep, 120)  # the worker is busy when the parent dies
                    time.sleep(120)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        worker = int(proc.stdout.readline())
        time.sleep(0.3)
        assert not _gone(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        assert _wait_gone([worker], 10) == [], "the worker outlived its parent"
        assert time.monotonic() - t0 < 3
    finally:
        proc.kill()
        proc.wait()


ARGS = (
    "--agents", "random", "--seeds", "3", "--jobs", "2", "--total-steps", "1200",
    "--num-envs", "2", "--set", "env.horizon=20", "--set", "env.num_items=300",
    "--eval-episodes", "2", "--checkpoint-every", "100", "--quiet",
)  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "run_dir"} for r in report.read_csv(path)]


@pytest.mark.slow
@linux_only
def test_a_sigkilled_parallel_comparison_leaves_no_workers_and_resumes_exactly(tmp_path):
    """`compare --jobs 2` SIGKILLed while its workers train: the workers exit within seconds
    (their runs' locks go with them), and `resume` finishes it with the runs.csv of the same
    comparison never interrupted, one run directory per cell."""
    root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", "compare", *ARGS, "--root", str(root)],
        cwd=CODE, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until a worker has checkpointed a run
            if any(root.glob("*/*/checkpoints/step_*.pt")) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the comparison ended before it could be killed"
        workers = _children(proc.pid)
        assert workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(workers, 10) == [], "workers outlived their comparison"
    finally:
        proc.kill()
        proc.wait()
    (cmp,) = [p for p in root.iterdir() if p.is_dir()]
    assert not (cmp / runner.DONE).exists()
    res = comparison.resume_comparison(cmp, quiet=True)
    assert len([p for p in cmp.iterdir() if (p / "config.json").is_file()]) == 3
    whole = comparison.compare(
        replace_jobs(comparison.read_compare_config(cmp), tmp_path / "whole"), quiet=True
    )
    assert _rows(res.path / "runs.csv") == _rows(whole.path / "runs.csv")


def replace_jobs(cfg: CompareConfig, root: Path) -> CompareConfig:
    """``cfg`` in ``root``, trained in this process (its runs are the same as with workers)."""
    from dataclasses import replace

    return replace(cfg, jobs=1, run=replace(cfg.run, root=str(root)))


# ----------------------------------------------------------------------------------------
# Damaged run files in a comparison
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished comparison of two baselines over two seeds (seconds)."""
    root = tmp_path_factory.mktemp("cmp") / "runs"
    run = tiny_run(root, total_steps=40, checkpoint_every=40, **BASELINES)
    cfg = CompareConfig(agents=("random", "popularity"), seeds=2, run=run)
    return comparison.compare(cfg, quiet=True).path


def _copy(cmp: Path, where: Path) -> Path:
    shutil.copytree(cmp, where)
    return where


def _run_of(cmp: Path, agent: str, seed: int) -> Path:
    (d,) = [d for d in cmp.iterdir() if d.is_dir() and f"__{agent}__{seed}__" in d.name]
    return d


def _write_summary(d: Path, change) -> None:
    s = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps(change(s)))


DAMAGE = {
    "garbled curve": ("curve.csv", lambda d: (d / "curve.csv").write_bytes(b"\x91\xff\x00" * 50)),
    "curve of words": ("curve.csv", lambda d: (d / "curve.csv").write_text("x,y\na,b\n")),
    "curve with a long row": ("curve.csv", lambda d: (d / "curve.csv").write_text("x\n1,2\n")),
    "curve missing": ("curve.csv", lambda d: (d / "curve.csv").unlink()),
    "summary {}": ("summary.json", lambda d: (d / "summary.json").write_text("{}")),
    "summary a list": ("summary.json", lambda d: (d / "summary.json").write_text("[1]")),
    "summary missing": ("summary.json", lambda d: (d / "summary.json").unlink()),
    "summary seed a string": (
        "summary.json",
        lambda d: _write_summary(d, lambda s: {**s, "seed": str(s["seed"])}),
    ),
    "summary eval of words": (
        "summary.json",
        lambda d: _write_summary(d, lambda s: {**s, "eval": {"return": "high"}}),
    ),
    "summary of another cell": (
        "summary.json",
        lambda d: _write_summary(d, lambda s: {**s, "seed": 7}),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_report_of_a_finished_comparison_refuses_a_damaged_run_by_name(
    finished, tmp_path, capsys, damage
):
    """`report` gave a traceback (a damaged curve.csv) or a table of fewer seeds with a phantom
    block of dashes (a summary.json that is `{}`, or missing), naming no file. Now: exit 1, one
    line naming the file, saying that resume cannot mend a finished comparison."""
    cmp = _copy(finished, tmp_path / "cmp")
    run = _run_of(cmp, "random", 0)
    name, damage_it = DAMAGE[damage]
    damage_it(run)
    with pytest.raises(RunError, match="finished comparison") as err:
        report.load_comparison(cmp)
    assert str(run / name) in str(err.value)
    assert cli.main(["report", str(cmp)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ")
    assert str(run / name) in captured.err and "resume` cannot mend it" in captured.err


def test_report_of_a_finished_comparison_without_one_of_its_runs_names_the_cell(
    finished, tmp_path, capsys
):
    cmp = _copy(finished, tmp_path / "cmp")
    shutil.rmtree(_run_of(cmp, "popularity", 1))
    assert cli.main(["report", str(cmp)]) == 1
    err = capsys.readouterr().err
    assert "no run directory of popularity on recenv/Market-v0 seed 1" in err


def _unfinished(cmp: Path, where: Path) -> Path:
    """``cmp`` as a comparison killed while training its last run (random, seed 1)."""
    part = _copy(cmp, where)
    for name in (runner.DONE, "runs.csv", "table.csv", "table.md"):
        (part / name).unlink()
    for png in part.glob("*.png"):
        png.unlink()
    last = _run_of(part, "popularity", 1)
    for name in (runner.DONE, "summary.json", "curve.csv", "agent.pt"):
        (last / name).unlink()
    return part


@pytest.mark.parametrize("damage", ["summary {}", "summary missing", "curve of words"])
def test_resume_refuses_a_damaged_finished_run_before_training_anything(finished, tmp_path, damage):
    """`{}` as a finished run's summary.json: resume trained every remaining cell, then
    failed with KeyError: 'env' writing the report, and so did every later resume. Now it is
    refused first, naming the file, with nothing written; `report --partial` names it too."""
    part = _unfinished(finished, tmp_path / "part")
    run = _run_of(part, "random", 0)
    name, damage_it = DAMAGE[damage]
    damage_it(run)
    before = tree(part)
    with pytest.raises(RunError, match="of the finished run") as err:
        comparison.resume_comparison(part, quiet=True)
    assert str(run / name) in str(err.value)
    assert tree(part) == before
    with pytest.raises(RunError, match="cannot use that run") as err:
        report.load_comparison(part, partial=True)
    assert str(run / name) in str(err.value)


def test_an_undamaged_partial_report_and_resume_still_work(finished, tmp_path):
    part = _unfinished(finished, tmp_path / "part")
    comp = report.load_comparison(part, partial=True)
    assert len(comp.rows) == 3 and not comp.finished
    res = comparison.resume_comparison(part, quiet=True)
    assert res.markdown == (finished / "table.md").read_text()
    assert report.load_comparison(part).markdown == res.markdown


def test_summary_problems_name_what_is_wrong():
    good = {
        "env": "e", "agent": "a", "opponent": "", "lineup": "a", "seed": 0, "env_steps": 4,
        "train_episodes": 1, "train": {"return": 1.0}, "eval": {}, "diverged": None,
    }  # fmt: skip
    assert report.summary_problems(good) == []
    assert report.summary_problems([]) == ["it is [], not a JSON object"]
    (missing,) = report.summary_problems({k: v for k, v in good.items() if k != "env"})
    assert "['env']" in missing
    problems = report.summary_problems({**good, "seed": True, "train": {"return": "x"}})
    assert any("seed=True" in p for p in problems) and any("'x'" in p for p in problems)


# ----------------------------------------------------------------------------------------
# A run's recorded config.json
# ----------------------------------------------------------------------------------------
def test_a_recorded_run_config_must_carry_every_field_of_its_type(tmp_path):
    full = tiny_run(tmp_path).to_dict()
    assert RunConfig.from_dict(json.loads(json.dumps(full))) == tiny_run(tmp_path)
    with pytest.raises(ConfigError, match="lacks the field") as err:
        RunConfig.from_dict({})
    assert "'eval_episodes'" in str(err.value) and "'env'" in str(err.value)
    with pytest.raises(ConfigError, match=r"lacks the field\(s\) \['total_steps'\]"):
        RunConfig.from_dict({k: v for k, v in full.items() if k != "total_steps"})
    for key, value in [
        ("agent", 5),
        ("env", ["recenv/Market-v0"]),
        ("seed", "0"),
        ("seed", True),
        ("num_envs", 2.5),
        ("compile", "yes"),
        ("env_overrides", [1, 2]),
        ("agent_overrides", "lr=1"),
    ]:
        with pytest.raises(ConfigError, match=f"{key}=") as err:
            RunConfig.from_dict({**full, key: value})
        assert "is not" in str(err.value), (key, value)
    with pytest.raises(ConfigError, match="must be an object"):
        RunConfig.from_dict([("agent", "random")])


def test_partial_configs_from_presets_and_files_still_apply(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"run": {"seed": 3}, "env": {"horizon": 12}}))
    base, assignments = read_config_file(file)
    cfg = apply_overrides(preset(base or "smoke"), assignments, single_run=True)
    assert cfg.run.seed == 3 and dict(cfg.run.env_overrides)["horizon"] == 12


def test_ill_typed_values_are_config_errors_not_type_errors(tmp_path):
    """{"run": {"agent": 5}} ended in TypeError: 'int' object is not iterable (difflib)."""
    assert _did_you_mean(5, ["random"]) == ""
    for bad in (RunConfig(agent=5), RunConfig(env=5), RunConfig(opponent=5)):
        with pytest.raises(ConfigError, match="=5 is not"):
            validate_run(bad)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return runner.train(
        tiny_run(root, agent="random", total_steps=40, eval_episodes=2, **BASELINES)
    ).path


@pytest.mark.parametrize(
    ("run", "expect"),
    [
        ({"agent": 5}, "lacks the field"),
        ({}, "lacks the field(s) ['env', 'agent'"),
        ("full, agent 5", "agent=5 is not a str"),
    ],
)
def test_evaluate_and_resume_refuse_a_recorded_config_they_cannot_trust(
    done_run, tmp_path, run, expect
):
    """`{"run": {}}` as a finished run's config.json: `evaluate` ran 16 episodes on horizon 200
    (the defaults) instead of the run's 2 on 10, and said nothing. Now evaluate and resume
    refuse it, naming the file and what it lacks."""
    d = tmp_path / "run"
    shutil.copytree(done_run, d)
    if run == "full, agent 5":
        data = json.loads((d / "config.json").read_text())
        data["run"]["agent"] = 5
    else:
        data = {"run": run}
    (d / "config.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match=re.escape(expect)) as err:
        runner.evaluate_checkpoint(d, root=tmp_path / "evals", quiet=True)
    assert str(d / "config.json") in str(err.value)
    assert not (tmp_path / "evals").exists()
    (d / runner.DONE).unlink()
    before = tree(d)
    with pytest.raises(RunError, match=re.escape(expect)):
        runner.resume(d, quiet=True)
    assert tree(d) == before


def test_a_missing_comparison_is_said_to_be_missing_and_names_never_hide(tmp_path):
    """``report /nonexistent`` said "is not a comparison directory"; ``--name ../x`` made a
    directory ``.._x`` that ``ls`` does not show."""
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' does not exist"):
        report.read_compare_json(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a comparison directory"):
        report.read_compare_json(tmp_path / "empty")
    with pytest.raises(RunError, match=r"'.*nowhere' does not exist"):
        comparison.resume_comparison(tmp_path / "nowhere", quiet=True)
    assert runner.sanitize("../escaped") == "escaped" and runner.sanitize("...") == "x"
    assert runner.sanitize("a..b c") == "a..b_c"
