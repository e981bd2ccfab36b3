"""What one replay learner's update regresses on: the prediction and target of its TD loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F


def td_of_one_update(
    monkeypatch: pytest.MonkeyPatch,
    buffer: Any,
    batch: Mapping[str, torch.Tensor],
    update: Callable[[], None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``update()`` with ``buffer.sample`` returning ``batch``; the prediction ``[B]`` and
    the target ``[B]`` its TD loss (``F.smooth_l1_loss``) received."""
    seen: dict[str, torch.Tensor] = {}
    loss = F.smooth_l1_loss

    def spy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.update(pred=pred.detach(), target=target.detach())
        return loss(pred, target)

    monkeypatch.setattr(F, "smooth_l1_loss", spy)
    monkeypatch.setattr(buffer, "sample", lambda *args, **kw: batch)
    update()
    return seen["pred"], seen["target"]
