"""Checkpoints that cannot be written, that vanish while read, or that rotted on disk.

- A checkpoint write that fails (a full disk, ``ulimit -f``) was a raw ``RuntimeError:
  [enforce fail at inline_container.cc:672] . unexpected pos ...`` traceback naming no file,
  and left its ``.step_*.pt.tmp-PID`` (megabytes) behind. It is a :class:`RunError` naming
  the file, the reason, the checkpoint that is kept and the ``resume`` command; the temporary
  file is removed, and the resume finishes as the uninterrupted run.
- A TensorBoard event that could not be appended (a full disk) killed ``SummaryWriter``'s
  writer thread with a bare ``Exception in thread`` traceback and stopped the run with a bare
  ``OSError`` ("error: [Errno 28] No space left on device", no file, no resume). It is the same
  :class:`WriteError` as a checkpoint's, naming the event file; nothing more is appended to it,
  and the resume reads in TensorBoard like the uninterrupted run. ``curve.csv`` is written
  atomically like the checkpoints: a failed write leaves none, and says so the same way.
- ``evaluate`` of a run still training read the newest checkpoint, then read it again by path
  to build the agent: pruning deleted it in between (``[Errno 2] No such file``, 5 times out
  of 6). The checkpoint is read once and the agent built from that payload
  (``agents.load_agent(path, env, payload=...)``); one pruned between the listing and the read
  is looked up again.
- ``torch.load`` does not check the CRC-32s of the zip records ``torch.save`` writes: bit rot
  in a tensor's record loaded silently as other numbers (a resume finished with another
  result) or crashed later with a traceback. Every checkpoint read (resume, evaluate,
  ``load_agent``, ``Agent.load``, ``agent.pt``) checks them first and refuses a damaged file
  by name and record.
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from experiment_helpers import REPO, cli_env, killed_copy, tensorboard, tiny_run, tree
from tensorboard.compat.tensorflow_stub.io import gfile

import agents
from agents import base
from experiments import cli, runner
from experiments.runner import RunError, WriteError

CFG = dict(total_steps=120, checkpoint_every=40, eval_episodes=2)
GOOD = "step_000000000040.pt"  # the checkpoint the killed copies resume from
NEXT = "step_000000000080.pt"  # the one their resume writes first


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished IQL run (two env agents) with checkpoints at 40, 80, 120."""
    root = tmp_path_factory.mktemp("done") / "runs"
    return runner.train(tiny_run(root, **CFG)).path


def same_result(summary: dict, done: Path) -> None:
    ref = json.loads((done / "summary.json").read_text())
    assert summary["eval"] == ref["eval"] and summary["train"] == ref["train"]


def same_state(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def temp_files(run: Path) -> list[str]:
    return sorted(p.name for d in (run, run / "checkpoints") for p in d.glob(".*.tmp-*"))


# ----------------------------------------------------------------------------------------
# 1. A checkpoint that cannot be written
# ----------------------------------------------------------------------------------------
def _torch_save_that_fills_the_disk(real_save):
    """``torch.save`` as it fails on a full disk: part of the file written, then its zip
    writer's RuntimeError with the OSError as its context (what torch 2.x does)."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: buf.tell() // 2])
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:  # the OSError stays the RuntimeError's __context__, as in torch
            raise RuntimeError(  # noqa: B904
                "[enforce fail at inline_container.cc:672] . unexpected pos 1533376 vs 1533264"
            )

    return save


def test_a_checkpoint_write_that_fails_is_a_run_error_and_leaves_no_temp_file(
    finished, tmp_path, monkeypatch
):
    run = killed_copy(finished, tmp_path, 40)
    monkeypatch.setattr(torch, "save", _torch_save_that_fills_the_disk(torch.save))
    with pytest.raises(RunError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert isinstance(err.value, WriteError), msg
    assert f"cannot write checkpoint {str(run / 'checkpoints' / NEXT)!r}" in msg, msg
    assert "No space left on device" in msg and "inline_container" not in msg, msg
    assert f"the last checkpoint {str(run / 'checkpoints' / GOOD)!r} is kept" in msg, msg
    assert f"python -m experiments resume {run}" in msg, msg
    assert temp_files(run) == []
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [GOOD]
    monkeypatch.undo()
    res = runner.resume(run)  # once there is room: the uninterrupted run's result
    same_result(res.summary, finished)


def test_the_cli_under_a_file_size_limit_says_which_file_and_resumes_identically(
    finished, tmp_path
):
    """A real failed write: ``resume`` under ``RLIMIT_FSIZE`` smaller than its next
    checkpoint (Python ignores SIGXFSZ: the write fails with EFBIG, which torch.save
    reports as its zip writer's RuntimeError)."""
    run = killed_copy(finished, tmp_path, 40)
    limit = (finished / "checkpoints" / NEXT).stat().st_size - 50_000
    assert limit > (finished / "checkpoints" / GOOD).stat().st_size

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "resume", str(run)],
        cwd=REPO,
        # (No native-kernel build under the limit: a process that found the kernels not yet
        # built, with another test building them, would fail there instead.)
        env={**cli_env(), "RECENV_NATIVE": "0"},
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=small_files,
    )
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err)
    assert err.startswith("error:") and "Traceback" not in err, err
    assert f"cannot write checkpoint {str(run / 'checkpoints' / NEXT)!r}: File too large" in err
    assert f"the last checkpoint {str(run / 'checkpoints' / GOOD)!r} is kept" in err, err
    assert f"python -m experiments resume {run}" in err, err
    assert temp_files(run) == []
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [GOOD]
    same_result(runner.resume(run).summary, finished)


