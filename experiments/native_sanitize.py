"""The native CPU kernels (``recenv/core/native``) under AddressSanitizer and
UndefinedBehaviorSanitizer, in one command::

    .venv/bin/python -m experiments.native_sanitize                  # seeds 0..39, 40 steps each
    .venv/bin/python -m experiments.native_sanitize --seeds 100:200 --steps 60

It builds a copy of the kernels with ``-O1 -g -fsanitize=address,undefined
-fno-sanitize-recover=all -D_GLIBCXX_ASSERTIONS`` (in ``--build-dir``, default
``/tmp/recenv-asan``, apart from the normal cached build; ~3-10 min the first time, cached
after, rebuilt when a kernel changes), then reruns itself with ``libasan`` and ``libubsan``
preloaded and:

- calls each op with contract-violating inputs that must raise a ``RuntimeError``, not read
  or write out of bounds (the cases of ``tests/test_native_safety.py`` and a few more);
- steps eager markets of random configs (``tests/test_random_configs.random_config``), edge
  configs (one agent/user/candidate/counter, C = K, all churn, C past the rank sort) and the
  four presets with few counters, on 1-300 markets and two threads, with random valid and
  invalid slates (``invalid_slate`` raise and repair), resets and auto-resets; every few
  steps the candidates kernel is compared with its torch form at both ends of the lists.

A sanitizer report ends the run with its stack (exit status != 0); ``OK`` at the end means
nothing was found. So that ``OK`` cannot come from a run that checked nothing, the run first
proves its sanitizers work here (:func:`canary`: a tiny library built with the same flags, a
heap overflow and a signed overflow planted in it, each called in a process started as the
checked one is, must be reported, and a correct call must not be; exit status 2 otherwise),
and the child checks that the kernels it loaded are the instrumented copy from
``--build-dir`` (:func:`instrumented`), not the normal build. gcc with libasan/libubsan is
needed (Linux). Prefetches of addresses out of bounds are not flagged (they are not
accesses). Not run by the test suite (its canary is). The first audit
found, only through direct op calls (nothing reachable through a config): a division by zero
for ``stats_size=0`` (candidates, count_exposures), a signed overflow of a counter at int32's
max (count_exposures) and of the Gini's int64 sums on a corrupt table (item_metrics).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp", "-D_GLIBCXX_ASSERTIONS", *SANITIZE]
EDGE: list[dict[str, Any]] = [
    dict(num_agents=1, num_users=1, num_candidates=1, slate_size=1, num_items=3, horizon=3),
    dict(num_agents=1, num_candidates=1, slate_size=1, num_items=2, item_stats_size=1),
    dict(num_agents=4, num_candidates=2, slate_size=2, num_items=12, item_stats_size=5),
    dict(num_candidates=70, num_items=400, item_stats_size=3),  # std::sort, hashed
    dict(num_candidates=64, num_items=300, slate_size=64),  # the rank sort's limit, K = C
    dict(retrieval_interest=0.0, retrieval_popular=0.0, retrieval_fresh=1.0, fresh_window=1),
    dict(num_candidates=3, slate_size=3),  # C = K: no list entries
    dict(churn_threshold=0.69, satisfaction_init=0.7, return_prob=0.0, num_users=2, horizon=40),
    dict(horizon=1),
    dict(num_users=1000, num_items=100, num_candidates=4, slate_size=2),
]
PRESETS = ["recenv/Market-v0", "recenv/Music-v0", "recenv/Video-v0", "recenv/ECommerce-v0"]


# A heap overflow (ASan), a signed overflow (UBSan) and a correct call, each called by
# canary() in its own process: the first two must be reported, the third must run cleanly.
CANARY_CPP = r"""
#include <climits>
#include <cstdlib>
extern "C" int heap_overflow(int i) {
  int* p = static_cast<int*>(std::malloc(4 * sizeof(int)));
  for (int j = 0; j < 4; ++j) p[j] = j;
  int* volatile q = p;  // past UBSan's object-size check, which would report it first
  volatile int v = q[i];
  std::free(p);
  return v;
}
extern "C" int signed_overflow(int x) { return x + INT_MAX; }
extern "C" int fine(int x) { return x + 1; }
"""
# (function, argument, what the report must hold; None: exit 0 and no report)
CANARY_CALLS = [
    ("heap_overflow", 4, "AddressSanitizer: heap-buffer-overflow"),
    ("signed_overflow", 1, "runtime error: signed integer overflow"),
    ("fine", 1, None),
]
# Names only an instrumented object calls: ASan's checks of loads, UBSan's handlers.
INSTRUMENTED_BY = {"ASan": b"__asan_report_load", "UBSan": b"__ubsan_handle_"}


def runtime_libraries() -> list[str] | None:
    """The paths of gcc's ASan and UBSan runtimes, or None where gcc or one of them is
    missing (gcc echoes the bare name of a library it does not have)."""
    try:
        libs = [
            subprocess.check_output(["gcc", f"-print-file-name={lib}"], text=True).strip()
            for lib in ("libasan.so", "libubsan.so")
        ]
    except (OSError, subprocess.CalledProcessError):
        return None
    return libs if all(Path(lib).is_absolute() for lib in libs) else None


def sanitizer_env(build_dir: str) -> dict[str, str]:
    """The environment of a checked process: the sanitizer runtimes preloaded (first in the
    library list, as ASan requires of a program that is not itself instrumented), halting
    at the first report, the sanitized kernels built and cached in ``build_dir``."""
    libs = runtime_libraries()
    if libs is None:
        raise SystemExit("gcc's libasan and libubsan are needed (Debian: gcc)")
    return {
        **os.environ,
        "TORCH_EXTENSIONS_DIR": build_dir,
        "LD_PRELOAD": ":".join(libs),
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:detect_odr_violation=0",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def canary(
    work_dir: Path, flags: list[str] = FLAGS, env: dict[str, str] | None = None
) -> list[str]:
    """Whether the sanitizers catch planted bugs here: builds :data:`CANARY_CPP` with
    ``flags`` (g++, a shared library in ``work_dir``) and calls each of
    :data:`CANARY_CALLS` in a Python process with ``env`` (default :func:`sanitizer_env`),
    as the checked run is started. Returns what went wrong, one line a call (empty: every
    planted bug was reported and the correct call ran): a missing runtime, flags that do not
    instrument, options that do not halt, would each leave the run unable to fail."""
    work_dir.mkdir(parents=True, exist_ok=True)
    src, lib = work_dir / "canary.cpp", work_dir / "canary.so"
    src.write_text(CANARY_CPP)
    build = [f for f in flags if f != "-fopenmp"]  # (the kernels' threads; no use here)
    try:
        subprocess.run(
            ["g++", "-shared", "-fPIC", *build, str(src), "-o", str(lib)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        return [f"the canary does not build: {getattr(e, 'stderr', '') or e}"]
    env = sanitizer_env(str(work_dir)) if env is None else env
    problems = []
    for fn, arg, report in CANARY_CALLS:
        code = f"import ctypes; ctypes.CDLL({str(lib)!r}).{fn}({arg})"
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if report is None and (r.returncode != 0 or "Sanitizer" in r.stderr):
            problems.append(
                f"{fn}({arg}): a correct call failed ({r.returncode}): {r.stderr[-300:]}"
            )
        elif report is not None and (r.returncode == 0 or report not in r.stderr):
            problems.append(f"{fn}({arg}): not reported as {report!r} (exit {r.returncode})")
    return problems


def instrumented(library: Path) -> list[str]:
    """The sanitizers whose checks ``library`` (a shared object) does not call: empty for
    the sanitized kernels, ``["ASan", "UBSan"]`` for the normal build."""
    data = library.read_bytes()
    return [name for name, symbol in INSTRUMENTED_BY.items() if symbol not in data]


def loaded_kernels() -> Path | None:
    """The path of the ``recenv_native`` library this process has mapped (Linux), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split()  # address, perms, offset, dev, inode[, path]
        if len(fields) >= 6 and fields[-1].endswith(".so") and "recenv_native" in fields[-1]:
            return Path(fields[-1])
    return None


