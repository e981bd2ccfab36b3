"""The agent protocol: what every recommender agent (or team of agents) implements.

An :class:`Agent` controls one or more of the environment's agents (``agent_ids``, default: all
of them) and runs on the batched env (:func:`recenv.make_vec`) on any torch device. The
PettingZoo face is served by :class:`agents.adapters.PettingZooAgent`, which turns numpy
observations into batches of one and back, so every agent runs on both faces.

Shapes: ``N`` markets (``num_envs``), ``C`` candidates, ``K`` slate size, ``T`` topics,
``S`` global state size; ``a`` is an env agent name such as ``"agent_0"``.

Methods to write in a subclass
------------------------------
``act(obs, explore) -> {a: LongTensor [N, K]}`` (required)
    ``obs[a]`` is the env's observation dict: ``user [N, T+2]``, ``history [N, T+4]``,
    ``candidates [N, C, T+6]``, ``action_mask [N, C]`` (bool), ``user_id [N]``,
    ``candidate_ids [N, C]``. Return, for each controlled agent, ``K`` distinct unmasked
    candidate indices per market. ``explore=True`` while collecting training data,
    ``False`` to evaluate (greedy, as deterministic as the algorithm allows). The base class
    wraps it: an ``obs`` without an entry for a controlled agent is refused (``ValueError``
    naming them) before it runs.
``learn(transition) -> {metric: float}`` (learning agents)
    Called once per env step while training, after :meth:`observe`. Store the
    :class:`Transition`, update on the agent's own schedule, and return scalar metrics to log
    (names in CleanRL's ``losses/…``, ``charts/…`` namespaces; empty when nothing was updated).
    Rows with ``transition.valid == False`` are auto-reset steps and must be dropped. The base
    class wraps it too: each metric must be one real number — a Python number, a NumPy scalar
    or a 0-d tensor — and is returned as a ``float``; anything else (a vector, a string,
    ``None``) raises :class:`MetricError` naming the agent and the metric, before anything is
    logged or checkpointed (a ``learn`` returning ``None`` reports no metrics).
``observe(transition) -> None`` (optional)
    Called every env step, in training *and* evaluation: update per-episode inference state
    (e.g. a matrix-factorisation user vector folded in from this episode's clicks). Default:
    nothing.
``begin_episode(mask=None) -> None`` (optional)
    New episodes start in the markets where ``mask [N]`` (bool) is set, all when ``None``:
    clear per-episode state. The rollout calls it after ``env.reset()`` and after every step
    whose ``info["reset"]`` is set.
``state_dict() / load_state_dict(state)`` (agents with state)
    Tensors, numbers, strings, lists, tuples and dicts only (no NumPy arrays: the full list
    is :data:`agents.state_checks.WEIGHTS_ONLY_TYPES`): checkpoints are read with
    ``torch.load(weights_only=True)``, and :meth:`Agent.save` refuses a state it could not
    read back. Check what only the agent knows in ``load_state_dict`` and raise
    ``ValueError`` (:mod:`agents.state_checks` has ``counter`` and ``nonnegative``);
    :meth:`Agent.load` checks the layout, the keys (a key the agent's own ``state_dict()``
    does not have is refused, unless listed in ``optional_state_keys``), finiteness (unless
    ``finite_state = False``) and optimizers, and rolls back on any error. Tables whose size
    follows the agent's use, not its config (saved replay rows), are given to the layout
    check without that size by ``state_layout(state)`` and checked by ``load_state_dict``.

Provided here: :meth:`Agent.save` / :meth:`Agent.load` (a checked checkpoint with a header),
config parsing (unknown keys list the valid ones; ``self.config`` is a ``Config``: a subclass
with its own config sets ``Config = MyConfig`` and declares ``config: MyConfig``, so that type
checkers see its fields), capability checks, :meth:`Agent.bind` (act in another env of the
same shapes: privileged and state access follow it), and a seeded ``torch.Generator`` on the
env's device (``self.generator``).

A minimal agent::

    @register
    class FirstAgent(ScoringAgent):          # top K of scores; ε-greedy while exploring
        name = "first"
        registrable = True

        def score_agent(self, i, obs_a, explore=False):   # -> [N, C]
            C = obs_a["action_mask"].shape[1]
            return -torch.arange(C, dtype=torch.float32).expand(obs_a["action_mask"].shape)

Capability flags (class attributes, read by :func:`check_compatible`)
--------------------------------------------------------------------
``needs_state``: learning reads the global ``state()`` (``Transition.state``).
``needs_privileged``: acting reads the simulator's latent truth (the myopic oracle).
``learns``: ``learn`` changes the policy (the rollout may skip it for the others).
``scores_candidates``: ``score(obs) -> {a: [N, C]}`` exists (what the ensemble blends).
``supports_reward_modes``: the env ``reward_mode`` values the agent is meant for.
``action_kind``: ``"slate"`` — K distinct candidate indices (the only kind today).

Teams
-----
One instance controlling several env agents is the common case (independent learners keep one
set of parameters per env agent inside; or share them, by config). To put *different* agents
in one market, combine them with :class:`Team`, which is itself an :class:`Agent`::

    team = Team([make_agent("iql", env, agent_ids=["agent_0"]),
                 make_agent("random", env, agent_ids=["agent_1"])])
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import numbers
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.state_checks import (
    missing_keys_error,
    nonfinite_state_error,
    optimizer_state_error,
    state_layout_error,
    unexpected_keys_error,
    weights_only_error,
)
from recenv.core.config import INT64_RANGE, field_type_errors, option, option_errors

# 2: the header's "env" holds every size that sets a network's input width (ENV_SHAPES), and
# the state the generator's device type. Version 1 checkpoints stay readable: their env is
# compared on the sizes they recorded, the rest is checked by the state's own shapes.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
# What a checkpoint's header["env"] records and Agent.bind compares: the env's agents and
# sizes, and the widths they set (observations; the global state, which the MAPPO critic
# and the QMIX mixer read, also depends on embed_dim). An env config without one of them
# (a plug-in's) records None.
ENV_SHAPES = (
    "num_agents", "num_candidates", "slate_size", "num_topics", "num_items", "num_users",
    "embed_dim", "state_dim", "user_dim", "history_dim", "candidate_dim",
)  # fmt: skip
_ENV_SHAPES_V1 = ENV_SHAPES[:6]  # what format_version 1 headers recorded
REWARD_MODES = ("competitive", "cooperative", "mixed")

Obs = dict[str, dict[str, torch.Tensor]]
Actions = dict[str, torch.Tensor]
Metrics = dict[str, float]


# The seed range of torch's generators that is also numpy's and the markets' (int64).
SEED_RANGE = INT64_RANGE


@dataclass(frozen=True)
class AgentConfig:
    """Fields every agent has. Subclass it (frozen) and give each field an :func:`option`."""

    seed: int = option(
        0, "seed of the agent's own random generator (exploration, init)", within=SEED_RANGE
    )
    #: Fields added after the agent's checkpoints were first written, each with the value
    #: that reproduces what an older checkpoint (whose header lacks the key) was trained
    #: with: a new field's default may differ (IQL's ``slate_selection``).
    LEGACY: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def header_config(cls, saved: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint header's config with the keys it predates filled in from
        :attr:`LEGACY`, as the saved agent ran."""
        return {**{k: v for k, v in cls.LEGACY.items() if k not in saved}, **saved}

    def __post_init__(self) -> None:
        """Each field annotated with a plain type holds it (``field_type_errors``: numpy's
        ints become ints, a float field takes an int but not NaN), and each ``option(...,
        within=(lo, hi))`` lies in its interval (each element, for ``each=``): a wrong value
        fails here naming the field and the allowed values, not deep inside an optimizer.
        Other fields and ranges are the agent's own to check."""
        errors = field_type_errors(self, finite=False) or option_errors(self)
        if errors:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(errors))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, **overrides: Any) -> AgentConfig:
        """A config from keyword overrides; unknown keys raise ``ValueError`` listing the valid
        ones, and lists are stored as tuples (configs are frozen)."""
        valid = cls.field_names()
        unknown = sorted(k for k in overrides if k not in valid)
        if unknown:
            raise ValueError(
                f"unknown config key(s) {unknown} for {cls.__name__}; valid keys: {valid}"
            )
        return cls(**{k: _freeze(v) for k, v in overrides.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    return v


# ----------------------------------------------------------------------------------------
# Transitions
# ----------------------------------------------------------------------------------------
@dataclass
class Transition:
    """One env step of ``N`` markets, as agents learn from it.

    ``valid [N]`` is ``False`` on auto-reset steps (``info["reset"]``): their ``obs`` is the
    previous episode's final observation, their ``next_obs`` the new episode's first, and their
    reward 0 — drop them. ``terminated`` ends a trajectory (no bootstrap); ``truncated`` alone
    does not (bootstrap from ``next_obs``, the episode's final observation).

    ``clicked_slot[a] [N]`` (int64) is the slot of ``a``'s own slate the user clicked, -1 when
    the user clicked nothing of ``a``'s; ``engagement[a] [N]`` the value of that click (0
    otherwise). This is all an agent learns of the user's choice: its own slate's outcome.
    ``served[a] [N]`` tells whether ``a``'s slate reached the user at all (under
    ``topology="platform_choice"`` the user visits one platform; a slate nobody saw says
    nothing about its items); ``None`` means every slate did.
    """

    obs: Obs
    actions: Actions  # {a: [N, K]}
    rewards: dict[str, torch.Tensor]  # {a: [N]}
    next_obs: Obs
    terminated: torch.Tensor  # [N] bool
    truncated: torch.Tensor  # [N] bool
    valid: torch.Tensor  # [N] bool
    clicked_slot: dict[str, torch.Tensor]  # {a: [N]} int64
    engagement: dict[str, torch.Tensor]  # {a: [N]}
    state: torch.Tensor | None = None  # [N, S], only for agents that need it
    next_state: torch.Tensor | None = None
    served: dict[str, torch.Tensor] | None = None  # {a: [N]} bool

    def seen(self, agent_id: str) -> torch.Tensor:
        """[N] bool: a real step (not an auto-reset) in which ``agent_id``'s slate reached the
        user — the rows a model of the user's response to slates may learn from."""
        if self.served is None or agent_id not in self.served:
            return self.valid
        return self.valid & self.served[agent_id]

    def slate_feedback(
        self, agent_id: str, target: str = "click"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What ``agent_id``'s slate earned, per slot: catalog ids of the slate's items
        ``[N, K]`` (int64), the label of each slot ``[N, K]`` (``target="click"``: 1 for the
        clicked slot; ``"engagement"``: the click's engagement; 0 elsewhere), and the slate
        positions ``[N, K]`` in candidate indices."""
        if target not in ("click", "engagement"):
            raise ValueError(f"target={target!r} must be 'click' or 'engagement'")
        slate = self.actions[agent_id]
        items = self.obs[agent_id]["candidate_ids"].gather(1, slate)
        slot = self.clicked_slot[agent_id]
        K = slate.shape[1]
        hit = (torch.arange(K, device=slot.device)[None, :] == slot[:, None]).float()
        if target == "engagement":
            hit = hit * self.engagement[agent_id][:, None].float()
        return items, hit, slate

    @property
    def ended(self) -> torch.Tensor:
        """[N] bool: the episode ended at this step (terminated or truncated)."""
        return self.terminated | self.truncated

    @classmethod
    def from_step(
        cls,
        env_agents: Sequence[str],
        obs: Obs,
        actions: Actions,
        rewards: dict[str, torch.Tensor],
        next_obs: Obs,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        info: Mapping[str, Any],
        state: torch.Tensor | None = None,
        next_state: torch.Tensor | None = None,
    ) -> Transition:
        """From one ``BatchedMarket.step`` (reads ``info["chosen_agent"]``,
        ``info["chosen_slot"]``, ``info["engagement"]``, ``info["shown"]`` and
        ``info["reset"]``)."""
        chosen_agent, chosen_slot = info["chosen_agent"], info["chosen_slot"]
        engagement = info["engagement"]
        shown = info.get("shown")  # [N, A, K] item ids, -1 where not visible
        clicked, value, served = {}, {}, {}
        for i, a in enumerate(env_agents):
            won = chosen_agent == i
            clicked[a] = torch.where(won, chosen_slot, torch.full_like(chosen_slot, -1))
            value[a] = torch.where(won, engagement, torch.zeros_like(engagement))
            if shown is not None:
                served[a] = (shown[:, i] >= 0).any(dim=1)
        return cls(
            obs=obs,
            # On the env's device: as_tensor without one would move a tensor to the
            # caller's default device (torch.set_default_device).
            actions={
                a: torch.as_tensor(x, device=chosen_slot.device).long() for a, x in actions.items()
            },
            rewards=rewards,
            next_obs=next_obs,
            terminated=terminated,
            truncated=truncated,
            valid=~info["reset"],
            clicked_slot=clicked,
            engagement=value,
            state=state,
            next_state=next_state,
            served=served or None,
        )


# ----------------------------------------------------------------------------------------
# Slates from scores (shared by every scoring agent)
# ----------------------------------------------------------------------------------------
_BIG = 3.0e38


def slate_from_scores(
    scores: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    epsilon: float | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The top-``k`` unmasked candidates by ``scores [N, C]`` as a slate ``[N, k]`` (best in
    slot 0), with ε-greedy exploration per slot: slot by slot, with probability ``epsilon``
    (a float or ``[N]``) the slot takes a uniformly random remaining unmasked candidate instead
    of the best remaining one. NaN and infinite scores of unmasked candidates rank below every
    finite score but above masked candidates, so the slate is always valid."""
    s = torch.nan_to_num(scores.float(), nan=-_BIG, posinf=_BIG, neginf=-_BIG)
    if isinstance(epsilon, (int, float)) and epsilon <= 0.0:
        return s.masked_fill(~mask, -math.inf).topk(k, dim=1).indices
    return sequential_slate(lambda j, prev: s, mask, k, epsilon, generator)


def sequential_slate(
    slot_scores: Callable[[int, torch.Tensor | None], torch.Tensor],
    mask: torch.Tensor,
    k: int,
    epsilon: float | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A slate ``[N, k]`` filled slot by slot: slot ``j`` takes the remaining unmasked
    candidate with the highest ``slot_scores(j, prev) [N, C]``, where ``prev [N]`` is slot
    ``j - 1``'s pick (``None`` for slot 0), so scores may depend on what the slate holds so
    far (SlateQ's greedy slate). With probability ``epsilon`` (a float or ``[N]``) a slot takes
    a uniformly random remaining unmasked candidate instead; the random draws are made up
    front (``[N, k]`` coins, ``[N, k, C]`` noise) only when ``epsilon`` may be positive. NaN
    and infinite scores of unmasked candidates rank below every finite score but above masked
    and taken candidates, so the slate is always valid when ``mask`` has ``k`` candidates."""
    N, C = mask.shape
    explore = not (isinstance(epsilon, (int, float)) and epsilon <= 0.0)
    if explore:
        eps = torch.as_tensor(epsilon, dtype=torch.float32, device=mask.device).expand(N)
        coins = torch.rand(N, k, generator=generator, dtype=torch.float32, device=mask.device)
        noise = torch.rand(N, k, C, generator=generator, dtype=torch.float32, device=mask.device)
    slate = torch.empty(N, k, dtype=torch.int64, device=mask.device)
    taken = ~mask.clone()
    prev = None
    for j in range(k):
        s = torch.nan_to_num(slot_scores(j, prev).float(), nan=-_BIG, posinf=_BIG, neginf=-_BIG)
        pick = s.masked_fill(taken, -math.inf).argmax(dim=1)
        if explore:
            rand = noise[:, j].masked_fill(taken, -1.0).argmax(dim=1)
            pick = torch.where(coins[:, j] < eps, rand, pick)
        slate[:, j] = pick
        taken = taken.scatter(1, pick[:, None], True)
        prev = pick
    return slate


# ----------------------------------------------------------------------------------------
# The environment as agents see it
# ----------------------------------------------------------------------------------------
def batched_core(env: Any) -> Any:
    """The batched market behind ``env``: itself for a batched env, ``env.core`` for the
    PettingZoo face (a view of a ``num_envs=1`` core)."""
    if hasattr(env, "num_envs") and hasattr(env, "agents"):
        return env
    core = getattr(env, "core", None)
    if core is not None and hasattr(core, "num_envs"):
        return core
    raise ValueError(
        f"cannot run an agent on {type(env).__name__}: expected a batched env "
        "(recenv.make_vec) or the PettingZoo face (recenv.make)"
    )


def check_compatible(agent: type[Agent] | Agent, env: Any) -> None:
    """Refuse an agent/env pair the agent's capability flags rule out, with what to do."""
    core = batched_core(env)
    name = agent.name or type(agent).__name__
    mode = getattr(core.config, "reward_mode", None)
    if mode is not None and mode not in agent.supports_reward_modes:
        raise ValueError(
            f"agent {name!r} supports reward_mode {list(agent.supports_reward_modes)}, the env "
            f"has reward_mode={mode!r}; choose another agent or pass reward_mode= to make_vec"
        )
    if agent.needs_privileged and not hasattr(core, "oracle_scores"):
        raise ValueError(
            f"agent {name!r} reads the simulator's latent truth (needs_privileged) but "
            f"{type(core).__name__} has no oracle_scores(); use a recenv market env"
        )
    if agent.needs_state and not hasattr(core, "state"):
        raise ValueError(
            f"agent {name!r} needs the global state but {type(core).__name__} has no state()"
        )
    if agent.action_kind != "slate":
        raise ValueError(f"agent {name!r} acts with {agent.action_kind!r}; recenv needs slates")


def check_obs(agent: Agent, obs: Any) -> None:
    """Raise ``ValueError`` unless ``obs`` is a mapping with an entry for each of
    ``agent.agent_ids``, naming the agent, the missing ids and the keys ``obs`` has."""
    if not isinstance(obs, Mapping):
        raise ValueError(
            f"agent {agent.name!r}: act() takes obs as {{env agent: observation}} for "
            f"{agent.agent_ids}, got {type(obs).__name__}"
        )
    missing = [a for a in agent.agent_ids if a not in obs]
    if missing:
        raise ValueError(
            f"agent {agent.name!r}: obs has no entry for env agent(s) {missing} it acts for "
            f"(agent_ids={agent.agent_ids}); obs holds {list(obs)}"
        )


def _obs_checked(act: Callable) -> Callable:
    @functools.wraps(act)
    def checked(self: Agent, obs: Any, *args: Any, **kwargs: Any) -> Any:
        check_obs(self, obs)
        return act(self, obs, *args, **kwargs)

    # The marker __init_subclass__ and registry.unimplemented read (a function attribute).
    checked.__wrapped_act__ = act  # type: ignore[attr-defined]
    return checked


class MetricError(ValueError):
    """An agent's ``learn()`` returned metrics that are not ``{name: one number}``."""


METRIC_VALUES = "one real number: a Python int or float, a NumPy scalar or a 0-d tensor"


def checked_metrics(agent: Any, metrics: Any) -> Metrics:
    """``learn()``'s result ``metrics`` as ``{name: float}`` (``None``, from a ``learn``
    that returns nothing, as ``{}``): each value a Python number, a NumPy scalar (or 0-d
    array) or a 0-d tensor, of a real kind. Any other value (a vector, a string, ``None``, a
    complex number) or result raises :class:`MetricError` naming the agent, the metric and
    what a metric may be: it would otherwise be logged by ``float()`` (or crash there), or be
    kept as a tensor in the run's checkpoints and summary. NaN and ±inf pass (a diverging
    run's losses are worth logging; the runner stops a run whose state diverged)."""
    name = getattr(agent, "name", "") or type(agent).__name__
    if metrics is None:  # a learn() without a return statement: nothing to log
        return {}
    if not isinstance(metrics, Mapping):
        raise MetricError(
            f"agent {name!r}: learn() returned {_described(metrics)}; expected a dict "
            "{metric name: number} ({} when nothing was updated)"
        )
    out: Metrics = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise MetricError(
                f"agent {name!r}: learn() returned a metric named {key!r} "
                f"({type(key).__name__}); metric names are str ('losses/td')"
            )
        number = _metric_number(value)
        if number is None:
            vector = torch.is_tensor(value) or isinstance(value, np.ndarray)
            raise MetricError(
                f"agent {name!r}: learn() returned metric {key!r} = {_described(value)}; a "
                f"metric is {METRIC_VALUES}" + (" (reduce it first, e.g. .mean())" * vector)
            )
        out[key] = number
    return out


def _metric_number(v: Any) -> float | None:
    """``v`` as a float when it is one real number, else ``None``."""
    if isinstance(v, (numbers.Real, np.bool_)):
        return float(v)
    if torch.is_tensor(v):
        one = v.dim() == 0 and not v.is_complex() and not v.is_meta
    elif isinstance(v, np.ndarray):
        one = v.ndim == 0 and v.dtype.kind in "biuf"
    else:
        return None
    return float(v) if one else None


def _described(v: Any) -> str:
    """A value as a refusal names it: a tensor's or array's shape and dtype, a short repr."""
    if torch.is_tensor(v) or isinstance(v, np.ndarray):
        kind = "a tensor" if torch.is_tensor(v) else "a NumPy array"
        return f"{kind} of shape {tuple(v.shape)} ({v.dtype})"
    if v is None:
        return "None"
    text = repr(v)
    return f"a {type(v).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


def _metrics_checked(learn: Callable) -> Callable:
    @functools.wraps(learn)
    def checked(self: Agent, *args: Any, **kwargs: Any) -> Metrics:
        return checked_metrics(self, learn(self, *args, **kwargs))

    # The marker __init_subclass__ reads (a function attribute).
    checked.__wrapped_learn__ = learn  # type: ignore[attr-defined]
    return checked


# ----------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------
class Agent:
    """Base class of every agent; see the module docstring for the contract."""

    name: ClassVar[str] = ""  # registry name, written into checkpoints
    Config: ClassVar[type[AgentConfig]] = AgentConfig
    # The instance's config, of type ``Config``. A subclass with its own Config declares it
    # too (``config: MyConfig``), so type checkers see that config's fields.
    config: AgentConfig
    registrable: ClassVar[bool] = False  # concrete agents set True; the registry test checks

    needs_state: ClassVar[bool] = False
    needs_privileged: ClassVar[bool] = False
    learns: ClassVar[bool] = False
    scores_candidates: ClassVar[bool] = False
    supports_reward_modes: ClassVar[tuple[str, ...]] = REWARD_MODES
    action_kind: ClassVar[str] = "slate"
    # Agent.load refuses a checkpoint whose floating-point state holds NaN or ±inf (a
    # diverged run's); an agent whose state holds infinities by design sets this False.
    finite_state: ClassVar[bool] = True
    # Top-level keys a checkpoint's state may hold that this agent's own state_dict() does
    # not (Agent.load refuses any other: a foreign key would load silently). No built-in
    # agent has one: the keys their state_dict() writes depend only on the config, which the
    # header must match; keys a checkpoint may *lack* (older formats) are load_state_dict's.
    optional_state_keys: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        # Every act() a subclass defines first checks that obs has an entry for each env
        # agent this agent controls: a missing one was a bare KeyError('agent_1') from deep
        # inside the policy, naming neither the agent nor what obs held. (The two methods are
        # replaced on purpose, by wrappers of the same signature: mypy's method-assign.)
        act = cls.__dict__.get("act")
        if act is not None and not hasattr(act, "__wrapped_act__"):
            cls.act = _obs_checked(act)  # type: ignore[method-assign]  # see above
        # And every learn() (a mixin's too) returns {name: float} (checked_metrics): a tensor
        # metric was kept raw in a run's checkpoints and broke its summary.json; a vector
        # crashed TensorBoard's logging.
        learn = cls.learn
        if learn is not Agent.learn and not hasattr(learn, "__wrapped_learn__"):
            cls.learn = _metrics_checked(learn)  # type: ignore[method-assign]  # see above

    def __init__(
        self,
        env: Any,
        config: AgentConfig | None = None,
        agent_ids: Sequence[str] | None = None,
    ):
        check_compatible(self, env)
        core = batched_core(env)
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise ValueError(
                f"{type(self).__name__} takes a {self.Config.__name__}, got "
                f"{type(self.config).__name__}"
            )
        self.env_config = core.config
        self.env_agents: list[str] = list(core.agents)
        if isinstance(agent_ids, str):  # one env agent, named alone ("agent_0")
            agent_ids = [agent_ids]
        ids = list(self.env_agents if agent_ids is None else agent_ids)
        unknown = [a for a in ids if a not in self.env_agents]
        if unknown or not ids or len(set(ids)) != len(ids):
            raise ValueError(
                f"agent_ids={ids} must be distinct env agents, a non-empty subset of "
                f"{self.env_agents}"
            )
        self.agent_ids = ids
        self.device = torch.device(core.device)
        # Privileged access is kept only by agents that declare it.
        self._core = core if (self.needs_privileged or self.needs_state) else None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(self.config.seed))

    # Sizes --------------------------------------------------------------------------------
    @property
    def num_candidates(self) -> int:
        return self.env_config.num_candidates

    @property
    def slate_size(self) -> int:
        return self.env_config.slate_size

    def env_index(self, agent_id: str) -> int:
        """Index of ``agent_id`` among the env's agents (the column in ``info`` tensors)."""
        return self.env_agents.index(agent_id)

    def bind(self, env: Any) -> None:
        """Act in ``env`` from now on: privileged and state access (oracle, centralized
        critics) read this env. It must have the agents and shapes the agent was built for.
        :func:`agents.train` and :func:`agents.evaluate` call it."""
        core = batched_core(env)
        check_compatible(self, env)
        mine, theirs = env_shapes(self.env_config), env_shapes(core.config)
        differ = _env_differences(theirs, mine, FORMAT_VERSION)
        if list(core.agents) != self.env_agents or differ:
            raise ValueError(
                f"agent {self.name!r} was built for agents {self.env_agents} and an env with "
                f"{_fields(mine, differ)}; this env has agents {list(core.agents)} and "
                f"{_fields(theirs, differ)}"
            )
        if self.needs_privileged or self.needs_state:
            self._core = core

    def reseed(self, seed: int) -> None:
        """Seed the agent's random generator(s) with ``seed``: :func:`agents.evaluate` with a
        seed calls it, so two evaluations with one seed draw the same (a random agent's
        slates, a sampled policy's). An agent with generators besides ``self.generator``
        (members, its own) overrides it and seeds each, from ``seed`` (:func:`member_seed`)."""
        self.generator.manual_seed(member_seed(seed, 0))

    # Protocol -------------------------------------------------------------------------------
    def act(self, obs: Obs, explore: bool = False) -> Actions:
        raise NotImplementedError

    def observe(self, transition: Transition) -> None:
        return None

    def learn(self, transition: Transition) -> Metrics:
        return {}

    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "generator_device": self.generator.device.type,  # its state's format
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        restore_generator(self.generator, state["generator"], state.get("generator_device"))

    def state_layout(self, state: dict[str, Any]) -> dict[str, Any]:
        """This agent's own ``state`` (a copy of its :meth:`state_dict`) as :meth:`load`
        compares a checkpoint's state with it (:func:`~agents.state_checks.state_layout_error`):
        itself by default. An agent whose state holds tables sized by its use rather than by
        its config and env (a replay buffer's filled rows, tables per market of the batch it
        last acted on) gives them here as empty tensors or dicts, which any size matches, and
        checks their shapes in its own ``load_state_dict``: an agent that trained or acted
        longer than the checkpoint's must still load it."""
        return state

    # Checkpoints ----------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What a checkpoint must match: the agent, its config, and the env shapes
        (:data:`ENV_SHAPES`)."""
        e = self.env_config
        return {
            "agent": self.name,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "format_version": FORMAT_VERSION,
            "agent_ids": list(self.agent_ids),
            "config": _plain(self.config.to_dict()),
            "env": env_shapes(e),
        }

    def envelope(self) -> dict[str, Any]:
        """What a checkpoint of this agent holds: ``{"header": header(), "state":
        state_dict()}``, the state's tensors on the CPU (:meth:`save` writes it; a run's
        checkpoints hold it beside their own parts)."""
        return {"header": self.header(), "state": _to_cpu(self.state_dict())}

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint (:meth:`envelope`) via ``torch.save``.
        A header or state holding a value ``torch.load(weights_only=True)`` cannot read back
        (a NumPy array, an arbitrary object) raises ``ValueError`` naming the place (e.g.
        ``state['w']``) and what a checkpoint may hold, and nothing is written."""
        payload = self.envelope()
        unreadable = unsavable_error(payload)
        if unreadable:
            raise ValueError(
                f"agent {self.name!r} cannot be saved to {os.fspath(path)!r} (nothing was "
                f"written): {unreadable}"
            )
        torch.save(payload, path)

    def load(self, path: str | os.PathLike, *, payload: Mapping[str, Any] | None = None) -> None:
        """Restore from :meth:`save`'s file. A foreign, mismatched or corrupt checkpoint raises
        ``ValueError`` saying what was expected, and leaves the agent as it was: a state that
        fails to apply part-way is rolled back to a copy of :meth:`state_dict` taken before
        (generator included). What ``load_state_dict`` clears whether or not it succeeds (a
        partial rollout, n-step accumulators: per-episode data, not checkpointed) stays
        cleared.

        ``payload``: the checkpoint already read from ``path`` (:func:`read_checkpoint`), which
        is then not read again (``path`` only names it in errors); it gets the same checks."""
        payload = _checkpoint_of(path, payload)
        head = payload["header"]
        if head.get("agent") != self.name:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} holds agent {head.get('agent')!r}; expected "
                f"a checkpoint of agent {self.name!r}"
            )
        mine = self.header()
        if head.get("agent_ids") != mine["agent_ids"]:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} was written for "
                f"agent_ids={head.get('agent_ids')}; this {self.name!r} agent has "
                f"agent_ids={mine['agent_ids']}"
            )
        theirs = head.get("env") if isinstance(head.get("env"), dict) else {}
        differ = _env_differences(theirs, mine["env"], head.get("format_version"))
        if differ:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} was written for an env with "
                f"{_fields(theirs, differ)}; this {self.name!r} agent's env has "
                f"{_fields(mine['env'], differ)} (env={mine['env']})"
            )
        saved = head.get("config")
        if not isinstance(saved, dict):  # damaged: it was an AttributeError
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} has a header 'config' that is a "
                f"{type(saved).__name__}; expected a dict of the agent's config"
            )
        saved = type(self.config).header_config(saved)
        if saved != mine["config"]:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} has a different config (key: checkpoint's "
                f"vs this agent's): {'; '.join(config_differences(saved, mine['config']))}; "
                "build the agent with the checkpoint's config, or use "
                "agents.load_agent(path, env)"
            )
        # On the CPU, so a large device state (a saved replay buffer) is not held twice there.
        backup = _map_tensors(self.state_dict(), lambda t: t.detach().to("cpu", copy=True))
        misfit = state_layout_error(payload["state"], self.state_layout(backup))
        misfit = misfit or state_keys_error(self, payload["state"], backup)
        if not misfit and self.finite_state:
            misfit = nonfinite_state_error(payload["state"])
        if misfit:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} for agent {self.name!r} has a state that does "
                f"not fit this agent (left unchanged): {misfit}"
            )
        try:
            self.load_state_dict(_to_device(payload["state"], self.device))
            misfit = optimizer_state_error(self)
            if misfit:
                raise ValueError(misfit)
        except Exception as e:
            self.load_state_dict(_to_device(backup, self.device))
            if not isinstance(
                e, (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError)
            ):
                raise
            why = str(e)
            if isinstance(e, KeyError):  # a key load_state_dict reads and the state lacks
                key = e.args[0] if e.args else None
                why = missing_keys_error(payload["state"], backup, key) or f"KeyError: {e}"
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} for agent {self.name!r} has a state that does "
                f"not fit this agent (left unchanged): {why}"
            ) from None


