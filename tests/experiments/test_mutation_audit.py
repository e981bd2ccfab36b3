"""``experiments.mutation_audit``: its mutants fit today's tree, and a mutant planted in a
clone is caught or survives as the clone's tests say, with the file restored after it."""

from __future__ import annotations

import json
import subprocess

import pytest

from experiments import mutation_audit as ma


def test_every_mutant_fits_the_tree():
    """Each pattern occurs exactly once in its file (a refactor that moves one must move the
    mutant with it), changes something, and names a known suite whose files exist (a suite
    entry may be one test's node id, ``file::name``: that test must be in the file)."""
    assert ma.check_patterns(ma.REPO) == []
    assert set(ma.SUITE_NEEDS) <= set(ma.SUITES)
    for files in ma.SUITES.values():
        for f in files:
            path, _, name = f.partition("::")
            assert (ma.REPO / path).exists(), f
            assert not name or f"def {name}(" in (ma.REPO / path).read_text(), f


@pytest.mark.parametrize(
    ("rc", "stdout", "want"),
    [
        (0, "5 passed", "survived"),
        (1, "FAILED tests/test_x.py::test_y\n1 failed", "caught"),
        (2, "FAILED tests/test_x.py::test_y\n!!! xdist.dsession.Interrupted", "caught"),
        (2, "ERROR collecting tests/test_x.py", "caught"),
        (2, "interrupted: no failure reported", "error"),
        (4, "usage error", "error"),
        (5, "no tests ran", "error"),
    ],
)
def test_classify(rc, stdout, want):
    assert ma.classify(rc, stdout) == want


def _tiny_repo(path):
    """A git repo with one module and one test of it."""
    (path / "tests").mkdir(parents=True)
    (path / "pkg.py").write_text("def f():\n    return 1  # the answer\n")
    (path / "tests" / "test_pkg.py").write_text(
        "from pkg import f\n\n\ndef test_f():\n    assert f() == 1\n"
    )
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "."],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny"],
    ):
        subprocess.run(cmd, cwd=path, check=True)


def test_a_planted_mutant_is_caught_or_survives_and_the_file_comes_back(tmp_path, monkeypatch):
    repo = tmp_path / "src" / "repo"
    _tiny_repo(repo)
    (tmp_path / "src" / "shared").mkdir()  # the data folder beside the checkout
    monkeypatch.setattr(ma, "SUITES", {"tiny": ("tests",)})
    caught = ma.Mutant("answer", "pkg.py", "return 1", "return 2", "tiny", "wrong answer")
    survives = ma.Mutant("comment", "pkg.py", "# the answer", "# an answer", "tiny", "none")
    assert ma.check_patterns(repo, (caught, survives)) == []
    bad = (
        ma.Mutant("x", "pkg.py", "return", "return -", "nope", ""),
        ma.Mutant("y", "pkg.py", "yield", "r", "tiny", ""),
        ma.Mutant("y", "pkg.py", "f()", "f()", "tiny", ""),
        ma.Mutant("z", "pkg.py", "    return 1", "", "tiny", ""),  # a body left empty
    )
    assert ma.check_patterns(repo, bad) == [
        "x: unknown suite 'nope'; known: ['tiny']",
        "y: pattern occurs 0 times in pkg.py, expected once",
        "y: id used twice",
        "y: the change changes nothing",
        "z: the changed pkg.py does not compile: expected an indented block after function "
        "definition on line 1",
    ]

    work = tmp_path / "work"
    work.mkdir()
    root = ma.clone(repo, work)
    assert (work / "shared").resolve() == (tmp_path / "src" / "shared").resolve()
    before = (root / "pkg.py").read_text()
    got = ma.run_mutant(root, caught, workers=1, timeout=120)
    assert got["status"] == "caught" and "test_f" in got["failed"][0]
    assert (root / "pkg.py").read_text() == before
    got = ma.run_mutant(root, survives, workers=1, timeout=120)
    assert got["status"] == "survived" and got["failed"] == []
    assert (root / "pkg.py").read_text() == before
    assert (repo / "pkg.py").read_text() == before  # the source checkout is never touched

    # A suite whose tests need a module that is not installed: not run, said so.
    monkeypatch.setattr(ma, "SUITE_NEEDS", {"tiny": "no_such_module_of_the_audit"})
    got = ma.run_mutant(root, caught, workers=1, timeout=120)
    assert got == {
        "status": "skipped",
        "seconds": 0.0,
        "failed": [],
        "tail": ["needs no_such_module_of_the_audit"],
    }
    assert (root / "pkg.py").read_text() == before
    monkeypatch.setattr(ma, "SUITE_NEEDS", {})

    # --tests: other tests than the suite's. One that never calls f() lets the mutant live;
    # the node id of the one that does catches it.
    (root / "tests" / "test_other.py").write_text("def test_other():\n    assert True\n")
    got = ma.run_mutant(root, caught, 1, 120, tests=("tests/test_other.py",))
    assert got["status"] == "survived"
    got = ma.run_mutant(root, caught, 1, 120, tests=("tests/test_pkg.py::test_f",))
    assert got["status"] == "caught" and "test_f" in got["failed"][0]
    assert (root / "pkg.py").read_text() == before


def test_the_audit_never_overwrites_a_result(tmp_path, capsys):
    out = tmp_path / "done.json"
    out.write_text(json.dumps({"mutants": {}}))
    with pytest.raises(SystemExit) as e:
        ma.main(["--only", "dyn_visits", "--out", str(out)])
    assert e.value.code == 2
    assert "never overwritten" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"mutants": {}}
    with pytest.raises(SystemExit):
        ma.main(["--only", "no_such_mutant", "--out", str(tmp_path / "new.json")])
    assert "unknown mutant(s) ['no_such_mutant']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ma.main(["--only", "dyn_visits", "--tests", "tests/no_such_test.py::test_x"])
    assert "no such file(s) ['tests/no_such_test.py::test_x']" in capsys.readouterr().err
