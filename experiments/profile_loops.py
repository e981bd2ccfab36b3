"""Where a compiled step's time goes, loop by loop of inductor's generated C++.

``torch.profiler`` sees a compiled step as a handful of fused kernels; each of them is
thousands of lines of C++ with a dozen top-level loops over the markets, and which of those
loops holds the time is what decides what to change. This script samples a compiled
``env.step`` loop with Linux ``perf`` and attributes every sample to the top-level loop of the
generated ``.cpp`` it ran in:

1. a child process builds ``make_vec(--env, num_envs=--num-envs, compile=True)`` with
   ``TORCHINDUCTOR_DEBUG_SYMBOL=1`` (inductor adds ``-g`` to its ``-O3`` build, so the code is
   the same and addresses map to source lines), warms it up and steps it;
2. ``perf record -e cpu-clock`` samples the child for ``--seconds``;
3. each sample in an inductor-built library is mapped to its file offset (from the mmap
   events), then by ``addr2line -i`` to the outermost line of the generated ``.cpp`` it was
   inlined into, then to the top-level loop block that holds that line.

It prints the share of samples by library, by fused kernel and by loop (with the loop nest's
trip counts, e.g. ``4096 x 40 x 2``), and writes the table as JSON to
``experiments/results/profile_loops-<host>-<UTC time>.json`` (never overwritten)::

    .venv/bin/python -m experiments.profile_loops --num-envs 4096
    .venv/bin/python -m experiments.profile_loops --num-envs 1024 --config num_items=1000000

Needs ``perf`` (linux-tools; sampling one's own processes, ``kernel.perf_event_paranoid`` <= 2)
and ``addr2line``/``readelf`` (binutils). The policy's actions are computed inside the sampled
loop (as in any training loop); their share shows under libtorch. The first run compiles
(inductor caches by build flags, so the debug-symbol build is compiled once).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.bench_env import provenance, result_path, write_result
from experiments.config import add_market_arguments, parse_market_overrides

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
import recenv
from experiments.bench_env import _policy
env_id, num_envs, seconds, config = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
env = recenv.make_vec(env_id, num_envs=num_envs, seed=0, compile=True, **json.loads(config))
obs = env.reset()
k = env.config.slate_size
for _ in range(3):
    obs, *_ = env.step(_policy(obs, env.agents, k))
print("READY", flush=True)
steps, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    obs, *_ = env.step(_policy(obs, env.agents, k))
    steps += 1
print(json.dumps({"steps": steps, "seconds": time.perf_counter() - t0}), flush=True)
"""

_MMAP = re.compile(
    r"PERF_RECORD_MMAP2? .*?\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|0) .*\]: \S+ (/\S+)"
)
_FOR = re.compile(
    r"for\(int64_t (\w+)=static_cast<int64_t>\((-?\d+)L?\); "
    r"\1<static_cast<int64_t>\((\d+)L?\); "
    r"\1\+=static_cast<int64_t>\((\d+)L?\)\)"
)


# --------------------------------------------------------------------------------------
# Parsing (pure functions, tested without perf)
# --------------------------------------------------------------------------------------
def parse_mmaps(lines) -> dict[str, list[tuple[int, int, int]]]:
    """Executable mappings from ``perf script --show-mmap-events`` lines:
    ``{path: [(start, length, file offset), ...]}``."""
    maps: dict[str, list[tuple[int, int, int]]] = collections.defaultdict(list)
    for line in lines:
        m = _MMAP.search(line)
        if m and "x" in line.split("]:")[-1].split()[0]:
            start, length, pgoff, path = m.groups()
            maps[path].append((int(start, 16), int(length, 16), int(pgoff, 16)))
    return dict(maps)


def file_offset(ip: int, mappings: list[tuple[int, int, int]]) -> int | None:
    """The file offset of address ``ip`` in a library mapped at ``mappings``."""
    for start, length, pgoff in mappings:
        if start <= ip < start + length:
            return ip - start + pgoff
    return None


def load_segments(readelf_out: str) -> list[tuple[int, int, int]]:
    """``(file offset, vaddr, size)`` of each LOAD segment, from ``readelf -lW``."""
    segs = []
    for line in readelf_out.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            segs.append((int(parts[1], 16), int(parts[2], 16), int(parts[4], 16)))
    return segs


def offset_to_vaddr(off: int, segments: list[tuple[int, int, int]]) -> int:
    for seg_off, vaddr, size in segments:
        if seg_off <= off < seg_off + size:
            return off - seg_off + vaddr
    return off


