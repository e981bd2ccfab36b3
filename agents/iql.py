"""Independent Q-learning over slates (SlateQ), in one readable file.

Each controlled env agent learns on its own (independent learners: the other agents are part
of its environment), with its own networks and replay buffer, or with one set shared by all
of them and a one-hot agent id in the input (``shared_params=True``).

**SlateQ decomposition** (Ie et al., 2019). A slate's value is the choice-weighted value of
its items::

    Q(s, A) = Σ_{i∈A} P(i | s, A) · Q̄(s, i)  +  P(⊥ | s, A) · Q̄(s, ⊥)

``Q̄(s, i)`` is the long-term value of the user clicking item ``i``; ``Q̄(s, ⊥)`` the value of
the request when the user clicks none of the agent's items (no reward of its own, but the
future still counts — and in cooperative play, the teammates' clicks). Both come from one
network (:class:`~agents.nets.CandidateScorer` over pair and context features).

**Choice model.** ``P(· | s, A)`` is a conditional logit learned by maximum likelihood from
the agent's *own* observations — which of its slots was clicked, if any
(``Transition.clicked_slot``): a per-candidate logit ``v(s, i)``, a slot bias ``b_k`` (position
effects), and a no-click logit ``v⊥(s)`` that also absorbs the competitors' slates, which the
agent cannot see. It never reads the simulator's choice probabilities. Under
``topology="platform_choice"`` the model also learns from requests whose user visited another
platform (or none) and never saw the slate, as "no click": the visit is drawn by loyalty,
before and apart from the slates, so the probabilities it learns are those of the agent's
own outcome, ``P(visit | s) · P(i | s, A, visit)``, which is what ``Q(s, A)`` weighs (the
bandit baselines and MF, which model clicks given a seen slate, drop those rows instead).

**Slate selection** (``slate_selection``; SlateQ's two heuristics):

- ``"greedy"`` (default): fill slots 0…K-1 in turn; slot ``k`` takes the candidate that
  most raises the slate's value ``Q(s, A)`` under the learned choice model, its weight
  ``exp(v(s, i) + b_k)`` carrying the slot's bias. A candidate that would take clicks from
  better items already on the slate (cannibalisation) loses to one that mostly takes them
  from no click: the assortment effect that top-K ranking cannot see.
- ``"top_k"``: rank candidates by ``exp(v(s, i)) · (Q̄(s, i) − Q̄(s, ⊥))`` — the choice
  weight times the gain over no click — and fill the slots in that order.

``score()`` (what ensembles combine) is the top-K rank under either setting; exploration is
ε per slot (a uniformly random remaining candidate) under both.

**Targets.** Only the observed outcome's value is regressed: ``Q̄(s, i*)`` for the clicked item,
``Q̄(s, ⊥)`` when nothing of the agent's was clicked, toward ``r + γ^m · Q_target(s', A')``
where ``A'`` is the slate the *online* network would select (double DQN; ``double_q=False``
selects with the target network) and ``Q_target(s', A')`` its SlateQ value under the learned
choice model. The target network follows by Polyak averaging.

**Which next state.** ``bootstrap="market"``: the market's next request (n-step returns
optional), the standard view of a market as one MDP. ``bootstrap="user"``: the *same user's*
next request in that market (:class:`~agents.buffers.UserVisitAccumulator`), the request a
recommendation actually influences through boredom, satisfaction and churn; a termination
(every user churned) closes every open request as terminal, a truncation drops them (their
users' next requests lie past the time limit, which the observations do not show).

Auto-reset transitions (``valid == False``) are dropped; truncations bootstrap from the final
observation, terminations do not. Everything (replay included) lives on the env's device.
Metrics: ``losses/td``, ``losses/choice_nll``, ``charts/q_clicked``, ``charts/epsilon``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from agents.base import (
    Actions,
    AgentConfig,
    Metrics,
    Obs,
    ScoringAgent,
    Transition,
    option,
    sequential_slate,
    slate_from_scores,
)
from agents.buffers import NStepAccumulator, ReplayBuffer, UserVisitAccumulator, row_keys
from agents.features import ObsLayout, context_features, pair_features
from agents.nets import CandidateScorer, one_hot_agent, seeded_init
from agents.registry import register
from agents.state_checks import counter
from agents.update_metrics import UpdateMetrics


@dataclass(frozen=True)
class IQLConfig(AgentConfig):
    # networks
    shared_params: bool = option(
        False, "one network for all controlled agents, with a one-hot agent id as input"
    )
    hidden: tuple = option(
        (64, 64), "hidden sizes of the Q-network", within=(1, math.inf), each=int
    )
    choice_hidden: tuple = option(
        (64,), "hidden sizes of the choice model", within=(1, math.inf), each=int
    )
    # returns
    gamma: float = option(0.9, "discount per bootstrap step")
    bootstrap: str = option("market", "next state: 'market' (next request) or 'user' (its next)")
    n_step: int = option(1, "n-step returns (bootstrap='market' only)")
    double_q: bool = option(True, "double DQN: online net picks the next slate, target values it")
    slate_selection: str = option(
        "greedy",
        "'greedy' (slot by slot, the most valuable addition under the learned choice model) "
        "or 'top_k' (rank by choice weight times gain over no click)",
    )
    # optimisation
    lr: float = option(
        1e-3,
        "Adam learning rate (Q-network and choice model)",
        within=(0.0, math.inf),
        open_ends=(True, True),
    )
    batch_size: int = option(128, "transitions per gradient update")
    buffer_size: int = option(50_000, "replay capacity in transitions, per learner")
    learning_starts: int = option(
        1_000, "env transitions per agent before the first update", within=(0, math.inf)
    )
    update_every: int = option(32, "env transitions per agent per gradient update")
    target_tau: float = option(0.01, "Polyak step of the target network per update")
    max_grad_norm: float = option(
        10.0, "gradient-norm clip (inf: none)", within=(0.0, math.inf), open_ends=(True, False)
    )
    # exploration
    eps_start: float = option(1.0, "initial per-slot exploration probability", within=(0.0, 1.0))
    eps_end: float = option(0.05, "final per-slot exploration probability", within=(0.0, 1.0))
    eps_decay_steps: int = option(
        10_000, "env transitions per agent of linear ε decay", within=(0, math.inf)
    )
    # bookkeeping
    metrics_every: int = option(
        100, "return averaged metrics every this many updates", within=(1, math.inf)
    )
    save_buffer: bool = option(False, "write the replay buffers into checkpoints (large)")
    # Checkpoints written before slate_selection existed ran the top-K ranking.
    LEGACY: ClassVar[Mapping[str, Any]] = {"slate_selection": "top_k"}


# ----------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------
class ChoiceModel(nn.Module):
    """Conditional logit over a slate of K plus no click: ``[..., K] -> [..., K + 1]``."""

    def __init__(self, pair_dim: int, context_dim: int, hidden, slate_size: int):
        super().__init__()
        self.logits = CandidateScorer(pair_dim, context_dim, hidden)
        self.slot_bias = nn.Parameter(torch.zeros(slate_size, dtype=torch.float32))

    def forward(self, pairs: torch.Tensor, context: torch.Tensor):
        """Per-candidate logits ``[B, C]`` and no-click logits ``[B]``."""
        return self.logits(pairs, context)

    def slate_log_probs(self, slate_logits: torch.Tensor, no_click: torch.Tensor):
        """``log P(slot k | slate)`` for k < K and ``log P(no click)`` last: ``[B, K + 1]``."""
        return torch.log_softmax(
            torch.cat([slate_logits + self.slot_bias, no_click[:, None]], dim=1), dim=1
        )


class Learner(nn.Module):
    """What one independent learner owns: Q-network, its target, the choice model."""

    def __init__(self, pair_dim: int, context_dim: int, cfg: IQLConfig, slate_size: int):
        super().__init__()
        self.q = CandidateScorer(pair_dim, context_dim, cfg.hidden)  # Q̄(s, i), Q̄(s, ⊥)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.choice = ChoiceModel(pair_dim, context_dim, cfg.choice_hidden, slate_size)


SLATE_SELECTIONS = ("greedy", "top_k")
# The keys of what learn() pushes into an accumulator for each agent and step; the rows
# stored are row_keys(STEP_KEYS) (a checkpoint's replay rows are checked against them).
STEP_KEYS = (
    "user", "history", "candidates", "mask", "slate", "click", "reward", "agent",
    "next_user", "next_history", "next_candidates", "next_mask",
    "terminal", "end", "valid", "user_id", "next_user_id",
)  # fmt: skip


def topk_rank(logits: torch.Tensor, q_items: torch.Tensor, q_null: torch.Tensor):
    """SlateQ's top-K ranking score ``exp(v_i) · (Q̄_i − Q̄⊥)`` (shifted per row for range)."""
    weight = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return weight * (q_items - q_null[:, None])


