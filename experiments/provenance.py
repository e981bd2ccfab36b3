"""What produced a result: the code's commit and the package versions.

Every JSON an experiment or benchmark writes carries :func:`versions`, and every markdown
report its :func:`code_line`, so that a committed figure can be traced to the code that
measured it. A result made from a working tree with uncommitted changes to tracked files says
so (``git_dirty``): its commit alone does not reproduce it.
"""

from __future__ import annotations

import importlib
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    """``git args`` in the repository's root: its stdout, or None where there is no git, no
    repository (an installed copy) or the command fails."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"git": <HEAD's full hash>, "git_dirty": <bool>}`` of the repository this module is
    in; both None outside a git checkout. ``git_dirty``: tracked files differ from HEAD
    (untracked files, such as results being written, do not count)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git": commit, "git_dirty": None if status is None else bool(status)}


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except ImportError:
        return None


def versions(*extra: str) -> dict[str, Any]:
    """Python, torch, numpy and recenv versions, the :func:`git_state`, and the version of
    each module named in ``extra`` (None where it is not installed)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for module in ("torch", "numpy", "recenv", *extra):
        out[module] = _version(module)
    return {**out, **git_state()}


def code_line(v: dict[str, Any] | None = None) -> str:
    """One markdown line naming the code a report came from, from :func:`versions` ``v``:
    ``Code: commit 1a2b3c4 (with uncommitted changes); torch 2.13.0, Python 3.11.7.``"""
    v = versions() if v is None else v
    if v.get("git"):
        code = f"commit `{v['git'][:12]}`"
        if v.get("git_dirty"):
            code += " with uncommitted changes (the commit alone does not reproduce it)"
    else:
        code = f"recenv {v.get('recenv')} (not a git checkout)"
    return f"Code: {code}; torch {v.get('torch')}, Python {v.get('python')}."
