"""Timers for the peers and the hardware limit that ``experiments.bench_env`` compares recenv with.

Each timer returns seconds per step (or bytes per second for :func:`copy_bandwidth`) of ONE timed
run; ``bench_env`` calls it ``--repeats`` times and reports the median and spread. They never
change the torch thread setting: the caller sets it, so a peer is timed under the same setting
as the recenv rows it is compared with.

- :func:`time_mpe2_spread`: ``mpe2``'s ``simple_spread_v3``, the pure-Python (numpy) PettingZoo
  reference env, through its PettingZoo parallel API; timed like recenv's PettingZoo face.
- :func:`time_vmas_spread`: VMAS's ``simple_spread``, a batched torch simulator; timed like
  recenv's batched rows.
- :func:`copy_bandwidth`: the bytes per second of a large ``dst.copy_(src)``, the memory
  bandwidth a memory-bound step can at best use.

The peers are optional (``pip install -e .[bench]``); :func:`peer_versions` says which are
installed, and the timers raise ``ImportError`` when theirs is not.
"""

from __future__ import annotations

import importlib.metadata
import os
import time

import torch

# mpe2 renders with pygame; its import banner must not break the benchmark table.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

PEERS = ("mpe2", "vmas")


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer package (``None`` when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in PEERS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def time_mpe2_spread(steps: int, warmup: int = 3, seed: int = 0, **env_kwargs) -> float:
    """Seconds per ``env.step`` of mpe2's ``simple_spread_v3.parallel_env``, one timed run.

    The env is built with mpe2's defaults (3 agents, 3 landmarks, discrete actions,
    ``max_cycles=25``) unless ``env_kwargs`` say otherwise, and reset with ``seed``. Each step
    samples one random action per live agent from ``env.action_space(agent)`` (seeded), OUTSIDE
    the timer; only the ``env.step(actions)`` call is timed (``time.perf_counter``). When the
    episode is over (``env.agents`` empty) the env is reset, also outside the timer. This is
    exactly how ``bench_env.time_pettingzoo`` times recenv's PettingZoo face. ``warmup`` untimed
    steps come first.
    """
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(**env_kwargs)
    env.reset(seed=seed)
    for i, a in enumerate(env.possible_agents):
        env.action_space(a).seed(seed + i)

    def sample():
        return {a: env.action_space(a).sample() for a in env.agents}

    for _ in range(warmup):
        if not env.agents:
            env.reset()
        env.step(sample())
    total = 0.0
    for _ in range(steps):
        if not env.agents:
            env.reset()
        acts = sample()
        t0 = time.perf_counter()
        env.step(acts)
        total += time.perf_counter() - t0
    env.close()
    return total / steps


def time_vmas_spread(
    num_envs: int,
    steps: int,
    warmup: int = 3,
    seed: int = 0,
    continuous_actions: bool = True,
    device: str = "cpu",
    **scenario_kwargs,
) -> float:
    """Seconds per batched ``env.step`` of VMAS's ``simple_spread``, one timed run.

    ``vmas.make_env("simple_spread", num_envs=num_envs, device=device,
    continuous_actions=continuous_actions, seed=seed, max_steps=None, **scenario_kwargs)``:
    VMAS's defaults (3 agents, 3 landmarks, continuous actions, infinite horizon). One step
    advances all ``num_envs`` envs. The actions (``env.get_random_action(agent)`` for each agent,
    uniform over the action range) are drawn OUTSIDE the timer; only ``env.step(actions)`` is
    timed, as in ``bench_env.time_batched``. ``simple_spread`` never terminates and no horizon is
    set, so no resets happen: unlike recenv's auto-resetting rows, the figure holds no reset
    cost (which can only favour VMAS in the recenv/VMAS ratio). ``warmup`` untimed steps come
    first. On CUDA the device is synchronised around the timed call.
    """
    import vmas

    env = vmas.make_env(
        "simple_spread",
        num_envs=num_envs,
        device=device,
        continuous_actions=continuous_actions,
        seed=seed,
        max_steps=None,
        **scenario_kwargs,
    )
    env.reset()
    cuda = torch.device(device).type == "cuda"

    def sample():
        return [env.get_random_action(a) for a in env.agents]

    for _ in range(warmup):
        env.step(sample())
    total = 0.0
    for _ in range(steps):
        acts = sample()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        env.step(acts)
        if cuda:
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
    return total / steps


def copy_bandwidth(nbytes: int = 256 * 2**20, copies: int = 3, device: str = "cpu") -> float:
    """Bytes per second (read + written) of ``dst.copy_(src)`` on float32 tensors, one timed run.

    ``src`` and ``dst`` hold ``nbytes`` each (rounded down to whole float32s) and are written
    once before timing, so no page faults land in the timer; one untimed copy warms up. Then
    ``copies`` back-to-back copies are timed together; each moves ``2 * nbytes`` (``nbytes`` read
    plus ``nbytes`` written). Runs under the caller's torch thread setting.
    """
    n = max(1, nbytes // 4)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.zeros(n, dtype=torch.float32, device=device)
    cuda = torch.device(device).type == "cuda"
    dst.copy_(src)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(copies):
        dst.copy_(src)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return 2 * n * 4 * copies / seconds
