"""Benchmark of the environment, side by side with its peers and the hardware limit.

One run prints one table and writes one JSON:

- recenv's PettingZoo face (steps/s) and batched env (env-steps/s at several ``num_envs`` x
  torch threads x ``torch.compile``), a 10^3- vs 10^6-item catalog (CUDA figures come from
  ``experiments.bench_cuda``);
- peers, same run, same thread setting (skipped with a note when not installed; ``pip install
  -e .[bench]``): mpe2's ``simple_spread_v3`` through PettingZoo's parallel API, against the
  PettingZoo face, and VMAS's ``simple_spread`` at 1,024 / 4,096 / 16,384 envs, against the
  batched rows; with the ratios recenv/peer;
- the copy bandwidth (bytes read + written per second by a 256 MiB ``dst.copy_(src)``), and
  the fraction of it the core's step traffic of state and observation uses at 4,096 envs
  (``BatchedMarket.step_traffic_bytes()["total"]``, "n/a" while the core lacks it; the
  fraction with the static catalog's reads added is printed beside it, not judged);
- memory: ``BatchedMarket.state_nbytes()`` per env at 4,096 envs, and (full runs or
  ``--memory``) whether 16,384 envs of 1,000 users each fit in 8 GiB (peak RSS growth of a fresh
  process that builds, resets and steps them).

Every figure is the median of ``--repeats`` timed runs with its spread (min..max); only
``env.step`` is timed (the policy's actions are computed outside the timer); peers are timed
the same way (see ``experiments.bench_peers``). Full runs time at least one whole episode per
batched figure, so auto-resets and episode metrics are included; the catalog ratio times 50
steps of each size (within an episode), each size in fresh processes, the two sizes
alternated over ``--repeats`` rounds (the ratio is the median of the rounds' ratios, see
:func:`time_catalog_rounds`); ``--quick`` runs are
shorter than an episode at large ``num_envs``. Run from the repository root::

    .venv/bin/python -m experiments.bench_env                 # full table (long)
    .venv/bin/python -m experiments.bench_env --quick         # smaller, a few minutes

Results go to ``experiments/results/bench_env-<host>-<UTC time>.json``; an existing file is
never overwritten. The options after ``--out`` size a smoke run (the tests use them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import recenv
from experiments import bench_peers
from experiments.provenance import code_line, git_state
from recenv.core import heap, hugepages, native

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30

# The targets, reported next to the figures they judge.
TARGET_BATCHED_STEPS = 250_000  # env-steps/s of the batched core, one thread, at:
TARGET_BATCHED_ENVS = 4096
TARGET_PZ_STEPS = 5_000  # PettingZoo face steps/s
TARGET_PZ_OVER_MPE2 = 3.0
TARGET_BATCHED_OVER_VMAS = 1.0
TARGET_COPY_FRACTION = 0.25  # of the copy bandwidth, at 4,096 envs
TARGET_CATALOG_RATIO = 1.5  # the simulator issue's bound
TARGET_CATALOG_RATIO_SPEED = 1.2  # the speed issue's
MEMORY_LIMIT = 8 * GiB
# Market-v0 with five users per market who churn readily and never return: episodes end
# (terminate) at different steps in different markets; with the benchmark policy some market
# of 1,024 ends on ~97 % of the steps (the row prints the share it measured).
CHURN_HEAVY = {"num_users": 5, "churn_threshold": 0.5, "expectation": 0.6, "return_prob": 0.0}


def _policy(obs, agents, k):
    """Top-K unmasked candidates by a fixed feature (cheap, always valid)."""
    out = {}
    for a in agents:
        o = obs[a]
        score = torch.where(o["action_mask"], o["candidates"][..., -4], -torch.inf)
        out[a] = score.topk(k, dim=-1).indices
    return out


def warmed_env(env_id, num_envs, device="cpu", compile=False, steps=3, **cfg):
    """``(env, obs)``: ``make_vec(env_id, num_envs)`` (seed 0) reset and stepped ``steps``
    times by :func:`_policy` (the warm-up, compilation included); ``obs`` is the last step's."""
    env = recenv.make_vec(env_id, num_envs=num_envs, device=device, seed=0, compile=compile, **cfg)
    obs = env.reset()
    for _ in range(steps):
        obs, *_ = env.step(_policy(obs, env.agents, env.config.slate_size))
    return env, obs


def timed_steps(env, obs, steps, ended=None):
    """``(seconds, obs)``: the time ``steps`` calls of ``env.step`` took from ``obs`` (the
    device synchronised around each off the CPU; :func:`_policy`'s actions computed outside
    the timer) and the last observation. With a list ``ended``, whether some market's
    episode ended is appended for each step (read outside the timer)."""
    cuda = env.device.type != "cpu"
    total = 0.0
    for _ in range(steps):
        acts = _policy(obs, env.agents, env.config.slate_size)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(acts)
        if cuda:
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
        if ended is not None:
            ended.append(bool((terminated | truncated).any()))
    return total, obs


