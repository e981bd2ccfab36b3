"""A/B timing of two forms of the compiled step, stepped in turn in one process.

``ab_commits`` times two commits in alternating fresh processes; on these VMs its six
rounds cannot resolve less than ~1.1x, since each child lands in its own state of the
shared machine. A change of form inside the compiled graph (which op computes a value, not
what it computes) is often worth a few per cent: this script builds two compiled batches
in one process, ``base`` with a named earlier form put back while its graph is traced and
``head`` with the code as it is, then steps them in turn (ABBA order, ``--steps`` timed
steps per turn, ``--rounds`` turns each) and prints the per-round ratio head/base, its
median and how many rounds head was ahead::

    .venv/bin/python -m experiments.ab_forms --base aten-argmax            # 4,096 markets
    .venv/bin/python -m experiments.ab_forms --base same --rounds 12       # A/A: the noise
    .venv/bin/python -m experiments.ab_forms --base aten-argmax,gather-pick  # both at once
    python -m experiments.ab_forms --base plain-catalog --num-envs 1024 --config num_items=1000000

Two batches built in one process need not run alike: in earlier sessions the one built
first ran 10-30 % slower (``PERFORMANCE.md``, "How to measure a change"). So by default
(``--order both``) the comparison runs twice, each in a fresh process, once with the base
built first and once with the head built first, and the verdict pools both: a bias of the
order cancels. ``--base same`` builds both from the same code: what it reads is the
resolution of the method (and, order by order, the bias).

The forms (``FORMS``) are the earlier forms of changes measured this way, so each gain can
be measured again in any sitting. The JSON of the comparison goes to
``experiments/results/ab_forms-<host>-<UTC time>.json`` (never overwritten) unless
``--no-json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from collections.abc import Callable

import torch

from experiments.bench_env import (
    _in_fresh_process,
    paired_ratios,
    patched,
    provenance,
    result_path,
    timed_steps,
    warmed_env,
    write_result,
)
from experiments.config import add_market_arguments, parse_market_overrides
from recenv.core import catalog, choice, indexing, market

_ARRIVE = market.BatchedMarket._arrive


def _arrive_own_status_pass(self, block, served=None, arrival=None):
    """``BatchedMarket._arrive`` without the request's ``arrival``: drawn again."""
    return _ARRIVE(self, block, served)


def _einsum_dot(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``choice.dot``'s earlier form: ``einsum``, a batched matmul."""
    return torch.einsum("nd,npd->np", x, rows)


_ADVANCE = market.BatchedMarket._advance


def _advance_masking_live(self, slate, valid, repaired):
    """``BatchedMarket._advance`` as it was: the markets about to reset masked out of the
    slots and repaired counts inside the graph (before ``_check_actions`` masked them)."""
    live = ~self.needs_reset
    return _ADVANCE(self, slate, valid & live[:, None, None], repaired * live[:, None])


class _PlainPages:
    """``recenv.core.hugepages`` as the catalog used it before its large tables went on huge
    pages: plain ``torch.full`` tables, nothing re-homed (pickling as before)."""

    @staticmethod
    def full(shape, value, dtype, device):
        return torch.full(shape, value, dtype=dtype, device=device)

    rehome_tables = staticmethod(lambda owner, names: None)
    compact_tables = staticmethod(lambda state, names: state)


# Each earlier form: what the base's graph is traced with (and its market built with).
FORMS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "same": contextlib.nullcontext,
    # The choice's draw by ATen's argmax over each market's page (before
    # indexing.first_argmax: one scalar loop per market in the compiled step).
    "aten-argmax": lambda: patched(choice, "first_argmax", lambda x: x.argmax(dim=1)),
    # The chosen page entry's values (item, row, utility, agent, slot) gathered at the
    # chosen column (before indexing.pick_by_select: indirect loads, a scalar loop).
    "gather-pick": lambda: patched(market, "pick_by_select", indexing.pick),
    # The arrival reads the users' status itself, a second pass over it after the
    # episode-end test's (before the request handed its own to the arrival).
    "status-twice": lambda: patched(market.BatchedMarket, "_arrive", _arrive_own_status_pass),
    # The markets about to reset masked out of the checked slots inside the graph (before
    # the check's outputs came masked).
    "live-in-graph": lambda: patched(market.BatchedMarket, "_advance", _advance_masking_live),
    # The arriving users' constants kept whole, visibility and noise too (before the market
    # kept only what the rest of the request reads).
    "all-constants": lambda: patched(market, "kept_constants", lambda const: const),
    # The next user drawn in torch (status, weights, ATen's cumsum, the search) where the
    # CPU has the native kernels (before recenv::next_user).
    "torch-arrival": lambda: patched(
        market.BatchedMarket, "_next_user", market.BatchedMarket._next_user_torch
    ),
    # A large catalog's item rows and retrieval lists on plain 4 KiB pages (before they went
    # on huge pages; the default catalog's are below hugepages.MIN_BYTES either way): measure
    # it with --config num_items=1000000.
    "plain-catalog": lambda: patched(catalog, "hugepages", _PlainPages),
    # The next user's row not prefetched by recenv::next_user (before it took the table).
    "no-row-prefetch": lambda: patched(market, "_PREFETCH_ARRIVING_ROWS", False),
    # The utilities' dot products as einsum (before choice.dot: products and sums, which no
    # matmul precision setting changes; compiled on the CPU, inductor decomposed the bmm).
    "einsum-dots": lambda: patched(choice, "dot", _einsum_dot),
}


