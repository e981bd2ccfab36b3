"""The choice model is what it claims (DESIGN §3 step 6): a conditional logit over the visible
page entries plus a no-click option, sampled from the counter-based uniforms.

Statistical tolerances: each frequency test uses enough samples that sampling noise is far
below the tolerance (4 standard errors per entry: a false alarm probability ~6e-5 per entry),
and the randomness is seeded, so the tests are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import recenv
from recenv.core import rng
from recenv.core.choice import dot, logit_probabilities, sample_choice

MARKET = "recenv/Market-v0"


def test_logit_probabilities_closed_form():
    """``p_i = exp(u_i/τ) / (Σ_visible exp(u_j/τ) + exp(u_0/τ))``; invisible entries get exactly
    0; rows sum to 1; the last column is no-click."""
    u = torch.tensor([[1.0, 0.5, -0.3, 2.0], [0.0, 0.0, 0.0, 0.0]])
    visible = torch.tensor([[True, True, False, True], [False, False, False, False]])
    for temperature in (0.5, 1.0, 2.0):
        p = logit_probabilities(u, visible, 0.7, temperature)
        assert p.shape == (2, 5)
        e = torch.exp(u / temperature) * visible
        nc = math.exp(0.7 / temperature)
        expected = torch.cat([e, torch.full((2, 1), nc)], dim=1)
        expected = expected / expected.sum(1, keepdim=True)
        torch.testing.assert_close(p, expected)
        assert p[0, 2] == 0.0 and (p[1, :4] == 0).all() and p[1, 4] == 1.0
        torch.testing.assert_close(p.sum(1), torch.ones(2))


def test_dot_is_each_rows_dot_product_and_no_matmul_setting_changes_it():
    """``dot(x [N, D], rows [N, P, D]) -> [N, P]``: the float64 dot products to float32
    rounding, bit for bit the same under every ``torch.set_float32_matmul_precision``."""
    g = torch.Generator().manual_seed(0)
    x, rows = torch.randn(300, 16, generator=g), torch.randn(300, 6, 16, generator=g)
    want = (x.double()[:, None, :] * rows.double()).sum(-1)
    before = torch.get_float32_matmul_precision()
    try:
        got = {}
        for precision in ("highest", "high", "medium"):
            torch.set_float32_matmul_precision(precision)
            got[precision] = dot(x, rows)
    finally:
        torch.set_float32_matmul_precision(before)
    assert got["highest"].shape == (300, 6) and got["highest"].dtype == torch.float32
    torch.testing.assert_close(got["highest"].double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got["highest"], got["high"]) and torch.equal(got["highest"], got["medium"])


def test_logit_probabilities_per_market_no_click_utility():
    """A tensor no-click utility ``[N, 1]`` applies per market."""
    u = torch.zeros(2, 3)
    visible = torch.ones(2, 3, dtype=torch.bool)
    p = logit_probabilities(u, visible, torch.tensor([[0.0], [math.log(3.0)]]), 1.0)
    torch.testing.assert_close(p[:, -1], torch.tensor([1 / 4, 3 / 6]))


def _choice_uniforms(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """``n`` rows of the simulator's counter-based uniforms: one market key per row."""
    key = rng.seed_to_key(seed + torch.arange(n, dtype=torch.int64))
    counter = torch.zeros(n, dtype=torch.int64)
    return rng.uniforms(rng.prefix(key, counter, rng.STREAM_STEP), width)


def test_sampled_choice_frequencies_match_logit_probabilities():
    """100 000 rows of one utility vector (one entry invisible) sampled with the simulator's
    uniforms: every entry's frequency is within 4 standard errors of its probability
    (σ = sqrt(p(1-p)/n) ≈ 0.0015 at p = 0.3), the chi-square statistic over the 6 possible
    outcomes is below 25.74 (the 1 - 1e-4 quantile for 5 degrees of freedom), and the
    invisible entry is never chosen."""
    n = 100_000
    u = torch.tensor([1.2, 0.4, -0.5, 2.0, 0.0, 0.9])
    visible = torch.tensor([True, True, True, True, False, True])
    probs = logit_probabilities(u.expand(n, -1), visible.expand(n, -1), 1.5, 1.0)
    choice = sample_choice(probs, _choice_uniforms(n, u.numel() + 1))
    counts = torch.bincount(choice, minlength=u.numel() + 1).double()
    p = probs[0].double()
    freq = counts / n
    sigma = torch.sqrt(p * (1 - p) / n)
    assert counts[4] == 0, "an invisible entry was chosen"
    assert ((freq - p).abs() <= 4 * sigma + 1e-12).all(), (freq, p)
    pos = p > 0
    chi2 = (((counts - n * p) ** 2)[pos] / (n * p[pos])).sum()
    assert chi2 < 25.74, chi2


