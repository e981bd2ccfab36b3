"""experiments.cuda_build: the compiled CUDA step's Triton kernels built for a faked GPU.

The build itself needs Triton (the ``cuda-build`` extra); without it the tests check the
parts that need none: the CUDA forms traced on the CPU, the refusal when the fake device
cannot be set up, and how a failure is told apart from a harness problem."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import recenv.core
from experiments import cuda_build, fake_cuda
from recenv.core import indexing, market, rng
from recenv.core.market import inductor_options
from tests.experiments.experiment_helpers import REPO, cli_env

TRITON = fake_cuda.triton_version()
needs_triton = pytest.mark.skipif(TRITON is None, reason="needs triton (the cuda-build extra)")


def device_forms() -> set[tuple[str, str]]:
    """Every module-level set of device types in recenv.core that names the CPU (the
    convention of the step's device-dependent forms, e.g. rng.FOLD_WEYL_ON)."""
    found = set()
    for info in pkgutil.walk_packages(recenv.core.__path__, "recenv.core."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, frozenset) and "cpu" in value:
                found.add((module.__name__, name))
    return found


def test_cuda_forms_cover_every_device_dependent_form_of_the_core():
    # A new form that differs by device must be listed, or the check would build the CPU's.
    listed = {(owner.__name__, attr) for owner, attr in cuda_build.CUDA_FORMS.values()}
    assert device_forms() == listed


def test_cuda_forms_empty_each_form_inside_and_put_them_back():
    before = {name: getattr(o, a) for name, (o, a) in cuda_build.CUDA_FORMS.items()}
    with cuda_build.cuda_forms(keep_cpu=["cumsum"]):
        assert rng.FOLD_WEYL_ON == frozenset()
        assert indexing.ROW_MEAN_AS_BATCH_ON == frozenset()
        assert market.SEPARATE_GATHERS_ON == frozenset()
        assert indexing.ATEN_CUMSUM_EXACT_ON == before["cumsum"]
    assert {name: getattr(o, a) for name, (o, a) in cuda_build.CUDA_FORMS.items()} == before
    with pytest.raises(ValueError, match=r"unknown form\(s\) \['weil'\]; known: \['cumsum'"):
        with cuda_build.cuda_forms(keep_cpu=["weil"]):
            pass


def test_row_mean_of_one_row_takes_the_other_devices_form_when_told():
    x = torch.rand(1, 40_000)
    with cuda_build.cuda_forms():
        assert torch.equal(indexing.row_mean(x), x.mean(dim=1))
    assert torch.equal(indexing.row_mean(x), x.expand(2, -1).mean(dim=1)[:1])


def test_inductor_options_are_the_ones_compile_uses_per_device():
    assert inductor_options(torch.device("cuda", 0)) == {"size_asserts": False}
    cpu = inductor_options(torch.device("cpu"))
    assert cpu["size_asserts"] is False and cpu["cpp_wrapper"] is True
    assert isinstance(cpu["cpp.simdlen"], int)


@pytest.mark.parametrize("step,num_envs", [("_serve", 4), ("_serve_face", 1)])
def test_each_step_is_captured_as_one_graph_in_its_cuda_form(step, num_envs):
    graphs = cuda_build.capture("recenv/Market-v0", step, num_envs, {"num_users": 6})
    assert len(graphs) == 1  # no graph break
    gm, inputs = graphs[0]
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert not any("recenv." in t for t in targets), "CPU-only native kernels in a CUDA graph"
    # No matrix products: on CUDA each would be a cuBLAS extern call (which follows the
    # caller's float32 matmul precision, TF32); the utilities' dots are products and sums.
    # (The Triton build test asserts no extern calls at all; CI, without Triton, runs this.)
    methods = {str(n.target) for n in gm.graph.nodes if n.op == "call_method"}
    products = ("einsum", "matmul", "bmm", "linear", "baddbmm", "addmm", "tensordot")
    assert not [t for t in targets | methods if any(p in t for p in products)]
    assert not [n for n in gm.graph.nodes if n.op == "get_attr"]  # no constants to move
    assert all(isinstance(x, torch.Tensor) and x.shape[0] == num_envs for x in inputs[:1])
    # The module state is back as it was.
    assert rng.FOLD_WEYL_ON == frozenset({"cpu"})


def _triton_like(name: str) -> type[Exception]:
    return type(name, (Exception,), {"__module__": "triton.compiler.errors"})


def test_a_refusal_from_triton_is_found_through_the_chain_and_summarised():
    refusal = _triton_like("CompilationError")("at 26:13:\n  tmp8 = x * 2654435769\nScalar out")
    try:
        try:
            raise refusal
        except Exception as inner:
            raise RuntimeError("InductorError: CompilationError") from inner
    except RuntimeError as outer:
        assert fake_cuda._triton_error(outer) is refusal
        assert fake_cuda._summary(refusal) == "CompilationError: at 26:13: ... Scalar out"
    assert fake_cuda._triton_error(RuntimeError("an internal moved")) is None


def test_graph_on_cuda_moves_factory_devices_and_refuses_constants():
    def f(x):
        return x + torch.arange(3, device=x.device)

    traced = torch.fx.experimental.proxy_tensor.make_fx(f)(torch.zeros(3))
    fake_cuda.graph_on_cuda(traced)
    devices = {
        str(v) for n in traced.graph.nodes for v in n.kwargs.values() if isinstance(v, torch.device)
    }
    assert devices == {"cuda:0"}
    gm = torch.fx.symbolic_trace(f)
    gm.register_buffer("table", torch.zeros(3))
    gm.graph.get_attr("table")
    with pytest.raises(fake_cuda.HarnessError, match="tensor constants"):
        fake_cuda.graph_on_cuda(gm)


def run_build(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "build.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cuda_build", "--out", str(out), *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_the_fake_device_refuses_a_machine_with_a_gpu_and_fakes_nothing(monkeypatch):
    """Where torch sees a real GPU (a CUDA build on the device machine), the step is built
    and timed on it: the fakes would meet its driver half-way. A CUDA build on a machine
    without one is faked like a CPU-only torch (torch 2.11.0+cu130 and triton 3.6.0 built
    and interpreted Market-v0's step so, session 66)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(fake_cuda, "_INSTALLED", {})
    available = torch.cuda.is_available
    with pytest.raises(fake_cuda.HarnessError, match="sees a GPU: compile and time the step on it"):
        fake_cuda.install("h100")
    assert fake_cuda.installed() is None and torch.cuda.is_available is available


@pytest.mark.skipif(TRITON is not None, reason="triton installed: the build runs instead")
def test_without_triton_the_check_says_so_and_exits_2(tmp_path):
    proc, result = run_build(tmp_path, "--num-envs", "2", "--no-face", "--config", "num_users=6")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Triton is not installed" in proc.stdout
    assert "Triton is not installed" in result["harness_error"] and result["graphs"] == []


@needs_triton
def test_every_graph_builds_for_a_faked_h100(tmp_path):
    proc, result = run_build(tmp_path, "--num-envs", "8", "--config", "num_users=6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(g["step"], g["num_envs"]) for g in result["graphs"]] == [
        ("_serve", 8),
        ("_serve_face", 1),
    ]
    assert all(g["built"] and g["kernels"] > 10 for g in result["graphs"]), result["graphs"]
    assert result["options"] == {"size_asserts": False} and result["triton"] == TRITON
    # Traffic: inductor estimated every kernel; a step moves at least what the market's own
    # model says it must (state and observation), and the ceiling is the peak over it. No
    # extern calls: the utilities' dot products are products and sums (`choice.dot`), not
    # the cuBLAS `bmm` calls the einsum form made (three a step until session 57).
    # (Under an inductor that makes no estimate here, torch 2.11's, the rows say so.)
    if not fake_cuda.ESTIMATES_TRAFFIC:
        assert all(g["traffic_bytes"] is None for g in result["graphs"])
        assert "traffic: no estimate of the bytes each kernel moves (torch" in proc.stdout
        return
    for g in result["graphs"]:
        assert len(g["kernel_bytes"]) == g["kernels"] and all(g["kernel_bytes"].values())
        assert g["extern_bytes"] == []
        assert g["traffic_bytes"] == pytest.approx(sum(g["kernel_bytes"].values()))
        assert g["traffic_bytes_per_market"] > g["model_bytes_per_market"]["total"]
    assert "traffic: no estimate" not in proc.stdout
    serve = result["graphs"][0]
    assert serve["ceiling_env_steps_per_s"] == pytest.approx(
        8 * fake_cuda.PEAK_BANDWIDTH["h100"] / serve["traffic_bytes"]
    )
    assert "at the NVIDIA H100 80GB HBM3's peak 3.35 TB/s: at most" in proc.stdout


@needs_triton
def test_the_cpu_weyl_form_fails_to_build_as_the_first_gpu_lent_found(tmp_path):
    # The form every compiled CUDA step had until rng.weyl changed (H200, torch 2.11): the
    # check must fail it, with Triton's reason and the kernel's name.
    proc, result = run_build(
        tmp_path, "--num-envs", "8", "--no-face", "--config", "num_users=6", "--cpu-form", "weyl"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (graph,) = result["graphs"]
    assert graph["built"] is False
    assert "Scalar 2654435769 is out of range for type int32" in graph["error"]
    assert graph["error"].startswith("triton_")


def test_a_large_catalog_s_rows_are_gathered_apart_on_the_cpu_only():
    # Past SEPARATE_GATHER_BYTES (4 MiB of item rows) the CPU's compiled step gathers rows
    # in an op of their own; CUDA's fuses them into their consumers.
    config = {"num_users": 6, "num_items": 40_000}

    def gathers(graphs):
        (gm, _), *_ = graphs
        return [n for n in gm.graph.nodes if "gather_rows" in str(n.target)]

    assert not gathers(cuda_build.capture("recenv/Market-v0", "_serve", 2, config))
    cpu_form = cuda_build.capture(
        "recenv/Market-v0", "_serve", 2, config, keep_cpu=["separate_gathers"]
    )
    assert len(gathers(cpu_form)) == 2  # the page's rows and the candidates'


@needs_triton
def test_the_large_forms_build_and_a_row_gather_counts_its_rows_not_its_table(tmp_path):
    # 64-bit indices in every kernel (the largest batches' form) and a catalog past
    # SEPARATE_GATHER_BYTES, its rows gathered as on the CPU, by recenv::gather_rows outside
    # the fused loops: inductor cannot see into that op and would count its whole table.
    config = ["--config", "num_users=6", "--config", "num_items=40000"]
    proc, result = run_build(
        tmp_path, "--num-envs", "8", "--no-face", *config, "--wide-index",
        "--cpu-form", "separate_gathers",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (graph,) = result["graphs"]
    assert result["wide_index"] is True and graph["built"] is True
    assert "64-bit indices in every kernel" in proc.stdout
    if not fake_cuda.ESTIMATES_TRAFFIC:  # (torch 2.11: built, without an estimate)
        assert graph["traffic_bytes"] is None
        return
    gathers = sorted(b for name, b in graph["extern_bytes"] if name == fake_cuda.GATHER_ROWS)
    # The page's 6 rows a market and the 40 candidates' rows: int64 indices, 128-byte rows
    # read and written.
    assert gathers == [8 * n * (8 + 2 * 128) for n in (6, 40)]
    assert graph["traffic_bytes"] < 40_000 * 128  # less than one read of the item table


def test_traffic_adds_the_kernels_and_extern_calls_and_divides_the_peak_by_it():
    kernels = [fake_cuda.Kernel("k0", 4, 3_000.0), fake_cuda.Kernel("k1", 1, 1_000.0)]
    built = fake_cuda.Build(kernels, [("extern_kernels.bmm", 1_000)], 1.0, call=print)
    assert built.traffic == 5_000
    model = {"total": 400, "total_with_catalog": 600}
    row = cuda_build.traffic(built, 2, "h200", model)
    assert row["traffic_bytes_per_market"] == 2_500
    assert row["model_bytes_per_market"] == {"total": 200, "total_with_catalog": 300}
    assert row["ceiling_env_steps_per_s"] == pytest.approx(4.8e12 / 2_500)
    assert row["target_share_of_peak"] == pytest.approx(50e6 * 2_500 / 4.8e12)
    row.update(step="_serve", num_envs=2, kernels=2)
    text = cuda_build.traffic_line(row, "NVIDIA H200")
    assert "2.5 KB a market, in 2 kernels and 1 extern calls" in text
    assert "model: 0.2 KB of state and observation, 0.3 KB with the catalog" in text
    assert "largest: k0 1.5 KB, k1 0.5 KB" in text
    assert "at most 1,920 M env-steps/s; the 50 M target needs 3 % of the peak" in text
    # A kernel inductor did not estimate: no total, no ceiling (not a smaller one).
    unknown = fake_cuda.Build([*kernels, fake_cuda.Kernel("k2", 1, None)], [], 1.0, call=print)
    assert unknown.traffic is None
    assert cuda_build.traffic(unknown, 2, "h200", model) == {"traffic_bytes": None}
    assert "ceiling_env_steps_per_s" not in cuda_build.traffic(built, 1, "h200", model)


def test_every_faked_device_has_a_peak_bandwidth():
    assert set(fake_cuda.PEAK_BANDWIDTH) == set(fake_cuda.DEVICES)


def test_disagreement_is_exact_for_integers_and_to_rounding_for_floats():
    x = {"a": torch.tensor([1, 2]), "b": [torch.tensor([1.0, float("nan")]), 0.5], "c": None}
    same = {"a": torch.tensor([1, 2]), "b": [torch.tensor([1.0 + 1e-7, float("nan")]), 0.5]}
    same["c"] = None
    where, largest = cuda_build.disagreement(x, same)
    assert where is None and 0 < largest < 1e-6
    off_by_one = {**same, "a": torch.tensor([1, 3])}
    assert cuda_build.disagreement(x, off_by_one)[0] == "['a']"
    drifted = {**same, "b": [torch.tensor([1.001, float("nan")]), 0.5]}
    assert cuda_build.disagreement(x, drifted)[0] == "['b'][0]"
    scalar = {**same, "b": [same["b"][0], 0.51]}
    assert cuda_build.disagreement(x, scalar)[0] == "['b'][1]"
    assert cuda_build.disagreement(x, {**same, "d": 1})[0].startswith("paths differ")
    wrong_dtype = {**same, "a": torch.tensor([1.0, 2.0])}
    assert cuda_build.disagreement(x, wrong_dtype)[0] == "['a'] (shape or dtype)"
    # Integers exactly, however large (one exposure off in 16 M is not rounding); a face
    # scalar that is NaN in both steps (an undefined rate) agrees.
    counts = {"n": torch.tensor([2**24, 7])}
    assert cuda_build.disagreement(counts, {"n": torch.tensor([2**24 + 1, 7])})[0] == "['n']"
    assert cuda_build.disagreement({"s": math.nan}, {"s": math.nan}) == (None, 0.0)
    assert cuda_build.disagreement({"s": math.nan}, {"s": 0.0})[0] == "['s']"


INTERPRET = ["--interpret", "7", "--num-envs", "4", "--config", "horizon=3"]


@needs_triton
def test_the_kernels_run_by_triton_s_interpreter_agree_with_the_eager_step(tmp_path):
    # Seven steps of three-step episodes: two episode ends and their resets, batched and face.
    proc, result = run_build(tmp_path, *INTERPRET, "--config", "num_users=6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = result["interpreted"]
    assert [(r["step"], r["agreed"], r["disagreement"]) for r in rows] == [
        ("_serve", 7, None),
        ("_serve_face", 7, None),
    ]
    assert all(r["graphs"] == 1 and r["largest_float_difference"] < 1e-4 for r in rows)
    assert [r["episode_ends"] for r in rows] == [2, 2]  # each followed by its reset, compared


@needs_triton
def test_the_interpreted_comparison_catches_a_kernel_that_computes_wrongly(tmp_path):
    # libdevice.exp run as log1p: the check must say where the step went wrong.
    out = tmp_path / "wrong.json"
    code = (
        "import os, sys; os.environ['TRITON_INTERPRET'] = '1'\n"
        "from experiments import fake_cuda_libdevice as forms\n"
        "forms.FORMS['exp'] = forms.FORMS['log1p']\n"
        "from experiments import cuda_build\n"
        f"sys.exit(cuda_build.main({[*INTERPRET, '--no-face', '--out', str(out)]!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())["interpreted"]
    assert row["agreed"] < 7 and "DISAGREE at " in proc.stdout
    assert row["disagreement"].startswith(("the reset", "step "))


def test_a_config_the_scenario_refuses_is_named_before_any_work(tmp_path):
    out = tmp_path / "bad.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cuda_build", "--out", str(out), "--log", "x.csv"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2  # argparse's usage error
    assert "unknown config key(s) ['log']" in proc.stderr and "recenv/Market-v0" in proc.stderr
    assert not out.exists()