def _forms(text: str) -> list[str]:
    """``--base``'s value: known form names, comma-separated."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown form(s) {unknown or [text]}; the forms are {', '.join(sorted(FORMS))}"
        )
    return names


def paired_rounds(base, head, rounds: int, steps: int) -> dict[str, list[float]]:
    """Env-steps/s of ``base`` and ``head`` (each ``(env, obs)``), ``rounds`` turns of
    ``steps`` timed steps each (:func:`~experiments.bench_env.timed_steps`), in ABBA order.
    ``obs`` carries on between turns."""
    sides = {"base": list(base), "head": list(head)}
    rates: dict[str, list[float]] = {"base": [], "head": []}
    for r in range(rounds):
        for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
            env, obs = sides[name]
            total, sides[name][1] = timed_steps(env, obs, steps)
            rates[name].append(env.num_envs * steps / total)
    return rates


ORDERS = ("base-first", "head-first")


def run_order(
    forms: list[str],
    env_id: str,
    num_envs: int,
    rounds: int,
    steps: int,
    order: str,
    config: dict | None = None,
) -> dict[str, list[float]]:
    """The paired rates (:func:`paired_rounds`) of two batches with market options
    ``config`` built in this process in ``order``; the base is built and traced inside
    ``forms``."""
    config = config or {}

    def build_base():
        with contextlib.ExitStack() as stack:
            for name in forms:
                stack.enter_context(FORMS[name]())
            return warmed_env(env_id, num_envs, compile=True, **config)

    def build_head():
        return warmed_env(env_id, num_envs, compile=True, **config)

    if order == "base-first":
        base = build_base()
        head = build_head()
    else:
        head = build_head()
        base = build_base()
    return paired_rounds(base, head, rounds, steps)


def _run_child(*arguments) -> dict[str, list[float]]:
    """:func:`run_order` in a fresh Python process (one build order per process)."""
    rates, error = _in_fresh_process(
        "run_order",
        "*json.loads(sys.argv[1])",
        json.dumps(arguments),
        module="experiments.ab_forms",
    )
    if rates is None:
        raise SystemExit(f"ab_forms: the {arguments[-1]} child failed: {error}")
    return rates


def _summary(rates: dict[str, list[float]]) -> dict:
    ratios, ahead = paired_ratios(rates)
    return {
        "env_steps_per_s": rates,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "head_ahead": ahead,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--base",
        required=True,
        type=_forms,
        help=f"the base's form(s), comma-separated, together: {', '.join(sorted(FORMS))}",
    )
    add_market_arguments(p)
    p.add_argument("--rounds", type=int, default=12, help="timed turns of each side")
    p.add_argument("--steps", type=int, default=20, help="timed steps per turn")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--order",
        choices=[*ORDERS, "both"],
        default="both",
        help="which batch is built first; 'both': one fresh process for each order",
    )
    p.add_argument("--no-json", action="store_true", help="print only")
    args = p.parse_args(argv)
    config = parse_market_overrides(args.config)
    for name in ("num_envs", "rounds", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = None if args.no_json else result_path("ab_forms", None)
    torch.set_num_threads(args.threads)

    orders = ORDERS if args.order == "both" else (args.order,)
    by_order = {}
    for order in orders:
        arguments = (args.base, args.env, args.num_envs, args.rounds, args.steps, order, config)
        rates = _run_child(*arguments) if args.order == "both" else run_order(*arguments)
        by_order[order] = _summary(rates)
        print(f"built {order}:")
        for name in ("base", "head"):
            print(f"  {name:<5} " + " ".join(f"{x / 1e3:.0f}k" for x in rates[name]))
        row = by_order[order]
        print(
            f"  head/base {row['median_ratio']:.3f}x, head ahead in {row['head_ahead']} of "
            f"{args.rounds} rounds"
        )
    ratios = [r for row in by_order.values() for r in row["ratios"]]
    ratio = statistics.median(ratios)
    ahead = sum(row["head_ahead"] for row in by_order.values())
    print(
        f"head/base (base form {'+'.join(args.base)}, {args.num_envs:,} markets"
        f"{''.join(f', {k}={v}' for k, v in config.items())}, {args.threads} "
        f"thread(s), built {args.order}): median {ratio:.3f}x, head ahead in {ahead} of "
        f"{len(ratios)} rounds"
    )
    result = {
        **provenance(),
        "env": args.env,
        "num_envs": args.num_envs,
        "config": config,
        "base_form": "+".join(args.base),
        "order": args.order,
        "rounds": args.rounds,
        "steps": args.steps,
        "threads": args.threads,
        "orders": {order: row["env_steps_per_s"] for order, row in by_order.items()},
        "by_order": by_order,
        "ratios": ratios,
        "median_ratio": ratio,
        "head_ahead": ahead,
    }
    if out is not None:
        write_result(out, result)
    return result


if __name__ == "__main__":
    main()
