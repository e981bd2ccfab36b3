"""The performance tools: the loop profiler's parsing (experiments.profile_loops), the
trajectory hash (experiments.trajectory_hash), the memory floor (experiments.memory_floor),
the face in torch's two algorithm modes (experiments.face_modes) and the step profile
(experiments.profile_cuda, on the CPU here). None asserts anything about speed."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch

from experiments import face_modes
from experiments import memory_floor as mf
from experiments import profile_loops as pl
from experiments import trajectory_hash as th
from experiments.config import parse_market_overrides


def _for(var: str, n: int, step: int = 1) -> str:
    """A loop header as inductor's C++ writes it."""
    zero, end, inc = "static_cast<int64_t>(0L)", f"static_cast<int64_t>({n}L)", f"{step}L"
    return f"for(int64_t {var}={zero}; {var}<{end}; {var}+=static_cast<int64_t>({inc}))"


CPP = f"""\
#include <x>
extern "C"  void  cpp_fused_add_mul_0(const float* in_ptr0,
                       float* out_ptr0)
{{
    {{
        #pragma GCC ivdep
        {_for("x0", 4096)}
        {{
            {_for("x1", 40, 16)}
            {{
                out_ptr0[x1] = in_ptr0[x1];
            }}
        }}
    }}
    {{
        {_for("x0", 8192)}
        {{
            out_ptr0[x0] = 0;
        }}
    }}
}}
void inductor_entry_impl()
{{
    {{
        aoti_torch_call_dispatcher("recenv::candidates", "", vars);
    }}
}}
"""


def test_loop_blocks_find_each_top_level_loop_and_its_trip_counts():
    """... and not the wrapper's blocks without a loop (a custom op's call)."""
    blocks = pl.loop_blocks(CPP)
    assert [(b["kernel"], b["nest"]) for b in blocks] == [
        ("cpp_fused_add_mul_0", ["4096", "40/16"]),
        ("cpp_fused_add_mul_0", ["8192"]),
    ]
    assert blocks[0]["first"] == 5 and blocks[0]["last"] == 14
    assert blocks[1]["first"] == 15 and blocks[1]["last"] == 20


def test_samples_are_attributed_to_the_block_holding_their_line():
    blocks = pl.loop_blocks(CPP)
    # line 11 is in the first block, 18 in the second; line 2 is before every block, and
    # 21 and 25 after the last one's end (the wrapper's code, no loop): none of theirs.
    per = pl.attribute({11: 5, 18: 2, 2: 7, 21: 3, 25: 4}, blocks)
    assert [(b["first"], b["samples"]) for b in per] == [(5, 5), (15, 2)]


def test_mmap_events_and_offsets_map_addresses_into_the_library():
    lines = [
        "python 0 0.0: PERF_RECORD_MMAP2 10702/10702: [0x7f416cd37000(0x2a000) @ 0x4000 "
        "fe:00 2351161 0]: r-xp /tmp/torchinductor_u/xn/abc.main.so",
        "python 0 0.0: PERF_RECORD_MMAP2 10702/10702: [0x7f4100000000(0x1000) @ 0 "
        "fe:00 1 0]: r--p /tmp/data.bin",
    ]
    maps = pl.parse_mmaps(lines)
    assert maps == {"/tmp/torchinductor_u/xn/abc.main.so": [(0x7F416CD37000, 0x2A000, 0x4000)]}
    mapping = maps["/tmp/torchinductor_u/xn/abc.main.so"]
    assert pl.file_offset(0x7F416CD44627, mapping) == 0x7F416CD44627 - 0x7F416CD37000 + 0x4000
    assert pl.file_offset(0x1, mapping) is None
    segs = pl.load_segments(
        "  LOAD 0x000000 0x0000000000000000 0x0000000000000000 0x003040 0x003040 R   0x1000\n"
        "  LOAD 0x004000 0x0000000000005000 0x0000000000005000 0x029d29 0x029d29 R E 0x1000\n"
    )
    assert pl.offset_to_vaddr(0x4010, segs) == 0x5010


def test_addr2line_output_gives_the_outermost_generated_line():
    out = (
        "0x0000000000011e40\n"
        "/torch/include/c10/util/TypeCast.h:79\n"
        "/tmp/t/xn/abc.main.cpp:7302\n"
        "/tmp/t/xn/abc.main.cpp:7290 (discriminator 3)\n"
        "0x0000000000011e50\n"
        "/usr/include/x.h:1\n"
    )
    assert pl.outermost_lines(out, "abc.main.cpp") == {0x11E40: 7290, 0x11E50: None}


