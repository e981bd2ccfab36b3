"""Typed experiment configs, named presets, and overrides from the command line or a file.

Two frozen dataclasses are the whole configuration; every field carries a one-line ``help``
(it becomes ``--help`` text):

- :class:`RunConfig` — one training run: one agent (and optionally an opponent) on one env with
  one seed, plus the env's and the agents' own config overrides. It is saved, fully resolved,
  as ``config.json`` in every run directory and is all :func:`experiments.runner.resume` needs.
- :class:`CompareConfig` — a grid of runs: envs x agents x seeds around a ``RunConfig``
  template, with per-agent overrides (e.g. a learning agent's schedule tuned to the budget).

A **preset** is a named ``CompareConfig`` (:data:`PRESETS`); ``train`` uses its template.

Overrides are ``KEY=VALUE`` strings (``--set``), per-field flags (``--seed 3``) or a TOML/JSON
file (``--config``); a value is parsed by the field's type hint, never evaluated. Keys:

==========================  ===================================================================
``seed``, ``run.seed``      a :class:`RunConfig` field
``agents``, ``compare.X``   a :class:`CompareConfig` field (``compare`` only)
``env.KEY``                 a :class:`~recenv.core.config.MarketConfig` field
``agent.KEY``               the agent's config (``compare``: every agent whose config has KEY)
``opponent.KEY``            the opponent's config
``NAME.KEY``                agent ``NAME``'s config, whenever ``NAME`` runs (``iql.lr=3e-4``)
==========================  ===================================================================

An unknown key or an ill-typed value raises :class:`ConfigError` with the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import agents
import recenv
from recenv.core.config import MarketConfig, UnknownConfigKey, did_you_mean, option

Overrides = tuple[tuple[str, Any], ...]  # sorted (key, value) pairs: hashable, frozen
_OVERRIDE_FIELDS = ("env_overrides", "agent_overrides", "opponent_overrides")
# Evaluation markets are seeded from seed + this, so they never share a seed with training.
EVAL_SEED_OFFSET = 1_000_000
# An opponent's agents are seeded seed + this (experiments.runner.make_lineup).
OPPONENT_SEED_OFFSET = 1_000


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message lists the valid ones."""


