"""Every result names the code that made it: :mod:`experiments.provenance` reads the commit
and whether tracked files differ from it, and the result scripts and benchmarks write both."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from experiments import bench_env, compare_agents, compare_marl, provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A one-commit repository that :mod:`experiments.provenance` reads instead of recenv's."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "tracked.txt").write_text("one\n")
    _git(root, "add", "tracked.txt")
    _git(root, "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "ROOT", root)
    return root


@needs_git
def test_git_state_names_this_checkout_head():
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=provenance.ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    state = provenance.git_state()
    assert state["git"] == head.stdout.strip()
    assert len(state["git"]) == 40 and isinstance(state["git_dirty"], bool)


@needs_git
def test_git_state_says_when_tracked_files_differ_from_the_commit(repo):
    clean = provenance.git_state()
    assert len(clean["git"]) == 40 and clean["git_dirty"] is False
    (repo / "new_result.json").write_text("{}")  # untracked: results being written
    assert provenance.git_state() == clean
    (repo / "tracked.txt").write_text("two\n")
    assert provenance.git_state() == {"git": clean["git"], "git_dirty": True}


@needs_git
def test_git_state_outside_a_checkout_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.git_state() == {"git": None, "git_dirty": None}


def test_git_state_without_git_is_none(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.git_state() == {"git": None, "git_dirty": None}


def test_versions_name_the_packages_and_none_for_a_missing_one():
    import numpy
    import torch

    v = provenance.versions("json", "no_such_module_here")
    assert v["torch"] == torch.__version__ and v["numpy"] == numpy.__version__
    assert v["no_such_module_here"] is None
    assert {"python", "recenv", "git", "git_dirty"} <= set(v)


def test_code_line_says_commit_and_whether_it_alone_reproduces_the_result():
    v = {"git": "0123456789abcdef" * 2 + "01234567", "torch": "2.13.0", "python": "3.11.7"}
    line = provenance.code_line({**v, "git_dirty": False})
    assert line == "Code: commit `0123456789ab`; torch 2.13.0, Python 3.11.7."
    dirty = provenance.code_line({**v, "git_dirty": True})
    assert "with uncommitted changes" in dirty and "does not reproduce" in dirty
    bare = provenance.code_line({"git": None, "recenv": "0.1.0", "torch": "2.13.0"})
    assert "recenv 0.1.0 (not a git checkout)" in bare


@needs_git
def test_result_scripts_write_the_commit(repo, tmp_path, monkeypatch):
    """compare_agents and compare_marl put the commit in their JSON and report."""
    expected = provenance.git_state()
    monkeypatch.setattr(compare_agents, "table_experiment", lambda args: {"competitive": {}})
    monkeypatch.setattr(compare_agents, "table_markdown", lambda results, env_agents: "TABLE\n")
    out = tmp_path / "agents"
    compare_agents.main(["--budget", "0", "--seeds", "1", "--agents", "random", "--out", str(out)])
    payload = json.loads(out.with_suffix(".json").read_text())
    assert {k: payload["versions"][k] for k in expected} == expected
    assert f"commit `{expected['git'][:12]}`" in out.with_suffix(".md").read_text()

    def comparison(args, seeds, head):
        return {**head, "rows": []}, "REPORT\n"

    monkeypatch.setattr(compare_marl, "_comparison", comparison)
    marl = tmp_path / "marl"
    assert compare_marl.main(["--agents", "random", "--out", str(marl)]) == 0
    payload = json.loads((marl / "results.json").read_text())
    assert {k: payload["versions"][k] for k in expected} == expected
    assert (
        (marl / "report.md")
        .read_text()
        .endswith(
            f"commit `{expected['git'][:12]}`; "
            + (f"torch {payload['versions']['torch']}, Python {payload['versions']['python']}.\n")
        )
    )


@needs_git
def test_benchmark_provenance_names_the_commit(repo):
    p = bench_env.provenance()
    assert p["git"] == provenance.git_state()["git"] and p["git_dirty"] is False
