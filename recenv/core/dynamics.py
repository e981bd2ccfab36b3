"""User dynamics (DESIGN §3, step 8) as pure functions of a user row.

- :func:`on_arrival` brings a stored row up to date when the user arrives: fresh state for a
  user new to the episode, lazy boredom decay since the last write, a churned user's return.
- :func:`after_request` applies one request's outcome: interest drift toward consumed topics,
  boredom growth, satisfaction against expectation, loyalty, the session budget, session ends
  and churn, and each agent's history summary.

Rows are ``[N, F]`` in the :class:`~recenv.core.users.UserLayout`; ``N`` markets.
"""

from __future__ import annotations

import math

import torch

from recenv.core.config import MarketConfig
from recenv.core.indexing import lookup_table
from recenv.core.users import NEVER, UserLayout

HISTORY_DECAY = 0.8  # per-visit decay of an agent's history summary with a user


def decay_powers(cfg: MarketConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """``boredom_decay ** k`` for ``k = 0..horizon``, ``[H + 1]`` float32 (a
    :func:`~recenv.core.indexing.lookup_table`)."""
    steps = torch.arange(cfg.horizon + 1, device=device)
    return lookup_table(lambda k: torch.pow(cfg.boredom_decay, k), steps)


def on_arrival(
    cfg: MarketConfig,
    L: UserLayout,
    row: torch.Tensor,  # [N, F] stored row
    fresh: torch.Tensor,  # [N] bool: the stored row belongs to an older episode
    ready: torch.Tensor,  # [N] bool: the user may arrive now (not away, not churned)
    fresh_row: torch.Tensor,  # [N, F] the user's fresh state this episode
    t: torch.Tensor,  # [N] float step within the episode
    decay_powers: torch.Tensor,  # [H + 1] boredom_decay ** k, k = 0..H (see decay_powers)
) -> torch.Tensor:
    """The stored row brought up to the arrival at step ``t``: fresh users start anew,
    boredom decays for the steps since it was last written, churned users who may come back
    return with the initial satisfaction. The decay is a table lookup: compiled graphs would
    otherwise re-evaluate a ``pow`` per user for every column of the row."""
    row = torch.where(fresh[:, None], fresh_row, row)
    lag = (t - row[:, L.bored_at]).clamp(min=0.0)  # whole steps, at most H
    # A churned user comes back only once their wait is over; when every user is churned the
    # market has terminated, and its final observation must not revive one.
    returning = (row[:, L.churned] > 0) & ready
    return L.assemble(
        row,
        boredom=row[:, L.boredom] * decay_powers.take(lag.long())[:, None],
        bored_at=t,
        satisfaction=torch.where(returning, cfg.satisfaction_init, row[:, L.satisfaction]),
        churned=torch.where(returning, 0.0, row[:, L.churned]),
    )


def after_request(
    cfg: MarketConfig,
    L: UserLayout,
    row: torch.Tensor,  # [N, F] the current user's row (already brought up to date)
    t: torch.Tensor,  # [N] float step within the episode
    clicked: torch.Tensor,  # [N] bool
    item_topics: torch.Tensor,  # [N, T] topics of the chosen item (any row when no click)
    shown_topics: torch.Tensor,  # [N, T] mean topic vector of the visible page
    fit: torch.Tensor,  # [N] in [0, 1], 0 without a click
    time_spent: torch.Tensor,  # [N]
    served: torch.Tensor,  # [N, A] bool: the agent's slate reached the user
    won: torch.Tensor,  # [N, A] bool: the agent's item was clicked
    value: torch.Tensor,  # [N] value of the click
    impressions: torch.Tensor,  # [N, A] share of the agent's slate that was visible
    draws: torch.Tensor,  # [N, 3] uniforms: session gap, budget refill, churn return wait
) -> torch.Tensor:
    # Every new column is computed from the row as it came in, then the row is assembled
    # once (see UserLayout.assemble).
    click = clicked[:, None]
    interest = row[:, L.interest]
    drifted = (1.0 - cfg.interest_drift) * interest + cfg.interest_drift * item_topics
    boredom = (
        row[:, L.boredom]
        # Flags as the row's floats: a Python float times a bool tensor takes torch's
        # default dtype, which a user may have set to float64.
        + cfg.boredom_growth * click.to(row.dtype) * item_topics
        + cfg.boredom_exposure * shown_topics
    )
    sat = (row[:, L.satisfaction] + cfg.satisfaction_rate * (fit - cfg.expectation)).clamp(0.0, 1.0)
    outcome = won * fit[:, None]
    loyalty = row[:, L.loyalty] + cfg.loyalty_rate * served.to(row.dtype) * (
        outcome - cfg.expectation
    )

    budget = row[:, L.budget] - cfg.browse_cost - time_spent
    session_over = budget <= 0
    gap = torch.floor(cfg.session_gap * (0.5 + draws[:, 0]))
    churn = sat < cfg.churn_threshold
    if cfg.return_prob > 0:
        p = min(cfg.return_prob, 1.0 - 1e-7)
        wait = torch.ceil(torch.log(draws[:, 2]) / math.log1p(-p)).clamp(1.0, NEVER)
    else:
        wait = torch.full_like(gap, NEVER)
    away = torch.where(session_over, t + 1.0 + gap, row[:, L.available_at])

    A, H = won.shape[1], L.history_width
    hist = row[:, L.history].reshape(-1, A, H)
    wonf = won.to(row.dtype)
    add = torch.cat(
        [
            wonf[:, :, None] * item_topics[:, None, :],
            impressions[:, :, None],
            wonf[:, :, None],
            (wonf * value[:, None])[:, :, None],
        ],
        dim=2,
    )
    return L.assemble(
        row,
        interest=torch.where(click, drifted, interest),
        boredom=boredom,
        satisfaction=sat,
        budget=torch.where(session_over, cfg.session_budget * (0.5 + draws[:, 1]), budget),
        available_at=torch.where(churn, t + 1.0 + wait, away),
        churned=churn.to(row.dtype),
        visits=row[:, L.visits] + 1.0,
        depth=torch.where(session_over | churn, 0.0, row[:, L.depth] + 1.0),
        last_visit=t,
        loyalty=loyalty.clamp(-3.0, 3.0),
        history=(HISTORY_DECAY * hist + add).reshape(-1, A * H),
    )
