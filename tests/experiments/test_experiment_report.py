"""Comparison statistics and tables: t quantiles, mean ± 95 % CI, markdown, CSV, plots."""

from __future__ import annotations

import math

import pytest

from experiments import plots, report

# Two-sided 95 % critical values of Student's t (standard tables).
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 29: 2.0452}


@pytest.mark.parametrize(("df", "t"), sorted(T975.items()))
def test_t_quantile_matches_tables(df, t):
    assert report.t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    assert report.t_cdf(report.t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-10)
    assert report.t_quantile(0.025, df) == pytest.approx(-t, abs=1e-4)


def test_t_quantile_tends_to_normal():
    assert report.t_quantile(0.975, 10_000) == pytest.approx(1.96020, abs=1e-4)
    assert report.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-4)


def test_mean_ci():
    mean, ci, n = report.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert ci == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
    m1, ci1, n1 = report.mean_ci([5.0])
    assert (m1, n1) == (5.0, 1) and math.isnan(ci1)
    m, ci, n = report.mean_ci([1.0, float("nan"), 3.0])
    assert n == 2 and m == 2.0


def test_fmt():
    assert report.fmt(12.345, 0.456) == "12.35 ± 0.46"
    assert report.fmt(0.5, float("nan")) == "0.5"
    assert report.fmt(float("nan"), 1.0) == "–"
    # Large means without a CI: whole numbers, not "1e+03" / "1.46e+03".
    assert report.fmt(1000.0, 0.0) == "1000" and report.fmt(1463.2, float("nan")) == "1463"
    assert report.fmt(-2500.4, float("nan")) == "-2500" and report.fmt(999.6, 0.0) == "1000"
    assert report.fmt(999.4, 0.0) == "999" and report.fmt(12345.6, float("nan")) == "12346"


def rows():
    out = []
    for agent, base in (("iql", 10.0), ("random", 2.0)):
        for seed in range(3):
            out.append(
                {
                    "env": "recenv/Market-v0",
                    "agent": agent,
                    "opponent": "",
                    "seed": seed,
                    "return": base + seed,
                    "ctr": 0.1 * (seed + 1),
                    "exposure_gini": 0.5 + 0.1 * seed + (0.2 if agent == "iql" else 0.0),
                }
            )
    return out


