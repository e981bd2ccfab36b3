"""# FromLog-v0

A market whose users and items are those of a real interaction log (MovieLens, Last.fm, or
any ``user, item[, rating[, timestamp]]`` file): implicit-feedback matrix factorisation
(Hu, Koren & Volinsky, 2008) gives the items' embeddings and the users' tastes; topics, item
popularity, user activity and the catalog's size and sparsity come from the log.

| Import | `recenv.make("recenv/FromLog-v0", log=PATH)` / `recenv.make_vec("recenv/FromLog-v0", num_envs=N, log=PATH)` |
|---|---|
| Actions | slate: ``SlateSpace(100, 3)`` (3 distinct candidates of 100) |
| Parallel API | yes |
| Agents | ``agent_0 … agent_{A-1}`` (default A = 2, each owning a random half of the catalog) |
| Observation | ``Dict`` (as Market-v0) or flat ``Box`` with ``flatten_obs=True`` |
| State | ``Box(state_dim,)`` global latent view |
| Users, items | the log's: ``U`` = users in the log, ``I`` = items in the log |

## Description

``log`` is required: a path (read with :func:`recenv.data.load_log`, ``log_format`` as there)
or an :class:`recenv.data.InteractionLog`. Every user of the log needs at least one interaction
(a user arrives as often as they interacted): a half of ``InteractionLog.time_split`` keeps the
whole log's ids, so ``compact()`` it first; a log with users without interactions is refused
before the fit. Building the market:

1. **ALS** (:func:`recenv.data.mf.fit_als`) on the log with confidence ``1 + α·w``
   (``w = 1`` per rating for explicit ratings, ``log1p(count)`` for play counts), ``D =
   embed_dim`` factors. ``taste_u`` = user factors, ``embed_i`` = item factors, so the taste
   term of the utility is the fitted preference ``x_u · y_i`` (about 1 for a user's own items,
   near 0 for unrelated ones).
2. **Topics**: spherical k-means of the item factors into ``T = num_topics`` clusters; each
   item weighs its 1–3 nearest clusters (softmax of cosine similarity × 10). A user's latent
   interests are the topic mix of the items they interacted with.
3. **Popularity** = interactions per item (the retrieval lists' order and the Zipf-like prior);
   **activity** = interactions per user (how often each user arrives).
4. **Quality**: explicit ratings give each item its mean rating shrunk toward the global mean
   (10 pseudo-ratings) minus the global mean, in standard deviations of all ratings (a
   much-loved film scores about +1); count logs give 0. The catalog's quality is this score
   times ``quality_std`` (0.5 by default), as a generated catalog's quality is a standard
   normal times ``quality_std``.
5. **Arrivals**: with timestamps, the ``new_item_fraction`` of items that first appear latest
   in the log arrive during the episode, in the order they first appeared; without, arrivals
   are drawn as in Market-v0. Either way each agent's K most popular items are there from
   the start, as in Market-v0, so every agent can fill a slate on every request.
6. Item length, price and ownership are drawn as in Market-v0 from ``catalog_seed`` (logs
   carry none of them).

Fitting ml-latest-small (100,836 ratings) takes 1–3 s; fitted models are cached in
the process per (file, its inode, size, modification and change times, fit parameters) — or
per ``InteractionLog`` content (a digest of its interactions' arrays, taken at every ``make``:
about 2 ms per 100,000 interactions) — so ``make`` does not refit, a file rewritten in place
(even with its size and modification time restored, as ``cp -p`` or ``rsync -t`` do) is read
again, and an ``InteractionLog`` whose arrays were changed in place is fitted again (two log
objects with equal content share one fit). Nothing is cached on disk.

Every simulated user is a log user: ``obs["user_id"]`` is the log user's contiguous index
(``InteractionLog.user_ids`` maps it back), and ``candidate_ids`` index
``InteractionLog.item_ids``. The fidelity report (``experiments/fidelity.py``) compares
simulated with held-out real behaviour.

## Observation, Action

As in Market-v0 (see its page).

## Choice model

Conditional logit over the page plus no click (utility 1.5):

``utility = 3 · interest·topics + 6 · taste·embedding + 1 · quality − 2 · boredom·topics
− 1 · log2(1 + position)``

## Reward

As in Market-v0: ``competitive`` engagement by default.

## Episode

``H = 200`` requests (truncation), or every user churned (termination).

## Arguments (why these values)

Besides every :class:`recenv.core.config.MarketConfig` field (except ``num_users`` and
``num_items``, which come from the log, and ``item_stats_size``, set to ``num_items`` up to
65,536 so per-item counters are exact). Every value the log does not decide is checked, with
``MarketConfig``'s messages, before the log is read:

| key | default | why |
|---|---|---|
| ``log`` | required | the interaction log: path or ``InteractionLog`` |
| ``log_format`` | ``"auto"`` | one of :data:`recenv.data.FORMATS`; auto goes by file name |
| ``embed_dim`` | 16 | ALS factors: on a per-user time split of ml-latest-small, 16 to 32 factors give the same next-item hit rate within noise; 16 is cheaper |
| ``num_topics`` | 16 | enough clusters to tell genres apart in a movie or music catalog |
| ``num_candidates`` | 100 | retrieval always includes each agent's ``K`` most popular items; among 20 candidates they took ~45 % of all simulated clicks on ml-latest-small (real top-10 % share 0.65, simulated 0.81); among 100 they take ~14 % and the top-10 % share falls to ~0.77 |
| ``taste_weight`` | 6.0 | ALS preferences are on a 0–1 scale; × 6 lets a good fit outweigh the no-click option (1.5) as it does for a user's own items, while interest (× 3) and quality (× 1) still count. Of 2, 4 and 6 it gave the simulated item popularity closest to the real one (Spearman 0.53 at 8,000 requests, against 0.64 for a real sample of the same size) |
| ``als_regularization`` | 10.0 | λ; chosen with ``als_alpha`` on the same split (hit rate flat between 1 and 50) |
| ``als_alpha`` | 5.0 | confidence slope α of Hu et al. |
| ``als_iterations`` | 15 | the training objective changes < 0.5 % after 15 |
| ``als_backend`` | ``"torch"`` | the built-in solver: seeded and reproducible, no dependency; ``"implicit"`` uses the ``implicit`` library (``pip install recenv[data]``) for large logs |
| ``confidence`` | ``"auto"`` | ``binary`` for ratings (a rating is one interaction), ``log`` for counts |
| ``topic_sharpness`` | 10.0 | softmax scale of an item's topic weights: one main topic, minor second and third |
| ``fit_seed`` | 0 | seed of ALS initialisation and k-means (part of the scenario, like ``catalog_seed``) |

## Data

MovieLens: F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 5(4), 2015 (GroupLens licence: non-commercial use; cite). Last.fm HetRec 2011:
Cantador, Brusilovsky and Kuflik, 2nd HetRec workshop, RecSys 2011. Nothing is downloaded:
point ``log`` at your copy.

## Version history

- v0: initial release.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from recenv.core.catalog import Catalog, _head_present, _retrieval_lists, catalog_from_arrays
from recenv.core.config import (
    MAX_ITEMS,
    InvalidConfig,
    MarketConfig,
    UnknownConfigKey,
    did_you_mean,
    shown,
)
from recenv.core.market import BatchedMarket, check_batch
from recenv.core.users import Population
from recenv.data.fit import LogFit, LogFitConfig, fit_log
from recenv.data.logs import FORMATS, InteractionLog, load_log
from recenv.scenarios._factories import pettingzoo_factories

ENV_ID = "recenv/FromLog-v0"
CONFIG = MarketConfig(embed_dim=16, num_topics=16, num_candidates=100, taste_weight=6.0)
FIT_CONFIG = LogFitConfig(als_regularization=10.0, als_alpha=5.0)
FROM_LOG = ("num_users", "num_items")  # MarketConfig keys the log decides
MAX_EXACT_STATS = 1 << 16
# Stand-ins for the sizes the log decides, so that the market config is checked before the log
# is read: num_items is the largest catalog a config allows (MAX_ITEMS), at least any log's, so
# the one rule it enters (each agent's share of the catalog holds num_candidates items at t=0)
# fails early only where no log satisfies it.
_UNREAD_LOG = {"num_users": 1, "num_items": MAX_ITEMS}
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()
_logs: OrderedDict[tuple, InteractionLog] = OrderedDict()
_fits: OrderedDict[tuple, LogFit] = OrderedDict()


def build(
    *,
    num_envs: int,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    log: str | os.PathLike | InteractionLog | None = None,
    log_format: str = "auto",
    **config: Any,
) -> BatchedMarket:
    """The batched market of ``log`` (see the page above for the keys)."""
    check_batch(num_envs, device, seed)  # before the log is read and fitted
    cfg, _, _, fit = _prepare(log, log_format, config)
    return BatchedMarket(
        cfg,
        num_envs,
        device,
        seed,
        catalog=log_catalog(cfg, fit),
        population=Population(fit.interest, fit.taste, fit.activity),
    )


def fitted(
    log: str | os.PathLike | InteractionLog, log_format: str = "auto", **config: Any
) -> tuple[MarketConfig, InteractionLog, LogFit]:
    """The market config, the log and the fitted arrays ``build`` would use. The fit is
    cached: this is a copy of it, so changing its tensors changes no later ``make``. A log read
    from a file is cached too, with read-only arrays."""
    cfg, _, data, fit = _prepare(log, log_format, config)
    return cfg, data, fit


def log_catalog(cfg: MarketConfig, fit: LogFit) -> Catalog:
    """The catalog of a fitted log: items' topics, embeddings, popularity and quality from
    the fit; arrivals from first appearance when the log has timestamps."""
    base = catalog_from_arrays(
        cfg, fit.topics, fit.embed, fit.popularity, fit.quality * cfg.quality_std
    )
    if fit.first_seen is None or cfg.new_item_fraction == 0:
        return base
    I = cfg.num_items
    n_new = int(I * cfg.new_item_fraction)
    arrival = torch.zeros(I, dtype=torch.int64)
    if n_new and cfg.horizon > 1:
        latest = torch.argsort(fit.first_seen, stable=True)[I - n_new :]  # in order of appearance
        arrival[latest] = 1 + (torch.arange(n_new) * (cfg.horizon - 1)) // n_new
    # As in a generated catalog, each agent's K most popular items are there from t=0: the
    # newest items can fall mostly to one agent (ownership is drawn, not taken from the log),
    # which would leave it fewer than K items to fill a slate with. On MovieLens no item
    # moves (the most popular films are old ones).
    arrival = _head_present(cfg, base.popularity, base.owner, arrival)
    lists = _retrieval_lists(cfg, base.popularity, base.owner, arrival, base.main_topic)
    return dataclasses.replace(base, arrival=arrival, **lists)


def _prepare(
    log: Any, log_format: str, config: dict[str, Any]
) -> tuple[MarketConfig, LogFitConfig, InteractionLog, LogFit]:
    if log is None:
        raise ValueError(
            f"{ENV_ID} needs log=PATH (an interaction log file, e.g. MovieLens ratings.csv) or "
            "an InteractionLog; nothing is downloaded"
        )
    fit_keys = LogFitConfig.field_names()
    market_keys = MarketConfig.field_names()
    unknown = sorted(k for k in config if k not in fit_keys and k not in market_keys)
    if unknown:
        raise UnknownConfigKey(
            f"unknown config key(s) {unknown} for {ENV_ID}; valid keys: log, log_format, "
            f"{fit_keys}, and the MarketConfig keys {market_keys}"
            + did_you_mean(unknown, ["log", "log_format", *fit_keys, *market_keys])
        )
    fixed = sorted(k for k in config if k in FROM_LOG)
    if fixed:
        raise ValueError(f"{ENV_ID} takes {fixed} from the log; do not pass them")
    fit_cfg = dataclasses.replace(FIT_CONFIG, **{k: v for k, v in config.items() if k in fit_keys})
    market = {k: v for k, v in config.items() if k in market_keys}
    _check_market(market)
    if not isinstance(log_format, str) or log_format not in FORMATS:
        raise ValueError(f"log_format={shown(log_format)} must be one of {list(FORMATS)}")
    data, log_key = _load(log, log_format)
    _check_users(data)
    stats = {"item_stats_size": min(data.num_items, MAX_EXACT_STATS)}
    cfg = MarketConfig.from_kwargs(
        CONFIG,
        **{**stats, **market, "num_users": data.num_users, "num_items": data.num_items},
    )
    key = (log_key, fit_cfg, cfg.num_topics, cfg.embed_dim, cfg.max_item_topics)
    fit = _cached(_fits, key)
    if fit is None:
        fit = fit_log(
            data,
            num_topics=cfg.num_topics,
            embed_dim=cfg.embed_dim,
            max_item_topics=cfg.max_item_topics,
            config=fit_cfg,
        )
        _store(_fits, key, fit)
    # A copy: the cached tensors stay as fitted whatever the caller (or a market built on
    # them) does to what it gets (fitted()'s fit.quality.mul_(100) changed every later make).
    return cfg, fit_cfg, data, copy.deepcopy(fit)  # aliases kept (embed is mf's)


def _check_users(data: InteractionLog) -> None:
    """Refuse, before the fit, a log the market cannot take: one without interactions, or with
    users who have none (a user arrives at a rate given by their interaction count, which must
    be > 0: such a log failed after the whole fit with the population's "activity must be > 0")."""
    where = f"the log ({data.source})" if data.source else "the log"
    if len(data) == 0:
        raise ValueError(f"{ENV_ID}: {where} has no interactions")
    idle = int((data.user_counts() == 0).sum())
    if idle:
        raise ValueError(
            f"{ENV_ID}: {idle} of the {data.num_users} users of {where} have no interactions "
            "(e.g. a time split's half, which keeps the whole log's ids); a simulated user "
            "arrives as often as they interacted, so every user needs at least one: pass "
            "log.compact() to drop them"
        )


def _check_market(market: dict[str, Any]) -> None:
    """Refuse market keys that no log makes valid, with :class:`MarketConfig`'s own messages,
    before the log is read (and fitted): the config of the overrides, with stand-ins for the
    sizes the log decides (``_UNREAD_LOG``), must be valid."""
    try:
        MarketConfig.from_kwargs(
            CONFIG, **{"item_stats_size": MAX_EXACT_STATS, **market, **_UNREAD_LOG}
        )
    except InvalidConfig as e:
        if "num_items" not in str(e):
            raise
        raise InvalidConfig(
            f"{e} ({ENV_ID} takes num_items from the log; checked before reading it with "
            f"num_items={_UNREAD_LOG['num_items']}, more than any log holds, so no log "
            "satisfies this)"
        ) from None


def _content_key(log: InteractionLog) -> tuple:
    """A key equal for two logs exactly when a fit cannot tell them apart: the SHA-256 digest
    of the dtype, shape and bytes of ``user``, ``item``, ``rating`` and ``timestamp``, with the
    numbers of users and items and the rating kind (the id maps and ``source`` enter no fit)."""
    h = hashlib.sha256()
    for x in (log.user, log.item, log.rating, log.timestamp):
        if x is None:
            h.update(b"None;")
            continue
        h.update(f"{x.dtype.str}{x.shape};".encode())  # fixes the length of the bytes that follow
        h.update(np.ascontiguousarray(x).data)  # a copy only for a strided view
    return ("in-memory", h.hexdigest(), log.num_users, log.num_items, log.rating_kind)


def _load(log: Any, log_format: str) -> tuple[InteractionLog, tuple]:
    if isinstance(log, InteractionLog):
        # Keyed by content, hashed at every make: an InteractionLog is frozen but its arrays
        # are not, and a key by identity handed out the old data's fit, silently, after
        # log.rating[:] = 1. A digest costs ~2 ms per 100k interactions (sha256, ml-latest-
        # small's 3.2 MB: as fast as sha1 here, blake2b took 3.4 ms); keeping a copy to compare
        # with would cost as much each make, and memory for up to _CACHE_SIZE logs. The key
        # holds nothing of the log, so the cache keeps no alias the caller can change (and no
        # object alive whose id another log could take), and equal logs share a fit. The log
        # itself is not cached: nothing would read it.
        return log, _content_key(log)
    if not isinstance(log, (str, os.PathLike)):
        raise ValueError(f"log={shown(log)} must be a path or an InteractionLog")
    path = os.path.abspath(os.fspath(log))
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the interaction log: {e.strerror}") from None
    # ctime changes with any write or utime(), so a file rewritten with the same size and
    # mtime is not mistaken for the cached one; the inode catches a file replaced by rename.
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, log_format)
    data = _cached(_logs, key)
    if data is None:
        data = load_log(path, log_format)
        # Read-only: fitted() hands out this cached log, and a change to its arrays would
        # reach the next fit of the file (another fit config) in this process.
        for x in (data.user, data.item, data.rating, data.timestamp, data.user_ids, data.item_ids):
            if x is not None:
                x.flags.writeable = False
        _store(_logs, key, data)
    return data, key


def _cached(cache: OrderedDict, key: tuple) -> Any:
    # Under the lock: markets made from several threads at once share the caches, and an
    # eviction between the membership test and move_to_end raised KeyError.
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        return None


def _store(cache: OrderedDict, key: tuple, value: Any) -> None:
    with _CACHE_LOCK:
        cache[key] = value
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


parallel_env, env = pettingzoo_factories(ENV_ID)