def greedy_slate(
    choice: ChoiceModel,
    logits: torch.Tensor,
    no_click: torch.Tensor,
    q_items: torch.Tensor,
    q_null: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    epsilon: float | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SlateQ's greedy slate ``[B, k]``: slot ``j`` takes the unmasked candidate ``i`` that
    maximises ``Q(s, A + i)`` where ``A`` holds slots ``0…j-1``, i.e.
    ``(S + w_i Q̄_i) / (W + w_i)`` with ``w_i = exp(v_i + b_j)``, ``S = w⊥ Q̄⊥ + Σ_A w Q̄`` and
    ``W = w⊥ + Σ_A w`` (``logits``/``q_items [B, C]``, ``no_click``/``q_null [B]``). Every
    slot is filled, with the least harmful candidate when none adds value. ε-greedy per slot
    as :func:`~agents.base.sequential_slate`."""
    # One shift per row keeps every weight finite: the largest weight is at most exp(b_max).
    shift = torch.maximum(logits.masked_fill(~mask, -math.inf).amax(1), no_click)[:, None]
    base = (logits - shift).float()
    w_null = torch.exp(no_click[:, None] - shift).squeeze(1)
    state = {"num": w_null * q_null, "den": w_null, "w": base}

    def slot_scores(j: int, prev: torch.Tensor | None) -> torch.Tensor:
        if prev is not None:  # slot j-1's pick joins the slate with slot j-1's weight
            w_prev = state["w"].gather(1, prev[:, None]).squeeze(1)
            state["num"] = state["num"] + w_prev * q_items.gather(1, prev[:, None]).squeeze(1)
            state["den"] = state["den"] + w_prev
        w = torch.exp(base + choice.slot_bias[j])
        state["w"] = w
        return (state["num"][:, None] + w * q_items) / (state["den"][:, None] + w)

    return sequential_slate(slot_scores, mask, k, epsilon, generator)


def slate_value(
    choice: ChoiceModel,
    logits: torch.Tensor,
    no_click: torch.Tensor,
    q_items: torch.Tensor,
    q_null: torch.Tensor,
    slate: torch.Tensor,
) -> torch.Tensor:
    """``Q(s, A) = Σ_k P(k | A) Q̄(s, A_k) + P(⊥ | A) Q̄(s, ⊥)`` for slates ``[B, K]``."""
    p = choice.slate_log_probs(logits.gather(1, slate), no_click).exp()
    return (p[:, :-1] * q_items.gather(1, slate)).sum(1) + p[:, -1] * q_null


# ----------------------------------------------------------------------------------------
# The agent
# ----------------------------------------------------------------------------------------
@register
class IQLAgent(ScoringAgent):
    """Independent SlateQ learners with double DQN (see the module docstring)."""

    name: ClassVar[str] = "iql"
    Config: ClassVar[type[AgentConfig]] = IQLConfig
    config: IQLConfig
    registrable: ClassVar[bool] = True
    learns: ClassVar[bool] = True

    def __init__(self, env: Any, config: IQLConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        if cfg.bootstrap not in ("market", "user"):
            raise ValueError(f"{self.name}: bootstrap={cfg.bootstrap!r} must be 'market' or 'user'")
        if cfg.slate_selection not in SLATE_SELECTIONS:
            raise ValueError(
                f"{self.name}: slate_selection={cfg.slate_selection!r} must be one of "
                f"{SLATE_SELECTIONS}"
            )
        if cfg.bootstrap == "user" and cfg.n_step != 1:
            raise ValueError(
                f"{self.name}: n_step={cfg.n_step} needs bootstrap='market' (bootstrap='user' "
                "returns are 1-step: n_step=1)"
            )
        if cfg.bootstrap == "user" and self.env_config.horizon < 2:
            # Every episode is truncated after its one request, and a truncation drops the open
            # requests (see UserVisitAccumulator): nothing would reach the buffer, silently.
            raise ValueError(
                f"{self.name}: bootstrap='user' needs the env's horizon >= 2 (horizon="
                f"{self.env_config.horizon}: each episode's one request is truncated before its "
                "user returns, so no transition is stored and no update runs); use "
                "bootstrap='market'"
            )
        small = {k: getattr(cfg, k) for k in ("n_step", "batch_size", "update_every")}
        if min(small.values()) < 1:
            raise ValueError(f"{self.name}: {small} must all be >= 1")
        if cfg.buffer_size < cfg.batch_size:  # the buffer would never hold a batch: no update
            raise ValueError(
                f"{self.name}: buffer_size={cfg.buffer_size} must be >= "
                f"batch_size={cfg.batch_size}, or no gradient update ever runs"
            )
        if not (0.0 <= cfg.gamma <= 1.0 and 0.0 < cfg.target_tau <= 1.0):
            raise ValueError(
                f"{self.name}: gamma={cfg.gamma} (in [0, 1]) or target_tau={cfg.target_tau} "
                "(in (0, 1]) out of range"
            )
        e = self.env_config
        self.layout = ObsLayout(e.num_topics)
        self.num_ids = len(self.agent_ids) if cfg.shared_params else 0  # one-hot width
        pair_dim = self.layout.pair_dim(e.user_dim, e.history_dim, e.candidate_dim)
        ctx_dim = self.layout.context_dim(e.user_dim, e.history_dim)
        n_learners = 1 if cfg.shared_params else len(self.agent_ids)
        with seeded_init(cfg.seed):
            self.learners = nn.ModuleList(
                Learner(pair_dim + self.num_ids, ctx_dim + self.num_ids, cfg, e.slate_size)
                for _ in range(n_learners)
            ).to(self.device)
        self.optimizers = [torch.optim.Adam(lrn.parameters(), lr=cfg.lr) for lrn in self.learners]
        what = f"agent {self.name!r}: buffer_size={cfg.buffer_size}"
        keys = row_keys(STEP_KEYS)
        self.buffers = [
            ReplayBuffer(cfg.buffer_size, self.device, what, keys) for _ in self.learners
        ]
        self.accumulators = [self._accumulator() for _ in self.agent_ids]
        self.env_steps = 0  # transitions seen per agent (markets x steps)
        self.updates = 0
        self.update_metrics = UpdateMetrics(self.device)

    def _accumulator(self):
        cfg = self.config
        if cfg.bootstrap == "user":
            return UserVisitAccumulator(self.env_config.num_users, cfg.gamma)
        return NStepAccumulator(cfg.n_step, cfg.gamma)

    def learner_of(self, i: int) -> Learner:
        # An nn.ModuleList is not generic: indexing it gives an nn.Module.
        return cast(Learner, self.learners[0 if self.config.shared_params else i])

    def _inputs(self, obs_a: Mapping[str, torch.Tensor], agent: torch.Tensor | int):
        """Pair features ``[B, C, F]`` and context features ``[B, G]`` (+ agent one-hot)."""
        pairs = pair_features(self.layout, obs_a)
        ctx = context_features(obs_a)
        if self.num_ids:
            per_pair = agent[:, None] if isinstance(agent, torch.Tensor) else agent  # [B, 1]
            pairs = torch.cat([pairs, one_hot_agent(per_pair, self.num_ids, pairs)], dim=-1)
            ctx = torch.cat([ctx, one_hot_agent(agent, self.num_ids, ctx)], dim=-1)
        return pairs, ctx

    # Acting ----------------------------------------------------------------------------------
    def epsilon(self) -> float:
        cfg = self.config
        frac = min(1.0, self.env_steps / max(1, cfg.eps_decay_steps))
        return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)

    def exploration(self) -> float:
        return self.epsilon()

    @torch.no_grad()
    def score_agent(self, i: int, obs_a, explore: bool = False) -> torch.Tensor:
        lrn = self.learner_of(i)
        pairs, ctx = self._inputs(obs_a, i)
        q_items, q_null = lrn.q(pairs, ctx)
        logits, _ = lrn.choice(pairs, ctx)
        return topk_rank(logits, q_items, q_null)

    @torch.no_grad()
    def act(self, obs: Obs, explore: bool = False) -> Actions:
        if self.config.slate_selection == "top_k":
            return super().act(obs, explore)
        eps = self.exploration() if explore else 0.0
        out = {}
        for i, a in enumerate(self.agent_ids):
            lrn = self.learner_of(i)
            pairs, ctx = self._inputs(obs[a], i)
            q_items, q_null = lrn.q(pairs, ctx)
            logits, no_click = lrn.choice(pairs, ctx)
            mask = obs[a]["action_mask"]
            out[a] = greedy_slate(
                lrn.choice, logits, no_click, q_items, q_null, mask, self.slate_size, eps,
                self.generator,
            )  # fmt: skip
        return out

    def _select(self, lrn, logits, no_click, q_items, q_null, mask) -> torch.Tensor:
        """The slate the policy would pick without exploration ``[B, K]`` (TD targets)."""
        if self.config.slate_selection == "greedy":
            return greedy_slate(
                lrn.choice, logits, no_click, q_items, q_null, mask, self.slate_size
            )
        return slate_from_scores(topk_rank(logits, q_items, q_null), mask, self.slate_size)

    @torch.no_grad()
    def q_values(self, obs: Mapping[str, Mapping[str, torch.Tensor]]):
        """``{a: (Q̄(s, ·) [N, C], Q̄(s, ⊥) [N])}`` of the online network (for inspection)."""
        out = {}
        for i, a in enumerate(self.agent_ids):
            out[a] = self.learner_of(i).q(*self._inputs(obs[a], i))
        return out

    @torch.no_grad()
    def click_probs(self, obs: Mapping[str, Mapping[str, torch.Tensor]], slates):
        """``{a: [N, K + 1]}`` learned P(slot k | slate), no click last (for inspection)."""
        out = {}
        for i, a in enumerate(self.agent_ids):
            ch = self.learner_of(i).choice
            logits, nc = ch(*self._inputs(obs[a], i))
            out[a] = ch.slate_log_probs(logits.gather(1, slates[a]), nc).exp()
        return out

    # Learning --------------------------------------------------------------------------------
    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        for acc in self.accumulators:
            if isinstance(acc, UserVisitAccumulator):
                acc.reset(mask)
            elif mask is None:
                acc.reset()

    def learn(self, transition: Transition) -> Metrics:
        tr, N = transition, transition.valid.shape[0]
        for i, a in enumerate(self.agent_ids):
            o, o2 = tr.obs[a], tr.next_obs[a]
            step = {
                "user": o["user"], "history": o["history"],
                "candidates": o["candidates"], "mask": o["action_mask"],
                "slate": tr.actions[a], "click": tr.clicked_slot[a],
                "reward": tr.rewards[a].float(),
                "agent": torch.full((N,), i, dtype=torch.int64, device=self.device),
                "next_user": o2["user"], "next_history": o2["history"],
                "next_candidates": o2["candidates"], "next_mask": o2["action_mask"],
                "terminal": tr.terminated, "end": tr.ended, "valid": tr.valid,
                "user_id": o["user_id"], "next_user_id": o2["user_id"],
            }  # fmt: skip
            out = self.accumulators[i].push(step)
            emitted = [out] if isinstance(out, tuple) else (out or [])
            buffer = self.buffers[0 if self.config.shared_params else i]
            for row, mask in emitted:
                buffer.add(row, mask)
        self.env_steps += N

        cfg = self.config
        if self.env_steps < cfg.learning_starts:
            return {}
        due = (self.env_steps - cfg.learning_starts) // cfg.update_every + 1 - self.updates
        for _ in range(due):
            for j, lrn in enumerate(self.learners):
                if len(self.buffers[j]) >= cfg.batch_size:  # else skipped: too few rows yet
                    self._update(cast(Learner, lrn), self.optimizers[j], self.buffers[j])
            self.updates += 1  # skipped ones too: the schedule must not owe them later
        # One report per `metrics_every` updates of every learner.
        metrics = self.update_metrics.report(cfg.metrics_every * len(self.learners))
        if metrics:
            metrics["charts/epsilon"] = self.epsilon()
        return metrics

    def _update(self, lrn: Learner, opt: torch.optim.Optimizer, buffer: ReplayBuffer) -> None:
        cfg, K = self.config, self.slate_size
        b = buffer.sample(cfg.batch_size, self.generator)
        obs = {k: b[k] for k in ("user", "history", "candidates")}
        nxt = {k: b["next_" + k] for k in ("user", "history", "candidates")}
        pairs, ctx = self._inputs(obs, b["agent"])
        slate, click = b["slate"], b["click"]
        # Only the shown items matter at s: the slate's pair features [B, K, F].
        shown = pairs.gather(1, slate[..., None].expand(-1, -1, pairs.shape[-1]))

        # TD on the observed outcome: Q̄(s, clicked item), or Q̄(s, ⊥) without a click.
        q_shown, q_null = lrn.q(shown, ctx)
        q_clicked = q_shown.gather(1, click.clamp(min=0)[:, None]).squeeze(1)
        q_pred = torch.where(click >= 0, q_clicked, q_null)
        with torch.no_grad():
            n_pairs, n_ctx = self._inputs(nxt, b["agent"])
            n_logits, n_no_click = lrn.choice(n_pairs, n_ctx)
            qt_items, qt_null = lrn.q_target(n_pairs, n_ctx)
            sel_items, sel_null = lrn.q(n_pairs, n_ctx) if cfg.double_q else (qt_items, qt_null)
            next_slate = self._select(
                lrn, n_logits, n_no_click, sel_items, sel_null, b["next_mask"]
            )
            v_next = slate_value(lrn.choice, n_logits, n_no_click, qt_items, qt_null, next_slate)
            target = b["reward"] + b["discount"] * v_next
        td = F.smooth_l1_loss(q_pred, target)

        # Choice model: maximum likelihood of the observed slot (K = no click).
        logits, no_click = lrn.choice(shown, ctx)
        log_p = lrn.choice.slate_log_probs(logits, no_click)
        nll = F.nll_loss(log_p, torch.where(click >= 0, click, K))

        opt.zero_grad(set_to_none=True)
        (td + nll).backward()
        nn.utils.clip_grad_norm_(lrn.parameters(), cfg.max_grad_norm)
        opt.step()
        with torch.no_grad():
            for p, pt in zip(lrn.q.parameters(), lrn.q_target.parameters(), strict=True):
                pt.lerp_(p, cfg.target_tau)

        self.update_metrics.add(
            {
                "losses/td": td,
                "losses/choice_nll": nll,
                "charts/q_clicked": q_pred.mean(),
                "charts/target": target.mean(),
            }
        )

    # State -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            **super().state_dict(),
            "learners": self.learners.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "env_steps": self.env_steps,
            "updates": self.updates,
            # Metrics of the updates since the last report: a resumed run reports as the
            # uninterrupted one would.
            **self.update_metrics.state_dict(),
        }
        if self.config.save_buffer:
            state["buffers"] = [b.state_dict() for b in self.buffers]
        return state

    def state_layout(self, state: dict[str, Any]) -> dict[str, Any]:
        state = super().state_layout(state)
        if "buffers" in state:  # rows as many as this agent has seen: ReplayBuffer.layout
            state = {**state, "buffers": [ReplayBuffer.layout(b) for b in state["buffers"]]}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # One optimizer and (saved) replay buffer per learner: a list of another length lost
        # or gained a learner's (the buffers' zip below would have dropped one silently).
        for key in ("optimizers", "buffers"):
            saved = state.get(key, [None] * len(self.learners))  # no buffers: save_buffer=False
            if not isinstance(saved, (list, tuple)) or len(saved) != len(self.learners):
                got = f"{len(saved)} entries" if isinstance(saved, (list, tuple)) else "no list"
                raise ValueError(
                    f"agent {self.name!r}: state[{key!r}] holds {got}; expected "
                    f"{len(self.learners)}, one per learner (shared_params="
                    f"{self.config.shared_params}, agent_ids={self.agent_ids})"
                )
        super().load_state_dict(state)
        self.learners.load_state_dict(state["learners"])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        self.env_steps, self.updates = counter(state, "env_steps"), counter(state, "updates")
        self.update_metrics.load_state_dict(state)
        for b, s in zip(self.buffers, state.get("buffers", []), strict=False):  # checked above
            b.load_state_dict(s)
        for acc in self.accumulators:
            acc.reset()