def _load_sanitized() -> None:
    """Make recenv's loader build (or load) the sanitized copy: other flags, so another
    library name, and the sanitizers on the link line."""
    import torch.utils.cpp_extension as ce

    from recenv.core import native

    native._FLAGS = FLAGS
    load = ce.load

    def sanitized_load(*args, **kwargs):
        kwargs["extra_ldflags"] = [*kwargs.get("extra_ldflags", []), *SANITIZE]
        return load(*args, **kwargs)

    ce.load = sanitized_load
    assert native.available(), native._STATE.get("error")
    lib = loaded_kernels()
    build_dir = Path(os.environ["TORCH_EXTENSIONS_DIR"]).resolve()
    assert lib is not None and build_dir in lib.resolve().parents, (
        f"the kernels loaded are {lib}, not a build in {build_dir}"
    )
    missing = instrumented(lib)
    assert not missing, f"{lib} is not instrumented by {missing}"
    print(f"kernels: {lib} (ASan and UBSan)", flush=True)


def _raises(fn, match: str) -> None:
    try:
        fn()
    except RuntimeError as e:
        assert match in str(e), (match, str(e))
        return
    raise AssertionError(f"no RuntimeError ({match!r})")


def _op_cases() -> None:
    import torch

    ops, L, I32 = torch.ops.recenv, torch.int64, torch.int32
    N, B = 3, torch.bool
    z = lambda *s, dtype=L: torch.zeros(*s, dtype=dtype)  # noqa: E731
    stats, ep = torch.zeros(0, 3, dtype=I32), z(N)
    page, vis, ch, clk = z(N, 2), torch.ones(N, 2, dtype=B), z(N), torch.ones(N, dtype=B)
    _raises(lambda: ops.count_exposures(stats, ep, page, vis, ch, clk, 0, 5), "stats_size")
    stats = z(N * 5, 3, dtype=I32)
    _raises(lambda: ops.count_exposures(stats, ep, page + 5, vis, ch, clk, 5, 5), "page item")
    _raises(lambda: ops.count_exposures(stats, ep, page, vis, ch - 1, clk, 5, 5), "chosen item")
    lists = [z(4, dtype=I32), z(N, 1, 2)] * 3
    rows, t, log1p = torch.zeros(5, 4), torch.zeros(N), torch.zeros(9)
    args: list[Any] = [z(1, 1), *lists, rows, stats, ep, t, log1p, 4]
    ops.candidates(*args, 5, 10.0)
    _raises(lambda: ops.candidates(*args[:8], stats[:0], *args[9:], 0, 10.0), "stats_size")
    bad = list(args)
    bad[2] = bad[2] + 4  # past the list's end
    _raises(lambda: ops.candidates(*bad, 5, 10.0), "list index")
    bad[2], bad[1] = args[2], z(4, dtype=I32) + 5  # no such item
    _raises(lambda: ops.candidates(*bad, 5, 10.0), "candidate item")
    bad[1], bad[11] = args[1], torch.zeros(0)  # an empty log1p table
    _raises(lambda: ops.candidates(*bad, 5, 10.0), "log1p")
    full = torch.tensor([[0, 2**31 - 1, 0]] * 3, dtype=I32)
    _raises(lambda: ops.item_metrics(full, z(1), z(1), 3, 2**31), "more exposures")
    ops.item_metrics(full[:1] * 0 + 1, z(1), z(1), 1, 2**62 + 1)  # no 2r overflow
    ops.item_metrics(z(0, 3, dtype=I32), z(0), z(0), 1, 1)  # no markets
    _raises(lambda: ops.item_metrics(full, z(1), torch.tensor([1]), 3, 3), "ended market")
    key = z(N)
    _raises(lambda: ops.block_uniforms(key, key[:1], 1, None, 4), "counter")
    _raises(lambda: ops.block_uniforms(key, key, 1, key[:2], 4), "index")
    _raises(lambda: ops.block_uniforms(key, key, 1, None, -1), "width")
    _raises(lambda: ops.block_uniforms(key, key, 1, None, 2**31), "width")
    ops.block_uniforms(z(0), z(0), 1, None, 5)  # no markets
    ops.block_uniforms(key - 1, key - 2**62, 2**62, key + 2**62, 1000)  # wrapping products
    print("op cases: OK", flush=True)


