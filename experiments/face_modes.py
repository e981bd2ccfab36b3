"""The compiled PettingZoo face in torch's default mode and with deterministic algorithms on.

``torch.use_deterministic_algorithms(True)`` is what RLlib's seeding leaves on in its
processes. A compiled market builds its graph outside that mode
(``recenv.core.warm.outside_deterministic_mode``); this script shows what that is worth and
that nothing else in a face step pays for the mode. Two faces of one market in one process,
one built and stepped in each mode, timed in alternated blocks of ``--steps`` steps (the
machine's drift shared between them), one torch thread. ``--built-in-mode`` builds the
deterministic face's graph inside the mode, as before the change (the ATen fallbacks). The
face built first in a process tends to run slower than one built second (PERFORMANCE.md,
"Reproduce"): compare a ``--deterministic-first`` run with one in the default order::

    .venv/bin/python -m experiments.face_modes
    .venv/bin/python -m experiments.face_modes --deterministic-first
    .venv/bin/python -m experiments.face_modes --built-in-mode
    .venv/bin/python -m experiments.face_modes --config num_items=400 --steps 20 --rounds 2

Prints steps/s per block and the ratio of medians; writes
``experiments/results/face_modes-<host>-<UTC time>.json`` (never overwritten).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

import recenv
from experiments.bench_env import result_path, write_result
from experiments.config import add_market_arguments, parse_market_overrides
from recenv.core.warm import deterministic_algorithms

MODES = {"default": False, "deterministic": True}


def _actions(env) -> dict:
    """The myopic oracle's slates for the next step (a new episode begun where one ended)."""
    if not env.agents:
        env.reset()
    return {a: env.oracle_slate(a) for a in env.agents}


def _face(env_id: str, config: dict, on: bool, built_in_mode: bool, warmup: int = 20):
    """A compiled face of ``env_id`` built (and first stepped) in mode ``on``; with
    ``built_in_mode``, its graph is built inside the mode (the market's wrapper removed)."""
    from recenv.core import market

    unwrapped = mock.patch.object(market, "outside_deterministic_mode", lambda f: f)
    with unwrapped if built_in_mode else contextlib.nullcontext(), deterministic_algorithms(on):
        env = recenv.make(env_id, seed=1, compile=True, **config)
        env.reset(seed=1)
        for _ in range(warmup):
            env.step(_actions(env))
    return env


def _block(env, on: bool, steps: int) -> float:
    """Steps/s of ``steps`` face steps in mode ``on`` (actions chosen outside the timer)."""
    spent = 0.0
    with deterministic_algorithms(on):
        for _ in range(steps):
            actions = _actions(env)
            t0 = time.perf_counter()
            env.step(actions)
            spent += time.perf_counter() - t0
    return steps / spent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_market_arguments(p, num_envs=1)  # --num-envs is ignored: one market's face
    p.add_argument("--steps", type=int, default=2000, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=6, help="blocks per mode, alternated")
    p.add_argument("--built-in-mode", action="store_true", help="the old build (see above)")
    p.add_argument(
        "--deterministic-first", action="store_true", help="build that face first (bias check)"
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    config = parse_market_overrides(args.config)
    out = result_path("face_modes", args.out)
    torch.set_num_threads(1)
    # The face built first in a process runs slower than an identical one built second
    # (PERFORMANCE.md, "Reproduce"): run both orders.
    build_order = list(reversed(MODES)) if args.deterministic_first else list(MODES)
    faces = {name: _face(args.env, config, MODES[name], args.built_in_mode) for name in build_order}
    rates: dict[str, list[float]] = {name: [] for name in MODES}
    for r in range(args.rounds):
        for name in list(MODES) if r % 2 == 0 else list(reversed(MODES)):
            rates[name].append(_block(faces[name], MODES[name], args.steps))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    for name, v in rates.items():
        print(f"{name:>13}: {medians[name]:8.0f} steps/s  blocks {[round(x) for x in v]}")
    ratio = medians["default"] / medians["deterministic"]
    print(f"default / deterministic: {ratio:.2f}x")
    write_result(
        out,
        {
            "env": args.env,
            "config": config,
            "built_in_mode": args.built_in_mode,
            "built_first": build_order[0],
            "steps_per_block": args.steps,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "rates": rates,
            "medians": medians,
            "ratio_default_over_deterministic": ratio,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
