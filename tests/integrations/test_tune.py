"""Ray Tune: a sweep of recenv's own agents, the experiments runner as the trainable, written
up as a comparison (runs.csv, table.csv, table.md, plots) like ``python -m experiments compare``.

Runs on the shared local Ray (the ``local_ray`` fixture) in the ``ray`` xdist group.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray.tune")

from experiments import report, tune_sweep

pytestmark = pytest.mark.xdist_group("ray")

TINY = [
    "--preset",
    "smoke",
    "--total-steps",
    "160",
    "--eval-episodes",
    "2",
    "--num-envs",
    "2",
    "--log-every",
    "40",
    "--checkpoint-every",
    "0",
    "--set",
    "env.horizon=10",
    "--verbose",
    "0",
]


def test_two_trial_sweep_writes_the_comparison_table(local_ray, tmp_path):
    out = tmp_path / "sweep"
    argv = [*TINY, "--agents", "random,popularity", "--seeds", "0", "--out", str(out)]
    assert tune_sweep.main(argv) == 0
    assert local_ray.is_initialized()  # a Ray the sweep did not start is left running

    comp = out / "default"
    for name in ("runs.csv", "table.csv", "table.md", "learning_curves.png", "DONE"):
        assert (comp / name).is_file(), name
    runs = report.read_csv(comp / "runs.csv")
    assert [(r["agent"], r["seed"]) for r in runs] == [("random", 0), ("popularity", 0)]
    table = report.read_csv(comp / "table.csv")
    assert [r["agent"] for r in table] == ["random", "popularity"]
    md = (comp / "table.md").read_text()
    assert "| random |" in md and "| popularity |" in md
    # The same report as a local comparison's: `experiments report` reads it.
    assert report.load_comparison(comp).markdown == md

    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["trials"]) == 2 and not summary["errors"]
    assert {t["agent"] for t in summary["trials"]} == {"random", "popularity"}
    assert all("eval_return" in t for t in summary["trials"])
    assert (out / "tune" / "sweep").is_dir()  # Tune's storage_path is inside the sweep

    # An existing output directory is never overwritten.
    assert tune_sweep.main(argv) == 1


def test_grid_and_seed_parsing():
    assert tune_sweep.split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert tune_sweep.split_values("[64,64],[32]") == ["[64,64]", "[32]"]
    assert tune_sweep.parse_seeds("0,1,7", 0, 3) == [0, 1, 7]
    assert tune_sweep.parse_seeds("3", 5, 3) == [3]
    assert tune_sweep.parse_seeds(None, 1, 2) == [1, 2]
    with pytest.raises(tune_sweep.ConfigError):
        tune_sweep.parse_seeds("0,0", 0, 1)
    args = tune_sweep.build_parser().parse_args(
        ["--preset", "smoke", "--agents", "iql,random", "--grid", "agent.lr=1e-3,3e-4"]
    )
    points = tune_sweep.variants(args, tune_sweep.parse_grid(args.grid))
    assert [label for label, _, _ in points] == ["agent.lr_1e-3", "agent.lr_3e-4"]
    assert [cfg.agent_overrides("iql")["lr"] for _, _, cfg in points] == [1e-3, 3e-4]
