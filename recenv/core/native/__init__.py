"""Hand-written CPU kernels for parts of the step, built on first use.

``recenv::candidates(head, by_topic, topic_index, by_pop, pop_index, by_arrival, fresh_index,
item_rows, stats, episode, t, log1p_counts, num_features, stats_size, horizon)
-> (items, feats, mask)``, every market's candidates, retrieved, listed and described:

- ``head`` [A, K] int64, each agent's always-retrievable items;
- ``by_topic``, ``by_pop``, ``by_arrival``: int32 retrieval lists (read flat), and
  ``topic_index``, ``pop_index``, ``fresh_index`` [N, A, n] int64, the flat positions each
  market's request reads in them (``n`` may be 0);
- ``item_rows`` [I, R] float32, the catalog's item rows (features in columns ``0..F-1``);
- ``stats`` [N * W, 3] int32, the per-market item counters (episode stamp, exposures,
  clicks) with ``W = stats_size`` (items share a counter modulo ``W`` when ``W < I``);
- ``episode`` [N] int64, ``t`` [N] float32; ``log1p_counts`` [M] float32, ``log1p`` of the
  counts ``0..M-1``;
- returns ``items`` [N, A, C] int64 (the head, then the list entries, sorted by id),
  ``feats`` [N, A, C, F] (the item's first ``F - 3`` features, then ``log1p`` of this
  episode's clicks and exposures, then ``(t - arrival).clamp(min=0) / horizon``) and
  ``mask`` [N, A, C] bool (the first copy of an item, and arrived by ``t``), exactly as
  :meth:`recenv.core.market.BatchedMarket._candidates_torch` computes them.

``recenv::count_exposures(stats, episode, page, visible, chosen, clicked, stats_size,
num_items)``, one request's item counters updated in place: ``page`` [N, P] int64 items shown
(``visible`` [N, P] bool says which were seen), ``chosen`` [N] int64 the chosen slot's item
and ``clicked`` [N] bool. Each row of a page item or the chosen item restarts at 0 when its
stamp is of an older episode, is stamped with ``episode``, and adds the item's visible
exposures and click; the table ends as
:meth:`recenv.core.market.BatchedMarket._count_exposures_torch` leaves it. Items out of
``[0, num_items)`` raise before any row is written.

``recenv::item_metrics(stats, episode, ended, stats_size, num_items) -> (coverage, gini)``,
the item metrics of the markets ``ended`` [E] int64 (indices) as their episode ends:
``coverage`` [E] float32, the share of the I = ``num_items`` items exposed this episode, and
``gini`` [E] float32, the Gini coefficient of the I items' exposure counts (rows stamped with
an older episode count as 0; with W = ``stats_size`` < I hashed counters, coverage is the
linear-counting estimate and each exposed counter counts as one item in the Gini),
bit for bit as :meth:`recenv.core.market.BatchedMarket._item_metrics_torch` computes them
(which sorts each market's counters; the kernel sums over a histogram of their values).

``recenv::check_slates(slates, mask, needs_reset) -> (idx, valid, repaired, all_ok)``, the
actions of every market checked before a step: ``slates``, one contiguous int64 [N, K] tensor
of candidate indices per agent; ``mask`` [N, A, C] bool, the candidates' action masks;
``needs_reset`` [N] bool. Returns ``idx`` [N, A, K] int64 (the indices clamped into
``[0, C)``), ``valid`` [N, A, K] bool (in range, unmasked, and not a repeat of an earlier slot
of the same slate, compared on the raw values; False in the markets about to reset, which
ignore their actions), ``repaired`` [N, A] float32 (each slate's invalid slots; 0 in the
markets about to reset) and ``all_ok``, a 0-d bool: every slot valid in the markets not
about to reset. Exactly what :meth:`recenv.core.market.BatchedMarket._validity` computes
(eager only: the check runs before the step's graph).

``recenv::next_user(status, epoch, activity, episode, t, served, served_status, uniforms,
users, gap_weight) -> (user, ready, all_gone)``, every market's next arriving user: ``status``
[N, 2, U] float32, the users' (available_at, churned) as ``BatchedMarket.user_status`` holds
them; ``epoch`` [N, U] int64 their episode stamps; ``activity`` [N, U] float32; ``episode``
[N] int64; ``t`` [N] float32, the clock the arrival happens at; ``served`` [N] int64 and
``served_status`` [N, 2] float32, the user just served and their (available_at, churned) as
the request left them (read instead of the table's; ``-1``: none); ``uniforms`` [N] float32
in [0, 1). A user of this episode whose ``available_at`` is past ``t`` is held (between
sessions, or churned if ``churned > 0``); each user weighs ``activity`` times 1 (not held),
0 (churned) or ``gap_weight`` (between sessions), and ``user`` [N] int64 is drawn by inverse
transform of ``uniforms`` on the prefix sums (ATen's CPU ``cumsum`` and ``searchsorted``, the
index clamped to ``U - 1``); ``ready`` [N] bool says whether that user was not held and
``all_gone`` [N] bool whether every user is churned and not back. Exactly what
:meth:`recenv.core.market.BatchedMarket._next_user_torch` computes. ``users`` [N, U, F]
float32, the users' rows, is only read as a hint: the drawn user's row is prefetched for the
step's next loops (not when empty, or when its rows are not contiguous).

``recenv::block_uniforms(key, counter, stream, index, width) -> uniforms``, one block of
counter-based uniforms per market: ``key`` and ``counter`` [N] int64, ``stream`` a stream id,
``index`` [N] int64 or ``None``; returns ``[N, width]`` float32,
``rng.uniforms(rng.split(rng.prefix(key, counter, stream), index), width)`` (no split when
``index`` is ``None``) bit for bit. Eager steps only: compiled, inductor fuses the torch form
into the step's loops.

Compiled by inductor, the candidates are a dozen fused loops that wait on each cache miss of
their random lookups (eager, a few dozen ops); the kernel overlaps the misses of consecutive
markets (see ``experiments/PERFORMANCE.md``). Every CPU step uses the kernels, eager or
compiled (the item metrics run eagerly, on steps where an episode ended; the uniforms only in
eager steps), when they build
(with the C++ compiler inductor needs, through ``torch.utils.cpp_extension``, ~30 s once,
cached in torch's extension directory, which ``TORCH_EXTENSIONS_DIR`` moves); otherwise, or
with ``RECENV_NATIVE=0`` in the environment, the torch forms run. Each kernel agrees bit for
bit with its torch form (tests).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from recenv.core.warn import warn

_SOURCES = [
    Path(__file__).with_name(f)
    for f in (
        "candidates.cpp",
        "counters.cpp",
        "metrics.cpp",
        "slates.cpp",
        "arrival.cpp",
        "random.cpp",
    )
]
# -fopenmp: at::parallel_for is an OpenMP pragma in ATen's headers, a serial loop without it.
# The library then resolves libgomp to the one torch has already loaded (same soname).
_FLAGS = ["-O3", "-fopenmp"]
_LOCK = threading.Lock()
_STATE: dict[str, bool | str] = {}
# The descriptor through which this process holds the build's flock (see _build_guard), while
# it holds it.
_GUARD_FD: int | None = None


def _after_fork_in_child() -> None:
    """A forked child starts with a free ``_LOCK`` and without the build's flock.

    ``fork`` copies only the calling thread: a child forked while another thread was inside
    :func:`available` (building or loading the kernels, or just checking; e.g. a market built
    in a thread while the main thread starts a ``multiprocessing`` worker) inherited ``_LOCK``
    held by a thread it does not have, and hung in its first market's build. It also shared
    the open flock of a build in progress, which no thread of the child would ever close:
    every later process waited in its build guard for as long as the child lived. The child
    builds (or waits for the parent's build through the flock) like any other process."""
    global _LOCK, _GUARD_FD
    _LOCK = threading.Lock()
    if _GUARD_FD is not None:
        with contextlib.suppress(OSError):
            os.close(_GUARD_FD)
        _GUARD_FD = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _fake_candidates(
    head: torch.Tensor,
    by_topic: torch.Tensor,
    topic_index: torch.Tensor,
    by_pop: torch.Tensor,
    pop_index: torch.Tensor,
    by_arrival: torch.Tensor,
    fresh_index: torch.Tensor,
    item_rows: torch.Tensor,
    stats: torch.Tensor,
    episode: torch.Tensor,
    t: torch.Tensor,
    log1p_counts: torch.Tensor,
    num_features: int,
    stats_size: int,
    horizon: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    N, A, C = topic_index.shape[0], head.shape[0], head.shape[1]
    C += topic_index.shape[2] + pop_index.shape[2] + fresh_index.shape[2]
    items = head.new_empty((N, A, C))
    feats = item_rows.new_empty((N, A, C, num_features))
    return items, feats, head.new_empty((N, A, C), dtype=torch.bool)


# Once per process: a module reload (e.g. a notebook's autoreload) keeps the registered op.
if not hasattr(torch.ops.recenv, "candidates"):
    torch.library.define(
        "recenv::candidates",
        "(Tensor head, Tensor by_topic, Tensor topic_index, Tensor by_pop, Tensor pop_index, "
        "Tensor by_arrival, Tensor fresh_index, Tensor item_rows, Tensor stats, "
        "Tensor episode, Tensor t, Tensor log1p_counts, int num_features, int stats_size, "
        "float horizon) -> (Tensor, Tensor, Tensor)",
    )
    torch.library.register_fake("recenv::candidates")(_fake_candidates)
if not hasattr(torch.ops.recenv, "count_exposures"):
    torch.library.define(
        "recenv::count_exposures",
        "(Tensor(a!) stats, Tensor episode, Tensor page, Tensor visible, Tensor chosen, "
        "Tensor clicked, int stats_size, int num_items) -> ()",
    )
    torch.library.register_fake("recenv::count_exposures")(lambda *args: None)
if not hasattr(torch.ops.recenv, "item_metrics"):
    torch.library.define(
        "recenv::item_metrics",
        "(Tensor stats, Tensor episode, Tensor ended, int stats_size, int num_items) "
        "-> (Tensor, Tensor)",
    )
    torch.library.register_fake("recenv::item_metrics")(
        lambda stats, episode, ended, stats_size, num_items: (
            ended.new_empty(ended.shape, dtype=torch.float32),
            ended.new_empty(ended.shape, dtype=torch.float32),
        )
    )

if not hasattr(torch.ops.recenv, "check_slates"):
    torch.library.define(
        "recenv::check_slates",
        "(Tensor[] slates, Tensor mask, Tensor needs_reset) -> (Tensor, Tensor, Tensor, Tensor)",
    )
    torch.library.register_fake("recenv::check_slates")(
        lambda slates, mask, needs_reset: (
            mask.new_empty((mask.shape[0], len(slates), slates[0].shape[-1]), dtype=torch.int64),
            mask.new_empty((mask.shape[0], len(slates), slates[0].shape[-1])),
            mask.new_empty(mask.shape[:2], dtype=torch.float32),
            mask.new_empty(()),
        )
    )

if not hasattr(torch.ops.recenv, "next_user"):
    torch.library.define(
        "recenv::next_user",
        "(Tensor status, Tensor epoch, Tensor activity, Tensor episode, Tensor t, "
        "Tensor served, Tensor served_status, Tensor uniforms, Tensor users, float gap_weight) "
        "-> (Tensor, Tensor, Tensor)",
    )
    torch.library.register_fake("recenv::next_user")(
        lambda status, epoch, activity, episode, t, served, served_status, uniforms, users, gap: (
            t.new_empty(t.shape, dtype=torch.int64),
            t.new_empty(t.shape, dtype=torch.bool),
            t.new_empty(t.shape, dtype=torch.bool),
        )
    )


if not hasattr(torch.ops.recenv, "block_uniforms"):
    torch.library.define(
        "recenv::block_uniforms",
        "(Tensor key, Tensor counter, int stream, Tensor? index, int width) -> Tensor",
    )
    torch.library.register_fake("recenv::block_uniforms")(
        lambda key, counter, stream, index, width: key.new_empty(
            (key.shape[0], width), dtype=torch.float32
        )
    )


def enabled() -> bool:
    """Whether the native kernels may be used: not when ``RECENV_NATIVE=0``."""
    return os.environ.get("RECENV_NATIVE", "1") != "0"


def usable(device: torch.device) -> bool:
    """Whether a market on ``device`` steps with the kernels: on the CPU, when they build."""
    return device.type == "cpu" and available()


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

                name = "recenv_native_" + _source_tag()
                _ninja_on_path()
                _announce_first_build()
                with _build_guard(name):
                    load(
                        name=name,
                        sources=[str(f) for f in _SOURCES],
                        extra_cflags=_FLAGS,
                        extra_ldflags=["-fopenmp"],
                        is_python_module=False,
                        verbose=False,
                    )
                _STATE["ok"] = True
            except Exception as e:  # a missing toolchain must not break the simulator
                reason = f"{type(e).__name__}: {e}"
                _STATE["ok"], _STATE["error"] = False, reason
                warn(
                    "recenv's native CPU kernels could not be built; the compiled step uses "
                    f"its torch form (same results, slower). Reason: {reason[:500]}",
                    RuntimeWarning,
                )
    return bool(_STATE["ok"])


def _build_directory(name: str) -> Path | None:
    """Where torch's builder puts extension ``name`` (``TORCH_EXTENSIONS_DIR`` or its default),
    created; ``None`` for a torch without that (private) helper."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


@contextlib.contextmanager
def _build_guard(name: str) -> Iterator[None]:
    """Hold an advisory lock on ``<build dir>/recenv-build.flock`` around torch's build of
    ``name``, and remove the ``lock`` file of torch's builder when no one holds it.

    torch's builder (``FileBaton``) creates ``lock`` in the build directory while it builds
    and removes it when done; a process killed while building (SIGKILL, the OOM killer, a
    notebook kernel's restart, a job's time limit) leaves it behind, and every later process
    then waits on it forever, saying nothing. The kernel drops a ``flock`` when its holder
    exits, however it exits, and recenv builds only while holding this one, so a ``lock``
    found once we hold it was left by a builder that died. Waiting for the flock is waiting
    for a live build (~30 s) to end, as torch's own lock did. Where ``fcntl`` does not exist
    (Windows) or the filesystem refuses locks, torch's lock alone guards the build.
    """
    build_dir = _build_directory(name)
    if build_dir is None or sys.platform == "win32":
        yield
        return
    import fcntl

    global _GUARD_FD
    fd = os.open(build_dir / "recenv-build.flock", os.O_RDWR | os.O_CREAT, 0o644)
    _GUARD_FD = fd  # a child forked meanwhile closes its copy (_after_fork_in_child)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # e.g. ENOLCK on a network filesystem without locks
            locked = False
        stale = build_dir / "lock"
        if locked and stale.exists():
            stale.unlink(missing_ok=True)
            warn(
                f"recenv: removed {stale}, the build lock of a process that died while "
                "building the native CPU kernels; building them again",
                RuntimeWarning,
            )
        yield
    finally:
        _GUARD_FD = None
        os.close(fd)  # drops the flock


def _announce_first_build() -> None:
    """One line on stderr before a build that is not cached yet (~30 s, once per checkout and
    torch version), so a first ``make()`` that pauses says why."""
    try:
        name = "recenv_native_" + _source_tag()
        build_dir = _build_directory(name)
        if build_dir is not None and not (build_dir / f"{name}.so").exists():
            sys.stderr.write(
                "recenv: building the native CPU kernels (once per checkout and torch "
                "version: ~30 s, minutes on a busy machine)\n"
            )
    except Exception:  # a torch without that helper: build without the note
        pass


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
    """A short hash of the kernel source, torch version, flags and this package's location: a
    changed kernel or another torch gets its own build directory instead of loading a stale
    library, and so does each checkout. (torch's builder writes the sources' absolute paths
    into the directory's build file, so two checkouts sharing a directory rebuilt the library,
    ~30-45 s, each time a process of the other one loaded it.)"""
    import hashlib

    h = hashlib.sha256(b"".join(f.read_bytes() for f in _SOURCES))
    h.update(torch.__version__.encode() + " ".join(_FLAGS).encode())
    h.update(str(Path(__file__).resolve().parent).encode())
    return h.hexdigest()[:12]