# ----------------------------------------------------------------------------------------
# The configs
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One training run: ``agent`` (and ``opponent``) on ``env`` with ``seed``."""

    env: str = option("recenv/Market-v0", "environment id (`python -m experiments describe envs`)")
    agent: str = option(
        "iql",
        "agent under test (registry name or 'module:attr'); it controls every env agent, or "
        "only agent_0 when `opponent` is set",
    )
    opponent: str = option(
        "", "agent controlling agent_1, agent_2, ... ('': the agent controls all of them)"
    )
    seed: int = option(
        0,
        "seed of the markets (market n gets seed+n), the agents (a factory plug-in only if it "
        "takes seed=) and global RNGs",
    )
    num_envs: int = option(16, "markets stepped together (the batch size of the env)")
    device: str = option("cpu", "torch device: 'cpu', 'cuda' or 'cuda:N'")
    compile: bool = option(False, "run the env's step through torch.compile")
    threads: int = option(
        1, "torch CPU threads (0: torch's default); 1 is fastest for small batches on shared CPUs"
    )
    total_steps: int = option(20_000, "training budget in env steps (transitions of one market)")
    eval_episodes: int = option(16, "greedy evaluation episodes after training (0: none)")
    log_every: int = option(1_000, "env steps between TensorBoard scalars and progress updates")
    checkpoint_every: int = option(5_000, "env steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = option(2, "how many of the newest checkpoints a run keeps (>= 1)")
    root: str = option("runs", "directory in which run directories are created")
    quiet: bool = option(
        False, "no progress bar or messages (automatic when CI=true or stderr is not a terminal)"
    )
    env_overrides: tuple[tuple[str, Any], ...] = option(
        (), "MarketConfig overrides (--set env.KEY=VALUE)"
    )
    agent_overrides: tuple[tuple[str, Any], ...] = option(
        (), "the agent's config overrides (--set agent.KEY=VALUE)"
    )
    opponent_overrides: tuple[tuple[str, Any], ...] = option(
        (), "opponent config overrides (opponent.KEY=VALUE)"
    )

    def __post_init__(self) -> None:
        for name in _OVERRIDE_FIELDS:  # canonical form: sorted pairs, tuples for lists
            object.__setattr__(self, name, _as_overrides(getattr(self, name)))
        errors = []
        for name in ("num_envs", "keep_checkpoints"):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("total_steps", "log_every"):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("eval_episodes", "checkpoint_every", "threads"):
            if getattr(self, name) < 0:
                errors.append(f"{name}={getattr(self, name)} must be >= 0")
        # Market n is seeded seed + n, evaluation market n seed + EVAL_SEED_OFFSET + n, an
        # opponent seed + OPPONENT_SEED_OFFSET, in int64 (recenv's keys come from its 64 bits;
        # agents' seeds are int64). Without the opponent's offset here, seed 2**63 - 1 passed
        # and the opponent then refused a seed the user never gave (seed + 1000).
        top = 2**63 - max(self.num_envs, 1) - (EVAL_SEED_OFFSET if self.eval_episodes else 0)
        if self.opponent:
            top = min(top, 2**63 - 1 - OPPONENT_SEED_OFFSET)
        if not -(2**63) <= self.seed <= top:
            errors.append(
                f"seed={self.seed} must lie in [-2**63, {top}] (markets are seeded seed + n, "
                f"evaluation markets seed + {EVAL_SEED_OFFSET:_} + n"
                + (f", the opponent seed + {OPPONENT_SEED_OFFSET:_}" if self.opponent else "")
                + ", in int64)"
            )
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            errors.append(f"device={self.device!r} must be 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if errors:
            raise ConfigError("invalid RunConfig: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("env_overrides", "agent_overrides", "opponent_overrides"):
            out[k] = {key: _jsonable(v) for key, v in out[k]}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """The config :meth:`to_dict` wrote (a run's ``config.json``, a checkpoint's, a
        comparison's template): every field, each of its type. An unknown, missing or
        ill-typed field raises :class:`ConfigError` naming it: a recorded config that lacks
        a field was run with some value that is not known here (``{}`` read as the defaults
        evaluated 16 episodes on horizon 200 a run made with 2 on 20). Partial configs
        (presets, ``--config`` files, ``--set``) go through :func:`apply_overrides`."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a run config must be an object, not {_short(d)}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"unknown RunConfig key(s) {unknown}; valid keys: {sorted(known)}")
        missing = [k for k in known if k not in d]
        if missing:
            raise ConfigError(
                f"the run config lacks the field(s) {missing}; a run's recorded config has "
                "every RunConfig field (its values are not assumed)"
            )
        problems = field_type_problems(d)
        if problems:
            raise ConfigError("invalid RunConfig: " + "; ".join(problems))
        kw = dict(d)
        for k in ("env_overrides", "agent_overrides", "opponent_overrides"):
            if k in kw:
                kw[k] = _as_overrides(kw[k])
        return cls(**kw)

    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.env_overrides)

    def agent_kwargs(self) -> dict[str, Any]:
        return dict(self.agent_overrides)

    def opponent_kwargs(self) -> dict[str, Any]:
        return dict(self.opponent_overrides)

    @property
    def lineup(self) -> str:
        """The agent and its opponent as a short label: ``iql`` or ``iql-vs-popularity``."""
        return f"{self.agent}-vs-{self.opponent}" if self.opponent else self.agent


_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig))


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else f"{text[:limit]}..."


def field_type_problems(values: Mapping[str, Any]) -> list[str]:
    """``values`` (RunConfig fields by name, as :meth:`RunConfig.to_dict` writes them) whose
    value is not of the field's type: a ``str`` field a string, an ``int`` one an integer (not
    a bool), a ``bool`` one a bool, an overrides field an object with string keys (or a list
    of ``[key, value]`` pairs). Read from a file, ``{"agent": 5}`` was a TypeError deep in
    the checks (difflib, comparisons with ints)."""
    hints = _hints(RunConfig)
    problems = []
    for name, v in values.items():
        hint = hints.get(name)
        if name in _OVERRIDE_FIELDS:
            pairs = v.items() if isinstance(v, Mapping) else v
            ok = isinstance(v, (Mapping, list, tuple)) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
                for p in pairs
            )
            if not ok:
                problems.append(f"{name}={_short(v)} is not an object of KEY: VALUE overrides")
        elif hint in (str, bool) and not isinstance(v, hint):
            problems.append(f"{name}={_short(v)} is not a {hint.__name__}")
        elif hint is int and (not isinstance(v, int) or isinstance(v, bool)):
            problems.append(f"{name}={_short(v)} is not an int")
    return problems


