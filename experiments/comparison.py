"""Comparisons: every agent on every env with every seed, as runs, then one report.

``compare(config)`` creates ``<root>/<name>__<UTC time>/`` and trains each (env, agent, seed)
as an ordinary run directory inside it, so ``tensorboard --logdir`` on the comparison shows
every run. When all runs are done it writes::

    compare.json          the resolved CompareConfig (and versions, command)
    runs.csv              one row per run: evaluation metrics, last training window
    table.csv / table.md  per env and agent: mean ± 95 % CI over seeds
    learning_curves.png   episodic return over training, mean ± 95 % CI band per agent
    market_share.png      market share of the agent under test over training
    final_metrics.png     evaluation metrics as bars with 95 % CI error bars
    DONE                  the comparison is complete; it is never written again

``resume_comparison(path)`` finishes an interrupted comparison: finished runs are read,
unfinished ones resumed from their last checkpoint, missing ones started.

While ``compare`` or ``resume_comparison`` works on a comparison it holds the comparison
directory's lock (:class:`experiments.runner.DirLock`), and each run's own while it trains,
so a second process is refused instead of training into the same directories. Ctrl-C or
SIGTERM stops the runs in progress at their next checkpoint (with ``jobs > 1`` too) and
names the comparison to resume.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import torch

import recenv
from experiments import report, runner
from experiments.config import (
    CompareConfig,
    ConfigError,
    RunConfig,
    agent_config_class,
    validate_run,
)
from experiments.provenance import versions
from experiments.runner import (
    DONE,
    DirLock,
    Interrupted,
    RunDir,
    RunError,
    atomic_write_bytes,
    create_unique_dir,
    sanitize,
    utc_stamp,
)
from recenv.scenarios import SCENARIOS


@dataclass
class ComparisonResult:
    """A finished comparison: its directory, table and figures."""

    path: Path
    rows: list[dict[str, Any]]
    table: list[dict[str, Any]]
    markdown: str
    figures: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def compare(
    cfg: CompareConfig, *, quiet: bool | None = None, log: Callable = print
) -> ComparisonResult:
    """Run the comparison ``cfg`` in a new directory under ``cfg.run.root``."""
    runner.refuse_finished_parent(cfg.run.root)
    for cell in cfg.cells()[:: cfg.seeds]:  # one per (env, agent): fail before any training
        validate_run(cell)
        runner.check_lineup(cell)
    check_workers_resolve(cfg)
    path = create_unique_dir(Path(cfg.run.root), f"{sanitize(cfg.name)}__{utc_stamp()}")
    head = {
        "config": cfg.to_dict(),
        "versions": versions(),
        "command": sys.argv,
        "created": utc_stamp(),
    }
    # Locked before compare.json makes it a comparison that `resume` would accept.
    with DirLock(path, "comparison"):
        _write(path / "compare.json", json.dumps(head, indent=2) + "\n")
        return _complete(path, cfg, quiet, log)


def resume_comparison(
    path: str | Path, *, quiet: bool | None = None, log: Callable = print
) -> ComparisonResult:
    """Finish the comparison in ``path``. Refused, with nothing written, when it is finished,
    when its ``compare.json`` cannot be read or its agents and envs built here, or while
    another process holds its lock."""
    p = Path(path)
    if not (p / "compare.json").is_file():
        what = "does not exist" if not p.exists() else "is not a comparison directory"
        raise RunError(f"{str(p)!r} {what} (it has no compare.json)")
    _refuse_finished(p)
    with DirLock(p, "comparison"):
        _refuse_finished(p)  # again: it may have finished just before the lock was taken
        cfg = read_compare_config(p)
        try:
            check_workers_resolve(cfg)
        except ConfigError as e:
            raise RunError(f"{str(p)!r} cannot be resumed here: {e}") from None
        return _complete(p, cfg, quiet, log)


def check_workers_resolve(cfg: CompareConfig) -> None:
    """With ``jobs > 1``, a :class:`ConfigError` unless every agent (the opponent, ensemble
    members) and every env id resolves in a worker process, which is a fresh Python started
    with ``spawn``: an agent registered in ``__main__`` (a notebook cell, ``@agents.register``
    in ``python -c``), an id registered by ``recenv.register``, or either from a module the
    worker does not import exists only here, and each worker's runs failed with "unknown
    agent" after the comparison directory was made. Built-in agents and ids, and installed
    plug-ins, resolve anywhere; the others are resolved once in such a process (as the
    workers will be)."""
    if cfg.jobs <= 1:
        return
    names: set[str] = set()
    for env in cfg.envs:  # the seeds do not change which agents a cell builds
        for agent in cfg.agents:
            cell = cfg.run_config(env, agent, cfg.run.seed)
            names |= _with_members(agent, cell.agent_kwargs())
            if cell.opponent:
                names |= _with_members(cell.opponent, cell.opponent_kwargs())
    doubtful = sorted(n for n in names if not _resolves_anywhere(n))
    # An env id registered here by recenv.register (a notebook cell) is missing in a worker
    # as such an agent is; built-in ids and installed plug-ins (group recenv.envs) are not.
    anywhere = {*SCENARIOS, *recenv.registry.plugin_ids()}
    doubtful_envs = sorted(e for e in cfg.envs if e not in anywhere)
    if not doubtful and not doubtful_envs:
        return
    ctx = multiprocessing.get_context("spawn")
    try:
        with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            failed, failed_envs = pool.submit(_unresolved, doubtful, doubtful_envs).result()
    except Exception as e:  # the worker itself did not start (BrokenProcessPool, ...)
        why = f"a worker process could not start: {type(e).__name__}: {e}"
        failed, failed_envs = dict.fromkeys(doubtful, why), dict.fromkeys(doubtful_envs, why)
    _refuse_unresolved(
        "env(s)", failed_envs, cfg.jobs,
        "An id registered with recenv.register in this process exists only here: declare it "
        "in the 'recenv.envs' entry-point group of an installed package, or use jobs=1",
    )  # fmt: skip
    _refuse_unresolved(
        "agent(s)", failed, cfg.jobs,
        "An agent registered in __main__ (a notebook, a script's main block) exists only in "
        "this process: give it as 'module:attr' of an importable module, install it as an "
        "entry point (group 'recenv.agents'), or use jobs=1",
    )  # fmt: skip


def _refuse_unresolved(what: str, failed: dict[str, str], jobs: int, remedy: str) -> None:
    """A :class:`ConfigError` naming the ``failed`` names ``{name: why}`` and ``remedy``."""
    if failed:
        why = "; ".join(f"{n!r}: {text}" for n, text in failed.items())
        raise ConfigError(
            f"{what} {sorted(failed)} cannot run with jobs={jobs}: the worker processes (fresh "
            f"Pythons) cannot resolve them ({why}). {remedy}"
        )


def _with_members(name: str, overrides: dict[str, Any]) -> set[str]:
    """``name`` and the names of the member agents its config builds (an ensemble's
    ``members``, entries a name or a ``(name, {config})`` pair, nested ensembles followed): a
    member registered in ``__main__`` fails in a worker as the agent itself would."""
    found = {name}
    cls = agent_config_class(name)
    declared = {f.name: f for f in fields(cls)} if cls is not None else {}
    if "members" not in declared:
        return found
    members = overrides.get("members", declared["members"].default)
    for spec in members if isinstance(members, (tuple, list)) else ():
        if isinstance(spec, str):
            found |= _with_members(spec, {})
        elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
            found |= _with_members(spec[0], dict(spec[1]) if isinstance(spec[1], Mapping) else {})
    return found


def _resolves_anywhere(name: str) -> bool:
    """Whether agent ``name`` (already checked here) certainly resolves in a fresh process: a
    built-in agent (``import agents`` registers it), or ``module:attr`` / an entry point,
    which are imported by name, of a module other than ``__main__``."""
    import agents

    target = agents.agent_class(name)
    if name not in agents.registered_agents():  # module:attr or an entry point
        return name.partition(":")[0] not in ("__main__", "__mp_main__")
    module = getattr(target, "__module__", "")
    return module == "agents" or module.startswith("agents.")


def _unresolved(names: list[str], env_ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """In a worker process: ``{name: why}`` of the agent names, then of the env ids, that do
    not resolve here."""
    import agents

    failed, failed_envs = {}, {}
    for name in names:
        try:
            agents.agent_class(name)
        except ValueError as e:
            failed[name] = str(e)
    for env_id in env_ids:
        try:
            recenv.spec(env_id)
        except ValueError as e:
            failed_envs[env_id] = str(e)
    return failed, failed_envs


def _refuse_finished(p: Path) -> None:
    if (p / DONE).exists():
        raise RunError(
            f"comparison {str(p)!r} is finished; its directory is never modified. Start a new "
            f"one, or print its table: python -m experiments report {p}"
        )


def read_compare_config(path: str | Path) -> CompareConfig:
    """The :class:`CompareConfig` of the comparison in ``path``, checked against this
    installation (its env ids, agents and their config keys); a ``compare.json`` that is not
    readable as one, names what is not installed here, or records seeds the config cannot
    count (a ``tune_sweep`` variant's ``--seeds 0,1,7``) raises :class:`RunError` naming it."""
    file = str(Path(path) / "compare.json")
    head = report.read_compare_json(path)
    try:
        cfg = CompareConfig.from_dict(head["config"])
        for cell in cfg.cells()[:: cfg.seeds]:  # one per (env, agent), as compare() checks
            validate_run(cell)
    except (ValueError, TypeError) as e:  # ConfigError included
        kind = "cannot be resumed here" if isinstance(e, ConfigError) else "is not readable"
        raise RunError(f"{file!r} {kind}: {e}") from None
    # A tune_sweep variant records its seeds (--seeds 0,1,7) beside a config that can only
    # count them from run.seed: resuming it would train and report other seeds.
    sweep = head.get("sweep")
    sweep = sweep if isinstance(sweep, dict) else {}
    seeds = sweep.get("seeds")
    if seeds is not None and list(seeds) != cfg.seed_list():
        raise RunError(
            f"{str(Path(path))!r} is a variant of the sweep in {sweep.get('dir')!r} with seeds "
            f"{seeds}, which resume cannot train (it counts {cfg.seeds} seeds from run.seed="
            f"{cfg.run.seed}: {cfg.seed_list()}); run the sweep again with those seeds, or "
            f"print what finished: python -m experiments report {Path(path)} --partial"
        )
    return cfg


def _cell_key(cfg: RunConfig) -> tuple[str, str, str, int]:
    return (cfg.env, cfg.agent, cfg.opponent, cfg.seed)


def _existing_runs(path: Path) -> dict[tuple[str, str, str, int], Path]:
    """The comparison's run directories by cell, the finished ones' results checked readable.

    A directory without ``config.json`` is not a run (a process killed right after creating
    it). One whose ``config.json`` or (finished) ``summary.json``/``curve.csv`` cannot be read,
    or a second run of one cell, raises :class:`RunError` naming it before anything trains:
    skipping it would train its cell again, and the finished comparison's directory would
    then hold two runs of one cell, which ``report`` counts as two seeds."""
    found: dict[tuple[str, str, str, int], Path] = {}
    for cfg_path in sorted(path.glob("*/config.json")):
        d = cfg_path.parent
        key = _cell_key(runner.read_run_config(d))
        if key in found:
            raise RunError(
                f"two run directories of {key[1]} on {key[0]} with seed {key[3]} in the "
                f"comparison {str(path)!r}: {str(found[key])!r} and {str(d)!r}; move the one "
                "that does not belong to it out of the comparison, then resume the comparison"
            )
        if (d / DONE).exists():
            _read_finished(d, key)
        found[key] = d
    return found


def _read_finished(d: Path, cell: tuple[str, str, str, int] | None = None) -> dict[str, Any]:
    """A finished run's summary, curve and directory; a damaged or missing file, or a summary
    that is not a run summary (:func:`experiments.report.summary_problems`) or is of another
    cell than ``cell`` (its config.json's), is a RunError naming it."""
    try:
        summary, curve = report.read_finished_run(d, cell)
    except report.DamagedRunFile as e:
        raise RunError(
            f"{str(e.file)!r} of the finished run {str(d)!r} {e.why}; the comparison cannot use "
            "that run (move the run out of it to train its cell again)"
        ) from None
    return {"path": str(d), "summary": summary, "curve": curve}


# Set in `compare --jobs N` workers (_worker_init): the parent's request to stop.
_STOP: Any = None
# Set in `compare --jobs N` workers (_worker_init): the pid of the comparison's process.
_PARENT: int | None = None
# How often a worker checks that the comparison's process is still alive (seconds). Well
# below runner.LOCK_WAIT_S: a `resume` typed just after the comparison was killed waits that
# long for the run locks its workers still hold.
PARENT_POLL_S = 0.25
# A worker's exit status when its comparison's process has died.
ORPHAN_EXIT = 70


def _run_cell(cfg_dict: dict[str, Any], existing: str | None, quiet: bool) -> dict[str, Any] | None:
    """Train, resume or read one cell; returns its summary, curve and directory (``None``: a
    worker's cell not started because the comparison is stopping)."""
    if _STOP is None:
        return _run_cell_here(cfg_dict, existing, quiet)
    # A queued cell that reaches a worker whose comparison died is not started (the watchdog
    # may not have looked yet): the comparison's next resume trains it.
    if _PARENT is not None and os.getppid() != _PARENT:
        os._exit(ORPHAN_EXIT)
    # A worker: a signal that comes before the run's own handler is installed stops it too.
    with runner.stop_requests():
        if _STOP.is_set():
            return None
        return _run_cell_here(cfg_dict, existing, quiet)


def _run_cell_here(cfg_dict: dict[str, Any], existing: str | None, quiet: bool) -> dict[str, Any]:
    cfg = RunConfig.from_dict(cfg_dict)
    if existing is not None and (Path(existing) / DONE).exists():
        return _read_finished(Path(existing))
    if existing is not None:
        res = runner.resume(existing, quiet=quiet, leave=False)
    else:
        res = runner.train(cfg, quiet=quiet, leave=False)
    return {"path": str(res.path), "summary": res.summary, "curve": res.curve}


def _worker_init(threads: int, stop: Any = None, parent: int | None = None) -> None:
    global _STOP, _PARENT
    torch.set_num_threads(max(1, threads))
    _STOP = stop
    if parent is not None:
        _PARENT = parent
        watch_parent(parent)
    # Between cells a worker ignores SIGINT/SIGTERM (a cell in progress handles them with
    # runner.stop_requests): a Ctrl-C reaches every worker, and one that died of it while
    # idle would break the pool and lose the other runs' results.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def watch_parent(
    parent: int, interval: float = PARENT_POLL_S, on_orphan: Callable[[], Any] | None = None
) -> threading.Thread:
    """A daemon thread that ends this process (``os._exit``; ``on_orphan()`` instead, for
    tests) once its parent, pid ``parent``, is gone: a worker of ``compare --jobs N`` whose
    comparison was SIGKILLed (or crashed) was re-parented and went on training, started queued
    cells, and held its run's lock, so the comparison's ``resume`` was refused ("being
    trained by pid N") or trained a second directory of a cell beside it.

    It polls ``os.getppid()``, which changes (to 1 or a subreaper) when the parent dies, and
    exits at once, like the SIGKILL that took the parent: the run in progress keeps its last
    checkpoint, its lock goes with the process (:class:`experiments.runner.DirLock` is an
    ``flock``; the ``.lock`` file left holding the dead pid blocks no one), and ``resume``
    continues it from that checkpoint. A ``resume`` that comes before the watchdog has looked
    meets the run's lock still held: :meth:`experiments.runner.DirLock.acquire` tries again
    for up to :data:`experiments.runner.LOCK_WAIT_S` seconds before it refuses.
    ``prctl(PR_SET_PDEATHSIG)`` is not used: it is Linux-only, and it fires when the *thread*
    that created the process ends, which in a ``ProcessPoolExecutor`` can be its management
    thread rather than the process."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        if on_orphan is None:
            os._exit(ORPHAN_EXIT)
        on_orphan()

    thread = threading.Thread(target=watch, name="recenv-parent-watchdog", daemon=True)
    thread.start()
    return thread


def _complete(
    path: Path, cfg: CompareConfig, quiet: bool | None, log: Callable
) -> ComparisonResult:
    quiet_runs = runner.auto_quiet(bool(quiet) or cfg.run.quiet)
    cells = [replace(c, root=str(path)) for c in cfg.cells()]
    existing = _existing_runs(path)
    runner.remove_temp_files(path)  # a killed process's (the lock is held)
    results: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()

    def done(i: int, out: dict[str, Any]) -> None:
        results[i] = out
        s = out["summary"]
        ev = s.get("eval") or s.get("train") or {}
        ret = ev.get("return", float("nan"))
        if not quiet_runs:
            log(
                f"[{len(results)}/{len(cells)}] {runner.env_label(s['env'])} {s['lineup']} "
                f"seed {s['seed']}: return {ret:.4g}  ({time.perf_counter() - t0:.0f}s)",
                file=sys.stderr,
            )

    args = []
    for c in cells:
        prev = existing.get(_cell_key(c))
        args.append((c.to_dict(), str(prev) if prev is not None else None, quiet_runs))
    try:
        if cfg.jobs <= 1:
            # Each run stops on its own at a signal; this one also stops between two runs,
            # and after a run that was already ending when the signal came.
            with runner.stop_requests() as stop_requested:
                for i, a in enumerate(args):
                    if stop_requested():
                        raise Interrupted(None, None)
                    out = _run_cell(*a)
                    # None only in a `compare --jobs N` worker (_STOP set), never here.
                    assert out is not None, "a cell of a sequential comparison not started"
                    done(i, out)
        else:
            _run_parallel(cfg, args, done, quiet_runs)
    except Interrupted as e:
        # The run's own message says to resume the run; resuming the comparison finishes it.
        raise Interrupted(e.run_dir, e.step, comparison=path) from None
    except Exception as e:
        _add_note(
            e,
            f"The comparison {path} stopped at this error; its finished runs are kept. Once "
            f"the cause is mended, continue it with:\n  python -m experiments resume {path}",
        )
        raise
    ordered = [results[i] for i in range(len(cells))]
    return write_report(path, cfg, ordered)


def _add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)``, also where exceptions have no ``add_note`` (Python 3.10): what it
    does, appending to ``e.__notes__`` (PEP 678), which the command line prints."""
    add_note = getattr(e, "add_note", None)
    if add_note is not None:
        add_note(note)
    else:  # (Any: typeshed declares __notes__ only from Python 3.11 on)
        cast(Any, e).__notes__ = [*getattr(e, "__notes__", ()), note]


