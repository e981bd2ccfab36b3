"""Bit-for-bit check that a change left the simulation's trajectories as they were.

A speed change must not change what the simulation means; the strongest check is that eager
trajectories stay identical to the last bit. This script feeds everything a fixed set of runs
produces into one SHA-256 per configuration: ``--steps`` batched steps of ``--num-envs``
markets (observations, rewards, ends, info dicts with episode metrics, ``state()``; random
and oracle slates alternately) and ``--face-steps`` steps of the PettingZoo face (its numpy
observations, rewards, ends, infos and ``state()``), for Market-, ECommerce-, Video- and
Music-v0, hashed item counters, three agents and ``platform_choice``::

    .venv/bin/python -m experiments.trajectory_hash                 # digests of this tree
    .venv/bin/python -m experiments.trajectory_hash --base HEAD~1   # ... and compare with a commit

With ``--base``, the base commit is checked out into a temporary git worktree and hashed in a
child process that imports only that tree's ``recenv`` (by this tree's hashing code); the
exit status is 1 when any digest differs. Eager only: compiled steps agree with eager ones up
to floating-point rounding, not bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

CONFIGS: list[tuple[str, dict]] = [
    ("recenv/Market-v0", {}),
    ("recenv/ECommerce-v0", {}),
    ("recenv/Video-v0", {}),
    ("recenv/Music-v0", {}),
    ("recenv/Market-v0", {"num_items": 5000, "item_stats_size": 300}),  # hashed counters
    ("recenv/Market-v0", {"num_agents": 3}),
    ("recenv/Market-v0", {"topology": "platform_choice"}),
]


def _feed(h, x) -> None:
    """Everything in ``x`` (nested dicts, sequences, tensors, arrays, scalars) into ``h``."""
    if isinstance(x, dict):
        for k in sorted(x, key=str):
            h.update(str(k).encode())
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(b"[")
        for v in x:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(x, torch.Tensor):
        h.update(f"{x.dtype}{tuple(x.shape)}".encode())
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(x, np.ndarray):
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        h.update(repr(x).encode())


def digest(env_id: str, config: dict, steps: int, num_envs: int, face_steps: int) -> str:
    """SHA-256 of one configuration's batched and PettingZoo-face trajectories (eager)."""
    import recenv

    h = hashlib.sha256()
    env = recenv.make_vec(env_id, num_envs=num_envs, seed=3, **config)
    obs = env.reset()
    _feed(h, obs)
    K = env.config.slate_size
    for t in range(steps):
        if t % 2:
            acts = dict(zip(env.agents, env.oracle_slates().unbind(1), strict=True))
        else:
            g = torch.Generator().manual_seed(t)
            acts = {}
            for a in env.agents:
                mask = obs[a]["action_mask"]
                score = torch.rand(mask.shape, generator=g, dtype=torch.float32, device="cpu")
                score = score.masked_fill(~mask, -1.0)
                acts[a] = score.topk(K, dim=-1).indices
        out = env.step(acts)
        obs = out[0]
        _feed(h, out)
        _feed(h, env.state())
    face = recenv.make(env_id, seed=5, **config)
    o, info = face.reset()
    _feed(h, (o, info))
    rng = np.random.default_rng(0)
    for _ in range(face_steps):
        if not face.agents:
            o, info = face.reset()
            _feed(h, (o, info))
        # The face's own names: its actions and step are numpy, the batched env's torch.
        face_acts = {
            a: rng.choice(np.flatnonzero(o[a]["action_mask"]), K, replace=False)
            for a in face.agents
        }
        face_out = face.step(face_acts)
        o = face_out[0]
        _feed(h, face_out)
        _feed(h, face.state())
    return h.hexdigest()


def digests(steps: int = 250, num_envs: int = 4, face_steps: int = 120) -> dict[str, str]:
    """``{label: SHA-256}`` over :data:`CONFIGS`, on one torch thread."""
    torch.set_num_threads(1)
    return {
        f"{env_id} {json.dumps(cfg, sort_keys=True)}": digest(
            env_id, cfg, steps, num_envs, face_steps
        )
        for env_id, cfg in CONFIGS
    }


# Runs in a child whose sys.path starts at the base tree; this file is loaded by path.
_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("trajectory_hash_here", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
import recenv
steps, num_envs, face_steps = map(int, sys.argv[2:5])
print(json.dumps({"digests": mod.digests(steps, num_envs, face_steps), "recenv": recenv.__file__}))
"""


def digests_at(rev: str, steps: int, num_envs: int, face_steps: int) -> dict[str, str]:
    """The digests of commit ``rev`` (checked out into a temporary worktree)."""
    from experiments.ab_commits import checkout, run_in_tree

    with checkout(rev) as tree:
        args = (str(Path(__file__).resolve()), str(steps), str(num_envs), str(face_steps))
        return run_in_tree(tree, _CHILD, *args)["digests"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default=None, help="commit to compare with (e.g. HEAD~1)")
    p.add_argument("--steps", type=int, default=250, help="batched steps per configuration")
    p.add_argument("--num-envs", type=int, default=4, help="markets of the batched runs")
    p.add_argument("--face-steps", type=int, default=120, help="PettingZoo-face steps")
    args = p.parse_args(argv)
    here = digests(args.steps, args.num_envs, args.face_steps)
    base = None
    if args.base is not None:
        base = digests_at(args.base, args.steps, args.num_envs, args.face_steps)
    differ = 0
    for label, d in here.items():
        line = f"{d[:16]}  {label}"
        if base is not None:
            same = base.get(label) == d
            differ += not same
            line += "  identical" if same else f"  DIFFERS (base {str(base.get(label))[:16]})"
        print(line)
    if base is not None:
        print(
            f"{len(here) - differ} of {len(here)} configurations identical to {args.base}"
            + ("" if differ == 0 else ": the change alters trajectories")
        )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