def outermost_lines(addr2line_out: str, source_name: str) -> dict[int, int | None]:
    """``{address: line}`` from ``addr2line -i -a`` output: the last (outermost) frame of
    each address's inline chain that lies in ``source_name``, or None."""
    result: dict[int, int | None] = {}
    current = None
    for line in addr2line_out.splitlines():
        if line.startswith("0x"):
            current = int(line, 16)
            result[current] = None
        elif current is not None and f"{source_name}:" in line:
            tail = line.split(f"{source_name}:")[1].split()[0]
            if tail.isdigit():
                result[current] = int(tail)
    return result


def loop_blocks(cpp: str) -> list[dict]:
    """The top-level loop blocks of inductor's generated C++: inside each ``extern "C"``
    kernel function, a block opens with a line ``    {`` and closes with ``    }``; blocks
    without a ``for`` (the C++ wrapper's calls of custom ops) are left out. Each block:
    kernel name, first and last line (1-based), and its loop nest's trip counts."""
    blocks, kernel, start = [], None, None
    lines = cpp.split("\n")
    for i, line in enumerate(lines, 1):
        if line.startswith('extern "C"'):
            m = re.search(r"void\s+(\w+)\s*\(", line)
            kernel = m.group(1) if m else line
        elif line == "    {" and kernel is not None:
            start = i
        elif line == "    }" and start is not None:
            trips: list[str] = []
            for body in lines[start : i - 1]:
                m = _FOR.search(body)
                if m:
                    var, lo, hi, step = (
                        m.group(1),
                        int(m.group(2)),
                        int(m.group(3)),
                        int(m.group(4)),
                    )
                    depth = int(var[1:]) if var[1:].isdigit() else len(trips)
                    if depth == len(trips):  # the first loop over each new index
                        trips.append(f"{hi - lo}" + (f"/{step}" if step > 1 else ""))
            if trips:  # a block without a loop is the wrapper's (e.g. a custom op's call)
                blocks.append({"kernel": kernel, "first": start, "last": i, "nest": trips})
            start = None
    return blocks


def attribute(line_counts: dict[int, int], blocks: list[dict]) -> list[dict]:
    """Samples per block (``line_counts``: samples per source line), sorted by samples."""
    firsts = [b["first"] for b in blocks]
    per: collections.Counter[int] = collections.Counter()
    for line, n in line_counts.items():
        i = bisect.bisect_right(firsts, line) - 1
        if i >= 0 and line <= blocks[i]["last"]:
            per[i] += n
    return [{**blocks[i], "samples": n} for i, n in per.most_common()]


def short_kernel(name: str) -> str:
    """``cpp_fused_<ops>_<index>`` as ``kernel <index>``."""
    m = re.search(r"_(\d+)$", name or "")
    return f"kernel {m.group(1)}" if m else (name or "?")[:30]


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"profile_loops needs `{tool}` on PATH (linux perf / binutils)")
    return path


