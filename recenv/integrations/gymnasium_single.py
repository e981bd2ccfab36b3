"""One market and one learning agent as a plain ``gymnasium.Env``, for single-env tooling.

:class:`~recenv.integrations.gymnasium_vector.SingleAgentVectorEnv` steps many markets at
once and is the fast way to train one recommender against fixed opponents. Some tools want
the single-env interface instead: Gymnasium's ``check_env`` and wrappers, ``AsyncVectorEnv``
/ SB3's ``SubprocVecEnv`` over worker processes, SB3's algorithms on one env, CleanRL-style
scripts written for ``gymnasium.make``. :class:`SingleAgentEnv` is that view of one market:
the same market, opponents, spaces and checks as the vector view with ``num_envs=1``, its
batch axis taken off.

Contract (``C`` candidates, ``K`` slate size):

- ``observation_space`` / ``action_space``: the vector view's ``single_observation_space``
  (the PettingZoo face's layout: a ``Dict``, or a flat ``Box`` with ``flatten_obs=True``) and
  ``single_action_space`` (:class:`~recenv.spaces.SlateSpace` ``(C, K)``).
- ``step(slate)`` takes ``K`` distinct unmasked candidate indices and returns ``(obs, reward,
  terminated, truncated, info)`` with a float reward (the learning agent's) and bool flags.
  An ended episode is not restarted by the next ``step``: call ``reset()``, as Gymnasium's
  single-env contract has it (``step`` after the end raises). Invalid slates follow the
  scenario's ``invalid_slate`` and leave the env as it was when refused.
- ``info``: the vector view's keys for this market (``repaired_slots``, ``clicked``,
  ``engagement``; ``action_mask`` with ``flatten_obs=True``; ``episode_metrics`` on the step
  that ends an episode), as Python scalars or arrays without the batch axis.
- Seeding: ``reset(seed=s)`` seeds the market and the built-in random opponents exactly as
  the vector view's ``reset(seed=s)`` does, so the two replay each other step for step; a
  later ``reset()`` without a seed continues the market's streams into a new episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np
import torch

from recenv.integrations.gymnasium_vector import (
    OpponentSpec,
    SingleAgentVectorEnv,
    make_single_agent_vec,
)


class SingleAgentEnv(gymnasium.Env):
    """A one-market :class:`SingleAgentVectorEnv` (numpy mode) seen as a ``gymnasium.Env``.

    Args:
        vector: the view to wrap; it must hold exactly one market and return numpy arrays
            (``tensors=False``). This env owns it from now on.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  (Gymnasium's attribute)

    def __init__(self, vector: SingleAgentVectorEnv):
        if not isinstance(vector, SingleAgentVectorEnv):
            raise TypeError(f"vector: a SingleAgentVectorEnv, not {type(vector).__name__}")
        if vector.num_envs != 1:
            raise ValueError(
                f"vector holds {vector.num_envs} markets; a SingleAgentEnv is one market "
                "(make_single_agent_env, or make_single_agent_vec(..., num_envs=1))"
            )
        if vector.tensors:
            raise ValueError("vector has tensors=True; a SingleAgentEnv returns numpy arrays")
        self.vector = vector
        self.agent = vector.agent
        self.observation_space = vector.single_observation_space
        self.action_space = vector.single_action_space
        cfg = vector.market.config
        self._shape = (cfg.slate_size,)
        self._num_candidates = cfg.num_candidates
        self.metadata = {**self.metadata, "name": f"SingleAgentEnv[{vector.agent}]"}
        self._ended = True  # no episode until the first reset()

    @property
    def market(self) -> Any:
        """The underlying :class:`~recenv.core.market.BatchedMarket` (one market)."""
        return self.vector.market

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if options:
            raise ValueError(f"reset(options={options!r}): this env takes no options")
        super().reset(seed=seed)  # Gymnasium's np_random (unused here), as the contract asks
        obs, infos = self.vector.reset(seed=seed)
        self._ended = False
        return _first(obs), _unbatch(infos)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._ended:
            raise RuntimeError(
                f"agent {self.agent!r}: the episode has ended (or reset() was never called); "
                "call reset() before step()"
            )
        if np.shape(action) != self._shape:
            K = self._shape[0]
            raise ValueError(
                f"invalid slate for agent {self.agent!r}: shape {np.shape(action)}, expected "
                f"({K},): {K} distinct candidate indices in [0, {self._num_candidates})"
            )
        # Arrays and tensors keep their type (a masked array is refused by the market's check,
        # which np.asarray would have let through without its mask); lists become arrays.
        if isinstance(action, (np.ndarray, torch.Tensor)):
            batched = action[None]
        else:
            batched = np.asarray(action)[None]
        obs, reward, terminated, truncated, infos = self.vector.step(batched)
        self._ended = bool(terminated[0] or truncated[0])
        return (
            _first(obs),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            _unbatch(infos),
        )

    def close(self) -> None:
        self.vector.close()


def _first(x: Any) -> Any:
    """The one market's entry of a batched observation (a dict of arrays, or an array)."""
    if isinstance(x, Mapping):
        return {k: v[0] for k, v in x.items()}
    return x[0]


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v


def _unbatch(infos: Mapping[str, Any]) -> dict[str, Any]:
    """Gymnasium's vector infos (``key`` arrays with ``_key`` masks) for market 0: the keys
    set for it, without the batch axis and the masks."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        # "reset" marks the vector view's auto-reset steps, which never happen here: an ended
        # episode waits for reset().
        if key.startswith("_") or key == "reset" or not infos.get(f"_{key}", np.ones(1, bool))[0]:
            continue
        if isinstance(value, Mapping):
            out[key] = {k: _scalar(v[0]) for k, v in value.items()}
        else:
            out[key] = _scalar(value[0])
    return out


def make_single_agent_env(
    env_id: str,
    *,
    agent: str = "agent_0",
    opponents: OpponentSpec | Mapping[str, OpponentSpec] = "random",
    flatten_obs: bool = False,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    compile: bool = False,
    **config: Any,
) -> SingleAgentEnv:
    """``recenv.make_vec(env_id, num_envs=1, ...)`` seen by one learning agent as a
    ``gymnasium.Env`` (:class:`SingleAgentEnv`); arguments as
    :func:`~recenv.integrations.gymnasium_vector.make_single_agent_vec`."""
    vector = make_single_agent_vec(
        env_id,
        num_envs=1,
        agent=agent,
        opponents=opponents,
        flatten_obs=flatten_obs,
        device=device,
        seed=seed,
        compile=compile,
        **config,
    )
    return SingleAgentEnv(vector)