# The most runs (envs x agents x seeds) one comparison holds.
MAX_COMPARE_RUNS = 100_000


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: every agent on every env with every seed, each as its own run."""

    name: str = option("compare", "label of the comparison (its directory's name starts with it)")
    description: str = option("", "one line on what this comparison is for")
    envs: tuple[str, ...] = option(("recenv/Market-v0",), "environment ids to compare on")
    agents: tuple[str, ...] = option(
        ("iql", "linucb", "popularity", "random"), "agents to compare (each one run per seed)"
    )
    seeds: int = option(3, "seeds per (env, agent): run.seed, run.seed + 1, ...")
    jobs: int = option(1, "runs trained in parallel worker processes")
    run: RunConfig = field(
        default_factory=RunConfig,
        metadata={
            "help": "the template of every run (--set run.KEY=VALUE; `describe run` lists it)"
        },
    )
    per_agent: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = option(
        (), "config overrides of one agent wherever it runs (--set NAME.KEY=VALUE)"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_agent", _per_agent(self.per_agent))
        low = [f"{k}={getattr(self, k)}" for k in ("seeds", "jobs") if getattr(self, k) < 1]
        if low:
            raise ConfigError(f"{' and '.join(low)} must be >= 1")
        if not self.envs or not self.agents:
            raise ConfigError("a comparison needs at least one env and one agent")
        runs = len(self.envs) * len(self.agents) * self.seeds
        if runs > MAX_COMPARE_RUNS:  # seeds=10**12 built a list of them until memory ran out
            raise ConfigError(
                f"{len(self.envs)} envs x {len(self.agents)} agents x seeds={self.seeds} is "
                f"{runs:,} runs, more than {MAX_COMPARE_RUNS:,} (each run is a directory of "
                "checkpoints and logs); split the comparison or lower seeds"
            )
        dataclasses.replace(self.run, seed=self.run.seed + self.seeds - 1)  # the last seed's check
        if len(set(self.agents)) != len(self.agents) or len(set(self.envs)) != len(self.envs):
            raise ConfigError(f"agents {self.agents} and envs {self.envs} must not repeat")

    def agent_overrides(self, name: str) -> dict[str, Any]:
        return dict(dict(self.per_agent).get(name, ()))

    def seed_list(self) -> list[int]:
        return [self.run.seed + i for i in range(self.seeds)]

    def run_config(self, env: str, agent: str, seed: int) -> RunConfig:
        """The config of one cell: the template with this env, agent and seed, and the
        per-agent overrides under the template's own."""
        r = self.run
        mine = {**self.agent_overrides(agent), **r.agent_kwargs()}
        theirs = {**self.agent_overrides(r.opponent), **r.opponent_kwargs()} if r.opponent else {}
        return dataclasses.replace(
            r,
            env=env,
            agent=agent,
            seed=seed,
            agent_overrides=_as_overrides(mine),
            opponent_overrides=_as_overrides(theirs),
        )

    def cells(self) -> list[RunConfig]:
        return [
            self.run_config(e, a, s)
            for e in self.envs
            for a in self.agents
            for s in self.seed_list()
        ]

    def template_run(self) -> RunConfig:
        """The run ``train`` makes from this preset: the template's env and agent, with the
        preset's overrides for that agent (and its opponent)."""
        return self.run_config(self.run.env, self.run.agent, self.run.seed)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["envs"], out["agents"] = list(self.envs), list(self.agents)
        out["run"] = self.run.to_dict()
        out["per_agent"] = {name: {k: _jsonable(v) for k, v in ov} for name, ov in self.per_agent}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown CompareConfig key(s) {unknown}; valid keys: {sorted(known)}"
            )
        kw = dict(d)
        if "run" in kw:
            kw["run"] = RunConfig.from_dict(kw["run"])
        for k in ("envs", "agents"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "per_agent" in kw:
            kw["per_agent"] = _per_agent(kw["per_agent"])
        return cls(**kw)


def _as_overrides(d: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Overrides:
    items = d.items() if isinstance(d, Mapping) else d
    return tuple(sorted((str(k), _freeze(v)) for k, v in items))


def _per_agent(
    d: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[tuple[str, Overrides], ...]:
    items = d.items() if isinstance(d, Mapping) else d
    return tuple(sorted((name, _as_overrides(ov)) for name, ov in items if ov))


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------
BASELINES = ("linucb", "mf", "popularity", "random", "oracle", "value_oracle")

# IQL scheduled for a budget of a few tens of thousands of env steps: learn early, decay ε
# over the first half, update often enough to fit within the budget.
_IQL_SHORT: Overrides = (
    ("batch_size", 128),
    ("eps_decay_steps", 8_000),
    ("hidden", (64, 64)),
    ("learning_starts", 1_000),
    ("buffer_size", 20_000),
    ("metrics_every", 20),
    ("update_every", 16),
)

PRESETS: dict[str, CompareConfig] = {
    "smoke": CompareConfig(
        name="smoke",
        description="tiny: every code path in seconds (tests and CI)",
        envs=("recenv/Market-v0",),
        agents=("iql", "random"),
        seeds=2,
        run=RunConfig(
            num_envs=4,
            total_steps=400,
            eval_episodes=4,
            log_every=40,
            checkpoint_every=200,
            env_overrides=(("horizon", 20), ("num_items", 300), ("num_users", 10)),
        ),
        per_agent=(
            (
                "iql",
                (
                    ("batch_size", 32),
                    ("hidden", (32,)),
                    ("learning_starts", 64),
                    ("metrics_every", 2),
                    ("update_every", 8),
                ),
            ),
        ),
    ),
    "quick": CompareConfig(
        name="quick",
        description=(
            "the main job: IQL vs the baselines on Market-v0, each against a popularity "
            "incumbent, 3 seeds (a few minutes on a 2-core CPU)"
        ),
        envs=("recenv/Market-v0",),
        agents=("iql", *BASELINES),
        seeds=3,
        run=RunConfig(
            opponent="popularity",
            num_envs=16,
            total_steps=16_000,
            eval_episodes=16,
            log_every=800,
            checkpoint_every=8_000,
        ),
        per_agent=(("iql", _IQL_SHORT),),
    ),
    "paper": CompareConfig(
        name="paper",
        description=(
            "the full comparison: learning agents vs every baseline on the four scenarios, "
            "5 seeds, 200k env steps per run (hours on a CPU; use a GPU or --jobs)"
        ),
        envs=(
            "recenv/Market-v0",
            "recenv/ECommerce-v0",
            "recenv/Video-v0",
            "recenv/Music-v0",
        ),
        agents=("iql", "epsilon_greedy", *BASELINES),
        seeds=5,
        run=RunConfig(
            opponent="popularity",
            num_envs=64,
            total_steps=200_000,
            eval_episodes=64,
            log_every=6_400,
            checkpoint_every=25_600,
        ),
        per_agent=(("iql", (("eps_decay_steps", 60_000), ("learning_starts", 5_000))),),
    ),
}


def preset(name: str) -> CompareConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; presets: {sorted(PRESETS)}{_did_you_mean(name, PRESETS)}"
        ) from None


# ----------------------------------------------------------------------------------------
# Typed values
# ----------------------------------------------------------------------------------------
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(text: Any, hint: Any, key: str) -> Any:
    """``text`` (a string from the command line, or a value from TOML/JSON) as type ``hint``.
    Raises :class:`ConfigError` naming ``key``, the expected type and the value."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return _auto(text) if isinstance(text, str) else _freeze(text)
    if hint is bool:
        if isinstance(text, bool):
            return text
        if isinstance(text, str) and text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise ConfigError(f"{key}={text!r} is not a bool; use one of {list(_TRUE + _FALSE)}")
    if hint is int:
        if isinstance(text, bool):
            raise ConfigError(f"{key}={text!r} is not an int")
        if isinstance(text, int):
            return text
        try:
            return int(str(text).strip())
        except ValueError:
            pass
        try:
            f = float(str(text).strip())
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise ConfigError(f"{key}={text!r} is not an int (e.g. {key}=3 or {key}=20_000)")
    if hint is float:
        try:
            if isinstance(text, bool):
                raise ValueError
            f = float(str(text).strip())  # str() round-trips a Python float exactly
        except ValueError:
            raise ConfigError(f"{key}={text!r} is not a float (e.g. {key}=3e-4)") from None
        if math.isnan(f):  # inf may mean "no limit"; NaN means nothing
            raise ConfigError(f"{key}={text!r} is NaN; give a number (e.g. {key}=3e-4)")
        return f
    if hint is str:
        if not isinstance(text, str):
            raise ConfigError(f"{key}={text!r} is not a string")
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            # Quoted as a Python literal (compare_marl's --set took literals, and the
            # commands its recorded results hold write vdn.utility='slateq').
            return text[1:-1]
        return text
    if hint is tuple or origin is tuple:
        args = typing.get_args(hint)
        elem = args[0] if args and (len(args) == 1 or args[-1] is Ellipsis) else Any
        items = _as_list(text, key)
        return tuple(parse_value(x, elem, f"{key}[{i}]") for i, x in enumerate(items))
    raise ConfigError(f"{key}: values of type {hint} cannot be set from the command line")


# The deepest nesting of lists and tables a config value may have (the deepest any field
# takes is 2): the values are walked by recursive Python (_freeze, parse_value), which a
# deeper one would take past the interpreter's recursion limit.
MAX_NESTING = 32


def _too_deep(value: Any) -> bool:
    """Whether ``value`` (parsed JSON or TOML) nests lists and dicts deeper than
    :data:`MAX_NESTING`; iterative, so any depth is measured."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, tuple, dict)):
            if depth >= MAX_NESTING:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def _loads(s: str) -> Any:
    """``json.loads``, where a nesting deeper than :data:`MAX_NESTING` (``[[[[...``) is a
    ``JSONDecodeError`` like any other text that is not a config value (it was a bare
    RecursionError: from the parser under Python 3.11, from the walks after it under 3.12+,
    whose C parser recurses deeper), and a key repeated in one object a :class:`ConfigError`
    naming it."""
    try:
        value = json.loads(s, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", s, 0) from None
    if _too_deep(value):
        raise json.JSONDecodeError("nested too deeply", s, 0)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON itself keeps the last of two equal keys: a config would silently lose the first
    # value (TOML refuses them).
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(f"duplicate key {k!r} in one JSON object (it is given twice)")
        out[k] = v
    return out


def _as_list(text: Any, key: str) -> list[Any]:
    if isinstance(text, (list, tuple)):
        return list(text)
    s = str(text).strip()
    if s.startswith("(") and s.endswith(")"):  # a Python tuple as written: (64, 64)
        s = s[1:-1].strip().removesuffix(",")
    if s.startswith("["):
        try:
            v = _loads(s)
        except json.JSONDecodeError as e:
            short = text if len(str(text)) <= 80 else f"{str(text)[:80]}..."
            raise ConfigError(f"{key}={short!r} is not a JSON list: {e.msg}") from None
        if not isinstance(v, list):
            raise ConfigError(f"{key}={text!r} must be a list")
        return v
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _auto(s: str) -> Any:
    """An untyped value: JSON (numbers, lists, true/false) when it parses, else the string."""
    try:
        return _freeze(_loads(s))
    except json.JSONDecodeError:
        low = s.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        return s


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def env_field_hint(key: str) -> Any:
    """The type an env override ``key`` is parsed as (:func:`parse_value`): a MarketConfig
    field's; a scenario's own key (FromLog-v0's ``log=PATH``) is JSON-or-string (``Any``),
    validated by the scenario when it is built."""
    return _hints(MarketConfig).get(key, Any)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    """recenv's guess (:func:`recenv.core.config.did_you_mean`) of one word."""
    if not isinstance(word, str):  # difflib takes strings only
        return ""
    return did_you_mean([word], [c for c in choices if isinstance(c, str)])


def _check_field(cls: type, key: str, what: str) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise ConfigError(
            f"unknown {what} key {key!r}; valid keys: {names}{_did_you_mean(key, names)}"
        )
    return hints[key]


# ----------------------------------------------------------------------------------------
# Choices the registries know
# ----------------------------------------------------------------------------------------
def check_env_id(env_id: str) -> str:
    if not isinstance(env_id, str):
        raise ConfigError(f"env={_short(env_id)} is not a string (an env id)")
    ids = recenv.registered_ids()
    if env_id not in ids:
        raise ConfigError(
            f"unknown env {env_id!r}; registered envs: {ids}{_did_you_mean(env_id, ids)}"
        )
    return env_id


def check_agent_name(name: str, what: str = "agent") -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{what}={_short(name)} is not a string (an agent name)")
    try:
        agents.agent_class(name)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}{_did_you_mean(name, agents.registered_agents())}") from None
    return name


def agent_config_class(name: str) -> type[agents.AgentConfig] | None:
    """The config dataclass of agent ``name`` (``None`` for a factory plug-in)."""
    target = agents.agent_class(name)
    return getattr(target, "Config", None)


def validate_env_overrides(env_id: str, overrides: Mapping[str, Any]) -> None:
    """MarketConfig keys must have their field's type; then the scenario is built once (one
    market) with the overrides, so its own validation reports unknown keys (with the valid
    ones) and bad values. Scenario-specific keys (``FromLog-v0``'s ``log=PATH``) pass through."""
    hints = _hints(MarketConfig)
    for k, v in overrides.items():
        if k in hints:
            parse_value(v, hints[k], f"env.{k}")
    try:
        recenv.make_vec(env_id, num_envs=1, seed=0, **dict(overrides))
    except UnknownConfigKey as e:  # the scenario's own message guesses the meant key
        raise ConfigError(
            f"env {env_id} with overrides {dict(overrides)}: {e.config_message}; num_envs, "
            "device, seed and compile are run fields (--num-envs, --device, --seed, "
            "--compile), not env keys"
        ) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"env {env_id} with overrides {dict(overrides)}: {e}") from None


def validate_agent_overrides(name: str, overrides: Mapping[str, Any], what: str = "agent") -> None:
    cls = agent_config_class(name)
    if cls is None:
        return
    try:
        cls.from_kwargs(**overrides)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} {name!r}: {e}") from None


