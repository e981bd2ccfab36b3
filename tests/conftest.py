"""Shared fixtures for the simulator's tests.

- ``env_id``: every test that takes it runs once per ``recenv.registered_ids()``, so presets
  registered later (ECommerce, Video, Music, ...) are covered without editing the tests.
- ``small``: keyword arguments that build a preset small (fewer items, shorter horizon) while
  keeping its config valid, so the whole suite stays fast; they include what a scenario cannot
  be built without (an interaction log for log-built scenarios: the shared MovieLens sample,
  skipped when absent).
- ``feature_policy``: a deterministic policy that depends only on the observation, so two faces
  of the same market that see the same observations take the same actions.
- one torch thread per test process (see :func:`pytest_configure`), and no test leaves torch's
  process-wide modes changed (:func:`_torch_modes_unchanged`, autouse).
- ``snapshot`` / ``assert_same_snapshot``: every tensor a :class:`BatchedMarket` holds, to prove a
  rejected step left the market untouched.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import recenv
from experiments.snapshot import leaves
from recenv.core.config import (
    MAX_UTILITY_SCALE,
    MAX_VALUE_SCALE,
    MIN_TEMPERATURE,
    UTILITY_SCALES,
    VALUE_SCALES,
    MarketConfig,
)

MARKET = "recenv/Market-v0"


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread per test process. The simulator's tensors in these tests are small, so
    # extra threads only add synchronisation; with xdist workers (or anything else) competing
    # for the same cores, torch's spinning worker threads made a step ~40x slower (measured:
    # 155 ms vs 3.6 ms per step on 2 busy cores).
    torch.set_num_threads(1)


def _torch_modes() -> dict[str, Any]:
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "num_threads": torch.get_num_threads(),
        "default_dtype": torch.get_default_dtype(),
        "default_device": torch.get_default_device(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _set_torch_modes(modes: dict[str, Any]) -> None:
    torch.use_deterministic_algorithms(
        modes["deterministic_algorithms"], warn_only=modes["deterministic_warn_only"]
    )
    torch.set_num_threads(modes["num_threads"])
    torch.set_default_dtype(modes["default_dtype"])
    device = modes["default_device"]
    torch.set_default_device(None if device == torch.device("cpu") else device)
    torch.set_float32_matmul_precision(modes["matmul_precision"])
    torch.set_grad_enabled(modes["grad_enabled"])


@pytest.fixture(autouse=True)
def _torch_modes_unchanged():
    """Fails the test that leaves one of torch's process-wide modes changed, and sets them
    back. xdist runs many tests in one process: a leaked mode changes what later, unrelated
    tests build (RLlib's seeding once left deterministic algorithms on, and a later compiled
    one-market step, built with ATen fallbacks, lost its stack buffers)."""
    before = _torch_modes()
    yield
    after = _torch_modes()
    if after != before:
        _set_torch_modes(before)
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        pytest.fail(f"the test left torch's modes changed (before, after): {changed}")


# Process-wide settings a caller (a training script, a notebook) may have made, under which
# the simulator and the agents must give what they give under torch's own defaults. The meta
# device stands in for "cuda" on a machine without one: a tensor made without a device lands
# there and has no data, so anything that relied on the default device fails loudly.
CALLER_SETTINGS: dict[str, Callable[[], None]] = {
    "float64_default_dtype": lambda: torch.set_default_dtype(torch.float64),
    "meta_default_device": lambda: torch.set_default_device("meta"),
}


@contextlib.contextmanager
def caller_setting(name: str) -> Iterator[None]:
    """Inside, torch's process-wide setting ``name`` (:data:`CALLER_SETTINGS`) is in force;
    every mode is set back on leaving."""
    before = _torch_modes()
    CALLER_SETTINGS[name]()
    try:
        yield
    finally:
        _set_torch_modes(before)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "env_id" in metafunc.fixturenames:
        metafunc.parametrize("env_id", recenv.registered_ids())


# Scenarios built from an interaction log (DESIGN §5) need one; tests use the shared MovieLens
# sample and skip when it is absent (nothing is downloaded or copied into the repo).
SHARED_LOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def required_kwargs(env_id: str) -> dict[str, Any]:
    """Arguments a scenario cannot be built without (today: ``log`` for log-built scenarios).
    Skips the calling test when the data it needs is absent."""
    params = inspect.signature(recenv.spec(env_id).builder()).parameters
    if "log" in params:
        ratings = SHARED_LOG / "ratings.csv"
        if not ratings.exists():
            pytest.skip(f"{env_id} needs an interaction log; {ratings} is absent")
        return {"log": str(ratings)}
    return {}


@functools.cache
def preset_config(env_id: str) -> MarketConfig:
    """The preset's own configuration (built once per id and process)."""
    return recenv.make_vec(env_id, num_envs=1, seed=0, **required_kwargs(env_id)).config


@functools.cache
def _buildable(env_id: str, items: tuple[tuple[str, Any], ...]) -> bool:
    try:
        recenv.make_vec(env_id, num_envs=1, seed=0, **dict(items))
    except ValueError:
        return False
    return True


