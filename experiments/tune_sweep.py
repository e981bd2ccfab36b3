"""Ray Tune sweeps of recenv's own agents: multi-seed, multi-config, the runner as trainable.

Every Tune trial is one (env, agent, seed, config variant) run, trained by the same function
as ``python -m experiments train`` (:func:`experiments.runner.train`, through the comparison's
cell function) and written as an ordinary run directory. When the sweep is done, each config
variant is written up exactly like ``python -m experiments compare``: ``runs.csv``,
``table.csv``, ``table.md``, the PNG plots and ``DONE`` (:func:`experiments.comparison.
write_report`), so ``python -m experiments report OUT/VARIANT`` reads it like any comparison::

    .venv/bin/python -m experiments.tune_sweep --preset smoke --agents iql,random \\
        --seeds 0,1 --grid agent.lr=1e-3,3e-4 --out runs/sweep1
    RAY_AUTH_TOKEN=... .venv/bin/python -m experiments.tune_sweep --address HEAD_IP:6379 \\
        --ship-package --preset quick --seeds 0,1,2,3,4 --max-concurrent 16 --out /shared/sweep2

Configuration is that of ``compare`` (``--preset``, ``--config``, per-field flags, ``--set``),
plus ``--grid KEY=V1,V2,...`` (repeatable; the variants are the product of the grids; a list
value in brackets: ``--grid agent.hidden=[64,64],[32]``) and ``--seeds 0,1,7``, the list of seeds
(without it: the config's ``seeds`` count from ``--seed``, as in ``compare``). ``compare``'s
``--jobs`` is replaced by ``--max-concurrent`` (trials at once, one CPU each).

``--out`` (default ``runs/tune/<name>__<UTC time>``) must not exist yet. It receives::

    sweep.json            the sweep: arguments, variants, every trial's final metrics
    sweep.md              every variant's table, one after the other
    tune/                 Tune's own storage (storage_path): experiment state, trial results
    <variant>/            one comparison per variant (``default`` without --grid): compare.json,
                          run directories, runs.csv, table.csv, table.md, *.png, DONE

Without ``--address`` a local Ray (``--num-cpus``, default ``--max-concurrent``) is started and
always shut down; with it, the sweep joins a cluster, and ``--out`` must be on a filesystem
that every node shares (the trials write their run directories there, as Tune's storage_path
requires). ``--ship-package`` sends the local ``recenv``, ``agents`` and ``experiments``
packages to the cluster (``runtime_env={"py_modules": [...]}``); without it the nodes need
recenv installed. Needs Ray Tune: ``pip install -e '.[rllib]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments import cli, config
from experiments.config import CompareConfig, ConfigError, RunConfig

_OWN_FLAGS = ("jobs", "seeds")  # compare flags that the sweep replaces


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m experiments.tune_sweep",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli._add_config_flags(p, with_compare=True)
    # `compare`'s --jobs and --seeds are the sweep's --max-concurrent and --seeds.
    for name in _OWN_FLAGS:
        for action in list(p._actions):
            if action.dest == f"compare.{name}":
                p._remove_action(action)
                for group in p._action_groups:
                    if action in group._group_actions:
                        group._group_actions.remove(action)
                for s in action.option_strings:
                    p._option_string_actions.pop(s, None)
    sweep = p.add_argument_group("sweep")
    sweep.add_argument(
        "--seeds",
        default=None,
        metavar="S1,S2,...",
        help="the seeds (default: the config's `seeds` count from its `seed`, as in compare)",
    )
    sweep.add_argument(
        "--grid",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (any --set key); variants: the product of the grids",
    )
    sweep.add_argument("--out", default=None, help="sweep directory; must not exist")
    sweep.add_argument("--max-concurrent", type=int, default=2, help="trials at once")
    sweep.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="Ray CPUs each trial reserves"
    )
    sweep.add_argument("--address", default="", help="Ray address ('auto', 'HOST:6379')")
    sweep.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs of a local Ray (default: --max-concurrent)",
    )
    sweep.add_argument(
        "--ship-package",
        action="store_true",
        help="send recenv, agents and experiments to the cluster (runtime_env py_modules)",
    )
    sweep.add_argument("--verbose", type=int, default=1, help="Tune's verbosity (0-3)")
    return p


def parse_seeds(text: str | None, start: int, default_count: int) -> list[int]:
    """``--seeds 0,1,7`` (always a list; ``--seeds 3`` is seed 3); without it, the config's
    ``seeds`` count from its ``seed`` (``--seed 10 --set seeds=5``), as in ``compare``."""
    if text is None:
        return [start + i for i in range(default_count)]
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: a comma-separated list of seeds (0,1,7)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: at least one seed, none repeated")
    return seeds


def split_values(text: str) -> list[str]:
    """``1e-3,3e-4`` -> ``["1e-3", "3e-4"]``; commas inside brackets are kept."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