# The most torch threads a run may ask for, per CPU of the machine it runs on.
THREADS_PER_CPU = 4


def max_threads() -> int:
    """The largest ``threads`` a run may use here: :data:`THREADS_PER_CPU` per CPU. It
    depends on the machine, so validate_run checks it, not RunConfig (which also reads the
    configs of runs made elsewhere)."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)


def available_devices() -> list[str]:
    """The ``device`` values this machine can run on: ``cpu``, ``cuda`` and ``cuda:N`` for
    each visible GPU, ``mps`` where torch has it."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def validate_run(cfg: RunConfig) -> RunConfig:
    """Check ``cfg`` against the registries: env id, agent names and their config keys, and
    build the env config once (its own validation lists bad values); and against this
    machine: its device must exist here, its threads fit its CPUs."""
    problems = field_type_problems(cfg.to_dict())
    if problems:  # a RunConfig built in Python with ill-typed values
        raise ConfigError("invalid RunConfig: " + "; ".join(problems))
    check_env_id(cfg.env)
    devices = available_devices()
    if cfg.device not in devices:  # 'mps' passed and failed inside torch ("not linked")
        raise ConfigError(
            f"device={cfg.device!r} is not available here; devices on this machine: {devices}"
        )
    top = max_threads()
    if cfg.threads > top:  # torch.set_num_threads(100000) crashed the process (SIGSEGV)
        raise ConfigError(
            f"threads={cfg.threads} must lie in [0, {top}] on this machine (0: torch's "
            f"default; at most {THREADS_PER_CPU} x its {os.cpu_count() or 1} CPUs)"
        )
    check_agent_name(cfg.agent)
    if cfg.opponent:
        check_agent_name(cfg.opponent, "opponent")
    validate_env_overrides(cfg.env, cfg.env_kwargs())
    validate_agent_overrides(cfg.agent, cfg.agent_kwargs())
    if cfg.opponent:
        validate_agent_overrides(cfg.opponent, cfg.opponent_kwargs(), "opponent")
    elif cfg.opponent_overrides:
        raise ConfigError("opponent overrides given but no opponent (set opponent=NAME)")
    return cfg


