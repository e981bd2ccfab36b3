"""A/B timing of the step at two commits, run alternately in one sitting.

These VMs drift by up to 2x between sittings (and ±10-20 % within one), so a figure from
today's full benchmark cannot be compared with one from yesterday's. This script checks out
``--base`` into a temporary git worktree and times the same figure under the base tree and
under ``--head`` (default: this working tree, uncommitted changes included) in alternating
child processes (ABBA order), ``--rounds`` times each, then prints each side's median, the
ratio of the medians and in how many rounds head was ahead of its round's base run:

    .venv/bin/python -m experiments.ab_commits --base f726101                  # PettingZoo face
    .venv/bin/python -m experiments.ab_commits --base HEAD~3 --figure batched --num-envs 4096
    .venv/bin/python -m experiments.ab_commits --base HEAD~1 --figure batched --no-compile
    .venv/bin/python -m experiments.ab_commits --base HEAD --head-env RECENV_NATIVE=0 \
        --figure batched --num-envs 1024 --config num_items=1000000   # a switch, one commit

Figures: ``face`` (``env.step`` of the PettingZoo face, one market, steps/s) and ``batched``
(``env.step`` of ``make_vec`` with ``--num-envs`` markets, env-steps/s); one torch thread
unless ``--threads``; timed by this tree's ``bench_env.time_pettingzoo`` / ``time_batched``
(masked random actions drawn outside the timer, compilation and warm-up untimed) on both
sides. The default step counts (12 at more than 64 markets) stay within an episode, so
they leave out the step where episodes end (episode metrics, resets; the whole batch ends
together at the horizon, 200): ``--steps 205`` times one such step among the others, as the
full benchmark does. Each child imports ``recenv`` from its own tree only. ``--config
KEY=VALUE`` sets market options of the batched figure on both sides; ``--base-env`` / ``--head-env
NAME=VALUE`` set environment variables of one side's children (with ``--base HEAD``: the
same code with a switch flipped); ``--base-python`` / ``--head-python PATH`` run one side's
children under another interpreter (``--base HEAD --head-python /tmp/t214/bin/python``: the
same code under another torch; each side's torch version is printed and kept). The JSON of
the comparison goes to ``experiments/results/ab-<host>-<UTC time>.json`` (never
overwritten) unless ``--no-json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from experiments.bench_env import paired_ratios, provenance, result_path, write_result
from experiments.config import (
    ConfigError,
    add_market_arguments,
    parse_market_overrides,
    split_assignment,
)

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child process whose sys.path starts at one tree, so ``recenv`` (and
# ``experiments``) come from that tree. The timers come from THIS tree's bench_env, loaded by
# path and passed as argv[1], so both sides are timed by the same code.
_CHILD = r"""
import importlib.util, json, sys
import torch
torch.set_num_threads(int(sys.argv[8]))
spec = importlib.util.spec_from_file_location("ab_bench_env", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
import recenv
figure, env_id, num_envs, steps, compile_, config = sys.argv[2:8]  # argv[8]: threads
num_envs, steps, compile_ = int(num_envs), int(steps), compile_ == "1"
config = json.loads(config)
if figure == "face":
    rate = 1.0 / bench.time_pettingzoo(env_id, steps, compile=compile_)
else:
    rate = num_envs / bench.time_batched(env_id, num_envs, steps, compile=compile_, **config)[0]
print(json.dumps({"rate": rate, "recenv": recenv.__file__, "torch": torch.__version__}))
"""


def run_in_tree(
    tree: Path,
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    python: str | None = None,
) -> dict:
    """Run ``python -c code *args`` with ``recenv`` importable from ``tree`` only (and the
    variables ``env`` added to the environment); returns the JSON object the child prints
    last, after checking that its ``"recenv"`` (the imported module's path) lies in ``tree``.
    ``python``: the child's interpreter (default: this one), e.g. another venv's, whose
    torch is then the one timed.

    A tree other than this one (a :func:`checkout`) builds the native kernels into a
    ``torch_extensions`` folder beside it, removed with it: the kernels' build directory is
    per checkout, and the user's cache should not collect one per temporary worktree."""
    own = {}
    if tree.resolve() != ROOT.resolve():
        own["TORCH_EXTENSIONS_DIR"] = str(tree.parent / "torch_extensions")
    proc = subprocess.run(
        [python or sys.executable, "-c", code, *args],
        cwd=tree,
        env={**os.environ, **own, **(env or {}), "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child run in {tree} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["recenv"].startswith(str(tree)):
        raise RuntimeError(f"a child in {tree} imported recenv from {out['recenv']}")
    return out


def time_tree(
    tree: Path,
    figure: str,
    env_id: str,
    num_envs: int,
    steps: int,
    compile_: bool,
    config: dict | None = None,
    env: dict[str, str] | None = None,
    threads: int = 1,
    python: str | None = None,
) -> dict:
    """One timed run of ``figure`` with ``recenv`` imported from ``tree`` (market options
    ``config``, environment variables ``env``, ``threads`` torch threads, interpreter
    ``python``): the child's ``{"rate": env-steps/s, "torch": version, "recenv": path}``."""
    timers = str(Path(__file__).with_name("bench_env.py"))
    args = [timers, figure, env_id, str(num_envs), str(steps), "1" if compile_ else "0"]
    args += [json.dumps(config or {}), str(threads)]
    return run_in_tree(tree, _CHILD, *args, env=env, python=python)


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@contextlib.contextmanager
def checkout(rev: str):
    """Commit ``rev`` checked out (detached) into a temporary git worktree, removed after."""
    with tempfile.TemporaryDirectory(prefix="recenv-rev-") as tmp:
        tree = Path(tmp) / "tree"
        _git("worktree", "add", "--detach", "--quiet", str(tree), rev)
        try:
            yield tree
        finally:
            _git("worktree", "remove", "--force", str(tree))


def compare(
    base: str,
    head: str | None,
    figure: str = "face",
    env_id: str = "recenv/Market-v0",
    num_envs: int = 1024,
    steps: int | None = None,
    rounds: int = 3,
    compile_: bool = True,
    log=print,
    config: dict | None = None,
    env: dict[str, dict[str, str]] | None = None,
    threads: int = 1,
    python: Mapping[str, str | None] | None = None,
) -> dict:
    """Time ``figure`` at ``base`` and at ``head`` (``None``: this working tree) alternately,
    ``rounds`` runs each, with market options ``config`` (batched figure), per-side
    environment variables ``env`` (``{"base": {...}, "head": {...}}``) and per-side
    interpreters ``python`` (``{"head": "/path/to/venv/bin/python"}``: the same commit under
    another torch); returns both sides' rates, medians, torch versions, ``head / base`` of
    the medians, each round's ``head / base`` and how many rounds head was ahead."""
    if figure not in ("face", "batched"):
        raise ValueError(f"figure={figure!r}; allowed: 'face', 'batched'")
    if config and figure == "face":
        raise ValueError("config applies to the batched figure; the face times recenv.make(id)")
    env = {"base": {}, "head": {}, **(env or {})}
    python = {"base": None, "head": None, **(python or {})}
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    steps = steps or (2000 if figure == "face" else (200 if num_envs <= 64 else 12))
    sides = {"base": _git("rev-parse", "--short", base)}
    sides["head"] = "working tree" if head is None else _git("rev-parse", "--short", head)
    rates: dict[str, list[float]] = {"base": [], "head": []}
    torch_versions: dict[str, set[str]] = {"base": set(), "head": set()}
    with contextlib.ExitStack() as stack:
        trees = {"base": stack.enter_context(checkout(base)), "head": ROOT}
        if head is not None:
            trees["head"] = stack.enter_context(checkout(head))
        for r in range(rounds):
            # ABBA order: a sitting that drifts during the runs favours neither side.
            for side in ("base", "head") if r % 2 == 0 else ("head", "base"):
                run = time_tree(
                    trees[side],
                    figure,
                    env_id,
                    num_envs,
                    steps,
                    compile_,
                    config,
                    env[side],
                    threads,
                    python[side],
                )
                rate = run["rate"]
                rates[side].append(rate)
                torch_versions[side].add(run["torch"])
                log(f"round {r + 1}/{rounds} {side:4s} ({sides[side]}): {rate:,.0f}")
    medians = {side: statistics.median(v) for side, v in rates.items()}
    # Each round's two runs sat next to each other (ABBA), so their ratio shares that
    # round's state of the machine: how many rounds head was ahead says how consistent the
    # medians' ratio is (6 of 6 against a ratio of the medians from 4 of 6).
    ratios, ahead = paired_ratios(rates)
    return {
        "figure": figure,
        "env_id": env_id,
        "num_envs": 1 if figure == "face" else num_envs,
        "compile": compile_,
        "steps": steps,
        "rounds": rounds,
        "threads": threads,
        "commits": sides,
        "config": config or {},
        "env": env,
        "python": {side: p or sys.executable for side, p in python.items()},
        "torch": {side: sorted(v) for side, v in torch_versions.items()},
        "rates": rates,
        "medians": medians,
        "head_over_base": medians["head"] / medians["base"],
        "round_ratios": ratios,
        "head_ahead": ahead,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", required=True, help="commit to compare against (e.g. HEAD~1)")
    p.add_argument("--head", default=None, help="commit to time (default: this working tree)")
    p.add_argument("--figure", choices=("face", "batched"), default="face")
    add_market_arguments(p, num_envs=1024)
    for side in ("base", "head"):
        p.add_argument(
            f"--{side}-env",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"environment variable of the {side} side's children",
        )
        p.add_argument(
            f"--{side}-python",
            default=None,
            metavar="PATH",
            help=f"interpreter of the {side} side's children (default: this one), e.g. a "
            "venv with another torch",
        )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per run (default: 2000 face, 200 up to 64 markets, else 12, which "
        "leaves out episode ends; 205 includes one)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating runs per side")
    p.add_argument("--no-compile", action="store_true", help="time eager steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    p.add_argument("--out", type=Path, default=None, help="JSON path (must not exist)")
    p.add_argument("--no-json", action="store_true", help="print only")
    args = p.parse_args(argv)
    config = parse_market_overrides(args.config)
    try:
        env = {
            side: dict(
                split_assignment(x, example="RECENV_NATIVE=0") for x in getattr(args, f"{side}_env")
            )
            for side in ("base", "head")
        }
    except ConfigError as e:
        p.error(str(e))
    out = None if args.no_json else result_path("ab", args.out)
    result = compare(
        args.base,
        args.head,
        args.figure,
        args.env,
        args.num_envs,
        args.steps,
        args.rounds,
        not args.no_compile,
        config=config,
        env=env,
        threads=args.threads,
        python={"base": args.base_python, "head": args.head_python},
    )
    unit = "steps/s" if args.figure == "face" else "env-steps/s"
    c = result["commits"]
    print(
        f"{args.figure} ({'compiled' if result['compile'] else 'eager'}, "
        f"num_envs={result['num_envs']}, threads={result['threads']}): base {c['base']} "
        f"{result['medians']['base']:,.0f} {unit}, head {c['head']} "
        f"{result['medians']['head']:,.0f} {unit}: head/base {result['head_over_base']:.2f}x "
        f"(torch {', '.join(result['torch']['base'])} / {', '.join(result['torch']['head'])}) "
        f"(medians of {args.rounds} alternating runs; head ahead in {result['head_ahead']} "
        f"of {args.rounds} rounds)"
    )
    if out is not None:
        write_result(out, {**provenance(), **result})
    return result


if __name__ == "__main__":
    main()
