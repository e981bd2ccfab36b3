"""Environment ids -> scenario builders: ``make`` (PettingZoo face) and ``make_vec`` (batched).

Ids follow Gymnasium's ``namespace/Name-vN``; entry points are lazy ``"module:attr"`` strings
naming a *builder* ``(num_envs, device, seed, **config) -> BatchedMarket``. Any change of what an
agent experiences (dynamics, rewards, observations, choice) bumps the version.

Scenarios of other packages are registered in one of two ways: ``recenv.register(id,
"module:builder")`` in code that runs first (a script, a notebook), or, to reach every process
(the experiments CLI, its spawned workers, Ray's env runners) without code of one's own in
each, an entry point of the group ``recenv.envs`` named by the id, looked up the first time
the id is asked for::

    [project.entry-points."recenv.envs"]
    "mylab/Shop-v0" = "mylab.shop:build"

The builder's module is the id's documentation page (``pz_doc``): its docstring, else the
builder's own docstring, else a page listing the scenario's configuration.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import gymnasium
import torch

from recenv.core.config import (
    MAX_HORIZON,
    MarketConfig,
    UnknownConfigKey,
    check_int,
    shown,
    sizes_named,
)
from recenv.core.market import BatchedMarket, check_batch, check_seed
from recenv.pettingzoo_env import FACE_OPTIONS, MarketParallelEnv, check_face_options


@dataclass(frozen=True)
class EnvSpec:
    id: str
    entry_point: str  # "module:builder"
    pz_doc: str = ""  # module whose docstring is the env's documentation page

    def builder(self) -> Callable[..., BatchedMarket]:
        module, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, EnvSpec] = {}
# Gymnasium's form: one namespace, a name, and a version of digits.
_ID = re.compile(r"[\w.-]+/[\w.-]+-v\d+")
_ENTRY_POINT = re.compile(r"[\w.]+:[\w.]+")
_MODULE = re.compile(r"\w+(\.\w+)*")


def register(env_id: str, entry_point: str, pz_doc: str = "") -> None:
    """Register ``env_id``; re-registering an id is an error (ids are versioned instead).
    Every argument is checked before the registry changes, so a refused call registers
    nothing."""
    _check_id_type(env_id)
    if not _ID.fullmatch(env_id):
        raise ValueError(
            f"environment id {env_id!r} must look like 'namespace/Name-vN' (N: digits)"
        )
    if not isinstance(entry_point, str) or not _ENTRY_POINT.fullmatch(entry_point):
        raise ValueError(f"entry_point={entry_point!r} must look like 'module:builder'")
    # Checked here, not at make(): a pz_doc of another type was accepted and broke every
    # make() of the id, after its market had been built.
    if not isinstance(pz_doc, str) or (pz_doc and not _MODULE.fullmatch(pz_doc)):
        raise ValueError(
            f"pz_doc={pz_doc!r} must be '' or a module name such as 'recenv.scenarios.market'"
        )
    if env_id in _REGISTRY:
        raise ValueError(f"environment id {env_id!r} is already registered")
    _REGISTRY[env_id] = EnvSpec(env_id, entry_point, pz_doc)
    register_gymnasium_ids([env_id])


#: What a recenv id's Gymnasium id adds to its name: ``recenv/Market-v0`` ->
#: ``recenv/Market-SingleAgent-v0``.
GYMNASIUM_SUFFIX = "-SingleAgent"
_SINGLE_AGENT_ENV = "recenv.integrations.gymnasium_single:make_single_agent_env"


def gymnasium_id(env_id: str) -> str:
    """The ``gymnasium.make`` id of recenv id ``env_id`` seen by one learning agent:
    ``recenv/Market-v0`` -> ``recenv/Market-SingleAgent-v0``."""
    _check_id_type(env_id)
    if not _ID.fullmatch(env_id):
        raise ValueError(f"environment id {env_id!r} must look like 'namespace/Name-vN'")
    name, _, version = env_id.rpartition("-v")
    return f"{name}{GYMNASIUM_SUFFIX}-v{version}"


def register_gymnasium_ids(env_ids: list[str]) -> list[str]:
    """Register a ``gymnasium.make`` id (:func:`gymnasium_id`) for each recenv id: one market
    seen by one learning agent, :func:`~recenv.integrations.gymnasium_single.make_single_agent_env`
    of that id, whose keyword arguments ``gymnasium.make`` passes on (``agent``, ``opponents``,
    ``flatten_obs``, ``device``, ``compile``, ``seed``, config fields). No time limit is
    added: the market truncates at its horizon. :func:`register` calls it for every id, and
    ``import recenv`` for the installed plug-ins' ids; an id Gymnasium already has is left as
    it is. Returns the Gymnasium ids."""
    out = []
    for env_id in env_ids:
        gym_id = gymnasium_id(env_id)
        if gym_id not in gymnasium.registry:
            gymnasium.register(gym_id, entry_point=_SINGLE_AGENT_ENV, kwargs={"env_id": env_id})
        out.append(gym_id)
    return out


def _check_id_type(env_id: Any) -> None:
    """Refuse an id that is not a str: looked up in the registry's dict, a list raised
    ``unhashable type: 'list'``, and an int read as a merely unknown id."""
    if not isinstance(env_id, str):
        raise ValueError(
            f"env id must be a str such as 'recenv/Market-v0', got {type(env_id).__name__}"
        )


ENTRY_POINT_GROUP = "recenv.envs"
# Held while a plug-in's id is registered (a check and a dict entry: microseconds).
_PLUGIN_LOCK = threading.Lock()


def registered_ids() -> list[str]:
    """All environment ids, sorted: those registered in this process and those installed
    packages declare in the ``recenv.envs`` entry-point group (registered when first made)."""
    return sorted({*_REGISTRY, *plugin_ids()})


def plugin_ids() -> list[str]:
    """Ids declared by installed distributions in the ``recenv.envs`` entry-point group."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def spec(env_id: str) -> EnvSpec:
    """The registered spec of ``env_id`` (an installed plug-in's id is registered here on
    first use); ValueError for an id that is not a str or not registered (listing the
    registered ids)."""
    _check_id_type(env_id)
    if env_id not in _REGISTRY:
        _register_plugin(env_id)
    try:
        return _REGISTRY[env_id]
    except KeyError:
        raise ValueError(
            f"unknown environment id {env_id!r}; registered ids: {registered_ids()}"
        ) from None


