"""Return against training budget: ``compare_marl`` comparisons that differ only in ``--steps``,
as one table and one figure.

A comparison at one budget says who is ahead *there*; whether a learner that trails would
catch up with more env steps, or has stopped improving, needs the same comparison at several
budgets. This reads finished ``compare_marl`` directories (their ``results.json``), checks that
they differ in nothing but the budget (the same seeds, markets, horizon, held-out markets and
agent overrides; their agents and reward modes may differ: each cell shows what ran), and
writes::

    OUT/budget.md     one table per reward mode: agents x budgets, mean ± 95 % CI over seeds
    OUT/budget.json   the same cells, and each input's command and code version
    OUT/budget.png    return against budget (log scale), one panel per reward mode

Usage::

    python -m experiments.compare_marl --out R/marl_8k --steps 8000 --modes cooperative ...
    python -m experiments.compare_marl --out R/marl_64k --steps 64000 --modes cooperative ...
    python -m experiments.budget_curve R/marl_8k R/marl_64k --out R/budget

``--out`` must not exist (results are never overwritten). The inputs may come from different
commits; each one's commit is listed under the table, so a reader can see whether they do.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments import compare_agents, report

# The settings of a compare_marl run that must agree between the budgets compared. `steps` is
# what varies; `agents`, `modes` and `head_to_head` only choose which cells exist; `out`,
# `spread` and `threads` do not change a return.
MUST_AGREE = ("seeds", "num_envs", "eval_envs", "horizon", "set", "env_set", "variant")
METRIC = "return"


class BudgetError(ValueError):
    """The inputs cannot be put side by side (the message says which and why)."""


def read_comparison(path: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a finished ``compare_marl`` comparison directory."""
    file = Path(path) / "results.json"
    if not file.is_file():
        running = (Path(path) / "IN_PROGRESS").exists()
        why = " (still running: it holds IN_PROGRESS)" if running else ""
        raise BudgetError(
            f"{str(path)!r} has no results.json{why}: not a finished compare_marl run"
        )
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BudgetError(f"{str(file)!r} is not readable JSON: {e}") from None
    missing = [k for k in ("settings", "table", "versions", "command") if k not in data]
    if not isinstance(data, dict) or missing or data["settings"].get("spread"):
        raise BudgetError(
            f"{str(file)!r} is not a compare_marl comparison (a --spread report, or another "
            f"script's results: missing {missing or ['a comparison table']})"
        )
    return data