_ABSENT = object()


def config_differences(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """``"key: checkpoint's value vs this agent's"`` for each key in which a checkpoint's
    header config ``saved`` and an agent's ``mine`` differ (:func:`_config_diff`)."""
    return [f"{k}: {_shown(a)} vs {_shown(b)}" for k, a, b in _config_diff(saved, mine)]


def _config_diff(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, mine)`` for each key in which two configs differ, keys only one
    of them has included (their missing side ``_ABSENT``), sorted by key."""
    out = []
    for k in sorted(set(saved) | set(mine), key=str):
        a, b = saved.get(k, _ABSENT), mine.get(k, _ABSENT)
        if a is _ABSENT or b is _ABSENT or a != b:
            out.append((k, a, b))
    return out


def _shown(v: Any) -> str:
    return "(absent)" if v is _ABSENT else repr(v)


def state_keys_error(agent: Agent, saved: Any, mine: Any, at: str = "state") -> str | None:
    """Keys of a checkpoint's ``saved`` state that ``agent``'s own state ``mine`` (its
    ``state_dict()``) does not have at its top level, apart from its
    :attr:`~Agent.optional_state_keys` — and the same of each member's state, for an agent
    with ``members`` (a :class:`Team`, an ensemble) whose state holds them as
    ``state['members'][j]``. Deeper places (an optimizer's per-parameter state, a buffer's
    rows, pending metrics) grow with training and are their own ``load_state_dict``'s."""
    why = unexpected_keys_error(saved, mine, at, agent.optional_state_keys)
    if why or not (isinstance(saved, Mapping) and isinstance(mine, Mapping)):
        return why
    members = getattr(agent, "members", None)
    theirs, ours = saved.get("members"), mine.get("members")
    if (
        isinstance(members, (list, tuple))
        and all(isinstance(m, Agent) for m in members)
        and isinstance(theirs, (list, tuple))
        and isinstance(ours, (list, tuple))
    ):
        for j, (m, s, o) in enumerate(zip(members, theirs, ours, strict=False)):
            why = state_keys_error(m, s, o, f"{at}['members'][{j}]")
            if why:
                return why
    return None


def unsavable_error(payload: Mapping[str, Any]) -> str | None:
    """The first place of a checkpoint ``payload`` (its ``header`` and ``state``, as
    ``header[...]``, ``state[...]``) holding a value ``torch.load(weights_only=True)`` does
    not read back, with what a checkpoint may hold; ``None`` when all of it loads."""
    for part in ("header", "state"):
        if part in payload:
            why = weights_only_error(payload[part], part)
            if why:
                return why
    return None


def members_layout(members: Sequence[Agent], states: Sequence[Any]) -> list[Any]:
    """Each member's state in ``states`` as its :meth:`Agent.state_layout` gives it (a
    :class:`Team`'s, an ensemble's members)."""
    return [m.state_layout(s) for m, s in zip(members, states, strict=True)]


def member_seed(seed: int, offset: int) -> int:
    """``seed + offset`` as a seed every torch generator takes (``manual_seed`` takes
    ``[-2**63, 2**64 - 1]``; ``seed`` is an int64): what :meth:`Agent.reseed` gives the
    generator of member ``offset`` (a :class:`Team`'s, an ensemble's)."""
    return (int(seed) + offset) % 2**64


def env_shapes(config: Any) -> dict[str, Any]:
    """``{size: value}`` of :data:`ENV_SHAPES` for an env config (``None`` where it has none)."""
    return {k: getattr(config, k, None) for k in ENV_SHAPES}


def _env_differences(saved: Mapping[str, Any], mine: Mapping[str, Any], version: Any) -> list:
    """The sizes in which a checkpoint's header ``env`` differs from this agent's, among those
    its ``format_version`` recorded."""
    keys = _ENV_SHAPES_V1 if version == 1 else ENV_SHAPES
    return [k for k in keys if saved.get(k) != mine.get(k)]


def _fields(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={values.get(k)}" for k in keys)


def restore_generator(
    generator: torch.Generator, saved: torch.Tensor, device_type: str | None = None
) -> None:
    """Set ``generator`` to ``saved``, a ``get_state()`` of a generator on ``device_type``
    (``None``: not recorded, as in format-1 checkpoints; judged by the state's size).

    A state cannot move between device types (a CPU generator's is mt19937's 5056 bytes, a
    CUDA one's Philox seed and offset, 16): from another device type, ``generator`` is
    reseeded instead, with a seed derived from the saved bytes — the same checkpoint always
    gives the same stream, so training stays reproducible, though not the stream the saved
    run would have drawn — and a warning says so."""
    saved = saved.detach().cpu()
    mine = generator.device.type
    if device_type is None:
        fits = saved.numel() == generator.get_state().numel()
    else:
        fits = device_type == mine
    if fits:
        generator.set_state(saved)
        return
    digest = hashlib.sha256(saved.contiguous().numpy().tobytes()).digest()
    seed = int.from_bytes(digest[:8], "little")
    generator.manual_seed(seed)
    warnings.warn(
        f"the checkpoint's random generator state is from a {device_type or 'different'} "
        f"generator ({saved.numel()} bytes) and cannot be set on this agent's {mine} "
        f"generator: it is reseeded with {seed} (derived from the saved state), so the "
        "random stream differs from the saved run's but is the same on every load",
        stacklevel=2,
    )


def damaged_record(f: Any) -> str | None:
    """The first record of the torch zip archive open as ``f`` (a binary file, read from its
    start) whose bytes do not match the CRC-32 that ``torch.save`` wrote for it, as
    ``"record 'archive/data/3' fails its CRC-32 check"`` (or ``"... cannot be read (why)"``);
    ``None`` when every record matches.

    ``torch.load`` does not check these CRCs: a flipped bit in a tensor's record (bit rot, a
    failing disk, a damaged copy) loads silently as other numbers. One pass over the file
    (``zipfile.ZipFile.testzip``'s: every record read once, in 1 MiB chunks, nothing kept).
    Not a zip archive, or one whose directory cannot be read: ``None`` (``torch.load`` says
    why it cannot read it). An archive written with
    ``torch.serialization.set_crc32_options(False)`` (every CRC 0) has nothing to check."""
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError):
        return None
    with archive:  # closes the archive's view, not ``f``
        records = archive.infolist()
        if not any(r.CRC for r in records if r.file_size):
            return None
        for record in records:
            try:
                with archive.open(record) as data:
                    while data.read(1 << 20):
                        pass
            except Exception as e:  # BadZipFile (a CRC, a local header), EOFError, ...
                why = " ".join(str(e).split()) or type(e).__name__
                if why.startswith("Bad CRC-32"):
                    return f"record {record.filename!r} fails its CRC-32 check"
                return f"record {record.filename!r} cannot be read ({type(e).__name__}: {why})"
    return None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint: the file is opened once, its records are checked against
    the CRC-32s ``torch.save`` wrote (:func:`damaged_record`), then it is read with
    ``torch.load(weights_only=True)`` from that same open file (a checkpoint pruned or
    replaced meanwhile is still read whole), and its envelope is checked
    (:func:`check_checkpoint`). Raises ``FileNotFoundError``, or ``ValueError`` naming the
    file and what is wrong (a damaged record by name)."""
    where = os.fspath(path)
    try:
        f = open(where, "rb")  # closed by the `with f` below
    except FileNotFoundError:
        raise
    except OSError as e:  # a directory, no permission: as torch.load(path) reported them
        raise _unreadable(where, e) from None
    with f:
        damage = damaged_record(f)
        if damage:
            raise ValueError(
                f"{where!r} is damaged: its {damage} (the bytes are not those torch.save "
                "wrote: a failing disk, bit rot, a damaged copy); nothing in it is used"
            )
        f.seek(0)
        try:
            payload = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a damaged or foreign file
            raise _unreadable(where, e) from None
    return check_checkpoint(payload, where)


def _checkpoint_of(path: str | os.PathLike, payload: Any) -> dict[str, Any]:
    """The checkpoint at ``path``: ``payload`` when the caller has read it already
    (:func:`check_checkpoint`), else :func:`read_checkpoint`'s."""
    return read_checkpoint(path) if payload is None else check_checkpoint(payload, path)


def _unreadable(where: str, e: BaseException) -> ValueError:
    """The ``ValueError`` for a file ``torch.load`` refused with ``e``."""
    reason = load_refusal(e)
    if isinstance(e, pickle.UnpicklingError) and "WeightsUnpickler" in str(e):
        return ValueError(
            f"{where!r} is not a readable agent checkpoint: torch.load(weights_only=True) "
            f"refuses a value in it ({reason}). Agent.save() and the runner refuse to "
            "write such a value; this file was written by other code (torch.save) or by "
            "an older version that did not check"
        )
    return ValueError(
        f"{where!r} is not a readable agent checkpoint ({reason}); expected a file "
        "written by Agent.save()"
    )


def check_checkpoint(payload: Any, where: str | os.PathLike) -> dict[str, Any]:
    """``payload`` (a checkpoint read from ``where``, e.g. by :func:`read_checkpoint`), its
    envelope checked: a dict with ``header`` (naming the ``agent``, of a readable
    ``format_version``) and ``state``; else ``ValueError`` naming ``where``."""
    where = os.fspath(where)
    head = payload.get("header") if isinstance(payload, dict) else None
    if not isinstance(head, dict) or "agent" not in head or "state" not in payload:
        raise ValueError(
            f"{where!r} is not an agent checkpoint: expected a dict with 'header' "
            "({'agent': name, 'format_version': …}) and 'state', as written by Agent.save()"
        )
    version = head.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{where!r} has checkpoint format_version={version!r}; this version of agents "
            f"reads format_version {' or '.join(map(str, READABLE_FORMAT_VERSIONS))} "
            f"(writes {FORMAT_VERSION})"
        )
    return payload


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def load_refusal(e: BaseException) -> str:
    """Why ``torch.load`` refused a file, as one line: the exception's type and message
    without terminal escape codes and whitespace runs; of a ``weights_only`` refusal, the
    unpickler's own reason (what it met, what to allow) rather than torch's generic preamble
    of options and its documentation link."""
    text = _ANSI.sub("", str(e))
    cause = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\s*\n|\Z)", text, re.S)
    if cause:
        text = cause.group(1)
        text = re.sub(r"\s*Check the documentation of torch\.load.*\Z", "", text, flags=re.S)
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _plain(x: Any) -> Any:
    """Config values as the types ``weights_only`` loading returns (tuples become lists)."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _map_tensors(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, dict):
        return {k: _map_tensors(v, fn) for k, v in x.items()}
    if isinstance(x, list):
        return [_map_tensors(v, fn) for v in x]
    if isinstance(x, tuple):
        return tuple(_map_tensors(v, fn) for v in x)
    return x


def _to_cpu(x: Any) -> Any:
    return _map_tensors(x, lambda t: t.detach().cpu())


def _to_device(x: Any, device: torch.device) -> Any:
    # Generator states stay on the CPU (uint8 byte strings).
    return _map_tensors(x, lambda t: t if t.dtype == torch.uint8 else t.to(device))


# ----------------------------------------------------------------------------------------
# Scoring agents: score every candidate, then take the top K
# ----------------------------------------------------------------------------------------
class ScoringAgent(Agent):
    """An agent that scores candidates and recommends the top K of the masked scores.

    Write ``score_agent(i, obs_a, explore) -> [N, C]`` (higher is better; ``i`` indexes
    ``self.agent_ids``; ``explore`` may add optimism, as UCB does) and, for ε-greedy
    exploration, ``exploration() -> ε`` (per slot, while ``explore=True``).
    """

    scores_candidates: ClassVar[bool] = True

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        raise NotImplementedError

    def exploration(self) -> float:
        return 0.0

    def score(self, obs: Obs, explore: bool = False) -> dict[str, torch.Tensor]:
        """``{a: [N, C]}`` candidate scores of every controlled agent. Scores of another
        shape than the candidates' ``action_mask`` (a plug-in's bug) raise ``ValueError``
        naming the agent, not a broadcasting error inside the slate's top-k."""
        out = {}
        for i, a in enumerate(self.agent_ids):
            s, want = self.score_agent(i, obs[a], explore), obs[a]["action_mask"].shape
            if not torch.is_tensor(s) or s.shape != want:
                got = tuple(s.shape) if torch.is_tensor(s) else type(s).__name__
                raise ValueError(
                    f"agent {self.name!r}: score_agent for {a!r} returned {got}; expected "
                    f"scores [N, C] = {tuple(want)}, one per candidate of the action_mask"
                )
            out[a] = s
        return out

    def act(self, obs: Obs, explore: bool = False) -> Actions:
        eps = self.exploration() if explore else 0.0
        return {
            a: slate_from_scores(s, obs[a]["action_mask"], self.slate_size, eps, self.generator)
            for a, s in self.score(obs, explore).items()
        }


