"""The bound on what scales the choice's utility (``MAX_UTILITY_SCALE`` in
``recenv.core.config``, where the bound is derived).

The choice's logits are ``utility / temperature`` in float32. The temperature's floor (1e-3)
keeps them finite only while the utility is bounded, and the utility is a weighted sum whose
weights, and the scales of the item and user attributes they weigh, are all config fields:
``interest_weight=1e36`` at ``temperature=1e-3`` gave logits of inf and NaN choice
probabilities. Each of those fields' magnitude is now at most 1e6, and at that bound, with the
smallest temperature, every step stays finite.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import recenv
from recenv.core.config import (
    MAX_UTILITY_SCALE,
    UTILITY_SCALES,
    VALUE_SCALES,
    InvalidConfig,
    MarketConfig,
)

MARKET = "recenv/Market-v0"


def test_the_reported_case_is_refused_naming_fields_and_values():
    """Regression test: ``interest_weight=1e36`` with ``temperature=1e-3`` built a market whose
    every choice probability was NaN; it is refused, naming the field, its allowed values and
    the temperature they go with, on both faces."""
    for build in (
        lambda **k: MarketConfig(**k),
        lambda **k: recenv.make(MARKET, **k),
        lambda **k: recenv.make_vec(MARKET, num_envs=2, **k),
    ):
        with pytest.raises(InvalidConfig) as err:
            build(interest_weight=1e36, temperature=1e-3)
        msg = str(err.value)
        assert "interest_weight=1e+36 must lie in [-1e6, 1e6]" in msg, msg
        assert "temperature >= 0.001" in msg and "float32" in msg, msg


@pytest.mark.parametrize("name", list(UTILITY_SCALES))
def test_each_utility_scale_is_bounded(name):
    """Every field that scales the utility is refused past 1e6 (and past -1e6 when it may be
    negative), naming it and its interval; the bound itself is allowed."""
    lo = UTILITY_SCALES[name]
    interval = f"[{'-1e6' if lo < 0 else '0'}, 1e6]"
    with pytest.raises(InvalidConfig, match=rf"{name}=2000000.0 must lie in \[.*1e6\]") as err:
        MarketConfig(**{name: 2 * MAX_UTILITY_SCALE})
    assert interval in str(err.value)
    assert getattr(MarketConfig(**{name: MAX_UTILITY_SCALE}), name) == MAX_UTILITY_SCALE
    if lo < 0:
        with pytest.raises(InvalidConfig, match=rf"{name}=-2000000.0 must lie in \[-1e6, 1e6\]"):
            MarketConfig(**{name: -2 * MAX_UTILITY_SCALE})
        assert getattr(MarketConfig(**{name: lo}), name) == lo
    else:  # a negative value is the non-negativity rule's to name, once
        with pytest.raises(InvalidConfig) as err:
            MarketConfig(**{name: -1.0})
        assert f"{name}=-1.0 must be >= 0" in str(err.value) and "1e6" not in str(err.value)


def test_several_scales_are_reported_together():
    """All the fields past the bound in one message (fixed in one go)."""
    with pytest.raises(InvalidConfig) as err:
        MarketConfig(quality_std=1e38, boredom_growth=1e38, no_click_utility=-1e7)
    msg = str(err.value)
    for part in ("quality_std=1e+38", "boredom_growth=1e+38", "no_click_utility=-10000000.0"):
        assert part in msg, msg


def test_every_preset_lies_within_the_bound(env_id):
    """No registered scenario's preset comes near the bounds of the utility scales or of the
    value scales (MAX_VALUE_SCALE; tests/test_edge_configs.py): realistic scales are O(1)."""
    module = importlib.import_module(recenv.spec(env_id).entry_point.partition(":")[0])
    for cfg in (MarketConfig(), module.CONFIG):
        for name in (*UTILITY_SCALES, *VALUE_SCALES):
            assert abs(getattr(cfg, name)) <= 100, (env_id, name, getattr(cfg, name))


def _extreme(largest_scales, sign: float, topology: str, response: str) -> dict:
    """The largest utilities a valid config allows (``largest_scales``), ``sign`` for the
    signed weights, an episode of 25 requests."""
    return largest_scales(
        sign, topology=topology, response=response, welfare_weight=1.0, horizon=25
    )


EXTREMES = [
    (1.0, "shared_page", "engagement"),
    (-1.0, "shared_page", "purchase"),
    (1.0, "platform_choice", "listen"),
    (-1.0, "platform_choice", "engagement"),
]


@pytest.mark.parametrize("sign,topology,response", EXTREMES)
def test_the_largest_allowed_scales_step_without_nan_batched(
    sign, topology, response, largest_scales
):
    """At the bound and the smallest temperature, random valid slates (from the action mask)
    step a batched market to the end of its episode with finite choice probabilities summing
    to 1, and finite rewards, observations and state."""
    env = recenv.make_vec(
        MARKET, num_envs=4, seed=1, **_extreme(largest_scales, sign, topology, response)
    )
    obs = env.reset()
    g = torch.Generator().manual_seed(0)
    K = env.config.slate_size
    clicked = 0
    for _ in range(env.config.horizon):
        slates = {}
        for a in env.agents:
            keys = torch.rand(obs[a]["action_mask"].shape, generator=g)
            slates[a] = keys.masked_fill(~obs[a]["action_mask"].bool(), -1.0).topk(K).indices
        obs, rewards, _, _, info = env.step(slates)
        probs = info["choice_probs"]
        assert torch.isfinite(probs).all() and torch.allclose(probs.sum(1), torch.ones(4))
        clicked += int((probs[:, :-1].sum(1) > 0.5).sum())
        for a in env.agents:
            assert torch.isfinite(rewards[a]).all(), a
            for key, x in obs[a].items():
                assert not x.is_floating_point() or torch.isfinite(x).all(), (a, key)
        assert torch.isfinite(env.state()).all()
    assert clicked > 0  # the page was really chosen from, not only skipped


@pytest.mark.parametrize("sign,topology,response", EXTREMES[:2])
def test_the_largest_allowed_scales_step_without_nan_pettingzoo(
    sign, topology, response, largest_scales
):
    """The same on the PettingZoo face (one market, numpy out)."""
    env = recenv.make(MARKET, seed=2, **_extreme(largest_scales, sign, topology, response))
    obs, _ = env.reset(seed=2)
    while env.agents:
        actions = {a: env.action_space(a).sample(obs[a]["action_mask"]) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        for a in rewards:
            assert np.isfinite(rewards[a]), a
            assert np.isfinite(list(infos[a]["utility"].values())).all(), a
            for key, x in obs[a].items():
                assert not np.issubdtype(x.dtype, np.floating) or np.isfinite(x).all(), (a, key)
        assert np.isfinite(env.state()).all()
