"""# Market-v0

The generic recommender market of DESIGN §3: ``A`` recommender agents compete for one stream of
user requests over a sparse, long-tail catalog.

| Import | `recenv.make("recenv/Market-v0")` / `recenv.make_vec("recenv/Market-v0", num_envs=N)` |
|---|---|
| Actions | slate: ``SlateSpace(C, K)`` (a ``MultiDiscrete([C]*K)`` of distinct candidates) |
| Parallel API | yes |
| Agents | ``agent_0 … agent_{A-1}`` (default A = 2) |
| Observation | ``Dict`` (below) or flat ``Box`` with ``flatten_obs=True`` |
| State | ``Box(state_dim,)`` global latent view |

## Description

Each step one user of the market's population (``U = 25``) arrives, chosen by activity among the
users who are not between sessions or churned (a user between sessions arrives only when no
other can; a churned user may come back after a geometric wait, ``return_prob``). Every agent
receives ``C = 20`` candidates from its own part of the catalog (``I = 2000`` items over
``T = 16`` topics, Zipf popularity, 20 % of items arriving during the episode) and proposes a
slate of ``K = 3``. All slates share one page (``topology="shared_page"``, agent blocks rotating each
step); the user clicks one item or nothing. Users get bored of topics, drift toward what they
consume, run out of session time, and churn when unsatisfied — so greedy recommendation has
long-term costs.

## Observation (per agent, ``Dict``)

| key | shape | content |
|---|---|---|
| ``user`` | (T+2,) | noisy, partial view of the user's interests (25 % of topics hidden, noise 0.1; which topics and the noise are drawn once per user and episode, so a user's next request shows the drift of the visible interests exactly); session depth / 10; log(1 + visits) |
| ``history`` | (T+4,) | this agent's own history with the user, decayed ×0.8 per visit: clicked-topic profile (T), impressions, clicks, engagement; steps since the last visit / H |
| ``candidates`` | (C, T+6) | per candidate: topics (T); length; price; observed (noisy) quality; log(1 + clicks) and log(1 + exposures) in this market this episode (with ``num_items > item_stats_size`` items share a counter by item % item_stats_size and these are the counter's); age / H |
| ``action_mask`` | (C,) int8 | 1 for candidates that may be recommended (arrived, not duplicates); at least K are 1 |
| ``user_id`` | (1,) int64 | the user's index in the market (for collaborative filtering) |
| ``candidate_ids`` | (C,) int64 | catalog ids of the candidates |

The flat option concatenates ``user, history, candidates (row-major), action_mask`` into one
``float32`` vector of size ``(T+2) + (T+4) + C(T+6) + C`` and puts the mask into
``infos[agent]["action_mask"]``.

## Action

K distinct, unmasked candidate indices. An invalid slate (index out of range, duplicate, masked
candidate, wrong shape or dtype, NaN, missing agent) raises ``ValueError`` naming the agent, the
slot and the allowed values, and leaves the market untouched (``invalid_slate="raise"``, the
default). ``invalid_slate="repair"`` drops invalid slots instead and counts them in
``infos[agent]["repaired_slots"]`` — for trainers that sample each slot independently.

## Choice model

Conditional (multinomial) logit over the visible page entries plus a no-click option with
utility 1.5, temperature 1:

``utility = 3 · interest·topics + 1 · taste·embedding + 1 · quality − 2 · boredom·topics
− s_u · price − 1 · log2(1 + position)``

with a per-user price sensitivity ``s_u`` uniform on ``[0, 2 · price_sensitivity]`` (prices
are 0 unless ``price_scale > 0``) and 0-based page positions.

``infos[agent]["utility"]`` splits the chosen item's utility into these terms. Every agent's
infos carry it, and ``user_clicked`` (the user clicked some item), whichever agent's item was
clicked: they explain the user's choice and hold latent values, for analysis; they are not
part of what an agent observes. An agent's own outcome is ``shown`` (its slate, -1 where the
user did not see a slot), ``clicked``, ``chosen_slot`` and ``engagement`` (its own click's).

## Reward

``competitive`` (default): the engagement of the click an agent's item won, the time spent
``share · length`` with ``share = sigmoid(utility) × noise`` capped at 1 (``response`` selects
another currency: watch time, listening time with skips, revenue). ``cooperative``: the team
total. ``mixed``: ``(1 − w)·own + w·team``. Optional terms, added to each agent's own value
before the mode combines them: ``welfare_weight`` × the clicked item's utility (to the agent
whose item it is), ``diversity_weight`` × the intra-list diversity of the agent's visible
slate, ``fairness_weight`` × the mean novelty of its visible items (``−log2`` popularity prior
over ``log2 I``: a long-tail bonus).

## Episode

``H = 200`` requests (truncation), or every user churned (termination). Episode metrics arrive
in ``infos[agent]["episode"]`` at the last step: return, CTR, engagement per request,
retention, market share, coverage, intra-list diversity, novelty, exposure Gini, satisfaction.

## Arguments

Every field of :class:`recenv.core.config.MarketConfig` is a keyword argument of ``make`` and
``make_vec``; unknown keys are an error listing the valid ones. ``max_cycles`` is an alias of
``horizon``; ``render_mode`` (``"ansi"``: ``render()`` returns a text frame; ``"human"``:
the frame is printed) and ``flatten_obs`` select the face's options.

## Version history

- v0: initial release.
"""

from __future__ import annotations

from typing import Any

import torch

from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket

ENV_ID = "recenv/Market-v0"
CONFIG = MarketConfig()


def build(
    *, num_envs: int, device: str | torch.device = "cpu", seed: int | None = None, **config: Any
) -> BatchedMarket:
    return BatchedMarket(MarketConfig.from_kwargs(CONFIG, **config), num_envs, device, seed)


def parallel_env(**kwargs: Any):
    """PettingZoo convention: ``parallel_env(**kwargs)`` of this scenario."""
    from recenv.registry import make

    return make(ENV_ID, **kwargs)


def env(**kwargs: Any):
    """PettingZoo convention: the AEC version (``parallel_to_aec``)."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(parallel_env(**kwargs))


if __name__ == "__main__":  # a short demo: the myopic oracle against random
    import numpy as np

    e = parallel_env(seed=0)
    obs, infos = e.reset()
    total = dict.fromkeys(e.possible_agents, 0.0)
    while e.agents:
        acts = {
            "agent_0": e.oracle_slate("agent_0"),
            **{a: e.action_space(a).sample(obs[a]["action_mask"]) for a in e.agents[1:]},
        }
        obs, rew, term, trunc, infos = e.step(acts)
        for a, r in rew.items():
            total[a] += r
    print({a: float(np.round(v, 2)) for a, v in total.items()})
