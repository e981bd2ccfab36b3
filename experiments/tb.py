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

An event that cannot be appended (a full disk, ``ulimit -f``) raises a
:class:`~experiments.errors.WriteError` naming the event file and the OS's reason from the call
that logged it, and nothing more is appended to the file (what it holds is kept; the record cut
short ends it, and TensorBoard's readers stop there). ``SummaryWriter`` appended from a thread
of its own, which died on such an error with a bare ``Exception in thread`` traceback; the
error came back as a bare ``OSError`` at a later call, or not at all at ``close``
(:class:`_Appender`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.writer import FileWriter

from experiments.errors import WriteError, write_reason

try:  # SummaryWriter's writer thread, which RunLogger._open replaces by an _Appender
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
except ImportError:  # another TensorBoard: its thread is kept (its OSErrors: WriteErrors)

    class _AsyncWriterThread:  # type: ignore[no-redef]  # nothing is one
        exception: BaseException | None = None


EVENT_FILES = "events.out.tfevents.*"

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
        self.dir = Path(log_dir)
        self.file = self.dir / EVENT_FILES  # until the writer has named its file
        self._appender: _Appender | None = None
        self.writer = self._open()
        step = purge_step or 0
        with self._writing():
            # What SummaryWriter(purge_step=step) writes first, written through the _Appender.
            _file_writer(self.writer).add_event(Event(step=step, file_version="brain.Event:2"))
            for _ in range(1 if purge_step is None else 2):
                _file_writer(self.writer).add_event(
                    Event(step=step, session_log=SessionLog(status=SessionLog.START))
                )

    def _open(self) -> SummaryWriter:
        """The ``SummaryWriter``, its events appended by an :class:`_Appender`, its writer
        thread stopped. That thread writes the file's first event (in ``SummaryWriter()``): a
        failure there is a :class:`WriteError` and the thread's traceback is left out."""
        prev = threading.excepthook

        def hook(args: Any) -> None:  # a failed append, raised again here as a WriteError
            if not (
                isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)
            ):
                prev(args)

        threading.excepthook = hook
        try:
            try:
                writer = SummaryWriter(log_dir=str(self.dir), flush_secs=30)
            except OSError as e:
                for t in threading.enumerate():  # let the thread end (through `hook`) first
                    if isinstance(t, _AsyncWriterThread) and t.exception is not None:
                        t.join(timeout=5)
                mine = sorted(self.dir.glob(f"events.out.tfevents.*.{os.getpid()}.*"))
                if mine:
                    self.file = mine[-1]
                raise self._error(e) from e
            events = _file_writer(writer).event_writer
            self.file = Path(getattr(events, "_file_name", self.file))
            thread = getattr(getattr(events, "_async_writer", None), "_worker", None)
            if isinstance(thread, _AsyncWriterThread):  # else: tensorboard's own writer
                thread.stop()  # joins it: a failed write of the first event is in `exception`
                if thread.exception is not None:
                    raise self._error(thread.exception) from thread.exception
                self._appender = _Appender(events._async_writer._writer)
                events._async_writer = self._appender
            return writer
        finally:
            threading.excepthook = prev

    def _error(self, e: BaseException) -> WriteError:
        return WriteError(
            self.file,
            write_reason(e) or str(e),
            what="TensorBoard event file",
            kept="what it holds is kept",
        )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """An ``OSError`` of the writer (a failed append) as a :class:`WriteError`."""
        try:
            yield
        except OSError as e:
            raise self._error(e) from e

    def hyperparameters(self, config: Mapping[str, Any]) -> None:
        rows = "\n".join(f"|{k}|{_cell(v)}|" for k, v in _flatten(config).items())
        with self._writing():
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows)

    def scalars(self, step: int, values: Mapping[str, float]) -> dict[str, float]:
        """Log ``values`` (tag -> value) at ``step``; returns what was logged."""
        out = {tag: float(v) for tag, v in values.items()}
        with self._writing():
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
        with self._writing():
            self.writer.flush()

    def close(self, check: bool = True) -> None:
        """Flush and close; ``check=False``: a failed write is not raised (the caller is
        already raising an error)."""
        try:
            with self._writing():
                try:
                    self.writer.flush()
                finally:
                    if self._appender is not None:  # closed quietly after a failed append
                        self._appender.close()
                    self.writer.close()
        except WriteError:
            if check:
                raise


def _file_writer(writer: SummaryWriter) -> FileWriter:
    """``writer.file_writer``, which ``SummaryWriter()`` has set (``close()`` unsets it): all
    a type checker sees of it is the ``self.file_writer = None`` that starts torch's
    ``__init__``."""
    return cast(FileWriter, writer.file_writer)


class _Appender:
    """The event file's writer in place of TensorBoard's ``_AsyncWriter`` (``write``,
    ``flush``, ``close``): each event is appended in the thread that logs it, so a failed
    append raises its ``OSError`` there (:meth:`RunLogger._writing`: a WriteError). After one
    failed append every later call raises it again and nothing more is appended: the record
    it cut short stays the file's last."""

    def __init__(self, records: Any):  # tensorboard's RecordWriter over the event file
        self._records = records
        self._error: OSError | None = None
        self._closed = False

    def _do(self, call: Any, *args: Any) -> None:
        if self._error is not None:
            raise self._error
        try:
            call(*args)
        except OSError as e:
            self._error = e
            raise

    def write(self, data: bytes) -> None:
        if self._closed:
            raise OSError("Writer is closed")  # as TensorBoard's
        self._do(self._records.write, data)

    def flush(self) -> None:
        if not self._closed:
            self._do(self._records.flush)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._error is None:
            self._records.flush()
        with contextlib.suppress(OSError):
            self._records.close()


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
