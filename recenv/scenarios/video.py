"""# Video-v0

Video streaming platforms competing for viewers' time: each request a viewer first picks one
of ``A = 3`` platforms (by loyalty, or watches nothing) and sees only that platform's row of
videos. Watch time grows with a video's length and how well it fits; viewers tire fast of a
genre, sessions end when the viewer's time runs out, and disappointed viewers churn.

| Import | `recenv.make("recenv/Video-v0")` / `recenv.make_vec("recenv/Video-v0", num_envs=N)` |
|---|---|
| Actions | slate: ``SlateSpace(25, 5)`` (a row of 5 of 25 candidates) |
| Parallel API | yes |
| Agents | ``agent_0 … agent_2``: platforms with exclusive catalogs |
| Observation | ``Dict`` (as Market-v0) or flat ``Box`` with ``flatten_obs=True`` |
| State | ``Box(state_dim,)`` global latent view (includes the viewer's loyalty to each platform) |
| Reward | watch time on the agent's own platform |

## Description

``U = 40`` viewers, ``I = 3000`` videos over ``T = 20`` genres, split among the platforms
(exclusive catalogs). ``topology="platform_choice"``: the viewer chooses a platform by a logit
of ``3 · loyalty`` against leaving (utility −1), then picks at most one of the platform's
``K = 5`` videos. After each visit the visited platform's loyalty changes by
``0.2 · (fit − 0.35)`` (``loyalty_rate · (fit − expectation)``, clamped to [−3, 3]), where
``fit = sigmoid(utility)`` of the video watched, 0 when none is: it rises after a good visit
and falls after a poor or empty one, so a platform that serves badly loses its viewers to the
others: the competition is for **market share** (share of visits) and **retention**, both
reported in the episode metrics.

Video lengths are log-normal with mean 3 time units; a viewer's session budget is about 20
units, and every visit costs 0.3 units of browsing: a session holds about 7 videos (median 7
under the myopic oracle, half of the sessions between 5 and 10; median 5 to 6 under random slates;
sessions begun in the first 1000 steps of 16 markets run with ``horizon=3000``, seed 0). A
viewer makes 7.5 of an episode's 300 requests on average, so most sessions are still running
when the episode ends. Boredom is strong: watching a video adds 0.8 boredom to its genres,
decaying only 5 % per market step (a viewer comes back a median 17 steps later, when 42 % is
left), and boredom costs 2.5 utility per unit — a platform that keeps serving the viewer's
favourite genre soon sees them stop clicking, lose satisfaction and churn (below 0.25).
Measured so far (see `experiments/results/long_horizon.md`): the myopic oracle, which sees
boredom, keeps nearly every viewer at these settings (retention 0.999; 0.991 under random slates; 64
markets, one episode, seed 0), and even in a harsher variant (horizon 1000, interest drift
0.2, boredom decay 0.99, expectation 0.5, churn threshold 0.4, no returns) IQL did not beat it
— agents cannot observe boredom, which builds up across platforms.

## Observation (per agent)

As in Market-v0 (see its page). Only the visited platform's slate is shown, but every
platform observes every request (it does not know whether the viewer will come to it). A
candidate's ``length`` column is the video's length.

## Action

K = 5 distinct, unmasked candidate indices (``invalid_slate="raise"`` by default).

## Choice model

Platform: softmax over ``3 · loyalty_a`` for each platform and −1 for watching nothing.
Then a conditional logit over the platform's 5 videos plus no click (utility 1.5):

``utility = 3 · interest·genres + 1 · taste·embedding + 1 · quality − 2.5 · boredom·genres
− 1 · log2(1 + position)``

## Reward

``competitive``: the watch time of the video chosen on the agent's platform,
``share · length`` with ``share = sigmoid(utility) × noise`` capped at 1 — long videos that
fit earn most. Other platforms earn 0 on that request.

## Episode

``H = 300`` requests (truncation), or every viewer churned (termination). Episode metrics:
return (total watch time), ``market_share`` (share of platform visits), ``retention``,
satisfaction, CTR (clicks per request, the requests on which the viewer visited no
platform included: 7 % of requests under the myopic oracle, 11 % under random slates),
diversity and more.

Baselines (64 markets, one episode, seed 0): the myopic oracle earns 485.0 team watch time per
episode, uniformly random valid slates 207.7 (× 2.33; the registered ``random`` agent under
``agents.evaluate`` earns 207.0). The ``value_oracle``, which builds the
slate that maximises the expected watch time, earns 647.6 (× 1.34 the oracle's).

## Arguments (why these values)

| key | value | why |
|---|---|---|
| ``num_agents``, ``topology``, ``ownership`` | 3, ``"platform_choice"``, ``"partition"`` | three platforms with exclusive catalogs: competition for visits, not for slots on one page |
| ``num_items``, ``num_topics`` | 3000, 20 | a catalog of 1000 videos per platform over 20 genres |
| ``num_users`` | 40 | each viewer returns several times per episode, so loyalty and churn play out |
| ``num_candidates``, ``slate_size`` | 25, 5 | a home-screen row of five videos |
| ``zipf_exponent`` | 1.0 | viewing is long-tailed, a little flatter than sales |
| ``response``, ``mean_item_length`` | ``"watch_time"``, 3.0 | watch time = watched share × length, so length matters; a video is several times a browse |
| ``session_budget``, ``browse_cost`` | 20.0, 0.3 | a session holds about 7 videos (see the description); browsing without watching still uses time |
| ``boredom_growth``, ``boredom_decay``, ``boredom_weight``, ``boredom_exposure`` | 0.8, 0.95, 2.5, 0.05 | strong boredom: after two videos of a genre on a viewer's consecutive visits, about 0.5 is left at the third (−1.2 utility for a video of that genre alone, at the median 17 steps between visits), and it lingers for tens of steps |
| ``churn_threshold``, ``expectation`` | 0.25, 0.35 | viewers expect more of a video than of a generic item and leave sooner when let down; the expectation is also the bar a visit's fit must clear to raise loyalty |
| ``horizon`` | 300 | long enough for loyalty, boredom and churn to change market shares |

## Version history

- v0: initial release.
"""

from __future__ import annotations

from typing import Any

import torch

from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.scenarios._factories import pettingzoo_factories

ENV_ID = "recenv/Video-v0"
CONFIG = MarketConfig(
    num_agents=3,
    topology="platform_choice",
    ownership="partition",
    num_items=3000,
    num_topics=20,
    num_users=40,
    num_candidates=25,
    slate_size=5,
    zipf_exponent=1.0,
    response="watch_time",
    mean_item_length=3.0,
    session_budget=20.0,
    browse_cost=0.3,
    boredom_growth=0.8,
    boredom_decay=0.95,
    boredom_weight=2.5,
    boredom_exposure=0.05,
    churn_threshold=0.25,
    expectation=0.35,
    horizon=300,
)


def build(
    *, num_envs: int, device: str | torch.device = "cpu", seed: int | None = None, **config: Any
) -> BatchedMarket:
    return BatchedMarket(MarketConfig.from_kwargs(CONFIG, **config), num_envs, device, seed)


parallel_env, env = pettingzoo_factories(ENV_ID)
