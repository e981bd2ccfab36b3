"""Build the compiled CUDA step's Triton kernels on a machine without a GPU.

    pip install -e '.[cuda-build]'                      # Triton (~290 MB wheel; ptxas inside)
    .venv/bin/python -m experiments.cuda_build          # Market-v0: 1,024 markets and the face
    .venv/bin/python -m experiments.cuda_build --num-envs 16384 --config num_items=1000000
    .venv/bin/python -m experiments.cuda_build --device a100    # or h200 (the GPU once lent)
    .venv/bin/python -m experiments.cuda_build --env recenv/FromLog-v0 --log PATH/ratings.csv
    .venv/bin/python -m experiments.cuda_build --cpu-form weyl   # the form the first GPU refused
    .venv/bin/python -m experiments.cuda_build --interpret 12 --num-envs 16 --config horizon=5

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

With ``--interpret STEPS`` nothing is compiled to a cubin: the kernels run in Triton's
interpreter on the CPU (``TRITON_INTERPRET=1``, set here before Triton is imported), inside a
market stepped ``STEPS`` times beside an eager one, and everything the two hold and return is
compared after every step (:func:`interpret`): the compiled CUDA step's numbers, to
rounding (``libdevice`` calls run as Triton math). Slow: use a few markets.

Each built graph's traffic is inductor's own estimate of the bytes its kernels and extern
calls (cuBLAS's ``bmm``) read and write a step (:class:`fake_cuda.Build`), printed beside the
market's model of what a step must move (``step_traffic_bytes``, the bytes ``bench_env``
divides by the copy bandwidth); the peak bandwidth of the device faked
(:data:`fake_cuda.PEAK_BANDWIDTH`) over it is a ceiling on env-steps/s, and the GPU target
(``bench_cuda.TARGET_CUDA_STEPS``) over that ceiling the share of the peak the kernels would
have to reach. Arithmetic from sizes, not a measurement: what the GPU makes of it is
``gpu_check.sh``'s to say.

Prints one row per graph (kernels built, configs compiled, seconds) and its traffic, and writes
``experiments/results/cuda_build-<host>-<UTC time>.json`` (never overwritten). Exit status:
0 when every graph built (or agreed), 1 when Triton or ``ptxas`` refused a kernel (the row
names it) or an interpreted step disagreed, 2 when the fake device could not be set up here
(no Triton, a GPU in sight, internals that moved: nothing is said about the step).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import recenv
from experiments import fake_cuda, snapshot
from experiments.bench_cuda import TARGET_CUDA_STEPS
from experiments.bench_env import (
    _policy,
    core_footprint,
    patched,
    provenance,
    result_path,
    write_result,
)
from experiments.config import add_market_arguments, parse_market_overrides
from recenv.core import indexing, market, rng, warm
from recenv.core.market import inductor_options

# Each device-dependent form of the step: module state naming the devices that take the
# CPU's form (see each). Emptied while tracing, the CPU traces what CUDA would.
CUDA_FORMS: dict[str, tuple[Any, str]] = {
    "weyl": (rng, "FOLD_WEYL_ON"),
    "cumsum": (indexing, "ATEN_CUMSUM_EXACT_ON"),
    "row_mean": (indexing, "ROW_MEAN_AS_BATCH_ON"),
    "separate_gathers": (market, "SEPARATE_GATHERS_ON"),
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
    with contextlib.ExitStack() as forms:
        for name, (owner, attr) in CUDA_FORMS.items():
            if name not in keep_cpu:
                forms.enter_context(patched(owner, attr, frozenset()))
        yield


def _market(
    env_id: str, step: str, num_envs: int, config: dict[str, Any], backend: Any = None
) -> Any:
    """A market of ``env_id`` (seed 0) as a CUDA market steps, for use inside
    :func:`cuda_forms`: without the CPU-only native kernels; with a Dynamo ``backend``, its
    method ``step`` (one of :data:`STEPS`) compiled through it with the fusable forms on, as
    :meth:`BatchedMarket.compile` sets them."""
    env = recenv.make_vec(env_id, num_envs=num_envs, seed=0, **config)
    env._native_kernels = False
    if backend is not None:
        env.compiled = True
        own = warm.own_code(getattr(env, step))
        setattr(env, step, torch.compile(own, backend=backend, dynamic=False))
    return env


def _advance(env: Any, step: str, actions: dict[str, torch.Tensor]) -> Any:
    """One step of ``env`` through its method ``step``: the batched step's ``(obs, rewards,
    terminated, truncated, info)``, or the face's ``(scalars, info)``."""
    if step == "_serve":
        return env.step(actions)
    return env._step_face(*env._check_actions(actions))


