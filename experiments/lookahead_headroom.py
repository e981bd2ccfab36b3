"""Is there anything for a far-sighted recommender to win? Privileged one-step rules that give
up some of this request's value to keep users, against the one-step value oracle.

A long-horizon learner can only beat the myopic oracles where greed is costly: where the
slate that earns the most now wears users out (boredom, disappointed expectations, churn) and
costs more later than it gained. Before asking whether IQL with γ > 0 finds such a policy, ask
whether one exists. This evaluates, on the true model (privileged, nothing learned):

- ``value_oracle``: the slate of most expected reward this request (``oracle_slates("value")``);
- ``utility_oracle``: the top K by true utility (the slate likeliest to be clicked, which
  disappoints least);
- ``blend λ``: the top K by ``u / T + (1 − λ) · log v(u)``, a click's odds times its value
  raised to ``1 − λ`` (λ = 0: ranked by expected value per candidate; λ = 1: the utility
  oracle). Larger λ trades value now for satisfaction, hence kept users, later.

each over several horizons. Where a blend earns more total engagement than the value oracle,
greed is costly and a learner has that much headroom over one-step policies; where none does,
the horizon or the dynamics leave nothing for lookahead to win.

Usage::

    python -m experiments.lookahead_headroom --out experiments/results/lookahead_headroom
    python -m experiments.lookahead_headroom --env recenv/Market-v0 --config '{}' \\
        --horizons 100,1000 --out /tmp/market_headroom

Writes ``OUT/results.json`` (every run) and ``OUT/report.md`` (``OUT`` must not exist).
Evaluation markets are ``compare_agents``' held-out ones (seeded ``100_000 + seed``); one
episode each.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

import recenv
from agents.base import AgentConfig, ScoringAgent, option
from experiments import compare_agents, report
from experiments.provenance import code_line, versions
from recenv.core.response import expected_click_value


@dataclass(frozen=True)
class BlendConfig(AgentConfig):
    keep: float = option(0.5, "λ: weight moved from a click's value to its odds", within=(0, 1))


class BlendOracle(ScoringAgent):
    """Privileged: top K by ``u / T + (1 − λ) · log v(u)`` of the true utility ``u`` and a
    click's expected value ``v`` (:func:`~recenv.core.response.expected_click_value`)."""

    name: ClassVar[str] = "blend_oracle"
    Config: ClassVar[type[AgentConfig]] = BlendConfig
    config: BlendConfig
    needs_privileged: ClassVar[bool] = True

    def score_agent(self, i: int, obs_a: dict[str, Any], explore: bool = False) -> torch.Tensor:
        core = self._core
        assert core is not None  # needs_privileged: bound to the env's batched core
        utility, length, price = core.oracle_view()
        j = self.env_index(self.agent_ids[i])
        u, cfg = utility[:, j], self.env_config
        value = expected_click_value(cfg, u, length[:, j], price[:, j])
        # Masked candidates: u = -inf, v = 0, so the score is -inf either way.
        return u / cfg.temperature + (1.0 - self.config.keep) * value.log()


BLEND = "experiments.lookahead_headroom:BlendOracle"  # a "module:attr" name (agents.make_agent)


