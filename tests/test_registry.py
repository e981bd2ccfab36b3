"""The registry and the scenario modules (DESIGN §2-§4, STYLE "one registry per kind"): every
registered id resolves to a scenario module that is its own documentation page and runs on its
own; the core keeps its dependency rule."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import recenv
from recenv.scenarios import SCENARIOS

ROOT = Path(recenv.__file__).resolve().parent


def _module_of(env_id: str) -> str:
    return recenv.spec(env_id).entry_point.partition(":")[0]


def test_every_scenario_is_registered():
    """Every module listed in ``recenv.scenarios.SCENARIOS`` is registered under its id."""
    assert set(SCENARIOS) <= set(recenv.registered_ids())
    for env_id, module in SCENARIOS.items():
        assert _module_of(env_id) == module


def test_registered_id_resolves(env_id, small):
    """Each id is ``namespace/Name-vN``; its entry point resolves to a builder; its module is
    its page (docstring naming the env, with a version history) and provides the PettingZoo
    factories ``parallel_env`` and ``env``, which build this env."""
    name = env_id.split("/")[-1]
    assert "/" in env_id and "-v" in name and name.rsplit("-v", 1)[1].isdigit()
    spec = recenv.spec(env_id)
    assert callable(spec.builder())
    mod = importlib.import_module(_module_of(env_id))
    assert mod.__doc__ and name in mod.__doc__ and "Version history" in mod.__doc__
    kwargs = small(env_id)
    par = mod.parallel_env(seed=0, **kwargs)
    assert isinstance(par, recenv.MarketParallelEnv) and par.env_id == env_id
    aec = mod.env(seed=0, **kwargs)
    assert aec.unwrapped.env_id == env_id
    assert sorted(aec.possible_agents) == sorted(par.possible_agents)


def test_unknown_id_lists_registered_ids():
    """``spec`` of an unknown id raises ValueError listing the registered ids."""
    with pytest.raises(ValueError) as err:
        recenv.spec("recenv/Nothing-v9")
    for env_id in recenv.registered_ids():
        assert env_id in str(err.value)


def _demo_modules() -> list[str]:
    """Scenario modules of registered ids that have a ``__main__`` demo."""
    out = []
    for env_id in recenv.registered_ids():
        module = _module_of(env_id)
        source = Path(importlib.import_module(module).__file__).read_text()
        if '__name__ == "__main__"' in source and module not in out:
            out.append(module)
    return out


@pytest.mark.parametrize("module", _demo_modules())
def test_scenario_demo_runs(module):
    """``python -m <scenario module>`` (e.g. ``python -m recenv.scenarios.market``: the oracle
    against random for one episode) runs to completion in a subprocess and prints each agent's
    return."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT.parent,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "agent_0" in result.stdout


def test_market_demo_exists():
    """Market-v0's module has its demo (DESIGN: every scenario runs on its own)."""
    assert "recenv.scenarios.market" in _demo_modules()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_imports_torch_and_numpy_only():
    """``recenv/core`` imports torch, numpy, the standard library and itself only — no
    PettingZoo, Gymnasium, RL or logging library (DESIGN §2)."""
    allowed_roots = {"torch", "numpy"} | set(sys.stdlib_module_names)
    for path in sorted((ROOT / "core").glob("*.py")):
        for name in _imports(path):
            root = name.split(".")[0]
            ok = root in allowed_roots or name == "recenv.core" or name.startswith("recenv.core.")
            assert ok, f"{path.name} imports {name}"


def test_recenv_never_imports_agents_or_experiments():
    """Dependency direction ``experiments -> agents -> recenv``: nothing in ``recenv`` imports
    ``agents`` or ``experiments``."""
    for path in sorted(ROOT.rglob("*.py")):
        for name in _imports(path):
            root = name.split(".")[0]
            assert root not in ("agents", "experiments"), f"{path} imports {name}"


@pytest.mark.parametrize(
    "new_id,entry_point,pattern",
    [
        ("audit/Thing-vX", "recenv.scenarios.market:build", "namespace/Name-vN"),
        ("audit/Thing-v", "recenv.scenarios.market:build", "namespace/Name-vN"),
        ("Thing-v0", "recenv.scenarios.market:build", "namespace/Name-vN"),
        ("audit/-v0", "recenv.scenarios.market:build", "namespace/Name-vN"),
        ("a/b/Thing-v0", "recenv.scenarios.market:build", "namespace/Name-vN"),
        ("audit/Thing-v0", "recenv.scenarios.market", "module:builder"),
        ("audit/Thing-v0", ":build", "module:builder"),
    ],
)
def test_register_refuses_malformed_ids_and_entry_points(new_id, entry_point, pattern):
    """``register`` refuses an id that is not ``namespace/Name-vN`` (N digits) and an entry
    point that is not ``"module:builder"``, naming the expected form, and registers nothing.

    Regression test: ``"audit/Thing-vX"`` and ``"audit/Thing-v"`` passed the substring
    check, and an entry point without ``:`` was accepted and failed only at ``make`` with
    ``AttributeError: module ... has no attribute ''``."""
    before = recenv.registered_ids()
    with pytest.raises(ValueError, match=pattern):
        recenv.register(new_id, entry_point)
    assert recenv.registered_ids() == before
