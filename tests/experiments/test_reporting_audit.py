"""Reading results back: ``report`` re-renders a comparison as it was written, figures keep one
colour per agent, partial reports with nothing finished, and the CLI's argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.colors as mcolors
import pytest
from experiment_helpers import tiny_run

import recenv
from experiments import cli, comparison, plots, report
from experiments.config import CompareConfig


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished comparison of two baselines over two seeds (seconds)."""
    root = tmp_path_factory.mktemp("cmp") / "runs"
    run = tiny_run(root, total_steps=40, checkpoint_every=40, agent_overrides=())
    cfg = CompareConfig(agents=("random", "popularity"), seeds=2, run=run)
    return comparison.compare(cfg, quiet=True).path


def test_a_report_reads_run_dirs_as_runs_csv_has_them_and_re_renders_it_unchanged(
    finished, tmp_path, monkeypatch, capsys
):
    """``rows[i]["run_dir"]`` is the run directory's name (runs.csv's), not the path the
    comparison was read by: ``COMPARISON / row["run_dir"]`` (the notebook's) finds the run
    from a relative path too, and ``report --out`` writes the same runs.csv."""
    monkeypatch.chdir(finished.parent)
    comp = report.load_comparison(finished.name)  # a relative path, as a user types it
    written = report.read_csv(finished / "runs.csv")
    assert [r["run_dir"] for r in comp.rows] == [r["run_dir"] for r in written]
    for row in comp.rows:
        assert (Path(finished.name) / row["run_dir"] / "DONE").is_file()
    out = tmp_path / "again"
    assert cli.main(["report", finished.name, "--out", str(out)]) == 0
    capsys.readouterr()
    for name in ("runs.csv", "table.csv", "table.md"):
        assert (out / name).read_text() == (finished / name).read_text(), name


def test_report_out_must_be_a_new_directory_outside_the_comparison(finished, tmp_path, capsys):
    """``--out`` that exists, or lies inside the (finished) comparison, is a usage error
    naming --out, before anything is printed or written."""
    before = sorted(p.relative_to(finished) for p in finished.rglob("*"))
    run = next(p for p in finished.iterdir() if p.is_dir())
    for out in (tmp_path, finished / "figures", run / "figures"):
        assert cli.main(["report", str(finished), "--out", str(out)]) == 2, out
        captured = capsys.readouterr()
        assert captured.out == "" and "--out" in captured.err, captured.err
    assert sorted(p.relative_to(finished) for p in finished.rglob("*")) == before


def test_a_partial_report_with_no_finished_run_writes_its_figures(tmp_path, capsys):
    """Interrupted during its first run: `report --partial --out` says so, and draws figures
    that say there is nothing to show, instead of a matplotlib traceback."""
    cdir = tmp_path / "cmp"
    cdir.mkdir()
    cfg = CompareConfig(agents=("random", "popularity"), seeds=2)
    (cdir / "compare.json").write_text(json.dumps({"config": cfg.to_dict()}))
    out = tmp_path / "out"
    assert cli.main(["report", str(cdir), "--partial", "--out", str(out)]) == 0
    assert "0 of 4 runs finished" in capsys.readouterr().out
    for name in plots.FIGURES:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    fig = plots.final_metrics([], note="partial")
    assert fig.get_suptitle().endswith("\npartial")


def test_curves_keep_one_colour_per_agent_in_every_panel():
    """An agent missing from one env (a partial comparison) must not hand its colour to the
    next agent there; the legend lists every agent, from every panel."""

    def seeds(base, n=2):
        return [
            [{"step": s, "return": base + s / 100, "market_share": 0.5} for s in (100, 200)]
            for _ in range(n)
        ]

    curves = {("E1", "a"): seeds(0), ("E1", "b"): seeds(1), ("E2", "b"): seeds(1, 1)}
    curves[("E2", "c")] = seeds(2)  # only in the second panel
    fig = plots.learning_curves(curves)
    colour = {}
    for ax in fig.axes[:2]:
        for line in ax.lines:
            hexed = mcolors.to_hex(line.get_color())
            assert colour.setdefault(line.get_label(), hexed) == hexed, line.get_label()
    assert len(set(colour.values())) == 3
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["a (n=2)", "b (n=2/1)", "c (n=2)"]
    handles = legend.legend_handles
    assert [mcolors.to_hex(h.get_color()) for h in handles] == [colour[a] for a in "abc"]


@pytest.mark.parametrize("what", ["run", "compare", "envs", "agents"])
def test_describe_refuses_a_name_it_does_not_take(what, capsys):
    assert cli.main(["describe", what, "iql"]) == 2
    err = capsys.readouterr().err
    assert f"describe {what} takes no NAME (got 'iql')" in err
    assert "only `describe agent NAME` and `describe env NAME` do" in err


def _config_rows(out: str) -> dict[str, str]:
    """``describe env ID``'s config table: field name -> its line."""
    table = out.split(" config (MarketConfig fields with this scenario's values", 1)[1]
    return {line[2:].split()[0]: line for line in table.splitlines()[1:]}


