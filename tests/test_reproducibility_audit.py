"""Reproducibility audit: places where one seed did not give one trajectory.

Each test here failed before its fix; the checks that found the rest sound are listed in the
audit's report, not repeated here (``tests/test_reproducibility.py`` and
``tests/test_batched_equivalence.py`` hold the promise's main tests).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest
import torch

import agents
import recenv
from tests.conftest import CALLER_SETTINGS, caller_setting

MARKET = "recenv/Market-v0"
SMALL = {"horizon": 6, "num_items": 300}


@pytest.mark.parametrize("explore", [False, True], ids=["greedy", "explore"])
@pytest.mark.parametrize(("name", "config"), [("random", {}), ("epsilon_greedy", {"epsilon": 0.5})])
def test_run_episodes_with_one_seed_plays_the_same_episodes(name, config, explore):
    """``run_episodes(agent, env, n, seed=s)`` twice on the PettingZoo face gave an agent that
    draws while acting (the random agent; any agent while exploring) other episodes the second
    time: the env was seeded, but the agent's generator went on from where the first call left
    it (as ``agents.evaluate`` did before ``Agent.reseed``). Without learning, a seed now
    reseeds the agent's generators too."""
    env = recenv.make(MARKET, seed=0, **SMALL)
    agent = agents.make_agent(name, env, seed=1, **config)
    first = agents.run_episodes(agent, env, 2, seed=4, explore=explore)
    again = agents.run_episodes(agent, env, 2, seed=4, explore=explore)
    assert first == again
    other = agents.run_episodes(agent, env, 2, seed=5, explore=explore)
    assert other != first


def test_run_episodes_plays_what_evaluate_plays_on_one_batched_market():
    """One seed, one episode, the random agent: ``run_episodes`` on ``recenv.make`` and
    ``evaluate`` on a one-market ``recenv.make_vec`` are the same market and the same draws
    (both reseed the agent from the seed), so they earn the same returns; the PettingZoo
    face sums float32 rewards in float64, the batched one in float32, hence the tolerance."""
    face = recenv.make(MARKET, **SMALL)
    batched = recenv.make_vec(MARKET, num_envs=1, **SMALL)
    agent = agents.make_agent("random", face, seed=1)
    (returns,) = agents.run_episodes(agent, face, 1, seed=8)
    episode = agents.evaluate(agent, batched, seed=8).episodes["return"][0]
    assert [returns[a] for a in face.possible_agents] == pytest.approx(episode.tolist(), rel=1e-5)


def test_run_episodes_refuses_a_seed_whose_later_episodes_leave_int64():
    """Episode ``e`` is seeded ``seed + e``: with ``seed = 2**63 - 1`` the second episode's
    seed left int64, and the env refused it only after the first episode had been played
    (its returns lost). The range is now checked before any episode, naming ``episodes``."""
    env = recenv.make(MARKET, seed=0, **SMALL)
    agent = agents.make_agent("random", env, seed=1)
    with pytest.raises(ValueError, match=r"seed=9223372036854775807 .*episodes=2"):
        agents.run_episodes(agent, env, 2, seed=2**63 - 1)
    assert env.core._obs_parts is None, "an episode was played before the refusal"
    # The largest seed that fits plays (episode 1 is seeded 2**63 - 1).
    assert len(agents.run_episodes(agent, env, 2, seed=2**63 - 2)) == 2


def _single_agent_rewards(env, steps: int) -> np.ndarray:
    """The learner's rewards ``[steps, N]`` from an unseeded ``reset()``, the learner playing
    the myopic oracle (so only the opponents' draws can differ)."""
    env.reset()
    out = []
    for _ in range(steps):
        _, reward, *_ = env.step(env.market.oracle_slates()[:, 0].numpy())
        out.append(reward)
    return np.stack(out)


def test_a_single_agent_view_of_a_seeded_market_follows_its_seed():
    """``SingleAgentVectorEnv(recenv.make_vec(id, seed=s))`` drew its random opponents' seed
    from the OS: the market was seeded, yet two such envs played other trajectories (and
    none equalled ``make_single_agent_vec(id, seed=s)``). Without a seed of its own the view
    now seeds its opponents from the market's, so both ways of building it are one env."""
    from recenv.integrations.gymnasium_vector import SingleAgentVectorEnv, make_single_agent_vec

    steps = 2 * SMALL["horizon"] + 2  # across an auto-reset
    views = [
        _single_agent_rewards(
            SingleAgentVectorEnv(recenv.make_vec(MARKET, num_envs=2, seed=5, **SMALL)), steps
        )
        for _ in range(2)
    ]
    built = _single_agent_rewards(make_single_agent_vec(MARKET, num_envs=2, seed=5, **SMALL), steps)
    np.testing.assert_array_equal(views[0], views[1])
    np.testing.assert_array_equal(views[0], built)


