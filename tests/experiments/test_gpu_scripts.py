"""The arithmetic of the scripts whose figures come from one short device session, and of the
kernel and page-baseline scripts beside them: what ``bench_cuda`` / ``profile_cuda`` report
for a GPU, how the timer waits for the device, what ``candidates_op`` and
``preset_baselines`` compute from their samples.

A session lent a GPU has ~15 minutes of it and no time to debug a figure, so each one is
checked here on the CPU with stand-ins: a fake device whose queued work the clock sees only
when the host synchronises, a profiler's events, a kernel's timer. None asserts anything
about real speed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from experiment_helpers import fake_gpu

from experiments import bench_env

CUDA, CPU = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU


class FakeDevice:
    """A device whose work runs asynchronously: ``launch`` queues seconds of work, and the
    host's clock (``perf_counter``) moves on by the queued work only when it synchronises."""

    def __init__(self) -> None:
        self.now = 0.0
        self.queued = 0.0

    def launch(self, seconds: float) -> None:
        self.queued += seconds

    def synchronize(self) -> None:
        self.now, self.queued = self.now + self.queued, 0.0

    def perf_counter(self) -> float:
        return self.now


class FakeCudaEnv:
    """A batched env "on CUDA" whose step queues 5 s of device work and returns at once."""

    def __init__(self, gpu: FakeDevice) -> None:
        self.gpu = gpu
        self.agents = ["a0"]
        self.config = SimpleNamespace(slate_size=2)
        self.device = torch.device("cuda")

    def step(self, actions):
        self.gpu.launch(5.0)
        done = torch.zeros(1, dtype=torch.bool)
        return {"a0": None}, None, done, done, {}


def test_timed_steps_wait_for_the_device_after_each_step_and_not_for_the_policy(monkeypatch):
    """A CUDA step returns when its kernels are queued: the timer must synchronise after it
    (else it times the launches: a figure far above the truth, the one thing a GPU session
    exists to measure), and before it, outside the timer (else the policy's queued work, 1 s
    here, counts as the step's)."""
    gpu = FakeDevice()
    monkeypatch.setattr(torch.cuda, "synchronize", gpu.synchronize)
    monkeypatch.setattr(bench_env, "time", SimpleNamespace(perf_counter=gpu.perf_counter))
    monkeypatch.setattr(bench_env, "_policy", lambda obs, agents, k: gpu.launch(1.0) or {})
    total, _ = bench_env.timed_steps(FakeCudaEnv(gpu), {}, steps=3)
    assert total == pytest.approx(15.0)


def test_cuda_bench_records_a_size_that_fails_and_goes_on(tmp_path, monkeypatch, capsys):
    """On the GPU machine a size can run out of memory and a compiled build can fail
    (inductor raises a RuntimeError): each is recorded with its cause and the next row is
    timed; the best figure and the target's verdict come from the rows measured."""
    from experiments import bench_cuda

    def fake_time_batched(env_id, n, steps, device, compile, repeats):
        if n == 64 and not compile:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        if n == 32 and compile:
            raise RuntimeError("SubprocException: An exception occurred in a subprocess:")
        return [n / 6e7] * repeats  # 6e7 env-steps/s at every size

    fake_gpu(monkeypatch, bench_cuda, fake_time_batched)
    argv = ["--out", str(tmp_path / "c.json"), "--sizes", "64,32", "--no-peers", "--repeats", "1"]
    r = bench_cuda.main(argv)
    assert [(x["num_envs"], x["compile"]) for x in r["rows"]] == [(32, False), (64, True)]
    assert [(e["num_envs"], e["compile"], e["error"].split(":")[0]) for e in r["errors"]] == [
        (64, False, "OutOfMemoryError"),
        (32, True, "RuntimeError"),
    ]
    assert r["best_env_steps_per_s"] == pytest.approx(6e7)
    assert "best 60,000,000 env-steps/s (target >= 50,000,000: met)" in capsys.readouterr().out


def test_cuda_bench_says_when_the_target_is_not_met(tmp_path, monkeypatch, capsys):
    from experiments import bench_cuda

    fake_gpu(monkeypatch, bench_cuda, lambda *a, repeats, **k: [16 / 4e7] * repeats)
    argv = ["--out", str(tmp_path / "c.json"), "--sizes", "16", "--no-peers", "--no-compile"]
    bench_cuda.main(argv)
    assert "best 40,000,000 env-steps/s (target >= 50,000,000: NOT met)" in capsys.readouterr().out


