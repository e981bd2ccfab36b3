"""The batched core and the PettingZoo face are one simulator (DESIGN §4).

``make_vec(id, num_envs=N, seed=s)`` market ``n`` must equal ``make(id, seed=s + n)``
transition by transition, over whole episodes including the batched env's auto-resets.

Auto-reset follows Gymnasium's NEXT_STEP mode: the step *after* an episode's end starts a new
episode in that market, ignores its actions and returns reward 0 with ``info["reset"]`` True.
The single env is instead ``reset()`` explicitly without a seed at that point, which continues
its random stream; its reset observation must equal the batched observation of the reset step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recenv

OBS_KEYS = ("user", "history", "candidates", "action_mask", "user_id", "candidate_ids")


def _assert_obs_equal(batched_obs, single_obs, n: int, where: str) -> None:
    for agent, single in single_obs.items():
        for key in OBS_KEYS:
            b = batched_obs[agent][key][n].numpy()
            s = np.asarray(single[key])
            np.testing.assert_array_equal(
                b.reshape(s.shape).astype(s.dtype), s, err_msg=f"{where} {agent} {key}"
            )


def _run_both(env_id, kwargs, num_envs, seed, steps, feature_policy, device="cpu"):
    """Step ``make_vec`` and ``num_envs`` single envs side by side; assert they agree."""
    vec = recenv.make_vec(env_id, num_envs=num_envs, seed=seed, device=device, **kwargs)
    singles = [recenv.make(env_id, seed=seed + n, **kwargs) for n in range(num_envs)]
    K = vec.config.slate_size
    obs = vec.reset()
    single_obs = [e.reset()[0] for e in singles]
    resets = torch.zeros(num_envs, dtype=torch.int64)
    for t in range(steps):
        for n in range(num_envs):
            _assert_obs_equal(obs, single_obs[n], n, f"step {t} market {n}")
        actions = {
            a: feature_policy(obs[a]["candidates"], obs[a]["action_mask"], K).to(vec.device)
            for a in vec.agents
        }
        obs, rew, term, trunc, info = vec.step(actions)
        for n, env in enumerate(singles):
            if bool(info["reset"][n]):
                resets[n] += 1
                assert all(float(rew[a][n]) == 0.0 for a in vec.agents)
                assert not bool(term[n]) and not bool(trunc[n])
                single_obs[n], _ = env.reset()  # no seed: continues the market's stream
                continue
            single_obs[n], s_rew, s_term, s_trunc, s_info = env.step(
                {a: actions[a][n].cpu().numpy() for a in vec.agents}
            )
            for i, a in enumerate(vec.agents):
                assert s_rew[a] == float(rew[a][n]), f"step {t} market {n} reward {a}"
                assert s_term[a] == bool(term[n]) and s_trunc[a] == bool(trunc[n])
                np.testing.assert_array_equal(s_info[a]["shown"], info["shown"][n, i].numpy())
                won = int(info["chosen_agent"][n]) == i
                assert s_info[a]["engagement"] == (float(info["engagement"][n]) if won else 0.0)
                # Every scalar the face reads from the core's packed row (face_row).
                assert s_info[a]["clicked"] is won
                assert s_info[a]["user_clicked"] is bool(info["clicked"][n])
                assert s_info[a]["chosen_slot"] == (int(info["chosen_slot"][n]) if won else -1)
                assert s_info[a]["repaired_slots"] == int(info["repaired"][n, i])
                assert s_info[a]["utility"] == {k: float(v[n]) for k, v in info["utility"].items()}
                if "episode" in s_info[a]:
                    assert bool(info["_episode"][n])
                    ret = float(info["episode"]["return"][n, i])
                    assert s_info[a]["episode"]["return"] == ret
    return resets


def test_batched_markets_equal_single_markets(env_id, small, feature_policy):
    """Three markets of one batch equal three single envs seeded ``s + n`` over more than three
    15-step episodes, including the auto-reset steps (observations of every key, rewards,
    terminations, truncations, shown slates, engagement and episode returns)."""
    horizon = 15
    resets = _run_both(
        env_id, small(env_id, horizon=horizon), 3, 11, 3 * (horizon + 1) + 4, feature_policy
    )
    assert (resets >= 3).all(), "the run must cross at least three auto-resets per market"


def test_batch_size_does_not_change_a_market(env_id, small, feature_policy):
    """Market ``n`` of a batch of 2 and the same market (seed ``s+n``) in a batch of 5 see the
    same trajectory: counter-based randomness does not depend on the batch size."""
    kwargs = small(env_id, horizon=10)
    a = recenv.make_vec(env_id, num_envs=2, seed=3, **kwargs)
    b = recenv.make_vec(env_id, num_envs=5, seed=2, **kwargs)  # b's market 1+n is a's market n
    K = a.config.slate_size
    oa, ob = a.reset(), b.reset()
    for _ in range(25):
        for agent in a.agents:
            for key in OBS_KEYS:
                assert torch.equal(oa[agent][key], ob[agent][key][1:3]), key
        acts_b = {
            ag: feature_policy(ob[ag]["candidates"], ob[ag]["action_mask"], K) for ag in b.agents
        }
        oa, ra, ta, tra, _ = a.step({ag: v[1:3] for ag, v in acts_b.items()})
        ob, rb, tb, trb, _ = b.step(acts_b)
        for agent in a.agents:
            assert torch.equal(ra[agent], rb[agent][1:3])
        assert torch.equal(ta, tb[1:3]) and torch.equal(tra, trb[1:3])


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_cpu_device(device, small):
    """``device="cpu"`` (string or ``torch.device``) puts every state and output tensor on the
    CPU."""
    env_id = recenv.registered_ids()[0]
    env = recenv.make_vec(env_id, num_envs=2, device=device, seed=0, **small(env_id))
    obs = env.reset()
    assert env.device == torch.device("cpu")
    for value in vars(env).values():
        if torch.is_tensor(value):
            assert value.device.type == "cpu"
    slates = env.oracle_slates()
    obs, rew, term, trunc, _ = env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
    tensors = [term, trunc, *rew.values(), *(v for o in obs.values() for v in o.values())]
    assert all(x.device.type == "cpu" for x in tensors)
    assert env.state().device.type == "cpu"


def _trajectory(env_id, kwargs, feature_policy, steps=30):
    """Every observation, reward and flag of 4 markets over ``steps`` steps (a list of tensors)."""
    env = recenv.make_vec(env_id, num_envs=4, seed=3, **kwargs)
    K = env.config.slate_size
    obs, out = env.reset(), []
    for _ in range(steps):
        out += [v.clone() for o in obs.values() for v in o.values()]
        acts = {a: feature_policy(obs[a]["candidates"], obs[a]["action_mask"], K) for a in obs}
        obs, rew, term, trunc, _ = env.step(acts)
        out += [*rew.values(), term, trunc]
    return out


def test_the_cuda_forms_give_the_cpu_trajectory_bit_for_bit(env_id, small, feature_policy):
    """Off the CPU the step takes other forms of two exact computations: the Weyl sequence of
    the random draws (``rng.weyl``; Triton refuses the CPU's) and the prefix sums of the draws
    by weight (``indexing.row_cumsum``; CUDA's ``cumsum`` has other bits, and is slow on short
    rows). Run on the CPU, with the CPU treated as any other device, they give the CPU's
    trajectory bit for bit, so a CUDA trajectory differs from the CPU's by the float rounding
    of its kernels alone."""
    from recenv.core import indexing, rng

    kwargs = small(env_id, horizon=12)
    cpu = _trajectory(env_id, kwargs, feature_policy)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(rng, "FOLD_WEYL_ON", frozenset())
        m.setattr(indexing, "ATEN_CUMSUM_EXACT_ON", frozenset())
        other = _trajectory(env_id, kwargs, feature_policy)
    assert len(cpu) == len(other)
    for i, (a, b) in enumerate(zip(cpu, other, strict=True)):
        assert torch.equal(a, b), f"entry {i} of the trajectory differs"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_trajectories_do_not_follow_the_float32_matmul_precision(
    small, feature_policy, compile
):
    """``torch.set_float32_matmul_precision("high")`` (TF32: a 10-bit mantissa in cuBLAS, which
    training code sets for its networks and inductor's warning suggests) leaves a CUDA
    trajectory as it was, bit for bit: the step's dot products are products and sums, never
    a matmul (``recenv.core.choice.dot``; the CPU's check is in
    ``tests/test_reproducibility_audit.py``). Video-v0: the most topics (20)."""
    env_id = "recenv/Video-v0"
    kwargs = {**small(env_id, horizon=12), "device": "cuda", "compile": compile}
    before = torch.get_float32_matmul_precision()
    try:
        runs = []
        for precision in ("highest", "high"):
            torch.set_float32_matmul_precision(precision)
            runs.append(_trajectory(env_id, kwargs, feature_policy, steps=20))
    finally:
        torch.set_float32_matmul_precision(before)
    for i, (a, b) in enumerate(zip(*runs, strict=True)):
        assert torch.equal(a, b), f"entry {i} of the trajectory differs"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True])
def test_cpu_and_cuda_trajectories_agree(env_id, small, feature_policy, compile):
    """The same markets on CPU and CUDA follow the same trajectory: the random numbers are
    integer hashes (bit-identical on both devices), so only float rounding differs. Actions are
    computed from the CPU observations and given to both; observations and rewards must agree to
    1e-4 (float32 accumulated over a 40-step run), and the discrete outcomes (users, candidates,
    clicks) exactly, for at least 95 % of market-steps (a near-tie in the logit could flip one
    choice, after which that market legitimately diverges). The compiled CUDA step (Triton
    kernels) is held to the same agreement."""
    kwargs = small(env_id, horizon=20)
    N = 8
    cpu = recenv.make_vec(env_id, num_envs=N, seed=5, device="cpu", **kwargs)
    gpu = recenv.make_vec(env_id, num_envs=N, seed=5, device="cuda", compile=compile, **kwargs)
    K = cpu.config.slate_size
    oc, og = cpu.reset(), gpu.reset()
    same = torch.ones(N, dtype=torch.bool)
    agree = 0
    steps = 40
    for _ in range(steps):
        for a in cpu.agents:
            same &= (oc[a]["user_id"] == og[a]["user_id"].cpu()).view(N)
            same &= (oc[a]["candidate_ids"] == og[a]["candidate_ids"].cpu()).all(1)
            close = torch.isclose(oc[a]["candidates"], og[a]["candidates"].cpu(), atol=1e-4)
            same &= close.flatten(1).all(1)
        acts = {a: feature_policy(oc[a]["candidates"], oc[a]["action_mask"], K) for a in cpu.agents}
        oc, rc, _, _, ic = cpu.step(acts)
        og, rg, _, _, ig = gpu.step({a: v.cuda() for a, v in acts.items()})
        same &= ic["clicked"] == ig["clicked"].cpu()
        for a in cpu.agents:
            same &= torch.isclose(rc[a], rg[a].cpu(), atol=1e-4)
        agree += int(same.sum())
    assert agree >= 0.95 * N * steps
