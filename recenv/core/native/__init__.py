"""Hand-written CPU kernels for parts of the compiled step, built on first use.

``recenv::candidate_features(item_rows, stats, episode, t, items, log1p_counts, num_features,
stats_size, horizon) -> (feats, arrived)``:

- ``item_rows`` [I, R] float32, the catalog's item rows (features in columns ``0..F-1``);
- ``stats`` [N * W, 3] int32, the per-market item counters (episode stamp, exposures,
  clicks) with ``W = stats_size`` (items share a counter modulo ``W`` when ``W < I``);
- ``episode`` [N] int64, ``t`` [N] float32; ``items`` [N, X] int64 candidates;
- ``log1p_counts`` [M] float32, ``log1p`` of the counts ``0..M-1``;
- returns ``feats`` [N, X, F] (the item's first ``F - 3`` features, then ``log1p`` of this
  episode's clicks and exposures, then ``(t - arrival).clamp(min=0) / horizon``) and
  ``arrived`` [N, X] bool (``arrival <= t``), exactly as
  :meth:`recenv.core.market.BatchedMarket._candidate_features` computes them in torch.

Compiled by inductor, that part of the step ran ~3.7x slower than this kernel at 4,096
markets (fused loops that wait on each cache miss of their random lookups; see
``experiments/PERFORMANCE.md``). The kernel is used by compiled steps on the CPU when it
builds (with the C++ compiler inductor already needs, through ``torch.utils.cpp_extension``,
cached in torch's extension directory); otherwise, or with ``RECENV_NATIVE=0`` in the
environment, the torch form runs. The two agree bit for bit (tests).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("candidate_features.cpp")
_LOCK = threading.Lock()
_STATE: dict[str, bool | str] = {}

torch.library.define(
    "recenv::candidate_features",
    "(Tensor item_rows, Tensor stats, Tensor episode, Tensor t, Tensor items, "
    "Tensor log1p_counts, int num_features, int stats_size, float horizon) -> (Tensor, Tensor)",
)


@torch.library.register_fake("recenv::candidate_features")
def _(item_rows, stats, episode, t, items, log1p_counts, num_features, stats_size, horizon):
    N, X = items.shape
    feats = item_rows.new_empty((N, X, num_features))
    return feats, items.new_empty((N, X), dtype=torch.bool)


def enabled() -> bool:
    """Whether the native kernels may be used: not when ``RECENV_NATIVE=0``."""
    return os.environ.get("RECENV_NATIVE", "1") != "0"


def available() -> bool:
    """Build (once per process) and load the CPU kernels; ``False``, with one warning, when
    they cannot be built (no compiler, no ``ninja``), or when disabled by ``RECENV_NATIVE=0``.
    """
    if not enabled():
        return False
    with _LOCK:
        if "ok" not in _STATE:
            try:
                from torch.utils.cpp_extension import load

                _ninja_on_path()
                load(
                    name="recenv_native_" + _source_tag(),
                    sources=[str(_SOURCE)],
                    extra_cflags=["-O3"],
                    is_python_module=False,
                    verbose=False,
                )
                _STATE["ok"] = True
            except Exception as e:  # a missing toolchain must not break the simulator
                _STATE["ok"], _STATE["error"] = False, f"{type(e).__name__}: {e}"
                warnings.warn(
                    "recenv's native CPU kernels could not be built; the compiled step uses "
                    f"its torch form (same results, slower). Reason: {_STATE['error'][:500]}",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return bool(_STATE["ok"])


def _ninja_on_path() -> None:
    """torch's extension builder runs ``ninja`` from ``PATH``; the ``ninja`` package installed
    beside recenv puts it in the environment's ``bin``, which is not on ``PATH`` when Python is
    run by its full path (``.venv/bin/python``), so its directory is appended."""
    import shutil

    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + ninja.BIN_DIR


def _source_tag() -> str:
    """A short hash of the kernel source and torch version: a changed kernel or another torch
    gets its own build directory instead of loading a stale library."""
    import hashlib

    h = hashlib.sha256(_SOURCE.read_bytes() + torch.__version__.encode())
    return h.hexdigest()[:12]
