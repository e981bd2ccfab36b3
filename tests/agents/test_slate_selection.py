"""IQL's slate selection: SlateQ's greedy slate against a plain reference of its rule, against
the exhaustive optimum, against top-K ranking, and its exploration and robustness."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import agents
from agents.base import header_differences, sequential_slate
from agents.iql import ChoiceModel, greedy_slate, slate_value, topk_rank


def _choice(slot_bias) -> ChoiceModel:
    ch = ChoiceModel(pair_dim=1, context_dim=1, hidden=(4,), slate_size=len(slot_bias))
    with torch.no_grad():
        ch.slot_bias.copy_(torch.tensor(slot_bias, dtype=torch.float32))
    return ch


def _value(v, v0, q, q0, bias, slate) -> float:
    """SlateQ value of a (partial) slate, in float64: ``(w⊥ Q̄⊥ + Σ w Q̄) / (w⊥ + Σ w)``."""
    w = [math.exp(v[i] + bias[k]) for k, i in enumerate(slate)]
    w0 = math.exp(v0)
    return (w0 * q0 + sum(wk * q[i] for wk, i in zip(w, slate, strict=True))) / (w0 + sum(w))


def _reference(v, v0, q, q0, bias, mask, k) -> list[int]:
    """The greedy rule written plainly: slot by slot, the allowed candidate whose addition gives
    the highest partial-slate value (first index on ties)."""
    slate: list[int] = []
    for _ in range(k):
        allowed = [i for i in range(len(v)) if mask[i] and i not in slate]
        slate.append(max(allowed, key=lambda i: _value(v, v0, q, q0, bias, [*slate, i])))
    return slate


def _instances(n: int, c: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 1.5
    no_click = torch.randn(n, generator=g)
    q_items = torch.rand(n, c, generator=g) * 4.0  # item values spread widely...
    q_null = torch.rand(n, generator=g)  # ...above a small no-click value
    mask = torch.rand(n, c, generator=g) < 0.7
    mask[:, :4] = True
    return logits, no_click, q_items, q_null, mask


def test_greedy_slate_follows_its_rule():
    bias = [0.0, -0.4, -0.9]
    ch = _choice(bias)
    logits, no_click, q_items, q_null, mask = _instances(200, 9, seed=0)
    slate = greedy_slate(ch, logits, no_click, q_items, q_null, mask, 3)
    for r in range(200):
        ref = _reference(
            logits[r].tolist(), float(no_click[r]), q_items[r].tolist(), float(q_null[r]),
            bias, mask[r].tolist(), 3,
        )  # fmt: skip
        assert slate[r].tolist() == ref, r


def test_one_slot_greedy_is_the_exact_optimum():
    """With K = 1 the greedy choice is exhaustive: it maximises the slate value outright."""
    ch = _choice([0.3])
    logits, no_click, q_items, q_null, mask = _instances(300, 7, seed=1)
    slate = greedy_slate(ch, logits, no_click, q_items, q_null, mask, 1)
    values = torch.stack(
        [
            slate_value(ch, logits, no_click, q_items, q_null, torch.full((300, 1), i))
            for i in range(7)
        ],
        dim=1,
    ).masked_fill(~mask, -math.inf)
    with torch.no_grad():
        chosen = slate_value(ch, logits, no_click, q_items, q_null, slate)
    assert torch.allclose(chosen, values.max(1).values)


def test_greedy_beats_top_k_and_nears_the_optimum():
    """Over random instances (K = 3 of 7), greedy's mean slate value is above top-K ranking's
    and within 1 % of the exhaustive optimum; each greedy slate is at least 95 % of it."""
    ch = _choice([0.0, -0.3, -0.6])
    logits, no_click, q_items, q_null, _ = _instances(300, 7, seed=2)
    mask = torch.ones(300, 7, dtype=torch.bool)
    with torch.no_grad():
        greedy = greedy_slate(ch, logits, no_click, q_items, q_null, mask, 3)
        top = agents.slate_from_scores(topk_rank(logits, q_items, q_null), mask, 3)
        v_greedy = slate_value(ch, logits, no_click, q_items, q_null, greedy)
        v_top = slate_value(ch, logits, no_click, q_items, q_null, top)
        best = (
            torch.stack(
                [
                    slate_value(ch, logits, no_click, q_items, q_null, torch.tensor([p] * 300))
                    for p in itertools.permutations(range(7), 3)
                ],
                dim=1,
            )
            .max(1)
            .values
        )
    assert (v_greedy <= best + 1e-5).all()
    assert (v_greedy >= 0.95 * best).all()
    assert v_greedy.mean() >= 0.99 * best.mean()
    assert v_greedy.mean() > v_top.mean()


def test_greedy_sees_what_top_k_ranking_cannot():
    """Item 0 is very likely to be clicked and worth little, items 1-2 less likely and worth
    much more. Top-K ranks 0 first (its weight times gain is largest), so it takes clicks from
    1 and 2; greedy leaves it out, and its slate is worth more."""
    ch = _choice([0.0, 0.0])
    logits = torch.tensor([[3.0, 1.0, 1.0, -5.0]])
    q_items = torch.tensor([[1.0, 5.0, 5.0, 0.0]])
    no_click, q_null = torch.tensor([0.0]), torch.tensor([0.0])
    mask = torch.ones(1, 4, dtype=torch.bool)
    top = agents.slate_from_scores(topk_rank(logits, q_items, q_null), mask, 2)
    greedy = greedy_slate(ch, logits, no_click, q_items, q_null, mask, 2)
    assert top[0].tolist()[0] == 0
    assert sorted(greedy[0].tolist()) == [1, 2]
    with torch.no_grad():
        v_top, v_greedy = (
            float(slate_value(ch, logits, no_click, q_items, q_null, s)) for s in (top, greedy)
        )
    assert v_greedy > v_top + 0.3, (v_greedy, v_top)


def test_top_k_ranks_by_click_weight_times_gain_over_no_click():
    """SlateQ's top-K score ``exp(v_i) (Q̄_i − Q̄⊥)``, the weights shifted per row by the
    largest logit: an item worth less than no click ranks below one worth more, however
    likely its click (the tests above have ``Q̄⊥ = 0``, where the gain is the value)."""
    logits = torch.tensor([[0.0, math.log(2.0), 0.0], [1.0, 1.0, 1.0]])
    q_items = torch.tensor([[1.0, 1.0, 3.0], [1.0, 2.0, 3.0]])
    q_null = torch.tensor([2.0, 0.5])
    scores = topk_rank(logits, q_items, q_null)
    torch.testing.assert_close(scores, torch.tensor([[-0.5, -1.0, 0.5], [0.5, 1.5, 2.5]]))
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert agents.slate_from_scores(scores, mask, 2)[0].tolist() == [2, 0]


def test_greedy_slates_are_valid_under_nan_masks_and_exploration():
    ch = _choice([0.0, -0.2, -0.5])
    logits, no_click, q_items, q_null, mask = _instances(400, 10, seed=3)
    q_items[::5, 2] = math.nan
    logits[::3, 4] = math.inf
    q_items[::7, 6] = -math.inf
    for eps in (0.0, 0.5, 1.0):
        g = torch.Generator().manual_seed(0)
        slate = greedy_slate(ch, logits, no_click, q_items, q_null, mask, 3, eps, g)
        assert all(len(set(row)) == 3 for row in slate.tolist())
        assert mask.gather(1, slate).all(), eps


def test_full_exploration_is_uniform():
    """ε = 1: every slot a uniformly random remaining candidate, whatever the values."""
    ch = _choice([0.0, 0.0])
    n, c = 20_000, 5
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0, 0.0]]).expand(n, c)
    q_items = torch.tensor([[9.0, 0.0, 0.0, 0.0, 0.0]]).expand(n, c)
    zeros = torch.zeros(n)
    mask = torch.ones(n, c, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    slate = greedy_slate(ch, logits, zeros, q_items, zeros, mask, 2, 1.0, g)
    counts = np.bincount(slate[:, 0].numpy(), minlength=c) / n
    assert np.abs(counts - 1 / c).max() < 0.02, counts


def test_sequential_slate_passes_the_previous_pick():
    """``slot_scores(j, prev)`` receives slot ``j - 1``'s pick (None first)."""
    seen = []
    scores = torch.tensor([[0.0, 3.0, 2.0, 1.0]])

    def slot_scores(j, prev):
        seen.append((j, None if prev is None else prev.tolist()))
        return scores

    slate = sequential_slate(slot_scores, torch.ones(1, 4, dtype=torch.bool), 3)
    assert slate.tolist() == [[1, 2, 3]]
    assert seen == [(0, None), (1, [1]), (2, [2])]


