"""recenv's user-facing warnings name the user's line (:mod:`recenv.core.warn`), whichever
public entry reached the code that warns.

Regression tests: the market's "item_stats_size=... counters for num_items=..." warning named
the scenario builder's ``return BatchedMarket(...)`` (recenv/scenarios/market.py) for every
``recenv.make`` / ``make_vec`` / ``parallel_env`` call, and the native kernels' build warning
named ``native.usable``; a filter or a log then pointed into recenv, not at the call to change."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.utils.cpp_extension

import recenv
from recenv.core import native
from recenv.scenarios import market as market_scenario

MARKET = "recenv/Market-v0"
# More items than counters, and an episode that can show more items than counters: warns.
FEW_COUNTERS = {"num_items": 200, "item_stats_size": 16, "num_users": 3, "horizon": 20}


def _recorded(build) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        build()
    return [x for x in w if "counters for num_items" in str(x.message)]


@pytest.mark.parametrize(
    "entry",
    [
        lambda: recenv.make_vec(MARKET, num_envs=2, seed=0, **FEW_COUNTERS),
        lambda: recenv.make(MARKET, seed=0, **FEW_COUNTERS),
        lambda: market_scenario.parallel_env(seed=0, **FEW_COUNTERS),
        lambda: market_scenario.env(seed=0, **FEW_COUNTERS),
        lambda: recenv.BatchedMarket(recenv.MarketConfig(**FEW_COUNTERS), 1, seed=0),
    ],
    ids=["make_vec", "make", "parallel_env", "aec_env", "BatchedMarket"],
)
def test_market_build_warning_names_the_callers_line(entry):
    (w,) = _recorded(entry)
    assert w.filename == __file__, f"{w.filename}:{w.lineno}"
    assert w.category is UserWarning


def test_reset_options_warning_names_the_callers_line():
    env = recenv.make(MARKET, seed=0, num_users=3, horizon=5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        env.reset(seed=0, options={"mode": "eval"})
    (w,) = [x for x in w if "ignored" in str(x.message)]
    assert w.filename == __file__, f"{w.filename}:{w.lineno}"


def test_native_build_warning_names_the_callers_line(monkeypatch):
    """A toolchain that cannot build the kernels: one RuntimeWarning, at the caller of the
    recenv function that found out (here ``native.usable``), not inside recenv."""

    def broken(*args, **kwargs):
        raise OSError("no compiler here")

    monkeypatch.setenv("RECENV_NATIVE", "1")
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setattr(native, "_ninja_on_path", lambda: None)
    monkeypatch.setattr(native, "_announce_first_build", lambda: None)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert native.usable(torch.device("cpu")) is False
    (w,) = [x for x in w if "native CPU kernels" in str(x.message)]
    assert w.category is RuntimeWarning
    assert w.filename == __file__, f"{w.filename}:{w.lineno}"