def capture(
    env_id: str, step: str, num_envs: int, config: dict[str, Any], keep_cpu: Sequence[str] = ()
) -> list[tuple[torch.fx.GraphModule, list[Any]]]:
    """The graphs Dynamo makes of market method ``step`` (one of :data:`STEPS`) for a
    compiled CUDA market of ``num_envs`` markets, traced on the CPU with CUDA's forms: the
    market is built, reset and stepped once by the benchmark policy through a backend that
    keeps each graph and its example inputs and runs it as traced. More than one graph
    means a graph break (the compiled market would then not run as one graph)."""
    graphs: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def keep(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append((gm, list(example_inputs)))
        return gm.forward

    with cuda_forms(keep_cpu):
        env = _market(env_id, step, num_envs, config, backend=keep)
        obs = env.reset(seed=0)
        _advance(env, step, _policy(obs, env.agents, env.config.slate_size))
    return graphs


def disagreement(expected: Any, got: Any) -> tuple[str | None, float]:
    """``(the first path where got differs from expected, or None; the largest absolute
    difference of their floating-point tensors)``: integers, booleans and plain values
    exactly, floats (tensors and plain) as the compiled-step tests compare them (rtol 1e-4,
    atol 1e-5; NaN equal to NaN)."""
    a, b = snapshot.leaves(expected), snapshot.leaves(got)
    if a.keys() != b.keys():
        return f"paths differ: {sorted(set(a) ^ set(b))[:5]}", float("nan")
    largest = 0.0
    for path, x in a.items():
        y = b[path]
        if isinstance(x, float) and isinstance(y, float):  # (the face's scalars)
            if not (math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) or (x != x and y != y)):
                return path, largest
            if math.isfinite(x) and math.isfinite(y):
                largest = max(largest, abs(x - y))
            continue
        if not isinstance(x, torch.Tensor):
            if x != y:
                return path, largest
            continue
        if not isinstance(y, torch.Tensor) or x.shape != y.shape or x.dtype != y.dtype:
            return f"{path} (shape or dtype)", largest
        if x.is_floating_point():
            if x.numel():
                finite = torch.isfinite(x) & torch.isfinite(y)
                if finite.any():
                    largest = max(largest, (x[finite] - y[finite]).abs().max().item())
            if not torch.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True):
                return path, largest
        elif not torch.equal(x, y):
            return path, largest
    return None, largest