def _fuzz(seed: int, steps: int) -> int:
    import torch
    from test_random_configs import random_config, random_slates  # type: ignore[import-not-found]

    import recenv
    from recenv.core.config import InvalidConfig

    r, g = random.Random(seed), torch.Generator().manual_seed(seed)
    kind = seed % 4
    if kind < 2:
        preset = "recenv/Market-v0"
        cfg = random_config(seed, r.choice([3, 12, 40])) if kind == 0 else EDGE[seed // 4 % 10]
    else:
        preset = PRESETS[seed // 4 % 4]
        cfg = dict(horizon=r.choice([2, 10, 30]), item_stats_size=r.choice([1, 7, 100, 4096]))
    if kind:
        cfg = {**cfg, "invalid_slate": r.choice(["raise", "repair"])}
    N = r.choice([1, 2, 3, 17, 33, 70, 300 if kind != 2 else 5])
    try:
        env = recenv.make_vec(preset, num_envs=N, seed=seed, **cfg)
    except (InvalidConfig, ValueError):
        return 0
    assert env._native_kernels, "the kernels are not used"
    obs, K, C = env.reset(), env.config.slate_size, env.config.num_candidates
    done = 0
    for t in range(steps):
        u = r.random()
        if u < 0.03:
            obs = env.reset(seed=r.randrange(1000))
        if u < 0.25:  # out of range either side, repeats, int64's ends
            lo, hi = r.choice([(-3, C + 3), (-1, 2), (-(2**63), 2**63 - 1)])
            acts = {a: torch.randint(lo, hi, (N, K), generator=g) for a in env.agents}
        else:
            acts = random_slates(obs, env.agents, K, g)
        try:
            obs, *_ = env.step(acts)
            done += 1
        except ValueError as e:  # invalid_slate="raise"
            assert "invalid slate" in str(e), e
        if t % 7 == 0:
            feats = torch.rand(N, env.config.num_topics + 2, generator=g) * 2 - 0.5
            block = torch.rand(N, env._block_width, generator=g)
            block[0], block[-1] = 0.0, 1.0 - 2**-24  # the lists' heads and ends
            index = env._list_index(feats, block)
            want, got = env._candidates_torch(index), env._candidates_native(index)
            assert all(torch.equal(w, x) for w, x in zip(want, got, strict=True)), (seed, t)
    print(f"seed {seed}: {preset} N={N}: {done}/{steps} steps", flush=True)
    return done


def _child(args: argparse.Namespace) -> None:
    import warnings

    import torch

    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "tests"))
    _load_sanitized()
    torch.set_num_threads(2)  # markets split over two ranges
    _op_cases()
    start, stop = (int(x) for x in args.seeds.split(":"))
    t0, steps = time.time(), sum(_fuzz(s, args.steps) for s in range(start, stop))
    print(f"OK: seeds {start}..{stop - 1}, {steps} steps in {time.time() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0:40", help="START:STOP of the fuzzed markets' seeds")
    p.add_argument("--steps", type=int, default=40, help="steps per market")
    p.add_argument("--build-dir", default="/tmp/recenv-asan", help="TORCH_EXTENSIONS_DIR")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    env = sanitizer_env(args.build_dir)
    problems = canary(Path(args.build_dir) / "canary", env=env)
    if problems:
        print("the sanitizers would not catch a bug here:", *problems, sep="\n  ")
        return 2
    print("canary: a heap overflow and a signed overflow reported, a correct call clean")
    cmd = [sys.executable, "-m", "experiments.native_sanitize", "--child", *(argv or sys.argv[1:])]
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
