"""What a SlateQ learner thinks "nobody clicks my items" is worth, on a shared page.

SlateQ's greedy slate adds a candidate when it raises ``Q(s, A)``, a mix of the items'
values ``Q̄(s, i)`` and the no-click value ``Q̄(s, ⊥)`` (``agents/iql.py``). On a page
several agents share, a user clicks at most one item of all of them, so ``Q̄(s, ⊥)`` is
where an agent keeps the value of its teammates' clicks: the higher it is, the more an item
must be worth before the agent shows it in place of leaving the click to them.

Independent learners in a cooperative market are paid the team's total, so an agent's
``Q̄(⊥)`` regresses on what its teammates earn when its items are passed over. Under value
decomposition with SlateQ utilities (``vdn`` / ``qmix`` with ``utility="slateq"``) only the
sum over agents is fitted: the teammates' clicks are credited to the teammates' ``Q̄(i)``,
and each agent's ``Q̄(⊥)`` need not hold them (``vdn_slateq_teammates``, VDN's
``teammate_value``, adds a learned estimate of them: its row reads ``Q̄(⊥) + g(o)``, the
no-click value its greedy slates use). This trains each learner as
``experiments.compare_marl`` does (its budget schedules; cooperative Market-v0, 16 markets,
horizon 100, seed s: the agents of its rows, whose returns these equal) and reads, on
its held-out markets' greedy episode, the mean ``Q̄(⊥)`` against the mean ``Q̄`` of the
items shown (per agent and request), with the same episode's page CTR (requests with a
click on any agent's item) and return (the team total).

Usage::

    python -m experiments.no_click_value --out experiments/results/no_click_value
    python -m experiments.no_click_value --out /tmp/ncv --num-agents 2 --seeds 1 --steps 2000

Writes ``OUT/results.json`` and ``OUT/report.md`` (``OUT`` must not exist).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import agents
import recenv
from experiments import compare_marl, report
from experiments.config import EVAL_SEED_OFFSET
from experiments.provenance import code_line, versions

ENV = "recenv/Market-v0"
LEARNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "iql": ("iql", {}),
    "vdn_slateq": ("vdn", {"utility": "slateq"}),
    "qmix_slateq": ("qmix", {"utility": "slateq"}),
    "vdn_slateq_teammates": ("vdn", {"utility": "slateq", "teammate_value": True}),
}


def measure(label: str, num_agents: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``LEARNERS[label]`` as ``compare_marl`` trains its row (its schedules and
    :func:`~experiments.compare_marl.build_agent`) and :func:`read_values` on one greedy
    episode of its held-out markets."""
    name, own = LEARNERS[label]
    cfg = {**compare_marl.schedules(args.steps)[name], **own}
    run = argparse.Namespace(**vars(args), env_set=[f"num_agents={num_agents}"])
    agent, env = compare_marl.build_agent(name, "cooperative", seed, run, cfg)
    agents.train(agent, env, args.steps, seed=seed)
    eval_seed = seed + EVAL_SEED_OFFSET
    held_out = recenv.make_vec(
        ENV, num_envs=args.num_envs, seed=eval_seed, **compare_marl.markets(run, "cooperative")
    )
    return {"learner": label, "num_agents": num_agents, "seed": seed,
            **read_values(agent, held_out, eval_seed)}  # fmt: skip


