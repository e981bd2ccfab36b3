"""Ray RLlib: recenv's PettingZoo env as an RLlib ``MultiAgentEnv`` (new API stack).

:func:`env_creator` is the function to register with Ray Tune's env registry (``register``
does it): it builds ``recenv.make(env_id, ...)`` and wraps it in RLlib's own
``ParallelPettingZooEnv``, unchanged apart from the observation choice below and two fixes
(:class:`~recenv.integrations.rllib_env.RecenvPettingZooEnv`, a subclass in a module of its
own, imported at first use so that this one does not import Ray): ``agents`` /
``possible_agents`` keep the PettingZoo env's order (RLlib's wrapper lists them from a
``set``, whose order changes with ``PYTHONHASHSEED`` from process to process), and
``render()`` works (RLlib's passes the old ``render(mode)`` argument, which PettingZoo's
current API, and recenv's env, do not take).
The training entry point is ``experiments/rllib_train.py``; the cluster recipe is in
``docs/integrations.md``.

``env_config`` keys (everything else goes to ``recenv.make`` as scenario config):

- ``env_id``: a registered recenv id (default ``"recenv/Market-v0"``).
- ``obs``: ``"flat"`` (default) — the PettingZoo face's flat ``Box`` (user, history, candidates
  row by row, action mask; ids left out), which RLlib's default MLP encoder takes as is; or
  ``"dict"`` — the ``Dict`` observation without the two id keys (raw catalog ids are not
  features), to be flattened on the env runners by RLlib's ``FlattenObservations`` connector
  (:func:`env_to_module_connector` returns it).
- ``envs_per_env_runner``: RLlib's ``num_envs_per_env_runner`` (default 1), so that seeded
  markets do not repeat across runners (Seeding, below); ``experiments/rllib_train.py`` sets
  it.
- ``invalid_slate`` defaults to ``"repair"``: RLlib's ``MultiDiscrete`` action distribution
  samples each slot independently and ignores the action mask, so duplicate or masked slots
  happen; they are dropped from the page and counted in ``infos[agent]["repaired_slots"]``.

Seeding: RLlib seeds env runner ``w`` with ``config.seed + w`` at its first reset (the market
then continues its stream from episode to episode); with ``seed=None`` every runner's market
draws its own seed. With ``num_envs_per_env_runner = E > 1`` RLlib seeds env ``i`` of runner
``w`` with ``config.seed + w + i``, so runners' markets would overlap (env 1 of runner 1 would
replay env 0 of runner 2); given ``envs_per_env_runner = E`` the env reseeds itself with
``config.seed + w * E + i`` instead (it adds ``w * (E - 1)`` to the seed RLlib passes), one
seed per market. A ``seed`` in ``env_config`` seeds every runner's market alike (only an RLlib
seed then tells them apart). Every node that runs env runners must be able to import
``recenv``.

Hash seed: a seed alone does not make a multi-agent run repeat from process to process. RLlib
batches the agents of an episode in the order of Python sets of their string ids
(``MultiAgentEpisode.get_agents_to_act``, ``get_agents_that_stepped``, ``agent_ids``), and a
string set's order follows the process's hash seed, so which agent gets which of the shared
module's random draws (and the learner's batch order) changes with ``PYTHONHASHSEED``. Nothing
in the env can fix that order (the ids must be strings; RLlib never sorts them), so every
process of a seeded run must start with the same ``PYTHONHASHSEED``: the driver (it holds the
local learner and, with no remote env runners, samples), by starting it with the variable
set (Python reads it only at start), and Ray's workers, through the job's ``runtime_env``
(:func:`runtime_env`). ``experiments/rllib_train.py`` does both.

Checkpoints: the policy-mapping functions :func:`shared_policy_mapping` and
:func:`per_agent_policy_mapping` live here, so a checkpoint pickles them by reference and
``Algorithm.from_checkpoint`` needs only ``recenv`` and :func:`register` (the env creator is
looked up by name in each process: call ``register()`` before restoring).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils.wrappers import BaseParallelWrapper

ENV_NAME = "recenv"
OBS_MODES = ("flat", "dict")
ID_KEYS = ("user_id", "candidate_ids")
DEFAULT_ENV_ID = "recenv/Market-v0"
SHARED_POLICY = "shared"
HASH_SEED = "0"  # the PYTHONHASHSEED of every process of a seeded run (module doc)


class WithoutIds(BaseParallelWrapper):
    """The ``Dict`` observation without ``user_id`` and ``candidate_ids`` (catalog ids are
    labels, not features; a flattening connector would feed them to an MLP as numbers)."""

    def __init__(self, env):
        super().__init__(env)
        self._spaces = {}
        for agent in env.possible_agents:
            space = env.observation_space(agent)
            if not isinstance(space, spaces.Dict):
                raise TypeError(f"WithoutIds needs Dict observations, got {space}")
            kept = {k: v for k, v in space.spaces.items() if k not in ID_KEYS}
            self._spaces[agent] = spaces.Dict(kept)
        # The attribute too (else forwarded to the wrapped env's, which keeps the ids).
        self.observation_spaces = dict(self._spaces)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._spaces[agent]

    def _strip(self, obs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
        return {a: {k: v for k, v in o.items() if k not in ID_KEYS} for a, o in obs.items()}

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._strip(obs), infos

    def step(self, actions: dict[str, Any]):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        return self._strip(obs), rewards, terminations, truncations, infos


def split_env_config(env_config: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``env_config`` -> (env id, observation mode, ``recenv.make`` keyword arguments)."""
    kwargs = dict(env_config)  # RLlib's EnvContext is a dict with extra attributes
    env_id = kwargs.pop("env_id", DEFAULT_ENV_ID)
    obs = kwargs.pop("obs", "flat")
    if obs not in OBS_MODES:
        raise ValueError(f"env_config obs={obs!r}; allowed: {list(OBS_MODES)}")
    if "flatten_obs" in kwargs:
        raise ValueError("set env_config['obs'] to 'flat' or 'dict' instead of flatten_obs")
    kwargs.pop("envs_per_env_runner", None)  # the RLlib env's, not the market's
    kwargs.setdefault("invalid_slate", "repair")
    return env_id, obs, kwargs


