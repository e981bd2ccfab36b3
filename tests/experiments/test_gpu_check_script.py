"""``experiments/gpu_check.sh``, the one command a session lent a GPU runs, run here with a
stand-in Python.

A GPU is lent rarely and for ~15 minutes, in one device call; a slip in this script (a phase
that never runs, a default that drops ``--compiled-first``, the JSON not copied back to
``$OUT``, the import check not stopping a machine that cannot run recenv, the time limits)
would cost that session. The script is run in a scratch copy of the repository with
``PYTHON`` a shell stand-in that records each call and writes what the real command would
(``bench_cuda``'s JSON); nothing of torch runs. The Python scripts it calls are tested on
their own (``test_gpu_scripts.py``, ``test_bench.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils' timeout",
)

# Records its arguments, one call a line; the import check ("-" with the script on stdin)
# exits $STUB_IMPORT_STATUS; bench_cuda writes a new result JSON as the real one does.
STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [ "$1" = "-" ]; then
  cat > /dev/null
  echo "python stub; torch stub"
  exit "${STUB_IMPORT_STATUS:-0}"
fi
if [ "$2" = "experiments.bench_cuda" ]; then
  echo '{"rows": []}' > experiments/results/bench_cuda-vm-20990101T000000Z.json
  echo "bench_cuda stub"
fi
exit 0
"""


@pytest.fixture
def repo(tmp_path):
    """A scratch repository: the script, a results folder holding an older (committed)
    bench_cuda JSON, two test files of which one asks for CUDA, and the stand-in Python."""
    root = tmp_path / "repo"
    (root / "experiments" / "results").mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "gpu_check.sh", root / "experiments")
    (root / "experiments" / "results" / "bench_cuda-vm-20261204T183539Z.json").write_text("{}")
    (root / "tests").mkdir()
    (root / "tests" / "test_on_gpu.py").write_text("# torch.cuda.is_available()\n")
    (root / "tests" / "test_on_cpu.py").write_text("# nothing of the device\n")
    stub = tmp_path / "python-stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return root, stub


def run_check(repo, *args, seconds=None, import_status=0):
    root, stub = repo
    out, log = root.parent / "out", root.parent / "calls.log"
    out.mkdir(exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_SECONDS")},
        "PYTHON": str(stub),
        "OUT": str(out),
        "STUB_LOG": str(log),
        "STUB_IMPORT_STATUS": str(import_status),
    }
    if seconds is not None:
        env["GPU_CHECK_SECONDS"] = str(seconds)
    r = subprocess.run(
        ["bash", "experiments/gpu_check.sh", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return r, calls, out


def test_every_phase_runs_in_order_and_its_output_comes_back(repo):
    r, calls, out = run_check(repo)
    assert r.returncode == 0, r.stderr
    assert calls[0] == "-"  # the import check first
    bench, tests, profile, tests_compiled, profile_compiled = calls[1:]
    # The compiled rows first at every count (the figure never measured), largest first.
    assert bench == (
        "-m experiments.bench_cuda --sizes 1048576,262144,65536,16384 "
        "--aten-cumsum-sizes 1048576,16384 --compiled-first"
    )
    # The files that ask for CUDA only; eager tests before the compiled ones.
    assert tests.endswith("-k cuda and not True tests/test_on_gpu.py")
    assert tests_compiled.endswith("-k cuda and True tests/test_on_gpu.py")
    assert tests.startswith("-m pytest -q -x")
    assert profile == f"-m experiments.profile_cuda --num-envs 262144 --out {out}/profile_cuda.json"
    assert profile_compiled == (
        f"-m experiments.profile_cuda --num-envs 262144 --compile "
        f"--out {out}/profile_cuda_compiled.json"
    )
    names = sorted(p.name for p in out.iterdir())
    # This run's JSON comes back; the committed one already in the results folder does not.
    assert "bench_cuda-vm-20990101T000000Z.json" in names
    assert "bench_cuda-vm-20261204T183539Z.json" not in names
    assert {"gpu.txt", "bench_cuda.txt", "gpu_tests.txt", "gpu_tests_compiled.txt"} <= set(names)
    assert "bench_cuda stub" in (out / "bench_cuda.txt").read_text()
    assert "python stub" in (out / "gpu.txt").read_text()
    assert "gpu_check: " in (out / "gpu.txt").read_text().splitlines()[-1]


def test_bench_options_given_replace_the_default_sizes(repo):
    r, calls, _ = run_check(repo, "--sizes", "16384")
    assert r.returncode == 0, r.stderr
    assert calls[1] == "-m experiments.bench_cuda --sizes 16384"


def test_a_machine_that_cannot_import_recenv_stops_after_the_check(repo):
    r, calls, out = run_check(repo, import_status=1)
    assert r.returncode == 1
    assert calls == ["-"], "a phase ran after the import check failed"
    assert "python stub" in (out / "gpu.txt").read_text()


def test_phases_without_time_left_are_skipped_and_said_so(repo):
    r, calls, out = run_check(repo, seconds=19)  # under the 20 s a phase needs
    assert r.returncode == 0, r.stderr
    assert calls == ["-"]
    skipped = [x for x in (out / "gpu.txt").read_text().splitlines() if x.startswith("skipped")]
    assert len(skipped) == 5
    assert "experiments.bench_cuda" in skipped[0] and "profile_cuda" in skipped[-1]
