"""The baselines each synthetic preset's page quotes, measured again.

Every preset page (``recenv/scenarios/<preset>.py``) states what the myopic oracle, uniformly
random valid slates, the registered ``random`` agent and the ``value_oracle`` earn in one
episode of 64 markets with seed 0. Those are exact, deterministic figures: anything that
changes a trajectory or an agent's draws moves them (the pages were 1-3 % stale by the
fiftieth session). This script prints them as the pages state them (team return per
episode: under ``cooperative`` rewards every agent receives the team's, so it is one agent's
return; otherwise the agents' sum) and writes them with the code's provenance::

    .venv/bin/python -m experiments.preset_baselines            # ~2-4 min on 2 cores
    .venv/bin/python -m experiments.preset_baselines --presets recenv/Music-v0 --no-json

JSON: ``experiments/results/preset_baselines-<host>-<UTC time>.json`` (never overwritten).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

import agents
import recenv
from agents.rollout import evaluate
from experiments.bench_env import provenance, result_path

PRESETS = ("recenv/Music-v0", "recenv/Video-v0", "recenv/ECommerce-v0")
AGENTS = ("oracle", "random", "value_oracle")


def team_return(returns: torch.Tensor, reward_mode: str) -> float:
    """Mean team return per episode of ``returns`` [E, A] (one row per episode): one agent's
    return under ``cooperative`` rewards (each agent receives the team's), else their sum."""
    per_episode = returns.double()
    team = per_episode.mean(1) if reward_mode == "cooperative" else per_episode.sum(1)
    return float(team.mean())


def uniform_random_slates(env: Any, seed: int) -> torch.Tensor:
    """Returns ``[N, A]`` of one episode of every market under uniformly random valid slates
    (K distinct unmasked candidates per agent, from a generator seeded ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    obs, K = env.reset(seed=seed), env.config.slate_size
    while True:
        mask = torch.stack([obs[a]["action_mask"] for a in env.agents], dim=1)  # [N, A, C]
        score = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
        slates = score.topk(K, dim=2).indices
        obs, _, _, _, info = env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
        if "episode" in info:  # every market's episode ends at the same step (the horizon)
            ended = info["_episode"]
            if bool(ended.all()):
                return info["episode"]["return"]
            raise RuntimeError(
                f"only {int(ended.sum())} of {env.num_envs} markets ended together (every "
                "user churned in some): the baselines assume one whole episode per market"
            )


def measure(env_id: str, num_envs: int, seed: int, **config: Any) -> dict[str, float]:
    """The page's baselines of ``env_id``: team return per episode of each agent in
    :data:`AGENTS` (``agents.rollout.evaluate``, greedy, seeded ``seed``) and of
    ``uniform_random`` slates, with the oracle's ratio over random and the value oracle's
    over the oracle."""

    def fresh() -> Any:
        return recenv.make_vec(env_id, num_envs=num_envs, seed=seed, **config)

    env = fresh()
    mode = env.config.reward_mode
    out = {"uniform_random": team_return(uniform_random_slates(env, seed), mode)}
    for name in AGENTS:
        env = fresh()
        result = evaluate(agents.make_agent(name, env), env, seed=seed)
        out[name] = team_return(result.episodes["return"], mode)
    out["oracle_over_uniform_random"] = out["oracle"] / out["uniform_random"]
    out["value_oracle_over_oracle"] = out["value_oracle"] / out["oracle"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--num-envs", type=int, default=64, help="markets (the pages: 64)")
    p.add_argument("--seed", type=int, default=0, help="the pages: 0")
    p.add_argument("--horizon", type=int, default=None, help="override (smoke runs only)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-json", action="store_true")
    args = p.parse_args(argv)
    out = None if args.no_json else result_path("preset_baselines", args.out)
    config = {} if args.horizon is None else {"horizon": args.horizon}
    rows = {}
    print(f"team return per episode, {args.num_envs} markets, one episode, seed {args.seed}")
    print("| preset | oracle | uniform random | (x) | random agent | value_oracle | (x) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for env_id in args.presets:
        r = rows[env_id] = measure(env_id, args.num_envs, args.seed, **config)
        print(
            f"| {env_id} | {r['oracle']:.1f} | {r['uniform_random']:.1f} | "
            f"{r['oracle_over_uniform_random']:.2f} | {r['random']:.1f} | "
            f"{r['value_oracle']:.1f} | {r['value_oracle_over_oracle']:.2f} |"
        )
    if out is not None:
        result = {
            "num_envs": args.num_envs,
            "seed": args.seed,
            "config": config,
            "presets": rows,
            **provenance(),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "x") as f:  # never overwrites
            json.dump(result, f, indent=1)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
