"""Compare the agents on Market-v0, and ask whether IQL beats the myopic oracle in the long run.

Two experiments (``--experiment``):

``table`` (default)
    Every agent controls every env agent (self-play: both sides of a competitive market are the
    same method, learning independently). For each reward mode and seed, each learning agent
    trains for ``--budget`` env steps on ``--num-envs`` markets (explore on); then every agent is
    evaluated greedily on ``--eval-envs`` fresh markets (other seeds), one full episode each.
    Reported: mean ± 95 % confidence interval (Student t over seeds) of the return per env
    agent, the total engagement of all agents (the team's return in any reward mode), CTR and
    retention; and IQL's training throughput (env steps per second, updates
    included) on this machine's CPU.
``long_horizon``
    Video-v0 — the preset where boredom is strong and unsatisfied viewers churn — with a long
    horizon and, by default, harsher long-term dynamics (``--long-env-config``): interests
    drift faster toward what is watched (filter bubbles), boredom lingers (decay 1 %/step),
    viewers expect more and churn sooner and never return. As shipped, Video-v0 does not make
    greed costly: the myopic oracle, which sees boredom, keeps retention at 1.0 over 1 000
    requests; in the harsher setting it loses about two thirds of the viewers. Compared: the
    myopic oracle, IQL with market-level and user-level bootstrapping, a myopic IQL (γ = 0:
    the same learner without a future) and random; ``--long-extra`` adds registered agents,
    e.g. ``linucb mf='{"user_scope": "population"}'``.

``slate_quality``
    Why IQL stays below the value oracle: IQL trains in self-play on ``--env-id``, then each
    request of a greedy rollout in fresh markets is scored by the true model, one step and in
    isolation, for IQL's two slate-selection rules, the two oracles' rules and random; and how
    well IQL's learned choice logits and values track the true utilities and click values
    (:mod:`experiments.slate_quality`).

Results go to ``<out>.json`` and ``<out>.md``; an existing result is never overwritten (give a
new ``--out``). Both files are created at the start, holding an "in progress" note, so a second
invocation with the same ``--out`` is refused before it does any work; they get the results at
the end, and are removed if the experiment fails or is interrupted. Example::

    python experiments/compare_agents.py --budget 20000 --seeds 5
    python experiments/compare_agents.py --experiment long_horizon \\
        --out experiments/results/long_horizon
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents
import recenv
from experiments import report, slate_quality
from experiments.config import validate_agent_overrides
from experiments.provenance import code_line, versions

DEFAULT_AGENTS = (
    "random",
    "popularity",
    "epsilon_greedy",
    "linucb",
    "mf",
    "oracle",
    "value_oracle",
    "iql",
)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean over seeds and the half-width of its 95 % Student-t confidence interval
    (:func:`experiments.report.mean_ci`, the exact t quantile, as every report here); the
    half-width is NaN with one seed or a non-finite value (whose mean is then not finite)."""
    if not all(math.isfinite(v) for v in values):
        return statistics.fmean(values), math.nan
    mean, ci, _ = report.mean_ci(values)
    return mean, ci


