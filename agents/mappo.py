"""MAPPO, and IPPO as its ablation: PPO over slates with a centralized or a local critic.

Centralized training, decentralized execution (Yu et al., 2022, "The Surprising Effectiveness
of PPO in Cooperative Multi-Agent Games"; IPPO: de Witt et al., 2020). One file, two names:

- ``mappo``: the critic reads the environment's global ``state()`` (the current user's latent
  interests, boredom, taste, satisfaction and loyalty; every agent's candidates with their true
  utility; market aggregates) plus a one-hot agent id: ``V(state, a)``.
- ``ippo``: the same agent with the critic limited to the agent's own observation, pooled
  over its candidates: ``V(o_a, a)``. Everything else is identical, so the difference between
  the two is what the centralized critic buys.

The actors are decentralized in both: agent ``a`` acts on its own observation ``o_a`` only.

**Slate policy (Plackett-Luce).** The actor scores every candidate from its pair features
(user, own history, candidate, their crosses; :func:`agents.features.pair_features`), plus a
one-hot agent id when the actor is shared (``shared_actor=True``): logits ``s [N, C]``, masked
candidates at ``-1e9``. A slate is sampled autoregressively without replacement — slot 1 from
``softmax(s)``, then that candidate is removed, slot 2 from the rest, … — which is exactly
Gumbel-top-K (``top-K of s + Gumbel noise``), one vectorised draw. Its log-probability is exact
for the ordered slate::

    log π(A | o) = Σ_k [ s_{A_k} − logsumexp_{j ∉ A_<k, unmasked} s_j ]

and the entropy is estimated per step along the slate (``Σ_k H(softmax over the remaining
candidates)``, an unbiased estimate of the slate entropy). Evaluation (``explore=False``)
takes the top-K logits. Masked candidates are never drawn: they sit 1e9 below every logit.

**Critic and returns.** One critic network, shared by the controlled agents through the
agent one-hot, predicts each agent's own return (its own reward: engagement in competitive
markets, the team total in cooperative ones). Values are normalised by running return
statistics (PopArt-lite, as MAPPO's ``ValueNorm``): the critic regresses normalised targets
and GAE(γ, λ) uses de-normalised values.

**On-policy storage and GAE.** ``learn`` stores each step of the ``N`` markets (on the env's
device) until ``rollout_steps`` steps are in, then updates (``epochs`` passes of
``minibatches`` minibatches of the clipped objective) and starts a new rollout. Per step ``t``::

    δ_t = r_t + γ · (1 − terminated_t) · V(next_obs_t) − V(obs_t)
    Â_t = δ_t + γλ · (1 − ended_t) · valid_{t+1} · Â_{t+1}

``V(next_obs_t)`` is evaluated on the step's *own* next observation, so a truncated episode
bootstraps from its final observation, a terminated one does not, and the last step of a
rollout bootstraps without needing the next rollout. Auto-reset rows (``valid == False``) get
no advantage, no loss, and cut the recursion, so no value leaks across episodes; an env reset
between calls (``begin_episode(None)``) ends the last stored step the same way. Old
log-probabilities are recomputed at the start of the update: the policy has not changed since
the rollout's slates were drawn.

Checkpoints hold networks, optimiser, value statistics and counters; a partial rollout is not
saved (a loaded agent starts a new one). Metrics: ``losses/policy``, ``losses/value``,
``losses/entropy``, ``charts/approx_kl``, ``charts/clipfrac``, ``charts/explained_variance``,
``charts/value``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from agents.base import Agent, AgentConfig, Metrics, Obs, Transition, option, slate_from_scores
from agents.buffers import allocate
from agents.features import ObsLayout, pair_features
from agents.nets import mlp, one_hot_agent, seeded_init
from agents.registry import register
from agents.state_checks import counter, nonnegative

_MASKED = -1.0e9  # logit of a masked candidate: exp() underflows to 0, and 0 · logit stays 0


@dataclass(frozen=True)
class MAPPOConfig(AgentConfig):
    # networks
    shared_actor: bool = option(
        True, "one actor for all controlled agents (agent one-hot input) instead of one each"
    )
    actor_hidden: tuple = option(
        (128, 128), "hidden sizes of the candidate-scoring actor", within=(1, math.inf), each=int
    )
    critic_hidden: tuple = option(
        (128, 128), "hidden sizes of the critic", within=(1, math.inf), each=int
    )
    # returns
    gamma: float = option(0.95, "discount per request")
    gae_lambda: float = option(0.95, "GAE λ")
    value_norm: bool = option(True, "regress values normalised by running return statistics")
    # PPO
    rollout_steps: int = option(32, "batched env steps per rollout (each is num_envs rows)")
    epochs: int = option(4, "passes over a rollout per update")
    minibatches: int = option(4, "minibatches per pass")
    lr: float = option(
        5e-4,
        "Adam learning rate (actor and critic)",
        within=(0.0, math.inf),
        open_ends=(True, True),
    )
    clip: float = option(0.2, "PPO ratio clip ε", within=(0.0, math.inf))
    value_clip: float = option(
        0.2, "clip of the normalised value change (0: unclipped)", within=(0.0, math.inf)
    )
    # Finite and >= 0: a negative bonus rewards collapsing the policy, an infinite one (or
    # an infinite value loss weight) makes the loss inf and the run "diverge" at once.
    ent_coef: float = option(
        0.01, "entropy bonus coefficient", within=(0.0, math.inf), open_ends=(False, True)
    )
    vf_coef: float = option(
        0.5, "value loss coefficient", within=(0.0, math.inf), open_ends=(False, True)
    )
    max_grad_norm: float = option(
        0.5,
        "gradient-norm clip, actor and critic separately (inf: none)",
        within=(0.0, math.inf),
        open_ends=(True, False),
    )
    norm_adv: bool = option(True, "normalise advantages per minibatch")


# ----------------------------------------------------------------------------------------
# Pieces: value normalisation and the Plackett-Luce slate distribution
# ----------------------------------------------------------------------------------------
class ValueNorm(nn.Module):
    """Running mean and variance of returns, one pair per controlled agent (exact, count-based
    merging of batch moments)."""

    # Buffers (register_buffer), declared for type checkers.
    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, num: int, eps: float = 1e-5):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num, dtype=torch.float32))
        self.register_buffer("var", torch.ones(num, dtype=torch.float32))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float32))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """``x [B, num]``: a batch of returns."""
        b_mean, b_var, b = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        total = self.count + b
        delta = b_mean - self.mean
        self.mean += delta * b / total
        self.var = (self.var * self.count + b_var * b + delta**2 * self.count * b / total) / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.var.clamp(min=1e-8).sqrt()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.var.clamp(min=1e-8).sqrt() + self.mean


def sample_slate(
    logits: torch.Tensor, mask: torch.Tensor, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """A Plackett-Luce slate ``[N, k]``: ``k`` candidates drawn one after another without
    replacement from ``softmax(logits)`` over the unmasked ones (Gumbel-top-k)."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float32, device=logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1.0 - 1e-7)))
    return slate_from_scores(logits.detach() + gumbel, mask, k)


