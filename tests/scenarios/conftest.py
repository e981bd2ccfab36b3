"""Shared helpers for the scenario tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

PRESETS = ("recenv/ECommerce-v0", "recenv/Video-v0", "recenv/Music-v0")


def greedy_slate_np(obs: dict, num_topics: int, k: int) -> np.ndarray:
    """A deterministic observation-based policy (PettingZoo face): rank candidates by
    observed topic match with the user's features plus the candidate's last feature, its
    age / H."""
    cands = obs["candidates"]
    score = cands[:, :num_topics] @ obs["user"][:num_topics] + cands[:, -1]
    score = np.where(obs["action_mask"].astype(bool), score, -np.inf)
    return np.argsort(-score, kind="stable")[:k]


def greedy_slate_torch(obs: dict, num_topics: int, k: int) -> torch.Tensor:
    """The same policy on the batched face: ``[N, K]``."""
    cands = obs["candidates"]
    score = torch.einsum("nct,nt->nc", cands[:, :, :num_topics], obs["user"][:, :num_topics])
    score = torch.where(obs["action_mask"], score + cands[:, :, -1], -torch.inf)
    return torch.argsort(-score, dim=1, stable=True)[:, :k]


def random_slates(obs: dict, agents: list[str], k: int, g: torch.Generator) -> torch.Tensor:
    """Uniformly random valid slates on the batched face: ``[N, A, K]``."""
    mask = torch.stack([obs[a]["action_mask"] for a in agents], dim=1)
    score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
    return score.topk(k, dim=2).indices


# The real MovieLens log (GroupLens licence: never copied into the repo; tests skip without it).
# ``../shared`` beside the repository, or $RECENV_ML_LATEST_SMALL.
ML_SMALL = os.environ.get("RECENV_ML_LATEST_SMALL") or os.path.normpath(
    os.path.join(
        os.path.dirname(__file__), *[".."] * 3, "shared", "data", "ml-latest-small", "ratings.csv"
    )
)
needs_ml_small = pytest.mark.skipif(
    not os.path.exists(ML_SMALL), reason=f"MovieLens ml-latest-small not found at {ML_SMALL}"
)