# ----------------------------------------------------------------------------------------
# Applying overrides
# ----------------------------------------------------------------------------------------
SECTION_HELP = {
    "run": "a RunConfig field (the prefix may be left out)",
    "compare": "a CompareConfig field (the prefix may be left out)",
    "env": "a MarketConfig field of the env",
    "agent": "the agent's config",
    "opponent": "the opponent's config",
}


def split_assignment(text: str, example: str = "seed=3, env.horizon=50") -> tuple[str, str]:
    """``KEY=VALUE`` split at the first ``=`` (the value may hold more); ``example`` is shown
    in the error for text without a key or an ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like KEY=VALUE (e.g. {example})")
    return key.strip(), value


def add_market_arguments(parser: Any, num_envs: int = 4096) -> None:
    """``--env``, ``--num-envs`` and repeatable ``--config KEY=VALUE`` (read them with
    :func:`parse_market_overrides`): the market options of the performance tools."""
    parser.add_argument("--env", default="recenv/Market-v0", help="environment id")
    parser.add_argument("--num-envs", type=int, default=num_envs, help="markets in the batch")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="market config override (JSON value), e.g. num_items=1000000",
    )


def parse_market_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` market-config overrides for the performance tools (values parsed as
    JSON, else kept as strings), keys checked against :class:`MarketConfig` before anything
    runs."""
    config: dict[str, Any] = {}
    for item in items:
        key, value = split_assignment(item)
        if key not in MarketConfig.field_names():
            raise SystemExit(f"--config {item!r}: unknown key; valid: {MarketConfig.field_names()}")
        try:
            config[key] = _loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def section_of(key: str) -> tuple[str, str]:
    """``(section, rest)`` of an override key: ``"env.num_items"`` -> ``("env", "num_items")``;
    an undotted key is a run field (``"seed"`` -> ``("run", "seed")``) or else a comparison
    field (``"agents"`` -> ``("compare", "agents")``)."""
    section, dot, rest = key.partition(".")
    if dot:
        return section, rest
    return ("run" if key in _RUN_FIELDS else "compare"), key


