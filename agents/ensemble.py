"""An ensemble that blends the candidate scores of several member agents.

Each member must score candidates (``scores_candidates``: every baseline, MF and IQL do). Per
request, each member's scores over the unmasked candidates are normalised (``zscore``: zero
mean, unit spread; ``rank``: rank / (count - 1) in [0, 1]; ``none``), weighted, summed, and the
top K of the blend is the slate. ``observe``, ``learn`` and ``begin_episode`` reach every member,
so learning members keep learning inside the ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from agents.base import (
    SEED_RANGE,
    AgentConfig,
    Metrics,
    ScoringAgent,
    Transition,
    member_seed,
    members_layout,
    option,
)
from agents.registry import make_agent, register

NORMALIZATIONS = ("zscore", "rank", "none")


@dataclass(frozen=True)
class EnsembleConfig(AgentConfig):
    members: tuple = option(
        ("popularity", "linucb"), "member agents: names, or (name, {config}) pairs"
    )
    weights: tuple = option(
        (),
        "blend weight of each member (empty: equal weights)",
        within=(-math.inf, math.inf),
        open_ends=(True, True),
        each=float,
    )
    normalize: str = option("zscore", "per-request score normalisation: zscore, rank or none")
    epsilon: float = option(
        0.0, "per-slot exploration probability while training", within=(0.0, 1.0)
    )


def normalize_scores(scores: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Scores ``[N, C]`` normalised over each row's unmasked candidates (0 where masked)."""
    m = mask.float()
    s = torch.where(mask & torch.isfinite(scores), scores.float(), 0.0)
    if how == "none":
        return s
    count = m.sum(1, keepdim=True).clamp(min=1.0)
    if how == "rank":
        # Tied scores share their average rank: a tie says nothing of the candidates' order.
        keyed = s.masked_fill(~mask, -torch.inf)
        ordered = keyed.sort(dim=1).values
        below = torch.searchsorted(ordered, keyed, side="left").float()
        upto = torch.searchsorted(ordered, keyed, side="right").float()
        ranked = (below + upto - 1.0) / 2.0
        first = (~mask).float().sum(1, keepdim=True)  # masked candidates rank lowest
        return torch.where(mask, (ranked - first) / (count - 1).clamp(min=1.0), 0.0)
    mean = (s * m).sum(1, keepdim=True) / count
    var = (((s - mean) * m) ** 2).sum(1, keepdim=True) / count
    return torch.where(mask, (s - mean) / (var.sqrt() + 1e-6), 0.0)


@register
class EnsembleAgent(ScoringAgent):
    """Weighted blend of member agents' candidate scores (see the module docstring)."""

    name: ClassVar[str] = "ensemble"
    Config: ClassVar[type[AgentConfig]] = EnsembleConfig
    config: EnsembleConfig
    registrable: ClassVar[bool] = True

    def __init__(self, env: Any, config: EnsembleConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        if cfg.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"{self.name}: normalize={cfg.normalize!r} must be one of {NORMALIZATIONS}"
            )
        if not cfg.members:
            raise ValueError("an ensemble needs at least one member")
        weights = cfg.weights or (1.0,) * len(cfg.members)
        if len(weights) != len(cfg.members):
            raise ValueError(
                f"{len(weights)} weights for {len(cfg.members)} members {list(cfg.members)}"
            )
        self.weights = [float(w) for w in weights]
        # Member j (from 1) is seeded seed + 1000 j unless its config says: all must fit int64.
        top = SEED_RANGE[1] - 1000 * len(cfg.members)
        if cfg.seed > top:
            raise ValueError(
                f"agent {self.name!r}: seed={cfg.seed} must lie in [{SEED_RANGE[0]}, {top}]: "
                f"its {len(cfg.members)} members are seeded seed + 1000 * j (j = 1, 2, ...), "
                "which must fit in int64"
            )
        self.members = []
        for j, spec in enumerate(cfg.members):
            pair = isinstance(spec, (tuple, list)) and len(spec) == 2
            pair = pair and isinstance(spec[0], str) and isinstance(spec[1], Mapping)
            if not (isinstance(spec, str) or pair):
                raise ValueError(
                    f"agent {self.name!r}: members[{j}]={spec!r} must be an agent name or a "
                    "(name, {config}) pair"
                )
            name, mcfg = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
            mcfg.setdefault("seed", cfg.seed + 1000 * (j + 1))
            member = make_agent(name, env, agent_ids=self.agent_ids, **mcfg)
            if not isinstance(member, ScoringAgent):
                raise ValueError(
                    f"ensemble member {name!r} does not score candidates; members must be "
                    "ScoringAgents (score_agent(i, obs_a, explore) -> [N, C])"
                )
            self.members.append(member)
        # The capability flags, class-level on every agent class, are the members' here (per
        # instance; mypy refuses setting a ClassVar on an instance: misc).
        self.needs_privileged = any(m.needs_privileged for m in self.members)  # type: ignore[misc]
        self.needs_state = any(m.needs_state for m in self.members)  # type: ignore[misc]
        self.learns = any(m.learns for m in self.members)  # type: ignore[misc]

    def exploration(self) -> float:
        return self.config.epsilon

    def score_agent(self, i: int, obs_a, explore: bool = False) -> torch.Tensor:
        mask = obs_a["action_mask"]
        blend = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for w, member in zip(self.weights, self.members, strict=True):
            s = member.score_agent(i, obs_a, explore)
            blend = blend + w * normalize_scores(s, mask, self.config.normalize)
        return blend

    def bind(self, env) -> None:
        super().bind(env)
        for m in self.members:
            m.bind(env)

    def observe(self, transition: Transition) -> None:
        for m in self.members:
            m.observe(transition)

    def learn(self, transition: Transition) -> Metrics:
        out: Metrics = {}
        for j, m in enumerate(self.members):
            out.update({f"member{j}_{m.name}/{k}": v for k, v in m.learn(transition).items()})
        return out

    def begin_episode(self, mask: torch.Tensor | None = None) -> None:
        for m in self.members:
            m.begin_episode(mask)

    def reseed(self, seed: int) -> None:
        # Member j (from 1) from seed + 1000 j, as the members' configs are seeded.
        super().reseed(seed)
        for j, m in enumerate(self.members):
            m.reseed(member_seed(seed, 1000 * (j + 1)))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for m, s in zip(self.members, state["members"], strict=True):
            m.load_state_dict(s)

    def state_layout(self, state: dict[str, Any]) -> dict[str, Any]:
        state = super().state_layout(state)
        return {**state, "members": members_layout(self.members, state["members"])}
