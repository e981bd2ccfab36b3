"""Train and evaluate an agent on the batched env; the loop tests and experiments share.

One step of the loop::

    actions = agent.act(obs, explore)
    next_obs, rewards, terminated, truncated, info = env.step(actions)
    transition = Transition.from_step(...)      # valid = ~info["reset"]
    agent.observe(transition)                    # always
    agent.learn(transition)                      # training only
    agent.begin_episode(info["reset"])           # where a new episode started

Budgets are counted in *env steps*: transitions of one market, so one batched step of ``N``
markets is ``N`` env steps (the auto-reset steps included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from agents.base import Agent, Metrics, Transition
from recenv.core.config import check_int


@dataclass
class RolloutResult:
    """What a :func:`train` or :func:`evaluate` call saw."""

    env_steps: int
    seconds: float
    episodes: dict[str, torch.Tensor] = field(default_factory=dict)  # metric -> [E] / [E, A]
    metrics: list[tuple[int, Metrics]] = field(default_factory=list)  # (env_steps, learn())

    @property
    def env_steps_per_second(self) -> float:
        return self.env_steps / max(self.seconds, 1e-9)

    @property
    def num_episodes(self) -> int:
        first = next(iter(self.episodes.values()), None)
        return 0 if first is None else int(first.shape[0])


class _EpisodeLog:
    def __init__(self) -> None:
        self.rows: dict[str, list[torch.Tensor]] = {}

    def add(self, info: dict[str, Any], keep: torch.Tensor | None = None) -> None:
        if "episode" not in info:
            return
        ended = info["_episode"] if keep is None else info["_episode"] & keep
        idx = ended.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        for k, v in info["episode"].items():
            self.rows.setdefault(k, []).append(v.index_select(0, idx).detach().cpu())

    def stacked(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) for k, v in self.rows.items()}


def _step(agent: Agent, env: Any, obs, explore: bool, learn: bool):
    actions = agent.act(obs, explore)
    state = env.state() if agent.needs_state else None
    next_obs, rewards, terminated, truncated, info = env.step(actions)
    next_state = env.state() if agent.needs_state else None
    tr = Transition.from_step(
        env.agents, obs, actions, rewards, next_obs, terminated, truncated, info,
        state, next_state,
    )  # fmt: skip
    agent.observe(tr)
    metrics = agent.learn(tr) if learn else {}
    if bool(info["reset"].any()):
        agent.begin_episode(info["reset"])
    return next_obs, info, metrics


def train(
    agent: Agent,
    env: Any,
    env_steps: int,
    *,
    reset: bool = True,
    seed: int | None = None,
    callback: Callable[[int, Metrics], None] | None = None,
) -> RolloutResult:
    """Collect ``env_steps`` transitions with ``explore=True`` and let the agent learn from
    each. ``reset=False`` continues the env where it stands (e.g. a second ``train`` call).
    ``callback(env_steps_so_far, metrics)`` is called whenever ``learn`` returned metrics."""
    env_steps = check_int("env_steps", env_steps, 0)
    agent.bind(env)
    if reset:
        obs = env.reset(seed=seed)
        agent.begin_episode(None)
    else:
        obs = env.observe()
    N = env.num_envs
    iters = -(-env_steps // N)
    log, history = _EpisodeLog(), []
    start = time.perf_counter()
    for it in range(iters):
        obs, info, metrics = _step(agent, env, obs, explore=True, learn=True)
        log.add(info)
        if metrics:
            history.append(((it + 1) * N, metrics))
            if callback is not None:
                callback((it + 1) * N, metrics)
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    return RolloutResult(iters * N, time.perf_counter() - start, log.stacked(), history)


class EvaluationStopped(Exception):
    """:func:`evaluate` was abandoned because its ``stop()`` returned True."""


def evaluate(
    agent: Agent,
    env: Any,
    *,
    episodes_per_env: int = 1,
    seed: int | None = None,
    explore: bool = False,
    stop: Callable[[], bool] | None = None,
) -> RolloutResult:
    """Run ``episodes_per_env`` complete episodes in every market without learning
    (``observe`` still runs) and return their episode metrics, ``N * episodes_per_env`` rows
    (per-agent metrics are ``[E, A]``).

    With a ``seed`` the markets and the agent's own generators (:meth:`Agent.reseed`) are
    seeded from it, so the same seed gives the same episodes. ``stop()`` (optional) is asked
    before every step; when it returns True the evaluation is abandoned with
    :class:`EvaluationStopped` (the runner's Ctrl-C during a long evaluation)."""
    episodes_per_env = check_int("episodes_per_env", episodes_per_env, 1)
    agent.bind(env)
    if seed is not None:
        # The markets alone are not enough: an agent that draws (random, a sampled policy)
        # drew from wherever its generator stood, so two calls with one seed differed.
        agent.reseed(seed)
    obs = env.reset(seed=seed)
    agent.begin_episode(None)
    N = env.num_envs
    done = torch.zeros(N, dtype=torch.int64, device=env.device)
    log = _EpisodeLog()
    limit = episodes_per_env * (int(env.config.horizon) + 1) + 1
    start, steps = time.perf_counter(), 0
    while bool((done < episodes_per_env).any()):
        if stop is not None and stop():
            raise EvaluationStopped(f"evaluation stopped after {steps} steps")
        if steps >= limit:
            raise RuntimeError(f"evaluation did not finish within {limit} steps")
        obs, info, _ = _step(agent, env, obs, explore=explore, learn=False)
        steps += 1
        if "_episode" in info:
            log.add(info, keep=done < episodes_per_env)
            done += info["_episode"].long()
    return RolloutResult(steps * N, time.perf_counter() - start, log.stacked())


def summarize(episodes: dict[str, torch.Tensor], agents: list[str]) -> dict[str, float]:
    """Means over episodes: ``{"ctr": …, "return/agent_0": …, …}``."""
    out: dict[str, float] = {}
    for k, v in episodes.items():
        v = v.float()
        if v.dim() == 2:
            for j, a in enumerate(agents):
                out[f"{k}/{a}"] = float(v[:, j].mean())
        else:
            out[k] = float(v.mean())
    return out
