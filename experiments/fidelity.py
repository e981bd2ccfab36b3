"""Fidelity report: do the simulated users of ``recenv/FromLog-v0`` behave like the real ones?

On a time-ordered train/test split of an interaction log, a FromLog market is built from the
**train** part only, its users are served by a reference policy for as many requests as the
train part has interactions, and their choices are compared with real behaviour:

- **item popularity**: Gini coefficient and top-10 % share of interactions per item, the
  Jensen–Shannon distance between the simulated and the real per-item distributions, and the
  Spearman correlation of per-item counts. Interactions are distinct (user, item) pairs on
  both sides, as MovieLens records each rating once (simulated users may choose an item
  again; the share of such repeat clicks is reported);
- **user activity**: the same measures over per-user counts;
- **next-item hit rate@10**: for every test user, is the user's first held-out item among
  the 10 items the simulated user chose most (items the user already had in train left
  out)? With two references on the same split: an ALS recommender (the market's own fit) and
  a popularity recommender. ``HR@10 (any)`` counts a hit when any held-out item is there.

Two splits: ``user`` (each user's latest 20 % of interactions held out) and ``global`` (one
cut-off time: the latest 20 % of all interactions). Two serving policies: ``random`` (uniform
valid slates over the environment's candidates) and ``oracle`` (the myopic oracle).

Usage::

    python -m experiments.fidelity --log ../shared/data/ml-latest-small/ratings.csv

writes ``report.md`` (the table), ``fidelity.json`` (every number and the settings) and PNG
plots to ``--out`` (default ``experiments/results/fidelity/<log folder>``), and prints the
table. It refuses to overwrite an existing report: pick another ``--out`` or remove it. The
report is reserved before the work (a second invocation with the same ``--out`` is refused at
once), and a run that fails leaves none of its outputs behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import recenv
from experiments import compare_agents
from experiments.provenance import code_line, versions
from recenv.core.config import InvalidConfig
from recenv.data import FORMATS, InteractionLog, load_log
from recenv.data.compare import distinct_pairs, gini, js_distance, spearman, top_share
from recenv.scenarios.from_log import ENV_ID, fitted

OUTPUTS = ("report.md", "fidelity.json", "popularity.png", "activity.png", "hit_rate.png")
SPLITS = ("user", "global")
POLICIES = ("random", "oracle")
K = 10


@dataclass
class Args:
    """Command-line arguments: each field's ``help`` is its ``--help`` text."""

    log: str = field(default="", metadata={"help": "interaction log file (required)"})
    log_format: str = field(default="auto", metadata={"help": "format of the log (by file name)"})
    out: str = field(
        default="", metadata={"help": "output folder (default: results/fidelity/<log folder>)"}
    )
    test_fraction: float = field(default=0.2, metadata={"help": "held-out share of each split"})
    splits: tuple[str, ...] = field(
        default=SPLITS, metadata={"help": "time splits", "choices": SPLITS}
    )
    policies: tuple[str, ...] = field(
        default=POLICIES, metadata={"help": "serving policies", "choices": POLICIES}
    )
    num_envs: int = field(default=64, metadata={"help": "markets simulated in parallel"})
    requests: int = field(
        default=0,
        metadata={"help": "simulated requests per run (0: as many as train interactions)"},
    )
    seed: int = field(default=0, metadata={"help": "environment seed"})
    threads: int = field(
        default=1, metadata={"help": "torch threads (small tensors: more threads only contend)"}
    )


# ------------------------------------------------------------------------------------------
# Simulation
# ------------------------------------------------------------------------------------------
@dataclass
class Simulated:
    item_clicks: np.ndarray  # [I] clicks per item (train item ids)
    user_clicks: np.ndarray  # [U] clicks per user
    item_users: np.ndarray  # [I] distinct users who chose the item
    user_items: np.ndarray  # [U] distinct items the user chose
    user_requests: np.ndarray  # [U]
    choices: dict[int, np.ndarray]  # user -> item ids by how often chosen (desc), ties: first
    requests: int  # requests served: user_requests.sum()
    seconds: float