def _register_plugin(env_id: str) -> None:
    """Register ``env_id`` from its entry point in ``recenv.envs``, if one is installed: its
    value is the builder (``module:attr``), checked as :func:`register` checks one and
    imported when the id is first built."""
    eps = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == env_id]
    if not eps:
        return
    ep = eps[0]
    try:
        with _PLUGIN_LOCK:
            # Another thread may have registered it meanwhile (the lookup above reads every
            # installed distribution's metadata): the first make() of an id from several
            # threads at once raised "already registered" in all of them but one.
            if env_id not in _REGISTRY:
                register(env_id, ep.value, pz_doc=ep.value.partition(":")[0])
    except ValueError as e:
        raise ValueError(
            f"environment id {env_id!r} is the plug-in {ep.value!r} (entry point group "
            f"{ENTRY_POINT_GROUP!r}, distribution {_distribution(ep)}), which cannot be "
            f"registered: {e}"
        ) from None


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return repr(f"{dist.name} {dist.version}") if dist is not None else "unknown"


def make_vec(
    env_id: str,
    *,
    num_envs: int,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    compile: bool = False,
    **config: Any,
) -> BatchedMarket:
    """The batched env: ``num_envs`` markets as ``[num_envs, ...]`` tensors on ``device``.

    Market ``n`` with ``seed=s`` equals ``make(env_id, seed=s + n)``. ``compile=True`` runs
    the step as one ``torch.compile`` graph (2-5x faster; the first steps compile, tens of
    seconds; see :meth:`BatchedMarket.compile`). The env's ``__doc__`` (what ``help(env)``
    shows) is the scenario's page, as on the env :func:`make` returns.
    """
    s = spec(env_id)
    _check_compile(compile)
    check_batch(num_envs, device, seed)  # before the builder, which can be slow
    page = _page(s)
    env = _build(
        s,
        "recenv.make_vec also takes num_envs, device, seed and compile",
        num_envs=num_envs,
        device=device,
        seed=seed,
        **config,
    )
    _set_page(env, s, page, env.config, config)
    return env.compile() if compile else env


