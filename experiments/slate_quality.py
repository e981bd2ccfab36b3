"""How good are a trained IQL's slates, one request at a time, by the simulator's own model?

The question behind it: IQL's return sits near the utility oracle's and well below the value
oracle's. Is the gap the slate *selection rule* (top-K ranking vs SlateQ's greedy slate), or
what the agent *knows* (its learned choice model and values, from noisy observations)?

For each request of an evaluation rollout (the IQL agent acting greedily in fresh markets),
every env agent's candidates are scored with the true utilities and click values
(privileged: :meth:`BatchedMarket.oracle_view`) and each rule's slate is valued by the
**one-step expected value in isolation**: ``Σ w_k v_k / (exp(no_click / T) + Σ w_k)`` with
``w_k = exp(u_k / T)`` and ``v_k`` the expected value of a click
(:func:`~recenv.core.response.expected_click_value`). Position costs and the other agents'
items on the page are left out, the same for every rule, so the figures compare *choices of
items*, not returns. Rules:

- ``iql_greedy`` / ``iql_top_k``: IQL's two selection rules on its own learned model;
- ``utility_oracle``: the top K by true utility (the ``oracle`` agent's rule);
- ``value_oracle``: the greedy rule on the true model (the ``value_oracle`` agent's rule,
  without position costs, as valued here);
- ``random``: K uniformly random unmasked candidates.

And how well the learned model tracks the truth, per request over unmasked candidates
(Pearson, averaged): ``corr_logit_utility`` (choice logit vs true utility) and
``corr_gain_value`` (``Q̄(s, i) − Q̄(s, ⊥)`` vs the true click value). Beside them,
``corr_supervised_utility`` (:func:`readable_utility`): the same correlation for a network of
IQL's shape fitted by regression on the true utilities themselves (privileged labels) from
the same observation features, on held-out markets: roughly how much of the utility the
observations let any learner read, against which the choice model's figure is judged.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

import agents
import recenv
from agents.base import slate_from_scores
from agents.iql import ChoiceModel, greedy_slate, slate_value, topk_rank
from agents.nets import CandidateScorer, seeded_init
from recenv.core.response import expected_click_value

RULES = ("iql_greedy", "iql_top_k", "utility_oracle", "value_oracle", "random")
CORRELATIONS = ("corr_logit_utility", "corr_gain_value", "corr_supervised_utility")


def one_step_value(u: torch.Tensor, v: torch.Tensor, slate: torch.Tensor, cfg: Any) -> torch.Tensor:
    """Expected click value of ``slate [N, K]`` alone on the page, ``[N]`` (``u``, ``v``:
    ``[N, C]`` true utilities and click values): IQL's :func:`~agents.iql.slate_value` with the
    true conditional logit (no slot biases) and no value for no click."""
    zeros = torch.zeros_like(u[:, 0])
    return slate_value(
        _truth_choice(slate.shape[1]),
        u / cfg.temperature,
        zeros + cfg.no_click_utility / cfg.temperature,
        v,
        zeros,
        slate,
    )


@functools.lru_cache(maxsize=8)
def _truth_choice(k: int) -> ChoiceModel:
    """A choice model whose slot biases are zero: the true logit without position costs."""
    return ChoiceModel(1, 1, (1,), k).requires_grad_(False)


def _row_corr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``x`` and ``y`` over each row's ``mask`` ``[N]`` (NaN where a
    row has fewer than three entries or no spread)."""
    n = mask.sum(1).clamp(min=1)
    xm = ((x * mask).sum(1) / n)[:, None]
    ym = ((y * mask).sum(1) / n)[:, None]
    dx, dy = (x - xm) * mask, (y - ym) * mask
    r = (dx * dy).sum(1) / ((dx * dx).sum(1) * (dy * dy).sum(1)).sqrt()
    return torch.where(mask.sum(1) >= 3, r, torch.nan)


