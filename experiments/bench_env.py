"""Benchmark of the environment: PettingZoo-face steps/s, batched env-steps/s, catalog scaling.

Prints one table and writes JSON. Every figure is the median of ``--repeats`` timed runs with
its spread (min..max); only ``env.step`` is timed (the policy's actions are computed outside
the timer). Full runs time at least one whole episode per figure, so auto-resets and episode
metrics are included; ``--quick`` runs are shorter than an episode at large ``num_envs``.
Run from the repository root::

    .venv/bin/python -m experiments.bench_env                 # full table (~10 minutes)
    .venv/bin/python -m experiments.bench_env --quick         # smaller, ~1 minute

Results go to ``experiments/results/bench_env-<host>-<UTC time>.json``; an existing file is
never overwritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

import recenv

RESULTS = Path(__file__).parent / "results"


def _policy(obs, agents, k):
    """Top-K unmasked candidates by a fixed feature (cheap, always valid)."""
    out = {}
    for a in agents:
        o = obs[a]
        score = torch.where(o["action_mask"], o["candidates"][..., -4], -torch.inf)
        out[a] = score.topk(k, dim=-1).indices
    return out


def time_batched(env_id, num_envs, steps, device="cpu", compile=False, **cfg):
    """Seconds per step of the batched env, one timed run of ``steps`` steps."""
    env = recenv.make_vec(env_id, num_envs=num_envs, device=device, seed=0, compile=compile, **cfg)
    obs = env.reset()
    k = env.config.slate_size
    for _ in range(3):  # warm-up (and compilation)
        obs, *_ = env.step(_policy(obs, env.agents, k))
    total = 0.0
    for _ in range(steps):
        acts = _policy(obs, env.agents, k)
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        obs, *_ = env.step(acts)
        if device != "cpu":
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
    return total / steps


def time_pettingzoo(env_id, steps, compile=False):
    env = recenv.make(env_id, seed=0, compile=compile)
    obs, _ = env.reset()

    def sample(obs):
        return {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}

    for _ in range(3):
        obs, *_ = env.step(sample(obs))
    total = 0.0
    for _ in range(steps):
        if not env.agents:
            obs, _ = env.reset()
        acts = sample(obs)
        t0 = time.perf_counter()
        obs, *_ = env.step(acts)
        total += time.perf_counter() - t0
    return total / steps


def summarize(samples, scale):
    """Median and spread of ``scale / sample`` (a rate) over repeats."""
    rates = [scale / s for s in samples]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="recenv/Market-v0", help="environment id")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure")
    p.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--out", type=Path, default=None, help="JSON path (must not exist)")
    args = p.parse_args(argv)

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"bench_env-{socket.gethostname()}-{stamp}.json"
    if out.exists():
        sys.exit(f"{out} exists; results are never overwritten (pass another --out)")

    sizes = [1, 64, 1024, 4096] if args.quick else [1, 64, 1024, 4096, 16384]
    default_threads = torch.get_num_threads()
    thread_settings = [1] if args.quick else sorted({1, default_threads})
    compile_modes = [False] if args.no_compile else [False, True]
    rows = []

    def record(kind, rate_name, samples, scale, **meta):
        s = summarize(samples, scale)
        rows.append({"kind": kind, "rate": rate_name, **meta, **s})
        spread = f"{s['min']:,.0f}..{s['max']:,.0f}"
        meta_s = " ".join(f"{k}={v}" for k, v in meta.items())
        print(f"{kind:<22} {meta_s:<44} {s['median']:>14,.0f} {rate_name:<16} [{spread}]")

    print(f"recenv bench: {args.env}; torch {torch.__version__}; {platform.platform()}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores")
    print(f"{'figure':<22} {'setting':<44} {'median':>14} {'unit':<16} [spread]")

    for compile in compile_modes:
        torch.set_num_threads(1)
        steps = 300 if args.quick else 1000
        samples = [time_pettingzoo(args.env, steps, compile) for _ in range(args.repeats)]
        record("pettingzoo_face", "steps/s", samples, 1.0, threads=1, compile=compile)

    agents = len(recenv.make_vec(args.env, num_envs=1).agents)
    for threads in thread_settings:
        torch.set_num_threads(threads)
        for compile in compile_modes:
            for n in sizes:
                # Full runs time at least one whole episode (horizon 200), so the amortised
                # cost of auto-resets and episode metrics is in the figure.
                steps = max(5, min(300, 40_000 // n)) if args.quick else max(205, 20_000 // n)
                samples = [
                    time_batched(args.env, n, steps, compile=compile) for _ in range(args.repeats)
                ]
                record(
                    "batched",
                    "env-steps/s",
                    samples,
                    n,
                    threads=threads,
                    compile=compile,
                    num_envs=n,
                )
                rows[-1]["agent_steps_per_s"] = rows[-1]["median"] * agents

    torch.set_num_threads(1)
    n = 256 if args.quick else 1024
    steps = 20 if args.quick else 50
    catalog = {}
    for items in (1_000, 1_000_000):
        samples = [
            time_batched(args.env, n, steps, num_items=items, item_stats_size=1024)
            for _ in range(args.repeats)
        ]
        record("catalog", "env-steps/s", samples, n, threads=1, num_envs=n, num_items=items)
        catalog[items] = rows[-1]["median"]
    ratio = catalog[1_000] / catalog[1_000_000]
    print(f"step time with 10^6 items / with 10^3 items: {ratio:.2f}x (target <= 1.5x)")

    if torch.cuda.is_available():
        for n in [1024, 16384, 2**17, 2**20]:
            samples = [time_batched(args.env, n, 50, device="cuda") for _ in range(args.repeats)]
            record("batched_cuda", "env-steps/s", samples, n, device="cuda", num_envs=n)

    result = {
        "env": args.env,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "default_threads": default_threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "repeats": args.repeats,
        "catalog_ratio_1e6_over_1e3": ratio,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "x") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
