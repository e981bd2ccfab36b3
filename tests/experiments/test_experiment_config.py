"""Configs: presets resolve, overrides are typed and validated, errors list the valid choices."""

from __future__ import annotations

import dataclasses
import json

import pytest

import agents
from experiments import cli, config
from experiments.config import (
    PRESETS,
    CompareConfig,
    ConfigError,
    RunConfig,
    apply_overrides,
    parse_value,
    read_config_file,
    validate_run,
)
from recenv.core.config import MarketConfig


def run_fields() -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(RunConfig)
        if f.name not in ("env_overrides", "agent_overrides", "opponent_overrides")
    ]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_resolve_and_validate(name):
    p = PRESETS[name]
    assert p.description, "every preset says what it is for"
    validate_run(p.template_run())
    for env in p.envs:
        for agent in p.agents:
            validate_run(p.run_config(env, agent, p.run.seed))


def test_every_field_is_documented():
    for cls in (RunConfig, CompareConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_help_lists_every_run_field(capsys):
    for command in ("train", "compare"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        for name in run_fields():
            assert "--" + name.replace("_", "-") in out, (command, name)
    assert "--agents" in out and "--seeds" in out


def test_overrides_are_typed_and_ordered():
    cfg = apply_overrides(
        PRESETS["quick"],
        [
            ("seed", "7"),
            ("run.total_steps", "2e4"),
            ("env.horizon", "50"),
            ("env.reward_mode", "mixed"),
            ("iql.lr", "3e-4"),
            ("iql.hidden", "[32, 32]"),
            ("agents", "iql,random"),
            ("seeds", "2"),
            ("quiet", "true"),
            ("seed", "8"),  # the last assignment wins
        ],
    )
    assert cfg.run.seed == 8 and cfg.run.total_steps == 20_000 and cfg.run.quiet is True
    assert dict(cfg.run.env_overrides) == {"horizon": 50, "reward_mode": "mixed"}
    assert cfg.agents == ("iql", "random") and cfg.seeds == 2
    iql = cfg.run_config("recenv/Market-v0", "iql", 8).agent_kwargs()
    assert iql["lr"] == 3e-4 and iql["hidden"] == (32, 32)
    assert (
        iql["learning_starts"] == dict(dict(PRESETS["quick"].per_agent)["iql"])["learning_starts"]
    )
    assert cfg.run_config("recenv/Market-v0", "random", 8).agent_kwargs() == {}


def test_agent_section_in_a_comparison_goes_to_every_agent_that_has_the_key():
    cfg = apply_overrides(PRESETS["quick"], [("agent.seed", "5"), ("agent.alpha", "0.1")])
    assert cfg.run_config("recenv/Market-v0", "random", 0).agent_kwargs()["seed"] == 5
    assert cfg.run_config("recenv/Market-v0", "linucb", 0).agent_kwargs()["alpha"] == 0.1
    assert "alpha" not in cfg.run_config("recenv/Market-v0", "iql", 0).agent_kwargs()


def test_a_comparisons_cells_are_every_env_agent_and_seed_from_the_templates_seed():
    """``cells()``: one run per (env, agent, seed), envs outermost, the seeds ``run.seed``,
    ``run.seed + 1``, ... (``seeds`` of them), each cell the template with its env, agent and
    seed (so no two runs of a comparison are the same run)."""
    envs, names = ("recenv/Market-v0", "recenv/Video-v0"), ("random", "popularity")
    cfg = CompareConfig(
        envs=envs, agents=names, seeds=3, run=dataclasses.replace(RunConfig(), seed=7)
    )
    assert cfg.seed_list() == [7, 8, 9]
    cells = [(c.env, c.agent, c.seed) for c in cfg.cells()]
    assert cells == [(e, a, s) for e in envs for a in names for s in (7, 8, 9)]

    def rest(run: RunConfig) -> dict:
        return {
            k: v for k, v in dataclasses.asdict(run).items() if k not in ("env", "agent", "seed")
        }

    assert all(rest(c) == rest(cfg.run) for c in cfg.cells())


def test_single_run_agent_overrides():
    cfg = apply_overrides(
        PRESETS["smoke"],
        [("agent", "linucb"), ("agent.alpha", "2"), ("opponent", "random")],
        single_run=True,
    ).template_run()
    assert cfg.agent == "linucb" and cfg.agent_kwargs() == {"alpha": 2.0}
    assert cfg.opponent == "random" and cfg.lineup == "linucb-vs-random"


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("sed", "1", ["unknown run key 'sed'", "'seed'", "total_steps"]),
        ("run.totl_steps", "1", ["unknown run key", "total_steps"]),
        ("env.horzion", "10", ["'horzion'", "horizon", "reward_mode"]),
        ("agent.lrr", "0.1", ["'lrr'", "'lr'", "batch_size"]),
        ("iqll.lr", "0.1", ["unknown section 'iqll'", "env", "iql"]),
        ("seed", "abc", ["seed='abc' is not an int"]),
        ("total_steps", "1.5", ["is not an int"]),
        ("quiet", "maybe", ["is not a bool", "true", "false"]),
        ("env.horizon", "ten", ["env.horizon='ten' is not an int"]),
        ("env.temperature", "hot", ["is not a float"]),
        ("env.reward_mode", "selfish", ["reward_mode='selfish'", "competitive", "cooperative"]),
        ("agent.lr", "fast", ["agent.lr='fast' is not a float"]),
        ("agent", "dqn", ["unknown agent 'dqn'", "iql", "random"]),
        ("env", "Market-v0", ["unknown env 'Market-v0'", "recenv/Market-v0"]),
        ("num_envs", "0", ["num_envs=0 must be >= 1"]),
        ("device", "tpu", ["device='tpu'", "cpu", "cuda"]),
        ("seeds", "2", ["comparison keys", "seeds"]),  # not a run key
        ("agent.lr", "nan", ["agent.lr='nan' is NaN"]),
        ("env.temperature", "NaN", ["env.temperature='NaN' is NaN"]),
        # Markets are seeded seed + n, evaluation markets seed + 1_000_000 + n, in int64.
        ("seed", str(2**63), ["must lie in [-2**63,", "1_000_000"]),
        ("seed", str(-(2**63) - 1), ["must lie in [-2**63,"]),
    ],
)
def test_bad_single_run_overrides_list_the_choices(key, value, expect):
    with pytest.raises(ConfigError) as err:
        apply_overrides(PRESETS["smoke"], [(key, value)], single_run=True)
    for text in expect:
        assert text in str(err.value), (text, str(err.value))


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("agents", "iql,rnadom", ["unknown agent 'rnadom'", "did you mean 'random'"]),
        ("envs", "recenv/Nope-v0", ["unknown env", "recenv/Market-v0"]),
        ("seeds", "two", ["seeds='two' is not an int"]),
        ("jobs", "0", ["jobs=0 must be >= 1"]),
        ("agent.nonsense", "1", ["none of the agents", "iql:", "random: ['seed']"]),
        ("sedes", "3", ["unknown key 'sedes'", "seeds"]),
        # The last seed's evaluation markets would pass int64 (smoke: 4 markets).
        ("seed", str(2**63 - 4 - 1_000_000), ["must lie in [-2**63,"]),
    ],
)
def test_bad_comparison_overrides_list_the_choices(key, value, expect):
    with pytest.raises(ConfigError) as err:
        apply_overrides(PRESETS["smoke"], [(key, value)])
    for text in expect:
        assert text in str(err.value), (text, str(err.value))