def test_sampled_choice_respects_temperature():
    """At a high temperature the choice is close to uniform over visible entries and no-click;
    at a low one it is almost always the best entry (100 000 samples each; 4σ tolerance)."""
    n = 100_000
    u = torch.tensor([1.0, 0.0, -1.0])
    visible = torch.ones(n, 3, dtype=torch.bool)
    uni = _choice_uniforms(n, 4, seed=7)
    for temperature in (50.0, 0.05):
        probs = logit_probabilities(u.expand(n, -1), visible, 0.5, temperature)
        freq = torch.bincount(sample_choice(probs, uni), minlength=4).double() / n
        p = probs[0].double()
        assert ((freq - p).abs() <= 4 * torch.sqrt(p * (1 - p) / n) + 1e-12).all()
    assert freq[0] > 0.99


def test_uniforms_are_uniform():
    """The counter-based uniforms of 1 000 markets × 1 000 draws fill 20 equal bins evenly
    (chi-square below 50.80, the 1 - 1e-4 quantile for 19 degrees of freedom), have mean 1/2
    within 4σ (σ = sqrt(1/12/10^6) ≈ 2.9e-4), and the same markets at another counter or
    stream give unrelated numbers (|correlation| < 0.13, 4σ for 1 000 pairs)."""
    u = _choice_uniforms(1000, 1000).flatten().double()
    n = u.numel()
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    chi2 = ((counts - n / 20) ** 2 / (n / 20)).sum()
    assert chi2 < 50.80, chi2
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    key = rng.seed_to_key(torch.arange(1000, dtype=torch.int64))
    a = rng.uniforms(rng.prefix(key, torch.zeros(1000, dtype=torch.int64), 1), 1).flatten()
    b = rng.uniforms(rng.prefix(key, torch.ones(1000, dtype=torch.int64), 1), 1).flatten()
    c = rng.uniforms(rng.prefix(key, torch.zeros(1000, dtype=torch.int64), 2), 1).flatten()
    for x, y in ((a, b), (a, c)):
        assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1]) < 0.13


def _standard_normal_moments(z: torch.Tensor) -> None:
    """Mean 0, variance 1 and fourth moment 3, each within 4 sigma for ``z.numel()`` draws."""
    z = z.flatten().double()
    n = z.numel()
    assert abs(z.mean()) < 4 / math.sqrt(n), z.mean()
    assert abs(z.var() - 1.0) < 4 * math.sqrt(2 / n), z.var()
    assert abs((z**4).mean() - 3.0) < 4 * math.sqrt(96 / n), (z**4).mean()


def test_normals_are_independent_standard_normals():
    """``normals`` (a user's draws: features, budget, taste) and ``box_muller`` (the step's:
    engagement jitter, activity) give standard normals from the counter-based uniforms; a
    block's cosine and sine halves come from the same uniforms and must still be independent
    (uncorrelated, and so are their squares), or a user's second half of normals would copy
    its first (200 000 draws; |correlation| < 4 / sqrt(100 000))."""
    u = _choice_uniforms(1000, 200)
    z = rng.normals(u, 200)
    _standard_normal_moments(z)
    first, second = z[:, :100].flatten(), z[:, 100:].flatten()
    for x, y in ((first, second), (first**2, second**2)):
        assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1]) < 4 / math.sqrt(first.numel())
    _standard_normal_moments(rng.box_muller(u[:, :100], u[:, 100:]))


