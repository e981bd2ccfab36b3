"""The environment benchmark (experiments.bench_env) and its peer timers (experiments.bench_peers).

Smoke tests on tiny sizes: they check that every figure is produced, finite and written to the
JSON, never how fast anything is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import statistics
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from experiment_helpers import fake_gpu

from experiments import bench_env, bench_peers
from recenv.core.market import BatchedMarket

TINY = [
    "--quick",
    "--no-compile",
    "--repeats",
    "1",
    "--sizes",
    "1,4",
    "--steps",
    "3",
    "--peer-sizes",
    "4",
    "--catalog-items",
    "50,100",
    "--catalog-envs",
    "2",
    "--traffic-envs",
    "4",
    "--copy-mib",
    "1",
]


def _positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_copy_bandwidth_positive_finite():
    assert _positive(bench_peers.copy_bandwidth(2**20, copies=2))


def test_peer_versions_names_each_peer():
    versions = bench_peers.peer_versions()
    assert set(versions) == {"mpe2", "vmas"}
    assert all(v is None or isinstance(v, str) for v in versions.values())


def test_mpe2_timer_returns_seconds_per_step():
    pytest.importorskip("mpe2")
    assert _positive(bench_peers.time_mpe2_spread(3))
    # An episode shorter than the run: the timer resets the env when its agents are gone.
    assert _positive(bench_peers.time_mpe2_spread(3, warmup=1, max_cycles=2))


def test_vmas_timer_returns_seconds_per_step():
    pytest.importorskip("vmas")
    assert _positive(bench_peers.time_vmas_spread(4, 3))
    assert _positive(bench_peers.time_vmas_spread(2, 2, continuous_actions=False))


def test_memory_check_in_process_reports_growth_and_times():
    r = bench_env.memory_check("recenv/Market-v0", 2, 10, steps=2)
    assert r["rss_growth"] >= 0 and r["maxrss_after"] >= r["maxrss_before"] > 0
    assert r["step_s"] > 0 and r["build_reset_s"] > 0


def test_time_batched_fresh_times_in_a_child_and_names_a_failure():
    """The catalog rows time each market in a process of its own; a failing child raises
    with the config and the child's last words instead of returning nothing."""
    samples = bench_env.time_batched_fresh("recenv/Market-v0", 2, 2, repeats=2, num_items=300)
    assert len(samples) == 2 and all(_positive(s) for s in samples)
    with pytest.raises(RuntimeError, match="no_such_option"):
        bench_env.time_batched_fresh("recenv/Market-v0", 2, 2, no_such_option=1)