def apply_overrides(
    base: CompareConfig, assignments: Sequence[tuple[str, Any]], *, single_run: bool = False
) -> CompareConfig:
    """``base`` with ``(key, value)`` assignments applied in order (values: strings to parse
    or typed values from a file). ``single_run`` (``train``): ``agent.KEY`` targets the
    template's agent, and comparison keys are refused."""
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - set(_OVERRIDE_FIELDS)
    cmp_fields = {f.name for f in dataclasses.fields(CompareConfig)} - {"run", "per_agent"}
    run_kw: dict[str, Any] = {}
    cmp_kw: dict[str, Any] = {}
    env_kw = dict(base.run.env_overrides)
    agent_kw: dict[str, Any] = dict(base.run.agent_overrides)
    opp_kw = dict(base.run.opponent_overrides)
    named: dict[str, dict[str, Any]] = {n: dict(ov) for n, ov in base.per_agent}
    pending_agent: list[tuple[str, Any]] = []

    for key, value in assignments:
        section, rest = section_of(key)
        if section == "run":
            if rest in _OVERRIDE_FIELDS:
                raise ConfigError(f"set {rest} with env.KEY=VALUE / agent.KEY=VALUE instead")
            if rest not in run_fields:
                raise ConfigError(
                    f"unknown run key {rest!r}; valid keys: {sorted(run_fields)}"
                    f"{_did_you_mean(rest, run_fields)}"
                )
            hint = _hints(RunConfig)[rest]
            run_kw[rest] = _checked_choice(rest, parse_value(value, hint, key))
        elif section == "compare":
            if single_run:
                raise ConfigError(
                    f"unknown run key {rest!r}; valid keys: {sorted(run_fields)}"
                    f"{_did_you_mean(rest, run_fields)} (comparison keys {sorted(cmp_fields)} "
                    "belong to `compare`)"
                )
            if rest not in cmp_fields:
                raise ConfigError(
                    f"unknown key {key!r}; valid run keys: {sorted(run_fields)}, comparison "
                    f"keys: {sorted(cmp_fields)}, or a section {sorted(SECTION_HELP)} / an agent "
                    f"name followed by .KEY{_did_you_mean(rest, run_fields | cmp_fields)}"
                )
            hint = _hints(CompareConfig)[rest]
            v = parse_value(value, hint, key)
            if rest == "envs":
                v = tuple(check_env_id(e) for e in v)
            elif rest == "agents":
                v = tuple(check_agent_name(a) for a in v)
            cmp_kw[rest] = v
        elif section == "env":
            env_kw[rest] = parse_value(value, env_field_hint(rest), key)
        elif section in ("agent", "opponent"):
            pending_agent.append((key, value))
        else:
            # NAME.KEY: an agent's own overrides.
            try:
                check_agent_name(section)
            except ConfigError:
                raise ConfigError(
                    f"unknown section {section!r} in {key!r}; sections: "
                    + ", ".join(f"{s} ({h})" for s, h in SECTION_HELP.items())
                    + f", or a registered agent name: {agents.registered_agents()}"
                    + _did_you_mean(section, [*SECTION_HELP, *agents.registered_agents()])
                ) from None
            named.setdefault(section, {})[rest] = parse_agent_value(section, rest, value, key)

    run = dataclasses.replace(base.run, **run_kw)
    if "agent" in run_kw and run_kw["agent"] != base.run.agent:
        agent_kw = {}  # the template's agent overrides belonged to the previous agent
    if "opponent" in run_kw and run_kw["opponent"] != base.run.opponent:
        opp_kw = {}
    envs = cmp_kw.get("envs", base.envs)
    names = cmp_kw.get("agents", base.agents)
    for key, value in pending_agent:
        section, _, rest = key.partition(".")
        if section == "opponent":
            if not run.opponent:
                raise ConfigError(f"{key}: this run has no opponent (set opponent=NAME first)")
            opp_kw[rest] = parse_agent_value(run.opponent, rest, value, key)
        elif single_run:
            agent_kw[rest] = parse_agent_value(run.agent, rest, value, key)
        else:
            # A comparison: every agent whose config has the key.
            having = [n for n in names if _agent_has(n, rest)]
            if not having:
                raise ConfigError(
                    f"{key}: none of the agents {list(names)} has a config key {rest!r}; "
                    + "; ".join(f"{n}: {_agent_keys(n)}" for n in names)
                )
            for n in having:
                named.setdefault(n, {})[rest] = parse_agent_value(n, rest, value, key)

    run = dataclasses.replace(
        run,
        env_overrides=_as_overrides(env_kw),
        agent_overrides=_as_overrides(agent_kw),
        opponent_overrides=_as_overrides(opp_kw),
    )
    out = dataclasses.replace(base, run=run, per_agent=_per_agent(named), **cmp_kw)
    if single_run:
        validate_run(out.template_run())
    else:
        for e in envs:
            validate_env_overrides(e, run.env_kwargs())
        for n in names:
            check_agent_name(n)
        validate_run(out.run_config(envs[0], names[0], run.seed))
        for n in names:
            validate_agent_overrides(n, out.run_config(envs[0], n, run.seed).agent_kwargs())
    return out