def test_atomic_writes_remove_their_temp_file_and_keep_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def no_room(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner.os, "fsync", no_room)
    with pytest.raises(WriteError, match="No space left on device") as err:
        runner.atomic_write_bytes(path, b"new")
    assert err.value.path == path and str(path) in str(err.value)
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["summary.json"]
    monkeypatch.undo()
    # Not a failed write (an object torch cannot pickle): unchanged, but no temp file left.
    with pytest.raises(Exception) as err:
        runner.atomic_torch_save(tmp_path / "x.pt", {"f": lambda: 0})
    assert not isinstance(err.value, RunError)
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def _event_writes_that_fill_the_disk(monkeypatch, after: int) -> None:
    """TensorBoard's local file writes (the event file's first record, then one append per
    event) succeed ``after`` times, then fail as on a full disk: half the record written,
    then ENOSPC."""
    real, calls = gfile.LocalFileSystem._write, []

    def write(self, filename, file_content, mode):
        calls.append(filename)
        if len(calls) <= after:
            return real(self, filename, file_content, mode)
        real(self, filename, file_content[: len(file_content) // 2], mode)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gfile.LocalFileSystem, "_write", write)


# The writer thread's traceback ("Exception in thread"), which pytest reports as this warning.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("after", [0, 8], ids=["its first event", "an event while training"])
def test_an_event_file_that_cannot_be_written_is_a_write_error_and_resumes_identically(
    finished, tmp_path, monkeypatch, capfd, after
):
    run = killed_copy(finished, tmp_path, 40)
    old_events = {p: p.read_bytes() for p in run.glob("events.out.tfevents.*")}
    _event_writes_that_fill_the_disk(monkeypatch, after)
    assert cli.main(["resume", str(run)]) == 1
    err = capfd.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err, err
    assert "Exception in thread" not in err, err
    (new,) = set(run.glob("events.out.tfevents.*")) - set(old_events)
    assert f"cannot write TensorBoard event file {str(new)!r}: No space left on device" in err
    assert f"the last checkpoint {str(run / 'checkpoints' / GOOD)!r} is kept" in err, err
    assert f"python -m experiments resume {run}" in err, err
    assert {p: p.read_bytes() for p in old_events} == old_events
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [GOOD]
    assert not (run / runner.DONE).exists() and temp_files(run) == []
    monkeypatch.undo()
    # A resume comes later than the failure, so its event file sorts after the cut-short
    # one, as TensorBoard reads a directory's files in name order and the name starts with
    # the second it was made. Within one second in one process, the names sort by a counter
    # compared as text ("...10" before "...9"): the cut-short file could then be read last,
    # and its restart marker hide the resumed run's points (a flaky failure in CI).
    while int(time.time()) <= int(new.name.split(".")[3]):
        time.sleep(0.05)
    same_result(runner.resume(run).summary, finished)  # once there is room
    assert tensorboard(run)[0] == tensorboard(finished)[0]  # the scalars, both loaders


def test_a_curve_that_cannot_be_written_leaves_none_and_keeps_the_final_checkpoint(
    finished, tmp_path, monkeypatch
):
    """curve.csv is written at the end like summary.json: atomically, through WriteError."""
    run = killed_copy(finished, tmp_path, 120)
    real = runner.os.replace

    def replace(src, dst):
        if Path(dst).name == "curve.csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(runner.os, "replace", replace)
    with pytest.raises(WriteError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert f"cannot write file {str(run / 'curve.csv')!r}: No space left on device" in msg
    assert "(its temporary file was removed)" in msg, msg
    last = run / "checkpoints" / "step_000000000120.pt"
    assert f"the last checkpoint {str(last)!r} is kept" in msg, msg
    assert f"python -m experiments resume {run}" in msg, msg
    assert not (run / "curve.csv").exists() and not (run / runner.DONE).exists()
    assert temp_files(run) == []
    monkeypatch.undo()
    same_result(runner.resume(run).summary, finished)
    assert (run / "curve.csv").read_text() == (finished / "curve.csv").read_text()


# ----------------------------------------------------------------------------------------
# 2. Evaluating a run that is still training (its checkpoints pruned meanwhile)
# ----------------------------------------------------------------------------------------
def test_evaluate_reads_the_checkpoint_once_so_pruning_after_the_read_does_not_matter(
    finished, tmp_path, monkeypatch
):
    run = killed_copy(finished, tmp_path, 80)
    newest = run / "checkpoints" / NEXT
    real_load, reads = torch.load, []

    def load_then_prune(f, map_location=None, *, weights_only):
        assert weights_only is True  # every checkpoint is read with weights_only=True
        out = real_load(f, map_location=map_location, weights_only=True)
        reads.append(f)
        newest.unlink(missing_ok=True)  # the training process prunes it
        return out

    monkeypatch.setattr(torch, "load", load_then_prune)
    out, metrics = runner.evaluate_checkpoint(run, episodes=2, root=tmp_path / "ev", quiet=True)
    assert len(reads) == 1 and not newest.exists()
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == str(newest)
    assert metrics


def test_evaluate_looks_again_for_a_checkpoint_pruned_between_listing_and_reading(
    finished, tmp_path, monkeypatch
):
    run = killed_copy(finished, tmp_path, 80)
    real, calls = runner.RunDir.checkpoints, []

    def listed_before_a_prune(self):
        found = real(self)
        calls.append(1)
        # The first listing still shows a newer checkpoint, pruned since by a newer one.
        if len(calls) == 1:
            return [*found, self.checkpoint_dir / "step_000000000100.pt"]
        return found

    monkeypatch.setattr(runner.RunDir, "checkpoints", listed_before_a_prune)
    out, _ = runner.evaluate_checkpoint(run, episodes=2, root=tmp_path / "ev", quiet=True)
    assert len(calls) == 2
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == str(
        run / "checkpoints" / NEXT
    )


def test_load_agent_builds_from_a_payload_already_read_with_the_same_checks(tmp_path, monkeypatch):
    done = runner.train(tiny_run(tmp_path / "runs", opponent="popularity", **CFG)).path
    ckpt = done / "agent.pt"
    env = runner.make_env(runner.read_run_config(done))
    payload = base.read_checkpoint(ckpt)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("read again"))
    team = agents.load_agent(ckpt, env, payload=payload)
    assert isinstance(team, agents.Team)
    team.load(ckpt, payload=payload)
    monkeypatch.undo()
    assert same_state(team.state_dict(), agents.load_agent(ckpt, env).state_dict())
    with pytest.raises(ValueError, match="is not an agent checkpoint") as err:
        agents.load_agent(ckpt, env, payload={"state": {}})
    assert str(ckpt) in str(err.value)
    bad = {**payload, "header": {**payload["header"], "format_version": 99}}
    with pytest.raises(ValueError, match="format_version=99"):
        agents.load_agent(ckpt, env, payload=bad)
    with pytest.raises(ValueError, match="holds agent 'team'"):
        team.members[0].load(ckpt, payload=payload)


# ----------------------------------------------------------------------------------------
# 3. Bit rot: a record whose bytes are not those torch.save wrote
# ----------------------------------------------------------------------------------------
def flip_record(path: Path, which: str = "largest") -> str:
    """Flip one bit every 64 bytes of one record of the checkpoint ``path``, in place (the
    zip's structure and sizes intact, as bit rot leaves them): its ``largest`` tensor record,
    a ``small`` one, or ``data.pkl``. Returns the record's name."""
    with zipfile.ZipFile(path) as z:
        records = z.infolist()
    if which == "data.pkl":
        (info,) = [r for r in records if r.filename.endswith("/data.pkl")]
    else:
        data = sorted((r for r in records if "/data/" in r.filename), key=lambda r: r.file_size)
        info = data[-1] if which == "largest" else next(r for r in data if r.file_size >= 64)
    b = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", b[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for j in range(0, info.file_size, 64):
        b[start + j + 3] ^= 0x80
    path.write_bytes(bytes(b))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() == info.filename  # what the check must find
    return info.filename


@pytest.mark.parametrize("which", ["largest", "small", "data.pkl"])
def test_resume_refuses_a_rotted_checkpoint_by_file_and_record(finished, tmp_path, capsys, which):
    run = killed_copy(finished, tmp_path, 80)
    bad = run / "checkpoints" / NEXT
    record = flip_record(bad, which)
    before = tree(run)
    with pytest.raises(RunError) as err:
        runner.resume(run)
    msg = str(err.value)
    assert str(bad) in msg and f"record {record!r} fails its CRC-32 check" in msg, msg
    assert "No file was changed or removed" in msg and f"--checkpoint {run}" in msg, msg
    assert GOOD in msg, msg
    assert tree(run) == before
    assert cli.main(["resume", str(run)]) == 1
    out = capsys.readouterr().err
    assert out.startswith("error:") and record in out and "Traceback" not in out, out
    assert tree(run) == before
    res = runner.resume(run, checkpoint=run / "checkpoints" / GOOD)
    same_result(res.summary, finished)


def test_evaluate_and_load_agent_refuse_a_rotted_agent_pt(finished, tmp_path):
    run = tmp_path / finished.name
    run.mkdir()
    for name in ("config.json", "agent.pt"):
        (run / name).write_bytes((finished / name).read_bytes())
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / GOOD).write_bytes((finished / "checkpoints" / GOOD).read_bytes())
    record = flip_record(run / "agent.pt")
    with pytest.raises(RunError) as err:
        runner.evaluate_checkpoint(run, episodes=2, root=tmp_path / "ev", quiet=True)
    msg = str(err.value)
    assert str(run / "agent.pt") in msg and record in msg and "CRC-32" in msg, msg
    assert f"evaluate {run / 'checkpoints' / GOOD}" in msg, msg
    assert not (tmp_path / "ev").exists()
    env = runner.make_env(runner.read_run_config(run))
    for load in (
        lambda: agents.load_agent(run / "agent.pt", env),
        lambda: agents.load_agent(run / "checkpoints" / GOOD, env).load(run / "agent.pt"),
    ):
        with pytest.raises(ValueError) as err:
            load()
        assert str(run / "agent.pt") in str(err.value) and record in str(err.value)


def test_a_checkpoint_written_without_crcs_still_loads(finished, tmp_path):
    """``torch.serialization.set_crc32_options(False)`` writes every CRC as 0: there is
    nothing to check, and nothing is refused."""
    env = runner.make_env(runner.read_run_config(finished))
    agent = agents.load_agent(finished / "agent.pt", env)
    path = tmp_path / "no_crc.pt"
    torch.serialization.set_crc32_options(False)
    try:
        agent.save(path)
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(path) as z:
        assert all(r.CRC == 0 for r in z.infolist())
    with open(path, "rb") as f:
        assert base.damaged_record(f) is None
    agents.load_agent(path, env)