def _run_parallel(cfg: CompareConfig, args: list[tuple], done: Callable, quiet_runs: bool) -> None:
    """The cells in ``cfg.jobs`` worker processes. The first SIGINT/SIGTERM here, or the first
    run that fails, stops the comparison: cells not started are not started, the runs in
    progress (sent SIGTERM) stop at their next chunk boundary with a checkpoint, and once
    every worker has returned the failure is raised (else :class:`Interrupted`), as the
    sequential loop would raise it, without training the other cells first."""
    threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    # Workers are silent; one bar here counts finished runs.
    bar = runner.Progress(len(args), 0, f"{cfg.name} ({cfg.jobs} jobs)", quiet_runs, unit="run")
    interrupted: Interrupted | None = None
    failure: Exception | None = None
    try:
        with (
            runner.stop_requests() as stop_requested,
            cf.ProcessPoolExecutor(
                cfg.jobs,
                mp_context=ctx,
                initializer=_worker_init,
                initargs=(threads, stop, os.getpid()),
            ) as pool,
        ):
            futures = {pool.submit(_run_cell, c, p, True): i for i, (c, p, _) in enumerate(args)}
            pending = set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    if fut.cancelled():
                        continue
                    try:
                        out = fut.result()
                    except Interrupted as e:
                        interrupted = interrupted or e
                        continue
                    except Exception as e:  # the first failure is raised; the rest stop
                        failure = failure or e
                        continue
                    if out is not None:
                        done(futures[fut], out)
                        bar.update(1, out["summary"].get("eval", {}).get("return"))
                stopping = stop_requested() or interrupted is not None or failure is not None
                if stopping and pending and not stop.is_set():
                    stop.set()
                    for fut in pending:
                        fut.cancel()
                    # Ctrl-C reached the workers too; a SIGTERM to this process alone did not.
                    for proc in multiprocessing.active_children():
                        if proc.pid is None:  # never: active children have been started
                            continue
                        with contextlib.suppress(OSError):
                            os.kill(proc.pid, signal.SIGTERM)
    finally:
        bar.close()
    if failure is not None:
        raise failure
    if interrupted is not None:
        raise interrupted
    if stop.is_set():  # cells were left out
        raise Interrupted(None, None)


