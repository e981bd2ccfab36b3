"""The PettingZoo face: one market of the batched core as a ``ParallelEnv`` (numpy out).

It is a view of :class:`~recenv.core.market.BatchedMarket` with ``num_envs=1``, not a second
implementation: ``make(id, seed=s)`` equals market 0 of ``make_vec(id, num_envs=N, seed=s)``
step for step (tests prove it). Spaces are created once and reused. Agents leave ``agents`` the
step their episode ends; ``reset()`` brings them back.

Observations are a ``Dict`` by default, of read-only numpy views of the core's tensors (no copy
per step; copy an array to modify it). ``flatten_obs=True`` gives a flat ``Box`` for trainers
that need one (layout: user, history, candidates row by row, action mask; ids are left out), and
moves ``action_mask`` to ``infos[agent]["action_mask"]``.

``render_mode="ansi"`` returns a text frame from ``render()``; ``"human"`` prints that frame
after ``reset()``, after each ``step()`` and at each ``render()`` call (which returns None), as
Gymnasium's convention says (PettingZoo's ``render_test`` builds every env with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from recenv.core.config import shown
from recenv.core.market import FACE_UTILITY, BatchedMarket, face_row, slate_tensor
from recenv.core.warn import warn
from recenv.spaces import SlateSpace, observation_space

FACE_OPTIONS = ("render_mode", "flatten_obs", "max_cycles", "compile")


class MarketParallelEnv(ParallelEnv):
    """A recommender market with several competing or cooperating recommender agents.

    The page of each registered scenario (``recenv.scenarios``) documents its observations,
    actions, choice model, rewards and arguments; this class is the shared machinery.
    """

    # A class default (check_face_options reads it before an env exists), which each env
    # replaces by its own (its name): not a ClassVar.
    metadata: dict[str, Any] = {  # noqa: RUF012
        "name": "recenv_market",
        "render_modes": ["human", "ansi"],
        "is_parallelizable": True,
        "autoreset": False,
    }

    def __init__(
        self,
        core: BatchedMarket,
        env_id: str = "recenv/Market-v0",
        render_mode: str | None = None,
        flatten_obs: bool = False,
    ):
        if core.num_envs != 1:
            raise ValueError("the PettingZoo face wraps a core with num_envs=1")
        check_face_options(render_mode, flatten_obs)
        self.core = core
        self.config = cfg = core.config
        self.env_id = env_id
        self.render_mode = render_mode
        self.flatten_obs = flatten_obs
        self.metadata = {**self.metadata, "name": env_id.split("/")[-1]}
        self.possible_agents = list(core.agents)
        self.agents: list[str] = []
        C, K = cfg.num_candidates, cfg.slate_size
        # One space object per agent (as for actions): seeding one agent's space, as
        # PettingZoo's seed_test does with 42 + i, must not reseed another's.
        self.observation_spaces = {
            a: observation_space(cfg, flatten_obs) for a in self.possible_agents
        }
        self.action_spaces = {a: SlateSpace(C, K) for a in self.possible_agents}
        inf = np.float32(np.inf)
        self.state_space = spaces.Box(-inf, inf, (cfg.state_dim,), np.float32)
        self._last_step: tuple[dict[str, Any], list[float]] | None = None  # info, scalars
        A = len(self.possible_agents)
        self._mask_np = np.zeros((A, C), np.int8)
        self._mask_list = self._mask_np.tolist()  # the same mask as lists, for the slate check
        # The checked slate is written into one buffer (read by the step, never kept by it):
        # building a fresh tensor from nested lists costs more than the rest of the check.
        # (Its numpy view is taken per call: a view kept as an attribute would come apart from
        # the tensor in a deep copy of the env.)
        self._slate = torch.zeros(1, A, K, dtype=torch.int64, device="cpu")
        self._all_valid = torch.ones(1, A, K, dtype=torch.bool, device=core.device)
        self._none_repaired = torch.zeros(1, A, dtype=torch.float32, device=core.device)
        self._on_cpu = core.device.type == "cpu"
        self._row = face_row(A)

    # PettingZoo API ----------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, Any], dict[str, dict]]:
        if options:
            # Warned, not refused: PettingZoo's own API checks (parallel_api_test, api_test)
            # pass options={"options": 1} to see that reset takes the argument.
            warn(f"options={options!r} ignored: the market's reset takes no options")
        self.core.reset(seed=seed)  # leaves a caller's inference mode (its own tensors' work)
        self.agents = list(self.possible_agents)
        self._last_step = None
        out = self._np_obs(), self._infos(None)
        if self.render_mode == "human":
            self.render()
        return out

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, Any],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict],
    ]:
        if torch.is_inference_mode_enabled():  # see BatchedMarket.reset
            with torch.inference_mode(False):
                return self.step(actions)
        if not self.agents:
            never = self.core._obs_parts is None  # the core's observation exists after a reset
            why = "the env was never reset" if never else "the episode is over"
            raise RuntimeError(f"{why}: call reset() before step()")
        checked = self._checked_slate(actions)
        if checked is None:
            # Something is off (or to be repaired): the core's own check names the agent,
            # slot and allowed values, or repairs, exactly as on the batched face.
            checked = self.core._check_actions(self._batched(actions))
        # Market 0's scalars come as one list (the core packs them into one row), arrays
        # through numpy: reading a tensor costs about a microsecond per call, a large share
        # of a one-market step.
        scalars, info = self.core._step_face(*checked)
        self._last_step = last = (info, scalars)
        row = self._row
        terminated, truncated = bool(scalars[row["terminated"]]), bool(scalars[row["truncated"]])
        np_obs = self._np_obs()
        rewards = dict(zip(self.agents, scalars[row["rewards"]], strict=True))
        terminations = dict.fromkeys(self.agents, terminated)
        truncations = dict.fromkeys(self.agents, truncated)
        infos = self._infos(last)
        if terminated or truncated:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return np_obs, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        return self.core.state()[0].numpy().astype(np.float32, copy=False)

    def render(self) -> str | None:
        """The ``"ansi"`` frame; printed (and None returned) with ``render_mode="human"``;
        None without a render mode."""
        if self.render_mode is None:
            return None
        if self.core._obs_parts is None:  # no request yet: a frame would show user 0 at t=0
            raise RuntimeError("the env was never reset: call reset() before render()")
        frame = self._frame()
        if self.render_mode == "human":
            print(frame)
            return None
        return frame

    def _frame(self) -> str:
        """The text frame: env id, step and user, and the last step's slates and choice."""
        c = self.core
        lines = [f"{self.env_id} t={int(c.t[0])} user={int(c.user[0])}"]
        if self._last_step is not None:
            info, scalars = self._last_step
            row = self._row
            shown = info["shown"][0].tolist()
            agent, slot = int(scalars[row["chosen_agent"]]), int(scalars[row["chosen_slot"]])
            item = shown[agent][slot] if agent >= 0 else -1
            lines.append(
                f"shown={shown} chosen_agent={agent} "
                f"item={item} engagement={scalars[row['engagement']]:.3f}"
            )
        return "\n".join(lines)

    def close(self) -> None:
        pass

    # Extras ------------------------------------------------------------------------------
    def oracle_slate(self, agent: str, objective: str = "utility") -> np.ndarray:
        """The myopic oracle's slate for ``agent`` (privileged: reads latent state):
        ``objective="utility"`` the likeliest to be clicked, ``"value"`` the most rewarding
        by the choice model (``BatchedMarket.oracle_slates``)."""
        a = self._agent_index(agent)
        return self.core.oracle_slates(objective)[0, a].numpy()

    def oracle_scores(self, agent: str) -> np.ndarray:
        """True expected utility of each of ``agent``'s candidates (privileged), ``[C]``."""
        a = self._agent_index(agent)
        return self.core.oracle_scores()[0, a].numpy()

    def _agent_index(self, agent: str) -> int:
        """``agent``'s index in ``possible_agents``; ValueError naming it and the agents
        otherwise (``list.index`` said only ``'agent_9' is not in list``)."""
        if not isinstance(agent, str) or agent not in self.possible_agents:
            raise ValueError(f"unknown agent {shown(agent)}; agents are {self.possible_agents}")
        return self.possible_agents.index(agent)

    def _batched(self, actions: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Each agent's action as a ``[1, K]`` tensor for the core's check."""
        if not isinstance(actions, Mapping):
            raise ValueError(
                f"actions must be a dict keyed by agent {self.possible_agents}, "
                f"got {type(actions).__name__}"
            )
        batched = {}
        for agent, action in actions.items():
            self._agent_index(agent)  # refuses an unknown agent by name
            batched[agent] = _as_batch(
                agent, action, self.config.slate_size, self.config.num_candidates
            )
        return batched

    def _checked_slate(
        self, actions: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Fast path for the common case, in numpy: when every agent's action is a valid slate
        (K distinct integer indices of unmasked candidates), the core's ``_step_checked``
        arguments; otherwise ``None`` and the core checks (and raises or repairs)."""
        if type(actions) is not dict or len(actions) != len(self.possible_agents):
            return None
        K, C = self.config.slate_size, self.config.num_candidates
        mask = self._mask_list
        slates = self._slate.numpy()[0]
        # Plain Python on a handful of ints: cheaper than numpy calls at this size.
        for i, agent in enumerate(self.possible_agents):
            action = actions.get(agent)
            if (
                type(action) is not np.ndarray  # (a subclass, e.g. a masked array: checked)
                or action.dtype.kind not in "iu"
                or action.shape != (K,)
            ):
                return None
            slate = action.tolist()
            allowed = mask[i]
            # In range, unmasked in the last observation, and distinct.
            if not all(0 <= x < C and allowed[x] for x in slate) or len(set(slate)) != K:
                return None
            slates[i] = slate
        slate = self._slate if self._on_cpu else self._slate.to(self.core.device)
        return slate, self._all_valid, self._none_repaired

    # Conversion --------------------------------------------------------------------------
    def _np_obs(self) -> dict[str, Any]:
        """The core's current observation of market 0 as numpy, one conversion per batched
        tensor (views per agent)."""
        core = self.core
        # _obs_parts is not None here: the core's reset, which comes before any call, sets it
        # (an ignore, not a check or a cast: either would cost every step a test or a call).
        user, history, cands = (_host(x)[0] for x in core._obs_parts)  # type: ignore[union-attr]
        self._mask_np = mask = _host(core.cand_mask)[0].astype(np.int8)  # [A, C]
        self._mask_list = mask.tolist()
        out: dict[str, Any] = {}
        if self.flatten_obs:
            flat_mask = mask.astype(np.float32)
            for i, agent in enumerate(self.possible_agents):
                out[agent] = np.concatenate([user, history[i], cands[i].reshape(-1), flat_mask[i]])
            return out
        # Read-only: these arrays are views of the core's tensors (no copy per step), and
        # user_id / candidate_ids are the state the next step reads (the served user, the
        # items a slate's indices name); one user array is every agent's. An in-place edit
        # would change the market, so it raises instead (copy to modify). The mask is a copy.
        user, history, cands = _read_only(user), _read_only(history), _read_only(cands)
        user_id = _read_only(_host(core.user))
        cand_ids = _read_only(_host(core.cand)[0])
        for i, agent in enumerate(self.possible_agents):
            out[agent] = {
                "user": user,
                "history": history[i],
                "candidates": cands[i],
                "action_mask": mask[i],
                "user_id": user_id,
                "candidate_ids": cand_ids[i],
            }
        return out

    def _infos(self, last: tuple[dict[str, Any], list[float]] | None) -> dict[str, dict]:
        """Per-agent infos of a step (``last``: its ``info`` and packed row ``scalars``, laid out
        as ``face_row`` says, as ``_last_step`` holds them), or of a reset (``None``)."""
        infos: dict[str, dict] = {a: {} for a in self.possible_agents}
        if self.flatten_obs:
            for i, d in enumerate(infos.values()):
                d["action_mask"] = self._mask_np[i]
        if last is None:
            return infos
        info, scalars = last
        row = self._row
        chosen_agent = int(scalars[row["chosen_agent"]])
        chosen_slot = int(scalars[row["chosen_slot"]])
        engagement = scalars[row["engagement"]]
        shown = _host(info["shown"])[0]
        repaired = scalars[row["repaired"]]
        utility = dict(zip(FACE_UTILITY, scalars[row["utility"]], strict=True))
        episode = None
        if "episode" in info:
            episode = {k: v.tolist()[0] for k, v in info["episode"].items()}
        for i, d in enumerate(infos.values()):
            won = chosen_agent == i
            d["shown"] = shown[i]
            d["clicked"] = won
            d["chosen_slot"] = chosen_slot if won else -1
            d["engagement"] = engagement if won else 0.0
            d["repaired_slots"] = int(repaired[i])
            d["user_clicked"] = chosen_agent >= 0
            d["utility"] = dict(utility)
            if episode is not None:
                own = episode["return"][i]
                # "r"/"l" are the keys Gymnasium's and SB3's episode statistics use.
                d["episode"] = {**episode, "return": own, "r": own, "l": int(episode["length"])}
        return infos


def check_face_options(render_mode: str | None = None, flatten_obs: bool = False) -> None:
    """Refuse a ``render_mode`` outside ``metadata["render_modes"]`` (or None) and a
    non-bool ``flatten_obs``, naming the allowed values. A function of its own so that
    ``recenv.make`` checks them before building the core, which can be slow (FromLog-v0 fits
    its log), not only once the core is built and handed to the env."""
    modes = MarketParallelEnv.metadata["render_modes"]
    # (A str first: ``in`` on an array-like would compare element-wise.)
    if render_mode is not None and (not isinstance(render_mode, str) or render_mode not in modes):
        raise ValueError(
            f"render_mode={shown(render_mode)}; allowed: None, " + ", ".join(repr(m) for m in modes)
        )
    if not isinstance(flatten_obs, bool):
        raise ValueError(f"flatten_obs={shown(flatten_obs)} must be a bool")


def _host(x: torch.Tensor) -> np.ndarray:
    """``x`` as a numpy array (a view on the CPU, a copy from an accelerator)."""
    # (x.cpu() of a CPU tensor returns x, but through the dispatcher: ~0.7 us, six per step.)
    return x.numpy() if x.is_cpu else x.cpu().numpy()


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` with its ``writeable`` flag cleared (views taken from it are read-only too)."""
    a.setflags(write=False)  # (cheaper than through a.flags: ~0.25 us, five per step)
    return a


def _as_batch(agent: str, action: Any, K: int, C: int) -> torch.Tensor:
    """One agent's slate (array-like of K ints) as a ``[1, K]`` tensor, read as the batched
    face reads one (:func:`~recenv.core.market.slate_tensor`); the core checks it."""
    expected = lambda: f"a slate of {K} distinct candidate indices in [0, {C - 1}]"  # noqa: E731
    x = slate_tensor(agent, action, expected)
    if x.dim() != 1 or x.shape[0] != K:
        raise ValueError(
            f"action of {agent}: shape {tuple(x.shape)}, expected ({K},): {expected()}"
        )
    return x.unsqueeze(0)
