"""The result scripts (``experiments.compare_agents``, ``experiments.compare_marl``) reserve
their output before any work: of two invocations with one ``--out``, the second is refused at
once (neither overwrites the other, none loses its work at the end), and a run that fails
leaves nothing that looks like results. The experiments themselves are replaced by stubs."""

from __future__ import annotations

import json

import pytest

from experiments import compare_agents, compare_marl

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
