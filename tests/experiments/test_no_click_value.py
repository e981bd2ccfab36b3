"""experiments.no_click_value: a tiny real run, its files, and bad input refused."""

from __future__ import annotations

import json
import math

import pytest

from experiments import no_click_value


def test_a_tiny_run_writes_its_rows_and_report(tmp_path, capsys):
    out = tmp_path / "ncv"
    argv = ["--out", str(out), "--learners", "iql,vdn_slateq_teammates", "--num-agents", "2",
            "--seeds", "1", "--steps", "320", "--num-envs", "4", "--horizon", "10"]  # fmt: skip
    assert no_click_value.main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    assert [(r["learner"], r["num_agents"], r["seed"]) for r in rows] == [
        ("iql", 2, 0),
        ("vdn_slateq_teammates", 2, 0),
    ]
    for r in rows:
        assert math.isclose(r["null_over_shown"], r["q_null"] / r["q_shown"], rel_tol=1e-9)
        assert 0.0 <= r["page_ctr"] <= 1.0 and r["return"] > 0.0
    assert result["settings"]["steps"] == 320
    text = (out / "report.md").read_text()
    assert "| 2 | vdn_slateq_teammates |" in text and "Q̄(⊥) / Q̄(shown)" in text
    with pytest.raises(SystemExit):  # never overwrites a finished run
        no_click_value.main(argv)
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--learners",
            "iql,mappo",
            "of ['iql', 'vdn_slateq', 'qmix_slateq', 'vdn_slateq_teammates']",
        ),
        ("--num-agents", "1", "integers >= 2"),
        ("--num-agents", "two", "integers >= 2"),
        ("--seeds", "0", "--seeds 0 must be >= 1"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, option, value, message):
    out = tmp_path / "never"
    with pytest.raises(SystemExit):
        no_click_value.main(["--out", str(out), option, value])
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_its_learners_are_compare_marls(tmp_path):
    """Trained as ``compare_marl`` trains them (its schedules, seeds and held-out markets):
    the return of the episode it reads equals ``compare_marl``'s row for that agent."""
    from experiments import compare_marl

    argv = ["--steps", "320", "--num-envs", "4", "--eval-envs", "4", "--horizon", "10",
            "--agents", "vdn", "--modes", "cooperative", "--head-to-head", "",
            "--set", "vdn.utility='slateq'", "--out", str(tmp_path / "marl")]  # fmt: skip
    args = compare_marl._args(argv)
    want = compare_marl.run_one(
        "vdn", "cooperative", 0, args, {**compare_marl.agent_configs(args)["vdn"]}
    )
    ncv = no_click_value.main(
        ["--out", str(tmp_path / "ncv"), "--learners", "vdn_slateq", "--num-agents", "2",
         "--seeds", "1", "--steps", "320", "--num-envs", "4", "--horizon", "10"]
    )  # fmt: skip
    assert ncv == 0
    (row,) = json.loads((tmp_path / "ncv" / "results.json").read_text())["rows"]
    assert row["return"] == pytest.approx(want["return"], rel=1e-6)
