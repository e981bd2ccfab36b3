"""Centralized critics and value decomposition against independent learners and baselines.

Three reports, each into a new directory (an existing ``--out`` is refused, never overwritten):

1. **Comparison table** (default). Every agent controls every env agent of Market-v0, in
   ``cooperative`` and ``competitive`` reward modes; learning agents train for the same budget
   of env steps (transitions of one market) and are then evaluated greedily on held-out markets
   (seeds ``seed + 1_000_000 …``). Mean ± 95 % CI over seeds (Student's t, from
   :mod:`experiments.report`), and training throughput in env steps per second. Agents that
   refuse a mode (VDN and QMIX are cooperative-only) are listed as refused.
2. **Head-to-head** (competitive, in the same run). One market of five agents: a MAPPO team
   (``agent_0``, ``agent_1``: one MAPPO instance, shared actor, centralized critic), IQL
   (``agent_2``, ``agent_3``) and a popularity recommender (``agent_4``), trained together;
   market share and return per agent. The same with IPPO in place of MAPPO, for the ablation.
3. **Learning-test spread** (``--spread``): the learning tests of ``tests/agents`` —
   :func:`learning_check` — over seeds 0 … ``--seeds`` − 1 (the recorded spread, which the
   tests quote, is over seeds 0…9: ``--seeds 10``), so their margins can be stated against the
   seed spread.

Usage::

    python -m experiments.compare_marl --out experiments/results/marl_8k          # 1 and 2
    python -m experiments.compare_marl --out /tmp/marl --seeds 2 --steps 2000      # a quick look
    python -m experiments.compare_marl --out /tmp/g05 --agents ippo,mappo --head-to-head "" \\
        --set mappo.gamma=0.5 --set ippo.gamma=0.5                                 # an ablation
    python -m experiments.compare_marl --out /tmp/vdn --agents iql,vdn,vdn_slateq \
        --modes cooperative --head-to-head "" --variant vdn_slateq=vdn \
        --set vdn_slateq.utility=slateq                                  # one agent, two ways
    python -m experiments.compare_marl --spread --seeds 10 --out experiments/results/marl_spread

Outputs: ``results.json`` (settings, command, one row per run, the aggregated tables) and
``report.md`` (the tables as markdown). ``--out`` is created at the start, holding an
``IN_PROGRESS`` note until the results are in, so a second invocation with the same ``--out`` is
refused before it does any work; it is removed again if the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import torch

import agents
import recenv
from experiments import compare_agents, report
from experiments.config import (
    EVAL_SEED_OFFSET,
    OPPONENT_SEED_OFFSET,
    ConfigError,
    check_agent_name,
    env_field_hint,
    parse_agent_value,
    parse_value,
    validate_agent_overrides,
    validate_env_overrides,
)
from experiments.provenance import code_line, versions
from recenv.core.config import REWARD_MODES

ENV = "recenv/Market-v0"
MODES = ("cooperative", "competitive")
LEARNERS = ("iql", "ippo", "mappo", "vdn", "qmix")
BASELINES = ("random", "popularity", "linucb", "oracle", "value_oracle")

# Columns of the comparison table: (row key, title, higher is better).
TABLE_METRICS = (
    ("return", "return / agent", True),
    ("engagement_total", "total engagement", True),
    ("ctr", "CTR", True),
    ("retention", "retention", True),
    ("diversity", "diversity", True),
    ("sps", "train env-steps/s", True),
    ("critic_ev", "critic expl. var.", True),
)
H2H_METRICS = (("return", "return", True), ("market_share", "market share", True))


def schedules(steps: int) -> dict[str, dict[str, Any]]:
    """Learning agents' settings for a budget of ``steps`` env steps: the same network width
    for all, exploration decayed over the first half, replay learning from 1/16 of it.

    IQL updates every 16 env steps, VDN and QMIX every 32 (their default): with one learner
    per agent, IQL's networks take twice the updates. At 16, VDN and QMIX score alike
    (results/marl_update_every: 63.8 vs 64.7 and 63.1 vs 63.1, IQL 68.0), so the asymmetry
    does not explain IQL's lead, and they keep the cheaper schedule."""
    replay = {
        "hidden": (64, 64),
        "batch_size": 128,
        "learning_starts": max(256, steps // 16),
        "eps_decay_steps": max(1, steps // 2),
        "buffer_size": 20_000,
    }
    ppo = {"actor_hidden": (64, 64), "critic_hidden": (64, 64)}
    return {
        "iql": {**replay, "update_every": 16, "metrics_every": 20},
        "vdn": dict(replay),
        "qmix": dict(replay),
        "mappo": dict(ppo),
        "ippo": dict(ppo),
    }


# ----------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------
def markets(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """The keyword arguments of every market of a run in reward mode ``mode``: the
    ``--env-set`` overrides, the mode and the horizon."""
    return {**env_overrides(args), "reward_mode": mode, "horizon": args.horizon}


def build_agent(
    name: str, mode: str, seed: int, args: argparse.Namespace, overrides: Mapping[str, Any]
) -> tuple[agents.Agent, Any]:
    """Registered agent ``name`` with ``overrides`` on the ``args.num_envs`` training markets
    of seed ``seed`` (global torch seed set first, as every row's run): ``(agent, markets)``;
    the agent's ``ValueError`` when it refuses them."""
    torch.manual_seed(seed)
    env = recenv.make_vec(ENV, num_envs=args.num_envs, seed=seed, **markets(args, mode))
    return agents.make_agent(name, env, seed=seed, **overrides), env


def run_one(
    name: str,
    mode: str,
    seed: int,
    args: argparse.Namespace,
    overrides: Mapping[str, Any],
    registered: str | None = None,
) -> dict[str, Any]:
    """Train (learning agents) and evaluate one agent in one reward mode with one seed. The
    row is labelled ``name``; the agent built is ``registered`` (a ``--variant``'s agent), or
    ``name`` itself."""
    row: dict[str, Any] = {"env": f"Market-v0 {mode}", "mode": mode, "agent": name, "seed": seed}
    try:
        agent, env = build_agent(registered or name, mode, seed, args, overrides)
    except ValueError as e:
        return {**row, "refused": str(e)}
    row["sps"] = math.nan
    if agent.learns:
        res = agents.train(agent, env, args.steps, seed=seed)
        row["sps"], row["train_seconds"] = res.env_steps_per_second, res.seconds
        ev = [
            m["charts/explained_variance"]
            for _, m in res.metrics
            if "charts/explained_variance" in m
        ]
        if ev:  # the critic's fit over the last quarter of PPO updates
            tail = ev[-max(1, len(ev) // 4) :]
            row["critic_ev"] = sum(tail) / len(tail)
    eval_seed = seed + EVAL_SEED_OFFSET
    eval_env = recenv.make_vec(ENV, num_envs=args.eval_envs, seed=eval_seed, **markets(args, mode))
    ep = agents.evaluate(agent, eval_env, seed=eval_seed).episodes
    ret = ep["return"].double()
    row["return"] = float(ret.mean())
    row["engagement_total"] = float((ep["engagement_per_request"] * ep["length"]).double().mean())
    for k in ("ctr", "retention", "diversity", "engagement_per_request"):
        row[k] = float(ep[k].double().mean())
    return row


def run_head_to_head(team: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A ``team`` (mappo or ippo) of two, two IQL agents and a popularity agent, competing."""
    env_kw = {
        **env_overrides(args),
        "reward_mode": "competitive",
        "horizon": args.horizon,
        "num_agents": 5,
    }
    env = recenv.make_vec(ENV, num_envs=args.num_envs, seed=seed, **env_kw)
    cfg = agent_configs(args)
    lineup = ((team, ["agent_0", "agent_1"]), ("iql", ["agent_2", "agent_3"]),
              ("popularity", ["agent_4"]))  # fmt: skip

    def build(e: Any) -> agents.Team:
        # Each member its own seed, as the runner seeds an opponent (seed + 1000): with one seed
        # for all, the members' generators would draw the same numbers (correlated exploration).
        return agents.Team(
            [
                agents.make_agent(
                    n, e, agent_ids=ids, seed=seed + i * OPPONENT_SEED_OFFSET, **cfg.get(n, {})
                )
                for i, (n, ids) in enumerate(lineup)
            ]
        )

    torch.manual_seed(seed)
    lineup_agent = build(env)
    res = agents.train(lineup_agent, env, args.steps, seed=seed)
    eval_seed = seed + EVAL_SEED_OFFSET
    eval_env = recenv.make_vec(ENV, num_envs=args.eval_envs, seed=eval_seed, **env_kw)
    ep = agents.evaluate(lineup_agent, eval_env, seed=eval_seed).episodes
    label = f"head-to-head: {team} ×2 vs iql ×2 vs popularity (competitive, 5 agents)"
    rows = []
    for n, ids in lineup:
        for a in ids:
            j = env.agents.index(a)
            rows.append({
                "env": label, "agent": f"{a} ({n})", "seed": seed, "sps": res.env_steps_per_second,
                "return": float(ep["return"][:, j].double().mean()),
                "market_share": float(ep["market_share"][:, j].double().mean()),
            })  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------
# The learning tests' setting (tests/agents/test_mappo.py, test_qmix.py) and its seed spread
# ----------------------------------------------------------------------------------------
LEARNING_CHECKS: dict[str, tuple[int, dict[str, Any]]] = {
    "random": (0, {}),
    "mappo": (3072, {"actor_hidden": (64, 64), "critic_hidden": (64, 64)}),
    "qmix": (
        4096,
        {
            "hidden": (64, 64),
            "learning_starts": 512,
            "eps_decay_steps": 2048,
            "batch_size": 128,
            "buffer_size": 4096,
        },
    ),
    "vdn_slateq": (
        4096,
        {
            "utility": "slateq",
            "hidden": (64, 64),
            "learning_starts": 512,
            "eps_decay_steps": 2048,
            "batch_size": 128,
            "buffer_size": 4096,
        },
    ),
}
# Learning checks of an agent under a configuration of its own: label -> registered name.
CHECK_AGENTS = {"vdn_slateq": "vdn"}


def learning_check(name: str, seed: int = 0) -> float:
    """The learning tests' run: ``name`` trained for its budget in :data:`LEARNING_CHECKS` on
    16 cooperative Market-v0 markets (horizon 50, seed ``seed``), then its greedy return per
    agent on 32 held-out markets (seed 10 000, the same for every seed)."""
    steps, overrides = LEARNING_CHECKS[name]
    kw: dict[str, Any] = {"reward_mode": "cooperative", "horizon": 50}
    env = recenv.make_vec(ENV, num_envs=16, seed=seed, **kw)
    agent = agents.make_agent(CHECK_AGENTS.get(name, name), env, seed=seed, **overrides)
    if steps:
        agents.train(agent, env, steps, seed=seed)
    held_out = recenv.make_vec(ENV, num_envs=32, seed=10_000, **kw)
    return float(agents.evaluate(agent, held_out, seed=10_000).episodes["return"][:, 0].mean())


def spread(seeds: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in LEARNING_CHECKS:
        values = []
        for s in seeds:
            values.append(learning_check(name, s))
            _log(f"{name} seed {s}: {values[-1]:.3f}")
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
        out[name] = {
            "values": values,
            "mean": mean,
            "sd": sd,
            "min": min(values),
            "max": max(values),
        }
    return out


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.compare_marl",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="new directory for the results (must not exist)")
    p.add_argument("--spread", action="store_true", help="measure the learning tests' seed spread")
    p.add_argument("--seeds", type=int, default=5, help="seeds per cell: 0 … seeds-1")
    p.add_argument("--steps", type=int, default=8_000, help="training budget in env steps")
    p.add_argument("--num-envs", type=int, default=16, help="training markets stepped together")
    p.add_argument("--eval-envs", type=int, default=16, help="held-out markets (one episode each)")
    p.add_argument("--horizon", type=int, default=100, help="requests per episode")
    p.add_argument("--agents", default=",".join(LEARNERS + BASELINES), help="comma-separated")
    p.add_argument("--modes", default=",".join(MODES), help="reward modes, comma-separated")
    p.add_argument("--head-to-head", default="mappo,ippo", help="teams to pit ('' for none)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="an agent's config override, typed by its config as the runner's --set NAME.KEY=VALUE "
        "(e.g. mappo.gamma=0.5, iql.double_q=false, mappo.actor_hidden=64,64); repeatable",
    )
    p.add_argument(
        "--env-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a MarketConfig override for every market, e.g. num_agents=4 (typed as the "
        "runner's --set env.KEY=VALUE); "
        "repeatable (reward mode and horizon have their own options)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=NAME",
        help="a row LABEL (list it in --agents) trained as agent NAME with NAME's budget "
        "schedule and its own --set LABEL.KEY=VALUE overrides, so one agent can run in two "
        "configurations side by side; repeatable",
    )
    args = p.parse_args(argv)
    _check_args(p, args)
    return args


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad input before any work (``p.error``: exit 2), naming the option and what it
    takes: not as an agent "refused" in the report, nor as a traceback after hours."""
    for name in ("seeds", "steps", "num_envs", "eval_envs", "horizon", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in REWARD_MODES]
    if not modes or bad:
        p.error(f"--modes {args.modes!r}: reward modes, comma-separated, of {list(REWARD_MODES)}")
    names = [n for n in args.agents.split(",") if n]
    if not names:
        p.error("--agents: at least one agent")
    try:
        labels = variants(args)
    except ValueError as e:
        p.error(f"--variant: {e}")
    unlisted = sorted(set(labels) - set(names))
    if unlisted:
        p.error(f"--variant {unlisted}: list each variant's label in --agents to run it")
    try:
        for option, given in (("--agents", args.agents), ("--head-to-head", args.head_to_head)):
            for name in filter(None, given.split(",")):
                if option == "--head-to-head" or name not in labels:
                    check_agent_name(name, option)
        cfg = agent_configs(args)  # checks each name and key --set gives
        for name in cfg:
            validate_agent_overrides(labels.get(name, name), cfg[name])
    except ConfigError as e:
        p.error(str(e))
    except SystemExit as e:  # a --set item that is not NAME.KEY=VALUE
        p.error(str(e.code).removeprefix("error: "))
    teams = [t for t in args.head_to_head.split(",") if t]
    try:
        env_kw = env_overrides(args)
        validate_env_overrides(ENV, {**env_kw, "horizon": 2})  # unknown keys, ranges
    except ValueError as e:
        p.error(f"--env-set: {e}")
    if teams and "num_agents" in env_kw:
        p.error(
            "--env-set num_agents: the head-to-head market has 5 agents; pass --head-to-head ''"
        )
    used = {*names, *teams, *(("iql", "popularity") if teams else ())}
    for name in sorted(used):
        # Agents check more in their constructor (e.g. MAPPO's gamma): build each one that
        # runs once, on one small market of a mode it supports (a mode it refuses is not an
        # error: the report lists it as refused).
        registered = labels.get(name, name)  # (a label is never a head-to-head team)
        supported = getattr(agents.agent_class(registered), "supports_reward_modes", REWARD_MODES)
        mode = next((m for m in [*modes, "competitive"] if m in supported), None)
        if mode is None:
            continue
        try:
            env = recenv.make_vec(ENV, num_envs=1, seed=0, reward_mode=mode, horizon=2, **env_kw)
            agents.make_agent(registered, env, seed=0, **cfg.get(name, {}))
        except ValueError as e:
            p.error(f"agent {name!r} with its settings (--set {name}.KEY=VALUE): {e}")


def env_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--env-set KEY=VALUE`` MarketConfig overrides; ``ValueError`` for an item that is
    not ``KEY=VALUE`` or names the reward mode or horizon (``--modes``, ``--horizon``)."""
    out: dict[str, Any] = {}
    for item in getattr(args, "env_set", []):
        key, sep, value = item.partition("=")
        if not (sep and key):
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        if key in ("reward_mode", "horizon"):
            raise ValueError(f"{key} is set by --{'modes' if key == 'reward_mode' else key}")
        out[key] = parse_value(value, env_field_hint(key), f"env.{key}")  # as the runner's
    return out


VARIANT_LABEL = re.compile(r"[A-Za-z0-9_-]+")


def variants(args: argparse.Namespace) -> dict[str, str]:
    """The ``--variant LABEL=NAME`` rows: ``{label: registered agent name}``; ``ValueError``
    for an item that is not ``LABEL=NAME``, a label that is not letters, digits, ``_`` or
    ``-`` (it is a ``--set LABEL.KEY`` prefix and an ``--agents`` entry), a label that names
    a registered agent or repeats, or an unknown agent."""
    out: dict[str, str] = {}
    for item in getattr(args, "variant", []):
        label, sep, name = item.partition("=")
        if not (sep and label and name):
            raise ValueError(f"{item!r}: expected LABEL=NAME, e.g. vdn_slateq=vdn")
        if not VARIANT_LABEL.fullmatch(label):
            raise ValueError(f"label {label!r}: letters, digits, '_' or '-' only")
        if label in agents.registered_agents():
            raise ValueError(f"label {label!r} is a registered agent's name; choose another")
        if label in out:
            raise ValueError(f"label {label!r} given twice")
        try:
            check_agent_name(name, f"{label}={name}")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        out[label] = name
    return out


def agent_configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """:func:`schedules` for the budget (a ``--variant``'s its agent's), with the ``--set
    NAME.KEY=VALUE`` overrides parsed as the runner parses them (:class:`ConfigError` for an
    unknown agent or key, or a value not of the key's type)."""
    cfg = schedules(args.steps)
    labels = variants(args)
    for label, name in labels.items():
        cfg[label] = dict(cfg.get(name, {}))
    for item in args.set:
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and name and key):
            raise SystemExit(f"error: --set {item!r}: expected NAME.KEY=VALUE")
        # Typed by the agent's config, as the runner's --set NAME.KEY=VALUE (true / false,
        # 64,64 or [64,64] or (64, 64), 3e-4): ConfigError for an unknown name or key.
        registered = check_agent_name(labels.get(name, name), f"--set {name}.KEY")
        cfg.setdefault(name, {})[key] = parse_agent_value(registered, key, value, target)
    return cfg


IN_PROGRESS = "IN_PROGRESS"


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    out = Path(args.out)
    # Reserved before any work (mkdir is atomic): of two invocations with one --out, the
    # second is refused now, not after hours, and neither overwrites the other.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir(exist_ok=False)
    except FileExistsError:
        note = out / IN_PROGRESS
        held = (
            f" (it is reserved by another run: {note.read_text().strip()}; if that process is "
            "gone, it was killed: delete the directory to reuse the name)"
            if note.is_file()
            else ""
        )
        print(f"error: {str(out)!r} exists; results are never overwritten, pass a new "
              f"--out{held}", file=sys.stderr)  # fmt: skip
        return 2
    command = ["python", "-m", "experiments.compare_marl", *(argv or sys.argv[1:])]
    (out / IN_PROGRESS).write_text(
        f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n"
    )
    try:
        payload, md = _run(args, argv)
        text = json.dumps(compare_agents.json_ready(payload), indent=2, allow_nan=False)
        _write(out / "results.json", text + "\n")
        _write(out / "report.md", md)
        (out / IN_PROGRESS).unlink()
    except BaseException:  # failed or interrupted: no results, and the name is free again
        shutil.rmtree(out, ignore_errors=True)
        raise
    print(md)
    _log(f"wrote {out}/results.json and report.md ({payload['seconds']:.0f}s)")
    return 0


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Head(TypedDict):
    """What results.json starts with, whatever the report."""

    command: list[str]
    settings: dict[str, Any]
    versions: dict[str, Any]
    machine: dict[str, Any]


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> tuple[dict[str, Any], str]:
    """The reports ``args`` asks for: the results.json payload and report.md."""
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    head: _Head = {
        "command": ["python", "-m", "experiments.compare_marl", *(argv or sys.argv[1:])],
        "settings": vars(args),
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "device": "cpu"},
    }
    start = time.perf_counter()
    if args.spread:
        result = spread(seeds)
        md = _spread_markdown(result, seeds)
        payload: dict[str, Any] = {**head, "spread": result}
    else:
        payload, md = _comparison(args, seeds, head)
    payload["seconds"] = time.perf_counter() - start
    return payload, md.rstrip("\n") + "\n\n" + code_line(head["versions"]) + "\n"


def _comparison(
    args: argparse.Namespace, seeds: list[int], head: _Head
) -> tuple[dict[str, Any], str]:
    names = [n for n in args.agents.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    cfg, labels = agent_configs(args), variants(args)
    rows, refused = [], {}
    t0 = time.perf_counter()
    for mode in modes:
        for name in names:
            for s in seeds:
                row = run_one(name, mode, s, args, cfg.get(name, {}), labels.get(name))
                if "refused" in row:
                    refused[(mode, name)] = row["refused"]
                    _log(f"{mode} {name}: refused ({row['refused']})")
                    break
                rows.append(row)
                _log(
                    f"[{time.perf_counter() - t0:6.0f}s] {mode} {name} seed {s}: return "
                    f"{row['return']:.3f}, {row['sps']:.0f} env-steps/s"
                )
    table = report.aggregate(rows, [m for m, _, _ in TABLE_METRICS], by=("env", "agent"))
    h2h_rows = []
    for team in [t for t in args.head_to_head.split(",") if t]:
        for s in seeds:
            h2h_rows += run_head_to_head(team, s, args)
            _log(f"[{time.perf_counter() - t0:6.0f}s] head-to-head {team} seed {s}")
    h2h = report.aggregate(h2h_rows, [m for m, _, _ in H2H_METRICS], by=("env", "agent"))

    lines = [
        f"# Centralized critics and value decomposition on Market-v0 ({len(seeds)} seeds)",
        "",
        *(
            [f"Market-v0 with `{json.dumps(env_overrides(args))}` (`--env-set`).", ""]
            if args.env_set
            else []
        ),
        f"Budget: {args.steps} env steps per learning run ({args.num_envs} markets, horizon "
        f"{args.horizon}); greedy evaluation on {args.eval_envs} held-out markets per seed. "
        "Every agent controls every env agent; `return / agent` is the mean over agents of "
        "each agent's own return (in cooperative mode, the team total), `total engagement` "
        "the engagement all agents earned together per episode, whatever the reward mode. "
        "`train env-steps/s` is training throughput on this machine (CPU, "
        f"{args.threads} torch thread(s), shared); baselines without learning are not trained. "
        "`critic expl. var.`: 1 − Var(return − V)/Var(return) of the PPO critic over the last "
        "quarter of updates (MAPPO's reads state(), IPPO's the agent's own observation).",
        "",
        report.markdown_table(table, TABLE_METRICS),
    ]
    for (mode, name), why in refused.items():
        lines.append(f"- `{name}` refused `{mode}`: {why}")
    for label, name in labels.items():
        lines.append(f"- `{label}`: `{name}` with `{json.dumps(cfg[label], default=str)}`")
    if h2h_rows:
        lines += ["", "## Head-to-head", "", report.markdown_table(h2h, H2H_METRICS)]
    lines += ["", f"Command: `{shlex.join(head['command'])}`", ""]
    payload = {
        **head,
        "rows": rows,
        "table": table,
        "refused": [{"mode": m, "agent": n, "error": e} for (m, n), e in refused.items()],
        "head_to_head_rows": h2h_rows,
        "head_to_head": h2h,
        "schedules": cfg,
    }
    return payload, "\n".join(lines)


def _spread_markdown(result: Mapping[str, Any], seeds: Sequence[int]) -> str:
    lines = [
        f"# Learning-test seed spread (seeds {seeds[0]}–{seeds[-1]})",
        "",
        "Greedy return per agent on 32 held-out cooperative Market-v0 markets after the "
        "learning tests' budgets (`experiments.compare_marl.LEARNING_CHECKS`).",
        "",
        "| agent | env steps | mean | sd | min | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result.items():
        lines.append(
            f"| {name} | {LEARNING_CHECKS[name][0]} | {r['mean']:.2f} | {r['sd']:.2f} | "
            f"{r['min']:.2f} | {r['max']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
