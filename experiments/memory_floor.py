"""The memory floor of a step: the data movement no implementation of the step can avoid,
timed alone with ATen's gathers and writes, beside the compiled step in the same process.

For a market stepped with the benchmark policy (so its candidates, page and users are real
ones), the script times, on one thread, each lookup and write the step must make whatever
code makes it:

- ``observation``: the candidates' catalog features gathered into the observation buffer
  (``index_select(..., out=)``: a row read and a row written per candidate);
- ``candidate_counters``: the candidates' (episode, exposures, clicks) in the per-market item
  counters;
- ``page_counters``: the page's and the click's counters read and written back;
- ``user_rows``: the current and the arriving user's rows read and written back;
- ``user_scans``: the per-user status, episode stamps and activity read once (the arrival
  and the episode-end scans);
- ``retrieval_lists``: one list entry per retrieved candidate (positions drawn at random:
  each lookup lands anywhere in the lists, as in the step).

Each lookup part takes 8 index sets in turn (the market's own, then its items, pages and
users shifted), since a step looks up other rows than the step before: one set timed again
and again would time cache hits. Their sum is the *floor*: ATen's kernels do nothing but
these loads and stores, so a step cannot take less (each part is timed alone, so it gets the
whole cache, a lower bound again).
The script prints each part in ms per step, the floor, the compiled (and, with
``--step both``, the eager) step, step / floor, and the env-steps/s the floor would allow; JSON
in ``results/memory_floor-*.json``. A ratio near 1 says the step is bound by memory; a large
one says the time goes to compute and loop overheads, which a different implementation
could remove.

    .venv/bin/python -m experiments.memory_floor --num-envs 4096
    .venv/bin/python -m experiments.memory_floor --num-envs 1024 --config num_items=1000000
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import torch

import recenv
from experiments.bench_env import (
    _core,
    _policy,
    provenance,
    result_path,
    summarize_rates,
    time_batched,
    write_result,
)
from experiments.config import add_market_arguments, parse_market_overrides

VARIANTS = 8  # index sets each lookup part takes in turn

PARTS = (
    "observation",
    "candidate_counters",
    "page_counters",
    "user_rows",
    "user_scans",
    "retrieval_lists",
)


def floor_parts(env_id: str, num_envs: int, warmup: int = 5, **cfg) -> dict:
    """The floor's operations (``"ops"``: name -> zero-argument callable) on a live market
    of ``num_envs`` after ``warmup`` steps of the benchmark policy, the bytes each moves
    (``"bytes"``), the market (``"core"``) and the buffer the observation gather fills
    (``"observation"``, ``[N*A*C, T+6]``). ``warmup`` >= 1: the page's items are a step's."""
    if warmup < 1:
        raise ValueError(f"warmup={warmup} must be >= 1: the floor reads a step's page (info)")
    env = recenv.make_vec(env_id, num_envs=num_envs, seed=0, **cfg)
    core = _core(env)
    c, L = core.config, core.layout
    obs = env.reset()
    info: dict[str, Any] = {}
    for _ in range(warmup):
        obs, _, _, _, info = env.step(_policy(obs, env.agents, c.slate_size))
    N, A, C, U = num_envs, c.num_agents, c.num_candidates, c.num_users
    F, I = L.width, c.num_items
    features = core.catalog.item_rows[:, core._item.features].contiguous()  # [I, T+6]
    obs_buf = torch.empty(N * A * C, features.shape[1])
    stats = core.item_stats.view(-1, 3)
    users = core.users.view(N * U, F)
    arange = core._arange[:, None]
    lists = torch.cat([t.reshape(-1) for t in (core.catalog.by_topic, core.catalog.by_pop)])
    n_listed = N * A * (C - c.slate_size)
    gen = torch.Generator().manual_seed(0)

    def counter_rows(items):  # flat rows of items [N, X] in the per-market counters
        return core._item_stat_rows(items)[0].reshape(-1)

    # Index sets taken in turn, the first one the market's own: a step looks up other rows
    # than the step before, so timing one set again and again would time cache hits (the
    # candidates' counters: ~1.4 ms at 4,096 markets on one set, ~2.6 ms on fresh ones).
    cand = core.cand.view(N, A * C)
    page = torch.cat(
        [info["shown"].reshape(N, -1), info["chosen_item"].clamp(min=0)[:, None]], dim=1
    )
    shifts = [0, *torch.randint(1, I, (VARIANTS - 1,), generator=gen).tolist()]
    cands = [((cand + k) % I).reshape(-1) for k in shifts]
    cand_rows = [counter_rows((cand + k) % I) for k in shifts]
    page_rows = [counter_rows((page + k) % I) for k in shifts]
    first = arange[:, 0] * U  # each market's first user row
    user_rows = [
        torch.cat([first + (core.user + v) % U, first + (core.user + v + 1) % U])
        for v in range(VARIANTS)
    ]
    list_pos = [torch.randint(0, lists.numel(), (n_listed,), generator=gen) for _ in shifts]
    turn = {name: itertools.cycle(range(VARIANTS)) for name in PARTS}

    def observation():
        torch.index_select(features, 0, cands[next(turn["observation"])], out=obs_buf)

    def page_counters():
        rows = page_rows[next(turn["page_counters"])]
        stats.index_copy_(0, rows, stats.index_select(0, rows))

    def user_rows_rw():
        rows = user_rows[next(turn["user_rows"])]
        users.index_copy_(0, rows, users.index_select(0, rows))

    def user_scans():
        core.user_status.sum(dim=2)
        core.user_epoch.amax(dim=1)
        core.activity.sum(dim=1)

    ops = {
        "observation": observation,
        "candidate_counters": lambda: stats.index_select(
            0, cand_rows[next(turn["candidate_counters"])]
        ),
        "page_counters": page_counters,
        "user_rows": user_rows_rw,
        "user_scans": user_scans,
        "retrieval_lists": lambda: lists.take(list_pos[next(turn["retrieval_lists"])]),
    }
    scan_bytes = sum(
        x.numel() * x.element_size() for x in (core.user_status, core.user_epoch, core.activity)
    )
    nbytes = {
        "observation": cand.numel() * (features.shape[1] * 4 * 2 + 8),
        "candidate_counters": cand.numel() * (12 * 2 + 8),
        "page_counters": page.numel() * (12 * 2 + 8),
        "user_rows": 2 * N * (F * 4 * 2 + 8),
        "user_scans": scan_bytes,
        "retrieval_lists": n_listed * (4 * 2 + 8),
    }
    return {"ops": ops, "bytes": nbytes, "core": core, "observation": obs_buf}


def time_op(op, repeats: int, reps: int) -> list[float]:
    """Seconds per call of ``op``: ``repeats`` samples, each the mean of ``reps`` calls."""
    op()  # warm
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps):
            op()
        out.append((time.perf_counter() - t0) / reps)
    return out


def measure(env_id, num_envs, repeats=5, reps=20, steps=20, modes=("compiled",), **cfg) -> dict:
    """Each floor part's seconds (median, min, max), the floor, and the step's seconds in
    each of ``modes`` ("compiled", "eager") with its ratio to the floor. The caller sets the
    thread count."""
    parts = floor_parts(env_id, num_envs, **cfg)
    result = {"parts": {}, "bytes": parts["bytes"]}
    for name in PARTS:
        result["parts"][name] = summarize_rates(time_op(parts["ops"][name], repeats, reps))
    floor = sum(p["median"] for p in result["parts"].values())
    result["floor_s"] = floor
    result["floor_env_steps_per_s"] = num_envs / floor
    result["floor_bytes"] = sum(parts["bytes"].values())
    for label in modes:
        compile = {"compiled": True, "eager": False}[label]
        seconds = time_batched(env_id, num_envs, steps, compile=compile, repeats=repeats, **cfg)
        s = summarize_rates(seconds)
        s["over_floor"] = s["median"] / floor
        s["env_steps_per_s"] = num_envs / s["median"]
        result[f"step_{label}"] = s
    return result


def print_result(result: dict) -> None:
    floor = result["floor_s"]
    print(f"{'part':<20} {'ms/step':>9} {'[spread]':>17} {'share':>6} {'GB/s':>6}")
    for name, p in result["parts"].items():
        gbs = result["bytes"][name] / p["median"] / 1e9
        print(
            f"{name:<20} {1e3 * p['median']:9.3f} [{1e3 * p['min']:6.3f}..{1e3 * p['max']:6.3f}]"
            f" {100 * p['median'] / floor:5.1f}% {gbs:6.2f}"
        )
    print(
        f"{'floor':<20} {1e3 * floor:9.3f}  = {result['floor_env_steps_per_s']:,.0f} env-steps/s "
        f"at most ({result['floor_bytes'] / 2**20:.1f} MiB)"
    )
    for key in ("step_compiled", "step_eager"):
        if key in result:
            s = result[key]
            print(
                f"{key:<20} {1e3 * s['median']:9.3f} [{1e3 * s['min']:6.3f}..{1e3 * s['max']:6.3f}]"
                f"  = {s['env_steps_per_s']:,.0f} env-steps/s, {s['over_floor']:.1f}x the floor"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_market_arguments(p)
    p.add_argument("--repeats", type=int, default=5, help="timed samples per figure")
    p.add_argument("--reps", type=int, default=20, help="calls per floor sample")
    p.add_argument("--steps", type=int, default=20, help="steps per step sample")
    p.add_argument(
        "--step",
        choices=("compiled", "eager", "both"),
        default="compiled",
        help="which step to time beside the floor",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-json", action="store_true")
    args = p.parse_args(argv)
    config = parse_market_overrides(args.config)
    out = None if args.no_json else result_path("memory_floor", args.out)
    torch.set_num_threads(1)
    modes = ("compiled", "eager") if args.step == "both" else (args.step,)
    result = measure(args.env, args.num_envs, args.repeats, args.reps, args.steps, modes, **config)
    result.update(
        env=args.env,
        num_envs=args.num_envs,
        config=config,
        threads=1,
        **provenance(),
    )
    print(f"{args.env}, {args.num_envs} markets, {config or 'defaults'}, 1 thread")
    print_result(result)
    if out is not None:
        write_result(out, result)


if __name__ == "__main__":
    main()
