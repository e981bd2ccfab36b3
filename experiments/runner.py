"""Runs: train an agent with checkpoints, TensorBoard logs and a summary; resume; evaluate.

A run directory (``<root>/<env>__<lineup>__<seed>__<UTC time>``, created with
``exist_ok=False``, never reused) holds::

    config.json            the resolved RunConfig, the full env and agent configs, versions
    events.out.tfevents.*  TensorBoard (charts/, losses/, rec/, eval/; see experiments.tb)
    checkpoints/step_*.pt  the newest ``keep_checkpoints`` checkpoints (atomic writes)
    agent.pt               the trained agent (agents.load_agent(path, env) rebuilds it)
    curve.csv              the learning curve: episode metrics per log interval
    summary.json           final results: training tail, greedy evaluation, timing
    DONE                   written last; a directory with DONE is never written again
    .lock                  only while a process trains the run: its lock (see DirLock)

**Training** runs :func:`agents.rollout.train` in chunks that end on log and checkpoint
boundaries (``reset=False`` continues the env where it stands), so the loop is the one the
tests and every experiment share.

**Checkpoints** hold everything a bit-identical resume needs: the agent's ``state_dict`` with its
header (so a checkpoint is also an ``agents`` checkpoint), a complete snapshot of the agent
(replay buffers, n-step windows, optimizer and generator states: :mod:`experiments.snapshot`)
and of the env (every market tensor — the env's randomness is counter-based, so its tensors are
its random stream — its current observation and seed generator), the loop's counters, the curve
so far, the episodes of the unfinished log window, and the torch/numpy/python global RNG states.
They are read with ``torch.load(weights_only=True)``.

**Resume** (:func:`resume`) rebuilds env and agent from ``config.json``, writes the latest
checkpoint's state back onto them and continues; the result equals an uninterrupted run's
(``summary.json`` apart from its ``timing`` block). A checkpoint that does not fit them (cut
short, foreign, or damaged by hand: a key missing, a value of another type, a tensor of another
shape) is refused with a :class:`RunError` naming the file and the key before anything is
restored or written (:func:`check_run_checkpoint`, :func:`check_fits`). Ctrl-C / SIGTERM
checkpoint at the next chunk boundary and stop (during the final evaluation: stop, keeping the
final checkpoint, from which ``resume`` evaluates again); SIGKILL loses at most the steps since
the last checkpoint.

**Divergence**: before each checkpoint the agent's state is checked for NaN and ±inf. A
diverged agent is a result, not an error (a sweep's highest learning rate may diverge): training
stops there, no checkpoint of it is written (the earlier ones stay), a ``RuntimeWarning`` says
so, the diverged agent is evaluated as usual, and ``summary.json``'s ``diverged`` holds the step
and the first non-finite tensor (``null`` otherwise); comparison tables mark such rows.

**One process per run**: ``train`` and ``resume`` hold an exclusive lock on the run directory
(:class:`DirLock`) from before their first write until they return, so a second ``resume`` of a
run that is still training is refused instead of training into the same directory.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents
import recenv
from agents.base import (  # one tensor mapper
    Agent,
    MetricError,
    _to_cpu,
    _to_device,
    header_differences,
    read_checkpoint,
    state_keys_error,
    unsavable_error,
)
from agents.rollout import EvaluationStopped
from agents.state_checks import nonfinite_state_error, optimizer_state_error
from experiments import snapshot
from experiments.checkpoint_checks import (
    check_fits,
    check_run_checkpoint,
    describe,
    numpy_rng_state,
)
from experiments.config import (
    EVAL_SEED_OFFSET,
    OPPONENT_SEED_OFFSET,
    ConfigError,
    RunConfig,
    validate_run,
)
from experiments.errors import RunError, WriteError, write_reason
from experiments.provenance import versions
from experiments.report import read_json_object, to_csv
from experiments.tb import RunLogger
from recenv.core.vecisa import NoCppCompiler

try:  # advisory file locks: Linux, macOS and the other POSIX systems
    import fcntl
except ImportError:  # Windows: runs are not locked (see DirLock)
    fcntl = None  # type: ignore[assignment]

CHECKPOINT_FORMAT = "recenv-run-checkpoint"
# Bumped whenever the env's or an agent's saved state changes layout, so an old checkpoint
# is refused by name instead of restored wrongly (snapshot.restore replaces tensors by
# attribute name). 2: BatchedMarket.user_status is [N, 2, U] (was [N, U, 2]). 3: IQL,
# VDN and QMIX keep their pending update metrics in `update_metrics` (was `_sums`,
# `_since_report`).
CHECKPOINT_VERSION = 3
# BatchedMarket attributes that are static (rebuilt from the config), never checkpointed.
# ``__doc__``: the scenario's page, which recenv.make_vec sets on the env; saved, it would
# be a key that checkpoints written before it was set lack, refused on resume as damaged.
ENV_STATIC = ("config", "catalog", "population", "layout", "__doc__")
DONE = "DONE"
LOCK = ".lock"
# How long DirLock.acquire waits for a held lock before refusing, and how often it tries again:
# a worker of a SIGKILLed `compare --jobs N` still holds its run's lock until its parent
# watchdog (comparison.PARENT_POLL_S) ends it, and a `resume` typed at once met it.
LOCK_WAIT_S = 2.0
LOCK_POLL_S = 0.05


class Interrupted(RuntimeError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint.

    ``run_dir`` and ``step``: the run that stopped and where (``None`` when a comparison stopped
    between runs); ``comparison``: the comparison directory the run belongs to, if any. The
    message names what to resume: the comparison when there is one (resuming only the run
    would leave the comparison without its table), else the run."""

    def __init__(self, run_dir: Path | None, step: int | None, comparison: Path | None = None):
        if comparison is None:
            text = (
                f"interrupted at env step {step}; checkpoint written. Continue with:\n"
                f"  python -m experiments resume {run_dir}"
            )
        else:
            where = (
                f" (run {Path(run_dir).name} stopped at env step {step}; checkpoint written)"
                if run_dir is not None
                else ""
            )
            text = (
                f"comparison interrupted{where}; its finished runs are kept. Continue the "
                f"comparison with:\n  python -m experiments resume {comparison}"
            )
        super().__init__(text)
        self.run_dir, self.step, self.comparison = run_dir, step, comparison

    def __reduce__(self):
        # The default pickles ``self.args`` (the message) and calls __init__ with it, which
        # fails: a `compare --jobs N` worker sends this back to the parent process.
        return (type(self), (self.run_dir, self.step, self.comparison))

    @property
    def resume_path(self) -> Path:
        """What ``python -m experiments resume`` continues."""
        path = self.comparison if self.comparison is not None else self.run_dir
        # Interrupted(None, None) (a comparison stopped between runs) only travels inside the
        # comparison, which raises it again naming itself.
        assert path is not None, "an Interrupted without its run or comparison"
        return Path(path)


