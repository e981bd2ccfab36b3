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


_LABENVS = (
    '"""Lab/Shop-v0: Market-v0 with three agents (a plug-in scenario\'s page)."""\n'
    "from recenv.scenarios.market import build as _build\n\n\n"
    "def build(num_envs=1, device='cpu', seed=None, **config):\n"
    "    return _build(num_envs=num_envs, device=device, seed=seed, "
    "**{'num_agents': 3, **config})\n"
)


def _install_env_plugin(
    root: Path, entries: dict[str, str], package: str = "labenvs", source: str = _LABENVS
) -> Path:
    """A package ``package`` (``source`` its ``__init__.py``) and its ``.dist-info`` (as pip
    installs one) declaring ``entries`` (id -> builder) in the ``recenv.envs`` group, under
    ``root``; put ``root`` on sys.path."""
    pkg = root / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text(source)
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[recenv.envs]\n{lines}")
    return root


def test_an_installed_scenario_plugin_is_found_by_id(tmp_path, monkeypatch):
    """A package declaring an id in the ``recenv.envs`` entry-point group: the id is listed,
    made on both faces without any code of one's own running first, and accepted by the
    experiments CLI's env check; a fresh process (a worker, an env runner) finds it too.
    Before, such an id reached the CLI only through a wrapper script that registered it."""
    from experiments.config import check_env_id

    root = _install_env_plugin(
        tmp_path, {"lab/Shop-v0": "labenvs:build", "lab/Broken-v0": "labenvs build"}
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(recenv.registry, "_REGISTRY", dict(recenv.registry._REGISTRY))
    assert "lab/Shop-v0" in recenv.registered_ids()
    env = recenv.make_vec("lab/Shop-v0", num_envs=2, seed=0)
    assert env.config.num_agents == 3
    assert recenv.make("lab/Shop-v0", seed=0).possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert recenv.spec("lab/Shop-v0").pz_doc == "labenvs"
    assert check_env_id("lab/Shop-v0") == "lab/Shop-v0"
    with pytest.raises(ValueError, match=r"'lab/Broken-v0' is the plug-in 'labenvs build'.*"
                       r"labenvs 0.1.*module:builder"):  # fmt: skip
        recenv.make_vec("lab/Broken-v0", num_envs=1)
    code = "import recenv; print(recenv.make_vec('lab/Shop-v0', num_envs=1).config.num_agents)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


# A plug-in package with no module docstring: one builder documented, one not.
_UNDOCUMENTED = (
    "from recenv.scenarios.market import build as _build\n\n\n"
    "def documented(num_envs=1, device='cpu', seed=None, **config):\n"
    '    """# Doc-v0\n\n    Market-v0 with three agents, documented by its builder."""\n'
    "    return _build(num_envs=num_envs, device=device, seed=seed, "
    "**{'num_agents': 3, **config})\n\n\n"
    "def bare(num_envs=1, device='cpu', seed=None, **config):\n"
    "    return _build(num_envs=num_envs, device=device, seed=seed, "
    "**{'num_agents': 3, 'slate_size': 2, **config})\n"
)


def test_a_plugin_without_a_module_docstring_still_has_a_page(tmp_path, monkeypatch):
    """A plug-in whose module has no docstring: the page (the env's ``__doc__``) is its
    builder's own docstring; with none there either, a page naming the id and builder, saying
    that the plug-in has no docstring, and listing the values its config differs from
    ``MarketConfig``'s defaults by, as the built-in pages' Arguments tables do. Before, such an
    env's ``__doc__`` was None (``help(env)`` showed nothing)."""
    root = _install_env_plugin(
        tmp_path,
        {"labdoc/Doc-v0": "labundoc:documented", "labdoc/Bare-v0": "labundoc:bare"},
        package="labundoc",
        source=_UNDOCUMENTED,
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(recenv.registry, "_REGISTRY", dict(recenv.registry._REGISTRY))
    small = {"num_users": 3, "num_items": 200}

    page = recenv.make("labdoc/Doc-v0", seed=0, **small).__doc__
    assert page == "# Doc-v0\n\nMarket-v0 with three agents, documented by its builder."

    page = recenv.make("labdoc/Bare-v0", seed=0, max_cycles=7, **small).__doc__
    assert page.startswith("# Bare-v0\n")
    assert "``labdoc/Bare-v0`` is built by ``labundoc:bare``" in page
    assert "The plug-in has no docstring" in page
    assert "## Arguments" in page
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if "| ``" in line}
    assert rows["``num_agents``"] == "| ``num_agents`` | 3 | 2 | the scenario |"
    assert rows["``slate_size``"] == "| ``slate_size`` | 2 | 3 | the scenario |"
    assert rows["``horizon``"] == "| ``horizon`` | 7 | 200 | this call |"
    assert rows["``num_users``"] == "| ``num_users`` | 3 | 25 | this call |"
    assert "``embed_dim``" not in rows  # a default is not listed
    # The batched env gets the same page (the keys of the call told apart as by make).
    assert recenv.make_vec("labdoc/Bare-v0", num_envs=2, seed=0, horizon=7, **small).__doc__ == page


def test_the_batched_env_has_the_page_of_make(env_id, small):
    """``recenv.make_vec`` set no ``__doc__`` (``help(env)`` showed ``BatchedMarket``'s
    class): its env has the page ``recenv.make``'s has for the same id and config keys."""
    kwargs = small(env_id)
    page = recenv.make(env_id, seed=0, **kwargs).__doc__
    assert recenv.make_vec(env_id, num_envs=2, seed=0, **kwargs).__doc__ == page
    compiled = recenv.make_vec(env_id, num_envs=1, seed=0, compile=True, **kwargs)
    assert compiled.__doc__ == page
    assert page == recenv.registry.documentation_page(env_id)  # what `describe` reads


def test_the_batched_envs_page_is_not_in_a_runs_checkpoint():
    """The page is static, rebuilt with the env like its config: a run's env snapshot leaves
    it out (``runner.ENV_STATIC``). Saved, it would be a key of the live env's snapshot that
    every checkpoint written before ``make_vec`` set it lacks, and a resume refuses such a
    checkpoint as damaged."""
    from experiments import snapshot
    from experiments.runner import ENV_STATIC

    env = recenv.make_vec("recenv/Market-v0", num_envs=2, seed=0)
    env.reset(seed=0)
    assert env.__doc__ == recenv.registry.documentation_page("recenv/Market-v0")
    assert "__doc__" not in snapshot.snapshot(env, skip=ENV_STATIC)


def test_describe_lists_a_plugin_that_cannot_be_loaded_and_refuses_to_describe_it(
    tmp_path, monkeypatch, capsys
):
    """``describe envs`` gives a plug-in its page's summary and one that cannot be loaded
    (a malformed entry point) a note saying so, not a traceback that hides the other ids;
    ``describe env`` of the broken one is a config error naming it."""
    from experiments import cli

    root = _install_env_plugin(
        tmp_path, {"lab/Shop-v0": "labenvs:build", "lab/Broken-v0": "labenvs build"}
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(recenv.registry, "_REGISTRY", dict(recenv.registry._REGISTRY))
    assert cli.main(["describe", "envs"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(recenv.registered_ids()) <= set(lines)
    assert "Lab/Shop-v0: Market-v0 with three agents" in lines["lab/Shop-v0"]
    assert "(cannot be loaded: " in lines["lab/Broken-v0"]
    assert "'lab/Broken-v0' is the plug-in 'labenvs build'" in lines["lab/Broken-v0"]
    assert cli.main(["describe", "env", "lab/Broken-v0"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("config error: ") and "lab/Broken-v0" in err
    assert "Traceback" not in out + err
