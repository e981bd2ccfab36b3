"""TensorBoard logging of a run, in CleanRL's scalar namespaces (real event files via
``torch.utils.tensorboard.SummaryWriter``).

=============================  ==============================================================
``charts/episodic_return``     mean return of the agent under test over the episodes that
                               ended since the last log (``_agent_N``: per env agent)
``charts/episodic_length``     requests per episode
``charts/sps``                 env steps per second (wall clock)
``charts/*``, ``losses/*``     what ``agent.learn`` reports (``losses/td``, ``charts/epsilon``)
``rec/ctr``                    clicks per request
``rec/engagement``             engagement per request
``rec/retention``              share of users not churned at the episode's end
``rec/market_share_agent_N``   share of the user's choices won by env agent N
``rec/coverage``               share of the catalog exposed in the episode
``rec/diversity``              intra-list diversity of the shown slates
``rec/novelty``                mean novelty (self-information) of the shown items
``rec/exposure_gini``          Gini coefficient of item exposure (0: even)
``rec/satisfaction``           mean user satisfaction at the episode's end
``eval/*``                     greedy evaluation after training, at the final step
=============================  ==============================================================

The hyperparameters go in as a markdown table (``add_text("hyperparameters", ...)``).
The writer is flushed before every checkpoint, and resuming passes ``purge_step``: the
scalars a killed run wrote after its last checkpoint (or all of them, when it had none; or its
evaluation too, when it died after logging it) are hidden, so the resumed run's event files
read exactly like an uninterrupted run's (:meth:`experiments.runner.Trainer._purge_step`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from torch.utils.tensorboard import SummaryWriter

# Episode metric (recenv's info["episode"]) -> its rec/ tag.
REC_TAGS = {
    "ctr": "rec/ctr",
    "engagement_per_request": "rec/engagement",
    "retention": "rec/retention",
    "coverage": "rec/coverage",
    "diversity": "rec/diversity",
    "novelty": "rec/novelty",
    "exposure_gini": "rec/exposure_gini",
    "satisfaction": "rec/satisfaction",
}
NAMESPACES = ("charts", "losses", "rec", "eval")


def metric_tag(name: str) -> str:
    """An agent metric's tag: CleanRL names pass through; a team member's
    ``"iql[agent_0]/losses/td"`` becomes ``"losses/td/iql_agent_0"``."""
    parts = name.split("/")
    if parts[0] in NAMESPACES:
        return name
    for i, p in enumerate(parts):
        if p in NAMESPACES:
            owner = _clean("_".join(parts[:i]))
            return "/".join([*parts[i:], owner])
    return f"charts/{_clean(name)}"


def _clean(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def episode_scalars(point: Mapping[str, float]) -> dict[str, float]:
    """The tags of one curve point (see :func:`experiments.runner` curve points)."""
    out: dict[str, float] = {}
    for key, value in point.items():
        if key == "return":
            out["charts/episodic_return"] = value
        elif key.startswith("return/"):
            out[f"charts/episodic_return_{key.split('/', 1)[1]}"] = value
        elif key == "length":
            out["charts/episodic_length"] = value
        elif key == "episodes":
            out["charts/episodes"] = value
        elif key.startswith("market_share/"):
            out[f"rec/market_share_{key.split('/', 1)[1]}"] = value
        elif key in REC_TAGS:
            out[REC_TAGS[key]] = value
    return out


class RunLogger:
    """A run's TensorBoard writer. ``purge_step``: None for a new run, else the step from
    which the events earlier processes wrote into ``log_dir`` are hidden.

    Every writer starts its file with a ``SessionLog.START`` (a new run's at step 0, where it
    hides nothing): TensorBoard's Python loader (``--load_fast=false``) ignores the first START
    of a run and purges at every later one, so the first process must write one for a resumed
    process's to count. A resumed writer writes its START twice, which is a no-op after the
    first, and covers event files written before every writer started with one."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step or 0, flush_secs=30)
        if purge_step is not None:
            self.writer.file_writer.add_event(
                Event(step=purge_step, session_log=SessionLog(status=SessionLog.START))
            )

    def hyperparameters(self, config: Mapping[str, Any]) -> None:
        rows = "\n".join(f"|{k}|{_cell(v)}|" for k, v in _flatten(config).items())
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows)

    def scalars(self, step: int, values: Mapping[str, float]) -> dict[str, float]:
        """Log ``values`` (tag -> value) at ``step``; returns what was logged."""
        out = {tag: float(v) for tag, v in values.items()}
        for tag, v in out.items():
            self.writer.add_scalar(tag, v, step)
        return out

    def agent_metrics(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
        return self.scalars(step, {metric_tag(k): v for k, v in metrics.items()})

    def episodes(self, step: int, point: Mapping[str, float]) -> dict[str, float]:
        return self.scalars(step, episode_scalars(point))

    def evaluation(self, step: int, results: Mapping[str, float]) -> dict[str, float]:
        return self.scalars(
            step, {f"eval/{k.replace('/', '_')}": v for k, v in results.items() if k != "episodes"}
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|")
