"""Where a batched step's time goes on a GPU: ``torch.profiler`` over a few steps.

``bench_cuda`` gives env-steps/s; this says why. On a GPU an eager step is a few thousand
small kernels, so the first question is whether the GPU is busy at all: a step whose kernels
add up to far less than its wall time is bound by launching them (Python and the CUDA
driver on the host), and fusing (``compile=True``) or replaying a captured graph is what
would pay; a step whose kernels fill its wall time is bound by the kernels themselves. It
prints, for ``--num-envs`` markets:

- the wall time per step, synchronised after every step (as ``bench_cuda`` times it) and
  synchronised once after all of them (the host queues ahead of the GPU);
- the kernels' own time per step (the profiler's device time) and its share of the wall
  time, the kernels launched per step and their mean length;
- the host's waits for the GPU per step (``cudaStreamSynchronize`` and the like, beyond the
  one sync of the timer): each one stalls the queue, so a step that needs none is wanted;
- the ops that hold the most device time (and host time on a CPU run).

Each timed step includes its actions (``bench_env``'s fixed top-K policy, a few small ops
per agent), as a training loop's would.

Run it on the GPU machine (``experiments/gpu_check.sh`` does), or here on the CPU, where it
profiles host time only::

    .venv/bin/python -m experiments.profile_cuda --num-envs 262144
    .venv/bin/python -m experiments.profile_cuda --device cpu --num-envs 1024

The table and figures go to ``experiments/results/profile_cuda-<host>-<UTC time>.json``
(never overwritten).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from experiments.bench_env import _policy, provenance, result_path, warmed_env, write_result


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _device_us(event) -> float:
    """Self device (GPU) time of a profiler row, in microseconds (the attribute's name
    changed from ``self_cuda_time_total`` to ``self_device_time_total`` in torch 2.4)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0


def summarize_profile(events, averages, steps: int, cuda: bool, top: int) -> dict:
    """A profiled run of ``steps`` steps, per step: ``prof.events()`` (``events``) and
    ``prof.key_averages()`` (``averages``) of a run that ends with the timer's one
    synchronisation. Returns ``kernels_per_step``, ``kernel_s_per_step`` (the device events'
    own time), ``host_syncs_per_step`` (``None`` off CUDA), ``sorted_by`` and ``top_ops``
    (the ``top`` host ops by self device time on CUDA, self CPU time elsewhere)."""
    # Kernels are the profiler's device-side events; the host-side rows (aten ops, the
    # runtime's launch calls) carry the same time again as their children's, so the step's
    # device time is the sum over device events, not over the table.
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_us = sum(e.time_range.elapsed_us() for e in kernels)
    # The runtime calls that make the host wait for the device; the timer's own sync after
    # the last step is one of them.
    syncs = sum(e.count for e in averages if "Synchronize" in e.key) - 1
    # The host ops alone (aten::...): each kernel's time is also its op's device time, so
    # kernel rows would count it twice.
    host_ops = [e for e in averages if e.device_type == torch.autograd.DeviceType.CPU]
    rows = sorted(
        host_ops, key=lambda e: _device_us(e) if cuda else e.self_cpu_time_total, reverse=True
    )
    return {
        "kernels_per_step": len(kernels) / steps,
        "kernel_s_per_step": kernel_us / 1e6 / steps,
        "host_syncs_per_step": syncs / steps if cuda else None,
        "sorted_by": "self_device_time_total" if cuda else "self_cpu_time_total",
        "top_ops": [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "self_device_us_per_step": _device_us(e) / steps,
                "self_cpu_us_per_step": e.self_cpu_time_total / steps,
            }
            for e in rows[:top]
        ],
    }


def profile_step(env_id: str, num_envs: int, steps: int, device: str, compile: bool, top: int):
    """The figures above for ``steps`` steps of ``make_vec(env_id, num_envs)`` on ``device``
    (after three warm-up steps, compilation included). Returns a JSON-ready dict."""
    env, obs = warmed_env(env_id, num_envs, device=device, compile=compile)
    k = env.config.slate_size

    def advance(sync_each: bool) -> None:
        nonlocal obs
        for _ in range(steps):
            obs, *_ = env.step(_policy(obs, env.agents, k))
            if sync_each:
                _sync(device)

    def run(sync_each: bool) -> float:
        _sync(device)
        t0 = time.perf_counter()
        advance(sync_each)
        _sync(device)
        return (time.perf_counter() - t0) / steps

    wall_each = run(sync_each=True)
    wall_queued = run(sync_each=False)

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    with profile(activities=activities) as prof:
        advance(sync_each=False)
        _sync(device)  # the one sync of the profiled run (subtracted below)
    figures = summarize_profile(prof.events(), prof.key_averages(), steps, cuda, top)
    result = {
        **provenance(),
        "env": env_id,
        "num_envs": num_envs,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "compile": compile,
        "steps": steps,
        "wall_s_per_step_synced_each": wall_each,
        "wall_s_per_step_queued": wall_queued,
        "env_steps_per_s_synced_each": num_envs / wall_each,
        "env_steps_per_s_queued": num_envs / wall_queued,
        **figures,
        "gpu_busy_fraction": figures["kernel_s_per_step"] / wall_queued if cuda else None,
    }
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="recenv/Market-v0", help="environment id")
    p.add_argument("--num-envs", type=int, default=2**18, help="markets in the batch")
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--compile", action="store_true", help="profile the compiled step")
    p.add_argument("--top", type=int, default=25, help="ops in the table")
    p.add_argument("--out", type=Path, default=None, help="JSON path (must not exist)")
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (pass --device cpu)")
    out = result_path("profile_cuda", args.out)
    r = profile_step(args.env, args.num_envs, args.steps, args.device, args.compile, args.top)
    n = r["num_envs"]
    print(f"{args.env} on {r['device']}, {n:,} markets, compile={args.compile}, torch {r['torch']}")
    print(
        f"wall per step: {1e3 * r['wall_s_per_step_synced_each']:.2f} ms synced each step "
        f"({r['env_steps_per_s_synced_each']:,.0f} env-steps/s), "
        f"{1e3 * r['wall_s_per_step_queued']:.2f} ms queued "
        f"({r['env_steps_per_s_queued']:,.0f} env-steps/s)"
    )
    if r["gpu_busy_fraction"] is not None:
        k = r["kernels_per_step"]
        print(
            f"kernels: {k:,.0f} per step, {1e3 * r['kernel_s_per_step']:.2f} ms of device time "
            f"({100 * r['gpu_busy_fraction']:.0f}% of the queued wall time; "
            f"mean kernel {1e6 * r['kernel_s_per_step'] / max(k, 1):.1f} us); "
            f"host waits for the GPU: {r['host_syncs_per_step']:.1f} per step"
        )
    unit = "device" if r["gpu_busy_fraction"] is not None else "cpu"
    print(f"{'op':<60} {'calls/step':>10} {f'self {unit} us/step':>20}")
    for row in r["top_ops"]:
        us = row[f"self_{unit}_us_per_step"]
        print(f"{row['name'][:60]:<60} {row['calls_per_step']:>10.1f} {us:>20,.1f}")
    write_result(out, r)
    return r


if __name__ == "__main__":
    main()