def test_one_market_reads_its_users_as_a_batch_does_on_two_threads():
    """``state()``'s mean satisfaction and the ``satisfaction`` episode metric of a batch of
    one market depended on torch's thread count once the market had 32,768 users: ATen sums
    a reduction with a single output in per-thread pieces, where a batch's rows are each
    summed whole by one thread. On two threads ``make_vec(num_envs=1)`` (the PettingZoo
    face's core) then differed in the last bit from market 0 of a batch of two with the same
    seed, and from itself on one thread; observations and rewards never did."""
    kwargs = {"num_users": 40_000, "horizon": 4}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        batch = recenv.make_vec(MARKET, num_envs=2, seed=3, **kwargs)
        one = recenv.make_vec(MARKET, num_envs=1, seed=3, **kwargs)
        batch.reset(), one.reset()
        for t in range(kwargs["horizon"]):
            slates = batch.oracle_slates()
            _, _, _, _, info = batch.step({a: slates[:, i] for i, a in enumerate(batch.agents)})
            _, _, _, _, one_info = one.step({a: slates[:1, i] for i, a in enumerate(one.agents)})
            assert torch.equal(batch.state()[0], one.state()[0]), f"state() at step {t}"
        sat = info["episode"]["satisfaction"]
        assert torch.equal(sat[:1], one_info["episode"]["satisfaction"])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("scenario", "config"),
    [
        ("recenv/Market-v0", {}),
        ("recenv/Music-v0", {}),
        ("recenv/Market-v0", {"topology": "platform_choice"}),
    ],
    ids=["market", "music", "platform_choice"],
)
def test_eager_trajectories_are_the_same_on_one_and_two_threads(scenario, config):
    """The simulator's half of the README's promise: the same seed gives the same batched and
    PettingZoo-face trajectories (observations, rewards, infos with episode metrics,
    ``state()``) on one torch thread and on two. 2,048 markets: every [N, U] table has more
    than 32,768 entries, where ATen splits reductions over threads (see the test above)."""
    from experiments.trajectory_hash import digest

    threads = torch.get_num_threads()
    try:
        hashes = []
        for n in (1, 2):
            torch.set_num_threads(n)
            hashes.append(digest(scenario, config, steps=8, num_envs=2048, face_steps=8))
    finally:
        torch.set_num_threads(threads)
    assert hashes[0] == hashes[1]


# The aten ops of torch's matmul family: BLAS calls whose float32 results follow
# torch.set_float32_matmul_precision (einsum reaches the dispatcher as bmm).
MATMUL_OPS = frozenset(
    {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "mv", "addmv", "dot", "vdot", "linear"}
)


