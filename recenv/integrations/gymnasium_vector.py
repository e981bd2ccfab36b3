"""A Gymnasium vector env over the batched market: one learning agent against fixed opponents.

A recommender market is multi-agent, but a common study trains *one* recommender while its
competitors follow fixed policies (random, the myopic oracle, a trained checkpoint). That view
is a single-agent problem, and :class:`SingleAgentVectorEnv` exposes it through Gymnasium's
``VectorEnv`` interface, so single-agent tooling (CleanRL-style loops, Gymnasium vector
wrappers, SB3 via an adapter) runs ``num_envs`` markets at once without a Python loop over
markets.

Contract (``N = num_envs`` markets, ``C`` candidates, ``K`` slate size):

- ``metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP`` (the batched
  core's mode): the step that ends an episode returns its final observation; the next ``step``
  starts a new episode in that market, ignores the action given for it, and returns reward 0,
  ``terminated = truncated = False`` and ``infos["reset"][n] = True``.
- ``single_observation_space`` is the PettingZoo face's space for the agent (a ``Dict`` by
  default, a flat ``Box`` with ``flatten_obs=True``; same layout and dtypes, a test checks
  it); ``observation_space`` is ``gymnasium.vector.utils.batch_space`` of it (leading ``N``).
- ``single_action_space`` is :class:`~recenv.spaces.SlateSpace` ``(C, K)``; ``action_space`` is
  its batch, a ``Box`` of ints ``[N, K]``. Note that ``action_space.sample()`` samples slots
  independently (duplicates happen); ``single_action_space.sample(mask)`` per market gives a
  valid slate. Invalid slates follow the scenario's ``invalid_slate`` (pass
  ``invalid_slate="repair"`` for learners that sample slots independently).
- ``reward`` ``[N]`` float64: the learning agent's reward. ``terminated`` / ``truncated``
  ``[N]`` bool.
- ``infos``: Gymnasium's vector form, a dict of ``[N]`` arrays, each with a ``"_key"`` mask:
  ``repaired_slots``, ``clicked`` (the agent's item was clicked), ``engagement`` (the agent's),
  ``reset``; with ``flatten_obs=True`` also ``action_mask`` ``[N, C]``; on steps where an
  episode ended, ``episode_metrics`` (a dict of ``[N]`` arrays: the agent's ``return`` and
  ``market_share``, and the market's ``ctr``, ``retention``, ``coverage``, ...) masked by
  ``_episode_metrics``. (Not ``"episode"``: that key belongs to Gymnasium's
  ``RecordEpisodeStatistics`` wrapper, which composes with this env.)

**Tensor mode.** ``tensors=True`` skips the torch -> numpy conversion: observations, rewards,
flags and infos are torch tensors on the market's device (same shapes and dtypes as the numpy
mode, ``reward`` float32), and actions may be tensors on that device. Use it to keep a
GPU-resident training loop on the GPU; the spaces still describe the numpy layout. Treat the
returned tensors as read-only.

**Opponents** are callables ``policy(obs) -> slates``: ``obs`` is that opponent's batched
observation from the core (a dict of tensors, ``recenv.core.market`` documents the keys) and
``slates`` an integer tensor ``[N, K]`` of distinct, unmasked candidates. ``"random"`` and
``"oracle"`` (the myopic oracle, privileged) are built in; a policy with a ``seed(int)``
method is seeded by the constructor's ``seed`` (else by the seed the market was made with)
and reseeded whenever the env is reset with a seed. Any recenv agent serves as one through
``agents.AgentOpponent(agent, "agent_1")`` (built for that agent of this market: it acts
greedily and does not learn). A step that is refused (an invalid slate,
a wrong shape or dtype) leaves the env as it was: the learner's slate is checked
(``BatchedMarket.check_slate``) before any opponent is called; an opponent's own bad slate is
refused after the opponents acted, and then only the built-in random opponents' streams are
put back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recenv.core.market import BatchedMarket, check_seed
from recenv.pettingzoo_env import check_face_options
from recenv.spaces import SlateSpace, observation_space

Policy = Callable[[dict[str, torch.Tensor]], torch.Tensor]
OpponentSpec = str | Policy
BUILTIN_OPPONENTS = ("random", "oracle")
_OPPONENT_SEED_STRIDE = 1_000_003  # opponents' streams never coincide with a market seed


class RandomSlatePolicy:
    """K distinct unmasked candidates uniformly at random, in every market at once.

    ``seed=None``: entropy from the OS at the first call, not at construction, as the market
    takes it at its first unseeded reset: copies of an unseeded policy made before it draws
    (pickled into workers, forked, deep-copied with their env) draw apart, where one drawn
    at construction made them all play the same moves."""

    def __init__(
        self, slate_size: int, seed: int | None = None, device: str | torch.device = "cpu"
    ):
        self.slate_size = slate_size
        self.generator = torch.Generator(device=device)
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        self._unseeded = seed is None
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def snapshot(self) -> tuple[torch.Tensor, bool]:
        """Where the draws stand, for :meth:`restore` (a refused step puts them back)."""
        return self.generator.get_state(), self._unseeded

    def restore(self, snapshot: tuple[torch.Tensor, bool]) -> None:
        state, self._unseeded = snapshot
        self.generator.set_state(state)

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._unseeded:
            self.generator.seed()
            self._unseeded = False
        mask = obs["action_mask"]
        keys = torch.rand(
            mask.shape, generator=self.generator, dtype=torch.float32, device=mask.device
        )
        return keys.masked_fill(~mask, -1.0).topk(self.slate_size, dim=1).indices


class OraclePolicy:
    """The myopic oracle for one agent of ``market``: its top-K candidates by true utility
    (privileged: reads latent state)."""

    def __init__(self, market: BatchedMarket, agent: str):
        self.market = market
        self.index = market.agents.index(agent)

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.market.oracle_slates()[:, self.index]


def agent_observation_space(market: BatchedMarket, flatten_obs: bool = False) -> spaces.Space:
    """One agent's observation space, laid out exactly as the PettingZoo face's."""
    return observation_space(market.config, flatten_obs)


class SingleAgentVectorEnv(VectorEnv):
    """``agent`` of a :class:`BatchedMarket` learns; every other agent follows a fixed policy.

    Args:
        market: the batched env (``recenv.make_vec``); this view owns it from now on.
        agent: the learning agent's name (default ``"agent_0"``).
        opponents: one spec for every other agent, or a mapping ``{agent: spec}`` naming each
            of them; a spec is ``"random"``, ``"oracle"`` or a policy callable (module doc).
        flatten_obs: flat ``Box`` observations (the PettingZoo face's flat layout), with the
            action mask also in ``infos["action_mask"]``.
        tensors: return torch tensors on the market's device instead of numpy arrays.
        seed: seed of the opponents that have a ``seed(int)`` method (the built-in random
            ones) until the first seeded ``reset``. ``None``: the seed the market was made
            with (``recenv.make_vec(..., seed=s)``) while it has not been reset, so this view
            equals ``make_single_agent_vec(..., seed=s)``; fresh from the OS otherwise.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012  (Gymnasium's attribute, read-only by use)
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        market: BatchedMarket,
        agent: str = "agent_0",
        opponents: OpponentSpec | Mapping[str, OpponentSpec] = "random",
        *,
        flatten_obs: bool = False,
        tensors: bool = False,
        seed: int | None = None,
    ):
        if not isinstance(market, BatchedMarket):
            raise TypeError(f"market must be a BatchedMarket (recenv.make_vec), got {market!r}")
        if agent not in market.agents:
            raise ValueError(f"agent={agent!r} is not in the market; agents: {market.agents}")
        _check_view_options(flatten_obs, tensors)
        self.market = market
        self.agent = agent
        self.flatten_obs = flatten_obs
        self.tensors = tensors
        self.num_envs = market.num_envs
        cfg = market.config
        self.opponents = self._resolve_opponents(opponents)
        seed = check_seed(seed, self.num_envs)
        if seed is None:
            # The seed the market was made with, until its first reset takes it: without it
            # the random opponents drew theirs from the OS, and a view of a seeded market
            # (make_vec(..., seed=s)) played another trajectory each time it was built.
            seed = market.pending_seed
        if seed is not None:
            self._seed_opponents(seed)
        self.single_observation_space = agent_observation_space(market, self.flatten_obs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = SlateSpace(cfg.num_candidates, cfg.slate_size)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "name": f"{type(self).__name__}[{agent}]"}
        self._started = False

    # Gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every market. ``seed`` (an int) seeds market ``n`` with ``seed + n``."""
        if options:
            raise ValueError(f"options are not supported, got {options!r}")
        if isinstance(seed, (list, tuple, np.ndarray)):
            raise ValueError(
                f"seed={seed!r}: give one int (market n is seeded seed + n) or None; "
                "per-market seed lists are not supported"
            )
        # Checked (type, int64 range) before the opponents are reseeded: a refused seed
        # changes nothing.
        seed = check_seed(seed, self.market.num_envs)
        if seed is not None:
            self._seed_opponents(seed)
        obs = self.market.reset(seed=seed)
        self._started = True
        o = obs[self.agent]
        infos = self._mask_info({}, o) if self.flatten_obs else {}
        return self._convert_obs(o), infos

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        market = self.market
        batched = {self.agent: self._as_actions(actions)}
        # The learner's slate is checked before any opponent draws its own, so that a refused
        # step leaves every opponent's random state (custom ones' too) as it was.
        market.check_slate(self.agent, batched[self.agent])
        current = market.observe()
        # An opponent's bad slate is refused by the core's step, after the others drew: the
        # built-in random opponents' generators are put back then.
        drawn_from = [
            (p, p.snapshot()) for p in self.opponents.values() if isinstance(p, RandomSlatePolicy)
        ]
        try:
            for name, policy in self.opponents.items():
                batched[name] = policy(current[name])
            obs, rewards, terminated, truncated, info = market.step(batched)
        except Exception:
            for policy, snapshot in drawn_from:
                policy.restore(snapshot)
            raise
        o = obs[self.agent]
        infos = self._step_infos(info, o)
        reward = rewards[self.agent]
        if self.tensors:
            return self._convert_obs(o), reward, terminated, truncated, infos
        return (
            self._convert_obs(o),
            reward.cpu().numpy().astype(np.float64),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        self._started = False

    # Conversion ------------------------------------------------------------------------
    def _seed_opponents(self, seed: int) -> None:
        """Opponent ``i`` (1-based, in the market's agent order) gets ``seed + i * stride``."""
        for i, policy in enumerate(self.opponents.values(), start=1):
            if callable(reseed := getattr(policy, "seed", None)):
                reseed(seed + i * _OPPONENT_SEED_STRIDE)

    def _resolve_opponents(
        self, opponents: OpponentSpec | Mapping[str, OpponentSpec]
    ) -> dict[str, Policy]:
        others = [a for a in self.market.agents if a != self.agent]
        if isinstance(opponents, Mapping):
            missing = sorted(set(others) - set(opponents))
            unknown = sorted(set(opponents) - set(others))
            if missing or unknown:
                raise ValueError(
                    f"opponents must name exactly the other agents {others}; missing {missing}, "
                    f"unknown {unknown}"
                )
            specs = {a: opponents[a] for a in others}
        else:
            specs = dict.fromkeys(others, opponents)
        out: dict[str, Policy] = {}
        for name, spec in specs.items():
            if spec == "random":
                out[name] = RandomSlatePolicy(
                    self.market.config.slate_size, device=self.market.device
                )
            elif spec == "oracle":
                out[name] = OraclePolicy(self.market, name)
            elif callable(spec):
                out[name] = spec
            else:
                raise ValueError(
                    f"opponent of {name}: {spec!r} is neither one of {list(BUILTIN_OPPONENTS)} "
                    "nor a callable obs -> slates (a recenv agent becomes one with "
                    f"agents.AgentOpponent(agents.make_agent(NAME, market, agent_ids=[{name!r}]), "
                    f"{name!r}))"
                )
        return out

    def _as_actions(self, actions: Any) -> torch.Tensor:
        # Read as the market reads a slate, with its errors (a masked array refused, other
        # byte orders and read-only arrays read as they are): np.asarray dropped a mask.
        return self.market._as_slate(self.agent, actions)

    def _convert_obs(self, o: dict[str, torch.Tensor]) -> Any:
        mask = o["action_mask"].to(torch.int8)
        if self.flatten_obs:
            N = self.num_envs
            flat = torch.cat(
                [o["user"], o["history"], o["candidates"].reshape(N, -1), mask.float()], dim=1
            )
            return flat if self.tensors else flat.cpu().numpy()
        out = {
            "user": o["user"],
            "history": o["history"],
            "candidates": o["candidates"],
            "action_mask": mask,
            "user_id": o["user_id"][:, None],
            "candidate_ids": o["candidate_ids"],
        }
        if self.tensors:
            return out
        # Copies: the arrays handed out must not change when the market steps.
        return {k: v.cpu().numpy().copy() for k, v in out.items()}

    def _array(self, x: torch.Tensor) -> Any:
        return x if self.tensors else x.cpu().numpy()

    def _all(self) -> Any:
        ones = torch.ones(self.num_envs, dtype=torch.bool, device=self.market.device)
        return self._array(ones)

    def _mask_info(self, infos: dict[str, Any], o: dict[str, torch.Tensor]) -> dict[str, Any]:
        infos["action_mask"] = self._array(o["action_mask"].to(torch.int8))
        infos["_action_mask"] = self._all()
        return infos

    def _step_infos(self, info: dict[str, Any], o: dict[str, torch.Tensor]) -> dict[str, Any]:
        a = self.market.agents.index(self.agent)
        won = info["chosen_agent"] == a
        fields = {
            "repaired_slots": info["repaired"][:, a].to(torch.int64),
            "clicked": won,
            "engagement": torch.where(won, info["engagement"], 0.0),
            "reset": info["reset"],
        }
        infos: dict[str, Any] = {}
        for key, value in fields.items():
            infos[key] = self._array(value)
            infos[f"_{key}"] = self._all()
        if self.flatten_obs:
            self._mask_info(infos, o)
        if "episode" in info:
            ep = info["episode"]
            metrics = {}
            for key, value in ep.items():
                metrics[key] = self._array(value[:, a] if value.dim() == 2 else value)
            infos["episode_metrics"] = metrics
            infos["_episode_metrics"] = self._array(info["_episode"])
        return infos


def _check_view_options(flatten_obs: Any, tensors: Any) -> None:
    """Refuse a ``flatten_obs`` or ``tensors`` that is not a bool, as ``recenv.make`` refuses
    its ``flatten_obs`` (``bool()`` made ``flatten_obs="no"`` a flat observation)."""
    check_face_options(flatten_obs=flatten_obs)
    if not isinstance(tensors, bool):
        raise ValueError(f"tensors={tensors!r} must be a bool")


def make_single_agent_vec(
    env_id: str,
    *,
    num_envs: int,
    agent: str = "agent_0",
    opponents: OpponentSpec | Mapping[str, OpponentSpec] = "random",
    flatten_obs: bool = False,
    tensors: bool = False,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    compile: bool = False,
    **config: Any,
) -> SingleAgentVectorEnv:
    """``recenv.make_vec(env_id, ...)`` seen by one learning agent (:class:`SingleAgentVectorEnv`).

    ``seed`` seeds the markets (market ``n``: ``seed + n``) and the built-in random opponents;
    ``config`` takes the scenario's keys (e.g. ``invalid_slate="repair"``, ``horizon``).
    """
    from recenv.registry import make_vec

    _check_view_options(flatten_obs, tensors)  # before the builder, which can be slow
    market = make_vec(
        env_id, num_envs=num_envs, device=device, seed=seed, compile=compile, **config
    )
    return SingleAgentVectorEnv(
        market, agent, opponents, flatten_obs=flatten_obs, tensors=tensors, seed=seed
    )