# Config keys the sweep sets itself for every trial (the seeds from --seeds, the run
# directories under --out, quiet trials; --max-concurrent in place of jobs): a grid over
# them would give variants that differ only in their labels.
_SWEEP_SET = {
    "run.seed": "the seeds are --seeds S1,S2,...",
    "compare.seeds": "the seeds are --seeds S1,S2,...",
    "compare.jobs": "trials at once are --max-concurrent",
    "run.root": "every trial writes under --out",
    "run.quiet": "trials are always quiet",
}


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, value = config.split_assignment(item)
        canonical = ".".join(config.section_of(key))
        if canonical in _SWEEP_SET:
            raise ConfigError(
                f"--grid {key!r}: the sweep sets {canonical} itself for every trial "
                f"({_SWEEP_SET[canonical]}); a grid key is any other --set key"
            )
        values = split_values(value)
        if not values:
            raise ConfigError(f"--grid {item!r}: no values")
        if key in (k for k, _ in grid):
            raise ConfigError(f"--grid {key!r} given twice")
        grid.append((key, values))
    return grid


def variants(
    args: argparse.Namespace, grid: list[tuple[str, list[str]]]
) -> list[tuple[str, dict[str, str], CompareConfig]]:
    """``(label, assignments, config)`` of every point of the grid (``default`` without one);
    each config resolved and validated like ``compare``'s. Two points that resolve to the
    same config (two spellings of one value, ``[64,64]`` and ``[64, 64]``) are refused: they
    would train the same runs twice under two labels."""
    base_assignments = list(args.assignments)
    out: list[tuple[str, dict[str, str], CompareConfig]] = []
    for values in itertools.product(*(v for _, v in grid)):
        point = dict(zip((k for k, _ in grid), values, strict=True))
        ns = argparse.Namespace(**vars(args))
        ns.assignments = base_assignments + [f"{k}={v}" for k, v in point.items()]
        cfg = cli.resolve(ns, single_run=False)
        twin = next((p for _, p, c in out if c == cfg), None)
        if twin is not None:
            raise ConfigError(
                f"--grid: the variants {twin} and {point} resolve to the same config (one "
                "value spelled two ways?); give each value once"
            )
        label = "__".join(f"{k}={v}" for k, v in point.items()) or "default"
        out.append((_unique(config_label(label), [v[0] for v in out]), point, cfg))
    return out


def config_label(text: str) -> str:
    from experiments.runner import sanitize

    return sanitize(text)[:120]


def _unique(label: str, taken: list[str]) -> str:
    i, name = 1, label
    while name in taken:
        name, i = f"{label}-{i}", i + 1
    return name


# ----------------------------------------------------------------------------------------
# The trainable: one run of the experiments runner
# ----------------------------------------------------------------------------------------
def run_trial(trial_config: dict[str, Any]) -> None:
    """Tune function trainable: train ``trial_config["run"]`` (a RunConfig dict whose ``root``
    is its variant's comparison directory) and report its final metrics."""
    import torch
    from ray import tune

    from experiments.comparison import _run_cell

    cfg = RunConfig.from_dict(trial_config["run"])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = _run_cell(cfg.to_dict(), None, True)
    assert out is not None  # None only in a stopping comparison's pool worker, never a trial
    s = out["summary"]
    metrics: dict[str, Any] = {
        "variant": trial_config["variant"],
        "env": s["env"],
        "agent": s["lineup"],
        "seed": s["seed"],
        "run_dir": out["path"],
        "env_steps": s.get("env_steps"),
        # The step training stopped at NaN weights (experiments.runner), -1 when it did not:
        # a variant's seeds that diverged are told apart from ones that merely scored low.
        "diverged_at": (s.get("diverged") or {}).get("step", -1),
    }
    for prefix, values in (("eval", s.get("eval") or {}), ("train", s.get("train") or {})):
        for k, v in values.items():
            if isinstance(v, (int, float)):
                metrics[f"{prefix}_{k}"] = v
    tune.report(metrics)


