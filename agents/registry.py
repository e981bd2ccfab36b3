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

Factories
---------
A factory's config is its keyword parameters: :func:`make_agent` checks the keys it is given
against them (unknown ones raise ``ValueError`` listing the parameters) when the signature
names them; one that takes ``**kwargs`` is called as given, and a ``TypeError`` naming a
given key is reported as that key's ``ValueError`` (the accepted keys cannot be listed).

Seeds: a run (:mod:`experiments.runner`) seeds the agent under test with the run's ``seed``
and an opponent with ``seed + 1000``, by passing ``seed=`` to what the name resolves to —
a class's ``Config`` (every :class:`~agents.base.AgentConfig` has ``seed``), or a factory
whose signature has a ``seed`` parameter or ``**kwargs`` (:func:`takes_seed`; a factory
taking ``**kwargs`` must then accept ``seed``). A factory taking neither cannot be seeded:
every seed of a run or comparison builds it alike, and the runner warns once per name. A
``seed`` given in the agent's config (``--set agent.seed=3``) is passed as given.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, NoReturn, ParamSpec, TypeGuard, TypeVar, cast

import torch

from agents.base import (
    Agent,
    ScoringAgent,
    Team,
    batched_core,
    check_checkpoint,
    read_checkpoint,
)
from recenv.core.config import sizes_named