def slate_log_prob(
    logits: torch.Tensor, mask: torch.Tensor, slate: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``log π(slate)`` of the ordered slate ``[B, K]`` under Plackett-Luce over masked
    ``logits [B, C]``, and the per-step entropy estimate ``Σ_k H(slot k | slots < k)``."""
    s = logits.masked_fill(~mask, _MASKED)
    taken = torch.zeros_like(mask)
    log_p = torch.zeros(s.shape[0], device=s.device, dtype=s.dtype)
    entropy = torch.zeros_like(log_p)
    for j in range(slate.shape[1]):
        step = torch.log_softmax(s.masked_fill(taken, _MASKED), dim=1)
        log_p = log_p + step.gather(1, slate[:, j : j + 1]).squeeze(1)
        entropy = entropy - (step.exp() * step).sum(1)
        taken = taken.scatter(1, slate[:, j : j + 1], True)
    return log_p, entropy


# ----------------------------------------------------------------------------------------
# The agent
# ----------------------------------------------------------------------------------------
@register
class MAPPOAgent(Agent):
    """PPO actors on local observations, critic on the global state (module docstring)."""

    name: ClassVar[str] = "mappo"
    Config: ClassVar[type[AgentConfig]] = MAPPOConfig
    config: MAPPOConfig
    registrable: ClassVar[bool] = True
    learns: ClassVar[bool] = True
    needs_state: ClassVar[bool] = True
    centralized_critic: ClassVar[bool] = True  # False: IPPO's local critic

    def __init__(self, env: Any, config: MAPPOConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        small = {k: getattr(cfg, k) for k in ("rollout_steps", "epochs", "minibatches")}
        if min(small.values()) < 1:
            raise ValueError(f"{self.name}: {small} must all be >= 1")
        if not (0.0 <= cfg.gamma <= 1.0 and 0.0 <= cfg.gae_lambda <= 1.0):
            raise ValueError(
                f"{self.name}: gamma={cfg.gamma} and gae_lambda={cfg.gae_lambda} must be in [0, 1]"
            )
        e = self.env_config
        self.layout = ObsLayout(e.num_topics)
        A = len(self.agent_ids)
        self.pair_dim = self.layout.pair_dim(e.user_dim, e.history_dim, e.candidate_dim)
        self.actor_ids = A if cfg.shared_actor else 0  # one-hot width in the actor's input
        critic_in = e.state_dim if self.centralized_critic else 2 * self.pair_dim
        with seeded_init(cfg.seed):
            self.actors = nn.ModuleList(
                mlp(self.pair_dim + self.actor_ids, cfg.actor_hidden, 1)
                for _ in range(1 if cfg.shared_actor else A)
            ).to(self.device)
            self.critic = mlp(critic_in + A, cfg.critic_hidden, 1).to(self.device)
            self.value_stats = ValueNorm(A).to(self.device)
        self.optimizer = torch.optim.Adam(
            [*self.actors.parameters(), *self.critic.parameters()], lr=cfg.lr, eps=1e-5
        )
        self.rollout: dict[str, torch.Tensor] = {}
        self.pos = 0
        self.env_steps = 0  # transitions seen per agent (markets x steps)
        self.updates = 0

    # Inputs ----------------------------------------------------------------------------------
    def logits(self, i: int, obs_a: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Candidate logits ``[B, C]`` of controlled agent ``i`` (unmasked)."""
        pairs = pair_features(self.layout, obs_a)
        if self.actor_ids:
            pairs = torch.cat([pairs, one_hot_agent(i, self.actor_ids, pairs)], dim=-1)
        actor = self.actors[0 if self.config.shared_actor else i]
        return actor(pairs).squeeze(-1)

    def critic_inputs(self, obs: Obs, state: torch.Tensor | None) -> torch.Tensor:
        """What reaches the critic (before the agent one-hot): MAPPO: ``state()``, the same
        for every agent, ``[N, 1, S]``; IPPO: each controlled agent's own pair features, mean-
        and max-pooled over its unmasked candidates, ``[N, A, 2F]``."""
        if self.centralized_critic:
            if state is None:
                raise ValueError(
                    f"{self.name!r} has a centralized critic and needs the global state: pass "
                    "Transition.state / next_state (agents.train does for needs_state agents)"
                )
            return state.float()[:, None, :]
        pooled = []
        for a in self.agent_ids:
            pairs = pair_features(self.layout, obs[a])
            m = obs[a]["action_mask"][..., None]
            mean = (pairs * m).sum(1) / m.sum(1).clamp(min=1)
            top = pairs.masked_fill(~m, _MASKED).amax(1)
            pooled.append(torch.cat([mean, top], dim=-1))
        return torch.stack(pooled, dim=1)

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised values ``[..., A]`` from critic inputs ``[..., A or 1, D]``."""
        A = len(self.agent_ids)
        x = x.expand(*x.shape[:-2], A, x.shape[-1])
        ids = one_hot_agent(torch.arange(A, device=x.device), A, x[..., :1])
        return self.critic(torch.cat([x, ids], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def value(self, obs: Obs, state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{a: [N]}`` the critic's (de-normalised) value of each controlled agent."""
        v = self._values(self.critic_inputs(obs, state))
        return {a: v[:, i] for i, a in enumerate(self.agent_ids)}

    def _values(self, x: torch.Tensor) -> torch.Tensor:
        v = self._critic(x)
        return self.value_stats.denormalize(v) if self.config.value_norm else v

    # Acting ----------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Obs, explore: bool = False) -> dict[str, torch.Tensor]:
        out = {}
        for i, a in enumerate(self.agent_ids):
            logits, mask = self.logits(i, obs[a]), obs[a]["action_mask"]
            if explore:
                out[a] = sample_slate(logits, mask, self.slate_size, self.generator)
            else:
                out[a] = slate_from_scores(logits, mask, self.slate_size)
        return out

    # Learning --------------------------------------------------------------------------------
    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        """``mask=None``: every market restarts (``env.reset()`` between ``train`` calls, an
        ``evaluate``, a new PettingZoo episode), so the stored steps' last is no longer
        followed by its successor: mark it ended, or GAE would chain the new episodes' first
        steps onto it. Its ``V(next_obs)`` bootstrap stays, as for a truncation. A ``mask``
        needs nothing: those markets' next step is an auto-reset row, which cuts the
        recursion already."""
        if mask is None and self.pos > 0:
            self.rollout["ended"][self.pos - 1] = True

    def learn(self, transition: Transition) -> Metrics:
        tr, L = transition, self.config.rollout_steps
        step = {
            "x": self.critic_inputs(tr.obs, tr.state),
            "next_x": self.critic_inputs(tr.next_obs, tr.next_state),
            "reward": torch.stack([tr.rewards[a].float() for a in self.agent_ids], dim=1),
            "terminated": tr.terminated, "ended": tr.ended, "valid": tr.valid,
        }  # fmt: skip
        for a in self.agent_ids:
            o = tr.obs[a]
            step.update({f"{a}/user": o["user"], f"{a}/history": o["history"],
                         f"{a}/candidates": o["candidates"], f"{a}/action_mask": o["action_mask"],
                         f"{a}/slate": tr.actions[a]})  # fmt: skip
        N = tr.valid.shape[0]
        if not self.rollout or next(iter(self.rollout.values())).shape[1] != N:
            what = f"agent {self.name!r}: rollout_steps={L} at {N} markets"
            self.rollout = allocate(L, step, self.device, what)
            self.pos = 0
        for k, v in step.items():
            self.rollout[k][self.pos] = v
        self.pos += 1
        self.env_steps += N
        if self.pos < L:
            return {}
        self.pos = 0
        return self._update()

    def _update(self) -> Metrics:
        cfg, ro = self.config, self.rollout
        # Flatten time and markets; only real (non auto-reset) rows take part.
        flat = {k: v.flatten(0, 1) for k, v in ro.items()}
        with torch.no_grad():
            raw = self._critic(ro["x"])  # [L, N, A] the critic's own (normalised) output
            values = self.value_stats.denormalize(raw) if cfg.value_norm else raw
            next_values = self._values(ro["next_x"])
            advantages = self._gae(ro, values, next_values)
            returns = advantages + values
            rows = flat["valid"].nonzero().squeeze(1)
            if rows.numel() == 0:
                return {}
            returns = returns.flatten(0, 1)[rows]
            old_values = values.flatten(0, 1)[rows]
            # The value clip's centre: what the critic output at rollout time, in its own
            # (normalised) space. Re-normalising old_values with the statistics updated below
            # would move it away from the critic's output before the critic has moved.
            old_norm = raw.flatten(0, 1)[rows]
            if cfg.value_norm:
                self.value_stats.update(returns)
            batch = {k: v.index_select(0, rows) for k, v in flat.items()}
            batch["advantage"] = advantages.flatten(0, 1)[rows]
            batch["old_log_p"], _ = self._log_probs(batch)
        target = self.value_stats.normalize(returns) if cfg.value_norm else returns

        B = rows.numel()
        size = max(1, -(-B // cfg.minibatches))
        sums: dict[str, float] = {}
        count = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(B, generator=self.generator, device=self.device)
            for start in range(0, B, size):
                idx = perm[start : start + size]
                mb = {k: v[idx] for k, v in batch.items()}
                log_p, entropy = self._log_probs(mb)
                ratio = (log_p - mb["old_log_p"]).exp()
                pg = self._policy_loss(ratio, mb["advantage"])

                v = self._critic(mb["x"])
                v_loss = 0.5 * self._value_loss(v, old_norm[idx], target[idx]).mean()
                ent = entropy.mean()
                loss = self._loss(pg, v_loss, ent)

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.actors.parameters(), cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

                with torch.no_grad():
                    log_ratio = log_p - mb["old_log_p"]
                    for k, x in (
                        ("losses/policy", pg),
                        ("losses/value", v_loss),
                        ("losses/entropy", ent),
                        ("charts/approx_kl", ((ratio - 1) - log_ratio).mean()),
                        ("charts/clipfrac", ((ratio - 1).abs() > cfg.clip).float().mean()),
                    ):
                        sums[k] = sums.get(k, 0.0) + float(x)
                count += 1
        self.updates += 1
        metrics = {k: v / count for k, v in sums.items()}
        var_y = returns.var()
        metrics["charts/explained_variance"] = float(
            1 - (returns - old_values).var() / var_y if var_y > 0 else 0.0
        )
        metrics["charts/value"] = float(old_values.mean())
        return metrics

    def _loss(self, pg: torch.Tensor, v_loss: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        """What a minibatch step minimises: the clipped surrogate ``pg``, plus ``vf_coef`` x
        the value loss, *minus* ``ent_coef`` x the entropy estimate (a bonus: a flatter
        policy lowers the loss)."""
        cfg = self.config
        return pg + cfg.vf_coef * v_loss - cfg.ent_coef * ent

    def _policy_loss(self, ratio: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """PPO's clipped surrogate, a scalar: ``-mean(min(r a, clip(r, 1 - ε, 1 + ε) a))``
        over the minibatch's probability ratios ``r`` and advantages ``a`` (``[B, A]``
        each), the advantages first standardised over the minibatch (``norm_adv``)."""
        cfg = self.config
        if cfg.norm_adv and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()

    def _value_loss(self, v: torch.Tensor, old: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error ``[B, A]`` of the critic's normalised values ``v`` to ``target``; with
        ``value_clip > 0`` the larger of it and the error of ``v`` clipped to ``old ±
        value_clip`` (``old``: the critic's output at rollout time, so the window is centred
        on where the critic started)."""
        clip = self.config.value_clip
        loss = (v - target) ** 2
        if clip > 0:
            v_clip = old + (v - old).clamp(-clip, clip)
            loss = torch.max(loss, (v_clip - target) ** 2)
        return loss

    def _gae(
        self, ro: Mapping[str, torch.Tensor], values: torch.Tensor, next_values: torch.Tensor
    ) -> torch.Tensor:
        """GAE ``[L, N, A]`` with valid masks and per-step bootstrapping (module docstring)."""
        cfg = self.config
        L = values.shape[0]
        valid = ro["valid"].float()[..., None]
        alive = (~ro["terminated"]).float()[..., None]
        delta = (ro["reward"] + cfg.gamma * alive * next_values - values) * valid
        cont = (~ro["ended"]).float()[..., None]
        adv = torch.zeros_like(values)
        running = torch.zeros_like(values[0])
        for t in reversed(range(L)):
            nxt = valid[t + 1] if t + 1 < L else torch.zeros_like(valid[t])
            running = delta[t] + cfg.gamma * cfg.gae_lambda * cont[t] * nxt * running
            adv[t] = running * valid[t]
        return adv

    def _log_probs(self, mb: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``log π(slate)`` and its entropy estimate, ``[B, A]`` each."""
        log_ps, ents = [], []
        for i, a in enumerate(self.agent_ids):
            obs_a = {k: mb[f"{a}/{k}"] for k in ("user", "history", "candidates", "action_mask")}
            lp, ent = slate_log_prob(self.logits(i, obs_a), obs_a["action_mask"], mb[f"{a}/slate"])
            log_ps.append(lp)
            ents.append(ent)
        return torch.stack(log_ps, 1), torch.stack(ents, 1)

    # State -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "actors": self.actors.state_dict(),
            "critic": self.critic.state_dict(),
            "value_stats": self.value_stats.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        nonnegative(state["value_stats"], ("var", "count"), f"agent {self.name!r}: value_stats")
        super().load_state_dict(state)
        self.actors.load_state_dict(state["actors"])
        self.critic.load_state_dict(state["critic"])
        self.value_stats.load_state_dict(state["value_stats"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps, self.updates = counter(state, "env_steps"), counter(state, "updates")
        self.rollout, self.pos = {}, 0


@register
class IPPOAgent(MAPPOAgent):
    """MAPPO with the critic limited to the agent's own observation (the ablation)."""

    name: ClassVar[str] = "ippo"
    needs_state: ClassVar[bool] = False
    centralized_critic: ClassVar[bool] = False
