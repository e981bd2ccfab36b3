"""The command line's documented rules (``experiments/cli.py``'s docstring): configuration
precedence, lowest first (the preset, a config file, per-field flags, ``--set``; a
``--preset`` given beside a file that names its own is the base), options that do not apply
refused by name, and the notice that an evaluation plays more episodes than asked, from
every command that evaluates."""

from __future__ import annotations

import json

import pytest

from experiments import cli, config, runner
from experiments.config import CompareConfig


def _resolved(tmp_path, *argv: str) -> CompareConfig:
    path = tmp_path / "c.toml"
    path.write_text('preset = "paper"\n[run]\nseed = 7\neval_episodes = 9\n')
    args = cli.build_parser().parse_args(["compare", "--config", str(path), *argv])
    return cli.resolve(args, single_run=False)


def test_configuration_precedence_preset_file_flags_then_set(tmp_path):
    paper, smoke = config.preset("paper"), config.preset("smoke")
    assert paper.run.total_steps != smoke.run.total_steps
    cfg = _resolved(tmp_path)  # the file's preset is the base, its values over it
    assert (cfg.run.total_steps, cfg.run.seed, cfg.run.eval_episodes) == (
        paper.run.total_steps, 7, 9,
    )  # fmt: skip
    cfg = _resolved(tmp_path, "--preset", "smoke")  # --preset over the file's preset
    assert (cfg.run.total_steps, cfg.run.seed) == (smoke.run.total_steps, 7)
    assert _resolved(tmp_path, "--seed", "3").run.seed == 3  # a flag over the file
    for argv in (("--seed", "3", "--set", "run.seed=5"), ("--set", "run.seed=5", "--seed", "3")):
        assert _resolved(tmp_path, *argv).run.seed == 5  # --set last, wherever it is written
    assert _resolved(tmp_path, "--set", "run.eval_episodes=2").run.eval_episodes == 2


@pytest.fixture
def unfinished(tmp_path):
    """A comparison stopped before any run finished: its compare.json alone."""
    cdir = tmp_path / "cmp"
    cdir.mkdir()
    cfg = CompareConfig(agents=("random", "popularity"), seeds=2)
    (cdir / "compare.json").write_text(json.dumps({"config": cfg.to_dict()}))
    return cdir


def test_a_partial_report_never_writes_inside_its_comparison(unfinished, capsys):
    """``report --partial --out`` inside an unfinished comparison (which no finished-parent
    check refuses) is a usage error naming --out, before anything is printed or written."""
    for out in (unfinished / "figures", unfinished / "a" / "b"):
        assert cli.main(["report", str(unfinished), "--partial", "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"--out {str(out)!r} is inside the comparison" in captured.err
    assert sorted(p.name for p in unfinished.iterdir()) == ["compare.json"]


def test_resume_refuses_a_checkpoint_for_a_comparison(unfinished, capsys):
    argv = ["resume", str(unfinished), "--checkpoint", "step_000000000040.pt"]
    assert cli.main(argv) == 2
    assert "--checkpoint applies to a run directory, not a comparison" in capsys.readouterr().err
    assert sorted(p.name for p in unfinished.iterdir()) == ["compare.json"]


@pytest.mark.parametrize("command", ["train", "compare"])
def test_train_and_compare_say_when_evaluation_rounds_episodes_up(command, tmp_path, monkeypatch,
                                                                  capsys):  # fmt: skip
    """5 evaluation episodes on 4 markets play 8 (whole episodes on every market): said on
    stderr as ``evaluate`` says it, unless quiet (here stderr is no terminal, which makes
    the runner quiet by default: that default is lifted)."""
    monkeypatch.setattr(runner, "auto_quiet", lambda quiet: quiet)
    argv = [command, "--agent" if command == "train" else "--agents", "random",
            "--num-envs", "4", "--eval-episodes", "5", "--total-steps", "8",
            "--set", "env.horizon=4", "--root", str(tmp_path / "runs")]  # fmt: skip
    if command == "compare":
        argv += ["--seeds", "1"]
    assert cli.main(argv) == 0
    notice = "5 evaluation episodes rounded up to 8: 2 in each of 4 markets"
    assert notice in capsys.readouterr().err
    assert cli.main([*argv, "--quiet"]) == 0
    assert notice not in capsys.readouterr().err