# ----------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------
def _init_ray(address: str, num_cpus: int | None, ship_package: bool) -> bool:
    """Start or join Ray unless it is up; returns whether the sweep must shut it down."""
    import ray

    if ray.is_initialized():
        return False
    # Workers must not re-run the driver under `uv run` (Ray's uv hook); recenv is installed.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False}
    if ship_package:
        import agents
        import experiments
        import recenv

        kwargs["runtime_env"] = {"py_modules": [recenv, agents, experiments]}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local" always starts a fresh Ray, never joins one found on the machine.
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    return True


def _trial_name(trial: Any) -> str:
    c = trial.config["cell"]
    r = c["run"]
    from experiments.runner import env_label, sanitize

    lineup = f"{r['agent']}-vs-{r['opponent']}" if r["opponent"] else r["agent"]
    return sanitize(f"{c['variant']}__{env_label(r['env'])}__{lineup}__{r['seed']}")[:150]


def sweep(
    points: list[tuple[str, dict[str, str], CompareConfig]],
    seeds: list[int],
    out: str | Path,
    *,
    max_concurrent: int = 2,
    cpus_per_trial: float = 1.0,
    address: str = "",
    num_cpus: int | None = None,
    ship_package: bool = False,
    verbose: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    """Run every (variant, env, agent, seed) as a Tune trial, then write each variant's
    comparison report. Uses Ray if it is initialised (and leaves it running), else starts or
    joins it and always shuts it down. Returns the sweep summary (also ``sweep.json``)."""
    import ray
    import torch
    from ray import tune

    from experiments import comparison, runner

    out = Path(out).resolve()
    if out.exists():
        raise FileExistsError(f"output directory {out} exists; refusing to overwrite it")
    if max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {max_concurrent} must be >= 1")
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus {num_cpus} must be >= 1 (default: --max-concurrent)")
    if not cpus_per_trial >= 0:  # NaN too
        raise ConfigError(f"--cpus-per-trial {cpus_per_trial} must be >= 0")
    if not address and cpus_per_trial > (num_cpus or max_concurrent):
        raise ConfigError(
            f"--cpus-per-trial {cpus_per_trial} is more than the local Ray's "
            f"{num_cpus or max_concurrent} CPU(s) (--num-cpus, default --max-concurrent): no "
            "trial could ever start"
        )
    cells: list[dict[str, Any]] = []
    comps: dict[str, tuple[CompareConfig, Path]] = {}
    for label, _, cfg in points:
        cfg = replace(cfg, seeds=len(seeds), run=replace(cfg.run, seed=seeds[0]))
        vdir = out / label
        comps[label] = (cfg, vdir)
        for env in cfg.envs:
            for agent in cfg.agents:
                for i, seed in enumerate(seeds):
                    run = replace(cfg.run_config(env, agent, seed), root=str(vdir), quiet=True)
                    if i == 0:  # fail before any training (the env is built once per check)
                        config.validate_run(run)
                    cells.append({"variant": label, "run": run.to_dict()})

    out.mkdir(parents=True, exist_ok=False)
    # Each variant is locked as `compare` locks its comparison, from before compare.json
    # makes it one that `resume` accepts until its report is written: `python -m
    # experiments resume OUT/VARIANT` meanwhile is refused, instead of training the same
    # cells beside the trials (and having its report overwritten by the sweep's).
    with contextlib.ExitStack() as locks:
        for label, (cfg, vdir) in comps.items():
            vdir.mkdir()
            locks.enter_context(runner.DirLock(vdir, "comparison"))
            head = {
                "config": cfg.to_dict(),
                "versions": {"python": platform.python_version(), "torch": torch.__version__},
                "command": sys.argv,
                "created": runner.utc_stamp(),
                "sweep": {"dir": str(out), "variant": label, "seeds": seeds},
            }
            (vdir / "compare.json").write_text(json.dumps(head, indent=2) + "\n")

        owns_ray = _init_ray(address, num_cpus or max_concurrent, ship_package)
        t0 = time.perf_counter()
        try:
            tuner = tune.Tuner(
                tune.with_resources(run_trial_from_cell, {"cpu": cpus_per_trial}),
                param_space={"cell": tune.grid_search(cells)},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=max_concurrent,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name="sweep", storage_path=str(out / "tune"), verbose=verbose
                ),
            )
            grid = tuner.fit()
            ray_info = {"address": address or "local", "nodes": len(ray.nodes())}
        finally:
            if owns_ray:
                ray.shutdown()

        trials, errors = [], []
        # ResultGrid has __len__ and __getitem__ but no __iter__ (its stubs are not iterable)
        for res in (grid[i] for i in range(len(grid))):
            if res.error is not None:
                if res.config is None:
                    # Its actor died starting: no result, not even Tune's defaults with the
                    # config; the trial's directory is named after its cell (_trial_name).
                    where = Path(res.path).name
                else:
                    cell = res.config["cell"]
                    r = cell["run"]
                    where = f"{cell['variant']} {r['env']} {r['agent']} seed {r['seed']}"
                errors.append(f"{where}: {res.error}")
                continue
            assert res.metrics is not None  # a copy of the trial's last result, never None
            trials.append({**res.metrics, "trial": res.path})
        summary: dict[str, Any] = {
            "command": sys.argv,
            "created": runner.utc_stamp(),
            "seconds": round(time.perf_counter() - t0, 3),
            "ray": ray_info,
            "seeds": seeds,
            "variants": {label: dict(point) for label, point, _ in points},
            "trials": [_jsonable(t) for t in trials],
            "errors": errors,
            "reports": {},
        }
        md_parts = []
        for label, (cfg, vdir) in comps.items():
            mine = [t for t in trials if t["variant"] == label]
            n_cells = len(cfg.envs) * len(cfg.agents) * len(seeds)
            if len(mine) != n_cells:
                log(f"{label}: {n_cells - len(mine)} trial(s) failed; no report", file=sys.stderr)
                continue
            results = [_read_run(Path(t["run_dir"])) for t in mine]
            results.sort(
                key=lambda r: (r["summary"]["env"], r["summary"]["agent"], r["summary"]["seed"])
            )
            rep = comparison.write_report(vdir, cfg, results)
            summary["reports"][label] = str(vdir)
            md_parts.append(f"## {label}\n\n{rep.markdown}")

    (out / "sweep.md").write_text("\n".join(md_parts))
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    summary["out"] = str(out)
    summary["markdown"] = "\n".join(md_parts)
    if errors:
        raise runner.RunError(
            f"{len(errors)} trial(s) failed (Tune's logs: {out / 'tune'}):\n" + "\n".join(errors)
        )
    return summary