def _checked_choice(field_name: str, v: Any) -> Any:
    if field_name == "env":
        return check_env_id(v)
    if field_name == "agent":
        return check_agent_name(v)
    if field_name == "opponent" and v:
        return check_agent_name(v, "opponent")
    return v


def _agent_keys(name: str) -> list[str]:
    cls = agent_config_class(name)
    return cls.field_names() if cls is not None else []


def _agent_has(name: str, key: str) -> bool:
    return key in _agent_keys(name)


def parse_agent_value(name: str, key: str, value: Any, label: str) -> Any:
    """``value`` for key ``key`` of registered agent ``name``'s config, parsed as the type
    that field declares (:func:`parse_value`; a factory plug-in's, untyped: JSON or a
    string). :class:`ConfigError` naming ``label`` for a key the config does not have (with
    the valid keys and a guess) or a value not of its type."""
    cls = agent_config_class(name)
    if cls is None:  # a factory plug-in: no declared types
        return parse_value(value, Any, label)
    hint = _check_field(cls, key, f"{name!r} agent config ({cls.__name__})")
    return parse_value(value, hint, label)


# ----------------------------------------------------------------------------------------
# Config files (TOML or JSON; never an unsafe loader)
# ----------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> tuple[str | None, list[tuple[str, Any]]]:
    """A file's base preset (``preset = "quick"``, optional) and its assignments, flattened to
    ``("section.key", value)``. Tables: ``[run]``, ``[compare]``, ``[env]``, ``[agent]``,
    ``[opponent]``, ``[NAME]``; top-level keys are run/compare fields."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(p)!r} {what}; give a .toml or .json file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:  # TOML and JSON files are UTF-8
        raise ConfigError(f"{str(p)!r} is not UTF-8 text: {e}") from None
    if p.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # tomllib's source, a dependency on Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{str(p)!r} is not valid TOML: {e}") from None
        except RecursionError:
            raise ConfigError(f"{str(p)!r} is not valid TOML: nested too deeply") from None
        if _too_deep(data):
            raise ConfigError(f"{str(p)!r} is not valid TOML: nested too deeply")
    elif p.suffix == ".json":
        try:
            data = _loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{str(p)!r} is not valid JSON: {e.msg}") from None
        except ConfigError as e:  # a duplicate key
            raise ConfigError(f"{str(p)!r}: {e}") from None
    else:
        raise ConfigError(f"config file {str(p)!r} must end in .toml or .json")
    if not isinstance(data, dict):
        raise ConfigError(f"{str(p)!r} must hold a table/object at the top level")
    base = data.pop("preset", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{str(p)!r}: preset must be a string, one of {sorted(PRESETS)}")
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            out.append((key, value))
    # One field under two spellings ("seed" and [run] seed; [env] num_agents and a top-level
    # "env.num_agents") was applied last-wins, one value silently lost, as duplicate keys
    # were before the JSON reader refused them.
    seen: dict[tuple[str, str], str] = {}
    for key, _ in out:
        where = section_of(key)
        if where in seen:
            raise ConfigError(
                f"{str(p)!r} sets {where[0]}.{where[1]} twice (as {seen[where]!r} and {key!r}); "
                "give each field once"
            )
        seen[where] = key
    return base, out


# ----------------------------------------------------------------------------------------
# Help text
# ----------------------------------------------------------------------------------------
def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` of every field of a config dataclass; a field with a
    ``default_factory`` has the factory's value as its default."""
    hints = _hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        tname = getattr(t, "__name__", None) or str(t).replace("typing.", "")
        help_ = f.metadata.get("help", "")
        if f.metadata.get("within") is not None:  # agents' option(..., within=(lo, hi))
            # The interval as the config's error writes it (open ends in round brackets).
            interval = f.metadata.get("interval") or "[{}, {}]".format(*f.metadata["within"])
            help_ += f" {interval}"
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        rows.append((f.name, tname, default, help_))
    return rows


def _default_text(value: Any) -> str:
    """A default as ``describe`` shows it: a config dataclass by the fields that differ from
    its own defaults (``RunConfig()``: all defaults, listed by ``describe run``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = [
            f"{f.name}={getattr(value, f.name)!r}"
            for f in dataclasses.fields(value)
            if f.default is not dataclasses.MISSING and getattr(value, f.name) != f.default
        ]
        return f"{type(value).__name__}({', '.join(changed)})"
    return repr(value)


def describe(cls: type, values: Any = None) -> str:
    """One line per field of config dataclass ``cls``: its name, type, default and help. With
    ``values`` (an instance of ``cls``, e.g. a scenario's MarketConfig) its values stand in
    the default column, and a ``*`` marks the fields where they differ from ``cls``'s
    defaults (each such line ends with the default)."""
    lines = []
    for name, tname, default, help_ in field_help(cls):
        mark = " "
        if values is not None:
            value = getattr(values, name)
            if value != default:
                mark = "*"
                help_ = f"{help_} (default {_default_text(default)})"
            default = value
        lines.append(f"{mark} {name:<24} {tname:<10} {_default_text(default):<22} {help_}")
    return "\n".join(lines)
