"""Matrix factorisation for implicit feedback, trained online on the agent's own logs.

The model is Hu, Koren & Volinsky's (2008): a shown item is a preference ``y = 1`` when it was
clicked and ``y = 0`` when it was shown and passed over, with confidence ``c = 1 + α`` for a
click and ``1`` otherwise; the score of item ``i`` for user ``u`` is ``μ + b_i + p_u · q_i``
fitted by weighted least squares with L2 regularisation. ``target="engagement"`` regresses the
click's engagement instead of 1 (0 for a passed-over item, the same confidences): the score
is then an expected engagement, the reward of most presets, where the click target ranks by
click odds alone (as the utility oracle does).

- Item factors ``q_i`` and biases ``b_i`` (per controlled env agent, over the catalog) are
  learned by SGD on every slate the agent showed while training (:meth:`learn`).
- User vectors are *folded in* exactly, as in ALS: ``p_u = (λI + Σ c q qᵀ)⁻¹ Σ c (y − μ − b) q``
  over the user's interactions so far, accumulated in :meth:`observe` — in training and in
  evaluation, since folding in a user is inference, not training. A user with no interactions
  yet has ``p_u = 0`` and gets the item-bias ranking (a click-through popularity).

``user_scope="episode"`` (default) keeps one user vector per (market, user id) for the current
episode: Market-v0 draws its users afresh each episode, so a user id names a person only within
one market's episode. ``"population"`` keeps one per user id across markets and episodes, for
scenarios with a fixed user population (e.g. built from a log). Accumulators are ``[d, d]`` per
user, kept on the env's device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from agents.base import AgentConfig, Metrics, ScoringAgent, Transition, option
from agents.baselines import COUNT_DTYPE
from agents.registry import register


@dataclass(frozen=True)
class MatrixFactorizationConfig(AgentConfig):
    dim: int = option(16, "d: latent dimension of users and items", within=(1, math.inf))
    lr: float = option(
        0.05,
        "SGD step size of item factors and biases",
        within=(0.0, math.inf),
        open_ends=(False, True),
    )
    reg: float = option(
        0.01,
        "L2 regularisation of item factors and biases (per step)",
        within=(0.0, math.inf),
        open_ends=(False, True),
    )
    fold_in_reg: float = option(
        1.0, "λ: ridge of the user fold-in", within=(0.0, math.inf), open_ends=(True, True)
    )
    confidence: float = option(
        4.0,
        "α: a click weighs 1 + α, a passed-over item 1",
        within=(0.0, math.inf),
        open_ends=(False, True),
    )
    # A standard deviation: >= 0 and finite (inf made every factor inf, -1 was accepted).
    init_std: float = option(
        0.1,
        "standard deviation of the initial item factors",
        within=(0.0, math.inf),
        open_ends=(False, True),
    )
    epsilon: float = option(
        0.1, "per-slot exploration probability while training", within=(0.0, 1.0)
    )
    user_scope: str = option(
        "episode", "'episode': a user vector per (market, user) and episode; 'population'"
    )
    target: str = option(
        "click",
        "what a shown item's preference y is: 'click' (1 clicked, 0 passed over) or "
        "'engagement' (the click's engagement, 0 passed over); confidence 1 + α per click "
        "either way",
    )
    # Checkpoints written before `target` existed regressed clicks.
    LEGACY: ClassVar[Mapping[str, Any]] = {"target": "click"}


@register
class MatrixFactorizationAgent(ScoringAgent):
    """Implicit-feedback matrix factorisation (see the module docstring)."""

    name: ClassVar[str] = "mf"
    Config: ClassVar[type[AgentConfig]] = MatrixFactorizationConfig
    config: MatrixFactorizationConfig
    registrable: ClassVar[bool] = True
    learns: ClassVar[bool] = True

    def __init__(self, env: Any, config: MatrixFactorizationConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        if cfg.user_scope not in ("episode", "population"):
            raise ValueError(
                f"{self.name}: user_scope={cfg.user_scope!r} must be 'episode' or 'population'"
            )
        if cfg.target not in ("click", "engagement"):
            raise ValueError(f"{self.name}: target={cfg.target!r} must be 'click' or 'engagement'")
        A, I, d = len(self.agent_ids), self.env_config.num_items, cfg.dim
        self.num_users = self.env_config.num_users
        g = self.generator
        self.item = cfg.init_std * torch.randn(
            A, I, d, generator=g, dtype=torch.float32, device=self.device
        )
        self.item_bias = torch.zeros(A, I, dtype=torch.float32, device=self.device)
        self.mu = torch.zeros(A, dtype=torch.float32, device=self.device)
        self.gram: torch.Tensor | None = None  # [A, S, d, d]  Σ c q qᵀ per user slot
        self.rhs: torch.Tensor | None = None  # [A, S, d]     Σ c (y - μ - b) q
        self._user_vec: torch.Tensor | None = None  # [A, N, d] before the last observe

    # User slots ------------------------------------------------------------------------------
    def _slots(self, user_id: torch.Tensor) -> torch.Tensor:
        u = user_id.long().clamp(0, self.num_users - 1)
        if self.config.user_scope == "population":
            return u
        return torch.arange(u.shape[0], device=u.device) * self.num_users + u

    @property
    def _table_dtype(self) -> torch.dtype:
        """The dtype of ``gram`` and ``rhs``. With ``user_scope="population"`` a user's sums
        grow over the whole training run, and in float32 a visit's terms were added with
        relative error ~1 % once the user had 2**20 visits, ~15 % at 2**24, and the diagonal's
        rounded away from ~2**26 (the user's vector stopped learning): float64 there, as the
        count baselines' tables (``COUNT_DTYPE``). Per episode they hold at most ``horizon``
        visits: the item factors' dtype."""
        return COUNT_DTYPE if self.config.user_scope == "population" else self.item.dtype

    def _ensure_users(self, N: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The accumulators ``gram``, ``rhs`` for ``N`` markets, allocated (zero) when there
        are none yet or they are for another number of markets."""
        S = self.num_users * (1 if self.config.user_scope == "population" else N)
        if self.gram is None or self.rhs is None or self.gram.shape[1] != S:
            A, d, dtype = len(self.agent_ids), self.config.dim, self._table_dtype
            # Normal tensors even inside a caller's inference mode (an evaluation under
            # torch.inference_mode()): training after it updates them in place.
            with torch.inference_mode(False):
                self.gram = torch.zeros(A, S, d, d, device=self.device, dtype=dtype)
                self.rhs = torch.zeros(A, S, d, device=self.device, dtype=dtype)
        return self.gram, self.rhs

    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        # (gram and rhs are allocated together, and dropped together: a checkpoint holds
        # both or neither.)
        if self.gram is None or self.rhs is None or self.config.user_scope == "population":
            return
        if mask is None:
            self.gram.zero_()
            self.rhs.zero_()
            return
        rows = mask.to(self.device).repeat_interleave(self.num_users)
        if rows.shape[0] != self.gram.shape[1]:
            self.gram = self.rhs = None  # another batch size: reallocate on the next act
            return
        self.gram[:, rows] = 0.0
        self.rhs[:, rows] = 0.0

    def _fold_in(
        self, gram: torch.Tensor, rhs: torch.Tensor, i: int, slots: torch.Tensor
    ) -> torch.Tensor:
        """User vectors ``[N, d]`` of the given slots for controlled agent ``i``, from the
        accumulators ``gram``, ``rhs`` (:meth:`_ensure_users`)."""
        d = self.config.dim
        eye = self.config.fold_in_reg * torch.eye(d, device=self.device, dtype=gram.dtype)
        return torch.linalg.solve(gram[i, slots] + eye, rhs[i, slots]).to(self.item.dtype)

    # Acting ----------------------------------------------------------------------------------
    def exploration(self) -> float:
        return self.config.epsilon

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        gram, rhs = self._ensure_users(obs_a["user_id"].shape[0])
        p = self._fold_in(gram, rhs, i, self._slots(obs_a["user_id"]))  # [N, d]
        ids = obs_a["candidate_ids"]
        q = self.item[i][ids]  # [N, C, d]
        return self.mu[i] + self.item_bias[i][ids] + torch.einsum("nd,ncd->nc", p, q)

    # Feedback --------------------------------------------------------------------------------
    def _interactions(self, tr: Transition, i: int, a: str):
        items, clicked, _ = tr.slate_feedback(a, "click")
        conf = (1.0 + self.config.confidence * clicked) * tr.seen(a).float()[:, None]  # 0: dropped
        if self.config.target == "engagement":
            return items, tr.slate_feedback(a, "engagement")[1], conf
        return items, clicked, conf

    def observe(self, transition: Transition) -> None:
        N = transition.valid.shape[0]
        gram, rhs = self._ensure_users(N)
        vecs = []
        for i, a in enumerate(self.agent_ids):
            slots = self._slots(transition.obs[a]["user_id"])
            p = self._fold_in(gram, rhs, i, slots)
            vecs.append(p)
            items, y, conf = self._interactions(transition, i, a)
            q = self.item[i][items]  # [N, K, d]
            resid = y - self.mu[i] - self.item_bias[i][items]
            terms = torch.einsum("nk,nkd,nke->nde", conf, q, q).to(gram.dtype)
            gram[i].index_add_(0, slots, terms)
            rhs[i].index_add_(0, slots, torch.einsum("nk,nk,nkd->nd", conf, resid, q).to(rhs.dtype))
        self._user_vec = torch.stack(vecs)

    def learn(self, transition: Transition) -> Metrics:
        cfg = self.config
        if self._user_vec is None or self._user_vec.shape[1] != transition.valid.shape[0]:
            self.observe(transition)  # learn() without observe(): fold in first
        user_vec = self._user_vec
        assert user_vec is not None  # observe() set it
        for i, a in enumerate(self.agent_ids):
            items, y, conf = self._interactions(transition, i, a)
            p = user_vec[i][:, None, :]  # [N, 1, d]
            q = self.item[i][items]  # [N, K, d]
            pred = self.mu[i] + self.item_bias[i][items] + (p * q).sum(-1)
            err = conf * (y - pred)  # the weighted-least-squares gradient, up to a factor 2
            flat = items.flatten()
            n = conf.sum().clamp(min=1.0)
            reg = cfg.reg * (conf > 0).float()  # dropped rows (conf 0) leave the model alone
            self.item[i].index_add_(
                0, flat, (cfg.lr * (err[..., None] * p - reg[..., None] * q)).flatten(0, 1)
            )
            self.item_bias[i].index_add_(
                0, flat, (cfg.lr * (err - reg * self.item_bias[i][items])).flatten()
            )
            self.mu[i] += cfg.lr * err.sum() / n
        self._user_vec = None
        return {}

    # State -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        empty = torch.zeros(0, dtype=torch.float32, device=self.device)
        return {
            **super().state_dict(),
            "item": self.item,
            "item_bias": self.item_bias,
            "mu": self.mu,
            "gram": self.gram if self.gram is not None else empty,
            "rhs": self.rhs if self.rhs is not None else empty,
        }

    def state_layout(self, state: dict[str, Any]) -> dict[str, Any]:
        # The user tables are sized by the batch the agent last acted on, not by its config:
        # any size matches here, and _user_tables_error checks them against the config.
        empty = torch.zeros(0, dtype=torch.float32)
        return {**super().state_layout(state), "gram": empty, "rhs": empty}

    def _user_tables_error(self, gram: torch.Tensor, rhs: torch.Tensor) -> str | None:
        """Why a checkpoint's user tables ``gram [A, S, d, d]`` and ``rhs [A, S, d]`` (both
        empty: none yet) are no tables of this agent: ``S`` user slots, ``num_users`` for
        ``user_scope="population"``, a positive multiple of it (markets x users) for
        ``"episode"``; of the item factors' dtype. ``None`` when they fit."""
        if gram.numel() == 0 and rhs.numel() == 0:
            return None
        A, d, U = len(self.agent_ids), self.config.dim, self.num_users
        if gram.numel() == 0 or rhs.numel() == 0:
            return (
                "state['gram'] and state['rhs'] are both empty (no user tables yet) or both "
                f"filled; got shapes {tuple(gram.shape)} and {tuple(rhs.shape)}"
            )
        S = gram.shape[1] if gram.dim() == 4 else 0
        population = self.config.user_scope == "population"
        slots = str(U) if population else f"a multiple of {U}"
        if gram.shape != (A, S, d, d) or S == 0 or S % U or (population and S != U):
            return (
                f"state['gram'] has shape {tuple(gram.shape)}; expected (agents, slots, dim, "
                f"dim) = ({A}, S, {d}, {d}) with S user slots ({slots}, user_scope="
                f"{self.config.user_scope!r})"
            )
        if rhs.shape != (A, S, d):
            return (
                f"state['rhs'] has shape {tuple(rhs.shape)}; expected {(A, S, d)}, the "
                "agents and user slots of state['gram'] and the latent dim"
            )
        # Population tables written before they were float64 hold the item factors' dtype.
        allowed = {self._table_dtype, self.item.dtype}
        for key, t in (("gram", gram), ("rhs", rhs)):
            if t.dtype not in allowed:
                return f"state[{key!r}] is {t.dtype}; expected {self._table_dtype}"
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        wrong = self._user_tables_error(state["gram"], state["rhs"])
        if wrong:
            raise ValueError(f"agent {self.name!r}: {wrong}")
        super().load_state_dict(state)
        self.item.copy_(state["item"])
        self.item_bias.copy_(state["item_bias"])
        self.mu.copy_(state["mu"])
        has_users = state["gram"].numel() > 0
        dtype = self._table_dtype
        self.gram = state["gram"].to(dtype=dtype, copy=True) if has_users else None
        self.rhs = state["rhs"].to(dtype=dtype, copy=True) if has_users else None