# ----------------------------------------------------------------------------------------
# Teams of different agents
# ----------------------------------------------------------------------------------------
class Team(Agent):
    """Several agents, each controlling its own env agents, acting as one.

    ``act`` merges the members' slates; ``observe``, ``learn`` and ``begin_episode`` go to
    every member (each reads only its own agents); metrics are prefixed ``"<member>/…"``;
    checkpoints nest the members' states and check their names.
    """

    name: ClassVar[str] = "team"

    def __init__(self, members: Sequence[Agent]):
        if not members:
            raise ValueError("a Team needs at least one member agent")
        seen: dict[str, str] = {}
        for m in members:
            if not isinstance(m, Agent):
                raise ValueError(f"team members must be Agents, got {type(m).__name__}")
            for a in m.agent_ids:
                if a in seen:
                    raise ValueError(f"env agent {a!r} is controlled by two team members")
                seen[a] = m.name
        first = members[0]
        mine = env_shapes(first.env_config)
        for j, m in enumerate(members[1:], 1):
            theirs = env_shapes(m.env_config)
            differ = _env_differences(theirs, mine, FORMAT_VERSION)
            if differ or m.env_agents != first.env_agents or m.device != first.device:
                raise ValueError(
                    f"team member {j} ({m.name!r}) was built for another env than member 0 "
                    f"({first.name!r}): {_fields(theirs, differ) or 'agents ' + str(m.env_agents)}"
                    f" on {m.device}, against {_fields(mine, differ) or first.env_agents} on "
                    f"{first.device}; build every member for the env the team will run on"
                )
        self.members = list(members)
        self.config = AgentConfig()
        self.env_config = first.env_config
        self.env_agents = first.env_agents
        self.agent_ids = [a for a in first.env_agents if a in seen]
        self.device = first.device
        self._core = None
        self.generator = torch.Generator(device=self.device)
        # The capability flags, class-level on every agent class, are the members' here (per
        # instance; mypy refuses setting a ClassVar on an instance: misc).
        self.needs_state = any(m.needs_state for m in members)  # type: ignore[misc]
        self.needs_privileged = any(m.needs_privileged for m in members)  # type: ignore[misc]
        self.learns = any(m.learns for m in members)  # type: ignore[misc]
        self.finite_state = all(m.finite_state for m in members)  # type: ignore[misc]

    def _labels(self) -> list[str]:
        return [f"{m.name}[{','.join(m.agent_ids)}]" for m in self.members]

    def bind(self, env: Any) -> None:
        for m in self.members:
            m.bind(env)

    def act(self, obs: Obs, explore: bool = False) -> Actions:
        """Every member's slates, merged. A member returning slates for env agents it does
        not control (another member's, or none of the team's) raises ``ValueError`` naming
        it: they would have replaced the other member's slates silently."""
        out: Actions = {}
        for j, m in enumerate(self.members):
            slates = m.act(obs, explore)
            if not isinstance(slates, Mapping):
                raise ValueError(
                    f"team member {j} ({m.name!r}, agent_ids={m.agent_ids}): act() returned "
                    f"a {type(slates).__name__}; expected {{env agent: slate}}"
                )
            foreign = [a for a in slates if a not in m.agent_ids]
            if foreign:
                raise ValueError(
                    f"team member {j} ({m.name!r}) returned slates for env agent(s) {foreign} "
                    f"it does not control; it controls {m.agent_ids} (a member acts only for "
                    "its own agent_ids)"
                )
            out.update(slates)
        return out

    def observe(self, transition: Transition) -> None:
        for m in self.members:
            m.observe(transition)

    def learn(self, transition: Transition) -> Metrics:
        out: Metrics = {}
        for label, m in zip(self._labels(), self.members, strict=True):
            out.update({f"{label}/{k}": v for k, v in m.learn(transition).items()})
        return out

    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        for m in self.members:
            m.begin_episode(mask)

    def reseed(self, seed: int) -> None:
        # Member j from seed + 1000 j, as the runner seeds an opponent (seed + 1000): two
        # members drawing the same stream would act alike.
        super().reseed(seed)
        for j, m in enumerate(self.members):
            m.reseed(member_seed(seed, 1000 * j))

    def header(self) -> dict[str, Any]:
        head = super().header()
        head["members"] = [m.header() for m in self.members]
        return head

    def state_dict(self) -> dict[str, Any]:
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for m, s in zip(self.members, state["members"], strict=True):
            m.load_state_dict(s)

    def state_layout(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "members": members_layout(self.members, state["members"])}

    def load(self, path: str | os.PathLike, *, payload: Mapping[str, Any] | None = None) -> None:
        payload = _checkpoint_of(path, payload)
        head = payload["header"]
        if head.get("agent") == "team":
            differ = header_differences(head, self)
            if differ:
                raise ValueError(
                    f"checkpoint {os.fspath(path)!r} holds a team with other members, configs "
                    f"or env shapes than this team of "
                    f"{[(m.name, m.agent_ids) for m in self.members]}: {'; '.join(differ[:5])}"
                )
        super().load(path, payload=payload)


