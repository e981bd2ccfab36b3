"""Damaged run checkpoints that still carry the right version number.

A checkpoint edited by hand or by a foreign tool (a key deleted, a value of another type, a
tensor of another shape, a dict replaced by a list, an agent state without one of its
learners), cut short, or a valid torch file holding something else, is refused by ``resume``
(and the command line: exit 1, an ``error:`` line) with a :class:`RunError` naming the file,
the offending key and what was expected, before anything is restored or written: the run
directory is left byte for byte as it was, and the run still resumes from an earlier
checkpoint. ``evaluate`` and ``agents.load_agent`` refuse a damaged agent state by name
too. These used to be raw KeyError/TypeError/RuntimeError tracebacks, or (a tensor of
another shape in the env's snapshot, a loop counter of another type) were accepted and failed
only in the middle of training, after the resumed run had written into its directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from experiment_helpers import killed_copy, tiny_run, tree

import agents
from experiments import cli, runner
from experiments.runner import RunError

CFG = dict(total_steps=120, checkpoint_every=40, eval_episodes=2)
GOOD = "step_000000000040.pt"  # the earlier checkpoint, left intact
BAD = "step_000000000080.pt"  # the newest checkpoint of the killed copy, damaged


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished IQL run (two env agents: two learners) with checkpoints at 40, 80, 120."""
    root = tmp_path_factory.mktemp("done") / "runs"
    return runner.train(tiny_run(root, **CFG)).path


def killed(done: Path, where: Path) -> Path:
    """A copy of ``done`` as a process killed after its step-80 checkpoint leaves it."""
    return killed_copy(done, where, 80)


def edit(path: Path, damage: Callable[[dict], None]) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    damage(payload)
    torch.save(payload, path)


def damaged(done: Path, where: Path, damage: tuple) -> tuple[Path, Path, tuple, dict]:
    """A :func:`killed` copy whose newest checkpoint has ``damage`` (``(edit, names)``) done
    to it: the run, that checkpoint, the names its refusal must give, the run's tree."""
    run = killed(done, where)
    bad = run / "checkpoints" / BAD
    fn, names = damage
    edit(bad, fn)
    return run, bad, names, tree(run)


def _drop(d: dict, key: str) -> None:
    del d[key]


def _drop_learner(learners: dict) -> None:
    for k in [k for k in learners if k.startswith("1.")]:
        del learners[k]


def _wrong_shape(d: dict, key: str, shape=(3, 3)) -> None:
    d[key] = torch.zeros(shape, dtype=d[key].dtype)


def _set_pair(encoded: dict, key: str, value) -> None:
    """Set ``key`` of a dict as a snapshot encodes it (``{"value": [[key, value], ...]}``)."""
    (pair,) = [p for p in encoded["value"] if p[0] == key]
    pair[1] = value


def _as_list(d: dict, key: str) -> None:
    d[key] = list(d[key].values())