def test_unseeded_markets_draw_different_seeds():
    """A market given no seed draws one at its first reset (``rng.fresh_seed``, from an
    OS-seeded generator): two such markets play different trajectories."""
    assert rng.fresh_seed() != rng.fresh_seed()
    a, b = (recenv.make_vec("recenv/Market-v0", num_envs=2, num_items=500) for _ in range(2))
    obs_a, obs_b = a.reset(), b.reset()
    assert not torch.equal(a.key, b.key)
    assert not torch.equal(obs_a["agent_0"]["user"], obs_b["agent_0"]["user"])


def test_uniforms_stay_inside_the_open_unit_interval():
    """Every uniform lies strictly inside (0, 1) — ``gumbel`` and ``sample_choice`` rely on it
    (``-log(-log(1)) = +inf``, and ``log(0) + inf`` is NaN, which argmax picks).

    Regression test for a float32 rounding bug: ``(2^24 - 1 + 0.5) * 2^-24`` rounded to exactly
    1.0. The extreme values come up about once in 2^23-2^24 draws, so this scans 2^25 draws
    (deterministic prefixes) and checks that it did reach within 2^-20 of both ends."""
    chunk = 1 << 22
    lo, hi = 1.0, 0.0
    for start in range(0, 1 << 25, chunk):
        pre = torch.arange(start, start + chunk, dtype=torch.int64)
        u = rng.uniforms(pre, 1)
        bad = (u <= 0) | (u >= 1)
        assert not bool(bad.any()), f"uniforms(pre={int(pre[bad.any(1)][0])}, 1) = {u[bad][0]}"
        lo, hi = min(lo, float(u.min())), max(hi, float(u.max()))
    assert lo < 2**-20 and hi > 1 - 2**-20


def test_sample_choice_handles_extreme_uniforms():
    """An entry with zero probability is never chosen for any uniform in (0, 1), down to the
    smallest the generator returns (2^-24) and up to the largest float32 below 1."""
    tiny = 1.0 / (1 << 24)
    below_one = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))
    probs = torch.tensor([[0.5, 0.0, 0.5]])
    for v in (tiny, 0.5, below_one):
        uni = torch.tensor([[0.5, v, 0.5]])
        assert int(sample_choice(probs, uni)[0]) != 1


# --------------------------------------------------------------------------------------------
# In the environment
# --------------------------------------------------------------------------------------------
def test_env_choice_probs_rows_sum_to_one(env_id, small, random_policy):
    """``info["choice_probs"]`` is ``[N, P+1]``, non-negative, rows sum to 1, and entries of
    slots the user did not see have probability 0."""
    env = recenv.make_vec(env_id, num_envs=16, seed=0, **small(env_id))
    cfg = env.config
    P = cfg.num_agents * cfg.slate_size
    g = torch.Generator().manual_seed(0)
    obs = env.reset()
    for _ in range(40):
        acts = {a: random_policy(obs[a]["action_mask"], cfg.slate_size, g) for a in env.agents}
        obs, _, _, _, info = env.step(acts)
        p = info["choice_probs"]
        assert p.shape == (16, P + 1) and (p >= 0).all()
        torch.testing.assert_close(p.sum(1), torch.ones(16), atol=1e-5, rtol=0)
        shown = info["shown"].view(16, P) >= 0
        live = ~info["reset"]
        assert (p[:, :P][live[:, None] & ~shown] == 0).all()


def test_env_click_frequencies_match_predicted_probabilities(random_policy):
    """Over 512 markets × 31 steps (≈ 15 000 live requests) with random slates, the empirical
    frequency of a click on each page entry (agent block, slot) and of no-click is within 4
    standard errors of the mean predicted probability (σ from the predicted probabilities
    themselves: sqrt(Σ p(1-p)) / n). Position bias shows: within each agent's block, slot 0
    (always above slot K-1 on the page) is clicked more often than slot K-1."""
    env = recenv.make_vec(MARKET, num_envs=512, seed=1, num_items=500, horizon=30)
    cfg = env.config
    A, K = cfg.num_agents, cfg.slate_size
    P = A * K
    g = torch.Generator().manual_seed(1)
    obs = env.reset()
    probs, hits = [], []
    for _ in range(31):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, _, _, _, info = env.step(acts)
        live = ~info["reset"]
        entry = torch.where(info["clicked"], info["chosen_agent"] * K + info["chosen_slot"], P)
        probs.append(info["choice_probs"][live].double())
        hits.append(torch.nn.functional.one_hot(entry[live], P + 1).double())
    p = torch.cat(probs)
    h = torch.cat(hits)
    n = p.shape[0]
    expected, observed = p.mean(0), h.mean(0)
    sigma = torch.sqrt((p * (1 - p)).sum(0)) / n
    assert ((observed - expected).abs() <= 4 * sigma).all(), (observed, expected, sigma)
    by_slot_expected = expected[:P].view(A, K).sum(0)
    by_slot_observed = observed[:P].view(A, K).sum(0)
    assert by_slot_expected[0] > by_slot_expected[-1]
    assert by_slot_observed[0] > by_slot_observed[-1]


