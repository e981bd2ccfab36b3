"""# ECommerce-v0

An online marketplace: ``A = 3`` sellers compete for purchases on one shared results page.
Items have prices, users are price sensitive, a click opens a product page and may end in a
purchase, and each seller is rewarded with the revenue of what it sold.

| Import | `recenv.make("recenv/ECommerce-v0")` / `recenv.make_vec("recenv/ECommerce-v0", num_envs=N)` |
|---|---|
| Actions | slate: ``SlateSpace(20, 4)`` (4 distinct candidates of 20) |
| Parallel API | yes |
| Agents | ``agent_0 … agent_2``: sellers, each with its own listings (a partition of the catalog) |
| Observation | ``Dict`` (as Market-v0) or flat ``Box`` with ``flatten_obs=True`` |
| State | ``Box(state_dim,)`` global latent view |
| Reward | revenue: the price of the item bought (0 without a purchase) |

## Description

Each step one of ``U = 50`` shoppers arrives. Every seller retrieves ``C = 20`` candidates from
its own listings (``I = 3000`` products over ``T = 24`` categories, each product in one or two
categories; the popularity prior that retrieval favours is a steep long tail, Zipf exponent 1.2;
10 % of listings appear during the episode) and places ``K = 4`` of them on the results page, so
the shopper sees 12 products. Seller blocks rotate through the page positions from step to step
(as sponsored slots rotate on a marketplace). The shopper clicks (views) at most one product; a
click opens its page and turns into a purchase with probability ``sigmoid(utility)`` (the
utility that drew the click, position term included). Viewing a product in a category dulls the
interest in that category for a while (boredom: it follows the view, bought or not), and a
shopper whose visits keep ending empty-handed loses satisfaction and may stop coming (rarely
within an episode: retention 99.97 % under the myopic oracle, 99.87 % under random slates).

What makes it e-commerce: the price term of the utility. Cheap items are more likely to be
bought, expensive ones earn more when they are: a seller maximising revenue must trade
conversion against price, which the myopic oracle (ranking by the shopper's utility, hence
favouring cheap items) does not do.

## Observation (per agent)

As in Market-v0 (its page has the table): the shopper's noisy, partial interests, the seller's
own history with the shopper, and per candidate its categories, observed clicks and
exposures, age, length, **price** and noisy quality; ``action_mask``, ``user_id``,
``candidate_ids``.

## Action

K = 4 distinct, unmasked candidate indices (``invalid_slate="raise"`` by default;
``"repair"`` for trainers that sample slots independently).

## Choice model

Conditional logit over the 12 products plus viewing none of them (utility 2.0); a viewed
product is then bought with probability ``sigmoid(utility)``:

``utility = 3 · interest·categories + 1 · taste·embedding + 1 · quality
− 2 · boredom·categories − s_u · price − 1 · log2(1 + position)``

with a per-shopper price sensitivity ``s_u`` uniform on ``[0, 2 · price_sensitivity]``.

## Reward

``competitive``: each seller earns the price of the product bought from it (revenue); a click
that does not convert earns 0. ``infos[agent]["engagement"]`` is that revenue.

## Episode

``H = 200`` shopper visits (truncation), or every shopper churned (termination). The episode
metrics (``infos[agent]["episode"]``) include each seller's revenue (``return``), CTR
(product views per visit, bought or not), ``engagement_per_request`` (revenue per visit) and
``market_share`` (share of product views won, not of purchases or revenue). There is no
purchase-rate metric: a purchase is a view with ``engagement > 0``.

Baselines (64 markets, one episode, seed 0): the myopic oracle earns 60.7 team revenue per
episode, uniformly random valid slates 22.1 (× 2.74; the registered ``random`` agent under
``agents.evaluate`` earns 21.4). The oracle's shoppers view a product on 58 % of visits and buy
on 42 % (72 % of views convert); under random slates 27 % and 14 %. The ``value_oracle``, which
builds the page that maximises the expected revenue, earns 70.5 (× 1.16 the oracle's).

## Arguments (why these values)

Every :class:`recenv.core.config.MarketConfig` field is a keyword argument. The preset sets:

| key | value | why |
|---|---|---|
| ``num_agents`` | 3 | three sellers: enough for a crowded page and non-trivial competition, small enough to train |
| ``num_items``, ``num_topics``, ``max_item_topics`` | 3000, 24, 2 | a mid-size catalog over two dozen categories; a product sits in one or two categories (a phone case: phones and accessories), unlike media items that mix up to three genres |
| ``num_users`` | 50 | shoppers come back a few times per episode (200 visits) so per-shopper history matters |
| ``slate_size`` | 4 | 3 × 4 = 12 results, the size of a results page above the fold |
| ``zipf_exponent`` | 1.2 | sales are more concentrated on best-sellers than media consumption (Market-v0 uses 1.1) |
| ``new_item_fraction`` | 0.1 | new listings arrive, but a marketplace turns over more slowly than a media catalog |
| ``price_scale`` | 1.0 | prices are in units of a typical product's price (log-normal, spread 0.6): the mean price is 1 |
| ``price_sensitivity`` | 1.0 | at the mean price, price costs about as much utility (1.0 on average) as one standard deviation of quality (0.5) plus the 0.5 by which ``no_click_utility`` is raised over Market-v0: price matters without swamping fit |
| ``response`` | ``"purchase"`` | a click is a product view; it converts with probability sigmoid(utility) and pays the price |
| ``no_click_utility`` | 2.0 | most visits end without a purchase (58 % under the myopic oracle, 86 % under random slates; raised from Market-v0's 1.5) |
| ``interest_drift`` | 0.02 | needs are not reshaped much by what one buys (Market-v0: 0.05) |
| ``boredom_growth``, ``boredom_decay``, ``boredom_exposure`` | 0.5, 0.95, 0.0 | looking at a product dulls the need for its category (a second kettle is rarely wanted; the core cannot tie this to the purchase, see below), which comes back slowly: the decay is per market step, and a shopper returns after a median 18 steps, by which 40 % is left; merely seeing products on the page does not bore |
| ``session_budget``, ``browse_cost`` | 6.0, 0.3 | a shopping session is about ten result pages and a handful of product views (a view costs half the product's length, mean 0.5). Sessions rarely end within an episode: a shopper makes 4 of the 200 visits on average |

Not modelled (core limits): boredom and interest drift follow the click, not the purchase
(satisfaction does follow the purchase: a click that does not convert counts half); sellers
cannot set prices.

## Version history

- v0: initial release.
"""

from __future__ import annotations

from typing import Any

import torch

from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.scenarios._factories import pettingzoo_factories

ENV_ID = "recenv/ECommerce-v0"
CONFIG = MarketConfig(
    num_agents=3,
    num_items=3000,
    num_topics=24,
    max_item_topics=2,
    num_users=50,
    num_candidates=20,
    slate_size=4,
    zipf_exponent=1.2,
    new_item_fraction=0.1,
    price_scale=1.0,
    price_sensitivity=1.0,
    response="purchase",
    no_click_utility=2.0,
    interest_drift=0.02,
    boredom_growth=0.5,
    boredom_decay=0.95,
    boredom_exposure=0.0,
    session_budget=6.0,
    browse_cost=0.3,
)


def build(
    *, num_envs: int, device: str | torch.device = "cpu", seed: int | None = None, **config: Any
) -> BatchedMarket:
    return BatchedMarket(MarketConfig.from_kwargs(CONFIG, **config), num_envs, device, seed)


parallel_env, env = pettingzoo_factories(ENV_ID)