@torch.no_grad()
def measure(agent: Any, env: Any, steps: int, seed: int) -> dict[str, float]:
    """Roll ``agent`` (an ``iql`` agent controlling every env agent of the batched ``env``)
    greedily for ``steps`` requests from ``env.reset(seed=seed)``; the mean of each rule's
    one-step value and of each correlation over every request and env agent."""
    if agent.name != "iql" or list(agent.agent_ids) != list(env.agents):
        raise ValueError("slate_quality measures an 'iql' agent that controls every env agent")
    cfg, K = env.config, env.config.slate_size
    g = torch.Generator().manual_seed(seed)
    truth_choice = _truth_choice(K)  # no position costs, as one_step_value
    sums = dict.fromkeys(RULES + CORRELATIONS[:2], 0.0)  # the third: readable_utility
    counts = dict.fromkeys(RULES + CORRELATIONS[:2], 0)
    obs = env.reset(seed=seed)
    for _ in range(steps):
        utility, length, price = env.oracle_view()  # [N, A, C], privileged
        for i, a in enumerate(env.agents):
            mask = obs[a]["action_mask"] & torch.isfinite(utility[:, i])
            u = utility[:, i].masked_fill(~mask, cfg.no_click_utility - 50.0)
            v = expected_click_value(cfg, u, length[:, i], price[:, i])
            lrn = agent.learner_of(i)
            pairs, ctx = agent._inputs(obs[a], i)
            q, q_null = lrn.q(pairs, ctx)
            logits, no_click = lrn.choice(pairs, ctx)
            slates = {
                "iql_greedy": greedy_slate(lrn.choice, logits, no_click, q, q_null, mask, K),
                "iql_top_k": slate_from_scores(topk_rank(logits, q, q_null), mask, K),
                "utility_oracle": slate_from_scores(u, mask, K),
                "value_oracle": greedy_slate(
                    truth_choice,
                    u / cfg.temperature,
                    torch.full_like(q_null, cfg.no_click_utility / cfg.temperature),
                    v,
                    torch.zeros_like(q_null),
                    mask,
                    K,
                ),
                "random": slate_from_scores(torch.rand(u.shape, generator=g), mask, K),
            }
            for rule, slate in slates.items():
                sums[rule] += float(one_step_value(u, v, slate, cfg).sum())
                counts[rule] += slate.shape[0]
            for name, r in (
                ("corr_logit_utility", _row_corr(logits, u, mask)),
                ("corr_gain_value", _row_corr(q - q_null[:, None], v, mask)),
            ):
                ok = torch.isfinite(r)
                sums[name] += float(r[ok].sum())
                counts[name] += int(ok.sum())
        obs, *_ = env.step(agent.act(obs))
    return {k: sums[k] / counts[k] if counts[k] else math.nan for k in sums}


def readable_utility(
    agent: Any, env: Any, steps: int, seed: int, epochs: int = 40, hidden=(64, 64)
) -> float:
    """Held-out per-request Pearson correlation of a :class:`CandidateScorer` (IQL's network
    shape, on IQL's input features) regressed on the true utilities: the rollout (``agent``
    acting greedily, ``steps`` requests from ``env.reset(seed=seed)``) of the first half of
    the markets trains it (MSE, Adam, ``epochs`` passes), the second half measures it."""
    obs = env.reset(seed=seed)
    pairs_all, ctx_all, util_all, mask_all = [], [], [], []
    with torch.no_grad():
        for _ in range(steps):
            utility = env.oracle_view().utility
            for i, a in enumerate(env.agents):
                mask = obs[a]["action_mask"] & torch.isfinite(utility[:, i])
                pairs, ctx = agent._inputs(obs[a], i)
                pairs_all.append(pairs)
                ctx_all.append(ctx)
                util_all.append(utility[:, i].masked_fill(~mask, 0.0))
                mask_all.append(mask)
            obs, *_ = env.step(agent.act(obs))
    # [steps * A, N, ...] -> split by market: the first half trains, the second tests.
    half = env.num_envs // 2
    stack = [torch.stack(x) for x in (pairs_all, ctx_all, util_all, mask_all)]
    train = [x[:, :half].flatten(0, 1) for x in stack]
    test = [x[:, half:].flatten(0, 1) for x in stack]
    with seeded_init(seed):
        net = CandidateScorer(train[0].shape[-1], train[1].shape[-1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    rows = train[0].shape[0]
    for _ in range(epochs):
        for batch in torch.randperm(rows, generator=g).split(256):
            pred, _ = net(train[0][batch], train[1][batch])
            m = train[3][batch]
            loss = ((pred - train[2][batch]) ** 2 * m).sum() / m.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred, _ = net(test[0], test[1])
        r = _row_corr(pred, test[2], test[3])
    return float(r[torch.isfinite(r)].mean())


def run_seed(
    env_id: str,
    env_kwargs: dict[str, Any],
    iql_config: dict[str, Any],
    budget: int,
    num_envs: int,
    eval_envs: int,
    steps: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, float]:
    """Train IQL (self-play, every env agent) for ``budget`` env steps, then :func:`measure`
    on ``eval_envs`` fresh markets (seed ``100_000 + seed``)."""
    env = recenv.make_vec(env_id, num_envs=num_envs, seed=seed, device=device, **env_kwargs)
    agent = agents.make_agent("iql", env, seed=seed, **iql_config)
    if budget > 0:
        agents.train(agent, env, budget, seed=seed)
    test = recenv.make_vec(
        env_id, num_envs=eval_envs, seed=100_000 + seed, device=device, **env_kwargs
    )
    out = measure(agent, test, steps, 100_000 + seed)
    out["corr_supervised_utility"] = readable_utility(agent, test, steps, 100_000 + seed)
    return out
