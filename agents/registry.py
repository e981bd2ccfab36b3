"""Agent names -> agent classes: ``make_agent``, ``registered_agents``, ``register``.

Built-in agents register themselves with the :func:`register` class decorator when their module
is imported (``agents/__init__.py`` imports them). A name that is not registered is resolved,
in order, as

1. ``"module:attr"`` — imported lazily, like Gymnasium entry points;
2. an entry point of the group ``recenv.agents`` (``importlib.metadata``), looked up only on a
   registry miss, never at import time. A plug-in distribution declares, in its
   ``pyproject.toml``::

       [project.entry-points."recenv.agents"]
       myagent = "myplugin:MyAgent"

An entry point may name an :class:`~agents.base.Agent` subclass or a factory
``(env, config_kwargs..., agent_ids=None) -> Agent``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from agents.base import Agent, Team, read_checkpoint

ENTRY_POINT_GROUP = "recenv.agents"

_REGISTRY: dict[str, type[Agent]] = {}


def register(cls: type[Agent]) -> type[Agent]:
    """Class decorator: register ``cls`` under ``cls.name``. Registering a second class under a
    taken name is an error."""
    if not (inspect.isclass(cls) and issubclass(cls, Agent)):
        raise ValueError(f"register() takes an Agent subclass, got {cls!r}")
    if not cls.name or not cls.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{cls.__name__}.name={cls.name!r} must be a non-empty identifier")
    old = _REGISTRY.get(cls.name)
    if old is not None and old is not cls:
        raise ValueError(
            f"agent name {cls.name!r} is already registered to {old.__module__}.{old.__name__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def registered_agents() -> list[str]:
    """Names of the registered agents, sorted (plug-ins appear once they were used)."""
    return sorted(_REGISTRY)


def plugin_agents() -> list[str]:
    """Names declared by installed distributions in the ``recenv.agents`` entry-point group."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def agent_class(name: str) -> Callable[..., Agent]:
    """The class (or factory) an agent name resolves to; see the module docstring."""
    if not isinstance(name, str):
        raise ValueError(f"agent name must be a string, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot load agent {name!r} ('module:attr'): {e}") from None
        return _checked(name, target)
    eps = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if eps:
        try:
            target = eps[0].load()
        except Exception as e:
            raise ValueError(
                f"agent {name!r} is the plug-in {eps[0].value!r} (entry point group "
                f"{ENTRY_POINT_GROUP!r}) but it failed to load: {type(e).__name__}: {e}"
            ) from None
        return _checked(name, target)
    raise ValueError(
        f"unknown agent {name!r}; registered agents: {registered_agents()}; installed "
        f"plug-ins ({ENTRY_POINT_GROUP!r}): {plugin_agents()}; or give 'module:attr'"
    )


def _checked(name: str, target: Any) -> Callable[..., Agent]:
    if inspect.isclass(target) and not issubclass(target, Agent):
        raise ValueError(f"agent {name!r} resolves to {target!r}, which is not an Agent subclass")
    if not callable(target):
        raise ValueError(f"agent {name!r} resolves to {target!r}, which is not callable")
    return target


def make_agent(
    name: str, env: Any, *, agent_ids: Sequence[str] | None = None, **config: Any
) -> Agent:
    """Build agent ``name`` for ``env`` (batched or PettingZoo face) controlling ``agent_ids``
    (default: every env agent). ``config`` keys are the fields of the agent's config
    dataclass; unknown keys raise ``ValueError`` listing the valid ones."""
    target = agent_class(name)
    if inspect.isclass(target):
        try:
            cfg = target.Config.from_kwargs(**config)
        except ValueError as e:  # name the agent: configs are shared (qmix/vdn, mappo/ippo)
            raise ValueError(f"agent {name!r}: {e}") from None
        agent = target(env, cfg, agent_ids=agent_ids)
    else:
        agent = target(env, agent_ids=agent_ids, **config)
    if not isinstance(agent, Agent):
        raise ValueError(f"agent {name!r} built {type(agent).__name__}, not an Agent")
    return agent


def make_team(env: Any, lineup: Mapping[str, str | tuple[str, Mapping[str, Any]]]) -> Team:
    """A :class:`Team` from ``{env_agent: name}`` or ``{env_agent: (name, config)}``; each
    env agent gets its own agent instance."""
    members = []
    for agent_id, spec in lineup.items():
        name, cfg = (spec, {}) if isinstance(spec, str) else spec
        members.append(make_agent(name, env, agent_ids=[agent_id], **dict(cfg)))
    return Team(members)


def load_agent(path: Any, env: Any) -> Agent:
    """Rebuild an agent (or team) from a checkpoint: its name, config and ``agent_ids`` come
    from the checkpoint's header, then its state is loaded."""
    head = read_checkpoint(path)["header"]
    agent = _from_header(head, env)
    agent.load(path)
    return agent


def _from_header(head: Mapping[str, Any], env: Any) -> Agent:
    if head.get("agent") == "team":
        return Team([_from_header(h, env) for h in head.get("members", [])])
    try:
        name = head["agent"]
        agent_class(name)
    except ValueError:  # e.g. a plug-in used as "module:attr": rebuild from its class path
        name = head.get("class", head["agent"])
    return make_agent(name, env, agent_ids=head.get("agent_ids"), **dict(head.get("config", {})))
