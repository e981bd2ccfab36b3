"""The agent registry: every agent module registered, every name resolving, plug-ins by entry
point (a real distribution installed with pip) and by ``"module:attr"``."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap
import uuid

import pytest

import agents
from agents.base import Agent

PLUGIN_SOURCE = '''
"""A third-party agent: recommends the candidates with the lowest (shifted) indices."""
from dataclasses import dataclass

import torch

from agents import AgentConfig, ScoringAgent
from agents.base import option


@dataclass(frozen=True)
class FirstConfig(AgentConfig):
    offset: int = option(0, "rotate candidate indices by this much before ranking")


class MyAgent(ScoringAgent):
    name = "{name}"
    Config = FirstConfig

    def score_agent(self, i, obs_a, explore=False):
        mask = obs_a["action_mask"]
        C = mask.shape[1]
        idx = (torch.arange(C, device=mask.device) + self.config.offset) % C
        return -idx.float().expand(mask.shape)
'''


def _agent_classes() -> dict[str, list[type[Agent]]]:
    """Concrete agent classes defined in each ``agents.*`` module."""
    found: dict[str, list[type[Agent]]] = {}
    for info in pkgutil.iter_modules(agents.__path__):
        module = importlib.import_module(f"agents.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Agent) and cls.__module__ == module.__name__:
                found.setdefault(module.__name__, []).append(cls)
    return found


def test_every_agent_module_is_registered():
    """Checked in a fresh interpreter, so only what ``import agents`` registers counts."""
    code = "import agents, json; print(json.dumps(agents.registered_agents()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    registered = set(json.loads(out.stdout))
    concrete = [c for classes in _agent_classes().values() for c in classes if c.registrable]
    assert concrete, "no agent classes found"
    for cls in concrete:
        assert cls.name in registered, f"{cls.__module__}.{cls.__name__} is not registered"
        assert agents.agent_class(cls.name) is cls


def test_every_name_resolves_and_builds(env_for):
    for name in agents.registered_agents():
        env = env_for(name, horizon=20)
        agent = agents.make_agent(name, env)
        assert isinstance(agent, Agent) and agent.name == name
        assert agent.agent_ids == env.agents


def test_unknown_name_lists_what_exists(market):
    with pytest.raises(ValueError, match=r"unknown agent 'nope'; registered agents: \[.*'iql'"):
        agents.make_agent("nope", market())


def test_registering_a_taken_name_is_an_error():
    class Impostor(agents.agent_class("random")):
        pass

    with pytest.raises(ValueError, match="already registered"):
        agents.register(Impostor)


def _write_plugin(root, module: str, name: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN_SOURCE.format(name=name)))


def test_module_attr_plugin(tmp_path, monkeypatch, market):
    module = f"recenv_plugin_{uuid.uuid4().hex[:8]}"
    _write_plugin(tmp_path, module, "first_by_index")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = market()
    agent = agents.make_agent(f"{module}:MyAgent", env, offset=2)
    slates = agent.act(env.reset())
    mask = env.observe()["agent_0"]["action_mask"]
    assert slates["agent_0"].shape == (env.num_envs, env.config.slate_size)
    assert bool(mask.gather(1, slates["agent_0"]).all())
    with pytest.raises(ValueError, match="unknown config key"):
        agents.make_agent(f"{module}:MyAgent", env, offst=2)
    with pytest.raises(ValueError, match="cannot load agent"):
        agents.make_agent(f"{module}:Missing", env)


def test_entry_point_plugin_installed_with_pip(tmp_path, market):
    """Builds and pip-installs a one-module distribution declaring a ``recenv.agents`` entry
    point, uses it by name (make, act, save, load_agent), and uninstalls it."""
    tag = uuid.uuid4().hex[:8]
    module, dist, name = f"recenv_plugin_{tag}", f"recenv-test-plugin-{tag}", f"myagent_{tag}"
    _write_plugin(tmp_path, module, name)
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [project.entry-points."recenv.agents"]
        {name} = "{module}:MyAgent"

        [tool.setuptools]
        py-modules = ["{module}"]
        """)
    )
    pip = [sys.executable, "-m", "pip"]
    flags = ["--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*pip, "install", *flags, str(tmp_path)], check=True, capture_output=True)
    try:
        importlib.invalidate_caches()
        assert name in agents.plugin_agents()
        assert name not in agents.registered_agents()  # looked up lazily, never at import
        env = market()
        agent = agents.make_agent(name, env, offset=1)
        assert type(agent).__module__ == module
        obs = env.reset()
        slates = agent.act(obs)
        path = tmp_path / "plugin.pt"
        agent.save(path)
        again = agents.load_agent(path, env)
        assert again.config.offset == 1
        for a in env.agents:
            assert (again.act(obs)[a] == slates[a]).all()
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", dist], check=True, capture_output=True)
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
    with pytest.raises(ValueError, match="unknown agent"):
        agents.make_agent(name, market())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("os:getcwd", "neither an Agent subclass nor an agent factory"),
        ("math:sqrt", "neither an Agent subclass nor an agent factory"),
        ("agents.base:Agent", r"abstract agent class: it does not implement act\(\)"),
        ("agents.base:ScoringAgent", r"abstract agent class: it does not implement score_agent"),
        ("agents.base:Team", "built from member agents"),
        ("json:JSONDecoder", "not an Agent subclass"),
    ],
)
def test_a_module_attr_that_cannot_build_an_agent_is_refused_by_name(spec, message):
    """``os:getcwd`` was a TypeError traceback, ``agents.base:Agent`` / ``ScoringAgent`` a
    NotImplementedError once training had started (an unfinished run directory left
    behind); each is now refused when the name is resolved, naming it."""
    with pytest.raises(ValueError, match=rf"agent '{spec}' resolves to .*{message}"):
        agents.agent_class(spec)


def test_an_abstract_hook_is_refused_when_the_agent_is_built(market):
    """A class that implements act but leaves another hook to subclasses (the value
    decomposition's build_mixer) is refused by make_agent with a ValueError naming it."""
    env = market(num_envs=2, reward_mode="cooperative")
    with pytest.raises(ValueError, match=r"does not implement build_mixer\(\)"):
        agents.make_agent("agents.qmix:ValueDecompositionAgent", env)


def test_an_agent_factory_still_resolves_and_builds(tmp_path, monkeypatch, market):
    """A factory ``(env, config..., agent_ids=None) -> Agent`` passes the new check."""
    module = f"recenv_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "import agents\n\n"
        "def make(env, agent_ids=None, **config):\n"
        "    return agents.make_agent('random', env, agent_ids=agent_ids, **config)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    agent = agents.make_agent(f"{module}:make", market(num_envs=2), seed=3)
    assert agent.name == "random" and agent.config.seed == 3
