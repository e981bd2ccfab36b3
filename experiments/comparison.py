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
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from experiments import report, runner
from experiments.config import CompareConfig, RunConfig, validate_run
from experiments.runner import (
    DONE,
    RunDir,
    RunError,
    atomic_write_bytes,
    create_unique_dir,
    sanitize,
    utc_stamp,
)


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
    for cell in cfg.cells()[:: cfg.seeds]:  # one per (env, agent): fail before any training
        validate_run(cell)
        runner.check_lineup(cell)
    path = create_unique_dir(Path(cfg.run.root), f"{sanitize(cfg.name)}__{utc_stamp()}")
    head = {
        "config": cfg.to_dict(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "command": sys.argv,
        "created": utc_stamp(),
    }
    _write(path / "compare.json", json.dumps(head, indent=2) + "\n")
    return _complete(path, cfg, quiet, log)


def resume_comparison(
    path: str | Path, *, quiet: bool | None = None, log: Callable = print
) -> ComparisonResult:
    p = Path(path)
    if not (p / "compare.json").is_file():
        raise RunError(f"{str(p)!r} is not a comparison directory (it has no compare.json)")
    if (p / DONE).exists():
        raise RunError(
            f"comparison {str(p)!r} is finished; its directory is never modified. Start a new "
            "one, or read it with experiments.report.load_comparison"
        )
    cfg = CompareConfig.from_dict(json.loads((p / "compare.json").read_text())["config"])
    return _complete(p, cfg, quiet, log)


def _cell_key(cfg: RunConfig) -> tuple[str, str, str, int]:
    return (cfg.env, cfg.agent, cfg.opponent, cfg.seed)


def _existing_runs(path: Path) -> dict[tuple[str, str, str, int], Path]:
    found = {}
    for cfg_path in sorted(path.glob("*/config.json")):
        try:
            run = RunConfig.from_dict(json.loads(cfg_path.read_text())["run"])
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
        found[_cell_key(run)] = cfg_path.parent
    return found


def _run_cell(cfg_dict: dict[str, Any], existing: str | None, quiet: bool) -> dict[str, Any]:
    """Train, resume or read one cell; returns its summary, curve and directory."""
    cfg = RunConfig.from_dict(cfg_dict)
    if existing is not None and (Path(existing) / DONE).exists():
        d = Path(existing)
        summary = json.loads((d / "summary.json").read_text())
        return {"path": str(d), "summary": summary, "curve": runner.read_curve(d / "curve.csv")}
    if existing is not None:
        res = runner.resume(existing, quiet=quiet, leave=False)
    else:
        res = runner.train(cfg, quiet=quiet, leave=False)
    return {"path": str(res.path), "summary": res.summary, "curve": res.curve}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(max(1, threads))


def _complete(
    path: Path, cfg: CompareConfig, quiet: bool | None, log: Callable
) -> ComparisonResult:
    quiet_runs = runner.auto_quiet(bool(quiet) or cfg.run.quiet)
    cells = [replace(c, root=str(path)) for c in cfg.cells()]
    existing = _existing_runs(path)
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
    if cfg.jobs <= 1:
        for i, a in enumerate(args):
            done(i, _run_cell(*a))
    else:
        threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
        ctx = multiprocessing.get_context("spawn")
        # Workers are silent; one bar here counts finished runs.
        bar = runner.Progress(
            len(cells), 0, f"{cfg.name} ({cfg.jobs} jobs)", quiet_runs, unit="run"
        )
        with cf.ProcessPoolExecutor(
            cfg.jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(_run_cell, c, p, True): i for i, (c, p, _) in enumerate(args)}
            for fut in cf.as_completed(futures):
                done(futures[fut], fut.result())
                bar.update(1, results[futures[fut]]["summary"].get("eval", {}).get("return"))
        bar.close()
    ordered = [results[i] for i in range(len(cells))]
    return write_report(path, cfg, ordered)


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
    figures = {
        "learning_curves": path / "learning_curves.png",
        "market_share": path / "market_share.png",
        "final_metrics": path / "final_metrics.png",
    }
    try:
        from experiments import plots  # matplotlib: only when a report is drawn
    except ImportError as e:
        print(f"no figures ({e}); install them with: pip install 'recenv[plots]'", file=sys.stderr)
        figures = {}
    else:
        plots.learning_curves(curves, figures["learning_curves"])
        plots.market_share(curves, figures["market_share"])
        plots.final_metrics(table, path=figures["final_metrics"])
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
