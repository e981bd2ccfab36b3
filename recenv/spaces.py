"""The slate action space: a ``MultiDiscrete([C] * K)`` whose samples are K distinct,
unmasked candidates.

It *is* a ``MultiDiscrete`` subclass, so SB3, RLlib and TorchRL see a MultiDiscrete; but
``sample(mask)`` accepts the 1-D binary ``action_mask`` of length ``C`` that PettingZoo's test
utilities pass, and ``contains`` checks that the K slots are distinct (DESIGN §4).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from recenv.core.config import MarketConfig


class SlateSpace(spaces.MultiDiscrete):
    """K distinct indices into C candidates."""

    def __init__(self, num_candidates: int, slate_size: int, seed: int | None = None):
        if slate_size > num_candidates:
            raise ValueError(f"slate_size={slate_size} > num_candidates={num_candidates}")
        super().__init__(np.full(slate_size, num_candidates, dtype=np.int64), seed=seed)
        self.num_candidates = num_candidates
        self.slate_size = slate_size

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """K distinct candidates, uniformly; only unmasked ones when ``mask`` is given.

        ``mask`` may be a 1-D binary array of length C (the env's ``action_mask``) or
        Gymnasium's tuple of per-slot masks (their intersection is used).
        """
        if probability is not None:
            raise ValueError("SlateSpace.sample does not support `probability`; use a mask")
        C, K = self.num_candidates, self.slate_size
        if mask is None:
            allowed = np.arange(C)
        else:
            masks = mask if isinstance(mask, tuple) else (mask,)
            allowed = np.flatnonzero(np.logical_and.reduce([self._mask_bits(m) for m in masks]))
            if len(allowed) < K:
                raise ValueError(
                    f"only {len(allowed)} unmasked candidates, a slate needs {K} distinct ones"
                )
        return self.np_random.choice(allowed, size=K, replace=False).astype(self.dtype)

    def _mask_bits(self, mask: Any) -> np.ndarray:
        """One 1-D mask of length C as bools. Refuses another shape, and values other than
        0/1 (``flatnonzero`` would count a score or probability of 0.1 as unmasked)."""
        mask = np.asarray(mask)
        C = self.num_candidates
        if mask.shape != (C,):
            raise ValueError(f"action mask must have shape ({C},), got {mask.shape}")
        if mask.dtype != bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError(
                f"action mask must be binary (0/1 or bool), got values {np.unique(mask)}"
            )
        return mask.astype(bool, copy=False)

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        x = np.asarray(x)
        # Integer indices only, as the env's check: MultiDiscrete casts bool to int.
        return x.dtype.kind in "iu" and len(np.unique(x)) == x.size

    def __repr__(self) -> str:
        return f"SlateSpace(num_candidates={self.num_candidates}, slate_size={self.slate_size})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, SlateSpace)
            and other.num_candidates == self.num_candidates
            and other.slate_size == self.slate_size
        )

    __hash__ = None  # type: ignore[assignment]  # mutable RNG state, like gymnasium spaces


def observation_space(cfg: MarketConfig, flatten_obs: bool = False) -> spaces.Space:
    """One agent's observation space: the ``Dict`` of the PettingZoo face, or its flat ``Box``
    (user, history, candidates row by row, action mask; ids left out)."""
    C = cfg.num_candidates
    inf = np.float32(np.inf)
    if flatten_obs:
        flat = cfg.user_dim + cfg.history_dim + C * cfg.candidate_dim + C
        return spaces.Box(-inf, inf, (flat,), np.float32)
    return spaces.Dict(
        {
            "user": spaces.Box(-inf, inf, (cfg.user_dim,), np.float32),
            "history": spaces.Box(-inf, inf, (cfg.history_dim,), np.float32),
            "candidates": spaces.Box(-inf, inf, (C, cfg.candidate_dim), np.float32),
            "action_mask": spaces.Box(0, 1, (C,), np.int8),
            "user_id": spaces.Box(0, cfg.num_users - 1, (1,), np.int64),
            "candidate_ids": spaces.Box(0, cfg.num_items - 1, (C,), np.int64),
        }
    )