def test_cli_reports_config_errors(capsys):
    assert cli.main(["train", "--preset", "smoke", "--set", "env.horizon=long"]) == 2
    assert "env.horizon='long' is not an int" in capsys.readouterr().err
    assert cli.main(["train", "--preset", "quik"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'quik'" in err and "quick" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--sed", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--sed" in err and "--seed" in err and "valid options" in err
    assert cli.main(["train", "--seed", "x"]) == 2
    assert "is not an int" in capsys.readouterr().err


def test_a_value_only_the_agent_refuses_is_a_config_error_that_writes_nothing(tmp_path, capsys):
    """``agent.gamma=2`` passes the config's checks; IQL refuses it when the agent is built
    (``agent.lr=-1``, once the example, is now refused by the config's range check).
    ``train`` builds env and agents before it creates the run directory, and ``compare``
    builds each (env, agent) cell before its first run: a config error (exit 2, no trace) and
    nothing written, not a traceback after other agents' runs trained."""
    root = tmp_path / "runs"
    common = ["--preset", "smoke", "--root", str(root), "--set", "agent.gamma=2"]
    refusal = "recenv/Market-v0 with iql: gamma=2.0 (in [0, 1]) or target_tau="
    assert cli.main(["train", *common]) == 2
    assert refusal in capsys.readouterr().err  # the agent named once, not "iql: iql: ..."
    assert cli.main(["compare", *common, "--agents", "random,iql"]) == 2
    assert refusal in capsys.readouterr().err
    opponent = [*common, "--set", "run.opponent=popularity"]
    assert cli.main(["train", *opponent]) == 2
    assert "with iql-vs-popularity: iql: gamma=2.0" in capsys.readouterr().err
    assert not root.exists() or not any(root.iterdir())
    edge = 2**63 - 4 - 1_000_000  # the largest seed of smoke's 4 markets with evaluation
    smoke = PRESETS["smoke"]
    assert dataclasses.replace(smoke, run=dataclasses.replace(smoke.run, seed=edge - 1)).seeds == 2


def test_parse_value_types():
    assert parse_value("20_000", int, "k") == 20_000
    assert parse_value("1e3", int, "k") == 1000
    assert parse_value(3, float, "k") == 3.0
    assert parse_value("off", bool, "k") is False
    assert parse_value("a, b", tuple[str, ...], "k") == ("a", "b")
    assert parse_value("[1, 2]", tuple, "k") == (1, 2)
    with pytest.raises(ConfigError):
        parse_value(True, int, "k")
    with pytest.raises(ConfigError):
        parse_value("[1, 2", tuple, "k")


def test_env_field_types_match_market_config():
    """Every MarketConfig field can be set from a string of its type."""
    for f in dataclasses.fields(MarketConfig):
        apply_overrides(PRESETS["smoke"], [(f"env.{f.name}", str(f.default))], single_run=True)


def test_config_files(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text(
        'preset = "smoke"\nseed = 4\nagents = ["iql", "random"]\n'
        "[env]\nhorizon = 12\n[iql]\nlr = 0.01\n[run]\ntotal_steps = 80\n"
    )
    base, assignments = read_config_file(toml)
    assert base == "smoke"
    cfg = apply_overrides(PRESETS[base], assignments)
    assert cfg.run.seed == 4 and cfg.run.total_steps == 80
    assert dict(cfg.run.env_overrides)["horizon"] == 12
    assert cfg.run_config("recenv/Market-v0", "iql", 4).agent_kwargs()["lr"] == 0.01
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"env": {"horizon": "long"}}))
    _, assignments = read_config_file(bad)
    with pytest.raises(ConfigError, match="not an int"):
        apply_overrides(PRESETS["smoke"], assignments)
    (tmp_path / "x.yaml").write_text("seed: 1")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        read_config_file(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match=r"'.*missing\.toml' does not exist"):
        read_config_file(tmp_path / "missing.toml")
    (tmp_path / "a_dir.toml").mkdir()
    with pytest.raises(ConfigError, match=r"'.*a_dir\.toml' is a directory; give a \.toml"):
        read_config_file(tmp_path / "a_dir.toml")