def _check_compile(compile: Any) -> None:
    if not isinstance(compile, bool):
        raise ValueError(f"compile={shown(compile)} must be a bool")


def _config_text(values: dict[str, Any]) -> str:
    """``values`` as a dict's repr writes them, each value by :func:`shown` (cut when long,
    an int too long to write as its size)."""
    return "{" + ", ".join(f"{k!r}: {shown(v)}" for k, v in values.items()) + "}"


def _build(s: EnvSpec, own_options: str, **kwargs: Any) -> BatchedMarket:
    """``s``'s builder called with ``kwargs``; an unknown key's error (which lists the
    scenario's config keys) also names the options of the calling face (``own_options``), so
    a misspelled ``flatten_obs`` does not read as if only config keys existed."""
    # Sizes no memory holds (num_users=10**9 at 4,096 markets, say): named by the config.
    config = {k: v for k, v in kwargs.items() if k not in ("device", "seed")}

    # The message is written only on a refusal, and safely: written before the build, it
    # wrote values the config had not checked yet (num_items=10**5000: repr raised
    # "Exceeds the limit (4300 digits) for integer string conversion", naming no field).
    def what() -> str:
        return f"{s.id}: the market with {_config_text(config)} does not fit in memory"

    try:
        # Builders draw and lay out on the CPU (the market moves its tables to its device):
        # a default device set by the caller (torch.set_default_device("cuda")) must not
        # reach their device-less tensors, nor the CPU generators their draws name. Nor may
        # a caller's inference mode: a market built inside one held inference tensors, which
        # its step, updating them in place, could not touch outside it.
        with sizes_named(what), torch.device("cpu"), torch.inference_mode(False):
            return s.builder()(**kwargs)
    except UnknownConfigKey as e:
        raise UnknownConfigKey(f"{e}; {own_options}", e.config_message) from None


def make(env_id: str, *, seed: int | None = None, **kwargs: Any) -> MarketParallelEnv:
    """A PettingZoo ``ParallelEnv`` of one market (numpy out). Besides the scenario's config
    keys it takes the face options ``render_mode``, ``flatten_obs``, ``max_cycles`` (an alias
    of ``horizon``, the PettingZoo name) and ``compile`` (``torch.compile`` the core's step).

    Everything ``make`` itself knows how to check (the id, the face options, the seed, the
    scenario's page) is checked before the scenario's builder runs, which can be slow."""
    s = spec(env_id)
    for key in ("num_envs", "device"):
        if key in kwargs:
            raise ValueError(
                f"make() builds one market on the CPU (the PettingZoo face), so it takes no "
                f"{key}={shown(kwargs[key])}; use recenv.make_vec(env_id, num_envs=..., "
                f"device=...) for the batched face"
            )
    face = {k: kwargs.pop(k) for k in list(kwargs) if k in FACE_OPTIONS}
    if "max_cycles" in face:
        if "horizon" in kwargs:
            raise ValueError("give either max_cycles or horizon, not both")
        # Checked under the name the caller wrote (the config would name ``horizon``), both
        # ends: past MAX_HORIZON the config's refusal named only ``horizon=...``.
        horizon = check_int("max_cycles", face.pop("max_cycles"), 1)
        if horizon > MAX_HORIZON:
            raise ValueError(
                f"max_cycles={shown(horizon)} must be <= {MAX_HORIZON:,} (2**24): it is the "
                "horizon, whose request clock is float32, exact to 2**24"
            )
        kwargs["horizon"] = horizon
    compile = face.pop("compile", False)
    _check_compile(compile)
    check_face_options(**face)
    check_seed(seed, 1)  # the core checks it too, but only once built
    page = _page(s)
    core = _build(
        s,
        f"recenv.make also takes seed and the face options {list(FACE_OPTIONS)}",
        num_envs=1,
        device="cpu",
        seed=seed,
        **kwargs,
    )
    if compile:
        core.compile()
    env = MarketParallelEnv(core, env_id=env_id, **face)
    _set_page(env, s, page, core.config, kwargs)
    return env


