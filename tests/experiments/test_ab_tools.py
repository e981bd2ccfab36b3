"""The A/B tools' arithmetic: what ``ab_commits`` and ``ab_forms`` report from known rates.

Every "gained 1.05x, ahead in 22 of 24" in ``experiments/PERFORMANCE.md`` is one of these
scripts' verdicts, so their order of runs (ABBA), the direction of each ratio, the pairing
of rounds and the pooling of build orders are pinned here with stand-in timers: no market
is built and nothing is timed (the end-to-end runs are in ``test_bench.py``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import ab_commits, ab_forms

# Each round's rates of each side, [round][side]: head ahead in rounds 1 and 3, behind in 2;
# the medians' ratio (95 / 100) disagrees with the majority of rounds on purpose.
ROUND_RATES = [{"base": 100.0, "head": 120.0}, {"base": 100.0, "head": 90.0}]
ROUND_RATES += [{"base": 100.0, "head": 95.0}]


@pytest.fixture
def stub_trees(monkeypatch, tmp_path):
    """``ab_commits`` with its git calls and child runs stood in for: each run returns the
    rate ``ROUND_RATES`` gives its round and side; ``calls`` records the order of sides."""
    calls: list[str] = []
    trees = {}

    @contextlib.contextmanager
    def checkout(rev):
        tree = tmp_path / f"tree-{rev}"
        trees[tree] = "base" if rev == "BASE" else "head"
        yield tree

    def time_tree(tree, *args):
        side = "head" if tree == ab_commits.ROOT else trees[tree]
        r = sum(1 for s in calls if s == side)  # this side's round
        calls.append(side)
        return {"rate": ROUND_RATES[r][side], "torch": f"torch-{side}", "recenv": str(tree)}

    monkeypatch.setattr(ab_commits, "checkout", checkout)
    monkeypatch.setattr(ab_commits, "_git", lambda *args, **kw: args[-1])
    monkeypatch.setattr(ab_commits, "time_tree", time_tree)
    return calls


def test_ab_commits_alternates_sides_and_reports_head_over_base(stub_trees):
    result = ab_commits.compare("BASE", None, figure="batched", rounds=3, log=lambda _: None)
    # ABBA: a machine that drifts during the runs favours neither side.
    assert stub_trees == ["base", "head", "head", "base", "base", "head"]
    assert result["rates"] == {"base": [100.0] * 3, "head": [120.0, 90.0, 95.0]}
    assert result["medians"] == {"base": 100.0, "head": 95.0}
    assert result["head_over_base"] == pytest.approx(0.95)  # head / base, not base / head
    assert result["round_ratios"] == pytest.approx([1.2, 0.9, 0.95])
    assert result["head_ahead"] == 1
    assert result["torch"] == {"base": ["torch-base"], "head": ["torch-head"]}
    assert result["commits"] == {"base": "BASE", "head": "working tree"}


def test_ab_commits_head_commit_gets_its_own_tree(stub_trees):
    result = ab_commits.compare("BASE", "HEAD2", figure="face", rounds=2, log=lambda _: None)
    assert stub_trees == ["base", "head", "head", "base"]
    assert result["commits"] == {"base": "BASE", "head": "HEAD2"}
    assert result["num_envs"] == 1 and result["steps"] == 2000  # the face's defaults
    assert result["head_ahead"] == 1 and result["head_over_base"] == pytest.approx(1.05)


def test_ab_commits_prints_the_verdict_and_writes_it_once(stub_trees, tmp_path, capsys):
    out = tmp_path / "ab.json"
    result = ab_commits.main(["--base", "BASE", "--figure", "batched", "--out", str(out)])
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "head/base" in ln]
    assert "head/base 0.95x" in line and "head ahead in 1 of 3 rounds" in line
    saved = json.loads(out.read_text())
    assert saved["round_ratios"] == pytest.approx(result["round_ratios"])
    assert saved["head_ahead"] == 1
    with pytest.raises(SystemExit):  # never overwritten
        ab_commits.main(["--base", "BASE", "--figure", "batched", "--out", str(out)])


def _stub_env(num_envs: int, seconds: float) -> SimpleNamespace:
    return SimpleNamespace(num_envs=num_envs, seconds=seconds)


def test_ab_forms_paired_rounds_alternate_and_carry_each_sides_observation(monkeypatch):
    calls = []

    def timed_steps(env, obs, steps):
        calls.append((env.name, obs))
        return env.seconds * steps, obs + 1  # the next turn starts where this one ended

    monkeypatch.setattr(ab_forms, "timed_steps", timed_steps)
    base, head = _stub_env(8, 0.004), _stub_env(8, 0.002)
    base.name, head.name = "base", "head"
    rates = ab_forms.paired_rounds((base, 0), (head, 100), rounds=4, steps=5)
    assert [name for name, _ in calls] == ["base", "head", "head", "base"] * 2
    assert [obs for name, obs in calls if name == "base"] == [0, 1, 2, 3]
    assert [obs for name, obs in calls if name == "head"] == [100, 101, 102, 103]
    # env-steps/s: markets x steps over the turn's seconds.
    assert rates["base"] == pytest.approx([8 * 5 / (0.004 * 5)] * 4)  # 2,000
    assert rates["head"] == pytest.approx([4_000.0] * 4)


def test_ab_forms_summary_pairs_rounds_head_over_base():
    rates = {"base": [100.0, 100.0, 100.0], "head": [120.0, 90.0, 95.0]}
    s = ab_forms._summary(rates)
    assert s["ratios"] == pytest.approx([1.2, 0.9, 0.95])
    assert s["median_ratio"] == pytest.approx(0.95)
    assert s["head_ahead"] == 1
    assert s["env_steps_per_s"] == rates


def test_ab_forms_builds_the_base_inside_its_forms_in_the_asked_order(monkeypatch):
    """``run_order`` builds the base with the named forms in effect (and only the base), in
    the order asked."""
    active: list[str] = []
    built = []

    @contextlib.contextmanager
    def form(name):
        active.append(name)
        yield
        active.remove(name)

    monkeypatch.setitem(ab_forms.FORMS, "probe-a", lambda: form("a"))
    monkeypatch.setitem(ab_forms.FORMS, "probe-b", lambda: form("b"))

    def warmed_env(env_id, num_envs, compile, **config):
        built.append((tuple(active), num_envs, compile, config))
        return SimpleNamespace(num_envs=num_envs, forms=tuple(active)), 0

    monkeypatch.setattr(ab_forms, "warmed_env", warmed_env)
    monkeypatch.setattr(ab_forms, "paired_rounds", lambda base, head, r, s: (base, head))
    base, head = ab_forms.run_order(["probe-a", "probe-b"], "E", 16, 2, 3, "head-first", {"x": 1})
    assert built == [((), 16, True, {"x": 1}), (("a", "b"), 16, True, {"x": 1})]
    assert base[0].forms == ("a", "b") and head[0].forms == ()
    built.clear()
    ab_forms.run_order(["probe-a"], "E", 16, 2, 3, "base-first")
    assert [forms for forms, *_ in built] == [("a",), ()]
    assert active == []


def test_ab_forms_pools_both_build_orders(monkeypatch, tmp_path, capsys):
    """The verdict pools the rounds of both build orders, each from its own child."""
    by_order = {
        "base-first": {"base": [100.0, 100.0], "head": [110.0, 104.0]},
        "head-first": {"base": [100.0, 100.0], "head": [98.0, 120.0]},
    }
    children = []

    def run_child(*arguments):
        children.append(arguments)
        return by_order[arguments[-2]]

    monkeypatch.setattr(ab_forms, "_run_child", run_child)
    out = tmp_path / "ab_forms.json"
    monkeypatch.setattr(ab_forms, "result_path", lambda name, path: out)
    result = ab_forms.main(["--base", "same", "--num-envs", "32", "--rounds", "2"])
    assert [args[-2] for args in children] == ["base-first", "head-first"]
    assert all(args[2] == 32 and args[3] == 2 for args in children)
    assert result["ratios"] == pytest.approx([1.10, 1.04, 0.98, 1.20])
    assert result["median_ratio"] == pytest.approx(1.07)  # of all four rounds
    assert result["head_ahead"] == 3
    assert result["by_order"]["head-first"]["head_ahead"] == 1
    assert "median 1.070x, head ahead in 3 of 4 rounds" in capsys.readouterr().out
    assert json.loads(Path(out).read_text())["median_ratio"] == pytest.approx(1.07)