def make_pettingzoo_env(env_config: Mapping[str, Any]):
    """The PettingZoo ``ParallelEnv`` that :func:`env_creator` wraps."""
    from recenv.registry import make

    env_id, obs, kwargs = split_env_config(env_config)
    env = make(env_id, flatten_obs=obs == "flat", **kwargs)
    return WithoutIds(env) if obs == "dict" else env


def env_creator(env_config: Mapping[str, Any]):
    """RLlib env creator: a ``ParallelPettingZooEnv`` (``rllib_env.RecenvPettingZooEnv``) over a
    recenv env (module doc). ``env_config`` may be RLlib's ``EnvContext``, whose
    ``worker_index`` spreads the seeds of runners with several envs."""
    per_runner = env_config.get("envs_per_env_runner", 1)
    if isinstance(per_runner, bool) or not isinstance(per_runner, int) or per_runner < 1:
        raise ValueError(f"env_config envs_per_env_runner={per_runner!r} must be an int >= 1")
    # The local env runner (index 0) and a plain dict: no offset.
    worker = int(getattr(env_config, "worker_index", 0) or 0)
    from recenv.integrations.rllib_env import RecenvPettingZooEnv  # imports Ray

    return RecenvPettingZooEnv(
        make_pettingzoo_env(env_config), seed_offset=worker * (per_runner - 1)
    )


def register(name: str = ENV_NAME) -> str:
    """Register :func:`env_creator` with Ray Tune's env registry under ``name``."""
    from ray.tune.registry import register_env

    register_env(name, env_creator)
    return name


def env_to_module_connector(obs: str):
    """The env-to-module connector factory for observation mode ``obs`` (``None`` for
    ``"flat"``, which needs none), for ``AlgorithmConfig.env_runners(env_to_module_connector=)``.
    """
    if obs == "flat":
        return None
    if obs != "dict":
        raise ValueError(f"obs={obs!r}; allowed: {list(OBS_MODES)}")
    return _flatten_connector


def _flatten_connector(env=None, spaces=None, device=None):
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations(multi_agent=True)


def shared_policy_mapping(agent_id, episode=None, **kwargs) -> str:
    """RLlib ``policy_mapping_fn``: every agent to the one module ``"shared"``."""
    return SHARED_POLICY


def per_agent_policy_mapping(agent_id, episode=None, **kwargs) -> str:
    """RLlib ``policy_mapping_fn``: each agent to a module named after it."""
    return agent_id


def runtime_env(base: Mapping[str, Any] | None = None, hash_seed: str | None = None) -> dict:
    """A Ray ``runtime_env`` (for ``ray.init``): ``base`` (not changed) with ``env_vars``
    ``PYTHONHASHSEED`` set, so that every Ray worker of the job (env runners, remote learners)
    orders agents alike from run to run (module doc, "Hash seed"). ``hash_seed`` defaults to
    this process's ``PYTHONHASHSEED`` when that is an integer, else :data:`HASH_SEED` (``"0"``).
    The driver needs the same variable set when it starts; this cannot set it."""
    if hash_seed is None:
        own = os.environ.get("PYTHONHASHSEED", "")
        hash_seed = own if own.isdigit() else HASH_SEED
    if not (hash_seed.isdigit() and int(hash_seed) <= 4294967295):
        raise ValueError(f"hash_seed={hash_seed!r} must be an integer in [0, 4294967295]")
    env = dict(base or {})
    env["env_vars"] = {**(env.get("env_vars") or {}), "PYTHONHASHSEED": hash_seed}
    return env