def interpret(
    env_id: str,
    step: str,
    num_envs: int,
    config: dict[str, Any],
    steps: int,
    keep_cpu: Sequence[str] = (),
    wide_index: bool = False,
) -> dict[str, Any]:
    """Run market method ``step`` (one of :data:`STEPS`) of a compiled CUDA market of
    ``num_envs`` markets for ``steps`` steps with its graph built for the faked device and
    every kernel run by Triton's interpreter on the CPU, beside an eager market, both in
    CUDA's forms and driven by the benchmark policy: after the reset and after each step,
    everything the two markets hold and return must agree (integers exactly, floats to
    rounding: :func:`disagreement`). ``wide_index``: the kernels in their 64-bit-index form
    (as :func:`fake_cuda.build`). Needs :func:`fake_cuda.install` under the interpreter.
    Returns the row of the report: steps that agreed, the episode ends they crossed (each
    followed by its reset, compared: inside a batch's step, by ``reset()`` for the face), the
    first disagreement (step, path), the largest float difference, kernels run, seconds."""
    options = inductor_options(fake_cuda.CUDA)
    builds: list[fake_cuda.Build] = []

    def build_on_first_call(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        built: list[fake_cuda.Build] = []

        def call(*args: Any) -> Any:
            if not built:
                inputs = fake_cuda.fake_inputs(args)
                gm_cuda = fake_cuda.graph_on_cuda(gm)
                built.append(fake_cuda.build(gm_cuda, inputs, options, wide_index))
                builds.append(built[0])
            return built[0].call(*args)

        return call

    start = time.perf_counter()
    row: dict[str, Any] = {"step": step, "num_envs": num_envs, "steps": steps}
    with cuda_forms(keep_cpu):
        eager = _market(env_id, step, num_envs, config)
        built = _market(env_id, step, num_envs, config, backend=build_on_first_call)

        def state(env: Any, returned: Any) -> dict[str, Any]:
            # (`compiled` is the one attribute meant to differ.)
            held = {k: v for k, v in vars(env).items() if k != "compiled"}
            return {"returned": returned, "market": held, "observe": env.observe()}

        obs = eager.reset(seed=0)
        where, largest = disagreement(state(eager, obs), state(built, built.reset(seed=0)))
        at = "the reset"
        agreed = ends = 0
        while where is None and agreed < steps:
            actions = _policy(obs, eager.agents, eager.config.slate_size)
            expected, got = _advance(eager, step, actions), _advance(built, step, actions)
            if step == "_serve":
                obs = expected[0]
            else:  # (the face's step returns no observation; reading it caches it: both)
                obs = eager.observe()
                built.observe()
            where, diff = disagreement(state(eager, expected), state(built, got))
            largest = max(largest, diff)
            at = f"step {agreed + 1}"
            if where is None:
                agreed += 1
                if step == "_serve":  # (a batch resets its ended markets inside the step)
                    ends += bool((expected[2] | expected[3]).any())
                elif expected[0][0] or expected[0][1]:  # the face's episode ended: reset both
                    at = f"the reset after step {agreed}"
                    obs = eager.reset()
                    where, diff = disagreement(state(eager, obs), state(built, built.reset()))
                    largest = max(largest, diff)
                    ends += 1
    row.update(
        agreed=agreed,
        episode_ends=ends,
        disagreement=None if where is None else f"{at}: {where}",
        largest_float_difference=largest,
        graphs=len(builds),
        seconds=round(time.perf_counter() - start, 1),
    )
    return row


def _run_interpreted(
    args: argparse.Namespace,
    config: dict[str, Any],
    todo: list[tuple[str, int]],
    result: dict[str, Any],
    out: Path,
) -> int:
    """``--interpret``: :func:`interpret` for each graph; the table, the JSON, the exit
    status (as the build's)."""
    result["interpreted"] = []
    status = 0
    header = ("graph", "markets", "steps", "agreed", "largest diff", "s")
    print("{:<12} {:>8} {:>7} {:>7} {:>12} {:>6}  result".format(*header))
    for step, num_envs in todo:
        row: dict[str, Any]
        try:
            row = interpret(
                args.env, step, num_envs, config, args.interpret, args.cpu_form, args.wide_index
            )
            where = row["disagreement"]
            text = "agree" if where is None else f"DISAGREE at {where}"
            status = max(status, 0 if where is None else 1)
        except (fake_cuda.HarnessError, fake_cuda.KernelBuildError) as e:
            row = {"step": step, "num_envs": num_envs, "error": str(e)}
            text = f"{type(e).__name__}: {e}"
            status = 2 if isinstance(e, fake_cuda.HarnessError) else max(status, 1)
        result["interpreted"].append(row)
        print(
            f"{step:<12} {num_envs:>8,} {args.interpret:>7} {row.get('agreed', '-'):>7} "
            f"{row.get('largest_float_difference', float('nan')):>12.3g} "
            f"{row.get('seconds', '-'):>6}  {text}"
        )
    write_result(out, result)
    return status


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
    p.add_argument(
        "--interpret",
        type=int,
        default=0,
        metavar="STEPS",
        help="instead of building cubins, run each graph's kernels in Triton's interpreter\n"
        "on the CPU for STEPS steps beside an eager market, comparing all they hold\n"
        "(slow: ~3 s a step at 16 markets, ~100 s at 1,024; use a small --num-envs)",
    )
    p.add_argument("--log", default=None, help="the interaction log of recenv/FromLog-v0")
    p.add_argument("--out", type=Path, default=None, help="JSON path (must not exist)")
    args = p.parse_args(argv)
    if args.num_envs < 2:
        p.error("--num-envs must be at least 2 (the face's one-market graph is built anyway)")
    if args.interpret < 0:
        p.error("--interpret takes a number of steps (0: build cubins instead)")
    if args.interpret and not fake_cuda.interpreting():
        if "triton" in sys.modules:  # (its jit decorator reads the setting on import)
            p.error("Triton is already imported: run with TRITON_INTERPRET=1 set")
        os.environ["TRITON_INTERPRET"] = "1"
    config = parse_market_overrides(args.config)
    if args.log is not None:
        config["log"] = args.log
    try:  # the scenario and its config, refused before any work (one market, cheap)
        recenv.make_vec(args.env, num_envs=1, seed=0, **config)
    except (ValueError, TypeError, OSError) as e:
        p.error(f"{args.env} with {config}: {e}")
    out = result_path("cuda_build", args.out)

    todo = [("_serve", args.num_envs)] + ([] if args.no_face else [("_serve_face", 1)])
    # Traced before the device is faked: the CPU market must not see a CUDA it would use.
    # (The interpreter's markets trace as they step, after.)
    captured, model = {}, {}
    if not args.interpret:
        captured = {(s, n): capture(args.env, s, n, config, args.cpu_form) for s, n in todo}
        model = {(s, n): model_traffic(args.env, n, config) for s, n in todo}
    result: dict[str, Any] = {
        "env": args.env,
        "config": config,
        "device": args.device,
        "cpu_forms": args.cpu_form,
        "wide_index": args.wide_index,
        "interpret_steps": args.interpret,
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
    device_name = props.name.removesuffix(" (faked)")
    what = args.env + (f" {config}" if config else "")
    kept = f"; CPU forms kept: {', '.join(args.cpu_form)}" if args.cpu_form else ""
    kept += "; 64-bit indices in every kernel" if args.wide_index else ""
    print(
        f"recenv CUDA build: {what} for a faked {device_name} (sm_{props.major}{props.minor}); "
        f"torch {torch.__version__}, triton {result['triton']}{kept}"
    )
    if args.interpret:
        return _run_interpreted(args, config, todo, result, out)
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
                    configs=sum(k.configs for k in built.kernels),
                    seconds=round(built.seconds, 1),
                    kernel_names=[k.name for k in built.kernels],
                    **traffic(built, num_envs, args.device, model.get((step, num_envs))),
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
    for row in result["graphs"]:
        if row.get("traffic_bytes") is not None:
            print(traffic_line(row, device_name))
    if any(r.get("built") and r.get("traffic_bytes") is None for r in result["graphs"]):
        why = (
            ""
            if fake_cuda.ESTIMATES_TRAFFIC
            else f" (torch {torch.__version__}'s inductor makes none here)"
        )
        print(f"traffic: no estimate of the bytes each kernel moves{why}")
    write_result(out, result)
    return status


def model_traffic(env_id: str, num_envs: int, config: dict[str, Any]) -> dict[str, int] | None:
    """The market's own model of the bytes a step of ``num_envs`` markets must move
    (``step_traffic_bytes``, what ``bench_env`` divides by the copy bandwidth), or None."""
    return core_footprint(env_id, num_envs, **config)["step_traffic_bytes"]


def traffic(
    built: fake_cuda.Build, num_envs: int, device: str, model: dict[str, int] | None
) -> dict[str, Any]:
    """A built graph's traffic fields: inductor's estimate of the bytes a call moves
    (:class:`fake_cuda.Build`), in all and per market, each kernel's and extern call's;
    beside the market's own model (``model``: ``step_traffic_bytes`` at ``num_envs``); and
    what the estimate allows at ``device``'s peak bandwidth, an upper bound: env-steps/s if
    every kernel ran at the peak, and the share of the peak the GPU target needs (for a
    batch: one market's step is bound by its kernel launches)."""
    total = built.traffic
    if total is None:
        return {"traffic_bytes": None}
    per_market = total / num_envs
    row: dict[str, Any] = {
        "traffic_bytes": total,
        "traffic_bytes_per_market": per_market,
        "kernel_bytes": {k.name: k.bytes for k in built.kernels},
        "extern_bytes": [list(e) for e in built.extern],
    }
    if model is not None:
        row["model_bytes_per_market"] = {k: v / num_envs for k, v in model.items()}
    if num_envs == 1:  # (one market's step waits on its ~70 launches, not on memory)
        return row
    peak = fake_cuda.PEAK_BANDWIDTH[device]
    row["peak_bandwidth"] = peak
    row["ceiling_env_steps_per_s"] = num_envs * peak / total
    row["target_env_steps_per_s"] = TARGET_CUDA_STEPS
    row["target_share_of_peak"] = TARGET_CUDA_STEPS * per_market / peak
    return row


def traffic_line(row: dict[str, Any], device_name: str) -> str:
    """What a built graph's traffic fields say, in words (:func:`traffic`)."""
    per_market = row["traffic_bytes_per_market"]
    kb = f"{per_market / 1e3:.1f} KB"
    calls = f"{row['kernels']} kernels" + (
        f" and {len(row['extern_bytes'])} extern calls" if row["extern_bytes"] else ""
    )
    head = f"traffic of {row['step']} (inductor's estimate): {row['traffic_bytes'] / 1e6:.2f} MB"
    if row["num_envs"] > 1:
        head += f" a step at {row['num_envs']:,} markets = {kb} a market, in {calls}"
    else:
        head += f" a step, in {calls}"
    model = row.get("model_bytes_per_market")
    if model:
        head += (
            f"; the market's model: {model['total'] / 1e3:.1f} KB of state and observation, "
            f"{model.get('total_with_catalog', model['total']) / 1e3:.1f} KB with the catalog"
        )
    largest = sorted(row["kernel_bytes"].items(), key=lambda kv: -(kv[1] or 0))[:3]
    head += "\n  largest: " + ", ".join(
        f"{name} {b / row['num_envs'] / 1e3:.1f} KB" for name, b in largest
    )
    if row["num_envs"] > 1:
        head += (
            f"\n  at the {device_name}'s peak {row['peak_bandwidth'] / 1e12:.2f} TB/s: at most "
            f"{row['ceiling_env_steps_per_s'] / 1e6:,.0f} M env-steps/s; the "
            f"{row['target_env_steps_per_s'] / 1e6:.0f} M target needs "
            f"{100 * row['target_share_of_peak']:.0f} % of the peak (an upper bound, not a "
            "measurement: real kernels reach a fraction of the peak, gathers less)"
        )
    return head


if __name__ == "__main__":
    sys.exit(main())