def test_aggregate_and_markdown():
    table = report.aggregate(rows(), metrics=["return", "ctr", "exposure_gini"])
    assert [(r["agent"], r["n"]) for r in table] == [("iql", 3), ("random", 3)]
    assert table[0]["return_mean"] == 11.0
    assert table[0]["return_ci95"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    md = report.markdown_table(table)
    assert "| agent | return | CTR | exposure Gini |" in md
    assert "mean ± 95 % CI over 3 seeds" in md
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "**11.0 ± 2.5**" in lines["iql"]  # best return in bold
    assert "**0.60 ± 0.25**" in lines["random"]  # lower Gini is better


def test_a_metric_some_runs_lack_says_over_how_many_runs():
    """A run's coverage is NaN where its hashed item counters filled up; the mean over the
    other runs was shown as if over all of them. The cell now says how many it is over."""
    rs = rows()
    rs[0]["coverage"], rs[1]["coverage"], rs[2]["coverage"] = math.nan, 0.4, 0.5
    for r in rs[3:]:
        r["coverage"] = 0.3
    table = report.aggregate(rs, metrics=["return", "coverage"])
    assert table[0]["coverage_n"] == 2 and "coverage_n" not in table[1]
    assert table[0]["coverage_mean"] == pytest.approx(0.45)
    md = report.markdown_table(table)
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "(2 of 3 runs)" in lines["iql"] and "of 3 runs" not in lines["random"]


def test_csv_round_trip(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text(report.to_csv(rows()))
    back = report.read_csv(path)
    assert back[0]["return"] == 10.0 and back[0]["agent"] == "iql"


def test_plots_write_png(tmp_path):
    curves = {
        ("recenv/Market-v0", a): [
            [{"step": s, "return": b + s / 100 + seed, "market_share": 0.5} for s in (100, 200)]
            for seed in range(3)
        ]
        for a, b in (("iql", 1.0), ("random", 0.0))
    }
    table = report.aggregate(rows())
    for fig, name in (
        (plots.learning_curves(curves, tmp_path / "a.png"), "a.png"),
        (plots.market_share(curves, tmp_path / "b.png"), "b.png"),
        (plots.final_metrics(table, path=tmp_path / "c.png"), "c.png"),
    ):
        assert fig.axes
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "Unfinished" not in fig.get_suptitle()
    note = "Unfinished comparison (3 of 8 runs finished): partial results"
    out = tmp_path / "partial"
    out.mkdir()
    written = plots.comparison_figures(curves, table, out, note=note)
    assert sorted(written) == sorted(plots.FIGURES)
    for path in written.values():
        assert path.parent == out and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for fig in (
        plots.learning_curves(curves, note=note),
        plots.market_share(curves, note=note),
        plots.final_metrics(table, note=note),
    ):
        assert fig.get_suptitle().endswith("\n" + note)


def test_float_noise_is_neither_a_best_value_nor_a_confidence_interval():
    """Market shares that sum to 1 in float32 come back as 1 ± 1e-8: equal means, no bold,
    and no 1.000000 ± 0.000000."""
    noisy = [
        ("random", 0, 1.0),
        ("random", 1, 1.0000000149),
        ("popularity", 0, 1.0),
        ("popularity", 1, 1.0000000075),
    ]
    rows_ = [
        {"env": "e", "agent": a, "opponent": "", "seed": s, "market_share": v} for a, s, v in noisy
    ]
    table = report.aggregate(rows_, metrics=["market_share"])
    md = report.markdown_table(table, [("market_share", "market share", True)])
    cells = [line for line in md.splitlines() if line.startswith("| ")]
    assert cells[1:] == ["| random | 1 |", "| popularity | 1 |"]  # no bold, no 1.000000
    assert report.fmt(1.0, 1e-8) == "1" and report.fmt(1.0, 1e-3) == "1.0000 ± 0.0010"
    # Ties at the top are all best; a column where every mean ties has no best.
    assert report.best_rows([1.0, 1.0 + 1e-9, 0.5], True) == {0, 1}
    assert report.best_rows([0.2, 0.2 + 1e-12, 0.5], False) == {0, 1}
    assert report.best_rows([3.0, 3.0 * (1 + 1e-9)], True) == set()
    assert report.best_rows([1.0, float("nan")], True) == set()


def test_a_run_without_evaluation_is_reported_with_its_training_window():
    summary = {
        "env": "e",
        "agent": "a",
        "opponent": "",
        "seed": 0,
        "eval": {},
        "train": {"step": 100.0, "return": 2.5, "ctr": 0.5},
    }
    row = report.run_row(summary)
    assert row["metrics_from"] == "train" and row["return"] == 2.5 and row["train_return"] == 2.5
    assert "step" not in row
    evaluated = report.run_row({**summary, "eval": {"return": 3.0}})
    assert evaluated["metrics_from"] == "eval" and evaluated["return"] == 3.0
    md = report.markdown_table(report.aggregate([row]))
    assert "last training window of each run" in md and "greedy evaluation after" not in md
    mixed = report.markdown_table(report.aggregate([row, {**evaluated, "agent": "b"}]))
    assert "| a (training window) |" in mixed and "| b |" in mixed


def test_runs_that_diverged_are_counted_and_marked_in_the_table(tmp_path):
    """A run whose training stopped at NaN weights (``summary["diverged"]``) is a result: its
    row carries the step, the aggregate counts such runs, the table marks the agent."""
    base = {"env": "e", "opponent": "", "eval": {"return": 1.0}, "diverged": None}
    rows = [
        report.run_row({**base, "agent": "a", "seed": 0}),
        report.run_row({**base, "agent": "a", "seed": 1, "diverged": {"step": 80, "where": "w"}}),
        report.run_row({**base, "agent": "b", "seed": 0}),
    ]
    assert [r["diverged_at"] for r in rows] == ["", 80, ""]
    path = tmp_path / "runs.csv"
    path.write_text(report.to_csv(rows))
    table = report.aggregate(report.read_csv(path))
    assert table[0]["diverged"] == 1 and "diverged" not in table[1]
    md = report.markdown_table(table)
    assert "| a (diverged in 1 of 2 runs) |" in md and "| b |" in md
