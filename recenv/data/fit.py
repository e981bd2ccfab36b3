"""From an interaction log to the arrays of a simulated market.

:func:`fit_log` turns an :class:`~recenv.data.logs.InteractionLog` into a :class:`LogFit`:

- **item embeddings** and **user tastes**: the item and user factors of implicit ALS
  (:mod:`recenv.data.mf`), so ``taste_u . embed_i`` is the fitted preference of ``u`` for ``i``;
- **topics**: spherical k-means of the item factors into ``T`` clusters (weighted by item
  popularity); an item's topic vector is a softmax of its cosine similarity to the
  ``max_item_topics`` nearest centroids, so it is sparse like a generated catalog's;
- **user interests**: the (confidence-weighted) mean topic vector of the items the user
  interacted with (unweighted when all the user's weights are 0, e.g. play counts of 0;
  uniform over topics for a user without interactions);
- **popularity** and **activity**: interaction counts per item and per user;
- **quality**: for explicit ratings, each item's mean rating shrunk toward the global mean
  (10 pseudo-ratings), minus the global mean, in standard deviations of all ratings (a
  much-loved film is about +1); 0 for logs without explicit ratings;
- **first_seen**: each item's first timestamp (when the log has timestamps).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from recenv.core.config import check_int, field_type_errors, option
from recenv.data.logs import InteractionLog
from recenv.data.mf import (
    BACKENDS,
    CONFIDENCES,
    MAX_CONFIDENCE,
    ImplicitMF,
    confidence_weights,
    fit_als,
)

RATING_PRIOR = 10.0  # pseudo-ratings at the global mean when shrinking an item's mean rating


_f = option


@dataclass(frozen=True)
class LogFitConfig:
    """How a market is fitted to a log (the market's own keys live in ``MarketConfig``)."""

    als_regularization: float = _f(1.0, "ALS L2 regularization λ")
    als_alpha: float = _f(10.0, "ALS confidence slope: c = 1 + alpha * w")
    als_iterations: int = _f(15, "ALS iterations (each solves users, then items)")
    als_backend: str = _f("torch", "ALS implementation: " + ", ".join(BACKENDS))
    confidence: str = _f("auto", "interaction weight w: " + ", ".join(CONFIDENCES))
    topic_sharpness: float = _f(10.0, "softmax scale of cosine similarity to topic centroids")
    fit_seed: int = _f(0, "seed of the ALS initialisation and of k-means")

    def __post_init__(self) -> None:
        errs = field_type_errors(self, finite=True)  # types: an int, a float (not a bool), ...
        if errs:
            raise ValueError("invalid LogFitConfig: " + "; ".join(errs))
        if self.fit_seed < 0:
            errs.append(f"fit_seed={self.fit_seed} must be >= 0")
        if self.als_backend not in BACKENDS:
            errs.append(f"als_backend={self.als_backend!r} must be one of {list(BACKENDS)}")
        if self.confidence not in CONFIDENCES:
            errs.append(f"confidence={self.confidence!r} must be one of {list(CONFIDENCES)}")
        if isinstance(self.als_iterations, bool) or not isinstance(self.als_iterations, int):
            errs.append(f"als_iterations={self.als_iterations!r} must be an int")
        elif self.als_iterations <= 0:
            errs.append(f"als_iterations={self.als_iterations} must be > 0")
        for name in ("als_regularization", "als_alpha", "topic_sharpness"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                errs.append(f"{name}={v!r} must be a finite number >= 0")
            elif name == "als_alpha" and v > MAX_CONFIDENCE:
                # Refused before the log is read: 1 + alpha * w exceeds what ALS can fit for
                # any interaction of weight 1 (see mf.MAX_CONFIDENCE); 3e38 gave NaN factors.
                errs.append(f"als_alpha={v!r} must be in [0, {MAX_CONFIDENCE:g}]")
        if errs:
            raise ValueError("invalid LogFitConfig: " + "; ".join(errs))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class LogFit:
    """Per-item and per-user arrays fitted to a log; ``I`` items, ``U`` users, ``T`` topics,
    ``D`` factors. (``recenv/FromLog-v0`` caches fits and hands out copies.)"""

    topics: torch.Tensor  # [I, T] sparse rows summing to 1
    embed: torch.Tensor  # [I, D] ALS item factors
    popularity: torch.Tensor  # [I] interaction counts (float)
    quality: torch.Tensor  # [I] shrunk mean rating - global mean, / rating std (0 without)
    first_seen: torch.Tensor | None  # [I] float64 first timestamp, None without timestamps
    interest: torch.Tensor  # [U, T] rows summing to 1
    taste: torch.Tensor  # [U, D] ALS user factors
    activity: torch.Tensor  # [U] interaction counts (float)
    mf: ImplicitMF = dataclasses.field(repr=False)


def fit_log(
    log: InteractionLog,
    *,
    num_topics: int,
    embed_dim: int,
    max_item_topics: int = 3,
    config: LogFitConfig | None = None,
) -> LogFit:
    """Fit the market arrays of ``log`` (see the module docstring)."""
    cfg = config if config is not None else LogFitConfig()
    num_topics = check_int("num_topics", num_topics, 1)
    max_item_topics = check_int("max_item_topics", max_item_topics, 1)
    if log.num_items < num_topics:
        raise ValueError(f"the log has {log.num_items} items, fewer than num_topics={num_topics}")
    mf = fit_als(
        log,
        factors=embed_dim,
        regularization=cfg.als_regularization,
        alpha=cfg.als_alpha,
        iterations=cfg.als_iterations,
        confidence=cfg.confidence,
        seed=cfg.fit_seed,
        backend=cfg.als_backend,
    )
    counts = torch.as_tensor(log.item_counts(), dtype=torch.float32)
    activity = torch.as_tensor(log.user_counts(), dtype=torch.float32)
    unit = torch.nn.functional.normalize(mf.item_factors.double(), dim=1)
    centroids = spherical_kmeans(unit, torch.log1p(counts).double(), num_topics, seed=cfg.fit_seed)
    topics = sparse_topics(unit @ centroids.T, max_item_topics, cfg.topic_sharpness).float()

    w = torch.as_tensor(confidence_weights(log, cfg.confidence), dtype=torch.float64)
    user = torch.tensor(log.user)  # a copy: a log cached from a file is read-only
    item_topics = topics.double()[torch.tensor(log.item)]
    interest = torch.zeros(log.num_users, num_topics, dtype=torch.float64)
    interest.index_add_(0, user, w[:, None] * item_topics)
    unweighted = torch.zeros_like(interest).index_add_(0, user, item_topics)
    zero = interest.sum(1) <= 0  # all weights 0: the plain mean of the user's items' topics
    interest[zero] = unweighted[zero]
    interest[interest.sum(1) <= 0] = 1.0  # no interactions at all: uniform
    interest = interest / interest.sum(1, keepdim=True)

    quality = torch.zeros(log.num_items)
    # (log.rating is None only without a rating_kind: InteractionLog checks it.)
    if log.rating_kind == "explicit" and log.rating is not None:
        r = log.rating
        mean = float(r.mean())
        sums = np.bincount(log.item, weights=r, minlength=log.num_items)
        shrunk = (sums + RATING_PRIOR * mean) / (log.item_counts() + RATING_PRIOR)
        std = float(r.std())
        quality = torch.as_tensor((shrunk - mean) / (std if std > 0 else 1.0)).float()

    first_seen = None
    if log.timestamp is not None:
        fs = np.full(log.num_items, np.inf)
        np.minimum.at(fs, log.item, log.timestamp)
        first_seen = torch.as_tensor(fs)
    return LogFit(
        topics=topics,
        embed=mf.item_factors,
        popularity=counts,
        quality=quality,
        first_seen=first_seen,
        interest=interest.float(),
        taste=mf.user_factors,
        activity=activity,
        mf=mf,
    )


def spherical_kmeans(
    unit: torch.Tensor,  # [I, D] unit rows
    weights: torch.Tensor,  # [I] >= 0
    k: int,
    *,
    iterations: int = 30,
    seed: int = 0,
) -> torch.Tensor:
    """``k`` unit centroids ``[k, D]`` maximising the weighted cosine similarity of each row
    to its nearest centroid; k-means++ initialisation from a seeded ``torch.Generator``."""
    g = torch.Generator().manual_seed(seed)
    n = unit.shape[0]
    w = weights.clamp(min=0) + 1e-12
    first = int(torch.multinomial(w, 1, generator=g))
    centroids = [unit[first]]
    dist = 1.0 - unit @ unit[first]
    for _ in range(1, k):
        p = (w * dist.clamp(min=0)).clamp(min=0) + 1e-12
        nxt = int(torch.multinomial(p, 1, generator=g))
        centroids.append(unit[nxt])
        dist = torch.minimum(dist, 1.0 - unit @ unit[nxt])
    c = torch.stack(centroids)
    for _ in range(iterations):
        sim = unit @ c.T
        assign = sim.argmax(1)
        new = torch.zeros_like(c).index_add_(0, assign, w[:, None] * unit)
        size = torch.zeros(k, dtype=unit.dtype).index_add_(0, assign, w)
        empty = size <= 1e-9
        if bool(empty.any()):  # re-seed empty clusters at the worst-fitting rows
            worst = sim.max(1).values.argsort()[: int(empty.sum())]
            new[empty] = unit[worst]
        new = torch.nn.functional.normalize(new, dim=1)
        if torch.allclose(new, c):
            break
        c = new
    del n
    return c


def sparse_topics(sim: torch.Tensor, max_topics: int, sharpness: float) -> torch.Tensor:
    """Topic vectors ``[I, T]`` from cosine similarities ``[I, T]``: a softmax of
    ``sharpness * sim`` over each row's ``max_topics`` most similar topics, zero elsewhere."""
    top = sim.topk(min(max_topics, sim.shape[1]), dim=1)
    w = torch.softmax(sharpness * top.values, dim=1)
    return torch.zeros_like(sim).scatter_(1, top.indices, w)
