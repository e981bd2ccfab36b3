"""Run any agent on the PettingZoo face (``recenv.make``): numpy in, numpy out.

:class:`PettingZooAgent` turns each agent's numpy observation (the ``Dict`` layout, or the flat
``Box`` of ``flatten_obs=True`` with the mask in ``infos``) into a batch of one on the agent's
device, and its ``[1, K]`` slates back into ``(K,)`` int64 arrays::

    env = recenv.make("recenv/Market-v0", seed=0)
    pz = PettingZooAgent(make_agent("linucb", env), env)
    obs, infos = env.reset(seed=0); pz.begin_episode()
    while env.agents:
        actions = pz.act(obs, infos, explore=True)
        next_obs, rewards, terms, truncs, infos = env.step(actions)
        pz.step(obs, actions, rewards, next_obs, terms, truncs, infos, learn=True)
        obs = next_obs

:func:`run_episodes` is that loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.base import Agent, Metrics, Transition, batched_core
from recenv.core.config import check_int
from recenv.core.market import check_seed

OBS_KEYS = ("user", "history", "candidates", "action_mask", "user_id", "candidate_ids")


class PettingZooAgent:
    """An :class:`~agents.base.Agent` on one PettingZoo market (see the module docstring)."""

    def __init__(self, agent: Agent, env: Any):
        core = batched_core(env)
        if core.num_envs != 1:
            raise ValueError("the PettingZoo adapter runs on one market (the recenv.make face)")
        agent.bind(env)
        self.agent, self.env = agent, env
        self.config = core.config
        self._last: tuple[Any, dict] | None = None  # (obs acted on, its batch)

    # numpy <-> torch -------------------------------------------------------------------------
    def to_batch(self, agent_id: str, obs_a: Any, info_a: dict | None = None):
        """One agent's numpy observation as a batch of one: ``user [1, T+2]``, …,
        ``action_mask [1, C]`` (bool). A flat observation (``flatten_obs=True``) is split by
        the documented layout, takes its mask from ``info_a["action_mask"]`` and its ids (left
        out of the flat layout) from the market's current request — so convert a flat
        observation when it is the newest one."""
        dev = self.agent.device
        if not isinstance(obs_a, dict):
            obs_a = self._unflatten(agent_id, np.asarray(obs_a), info_a)
        missing = [k for k in OBS_KEYS if k not in obs_a]
        if missing:
            raise ValueError(f"observation lacks {missing}; expected keys {list(OBS_KEYS)}")
        out = {}
        for k in OBS_KEYS:
            # A copy: the face's arrays are read-only views of the market's tensors; a
            # shared tensor would let an agent's in-place edit reach the market (and torch
            # warns that writing to it is undefined).
            x = torch.as_tensor(np.array(obs_a[k]), device=dev)
            if k == "action_mask":
                x = x.bool()
            elif k in ("user_id", "candidate_ids"):
                x = x.long()
            else:
                x = x.float()
            out[k] = x.reshape(-1)[:1] if k == "user_id" else x.unsqueeze(0)
        return out

    def _unflatten(self, agent_id: str, flat: np.ndarray, info_a: dict | None):
        c = self.config
        C, F = c.num_candidates, c.candidate_dim
        sizes = [c.user_dim, c.history_dim, C * F, C]
        if flat.shape != (sum(sizes),):
            raise ValueError(f"flat observation of shape {flat.shape}, expected ({sum(sizes)},)")
        user, hist, cands, mask = np.split(flat, np.cumsum(sizes)[:-1])
        if info_a is not None and "action_mask" in info_a:
            mask = info_a["action_mask"]
        current = batched_core(self.env).observe()[agent_id]
        return {
            "user": user,
            "history": hist,
            "candidates": cands.reshape(C, F),
            "action_mask": mask,
            "user_id": current["user_id"][:1].cpu().numpy(),
            "candidate_ids": current["candidate_ids"][0].cpu().numpy(),
        }

    def batch_obs(self, obs: dict[str, Any], infos: dict | None = None):
        """``{a: batch of one}`` for every agent in ``obs``; reuses the batch :meth:`act`
        built when ``obs`` is the object it acted on."""
        if self._last is not None and self._last[0] is obs:
            return self._last[1]
        infos = infos or {}
        return {a: self.to_batch(a, o, infos.get(a)) for a, o in obs.items()}

    # Protocol --------------------------------------------------------------------------------
    def begin_episode(self) -> None:
        self.agent.begin_episode(None)

    def act(
        self, obs: dict[str, Any], infos: dict | None = None, explore: bool = False
    ) -> dict[str, np.ndarray]:
        """``(K,)`` int64 slates for the controlled agents still in the episode."""
        live = set(getattr(self.env, "agents", obs.keys()))
        self._last = None
        batch = self.batch_obs(obs, infos)
        self._last = (obs, batch)
        slates = self.agent.act(batch, explore)
        return {
            a: s[0].detach().cpu().numpy().astype(np.int64) for a, s in slates.items() if a in live
        }

    def step(
        self,
        obs: dict[str, Any],
        actions: dict[str, Any],
        rewards: dict[str, float],
        next_obs: dict[str, Any],
        terminations: dict[str, bool],
        truncations: dict[str, bool],
        infos: dict[str, dict],
        learn: bool = True,
        state: np.ndarray | None = None,
        next_state: np.ndarray | None = None,
        prev_infos: dict | None = None,
    ) -> Metrics:
        """Feed one PettingZoo step to the agent (``observe``, then ``learn`` if asked)."""
        dev = self.agent.device
        ids = self.agent.agent_ids

        def one(x, dtype):
            return torch.as_tensor([x], dtype=dtype, device=dev)

        def state_t(s):
            return None if s is None else torch.as_tensor(np.asarray(s), device=dev)[None]

        term = any(bool(terminations.get(a, False)) for a in ids)
        trunc = any(bool(truncations.get(a, False)) for a in ids)
        obs_batch = self.batch_obs(obs, prev_infos)
        self._last = None
        next_batch = self.batch_obs(next_obs, infos)
        tr = Transition(
            obs=obs_batch,
            actions={a: torch.as_tensor(np.asarray(actions[a]), device=dev).long()[None]
                     for a in ids if a in actions},
            rewards={a: one(rewards.get(a, 0.0), torch.float32) for a in ids},
            next_obs=next_batch,
            terminated=one(term, torch.bool),
            truncated=one(trunc and not term, torch.bool),
            valid=one(True, torch.bool),
            clicked_slot={a: one(int(infos[a].get("chosen_slot", -1)), torch.int64)
                          for a in ids},
            engagement={a: one(float(infos[a].get("engagement", 0.0)), torch.float32)
                        for a in ids},
            state=state_t(state),
            next_state=state_t(next_state),
            served={a: one(_served(infos[a]), torch.bool) for a in ids},
        )  # fmt: skip
        self._last = (next_obs, next_batch)
        self.agent.observe(tr)
        return self.agent.learn(tr) if learn else {}


def _served(info_a: dict) -> bool:
    """Whether the agent's slate reached the user (``infos[a]["shown"]``: -1 = not visible)."""
    shown = info_a.get("shown")
    return True if shown is None else bool((np.asarray(shown) >= 0).any())