def policies(keeps: Sequence[float]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label -> (agent name, config)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {
        "value_oracle": ("value_oracle", {}),
        "utility_oracle": ("oracle", {}),
    }
    out |= {f"blend λ={k:g}": (BLEND, {"keep": k}) for k in keeps}
    return out


def evaluate(name: str, config: dict[str, Any], env_id: str, env_kwargs: dict, seed: int,
             num_envs: int) -> dict[str, float]:  # fmt: skip
    """One greedy episode in each of ``num_envs`` of ``compare_agents``' held-out markets
    (:func:`~experiments.compare_agents.run_one`, nothing trained): total engagement (all
    agents), retention, episode length."""
    args = argparse.Namespace(num_envs=1, eval_envs=num_envs, device="cpu", budget=0)
    m = compare_agents.run_one(name, config, env_id, env_kwargs, seed, args)["metrics"]
    return {k: m[k] for k in ("engagement_total", "retention", "length")}


def arguments(p: argparse.ArgumentParser) -> None:
    """The options every privileged-rule sweep takes (this one and ``oracle_information``)."""
    p.add_argument("--out", required=True, help="new directory for results.json and report.md")
    p.add_argument("--env", default="recenv/Video-v0", help="env id")
    p.add_argument(
        "--config",
        type=json.loads,
        default=dict(compare_agents.HARSH_VIDEO),
        help="JSON config overrides (default: compare_agents' long_horizon dynamics)",
    )
    p.add_argument("--horizons", default="100,1000,3000", help="comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--num-envs", type=int, default=16, help="held-out markets per seed")


def horizons_of(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """The checked ``--horizons``; refuses (``p.error``) a bad ``--config``, seeds or markets
    and an existing ``--out`` before anything runs."""
    try:
        horizons = [int(h) for h in args.horizons.split(",")]
    except ValueError as e:
        p.error(f"--horizons: comma-separated numbers ({e})")
    if not isinstance(args.config, dict) or "horizon" in args.config:
        p.error("--config: a JSON object of MarketConfig overrides, without horizon (--horizons)")
    if min(horizons) < 1 or args.seeds < 1 or args.num_envs < 1:
        p.error("--horizons, --seeds and --num-envs >= 1")
    recenv.make_vec(args.env, num_envs=1, seed=0, horizon=1, **args.config)  # refuse bad keys now
    if Path(args.out).exists():
        p.error(f"--out {args.out!r} exists; results are never overwritten, pass a new one")
    return horizons


def sweep(
    rules: dict[str, tuple[str, dict[str, Any]]], args: argparse.Namespace, horizons: list[int]
) -> list[dict[str, Any]]:
    """Every rule (label -> agent name, config) at every horizon and seed: one row each."""
    torch.set_num_threads(1)
    start, rows = time.perf_counter(), []
    for horizon in horizons:
        for label, (name, cfg) in rules.items():
            for seed in range(args.seeds):
                kw = {**args.config, "horizon": horizon}
                m = evaluate(name, cfg, args.env, kw, seed, args.num_envs)
                rows.append({"horizon": horizon, "policy": label, "seed": seed, **m})
                print(f"[{time.perf_counter() - start:5.0f}s] H={horizon} {label:16s} seed "
                      f"{seed}: engagement {m['engagement_total']:8.2f}, retention "
                      f"{m['retention']:.3f}", flush=True)  # fmt: skip
    return rows


def run(
    prog: str,
    rules: dict[str, tuple[str, dict[str, Any]]],
    args: argparse.Namespace,
    horizons: list[int],
    argv: Sequence[str] | None,
    title: str,
    what: str,
) -> int:
    """:func:`sweep` the rules, then write ``OUT/results.json`` and ``OUT/report.md`` (``OUT``
    new; the report's :func:`table` under ``title``, its rules described as ``what``, each
    against ``value_oracle``) and print the report."""
    start = time.perf_counter()
    rows = sweep(rules, args, horizons)
    head = {
        "command": ["python", "-m", prog, *(argv or sys.argv[1:])],
        "settings": vars(args),
        "versions": versions(),
    }
    md = table(rows, head, title, what, "value_oracle")
    out = Path(args.out)
    out.mkdir(parents=True)
    payload = {**head, "rows": rows, "seconds": time.perf_counter() - start}
    (out / "results.json").write_text(
        json.dumps(compare_agents.json_ready(payload), indent=2, allow_nan=False) + "\n"
    )
    (out / "report.md").write_text(md)
    print(md)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.lookahead_headroom", description=__doc__.split("\n\n")[0]
    )
    arguments(p)
    p.add_argument("--keeps", default="0.25,0.5,0.75", help="the blends' λ, comma-separated")
    args = p.parse_args(argv)
    try:
        keeps = [float(k) for k in args.keeps.split(",")]
    except ValueError as e:
        p.error(f"--keeps: comma-separated numbers ({e})")
    if [k for k in keeps if not 0.0 <= k <= 1.0]:
        p.error("--keeps in [0, 1]")
    horizons = horizons_of(p, args)
    title = f"# Headroom for lookahead: {args.env} with {json.dumps(args.config)}"
    rules = policies(keeps)
    return run("experiments.lookahead_headroom", rules, args, horizons, argv, title,
               "Privileged one-step rules")  # fmt: skip


def table(
    rows: list[dict[str, Any]], head: dict[str, Any], title: str, what: str, base: str
) -> str:
    """One table per horizon of the rules' total engagement, retention and episode length,
    each against the rule labelled ``base`` at that horizon."""
    s = head["settings"]
    lines = [
        title,
        "",
        f"{what}, one greedy episode in each of {s['num_envs']} held-out markets per seed, "
        f"{s['seeds']} seeds; mean ± 95 % CI (t). `vs {base}`: total engagement over "
        f"{base}'s at the same horizon.",
    ]
    for horizon in dict.fromkeys(r["horizon"] for r in rows):
        at = [r for r in rows if r["horizon"] == horizon]
        ref = mean_of(at, base, "engagement_total")[0]
        lines += ["", f"**Horizon {horizon}**", "",
                  f"| policy | total engagement | vs {base} | retention | episode length |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for label in dict.fromkeys(r["policy"] for r in at):
            e, r_, n = (mean_of(at, label, k) for k in ("engagement_total", "retention", "length"))
            ratio = e[0] / ref if ref > 0 else math.nan
            lines.append(f"| {label} | {report.fmt(*e)} | {ratio:.3f} | {report.fmt(*r_)} | "
                         f"{report.fmt(*n)} |")  # fmt: skip
    lines += ["", f"Command: `{shlex.join(head['command'])}`", "", code_line(head["versions"])]
    return "\n".join(lines) + "\n"


def mean_of(rows: list[dict[str, Any]], policy: str, key: str) -> tuple[float, float]:
    mean, ci, _ = report.mean_ci([r[key] for r in rows if r["policy"] == policy])
    return mean, ci


if __name__ == "__main__":
    raise SystemExit(main())