# ----------------------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------------------
def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def sanitize(s: str) -> str:
    """``s`` as a directory-name part: runs of other characters than letters, digits, ``.``,
    ``_``, ``-`` become ``_``; no leading dot (``--name ../x`` made a hidden ``.._x``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).lstrip(".").strip("_") or "x"


def env_label(env_id: str) -> str:
    """``recenv/Market-v0`` -> ``Market-v0``; other namespaces are kept (``ns_Name-v0``)."""
    ns, _, name = env_id.rpartition("/")
    return sanitize(name if ns in ("", "recenv") else f"{ns}_{name}")


def run_name(cfg: RunConfig) -> str:
    return f"{env_label(cfg.env)}__{sanitize(cfg.lineup)}__{cfg.seed}__{utc_stamp()}"


def finished_directory(path: str | Path) -> Path | None:
    """The finished run, comparison or evaluation directory (one with ``DONE`` beside its
    ``config.json``, ``compare.json`` or ``summary.json``) that ``path`` is or lies in, after
    symlinks and relative paths are resolved; ``None`` when there is none."""
    p = Path(path).resolve()
    for d in (p, *p.parents):
        if (d / DONE).is_file() and any(
            (d / f).is_file() for f in ("config.json", "compare.json", "summary.json")
        ):
            return d
    return None


def refuse_finished_parent(path: str | Path, what: str = "root") -> None:
    """A :class:`ConfigError` when a new directory at or under ``path`` (a ``root``, ``report
    --out``) would be written into a finished directory, which is never modified (and a new
    run inside a finished comparison would join its report)."""
    done = finished_directory(path)
    if done is not None:
        raise ConfigError(
            f"{what} {str(path)!r} is inside the finished directory {str(done)!r} (it has "
            f"{DONE}), which is never written to; give a directory outside it"
        )


def refuse_run_or_comparison_root(root: str | Path, what: str = "root") -> None:
    """A :class:`ConfigError` when ``root`` is a comparison directory (``compare.json``) or a
    run directory (``config.json``), finished or not: a directory created there by ``train``
    or ``evaluate`` would be adopted by the comparison's next ``resume`` and ``report`` (they
    read the run directories in it), or written into a run. ``compare`` and ``resume`` create
    a comparison's runs themselves, without this check."""
    r = Path(root)
    if (r / "compare.json").is_file():
        raise ConfigError(
            f"{what} {str(root)!r} is a comparison directory, whose runs only `compare` and "
            "`resume` create; give another root"
        )
    if (r / "config.json").is_file():
        raise ConfigError(
            f"{what} {str(root)!r} is a run directory, which only its own run writes to; "
            "give another root"
        )