def test_profile_loops_finds_inductors_libraries_in_a_cache_dir_set_by_the_user(
    tmp_path, monkeypatch
):
    """Inductor's libraries were told apart by "torchinductor" in their path, its default
    cache directory's name: with ``TORCHINDUCTOR_CACHE_DIR`` elsewhere no sample reached a
    loop (the end-to-end test failed so). They are the ``.so`` files under the cache
    directory inductor resolves, as the child inherits it."""
    cache = tmp_path / "inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    where = pl.inductor_cache_dir()
    assert where == os.path.realpath(cache)
    assert pl.is_inductor_library(f"{cache}/gq/cgqnfi7f.main.so", where)
    assert pl.is_inductor_library("/tmp/torchinductor_root/gq/cgqnfi7f.main.so", where)
    assert not pl.is_inductor_library(f"{cache}/gq/cgqnfi7f.main.cpp", where)
    assert not pl.is_inductor_library(f"{cache}-other/x.so", where)
    assert not pl.is_inductor_library("/usr/lib/libtorch_cpu.so", where)


@pytest.mark.skipif(shutil.which("perf") is None, reason="needs linux perf")
def test_profile_loops_end_to_end(tmp_path):
    """A real run, when perf can sample this user's processes."""
    probe = subprocess.run(
        ["perf", "record", "-e", "cpu-clock", "-o", str(tmp_path / "p.data"), "--", "true"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("perf cannot sample here")
    data, report = pl.sample("recenv/Market-v0", 4, 1.0, {}, tmp_path)
    result = pl.analyse(data)
    assert report["steps"] > 0 and result["samples"] > 0
    assert result["loops"], "no sample was attributed to a loop of the generated C++"
    assert all(b["samples"] > 0 and b["nest"] for b in result["loops"])


def test_trajectory_digest_is_deterministic_and_sees_the_config():
    a = th.digest("recenv/Market-v0", {}, steps=4, num_envs=2, face_steps=4)
    assert a == th.digest("recenv/Market-v0", {}, steps=4, num_envs=2, face_steps=4)
    assert a != th.digest(
        "recenv/Market-v0", {"no_click_utility": 0.5}, steps=4, num_envs=2, face_steps=4
    )
    assert a != th.digest("recenv/Market-v0", {}, steps=5, num_envs=2, face_steps=4)


@pytest.mark.xdist_group("worktrees")  # with test_bench's A/B test: see there
def test_trajectory_hash_against_head_is_identical_when_the_core_is_unchanged(capsys):
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "recenv"], cwd=th.Path(th.__file__).parents[1]
    )
    if dirty.returncode != 0:
        pytest.skip("recenv/ has uncommitted changes: the digests may rightly differ")
    code = th.main(["--base", "HEAD", "--steps", "3", "--num-envs", "2", "--face-steps", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(th.CONFIGS)} of {len(th.CONFIGS)} configurations identical" in out


def test_perf_tool_config_overrides_are_typed_and_checked():
    assert parse_market_overrides(["num_items=1000000", "topology=platform_choice"]) == {
        "num_items": 1000000,
        "topology": "platform_choice",
    }
    with pytest.raises(SystemExit, match="unknown key"):
        parse_market_overrides(["num_itemz=5"])
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_market_overrides(["num_items"])


def test_memory_floor_needs_a_step_to_read():
    """Without a warm-up step there is no page to read: a ValueError naming warmup, not a
    KeyError on the reset's info."""
    with pytest.raises(ValueError, match=r"warmup=0 must be >= 1"):
        mf.floor_parts("recenv/Market-v0", 3, warmup=0)


def test_memory_floor_reads_the_steps_own_data():
    """The floor's gathers are the step's lookups: the observation gather reproduces the
    market's candidate features (their static columns), the counter lookup its rows."""
    parts = mf.floor_parts("recenv/Market-v0", 3, warmup=4)
    core, ops = parts["core"], parts["ops"]
    assert set(ops) == set(mf.PARTS) == set(parts["bytes"])
    N, A, C = core.cand.shape
    ops["observation"]()
    static = core._item.arrival  # topics, length, price, observed quality
    gathered = parts["observation"].view(N, A, C, -1)[..., :static]
    assert torch.equal(gathered, core._obs_parts[2][..., :static])
    before = [t.clone() for t in (core.users, core.item_stats)]
    for op in ops.values():
        op()
    # Reads and writes-back leave the market's state as it was.
    assert torch.equal(before[0], core.users) and torch.equal(before[1], core.item_stats)


def test_memory_floor_looks_up_each_markets_own_counters_in_turn():
    """The counter part reads each candidate's row in its own market's counters (at item
    modulo the table's size), and each lookup part goes through VARIANTS different index
    sets in turn (one set timed again and again would time cache hits)."""
    with pytest.warns(UserWarning, match="item_stats_size=300"):  # hashed counters: meant
        parts = mf.floor_parts("recenv/Market-v0", 3, warmup=4, num_items=500, item_stats_size=300)
    core, ops = parts["core"], parts["ops"]
    N, A, C = core.cand.shape
    W = core.config.stats_size
    rows = torch.arange(N)[:, None] * W + core.cand.view(N, A * C) % W
    stats = core.item_stats.view(-1, 3)
    got = [ops["candidate_counters"]() for _ in range(mf.VARIANTS + 1)]
    assert torch.equal(got[0], stats[rows.reshape(-1)])  # the market's own, first
    assert torch.equal(got[mf.VARIANTS], got[0])  # then round again
    observed, listed = [], []
    for _ in range(mf.VARIANTS):
        ops["observation"]()
        observed.append(parts["observation"].clone())
        listed.append(ops["retrieval_lists"]())
    for sets in (observed, listed):
        assert all(not torch.equal(a, b) for a, b in itertools.combinations(sets, 2))
    X = N * A * C  # each candidate's feature row read and written, and its index
    assert parts["bytes"]["observation"] == parts["observation"].nbytes * 2 + X * 8
    assert parts["bytes"]["candidate_counters"] == X * (3 * 4 * 2 + 8)


def test_memory_floor_times_seconds_per_call(monkeypatch):
    clock = [0.0]

    def op():  # a call takes half a second of the stand-in clock
        clock[0] += 0.5

    # The module's own clock (time.perf_counter itself stays as it is for everyone else).
    monkeypatch.setattr(mf, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    assert mf.time_op(op, repeats=3, reps=4) == [0.5, 0.5, 0.5]
    assert clock[0] == 0.5 * (1 + 3 * 4)  # one warm-up call, then 3 x 4


def test_memory_floor_end_to_end_writes_json_once(tmp_path, capsys):
    out = tmp_path / "floor.json"
    args = ["--num-envs", "4", "--repeats", "2", "--reps", "2", "--steps", "2"]
    mf.main([*args, "--step", "eager", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "floor" in printed and "step_eager" in printed
    result = json.loads(out.read_text())
    floor = sum(p["median"] for p in result["parts"].values())
    assert result["floor_s"] == pytest.approx(floor)
    assert result["floor_env_steps_per_s"] == pytest.approx(4 / floor)
    assert result["step_eager"]["over_floor"] == pytest.approx(
        result["step_eager"]["median"] / floor
    )
    with pytest.raises(SystemExit, match="never overwritten"):
        mf.main([*args, "--step", "eager", "--out", str(out)])


def test_face_modes_times_both_modes_alternately_and_keeps_its_result(tmp_path, capsys):
    out = tmp_path / "modes.json"
    small = ["num_items=400", "horizon=12", "num_users=8", "diversity_weight=0.5"]
    argv = [*(f"--config={c}" for c in small), "--steps=5", "--rounds=2", f"--out={out}"]
    assert face_modes.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["num_items"] == 400 and not result["built_in_mode"]
    assert {k: len(v) for k, v in result["rates"].items()} == {"default": 2, "deterministic": 2}
    assert all(r > 0 for v in result["rates"].values() for r in v)
    assert "default / deterministic" in capsys.readouterr().out
    assert not torch.are_deterministic_algorithms_enabled()  # set back after each block
    with pytest.raises(SystemExit, match="never overwritten"):
        face_modes.main(argv)


def test_face_modes_alternates_the_modes_and_reports_default_over_deterministic(
    tmp_path, monkeypatch, capsys
):
    """Each face is built in its own mode, in the order asked; blocks alternate ABBA; the
    verdict is the default mode's median over the deterministic one's (stand-in faces and
    blocks: nothing is compiled or timed)."""
    built, blocks = [], []
    rates = {False: iter([100.0, 130.0, 90.0]), True: iter([50.0, 60.0, 40.0])}

    def face(env_id, config, on, built_in_mode):
        built.append(on)
        return SimpleNamespace(on=on)

    def block(env, on, steps):
        assert env.on == on  # the face built in the mode it is timed in
        blocks.append(on)
        return next(rates[on])

    monkeypatch.setattr(face_modes, "_face", face)
    monkeypatch.setattr(face_modes, "_block", block)
    out = tmp_path / "modes.json"
    assert face_modes.main(["--steps=5", "--rounds=3", f"--out={out}"]) == 0
    assert built == [False, True]
    assert blocks == [False, True, True, False, False, True]
    result = json.loads(out.read_text())
    assert result["medians"] == {"default": 100.0, "deterministic": 50.0}
    assert result["ratio_default_over_deterministic"] == pytest.approx(2.0)
    assert "default / deterministic: 2.00x" in capsys.readouterr().out
    built.clear()
    rates = {False: iter([1.0] * 3), True: iter([1.0] * 3)}
    face_modes.main(["--deterministic-first", "--rounds=3", f"--out={tmp_path / 'b.json'}"])
    assert built == [True, False]


def test_face_modes_times_a_block_in_its_mode_in_steps_per_second(monkeypatch):
    clock, modes = [0.0], []

    def step(actions):  # a step takes a quarter second of the stand-in clock
        modes.append(torch.are_deterministic_algorithms_enabled())
        clock[0] += 0.25

    env = SimpleNamespace(agents=["agent_0"], oracle_slate=lambda a: [0, 1], step=step)
    monkeypatch.setattr(face_modes, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    assert face_modes._block(env, True, steps=4) == pytest.approx(4.0)
    assert modes == [True] * 4
    assert not torch.are_deterministic_algorithms_enabled()  # set back after the block
    assert face_modes._block(env, False, steps=2) == pytest.approx(4.0)
    assert modes[4:] == [False, False]


def test_candidates_op_times_the_kernel_at_both_catalog_sizes():
    from experiments import candidates_op
    from recenv.core import native

    if not native.available():
        pytest.skip("native kernels not built here")
    argv = ["--num-envs", "4", "--items", "100,3000", "--calls", "3", "--no-json"]
    result = candidates_op.main(argv)
    assert set(result["seconds_per_call"]) == {"100", "3000"}
    for s in result["seconds_per_call"].values():
        assert 0 < s["min"] <= s["median"] <= s["max"]
    # No override: each size keeps the env's own item counters, as bench_env's catalog rows.
    assert result["ratio"] > 0 and result["config"] == {}
    held = candidates_op.main([*argv, "--config", "item_stats_size=64"])
    assert held["config"] == {"item_stats_size": 64}
    with pytest.raises(SystemExit):
        candidates_op.main(["--items", "1000", "--no-json"])  # two sizes or nothing


def test_profile_cuda_profiles_a_cpu_step_and_keeps_its_result(tmp_path, capsys, monkeypatch):
    """On the CPU (where CI runs it) the script profiles host time: per-step figures, the
    host ops alone in its table (kernel rows would count device time twice), JSON once."""
    from experiments import profile_cuda

    out = tmp_path / "p.json"
    argv = ["--device", "cpu", "--num-envs", "8", "--steps", "2", "--top", "5", "--out", str(out)]
    r = profile_cuda.main(argv)
    assert json.loads(out.read_text()) == r
    assert r["num_envs"] == 8 and r["device"] == "cpu" and r["gpu_busy_fraction"] is None
    assert r["torch"] == torch.__version__ and {"git", "git_dirty", "machine"} <= set(r)
    assert r["env_steps_per_s_queued"] == pytest.approx(8 / r["wall_s_per_step_queued"])
    assert 0 < len(r["top_ops"]) <= 5
    assert all(row["name"].startswith(("aten::", "recenv::")) for row in r["top_ops"])
    per_step = [row["self_cpu_us_per_step"] for row in r["top_ops"]]
    assert per_step == sorted(per_step, reverse=True) and per_step[0] > 0
    assert "8 markets" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists"):
        profile_cuda.main(argv)
    monkeypatch.setattr(profile_cuda.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        profile_cuda.main(["--num-envs", "8", "--out", str(tmp_path / "q.json")])
