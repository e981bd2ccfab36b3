"""Ray Tune: a sweep of recenv's own agents, the experiments runner as the trainable, written
up as a comparison (runs.csv, table.csv, table.md, plots) like ``python -m experiments compare``.

Runs on the shared local Ray (the ``local_ray`` fixture) in the ``ray`` xdist group.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray.tune")

from experiments import comparison, report, runner, tune_sweep

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


def test_two_trial_sweep_writes_the_comparison_table(local_ray, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    argv = [*TINY, "--agents", "random,popularity", "--seeds", "0", "--out", str(out)]
    # While the sweep works on a variant, the variant is locked like a comparison that
    # `compare` trains: `python -m experiments resume OUT/VARIANT` is refused meanwhile.
    locked = []
    write_report = comparison.write_report

    def checked_write_report(path, cfg, results):
        with pytest.raises(runner.RunError, match="is being worked on by pid"):
            runner.DirLock(path, "comparison").acquire()
        locked.append(path.name)
        return write_report(path, cfg, results)

    monkeypatch.setattr(comparison, "write_report", checked_write_report)
    assert tune_sweep.main(argv) == 0
    assert locked == ["default"]
    assert not (out / "default" / runner.LOCK).exists()  # let go once the report is written
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

    # An existing output directory is never overwritten, and the refusal names it and says
    # why (not only the bare FileExistsError of a later mkdir).
    before = (out / "sweep.json").read_bytes()
    capsys.readouterr()
    assert tune_sweep.main(argv) == 1
    assert f"output directory {out} exists; refusing to overwrite it" in capsys.readouterr().err
    assert (out / "sweep.json").read_bytes() == before


def test_a_grid_sweep_writes_each_variant_up_with_its_own_runs(local_ray, tmp_path):
    """Two variants (a grid over the horizon): each variant's comparison holds its own run
    only, trained at its own horizon, and sweep.md has one table per variant."""
    out = tmp_path / "sweep"
    argv = [*TINY, "--agents", "random", "--seeds", "0", "--grid", "env.horizon=8,10"]
    assert tune_sweep.main([*argv, "--out", str(out)]) == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert sorted(summary["reports"]) == ["env.horizon_10", "env.horizon_8"]
    for horizon in (8, 10):
        comp = out / f"env.horizon_{horizon}"
        runs = report.read_csv(comp / "runs.csv")
        assert len(runs) == 1
        config = json.loads((comp / runs[0]["run_dir"] / "config.json").read_text())
        assert config["env_config"]["horizon"] == horizon
    assert (out / "sweep.md").read_text().count("## env.horizon_") == 2


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


def test_the_variants_are_the_product_of_the_grids_each_with_its_own_label():
    """Two grids of two values: four variants, every pair once, in product order. Labels are
    cut at 120 characters, so a large grid's labels can agree: those get a suffix, and no two
    variants share a directory."""
    fixed = [f"agent.{k}={v}" for k, v in (("learning_starts", 64), ("batch_size", 32))]
    fixed += ["env.retrieval_interest=0.5", "env.retrieval_skew=1.5", "env.fresh_window=50"]
    grid = ["--grid", *fixed, "agent.lr=1e-3,3e-4", "agent.gamma=0.9,0.99"]
    args = tune_sweep.build_parser().parse_args(["--preset", "smoke", "--agents", "iql", *grid])
    points = tune_sweep.variants(args, tune_sweep.parse_grid(args.grid))
    assert [(point["agent.lr"], point["agent.gamma"]) for _, point, _ in points] == [
        ("1e-3", "0.9"),
        ("1e-3", "0.99"),
        ("3e-4", "0.9"),
        ("3e-4", "0.99"),
    ]
    got = [cfg.agent_overrides("iql") for _, _, cfg in points]
    assert [(o["lr"], o["gamma"]) for o in got] == [
        (1e-3, 0.9),
        (1e-3, 0.99),
        (3e-4, 0.9),
        (3e-4, 0.99),
    ]
    labels = [label for label, _, _ in points]
    cut = labels[0]
    assert len(cut) == 120 and cut.startswith("agent.learning_starts_64__")
    assert labels == [cut, f"{cut}-1", f"{cut}-2", f"{cut}-3"]


def test_two_spellings_of_one_value_are_refused():
    """``[64,64]`` and ``[64, 64]`` are one value: the sweep would train the same runs twice
    under two labels."""
    grid = ["--grid", "agent.hidden=[64,64],[64, 64]"]
    args = tune_sweep.build_parser().parse_args(["--preset", "smoke", "--agents", "iql", *grid])
    with pytest.raises(tune_sweep.ConfigError, match="resolve to the same config"):
        tune_sweep.variants(args, tune_sweep.parse_grid(args.grid))


@pytest.mark.parametrize(
    "grid", ["seed=1,2", "run.seed=1,2", "seeds=2,3", "compare.seeds=2,3", "jobs=1,2", "root=a,b"]
)
def test_a_grid_over_what_the_sweep_sets_itself_is_refused(grid):
    # These keys are overwritten for every trial (--seeds, --max-concurrent, --out): a grid
    # over them gave variants that differed only in their labels, trained on the same seeds.
    with pytest.raises(tune_sweep.ConfigError, match=r"the sweep sets \S+ itself"):
        tune_sweep.parse_grid([grid])


def test_the_trial_count_adds_up_variants_of_different_sizes(monkeypatch, capsys, tmp_path):
    seen = []

    def sweep(points, seeds, out, **kw):  # a stub: the count is printed before the sweep
        seen.append(points)
        return {"markdown": "", "out": str(out)}

    monkeypatch.setattr(tune_sweep, "sweep", sweep)
    argv = ["--preset", "smoke", "--seeds", "0,1", "--out", str(tmp_path / "s")]
    assert tune_sweep.main([*argv, "--grid", 'agents=["random","popularity"],random']) == 0
    ((a, b),) = seen
    assert (len(a[2].agents), len(b[2].agents)) == (2, 1)
    err = capsys.readouterr().err
    assert "2 variant(s), 3 (env, agent) cell(s) x 2 seed(s) = 6 trials" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-cpus", "0"], "--num-cpus 0 must be >= 1"),
        (["--cpus-per-trial", "-1"], "--cpus-per-trial -1.0 must be >= 0"),
        (["--cpus-per-trial", "3", "--max-concurrent", "2"], "no trial could ever start"),
    ],
)
def test_ray_resource_flags_are_checked_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "s"
    assert tune_sweep.main([*TINY, "--agents", "random", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_trial_whose_actor_died_starting_is_a_reported_error(tmp_path, monkeypatch):
    # A trial whose actor dies while starting has no result, not even Tune's defaults with its
    # config (Result.config is None): the sweep indexed res.config["cell"] and crashed with a
    # TypeError, writing neither sweep.json nor the error. It names the trial by its directory.
    import ray
    from ray import tune
    from ray.tune import Result

    class DiedStarting:  # a Tuner stub: no Ray, one trial that never reported
        def __init__(self, trainable, **kw):
            pass

        def fit(self):
            died = RuntimeError("the actor died starting")
            path = str(tmp_path / "tune" / "default__market__random__0")
            return [Result(metrics={"trial_id": "t0"}, checkpoint=None, error=died, path=path)]

    monkeypatch.setattr(tune, "Tuner", DiedStarting)
    monkeypatch.setattr(tune_sweep, "_init_ray", lambda *a: False)
    monkeypatch.setattr(ray, "nodes", lambda: [])
    args = tune_sweep.build_parser().parse_args([*TINY, "--agents", "random", "--seeds", "0"])
    points = tune_sweep.variants(args, [])
    out = tmp_path / "s"
    with pytest.raises(runner.RunError, match="1 trial"):
        tune_sweep.sweep(points, [0], out, log=lambda *a, **kw: None)
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["errors"] == ["default__market__random__0: the actor died starting"]
    assert summary["trials"] == [] and summary["reports"] == {}