def test_describe_env_id_prints_the_page_and_marks_the_fields_the_scenario_changes(capsys):
    """``describe env ID`` was refused ("takes no NAME"; ``describe env`` lists only
    MarketConfig's defaults): it prints the scenario's page, then MarketConfig's fields with
    the scenario's values, ``*`` marking those that differ from the defaults (the default at
    the end of the line)."""
    from recenv.scenarios import music

    assert cli.main(["describe", "env", "recenv/Music-v0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(music.__doc__.rstrip() + "\n")
    defaults, fields = recenv.MarketConfig(), recenv.MarketConfig.field_names()
    changed = {k for k in fields if getattr(music.CONFIG, k) != getattr(defaults, k)}
    assert "num_items" in changed  # Music-v0's CONFIG sets num_items=4000
    rows = _config_rows(out)
    assert list(rows) == fields
    for name, line in rows.items():
        assert line.startswith("* " if name in changed else "  "), line
        assert line[2:].split()[2] == repr(getattr(music.CONFIG, name)), line
    assert rows["num_items"].endswith(f"(default {defaults.num_items!r})")
    assert not rows["num_users"].endswith(")")  # an unchanged field's help as it was


def test_describe_env_refuses_an_unknown_id_listing_the_registered_ones(capsys):
    """As ``--env`` does: a config error naming the registered ids and the likely one (no
    short names: ``Music-v0`` is not ``recenv/Music-v0``)."""
    assert cli.main(["describe", "env", "Music-v0"]) == 2
    out, err = capsys.readouterr()
    assert not out
    assert "config error: unknown env 'Music-v0'; registered envs: " in err
    assert all(repr(env_id) in err for env_id in recenv.registered_ids())
    assert "did you mean 'recenv/Music-v0'" in err


def test_describe_env_of_a_scenario_that_needs_data_prints_its_page_and_says_what_is_missing(
    capsys,
):
    """FromLog-v0 cannot be built without ``log``: its page, then a config error (no
    traceback) naming the id and the missing argument."""
    from recenv.scenarios import from_log

    assert cli.main(["describe", "env", "recenv/FromLog-v0"]) == 2
    out, err = capsys.readouterr()
    assert out.rstrip() == from_log.__doc__.rstrip()
    assert err.startswith("config error: describe env recenv/FromLog-v0: its page is above")
    assert "recenv/FromLog-v0 needs log=PATH" in err and "Traceback" not in err
    assert err.rstrip().endswith("; give the log: --log PATH")


def test_describe_env_builds_a_log_scenario_from_the_log_it_is_given(capsys):
    """``describe env recenv/FromLog-v0 --log PATH``: its page and its config, whose sizes
    the log decides (read from a market built from it, as ``make_vec`` builds one)."""
    from tests.conftest import required_kwargs

    log = required_kwargs("recenv/FromLog-v0")["log"]  # skips without the shared sample
    assert cli.main(["describe", "env", "recenv/FromLog-v0", "--log", log]) == 0
    rows = _config_rows(capsys.readouterr().out)
    built = recenv.make_vec("recenv/FromLog-v0", num_envs=1, seed=0, log=log).config
    for name in ("num_items", "num_users", "num_topics"):
        assert rows[name][2:].split()[2] == repr(getattr(built, name)), rows[name]
    assert rows["num_items"].startswith("* ")  # the log's catalog, not the default's


def test_describe_log_is_refused_where_no_log_is_read(capsys, tmp_path):
    ratings = str(tmp_path / "ratings.csv")
    assert cli.main(["describe", "run", "--log", ratings]) == 2
    assert "--log is for `describe env ID`" in capsys.readouterr().err
    assert cli.main(["describe", "env", "recenv/Music-v0", "--log", ratings]) == 2
    err = capsys.readouterr().err
    assert f"built with log={ratings!r}, which failed: unknown config key(s) ['log']" in err
    missing = ["describe", "env", "recenv/FromLog-v0", "--log", ratings]
    assert cli.main(missing) == 2
    assert "cannot read the interaction log" in capsys.readouterr().err


def test_describe_envs_gives_each_id_the_summary_of_its_page(capsys):
    """``describe envs`` printed the bare ids: each is followed, aligned, by its page's first
    sentence (after the ``# Name-vN`` title), cut at ``cli.SUMMARY_WIDTH`` characters."""
    assert cli.main(["describe", "envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = recenv.registered_ids()
    assert [line.split()[0] for line in lines] == ids
    start = max(map(len, ids)) + 2
    assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines)
    summaries = {env_id: line[start:] for env_id, line in zip(ids, lines, strict=True)}
    assert summaries["recenv/ECommerce-v0"] == (
        "An online marketplace: A = 3 sellers compete for purchases on one shared results page."
    )
    for env_id, summary in summaries.items():
        page = recenv.registry.documentation_page(env_id)
        first = " ".join(page.split("\n\n")[1].split()).replace("``", "").replace("**", "")
        assert len(summary) <= cli.SUMMARY_WIDTH
        assert first.startswith(summary.removesuffix(" ...")), env_id


def test_compare_help_shows_the_percent_sign_once(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "%%" not in out and "95 % CI" in out