def budget_table(comparisons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The cells of comparisons that differ only in their budget (:data:`MUST_AGREE`).

    Returns ``{"budgets": [steps, ...] ascending, "envs": {env: {agent: [cell or None, ...]}},
    "sources": [{"steps", "command", "commit", "dirty"}, ...]}``, a cell being ``{"mean",
    "ci95", "n"}`` of :data:`METRIC` from the comparison's own table."""
    if len(comparisons) < 2:
        raise BudgetError("give at least two comparisons: a curve needs two budgets")
    first = _settings(comparisons[0])
    for c in comparisons[1:]:
        other = _settings(c)
        diff = [k for k in MUST_AGREE if other[k] != first[k]]
        if diff:
            shown = ", ".join(f"{k}: {first[k]!r} vs {other[k]!r}" for k in diff)
            raise BudgetError(
                f"the comparisons differ in more than the budget ({shown}): their returns "
                f"are not comparable; rerun one with the other's {', '.join(diff)}"
            )
    order = sorted(comparisons, key=lambda c: c["settings"]["steps"])
    budgets = [int(c["settings"]["steps"]) for c in order]
    if len(set(budgets)) != len(budgets):
        raise BudgetError(f"two comparisons share a budget (--steps {budgets}): give one each")
    envs: dict[str, dict[str, list[dict[str, Any] | None]]] = {}
    for j, c in enumerate(order):
        for row in c["table"]:
            cells = envs.setdefault(row["env"], {}).setdefault(row["agent"], [None] * len(order))
            mean = row.get(f"{METRIC}_mean")
            if mean is not None and math.isfinite(mean):
                ci = row.get(f"{METRIC}_ci95")
                cells[j] = {"mean": mean, "ci95": math.nan if ci is None else ci, "n": row["n"]}
    sources = [
        {
            "steps": b,
            "command": shlex.join(c["command"]),
            "commit": c["versions"].get("git"),
            "dirty": bool(c["versions"].get("git_dirty")),
        }
        for b, c in zip(budgets, order, strict=True)
    ]
    return {"budgets": budgets, "envs": envs, "sources": sources}


def _settings(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`MUST_AGREE` settings of a comparison; reports written before ``--set``
    (2026-11-30), ``--env-set`` or ``--variant`` (2026-12-06) existed lack them, which meant
    no overrides: ``[]``."""
    settings = comparison["settings"]
    out = {k: settings.get(k) for k in MUST_AGREE}
    for key in ("set", "env_set", "variant"):
        if out[key] is None:
            out[key] = []
    return out


def markdown(result: Mapping[str, Any]) -> str:
    budgets, lines = result["budgets"], []
    head = "| agent | " + " | ".join(f"{b:,} steps" for b in budgets) + " |"
    rule = "|---|" + "---:|" * len(budgets)
    for env, agents in result["envs"].items():
        lines += [f"**{env}**: {METRIC} / agent, mean ± 95 % CI over seeds", "", head, rule]
        columns = [[(c or {}).get("mean", math.nan) for c in cells] for cells in agents.values()]
        best = [report.best_rows([col[j] for col in columns], True) for j in range(len(budgets))]
        for i, (agent, cells) in enumerate(agents.items()):
            shown = []
            for j, c in enumerate(cells):
                text = "–" if c is None else report.fmt(c["mean"], c["ci95"])
                shown.append(f"**{text}**" if i in best[j] else text)
            lines.append(f"| {agent} | " + " | ".join(shown) + " |")
        lines.append("")
    lines.append("Inputs:")
    for s in result["sources"]:
        code = f"commit `{(s['commit'] or '?')[:12]}`" + (" (dirty)" if s["dirty"] else "")
        lines.append(f"- {s['steps']:,} steps: `{s['command']}` ({code})")
    return "\n".join(lines) + "\n"


def figure(result: Mapping[str, Any], path: str | Path | None = None):
    """Return against budget, one panel per env (reward mode): a line per agent with 95 % CI
    error bars, the budget on a log scale."""
    # Plots are optional: the table needs no matplotlib, which experiments.plots imports.
    from matplotlib.figure import Figure

    from experiments.plots import _save

    envs = list(result["envs"])
    fig = Figure(figsize=(5.2 * len(envs), 4.0), layout="constrained")
    axes = fig.subplots(1, len(envs), squeeze=False)[0]
    for ax, env in zip(axes, envs, strict=True):
        for i, (agent, cells) in enumerate(result["envs"][env].items()):
            pts = [(b, c) for b, c in zip(result["budgets"], cells, strict=True) if c]
            if not pts:
                continue
            xs = [b for b, _ in pts]
            ys = [c["mean"] for _, c in pts]
            es = [c["ci95"] if math.isfinite(c["ci95"]) else 0.0 for _, c in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=f"C{i % 10}", label=agent)
        ax.set_xscale("log")
        ax.set_xticks(result["budgets"], [f"{b:,}" for b in result["budgets"]])
        ax.minorticks_off()
        ax.set_xlabel("training budget (env steps)")
        ax.set_ylabel(f"greedy {METRIC} / agent")
        ax.set_title(env, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return _save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.budget_curve", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("comparisons", nargs="+", help="finished compare_marl --out directories")
    p.add_argument("--out", required=True, help="new directory for the table and figure")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        p.error(f"--out {str(out)!r} exists; results are never overwritten, pass a new one")
    try:
        result = budget_table([read_comparison(c) for c in args.comparisons])
    except BudgetError as e:
        p.error(str(e))
    text = markdown(result)
    out.mkdir(parents=True)
    payload = {"command": ["python", "-m", "experiments.budget_curve", *(argv or sys.argv[1:])]}
    payload |= result
    (out / "budget.json").write_text(
        json.dumps(compare_agents.json_ready(payload), indent=2, allow_nan=False) + "\n"
    )
    (out / "budget.md").write_text(text)
    try:
        figure(result, out / "budget.png")
    except ImportError:
        print("matplotlib is not installed: no budget.png (pip install recenv[plots])")
    print(text)
    png = ", budget.png" if (out / "budget.png").exists() else ""
    print(f"wrote {out}/budget.md, budget.json{png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