def inductor_cache_dir() -> str:
    """Where inductor writes its generated C++ and libraries in this process's environment
    (the child's: it inherits ``TORCHINDUCTOR_CACHE_DIR``), as inductor resolves it."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return os.path.realpath(cache_dir())


@functools.cache
def is_inductor_library(dso: str, cache: str) -> bool:
    """Whether the sampled library ``dso`` is one inductor built: a ``.so`` under its cache
    directory ``cache``, or under one named like its default (``/tmp/torchinductor_<user>``).
    The name alone missed every kernel of a run with ``TORCHINDUCTOR_CACHE_DIR`` set. Cached:
    asked once per sample, of a few dozen libraries (``realpath`` is a system call each)."""
    if not dso.endswith(".so"):
        return False
    return "torchinductor" in dso or os.path.realpath(dso).startswith(cache.rstrip("/") + "/")


def sample(env_id: str, num_envs: int, seconds: float, config: dict, workdir: Path):
    """Run the child, sample it with perf; returns (perf.data path, child's step report)."""
    perf = _require("perf")
    env = {**os.environ, "TORCHINDUCTOR_DEBUG_SYMBOL": "1", "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, env_id, str(num_envs), str(seconds + 5), json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert child.stdout is not None  # stdout=subprocess.PIPE
    try:
        line = child.stdout.readline()
        if not line.startswith("READY"):
            child.wait()
            sys.exit(f"the child failed before stepping (exit {child.returncode})")
        data = workdir / "perf.data"
        rec = subprocess.run(
            [
                perf,
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "2000",
                "-p",
                str(child.pid),
                "-o",
                str(data),
                "--",
                "sleep",
                str(seconds),
            ],
            capture_output=True,
            text=True,
        )
        if rec.returncode != 0 or not data.exists():
            sys.exit(f"perf record failed: {rec.stderr.strip()[-500:]}")
        report = json.loads(child.stdout.readline() or "{}")
    finally:
        child.wait(timeout=600)
    return data, report


def analyse(data: Path) -> dict:
    """Samples by library, by inductor kernel and by loop of its generated C++."""
    perf = _require("perf")
    out = subprocess.run(
        [perf, "script", "-i", str(data), "--show-mmap-events", "-F", "ip,sym,dso"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    maps = parse_mmaps(out)
    cache = inductor_cache_dir()
    by_dso: collections.Counter[str] = collections.Counter()
    ips: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
    # Symbols of inductor's libraries (its fused kernels) and of every other library.
    by_kernel: collections.Counter[str] = collections.Counter()
    by_symbol: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out:
        if "PERF_RECORD" in line:
            continue
        parts = line.split()
        if len(parts) < 2 or not re.fullmatch(r"[0-9a-f]+", parts[0]):
            continue
        total += 1
        dso = parts[-1].strip("()")
        by_dso[Path(dso).name] += 1
        symbol = " ".join(parts[1:-1])
        if is_inductor_library(dso, cache):
            by_kernel[symbol] += 1
            ips[dso].append(int(parts[0], 16))
        else:
            by_symbol[f"{Path(dso).name}: {symbol[:120]}"] += 1
    loops = []
    for so, addrs in ips.items():
        cpp = Path(so[: -len(".so")] + ".cpp")
        if not cpp.exists() or so not in maps:
            continue
        segs = load_segments(
            subprocess.run(["readelf", "-lW", so], capture_output=True, text=True).stdout
        )
        offsets: collections.Counter[int] = collections.Counter()
        for ip in addrs:
            off = file_offset(ip, maps[so])
            if off is not None:
                offsets[offset_to_vaddr(off, segs)] += 1
        a2l = subprocess.run(
            [_require("addr2line"), "-i", "-a", "-e", so, *(hex(a) for a in offsets)],
            capture_output=True,
            text=True,
        ).stdout
        where = outermost_lines(a2l, cpp.name)
        line_counts: collections.Counter[int] = collections.Counter()
        for addr, n in offsets.items():
            src_line = where.get(addr)
            if src_line is not None:
                line_counts[src_line] += n
        for b in attribute(line_counts, loop_blocks(cpp.read_text())):
            loops.append({**b, "source": str(cpp)})
    loops.sort(key=lambda b: -b["samples"])
    return {
        "samples": total,
        "by_library": dict(by_dso.most_common()),
        "by_kernel": dict(by_kernel.most_common()),
        "by_symbol": dict(by_symbol.most_common(40)),
        "loops": loops,
    }


def print_table(result: dict, top: int) -> None:
    total = max(1, result["samples"])
    print(f"{result['samples']} samples")
    print("\nby library:")
    for name, n in list(result["by_library"].items())[:8]:
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("\nby inductor kernel:")
    for name, n in list(result["by_kernel"].items())[:8]:
        print(f"  {100 * n / total:5.1f} %  {short_kernel(name.split('+')[0])}")
    print("\nby symbol, outside inductor's kernels:")
    for name, n in list(result["by_symbol"].items())[:8]:
        print(f"  {100 * n / total:5.1f} %  {name[:110]}")
    print(
        f"\ntop {top} loops of the generated C++ (share of all samples; loop nest, "
        "'n/16' = vectorised 16 lanes at a time; lines):"
    )
    for b in result["loops"][:top]:
        nest = " x ".join(b["nest"]) or "?"
        print(
            f"  {100 * b['samples'] / total:5.1f} %  {short_kernel(b['kernel']):10s} "
            f"{nest:22s} {Path(b['source']).name[:12]}...cpp:{b['first']}-{b['last']}"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_market_arguments(p)
    p.add_argument("--seconds", type=float, default=8.0, help="sampling time")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-json", action="store_true")
    args = p.parse_args(argv)
    config = parse_market_overrides(args.config)
    out = None if args.no_json else result_path("profile_loops", args.out)
    with tempfile.TemporaryDirectory() as tmp:
        data, report = sample(args.env, args.num_envs, args.seconds, config, Path(tmp))
        result = analyse(data)
    result.update(
        env=args.env,
        num_envs=args.num_envs,
        config=config,
        child=report,
        **provenance(),
    )
    if report.get("steps"):
        print(
            f"{report['steps']} steps in {report['seconds']:.1f} s "
            f"({args.num_envs * report['steps'] / report['seconds']:,.0f} env-steps/s, sampled)"
        )
    print_table(result, args.top)
    if out is not None:
        write_result(out, result)


if __name__ == "__main__":
    main()