class _OpNames(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the name of every aten op dispatched inside."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("scenario", ["recenv/Market-v0", "recenv/Video-v0"])
def test_the_simulation_calls_no_matmul_whose_precision_a_user_sets(scenario):
    """``torch.set_float32_matmul_precision`` is process-wide, and training code lowers it for
    its networks ("high": TF32 on CUDA; "medium": bf16 passes in oneDNN on a CPU with
    AVX-512 BF16). The utilities' dot products were ``einsum``s and the slate diversity a
    matmul, so a training script's setting changed the simulation: the next test's digests
    differed on an AMD EPYC Zen 4 VM. The eager step, the oracle's view of it and the
    PettingZoo face now dispatch no op of the matmul family, on any machine."""
    env = recenv.make_vec(scenario, num_envs=3, seed=1, **SMALL)
    env.reset()
    face = recenv.make(scenario, seed=1, **SMALL)
    obs, _ = face.reset(seed=1)
    K = env.config.slate_size
    with _OpNames() as ops:
        slates = env.oracle_slates()
        env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
        face.step({a: np.flatnonzero(obs[a]["action_mask"])[:K] for a in face.agents})
    assert "topk" in ops.names or "sort" in ops.names  # the mode saw the step
    assert not ops.names & MATMUL_OPS, sorted(ops.names & MATMUL_OPS)


@pytest.mark.parametrize("scenario", ["recenv/Market-v0", "recenv/Video-v0"])
def test_eager_trajectories_do_not_follow_the_float32_matmul_precision(scenario):
    """The same seed gives the same batched and face trajectories (observations, rewards,
    infos, ``state()``; random and oracle slates) whatever ``torch.set_float32_matmul_precision``
    says. Before the dot products were products and sums, Video-v0's digest under "medium"
    differed from "highest"'s on the AMD EPYC Zen 4 VM (a CPU without bf16 instructions
    gives one digest either way: the test above is the one every machine checks)."""
    from experiments.trajectory_hash import digest

    before = torch.get_float32_matmul_precision()
    try:
        hashes = {}
        for precision in ("highest", "high", "medium"):
            torch.set_float32_matmul_precision(precision)
            hashes[precision] = digest(scenario, {}, steps=100, num_envs=4, face_steps=50)
    finally:
        torch.set_float32_matmul_precision(before)
    assert len(set(hashes.values())) == 1, hashes


@contextlib.contextmanager
def _flushing_denormals():
    """``torch.set_flush_denormal(True)`` inside (skips where the CPU cannot); torch has no
    getter for it, so it is set back to its default, off."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# The caller settings the simulator must not follow: CALLER_SETTINGS (the agents too), and
# flushing denormals (some training code sets it for speed; the simulation's float32 values
# stay clear of subnormals, which would read 0 under it).
SIMULATOR_SETTINGS = {
    **{name: functools.partial(caller_setting, name) for name in CALLER_SETTINGS},
    "flush_denormal": _flushing_denormals,
}


@pytest.mark.parametrize("setting", sorted(SIMULATOR_SETTINGS))
@pytest.mark.parametrize(
    ("scenario", "config"),
    [
        ("recenv/Market-v0", {}),
        ("recenv/Music-v0", {}),  # its own catalog draw
        ("recenv/Video-v0", {}),
        ("recenv/Market-v0", {"topology": "platform_choice"}),  # the leave option
    ],
    ids=["market", "music", "video", "platform_choice"],
)
def test_trajectories_do_not_follow_the_callers_torch_settings(scenario, config, setting):
    """``torch.set_default_dtype(torch.float64)`` and ``torch.set_default_device("cuda")``
    are process-wide, and common in scientific and GPU code. Under a float64 default the
    catalog's draws took other bits of their generator (another catalog for the same seed),
    a Python float times a bool flag in the dynamics computed in float64, and the first
    episode end raised a dtype error (``index_copy`` of float32 metrics into a float64
    buffer); under another default device (here meta, standing in for CUDA) the catalog's
    draws, the face's slate buffer and a numpy slate's tensor went there. The builders now
    run under ``torch.device("cpu")`` and every float tensor names its dtype: the same
    digests (batched and face, episode ends included; dtypes are in them) as under torch's
    defaults. The same under ``torch.set_flush_denormal(True)``."""
    from experiments.trajectory_hash import digest

    config = {**config, "horizon": 12}
    want = digest(scenario, config, steps=30, num_envs=3, face_steps=20)
    with SIMULATOR_SETTINGS[setting]():
        got = digest(scenario, config, steps=30, num_envs=3, face_steps=20)
    assert got == want


@pytest.mark.parametrize("setting", sorted(CALLER_SETTINGS))
def test_an_unseeded_first_reset_follows_no_caller_setting(setting):
    """A market never given a seed draws one at its first ``reset()`` (``rng.fresh_seed``).
    Under ``torch.set_default_device("cuda")`` that draw went to the default device with a CPU
    generator and failed (here meta stands in for CUDA): every unseeded first reset did,
    RLlib's env wrapper's among them (it resets the env it wraps when built, unseeded)."""
    with caller_setting(setting):
        env = recenv.make_vec(MARKET, num_envs=2, **SMALL)
        env.reset()
        slates = env.oracle_slates()
        _, rewards, *_ = env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
        face = recenv.make(MARKET, **SMALL)
        obs, _ = face.reset()
        _, face_rewards, *_ = face.step(_first_allowed(face, obs))
    assert env.key.device.type == "cpu" and env.key.dtype == torch.int64
    assert all(r.device.type == "cpu" and r.dtype == torch.float32 for r in rewards.values())
    assert set(face_rewards) == set(face.possible_agents)


def test_a_market_made_and_stepped_in_inference_mode_steps_on_outside_it():
    """A market built, reset or stepped inside ``torch.inference_mode()`` (an evaluation's
    usual guard) held inference tensors afterwards, and its next step outside raised
    "Inplace update to inference tensor outside InferenceMode is not allowed". Builders,
    ``reset`` and ``step`` (both faces) now leave the caller's inference mode for their own
    work: stepped on outside it, across episode ends, the market gives what one never in
    inference mode gives."""

    def run(inference: bool) -> list:
        trace: list = []
        guard = torch.inference_mode() if inference else contextlib.nullcontext()
        with guard:
            env = recenv.make_vec(MARKET, num_envs=3, seed=2, **SMALL)
            face = recenv.make(MARKET, seed=2, **SMALL)
            env.reset()
            obs, _ = face.reset(seed=2)
            for _ in range(4):
                trace += _oracle_step(env)
                obs, rew, *_ = face.step(_first_allowed(face, obs))
                trace.append(rew)
        env.reset(seed=5)  # a reset outside after one inside
        for _ in range(8):  # episodes of 6 requests end in here
            trace += _oracle_step(env)
            if not face.agents:
                obs, _ = face.reset()
            obs, rew, *_ = face.step(_first_allowed(face, obs))
            trace.append(rew)
        return trace

    want, got = run(False), run(True)
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        if isinstance(a, torch.Tensor):
            assert not b.is_inference() and torch.equal(a, b), i
        else:
            assert a == b, i


def _oracle_step(env) -> list:
    slates = env.oracle_slates()
    obs, rew, term, trunc, _ = env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
    return [*obs[env.agents[0]].values(), *rew.values(), term, trunc]


def _first_allowed(face, obs) -> dict:
    K = face.core.config.slate_size
    return {a: np.flatnonzero(obs[a]["action_mask"])[:K] for a in face.agents}


@pytest.mark.parametrize("copy_kind", ["deepcopy", "pickle"])
def test_a_market_copied_in_inference_mode_steps_on_outside_it(copy_kind):
    """A copy made inside ``torch.inference_mode()`` (SuperSuit's vector envs copy the
    market they wrap: an SB3 view built inside an evaluation's guard) held inference tensors,
    and its first ``reset`` raised "Inplace update to inference tensor outside
    InferenceMode". Unpickled or deep-copied, the market's and the catalog's tensors are
    normal ones (``recenv.core.modes``): the copy steps as a copy made outside does."""
    import copy
    import pickle

    def copied(env):
        if copy_kind == "deepcopy":
            return copy.deepcopy(env)
        return pickle.loads(pickle.dumps(env))

    env = recenv.make_vec(MARKET, num_envs=3, seed=4, **SMALL)
    env.reset()
    outside = copied(env)
    with torch.inference_mode():
        inside = copied(env)
    assert not any(
        t.is_inference()
        for t in [*vars(inside).values(), *vars(inside.catalog).values()]
        if isinstance(t, torch.Tensor)
    )
    for e in (outside, inside):
        e.reset(seed=7)
    for _ in range(8):  # across an episode end (SMALL's horizon is 6)
        want, got = _oracle_step(outside), _oracle_step(inside)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


@pytest.mark.parametrize("copy_kind", ["deepcopy", "pickle"])
def test_a_face_copied_mid_episode_in_inference_mode_steps_on_outside_it(copy_kind):
    """The PettingZoo face copied inside ``torch.inference_mode()`` in the middle of an
    episode (its own slate buffer and last observation with it) steps on outside it, without
    a reset, as the original does: the same rewards and observations, across an episode
    end."""
    import copy
    import pickle

    face = recenv.make(MARKET, seed=1, **SMALL)
    obs, _ = face.reset(seed=1)
    obs, *_ = face.step(_first_allowed(face, obs))
    with torch.inference_mode():
        inside = (
            copy.deepcopy(face) if copy_kind == "deepcopy" else pickle.loads(pickle.dumps(face))
        )
    mine = theirs = obs
    for _ in range(8):  # SMALL's horizon is 6
        if not face.agents:
            mine, _ = face.reset()
            theirs, _ = inside.reset()
        actions = _first_allowed(face, mine)
        mine, want, *_ = face.step(actions)
        theirs, got, *_ = inside.step(actions)
        assert got == want
        for a in mine:
            assert all(np.array_equal(mine[a][k], theirs[a][k]) for k in mine[a])