def simulate(market: recenv.BatchedMarket, policy: str, requests: int, seed: int) -> Simulated:
    """Serve at least ``requests`` requests (whole steps of all markets, until that many were
    served: a market that starts a new episode serves none in that step) with ``policy`` and
    count what the users chose."""
    cfg = market.config
    U, I = cfg.num_users, cfg.num_items
    g = torch.Generator().manual_seed(seed)
    obs = market.reset()
    item_clicks = torch.zeros(I, dtype=torch.int64)
    user_clicks = torch.zeros(U, dtype=torch.int64)
    user_requests = torch.zeros(U, dtype=torch.int64)
    pairs: list[torch.Tensor] = []
    t0 = time.perf_counter()
    served = 0
    while served < max(1, requests):
        if policy == "oracle":
            slates = market.oracle_slates()
        else:
            mask = torch.stack([obs[a]["action_mask"] for a in market.agents], dim=1)
            score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
            slates = score.topk(cfg.slate_size, dim=2).indices
        user = market.user.clone()
        obs, _, _, _, info = market.step({a: slates[:, i] for i, a in enumerate(market.agents)})
        live = ~info["reset"]  # a market starting a new episode served no request this step
        user_requests.index_add_(0, user[live], torch.ones_like(user[live]))
        served += int(live.sum())
        item = info["chosen_item"]
        ok = (item >= 0) & live
        item_clicks.index_add_(0, item[ok], torch.ones_like(item[ok]))
        user_clicks.index_add_(0, user[ok], torch.ones_like(user[ok]))
        pairs.append(user[ok] * I + item[ok])
    seconds = time.perf_counter() - t0
    all_pairs = torch.cat(pairs)
    keys = torch.unique(all_pairs)
    choices = choices_by_count(all_pairs, I)
    item_users, user_items = distinct_pairs(keys // I, keys % I, U, I)
    return Simulated(
        item_clicks.numpy(),
        user_clicks.numpy(),
        item_users,
        user_items,
        user_requests.numpy(),
        choices,
        served,
        seconds,
    )


def choices_by_count(pairs: torch.Tensor, num_items: int) -> dict[int, np.ndarray]:
    """Each user's chosen items, most chosen first and, among equals, the earliest chosen
    first: ``{user: item ids}`` from ``pairs`` ``[n]`` int64, the choices in time order as
    ``user * num_items + item``."""
    keys, inverse, counts = torch.unique(pairs, return_inverse=True, return_counts=True)
    first = torch.full((len(keys),), len(pairs), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(pairs)), reduce="amin")
    u, i = (keys // num_items).numpy(), (keys % num_items).numpy()
    # Most chosen first; among equals, the earliest chosen.
    order = np.lexsort((first.numpy(), -counts.numpy(), u))
    choices: dict[int, np.ndarray] = {}
    bounds = np.flatnonzero(np.diff(u[order])) + 1
    for chunk in np.split(order, bounds):
        if len(chunk):
            choices[int(u[chunk[0]])] = i[chunk]
    return choices


def hit_rates(held: dict[int, list[int]], recs: dict[int, list[int]]) -> dict[str, float]:
    """HR@10 over the test users (``held``'s keys: each user's held-out items in time
    order, -1 for an item unseen in train): ``hr@10_next``, the share whose first held-out
    item is among their ``recs``; ``hr@10_any``, the share with any held-out item there."""
    test_users = sorted(held)
    nxt = np.mean([held[u][0] in recs.get(u, ()) for u in test_users])
    anyh = np.mean([bool(set(held[u]) & set(recs.get(u, ()))) for u in test_users])
    return {"hr@10_next": float(nxt), "hr@10_any": float(anyh)}


# ------------------------------------------------------------------------------------------
# One split
# ------------------------------------------------------------------------------------------
def evaluate_split(log: InteractionLog, split: str, args: Args) -> dict[str, Any]:
    train, test = log.time_split(args.test_fraction, by=split)
    train_c = train.compact()
    uidx = {u: k for k, u in enumerate(train_c.user_ids.tolist())}
    iidx = {i: k for k, i in enumerate(train_c.item_ids.tolist())}

    # Each test user's held-out items in train ids (-1: item unseen in train), in time order.
    assert test.timestamp is not None  # time_split refused a log without timestamps
    order = np.argsort(test.timestamp, kind="stable")
    held: dict[int, list[int]] = {}
    for r in order:
        u = uidx.get(log.user_ids[test.user[r]].item())
        if u is not None:
            held.setdefault(u, []).append(iidx.get(log.item_ids[test.item[r]].item(), -1))
    test_users = np.array(sorted(held), dtype=np.int64)
    seen: list[set[int]] = [set() for _ in range(train_c.num_users)]
    for u, i in zip(train_c.user.tolist(), train_c.item.tolist(), strict=True):
        seen[u].add(i)

    t0 = time.perf_counter()
    cfg, _, fit = fitted(train_c)
    fit_seconds = time.perf_counter() - t0
    real_items, real_users = distinct_pairs(
        train_c.user, train_c.item, train_c.num_users, train_c.num_items
    )
    test_items = np.zeros(train_c.num_items)
    test_users_count = np.zeros(train_c.num_users)
    for u, its in held.items():
        test_users_count[u] = len(its)
        for i in its:
            if i >= 0:
                test_items[i] += 1

    def topk_unseen(ranked: np.ndarray, u: int) -> list[int]:
        out = []
        for i in ranked:
            if int(i) not in seen[u]:
                out.append(int(i))
                if len(out) == K:
                    break
        return out

    # References: ALS (the market's own fit) and popularity, both leaving out seen items.
    scores = fit.mf.scores()
    for u in range(train_c.num_users):
        scores[u, list(seen[u])] = -math.inf
    top = scores[torch.as_tensor(test_users)].topk(K, dim=1)
    # A user who has seen all but fewer than K items gets fewer than K: never a seen one.
    kept = torch.isfinite(top.values).numpy()
    als_top = top.indices.numpy()
    als = {int(u): als_top[n][kept[n]].tolist() for n, u in enumerate(test_users)}
    by_pop = np.argsort(-real_items, kind="stable")
    pop = {int(u): topk_unseen(by_pop, int(u)) for u in test_users}

    rows: dict[str, dict[str, Any]] = {
        "real (train)": _distribution_row(real_items, real_users, real_items, real_users),
        "real (test)": _distribution_row(test_items, test_users_count, real_items, real_users),
        "ALS recommender": hit_rates(held, als),
        "popularity recommender": hit_rates(held, pop),
    }
    sims = {}
    requests = args.requests or len(train_c)
    for policy in args.policies:
        market = recenv.make_vec(ENV_ID, num_envs=args.num_envs, seed=args.seed, log=train_c)
        sim = simulate(market, policy, requests, args.seed)
        recs = {u: topk_unseen(items, u) for u, items in sim.choices.items()}
        row = _distribution_row(sim.item_users, sim.user_items, real_items, real_users)
        row["spearman_items_test"] = spearman(sim.item_users, test_items)
        row["repeat_share"] = float(1.0 - sim.item_users.sum() / max(1, sim.item_clicks.sum()))
        row.update(hit_rates(held, recs))
        row["ctr"] = float(sim.item_clicks.sum() / max(1, sim.requests))
        row["requests"] = sim.requests
        row["seconds"] = round(sim.seconds, 1)
        rows[f"simulated ({policy})"] = row
        sims[policy] = sim
    return {
        "split": split,
        "train": train_c.summary() | {"density": train_c.density},
        "test_interactions": len(test),
        "test_users": len(test_users),
        "test_next_item_unseen_in_train": int(sum(held[u][0] < 0 for u in test_users)),
        "fit_seconds": round(fit_seconds, 2),
        "config": {k: v for k, v in cfg.to_dict().items() if k in _SHOWN_CONFIG},
        "rows": rows,
        "_plot": {"real_items": real_items, "real_users": real_users, "sims": sims},
    }


_SHOWN_CONFIG = ("num_users", "num_items", "num_topics", "embed_dim", "taste_weight", "horizon")


def _distribution_row(items, users, real_items, real_users) -> dict[str, float]:
    row = {
        "gini_items": gini(items),
        "top10_share_items": top_share(items),
        "js_items": js_distance(items, real_items),
        "spearman_items": spearman(items, real_items),
    }
    if users is not None:
        row |= {
            "gini_users": gini(users),
            "js_users": js_distance(users, real_users),
            "spearman_users": spearman(users, real_users),
        }
    return row


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
COLUMNS = (
    ("gini_items", "item Gini"),
    ("top10_share_items", "top-10 % items' share"),
    ("js_items", "JS dist. items vs train"),
    ("spearman_items", "Spearman items vs train"),
    ("spearman_items_test", "Spearman items vs test"),
    ("gini_users", "user Gini"),
    ("js_users", "JS dist. users vs train"),
    ("spearman_users", "Spearman users vs train"),
    ("hr@10_next", "next-item HR@10"),
    ("hr@10_any", "HR@10 (any held-out)"),
)


def markdown(results: list[dict[str, Any]], log: InteractionLog, args: Args) -> str:
    # --requests replaces the default budget (as many requests as train has interactions).
    budget = (
        f"{args.requests:,} requests"
        if args.requests
        else "as many requests as train has interactions"
    )
    lines = [
        f"# Fidelity of {ENV_ID} on `{os.path.basename(os.path.dirname(log.source))}/"
        f"{os.path.basename(log.source)}`",
        "",
        f"{len(log):,} interactions, {log.num_users:,} users, {log.num_items:,} items "
        f"(density {log.density:.4f}). Test fraction {args.test_fraction}; simulated requests "
        f"= {f'{args.requests:,}' if args.requests else 'train interactions'}; "
        f"{args.num_envs} markets; seed {args.seed}. Generated by "
        "`python -m experiments.fidelity` (see its docstring for the measures).",
        "",
    ]
    if log.format.startswith("movielens"):
        lines += [
            'Data: MovieLens (GroupLens Research; F. M. Harper and J. A. Konstan, "The '
            'MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015), used under its '
            "non-commercial licence and not copied into this repository.",
            "",
        ]
    lines += [
        "Rows: `real (train)` is the log the market was fitted to; `real (test)` compares the "
        "held-out interactions with it (the natural drift between two real samples: a yardstick "
        "for the simulated rows); `simulated (policy)` are the FromLog users' choices when "
        f"served by that policy for {budget}. Interactions "
        "are distinct (user, item) pairs. Hit rates: the share of test users whose first "
        "held-out item (`next`) or any held-out item is among 10 items — the ALS and "
        "popularity recommenders' top 10, or the 10 items the simulated user chose most — "
        "leaving out items the user had in train.",
        "",
    ]
    for res in results:
        lines += [
            f"## Split `{res['split']}`: train {res['train']['interactions']:,} interactions "
            f"({res['train']['users']} users, {res['train']['items']:,} items), test "
            f"{res['test_interactions']:,} ({res['test_users']} test users, of whom "
            f"{res['test_next_item_unseen_in_train']} have a next item unseen in train)",
            "",
            "| | " + " | ".join(name for _, name in COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for label, row in res["rows"].items():
            cells = [_fmt(row.get(key)) for key, _ in COLUMNS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        sims = [
            f"{k}: CTR {v['ctr']:.2f}, repeat clicks {v['repeat_share']:.0%}, {v['seconds']} s"
            for k, v in res["rows"].items()
            if "ctr" in v
        ]
        lines += ["", f"Fit {res['fit_seconds']} s; simulations — " + "; ".join(sims) + ".", ""]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.3f}"


def plots(results: list[dict[str, Any]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, 2 * n, figsize=(4.2 * 2 * n, 4), squeeze=False)
    for k, res in enumerate(results):
        real, sims = res["_plot"]["real_items"], res["_plot"]["sims"]
        ax = axes[0, 2 * k]
        ax.loglog(
            np.arange(1, len(real) + 1), np.sort(real)[::-1] / real.sum(), label="real (train)"
        )
        for policy, sim in sims.items():
            c = np.sort(sim.item_users)[::-1] / max(1, sim.item_users.sum())
            ax.loglog(np.arange(1, len(c) + 1), c, label=f"simulated ({policy})")
        ax.set(
            title=f"popularity by rank ({res['split']} split)", xlabel="item rank", ylabel="share"
        )
        ax.legend(fontsize=8)
        ax = axes[0, 2 * k + 1]
        for label, x in [("real (train)", real)] + [
            (f"simulated ({p})", s.item_users) for p, s in sims.items()
        ]:
            x = np.sort(x)
            ax.plot(
                np.linspace(0, 1, len(x) + 1),
                np.concatenate([[0], np.cumsum(x) / x.sum()]),
                label=label,
            )
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(
            title=f"Lorenz curve of items ({res['split']} split)",
            xlabel="share of items",
            ylabel="share of interactions",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "popularity.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for k, res in enumerate(results):
        ax = axes[0, k]
        real = res["_plot"]["real_users"]
        for policy, sim in res["_plot"]["sims"].items():
            ax.loglog(
                real,
                np.maximum(sim.user_items, 0.5),
                ".",
                ms=3,
                alpha=0.6,
                label=f"simulated ({policy})",
            )
        ax.set(
            title=f"per-user activity ({res['split']} split)",
            xlabel="real interactions (train)",
            ylabel="simulated distinct items chosen",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "activity.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for k, res in enumerate(results):
        ax = axes[0, k]
        labels = [lab for lab, row in res["rows"].items() if "hr@10_next" in row]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [res["rows"][lab]["hr@10_next"] for lab in labels], 0.4, label="next item")
        ax.bar(
            x + 0.2,
            [res["rows"][lab]["hr@10_any"] for lab in labels],
            0.4,
            label="any held-out item",
        )
        ax.set_xticks(x, [lab.replace(" ", "\n", 1) for lab in labels], fontsize=8)
        ax.set(
            title=f"hit rate@10 ({res['split']} split, {res['test_users']} test users)",
            ylabel="share of test users",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "hit_rate.png"), dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(
        prog="python -m experiments.fidelity",
        description=__doc__.split("\n\n")[0],
    )
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        shown = f" (default: {f.default!r})" if f.default not in ("", 0) or f.type == "int" else ""
        kw: dict[str, Any] = {"help": f.metadata["help"] + shown}
        if isinstance(f.default, tuple):
            kw |= {"nargs": "+", "choices": f.metadata["choices"], "default": list(f.default)}
        else:
            kw |= {"type": type(f.default), "default": f.default}
        if f.name == "log":
            kw |= {"required": True, "help": f.metadata["help"]}
        if f.name == "log_format":
            kw |= {"choices": FORMATS}
        p.add_argument(flag, **kw)
    a = vars(p.parse_args(argv))
    if not 0.0 < a["test_fraction"] < 1.0:
        p.error(f"--test-fraction {a['test_fraction']} must be in (0, 1)")
    for name, low in (("num_envs", 1), ("requests", 0), ("threads", 1)):
        if a[name] < low:
            p.error(f"--{name.replace('_', '-')} {a[name]} must be >= {low}")
    # argparse's values are untyped (nargs="+" gives lists, Args holds tuples)
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in a.items()}
    return Args(**fields)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "results",
        "fidelity",
        os.path.basename(os.path.dirname(os.path.abspath(args.log))) or "log",
    )
    existing = [f for f in OUTPUTS if os.path.exists(os.path.join(out, f))]
    if existing:
        print(
            f"error: {out} already holds {existing}; refusing to overwrite. Remove them or pass "
            f"another --out.{compare_agents._held_by(Path(out, 'fidelity.json'))}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    try:
        log = load_log(args.log, args.log_format)
    except (OSError, ValueError) as e:  # a missing file, a malformed one (LogFormatError)
        print(f"error: --log: {e}", file=sys.stderr)
        return 2
    if log.timestamp is None:
        print(f"error: {args.log} has no timestamps; a time split needs them", file=sys.stderr)
        return 2
    # Reserved before the work (O_EXCL): of two invocations with one --out, the second is
    # refused now, and neither overwrites the other's report at the end; a run that fails
    # or is interrupted leaves nothing that looks like results.
    os.makedirs(out, exist_ok=True)
    reserved = [Path(out, "fidelity.json"), Path(out, "report.md")]
    command = "python -m experiments.fidelity " + shlex.join(sys.argv[1:] if argv is None else argv)
    compare_agents.reserve(reserved, command)
    try:
        _run(log, args, out)
    except BaseException as e:
        for name in OUTPUTS:
            Path(out, name).unlink(missing_ok=True)
        if isinstance(e, InvalidConfig):  # the market a split of this log makes (too small)
            print(f"error: --log {args.log}: a split's market is not valid: {e}", file=sys.stderr)
            return 2
        raise
    return 0


def _run(log: InteractionLog, args: Args, out: str) -> None:
    """The splits ``args`` asks for, then the report, ``fidelity.json`` and the plots into
    ``out`` (whose ``report.md`` and ``fidelity.json`` this process has reserved)."""
    t0 = time.perf_counter()
    results = [evaluate_split(log, split, args) for split in args.splits]
    table = markdown(results, log, args)
    made_by = versions()
    compare_agents.write_result(Path(out, "report.md"), f"{table}\n\n{code_line(made_by)}\n")
    payload = {
        "env_id": ENV_ID,
        "log": log.summary(),
        "args": args.__dict__,
        "seconds": round(time.perf_counter() - t0, 1),
        "versions": made_by,
        "splits": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
    }
    compare_agents.write_result(
        Path(out, "fidelity.json"),
        json.dumps(
            compare_agents.json_ready(payload), indent=2, default=_json_default, allow_nan=False
        ),
    )
    plots(results, out)
    print(table)
    print(f"\nwrote {', '.join(OUTPUTS)} to {out}")


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
