"""The candidates kernel alone, at two catalog sizes: what a large catalog costs it.

The catalog figure of ``bench_env`` (the step with 10^6 items over the step with 10^3) moves
by ±15 % between sittings and between whole-step runs, which hides changes of a few percent
to the part of the step a catalog's size reaches: the candidates kernel
(``recenv::candidates``: list lookups, item rows and counters, all random reads). This script
times that kernel by itself, on one thread, for the markets of one process: for each size it
builds ``make_vec(--env, num_envs=--num-envs, num_items=size)``, steps it a few times with the
benchmark policy (so the counters hold this episode's stamps), draws ``VARIANTS`` requests'
list positions (``_list_index`` of random user features and uniforms, as a request draws
them) and calls the kernel ``--calls`` times, taking the requests in turn (one request timed
again and again would read cached rows). Each size has the env's own item counters, as
``bench_env``'s catalog rows (Market-v0: 1,000 exact at 10^3 items, 4,096 hashed at 10^6;
until session 46 this script held both at 1,024, ``--config item_stats_size=1024``). It
prints the median time per call of each size and their ratio; JSON in
``results/candidates_op-*.json`` unless ``--no-json``::

    .venv/bin/python -m experiments.candidates_op                    # 1,024 markets, 10^3 / 10^6
    .venv/bin/python -m experiments.candidates_op --num-envs 4096 --items 2000,100000

To try a change to ``recenv/core/native/candidates.cpp``, run this before and after (the
kernel rebuilds when its source changes); the twentieth session's variants and their
figures are in performance-log.md. Needs the native kernels (a C++ compiler and ninja).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import recenv
from experiments.bench_env import (
    _core,
    _ints,
    _policy,
    provenance,
    result_path,
    summarize_rates,
    write_result,
)
from experiments.config import add_market_arguments, parse_market_overrides
from recenv.core import native

VARIANTS = 8  # requests the calls take in turn
WARMUP_STEPS = 5
WARMUP_CALLS = 10


def time_kernel(env_id: str, num_envs: int, calls: int, seed: int = 0, **cfg) -> list[float]:
    """Seconds of each of ``calls`` kernel calls (after ``WARMUP_CALLS`` untimed) for a
    market batch of ``env_id`` built with ``cfg``."""
    env = recenv.make_vec(env_id, num_envs=num_envs, seed=seed, **cfg)
    core = _core(env)
    obs = env.reset()
    for _ in range(WARMUP_STEPS):
        obs, *_ = env.step(_policy(obs, env.agents, env.config.slate_size))
    gen = torch.Generator().manual_seed(seed)
    T = env.config.num_topics
    requests = [
        core._list_index(
            torch.rand(num_envs, T + 2, generator=gen),
            torch.rand(num_envs, core._block_width, generator=gen),
        )
        for _ in range(VARIANTS)
    ]
    seconds = []
    for i in range(WARMUP_CALLS + calls):
        index = requests[i % VARIANTS]
        t0 = time.perf_counter()
        core._candidates_native(index)
        seconds.append(time.perf_counter() - t0)
    return seconds[WARMUP_CALLS:]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_market_arguments(p, num_envs=1024)
    p.add_argument(
        "--items",
        type=_ints,
        default=[1_000, 1_000_000],
        help="two catalog sizes, small,large",
    )
    p.add_argument("--calls", type=int, default=50, help="timed kernel calls per size")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-json", action="store_true")
    args = p.parse_args(argv)
    if len(args.items) != 2:
        p.error(f"--items takes two sizes, got {args.items}")
    if not native.available():
        raise SystemExit("the native kernels are not built here (a C++ compiler and ninja)")
    config = parse_market_overrides(args.config)
    out = None if args.no_json else result_path("candidates_op", args.out)
    torch.set_num_threads(1)
    per_size = {}
    for items in args.items:
        s = time_kernel(args.env, args.num_envs, args.calls, **{**config, "num_items": items})
        per_size[items] = m = summarize_rates(s)  # median, min, max (of seconds here)
        print(
            f"{items:>10,} items: {1e3 * m['median']:.3f} ms per call "
            f"[{1e3 * m['min']:.3f}..{1e3 * m['max']:.3f}]"
        )
    small, large = (per_size[i]["median"] for i in args.items)
    result = {
        "env": args.env,
        "num_envs": args.num_envs,
        "config": config,
        "calls": args.calls,
        "seconds_per_call": {str(k): v for k, v in per_size.items()},
        "ratio": large / small,
        "extra_ms": 1e3 * (large - small),
        "threads": 1,
        **provenance(),
    }
    print(
        f"{args.items[1]:,} over {args.items[0]:,} items: {result['ratio']:.2f}x "
        f"(+{result['extra_ms']:.3f} ms per call, {args.num_envs} markets, 1 thread)"
    )
    if out is not None:
        write_result(out, result)
    return result


if __name__ == "__main__":
    main()