def time_batched(
    env_id, num_envs, steps, device="cpu", compile=False, repeats=1, ended=None, **cfg
):
    """Seconds per step of the batched env: ``repeats`` timed runs of ``steps`` steps each, on
    one env (built, reset and warmed up, compilation included, before the first run). With a
    list ``ended``, whether some market's episode ended is appended for each timed step
    (read outside the timer)."""
    env, obs = warmed_env(env_id, num_envs, device=device, compile=compile, **cfg)
    samples = []
    for _ in range(repeats):
        total, obs = timed_steps(env, obs, steps, ended)
        samples.append(total / steps)
    return samples


@contextlib.contextmanager
def patched(owner, name: str, value) -> Iterator[None]:
    """``owner.name`` (a module's or a class's attribute) is ``value`` inside the block:
    how a benchmark times an earlier form of the step beside the current one."""
    current = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, current)


def _in_fresh_process(
    func: str, arguments: str, *argv: str, module: str = "experiments.bench_env"
) -> tuple[Any | None, str]:
    """``func(arguments)`` (a function of ``module``, by default this one, and its arguments
    as Python source; ``sys.argv[1:]`` holds ``argv``) in a fresh Python process with this
    process's torch thread count. Returns ``(its JSON-decoded result, "")``, or ``(None,
    "exit N: <last lines of the child's output>")`` when it failed."""
    code = (
        "import json, sys, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"from {module} import {func}\n"
        f"print('FRESH_RESULT ' + json.dumps({func}({arguments})))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FRESH_RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return None, f"exit {proc.returncode}: {' | '.join(tail)}"
    return json.loads(lines[-1][len("FRESH_RESULT ") :]), ""


def time_batched_fresh(env_id, num_envs, steps, compile=False, repeats=1, **cfg):
    """:func:`time_batched` in a fresh Python process (this process's torch thread count).

    For figures that compare two markets: a market built in a process that has already
    built and compiled others runs differently from one built in a fresh process (the order
    bias in PERFORMANCE.md, 10-30 %), and the catalog ratio compared the 10^3- and
    10^6-item markets built late in this long run (1.42x and 1.61x in two runs of the same
    code, against 1.31x in fresh processes in the same sitting). ``cfg`` goes to the child
    as JSON."""
    samples, error = _in_fresh_process(
        "time_batched",
        f"{env_id!r}, {int(num_envs)}, {int(steps)}, compile={bool(compile)}, "
        f"repeats={int(repeats)}, **json.loads(sys.argv[1])",
        json.dumps(cfg),
    )
    if samples is None:
        raise RuntimeError(f"timing {env_id} {cfg} in a fresh process failed: {error}")
    return samples


def time_catalog_rounds(env_id, num_envs, steps, sizes, rounds, compile=False, repeats=1, **cfg):
    """The catalog figure: the step at ``sizes = (small, large)`` catalog sizes, each timed
    in a fresh process (:func:`time_batched_fresh`, ``repeats`` runs of ``steps`` steps),
    the two sizes alternated over ``rounds`` rounds in ABBA order.

    Returns ``(samples, ratios)``: every run's seconds per step by size, and each round's
    ratio of the large catalog's median step time to the small one's. A ratio taken within
    a round compares two processes run back to back; the two sizes timed one after the
    other, all rounds of one then all of the other, put the sitting's drift over minutes
    into the ratio (the compiled catalog ratio read 1.24x and 1.66x in two runs of the same
    step code, the 10^6-item runs of the second spreading 1.28x among themselves)."""
    small, large = sizes
    samples: dict[int, list[float]] = {small: [], large: []}
    ratios = []
    for r in range(rounds):
        median = {}
        for items in (small, large) if r % 2 == 0 else (large, small):
            runs = time_batched_fresh(
                env_id, num_envs, steps, compile=compile, repeats=repeats, num_items=items, **cfg
            )
            samples[items] += runs
            median[items] = statistics.median(runs)
        ratios.append(median[large] / median[small])
    return samples, ratios


def time_pettingzoo(env_id, steps, compile=False):
    """Seconds per ``env.step`` of the PettingZoo face (one market), one timed run.

    Masked random actions are sampled outside the timer; the env is reset (untimed) when
    ``env.agents`` is empty. ``bench_peers.time_mpe2_spread`` times mpe2 the same way."""
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


def summarize(samples: Sequence[float], scale: float) -> dict[str, float]:
    """Median and spread of ``scale / sample`` (a rate) over repeats."""
    return summarize_rates([scale / s for s in samples])


def summarize_rates(rates: Sequence[float]) -> dict[str, float]:
    """Median and spread of rates over repeats."""
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def paired_ratios(rates: dict[str, list[float]]) -> tuple[list[float], int]:
    """Each round's ``head / base`` of an A/B run's ``rates`` (``{"base": [...], "head":
    [...]}``, round by round; the two runs of a round sat next to each other) and in how
    many rounds head was ahead: how consistent the verdict is, beside the medians' ratio."""
    ratios = [h / b for h, b in zip(rates["head"], rates["base"], strict=True)]
    return ratios, sum(r > 1 for r in ratios)


def traffic_entry(row: dict, num_envs: int, per_step: dict, bandwidth: float) -> dict:
    """The share of the copy ``bandwidth`` (bytes/s) that the batched ``row`` (env-steps/s:
    median, min, max) at ``num_envs`` markets moves: env-steps/s over ``num_envs`` (steps
    of the batch per second) times ``per_step["total"]``, the batch's bytes of state and
    observation a step (``step_traffic_bytes``). ``met``: that share at its median against
    :data:`TARGET_COPY_FRACTION`; with the catalog's reads too (``total_with_catalog``,
    shared and static) beside it, not judged."""
    total = per_step["total"]
    with_catalog = per_step.get("total_with_catalog", total)
    entry: dict = {"num_envs": num_envs}
    for stat in ("median", "min", "max"):
        bps = row[stat] / num_envs * total
        entry[f"traffic_bytes_per_s_{stat}"] = bps
        entry[f"fraction_of_copy_bandwidth_{stat}"] = bps / bandwidth
    entry["traffic_bytes_per_s"] = entry["traffic_bytes_per_s_median"]
    entry["fraction_of_copy_bandwidth"] = entry["fraction_of_copy_bandwidth_median"]
    entry["fraction_with_catalog"] = row["median"] / num_envs * with_catalog / bandwidth
    entry["met"] = entry["fraction_of_copy_bandwidth"] >= TARGET_COPY_FRACTION
    return entry


def _core(env):
    """The ``BatchedMarket`` behind ``env``: ``make_vec`` returns it bare; a wrapper (the
    PettingZoo face keeps it as ``.core``) is unwrapped."""
    from recenv.core.market import BatchedMarket

    while not isinstance(env, BatchedMarket):
        inner = getattr(env, "core", None) or getattr(env, "env", None)
        if inner is None:
            return env
        env = inner
    return env


def core_footprint(env_id, num_envs, **cfg):
    """``step_traffic_bytes()`` and ``state_nbytes()`` of a batch of ``num_envs`` markets.

    Both are ``None`` while the core does not expose them. Asked after a reset and one step,
    so every lazily built buffer exists."""
    env, _ = warmed_env(env_id, num_envs, steps=1, **cfg)
    core = _core(env)
    traffic = getattr(core, "step_traffic_bytes", None)
    state = getattr(core, "state_nbytes", None)
    return {
        "type": f"{type(core).__module__}.{type(core).__qualname__}",
        "step_traffic_bytes": {k: int(v) for k, v in traffic().items()} if traffic else None,
        "state_nbytes": int(state()) if state else None,
    }


def _maxrss_bytes():
    """Peak resident set size of this process image so far, in bytes.

    On Linux ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` survives ``exec``, so in a
    child started by fork and exec it starts at the parent's resident size at the fork (the
    benchmark's parent holds ~2 GB by the memory check, which made the check's growth read
    ~1.9 GiB low). Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:   123 kB"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def memory_check(env_id, num_envs, num_users, steps=5):
    """Build, reset and step ``num_envs`` markets of ``num_users`` users IN THIS PROCESS.

    Returns the peak RSS before (after the imports) and after, their difference (the growth),
    ``state_nbytes()`` (``None`` while the core lacks it) and the build/step wall times. The
    growth is only meaningful in a fresh process: :func:`run_memory_check` runs it in one."""
    before = _maxrss_bytes()
    t0 = time.perf_counter()
    env = recenv.make_vec(env_id, num_envs=num_envs, num_users=num_users, seed=0)
    obs = env.reset()
    t1 = time.perf_counter()
    k = env.config.slate_size
    for _ in range(steps):
        obs, *_ = env.step(_policy(obs, env.agents, k))
    t2 = time.perf_counter()
    after = _maxrss_bytes()
    state = getattr(_core(env), "state_nbytes", None)
    return {
        "num_envs": num_envs,
        "num_users": num_users,
        "steps": steps,
        "maxrss_before": before,
        "maxrss_after": after,
        "rss_growth": after - before,
        "state_nbytes": int(state()) if state else None,
        "build_reset_s": t1 - t0,
        "step_s": (t2 - t1) / max(1, steps),
    }


def run_memory_check(env_id, num_envs, num_users, steps=5, limit=MEMORY_LIMIT):
    """:func:`memory_check` in a fresh Python process (so the peak RSS is the check's alone),
    judged against ``limit`` bytes of peak RSS growth."""
    r, error = _in_fresh_process(
        "memory_check", f"{env_id!r}, {int(num_envs)}, {int(num_users)}, {int(steps)}"
    )
    if r is None:
        return {
            "num_envs": num_envs,
            "num_users": num_users,
            "limit_bytes": limit,
            "passed": False,
            "error": error,
        }
    r["limit_bytes"] = limit
    r["passed"] = r["rss_growth"] <= limit
    return r


def result_path(name: str, out: Path | None) -> Path:
    """Where a benchmark's JSON goes: ``out``, or ``results/<name>-<host>-<UTC time>.json``;
    exits if it exists (results are never overwritten)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = out or RESULTS / f"{name}-{socket.gethostname()}-{stamp}.json"
    if out.exists():
        sys.exit(f"{out} exists; results are never overwritten (pass another --out)")
    return out


def write_result(out: Path, result: dict) -> None:
    """Write ``result`` as JSON to ``out``, which must not exist yet."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "x") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


# The environment variables that change how the CPU core runs (not what it computes), with
# their defaults; LD_PRELOAD reported as set (e.g. another malloc), "" when not.
_SWITCHES = {"RECENV_NATIVE": "1", "RECENV_HUGE_PAGES": "1", "RECENV_KEEP_HEAP": "1"}


def _switches() -> dict[str, str]:
    """This process's settings of :data:`_SWITCHES` and ``LD_PRELOAD`` (children inherit them)."""
    out = {k: os.environ.get(k, v) for k, v in _SWITCHES.items()}
    out["LD_PRELOAD"] = os.environ.get("LD_PRELOAD", "")
    return out


def machine() -> dict[str, object]:
    """The machine a figure was measured on, beyond its host name (these VMs' hosts change
    between sittings: an AVX-512 Xeon in one, an AVX2-only EPYC in another, and inductor's
    loops, the caches the lookups miss and so the figures change with them): the CPU model,
    the vector ISA torch's CPU kernels and inductor use, logical cores, the first core's L2
    and L3 cache and the memory, in bytes (None where the system does not say)."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith("model name")]
        model = lines[0].split(":", 1)[1].strip() if lines else None
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        memory = None
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": os.cpu_count(),
        "l2_bytes": _cache_bytes(2),
        "l3_bytes": _cache_bytes(3),
        "memory_bytes": memory if memory and memory > 0 else None,
    }


def _cache_bytes(level: int, root: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The size of CPU 0's data or unified cache of ``level`` from Linux's sysfs (``size``
    reads e.g. ``2048K``), or None where sysfs does not list it."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path(root).glob("index*")):
        try:
            if int((index / "level").read_text()) != level:
                continue
            if (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = units.get(size[-1:].upper(), 1)
        digits = size[:-1] if size[-1:].upper() in units else size
        if digits.isdigit():
            return int(digits) * scale
    return None


def provenance() -> dict[str, object]:
    """Where, when and from which code a performance tool's result was measured, for its
    JSON: host name, :func:`machine`, torch version, UTC time and the commit
    (:func:`experiments.provenance.git_state`)."""
    return {
        "host": socket.gethostname(),
        "machine": machine(),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_state(),
    }


def _in_effect() -> dict[str, object]:
    """What the switches of :func:`_switches` gave in this process: a switch left on does
    nothing where its mechanism is missing (no C++ toolchain for the native kernels,
    transparent huge pages in ``never`` mode, a libc other than glibc), and a run's figures
    depend on what ran, not on what was asked for. Builds the native kernels if needed and
    applies the heap setting, as the first market built would."""
    return {
        "native_kernels": native.available(),
        "huge_pages": hugepages.enabled("cpu"),
        "thp_mode": hugepages.thp_mode(),
        "heap_kept": heap.keep(),
    }


def _ints(text):
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _fmt_bytes(b):
    return "n/a" if b is None else f"{b / GiB:.2f} GiB" if b >= GiB else f"{b / 2**20:.1f} MiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="recenv/Market-v0", help="environment id")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure")
    p.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--no-peers", action="store_true", help="skip the mpe2 and VMAS rows")
    p.add_argument(
        "--memory",
        action="store_true",
        help="run the 16,384-env memory check (~6 GB) even with --quick (full runs always do)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (must not exist)")
    # Sizing of smoke runs (the tests): defaults follow --quick / full.
    p.add_argument("--sizes", type=_ints, default=None, help="batched num_envs, e.g. 1,64,4096")
    p.add_argument("--steps", type=int, default=None, help="timed steps of every figure")
    p.add_argument("--peer-sizes", type=_ints, default=None, help="VMAS num_envs")
    p.add_argument("--catalog-items", type=_ints, default=[1_000, 1_000_000], help="2 sizes")
    p.add_argument(
        "--catalog-stats-size",
        type=int,
        default=None,
        help="item counters per market in the catalog rows (default: the env's own, as judged;"
        " runs before the twenty-eighth session held both sizes at 1024)",
    )
    p.add_argument("--catalog-envs", type=int, default=None, help="num_envs of catalog rows")
    p.add_argument("--traffic-envs", type=int, default=4096, help="num_envs of traffic/memory")
    p.add_argument("--copy-mib", type=int, default=256, help="MiB of the bandwidth copy")
    p.add_argument("--memory-envs", type=int, default=16384, help="num_envs of memory check")
    p.add_argument("--memory-users", type=int, default=1000, help="num_users of memory check")
    args = p.parse_args(argv)
    if args.catalog_stats_size is not None and args.catalog_stats_size < 1:
        p.error(f"--catalog-stats-size {args.catalog_stats_size} must be >= 1")

    out = result_path("bench_env", args.out)

    sizes = args.sizes or ([1, 64, 1024, 4096] if args.quick else [1, 64, 1024, 4096, 16384])
    peer_sizes = args.peer_sizes or ([1024, 4096] if args.quick else [1024, 4096, 16384])
    default_threads = torch.get_num_threads()
    thread_settings = [1] if args.quick else sorted({1, default_threads})
    compile_modes = [False] if args.no_compile else [False, True]
    rows = []
    ratios = []
    notes = []

    def steps_or(n):
        return args.steps if args.steps is not None else n

    def record(kind, rate_name, samples, scale, rates=None, **meta):
        s = summarize_rates(rates) if rates is not None else summarize(samples, scale)
        rows.append({"kind": kind, "rate": rate_name, **meta, **s})
        spread = f"{s['min']:,.0f}..{s['max']:,.0f}"
        meta_s = " ".join(f"{k}={v}" for k, v in meta.items())
        print(f"{kind:<22} {meta_s:<44} {s['median']:>14,.0f} {rate_name:<16} [{spread}]")
        return rows[-1]

    def note(text):
        notes.append(text)
        print(f"note: {text}")

    def ratio(name, num, den, target=None, **meta):
        r = num["median"] / den["median"]
        entry = {"name": name, **meta, "ratio": r}
        if target is not None:
            entry["target"] = target
            entry["met"] = r >= target
        ratios.append(entry)
        meta_s = " ".join(f"{k}={v}" for k, v in meta.items())
        goal = f" (target >= {target:g}x: {'met' if r >= target else 'NOT met'})" if target else ""
        print(f"  ratio {name} {meta_s}: {r:.2f}x{goal}")

    versions = bench_peers.peer_versions()
    run_peers = {name: not args.no_peers and v is not None for name, v in versions.items()}
    host = socket.gethostname()
    print(f"recenv bench: {args.env}; torch {torch.__version__}; {platform.platform()}")
    print(f"host: {host}; python {sys.version.split()[0]}")
    mach = machine()
    caches = ", ".join(
        f"{name} {_fmt_bytes(mach[key])}"
        for name, key in (("L2", "l2_bytes"), ("L3", "l3_bytes"), ("memory", "memory_bytes"))
        if mach[key]
    )
    print(
        f"cpu: {mach['cpu_model']} ({mach['cpu_capability']}), {mach['logical_cores']} logical "
        f"cores" + (f"; {caches}" if caches else "")
    )
    print(code_line())
    switches, in_effect = _switches(), _in_effect()
    print("switches: " + ", ".join(f"{k}={v}" for k, v in switches.items()))
    print("in effect: " + ", ".join(f"{k}={v}" for k, v in in_effect.items()))
    print(
        f"torch threads: default {default_threads}; rows run at threads={thread_settings} "
        "(each row says which); peers run under the same setting as the rows they face"
    )
    peers_s = ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items())
    print(f"peers: {peers_s}" + (" (skipped: --no-peers)" if args.no_peers else ""))
    if not args.no_peers:
        for name, v in versions.items():
            if v is None:
                note(f"{name} is not installed (pip install -e .[bench]); its rows are skipped")
    print(f"{'figure':<22} {'setting':<44} {'median':>14} {'unit':<16} [spread]")

    # --- PettingZoo face, and mpe2 through the same API ----------------------------------
    torch.set_num_threads(1)
    pz_steps = steps_or(300 if args.quick else 1000)
    pz_rows = {}
    for compile in compile_modes:
        samples = [time_pettingzoo(args.env, pz_steps, compile) for _ in range(args.repeats)]
        pz_rows[compile] = record(
            "pettingzoo_face", "steps/s", samples, 1.0, threads=1, compile=compile
        )
    if run_peers["mpe2"]:
        samples = [bench_peers.time_mpe2_spread(pz_steps) for _ in range(args.repeats)]
        mpe2 = record("mpe2_simple_spread", "steps/s", samples, 1.0, threads=1, agents=3)
        for compile, row in pz_rows.items():
            ratio("pettingzoo_face/mpe2", row, mpe2, TARGET_PZ_OVER_MPE2, compile=compile)

    # --- batched rows, VMAS at the same thread setting ---------------------------------
    agents = len(recenv.make_vec(args.env, num_envs=1).agents)
    batched = {}  # (threads, compile, num_envs) -> row
    vmas_rows = {}  # (threads, num_envs) -> row
    for threads in thread_settings:
        torch.set_num_threads(threads)
        for compile in compile_modes:
            for n in sizes:
                # Full runs time at least one whole episode (horizon 200), so the amortised
                # cost of auto-resets and episode metrics is in the figure.
                steps = steps_or(
                    max(5, min(300, 40_000 // n)) if args.quick else max(205, 20_000 // n)
                )
                samples = time_batched(args.env, n, steps, compile=compile, repeats=args.repeats)
                row = record(
                    "batched",
                    "env-steps/s",
                    samples,
                    n,
                    threads=threads,
                    compile=compile,
                    num_envs=n,
                )
                row["agent_steps_per_s"] = row["median"] * agents
                batched[threads, compile, n] = row
        if run_peers["vmas"]:
            for n in peer_sizes:
                steps = steps_or(
                    max(5, min(300, 40_000 // n)) if args.quick else max(205, 20_000 // n)
                )
                samples = [bench_peers.time_vmas_spread(n, steps) for _ in range(args.repeats)]
                vmas_rows[threads, n] = record(
                    "vmas_simple_spread",
                    "env-steps/s",
                    samples,
                    n,
                    threads=threads,
                    num_envs=n,
                    agents=3,
                )
                for compile in compile_modes:
                    if (threads, compile, n) in batched:
                        ratio(
                            "batched/vmas",
                            batched[threads, compile, n],
                            vmas_rows[threads, n],
                            TARGET_BATCHED_OVER_VMAS,
                            threads=threads,
                            compile=compile,
                            num_envs=n,
                        )

    # --- the batched target: one thread, 4,096 envs ------------------------------------
    batched_target = []
    for compile in compile_modes:
        row = batched.get((1, compile, TARGET_BATCHED_ENVS))
        if row is None:
            continue
        met = row["median"] >= TARGET_BATCHED_STEPS
        batched_target.append(
            {
                "threads": 1,
                "compile": compile,
                "num_envs": TARGET_BATCHED_ENVS,
                "env_steps_per_s": row["median"],
                "met": met,
            }
        )
        print(
            f"batched {TARGET_BATCHED_ENVS:,} envs threads=1 compile={compile}: "
            f"{row['median']:,.0f} env-steps/s (target >= {TARGET_BATCHED_STEPS:,}: "
            f"{'met' if met else 'NOT met'})"
        )

    # --- catalog scaling ----------------------------------------------------------------
    torch.set_num_threads(1)
    n = args.catalog_envs or (256 if args.quick else 1024)
    steps = steps_or(20 if args.quick else 50)
    small, large = args.catalog_items[0], args.catalog_items[-1]
    catalog_ratios, catalog_rounds = {}, {}
    # The env's own item counters (Market-v0: 4,096 a market, so the 10^6-item market holds
    # 4x the 10^3-item one's, hashed) unless --catalog-stats-size holds both sizes at one.
    stats_cfg = (
        {} if args.catalog_stats_size is None else {"item_stats_size": args.catalog_stats_size}
    )
    stats_label = (
        "item_stats_size: the env's default"
        if args.catalog_stats_size is None
        else f"item_stats_size={args.catalog_stats_size}"
    )
    for compile in compile_modes:
        # Each size in processes of its own (the ratio compares two markets), alternated.
        samples, round_ratios = time_catalog_rounds(
            args.env,
            n,
            steps,
            (small, large),
            args.repeats,
            compile=compile,
            **stats_cfg,
        )
        for items in (small, large):
            record(
                "catalog",
                "env-steps/s",
                samples[items],
                n,
                threads=1,
                compile=compile,
                num_envs=n,
                num_items=items,
                item_stats_size=args.catalog_stats_size,
            )
        catalog_rounds[compile] = round_ratios
        catalog_ratios[compile] = r = statistics.median(round_ratios)
        verdicts = ", ".join(
            f"<= {bound}x: {'met' if r <= bound else 'NOT met'}"
            for bound in (TARGET_CATALOG_RATIO, TARGET_CATALOG_RATIO_SPEED)
        )
        print(
            f"step time with {large:,} items / with {small:,} items "
            f"({stats_label}), compile={compile}: "
            f"{r:.2f}x, median of {len(round_ratios)} alternated rounds "
            f"[{min(round_ratios):.2f}..{max(round_ratios):.2f}] (targets {verdicts})"
        )
    catalog_ratio = catalog_ratios[False]

    # --- episodes out of step -----------------------------------------------------------
    # The rows above end every market's episode together at the horizon, so the episode-end
    # work (episode metrics) runs once per episode. With churn, markets terminate at
    # different steps and some market ends on most steps: this row keeps that case measured.
    n = args.catalog_envs or (256 if args.quick else 1024)
    steps = steps_or(20 if args.quick else 300)
    for compile in compile_modes:
        ended: list[bool] = []
        samples = time_batched(
            args.env, n, steps, compile=compile, repeats=args.repeats, ended=ended, **CHURN_HEAVY
        )
        row = record(
            "churn_heavy", "env-steps/s", samples, n, threads=1, compile=compile, num_envs=n
        )
        row["config"] = CHURN_HEAVY
        row["steps_with_an_end"] = sum(ended) / len(ended)
        base = batched.get((1, compile, n))
        vs = f"; {row['median'] / base['median']:.2f}x the default row (25 users)" if base else ""
        print(f"  some market ended on {100 * row['steps_with_an_end']:.0f}% of the steps{vs}")

    # --- copy bandwidth and the core's share of it ---------------------------------------
    bandwidth = {}
    nbytes = args.copy_mib * 2**20
    for threads in thread_settings:
        torch.set_num_threads(threads)
        rates = [bench_peers.copy_bandwidth(nbytes) for _ in range(args.repeats)]
        bandwidth[threads] = record(
            "copy_bandwidth", "bytes/s", None, None, rates=rates, threads=threads, mib=args.copy_mib
        )
        print(f"  = {bandwidth[threads]['median'] / 1e9:.2f} GB/s read + written")
    torch.set_num_threads(1)

    n = args.traffic_envs
    footprint = core_footprint(args.env, n)
    per_step = footprint["step_traffic_bytes"]
    traffic = []
    if per_step is None:
        print(f"core traffic at {n:,} envs: n/a ({footprint['type']} has no step_traffic_bytes())")
    else:
        # "total": state and observation (the measure); the catalog's reads apart
        # (static, shared by every market). Cores without the split count all in "total".
        total = per_step["total"]
        shown = ("total", "catalog", "total_with_catalog")
        parts = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in per_step.items() if k not in shown)
        print(
            f"core traffic per step at {n:,} envs: state and observation {_fmt_bytes(total)} "
            f"({parts})"
            + (
                f"; catalog reads {_fmt_bytes(per_step['catalog'])} more"
                if "catalog" in per_step
                else ""
            )
        )
        for (threads, compile, m), row in batched.items():
            if m != n or threads not in bandwidth:
                continue
            entry = traffic_entry(row, n, per_step, bandwidth[threads]["median"])
            entry = {"threads": threads, "compile": compile, **entry}
            traffic.append(entry)
            print(
                f"  threads={threads} compile={compile}: {entry['traffic_bytes_per_s'] / 1e9:.2f}"
                f" GB/s = {100 * entry['fraction_of_copy_bandwidth']:.1f}% of copy bandwidth "
                f"[{100 * entry['fraction_of_copy_bandwidth_min']:.1f}.."
                f"{100 * entry['fraction_of_copy_bandwidth_max']:.1f}%] (target >= "
                f"{100 * TARGET_COPY_FRACTION:.0f}%: {'met' if entry['met'] else 'NOT met'}; "
                f"{100 * entry['fraction_with_catalog']:.1f}% with the catalog's reads)"
            )
        if not traffic:
            note(f"no batched row at num_envs={n}: traffic fraction not computed")

    # --- memory ---------------------------------------------------------------------------
    state = footprint["state_nbytes"]
    bytes_per_env = None if state is None else state / n
    print(
        f"state at {n:,} envs: {_fmt_bytes(state)}"
        + ("" if state is None else f" = {bytes_per_env:,.0f} bytes/env")
        + ("" if state is not None else f" ({footprint['type']} has no state_nbytes())")
    )
    memory = None
    if args.memory or not args.quick:
        m, u = args.memory_envs, args.memory_users
        memory = run_memory_check(args.env, m, u)
        if "error" in memory:
            print(f"memory check {m:,} envs x {u:,} users: FAIL ({memory['error']})")
        else:
            print(
                f"memory check {m:,} envs x {u:,} users: peak RSS growth "
                f"{_fmt_bytes(memory['rss_growth'])}, state_nbytes "
                f"{_fmt_bytes(memory['state_nbytes'])}, build+reset {memory['build_reset_s']:.1f}"
                f" s, {memory['step_s']:.2f} s/step: "
                f"{'PASS' if memory['passed'] else 'FAIL'} (limit {_fmt_bytes(MEMORY_LIMIT)})"
            )

    # --- CUDA: one script measures it (experiments.bench_cuda), sized for a short lease ----
    if torch.cuda.is_available():
        note("a GPU is present: run `python -m experiments.bench_cuda` for the CUDA figures")

    pz_best = max(r["median"] for r in pz_rows.values())
    print(
        f"PettingZoo face best {pz_best:,.0f} steps/s (target >= {TARGET_PZ_STEPS:,}: "
        f"{'met' if pz_best >= TARGET_PZ_STEPS else 'NOT met'})"
    )

    result = {
        "env": args.env,
        **git_state(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": host,
        "cpu_count": os.cpu_count(),
        "machine": mach,
        "default_threads": default_threads,
        "thread_settings": thread_settings,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "switches": switches,
        "in_effect": in_effect,
        "repeats": args.repeats,
        "quick": args.quick,
        "peers": {k: (v if run_peers[k] else None) for k, v in versions.items()},
        "catalog_ratio": {
            "items": [small, large],
            "item_stats_size": args.catalog_stats_size,  # None: the env's default
            "ratio": catalog_ratio,  # eager, as earlier runs wrote it
            "ratio_eager": catalog_ratios[False],
            "ratio_compiled": catalog_ratios.get(True),
            # Each alternated round's ratio (time_catalog_rounds); the ratios are their medians.
            "rounds_eager": catalog_rounds[False],
            "rounds_compiled": catalog_rounds.get(True),
        },
        "ratios": ratios,
        "batched_target": batched_target,
        "copy_bandwidth_bytes_per_s": {str(t): r["median"] for t, r in bandwidth.items()},
        "core": {
            "num_envs": args.traffic_envs,
            "type": footprint["type"],
            "step_traffic_bytes": per_step,
            "state_nbytes": state,
            "bytes_per_env": bytes_per_env,
        },
        "traffic": traffic,
        "memory_check": memory,
        "targets": {
            "batched_env_steps_per_s": TARGET_BATCHED_STEPS,
            "batched_num_envs": TARGET_BATCHED_ENVS,
            "pettingzoo_face_steps_per_s": TARGET_PZ_STEPS,
            "pettingzoo_face_over_mpe2": TARGET_PZ_OVER_MPE2,
            "batched_over_vmas": TARGET_BATCHED_OVER_VMAS,
            "fraction_of_copy_bandwidth": TARGET_COPY_FRACTION,
            "catalog_ratio_max": TARGET_CATALOG_RATIO,
            "catalog_ratio_max_speed": TARGET_CATALOG_RATIO_SPEED,
            "memory_limit_bytes": MEMORY_LIMIT,
        },
        "notes": notes,
        "rows": rows,
    }
    if [small, large] == [1_000, 1_000_000]:
        result["catalog_ratio_1e6_over_1e3"] = catalog_ratio  # the key earlier runs wrote
    if not all(math.isfinite(r["median"]) for r in rows):
        note("some figure is not finite")
    write_result(out, result)
    draw(out, result)
    return result


def draw(out: Path, result: dict) -> Path | None:
    """The run's figure (``experiments.bench_plots``) as PNG beside its JSON, when matplotlib
    is installed (the ``plots`` extra); otherwise, or when that file exists, a line saying
    why, and None. The JSON is written first, so a figure that cannot be drawn loses
    nothing."""
    try:
        from experiments.bench_plots import bench_figure
    except ImportError as e:
        print(f"no figure: {e} (pip install -e '.[plots]')")
        return None
    png = out.with_suffix(".png")
    try:
        bench_figure(result, png)
    except FileExistsError as e:
        print(f"no figure: {e}")
        return None
    print(f"wrote {png}")
    return png


if __name__ == "__main__":
    main()
