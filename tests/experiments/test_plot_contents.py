"""What the comparison's figures draw, read back from the matplotlib objects: the learning
curve's mean and 95 % CI band over seeds of unequal length, and the final metrics' bars and
error bars. (``test_experiment_report.py`` checks that the PNGs are written and titled.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import plots
from experiments.report import mean_ci

ENV = "recenv/Market-v0"


def _run(points):
    return [{"step": s, "return": r, "market_share": 0.5} for s, r in points]


def test_the_curve_is_the_seeds_mean_and_ci_on_the_longest_runs_steps():
    """Three seeds: a shorter run listed first (its steps are not the grid, and it is not
    carried past its last point), and a run with a NaN point (skipped: its neighbours
    interpolate it, it does not poison the mean)."""
    short = _run([(100, 3.0), (200, 5.0)])
    full = _run([(100, 1.0), (200, 2.0), (300, 3.0)])
    gap = _run([(100, 2.0), (200, math.nan), (300, 6.0)])
    fig = plots.learning_curves({(ENV, "iql"): [short, full, gap]})
    ax = fig.axes[0]
    (line,) = ax.lines
    x, y = line.get_xdata(), line.get_ydata()
    np.testing.assert_array_equal(x, [100, 200, 300])
    # At 200 the NaN run reads 4 (between 2 and 6); at 300 the short run has ended.
    columns = [[3.0, 1.0, 2.0], [5.0, 2.0, 4.0], [3.0, 6.0]]
    want = [mean_ci(c)[:2] for c in columns]
    np.testing.assert_allclose(y, [m for m, _ in want])
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    for xi, (m, ci) in zip(x, want, strict=True):
        ys = vertices[np.isclose(vertices[:, 0], xi), 1]
        assert ci > 0
        assert ys.min() == pytest.approx(m - ci) and ys.max() == pytest.approx(m + ci), xi
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["iql (n=3)"]


def test_final_metrics_bars_sit_side_by_side_with_their_ci_as_error_bars():
    """Two agents in one env: bars of width 0.4 centred at -0.2 and +0.2, heights the means,
    error bars the 95 % CI half widths (none where the CI is NaN: one seed)."""
    table = [
        {"env": ENV, "agent": "iql", "return_mean": 1.0, "return_ci95": 0.5},
        {"env": ENV, "agent": "random", "return_mean": 2.0, "return_ci95": math.nan},
    ]
    fig = plots.final_metrics(table)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    assert len(bars) == 2
    for container, (centre, height, err) in zip(
        bars, [(-0.2, 1.0, 0.5), (0.2, 2.0, 0.0)], strict=True
    ):
        (patch,) = container.patches
        assert patch.get_x() + patch.get_width() / 2 == pytest.approx(centre)
        assert patch.get_width() == pytest.approx(0.4)
        assert patch.get_height() == pytest.approx(height)
        (segment,) = container.errorbar.lines[2][0].get_segments()
        (x0, y0), (x1, y1) = segment
        assert x0 == x1 == pytest.approx(centre)
        assert (y0, y1) == (pytest.approx(height - err), pytest.approx(height + err))
