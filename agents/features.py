"""Reading the env's observations: column layout and (user, candidate) pair features.

The column layout of ``user``, ``history`` and ``candidates`` is written down once, here, from
the Market-v0 observation table (``recenv.scenarios.market``); ``tests/agents`` checks it
against the simulator so a reordering in ``recenv`` fails loudly instead of silently feeding
agents the wrong columns.

Shapes: ``N`` markets (or a replay batch), ``C`` candidates, ``T`` topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ObsLayout:
    """Column indices of one agent's observation for ``T`` topics."""

    num_topics: int

    # user [N, T+2]: noisy interests (T), session depth / 10, log(1 + visits)
    @property
    def user_interest(self) -> slice:
        return slice(0, self.num_topics)

    # history [N, T+4]: clicked-topic profile (T), impressions, clicks, engagement, since
    @property
    def history_profile(self) -> slice:
        return slice(0, self.num_topics)

    # candidates [N, C, T+6]: topics (T), length, price, observed quality, log1p clicks,
    # log1p exposures (this market, this episode), age / H
    @property
    def cand_topics(self) -> slice:
        return slice(0, self.num_topics)

    @property
    def cand_length(self) -> int:
        return self.num_topics

    @property
    def cand_price(self) -> int:
        return self.num_topics + 1

    @property
    def cand_quality(self) -> int:
        return self.num_topics + 2

    @property
    def cand_clicks(self) -> int:
        return self.num_topics + 3

    @property
    def cand_exposures(self) -> int:
        return self.num_topics + 4

    @property
    def cand_age(self) -> int:
        return self.num_topics + 5

    @property
    def cand_scalars(self) -> slice:
        return slice(self.num_topics, self.num_topics + 6)

    def context_dim(self, user_dim: int, history_dim: int) -> int:
        return user_dim + history_dim

    def pair_dim(self, user_dim: int, history_dim: int, candidate_dim: int) -> int:
        return user_dim + history_dim + candidate_dim + 2 * self.num_topics + 2

    def linear_dim(self) -> int:
        return 1 + 6 + 3 * self.num_topics + 2


def context_features(obs_a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """What is known of the request before looking at a candidate: ``[N, (T+2) + (T+4)]``."""
    return torch.cat([obs_a["user"].float(), obs_a["history"].float()], dim=-1)


def _crosses(layout: ObsLayout, obs_a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[N, C, 2T + 2]``: observed interest × item topics, own clicked-topic profile × item
    topics (a proxy for boredom), and their sums (match scores)."""
    topics = obs_a["candidates"][..., layout.cand_topics].float()
    interest = obs_a["user"][:, None, layout.user_interest].float()
    profile = obs_a["history"][:, None, layout.history_profile].float()
    by_interest = interest * topics
    by_profile = profile * topics
    return torch.cat(
        [
            by_interest,
            by_profile,
            by_interest.sum(-1, keepdim=True),
            by_profile.sum(-1, keepdim=True),
        ],
        dim=-1,
    )


def pair_features(layout: ObsLayout, obs_a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-candidate network input ``[N, C, F]``: the context (user, history) broadcast to
    every candidate, the candidate's own features, and the crosses of :func:`_crosses`.
    ``F = layout.pair_dim(...)``."""
    cands = obs_a["candidates"].float()
    C = cands.shape[1]
    ctx = context_features(obs_a)[:, None, :].expand(-1, C, -1)
    return torch.cat([ctx, cands, _crosses(layout, obs_a)], dim=-1)


def linear_features(layout: ObsLayout, obs_a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-candidate features for linear models ``[N, C, 1 + 6 + 3T + 2]``: a bias, the
    candidate's scalar features, its topics, and the crosses. Context-only terms are left out:
    they shift every candidate of a request alike and cannot change a ranking."""
    cands = obs_a["candidates"].float()
    bias = torch.ones_like(cands[..., :1])
    return torch.cat(
        [
            bias,
            cands[..., layout.cand_scalars],
            cands[..., layout.cand_topics],
            _crosses(layout, obs_a),
        ],
        dim=-1,
    )
