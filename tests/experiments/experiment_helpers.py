"""Helpers of the experiment runner's tests: tiny run configs, a subprocess runner, a tiny log.

Every run here is a few dozen batched steps of a few markets with a short horizon, so the
whole directory stays fast on a shared two-core machine; torch runs single-threaded (the
runner's default ``threads=1``). Imported as ``experiment_helpers`` (pytest puts this directory
on ``sys.path``, as for ``tests/agents/known_answer.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments.config import RunConfig

REPO = Path(__file__).resolve().parents[2]


def tree(path: Path) -> dict[str, tuple[str, int]]:
    """Every file and directory under ``path``: content hash (files) and mtime (ns)."""
    return {
        str(p.relative_to(path)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
            p.stat().st_mtime_ns,
        )
        for p in sorted(path.rglob("*"))
    }


# A learning agent that updates within a few dozen steps.
TINY_IQL = {
    "batch_size": 16,
    "hidden": (16,),
    "choice_hidden": (8,),
    "learning_starts": 16,
    "update_every": 4,
    "buffer_size": 2000,
    "metrics_every": 2,
}
TINY_ENV = (("horizon", 10), ("num_items", 300), ("num_users", 8))


def tiny_run(root: Path, **fields) -> RunConfig:
    """A RunConfig of a few seconds at most: 4 markets, horizon 10, 160 env steps."""
    base = dict(
        env="recenv/Market-v0",
        agent="iql",
        seed=0,
        num_envs=4,
        total_steps=160,
        eval_episodes=4,
        log_every=20,
        checkpoint_every=40,
        keep_checkpoints=10,
        root=str(root),
        quiet=True,
        env_overrides=TINY_ENV,
        agent_overrides=tuple(sorted(TINY_IQL.items())),
    )
    base.update(fields)
    return RunConfig(**base)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["CI"] = "true"  # quiet: no progress bars in captured output
    return env


def run_cli(*args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m experiments ARGS`` in a subprocess (repo root as cwd)."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"`python -m experiments {' '.join(args)}` exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def killed_copy(done: Path, where: Path, last_step: int) -> Path:
    """A copy (under ``where``) of the finished run ``done`` as a process killed after its
    ``last_step`` checkpoint leaves it: no DONE, summary, agent.pt or curve, and no later
    checkpoint."""
    run = where / done.name
    shutil.copytree(done, run)
    for name in ("DONE", "summary.json", "agent.pt", "curve.csv"):
        (run / name).unlink()
    for ckpt in (run / "checkpoints").glob("step_*.pt"):
        if int(ckpt.stem.removeprefix("step_")) > last_step:
            ckpt.unlink()
    return run


def tensorboard(run: Path) -> tuple[dict[str, list[tuple[int, float]]], int]:
    """Every scalar tag's points (``charts/sps`` as steps only: it is wall clock) and how
    many hyperparameter texts there are, as TensorBoard shows them: the same through its
    legacy loader and the one its Python server uses (``--load_fast=false``), which honours
    a purge only at a run's second ``SessionLog.START``."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert steps == sorted(set(steps)), f"{tag}: steps repeat or go back: {steps}"
        scalars[tag] = [(e.step, 0.0 if tag == "charts/sps" else e.value) for e in events]
    server = plugin_event_accumulator.EventAccumulator(str(run))
    server.Reload()
    served = {
        tag: [
            (
                e.step,
                0.0 if tag == "charts/sps" else float(tensor_util.make_ndarray(e.tensor_proto)),
            )
            for e in server.Tensors(tag)
        ]
        for tag in server.Tags()["tensors"]
        if tag in scalars
    }
    assert served == scalars, "TensorBoard's server reads the run differently"
    texts = len(server.Tensors("hyperparameters/text_summary"))
    return scalars, texts


def tiny_log(tmp_path: Path) -> Path:
    """A log file ``tmp_path/log/ratings_tiny.csv``: 40 users, ~700 timestamped
    interactions with ~400 of 800 items (enough items for a FromLog market's retrieval
    lists), each user's in time order."""
    rng = np.random.default_rng(0)
    lines = ["user,item,timestamp"]
    for u in range(40):
        items = rng.choice(800, size=int(rng.integers(5, 30)), replace=False)
        lines += [f"{u},{i},{1000 * u + 10 * k}" for k, i in enumerate(items)]
    path = tmp_path / "log" / "ratings_tiny.csv"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_gpu(monkeypatch, bench_cuda, time_batched) -> None:
    """``experiments.bench_cuda`` on a fake GPU: ``time_batched`` times the markets, the copy
    moves 1e12 bytes/s, and bytes per step are counted on 4 CPU markets."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "fake GPU")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(bench_cuda, "time_batched", time_batched)
    monkeypatch.setattr(bench_cuda, "copy_bandwidth", lambda nbytes, device: 1e12)
    monkeypatch.setattr(bench_cuda, "TRAFFIC_ENVS", 4)