def test_fixed_page_order_in_a_batch(random_policy):
    """``page_order="fixed"`` works in a batch of markets and agent 0's block is always on top:
    its slot 0 has a higher mean click probability than the last agent's last slot.

    Regression test: the position term had shape [1, P] and indexing it per market raised
    IndexError for num_envs >= 2."""
    env = recenv.make_vec(
        MARKET, num_envs=64, seed=1, num_items=500, horizon=30, page_order="fixed"
    )
    K, P = env.config.slate_size, env.config.num_agents * env.config.slate_size
    g = torch.Generator().manual_seed(1)
    obs = env.reset()
    total = torch.zeros(P + 1, dtype=torch.float64)
    for _ in range(30):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, _, _, _, info = env.step(acts)
        total += info["choice_probs"].double().sum(0)
    assert total[0] > total[P - 1]


def test_env_click_is_always_on_a_visible_entry(env_id, small, random_policy):
    """A click is always on an item the user saw: the chosen item is in the chosen agent's
    shown slate at the chosen slot, and under ``platform_choice`` the chosen agent is the
    platform the user visited."""
    for topology in ("shared_page", "platform_choice"):
        env = recenv.make_vec(env_id, num_envs=32, seed=2, topology=topology, **small(env_id))
        K = env.config.slate_size
        g = torch.Generator().manual_seed(2)
        obs = env.reset()
        for _ in range(30):
            acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
            obs, _, _, _, info = env.step(acts)
            c = info["clicked"]
            n = c.nonzero().flatten()
            a, k = info["chosen_agent"][n], info["chosen_slot"][n]
            assert (info["shown"][n, a, k] == info["chosen_item"][n]).all()
            assert (info["chosen_item"][~c] == -1).all() and (info["chosen_agent"][~c] == -1).all()
            if topology == "platform_choice":
                assert (a == info["platform"][n]).all()


def test_env_utility_explanation_adds_up(env_id, small, random_policy):
    """``info["utility"]`` splits the chosen item's utility into its terms, which add up to
    ``total`` (and are all zero without a click)."""
    env = recenv.make_vec(env_id, num_envs=32, seed=3, **small(env_id))
    K = env.config.slate_size
    g = torch.Generator().manual_seed(3)
    obs = env.reset()
    for _ in range(20):
        acts = {a: random_policy(obs[a]["action_mask"], K, g) for a in env.agents}
        obs, _, _, _, info = env.step(acts)
        terms = info["utility"]
        parts = sum(v for k, v in terms.items() if k != "total")
        torch.testing.assert_close(parts, terms["total"], atol=1e-5, rtol=1e-5)
        for v in terms.values():
            assert (v[~info["clicked"]] == 0).all()


def _unsigned(x, mult: int, shift: int):
    """``((x * mult) mod 2^32)`` then ``x ^ (x >> shift)`` in numpy's unsigned 64 bits."""
    x = (x * np.uint64(mult)) & np.uint64(0xFFFFFFFF)
    return x ^ (x >> np.uint64(shift))


def _fmix32_unsigned(w):
    """murmur3's fmix32 in numpy's uint64 holding 32-bit values."""
    w = w ^ (w >> np.uint64(16))
    return _unsigned(_unsigned(w, 0x85EBCA6B, 13), 0xC2B2AE35, 16)