def header_differences(saved: Any, agent: Agent) -> list[str]:
    """What in a checkpoint's header ``saved`` does not describe ``agent`` (its name,
    ``agent_ids``, config — keys the checkpoint predates read as :attr:`AgentConfig.LEGACY`
    — and env shapes; a team's members each), as ``"key: saved, this agent's"`` texts;
    ``[]`` when it fits. A run's resume asks it of the rebuilt agent, whose config comes from
    the run's ``config.json`` and today's defaults."""
    if not isinstance(saved, Mapping):
        return [f"the header is a {type(saved).__name__}, not a dict"]
    pairs: list[tuple[Any, Agent, str]] = [(saved, agent, "")]
    if isinstance(agent, Team):
        theirs = saved.get("members")
        if not isinstance(theirs, (list, tuple)) or len(theirs) != len(agent.members):
            return [f"members: {_describe_members(theirs)}, this team's {len(agent.members)}"]
        pairs = [
            (t, m, f"members[{j}].")
            for j, (t, m) in enumerate(zip(theirs, agent.members, strict=True))
        ]
    out: list[str] = []
    for head, member, prefix in pairs:
        if not isinstance(head, Mapping):
            out.append(f"{prefix}header: a {type(head).__name__}, not a dict")
            continue
        mine = member.header()
        out += [
            f"{prefix}{k}: {head.get(k)!r}, this agent's {mine[k]!r}"
            for k in ("agent", "agent_ids")
            if head.get(k) != mine[k]
        ]
        cfg = head.get("config")
        cfg = type(member.config).header_config(cfg) if isinstance(cfg, Mapping) else {}
        out += [
            f"{prefix}config.{k}: {_shown(a)}, this agent's {_shown(b)}"
            for k, a, b in _config_diff(cfg, mine["config"])
        ]
        env = head.get("env")
        if not isinstance(env, dict):
            env = {}
        out += [
            f"{prefix}env.{k}: {env.get(k)!r}, this agent's {mine['env'][k]!r}"
            for k in _env_differences(env, mine["env"], head.get("format_version"))
        ]
    return out


def _describe_members(members: Any) -> str:
    """A header's ``members`` as a damage message names it."""
    if isinstance(members, (list, tuple)):
        return f"{len(members)} member headers"
    return "none" if members is None else f"a {type(members).__name__}"
