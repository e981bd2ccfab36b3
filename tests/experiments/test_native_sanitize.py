"""``experiments.native_sanitize`` cannot print ``OK`` without having checked anything.

The sanitized run itself (a 3-10 min build, then minutes of fuzzing) is not run here. What is:
its canary (a tiny library built with the run's flags, a heap overflow and a signed overflow
planted in it, each called in a process started as the checked one is) must report both
bugs and run a correct call cleanly, and must say so when the flags, the preloaded runtimes
or the halting are not what the run needs; the check that the loaded kernels are the
instrumented copy must tell the normal build from a sanitized one; and the run stops, with
exit status 2, when its canary fails.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from experiments import native_sanitize as ns

needs_sanitizers = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or shutil.which("g++") is None
    or ns.runtime_libraries() is None,
    reason="needs gcc with libasan and libubsan (Linux)",
)


@needs_sanitizers
def test_the_canary_reports_both_planted_bugs_and_passes_a_correct_call(tmp_path):
    assert ns.canary(tmp_path) == []


@needs_sanitizers
@pytest.mark.parametrize(
    "flags, env_change, unreported",
    [
        (["-O1", "-g"], None, {"heap_overflow", "signed_overflow"}),  # no sanitizer
        (["-O1", "-g", "-fsanitize=address"], None, {"signed_overflow"}),  # ASan only
        (
            ["-O1", "-g", "-fsanitize=undefined", "-fno-sanitize-recover=all"],
            None,
            {"heap_overflow"},
        ),
        # UBSan built to recover and told not to halt: it prints, and the call returns
        (["-O1", "-g", "-fsanitize=address,undefined"], "no halt", {"signed_overflow"}),
        (ns.FLAGS, "no preload", {"heap_overflow", "signed_overflow", "fine"}),
    ],
    ids=["plain", "asan-only", "ubsan-only", "ubsan-continues", "asan-not-preloaded"],
)
def test_the_canary_says_what_would_go_unreported(tmp_path, flags, env_change, unreported):
    env = ns.sanitizer_env(str(tmp_path))
    if env_change == "no preload":
        env.pop("LD_PRELOAD")
    elif env_change == "no halt":
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=0"
    problems = ns.canary(tmp_path, flags=flags, env=env)
    assert {p.split("(")[0] for p in problems} == unreported, problems


def test_the_normal_build_is_told_from_an_instrumented_one(tmp_path):
    plain, sanitized = tmp_path / "plain.so", tmp_path / "sanitized.so"
    plain.write_bytes(b"\x7fELF...recenv::candidates\0memcpy\0")
    sanitized.write_bytes(b"\x7fELF...__asan_report_load8\0__ubsan_handle_add_overflow\0")
    assert ns.instrumented(plain) == ["ASan", "UBSan"]
    assert ns.instrumented(sanitized) == []
    asan_only = tmp_path / "asan.so"
    asan_only.write_bytes(b"__asan_report_load4\0")
    assert ns.instrumented(asan_only) == ["UBSan"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux's /proc")
def test_the_loaded_kernels_are_found_and_the_normal_build_is_not_instrumented():
    from recenv.core import native

    if not native.available():
        pytest.skip(f"native kernels unavailable: {native._STATE.get('error')}")
    lib = ns.loaded_kernels()
    assert lib is not None and lib.name.startswith("recenv_native") and lib.exists()
    assert ns.instrumented(lib) == ["ASan", "UBSan"]


def test_the_run_stops_when_its_canary_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ns, "canary", lambda work_dir, env=None: ["heap_overflow(4): not reported"])
    started = []
    monkeypatch.setattr(ns.subprocess, "call", lambda *a, **k: started.append(a) or 0)
    monkeypatch.setattr(ns, "sanitizer_env", lambda build_dir: {"TORCH_EXTENSIONS_DIR": build_dir})
    assert ns.main(["--build-dir", str(tmp_path)]) == 2
    assert not started, "the checked run was started after a failed canary"
    assert "would not catch a bug here" in capsys.readouterr().out


def test_the_run_starts_when_its_canary_passes(monkeypatch, tmp_path):
    monkeypatch.setattr(ns, "canary", lambda work_dir, env=None: [])
    started = []
    monkeypatch.setattr(ns.subprocess, "call", lambda cmd, **k: started.append((cmd, k)) or 0)
    monkeypatch.setattr(ns, "sanitizer_env", lambda build_dir: {"TORCH_EXTENSIONS_DIR": build_dir})
    assert ns.main(["--build-dir", str(tmp_path), "--seeds", "0:2"]) == 0
    ((cmd, kwargs),) = started
    assert cmd[-4:] == ["--build-dir", str(tmp_path), "--seeds", "0:2"] and "--child" in cmd
    assert kwargs["env"]["TORCH_EXTENSIONS_DIR"] == str(tmp_path)