def test_unreadable_config_text_is_a_config_error(tmp_path):
    """Text no parser takes is a ConfigError naming the file or key (the CLI's exit 2 with
    a message); a file not in UTF-8 and a nesting deeper than the parsers' recursion were
    bare UnicodeDecodeError / RecursionError tracebacks."""
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[env]\n# caf\xe9\nhorizon = 12\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml' is not UTF-8 text"):
        read_config_file(latin)
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    (tmp_path / "deep.toml").write_text(f"seed = {deep}\n")
    for name, kind in (("deep.json", "JSON"), ("deep.toml", "TOML")):
        with pytest.raises(ConfigError, match=f"not valid {kind}: nested too deeply"):
            read_config_file(tmp_path / name)
    with pytest.raises(ConfigError, match=r"agent\.hidden='\[\[.*\.\.\.' is not a JSON list"):
        apply_overrides(PRESETS["smoke"], [("agent.hidden", "[" * 5000 + "]" * 5000)])
    assert cli.main(["train", "--config", str(latin), "--root", str(tmp_path)]) == 2


def test_config_values_nest_at_most_max_nesting_deep(tmp_path):
    """A value nested deeper than config.MAX_NESTING is refused as "nested too deeply",
    whichever parser took it. Under Python 3.12+ json's C parser took a 5,000-deep list that
    3.11's refused, and the recursive walks after it raised a bare RecursionError (seen under
    3.13 in test_unreadable_config_text_is_a_config_error's agent.hidden case)."""
    n = config.MAX_NESTING
    assert config._loads("[" * n + "]" * n) is not None  # as deep as allowed
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        config._loads("[" * (n + 1) + "]" * (n + 1))
    with pytest.raises(ConfigError, match=r"agent\.hidden='\[\[.*' is not a JSON list: nested"):
        apply_overrides(PRESETS["smoke"], [("agent.hidden", "[" * (n + 1) + "]" * (n + 1))])
    deep = "[" * (n + 1) + "]" * (n + 1)
    (tmp_path / "deep.toml").write_text(f"seed = {deep}\n")
    (tmp_path / "deep.json").write_text(f'{{"seed": {deep}}}')
    for name, kind in (("deep.json", "JSON"), ("deep.toml", "TOML")):
        with pytest.raises(ConfigError, match=f"not valid {kind}: nested too deeply"):
            read_config_file(tmp_path / name)


