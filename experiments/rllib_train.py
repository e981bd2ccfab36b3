"""Train PPO with Ray RLlib (new API stack) on any recenv PettingZoo env, locally or on a cluster.

One shared policy for all agents (parameter sharing) or one policy per agent; ``N`` env runners
(Ray actors, each stepping its own market); ``Dict`` observations flattened (the env's flat
layout, or RLlib's ``FlattenObservations`` connector with ``--obs dict``). Without
``--address`` a local Ray is started and shut down; with it, the run joins an existing cluster
(``docs/integrations.md`` has the cluster recipe: head, workers, auth token, packages)::

    .venv/bin/python -m experiments.rllib_train --iterations 20 --policies per-agent
    .venv/bin/python -m experiments.rllib_train --env recenv/Video-v0 --set env.horizon=100
    RAY_AUTH_TOKEN=... .venv/bin/python -m experiments.rllib_train --address HEAD_IP:6379 \\
        --num-env-runners 16

Writes ``summary.json`` (config, versions, per-iteration metrics) into ``--out`` (default
``runs/rllib/<env>__<policies>__<seed>__<UTC time>``), which must not exist yet; an existing
directory is never overwritten. Needs the ``rllib`` extra: ``pip install -e '.[rllib]'``.

A ``--seed`` gives the same run in any process: the command restarts itself with
``PYTHONHASHSEED=0`` unless it has it, and gives Ray's workers the same (RLlib orders agents by
string hashing; :func:`_restart_with_fixed_hash_seed`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recenv
from experiments.provenance import versions
from recenv.core.config import MarketConfig, option
from recenv.integrations import rllib as recenv_rllib

POLICIES = ("shared", "per-agent")
SHARED_POLICY = recenv_rllib.SHARED_POLICY


@dataclass(frozen=True)
class TrainConfig:
    """One RLlib PPO run. Every field is a ``--flag`` (underscores become dashes)."""

    env: str = option(recenv_rllib.DEFAULT_ENV_ID, "registered recenv env id")
    policies: str = option("shared", "'shared': one policy for every agent; 'per-agent': one each")
    obs: str = option("flat", "'flat': the env's flat Box; 'dict': Dict flattened by RLlib")
    iterations: int = option(10, "training iterations (algo.train() calls)")
    seed: int = option(0, "seed of RLlib (runner w: seed + w, below 2**32) and of the networks")
    num_env_runners: int = option(2, "remote env runners (Ray actors) collecting experience")
    num_envs_per_env_runner: int = option(1, "markets stepped by each env runner")
    rollout_fragment_length: int = option(50, "env steps per runner per sample round")
    train_batch_size: int = option(1000, "env steps per training iteration (per learner)")
    minibatch_size: int = option(250, "SGD minibatch size")
    num_epochs: int = option(4, "SGD passes over each training batch")
    lr: float = option(3e-4, "learning rate (> 0)")
    gamma: float = option(0.99, "discount, in [0, 1]")
    hidden: str = option(
        "64,64", "hidden layer sizes of the policy and value MLPs (comma-separated positive ints)"
    )
    address: str = option("", "Ray address ('auto', 'HOST:6379'); empty: start a local Ray")
    num_cpus: int = option(0, "local Ray only: CPUs it may use (0: all)")
    ship_package: bool = option(
        False, "send the local recenv package to the cluster (runtime_env py_modules)"
    )
    checkpoint: bool = option(False, "save the final algorithm to OUT/checkpoint")
    out: str = option("", "output directory (must not exist); empty: runs/rllib/<run name>")
    env_config: tuple[tuple[str, Any], ...] = option((), "scenario overrides (--set env.KEY=VALUE)")

    def __post_init__(self) -> None:
        errors = []
        if self.policies not in POLICIES:
            errors.append(f"policies={self.policies!r} must be one of {list(POLICIES)}")
        if self.obs not in recenv_rllib.OBS_MODES:
            errors.append(f"obs={self.obs!r} must be one of {list(recenv_rllib.OBS_MODES)}")
        if self.env not in recenv.registered_ids():
            errors.append(f"env={self.env!r}; registered ids: {recenv.registered_ids()}")
        positive = (
            "iterations",
            "num_envs_per_env_runner",
            "rollout_fragment_length",
            "train_batch_size",
            "minibatch_size",
            "num_epochs",
        )
        for name in positive:
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("num_env_runners", "num_cpus"):
            if getattr(self, name) < 0:
                errors.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.minibatch_size > self.train_batch_size:
            errors.append(
                f"minibatch_size={self.minibatch_size} must be <= train_batch_size="
                f"{self.train_batch_size}"
            )
        # RLlib seeds numpy's global generator, which takes [0, 2**32), with seed + w in env
        # runner w (and seed in the learner).
        if not 0 <= self.seed <= 2**32 - 1 - max(self.num_env_runners, 0):
            errors.append(
                f"seed={self.seed} must be in [0, 2**32 - 1 - num_env_runners] (env runner w "
                "seeds numpy with seed + w)"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            errors.append(f"lr={self.lr} must be a finite number > 0")
        if not 0 <= self.gamma <= 1:  # False for NaN
            errors.append(f"gamma={self.gamma} must be in [0, 1]")
        if _hidden_sizes(self.hidden) is None:
            errors.append(
                f"hidden={self.hidden!r} must be a comma-separated list of positive ints "
                "(e.g. 64,64)"
            )
        if errors:
            raise ValueError("invalid rllib_train config: " + "; ".join(errors))

    @property
    def hidden_sizes(self) -> list[int]:
        sizes = _hidden_sizes(self.hidden)
        assert sizes is not None  # __post_init__ refused it
        return sizes

    def env_settings(self) -> dict[str, Any]:
        """The RLlib ``env_config``: env id, observation mode and scenario overrides."""
        return {
            "env_id": self.env,
            "obs": self.obs,
            "envs_per_env_runner": self.num_envs_per_env_runner,  # distinct seeds (rllib.py)
            **dict(self.env_config),
        }

    def run_name(self) -> str:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        env = self.env.replace("/", "_")
        return f"{env}__{self.policies}__{self.seed}__{stamp}"


def _hidden_sizes(text: Any) -> list[int] | None:
    """``"64,64"`` -> ``[64, 64]``; ``None`` unless a comma-separated list of positive ints."""
    if not isinstance(text, str):
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        return None
    return [int(p) for p in parts]


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def parse_env_override(text: str) -> tuple[str, Any]:
    """``env.KEY=VALUE`` -> ``(KEY, value)``, typed by the ``MarketConfig`` field."""
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("env."):
        raise ValueError(f"--set {text!r}: expected env.KEY=VALUE (e.g. env.horizon=50)")
    key = key[len("env.") :]
    defaults = MarketConfig()
    if key not in MarketConfig.field_names():
        raise ValueError(f"--set env.{key}: unknown key; valid: {MarketConfig.field_names()}")
    kind = type(getattr(defaults, key))
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--set env.{key}={value!r}: expected true or false")
        return key, value.lower() in ("true", "1")
    try:
        return key, kind(value)
    except ValueError:
        raise ValueError(f"--set env.{key}={value!r}: expected a {kind.__name__}") from None


_CHOICES = {"policies": POLICIES, "obs": recenv_rllib.OBS_MODES}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.rllib_train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name == "env_config":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            parser.add_argument(
                flag,
                type=type(f.default),
                default=f.default,
                choices=_CHOICES.get(f.name),
                help=f.metadata["help"],
            )
    parser.add_argument(
        "--set",
        dest="env_config",
        action="append",
        default=[],
        metavar="env.KEY=VALUE",
        help="scenario config override, repeatable (keys: recenv.MarketConfig fields)",
    )
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    args["env_config"] = tuple(parse_env_override(s) for s in args["env_config"])
    return TrainConfig(**args)


# ----------------------------------------------------------------------------------------
# RLlib configuration
# ----------------------------------------------------------------------------------------
def build_algo_config(cfg: TrainConfig):
    """The ``PPOConfig`` of a run (new API stack: RLModules, Learners, EnvRunners)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    env_name = recenv_rllib.register()
    env_config = cfg.env_settings()
    agents = list(recenv_rllib.make_pettingzoo_env(env_config).possible_agents)
    # The mapping functions are recenv's, so a checkpoint restores with recenv alone.
    if cfg.policies == "shared":
        module_ids = [SHARED_POLICY]
        mapping = recenv_rllib.shared_policy_mapping
    else:
        module_ids = agents
        mapping = recenv_rllib.per_agent_policy_mapping
    runners: dict[str, Any] = {
        "num_env_runners": cfg.num_env_runners,
        "num_envs_per_env_runner": cfg.num_envs_per_env_runner,
        "rollout_fragment_length": cfg.rollout_fragment_length,
    }
    connector = recenv_rllib.env_to_module_connector(cfg.obs)
    if connector is not None:
        runners["env_to_module_connector"] = connector
    return (
        PPOConfig()
        .environment(env_name, env_config=env_config)
        .env_runners(**runners)
        .multi_agent(policies=set(module_ids), policy_mapping_fn=mapping)
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={m: RLModuleSpec() for m in module_ids}
            ),
            model_config=DefaultModelConfig(fcnet_hiddens=cfg.hidden_sizes),
        )
        .training(
            train_batch_size_per_learner=cfg.train_batch_size,
            minibatch_size=cfg.minibatch_size,
            num_epochs=cfg.num_epochs,
            lr=cfg.lr,
            gamma=cfg.gamma,
        )
        .debugging(seed=cfg.seed, log_level="WARN")
    )


