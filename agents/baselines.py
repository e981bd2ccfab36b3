"""The baselines every recommender study reports: random, popularity, the myopic oracle, and
the ε-greedy and LinUCB bandits.

All of them score candidates and recommend the top K of the masked scores
(:class:`~agents.base.ScoringAgent`), so each can also be a member of the ensemble. Bandits
learn from their own slates' outcomes only (:meth:`~agents.base.Transition.slate_feedback`,
on the steps their slate reached the user), keep one set of statistics per controlled env
agent, and act greedily when ``explore=False``. Matrix factorisation lives in :mod:`agents.mf`,
the ensemble in :mod:`agents.ensemble`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from agents.base import (
    Actions,
    Agent,
    AgentConfig,
    Metrics,
    Obs,
    ScoringAgent,
    Transition,
    option,
)
from agents.features import ObsLayout, linear_features
from agents.registry import register
from agents.state_checks import nonnegative
from recenv.core.market import ORACLE_HIDEABLE

TARGETS = ("click", "engagement")
# Per-item counts and payoff sums that grow over a whole training run. In float32 a count
# stops at 2**24 = 16.8 M (adding 1 rounds back), which one popular item's exposures reach
# in seconds of a GPU run, and a payoff sum rounds away small payoffs long before; float64
# is exact to 2**53. Scores are cast back to float32.
COUNT_DTYPE = torch.float64


def _check_choice(agent: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{agent}: {name}={value!r} must be one of {list(allowed)}")


# ----------------------------------------------------------------------------------------
@register
class RandomAgent(ScoringAgent):
    """K distinct unmasked candidates uniformly at random (the floor of every table)."""

    name: ClassVar[str] = "random"
    registrable: ClassVar[bool] = True

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        mask = obs_a["action_mask"]
        return torch.rand(
            mask.shape, generator=self.generator, dtype=torch.float32, device=mask.device
        )


def count_slate_feedback(
    agent_ids: Sequence[str],
    transition: Transition,
    target: str,
    outcome: torch.Tensor,
    shown: torch.Tensor,
) -> None:
    """Add each of ``agent_ids``' slates in ``transition`` to per-item tables ``[A, I]``:
    ``outcome`` gains the item's ``target`` feedback (a click, an engagement), ``shown`` one
    impression; auto-reset rows (not seen by the agent) add nothing."""
    for i, a in enumerate(agent_ids):
        valid = transition.seen(a).float()[:, None]
        items, y, _ = transition.slate_feedback(a, target)
        flat = items.flatten()
        outcome[i].index_add_(0, flat, (y * valid).flatten().to(outcome.dtype))
        shown[i].index_add_(0, flat, valid.expand_as(y).flatten().to(shown.dtype))


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PopularityConfig(AgentConfig):
    source: str = option(
        "market",
        "'market': the clicks each candidate got in this market this episode (observed in "
        "the candidate features); 'own': clicks on the agent's own slates over all training",
    )


@register
class PopularityAgent(ScoringAgent):
    """Most-clicked first, by observed counts.

    ``source="market"`` ranks by the per-market click counts the observation carries (no
    learning; every episode starts from zero). ``source="own"`` ranks by the clicks the
    agent's own slates collected while training, per catalog item (a popularity model fitted on
    the agent's logs; it carries over episodes). Ties are broken by fewer exposures, then by the
    env's (shuffled) candidate order.
    """

    name: ClassVar[str] = "popularity"
    Config: ClassVar[type[AgentConfig]] = PopularityConfig
    config: PopularityConfig
    registrable: ClassVar[bool] = True

    def __init__(self, env: Any, config: PopularityConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        _check_choice(self.name, "source", cfg.source, ("market", "own"))
        self.layout = ObsLayout(self.env_config.num_topics)
        # A class-level flag set per instance by the config (mypy refuses it on a ClassVar).
        self.learns = cfg.source == "own"  # type: ignore[misc]
        A, I = len(self.agent_ids), self.env_config.num_items
        self.clicks = torch.zeros(A, I, device=self.device, dtype=COUNT_DTYPE)
        self.exposures = torch.zeros(A, I, device=self.device, dtype=COUNT_DTYPE)

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        cands = obs_a["candidates"]
        if self.config.source == "market":
            clicks = cands[..., self.layout.cand_clicks]
            exposures = cands[..., self.layout.cand_exposures]
        else:
            ids = obs_a["candidate_ids"]
            clicks = torch.log1p(self.clicks[i][ids]).float()
            exposures = torch.log1p(self.exposures[i][ids]).float()
        return clicks - 1e-3 * exposures

    def learn(self, transition: Transition) -> Metrics:
        if self.config.source == "own":
            count_slate_feedback(self.agent_ids, transition, "click", self.clicks, self.exposures)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "clicks": self.clicks, "exposures": self.exposures}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        nonnegative(state, ("clicks", "exposures"), f"agent {self.name!r}")
        super().load_state_dict(state)
        self.clicks.copy_(state["clicks"])
        self.exposures.copy_(state["exposures"])


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OracleConfig(AgentConfig):
    hide: str = option(
        "",
        "comma-separated latent parts the oracle does not read, each replaced by what agents "
        f"observe of it or its mean ({', '.join(ORACLE_HIDEABLE)}; '': it reads them all)",
    )
    # Checkpoints written before `hide` existed read everything.
    LEGACY: ClassVar[Mapping[str, Any]] = {"hide": ""}


def hidden_parts(name: str, hide: str) -> tuple[str, ...]:
    """``OracleConfig.hide`` as the tuple ``BatchedMarket.oracle_view`` takes; an unknown or
    repeated part raises, naming the agent and the allowed parts."""
    parts = tuple(p.strip() for p in hide.split(",")) if hide.strip() else ()
    bad = [p for p in parts if p not in ORACLE_HIDEABLE] or sorted(
        {p for p in parts if parts.count(p) > 1}
    )
    if bad:
        raise ValueError(
            f"agent {name!r}: hide={hide!r} names {bad}; allowed: comma-separated parts of "
            f"{', '.join(map(repr, ORACLE_HIDEABLE))}, each once"
        )
    return parts


class _Oracle(Agent):
    """What both oracles share: the config that keeps latent parts from them."""

    Config: ClassVar[type[AgentConfig]] = OracleConfig
    config: OracleConfig
    needs_privileged: ClassVar[bool] = True

    def __init__(self, env: Any, config: OracleConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        self.hide = hidden_parts(self.name, self.config.hide)


@register
class MyopicOracleAgent(_Oracle, ScoringAgent):
    """Ranks candidates by their *true* expected utility for the current user (privileged: it
    reads the simulator's latent interests, taste and boredom through ``oracle_scores()``).

    The slate likeliest to be clicked; a reference, not a competitor: it ignores what a
    recommendation does to boredom, satisfaction and churn later, and ranks by utility rather
    than by the engagement (reward) a click brings (:class:`ValueOracleAgent` weighs that).
    ``hide`` keeps latent parts from it (``BatchedMarket.oracle_view``).
    """

    name: ClassVar[str] = "oracle"
    registrable: ClassVar[bool] = True

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        core = _oracle_core(self._core, obs_a["action_mask"].shape[0])
        return core.oracle_scores(self.hide)[:, self.env_index(self.agent_ids[i])]


@dataclass(frozen=True)
class ValueOracleConfig(OracleConfig):
    plan: str = option(
        "own",
        "'own': each agent's slate leaves the other agents' items out (oracle_slates "
        "'value'); 'page': the shared page planned together, as one team ('page_value')",
    )
    LEGACY: ClassVar[Mapping[str, Any]] = {"hide": "", "plan": "own"}


@register
class ValueOracleAgent(_Oracle):
    """The myopic oracle that maximises this request's expected reward (privileged): the
    slate ``BatchedMarket.oracle_slates("value")`` builds greedily under the true choice model,
    weighing what a click is worth (length, price) and how the slate's items take clicks from
    one another. A stronger one-step reference than ``oracle`` (see the preset pages for the
    figures), still myopic: it ignores what the slate does to boredom, satisfaction and churn.
    It does not score candidates one by one, so it cannot be an ensemble member.
    ``plan="page"`` builds the whole shared page as one team would (``"page_value"``).
    """

    name: ClassVar[str] = "value_oracle"
    Config: ClassVar[type[AgentConfig]] = ValueOracleConfig
    config: ValueOracleConfig
    registrable: ClassVar[bool] = True

    def __init__(self, env: Any, config: ValueOracleConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        _check_choice(self.name, "plan", self.config.plan, ("own", "page"))
        if self.config.plan == "page" and set(self.agent_ids) != set(self.env_agents):
            # The page plan gives each slot to the team's best use; agents it does not
            # control would not play their part of it.
            raise ValueError(
                f"{self.name}: plan='page' plans every agent's slate, so it must control all "
                f"of {self.env_agents}, not {self.agent_ids}"
            )

    def act(self, obs: Obs, explore: bool = False) -> Actions:
        N = next(iter(obs.values()))["action_mask"].shape[0]
        objective = "value" if self.config.plan == "own" else "page_value"
        slates = _oracle_core(self._core, N).oracle_slates(objective, self.hide)
        return {a: slates[:, self.env_index(a)] for a in self.agent_ids}


def _oracle_core(core: Any, num_envs: int) -> Any:
    """The env an oracle reads, checked to be the one whose ``num_envs`` observations it got."""
    if core.num_envs != num_envs:
        raise ValueError(
            f"the oracle reads the env it was built on ({core.num_envs} markets) but got "
            f"observations of {num_envs}; build it on the env it acts in"
        )
    return core


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpsilonGreedyConfig(AgentConfig):
    epsilon: float = option(
        0.1, "per-slot exploration probability while training", within=(0.0, 1.0)
    )
    target: str = option("engagement", "payoff of a slot: 'click' (0/1) or 'engagement'")
    prior_count: float = option(
        1.0,
        "pseudo-impressions at the mean payoff of all items (shrinks rare items' means)",
        within=(0.0, math.inf),
        open_ends=(False, True),
    )


@register
class EpsilonGreedyAgent(ScoringAgent):
    """A non-contextual ε-greedy bandit with one arm per catalog item: the mean payoff per
    impression of each item on the agent's own slates, shrunk toward the overall mean; the top
    K by that mean, each slot replaced by a random candidate with probability ε while
    exploring."""

    name: ClassVar[str] = "epsilon_greedy"
    Config: ClassVar[type[AgentConfig]] = EpsilonGreedyConfig
    config: EpsilonGreedyConfig
    registrable: ClassVar[bool] = True
    learns: ClassVar[bool] = True

    def __init__(self, env: Any, config: EpsilonGreedyConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        _check_choice(self.name, "target", cfg.target, TARGETS)
        A, I = len(self.agent_ids), self.env_config.num_items
        self.payoff = torch.zeros(A, I, device=self.device, dtype=COUNT_DTYPE)
        self.count = torch.zeros(A, I, device=self.device, dtype=COUNT_DTYPE)

    def exploration(self) -> float:
        return self.config.epsilon

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        c0 = self.config.prior_count
        mean = self.payoff[i].sum() / self.count[i].sum().clamp(min=1.0)
        ids = obs_a["candidate_ids"]
        return ((self.payoff[i][ids] + c0 * mean) / (self.count[i][ids] + c0)).float()

    def learn(self, transition: Transition) -> Metrics:
        count_slate_feedback(
            self.agent_ids, transition, self.config.target, self.payoff, self.count
        )
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "payoff": self.payoff, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        nonnegative(state, ("count",), f"agent {self.name!r}")
        super().load_state_dict(state)
        self.payoff.copy_(state["payoff"])
        self.count.copy_(state["count"])


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinUCBConfig(AgentConfig):
    alpha: float = option(
        0.5,
        "width of the upper confidence bound while exploring",
        within=(0.0, math.inf),
        open_ends=(False, True),
    )
    ridge: float = option(
        1.0,
        "ridge regularisation λ (A starts at λI)",
        within=(0.0, math.inf),
        open_ends=(True, True),
    )
    target: str = option("engagement", "payoff of a slot: 'click' (0/1) or 'engagement'")


@register
class LinUCBAgent(ScoringAgent):
    """LinUCB (Li et al., 2010) with one linear model shared by all items (per env agent) over
    candidate features (:func:`agents.features.linear_features`: the candidate's features and
    its crosses with the observed interests and the agent's history with the user).

    Every shown slot is one observation (payoff: click or engagement). Scores are
    ``θ·x + α √(xᵀ A⁻¹ x)`` while exploring and ``θ·x`` when acting greedily.
    """

    name: ClassVar[str] = "linucb"
    Config: ClassVar[type[AgentConfig]] = LinUCBConfig
    config: LinUCBConfig
    registrable: ClassVar[bool] = True
    learns: ClassVar[bool] = True

    def __init__(self, env: Any, config: LinUCBConfig | None = None, agent_ids=None):
        super().__init__(env, config, agent_ids)
        cfg = self.config
        _check_choice(self.name, "target", cfg.target, TARGETS)
        self.layout = ObsLayout(self.env_config.num_topics)
        A, d = len(self.agent_ids), self.layout.linear_dim()
        # The sums A = λI + Σ x xᵀ and b = Σ y x are float64: A's largest eigenvalue grows
        # with every observation while its smallest stays near λ, and in float32 the
        # rounding of the sums drove the smallest below λ (0.73 for λ = 1 after 2 M env
        # steps of Market-v0) until Cholesky failed mid-run. The solve is float64 too;
        # θ and A⁻¹, which scoring reads, are float32.
        eye = torch.eye(d, device=self.device, dtype=torch.float64)
        self.A = cfg.ridge * eye.repeat(A, 1, 1)
        self.b = torch.zeros(A, d, device=self.device, dtype=torch.float64)
        self.theta = torch.zeros(A, d, dtype=torch.float32, device=self.device)
        self.A_inv = (eye.repeat(A, 1, 1) / cfg.ridge).float()

    def score_agent(
        self, i: int, obs_a: dict[str, torch.Tensor], explore: bool = False
    ) -> torch.Tensor:
        x = linear_features(self.layout, obs_a)
        mean = x @ self.theta[i]
        if not explore or self.config.alpha == 0:
            return mean
        var = torch.einsum("ncd,de,nce->nc", x, self.A_inv[i], x).clamp(min=0.0)
        return mean + self.config.alpha * var.sqrt()

    def learn(self, transition: Transition) -> Metrics:
        for i, a in enumerate(self.agent_ids):
            valid = transition.seen(a).float()[:, None, None]
            _, y, slate = transition.slate_feedback(a, self.config.target)
            x = linear_features(self.layout, transition.obs[a])
            xs = x.gather(1, slate[..., None].expand(-1, -1, x.shape[-1])) * valid  # [N, K, d]
            xs = xs.double()
            self.A[i] += torch.einsum("nkd,nke->de", xs, xs)
            self.b[i] += torch.einsum("nkd,nk->d", xs, y.double())
        self._solve()
        return {}

    def _solve(self) -> None:
        """θ = A⁻¹ b and A⁻¹ from the sums; a non-finite sum (features beyond float range)
        raises ``ValueError`` naming the agent instead of a failed factorisation."""
        chol, info = torch.linalg.cholesky_ex(self.A)
        if bool((info != 0).any()):
            finite = bool(torch.isfinite(self.A).all())
            raise ValueError(
                f"agent {self.name!r}: its design matrix A = λI + Σ x xᵀ is "
                + ("not positive-definite" if finite else "not finite")
                + " (the candidates' features are out of range: check the env's feature scales)"
            )
        self.theta = torch.cholesky_solve(self.b[..., None], chol).squeeze(-1).float()
        self.A_inv = torch.cholesky_inverse(chol).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "A": self.A, "b": self.b}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.A.copy_(state["A"])  # float32 in checkpoints written before the float64 sums
        self.b.copy_(state["b"])
        self._solve()