def _mix64_unsigned(z):
    """SplitMix64's finalizer in numpy's uint64 (products wrap modulo 2^64)."""
    z = z.copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def test_mix64_and_uniforms_are_the_unsigned_algorithms():
    """``mix64`` (SplitMix64's finalizer, int64) and ``uniforms`` (the prefix's low lane plus a
    Weyl sequence, xor the high lane, fmix32 in int32) run in signed torch integers whose
    products wrap; their bits must be those of the unsigned algorithms, computed here in
    numpy's uint64, extremes included."""
    g = torch.Generator().manual_seed(11)
    edges = torch.tensor([0, 1, -1, 2**63 - 1, -(2**63), 2**31, 2**32, -(2**32)], dtype=torch.int64)
    pre = torch.cat([torch.randint(-(2**63), 2**63 - 1, (20_000,), generator=g), edges])
    bits = pre.numpy().view(np.uint64)
    assert np.array_equal(rng.mix64(pre).numpy().view(np.uint64), _mix64_unsigned(bits))

    width = 9
    lo, hi = bits & np.uint64(0xFFFFFFFF), bits >> np.uint64(32)
    steps = np.arange(width, dtype=np.uint64) * np.uint64(0x9E3779B9)
    w = ((lo[:, None] + steps) ^ hi[:, None]) & np.uint64(0xFFFFFFFF)
    w = _fmix32_unsigned(w)
    want_u = ((w >> np.uint64(9)).astype(np.float64) * 2.0**-23 + 2.0**-24).astype(np.float32)
    assert np.array_equal(rng.uniforms(pre, width).numpy(), want_u)
    assert np.array_equal(rng.lanes(pre)[0].numpy().astype(np.uint64), lo)
    assert np.array_equal(rng.lanes(pre)[1].numpy().astype(np.uint64), hi)


def test_keys_and_prefixes_never_collide():
    """Keys are a bijection of the seed and a key's prefixes a bijection of the counter, and
    blocks are 64 bits: no two markets of a batch share a block. With the 32-bit keys and
    prefixes of before, seed 8333096018 had seed 0's key (the same trajectory), and 4,096
    markets over 2,000 steps drew ~7,800 pairs of identical blocks (the birthday bound of
    8.2 M draws among 2^32)."""
    seeds = torch.cat(
        [
            torch.arange(1 << 20, dtype=torch.int64),
            torch.tensor([8333096018, -1, 2**63 - 1, -(2**63), 2**32, 2**32 + 1]),
        ]
    )
    assert rng.seed_to_key(seeds).unique().numel() == seeds.numel()
    key = rng.seed_to_key(torch.arange(4096, dtype=torch.int64))
    steps = torch.arange(2000, dtype=torch.int64)
    pre = rng.prefix(key[:, None], steps[None, :], rng.STREAM_STEP)
    assert pre.unique().numel() == pre.numel()
    # The low lanes alone do collide (the birthday bound): the high lane keeps such blocks
    # apart, number by number.
    lo = rng.lanes(pre.flatten())[0]
    _, inverse, counts = lo.unique(return_inverse=True, return_counts=True)
    assert int((counts > 1).sum()) > 1000
    first = torch.nonzero(counts[inverse] > 1).flatten()
    pair = first[lo[first] == lo[first[0]]][:2]
    a, b = rng.uniforms(pre.flatten()[pair], 64)
    assert int((a == b).sum()) <= 2
    # A user's sub-blocks (split by user index) are distinct too.
    sub = rng.split(pre[:, :1], torch.arange(1000, dtype=torch.int64)[None, :])
    assert sub.unique().numel() == sub.numel()


def test_seeds_whose_32_bit_keys_collided_give_different_trajectories():
    """Seeds 0 and 8333096018 shared one 32-bit key (and so one trajectory) before the keys
    were 64 bits."""
    kw = dict(num_items=500, horizon=30)
    rewards = []
    for seed in (0, 8333096018):
        env = recenv.make("recenv/Market-v0", seed=seed, **kw)
        env.reset()
        trace = []
        while env.agents:
            _, rew, *_ = env.step({a: env.oracle_slate(a) for a in env.agents})
            trace.append(list(rew.values()))
        rewards.append(trace)
    assert rewards[0] != rewards[1]