# (damage, what the message must name): each one used to be a traceback, or accepted.
DAMAGES: dict[str, tuple[Callable[[dict], None], tuple[str, ...]]] = {
    "loop deleted": (lambda p: _drop(p, "loop"), ("'loop'", "missing")),
    # Not damage: an IQL run checkpointed before slate_selection existed (it ran top-K).
    "header from before slate_selection": (
        lambda p: _drop(p["header"]["config"], "slate_selection"),
        ("config.slate_selection: 'top_k', this agent's 'greedy'", "start it over"),
    ),
    "env snapshot deleted": (lambda p: _drop(p, "env_snapshot"), ("'env_snapshot'", "missing")),
    "loop counter deleted": (lambda p: _drop(p["loop"], "iters"), ("'iters'", "missing")),
    "rng section deleted": (lambda p: _drop(p["rng"], "numpy"), ("'numpy'", "missing")),
    "env tensor deleted": (lambda p: _drop(p["env_snapshot"], "users"), ("'users'", "missing")),
    "loop counter a str": (lambda p: p["loop"].update(steps="40"), ("'steps'", "str", "int")),
    "curve point a str": (lambda p: p["loop"].update(curve=["x"]), ("'curve'", "str", "dict")),
    "numpy rng position a str": (
        lambda p: p["rng"]["numpy"].update(pos="624"),
        ("'pos'", "str", "int"),
    ),
    "env tensor a number": (
        lambda p: p["env_snapshot"].update(users=1.5),
        ("'users'", "float", "tensor"),
    ),
    "learner weight of another shape": (
        lambda p: _wrong_shape(p["state"]["learners"], "0.q.item.0.weight"),
        ("'0.q.item.0.weight'", "(3, 3)", "(16, 94)"),
    ),
    "env tensor of another shape": (
        lambda p: p["env_snapshot"]["users"].update(value=torch.zeros(2, 2)),
        ("'users'", "(2, 2)", "(4, 8, 80)"),
    ),
    "env tensor of another dtype": (
        lambda p: p["env_snapshot"]["users"].update(value=torch.zeros(4, 8, 80).double()),
        ("'users'", "float64", "float32"),
    ),
    "torch rng state of another shape": (
        lambda p: _wrong_shape(p["rng"], "torch", (10,)),
        ("'torch'", "(10,)", "(5056,)"),
    ),
    "env snapshot a list": (lambda p: _as_list(p, "env_snapshot"), ("'env_snapshot'", "dict")),
    "loop a list": (lambda p: _as_list(p, "loop"), ("'loop'", "list", "dict")),
    "learner state a list": (
        lambda p: _as_list(p["state"], "learners"),
        ("'learners'", "list", "dict"),
    ),
    "rng section a list": (lambda p: _as_list(p["rng"], "numpy"), ("'numpy'", "list", "dict")),
    "python rng state cut short": (
        lambda p: p["rng"]["python"].update(state=[1, 2, 3]),
        ("rng['python']['state'] is a list of 3 values", "expected 625 ints"),
    ),
    "python rng state of floats": (
        lambda p: p["rng"]["python"].update(state=[float(v) for v in p["rng"]["python"]["state"]]),
        ("rng['python']['state'] is a list of 625 values", "expected 625 ints"),
    ),
    "agent state without a learner": (
        lambda p: _drop_learner(p["state"]["learners"]),
        ("'learners'", "'1.q.item.0.weight'", "missing"),
    ),
    "agent snapshot without a learner": (
        lambda p: _drop_learner(p["agent_snapshot"]["learners"]["value"]),
        ("'learners'", "'1.q.item.0.weight'", "missing"),
    ),
    "agent snapshot without an optimizer": (
        lambda p: p["agent_snapshot"]["optimizers"].pop(),
        ("'optimizers'", "1", "2"),
    ),
    "loop steps disagree with the run's": (
        lambda p: p["loop"].update(steps=p["loop"]["steps"] + 4),
        ("run['steps'] = 80", "loop['steps'] = 84"),
    ),
    # Values of the right kind that trained on (NaN weights, a negative learning rate) or
    # failed at the first update (a replay position past the capacity: accepted silently).
    "learner weight NaN (a diverged run)": (
        lambda p: p["state"]["learners"]["0.q.item.0.weight"].view(-1)[:3].fill_(float("nan")),
        ("['learners']['0.q.item.0.weight'] holds 3 non-finite values", "diverged"),
    ),
    "optimizer learning rate negative": (
        lambda p: p["agent_snapshot"]["optimizers"][0]["value"]["param_groups"][0].update(lr=-1.0),
        ("'agent_snapshot'", "optimizers[0]", "Invalid learning rate: -1.0"),
    ),
    "optimizer setting deleted": (
        lambda p: _drop(p["agent_snapshot"]["optimizers"][1]["value"]["param_groups"][0], "eps"),
        ("optimizers[1]", "lacks ['eps']"),
    ),
    "replay position past the capacity": (
        lambda p: _set_pair(p["agent_snapshot"]["buffers"][0]["value"], "pos", 10**6),
        ("'agent_snapshot'", "replay buffer", "pos=1000000 is outside"),
    ),
    "update counter negative": (
        lambda p: p["state"].update(updates=-3),
        ("'state'", "state['updates'] is -3; expected a whole number >= 0"),
    ),
    "steps disagree with iters": (
        lambda p: (p["loop"].update(steps=84), p["run"].update(steps=84)),
        ("loop['steps'] = 84", "loop['iters']"),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_refused_by_file_and_key_and_changes_nothing(
    finished, tmp_path, capsys, damage
):
    run, bad, names, before = damaged(finished, tmp_path, DAMAGES[damage])
    with pytest.raises(RunError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert str(bad) in msg, msg
    for name in names:
        assert name in msg, (name, msg)
    assert "No file was changed or removed" in msg and GOOD in msg, msg
    assert tree(run) == before
    # The command line: an error line naming the file, no traceback, exit 1 (a RunError).
    assert cli.main(["resume", str(run)]) == 1
    out = capsys.readouterr().err
    assert out.startswith("error:") and str(bad) in out and "Traceback" not in out, out
    assert tree(run) == before


@pytest.mark.parametrize("how", ["truncated", "foreign dict", "foreign list", "empty"])
def test_a_cut_short_or_foreign_file_is_refused_by_name(finished, tmp_path, how):
    run = killed(finished, tmp_path)
    bad = run / "checkpoints" / BAD
    if how == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        names = ("corrupt or unreadable",)
    elif how == "foreign dict":  # a valid torch file: someone else's weights
        torch.save({"model": {"w": torch.zeros(3)}, "epoch": 7}, bad)
        names = ("'header'",)
    elif how == "foreign list":
        torch.save([torch.zeros(3)], bad)
        names = ("'header'",)
    else:
        bad.write_bytes(b"")
        names = ("corrupt or unreadable",)
    before = tree(run)
    with pytest.raises(RunError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert str(bad) in msg and all(n in msg for n in names), msg
    assert "No file was changed or removed" in msg and GOOD in msg, msg
    assert tree(run) == before


def test_a_restore_that_fails_part_way_is_a_run_error_chained_to_its_cause(
    finished, tmp_path, monkeypatch
):
    """A checkpoint of the right structure whose state still does not apply (here: an agent
    that refuses it) is a RunError naming the file and the part being restored, chained to
    the original exception; the half-restored trainer is dropped, nothing is written."""
    run = killed(finished, tmp_path)
    before = tree(run)

    def refuse(self, state):
        raise RuntimeError("Error(s) in loading state_dict: size mismatch for w")

    monkeypatch.setattr(agents.agent_class("iql"), "load_state_dict", refuse)
    with pytest.raises(RunError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert str(run / "checkpoints" / BAD) in msg and "'state'" in msg, msg
    assert "size mismatch for w" in msg and "No file was changed or removed" in msg, msg
    assert isinstance(err.value.__cause__, RuntimeError)
    assert tree(run) == before
    # A programming error is not dressed up as a damaged checkpoint.
    monkeypatch.setattr(
        agents.agent_class("iql"),
        "load_state_dict",
        lambda self, state: undefined_name,  # noqa: F821
    )
    with pytest.raises(NameError):
        runner.resume(run)
    assert tree(run) == before


def test_after_a_refusal_the_earlier_checkpoint_resumes_to_the_uninterrupted_result(
    finished, tmp_path
):
    run = killed(finished, tmp_path)
    edit(run / "checkpoints" / BAD, lambda p: p["env_snapshot"]["users"].update(value=None))
    with pytest.raises(RunError, match="'users'"):
        runner.resume(run)
    res = runner.resume(run, checkpoint=run / "checkpoints" / GOOD)
    done = json.loads((finished / "summary.json").read_text())
    assert {k: v for k, v in res.summary.items() if k not in ("timing", "run")} == {
        k: v for k, v in done.items() if k not in ("timing", "run")
    }


# (damage, what the message must name) for the agent part that evaluate and load_agent read.
AGENT_DAMAGES: dict[str, tuple[Callable[[dict], None], tuple[str, ...]]] = {
    "learner weight of another shape": (
        lambda p: _wrong_shape(p["state"]["learners"], "0.q.item.0.weight"),
        ("0.q.item.0.weight",),
    ),
    "agent state without a learner": (
        lambda p: _drop_learner(p["state"]["learners"]),
        ("1.q.item.0.weight",),
    ),
    "learner state a list": (lambda p: _as_list(p["state"], "learners"), ("state",)),
    "agent state a list": (lambda p: p.update(state=[]), ("state",)),
    "header config a list": (
        lambda p: p["header"].update(config=[]),
        ("header['config']", "expected a dict"),
    ),
    "header agent ids a number": (lambda p: p["header"].update(agent_ids=5), ("header",)),
    "run config deleted": (lambda p: _drop(p["run"], "config"), ("config",)),
    "run config a list": (lambda p: p["run"].update(config=[]), ("run['config']", "list")),
}
# What evaluate reads beyond agents.load_agent (the run's own config).
EVALUATE_ONLY = ("run config deleted", "run config a list")


@pytest.mark.parametrize("damage", list(AGENT_DAMAGES))
def test_evaluate_and_load_agent_refuse_a_damaged_agent_state_by_name(finished, tmp_path, damage):
    run, bad, names, before = damaged(finished, tmp_path, AGENT_DAMAGES[damage])
    with pytest.raises(RunError) as err:
        runner.evaluate_checkpoint(bad, episodes=2, root=tmp_path / "evals", quiet=True)
    msg = str(err.value)
    assert str(bad) in msg and all(n in msg for n in names), msg
    assert not (tmp_path / "evals").exists()
    if damage in EVALUATE_ONLY:
        return
    env = runner.make_env(runner.read_run_config(run))
    with pytest.raises(ValueError) as err:
        agents.load_agent(bad, env)
    msg = str(err.value)
    assert str(bad) in msg and all(n in msg for n in names), msg
    assert tree(run) == before


def test_a_valid_checkpoint_still_resumes_exactly(finished, tmp_path):
    """The checks refuse nothing a run writes: the newest checkpoint resumes to the
    uninterrupted result."""
    run = killed(finished, tmp_path)
    res = runner.resume(run)
    assert res.summary["timing"]["resumed_from"] == [BAD]
    done = json.loads((finished / "summary.json").read_text())
    assert res.summary["eval"] == done["eval"] and res.summary["train"] == done["train"]
