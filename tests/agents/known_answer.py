"""A tiny market with analytically known Q-values, for testing value learning.

One agent, one user with two states ``s ∈ {0, 1}``, four items, slates of two. The user's
state is visible (one-hot in the first two interest columns of ``user``); each item is visible
by identity (one-hot topics). The user clicks a shown item ``i`` with the conditional-logit
probability ``exp(u[s, i]) / (1 + Σ_{j∈slate} exp(u[s, j]))`` (no-click utility 0, no position
effect); a click on ``i`` pays ``r[s, i]`` and moves the user to ``f[s, i]``, no click pays 0 and
moves to ``g[s]``. Episodes are truncated after ``horizon`` requests (time is not observed, so
the values are the discounted infinite-horizon ones) and the env follows ``recenv``'s batched
API, including Gymnasium NEXT_STEP auto-reset.

:func:`optimal_values` solves the Bellman optimality equations of the SlateQ decomposition
exactly (value iteration over all slates)::

    Q̄(s, i) = r[s, i] + γ V(f[s, i]),   Q̄(s, ⊥) = γ V(g[s]),
    V(s) = max_A Σ_{i∈A} P(i | s, A) Q̄(s, i) + P(⊥ | s, A) Q̄(s, ⊥).
"""

from __future__ import annotations

import itertools
import math

import torch

from recenv.core.config import MarketConfig

UTILITY = torch.tensor([[1.0, 0.0, -0.5, 0.5], [-0.5, 1.0, 0.5, -0.5]])
REWARD = torch.tensor([[1.0, 2.0, 0.5, 0.0], [0.5, 0.0, 2.0, 1.0]])
NEXT_ON_CLICK = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0]])
NEXT_ON_NO_CLICK = torch.tensor([0, 0])
NUM_ITEMS, SLATE = 4, 2


class TwoStateMarket:
    """The known-answer market, batched: ``num_envs`` copies stepped as tensors."""

    def __init__(self, num_envs: int, seed: int = 0, horizon: int = 20, device: str = "cpu"):
        self.num_envs = N = num_envs
        self.device = torch.device(device)
        self.config = MarketConfig(
            num_agents=1,
            num_topics=4,
            num_candidates=NUM_ITEMS,
            slate_size=SLATE,
            num_users=1,
            horizon=horizon,
        )
        self.agents = ["agent_0"]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.s = torch.zeros(N, dtype=torch.int64, device=self.device)
        self.t = torch.zeros(N, dtype=torch.int64, device=self.device)
        self.needs_reset = torch.zeros(N, dtype=torch.bool, device=self.device)
        self.ret = torch.zeros(N, device=self.device)
        self._obs = None

    def _initial(self, n: int) -> torch.Tensor:
        return torch.randint(2, (n,), generator=self.generator, device=self.device)

    def reset(self, seed: int | None = None):
        if seed is not None:
            self.generator.manual_seed(seed)
        self.s = self._initial(self.num_envs)
        self.t.zero_()
        self.ret.zero_()
        self.needs_reset.zero_()
        return self.observe()

    def observe(self):
        N, cfg = self.num_envs, self.config
        user = torch.zeros(N, cfg.user_dim, device=self.device)
        user[torch.arange(N), self.s] = 1.0
        cands = torch.zeros(N, NUM_ITEMS, cfg.candidate_dim, device=self.device)
        cands[:, :, :NUM_ITEMS] = torch.eye(NUM_ITEMS, device=self.device)
        self._obs = {
            "agent_0": {
                "user": user,
                "history": torch.zeros(N, cfg.history_dim, device=self.device),
                "candidates": cands,
                "action_mask": torch.ones(N, NUM_ITEMS, dtype=torch.bool, device=self.device),
                "user_id": torch.zeros(N, dtype=torch.int64, device=self.device),
                "candidate_ids": torch.arange(NUM_ITEMS, device=self.device).expand(N, -1),
            }
        }
        return self._obs

    def step(self, actions):
        slate = actions["agent_0"].long()  # items are candidates: index = item id
        N, dev = self.num_envs, self.device
        resetting = self.needs_reset
        u = UTILITY.to(dev)[self.s[:, None], slate]  # [N, K]
        logits = torch.cat([u, torch.zeros(N, 1, device=dev)], dim=1)
        choice = torch.multinomial(torch.softmax(logits, 1), 1, generator=self.generator)[:, 0]
        clicked = (choice < SLATE) & ~resetting
        item = slate.gather(1, choice.clamp(max=SLATE - 1)[:, None])[:, 0]
        reward = torch.where(clicked, REWARD.to(dev)[self.s, item], 0.0)
        nxt = torch.where(
            clicked, NEXT_ON_CLICK.to(dev)[self.s, item], NEXT_ON_NO_CLICK.to(dev)[self.s]
        )
        self.s = torch.where(resetting, self._initial(N), nxt)
        self.t = torch.where(resetting, 0, self.t + 1)
        self.ret = torch.where(resetting, 0.0, self.ret + reward)
        truncated = ~resetting & (self.t >= self.config.horizon)
        terminated = torch.zeros_like(truncated)
        self.needs_reset = truncated
        info = {
            "chosen_agent": torch.where(clicked, 0, -1),
            "chosen_slot": torch.where(clicked, choice, -1),
            "engagement": reward,
            "reset": resetting,
        }
        if bool(truncated.any()):
            info["episode"] = {"return": self.ret[:, None].clone(), "length": self.t.float()}
            info["_episode"] = truncated.clone()
        return self.observe(), {"agent_0": reward}, terminated, truncated, info


def click_probs(s: int, slate: tuple[int, ...]) -> list[float]:
    """P(click slot k | s, slate) for each slot, then P(no click)."""
    w = [math.exp(float(UTILITY[s, i])) for i in slate]
    z = 1.0 + sum(w)
    return [x / z for x in w] + [1.0 / z]


def optimal_values(gamma: float, iters: int = 500):
    """``(Q̄ [2, 4], Q̄⊥ [2], V [2], best slate per state)`` by value iteration."""
    slates = list(itertools.combinations(range(NUM_ITEMS), SLATE))
    V = [0.0, 0.0]
    for _ in range(iters):
        q = [[float(REWARD[s, i]) + gamma * V[int(NEXT_ON_CLICK[s, i])] for i in range(4)]
             for s in range(2)]  # fmt: skip
        q0 = [gamma * V[int(NEXT_ON_NO_CLICK[s])] for s in range(2)]
        best = []
        for s in range(2):
            values = []
            for sl in slates:
                p = click_probs(s, sl)
                values.append(sum(p[k] * q[s][i] for k, i in enumerate(sl)) + p[-1] * q0[s])
            j = max(range(len(slates)), key=values.__getitem__)
            best.append(slates[j])
            V[s] = values[j]
    return torch.tensor(q), torch.tensor(q0), torch.tensor(V), best


def heuristic_slate(s: int, q: torch.Tensor, q0: torch.Tensor) -> tuple[int, ...]:
    """SlateQ's top-K slate (rank by exp(u) · (Q̄ − Q̄⊥)) under the true model."""
    score = [math.exp(float(UTILITY[s, i])) * float(q[s, i] - q0[s]) for i in range(4)]
    order = sorted(range(4), key=lambda i: -score[i])
    return tuple(sorted(order[:SLATE]))