def run_trial_from_cell(tune_config: dict[str, Any]) -> None:
    run_trial(tune_config["cell"])


def _read_run(path: Path) -> dict[str, Any]:
    from experiments import runner

    summary = json.loads((path / "summary.json").read_text())
    return {"path": str(path), "summary": summary, "curve": runner.read_curve(path / "curve.csv")}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, type(None)))}


def default_out(cfg: CompareConfig) -> Path:
    from experiments.runner import sanitize, utc_stamp

    return Path(cfg.run.root) / "tune" / f"{sanitize(cfg.name)}__{utc_stamp()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import ray.tune  # noqa: F401  (fail early, with the fix, when the extra is missing)

        from experiments.runner import RunError
    except ModuleNotFoundError:
        print("error: Ray Tune is not installed: pip install -e '.[rllib]'", file=sys.stderr)
        return 2
    try:
        points = variants(args, parse_grid(args.grid))
        first = points[0][2]
        seeds = parse_seeds(args.seeds, first.run.seed, first.seeds)
        out = args.out or default_out(first)
        # A grid over envs or agents gives variants of different sizes.
        cells = sum(len(cfg.envs) * len(cfg.agents) for _, _, cfg in points)
        n = cells * len(seeds)
        print(
            f"sweep: {len(points)} variant(s), {cells} (env, agent) cell(s) x {len(seeds)} "
            f"seed(s) = {n} trials -> {out}",
            file=sys.stderr,
        )
        res = sweep(
            points,
            seeds,
            out,
            max_concurrent=args.max_concurrent,
            cpus_per_trial=args.cpus_per_trial,
            address=args.address,
            num_cpus=args.num_cpus,
            ship_package=args.ship_package,
            verbose=args.verbose,
        )
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (FileExistsError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(res["markdown"])
    print(f"sweep directory: {res['out']}/  (sweep.json, sweep.md, one comparison per variant)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