def test_configs_round_trip_through_json():
    for p in PRESETS.values():
        d = json.loads(json.dumps(p.to_dict()))
        assert CompareConfig.from_dict(d) == p
        r = p.template_run()
        assert RunConfig.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ConfigError, match="valid keys"):
        RunConfig.from_dict({"seeed": 1})


def test_plugin_agent_names_resolve():
    """'module:attr' agents are accepted like registered names."""
    cfg = apply_overrides(
        PRESETS["smoke"], [("agent", "agents.baselines:RandomAgent")], single_run=True
    )
    assert cfg.template_run().agent == "agents.baselines:RandomAgent"
    assert "random" in agents.registered_agents()


def test_single_run_env_and_scenario_keys():
    """`train --env X` trains on X (a preset's env list is for `compare`), and env.KEY is
    checked against that env only."""
    cfg = apply_overrides(
        PRESETS["quick"], [("env", "recenv/Video-v0"), ("env.horizon", "30")], single_run=True
    ).template_run()
    assert cfg.env == "recenv/Video-v0" and dict(cfg.env_overrides) == {"horizon": 30}
    with pytest.raises(ConfigError, match="needs log=PATH"):
        apply_overrides(PRESETS["smoke"], [("env", "recenv/FromLog-v0")], single_run=True)


def test_describe_shows_a_default_factory_by_its_value(capsys):
    """CompareConfig.run has a default_factory: describe shows what it makes."""
    rows = {name: default for name, _, default, _ in config.field_help(CompareConfig)}
    assert rows["run"] == RunConfig()
    assert cli.main(["describe", "compare"]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.split()[:1] == ["run"]]
    assert "RunConfig()" in line and "MISSING" not in out
    assert config._default_text(RunConfig(seed=3)) == "RunConfig(seed=3)"


def test_section_of_maps_undotted_keys_to_run_or_compare():
    """One rule for `--set` and `tune_sweep --grid`: undotted keys are run fields, else
    comparison fields; a dotted key names its section."""
    assert config.section_of("total_steps") == ("run", "total_steps")
    assert config.section_of("agents") == ("compare", "agents")
    assert config.section_of("env.num_items") == ("env", "num_items")
    assert config.section_of("iql.lr") == ("iql", "lr")
    # An override table named without its section points at the section form.
    with pytest.raises(ConfigError, match=r"env\.KEY=VALUE"):
        config.apply_overrides(CompareConfig(), [("env_overrides", "{}")])


def test_a_comparison_too_large_to_hold_is_refused_before_anything_is_built():
    """seeds=10**12 built the list of seeds (and then of runs) until the machine ran out of
    memory and the OOM killer ended the process; now the grid's size is checked first."""
    base = PRESETS["smoke"]
    with pytest.raises(ConfigError, match=r"2,000,000,000,000 runs, more than 100,000"):
        apply_overrides(base, [("seeds", "1000000000000")])
    assert apply_overrides(base, [("seeds", "50000")]).seeds == 50_000  # 2 agents: 100,000
    # The last seed is still checked against int64 (markets are seeded seed + n).
    top = 2**63 - base.run.num_envs - 1_000_000  # the last valid seed (evaluation offset)
    last = top - 10 + 19_999
    with pytest.raises(ConfigError, match=rf"seed={last} must lie in \[-2\*\*63, {top}\]"):
        apply_overrides(base, [("run.seed", str(top - 10)), ("seeds", "20000")])


