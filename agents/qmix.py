"""VDN and QMIX over slates: per-agent slate utilities mixed into one team value.

Value decomposition for cooperative markets (VDN: Sunehag et al., 2018; QMIX: Rashid et al.,
2018). Every controlled agent acts greedily on its own utility of its own observation; the
utilities are mixed into a team value ``Q_tot`` that is trained end to end, by TD on the team
reward, from a replay buffer.

**Per-agent slate utility: additive over the slate.** ``Q_a(o_a, A) = v(o_a) + Σ_{i∈A} q(o_a, i)``
— a request term plus one term per recommended item (:class:`~agents.nets.CandidateScorer`'s
context and item heads; a one-hot agent id joins the input when the network is shared,
``shared_params=True``). We chose this over SlateQ's choice-weighted value (``agents/iql.py``)
because its maximiser is exact and cheap — the greedy slate is the top-K candidates by ``q`` —
and the argmax of each agent's utility must be the argmax of ``Q_tot`` (IGM, which monotonic
mixing guarantees only when each agent's greedy slate really maximises its utility; SlateQ's
top-K is a heuristic maximiser). The price: the utility cannot express that a user clicks at
most one item (items of a slate do not compete within ``Q_a``); they are fitted jointly, so
``q`` learns each item's *marginal* contribution in the slates the policy shows.

**Per-agent slate utility: SlateQ** (``utility="slateq"``). IQL's choice-weighted value
(``agents/iql.py``): ``Q_a(o_a, A) = Σ_{i∈A} P(i | o_a, A) Q̄_a(o_a, i) + P(⊥ | o_a, A) Q̄_a(o_a, ⊥)``
with a conditional-logit choice model per agent (or one shared, with the agent id) learned by
maximum likelihood of the agent's own clicked slot (``Transition.clicked_slot``). The TD is
SlateQ's: the mixer mixes the *observed outcome's* values, ``Q̄_a(o_a, i*_a)`` for agent
``a``'s clicked item or ``Q̄_a(o_a, ⊥)`` without a click, a sample of ``Q_a(o_a, A_a)`` over
the user's choice; the targets mix ``Q_a(o'_a, A'_a)`` at SlateQ's greedy slates (each slot
the candidate that most raises the slate's value: the assortment effect). Under VDN the sum
is linear, so the mixed sample is an unbiased sample of ``Q_tot``; under QMIX's non-linear
mixer it is not (a mixed sample, not the mixed expectation): use it knowing that. The
greedy slate is SlateQ's heuristic maximiser, so IGM holds only as far as it maximises.
This is the slate model IQL learns with, under value decomposition: it separates what the
slate model is worth from what the team value is worth
(``experiments/results/2026-12-06/slateq_utilities``).

**What "not my click" is worth** (``teammate_value``, VDN only). A user clicks at most one
item of the whole page, so the rows only show a page where agent ``a``'s item ``i`` was
clicked (every teammate ``⊥``) or one where nobody's or a teammate's was. Under the sum the
data identify ``Q̄_a(i) − Q̄_a(⊥) = Q_tot(a's i clicked) − Q_tot(nothing clicked)``: agent
``a`` weighs its item against a page *nobody* clicks, as if its teammates' items were not
there, and its greedy slate takes clicks they would have earned. (IQL, paid the team's total,
learns in ``Q̄_a(⊥)`` what its teammates earn when its items are passed over.) With
``teammate_value=True`` each agent also learns ``g_a(o_a) ≈ E[Σ_{b≠a} (Q̄_b(x_b) − Q̄_b(⊥))
| o_a, a not clicked]`` — its teammates' gain over their no-click values when its own items
are passed over, regressed on the rows where they were (targets from the online utilities,
without gradient) — and its greedy slates (acting and the TD target's selection) value
``⊥`` at ``Q̄_a(⊥) + g_a(o_a)``. Execution stays decentralised: ``g_a`` reads only
``o_a``. The TD and the mixed values are unchanged.

**Mixers.** ``vdn``: ``Q_tot = Σ_a Q_a``. ``qmix``: a two-layer monotonic mixer whose weights
are produced from the global ``state()`` by hypernetworks and passed through ``abs()``
(``∂Q_tot/∂Q_a ≥ 0``), with state-dependent biases and an ELU between the layers.

**Targets.** ``y = r_team + γ^m · Q̄_tot(s', A'_1…A'_n)`` where each ``A'_a`` is the greedy
slate of the *online* utility network (double Q; ``double_q=False`` selects with the target)
and ``Q̄_tot`` mixes the target utilities with the target mixer; targets follow by Polyak
averaging. Market-level n-step returns (:class:`~agents.buffers.NStepAccumulator`): auto-reset
rows are dropped, truncations bootstrap from the final observation, terminations do not.

**Team reward.** Cooperative markets only (``supports_reward_modes``): every agent's reward is
the team total, and the first controlled agent's is used. A competitive or mixed env is refused
with a clear error when the agent is built.

Exploration: ε-greedy per slot, ε decayed linearly in env transitions. Everything, replay
included, lives on the env's device. Metrics: ``losses/td``, ``charts/q_tot``,
``charts/target``, ``charts/epsilon`` (and ``losses/choice_nll`` with ``utility="slateq"``,
``losses/teammate_value`` with ``teammate_value``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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
    slate_from_scores,
)
from agents.buffers import NStepAccumulator, ReplayBuffer, row_keys
from agents.features import ObsLayout, context_features, pair_features
from agents.iql import ChoiceModel, greedy_slate, slate_value, topk_rank
from agents.nets import CandidateScorer, mlp, one_hot_agent, seeded_init
from agents.registry import register
from agents.state_checks import counter
from agents.update_metrics import UpdateMetrics

OBS_KEYS = ("user", "history", "candidates", "action_mask")
UTILITIES = ("additive", "slateq")


@dataclass(frozen=True)
class QMIXConfig(AgentConfig):
    # networks
    shared_params: bool = option(
        True, "one utility network for all controlled agents, with a one-hot agent id as input"
    )
    hidden: tuple = option(
        (128, 128), "hidden sizes of the per-agent utility network", within=(1, math.inf), each=int
    )
    utility: str = option(
        "additive",
        "per-agent slate utility: 'additive' (v + Σ q over the slate) or 'slateq' (IQL's "
        "choice-weighted value with a learned choice model)",
    )
    choice_hidden: tuple = option(
        (64,), "utility='slateq': hidden sizes of the choice model", within=(1, math.inf), each=int
    )
    teammate_value: bool = option(
        False,
        "utility='slateq', VDN: greedy slates value no click of this agent's items at what "
        "its teammates then earn (a learned head), not at an unclicked page",
    )
    mixer_embed: int = option(32, "QMIX: width of the mixing layer", within=(1, math.inf))
    hypernet_hidden: int = option(
        64, "QMIX: hidden width of the weight hypernetworks", within=(1, math.inf)
    )
    # returns
    gamma: float = option(0.95, "discount per request")
    n_step: int = option(1, "market-level n-step returns")
    double_q: bool = option(True, "online utilities pick the next slates, target ones value them")
    # optimisation
    lr: float = option(
        5e-4,
        "Adam learning rate (utilities and mixer)",
        within=(0.0, math.inf),
        open_ends=(True, True),
    )
    batch_size: int = option(256, "transitions per gradient update")
    buffer_size: int = option(50_000, "replay capacity in market steps")
    learning_starts: int = option(
        2_000, "env transitions before the first update", within=(0, math.inf)
    )
    update_every: int = option(32, "env transitions per gradient update")
    target_tau: float = option(0.01, "Polyak step of the target networks per update")
    max_grad_norm: float = option(
        10.0, "gradient-norm clip (inf: none)", within=(0.0, math.inf), open_ends=(True, False)
    )
    # exploration
    eps_start: float = option(1.0, "initial per-slot exploration probability", within=(0.0, 1.0))
    eps_end: float = option(0.05, "final per-slot exploration probability", within=(0.0, 1.0))
    eps_decay_steps: int = option(20_000, "env transitions of linear ε decay", within=(0, math.inf))
    # bookkeeping
    metrics_every: int = option(
        100, "return averaged metrics every this many updates", within=(1, math.inf)
    )
    save_buffer: bool = option(False, "write the replay buffer into checkpoints (large)")
    # Checkpoints written before `utility` existed ran the additive utility (headers hold
    # tuples as lists, so the choice model's width is written as one).
    LEGACY: ClassVar[Mapping[str, Any]] = {
        "utility": "additive",
        "choice_hidden": [64],
        "teammate_value": False,
    }


# ----------------------------------------------------------------------------------------
# Mixers: [B, n] agent utilities (+ [B, S] state) -> [B] team value
# ----------------------------------------------------------------------------------------
class SumMixer(nn.Module):
    """VDN: ``Q_tot = Σ_a Q_a``."""

    def forward(self, q: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        return q.sum(-1)


class MonotonicMixer(nn.Module):
    """QMIX: ``Q_tot = w2(s)ᵀ ELU(W1(s)ᵀ q + b1(s)) + b2(s)`` with ``|W1|, |w2|`` from
    hypernetworks on the state, so ``Q_tot`` is monotonic in every ``Q_a``."""

    def __init__(self, num_agents: int, state_dim: int, embed: int, hyper_hidden: int):
        super().__init__()
        self.num_agents, self.embed = num_agents, embed
        self.w1 = mlp(state_dim, (hyper_hidden,), num_agents * embed)
        self.b1 = nn.Linear(state_dim, embed, dtype=torch.float32)
        self.w2 = mlp(state_dim, (hyper_hidden,), embed)
        self.b2 = mlp(state_dim, (embed,), 1)

    def forward(self, q: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        if state is None:
            raise ValueError("the QMIX mixer needs the global state")
        s = state.float()
        w1 = self.w1(s).abs().view(-1, self.num_agents, self.embed)
        hidden = F.elu(torch.bmm(q[:, None, :], w1).squeeze(1) + self.b1(s))
        return (hidden * self.w2(s).abs()).sum(-1) + self.b2(s).squeeze(-1)


# ----------------------------------------------------------------------------------------
# The agents
# ----------------------------------------------------------------------------------------
class ValueDecompositionAgent(ScoringAgent):
    """Shared machinery of VDN and QMIX (module docstring); subclasses pick the mixer."""

    Config: ClassVar[type[AgentConfig]] = QMIXConfig
    config: QMIXConfig
    learns: ClassVar[bool] = True
    supports_reward_modes: ClassVar[tuple[str, ...]] = ("cooperative",)

    def __init__(self, env: Any, config: QMIXConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        small = {k: getattr(cfg, k) for k in ("n_step", "batch_size", "update_every")}
        if min(small.values()) < 1:
            raise ValueError(f"{self.name}: {small} must all be >= 1")
        if cfg.buffer_size < cfg.batch_size:  # the buffer would never hold a batch: no update
            raise ValueError(
                f"{self.name}: buffer_size={cfg.buffer_size} must be >= "
                f"batch_size={cfg.batch_size}, or no gradient update ever runs"
            )
        if not 0.0 <= cfg.gamma <= 1.0 or not 0.0 < cfg.target_tau <= 1.0:
            raise ValueError(
                f"{self.name}: gamma={cfg.gamma} (in [0, 1]) or target_tau={cfg.target_tau} "
                "(in (0, 1]) out of range"
            )
        if cfg.utility not in UTILITIES:
            raise ValueError(f"{self.name}: utility={cfg.utility!r} must be one of {UTILITIES}")
        self.slateq = cfg.utility == "slateq"
        if cfg.teammate_value and not (self.slateq and self.teammate_value_supported):
            raise ValueError(
                f"{self.name}: teammate_value=True needs utility='slateq' (got "
                f"{cfg.utility!r}) and the VDN sum, which splits Q_tot into agents' shares "
                "(agent 'vdn')"
            )
        e = self.env_config
        self.layout = ObsLayout(e.num_topics)
        A = len(self.agent_ids)
        self.num_ids = A if cfg.shared_params else 0
        pair_dim = self.layout.pair_dim(e.user_dim, e.history_dim, e.candidate_dim)
        ctx_dim = self.layout.context_dim(e.user_dim, e.history_dim)
        nets = 1 if cfg.shared_params else A
        with seeded_init(cfg.seed):
            self.utilities = nn.ModuleList(
                CandidateScorer(pair_dim + self.num_ids, ctx_dim + self.num_ids, cfg.hidden)
                for _ in range(nets)
            ).to(self.device)
            self.mixer = self.build_mixer(A, e.state_dim, cfg).to(self.device)
            # Built last, and only for SlateQ utilities: the additive agent's parameters (and
            # checkpoints) are what they were before this option existed.
            self.choices = nn.ModuleList(
                ChoiceModel(
                    pair_dim + self.num_ids,
                    ctx_dim + self.num_ids,
                    cfg.choice_hidden,
                    e.slate_size,
                )
                for _ in range(nets if self.slateq else 0)
            ).to(self.device)
            self.teammates = nn.ModuleList(
                mlp(ctx_dim + self.num_ids, cfg.choice_hidden, 1)
                for _ in range(nets if cfg.teammate_value else 0)
            ).to(self.device)
        self.utilities_target = copy.deepcopy(self.utilities).requires_grad_(False)
        self.mixer_target = copy.deepcopy(self.mixer).requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            [
                *self.utilities.parameters(),
                *self.mixer.parameters(),
                *self.choices.parameters(),
                *self.teammates.parameters(),
            ],
            lr=cfg.lr,
        )
        # The keys learn() pushes: the reward, the joint slate (and clicked slots, for SlateQ
        # utilities), every observation key and its next_ (and the global state's, for agents
        # that mix on it), and the control keys.
        obs_keys = [*OBS_KEYS, *(["state"] if self.needs_state else [])]
        acted = ["slate", *(["click"] if self.slateq else [])]
        step_keys = ["reward", *acted, *obs_keys, *(f"next_{k}" for k in obs_keys)]
        self.buffer = ReplayBuffer(
            cfg.buffer_size,
            self.device,
            f"agent {self.name!r}: buffer_size={cfg.buffer_size}",
            row_keys(step_keys),
        )
        self.accumulator = NStepAccumulator(cfg.n_step, cfg.gamma)
        self.env_steps = 0  # transitions seen (markets x steps)
        self.updates = 0
        self.update_metrics = UpdateMetrics(self.device)

    #: Whether the mixer splits ``Q_tot`` into the agents' shares (``teammate_value``).
    teammate_value_supported: ClassVar[bool] = False

    def build_mixer(self, num_agents: int, state_dim: int, cfg: QMIXConfig) -> nn.Module:
        raise NotImplementedError

    # Utilities -------------------------------------------------------------------------------
    def features(
        self, obs: Mapping[str, torch.Tensor], agents: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair features ``[B, n, C, F]`` and context features ``[B, n, G]`` (+ the agent
        one-hot when the networks are shared) of the controlled agents ``agents`` (indices
        into ``agent_ids``) from their observations stacked on axis 1 (``obs[k] [B, n, ...]``)."""
        B, n = obs["user"].shape[:2]
        flat = {k: obs[k].flatten(0, 1) for k in ("user", "history", "candidates")}
        pairs, ctx = pair_features(self.layout, flat), context_features(flat)
        if self.num_ids:
            ids = torch.as_tensor(list(agents), device=self.device).repeat(B)
            pairs = torch.cat([pairs, one_hot_agent(ids[:, None], self.num_ids, pairs)], dim=-1)
            ctx = torch.cat([ctx, one_hot_agent(ids, self.num_ids, ctx)], dim=-1)
        return pairs.unflatten(0, (B, n)), ctx.unflatten(0, (B, n))

    def heads(
        self, nets: nn.ModuleList, pairs: torch.Tensor, ctx: torch.Tensor, agents: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``nets`` (one per agent, or one shared) on :meth:`features`: per-candidate ``[B, n,
        C]`` and per-request ``[B, n]`` outputs; one forward pass when the network is shared."""
        if self.config.shared_params:
            return nets[0](pairs, ctx)
        out = [nets[i](pairs[:, j], ctx[:, j]) for j, i in enumerate(agents)]
        return torch.stack([x for x, _ in out], 1), torch.stack([y for _, y in out], 1)

    def item_values(
        self, obs: Mapping[str, torch.Tensor], agents: Sequence[int], target: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item terms ``q [B, n, C]`` and request terms ``v [B, n]`` of the controlled
        agents ``agents`` (:meth:`features`' layout). With ``utility="slateq"`` they are
        ``Q̄(o, i)`` and ``Q̄(o, ⊥)``."""
        nets = self.utilities_target if target else self.utilities
        return self.heads(nets, *self.features(obs, agents), agents)

    def per_agent(
        self, nets: nn.ModuleList, fn, agents: Sequence[int], *tensors: torch.Tensor
    ) -> torch.Tensor:
        """``fn(net, *tensors)`` over the agents' axis 1 of ``tensors [B, n, ...]``, ``net``
        each agent's of ``nets`` (one per agent, or one shared): one call on ``[B * n, ...]``
        when shared, one per agent otherwise; the result back as ``[B, n, ...]``."""
        B, n = tensors[0].shape[:2]
        if self.config.shared_params:
            return fn(nets[0], *(t.flatten(0, 1) for t in tensors)).unflatten(0, (B, n))
        return torch.stack(
            [fn(nets[i], *(t[:, j] for t in tensors)) for j, i in enumerate(agents)], 1
        )

    def per_choice(self, fn, agents: Sequence[int], *tensors: torch.Tensor) -> torch.Tensor:
        """:meth:`per_agent` over the choice models."""
        return self.per_agent(self.choices, fn, agents, *tensors)

    def null_values(self, v: torch.Tensor, ctx: torch.Tensor, agents: Sequence[int]):
        """The no-click value greedy slates use ``[B, n]``: ``Q̄(⊥)`` (``v [B, n]``), plus the
        teammates' learned gain ``g(o)`` from context features ``ctx [B, n, G]`` with
        ``teammate_value``."""
        if not self.config.teammate_value:
            return v
        return v + self.teammate_gain(ctx, agents)

    def teammate_gain(self, ctx: torch.Tensor, agents: Sequence[int]) -> torch.Tensor:
        """``g_a(o_a) [B, n]`` (module docstring) from context features ``ctx [B, n, G]``."""
        return self.per_agent(self.teammates, lambda net, c: net(c).squeeze(-1), agents, ctx)

    def slateq_slates(self, q, v, logits, no_click, mask, agents, epsilon=0.0) -> torch.Tensor:
        """SlateQ's greedy slates ``[B, n, K]`` (:func:`agents.iql.greedy_slate`) from
        ``Q̄`` terms ``q [B, n, C]``, ``v [B, n]`` and the choice model's ``logits [B, n, C]``,
        ``no_click [B, n]``; ε-greedy per slot when ``epsilon > 0``."""
        K, gen = self.slate_size, self.generator

        def pick(choice, lg, nc, qi, qn, m):
            return greedy_slate(choice, lg, nc, qi, qn, m, K, epsilon, gen)

        return self.per_choice(pick, agents, logits, no_click, q, v, mask)

    @staticmethod
    def slate_utility(q: torch.Tensor, v: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """``Q_a(o_a, slate) = v(o_a) + Σ_k q(o_a, slate_k)``: ``[B, n]`` from ``q [B, n, C]``,
        ``v [B, n]`` and slates ``[B, n, K]``."""
        return v + q.gather(-1, slate).sum(-1)

    def greedy_slates(self, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each agent's utility-maximising slate ``[B, n, K]``: its top-K unmasked ``q``."""
        K = self.slate_size
        return slate_from_scores(q.flatten(0, 1), mask.flatten(0, 1), K).view(*q.shape[:2], K)

    @torch.no_grad()
    def score(self, obs, explore: bool = False) -> dict[str, torch.Tensor]:
        stacked = {k: torch.stack([obs[a][k] for a in self.agent_ids], 1) for k in OBS_KEYS}
        q, _ = self.item_values(stacked, range(len(self.agent_ids)))
        return {a: q[:, i] for i, a in enumerate(self.agent_ids)}

    @torch.no_grad()
    def score_agent(self, i: int, obs_a, explore: bool = False) -> torch.Tensor:
        """Additive: ``q``; SlateQ: its top-K rank (what ensembles combine; acting is greedy)."""
        obs1 = {k: obs_a[k][:, None] for k in OBS_KEYS}
        if not self.slateq:
            return self.item_values(obs1, [i])[0][:, 0]
        pairs, ctx = self.features(obs1, [i])
        q, v = self.heads(self.utilities, pairs, ctx, [i])
        logits, _ = self.heads(self.choices, pairs, ctx, [i])
        return topk_rank(logits[:, 0], q[:, 0], self.null_values(v, ctx, [i])[:, 0])

    @torch.no_grad()
    def q_values(self, obs: Mapping[str, Mapping[str, torch.Tensor]], selection: bool = False):
        """``{a: (q [N, C], v [N])}``: each agent's per-item and per-request terms of its
        online utility (``Q̄(o, i)`` and ``Q̄(o, ⊥)`` with SlateQ utilities; for inspection,
        as IQL's ``q_values``). ``selection=True``: ``v`` as the greedy slates value no
        click, ``Q̄(⊥) + g(o)`` with ``teammate_value``."""
        agents = range(len(self.agent_ids))
        stacked = {k: torch.stack([obs[a][k] for a in self.agent_ids], 1) for k in OBS_KEYS}
        pairs, ctx = self.features(stacked, agents)
        q, v = self.heads(self.utilities, pairs, ctx, agents)
        if selection:
            v = self.null_values(v, ctx, agents)
        return {a: (q[:, i], v[:, i]) for i, a in enumerate(self.agent_ids)}

    @torch.no_grad()
    def act(self, obs: Obs, explore: bool = False) -> Actions:
        if not self.slateq:
            return super().act(obs, explore)
        agents = range(len(self.agent_ids))
        stacked = {k: torch.stack([obs[a][k] for a in self.agent_ids], 1) for k in OBS_KEYS}
        pairs, ctx = self.features(stacked, agents)
        q, v = self.heads(self.utilities, pairs, ctx, agents)
        logits, no_click = self.heads(self.choices, pairs, ctx, agents)
        eps = self.exploration() if explore else 0.0
        null = self.null_values(v, ctx, agents)
        mask = stacked["action_mask"]
        slates = self.slateq_slates(q, null, logits, no_click, mask, agents, eps)
        return {a: slates[:, i] for i, a in enumerate(self.agent_ids)}

    def exploration(self) -> float:
        cfg = self.config
        frac = min(1.0, self.env_steps / max(1, cfg.eps_decay_steps))
        return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)

    # Learning --------------------------------------------------------------------------------
    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.accumulator.reset()

    def learn(self, transition: Transition) -> Metrics:
        tr = transition
        states: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.needs_state:
            if tr.state is None or tr.next_state is None:
                raise ValueError(
                    f"{self.name!r} mixes on the global state: pass Transition.state / "
                    "next_state (agents.train does for needs_state agents)"
                )
            states = (tr.state, tr.next_state)
        step: dict[str, torch.Tensor] = {
            "reward": tr.rewards[self.agent_ids[0]].float(),
            "terminal": tr.terminated, "end": tr.ended, "valid": tr.valid,
            "slate": torch.stack([tr.actions[a] for a in self.agent_ids], dim=1),
        }  # fmt: skip
        if self.slateq:
            step["click"] = torch.stack([tr.clicked_slot[a] for a in self.agent_ids], dim=1)
        for k in OBS_KEYS:
            step[k] = torch.stack([tr.obs[a][k] for a in self.agent_ids], dim=1)
            step["next_" + k] = torch.stack([tr.next_obs[a][k] for a in self.agent_ids], dim=1)
        if states is not None:
            step["state"], step["next_state"] = states
        out = self.accumulator.push(step)
        if out is not None:
            self.buffer.add(*out)
        self.env_steps += tr.valid.shape[0]

        # One gradient step per `update_every` env transitions once `learning_starts` are in.
        cfg = self.config
        started = self.env_steps - cfg.learning_starts
        owed = max(0, started // cfg.update_every + 1 - self.updates) if started >= 0 else 0
        for _ in range(owed):
            if len(self.buffer) >= cfg.batch_size:  # else skipped: too few rows yet
                self._update()
            self.updates += 1  # skipped ones too: the schedule must not owe them later
        metrics = self.update_metrics.report(cfg.metrics_every)
        if metrics:
            metrics["charts/epsilon"] = self.exploration()
        return metrics

    def _update(self) -> None:
        cfg = self.config
        b = self.buffer.sample(cfg.batch_size, self.generator)
        agents = range(len(self.agent_ids))
        nxt = {k: b["next_" + k] for k in OBS_KEYS}
        stats: dict[str, torch.Tensor] = {}
        if self.slateq:
            q_tot, target, stats["losses/choice_nll"], aux = self._slateq_terms(b, nxt, agents)
            if aux is not None:
                stats["losses/teammate_value"] = aux
        else:
            q_tot = self.mixer(
                self.slate_utility(*self.item_values(b, agents), b["slate"]), b.get("state")
            )
            with torch.no_grad():
                q_t, v_t = self.item_values(nxt, agents, target=True)
                pick = self.item_values(nxt, agents)[0] if cfg.double_q else q_t
                slates = self.greedy_slates(pick, nxt["action_mask"])
                v_next = self.mixer_target(
                    self.slate_utility(q_t, v_t, slates), b.get("next_state")
                )
                target = b["reward"] + b["discount"] * v_next
        td = F.smooth_l1_loss(q_tot, target)

        self.optimizer.zero_grad(set_to_none=True)
        (
            td + stats.get("losses/choice_nll", 0.0) + stats.get("losses/teammate_value", 0.0)
        ).backward()
        nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            for online, tgt in (
                (self.utilities, self.utilities_target),
                (self.mixer, self.mixer_target),
            ):
                for p, pt in zip(online.parameters(), tgt.parameters(), strict=True):
                    pt.lerp_(p, cfg.target_tau)
        stats.update(
            {"losses/td": td, "charts/q_tot": q_tot.mean(), "charts/target": target.mean()}
        )
        self.update_metrics.add(stats)

    def _slateq_terms(self, b, nxt, agents):
        """SlateQ utilities under the mixer (module docstring): the mixed observed outcomes'
        ``Q̄`` ``[B]``, their TD target ``[B]``, the choice models' mean NLL of the clicked
        slot (``K`` = no click) and, with ``teammate_value``, the squared error of the
        teammates' gain ``g`` on the rows where the agent's items were passed over (else
        ``None``)."""
        cfg, K = self.config, self.slate_size
        slate, click = b["slate"], b["click"]  # [B, n, K], [B, n] (-1: no click)
        pairs, ctx = self.features(b, agents)
        q, v = self.heads(self.utilities, pairs, ctx, agents)
        clicked = slate.gather(-1, click.clamp(min=0)[..., None])  # candidate index [B, n, 1]
        q_obs = torch.where(click >= 0, q.gather(-1, clicked).squeeze(-1), v)
        q_tot = self.mixer(q_obs, b.get("state"))

        logits, no_click = self.heads(self.choices, pairs, ctx, agents)

        def log_probs(choice, lg, nc, sl):
            return choice.slate_log_probs(lg.gather(1, sl), nc)

        log_p = self.per_choice(log_probs, agents, logits, no_click, slate)  # [B, n, K + 1]
        nll = F.nll_loss(log_p.flatten(0, 1), torch.where(click >= 0, click, K).flatten())

        aux = None
        if cfg.teammate_value:
            # Each agent's gain over its own no-click value at the observed outcome (0 unless
            # clicked); the teammates' is the total less the agent's own.
            gain = torch.where(click >= 0, q_obs - v, torch.zeros_like(v)).detach()
            mine = click < 0  # rows where this agent's items were passed over
            err = (self.teammate_gain(ctx, agents) - (gain.sum(1, keepdim=True) - gain)) ** 2
            aux = (err * mine).sum() / mine.sum().clamp(min=1)

        with torch.no_grad():
            n_pairs, n_ctx = self.features(nxt, agents)
            n_logits, n_no_click = self.heads(self.choices, n_pairs, n_ctx, agents)
            q_t, v_t = self.heads(self.utilities_target, n_pairs, n_ctx, agents)
            q_s, v_s = (
                self.heads(self.utilities, n_pairs, n_ctx, agents) if cfg.double_q else (q_t, v_t)
            )
            mask, null = nxt["action_mask"], self.null_values(v_s, n_ctx, agents)
            slates = self.slateq_slates(q_s, null, n_logits, n_no_click, mask, agents)
            values = self.per_choice(
                slate_value, agents, n_logits, n_no_click, q_t, v_t, slates
            )  # [B, n]
            v_next = self.mixer_target(values, b.get("next_state"))
            target = b["reward"] + b["discount"] * v_next
        return q_tot, target, nll, aux

    # State -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            **super().state_dict(),
            "utilities": self.utilities.state_dict(),
            "utilities_target": self.utilities_target.state_dict(),
            "mixer": self.mixer.state_dict(),
            "mixer_target": self.mixer_target.state_dict(),
            **({"choices": self.choices.state_dict()} if self.slateq else {}),
            **({"teammates": self.teammates.state_dict()} if self.config.teammate_value else {}),
            "optimizer": self.optimizer.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            # Metrics of the updates since the last report: a resumed run reports as the
            # uninterrupted one would.
            **self.update_metrics.state_dict(),
        }
        if self.config.save_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def state_layout(self, state: dict[str, Any]) -> dict[str, Any]:
        state = super().state_layout(state)
        if "buffer" in state:  # rows as many as this agent has seen: ReplayBuffer.layout
            state = {**state, "buffer": ReplayBuffer.layout(state["buffer"])}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        nets = ("utilities", "utilities_target", "mixer", "mixer_target")
        heads = [*(["choices"] if self.slateq else []), *(["teammates"] if self.teammates else [])]
        for key in (*nets, *heads, "optimizer"):
            getattr(self, key).load_state_dict(state[key])
        self.env_steps, self.updates = counter(state, "env_steps"), counter(state, "updates")
        self.update_metrics.load_state_dict(state)
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        self.accumulator.reset()


@register
class VDNAgent(ValueDecompositionAgent):
    """Value decomposition by summing the agents' slate utilities."""

    name: ClassVar[str] = "vdn"
    registrable: ClassVar[bool] = True
    teammate_value_supported: ClassVar[bool] = True

    def build_mixer(self, num_agents: int, state_dim: int, cfg: QMIXConfig) -> nn.Module:
        return SumMixer()


@register
class QMIXAgent(ValueDecompositionAgent):
    """Value decomposition by a monotonic mixer conditioned on the global state."""

    name: ClassVar[str] = "qmix"
    registrable: ClassVar[bool] = True
    needs_state: ClassVar[bool] = True

    def build_mixer(self, num_agents: int, state_dim: int, cfg: QMIXConfig) -> nn.Module:
        return MonotonicMixer(num_agents, state_dim, cfg.mixer_embed, cfg.hypernet_hidden)