def iql_config(budget: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """IQL's settings for a budget: ε decays over the first half, updates start after 1 000."""
    return {"learning_starts": 1_000, "eps_decay_steps": max(1, budget // 2), **overrides}


def run_one(
    name: str,
    config: dict[str, Any],
    env_id: str,
    env_kwargs: dict[str, Any],
    seed: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train (if it learns) and evaluate one agent for one seed; returns its summary."""
    env = recenv.make_vec(
        env_id, num_envs=args.num_envs, seed=seed, device=args.device, **env_kwargs
    )
    agent = agents.make_agent(name, env, seed=seed, **config)
    out: dict[str, Any] = {"seed": seed}
    if agent.learns and args.budget > 0:
        trained = agents.train(agent, env, args.budget, seed=seed)
        out["train_env_steps"] = trained.env_steps
        out["train_seconds"] = trained.seconds
        out["train_env_steps_per_s"] = trained.env_steps_per_second
    test_env = recenv.make_vec(
        env_id, num_envs=args.eval_envs, seed=100_000 + seed, device=args.device, **env_kwargs
    )
    result = agents.evaluate(agent, test_env, seed=100_000 + seed)
    out["metrics"] = agents.summarize(result.episodes, test_env.agents)
    ep = result.episodes  # total engagement of all agents, whatever the reward mode
    out["metrics"]["engagement_total"] = float((ep["engagement_per_request"] * ep["length"]).mean())
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = runs[0]["metrics"].keys()
    agg = {k: mean_ci([r["metrics"][k] for r in runs]) for k in keys}
    out: dict[str, Any] = {
        "mean": {k: v[0] for k, v in agg.items()},
        "ci95": {k: v[1] for k, v in agg.items()},
        "per_seed": runs,
    }
    if "train_env_steps_per_s" in runs[0]:
        sps = [r["train_env_steps_per_s"] for r in runs]
        out["train_env_steps_per_s"] = mean_ci(sps)
    return out


def fmt(mean: float, ci: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


# ----------------------------------------------------------------------------------------
def table_experiment(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in args.modes:
        results[mode] = {}
        for name in args.agents:
            config = iql_config(args.budget, args.iql) if name == "iql" else {}
            runs = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                runs.append(run_one(name, config, args.env_id, {"reward_mode": mode}, seed, args))
                m = runs[-1]["metrics"]
                print(
                    f"[{mode}] {name:15s} seed {seed}: engagement {m['engagement_total']:7.2f} "
                    f"ctr {m['ctr']:.3f} retention {m['retention']:.3f} "
                    f"({time.perf_counter() - t0:.1f}s)",
                    flush=True,
                )
            results[mode][name] = aggregate(runs)
            results[mode][name]["config"] = config
    return results


def table_markdown(results: dict[str, Any], env_agents: list[str]) -> str:
    lines = []
    for mode, by_agent in results.items():
        cols = [f"return {a}" for a in env_agents] + ["total engagement", "CTR", "retention"]
        lines += [f"### {mode}", "", "| agent | " + " | ".join(cols) + " |"]
        lines.append("|---" * (len(cols) + 1) + "|")
        for name, r in by_agent.items():
            mean, ci = r["mean"], r["ci95"]
            cells = [fmt(mean[f"return/{a}"], ci[f"return/{a}"]) for a in env_agents]
            cells.append(fmt(mean["engagement_total"], ci["engagement_total"]))
            cells.append(fmt(mean["ctr"], ci["ctr"], 3))
            cells.append(fmt(mean["retention"], ci["retention"], 3))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
HARSH_VIDEO = {
    "interest_drift": 0.2,  # Video-v0: 0.05
    "boredom_decay": 0.99,  # 0.95
    "churn_threshold": 0.4,  # 0.25
    "expectation": 0.5,  # 0.35
    "return_prob": 0.0,  # churned viewers never come back
}
LONG_HORIZON_AGENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "oracle (myopic, privileged)": ("oracle", {}),
    "value oracle (myopic, privileged)": ("value_oracle", {}),
    "iql γ=0 (myopic learner)": ("iql", {"gamma": 0.0}),
    "iql γ=0.9, market bootstrap": ("iql", {"gamma": 0.9, "bootstrap": "market"}),
    "iql γ=0.9, user bootstrap": ("iql", {"gamma": 0.9, "bootstrap": "user"}),
}


def extra_agent(spec: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """``--long-extra``'s ``NAME`` or ``NAME=JSON`` (a config object) as ``(label, (name,
    config))``; ``ValueError`` naming the problem for an unknown agent, a config that is not
    a JSON object or keys the agent's config does not have."""
    name, sep, text = spec.partition("=")
    config: dict[str, Any] = {}
    if sep:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{spec!r}: the config after '=' is not JSON ({e})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{spec!r}: the config after '=' must be a JSON object")
    agents.agent_class(name)  # an unknown name: refused now
    validate_agent_overrides(name, config)  # unknown keys, wrong values: refused now
    label = f"{name} {json.dumps(config)}" if config else name
    return label, (name, config)


def long_horizon_experiment(args: argparse.Namespace) -> dict[str, Any]:
    env_kwargs = {"horizon": args.horizon, **args.long_env_config}
    results: dict[str, Any] = {}
    lineup = {**LONG_HORIZON_AGENTS, **dict(map(extra_agent, args.long_extra))}
    for label, (name, cfg) in lineup.items():
        config = {**iql_config(args.budget, args.iql), **cfg} if name == "iql" else dict(cfg)
        runs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            runs.append(run_one(name, config, args.long_env_id, env_kwargs, seed, args))
            m = runs[-1]["metrics"]
            print(
                f"[long horizon] {label:30s} seed {seed}: engagement {m['engagement_total']:8.2f} "
                f"retention {m['retention']:.3f} satisfaction {m['satisfaction']:.3f} "
                f"({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
        results[label] = aggregate(runs)
        results[label]["config"] = config
    return results


def long_horizon_markdown(
    results: dict[str, Any], env_id: str, horizon: int, env_config: dict[str, Any]
) -> str:
    cols = ["total engagement", "CTR", "retention", "satisfaction", "diversity"]
    lines = [
        f"### {env_id}, horizon {horizon}, config overrides {json.dumps(env_config)}",
        "",
        "| agent | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for label, r in results.items():
        mean, ci = r["mean"], r["ci95"]
        cells = [fmt(mean["engagement_total"], ci["engagement_total"])]
        cells += [fmt(mean[k], ci[k], 3) for k in ("ctr", "retention", "satisfaction", "diversity")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def slate_quality_experiment(args: argparse.Namespace) -> dict[str, Any]:
    config = iql_config(args.budget, args.iql)
    runs = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        m = slate_quality.run_seed(
            args.env_id, {}, config, args.budget, args.num_envs, args.eval_envs, args.steps,
            seed, args.device,
        )  # fmt: skip
        runs.append({"seed": seed, "metrics": m})
        print(
            f"[slate quality] seed {seed}: "
            + " ".join(f"{k} {v:.3f}" for k, v in m.items())
            + f" ({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    return {**aggregate(runs), "config": config}


def slate_quality_markdown(results: dict[str, Any], env_id: str, steps: int) -> str:
    mean, ci = results["mean"], results["ci95"]
    top = mean["value_oracle"]
    lines = [
        f"### {env_id}: one-step expected click value of each rule's slate, in isolation "
        f"(true model; {steps} requests per market, every env agent)",
        "",
        "| rule | value | share of value_oracle's |",
        "|---|---:|---:|",
    ]
    for rule in slate_quality.RULES:
        lines.append(f"| {rule} | {fmt(mean[rule], ci[rule], 3)} | {mean[rule] / top:.2f} |")
    lines += [
        "",
        "IQL's learned model against the truth (Pearson over each request's candidates): "
        + ", ".join(f"{k} {fmt(mean[k], ci[k], 3)}" for k in slate_quality.CORRELATIONS),
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--experiment", choices=("table", "long_horizon", "slate_quality"), default="table"
    )
    p.add_argument("--budget", type=int, default=20_000, help="training env steps per learner")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 (train and eval)")
    p.add_argument(
        "--modes", nargs="+", default=["competitive", "cooperative"], help="reward modes"
    )
    p.add_argument("--agents", nargs="+", default=list(DEFAULT_AGENTS), help="registered names")
    p.add_argument("--env-id", default="recenv/Market-v0", help="env of the table")
    p.add_argument("--long-env-id", default="recenv/Video-v0", help="env of long_horizon")
    p.add_argument("--horizon", type=int, default=1_000, help="long_horizon: requests/episode")
    p.add_argument(
        "--long-env-config",
        type=json.loads,
        default=dict(HARSH_VIDEO),
        help="long_horizon: JSON config overrides of the env (default: harsher dynamics)",
    )
    p.add_argument(
        "--long-extra",
        nargs="+",
        default=[],
        metavar="AGENT[=JSON]",
        help="long_horizon: agents evaluated after its fixed lineup, each a registered name, "
        'with a JSON config after "=" if not the default, e.g. mf=\'{"user_scope": '
        '"population"}\' (learners train --budget env steps)',
    )
    p.add_argument("--num-envs", type=int, default=32, help="markets while training")
    p.add_argument("--eval-envs", type=int, default=32, help="markets (episodes) per evaluation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--steps", type=int, default=60, help="slate_quality: requests measured per market"
    )
    p.add_argument("--iql", type=json.loads, default={}, help="JSON overrides of IQL's config")
    p.add_argument("--out", default=None, help="output path without suffix")
    args = p.parse_args(argv)
    for spec in args.long_extra:  # refused now, not after the fixed lineup's runs
        try:
            extra_agent(spec)
        except ValueError as e:
            p.error(f"--long-extra: {e}")
    if args.long_extra and args.experiment != "long_horizon":
        p.error("--long-extra is for --experiment long_horizon")
    if args.out is None:
        name = "compare_agents" if args.experiment == "table" else args.experiment
        args.out = str(Path(__file__).parent / "results" / name)
    return args


IN_PROGRESS = "in progress"


def reserve(targets: list[Path], command: str) -> None:
    """Create every target exclusively (``O_EXCL``: of two invocations with one ``--out``, one
    gets them), each holding a note that the results are in progress (a process killed with
    SIGKILL leaves the note, never something that looks like results). Refused with
    ``SystemExit`` naming the file when one exists; nothing is left behind then."""
    note = {
        "status": IN_PROGRESS,
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
    }
    texts = {
        ".json": json.dumps(note, indent=1) + "\n",
        ".md": f"Results in progress (pid {note['pid']}, started {note['started']}): `{command}`\n",
    }
    made: list[Path] = []
    for t in targets:
        try:
            with open(t, "x") as f:
                f.write(texts.get(t.suffix, texts[".md"]))
        except FileExistsError:
            for m in made:
                m.unlink(missing_ok=True)
            sys.exit(f"refusing to overwrite {str(t)!r}: pass a new --out path{_held_by(t)}")
        made.append(t)


def _held_by(path: Path) -> str:
    """What an existing output is, when it is another invocation's reservation."""
    try:
        note = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(note, dict) or note.get("status") != IN_PROGRESS:
        return ""
    return (
        f" (it is reserved by pid {note.get('pid')}, started {note.get('started')}; if that "
        "process is gone, it was killed: delete its .json and .md to reuse the name)"
    )


def json_ready(x: Any) -> Any:
    """``x`` for ``json.dumps(..., allow_nan=False)``: tuples as lists, numpy scalars and arrays
    as Python values, non-finite floats as ``null`` (``NaN`` is not JSON: strict readers,
    ``jq`` and browsers, refuse the file). Other objects are left to ``json.dumps``."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_result(path: Path, text: str) -> None:
    """Replace a reservation by its result atomically (a kill leaves the note or the result)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    targets = [out.with_suffix(".json"), out.with_suffix(".md")]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    out.parent.mkdir(parents=True, exist_ok=True)
    reserve(targets, command)  # before any work: a second invocation is refused now
    try:
        text = _run(args, command, targets)
    except BaseException:  # failed or interrupted: no results, and the name is free again
        for t in targets:
            t.unlink(missing_ok=True)
        raise
    print(text)


def _run(args: argparse.Namespace, command: str, targets: list[Path]) -> str:
    """The experiment; writes its results into the reserved ``targets`` and returns them as
    markdown."""
    torch.set_num_threads(args.threads)
    started = time.time()
    # results.json's head (the results go beside it); the machine's load and the wall time are
    # added at the end.
    header: dict[str, Any] = {
        "command": command,
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg(),
        },
    }
    if args.experiment == "table":
        results = table_experiment(args)
        env_agents = recenv.make_vec(args.env_id, num_envs=1).agents
        md = table_markdown(results, env_agents)
        iql: dict[str, tuple[float, float]] = {  # aggregate's (mean, CI half width)
            m: r["iql"]["train_env_steps_per_s"] for m, r in results.items() if "iql" in r
        }
        if iql:
            md += "\nIQL training throughput (env steps/s, updates included, mean ± 95 % CI): "
            md += ", ".join(f"{m}: {fmt(*v, 0)}" for m, v in iql.items()) + "\n"
    elif args.experiment == "slate_quality":
        results = slate_quality_experiment(args)
        md = slate_quality_markdown(results, args.env_id, args.steps)
    else:
        results = long_horizon_experiment(args)
        md = long_horizon_markdown(results, args.long_env_id, args.horizon, args.long_env_config)
    header["machine"]["load_average_at_end"] = os.getloadavg()
    header["wall_seconds"] = time.time() - started
    measured = (
        f"{args.steps} requests of a greedy rollout in each of {args.eval_envs} fresh markets"
        if args.experiment == "slate_quality"
        else f"one greedy episode in each of {args.eval_envs} fresh markets"
    )
    settings = (
        f"Command: `{command}`\n\n{args.seeds} seeds; learners train {args.budget} env steps on "
        f"{args.num_envs} markets; evaluation: {measured}; "
        f"mean ± 95 % CI (t, {args.seeds - 1} df). CPU threads: "
        f"{args.threads}; load average at start {header['machine']['load_average_at_start']}."
        f" Wall time {header['wall_seconds'] / 60:.1f} min. {code_line(header['versions'])}\n\n"
    )
    payload = json_ready({**header, "results": results})
    write_result(targets[0], json.dumps(payload, indent=1, default=str, allow_nan=False))
    write_result(targets[1], settings + md)
    return settings + md


if __name__ == "__main__":
    main()
