"""experiments.budget_curve: comparisons at several budgets, side by side, from real (tiny)
compare_marl runs."""

from __future__ import annotations

import json
import math

import pytest

from experiments import budget_curve, compare_marl

TINY = ["--seeds", "2", "--agents", "random,linucb", "--modes", "cooperative",
        "--head-to-head", "", "--num-envs", "4", "--eval-envs", "2", "--horizon", "8"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished comparisons, 32 and 96 env steps, otherwise the same."""
    root = tmp_path_factory.mktemp("budget")
    out = {}
    for steps in (96, 32):
        out[steps] = root / f"marl_{steps}"
        assert compare_marl.main(["--out", str(out[steps]), "--steps", str(steps), *TINY]) == 0
    return out


def _table(run) -> dict:
    data = json.loads((run / "results.json").read_text())
    return {r["agent"]: r for r in data["table"]}


def test_cells_are_the_comparisons_own_means_in_budget_order(runs, tmp_path, capsys):
    out = tmp_path / "curve"
    # Given out of order: the table and curve run from the smallest budget up.
    assert budget_curve.main([str(runs[96]), str(runs[32]), "--out", str(out)]) == 0
    result = json.loads((out / "budget.json").read_text())
    assert result["budgets"] == [32, 96]
    assert [s["steps"] for s in result["sources"]] == [32, 96]
    env = "Market-v0 cooperative"
    small, large = _table(runs[32]), _table(runs[96])
    for agent in ("random", "linucb"):
        cells = result["envs"][env][agent]
        assert cells[0]["mean"] == pytest.approx(small[agent]["return_mean"], rel=1e-12)
        assert cells[1]["mean"] == pytest.approx(large[agent]["return_mean"], rel=1e-12)
        assert cells[1]["n"] == 2
    # A non-learner is evaluated the same whatever the budget; LinUCB trained longer.
    assert result["envs"][env]["random"][0]["mean"] == result["envs"][env]["random"][1]["mean"]
    md = (out / "budget.md").read_text()
    assert "| agent | 32 steps | 96 steps |" in md
    assert "--steps 32" in md and "--steps 96" in md
    assert (out / "budget.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_an_existing_out_is_refused_and_left_as_it_was(runs, tmp_path, capsys):
    out = tmp_path / "curve"
    out.mkdir()
    (out / "budget.md").write_text("a finished table")
    with pytest.raises(SystemExit) as e:
        budget_curve.main([str(runs[32]), str(runs[96]), "--out", str(out)])
    assert e.value.code == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (out / "budget.md").read_text() == "a finished table"


def _copy_with(run, tmp_path, name, **settings):
    data = json.loads((run / "results.json").read_text())
    data["settings"].update(settings)
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(data))
    return d


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"horizon": 9}, "horizon: 8 vs 9"),
        ({"seeds": 3}, "seeds: 2 vs 3"),
        ({"set": ["linucb.alpha=2.0"]}, "set: [] vs ['linucb.alpha=2.0']"),
        ({"variant": ["lin2=linucb"]}, "variant: [] vs ['lin2=linucb']"),
        ({"steps": 32}, "share a budget"),
    ],
)
def test_comparisons_that_differ_in_more_than_the_budget_are_refused(
    runs, tmp_path, capsys, change, message
):
    other = _copy_with(runs[96], tmp_path, "other", **change)
    with pytest.raises(SystemExit) as e:
        budget_curve.main([str(runs[32]), str(other), "--out", str(tmp_path / "curve")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "curve").exists()


def test_unfinished_foreign_and_single_inputs_are_named(runs, tmp_path, capsys):
    running = tmp_path / "running"
    running.mkdir()
    (running / "IN_PROGRESS").write_text("pid 1")
    spread = _copy_with(runs[32], tmp_path, "spread", spread=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    for inputs, message in [
        ([running], "still running"),
        ([spread], "not a compare_marl comparison"),
        ([broken], "not readable JSON"),
        ([], "at least two comparisons"),
    ]:
        with pytest.raises(SystemExit):
            budget_curve.main([str(runs[32]), *map(str, inputs), "--out", str(tmp_path / "c")])
        assert message in capsys.readouterr().err


def test_an_agent_missing_at_one_budget_shows_a_dash(runs):
    comparisons = [budget_curve.read_comparison(runs[s]) for s in (32, 96)]
    comparisons[1]["table"] = [r for r in comparisons[1]["table"] if r["agent"] != "linucb"]
    result = budget_curve.budget_table(comparisons)
    cells = result["envs"]["Market-v0 cooperative"]["linucb"]
    assert cells[0] is not None and cells[1] is None
    row = next(x for x in budget_curve.markdown(result).splitlines() if x.startswith("| linucb"))
    assert row.endswith("| – |")
    assert math.isfinite(cells[0]["mean"])


def test_a_report_from_before_set_existed_counts_as_no_overrides(runs):
    """compare_marl's first reports (2026-11-30) have no ``set`` setting: no overrides then,
    so they go beside a run without ``--set``, not refused as differing."""
    comparisons = [budget_curve.read_comparison(runs[s]) for s in (32, 96)]
    del comparisons[0]["settings"]["set"]
    del comparisons[0]["settings"]["variant"]  # (2026-12-06): none then either
    assert budget_curve.budget_table(comparisons)["budgets"] == [32, 96]
    comparisons[1]["settings"]["set"] = ["linucb.alpha=2.0"]
    with pytest.raises(budget_curve.BudgetError, match=r"set: \[\] vs \['linucb"):
        budget_curve.budget_table(comparisons)