def test_cuda_bench_prints_what_row_cumsum_gains_over_atens(tmp_path, monkeypatch, capsys):
    """The A/B row's verdict reads as the default form's rate over ATen's: 2x faster (a step
    in half the time) prints 2.00x."""
    from experiments import bench_cuda
    from recenv.core import indexing

    def fake_time_batched(env_id, n, steps, device, compile, repeats):
        aten = "cuda" in indexing.ATEN_CUMSUM_EXACT_ON
        return [(2e-3 if aten else 1e-3)] * repeats

    fake_gpu(monkeypatch, bench_cuda, fake_time_batched)
    argv = ["--out", str(tmp_path / "c.json"), "--sizes", "32", "--no-peers", "--no-compile"]
    bench_cuda.main([*argv, "--aten-cumsum-sizes", "32"])
    assert "row_cumsum over ATen's cumsum num_envs=32: 2.00x" in capsys.readouterr().out


def _event(key, device_type, *, us=0.0, count=1, cpu_us=0.0, device_us=0.0):
    """A stand-in for a profiler event (``prof.events()``) or table row
    (``prof.key_averages()``)."""
    return SimpleNamespace(
        key=key,
        device_type=device_type,
        count=count,
        time_range=SimpleNamespace(elapsed_us=lambda: us),
        self_cpu_time_total=cpu_us,
        self_device_time_total=device_us,
    )


# Two profiled steps: 3 kernels (60 us of device time), the host ops that launched them
# (their device time is the kernels' again), the launch calls, and 5 synchronisations of
# which the last is the timer's.
EVENTS = [
    _event("aten::add", CPU, us=40.0),
    _event("triton_poi_fused_0", CUDA, us=10.0),
    _event("triton_poi_fused_1", CUDA, us=20.0),
    _event("void at::native::kernel", CUDA, us=30.0),
    _event("cudaLaunchKernel", CPU, us=6.0),
]
AVERAGES = [
    _event("aten::add", CPU, count=4, cpu_us=40.0, device_us=30.0),
    _event("aten::index", CPU, count=2, cpu_us=90.0, device_us=10.0),
    _event("aten::mul", CPU, count=2, cpu_us=10.0, device_us=20.0),
    _event("triton_poi_fused_1", CUDA, count=2, cpu_us=0.0, device_us=400.0),
    _event("cudaStreamSynchronize", CPU, count=4, cpu_us=5.0),
    _event("cudaDeviceSynchronize", CPU, count=1, cpu_us=1.0),
]


def test_profile_summary_counts_device_kernels_and_the_hosts_waits():
    """The step's device time is the device events' own (the host rows carry it again), the
    timer's one sync is not a wait of the step's, and the table holds host ops only, by
    self device time on a GPU."""
    from experiments.profile_cuda import summarize_profile

    s = summarize_profile(EVENTS, AVERAGES, steps=2, cuda=True, top=2)
    assert s["kernels_per_step"] == 1.5
    assert s["kernel_s_per_step"] == pytest.approx(30e-6)
    assert s["host_syncs_per_step"] == 2.0  # (4 + 1 - the timer's) / 2 steps
    assert s["sorted_by"] == "self_device_time_total"
    assert [row["name"] for row in s["top_ops"]] == ["aten::add", "aten::mul"]
    assert s["top_ops"][0] == {
        "name": "aten::add",
        "calls_per_step": 2.0,
        "self_device_us_per_step": 15.0,
        "self_cpu_us_per_step": 20.0,
    }
    cpu = summarize_profile([], AVERAGES, steps=2, cuda=False, top=2)
    assert cpu["host_syncs_per_step"] is None and cpu["sorted_by"] == "self_cpu_time_total"
    assert [row["name"] for row in cpu["top_ops"]] == ["aten::index", "aten::add"]