ENTRY_POINT_GROUP = "recenv.agents"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _outside_inference_mode(build: Callable[_P, _R]) -> Callable[_P, _R]:
    """``build`` run with the caller's ``torch.inference_mode()`` left: an agent built or
    loaded inside one (an evaluation script's guard) held inference tensors, its parameters
    among them, and could not learn outside it ("Inplace update to inference tensor outside
    InferenceMode", "Inference tensors cannot be saved for backward")."""

    @functools.wraps(build)
    def outside(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    return outside


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
    """Names registered with :func:`register`, sorted: the built-in agents, and a plug-in
    class decorated with ``@register`` once its module was imported. A plug-in resolved as
    an entry point or ``"module:attr"`` is not added by being used (it is resolved again on
    each use) and appears here only if it registers itself; :func:`plugin_agents` lists the
    installed entry points."""
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


def _is_agent_class(target: object) -> TypeGuard[type[Agent]]:
    """Whether ``target`` (what :func:`agent_class` resolved a name to) is an agent class
    rather than a factory."""
    return inspect.isclass(target) and issubclass(target, Agent)


def _checked(name: str, target: Any) -> Callable[..., Agent]:
    """``target`` if it can build agent ``name``: a concrete :class:`Agent` subclass, or a
    factory callable as ``(env, agent_ids=...)``. Refused here, when the name is resolved
    (before a run directory exists), not with a TypeError or NotImplementedError once a run
    has started (``os:getcwd``, ``agents.base:ScoringAgent``)."""
    if inspect.isclass(target):
        if not issubclass(target, Agent):
            raise ValueError(
                f"agent {name!r} resolves to {target!r}, which is not an Agent subclass"
            )
        if issubclass(target, Team):
            raise ValueError(
                f"agent {name!r} resolves to Team, which is built from member agents "
                "(agents.Team([...]) or make_team), not by name"
            )
        missing = unimplemented(target)
        if missing:
            raise ValueError(
                f"agent {name!r} resolves to {target.__module__}.{target.__qualname__}, an "
                f"abstract agent class: it does not implement {missing}(); give a subclass "
                "that does"
            )
        return target
    if not callable(target):
        raise ValueError(f"agent {name!r} resolves to {target!r}, which is not callable")
    try:
        inspect.signature(target).bind(None, agent_ids=None)
    except TypeError:
        raise ValueError(
            f"agent {name!r} resolves to {target!r}, which is neither an Agent subclass nor "
            "an agent factory (env, config..., agent_ids=None) -> Agent: it cannot be called "
            "with (env, agent_ids=...)"
        ) from None
    except ValueError:  # no signature to read (some built-ins): make_agent finds out
        pass
    return target


def factory_config_keys(factory: Callable[..., Any]) -> list[str] | None:
    """The config keys a factory ``(env, config..., agent_ids=None)`` takes: its keyword
    parameters after ``env``, ``agent_ids`` excluded; ``None`` when they cannot be listed
    (it takes ``**kwargs``, or has no signature to read)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params[1:] if p.kind in keyword and p.name != "agent_ids"]


def takes_seed(target: Callable[..., Any]) -> bool:
    """Whether ``seed=`` can be passed when building from ``target`` (see "Seeds" in the
    module docstring): an agent class whose ``Config`` has a ``seed`` field, or a factory
    with a ``seed`` parameter or ``**kwargs``."""
    if inspect.isclass(target):
        config = getattr(target, "Config", None)
        return config is not None and "seed" in config.field_names()
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "seed" and p.kind is not p.POSITIONAL_ONLY)
        for p in params
    )


def _factory_name(factory: Any) -> str:
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None) or repr(factory)
    return f"{module}:{qualname}" if module else qualname


def unimplemented(cls: type[Agent]) -> str | None:
    """The protocol method an agent class leaves to a subclass (``act``, or a
    :class:`ScoringAgent`'s ``score_agent``), ``None`` when it implements them."""
    act = getattr(cls.act, "__wrapped_act__", cls.act)
    if act is Agent.act:
        return "act"
    scoring_act = getattr(ScoringAgent.act, "__wrapped_act__", ScoringAgent.act)
    # Its act is ScoringAgent's, so it is a ScoringAgent (one with score_agent).
    if act is scoring_act and cast(type[ScoringAgent], cls).score_agent is ScoringAgent.score_agent:
        return "score_agent"
    return None


@_outside_inference_mode
def make_agent(
    name: str, env: Any, *, agent_ids: Sequence[str] | None = None, **config: Any
) -> Agent:
    """Build agent ``name`` for ``env`` (batched or PettingZoo face) controlling ``agent_ids``
    (default: every env agent). ``config`` keys are the fields of the agent's config
    dataclass (a factory's keyword parameters); unknown keys raise ``ValueError`` listing the
    valid ones (a factory taking ``**kwargs``: naming the key its ``TypeError`` names), and so
    do sizes the allocator cannot hold (naming the config)."""
    target = agent_class(name)
    if _is_agent_class(target):
        try:
            cfg = target.Config.from_kwargs(**config)
        except ValueError as e:  # name the agent: configs are shared (qmix/vdn, mappo/ippo)
            raise ValueError(f"agent {name!r}: {e}") from None
        # A size in the config no memory holds (a hidden width of 10^12, say).
        with sizes_named(f"agent {name!r}: the sizes of config {config} could not be allocated"):
            try:
                agent = target(env, cfg, agent_ids=agent_ids)
            except NotImplementedError as e:  # an abstract hook (e.g. qmix's build_mixer)
                hook = traceback.extract_tb(e.__traceback__)[-1].name
                raise ValueError(
                    f"agent {name!r} cannot be built: {target.__qualname__} does not implement "
                    f"{hook}() (NotImplementedError{f': {e}' if str(e) else ''}); give a "
                    "subclass that does"
                ) from None
    else:
        agent = _from_factory(name, target, env, agent_ids, config)
    if not isinstance(agent, Agent):
        raise ValueError(f"agent {name!r} built {type(agent).__name__}, not an Agent")
    return agent


def _from_factory(
    name: str, factory: Callable[..., Any], env: Any, agent_ids: Any, config: Mapping[str, Any]
) -> Any:
    """``factory(env, agent_ids=..., **config)``, its config keys checked first where its
    signature lists them; a ``TypeError`` naming a key of ``config`` (a factory taking
    ``**kwargs`` that passes them on to a config class) becomes a ``ValueError`` naming the
    agent and the key."""
    valid = factory_config_keys(factory)
    where = f"the factory {_factory_name(factory)}"
    unknown = [k for k in config if valid is not None and k not in valid]
    if unknown:
        raise ValueError(
            f"agent {name!r}: unknown config key(s) {sorted(unknown)} for {where}; valid "
            f"keys: {valid}"
        )
    try:
        return factory(env, agent_ids=agent_ids, **config)
    except TypeError as e:
        named = [k for k in config if f"'{k}'" in str(e)]
        if not named:
            raise
        keys = "" if valid is not None else " (it takes **kwargs: its keys cannot be listed)"
        raise ValueError(
            f"agent {name!r}: {where} refuses config key(s) {named}{keys}: {type(e).__name__}: {e}"
        ) from e


def make_team(env: Any, lineup: Mapping[str, str | tuple[str, Mapping[str, Any]]]) -> Team:
    """A :class:`Team` from ``{env_agent: name}`` or ``{env_agent: (name, config)}``; each
    env agent gets its own agent instance."""
    members = []
    for agent_id, spec in lineup.items():
        name, cfg = (spec, {}) if isinstance(spec, str) else spec
        members.append(make_agent(name, env, agent_ids=[agent_id], **dict(cfg)))
    return Team(members)


@_outside_inference_mode
def load_agent(path: Any, env: Any, *, payload: Mapping[str, Any] | None = None) -> Agent:
    """Rebuild an agent (or team) from a checkpoint: its name, config and ``agent_ids`` come
    from the checkpoint's header, then its state is loaded. The file is read once
    (:func:`agents.base.read_checkpoint`); ``payload``, a checkpoint the caller has already
    read from ``path``, is used instead of reading it again (``path`` then only names it in
    errors), with the same checks.

    A header that is not as :meth:`Agent.save` writes it (an ``agent`` that names no agent,
    ``agent_ids`` that are not this env's agents, a ``config`` the agent does not take, a team
    without ``members``, ...) raises ``ValueError`` naming the file, the header field and
    what was expected, before any agent is built; so does an agent that refuses its header's
    values."""
    where = os.fspath(path)
    payload = read_checkpoint(path) if payload is None else check_checkpoint(payload, where)
    plan = _plan(payload["header"], env, where, "header")
    agent = _build(plan, env, where)
    if "payload" in inspect.signature(agent.load).parameters:
        agent.load(path, payload=payload)
    else:  # a plug-in's own load(path), from before payload=: it reads the file itself
        agent.load(path)
    return agent


_MISSING = object()


def _plan(head: Any, env: Any, where: str, field: str) -> tuple:
    """What to build from the (member) header ``head`` at ``field`` of checkpoint ``where``:
    ``("team", field, [member plans])`` or ``("agent", field, name, agent_ids, config)``, each
    field checked (the members' too) before anything is built."""
    if not isinstance(head, Mapping):
        _bad(where, field, head, "a dict as Agent.save() writes it (agent, agent_ids, config)")
    agent = head.get("agent", _MISSING)
    if not isinstance(agent, str):  # "" too: an unnamed plug-in's, rebuilt from its class
        _bad(where, f"{field}['agent']", agent, "an agent name (a str)")
    if agent == Team.name:
        members = head.get("members", _MISSING)
        if not isinstance(members, (list, tuple)) or not members:
            _bad(where, f"{field}['members']", members, "a non-empty list of member headers")
        plans = [_plan(h, env, where, f"{field}['members'][{j}]") for j, h in enumerate(members)]
        return ("team", field, plans)
    name, target = _resolve(head, where, field)
    env_agents = list(batched_core(env).agents)
    ids = head.get("agent_ids", _MISSING)
    if not (
        isinstance(ids, (list, tuple))
        and ids
        and all(isinstance(a, str) and a in env_agents for a in ids)
        and len(set(ids)) == len(ids)
    ):
        _bad(
            where,
            f"{field}['agent_ids']",
            ids,
            f"a non-empty list of distinct agents of this env, {env_agents}",
        )
    config = head.get("config", _MISSING)
    if not (isinstance(config, Mapping) and all(isinstance(k, str) for k in config)):
        _bad(
            where,
            f"{field}['config']",
            config,
            f"a dict of the config of agent {agent!r} (str keys)",
        )
    if _is_agent_class(target):  # the keys and values the agent's config takes
        config = target.Config.header_config(config)  # keys the checkpoint predates
        try:
            target.Config.from_kwargs(**config)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"checkpoint {where!r} has {field}['config'] that agent {agent!r} does not "
                f"take: {e}"
            ) from None
    return ("agent", field, name, list(ids), dict(config))


def _resolve(head: Mapping[str, Any], where: str, field: str) -> tuple[str, Callable[..., Agent]]:
    """The name to build a header's agent by and what it resolves to: its ``agent``, or, when
    that does not resolve (a plug-in used as ``"module:attr"``), its ``class``."""
    agent = head["agent"]
    try:
        return agent, agent_class(agent)
    except ValueError as e:
        why = str(e)
    path = head.get("class", _MISSING)
    if path is _MISSING:
        raise ValueError(f"checkpoint {where!r} has {field}['agent']={agent!r}: {why}")
    if not isinstance(path, str):
        _bad(where, f"{field}['class']", path, "the agent's class as 'module:ClassName'")
    try:
        target = agent_class(path)
    except ValueError as e:
        raise ValueError(
            f"checkpoint {where!r} has {field}['agent']={agent!r} ({why}) and "
            f"{field}['class']={path!r}, which does not resolve either ({e})"
        ) from None
    if _is_agent_class(target) and target.name != agent:
        raise ValueError(
            f"checkpoint {where!r} has {field}['agent']={agent!r} ({why}), and its "
            f"{field}['class']={path!r} is agent {target.name!r}, not {agent!r}"
        )
    return path, target


def _build(plan: tuple, env: Any, where: str) -> Agent:
    """The agent of a checked :func:`_plan`; an agent (or team) refusing its header's values
    raises ``ValueError`` naming the file and the header."""
    if plan[0] == "team":
        _, field, plans = plan
        members = [_build(p, env, where) for p in plans]
        try:
            return Team(members)
        except ValueError as e:
            raise ValueError(f"checkpoint {where!r}: {field}['members']: {e}") from None
    _, field, name, ids, config = plan
    try:
        return make_agent(name, env, agent_ids=ids, **config)
    # A TypeError is a value of a wrong type; a RuntimeError or MemoryError, sizes torch
    # refuses that make_agent does not already name (a plug-in factory's, a negative width).
    except (TypeError, ValueError, RuntimeError, MemoryError) as e:
        why = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise ValueError(
            f"checkpoint {where!r}: agent {name!r} refuses {field} (agent_ids={ids}, "
            f"config={config}): {why}"
        ) from e


def _bad(where: str, field: str, value: Any, expected: str) -> NoReturn:
    has = f"no {field}" if value is _MISSING else f"{field}={value!r}"
    raise ValueError(f"checkpoint {where!r} has {has}; expected {expected}")
