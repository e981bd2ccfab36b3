"""Markets across threads and process boundaries: stepped from several Python threads at once,
continued in a forked child, pickled to a spawned one; and the process-global state that must
survive a ``fork`` (recenv.core.native's build lock, OpenMP's thread pool: recenv.core.forking).

Children are started by ``multiprocessing`` with small markets, always joined or killed; a
child that hangs fails its test after a timeout instead of hanging the run."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import pickle
import sys
import threading

import pytest
import torch

import recenv
from recenv.core import native

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and flock are POSIX")

MARKET = "recenv/Market-v0"
TIMEOUT = 60  # s: a child's steps take well under a second; a hung child fails its test


def _market(num_envs: int = 2, seed: int = 0, **overrides) -> recenv.BatchedMarket:
    kwargs = {"num_items": 300, "horizon": 8, **overrides}
    return recenv.make_vec(MARKET, num_envs=num_envs, seed=seed, **kwargs)


def _slates(obs: dict[str, torch.Tensor], slate_size: int) -> torch.Tensor:
    """A fixed policy of the observation alone: the top unmasked candidates by a fixed
    scoring of their features (no random number drawn)."""
    feats = obs["candidates"].double()
    w = torch.cos(torch.arange(feats.shape[-1], dtype=torch.float64) * 1.7) + 0.1
    scores = feats @ w + 1e-6 * torch.arange(feats.shape[-2], dtype=torch.float64)
    scores = scores.masked_fill(~obs["action_mask"], -torch.inf)
    return scores.topk(slate_size, dim=-1).indices


def _rollout(env: recenv.BatchedMarket, steps: int, obs=None) -> str:
    """A digest of every observation, reward and flag of ``steps`` steps (from a fresh reset,
    or from ``obs``, the current observation): equal digests, bit-equal trajectories."""
    digest = hashlib.sha256()

    def add(*tensors: torch.Tensor) -> None:
        for x in tensors:
            digest.update(x.numpy().tobytes())

    obs = env.reset() if obs is None else obs
    K = env.config.slate_size
    for _ in range(steps):
        for a in env.agents:
            add(*(obs[a][k] for k in sorted(obs[a])))
        obs, rewards, terminated, truncated, _ = env.step(
            {a: _slates(obs[a], K) for a in env.agents}
        )
        add(*(rewards[a] for a in env.agents), terminated, truncated)
    for a in env.agents:
        add(*(obs[a][k] for k in sorted(obs[a])))
    return digest.hexdigest()


def _advanced(env: recenv.BatchedMarket, steps: int = 3) -> dict:
    """``env`` reset and stepped ``steps`` times (past its first state); its observation."""
    obs = env.reset()
    K = env.config.slate_size
    for _ in range(steps):
        obs = env.step({a: _slates(obs[a], K) for a in env.agents})[0]
    return obs


@contextlib.contextmanager
def _child(target, *args, method: str = "fork"):
    """A ``multiprocessing`` child running ``target(queue, *args)``; yields ``get()``, which
    returns what the child put or fails after :data:`TIMEOUT`. The child is joined, and
    killed if still alive, on the way out."""
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue, *args), daemon=True)
    proc.start()

    def get():
        try:
            return queue.get(timeout=TIMEOUT)
        except Exception:  # queue.Empty
            pytest.fail(f"the {method} child sent nothing in {TIMEOUT} s (hung or died)")

    try:
        yield get
    finally:
        proc.join(TIMEOUT if proc.exitcode is None else 0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        queue.close()
        queue.join_thread()


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------
THREADED = [
    {"num_envs": 1, "seed": 0},
    {"num_envs": 3, "seed": 5},
    {"num_envs": 2, "seed": 7, "num_items": 400, "horizon": 6},
]


def _in_threads(build_in_thread: bool) -> list[str | BaseException | None]:
    """The rollouts of :data:`THREADED`'s markets, each stepped (and built, with
    ``build_in_thread``) in a thread of its own, all started at once."""
    envs = [None if build_in_thread else _market(**kw) for kw in THREADED]
    out: list[str | BaseException | None] = [None] * len(THREADED)
    start = threading.Barrier(len(THREADED))

    def run(i: int) -> None:
        try:
            start.wait(TIMEOUT)
            env = envs[i] if envs[i] is not None else _market(**THREADED[i])
            out[i] = _rollout(env, 20)
        except BaseException as e:  # compared below
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(THREADED))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return out


def test_markets_stepped_from_threads_at_once_give_their_own_trajectories():
    """Markets of several sizes and configurations stepped from Python threads at the same
    time give, bit for bit, the trajectories they give stepped alone (no buffer, counter or
    random stream shared between them); built in the threads too."""
    alone = [_rollout(_market(**kw), 20) for kw in THREADED]
    assert _in_threads(build_in_thread=False) == alone
    assert _in_threads(build_in_thread=True) == alone


def test_a_plugin_id_first_made_from_several_threads_at_once_is_registered_once(
    tmp_path, monkeypatch
):
    """Regression: the first ``make`` of an installed plug-in's id (entry-point group
    ``recenv.envs``) from several threads at once looked the id up in every thread, then
    registered it in each: all but one raised "already registered". The lookup (reading every
    distribution's metadata) is held here until both threads are in it."""
    from importlib import metadata
    from types import SimpleNamespace

    from recenv import registry

    info = tmp_path / "labthreads-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labthreads\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[recenv.envs]\nlab/Threads-v0 = recenv.scenarios.market:build\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    both_looking = threading.Barrier(2)

    def entry_points(**kwargs):
        found = metadata.entry_points(**kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_looking.wait(5)
        return found

    monkeypatch.setattr(registry, "metadata", SimpleNamespace(entry_points=entry_points))
    found: list = []

    def make() -> None:
        try:
            found.append(recenv.spec("lab/Threads-v0"))
        except ValueError as e:
            found.append(e)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(found) == 2 and all(isinstance(s, registry.EnvSpec) for s in found), found
    assert found[0] is found[1]


# --------------------------------------------------------------------------------------------
# fork, spawn
# --------------------------------------------------------------------------------------------
def _continue(queue, env, obs, steps):
    queue.put(_rollout(env, steps, obs))


def test_a_forked_child_continues_the_parents_trajectory():
    """A market (the native kernels loaded, if they build) forked mid-episode steps on in the
    child exactly as it does in the parent."""
    env = _market(num_envs=2, seed=3)
    obs = _advanced(env)
    with _child(_continue, env, obs, 12) as get:
        child = get()
    assert child == _rollout(env, 12, obs)


def _unpickle_and_continue(queue, blob, steps):
    torch.set_num_threads(1)
    env = pickle.loads(blob)
    queue.put((_rollout(env, steps, env.observe()), env._native_kernels))


def test_a_market_pickled_to_a_spawned_child_continues_its_trajectory():
    """A market pickled mid-episode (as a vector env's worker or Ray receives it) and
    unpickled in a fresh interpreter continues the trajectory bit for bit, and decides
    there whether to use the native kernels (loaded from the build cache, not waited on)."""
    env = _market(num_envs=2, seed=4)
    _advanced(env)
    blob = pickle.dumps(env)
    with _child(_unpickle_and_continue, blob, 12, method="spawn") as get:
        child, child_native = get()
    assert child == _rollout(env, 12, env.observe())
    assert child_native == native.available()


# --------------------------------------------------------------------------------------------
# What a fork inherits
# --------------------------------------------------------------------------------------------
def _check_kernels(queue):
    queue.put(native.available())


def test_a_child_forked_while_a_thread_holds_the_kernel_lock_can_build_markets(monkeypatch):
    """Regression: a child forked while another thread was inside ``native.available()`` (a
    market built in a thread while the main thread starts a worker; ~30 s during a first
    build) inherited its lock held, by a thread the child does not have: the child's first
    market hung forever."""
    monkeypatch.setattr(native, "_STATE", {"ok": False, "error": "test"})  # no build here
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with native._LOCK:
            held.set()
            release.wait(TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(TIMEOUT)
        with _child(_check_kernels) as get:
            assert get() is False
    finally:
        release.set()
        holder.join()


def _wait_for(queue, stop):
    queue.put(os.getpid())
    stop.wait(TIMEOUT)


def test_a_child_forked_during_a_build_does_not_hold_the_build_lock(tmp_path, monkeypatch):
    """Regression: a child forked while a thread of its parent held the build's flock shared
    that lock (an open file description), and no thread of the child would ever release it:
    every later process waited in its build for as long as the child lived."""
    import fcntl

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    build_dir = native._build_directory("recenv_native_test")
    assert build_dir is not None and build_dir.is_relative_to(tmp_path)
    building, done = threading.Event(), threading.Event()

    def build() -> None:
        with native._build_guard("recenv_native_test"):
            building.set()
            done.wait(TIMEOUT)

    builder = threading.Thread(target=build)
    builder.start()
    stop = mp.get_context("fork").Event()
    try:
        assert building.wait(TIMEOUT)
        with _child(_wait_for, stop) as get:
            get()  # the child lives ...
            done.set()
            builder.join()  # ... and the parent's build is over
            fd = os.open(build_dir / "recenv-build.flock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError before
            finally:
                os.close(fd)
                stop.set()
    finally:
        done.set()
        builder.join()


def _step_and_report(queue, env, obs):
    queue.put((_rollout(env, 4, obs), torch.get_num_threads()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP, /proc: Linux")
def test_a_child_forked_after_torch_ran_on_threads_steps_instead_of_hanging():
    """Regression: GNU OpenMP's thread pool does not survive ``fork``; a child forked from a
    process whose torch had run a parallel region (any op large enough, on two threads or
    more) hung forever in its first one, e.g. a batched market's first step. The pool is
    now let go of before the fork (recenv.core.forking): the child steps on the parent's
    trajectory, on the parent's number of threads."""
    before = torch.get_num_threads()
    env = _market(num_envs=64, seed=6)
    try:
        torch.set_num_threads(2)
        torch.ones(1 << 22).cumsum(0)  # a parallel region: OpenMP's pool is started
        obs = _advanced(env, 2)
        with _child(_step_and_report, env, obs) as get:
            child, child_threads = get()
        assert child_threads == 2
        assert child == _rollout(env, 4, obs)  # the parent's pool starts again
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# SuperSuit's process vectorisation (the SB3 recipe's num_cpus > 1)
# --------------------------------------------------------------------------------------------
def _state(pid: int) -> str | None:
    """A process's state letter from ``/proc`` ("Z": a zombie), None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_sb3_worker_processes_report_errors_and_are_reaped_on_close():
    """``make_sb3_vec_env(num_cpus=2)``: SuperSuit's forked workers step the markets, a
    refused step in a worker reaches the caller with recenv's message, and ``close()``
    leaves no worker behind, not even a zombie."""
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("supersuit")
    import numpy as np

    from recenv.integrations.sb3 import make_sb3_vec_env

    before = set(mp.active_children())
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, num_cpus=2, num_items=300, horizon=8)
    workers = [p.pid for p in set(mp.active_children()) - before]
    try:
        assert len(workers) == 2
        first = np.tile(np.arange(venv.action_space.shape[0]), (venv.num_envs, 1))
        with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
            venv.step(first)  # no reset yet: the workers' envs refuse
    finally:
        venv.close()
    assert [_state(pid) for pid in workers] == [None, None]
    venv = make_sb3_vec_env(MARKET, num_vec_envs=2, num_cpus=2, num_items=300, horizon=8)
    workers = [p.pid for p in set(mp.active_children()) - before]
    try:
        obs = venv.reset()
        obs, rewards, _, _ = venv.step(first)
        assert obs.shape[0] == venv.num_envs and np.isfinite(rewards).all()
    finally:
        venv.close()
    assert [_state(pid) for pid in workers] == [None, None]


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------
_RAY_SCRIPT = """
import os, pickle, sys
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
import ray
from test_process_boundaries import _advanced, _market, _rollout

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
try:
    env = _market(num_envs=2, seed=4)
    _advanced(env)
    continued = ray.remote(lambda env: _rollout(env, 12, env.observe()))
    refused = ray.remote(lambda env: env.step({a: None for a in env.agents}))
    remote = ray.get(continued.remote(env), timeout=300)
    try:
        ray.get(refused.remote(_market()), timeout=300)
        error = None
    except Exception as e:
        error = str(e)
    print(pickle.dumps((remote, _rollout(env, 12, env.observe()), error)).hex())
finally:
    ray.shutdown()
"""


def test_a_market_sent_to_a_local_ray_worker_continues_its_trajectory():
    """A market passed to a Ray task (pickled to a worker process) continues its trajectory
    there bit for bit, and a refused step reaches the driver with recenv's message. Ray runs
    in a child interpreter of its own (one CPU, shut down; its processes killed with the
    child's process group should it hang), never in the test process."""
    import signal
    import subprocess
    from pathlib import Path

    pytest.importorskip("ray")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    proc = subprocess.Popen(
        [sys.executable, "-c", _RAY_SCRIPT],
        # Ray's workers import this module too (the remote functions refer to its helpers).
        env={**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(Path(__file__).parent)])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    remote, local, error = pickle.loads(bytes.fromhex(out.strip().splitlines()[-1]))
    assert remote == local
    assert error is not None and "call reset() before step()" in error