def _set_page(
    env: Any, s: EnvSpec, page: str | None, config: MarketConfig, given: dict[str, Any]
) -> None:
    """Make the scenario's page (``page``, from :func:`_page`) the docstring of ``env``, of
    either face: what ``help(env)`` shows. A scenario that documents nothing (a plug-in's bare
    module and builder) gets its configuration (``config``, built from the call's config keys
    ``given``). An id registered without ``pz_doc`` has no page: ``env`` keeps its class's."""
    if s.pz_doc:
        env.__doc__ = page if page is not None else _config_page(s, config, given)


def documentation_page(env_id: str) -> str | None:
    """The page of ``env_id`` as far as it is written without building the env: its page
    module's docstring, else its builder's own (see :func:`_page`). None when neither has
    text, the page then being written from the built config (the ``__doc__`` of what
    :func:`make` and :func:`make_vec` return), or when the id was registered without
    ``pz_doc``."""
    return _page(spec(env_id))


def _page(s: EnvSpec) -> str | None:
    """The documentation page of ``s``: the docstring of its page module (``pz_doc``), else
    (a plug-in's module without one) the builder's own docstring; None without ``pz_doc`` or
    when neither has text (:func:`_config_page` then writes one from the built config).
    Imported before the build, so that a page that does not import fails before the slow
    part."""
    if not s.pz_doc:
        return None
    doc = importlib.import_module(s.pz_doc).__doc__
    if isinstance(doc, str) and doc.strip():
        return doc
    return _own_doc(s.builder())


def _own_doc(obj: Any) -> str | None:
    """``obj``'s own docstring, dedented; None when it has none. A class's or a callable
    instance's is its class's own (not one inherited, nor ``object``'s)."""
    if isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.isroutine(obj):
        doc = obj.__doc__
    else:
        doc = vars(obj if isinstance(obj, type) else type(obj)).get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _config_page(s: EnvSpec, config: MarketConfig, given: dict[str, Any]) -> str:
    """The page of a scenario that has no docstring: its id and builder, a line saying so,
    and, as the built-in pages' Arguments tables do, the config values it differs from
    ``MarketConfig``'s defaults by (``given``: the keys this call set, told apart)."""
    name = s.id.split("/", 1)[1]
    defaults = MarketConfig().to_dict()
    rows = [
        f"| ``{k}`` | {shown(v)} | {shown(defaults[k])} | "
        f"{'this call' if k in given else 'the scenario'} |"
        for k, v in config.to_dict().items()
        if v != defaults[k]
    ]
    table = (
        "| key | value | MarketConfig default | set by |\n|---|---|---|---|\n" + "\n".join(rows)
        if rows
        else "Every field has its ``MarketConfig`` default."
    )
    return (
        f"# {name}\n\n"
        f"``{s.id}`` is built by ``{s.entry_point}``. The plug-in has no docstring (neither "
        f"the module ``{s.pz_doc}`` nor its builder has one), so this page lists only its "
        "configuration.\n\n"
        "## Arguments\n\n"
        "Every field of :class:`recenv.core.config.MarketConfig` is a keyword argument of "
        "``make`` and ``make_vec`` (``python -m experiments describe env`` lists them). This "
        "env's values that differ from the defaults:\n\n"
        f"{table}\n"
    )