@torch.no_grad()
def read_values(agent: Any, held_out: Any, seed: int) -> dict[str, float]:
    """One greedy episode of ``agent`` (IQL, or VDN / QMIX: any agent with ``q_values``) on
    the cooperative markets ``held_out``, reset with ``seed``: per agent and request the mean
    no-click value its greedy slates use (``q_null``; VDN's ``teammate_value`` adds ``g(o)``)
    and the mean ``Q̄`` of the items it shows (``q_shown``), their ratio, the page CTR
    (requests with a click on any agent's item) and the team return per market."""
    agent.bind(held_out)
    agent.reseed(seed)
    obs = held_out.reset(seed=seed)
    teammates = getattr(agent.config, "teammate_value", False)
    null = shown = clicks = reward = 0.0
    requests = 0
    for _ in range(held_out.config.horizon):  # one episode: every market truncates there
        slates = agent.act(obs)
        values = agent.q_values(obs, selection=True) if teammates else agent.q_values(obs)
        for a, (q, v) in values.items():
            null += float(v.double().sum())
            shown += float(q.gather(1, slates[a]).double().mean(1).sum())
        obs, rewards, _, _, info = held_out.step(slates)
        a0 = held_out.agents[0]
        reward += float(rewards[a0].double().sum())  # the team total, every agent's reward
        clicks += float((info["chosen_agent"] >= 0).sum())  # one click at most a page
        requests += held_out.num_envs
    per = requests * len(held_out.agents)
    return {
        "q_null": null / per, "q_shown": shown / per, "null_over_shown": null / shown,
        "page_ctr": clicks / requests, "return": reward / held_out.num_envs,
    }  # fmt: skip


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| agents | learner | mean Q̄(⊥) | mean Q̄(shown item) | Q̄(⊥) / Q̄(shown) | page CTR "
        "| return |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    keys = ("q_null", "q_shown", "null_over_shown", "page_ctr", "return")
    for n in sorted({r["num_agents"] for r in rows}):
        for label in dict.fromkeys(r["learner"] for r in rows):
            mine = [r for r in rows if r["num_agents"] == n and r["learner"] == label]
            if mine:
                cells = [report.fmt(*report.mean_ci([r[k] for r in mine])[:2]) for k in keys]
                lines.append(f"| {n} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.no_click_value", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="new directory for results.json and report.md")
    p.add_argument("--learners", default=",".join(LEARNERS), help=f"of {list(LEARNERS)}")
    p.add_argument("--num-agents", default="2,4", help="agents on the page, comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8_000, help="training budget in env steps")
    p.add_argument("--num-envs", type=int, default=16, help="training and held-out markets")
    p.add_argument("--horizon", type=int, default=100)
    args = p.parse_args(argv)
    learners = [x.strip() for x in args.learners.split(",") if x.strip()]
    unknown = [x for x in learners if x not in LEARNERS]
    if unknown or not learners:
        p.error(f"--learners {args.learners!r}: comma-separated, of {list(LEARNERS)}")
    try:
        counts = [int(x) for x in args.num_agents.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 2:
        p.error(f"--num-agents {args.num_agents!r}: integers >= 2, comma-separated")
    for name in ("seeds", "steps", "num_envs", "horizon"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    out = Path(args.out)
    if out.exists():
        p.error(f"--out {out} exists; results are never overwritten")
    out.mkdir(parents=True)

    torch.set_num_threads(1)
    start, rows = time.perf_counter(), []
    for n in counts:
        for label in learners:
            for seed in range(args.seeds):
                rows.append(measure(label, n, seed, args))
                r = rows[-1]
                print(f"[{time.perf_counter() - start:5.0f}s] {n} agents {label} seed {seed}: "
                      f"Q(null)/Q(shown) {r['null_over_shown']:.3f}, return {r['return']:.2f}",
                      flush=True)  # fmt: skip
    head = {"command": ["python", "-m", "experiments.no_click_value", *(argv or [])],
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "versions": versions(), "seconds": time.perf_counter() - start}  # fmt: skip
    text = "\n".join([
        "# The no-click value of SlateQ learners on a shared page", "",
        f"Cooperative Market-v0, {args.steps} env steps of training ({args.num_envs} markets, "
        f"horizon {args.horizon}), then one greedy episode of {args.num_envs} held-out markets "
        f"per seed (seed + {EVAL_SEED_OFFSET}); per agent and request; mean ± 95 % CI over "
        f"{args.seeds} seeds (t).", "",
        _table(rows), "", code_line(), "",
    ])  # fmt: skip
    (out / "results.json").write_text(json.dumps({**head, "rows": rows}, indent=1) + "\n")
    (out / "report.md").write_text(text)
    print(text)
    return 0 if all(math.isfinite(r["null_over_shown"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