def create_unique_dir(root: Path, name: str) -> Path:
    """``root/name`` (or ``name-1``, ``name-2``, ...), created with ``exist_ok=False``; never
    inside a finished directory (:func:`refuse_finished_parent`)."""
    refuse_finished_parent(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a read-only or missing mount
        why = "it is a file" if root.is_file() else (e.strerror or type(e).__name__)
        raise RunError(
            f"the root {str(root)!r} cannot hold run directories: {why}; give a writable "
            "directory (--root, or run.root / root in a config)"
        ) from None
    for i in range(1000):
        path = root / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RunError(f"could not create a new directory {name!r} under {root}")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """``write(f)`` into ``.NAME.tmp-PID`` beside ``path``, synced, then renamed onto
    ``path``. A write that fails (:func:`~experiments.errors.write_reason`) raises
    :class:`WriteError` naming ``path`` and why; whatever fails, the temporary file is
    removed (a checkpoint's can be large) and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = write_reason(e) if isinstance(e, Exception) else None
        if reason is None:
            raise
        raise WriteError(path, reason) from e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def remove_temp_files(directory: Path) -> None:
    """Remove the ``.NAME.tmp-PID`` files of :func:`atomic_write_bytes` and
    :func:`atomic_torch_save` that a killed process left in ``directory`` and its
    ``checkpoints/`` (a checkpoint's can be large). Only for a directory whose lock is held:
    no other process is writing one."""
    for d in (directory, directory / "checkpoints"):
        for tmp in d.glob(".*.tmp-*"):
            if re.fullmatch(r"\..+\.tmp-\d+", tmp.name) and tmp.is_file():
                tmp.unlink(missing_ok=True)


def atomic_torch_save(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


class DirLock:
    """An exclusive advisory lock on a run or comparison directory, held by the one process
    that writes into it (``train``, ``resume``, ``compare``) from before its first write until
    it returns.

    It is ``flock(LOCK_EX | LOCK_NB)`` on ``<dir>/.lock``, a file holding the holder's pid and
    host, which the holder removes when it lets go: ``.lock`` exists only while a process works
    on the directory. The lock, not the file, is what counts: the kernel drops it when the
    holder exits, however it exits, so the ``.lock`` a SIGKILLed process leaves behind never
    blocks anyone (the pid inside is only read to name the holder in a refusal). A finished
    directory is refused before any lock is taken, so a finished run or comparison never gets
    a ``.lock``, and ``report``/``evaluate`` never lock.

    A held lock is tried again for up to :data:`LOCK_WAIT_S` seconds before the refusal: a
    process about to exit (a worker of a SIGKILLed comparison, which its parent watchdog ends
    within :data:`experiments.comparison.PARENT_POLL_S`) lets go meanwhile, and a ``resume``
    typed just after the kill was refused by it.

    Where ``fcntl`` does not exist (Windows), or the filesystem refuses locks, nothing is
    locked: two processes could then still write into one directory.
    """

    def __init__(self, path: str | Path, what: str = "run"):
        self.path = Path(path)
        self.what = what  # "run" or "comparison": for the refusal's message
        self._fd: int | None = None

    @property
    def file(self) -> Path:
        return self.path / LOCK

    def acquire(self) -> DirLock:
        """Take the lock, or raise :class:`RunError` naming the process that holds it once it
        has been held for :data:`LOCK_WAIT_S` seconds. Writes nothing into the directory when
        refused."""
        if fcntl is None:
            return self
        if self._fd is not None:
            raise RuntimeError(f"{self.file} is already locked by this DirLock")
        deadline = time.monotonic() + LOCK_WAIT_S
        replaced = 0
        while replaced < 100:
            # No O_TRUNC: a refused process must not erase the holder's pid.
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:  # e.g. a read-only directory: it cannot be trained in either
                raise RunError(f"cannot lock {self.what} {str(self.path)!r}: {e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:  # the holder may be exiting: try again
                    os.close(fd)  # (reopened: the holder removes the file as it lets go)
                    time.sleep(LOCK_POLL_S)
                    continue
                holder = os.pread(fd, 200, 0).decode(errors="replace").split()
                os.close(fd)
                raise RunError(self._held_message(holder)) from None
            except OSError as e:  # e.g. ENOLCK: a filesystem without locks
                os.close(fd)
                print(f"warning: cannot lock {str(self.file)!r} ({e}); not locked", file=sys.stderr)
                return self
            # The previous holder removes the file before it lets go: if it did so between our
            # open and our flock, we hold a file no one else will open. Start again.
            if _same_file(fd, self.file):
                break
            os.close(fd)
            replaced += 1
        else:
            raise RunError(f"could not lock {str(self.file)!r}: it keeps being replaced")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def _held_message(self, holder: list[str]) -> str:
        verb = "trained" if self.what == "run" else "worked on"
        if holder and holder[0].isdigit():
            who = f"pid {holder[0]}"
            if len(holder) > 1 and holder[1] != socket.gethostname():
                who += f" on host {holder[1]}"
        else:  # the holder has not written its pid yet
            who = "another process"
        return (
            f"{self.what} {str(self.path)!r} is being {verb} by {who} (it holds "
            f"{str(self.file)!r}); nothing was changed. Wait for it to finish, or stop it "
            f"(Ctrl-C or SIGTERM: it checkpoints and stops) and then run: python -m "
            f"experiments resume {self.path}"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.file.unlink(missing_ok=True)  # while still held: see acquire
        finally:
            os.close(fd)  # drops the lock

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _checkpoint_order(path: Path) -> tuple[int, int, str]:
    """Sort key of a checkpoint ``step_<steps>.pt``: its step as a number. Not its name: the
    step is padded to 12 digits, and from 10**12 env steps on a name has 13, which sorts
    before every 12-digit one (``step_1000000000000.pt`` < ``step_999999999000.pt``): the
    newest checkpoint read as the oldest, pruned right after it was written, and resume took
    an older one. Names without a step (not written by a run) sort after the numbered ones,
    by name, as they did."""
    digits = path.name.removeprefix("step_").removesuffix(".pt")
    if digits.isascii() and digits.isdigit():
        return (0, int(digits), path.name)
    return (1, 0, path.name)


class RunDir:
    """A run's directory; every write is atomic and refused once the run is finished."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: RunConfig) -> RunDir:
        return cls(create_unique_dir(Path(cfg.root), run_name(cfg)))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing, unfinished run directory (checked without writing anything)."""
        p = Path(path)
        if not (p / "config.json").is_file():
            raise RunError(f"{str(p)!r} is not a run directory (it has no config.json)")
        rd = cls(p)
        rd.refuse_finished()
        return rd

    def lock(self) -> DirLock:
        """This run's :class:`DirLock`, taken on entering ``with rd.lock(): ...``."""
        return DirLock(self.path, "run")

    def refuse_finished(self) -> None:
        if self.finished:
            raise RunError(
                f"run {str(self.path)!r} is finished (it has {DONE}); a finished run's "
                "directory is never modified. Start a new run, or evaluate it: python -m "
                f"experiments evaluate {self.path}"
            )

    @property
    def finished(self) -> bool:
        return (self.path / DONE).exists()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def _guard(self) -> None:
        if self.finished:
            raise RunError(f"refusing to write into the finished run {str(self.path)!r}")

    def write_json(self, name: str, obj: Any) -> Path:
        self._guard()
        path = self.path / name
        atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
        return path

    def write_text(self, name: str, text: str) -> Path:
        self._guard()
        path = self.path / name
        atomic_write_bytes(path, text.encode())
        return path

    def save_torch(self, rel: str, obj: Any) -> Path:
        self._guard()
        path = self.path / rel
        path.parent.mkdir(exist_ok=True)
        atomic_torch_save(path, obj)
        return path

    def checkpoints(self) -> list[Path]:
        """Checkpoints, oldest first (by the step in their name)."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(self.checkpoint_dir.glob("step_*.pt"), key=_checkpoint_order)

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)

    def mark_done(self) -> None:
        self._guard()
        atomic_write_bytes(self.path / DONE, (utc_stamp() + "\n").encode())

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())


# ----------------------------------------------------------------------------------------
# Building the env and the lineup
# ----------------------------------------------------------------------------------------
def make_env(cfg: RunConfig, *, num_envs: int | None = None, seed: int | None = None):
    try:
        return recenv.make_vec(
            cfg.env,
            num_envs=num_envs or cfg.num_envs,
            device=cfg.device,
            seed=cfg.seed if seed is None else seed,
            compile=cfg.compile,
            **cfg.env_kwargs(),
        )
    except NoCppCompiler as e:  # a config error: run.compile=true cannot be honoured here
        raise ConfigError(f"compile=true: {e}") from None


# Factory plug-ins already warned about (once per name and process): see _agent_kwargs.
_UNSEEDED_WARNED: set[str] = set()


def _agent_kwargs(name: str, overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """``overrides`` with ``seed=`` added where the agent can take it (its ``Config`` has a
    seed; a factory with a ``seed`` parameter or ``**kwargs``: the contract in
    :mod:`agents.registry`). A factory that takes no seed is built unseeded, with a warning
    (once per name): every seed of a run or comparison gets the same agent."""
    kw = dict(overrides)
    if "seed" in kw:
        return kw
    target = agents.agent_class(name)
    if agents.registry.takes_seed(target):
        kw["seed"] = seed
    elif name not in _UNSEEDED_WARNED:
        _UNSEEDED_WARNED.add(name)
        warnings.warn(
            f"agent {name!r} is a factory plug-in whose signature takes neither seed= nor "
            "**kwargs: runs cannot seed it, so every seed of a run or comparison builds it "
            "with the factory's own seed (only the markets differ); give the factory a seed "
            "parameter",
            UserWarning,
            stacklevel=2,
        )
    return kw


def make_lineup(cfg: RunConfig, env: Any) -> Agent:
    """The agent under test (all env agents, or ``agent_0`` against ``opponent``)."""
    mine = _agent_kwargs(cfg.agent, cfg.agent_kwargs(), cfg.seed)
    if not cfg.opponent:
        return agents.make_agent(cfg.agent, env, **mine)
    ids = list(env.agents)
    if len(ids) < 2:
        # A config error (exit 2, as every value the env or the agents refuse), found by
        # train and compare (check_lineup) before any directory is created.
        raise ConfigError(
            f"opponent={cfg.opponent!r} needs an env with >= 2 agents; {cfg.env} has {len(ids)}"
        )
    theirs = _agent_kwargs(cfg.opponent, cfg.opponent_kwargs(), cfg.seed + OPPONENT_SEED_OFFSET)
    return agents.Team(
        [
            agents.make_agent(cfg.agent, env, agent_ids=ids[:1], **mine),
            agents.make_agent(cfg.opponent, env, agent_ids=ids[1:], **theirs),
        ]
    )


def focal_agents(cfg: RunConfig, env_agents: list[str]) -> list[str]:
    """The env agents the agent under test controls."""
    return env_agents[:1] if cfg.opponent else list(env_agents)


# ----------------------------------------------------------------------------------------
# Episode metrics -> curve points and summaries
# ----------------------------------------------------------------------------------------
def episode_point(
    episodes: Mapping[str, torch.Tensor], env_agents: list[str], focal: list[str]
) -> dict[str, float]:
    """Means over episodes; per-agent metrics as ``name/agent_N``, plus the focal agents'
    ``return`` (mean) and ``market_share`` (sum)."""
    idx = [env_agents.index(a) for a in focal]
    out: dict[str, float] = {"episodes": float(_rows(episodes))}
    for k, v in episodes.items():
        v = v.double()
        if v.dim() == 2:
            if k == "return":
                out["return"] = float(v[:, idx].mean())
            elif k == "market_share":
                out["market_share"] = float(v[:, idx].sum(1).mean())
            for j, a in enumerate(env_agents):
                out[f"{k}/{a}"] = float(v[:, j].mean())
        else:
            out[k] = float(v.mean())
    return out


def eval_plan(num_envs: int, episodes: int) -> tuple[int, int]:
    """``(markets, episodes per market)`` of a greedy evaluation of ``episodes`` episodes:
    ``min(num_envs, episodes)`` markets, each playing the same number of whole episodes, so
    ``episodes`` is rounded up to a multiple of the markets (5 on 4 markets: 2 each, 8)."""
    n_envs = min(num_envs, episodes)
    return n_envs, -(-episodes // n_envs)


def _rows(episodes: Mapping[str, torch.Tensor]) -> int:
    first = next(iter(episodes.values()), None)
    return 0 if first is None else int(first.shape[0])


def _cat_episodes(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    parts = [p for p in parts if _rows(p)]
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# ----------------------------------------------------------------------------------------
# Global RNGs
# ----------------------------------------------------------------------------------------
# The legacy global numpy RNG is what third-party code draws from; it is seeded and
# checkpointed so that such code resumes exactly too.
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = numpy_rng_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------
def auto_quiet(quiet: bool) -> bool:
    """Quiet when asked, under CI (``CI=true``), or when stderr is not a terminal."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return quiet or ci or not sys.stderr.isatty()


class Progress:
    """A tqdm bar over env steps with steps/s and the latest return; silent when quiet."""

    def __init__(
        self,
        total: int,
        initial: int,
        desc: str,
        quiet: bool,
        unit: str = "step",
        leave: bool = True,
    ):
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=unit == "step",
                dynamic_ncols=True,
                mininterval=0.5,
                leave=leave,
                file=sys.stderr,
            )

    def update(self, n: int, latest_return: float | None) -> None:
        if self.bar is None:
            return
        if latest_return is not None:
            self.bar.set_postfix_str(f"return={latest_return:.3g}", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM set a flag (read at chunk boundaries) instead of killing the process
    mid-update; a second SIGINT interrupts at once.

    Nested (a run inside a comparison), the inner one starts with the outer one's state and
    passes what it receives on, so a signal between two runs, or one that came while a run
    was already ending, still stops the comparison. A SIGTERM does not count as the second
    SIGINT: ``compare --jobs N`` forwards SIGTERM to its workers, which a Ctrl-C in the
    terminal reaches too."""
    flag = {"stop": False, "sigint": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if signum == signal.SIGINT:
            if flag["sigint"]:
                raise KeyboardInterrupt
            flag["sigint"] = True
        flag["stop"] = True
        outer = old.get(signum)
        if callable(outer) and getattr(outer, "stop_flag", None) is not None:
            outer(signum, frame)  # an outer stop_requests' handler

    handler.stop_flag = flag  # type: ignore[attr-defined]
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    outer_flag = getattr(old[signal.SIGINT], "stop_flag", None)
    if outer_flag is not None:
        flag.update(outer_flag)
    try:
        yield lambda: flag["stop"]
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """What the training loop itself carries between chunks (checkpointed)."""

    iters: int = 0  # batched steps done
    steps: int = 0  # env steps done (iters * num_envs)
    episodes: int = 0  # training episodes ended
    curve: list[dict[str, float]] = field(default_factory=list)
    window: list[dict[str, torch.Tensor]] = field(default_factory=list)  # unlogged episodes
    last_metrics: dict[str, float] = field(default_factory=dict)
    trained: bool = False  # the budget is spent (only evaluation and the summary remain)
    # The TensorBoard scalars (tag -> value) logged at step == ``steps``, so that a resume
    # that has to purge that step (Trainer._purge_step) can write them again.
    step_scalars: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "iters": self.iters,
            "steps": self.steps,
            "episodes": self.episodes,
            "curve": self.curve,
            "window": self.window,
            "last_metrics": self.last_metrics,
            "trained": self.trained,
            "step_scalars": self.step_scalars,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoopState:
        # step_scalars is newer than checkpoint version 2: an older checkpoint has none.
        optional = {"step_scalars"}
        missing = [k for k in cls.__dataclass_fields__ if k not in d and k not in optional]
        if missing:
            raise KeyError(f"the checkpoint's loop state lacks {missing}")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class RunResult:
    """What :func:`train` / :func:`resume` return."""

    path: Path
    summary: dict[str, Any]
    curve: list[dict[str, float]]


def full_config(cfg: RunConfig, env: Any, agent: Agent) -> dict[str, Any]:
    """``config.json``: the run config, the env's and the agents' full resolved configs."""
    head = agent.header()
    members = head.get("members", [head])
    return {
        "run": cfg.to_dict(),
        "env_config": env.config.to_dict(),
        "agents": [
            {"agent": m["agent"], "agent_ids": m["agent_ids"], "config": m["config"]}
            for m in members
        ],
        "versions": versions(),
        "command": sys.argv,
    }


# RunConfig's override fields by the key prefix `--set` writes them with.
_OVERRIDE_PREFIX = {
    "env_overrides": "env",
    "agent_overrides": "agent",
    "opponent_overrides": "opponent",
}
_UNSET = object()


def config_differences(theirs: Mapping[str, Any], mine: Mapping[str, Any], limit: int = 10) -> str:
    """The keys in which two ``RunConfig.to_dict()``s differ, with both values:
    ``agent.lr: 0.001 vs 0.0003; seed: 1 vs 0`` (nested keys dotted, the override fields by
    their ``--set`` prefix); at most ``limit`` of them, then ``and N more``."""
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b), key=str):
                name = _OVERRIDE_PREFIX.get(k, k) if not key else f"{key}.{k}"
                walk(a.get(k, _UNSET), b.get(k, _UNSET), name)
        elif a != b:
            shown = ["(unset)" if v is _UNSET else repr(v) for v in (a, b)]
            out.append(f"{key}: {shown[0]} vs {shown[1]}")

    walk(theirs, mine, "")
    more = f"; and {len(out) - limit} more" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


class Trainer:
    """One run: env, lineup, loop state, logger. Use :func:`train` / :func:`resume`."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: RunDir | None,
        quiet: bool | None = None,
        leave: bool = True,
    ):
        """``run_dir`` may be set after construction (``train`` builds the env and agents
        before it creates the directory); it must be set before :meth:`run`."""
        self.cfg = cfg
        self.leave = leave  # keep the finished progress bar on screen
        self._dir = run_dir
        self.quiet = auto_quiet(cfg.quiet if quiet is None else quiet)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.env = make_env(cfg)
        self.agent = make_lineup(cfg, self.env)
        self.env_agents = list(self.env.agents)
        self.focal = focal_agents(cfg, self.env_agents)
        self.loop = LoopState()
        self.resumed_from: list[str] = []
        self.diverged: dict[str, Any] | None = None  # set by run(): see _divergence
        self._started = False

    @property
    def dir(self) -> RunDir:
        """The run's directory; set (``trainer.dir = rd``) before anything reads or writes it."""
        if self._dir is None:
            raise RuntimeError("Trainer.dir is not set: the run directory is not created yet")
        return self._dir

    @dir.setter
    def dir(self, run_dir: RunDir) -> None:
        self._dir = run_dir

    # State ------------------------------------------------------------------------------
    def start(self) -> None:
        seed_everything(self.cfg.seed)
        self.env.reset(seed=self.cfg.seed)
        self.agent.begin_episode(None)
        self._started = True

    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            # The envelope of an agents checkpoint: agents.load_agent(path, env) reads it.
            **self.agent.envelope(),
            "run": {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "run_name": self.dir.name,
                "config": self.cfg.to_dict(),
                "steps": self.loop.steps,
            },
            "loop": self.loop.to_dict(),
            "agent_snapshot": snapshot.snapshot(self.agent, exclude=(self.env,)),
            "env_snapshot": snapshot.snapshot(self.env, skip=ENV_STATIC),
            "rng": rng_state(),
        }

    def save_checkpoint(self, payload: Mapping[str, Any] | None = None) -> Path:
        """Write ``payload`` (default: :meth:`checkpoint_payload`) as this step's checkpoint
        and prune the oldest beyond ``keep_checkpoints``."""
        payload = self.checkpoint_payload() if payload is None else payload
        self._check_savable(payload, "a checkpoint")
        path = self.dir.save_torch(f"checkpoints/step_{self.loop.steps:012d}.pt", payload)
        self.dir.prune_checkpoints(self.cfg.keep_checkpoints)
        return path

    def _check_savable(self, payload: Mapping[str, Any], what: str) -> None:
        """Refuse (:class:`RunError`, nothing written) an agent header or state that
        ``torch.load(weights_only=True)`` would not read back: every resume and
        ``load_agent`` would refuse the file as damaged."""
        why = unsavable_error(payload)
        if why:
            raise RunError(
                f"run {self.dir.name}: {what} of agent {self.agent.name!r} cannot be written at "
                f"step {self.loop.steps} (nothing was written): {why}"
            )

    def restore(self, payload: Mapping[str, Any], source: Path) -> None:
        """Write a run checkpoint (:func:`load_run_checkpoint`) back onto this freshly built
        trainer. A checkpoint that does not fit it (:func:`check_run_checkpoint`,
        :func:`check_fits`, or a state the env or an agent refuses part-way) raises
        :class:`RunError` naming the file; the trainer is then half restored and must be
        dropped (:func:`resume` does: it never runs)."""
        check_run_checkpoint(payload, source)
        run = payload["run"]
        if run["config"] != self.cfg.to_dict():
            differ = config_differences(run["config"], self.cfg.to_dict())
            raise RunError(
                f"checkpoint {str(source)!r} was written by a run with another config than "
                f"{str(self.dir.path / 'config.json')!r} (the checkpoint's vs this run's: "
                f"{differ}); resume it from its own run directory"
            )
        agent_differ = header_differences(payload["header"], self.agent)
        if agent_differ:
            raise RunError(
                f"checkpoint {str(source)!r} was written by an agent other than the one this "
                f"run's config builds today ({'; '.join(agent_differ[:5])}): a default changed "
                "since it was written (e.g. IQL's slate_selection, 'top_k' until 2026-12-03). "
                "Finish the run with the recenv version that started it, or start it over"
            )
        loop = payload["loop"]
        if loop["steps"] != loop["iters"] * self.cfg.num_envs:
            raise RunError(
                f"checkpoint {str(source)!r} is damaged: loop['steps'] = {loop['steps']} is "
                f"not loop['iters'] * num_envs = {loop['iters']} * {self.cfg.num_envs}"
            )
        self.env.reset(seed=self.cfg.seed)  # allocates every tensor, then overwrite them all
        # The fresh env and agent are what the checkpoint must fit, before any is written to.
        live_state = _to_cpu(self.agent.state_dict())
        check_fits(
            payload,
            {
                "state": live_state,
                "agent_snapshot": snapshot.snapshot(self.agent, exclude=(self.env,)),
                "env_snapshot": snapshot.snapshot(self.env, skip=ENV_STATIC),
            },
            source,
            none_ok=("agent_snapshot",),
        )
        foreign = state_keys_error(self.agent, payload["state"], live_state)
        if foreign:  # load_state_dict would skip them silently
            raise RunError(f"checkpoint {str(source)!r} is damaged: {foreign}")
        if self.agent.finite_state:  # a diverged run's NaN weights: refused, not trained on
            bad = nonfinite_state_error(payload["state"])
            bad = bad or nonfinite_state_error(payload["agent_snapshot"], "agent_snapshot")
            if bad:
                raise RunError(f"checkpoint {str(source)!r} cannot be resumed: {bad}")
        part = "env_snapshot"
        try:
            # (restore ends with the env's state_restored(): the large tables go back onto
            # huge pages, and a compiled step checks their layout once, recompiling if it
            # changed.)
            snapshot.restore(self.env, payload["env_snapshot"])
            part = "state"
            self.agent.load_state_dict(_to_device(payload["state"], self.agent.device))
            part = "agent_snapshot"
            snapshot.restore(self.agent, payload["agent_snapshot"])
            misfit = optimizer_state_error(self.agent)  # settings and moments load unchecked
            if misfit:
                raise ValueError(misfit)
            part = "loop"
            self.loop = LoopState.from_dict(loop)
            part = "rng"
            set_rng_state(payload["rng"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            # What the checks above cannot see (SnapshotError is a ValueError). Other
            # exceptions (NameError, AttributeError, ...) are bugs here: not renamed.
            text = str(e).strip().replace("\n", " ")
            raise RunError(
                f"checkpoint {str(source)!r} does not fit this run's env and agents: restoring "
                f"{part!r} failed ({type(e).__name__}: {text[:500]})"
            ) from e
        self.resumed_from.append(source.name)
        self._started = True

    # The loop ---------------------------------------------------------------------------
    def _stops(self) -> tuple[int, int, int]:
        N, cfg = self.cfg.num_envs, self.cfg
        total = -(-cfg.total_steps // N)
        log = max(1, round(cfg.log_every / N))
        ckpt = max(1, round(cfg.checkpoint_every / N)) if cfg.checkpoint_every else total
        return total, log, ckpt

    def run(self) -> RunResult:
        """Train (from the start or where :meth:`restore` left off), evaluate, and write the
        run's files. A file that cannot be written (a full disk, a file-size limit) stops the
        run with a :class:`WriteError` naming it, the checkpoint that is kept and how to
        continue."""
        try:
            return self._run()
        except WriteError as e:
            raise self._write_failed(e) from e.__cause__

    def _write_failed(self, e: WriteError) -> WriteError:
        """``e`` (a failed write of this run) saying which checkpoint is kept and how to go
        on from it once there is room."""
        what = "checkpoint" if e.path.parent == self.dir.checkpoint_dir else e.what
        kept = [c for c in self.dir.checkpoints() if c != e.path]
        last = (
            f"the last checkpoint {str(kept[-1])!r} is kept"
            if kept
            else "no checkpoint was written before it (a resume starts the run over)"
        )
        parent = self.dir.path.parent
        # A comparison's run: resuming the comparison continues it and its other runs.
        again = parent if (parent / "compare.json").is_file() else self.dir.path
        return WriteError(
            e.path,
            e.reason,
            f"run {self.dir.name}: cannot write {what} {str(e.path)!r}: {e.reason} "
            f"({e.kept}); {last}. Free space (or raise the file-size limit) "
            f"and continue with: python -m experiments resume {again}",
            what=e.what,
            kept=e.kept,
        )

    def _run(self) -> RunResult:
        if not self._started:
            self.start()
        N, loop = self.cfg.num_envs, self.loop
        total, log_iters, ckpt_iters = self._stops()
        purge, replay = self._purge_step()
        logger = RunLogger(self.dir.path, purge_step=purge)
        if replay:
            logger.scalars(loop.steps, loop.step_scalars)
        if not self.resumed_from:
            logger.hyperparameters(self.dir.read_json("config.json"))
        desc = f"{env_label(self.cfg.env)} {self.cfg.lineup} seed={self.cfg.seed}"
        bar = Progress(total * N, loop.steps, desc, self.quiet, leave=self.leave)
        t_start, window_t, window_steps = time.perf_counter(), time.perf_counter(), 0
        latest = loop.curve[-1]["return"] if loop.curve else None
        # The stop handler stays until the run is finished: a Ctrl-C during the evaluation
        # stops it as one during training does; one after it lets the summary be written.
        with stop_requests() as stop_requested:
            try:
                while loop.iters < total:
                    nxt = min(
                        total,
                        (loop.iters // log_iters + 1) * log_iters,
                        (loop.iters // ckpt_iters + 1) * ckpt_iters,
                    )
                    n = nxt - loop.iters
                    try:
                        res = agents.train(self.agent, self.env, n * N, reset=False)
                    except MetricError as e:  # a plug-in's learn(): nothing of it logged
                        raise RunError(
                            f"run {self.dir.name}: training stopped between steps {loop.steps} "
                            f"and {nxt * N}: {e}. Nothing after step {loop.steps} was logged "
                            "or checkpointed"
                        ) from e
                    base = loop.steps
                    loop.iters, loop.steps = nxt, nxt * N
                    loop.step_scalars = {}  # what is logged at the new loop.steps
                    window_steps += n * N
                    for s, m in res.metrics:
                        logged = logger.agent_metrics(base + s, m)
                        if base + s == loop.steps:
                            loop.step_scalars.update(logged)
                        loop.last_metrics = dict(m)
                    if _rows(res.episodes):
                        loop.window.append({k: v.clone() for k, v in res.episodes.items()})
                        loop.episodes += _rows(res.episodes)
                    if nxt % log_iters == 0 or nxt == total:
                        now = time.perf_counter()
                        loop.step_scalars.update(
                            logger.scalars(
                                loop.steps,
                                {"charts/sps": window_steps / max(now - window_t, 1e-9)},
                            )
                        )
                        window_t, window_steps = now, 0
                        eps = _cat_episodes(loop.window)
                        if eps:
                            point = {
                                "step": float(loop.steps),
                                **episode_point(eps, self.env_agents, self.focal),
                            }
                            loop.curve.append(point)
                            loop.step_scalars.update(logger.episodes(loop.steps, point))
                            latest = point["return"]
                        loop.window = []
                    bar.update(n * N, latest)
                    if nxt == total:
                        loop.trained = True
                    # A stop in the last chunk too: its checkpoint is the final one, from which
                    # `resume` evaluates and finishes as the uninterrupted run would.
                    stop = stop_requested()
                    if nxt % ckpt_iters == 0 or nxt == total or stop:
                        logger.flush()  # what the checkpoint covers is on disk first
                        payload = self.checkpoint_payload()
                        self.diverged = self._divergence(payload["state"])
                        if self.diverged:
                            # A result, not an error (a sweep's high learning rates do this):
                            # training stops, no checkpoint of it is written, the diverged
                            # agent is evaluated and the summary and reports say so.
                            loop.trained = True
                            warnings.warn(
                                f"run {self.dir.name}: training diverged at step {loop.steps} "
                                f"({self.diverged['where']}); it stopped there (no checkpoint "
                                "of it; the earlier ones are kept) and the diverged agent is "
                                "evaluated. Lower the learning rate or clip gradients harder",
                                RuntimeWarning,
                                stacklevel=2,
                            )
                            break
                        self.save_checkpoint(payload)
                    if stop:
                        raise Interrupted(self.dir.path, loop.steps)
                train_seconds = time.perf_counter() - t_start
                bar.close()
                final = self.agent.envelope()
                self._check_savable(final, "agent.pt")
                self.dir.save_torch("agent.pt", final)
                # A Ctrl-C during a long evaluation stops it like one during training (the
                # final checkpoint is kept: `resume` evaluates again); it was a KeyboardInterrupt
                # traceback that left a run without its summary. A diverged run has no
                # checkpoint of its last step to resume from: its evaluation finishes.
                t_eval = time.perf_counter()
                try:
                    evaluation = self.evaluate(None if self.diverged else stop_requested)
                except EvaluationStopped:
                    raise Interrupted(self.dir.path, loop.steps) from None
                eval_seconds = time.perf_counter() - t_eval
                if evaluation:
                    logger.evaluation(loop.steps, evaluation)
            except BaseException:
                logger.close(check=False)  # the error in flight is the one to report
                raise
            finally:
                bar.close()
            logger.close()  # a failed write of its last events: a WriteError, no DONE
            summary = self.summary(evaluation, train_seconds, eval_seconds)
            self.dir.write_text("curve.csv", curve_csv(loop.curve))
            self.dir.write_json("summary.json", summary)
            self.dir.mark_done()
        return RunResult(self.dir.path, summary, loop.curve)

    def _divergence(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """``{"step", "where"}`` when the agent's ``state`` (the checkpoint's, about to be
        saved) holds NaN or ±inf (its training diverged), else ``None``: a diverged
        checkpoint could not be resumed, and pruning would have replaced the good ones."""
        if not self.agent.finite_state:
            return None
        where = nonfinite_state_error(state, "the agent's state", cause=None)
        return {"step": self.loop.steps, "where": where} if where else None

    def _purge_step(self) -> tuple[int | None, bool]:
        """TensorBoard's ``purge_step`` for this process's writer (events of earlier attempts
        at steps >= it are hidden), and whether ``loop.step_scalars`` must be logged again.

        So that a resumed run's event files read exactly like an uninterrupted run's:

        - a new run: nothing to hide;
        - a run that starts over (killed before its first checkpoint): everything the killed
          attempt wrote (its steps start at 0 like this attempt's);
        - resumed from a checkpoint during training: what was written after it (steps >
          ``loop.steps``; what it covers was flushed before it was written);
        - resumed from the final checkpoint: the killed attempt may have logged the evaluation
          (``eval/*``, at the final step) before dying, so the final step is hidden too and the
          training scalars logged at it are written again from the checkpoint. (A checkpoint
          from before ``step_scalars`` existed cannot: it purges after the final step, as then.)
        """
        loop = self.loop
        if not self.resumed_from:
            old_events = any(self.dir.path.glob("events.out.tfevents.*"))
            return (0 if old_events else None), False
        if loop.trained and loop.step_scalars:
            return loop.steps, True
        return loop.steps + 1, False

    def evaluate(self, stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """Greedy episodes on fresh evaluation markets (their own seeds), played by a copy of
        the trained lineup built for them and loaded from its ``state_dict`` — exactly what
        ``agents.load_agent(agent.pt, env)`` gives — so training state is left untouched.
        ``stop()`` true abandons it (:class:`agents.rollout.EvaluationStopped`)."""
        cfg = self.cfg
        if cfg.eval_episodes <= 0:
            return {}
        n_envs, per_env = eval_plan(cfg.num_envs, cfg.eval_episodes)
        seed = cfg.seed + EVAL_SEED_OFFSET
        env = make_env(cfg, num_envs=n_envs, seed=seed)
        agent = make_lineup(cfg, env)
        agent.load_state_dict(_to_device(_to_cpu(self.agent.state_dict()), agent.device))
        res = agents.evaluate(agent, env, episodes_per_env=per_env, seed=seed, stop=stop)
        return episode_point(res.episodes, self.env_agents, self.focal)

    def summary(
        self, evaluation: dict[str, float], train_seconds: float, eval_seconds: float
    ) -> dict[str, Any]:
        cfg, loop = self.cfg, self.loop
        tail = loop.curve[-1] if loop.curve else {}
        return {
            "run": self.dir.name,
            "env": cfg.env,
            "agent": cfg.agent,
            "opponent": cfg.opponent,
            "lineup": cfg.lineup,
            "seed": cfg.seed,
            "focal_agents": self.focal,
            "env_steps": loop.steps,
            "train_episodes": loop.episodes,
            "train": tail,
            "train_metrics": loop.last_metrics,
            "eval": evaluation,
            "diverged": self.diverged,
            "timing": {
                "train_seconds_this_process": train_seconds,
                "eval_seconds": eval_seconds,
                "resumed_from": self.resumed_from,
                "finished": utc_stamp(),
            },
        }


def curve_csv(curve: list[dict[str, float]]) -> str:
    return to_csv(curve)


def read_curve(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


# ----------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _refusal_as_config_error(cfg: RunConfig):
    """A ``ValueError`` raised while building ``cfg``'s env or agents (a value their own
    checks refuse) as the :class:`ConfigError` the command line reports without a trace."""
    try:
        yield
    except ValueError as e:
        msg = str(e)
        # An agent's refusal names it ("iql: gamma=..."), which a lineup of that agent alone
        # would say twice; beside an opponent the name says which of the two refused.
        if not cfg.opponent and msg.startswith(f"{cfg.agent}: "):
            msg = msg[len(cfg.agent) + 2 :]
        raise ConfigError(f"{cfg.env} with {cfg.lineup}: {msg}") from e


def check_lineup(cfg: RunConfig) -> None:
    """Build ``cfg``'s env and lineup once and drop them, so that what only the env or an
    agent refuses fails before anything trains or is written (``compare`` checks each
    (env, agent) cell with it before its first run)."""
    with _refusal_as_config_error(cfg):
        make_lineup(cfg, make_env(cfg))


def train(cfg: RunConfig, *, quiet: bool | None = None, leave: bool = True) -> RunResult:
    """A new run of ``cfg`` in a new directory under ``cfg.root``."""
    validate_run(cfg)
    refuse_finished_parent(cfg.root)  # before the env and agents are built
    # The env and the agents first: a value only they refuse (agent.lr=-1, Adam's check)
    # fails as a config error before a run directory exists, so it leaves nothing behind.
    with _refusal_as_config_error(cfg):
        trainer = Trainer(cfg, None, quiet, leave)
    trainer.dir = rd = RunDir.create(cfg)
    # Locked before config.json makes it a run directory that `resume` would accept.
    with rd.lock():
        rd.write_json("config.json", full_config(cfg, trainer.env, trainer.agent))
        if not trainer.quiet and leave:
            print(f"run: {rd.path}", file=sys.stderr)
        return trainer.run()


def load_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run checkpoint, checked; a damaged file raises :class:`RunError` naming it."""
    p = Path(path)
    try:
        payload = read_checkpoint(p)
    except FileNotFoundError:
        raise RunError(f"checkpoint {str(p)!r} does not exist") from None
    except ValueError as e:
        raise RunError(f"checkpoint {str(p)!r} is corrupt or unreadable: {e}") from None
    run = payload.get("run")
    if not isinstance(run, dict) or run.get("format") != CHECKPOINT_FORMAT:
        raise RunError(
            f"{str(p)!r} is an agent checkpoint, not a run checkpoint (no 'run' section); "
            "evaluate it with: python -m experiments evaluate PATH --env ENV_ID"
        )
    if run.get("version") != CHECKPOINT_VERSION:
        raise RunError(
            f"{str(p)!r} has run-checkpoint version {run.get('version')!r}; this version "
            f"reads version {CHECKPOINT_VERSION}"
        )
    _float_metrics(payload.get("loop"))
    check_run_checkpoint(payload, p)
    return payload


def _float_metrics(loop: Any) -> None:
    """A checkpoint's ``loop['last_metrics']`` with 0-d real tensors as floats: a plug-in
    whose ``learn()`` reported tensors had them saved raw before metrics were checked where
    they are returned (:func:`agents.base.checked_metrics`); its run crashed writing
    summary.json, and its checkpoints resume (and finish it) this way."""
    metrics = loop.get("last_metrics") if isinstance(loop, dict) else None
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            if torch.is_tensor(v) and v.dim() == 0 and not v.is_complex():
                metrics[k] = float(v)


def resume(
    path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    quiet: bool | None = None,
    leave: bool = True,
) -> RunResult:
    """Continue an unfinished run from its newest checkpoint (or ``checkpoint``); without any
    checkpoint the run starts over in its own directory.

    Refused, with nothing written, when the directory is not a usable run (a finished run, a
    ``config.json`` this installation cannot read or build) or while another process holds
    the run's lock (:class:`DirLock`), which is held from here until the run returns."""
    rd = RunDir.open(path)
    with rd.lock():
        rd.refuse_finished()  # again: it may have finished just before the lock was taken
        cfg = read_run_config(rd.path)
        cfg_file = str(rd.path / "config.json")
        try:
            validate_run(cfg)
            trainer = Trainer(cfg, rd, quiet, leave)
        except ValueError as e:  # ConfigError included: an agent or env not installed here
            raise RunError(f"{cfg_file!r} cannot be resumed here: {e}") from None
        ckpts = rd.checkpoints()
        source = Path(checkpoint) if checkpoint is not None else (ckpts[-1] if ckpts else None)
        if source is not None:
            try:
                trainer.restore(load_run_checkpoint(source), source)
            except RunError as e:  # the half-restored trainer is dropped: it never runs
                others = [str(c) for c in ckpts if c != source]
                hint = (
                    f"resume from an earlier one: python -m experiments resume {rd.path} "
                    f"--checkpoint {others[-1]}"
                    if others
                    else "no other checkpoint exists; start a new run"
                )
                raise RunError(f"{e}. No file was changed or removed; {hint}") from e.__cause__
        remove_temp_files(rd.path)  # a killed process's; only once the run is resumable
        if not trainer.quiet:
            where = f"step {trainer.loop.steps}" if source is not None else "the start"
            print(f"resuming {rd.path} from {where}", file=sys.stderr)
        return trainer.run()


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` in ``run_dir/config.json``; a file that is not readable as one
    (not JSON, not a run's config, unknown keys or values) raises :class:`RunError` naming it."""
    path = Path(run_dir) / "config.json"
    data = read_json_object(path, "run", "a run config", "run")
    try:
        return RunConfig.from_dict(data["run"])
    except (ValueError, TypeError) as e:  # ConfigError included
        raise RunError(f"{str(path)!r} is not readable as a run config: {e}") from None


def evaluate_checkpoint(
    path: str | Path,
    *,
    episodes: int | None = None,
    seed: int | None = None,
    env_id: str | None = None,
    root: str | Path = "runs",
    quiet: bool | None = None,
) -> tuple[Path, dict[str, float]]:
    """Greedy evaluation of a run (its ``agent.pt``, else its newest checkpoint) or of a
    checkpoint file; results go to a *new* directory under ``root`` (the evaluated run is
    never written to). Returns that directory and the metrics."""
    refuse_finished_parent(root)  # before anything is read or evaluated
    # A directory made in a comparison would join its next resume and report (a phantom row).
    refuse_run_or_comparison_root(root)
    p = Path(path)
    evaluated = _run_directory_of(p)
    if evaluated is not None and Path(root).resolve().is_relative_to(evaluated.resolve()):
        raise ConfigError(
            f"root {str(root)!r} is inside the evaluated run {str(evaluated)!r}, which "
            "evaluate never writes to; give a directory outside it"
        )
    cfg: RunConfig | None = None
    source = ""  # the file cfg was read from, for errors
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise RunError(f"{str(p)!r} is not a run directory (it has no config.json)")
        cfg, source = read_run_config(p), str(p / "config.json")
        p, payload = _read_newest(p)
    else:
        payload = _read_checkpoint_file(p)
    if cfg is None and isinstance(payload.get("run"), dict):
        source = str(p)
        saved = payload["run"].get("config")
        if not isinstance(saved, dict):  # from_dict would read a list as the defaults
            raise RunError(
                f"checkpoint {source!r} holds no readable run config: run['config'] is "
                f"{describe(saved) if 'config' in payload['run'] else 'missing'}; expected a dict"
            )
        try:
            cfg = RunConfig.from_dict(saved)
        except (ValueError, KeyError, TypeError) as e:
            raise RunError(f"checkpoint {source!r} holds no readable run config: {e}") from None
    if cfg is None and evaluated is not None:
        # A bare agent checkpoint inside a run (its agent.pt): the run's config, as for the
        # run itself. Read as bare, it was evaluated on the env's defaults (horizon 200 for a
        # run trained on 20), silently.
        cfg, source = read_run_config(evaluated), str(evaluated / "config.json")
    if cfg is None:
        if env_id is None:
            raise RunError(f"{str(p)!r} is a bare agent checkpoint: give the env (--env ENV_ID)")
        head = payload["header"]
        cfg = RunConfig(env=env_id, agent=head.get("agent", "agent"))
    if env_id is not None and env_id != cfg.env:
        cfg = RunConfig.from_dict({**cfg.to_dict(), "env": env_id})
    if source:
        try:
            validate_run(cfg)
        except ConfigError as e:  # e.g. an agent or env this installation does not have
            on = f" on {env_id}" if env_id is not None else ""
            raise RunError(f"{source!r} cannot be evaluated here{on}: {e}") from None
    n = episodes if episodes is not None else max(cfg.eval_episodes, 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"episodes={episodes!r} must be an int >= 1")
    s = seed if seed is not None else cfg.seed + EVAL_SEED_OFFSET
    # As the run's own evaluation: every market plays the same number of whole episodes.
    n_envs, per_env = eval_plan(cfg.num_envs, n)
    with _refusal_as_config_error(cfg):  # e.g. a seed past int64
        env = make_env(cfg, num_envs=n_envs, seed=s)
    try:
        agent = agents.load_agent(p, env, payload=payload)  # read once, above
    except ValueError as e:  # e.g. --env with other agents, candidates or features
        raise RunError(f"{str(p)!r} cannot be evaluated on {cfg.env}: {e}") from None
    except (KeyError, IndexError, TypeError, RuntimeError) as e:  # a header damaged by hand
        raise RunError(
            f"{str(p)!r} is a damaged agent checkpoint: its header does not describe an agent "
            f"this installation can build ({type(e).__name__}: {e})"
        ) from e
    res = agents.evaluate(agent, env, episodes_per_env=per_env, seed=s)
    metrics = episode_point(res.episodes, list(env.agents), focal_agents(cfg, list(env.agents)))
    label = f"{env_label(cfg.env)}__{sanitize(cfg.lineup)}__eval{s}__{utc_stamp()}"
    out = RunDir(create_unique_dir(Path(root), label))
    out.write_json(
        "summary.json",
        {
            "evaluated": str(Path(path)),
            "checkpoint": str(p),
            "env": cfg.env,
            "seed": s,
            "episodes": {
                "requested": n,
                "run": n_envs * per_env,
                "markets": n_envs,
                "per_market": per_env,
            },
            "eval": metrics,
            # What a run's config.json records: the config, the env's and the agents' full
            # configs, the versions and commit, the command.
            **full_config(cfg, env, agent),
        },
    )
    out.mark_done()
    if n_envs * per_env != n and not quiet:  # what was run, not progress: also when piped
        print(eval_rounding_notice(n, n_envs, per_env), file=sys.stderr)
    if not auto_quiet(bool(quiet)):
        print(f"evaluation: {out.path}", file=sys.stderr)
    return out.path, metrics


def _read_checkpoint_file(p: Path) -> dict[str, Any]:
    """:func:`read_checkpoint` of ``p``, its refusals as :class:`RunError`."""
    try:
        return read_checkpoint(p)
    except FileNotFoundError:
        raise RunError(f"checkpoint {str(p)!r} does not exist") from None
    except ValueError as e:
        raise RunError(f"checkpoint {str(p)!r} is corrupt or unreadable: {e}") from None


def _read_newest(run: Path, tries: int = 10) -> tuple[Path, dict[str, Any]]:
    """What ``evaluate`` reads of the run directory ``run``: its ``agent.pt``, else its newest
    checkpoint, as ``(file, payload)``; read once (the agent is built from this payload).

    The run may be training in another process meanwhile: its newest checkpoint can be pruned
    between the listing and the read (a newer one replaces it), so a checkpoint gone by then
    is looked up again."""
    for _ in range(tries):
        ckpts = RunDir(run).checkpoints()
        p = run / "agent.pt" if (run / "agent.pt").is_file() else (ckpts[-1] if ckpts else None)
        if p is None:
            raise RunError(f"run {str(run)!r} has no agent.pt and no checkpoint to evaluate")
        try:
            return p, _read_checkpoint_file(p)
        except RunError as e:
            if not p.exists():  # pruned meanwhile
                continue
            others = [c for c in ckpts if c != p]
            if not others:
                raise
            raise RunError(
                f"{e}. Evaluate an earlier checkpoint: python -m experiments evaluate {others[-1]}"
            ) from None
    raise RunError(
        f"run {str(run)!r}: its newest checkpoint was removed before it could be read, "
        f"{tries} times in a row (a run training fast, keeping few checkpoints); try again"
    )


def eval_rounding_notice(episodes: int, n_envs: int, per_env: int) -> str:
    """What :func:`eval_plan` made of ``episodes`` when it rounded them up."""
    return (
        f"note: {episodes} evaluation episodes rounded up to {n_envs * per_env}: "
        f"{per_env} in each of {n_envs} markets (every market plays whole episodes)"
    )


def _run_directory_of(path: Path) -> Path | None:
    """The run directory (one with ``config.json``) that ``path`` is, or whose file or
    checkpoint it is; ``None`` for a file outside any run."""
    candidates = [path] if path.is_dir() else [path.parent, path.parent.parent]
    return next((d for d in candidates if (d / "config.json").is_file()), None)
