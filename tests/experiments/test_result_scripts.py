"""The result scripts (``experiments.compare_agents``, ``experiments.compare_marl``) reserve
their output before any work: of two invocations with one ``--out``, the second is refused at
once (neither overwrites the other, none loses its work at the end), and a run that fails
leaves nothing that looks like results. The experiments themselves are replaced by stubs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import tiny_log

import agents
import recenv
from experiments import compare_agents, compare_marl, config, fidelity
from recenv.data import load_log

AGENTS_ARGS = ["--budget", "0", "--seeds", "1", "--modes", "competitive"]


def test_compare_agents_refuses_a_second_invocation_with_the_same_out(tmp_path, monkeypatch):
    out = tmp_path / "results" / "x"
    refused = []

    def table_experiment(args):
        if args.agents == ["random"]:  # the first invocation: a second one starts meanwhile
            assert json.loads(out.with_suffix(".json").read_text())["status"] == "in progress"
            with pytest.raises(SystemExit) as exit_:
                compare_agents.main([*AGENTS_ARGS, "--agents", "popularity", "--out", str(out)])
            refused.append(str(exit_.value.code))
        return {"competitive": {}}

    monkeypatch.setattr(compare_agents, "table_experiment", table_experiment)
    monkeypatch.setattr(compare_agents, "table_markdown", lambda results, env_agents: "TABLE\n")
    compare_agents.main([*AGENTS_ARGS, "--agents", "random", "--out", str(out)])
    (msg,) = refused
    assert f"refusing to overwrite {str(out.with_suffix('.json'))!r}" in msg
    assert "reserved by pid" in msg
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["agents"] == ["random"]
    assert out.with_suffix(".md").read_text().endswith("TABLE\n")
    with pytest.raises(SystemExit, match="refusing to overwrite"):  # a finished result
        compare_agents.main([*AGENTS_ARGS, "--agents", "random", "--out", str(out)])


def test_a_refused_reservation_leaves_nothing_it_had_made(tmp_path):
    """The .md exists (a result's half, by hand), the .json does not: reserving both is
    refused naming the .md, and the .json it had created first is gone again."""
    json_path, md = tmp_path / "x.json", tmp_path / "x.md"
    md.write_text("kept\n")
    with pytest.raises(SystemExit, match=f"refusing to overwrite {str(md)!r}"):
        compare_agents.reserve([json_path, md], "cmd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.md"]
    assert md.read_text() == "kept\n"


def test_compare_agents_that_fails_leaves_no_result(tmp_path, monkeypatch):
    out = tmp_path / "x"

    def table_experiment(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(compare_agents, "table_experiment", table_experiment)
    with pytest.raises(RuntimeError, match="boom"):
        compare_agents.main([*AGENTS_ARGS, "--agents", "random", "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_compare_marl_refuses_a_second_invocation_with_the_same_out(tmp_path, monkeypatch, capsys):
    out = tmp_path / "marl"
    codes = []

    def comparison(args, seeds, head):
        if args.agents == "random":  # the first invocation: a second one starts meanwhile
            assert (out / compare_marl.IN_PROGRESS).is_file()
            codes.append(compare_marl.main(["--agents", "popularity", "--out", str(out)]))
        return {**head, "rows": [args.agents]}, "REPORT\n"

    monkeypatch.setattr(compare_marl, "_comparison", comparison)
    assert compare_marl.main(["--agents", "random", "--out", str(out)]) == 0
    assert codes == [2]
    err = capsys.readouterr().err
    assert f"{str(out)!r} exists; results are never overwritten" in err
    assert "reserved by another run: pid" in err
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json"]
    assert json.loads((out / "results.json").read_text())["rows"] == ["random"]
    assert compare_marl.main(["--agents", "random", "--out", str(out)]) == 2


def test_compare_marl_that_fails_leaves_no_result(tmp_path, monkeypatch):
    def comparison(args, seeds, head):
        raise RuntimeError("boom")

    monkeypatch.setattr(compare_marl, "_comparison", comparison)
    with pytest.raises(RuntimeError, match="boom"):
        compare_marl.main(["--out", str(tmp_path / "marl")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--agents", "random,foo"], "--agents: unknown agent 'foo'"),
        (["--head-to-head", "foo"], "--head-to-head: unknown agent 'foo'"),
        (["--set", "rando.seed=1"], "--set rando.KEY: unknown agent 'rando'"),
        (["--set", "random.sed=1"], "agent config (AgentConfig) key 'sed'; valid keys: ['seed']"),
        (["--set", "iql.double_q=maybe"], "iql.double_q='maybe' is not a bool"),
        (["--set", "iql.lr=fast"], "iql.lr='fast' is not a float"),
        (["--agents", "mappo", "--set", "mappo.gamma=2"], "and gae_lambda=0.95 must be in"),
        (["--set", "random"], "--set 'random': expected NAME.KEY=VALUE"),
        (["--modes", "coop"], "--modes 'coop': reward modes"),
        (["--seeds", "0"], "--seeds 0 must be >= 1"),
        (["--env-set", "nmu_agents=4"], "nmu_agents"),
        (["--env-set", "num_agents=0"], "num_agents"),
        (["--env-set", "horizon=5"], "--env-set: horizon is set by --horizon"),
        (["--env-set", "num_agents"], "--env-set: 'num_agents': expected KEY=VALUE"),
        (["--env-set", "num_agents=4", "--head-to-head", "mappo"], "market has 5 agents"),
        (["--variant", "vdn2"], "--variant: 'vdn2': expected LABEL=NAME"),
        (["--variant", "iql=vdn"], "label 'iql' is a registered agent's name"),
        (["--variant", "v.2=vdn"], "label 'v.2': letters, digits"),
        (["--variant", "v2=vdm"], "unknown agent 'vdm'"),
        (["--variant", "v2=vdn", "--variant", "v2=qmix"], "label 'v2' given twice"),
        (["--variant", "v2=vdn"], "--variant ['v2']: list each variant's label in --agents"),
        (["--agents", "v2", "--variant", "v2=vdn", "--set", "v2.utility=logit"], "utility='logit'"),
        (["--agents", "v2", "--variant", "v2=vdn", "--set", "v2.utilty=slateq"], "key 'utilty'"),
    ],
)
def test_compare_marl_refuses_bad_input_before_any_work(
    flags, message, tmp_path, monkeypatch, capsys
):
    # An unknown agent or a bad override was reported as the agent "refusing" the mode, or
    # ignored (--set of a misspelt agent), or failed as a traceback after the comparison ran.
    def comparison(args, seeds, head):
        raise AssertionError("the comparison ran")

    monkeypatch.setattr(compare_marl, "_comparison", comparison)
    out = tmp_path / "marl"
    with pytest.raises(SystemExit) as exit_:
        compare_marl.main(["--out", str(out), "--agents", "random", "--head-to-head", "", *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("item", "value"),
    [
        ("iql.double_q=false", False),
        ("iql.double_q=True", True),
        ("iql.lr=3e-4", 3e-4),
        ("iql.hidden=32,16", (32, 16)),
        ("iql.hidden=[32,16]", (32, 16)),
        ("iql.hidden=(32, 16)", (32, 16)),
        ("iql.hidden=(32,)", (32,)),
        ("vdn.utility=slateq", "slateq"),
        # Python literals, as compare_marl took them (recorded results' commands hold these)
        ("vdn.utility='slateq'", "slateq"),
        ('vdn.utility="slateq"', "slateq"),
    ],
)
def test_compare_marl_set_parses_values_as_the_runner_does(item, value):
    """``--set NAME.KEY=VALUE`` is typed by the agent's config as the runner's ``--set`` is:
    ``double_q=false`` was the string 'false' (refused as not a bool), a bare ``32,16`` a
    tuple only by luck of Python's syntax."""
    target, _, text = item.partition("=")
    name, _, key = target.partition(".")
    args = compare_marl._args(["--out", "unused", "--agents", name, "--head-to-head", "",
                               "--set", item])  # fmt: skip
    got = compare_marl.agent_configs(args)[name][key]
    assert got == value and type(got) is type(value)
    runner_cfg = config.apply_overrides(config.CompareConfig(), [(target, text)], single_run=False)
    assert dict(dict(runner_cfg.per_agent)[name])[key] == got


# ------------------------------------------------------------------------------------------
# experiments.fidelity
# ------------------------------------------------------------------------------------------
def test_fidelity_simulation_counts_the_requests_it_served(tmp_path):
    # A market starting a new episode serves no request in that step: counting every step's
    # markets as requests overstated them and understated the CTR (clicks / requests).
    log = load_log(tiny_log(tmp_path))
    train = log.time_split(0.2, by="user")[0].compact()
    market = recenv.make_vec(fidelity.ENV_ID, num_envs=2, seed=0, log=train, horizon=5)
    sim = fidelity.simulate(market, "random", 40, seed=0)
    assert sim.requests == sim.user_requests.sum()
    assert 40 <= sim.requests < 40 + 2  # at least as many as asked, in whole steps


def test_fidelity_report_states_the_request_budget_it_used(tmp_path):
    path = tiny_log(tmp_path)
    log = load_log(path)
    md = fidelity.markdown([], log, fidelity.Args(log=str(path), requests=500))
    assert "simulated requests = 500;" in md and "served by that policy for 500 requests." in md
    assert "train interactions" not in md
    md = fidelity.markdown([], log, fidelity.Args(log=str(path)))
    assert "simulated requests = train interactions;" in md


def _stub_fidelity(monkeypatch, evaluate_split=None, plots=None):
    monkeypatch.setattr(
        fidelity, "evaluate_split", evaluate_split or (lambda log, split, args: {"split": split})
    )
    monkeypatch.setattr(fidelity, "markdown", lambda results, log, args: f"TABLE {args.policies}")
    monkeypatch.setattr(fidelity, "plots", plots or (lambda results, out: None))


def test_fidelity_refuses_a_second_invocation_with_the_same_out(tmp_path, monkeypatch, capsys):
    out = tmp_path / "fid"
    argv = ["--log", str(tiny_log(tmp_path)), "--out", str(out), "--splits", "user"]
    codes = []

    def evaluate_split(log, split, args):
        if args.policies == ("random",):  # the first invocation: a second one starts meanwhile
            codes.append(fidelity.main([*argv, "--policies", "oracle"]))
        return {"split": split}

    _stub_fidelity(monkeypatch, evaluate_split)
    assert fidelity.main([*argv, "--policies", "random"]) == 0
    assert codes == [2]
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "reserved by pid" in err
    assert (out / "report.md").read_text().startswith("TABLE ('random',)\n\nCode: ")
    assert json.loads((out / "fidelity.json").read_text())["args"]["policies"] == ["random"]
    assert fidelity.main([*argv, "--policies", "random"]) == 2  # a finished report


def test_fidelity_that_fails_leaves_no_result(tmp_path, monkeypatch):
    def plots(results, out):
        (Path(out) / "popularity.png").write_bytes(b"half a figure")
        raise RuntimeError("boom")

    _stub_fidelity(monkeypatch, plots=plots)
    out = tmp_path / "fid"
    with pytest.raises(RuntimeError, match="boom"):
        fidelity.main(["--log", str(tiny_log(tmp_path)), "--out", str(out)])
    assert [f for f in fidelity.OUTPUTS if (out / f).exists()] == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--test-fraction", "1"], "--test-fraction 1.0 must be in (0, 1)"),
        (["--num-envs", "0"], "--num-envs 0 must be >= 1"),
        (["--requests", "-5"], "--requests -5 must be >= 0"),
        (["--threads", "0"], "--threads 0 must be >= 1"),
        (["--log-format", "movielen"], "argument --log-format: invalid choice: 'movielen'"),
    ],
)
def test_fidelity_refuses_bad_arguments(flags, message, tmp_path, capsys):
    out = tmp_path / "fid"
    with pytest.raises(SystemExit) as exit_:
        fidelity.main(["--log", str(tiny_log(tmp_path)), "--out", str(out), *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_fidelity_names_a_log_it_cannot_read(tmp_path, capsys):
    out = tmp_path / "fid"
    assert fidelity.main(["--log", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: --log:" in err and "missing.csv" in err
    assert not out.exists()


def test_fidelity_end_to_end_on_atiny_log(tmp_path):
    """Both splits, one policy, tiny budgets: every output is written, fidelity.json is
    strict JSON (no NaN), and every hit rate is a share."""
    out = tmp_path / "fid"
    argv = ["--log", str(tiny_log(tmp_path)), "--out", str(out), "--policies", "random"]
    assert fidelity.main([*argv, "--num-envs", "4", "--requests", "400"]) == 0
    assert all(Path(out, name).is_file() for name in fidelity.OUTPUTS)

    def no_constants(name):
        raise AssertionError(f"fidelity.json holds {name}")

    payload = json.loads(Path(out, "fidelity.json").read_text(), parse_constant=no_constants)
    assert [s["split"] for s in payload["splits"]] == ["user", "global"]
    rates = [
        v
        for split in payload["splits"]
        for row in split["rows"].values()
        for k, v in row.items()
        if k.startswith("hr@10") and v is not None
    ]
    assert rates and all(0.0 <= v <= 1.0 for v in rates)


def test_fidelity_names_a_log_too_small_for_a_market(tmp_path, capsys):
    """Six ratings make a market with fewer items than candidates: a clear error naming the
    log and the rule it breaks (was a traceback), and no results."""
    log = tmp_path / "ratings.csv"
    rows = ["1,1,4.0,100", "1,2,3.0,200", "2,1,5.0,300", "2,3,2.0,400", "3,2,4.0,500"]
    log.write_text("userId,movieId,rating,timestamp\n" + "\n".join([*rows, "3,3,1.0,600"]) + "\n")
    out = tmp_path / "fid"
    assert fidelity.main(["--log", str(log), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: --log {log}: a split's market is not valid" in err and "num_candidates" in err
    assert not any(Path(out, name).exists() for name in fidelity.OUTPUTS)


def test_result_json_has_no_nan_and_no_numpy_types():
    """Results files are strict JSON: a NaN figure (a Spearman correlation over a constant
    vector, a CI over one seed) becomes null, numpy scalars and arrays plain values."""
    payload = {
        "spearman": float("nan"),
        "ci": np.float32("inf"),
        "n": np.int64(3),
        "rows": (np.array([1.5, np.nan]), [-np.inf, 2.0]),
        4: "key made a string",
    }
    ready = compare_agents.json_ready(payload)
    text = json.dumps(ready, allow_nan=False)
    assert json.loads(text) == {
        "spearman": None,
        "ci": None,
        "n": 3,
        "rows": [[1.5, None], [None, 2.0]],
        "4": "key made a string",
    }
    assert type(ready["n"]) is int


def test_compare_marl_head_to_head_seeds_each_lineup_member_apart(monkeypatch):
    """Regression test: the head-to-head's members (a MAPPO team, IQL, popularity) were all
    built with the run's seed, so their generators drew the same numbers; each now gets its
    own, as the experiments runner seeds an opponent (seed + OPPONENT_SEED_OFFSET)."""
    seeds: list[int] = []
    make = agents.make_agent

    def recording(name, env, **kw):
        seeds.append(kw["seed"])
        return make(name, env, **kw)

    monkeypatch.setattr(agents, "make_agent", recording)
    args = argparse.Namespace(num_envs=2, eval_envs=2, horizon=3, steps=12, set=[])
    rows = compare_marl.run_head_to_head("mappo", 7, args)
    step = compare_marl.OPPONENT_SEED_OFFSET
    assert seeds == [7, 7 + step, 7 + 2 * step]
    assert len(rows) == 5 and all(np.isfinite(r["return"]) for r in rows)


def test_compare_agents_long_horizon_takes_extra_agents_and_refuses_unknown_ones(tmp_path):
    """A tiny real long_horizon run: the fixed lineup, then ``--long-extra`` agents, each a
    row; an unknown name is refused before anything runs or is written."""
    out = tmp_path / "long"
    argv = ["--experiment", "long_horizon", "--budget", "64", "--seeds", "1", "--num-envs", "2",
            "--eval-envs", "2", "--horizon", "5", "--long-env-config", '{"num_items": 300}',
            "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit):
        compare_agents.main([*argv, "--long-extra", "linucb", "no_such_agent"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        compare_agents.main([*argv[2:], "--long-extra", "linucb"])  # the table experiment
    for bad in ("mf={bad json", 'mf=["user_scope"]', 'mf={"user_scop": "episode"}'):
        with pytest.raises(SystemExit):
            compare_agents.main([*argv, "--long-extra", bad])
        assert list(tmp_path.iterdir()) == []
    compare_agents.main([*argv, "--long-extra", "linucb", 'mf={"user_scope": "population"}'])
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert list(results)[-2:] == ["linucb", 'mf {"user_scope": "population"}']
    assert results['mf {"user_scope": "population"}']["config"] == {"user_scope": "population"}
    assert list(results)[:-2] == list(compare_agents.LONG_HORIZON_AGENTS)
    assert "train_env_steps_per_s" in results["linucb"]  # it trained
    assert '| mf {"user_scope": "population"} |' in out.with_suffix(".md").read_text()


def test_compare_marl_env_set_reaches_every_market_and_the_report(tmp_path, monkeypatch):
    """``--env-set num_agents=3``: training and held-out markets are built with it (and
    the reward mode and horizon of their own options); the report and settings say so."""
    built = []
    real = recenv.make_vec

    def make_vec(env_id, **kw):
        built.append(kw)
        return real(env_id, **kw)

    monkeypatch.setattr(compare_marl.recenv, "make_vec", make_vec)
    out = tmp_path / "marl"
    argv = ["--out", str(out), "--agents", "random", "--modes", "cooperative", "--seeds", "1",
            "--steps", "8", "--num-envs", "2", "--eval-envs", "2", "--horizon", "3",
            "--head-to-head", "", "--env-set", "num_agents=3",
            "--env-set", "num_items=400"]  # fmt: skip
    assert compare_marl.main(argv) == 0
    assert built and all(kw["num_agents"] == 3 and kw["num_items"] == 400 for kw in built)
    runs = [kw for kw in built if kw.get("reward_mode") == "cooperative" and kw["horizon"] == 3]
    assert {kw["num_envs"] for kw in runs} == {2}
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["env_set"] == ["num_agents=3", "num_items=400"]
    assert '`{"num_agents": 3, "num_items": 400}` (`--env-set`)' in (out / "report.md").read_text()


def test_compare_marl_variant_runs_an_agent_under_its_own_label_and_settings(tmp_path, monkeypatch):
    """``--variant v2=vdn --set v2.utility=slateq``: a row ``v2`` trained as VDN with VDN's
    budget schedule and its own override, beside plain VDN; the report and the settings
    name it."""
    built = []
    real = agents.make_agent

    def make_agent(name, env, **kw):
        built.append((name, kw))
        return real(name, env, **kw)

    monkeypatch.setattr(compare_marl.agents, "make_agent", make_agent)
    out = tmp_path / "marl"
    argv = ["--out", str(out), "--agents", "vdn,v2", "--variant", "v2=vdn", "--set",
            "v2.utility=slateq", "--modes", "cooperative,competitive", "--seeds", "1",
            "--steps", "40", "--num-envs", "2", "--eval-envs", "2", "--horizon", "4",
            "--head-to-head", ""]  # fmt: skip
    assert compare_marl.main(argv) == 0
    schedule = compare_marl.schedules(40)["vdn"]
    runs = [kw for _, kw in built if kw.get("seed") == 0]
    assert ("vdn", {"seed": 0, **schedule}) in [(n, kw) for n, kw in built]
    assert {"seed": 0, **schedule, "utility": "slateq"} in runs
    assert all(name == "vdn" for name, _ in built)  # the label is never an agent's name
    data = json.loads((out / "results.json").read_text())
    assert [r["agent"] for r in data["rows"]] == ["vdn", "v2"]
    assert data["settings"]["variant"] == ["v2=vdn"]
    assert {r["agent"] for r in data["refused"]} == {"vdn", "v2"}  # competitive: refused
    text = (out / "report.md").read_text()
    assert "| v2 |" in text and "- `v2`: `vdn` with" in text and '"utility": "slateq"' in text
