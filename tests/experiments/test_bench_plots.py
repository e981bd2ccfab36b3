"""The figure of a bench_env run (experiments.bench_plots) and bench_env's drawing of it."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("matplotlib")

from experiments import bench_env, bench_plots


def _row(kind, median, threads=1, **fields):
    spread = {"min": 0.9 * median, "max": 1.1 * median}
    return {"kind": kind, "threads": threads, "median": median, **spread, **fields}


RESULT = {
    "env": "recenv/Market-v0",
    "torch": "2.13.0+cpu",
    "git": "0123456789abcdef",
    "machine": {"cpu_model": "Some CPU", "cpu_capability": "AVX512"},
    "targets": {
        "batched_env_steps_per_s": 250_000,
        "batched_num_envs": 4096,
        "pettingzoo_face_steps_per_s": 5000,
        "fraction_of_copy_bandwidth": 0.25,
        "catalog_ratio_max_speed": 1.2,
    },
    "rows": [
        _row("pettingzoo_face", 400.0, compile=False),
        _row("pettingzoo_face", 10_000.0, compile=True),
        *[_row("batched", 1e5 * n, num_envs=n, compile=True) for n in (1, 4)],
        *[_row("batched", 5e4 * n, num_envs=n, compile=False) for n in (1, 4)],
        _row("batched", 3e5, threads=2, num_envs=4, compile=True),
        _row("vmas_simple_spread", 8e5, num_envs=4),
        _row("catalog", 1e5, num_envs=2, num_items=100, compile=True),
    ],
    "ratios": [
        {"name": "pettingzoo_face/mpe2", "compile": True, "ratio": 3.3, "target": 3.0},
        {"name": "pettingzoo_face/mpe2", "compile": False, "ratio": 0.1, "target": 3.0},
        {
            "name": "batched/vmas",
            "threads": 1,
            "compile": True,
            "num_envs": 4,
            "ratio": 0.5,
            "target": 1.0,
        },
        {
            "name": "batched/vmas",
            "threads": 2,
            "compile": True,
            "num_envs": 4,
            "ratio": 1.25,
            "target": 1.0,
        },
        {
            "name": "batched/vmas",
            "threads": 1,
            "compile": False,
            "num_envs": 4,
            "ratio": 0.1,
            "target": 1.0,
        },
    ],
    "batched_target": [
        {"threads": 1, "compile": True, "num_envs": 4, "env_steps_per_s": 300_000.0},
        {"threads": 1, "compile": False, "num_envs": 4, "env_steps_per_s": 200_000.0},
    ],
    "traffic": [{"threads": 1, "compile": True, "fraction_of_copy_bandwidth": 0.15}],
    "catalog_ratio": {"ratio_compiled": 1.5, "ratio_eager": 1.0},
    "memory_check": {"num_envs": 16, "num_users": 10, "rss_growth": 2**31, "limit_bytes": 2**33},
}


def test_each_target_is_scored_measured_over_required():
    scores = {label: (score, shown) for label, score, shown in bench_plots.target_scores(RESULT)}
    assert scores["face steps/s"] == (pytest.approx(2.0), "10,000")
    assert scores["face / mpe2"] == (pytest.approx(1.1), "3.30x")  # the compiled face only
    assert scores["4 markets, 1 thread"] == (pytest.approx(1.2), "300.0k")  # compiled only
    assert scores["copy bandwidth"] == (pytest.approx(0.6), "15.0%")
    assert scores["recenv / VMAS, 4 markets, 1 thread"] == (pytest.approx(0.5), "0.50x")
    assert scores["recenv / VMAS, 4 markets, 2 threads"] == (pytest.approx(1.25), "1.25x")
    # "At most" targets: required over measured, so >= 1 still means met.
    assert scores["10^6 / 10^3 items, compiled"] == (pytest.approx(0.8), "1.50x")
    assert scores["10^6 / 10^3 items, eager"] == (pytest.approx(1.2), "1.00x")
    assert scores["memory, 16 x 10 users"] == (pytest.approx(4.0), "2.00 GiB")
    assert len(scores) == 9  # the eager VMAS ratio is not a target's


def test_unmeasured_targets_are_left_out_and_an_empty_result_still_draws(tmp_path):
    assert bench_plots.target_scores({"rows": []}) == []
    other_sizes = {"items": [50, 100], "ratio_eager": 1.25}
    scores = bench_plots.target_scores(
        {"targets": {"catalog_ratio_max_speed": 1.2}, "catalog_ratio": other_sizes}
    )
    assert scores == [("100 / 50 items, eager", pytest.approx(0.96), "1.25x")]
    path = tmp_path / "empty.png"
    bench_plots.bench_figure({"rows": []}, path)
    assert path.stat().st_size > 0


def test_figure_is_saved_once_and_never_overwritten(tmp_path):
    path = tmp_path / "run.png"
    fig = bench_plots.bench_figure(RESULT, path)
    left, right = fig.axes
    # Compiled and eager at one thread, compiled at two, VMAS: one legend entry each.
    assert len(left.get_legend().get_texts()) == 4
    assert "commit 0123456" in fig._suptitle.get_text()
    assert len(right.patches) == 9
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="never overwritten"):
        bench_plots.bench_figure(RESULT, path)
    assert path.read_bytes() == data


def _lines(ax):
    """The scaling panel's error-bar series by label: x, y and each point's (low, high)."""
    out = {}
    for c in ax.containers:
        line, _, (bars,) = c
        ends = [(seg[0][1], seg[1][1]) for seg in bars.get_segments()]
        out[c.get_label()] = (list(line.get_xdata()), list(line.get_ydata()), ends)
    return out


def test_scaling_panel_draws_each_series_median_and_spread_by_markets():
    """Each line is one kind, compile mode and thread count, its points in order of markets,
    each at its median with its min..max as the bar (rows given out of order, spread
    uneven); the dashed line is the target."""
    rows = [
        {"kind": "batched", "threads": 1, "compile": True, "num_envs": 64, "median": 2e5,
         "min": 1.5e5, "max": 2.1e5},
        {"kind": "batched", "threads": 1, "compile": True, "num_envs": 4, "median": 1e5,
         "min": 0.95e5, "max": 1.4e5},
        {"kind": "batched", "threads": 1, "compile": False, "num_envs": 4, "median": 5e4,
         "min": 4e4, "max": 6e4},
        {"kind": "vmas_simple_spread", "threads": 1, "num_envs": 4, "median": 8e5,
         "min": 7e5, "max": 9e5},
    ]  # fmt: skip
    result = {"rows": rows, "targets": {"batched_env_steps_per_s": 250_000}}
    left, _ = bench_plots.bench_figure(result).axes
    lines = _lines(left)
    assert set(lines) == {
        "recenv compiled, 1 thread",
        "recenv eager, 1 thread",
        "VMAS simple_spread, 1 thread",
    }
    x, y, ends = lines["recenv compiled, 1 thread"]
    assert x == [4, 64] and y == [1e5, 2e5]
    assert ends == [pytest.approx((0.95e5, 1.4e5)), pytest.approx((1.5e5, 2.1e5))]
    assert lines["recenv eager, 1 thread"][:2] == ([4], [5e4])
    assert lines["VMAS simple_spread, 1 thread"][:2] == ([4], [8e5])
    (target,) = [ln for ln in left.get_lines() if ln.get_linestyle() == "--"]
    assert list(target.get_ydata()) == [250_000, 250_000]


def test_targets_panel_bars_are_the_scores_labelled_and_coloured_by_verdict():
    """One bar per target, its length the score, its label the target's, green where met
    (score >= 1) and red where not; the first target on top."""
    _, right = bench_plots.bench_figure(RESULT).axes
    scores = bench_plots.target_scores(RESULT)
    labels = [t.get_text() for t in right.get_yticklabels()]
    bars = {label: bar for label, bar in zip(labels, right.patches, strict=True)}
    assert labels[-1] == scores[0][0]  # drawn bottom-up
    assert set(bars) == {label for label, _, _ in scores}
    green, red = (0.173, 0.627, 0.173), (0.839, 0.153, 0.157)  # tab:green, tab:red
    for label, score, _ in scores:
        assert bars[label].get_width() == pytest.approx(score), label
        want = green if score >= 1 else red
        assert bars[label].get_facecolor()[:3] == pytest.approx(want, abs=1e-3), label


def test_cli_draws_a_recorded_run_beside_its_json_and_refuses_bad_input(tmp_path, capsys):
    src = tmp_path / "bench_env-x.json"
    src.write_text(json.dumps(RESULT))
    assert bench_plots.main([str(src)]) == tmp_path / "bench_env-x.png"
    assert (tmp_path / "bench_env-x.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        bench_plots.main([str(src)])
    assert "never overwritten" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"figure": 1}))
    with pytest.raises(SystemExit):
        bench_plots.main([str(other), "--out", str(tmp_path / "o.png")])
    assert "not a bench_env result" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_plots.main([str(tmp_path / "missing.json")])
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_bench_env_says_why_it_drew_no_figure(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    assert bench_env.draw(out, RESULT) == tmp_path / "bench.png"
    assert bench_env.draw(out, RESULT) is None  # the figure exists: kept as it was
    assert "never overwritten" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "experiments.bench_plots", None)  # matplotlib absent
    assert bench_env.draw(tmp_path / "other.json", RESULT) is None
    assert "pip install -e '.[plots]'" in capsys.readouterr().out
    assert not (tmp_path / "other.png").exists()
