"""# Music-v0

A music streaming home page run by a team: ``agent_0`` recommends **songs**, ``agent_1``
recommends **podcasts**, and both are rewarded with the listener's total listening time. Items
are short, listeners come back to what they like (repeat consumption), and a track that does
not fit is skipped.

| Import | `recenv.make("recenv/Music-v0")` / `recenv.make_vec("recenv/Music-v0", num_envs=N)` |
|---|---|
| Actions | slate: ``SlateSpace(20, 4)`` (4 distinct candidates of 20) |
| Parallel API | yes |
| Agents | ``agent_0``: songs; ``agent_1``: podcast episodes (one agent per content type) |
| Observation | ``Dict`` (as Market-v0) or flat ``Box`` with ``flatten_obs=True`` |
| State | ``Box(state_dim,)`` global latent view |
| Reward | cooperative: both agents receive the team's listening time |

## Description

``U = 25`` listeners, ``I = 4000`` items over ``T = 16`` moods/themes shared by both content
types. The catalog is split **by content type**, not at random: 20 % of the items are
podcast episodes owned by ``agent_1``, six times as long as a song on average; the rest are
songs owned by ``agent_0``. Both slates share one page of 8 entries; the two blocks swap
places from step to step, so neither content type owns the top of the page
(``page_order="fixed"`` puts songs first). The listener plays at most one item; the share listened is ``sigmoid(utility)`` with
noise, and under half is a **skip**, worth a tenth of the time listened. A podcast that fits
earns as much as several songs but uses as much of the session; the team must balance the
page between the two.

**Repeat consumption**: boredom is weak (0.1 per play) and fades fast (×0.7 per market step:
a listener's next request comes a median 12 steps later, when about 1 % of it is left, so in
effect a play does not bore the listener at all), and retrieval leans hard on each mood's
best-known tracks (``retrieval_skew = 3``), so the same tracks and moods come back and are
played again: about 18 % of plays under the myopic oracle (6 % under random slates) are
replays of an item the listener already played this episode. Skips: about 16 % of plays
under the oracle, 43 % under random slates (64 markets, one episode, seed 0; random: the
registered ``random`` agent). The core has no per-item memory (see "Not modelled").

## Observation (per agent)

As in Market-v0 (see its page). A candidate's ``length`` column is the item's length (an
episode is six times a song on average, but the two log-normal ranges overlap: a song can be
longer than a short episode); each agent's candidates are all of its own content type.
``candidate_ids`` are catalog ids.

## Action

K = 4 distinct, unmasked candidate indices (``invalid_slate="raise"`` by default).

## Choice model

Conditional logit over the 8 entries plus playing nothing (utility 1.0):

``utility = 3 · interest·moods + 1 · taste·embedding + 1 · quality − 2 · boredom·moods
− 1 · log2(1 + position)``

## Reward

``cooperative``: every agent receives the listening time of the request (a skip counts a
tenth of the time listened). ``infos[agent]["engagement"]`` is set for the agent whose item
was played.

## Episode

``H = 300`` requests (truncation), or every listener churned (termination).

Baselines (64 markets, one episode, seed 0): the myopic oracle earns 178.7 team listening time per
episode, uniformly random valid slates 79.1 (× 2.26; the registered ``random`` agent under
``agents.evaluate`` earns 79.4). The ``value_oracle``, which builds the
slate that maximises the expected listening time, earns 248.4 (× 1.39 the oracle's).

## Arguments (why these values)

| key | value | why |
|---|---|---|
| ``num_agents``, ``ownership`` | 2, ``"partition"`` | one agent per content type (songs, podcasts); the partition is by type, built in :func:`music_catalog` (any other ``num_agents`` is an error) |
| ``reward_mode``, ``topology`` | ``"cooperative"``, ``"shared_page"`` | the agents are teams of one service, filling one page together |
| ``num_items``, ``num_topics`` | 4000, 16 | a larger catalog of short items, over moods/themes |
| ``slate_size`` | 4 | four songs and four podcast episodes: a page of 8 |
| ``response``, ``engagement_noise`` | ``"listen"``, 0.3 | the listened share decides skips; more noise than Market-v0 because a listener's patience varies |
| ``mean_item_length`` | 0.25 | a song is short next to a session (podcasts: × 6, ``PODCAST_LENGTH``) |
| ``session_budget``, ``browse_cost`` | 6.0, 0.05 | a session would hold a couple of dozen songs alone, but half the plays are podcast episodes: a session holds about 9 plays under the myopic oracle (median 8), 10 under random slates (measured on the sessions begun in the first 1000 steps of 16 markets run with ``horizon=3000``, seed 0). Choosing the next track costs little |
| ``boredom_growth``, ``boredom_decay``, ``boredom_exposure`` | 0.1, 0.7, 0.0 | people replay favourites: a play bores little and the effect is gone within a few market steps, before the listener's next request |
| ``no_click_utility`` | 1.0 | listeners play something on most requests (Market-v0: 1.5) |
| ``interest_drift`` | 0.02 | musical taste is stable within an episode |
| ``retrieval_skew`` | 3.0 | candidates concentrate on familiar tracks, which makes replays common (Market-v0: 2.0) |
| ``horizon`` | 300 | many short requests |

``PODCAST_SHARE = 0.2`` and ``PODCAST_LENGTH = 6.0`` are part of the scenario (a change bumps
the version).

Not modelled (core limits): per-item familiarity (replaying *this* track, rising then
fading) and a "recently played" retrieval source; repeats come from weak, fast-fading topic
boredom and head-heavy retrieval instead. A skip is not flagged in ``info``: it is a play
whose engagement is below ``0.05 × length``.

## Version history

- v0: initial release.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from recenv.core.catalog import Catalog, _retrieval_lists, build_catalog
from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.scenarios._factories import pettingzoo_factories

ENV_ID = "recenv/Music-v0"
CONTENT_TYPES = ("songs", "podcasts")  # agent i recommends CONTENT_TYPES[i]
PODCAST_SHARE = 0.2  # share of the catalog that is podcast episodes
PODCAST_LENGTH = 6.0  # a podcast episode is this many times as long as a song
CONFIG = MarketConfig(
    num_agents=2,
    ownership="partition",
    reward_mode="cooperative",
    topology="shared_page",
    num_items=4000,
    num_topics=16,
    slate_size=4,
    num_candidates=20,
    response="listen",
    engagement_noise=0.3,
    mean_item_length=0.25,
    session_budget=6.0,
    browse_cost=0.05,
    boredom_growth=0.1,
    boredom_decay=0.7,
    boredom_exposure=0.0,
    no_click_utility=1.0,
    interest_drift=0.02,
    retrieval_skew=3.0,
    horizon=300,
)


def music_catalog(cfg: MarketConfig) -> Catalog:
    """The catalog of ``cfg`` with ownership by content type: podcast episodes (a
    ``PODCAST_SHARE`` of items, ``PODCAST_LENGTH`` times longer) belong to ``agent_1``, songs
    to ``agent_0``. Deterministic in ``cfg.catalog_seed``."""
    if cfg.num_agents != len(CONTENT_TYPES):
        raise ValueError(
            f"Music-v0 has one agent per content type {list(CONTENT_TYPES)}: num_agents must "
            f"be {len(CONTENT_TYPES)}, got {cfg.num_agents}"
        )
    if cfg.ownership != "partition":
        raise ValueError(
            f"Music-v0 partitions the catalog by content type: ownership must be 'partition', "
            f"got {cfg.ownership!r}"
        )
    base = build_catalog(cfg)
    g = torch.Generator().manual_seed(cfg.catalog_seed + 0x5EED)
    is_podcast = torch.rand(cfg.num_items, generator=g, dtype=torch.float32) < PODCAST_SHARE
    owner = is_podcast.long()
    for a, name in enumerate(CONTENT_TYPES):
        available = int(((owner == a) & (base.arrival == 0)).sum())
        if available < cfg.num_candidates:
            raise ValueError(
                f"only {available} {name} exist at t=0, fewer than num_candidates="
                f"{cfg.num_candidates}: raise num_items or lower new_item_fraction"
            )
    length = torch.where(is_podcast, base.length * PODCAST_LENGTH, base.length)
    lists = _retrieval_lists(cfg, base.popularity, owner, base.arrival, base.main_topic)
    return dataclasses.replace(base, owner=owner, length=length, **lists)


def build(
    *, num_envs: int, device: str | torch.device = "cpu", seed: int | None = None, **config: Any
) -> BatchedMarket:
    cfg = MarketConfig.from_kwargs(CONFIG, **config)
    return BatchedMarket(cfg, num_envs, device, seed, catalog=music_catalog(cfg))


parallel_env, env = pettingzoo_factories(ENV_ID)