def small_kwargs(env_id: str, *, num_items: int = 500, horizon: int = 30) -> dict[str, Any]:
    """Keyword arguments that build ``env_id`` small: its required arguments, at most
    ``num_items`` items (more when the preset needs them for ``num_candidates`` per agent; none
    when the scenario fixes its catalog) and at most ``horizon`` requests."""
    base = required_kwargs(env_id)
    cfg = preset_config(env_id)
    owners = 1 if cfg.ownership == "shared" else cfg.num_agents
    # Enough items that every agent owns > C items present at t=0 (with room for the randomness
    # of which items arrive late).
    need = math.ceil(2 * owners * (cfg.num_candidates + 1) / max(1e-3, 1 - cfg.new_item_fraction))
    shrink = {
        "num_items": min(cfg.num_items, max(num_items, need)),
        "horizon": min(cfg.horizon, horizon),
    }
    for drop in ((), ("num_items",), ("num_items", "horizon")):
        kwargs = {**base, **{k: v for k, v in shrink.items() if k not in drop}}
        if _buildable(env_id, tuple(sorted(kwargs.items()))):
            return kwargs
    return base


@pytest.fixture
def small():
    """``small(env_id, num_items=500, horizon=30) -> dict`` of config overrides."""
    return small_kwargs


# --------------------------------------------------------------------------------------------
# A deterministic, observation-only policy
# --------------------------------------------------------------------------------------------
def feature_scores(candidates: torch.Tensor) -> torch.Tensor:
    """A fixed linear scoring of candidate features ``[..., C, F] -> [..., C]``.

    The weights are a fixed function of F (no RNG), and a tiny index term breaks exact ties the
    same way on every face."""
    F, C = candidates.shape[-1], candidates.shape[-2]
    w = torch.cos(torch.arange(F, dtype=torch.float64) * 1.7) + 0.1
    tie = 1e-6 * torch.arange(C, dtype=torch.float64)
    return candidates.to(torch.float64) @ w + tie


def feature_slate(candidates: Any, mask: Any, slate_size: int) -> torch.Tensor:
    """Top-``slate_size`` unmasked candidates by :func:`feature_scores`. Accepts numpy or torch,
    ``[C, F]`` / ``[C]`` or batched ``[N, C, F]`` / ``[N, C]``; returns int64 indices."""
    cands = candidates if torch.is_tensor(candidates) else torch.as_tensor(np.array(candidates))
    m = (mask if torch.is_tensor(mask) else torch.as_tensor(np.asarray(mask))).bool()
    scores = feature_scores(cands.cpu())
    scores = torch.where(m.cpu(), scores, torch.full_like(scores, -math.inf))
    return scores.topk(slate_size, dim=-1).indices


@pytest.fixture
def feature_policy():
    """``feature_policy(candidates, mask, K) -> indices`` (see :func:`feature_slate`)."""
    return feature_slate


def random_slates(mask: torch.Tensor, slate_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random distinct unmasked candidates for a batched mask ``[..., C]``."""
    u = torch.rand(mask.shape, generator=generator).to(mask.device)
    u = torch.where(mask, u, torch.full_like(u, -1.0))
    return u.topk(slate_size, dim=-1).indices


@pytest.fixture
def random_policy():
    """``random_policy(mask, K, generator) -> indices``: uniform random valid slates."""
    return random_slates


# --------------------------------------------------------------------------------------------
# Snapshots of a BatchedMarket
# --------------------------------------------------------------------------------------------
def snapshot_market(env: recenv.BatchedMarket) -> dict[str, Any]:
    """Every tensor (copied), generator state and plain value reachable from ``vars(env)``,
    plus the observation."""
    out: dict[str, Any] = {}
    for name, value in vars(env).items():
        out.update(leaves(value, name))
    out.update(leaves(env.observe(), "observe()"))
    return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in out.items()}


def assert_same_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys(), set(before) ^ set(after)
    for k, v in before.items():
        w = after[k]
        if torch.is_tensor(v):
            assert v.dtype == w.dtype and v.shape == w.shape, k
            assert torch.equal(v, w), f"{k} changed"
        else:
            assert v == w, f"{k} changed: {v!r} -> {w!r}"


@pytest.fixture
def snapshot():
    return snapshot_market


@pytest.fixture
def assert_same():
    return assert_same_snapshot


@pytest.fixture
def largest_scales():
    """``largest_scales(sign=1.0, values=False, **overrides)``: a small Market-v0 config (300
    items, 6 users) with every utility scale at its bound (``MAX_UTILITY_SCALE``, the signed
    weights times ``sign``), the no-click and leave utilities at ``-MAX_UTILITY_SCALE`` (so the
    page is visited and chosen from), the smallest temperature and boredom that never decays:
    the largest utilities a valid config allows. ``values=True`` puts every value scale
    (lengths, budgets, noise, reward weights) at ``MAX_VALUE_SCALE`` too; ``overrides`` last."""

    def build(sign: float = 1.0, values: bool = False, **overrides: Any) -> dict:
        cfg: dict = {
            n: (sign if lo < 0 else 1.0) * MAX_UTILITY_SCALE for n, lo in UTILITY_SCALES.items()
        }
        if values:
            cfg.update(dict.fromkeys(VALUE_SCALES, MAX_VALUE_SCALE))
        cfg.update(
            no_click_utility=-MAX_UTILITY_SCALE,
            leave_utility=-MAX_UTILITY_SCALE,
            temperature=MIN_TEMPERATURE,
            boredom_decay=1.0,
            num_items=300,
            num_users=6,
        )
        return {**cfg, **overrides}

    return build