def run_episodes(
    agent: Agent,
    env: Any,
    episodes: int = 1,
    *,
    learn: bool = False,
    explore: bool = False,
    seed: int | None = None,
    max_steps: int | None = None,
) -> list[dict[str, float]]:
    """Play ``episodes`` episodes on the PettingZoo ``env``; returns each episode's return per
    agent. ``max_steps`` stops early (the last, partial episode is reported too).

    With a ``seed``, episode ``e`` is reset with ``seed + e`` (all of them within int64,
    checked before the first), and without ``learn`` the agent's own generators are reseeded
    from it too (:meth:`Agent.reseed`, as :func:`agents.evaluate` does), so two calls with one
    seed play the same episodes. While learning the seed seeds the episodes only, as
    :func:`agents.train`'s does: reseeding would replay one exploration stream per call."""
    episodes = check_int("episodes", episodes, 1)
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, 1)
    # Before any episode: the env refused seed + e only when episode e began, after the
    # earlier episodes had been played and their returns lost.
    seed = check_seed(seed, episodes, count="episodes", unit="episode")
    pz = PettingZooAgent(agent, env)
    if seed is not None and not learn:
        # The env alone is not enough: an agent that draws (random, exploring) drew from
        # wherever its generator stood, so two calls with one seed played other episodes.
        agent.reseed(seed)
    results, steps = [], 0
    for e in range(episodes):
        obs, infos = env.reset(seed=None if seed is None else seed + e)
        pz.begin_episode()
        total = dict.fromkeys(env.possible_agents, 0.0)
        while env.agents and (max_steps is None or steps < max_steps):
            state = env.state() if agent.needs_state else None
            actions = pz.act(obs, infos, explore)
            others = [a for a in env.agents if a not in actions]
            if others:
                raise ValueError(
                    f"{agent.name!r} controls {agent.agent_ids}; no actions for {others} "
                    "(combine agents with agents.Team)"
                )
            next_obs, rewards, terms, truncs, next_infos = env.step(actions)
            next_state = env.state() if agent.needs_state else None
            pz.step(obs, actions, rewards, next_obs, terms, truncs, next_infos, learn=learn,
                    state=state, next_state=next_state, prev_infos=infos)  # fmt: skip
            for a, r in rewards.items():
                total[a] += r
            obs, infos, steps = next_obs, next_infos, steps + 1
        results.append(total)
        if max_steps is not None and steps >= max_steps:
            break
    return results


class AgentOpponent:
    """A fixed opponent for the single-agent views (``recenv.integrations.gymnasium_vector``,
    ``gymnasium_single``, ``make_single_agent_vec(..., opponents={...})``) from an agent:
    ``opponent(obs) -> slates [N, K]`` is ``agent``'s greedy slate for ``env_agent`` from that
    agent's batched observation. It acts only: no exploration, no ``observe`` / ``learn``, so
    a learning agent plays as it was trained (``agents.load_agent``); an agent that learns from
    what it sees (popularity, LinUCB) stays as it was when it was wrapped. ``seed(s)`` (called
    by the views on a seeded reset) reseeds the agent's own generators."""

    def __init__(self, agent: Agent, env_agent: str):
        if list(agent.agent_ids) != [env_agent]:
            raise ValueError(
                f"agent {agent.name!r} controls {list(agent.agent_ids)}; an opponent for "
                f"{env_agent!r} must control exactly it: build it with "
                f"agent_ids=[{env_agent!r}]"
            )
        self.agent, self.env_agent = agent, env_agent

    def seed(self, seed: int) -> None:
        self.agent.reseed(seed)

    @torch.no_grad()
    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.agent.act({self.env_agent: obs}, explore=False)[self.env_agent]
