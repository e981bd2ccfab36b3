"""The experiments' run errors, in a module of their own so that the runner, the checkpoint
checks (:mod:`experiments.checkpoint_checks`) and the TensorBoard logger (:mod:`experiments.tb`)
share them without importing each other."""

from __future__ import annotations

import re
from pathlib import Path


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used as asked; the message says why and
    what to do instead."""


class WriteError(RunError):
    """A file of a run that could not be written (a full disk, a file-size limit, an I/O
    error): ``path`` and ``reason`` (``No space left on device``, ``File too large``, or
    torch's own message). ``what`` the file is and ``kept``, what is left of it, for the
    run's message (:meth:`experiments.runner.Trainer.run`): a file written atomically has its
    temporary file removed and ``path`` is as it was; an appended one (a TensorBoard event
    file) keeps what was written before."""

    def __init__(
        self,
        path: Path,
        reason: str,
        message: str | None = None,
        *,
        what: str = "file",
        kept: str = "its temporary file was removed",
    ):
        self.path, self.reason, self.what, self.kept = path, reason, what, kept
        super().__init__(message or f"cannot write {str(path)!r}: {reason}")


def write_reason(e: BaseException) -> str | None:
    """Why a write failed, as one line: the ``OSError`` in ``e``'s chain (its strerror: ``No
    space left on device``, ``File too large``; ``torch.save`` reports a failed write as a
    ``RuntimeError`` of its zip writer, "unexpected pos ...", with the ``OSError`` as its
    context), else the message of a ``RuntimeError`` of torch's zip writer; ``None`` for
    anything else (not a failed write: it propagates unchanged)."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError):
            return x.strerror or " ".join(str(x).split()) or type(x).__name__
        x = x.__cause__ or x.__context__
    text = " ".join(str(e).split())
    if isinstance(e, RuntimeError) and re.search(r"inline_container|PytorchStreamWriter", text):
        return f"torch.save failed: {text}"
    return None