def test_iql_acts_by_its_slate_selection(market):
    env = market(num_envs=8, horizon=20)
    obs = env.reset(seed=0)
    for selection in ("greedy", "top_k"):
        agent = agents.make_agent("iql", env, slate_selection=selection, seed=0)
        slates = agent.act(obs)
        for i, a in enumerate(agent.agent_ids):
            lrn = agent.learner_of(i)
            pairs, ctx = agent._inputs(obs[a], i)
            with torch.no_grad():
                q_items, q_null = lrn.q(pairs, ctx)
                logits, no_click = lrn.choice(pairs, ctx)
                expected = agent._select(
                    lrn, logits, no_click, q_items, q_null, obs[a]["action_mask"]
                )
            assert torch.equal(slates[a], expected), (selection, a)


def test_unknown_slate_selection_is_refused(market):
    with pytest.raises(
        ValueError, match=r"slate_selection='lp' must be one of \('greedy', 'top_k'\)"
    ):
        agents.make_agent("iql", market(), slate_selection="lp")


def test_checkpoints_from_before_slate_selection_load_as_top_k(market, tmp_path):
    """An IQL checkpoint whose header predates ``slate_selection`` ran the top-K ranking
    (``IQLConfig.LEGACY``): ``load_agent`` rebuilds it so, ``load`` into a top-K agent accepts
    it, into a greedy one refuses it by name, and a resume's header check agrees."""
    env = market(num_envs=2, horizon=10)
    old = agents.make_agent("iql", env, slate_selection="top_k")
    path = tmp_path / "old.pt"
    old.save(path)
    payload = torch.load(path, weights_only=True)
    del payload["header"]["config"]["slate_selection"]
    torch.save(payload, path)
    assert agents.load_agent(path, env).config.slate_selection == "top_k"
    agents.make_agent("iql", env, slate_selection="top_k").load(path)
    greedy = agents.make_agent("iql", env)
    with pytest.raises(ValueError, match="slate_selection"):
        greedy.load(path)
    assert header_differences(payload["header"], old) == []
    assert header_differences(payload["header"], greedy) == [
        "config.slate_selection: 'top_k', this agent's 'greedy'"
    ]