def write_report(path: Path, cfg: CompareConfig, results: list[dict[str, Any]]) -> ComparisonResult:
    """Tables and figures of finished runs into the comparison directory, then ``DONE``."""
    rows = [report.run_row(r["summary"], Path(r["path"]).name) for r in results]
    rows = report.sort_rows(rows, cfg.envs, cfg.agents)
    table = report.aggregate(rows)
    md = report.markdown_table(table)
    curves: dict[tuple[str, str], list] = {}
    for r in results:
        s = r["summary"]
        curves.setdefault((s["env"], s["agent"]), []).append(r["curve"])
    files = {
        "runs.csv": path / "runs.csv",
        "table.csv": path / "table.csv",
        "table.md": path / "table.md",
    }
    _write(files["runs.csv"], report.to_csv(rows))
    _write(files["table.csv"], report.to_csv(table))
    _write(files["table.md"], md)
    try:
        from experiments import plots  # matplotlib: only when a report is drawn
    except ImportError as e:
        print(f"no figures ({e}); install them with: pip install 'recenv[plots]'", file=sys.stderr)
        figures = {}
    else:
        figures = plots.comparison_figures(curves, table, path)
    _write(path / DONE, utc_stamp() + "\n")
    return ComparisonResult(path, rows, table, md, figures, files)


def _write(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def is_comparison(path: str | Path) -> bool:
    return (Path(path) / "compare.json").is_file()


__all__ = [
    "ComparisonResult",
    "RunDir",
    "compare",
    "is_comparison",
    "resume_comparison",
    "write_report",
]
