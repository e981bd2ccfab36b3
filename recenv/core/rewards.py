"""Rewards of all agents at once, from what each agent's slate earned this request."""

from __future__ import annotations

import torch

from recenv.core.config import MarketConfig


def agent_rewards(
    cfg: MarketConfig,
    own_value: torch.Tensor,  # [N, A] value of the click each agent won (0 if none)
    welfare: torch.Tensor,  # [N, A] utility of the chosen item, credited to its agent
    diversity: torch.Tensor,  # [N, A] intra-list diversity of each agent's slate
    long_tail: torch.Tensor,  # [N, A] mean novelty -log2(popularity) / log2(I) of the visible items
) -> torch.Tensor:
    """``competitive``: own; ``cooperative``: team total; ``mixed``: (1-w) own + w team.

    The optional terms (welfare: the clicked item's total utility; diversity; the long-tail
    term ``fairness_weight`` weighs, a fixed per-item bonus from the popularity prior, not a
    function of the exposure so far) are added to each agent's own value before the mode is
    applied. Returns ``[N, A]``.
    """
    own = own_value
    if cfg.welfare_weight:
        own = own + cfg.welfare_weight * welfare
    if cfg.diversity_weight:
        own = own + cfg.diversity_weight * diversity
    if cfg.fairness_weight:
        own = own + cfg.fairness_weight * long_tail
    if cfg.reward_mode == "competitive":
        return own
    team = own.sum(dim=1, keepdim=True).expand_as(own)
    if cfg.reward_mode == "cooperative":
        return team.clone()
    return (1.0 - cfg.team_weight) * own + cfg.team_weight * team
