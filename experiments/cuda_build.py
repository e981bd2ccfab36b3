"""Build the compiled CUDA step's Triton kernels on a machine without a GPU.

    pip install -e '.[cuda-build]'                      # Triton (~290 MB wheel; ptxas inside)
    .venv/bin/python -m experiments.cuda_build          # Market-v0: 1,024 markets and the face
    .venv/bin/python -m experiments.cuda_build --num-envs 16384 --config num_items=1000000
    .venv/bin/python -m experiments.cuda_build --device a100
    .venv/bin/python -m experiments.cuda_build --env recenv/FromLog-v0 --log PATH/ratings.csv
    .venv/bin/python -m experiments.cuda_build --cpu-form weyl   # the form the first GPU refused

The first GPU lent to this project spent its session finding that the compiled CUDA step
did not build: Triton refused a constant of ``rng.weyl`` (fixed since, unverified on a GPU
until this check). Here each compiled step of a market, ``_serve`` at ``--num-envs``
markets and the PettingZoo face's ``_serve_face`` at one, is traced by Dynamo on the CPU
with the forms the step takes on CUDA (every device-dependent form of ``recenv.core``,
:data:`CUDA_FORMS`, and no native kernels), moved to a fake ``cuda:0``
(:mod:`experiments.fake_cuda`) and compiled by inductor with the options
:meth:`BatchedMarket.compile` uses on CUDA (``recenv.core.market.inductor_options``):
every Triton kernel of the graph through Triton's compiler and ``ptxas`` to a cubin for
the device's compute capability (an H100's 9.0 unless ``--device``). A kernel that would
not build on the GPU fails here; what a GPU alone shows (autotuning's pick, memory,
numbers, speed) is ``experiments/gpu_check.sh``'s.

Prints one row per graph (kernels built, configs compiled, seconds) and writes
``experiments/results/cuda_build-<host>-<UTC time>.json`` (never overwritten). Exit status:
0 when every graph built, 1 when Triton or ``ptxas`` refused a kernel (the row names it),
2 when the fake device could not be set up here (no Triton, a torch with CUDA, internals
that moved: nothing is said about the step).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from experiments import fake_cuda
from experiments.bench_env import _policy, provenance, result_path, write_result
from experiments.config import add_market_arguments, parse_market_overrides
from recenv.core import indexing, rng, warm
from recenv.core.market import inductor_options

# Each device-dependent form of the step: module state naming the devices that take the
# CPU's form (see each). Emptied while tracing, the CPU traces what CUDA would.
CUDA_FORMS: dict[str, tuple[Any, str]] = {
    "weyl": (rng, "FOLD_WEYL_ON"),
    "cumsum": (indexing, "ATEN_CUMSUM_EXACT_ON"),
    "row_mean": (indexing, "ROW_MEAN_AS_BATCH_ON"),
}

# The graphs a compiled market builds: its step at a batch, and the face's at one market.
STEPS = ("_serve", "_serve_face")


@contextlib.contextmanager
def cuda_forms(keep_cpu: Sequence[str] = ()) -> Iterator[None]:
    """Inside, the step takes CUDA's form of each entry of :data:`CUDA_FORMS` on the CPU,
    except those named in ``keep_cpu``."""
    unknown = sorted(set(keep_cpu) - set(CUDA_FORMS))
    if unknown:
        raise ValueError(f"unknown form(s) {unknown}; known: {sorted(CUDA_FORMS)}")
    saved = {name: getattr(owner, attr) for name, (owner, attr) in CUDA_FORMS.items()}
    try:
        for name, (owner, attr) in CUDA_FORMS.items():
            if name not in keep_cpu:
                setattr(owner, attr, frozenset())
        yield
    finally:
        for name, (owner, attr) in CUDA_FORMS.items():
            setattr(owner, attr, saved[name])


def capture(
    env_id: str, step: str, num_envs: int, config: dict[str, Any], keep_cpu: Sequence[str] = ()
) -> list[tuple[torch.fx.GraphModule, list[Any]]]:
    """The graphs Dynamo makes of market method ``step`` (one of :data:`STEPS`) for a
    compiled CUDA market of ``num_envs`` markets, traced on the CPU with CUDA's forms: the
    market is built, reset and stepped once by the benchmark policy through a backend that
    keeps each graph and its example inputs and runs it as traced. More than one graph
    means a graph break (the compiled market would then not run as one graph)."""
    import recenv

    graphs: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def keep(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append((gm, list(example_inputs)))
        return gm.forward

    with cuda_forms(keep_cpu):
        env = recenv.make_vec(env_id, num_envs=num_envs, seed=0, **config)
        env._native_kernels = False  # CPU-only kernels (recenv.core.native)
        env.compiled = True  # as compile() sets it: the fusable forms
        own = warm.own_code(getattr(env, step))
        setattr(env, step, torch.compile(own, backend=keep, dynamic=False))
        obs = env.reset(seed=0)
        actions = _policy(obs, env.agents, env.config.slate_size)
        if step == "_serve":
            env.step(actions)
        else:
            env._step_face(*env._check_actions(actions))
    return graphs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_market_arguments(p, num_envs=1024)
    p.add_argument(
        "--device", default="h100", choices=sorted(fake_cuda.DEVICES), help="the GPU faked"
    )
    p.add_argument(
        "--cpu-form",
        action="append",
        default=[],
        choices=sorted(CUDA_FORMS),
        help="keep the CPU's form of this part of the step (repeatable): would it build?",
    )
    p.add_argument("--no-face", action="store_true", help="skip the one-market face graph")
    p.add_argument(
        "--wide-index",
        action="store_true",
        help="build every kernel with 64-bit indices, inductor's form for a kernel that\n"
        "touches a buffer of 2^31 elements or more (Market-v0's item counters from\n"
        "~358k markets): the 2^19 and 2^20 batches' kernels, too large to trace here",
    )
    p.add_argument("--log", default=None, help="the interaction log of recenv/FromLog-v0")
    p.add_argument("--out", type=Path, default=None, help="JSON path (must not exist)")
    args = p.parse_args(argv)
    if args.num_envs < 2:
        p.error("--num-envs must be at least 2 (the face's one-market graph is built anyway)")
    config = parse_market_overrides(args.config)
    if args.log is not None:
        config["log"] = args.log
    out = result_path("cuda_build", args.out)

    # Traced before the device is faked: the CPU market must not see a CUDA it would use.
    todo = [("_serve", args.num_envs)] + ([] if args.no_face else [("_serve_face", 1)])
    captured = {(s, n): capture(args.env, s, n, config, args.cpu_form) for s, n in todo}
    result: dict[str, Any] = {
        "env": args.env,
        "config": config,
        "device": args.device,
        "cpu_forms": args.cpu_form,
        "wide_index": args.wide_index,
        "triton": fake_cuda.triton_version(),
        "options": inductor_options(fake_cuda.CUDA),
        **provenance(),
        "graphs": [],
    }
    try:
        fake_cuda.install(args.device)
    except fake_cuda.HarnessError as e:
        print(f"cannot fake a CUDA device here: {e}")
        result["harness_error"] = str(e)
        write_result(out, result)
        return 2
    props = torch.cuda.get_device_properties(0)
    what = args.env + (f" {config}" if config else "")
    kept = f"; CPU forms kept: {', '.join(args.cpu_form)}" if args.cpu_form else ""
    kept += "; 64-bit indices in every kernel" if args.wide_index else ""
    print(
        f"recenv CUDA build: {what} for a faked {props.name} (sm_{props.major}{props.minor}); "
        f"torch {torch.__version__}, triton {result['triton']}{kept}"
    )
    header = ("graph", "markets", "nodes", "kernels", "configs", "s")
    print("{:<12} {:>8} {:>6} {:>8} {:>8} {:>6}  result".format(*header))
    status = 0
    for (step, num_envs), graphs in captured.items():
        for i, (gm, inputs) in enumerate(graphs):
            row: dict[str, Any] = {
                "step": step,
                "graph": i,
                "graphs": len(graphs),
                "num_envs": num_envs,
                "nodes": len(gm.graph.nodes),
            }
            try:
                built = fake_cuda.build(
                    fake_cuda.graph_on_cuda(gm),
                    fake_cuda.fake_inputs(inputs),
                    inductor_options(fake_cuda.CUDA),
                    wide_index=args.wide_index,
                )
                row.update(
                    built=True,
                    kernels=len(built.kernels),
                    configs=sum(c for _, c in built.kernels),
                    seconds=round(built.seconds, 1),
                    kernel_names=[name for name, _ in built.kernels],
                )
                text = "built" + (f" (graph {i + 1} of {len(graphs)})" if len(graphs) > 1 else "")
            except fake_cuda.KernelBuildError as e:
                row.update(built=False, error=str(e))
                status = max(status, 1)
                text = "FAILED: " + str(e).replace("\n", "\n    ")
            except fake_cuda.HarnessError as e:
                row.update(built=None, harness_error=str(e))
                status = 2
                text = "harness: " + str(e).replace("\n", "\n    ")
            result["graphs"].append(row)
            print(
                f"{step:<12} {num_envs:>8,} {row['nodes']:>6} {row.get('kernels', '-'):>8} "
                f"{row.get('configs', '-'):>8} {row.get('seconds', '-'):>6}  {text}"
            )
    write_result(out, result)
    return status


if __name__ == "__main__":
    sys.exit(main())