def test_threads_beyond_the_machines_cpus_are_a_config_error(tmp_path, capsys, monkeypatch):
    """``--threads 100000`` passed validation and crashed the process in
    torch.set_num_threads (SIGSEGV, exit 139); now more than 4 threads per CPU is refused,
    naming the field and the range, before anything is written."""
    monkeypatch.setattr(config.os, "cpu_count", lambda: 2)
    assert config.max_threads() == 8
    validate_run(RunConfig(agent="random", threads=8))
    with pytest.raises(ConfigError, match=r"threads=9 must lie in \[0, 8\] on this machine"):
        validate_run(RunConfig(agent="random", threads=9))
    root = tmp_path / "runs"
    argv = ["train", "--agent", "random", "--threads", "100000", "--root", str(root)]
    assert cli.main(argv) == 2
    assert "threads=100000 must lie in [0, 8]" in capsys.readouterr().err
    assert not root.exists()


@pytest.mark.parametrize("device", ["mps", "cuda:7"])
def test_a_device_this_machine_lacks_is_a_config_error(device, monkeypatch):
    """``--device mps`` passed validation and failed inside torch ("not linked with support
    for mps devices"); every device type is checked, naming the ones this machine has."""
    monkeypatch.setattr(config.torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        validate_run(RunConfig(agent="random", device=device))
    assert f"device={device!r} is not available here; devices on this machine: ['cpu']" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="device='meta' must be 'cpu', 'cuda', 'cuda:N'"):
        RunConfig(device="meta")


def test_a_duplicate_key_in_a_json_config_file_is_refused(tmp_path):
    """JSON keeps the last of two equal keys: ``{"seed": 1, "seed": 2}`` silently ran seed 2
    (TOML refuses them). The key and the file are named, in a table too."""
    for text, key in (
        ('{"seed": 1, "seed": 2}', "seed"),
        ('{"agent": {"lr": 0.1, "lr": 0.2}}', "lr"),
    ):
        path = tmp_path / "dup.json"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            read_config_file(path)
        assert str(path) in str(err.value) and f"duplicate key {key!r}" in str(err.value)
    with pytest.raises(ConfigError, match="duplicate key 'a'"):  # a --set value too
        parse_value('[{"a": 1, "a": 2}]', tuple, "agent.members")


@pytest.mark.parametrize(
    "text, field, spellings",
    [
        ('{"seed": 1, "run": {"seed": 2}}', "run.seed", ("seed", "run.seed")),
        ('{"env": {"num_agents": 4}, "env.num_agents": 3}', "env.num_agents", ("env.num_agents",)),
        ('{"seeds": 2, "compare": {"seeds": 3}}', "compare.seeds", ("seeds", "compare.seeds")),
        ("seed = 1\n[run]\nseed = 2\n", "run.seed", ("seed", "run.seed")),
    ],
)
def test_one_field_under_two_spellings_in_a_config_file_is_refused(
    tmp_path, text, field, spellings
):
    """A field given twice under two spellings (a top-level run field and its [run] key; a
    section's key and the dotted top-level key) was last-wins: one value silently lost (the
    run's config.json said 3 agents for a file that also said 4)."""
    path = tmp_path / ("dup.toml" if "=" in text else "dup.json")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_config_file(path)
    text = str(err.value)
    assert str(path) in text and f"sets {field} twice" in text
    assert all(repr(s) in text for s in spellings)


@pytest.mark.parametrize("spec", ["os:getcwd", "agents.base:ScoringAgent"])
def test_a_module_attr_that_is_no_agent_fails_before_a_run_directory_exists(spec, tmp_path, capsys):
    """It was a TypeError traceback (os:getcwd) or a NotImplementedError once training had
    started, leaving an unfinished run directory (agents.base:ScoringAgent)."""
    root = tmp_path / "runs"
    assert cli.main(["train", "--agent", spec, "--root", str(root)]) == 2
    assert f"agent {spec!r} resolves to" in capsys.readouterr().err
    assert not root.exists()


def test_a_misspelled_env_key_in_the_cli_gets_one_guess_and_names_the_run_fields(tmp_path):
    """Through the CLI the market's own message (with its guess) was followed by the CLI's
    second guess, and it named ``recenv.make_vec``'s options where the CLI has run fields."""
    from experiments.config import validate_env_overrides

    with pytest.raises(ConfigError) as err:
        validate_env_overrides("recenv/Market-v0", {"num_agent": 3})
    text = str(err.value)
    assert text.count("did you mean") == 1 and "'num_agents'" in text
    assert "--num-envs, --device, --seed, --compile" in text and "make_vec" not in text