def test_profile_step_times_synced_and_queued_steps_and_the_gpus_busy_share(monkeypatch):
    """``profile_step`` on a stand-in GPU (a CPU market, the device's syncs and profiler
    faked): a sync takes 1 s of the fake clock, so a step synchronised after itself reads
    (2 steps + the final sync) / 2 = 1.5 s and a queued one 1 / 2 = 0.5 s; the GPU is busy
    for the kernels' 30 us a step over the queued wall time."""
    from experiments import profile_cuda

    gpu = FakeDevice()

    def sync(device):  # the host waits 1 s of the fake clock for the device
        assert device == "cuda"
        gpu.launch(1.0)
        gpu.synchronize()

    class FakeProfile:
        def __init__(self, activities):
            assert profile_cuda.ProfilerActivity.CUDA in activities

        def __enter__(self):
            return SimpleNamespace(events=lambda: EVENTS, key_averages=lambda: AVERAGES)

        def __exit__(self, *exc):
            return False

    def cpu_market(env_id, num_envs, device, compile):
        return bench_env.warmed_env(env_id, num_envs, device="cpu", compile=compile)

    monkeypatch.setattr(profile_cuda, "_sync", sync)
    monkeypatch.setattr(profile_cuda, "time", SimpleNamespace(perf_counter=gpu.perf_counter))
    monkeypatch.setattr(profile_cuda, "profile", FakeProfile)
    monkeypatch.setattr(profile_cuda, "warmed_env", cpu_market)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "fake GPU")
    r = profile_cuda.profile_step("recenv/Market-v0", 4, 2, device="cuda", compile=False, top=3)
    assert r["wall_s_per_step_synced_each"] == pytest.approx(1.5)
    assert r["wall_s_per_step_queued"] == pytest.approx(0.5)
    assert r["env_steps_per_s_synced_each"] == pytest.approx(4 / 1.5)
    assert r["env_steps_per_s_queued"] == pytest.approx(4 / 0.5)
    assert r["gpu_busy_fraction"] == pytest.approx(30e-6 / 0.5)
    assert r["device"] == "fake GPU" and r["host_syncs_per_step"] == 2.0


def test_candidates_op_takes_its_requests_in_turn_and_times_after_the_warm_up(monkeypatch):
    """One request timed again and again reads cached rows: the calls cycle through
    ``VARIANTS`` different requests, the first ``WARMUP_CALLS`` untimed, and the market was
    stepped first (its counters hold this episode's stamps). The market's own steps call the
    kernel too (the warm-up's): the script's calls are the last ones."""
    from experiments import candidates_op
    from recenv.core import native
    from recenv.core.market import BatchedMarket

    if not native.available():
        pytest.skip("native kernels not built here")
    kernel, seen = BatchedMarket._candidates_native, []

    def recorded(self, index):
        seen.append((index, int(self.t[0])))
        return kernel(self, index)

    monkeypatch.setattr(BatchedMarket, "_candidates_native", recorded)
    seconds = candidates_op.time_kernel("recenv/Market-v0", 4, calls=20)
    calls = seen[-(candidates_op.WARMUP_CALLS + 20) :]
    assert len(seconds) == 20 and len(seen) > len(calls)
    assert {t for _, t in calls} == {candidates_op.WARMUP_STEPS}
    v = candidates_op.VARIANTS
    assert all(calls[i][0] is calls[i % v][0] for i in range(len(calls)))
    firsts = [torch.cat([ix.flatten().double() for ix in req]) for req, _ in calls[:v]]
    assert len({tuple(f.tolist()) for f in firsts}) == v


def test_candidates_op_reports_the_large_catalogs_ratio_and_extra_time(monkeypatch):
    """Each size is timed at its own ``num_items`` on one thread; the ratio is large over
    small and the extra time per call large minus small (here 10^6 items cost 1 ms a call,
    10^3 items 1 us)."""
    from experiments import candidates_op

    calls = []

    def fake_time_kernel(env_id, num_envs, calls_, **cfg):
        calls.append((cfg["num_items"], torch.get_num_threads()))
        return [cfg["num_items"] * 1e-9] * calls_

    threads = torch.get_num_threads()
    monkeypatch.setattr(candidates_op, "time_kernel", fake_time_kernel)
    monkeypatch.setattr(candidates_op.native, "available", lambda: True)
    try:
        torch.set_num_threads(2)  # the tests run on one thread: the script must set it
        r = candidates_op.main(["--items", "1000,1000000", "--calls", "3", "--no-json"])
    finally:
        torch.set_num_threads(threads)
    assert calls == [(1000, 1), (1_000_000, 1)]
    assert r["ratio"] == pytest.approx(1000.0)
    assert r["extra_ms"] == pytest.approx(0.999)
    assert r["seconds_per_call"]["1000000"]["median"] == pytest.approx(1e-3)


def test_team_return_is_one_agents_under_cooperative_rewards_else_the_agents_sum():
    """Under ``cooperative`` rewards every agent receives the team's reward, so the team's
    return is one agent's (their mean); otherwise the agents' returns add up."""
    from experiments.preset_baselines import team_return

    returns = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # [episodes, agents]
    assert team_return(returns, "cooperative") == pytest.approx(3.0)
    assert team_return(returns, "competitive") == pytest.approx(6.0)