# Checkpoints written before the mapping functions moved to recenv pickled these names.
_shared_mapping = recenv_rllib.shared_policy_mapping
_per_agent_mapping = recenv_rllib.per_agent_policy_mapping


# ----------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------
def _number(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _per_key(d: Any) -> dict[str, float | None]:
    return {str(k): _number(v) for k, v in (d or {}).items()}


def iteration_summary(i: int, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The metrics of one ``algo.train()`` result kept in ``summary.json``."""
    runners = result.get("env_runners", {})
    learners = result.get("learners", {})
    return {
        "iteration": i,
        "seconds": round(seconds, 3),
        "env_steps_sampled_lifetime": _number(runners.get("num_env_steps_sampled_lifetime")),
        "episodes": _number(runners.get("num_episodes")),
        "episode_return_mean": _number(runners.get("episode_return_mean")),
        "agent_episode_returns_mean": _per_key(runners.get("agent_episode_returns_mean")),
        "module_episode_returns_mean": _per_key(runners.get("module_episode_returns_mean")),
        "learners": {
            module: {
                k: _number(v)
                for k, v in stats.items()
                if k in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "total_loss")
            }
            for module, stats in learners.items()
            if isinstance(stats, dict) and module != "__all_modules__"
        },
    }


def _output_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out) if cfg.out else Path("runs") / "rllib" / cfg.run_name()
    if out.exists():
        raise FileExistsError(f"output directory {out} exists; refusing to overwrite it")
    return out


def _init_ray(cfg: TrainConfig) -> bool:
    """Start or join Ray unless it is up; returns whether this run must shut it down."""
    import ray

    if ray.is_initialized():
        return False
    # Workers must not re-run the driver under `uv run` (Ray's uv hook); recenv is installed.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Every worker starts with this driver's fixed PYTHONHASHSEED (see
    # _restart_with_fixed_hash_seed): on a cluster the workers do not inherit the driver's
    # environment, and even locally only the job's runtime_env is sure to reach them.
    base = {"py_modules": [recenv]} if cfg.ship_package else None
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "runtime_env": recenv_rllib.runtime_env(base),
    }
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
    else:
        # "local" always starts a fresh Ray, never joins one found on the machine.
        ray.init(address="local", num_cpus=cfg.num_cpus or None, **kwargs)
    return True


@contextlib.contextmanager
def _torch_modes_kept():
    """Torch's process-wide algorithm modes as they were before, on the way out.

    RLlib's seeding (``update_global_seed_if_necessary`` -> ``set_torch_seed``) switches on
    ``torch.use_deterministic_algorithms(True)`` (and cuDNN's deterministic mode) for good, in
    every process that builds a learner or an env runner: with local learners, the caller's.
    Left on, it changes the rest of the caller's process long after the run: ATen takes its
    deterministic kernels (or raises where it has none) and torch.compile builds graphs
    differently (indexed writes as ATen calls; recenv's markets build theirs outside the
    mode, see ``recenv.core.warm.outside_deterministic_mode``). A run leaves those modes as it
    found them."""
    import torch

    from recenv.core.warm import deterministic_algorithms

    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        with deterministic_algorithms(None):
            yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def train(cfg: TrainConfig, log: Any = print) -> dict[str, Any]:
    """Run ``cfg``; write and return the summary. Uses Ray if it is already initialised
    (and leaves it running), else starts or joins it and always shuts it down. Torch's
    deterministic-algorithms mode, which RLlib's seeding turns on in this process, is set
    back as it was (:func:`_torch_modes_kept`). The run repeats in another process only if this
    one started with the same ``PYTHONHASHSEED`` (the command line restarts itself with it:
    :func:`_restart_with_fixed_hash_seed`); Ray's workers get this process's value when the run
    starts Ray."""
    with _torch_modes_kept():
        return _train(cfg, log)


def _train(cfg: TrainConfig, log: Any) -> dict[str, Any]:
    import ray

    out = _output_dir(cfg)  # refuse before any expensive work
    owns_ray = _init_ray(cfg)
    algo = None
    try:
        algo = build_algo_config(cfg).build_algo()
        iterations = []
        start = time.perf_counter()
        for i in range(1, cfg.iterations + 1):
            t0 = time.perf_counter()
            result = algo.train()
            row = iteration_summary(i, result, time.perf_counter() - t0)
            iterations.append(row)
            log(
                f"iter {i:>3}  env steps {row['env_steps_sampled_lifetime']}  "
                f"return {row['episode_return_mean']}  ({row['seconds']:.1f}s)"
            )
        summary = {
            "config": {**dataclasses.asdict(cfg), "env_config": dict(cfg.env_config)},
            "modules": sorted(algo.config.policies),
            "ray": {"address": cfg.address or "local", "nodes": len(ray.nodes())},
            "pythonhashseed": os.environ.get("PYTHONHASHSEED"),  # the driver's
            "versions": versions("ray", "gymnasium", "pettingzoo"),
            "seconds": round(time.perf_counter() - start, 3),
            "iterations": iterations,
        }
        out.mkdir(parents=True, exist_ok=False)
        if cfg.checkpoint:
            summary["checkpoint"] = str(algo.save_to_path(str((out / "checkpoint").resolve())))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        summary["out"] = str(out)
        log(f"wrote {out / 'summary.json'}")
        return summary
    finally:
        if algo is not None:
            algo.stop()
        if owns_ray:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = config_from_args(argv)
        import ray.rllib  # noqa: F401  (fail early, with the fix, when the extra is missing)

        train(cfg)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != "ray":
            raise
        print("error: RLlib is not installed: pip install -e '.[rllib]'", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _restart_with_fixed_hash_seed() -> None:
    """Run this command again, in this process, with ``PYTHONHASHSEED`` set to
    ``recenv_rllib.HASH_SEED`` (``"0"``), unless it already has it.

    RLlib batches a multi-agent episode's agents in the order of Python sets of their string
    ids (``MultiAgentEpisode.get_agents_to_act`` and friends; nothing sorts them and the ids
    cannot be made ints), and a string set's order follows the process's hash seed. So which
    agent gets which random draw of a shared module, and the learner's batch order, change with
    ``PYTHONHASHSEED``, and a ``--seed`` only repeats a run if every process of it has the same
    hash seed: the Ray workers (``_init_ray`` gives them the job's ``runtime_env``) and this
    driver, which holds the local learner and, with ``--num-env-runners 0``, samples. Python
    reads ``PYTHONHASHSEED`` only at start, so the driver gets it by starting again: on POSIX
    ``os.execve`` replaces this process (same pid, same arguments and interpreter flags);
    elsewhere a child runs the command and its exit status is returned. Only the command
    line does this; ``main(argv)`` and ``train(cfg)`` from Python run in the caller's process,
    whose hash seed is the caller's to fix.
    """
    if os.environ.get("PYTHONHASHSEED") == recenv_rllib.HASH_SEED:
        return
    env = {**os.environ, "PYTHONHASHSEED": recenv_rllib.HASH_SEED}
    spec = globals().get("__spec__")
    target = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    args = [
        sys.executable,
        # -X, -W, ... as given to this process; the helper is private: typeshed lacks it
        *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
        *target,
        *sys.argv[1:],
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(sys.executable, args, env)
    sys.exit(subprocess.call(args, env=env))


if __name__ == "__main__":
    _restart_with_fixed_hash_seed()
    sys.exit(main())
