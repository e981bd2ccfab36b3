"""Training statistics of gradient updates, averaged over the updates between two reports.

Value-based learners (IQL, VDN, QMIX) log their losses and value estimates every
``metrics_every`` updates, as the mean over the updates that ran since the last report. The sums
stay on the learner's device as tensors, so an update costs no host sync; the one ``float()``
per metric happens when a report is due. They are float64 (as the count baselines' tables): a
float32 sum stops adding a loss of ~1 once it passes 2**24, and at a large ``metrics_every``
(10**6 updates and more) its mean drifts by per cents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from agents.baselines import COUNT_DTYPE
from agents.state_checks import counter

SUM_DTYPE = COUNT_DTYPE


class UpdateMetrics:
    """Running sums of per-update scalars and the number of updates they cover.

    ``add(stats)`` after each update that ran (``stats``: name -> 0-d tensor); ``report(every)``
    returns ``{name: mean}`` once at least ``every`` updates were added, and starts over; before
    that it returns ``{}``. The pending sums are part of the learner's checkpoint
    (:meth:`state_dict`), so a resumed run reports at the same steps and values as an
    uninterrupted one.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}
        self.updates = 0

    def add(self, stats: Mapping[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().to(SUM_DTYPE, copy=True)  # never aliases the caller's tensor
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.updates += 1

    def report(self, every: int) -> dict[str, float]:
        """The means since the last report once ``every`` updates ran; ``{}`` before."""
        if self.updates < every or not self.sums:
            return {}
        means = {k: float(v) / self.updates for k, v in self.sums.items()}
        self.sums, self.updates = {}, 0
        return means

    # Checkpoint keys kept from before this class existed, so older agent checkpoints load.
    def state_dict(self) -> dict[str, Any]:
        return {"metric_sums": dict(self.sums), "metric_updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; a checkpoint without the keys (written before
        pending metrics were saved) restores an empty window."""
        sums = state.get("metric_sums", {})
        # Sums saved in float32 (before they were float64) are widened.
        self.sums = {
            k: torch.as_tensor(v, device=self.device).to(SUM_DTYPE) for k, v in sums.items()
        }
        self.updates = counter(state, "metric_updates", default=0)
