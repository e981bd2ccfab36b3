"""A/B timing of two forms of the compiled step in one process, stepped in turn.

``ab_commits`` times two commits in alternating fresh processes; on these VMs its six
rounds cannot resolve less than ~1.1x, since each child lands in its own state of the
shared machine. A change of form inside the compiled graph (which op computes a value, not
what it computes) is often worth a few per cent: this script builds two compiled markets
in one process, ``base`` with a named earlier form put back while its graph is traced and
``head`` with the code as it is, then steps them in turn (ABBA order, ``--steps`` timed
steps per turn, ``--rounds`` turns each) and prints the per-round ratio head/base, its
median and how many rounds head was ahead::

    .venv/bin/python -m experiments.ab_forms --base aten-argmax            # 4,096 markets
    .venv/bin/python -m experiments.ab_forms --base same --rounds 12       # A/A: the noise

``--base same`` builds both markets from the same code: the ratio it reads (0.99-1.01 in
this project's sittings) is the resolution of the method. The two markets share the
process, its caches and its allocator, and both are built before either is timed.

The forms (``FORMS``) are the earlier forms of changes measured this way, so each gain can
be measured again in any sitting. The JSON of the comparison goes to
``experiments/results/ab_forms-<host>-<UTC time>.json`` (never overwritten) unless
``--no-json``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from experiments.bench_env import _policy, provenance, result_path, warmed_env, write_result
from recenv.core import choice


@contextlib.contextmanager
def _patched(module, name: str, value) -> Iterator[None]:
    """``module.name`` is ``value`` inside the block."""
    current = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, current)


# Each earlier form: what the base's graph is traced with.
FORMS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "same": contextlib.nullcontext,
    # The choice's draw by ATen's argmax over each market's page (before
    # indexing.first_argmax: one scalar loop per market in the compiled step).
    "aten-argmax": lambda: _patched(choice, "first_argmax", lambda x: x.argmax(dim=1)),
}


def paired_rounds(base, head, rounds: int, steps: int) -> dict[str, list[float]]:
    """Env-steps/s of ``base`` and ``head`` (each ``(env, obs)``), ``rounds`` turns of
    ``steps`` timed steps each, in ABBA order (the policy's actions computed outside the
    timer). ``obs`` carries on between turns."""
    sides = {"base": list(base), "head": list(head)}
    rates: dict[str, list[float]] = {"base": [], "head": []}
    for r in range(rounds):
        for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
            env, obs = sides[name]
            total = 0.0
            for _ in range(steps):
                acts = _policy(obs, env.agents, env.config.slate_size)
                t0 = time.perf_counter()
                obs, *_ = env.step(acts)
                total += time.perf_counter() - t0
            sides[name][1] = obs
            rates[name].append(env.num_envs * steps / total)
    return rates


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", required=True, choices=sorted(FORMS), help="the base's form")
    p.add_argument("--env", default="recenv/Market-v0", help="environment id")
    p.add_argument("--num-envs", type=int, default=4096, help="markets in each batch")
    p.add_argument("--rounds", type=int, default=12, help="timed turns of each side")
    p.add_argument("--steps", type=int, default=20, help="timed steps per turn")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-json", action="store_true", help="print only")
    args = p.parse_args(argv)
    for name in ("num_envs", "rounds", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = None if args.no_json else result_path("ab_forms", None)
    torch.set_num_threads(args.threads)

    # Each side is traced (and compiled) inside its own form; the warm-up steps do that.
    with FORMS[args.base]():
        base = warmed_env(args.env, args.num_envs, compile=True)
    head = warmed_env(args.env, args.num_envs, compile=True)
    rates = paired_rounds(base, head, args.rounds, args.steps)
    ratios = [h / b for h, b in zip(rates["head"], rates["base"], strict=True)]
    ahead = sum(r > 1 for r in ratios)
    ratio = statistics.median(ratios)
    for name in ("base", "head"):
        print(f"{name:<5} " + " ".join(f"{x / 1e3:.0f}k" for x in rates[name]))
    print(
        f"head/base (base form {args.base!r}, {args.num_envs:,} markets, {args.threads} "
        f"thread(s)): median {ratio:.3f}x, head ahead in {ahead} of {args.rounds} rounds"
    )
    result = {
        **provenance(),
        "env": args.env,
        "num_envs": args.num_envs,
        "base_form": args.base,
        "rounds": args.rounds,
        "steps": args.steps,
        "threads": args.threads,
        "env_steps_per_s": rates,
        "ratios": ratios,
        "median_ratio": ratio,
        "head_ahead": ahead,
    }
    if out is not None:
        write_result(out, result)
    return result


if __name__ == "__main__":
    main()