def test_catalog_rounds_alternate_the_sizes_and_take_each_rounds_ratio(monkeypatch):
    """The catalog figure alternates the two sizes in ABBA order, one fresh process per size
    and round, and each round's ratio compares the two processes of that round."""
    calls = []
    # Seconds per step by (round, size): the large catalog 1.5x, 2.0x, 1.2x the small one's
    # in rounds 0..2, while the sitting slows from round to round.
    table = {0: (1.0, 1.5), 1: (2.0, 4.0), 2: (3.0, 3.6)}

    def fake(env_id, num_envs, steps, compile=False, repeats=1, num_items=None, **cfg):
        calls.append((num_items, compile, repeats, cfg))
        small, large = table[(len(calls) - 1) // 2]
        return [large if num_items == 10_000 else small] * repeats

    monkeypatch.setattr(bench_env, "time_batched_fresh", fake)
    samples, ratios = bench_env.time_catalog_rounds(
        "recenv/Market-v0", 4, 5, (100, 10_000), 3, compile=True, repeats=2, item_stats_size=64
    )
    assert [c[0] for c in calls] == [100, 10_000, 10_000, 100, 100, 10_000]
    assert all(c[1:] == (True, 2, {"item_stats_size": 64}) for c in calls)
    assert ratios == pytest.approx([1.5, 2.0, 1.2])
    assert samples == {100: [1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 10_000: [1.5, 1.5, 4.0, 4.0, 3.6, 3.6]}


def test_memory_check_process_does_not_inherit_the_parents_peak():
    """The check's fresh process reports its own peak: ``ru_maxrss`` would start at this
    process's resident size (fork, then exec), which made the growth read low."""
    # This process: > 1 GiB resident, twice what a fresh one holds after its imports (~0.3
    # GiB with torch's CPU build, ~0.5 GiB with its CUDA build, which 2.14 is from PyPI).
    hold = np.ones(2**30, dtype=np.uint8)
    r = bench_env.run_memory_check("recenv/Market-v0", 2, 10, steps=1)
    assert r["passed"], r
    assert r["maxrss_before"] < 2**30 <= hold.nbytes
    assert r["maxrss_after"] >= r["maxrss_before"]
    failed = bench_env.run_memory_check("recenv/NoSuchEnv-v0", 2, 10, steps=1)
    assert not failed["passed"] and "NoSuchEnv" in failed["error"]


def test_main_tiny_run_writes_every_figure(tmp_path, monkeypatch, capsys):
    # The core's traffic and state accounting may not exist yet: stand-ins exercise the
    # report's arithmetic either way (bytes per step for the whole batch, "total" key).
    monkeypatch.setattr(
        BatchedMarket,
        "step_traffic_bytes",
        lambda self: {
            "users": 3000 * self.num_envs,
            "items": 1000 * self.num_envs,
            "total": 4000 * self.num_envs,
            "catalog": 2000 * self.num_envs,
            "total_with_catalog": 6000 * self.num_envs,
        },
        raising=False,
    )
    monkeypatch.setattr(
        BatchedMarket, "state_nbytes", lambda self: 500 * self.num_envs, raising=False
    )
    out = tmp_path / "bench.json"
    monkeypatch.setattr(bench_env, "TARGET_BATCHED_ENVS", 4)  # the target's 4,096, made tiny
    monkeypatch.setenv("RECENV_KEEP_HEAP", "1")
    monkeypatch.delenv("RECENV_HUGE_PAGES", raising=False)
    bench_env.main(
        [*TINY, "--memory", "--memory-envs", "4", "--memory-users", "10", "--out", str(out)]
    )
    text = capsys.readouterr().out
    r = json.loads(out.read_text())
    # The switches that change how the core runs are on record, set or defaulted.
    assert r["switches"]["RECENV_KEEP_HEAP"] == "1" and r["switches"]["RECENV_HUGE_PAGES"] == "1"
    assert set(r["switches"]) == {*bench_env._SWITCHES, "LD_PRELOAD"}
    assert "switches: RECENV_NATIVE=" in text
    # ... and what they gave here (the kernels build where the toolchain is; see test_native).
    assert r["in_effect"] == bench_env._in_effect()
    assert "in effect: native_kernels=" in text
    assert set(r["machine"]) == {
        "cpu_model",
        "cpu_capability",
        "logical_cores",
        "l2_bytes",
        "l3_bytes",
        "memory_bytes",
    }
    assert r["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"({r['machine']['cpu_capability']})" in text

    kinds = {row["kind"] for row in r["rows"]}
    assert {"pettingzoo_face", "batched", "catalog", "churn_heavy", "copy_bandwidth"} <= kinds
    churn = next(x for x in r["rows"] if x["kind"] == "churn_heavy")
    assert churn["config"] == bench_env.CHURN_HEAVY and 0.0 <= churn["steps_with_an_end"] <= 1.0
    assert all(_positive(row["median"]) for row in r["rows"])
    assert all(row["min"] <= row["median"] <= row["max"] for row in r["rows"])
    assert r["torch"] and r["thread_settings"] == [1]

    peers = bench_peers.peer_versions()
    names = {x["name"] for x in r["ratios"]}
    for peer, kind, ratio in [
        ("mpe2", "mpe2_simple_spread", "pettingzoo_face/mpe2"),
        ("vmas", "vmas_simple_spread", "batched/vmas"),
    ]:
        if peers[peer] is None:
            assert kind not in kinds and f"{peer} is not installed" in text
        else:
            assert kind in kinds and ratio in names
    assert all(_positive(x["ratio"]) and isinstance(x["met"], bool) for x in r["ratios"])

    def row_of(kind, **meta):
        (row,) = [x for x in r["rows"] if x["kind"] == kind and meta.items() <= x.items()]
        return row

    for x in r["ratios"]:  # recenv's median over the peer's, from the rows beside them
        if x["name"] == "pettingzoo_face/mpe2":
            num = row_of("pettingzoo_face", compile=x["compile"])
            den = row_of("mpe2_simple_spread")
        else:
            where = {"threads": x["threads"], "num_envs": x["num_envs"]}
            num = row_of("batched", compile=x["compile"], **where)
            den = row_of("vmas_simple_spread", **where)
        assert x["ratio"] == pytest.approx(num["median"] / den["median"])
        assert x["met"] == (x["ratio"] >= x["target"])

    cat = r["catalog_ratio"]
    assert len(cat["rounds_eager"]) == 1 and cat["ratio_eager"] == cat["rounds_eager"][0]
    # The catalog rows run with the env's own item counters (judged as the issue's
    # "Market-v0 defaults"); the rows, the verdict line and the JSON say so.
    assert cat["item_stats_size"] is None
    catalog_rows = [x for x in r["rows"] if x["kind"] == "catalog"]
    assert catalog_rows and all(x["item_stats_size"] is None for x in catalog_rows)
    assert "(item_stats_size: the env's default)" in text
    assert _positive(r["copy_bandwidth_bytes_per_s"]["1"])
    (t,) = r["traffic"]
    assert t["num_envs"] == 4 and t["threads"] == 1
    batched4 = next(x for x in r["rows"] if x["kind"] == "batched" and x["num_envs"] == 4)
    # The batched target (one thread) is judged on the one-thread row at its env count.
    met = batched4["median"] >= bench_env.TARGET_BATCHED_STEPS
    assert r["batched_target"] == [
        {
            "threads": 1,
            "compile": False,
            "num_envs": 4,
            "env_steps_per_s": batched4["median"],
            "met": met,
        }
    ]
    assert f"target >= {bench_env.TARGET_BATCHED_STEPS:,}: {'met' if met else 'NOT met'}" in text
    assert r["targets"]["batched_env_steps_per_s"] == 250_000
    assert t["traffic_bytes_per_s"] == pytest.approx(batched4["median"] / 4 * 16000)
    assert t["fraction_of_copy_bandwidth"] == pytest.approx(
        t["traffic_bytes_per_s"] / r["copy_bandwidth_bytes_per_s"]["1"]
    )
    assert r["core"]["step_traffic_bytes"]["total"] == 16000
    # Judged on state and observation; the catalog's reads are reported beside, not judged.
    assert t["fraction_with_catalog"] == pytest.approx(
        batched4["median"] / 4 * 24000 / r["copy_bandwidth_bytes_per_s"]["1"]
    )
    assert "traffic per step at 4 envs: state and observation" in text
    assert "catalog reads" in text and "with the catalog's reads" in text
    assert r["core"]["bytes_per_env"] == 500
    # The memory check runs in a fresh process, which does not see the stand-ins above.
    m = r["memory_check"]
    assert m["passed"] and m["num_envs"] == 4 and m["rss_growth"] >= 0, m
    # The run's figure beside its JSON, where matplotlib is (the dev set-up has it).
    if importlib.util.find_spec("matplotlib") is not None:
        assert out.with_suffix(".png").stat().st_size > 0 and "bench.png" in text
    else:
        assert "no figure:" in text and not out.with_suffix(".png").exists()


def test_main_without_core_accounting_or_peers_prints_na(tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(BatchedMarket, "step_traffic_bytes", raising=False)
    monkeypatch.delattr(BatchedMarket, "state_nbytes", raising=False)
    monkeypatch.setattr(bench_peers, "peer_versions", lambda: {"mpe2": None, "vmas": None})
    out = tmp_path / "bench.json"
    bench_env.main([*TINY, "--out", str(out)])
    text = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert "n/a" in text
    assert "mpe2 is not installed" in text and "vmas is not installed" in text
    assert r["traffic"] == [] and r["core"]["step_traffic_bytes"] is None
    assert r["core"]["bytes_per_env"] is None
    assert r["memory_check"] is None  # --quick without --memory
    assert r["ratios"] == [] and r["peers"] == {"mpe2": None, "vmas": None}


def test_no_peers_skips_installed_peers(tmp_path):
    out = tmp_path / "bench.json"
    r = bench_env.main([*TINY, "--no-peers", "--out", str(out)])
    assert r["ratios"] == [] and r["peers"] == {"mpe2": None, "vmas": None}
    assert not {"mpe2_simple_spread", "vmas_simple_spread"} & {x["kind"] for x in r["rows"]}


def test_existing_out_is_refused(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("{}")
    with pytest.raises(SystemExit, match="exists"):
        bench_env.main([*TINY, "--out", str(out)])
    assert out.read_text() == "{}"


def test_time_batched_records_which_steps_ended_an_episode():
    """The churn-heavy row's fraction is read from the steps themselves: with episodes of at
    most 3 steps, endings are recorded on the steps where they happen."""
    ended = []
    samples = bench_env.time_batched("recenv/Market-v0", 2, 6, repeats=2, ended=ended, horizon=3)
    assert len(samples) == 2 and len(ended) == 12
    # Horizon 3 and NextStep auto-reset: every market ends every 4th step.
    assert sum(ended) == 3


def test_int_lists_parse():
    assert bench_env._ints("1,64, 4096") == [1, 64, 4096]
    assert bench_env._ints("1e6") == [1_000_000]


def test_cuda_bench_without_a_gpu_says_so_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from experiments import bench_cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "cuda.json"
    assert bench_cuda.main(["--out", str(out), "--sizes", "16"]) is None
    assert "no CUDA device" in capsys.readouterr().out
    assert not out.exists()
    with pytest.raises(SystemExit):  # argparse's usage error, before anything is measured
        bench_cuda.main(["--out", str(out), "--no-compile", "--compiled-only"])
    assert "leave nothing to time" in capsys.readouterr().err


def test_cuda_bench_error_names_the_cause_of_a_failed_kernel_build():
    """Seen on the GPU machine: inductor's message starts with a line that says nothing; the
    cause, Triton's, is its last line that names an error."""
    from experiments.bench_cuda import error_summary

    e = RuntimeError(
        "SubprocException: An exception occurred in a subprocess:\n"
        "Traceback (most recent call last):\n  ...\n"
        "triton.compiler.errors.CompilationError: at 20:12:\n    tmp11 = 2654435769*x0\n"
        "ValueError('Scalar 2654435769 is out of range for type int32')\n"
        "\nSet TORCHDYNAMO_VERBOSE=1"
    )
    assert error_summary(e) == (
        "RuntimeError: SubprocException: An exception occurred in a subprocess: ... "
        "ValueError('Scalar 2654435769 is out of range for type int32')"
    )
    assert error_summary(torch.OutOfMemoryError("CUDA out of memory. Tried")) == (
        "OutOfMemoryError: CUDA out of memory. Tried"
    )


def test_cuda_bench_keeps_each_size_as_it_goes(tmp_path, monkeypatch):
    """A device session can end mid-run: after each size, what is measured so far is in a
    ``.partial.json`` beside the result, which the finished run replaces by the result.
    (The timing itself is faked here; the CUDA test below runs it for real.)"""
    from experiments import bench_cuda

    out = tmp_path / "cuda.json"
    partial = tmp_path / "cuda.partial.json"
    seen = []

    def fake_time_batched(env_id, n, steps, device, compile, repeats):
        assert device == "cuda"
        if n == 32:  # the second size: the first is already on disk
            seen.append([row["num_envs"] for row in json.loads(partial.read_text())["rows"]])
        return [n / 1e6] * repeats

    fake_gpu(monkeypatch, bench_cuda, fake_time_batched)
    argv = ["--out", str(out), "--sizes", "16,32", "--no-compile", "--no-peers", "--repeats", "2"]
    r = bench_cuda.main(argv)
    assert seen == [[16]]
    assert not partial.exists() and out.exists()
    assert [row["num_envs"] for row in json.loads(out.read_text())["rows"]] == [16, 32]
    assert r["best_env_steps_per_s"] == pytest.approx(1e6)
    # Each row is also a share of the copy bandwidth: env-steps/s x bytes per env-step / 1e12.
    per_env = bench_env.core_footprint("recenv/Market-v0", 4)["step_traffic_bytes"]["total"] / 4
    assert r["copy_bandwidth_bytes_per_s"]["median"] == 1e12
    assert r["torch"] == torch.__version__ and {"git", "git_dirty", "machine"} <= set(r)
    for row in r["rows"]:
        assert row["traffic_bytes_per_env_step"] == pytest.approx(per_env)
        assert row["fraction_of_copy_bandwidth"] == pytest.approx(1e6 * per_env / 1e12)


EAGER = [("recenv", 32, False), ("vmas", 32, None), ("recenv", 16, False), ("vmas", 16, None)]
COMPILED = [("recenv", 32, True), ("recenv", 16, True)]


@pytest.mark.parametrize(
    ("options", "order"), [([], EAGER + COMPILED), (["--compiled-first"], COMPILED + EAGER)]
)
def test_cuda_bench_orders_the_eager_and_compiled_passes(tmp_path, monkeypatch, options, order):
    """Compiling takes most of a device session's minutes: by default the eager rows (and
    VMAS beside them) at every size come first, largest first, so a run stopped at the limit
    keeps them; ``--compiled-first`` (gpu_check.sh's order) times the compiled rows first,
    the figure the GPU target is judged on. Either way a compiled row's ratio to VMAS uses
    the eager pass's VMAS row of its size, once per row."""
    from experiments import bench_cuda

    calls = []

    def fake_time_batched(env_id, n, steps, device, compile, repeats):
        calls.append(("recenv", n, compile))
        return [(1e-3 if compile else 2e-3)] * repeats

    def fake_vmas(n, steps, device):
        calls.append(("vmas", n, None))
        return 4e-3

    fake_gpu(monkeypatch, bench_cuda, fake_time_batched)
    monkeypatch.setattr(bench_cuda.bench_peers, "peer_versions", lambda: {"vmas": "9.9"})
    monkeypatch.setattr(bench_cuda.bench_peers, "time_vmas_spread", fake_vmas)
    argv = ["--out", str(tmp_path / "c.json"), "--sizes", "32,16", "--repeats", "1"]
    r = bench_cuda.main([*argv, *options])
    assert calls == order
    by = {(x["num_envs"], x["compile"]): x["batched_over_vmas"] for x in r["ratios"]}
    assert by == pytest.approx(
        {(32, False): 2.0, (16, False): 2.0, (32, True): 4.0, (16, True): 4.0}
    )
    assert len(r["ratios"]) == 4  # each row's ratio once


def test_cuda_bench_times_atens_cumsum_beside_the_default_where_asked(tmp_path, monkeypatch):
    """``--aten-cumsum-sizes``: at those counts an eager row more, timed with ATen's cumsum
    in the draws by weight (CUDA's own, the form ``indexing.row_cumsum`` replaced there),
    and the default form back afterwards; its row is not the default's figure."""
    from experiments import bench_cuda
    from recenv.core import indexing

    forms = []

    def fake_time_batched(env_id, n, steps, device, compile, repeats):
        aten = "cuda" in indexing.ATEN_CUMSUM_EXACT_ON
        forms.append((n, compile, aten))
        return [(1e-3 if aten else 2e-3)] * repeats

    fake_gpu(monkeypatch, bench_cuda, fake_time_batched)
    argv = ["--out", str(tmp_path / "c.json"), "--sizes", "32,16", "--no-peers"]
    r = bench_cuda.main([*argv, "--repeats", "1", "--aten-cumsum-sizes", "32"])
    eager = [(32, False, False), (32, False, True), (16, False, False)]
    assert forms == [*eager, (32, True, False), (16, True, False)]
    assert indexing.ATEN_CUMSUM_EXACT_ON == frozenset({"cpu"})
    kinds = [(x["kind"], x["num_envs"]) for x in r["rows"]]
    assert ("batched_cuda_aten_cumsum", 32) in kinds
    assert r["best_env_steps_per_s"] == pytest.approx(32 / 2e-3)  # not the A/B row's 32 / 1e-3


def test_cuda_bench_keeps_a_stopped_runs_partial_result(tmp_path, monkeypatch):
    """A run stopped at a device session's limit leaves only its ``.partial.json``; a second
    run with the same ``--out`` refuses to start instead of overwriting it after one size."""
    from experiments import bench_cuda

    out = tmp_path / "cuda.json"
    partial = tmp_path / "cuda.partial.json"
    partial.write_text('{"rows": ["the stopped run"]}')
    fake_gpu(monkeypatch, bench_cuda, lambda *a, repeats, **k: [1e-3] * repeats)
    with pytest.raises(SystemExit, match="exists"):
        bench_cuda.main(["--out", str(out), "--sizes", "16", "--no-compile", "--no-peers"])
    assert partial.read_text() == '{"rows": ["the stopped run"]}' and not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bench_tiny_run_writes_rows(tmp_path):
    from experiments import bench_cuda

    out = tmp_path / "cuda.json"
    r = bench_cuda.main(["--out", str(out), "--sizes", "64", "--steps", "2", "--repeats", "1"])
    assert out.exists() and not r["errors"]
    assert json.loads(out.read_text())["rows"] == r["rows"]
    assert list(tmp_path.iterdir()) == [out]  # the in-progress .partial.json is gone
    assert {row["kind"] for row in r["rows"]} >= {"batched_cuda"}
    assert all(_positive(row["median"]) for row in r["rows"])


# The tests that check a commit out into a temporary worktree (here and trajectory_hash's in
# test_perf_tools) run on one xdist worker (CI's --dist loadgroup), one after another: this
# one compares the list of worktrees before and after, which another worker's worktree,
# added meanwhile, would fail (seen once under plain -n 2).
@pytest.mark.xdist_group("worktrees")
def test_ab_commits_times_both_trees_alternately_and_cleans_up(tmp_path):
    """The A/B script times each side with recenv imported from that side's own tree (and
    its own interpreter) and removes its worktree afterwards."""
    import subprocess

    from experiments import ab_commits

    def worktrees():
        out = subprocess.run(
            ["git", "worktree", "list"], cwd=ab_commits.ROOT, capture_output=True, text=True
        ).stdout
        return {ln.split()[0] for ln in out.splitlines() if "recenv-rev-" in ln}

    # Worktrees an interrupted run left behind (its temporary directory was never cleaned
    # up) are not this run's: compare against the list before it.
    before = worktrees()
    lines = []
    shim, mark = _marking_python(tmp_path)  # the head side's interpreter
    result = ab_commits.compare(
        "HEAD",
        None,
        figure="batched",
        num_envs=2,
        steps=2,
        rounds=1,
        compile_=False,
        log=lines.append,
        config={"num_items": 500},
        env={"head": {"RECENV_NATIVE": "0"}},
        threads=2,
        python={"head": str(shim)},
    )
    assert mark.exists(), "the head side's child did not run under its interpreter"
    assert result["python"] == {"base": sys.executable, "head": str(shim)}
    assert result["torch"] == {"base": [torch.__version__], "head": [torch.__version__]}
    assert result["config"] == {"num_items": 500} and result["threads"] == 2
    assert result["env"] == {"base": {}, "head": {"RECENV_NATIVE": "0"}}
    assert [len(v) for v in result["rates"].values()] == [1, 1]
    assert all(r > 0 for v in result["rates"].values() for r in v)
    assert result["commits"]["head"] == "working tree"
    assert result["head_over_base"] > 0 and len(lines) == 2
    assert worktrees() <= before, "the comparison left its worktree behind"
    with pytest.raises(ValueError, match="figure"):
        ab_commits.compare("HEAD", None, figure="vmas")
    with pytest.raises(ValueError, match="batched"):
        ab_commits.compare("HEAD", None, figure="face", config={"num_items": 500})
    with pytest.raises(ValueError, match="threads"):
        ab_commits.compare("HEAD", None, figure="batched", threads=0)


def test_ab_children_get_their_sides_environment_and_recenv():
    """A side's variables reach its children (the switch of a same-commit A/B)."""
    from experiments import ab_commits

    code = (
        "import json, os, recenv; "
        "print(json.dumps({'recenv': recenv.__file__, 'x': os.environ.get('RECENV_AB_X')}))"
    )
    assert ab_commits.run_in_tree(ab_commits.ROOT, code, env={"RECENV_AB_X": "7"})["x"] == "7"
    assert ab_commits.run_in_tree(ab_commits.ROOT, code)["x"] is None


def _marking_python(tmp_path):
    """A stand-in interpreter: this one, behind a script that leaves ``mark`` when run."""
    mark = tmp_path / "ran"
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\ntouch "{mark}"\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return shim, mark


def test_ab_children_run_under_their_sides_interpreter(tmp_path):
    """``python`` picks a child's interpreter (another venv: another torch)."""
    from experiments import ab_commits

    shim, mark = _marking_python(tmp_path)
    code = "import json, recenv, torch; print(json.dumps({'recenv': recenv.__file__}))"
    ab_commits.run_in_tree(ab_commits.ROOT, code)
    assert not mark.exists()
    ab_commits.run_in_tree(ab_commits.ROOT, code, python=str(shim))
    assert mark.exists()


@pytest.mark.xdist_group("worktrees")  # adds a worktree: see the A/B test above
def test_ab_worktree_children_build_kernels_beside_the_worktree(monkeypatch):
    """A temporary worktree's children build the native kernels into a folder beside it
    (removed with it), not into the user's extension cache; this tree's children keep the
    user's setting. A bad ``--base-env`` names the expected form."""
    from experiments import ab_commits
    from experiments.config import ConfigError, split_assignment

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/users/cache")
    code = (
        "import json, os, recenv; "
        "print(json.dumps({'recenv': recenv.__file__, "
        "'ext': os.environ.get('TORCH_EXTENSIONS_DIR')}))"
    )
    assert ab_commits.run_in_tree(ab_commits.ROOT, code)["ext"] == "/users/cache"
    with ab_commits.checkout("HEAD") as tree:
        assert ab_commits.run_in_tree(tree, code)["ext"] == str(tree.parent / "torch_extensions")
    with pytest.raises(ConfigError, match=r"KEY=VALUE \(e.g. RECENV_NATIVE=0\)"):
        split_assignment("RECENV_NATIVE", example="RECENV_NATIVE=0")


def test_in_effect_follows_the_switches_turned_off(monkeypatch):
    """A switch turned off shows as off in what the benchmark records as in effect."""
    monkeypatch.setenv("RECENV_NATIVE", "0")
    monkeypatch.setenv("RECENV_HUGE_PAGES", "0")
    got = bench_env._in_effect()
    assert got["native_kernels"] is False and got["huge_pages"] is False
    assert set(got) == {"native_kernels", "huge_pages", "thp_mode", "heap_kept"}


def test_cache_sizes_are_read_from_sysfs(tmp_path):
    """L2 / L3 sizes come from a sysfs cache listing (instruction caches skipped, K/M units),
    None where the level is not listed."""
    for i, (level, kind, size) in enumerate(
        [
            (1, "Data", "48K"),
            (1, "Instruction", "64K"),
            (2, "Unified", "2048K"),
            (3, "Unified", "480M"),
        ]
    ):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert bench_env._cache_bytes(1, str(tmp_path)) == 48 << 10  # the data cache, not the 64K
    assert bench_env._cache_bytes(2, str(tmp_path)) == 2 << 20
    assert bench_env._cache_bytes(3, str(tmp_path)) == 480 << 20
    assert bench_env._cache_bytes(4, str(tmp_path)) is None
    assert bench_env._cache_bytes(2, str(tmp_path / "missing")) is None


def test_catalog_stats_size_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        bench_env.main(["--catalog-stats-size", "0"])
    assert "--catalog-stats-size 0 must be >= 1" in capsys.readouterr().err


def test_ab_forms_traces_the_base_in_its_form_and_steps_both_in_turn(tmp_path, monkeypatch):
    """``ab_forms``: the base batch is built (traced) with the named earlier form(s) in
    place, the head with the code as it is, and the forms are put back afterwards; each
    build order runs (``--order both``: one child process each, run in this process here)
    and the JSON pools their per-round ratios. (Eager markets here: compiling two graphs is
    the slow part, and what the script adds is the bookkeeping.)"""
    from experiments import ab_forms, bench_env
    from recenv.core import choice, indexing, market

    fused = choice.first_argmax
    built = []

    def eager_warmed_env(env_id, num_envs, compile, **cfg):
        assert compile is True
        built.append("head" if choice.first_argmax is fused else "base")
        configs.append(cfg)
        return bench_env.warmed_env(env_id, num_envs, compile=False, **cfg)

    configs = []

    monkeypatch.setattr(ab_forms, "warmed_env", eager_warmed_env)
    monkeypatch.setattr(ab_forms, "_run_child", ab_forms.run_order)
    monkeypatch.setattr(bench_env, "RESULTS", tmp_path)
    argv = ["--base", "aten-argmax", "--num-envs", "4", "--rounds", "3", "--steps", "2"]
    r = ab_forms.main(argv)
    assert built == ["base", "head", "head", "base"]  # base first, then head first
    assert choice.first_argmax is fused
    assert set(r["by_order"]) == {"base-first", "head-first"} and len(r["ratios"]) == 6
    pooled = r["by_order"]["base-first"]["ratios"] + r["by_order"]["head-first"]["ratios"]
    assert r["ratios"] == pooled and r["median_ratio"] == statistics.median(pooled)
    assert 0 <= r["head_ahead"] <= 6
    [written] = tmp_path.glob("ab_forms-*.json")
    assert json.loads(written.read_text())["base_form"] == "aten-argmax"

    assert configs == [{}] * 4

    built.clear()
    argv = ["--base", "aten-argmax,gather-pick", "--num-envs", "2", "--rounds", "1"]
    argv += ["--config", "num_items=500", "--config", "horizon=9"]
    r = ab_forms.main([*argv, "--order", "head-first", "--no-json"])
    assert built == ["head", "base"] and r["base_form"] == "aten-argmax+gather-pick"
    assert configs[-2:] == [{"num_items": 500, "horizon": 9}] * 2
    assert r["config"] == {"num_items": 500, "horizon": 9}
    assert len(r["ratios"]) == 1
    assert choice.first_argmax is fused
    assert market.pick_by_select is indexing.pick_by_select
    for bad in (
        ["--base", "aten-argmax", "--rounds", "0"],
        ["--base", "no-such-form"],
        ["--base", "same", "--config", "no_such_key=1"],
    ):
        with pytest.raises(SystemExit):
            ab_forms.main([*bad, "--no-json"])


def test_ab_forms_einsum_dots_puts_einsum_back_for_the_dot_products():
    """The one earlier form that rounds differently (so not among the forms above, which
    step bit for bit as the head): inside it the utilities' dot products are ``einsum``s,
    equal to ``choice.dot`` to float32 rounding."""
    from experiments import ab_forms
    from recenv.core import choice

    x, rows = torch.rand(64, 16), torch.rand(64, 6, 16)
    with ab_forms.FORMS["einsum-dots"]():
        assert choice.dot is ab_forms._einsum_dot
        einsum = choice.dot(x, rows)
    assert choice.dot is not ab_forms._einsum_dot
    torch.testing.assert_close(einsum, choice.dot(x, rows))


@pytest.mark.parametrize(
    ("form", "config"),
    [
        ("status-twice", {}),
        ("live-in-graph", {}),
        ("torch-arrival", {}),
        ("no-row-prefetch", {}),
        ("plain-catalog", {"num_items": 20_000}),  # item rows past hugepages.MIN_BYTES
    ],
)
def test_ab_forms_earlier_forms_step_as_the_head_does(form, config):
    """An earlier form is the same step in another form: eager markets stepped with it in
    place give the head's rewards, observations and infos, across episode ends (short
    episodes: markets about to reset are in the steps)."""
    import recenv
    from experiments import ab_forms
    from experiments.bench_env import _policy
    from recenv.core import hugepages

    def run(context):
        with context():
            env = recenv.make_vec("recenv/Market-v0", num_envs=4, seed=1, horizon=3, **config)
            if form == "plain-catalog" and hugepages.enabled("cpu"):  # the form is in force
                advised = hugepages.is_advised(env.catalog.item_rows)
                assert advised is (context is contextlib.nullcontext)
            obs, trace, k = env.reset(), [], env.config.slate_size
            for _ in range(7):
                obs, rew, term, trunc, info = env.step(_policy(obs, env.agents, k))
                trace.append((obs, rew, term, trunc, info["shown"], info["repaired"]))
        return trace

    head, base = run(contextlib.nullcontext), run(ab_forms.FORMS[form])
    assert any(bool(step[2].any() | step[3].any()) for step in head)  # episodes ended
    for h, b in zip(head, base, strict=True):
        assert torch.equal(h[4], b[4]) and torch.equal(h[5], b[5])
        for a in h[1]:
            assert torch.equal(h[1][a], b[1][a])
            assert all(torch.equal(h[0][a][k], b[0][a][k]) for k in h[0][a])


def test_copy_bandwidth_counts_the_bytes_read_and_written(monkeypatch):
    """``copies`` copies of ``nbytes`` timed together: each reads and writes ``nbytes``
    (a stand-in clock: 2 s for the three)."""
    monkeypatch.setattr(
        bench_peers, "time", SimpleNamespace(perf_counter=iter([10.0, 12.0]).__next__)
    )
    assert bench_peers.copy_bandwidth(2**20, copies=3) == 2 * 2**20 * 3 / 2.0


def test_a_batched_sample_is_seconds_per_step_and_a_figure_its_rate(monkeypatch):
    """``time_batched``: each repeat's seconds over its steps; ``summarize``: the median and
    spread of ``scale / sample`` (env-steps per second from seconds per step)."""
    monkeypatch.setattr(bench_env, "warmed_env", lambda *a, **k: (None, None))
    runs = iter([6.0, 3.0])
    monkeypatch.setattr(bench_env, "timed_steps", lambda env, obs, steps, ended: (next(runs), obs))
    assert bench_env.time_batched("recenv/Market-v0", 4, 3, repeats=2) == [2.0, 1.0]
    rates = bench_env.summarize([0.5, 0.25, 1.0], 100.0)
    assert rates == {"median": 200.0, "min": 100.0, "max": 400.0}


def test_the_bandwidth_share_is_judged_on_state_and_observation_alone():
    """4 markets at 1,000 env-steps/s (250 batch steps/s), 16,000 bytes of state and
    observation a batch step and 8,000 more of the catalog: 4 MB/s; over a 20 MB/s copy,
    20 % (not met), 30 % with the catalog's reads (reported beside, never judged); at
    1,250 env-steps/s, 25 %: met."""
    per_step = {"total": 16_000, "catalog": 8_000, "total_with_catalog": 24_000}
    row = {"median": 1_000.0, "min": 800.0, "max": 1_100.0}
    e = bench_env.traffic_entry(row, 4, per_step, 20e6)
    assert e["traffic_bytes_per_s"] == 4e6 and e["fraction_of_copy_bandwidth"] == 0.2
    assert (e["fraction_of_copy_bandwidth_min"], e["fraction_of_copy_bandwidth_max"]) == (
        pytest.approx(0.16), pytest.approx(0.22),
    )  # fmt: skip
    assert e["fraction_with_catalog"] == pytest.approx(0.3) and e["met"] is False
    faster = bench_env.traffic_entry({**row, "median": 1_250.0}, 4, per_step, 20e6)
    assert faster["fraction_of_copy_bandwidth"] == 0.25 and faster["met"] is True
    # A core without the catalog split counts everything in "total".
    alone = bench_env.traffic_entry(row, 4, {"total": 16_000}, 20e6)
    assert alone["fraction_with_catalog"] == alone["fraction_of_copy_bandwidth"]
