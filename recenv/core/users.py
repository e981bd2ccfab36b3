"""Users: the packed per-user table, fresh users, and per-episode user constants.

All of a user's mutable state lives in one row of a ``[N, U, F]`` float table (layout in
:class:`UserLayout`), so a request reads it with one gather and writes it with one scatter.
Small integers (steps, counts) are stored exactly as float32 (exact below 2^24).

Per-episode constants that never change during the episode — latent taste, price sensitivity,
which topics are observable and the observation noise — are not stored: they are re-derived from
the (market, episode, user) hash whenever the user arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recenv.core import rng
from recenv.core.config import MarketConfig
from recenv.core.indexing import like

NEVER = 2.0**30  # available_at of a user who will not come back


class UserLayout:
    """Column layout of the packed user table for ``T`` topics and ``A`` agents."""

    def __init__(self, num_topics: int, num_agents: int):
        T, A = num_topics, num_agents
        self.interest = slice(0, T)  # latent topic interests, sum to 1
        self.boredom = slice(T, 2 * T)  # per-topic boredom, >= 0
        c = 2 * T
        self.satisfaction = c  # in [0, 1]
        self.budget = c + 1  # remaining session time
        self.bored_at = c + 2  # step boredom was last brought up to date (lazy decay)
        self.available_at = c + 3  # step from which the user can arrive again
        self.churned = c + 4  # 1.0 while churned
        self.visits = c + 5  # requests this episode
        self.depth = c + 6  # requests in the current session
        self.last_visit = c + 7  # step of the last request (-1: none)
        self.loyalty = slice(c + 8, c + 8 + A)  # per-platform loyalty
        self.history_width = T + 3  # clicked-topic profile, impressions, clicks, engagement
        h0 = c + 8 + A
        self.history = slice(h0, h0 + A * self.history_width)  # per agent, decayed
        self.width = h0 + A * self.history_width
        # Every column group in table order, as column slices (see :meth:`assemble`).
        self.groups = {
            name: col if isinstance(col, slice) else slice(col, col + 1)
            for name in (
                "interest",
                "boredom",
                "satisfaction",
                "budget",
                "bored_at",
                "available_at",
                "churned",
                "visits",
                "depth",
                "last_visit",
                "loyalty",
                "history",
            )
            for col in (getattr(self, name),)
        }

    def assemble(self, row: torch.Tensor, **columns: torch.Tensor | float) -> torch.Tensor:
        """``row`` [N, F] with the named column groups replaced by ``columns`` (``[N, width]``
        each; ``[N]`` or a scalar for one-column groups), as a new row built by one
        concatenation in table order. Slice writes (``row[:, L.budget] = ...``) would each be
        a pass over the whole ``[N, F]`` row once compiled: inductor turns every one into a
        copy of the row with the slice replaced."""
        unknown = set(columns) - set(self.groups)
        if unknown:
            raise KeyError(f"unknown user columns {sorted(unknown)}; known: {list(self.groups)}")
        N = row.shape[0]
        parts, kept = [], None  # kept: a run of unchanged columns, copied as one slice
        for name, cols in self.groups.items():
            if name not in columns:
                kept = cols if kept is None else slice(kept.start, cols.stop)
                continue
            if kept is not None:
                parts.append(row[:, kept])
                kept = None
            value = like(columns[name], row)
            if value.dim() < 2:
                value = value.reshape(-1, 1).expand(N, 1)
            parts.append(value)
        if kept is not None:
            parts.append(row[:, kept])
        out = torch.cat(parts, dim=1)
        if out.shape[1] != self.width:  # a column given with the wrong width
            widths = {k: tuple(torch.as_tensor(v).shape) for k, v in columns.items()}
            raise ValueError(
                f"assembled row has {out.shape[1]} columns, expected {self.width}; "
                f"given shapes {widths}"
            )
        return out


@dataclass
class Population:
    """Fixed users of a scenario (e.g. fitted on an interaction log), shared by all markets.

    When a market has a population, a user's fresh state each episode starts from these
    interests and taste instead of random draws, and arrivals follow these activity rates.
    """

    interest: torch.Tensor  # [U, T] non-negative, rows sum to 1
    taste: torch.Tensor  # [U, D]
    activity: torch.Tensor  # [U] > 0, relative request rates

    def to(self, device: torch.device | str) -> Population:
        return Population(*(x.to(device) for x in (self.interest, self.taste, self.activity)))

    def check(self, cfg: MarketConfig) -> None:
        U, T, D = cfg.num_users, cfg.num_topics, cfg.embed_dim
        for name, x, shape in (
            ("interest", self.interest, (U, T)),
            ("taste", self.taste, (U, D)),
            ("activity", self.activity, (U,)),
        ):
            if tuple(x.shape) != shape:
                raise ValueError(f"population.{name} has shape {tuple(x.shape)}, expected {shape}")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"population.{name} contains NaN or inf")
        if bool((self.activity <= 0).any()) or bool((self.interest < 0).any()):
            raise ValueError("population activity must be > 0 and interests >= 0")


@dataclass
class UserConstants:
    """Per-(market, episode, user) constants of the current users; ``[N, ...]`` each.
    ``visible`` and ``noise`` shape the observable features built at the arrival; a market
    keeps the constants for the rest of the request without them (``None``)."""

    taste: torch.Tensor  # [N, D] latent taste, dotted with item embeddings: N(0, 4/D) entries
    price_sensitivity: torch.Tensor  # [N]
    visible: torch.Tensor | None  # [N, T] bool: which interests show in the observable features
    noise: torch.Tensor | None  # [N, T] observation noise on the features


def _num_normals(cfg: MarketConfig) -> int:
    return cfg.embed_dim + cfg.num_topics + cfg.num_agents + 1  # taste, noise, loyalty, budget


def user_block_width(cfg: MarketConfig) -> int:
    T = cfg.num_topics
    return 4 + 3 + 2 * ((_num_normals(cfg) + 1) // 2) + T + 1


def draw_user(
    cfg: MarketConfig, layout: UserLayout, block: torch.Tensor
) -> tuple[torch.Tensor, UserConstants]:
    """A fresh user's row ``[N, F]`` and the user's constants, from a uniform block
    ``[N, user_block_width(cfg)]`` drawn for (market, episode, user)."""
    T, D, A = cfg.num_topics, cfg.embed_dim, cfg.num_agents
    N = block.shape[0]
    o = 0

    def take(width: int) -> torch.Tensor:
        nonlocal o
        out = block[:, o : o + width]
        o += width
        return out

    pick, weights = take(4), take(3)
    m = _num_normals(cfg)
    gauss = rng.normals(take(2 * ((m + 1) // 2)), m)
    taste_g, noise_g, loyalty_g, budget_g = gauss.split([D, T, A, 1], dim=1)
    visible_u, price_u = take(T), take(1)

    # Sparse interests: 1..3 distinct topics (fewer when T is small), exponential weights.
    # Distinct topics without a sort: a first topic, then offsets drawn without replacement.
    k_max = min(3, T)
    n_topics = 1 + (pick[:, 3] * k_max).long().clamp(max=k_max - 1)
    first = (pick[:, 0] * T).long().clamp(max=T - 1)
    off1 = 1 + (pick[:, 1] * max(T - 1, 1)).long().clamp(max=max(T - 2, 0))
    off2 = 1 + (pick[:, 2] * max(T - 2, 1)).long().clamp(max=max(T - 3, 0))
    off2 = off2 + (off2 >= off1).long()
    topics = torch.stack([first, (first + off1) % T, (first + off2) % T], dim=1)  # [N, 3]
    w = -torch.log(weights) * (torch.arange(3, device=block.device) < n_topics[:, None])
    # The topics are distinct, so each entry is one weight or 0: a one-hot sum (exact, and
    # fusable where ``scatter_add_`` is an opaque call in a compiled step).
    hit = topics[:, :, None] == torch.arange(T, device=block.device)  # [N, 3, T]
    interest = torch.where(hit, w[:, :, None], 0.0).sum(dim=1)
    interest = interest / interest.sum(dim=1, keepdim=True)

    constants = UserConstants(
        taste=taste_g * (2.0 / math.sqrt(D)),
        price_sensitivity=cfg.price_sensitivity * 2.0 * price_u[:, 0],
        visible=visible_u < cfg.feature_visible,
        noise=noise_g * cfg.feature_noise,
    )
    row = layout.assemble(
        torch.zeros(N, layout.width, dtype=block.dtype, device=block.device),
        interest=interest,
        satisfaction=cfg.satisfaction_init,
        budget=cfg.session_budget * torch.exp(0.5 * budget_g[:, 0] - 0.125),
        loyalty=0.3 * loyalty_g,
        last_visit=-1.0,
    )
    return row, constants


def observable_features(
    cfg: MarketConfig, layout: UserLayout, row: torch.Tensor, const: UserConstants
) -> torch.Tensor:
    """What agents see of a user, ``[N, T + 2]``: a noisy, partial view of the latent
    interests, then the session depth and log(1 + visits). ``const`` as drawn at the
    arrival (with ``visible`` and ``noise``)."""
    assert const.visible is not None and const.noise is not None, "constants without features"
    seen = torch.where(const.visible, row[:, layout.interest], 0.0) + const.noise
    depth = row[:, layout.depth : layout.depth + 1] / 10.0
    visits = torch.log1p(row[:, layout.visits : layout.visits + 1])
    return torch.cat([seen, depth, visits], dim=1)
