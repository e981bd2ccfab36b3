"""Every numeric field of ``MarketConfig`` against its documented range, written out here
field by field (from the fields' help and the bounds' reasons in ``recenv.core.config``), so
that a check dropped or loosened there fails by name: a value just past each end
is refused with a message naming the field and the rule, each end itself is accepted, and
an infinite value is refused for every float field (none of them means anything at inf).

A new numeric field must get its row here (``test_every_numeric_field_has_a_range_here``)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from recenv.core.config import MAX_UTILITY_SCALE, MarketConfig

BIG = MAX_UTILITY_SCALE  # 1e6: the bound of every scale that enters the utility or a value
INT64 = (-(2**63), 2**63 - 1)


@dataclasses.dataclass(frozen=True)
class Range:
    lo: float | None  # None: no lower end but the type's
    hi: float | None
    lo_open: bool = False
    lo_words: tuple[str, ...] = ()  # what a refusal below lo must say besides the name
    hi_words: tuple[str, ...] = ()


def positive(hi: float | None = None, hi_words: tuple[str, ...] = ()) -> Range:
    return Range(0, hi, lo_open=True, lo_words=("> 0",), hi_words=hi_words)


NONNEG = Range(0, None, lo_words=(">= 0",))
PROB = Range(0, 1, lo_words=("[0, 1]",), hi_words=("[0, 1]",))
UTILITY = Range(-BIG, BIG, lo_words=("[-1e6, 1e6]", "float32"), hi_words=("[-1e6, 1e6]",))
# >= 0, and at most 1e6: in the choice's utility, or in a value a step computes
UTILITY_SCALE = Range(0, BIG, lo_words=(">= 0",), hi_words=("[0, 1e6]", "float32"))
VALUE_SCALE = Range(0, BIG, lo_words=(">= 0",), hi_words=("<= 1e6", "float32"))

RANGES: dict[str, Range] = {
    # sizes
    "num_agents": positive(),
    "num_items": positive(2**31, ("<= 2,147,483,648", "int32")),
    "num_topics": positive(),
    "embed_dim": positive(),
    "num_users": positive(),
    "num_candidates": positive(),
    "slate_size": positive(),
    "horizon": positive(2**24, ("<= 16,777,216", "float32")),
    "catalog_seed": Range(*INT64, lo_words=("[-2**63, 2**63 - 1]",), hi_words=("2**63 - 1",)),
    "max_item_topics": positive(),
    "item_stats_size": positive(),
    "fresh_window": positive(),
    # catalog
    "zipf_exponent": NONNEG,
    "new_item_fraction": PROB,
    "quality_std": UTILITY_SCALE,
    "price_scale": UTILITY_SCALE,
    "mean_item_length": Range(0, BIG, lo_open=True, lo_words=("> 0",), hi_words=("<= 1e6",)),
    # retrieval
    "retrieval_interest": PROB,
    "retrieval_popular": PROB,
    "retrieval_fresh": PROB,
    "retrieval_skew": Range(1, None, lo_words=(">= 1",)),
    # observation
    "feature_noise": VALUE_SCALE,
    "feature_visible": PROB,
    "quality_noise": VALUE_SCALE,
    # choice
    "interest_weight": UTILITY,
    "taste_weight": UTILITY,
    "quality_weight": UTILITY,
    "boredom_weight": UTILITY,
    "price_sensitivity": UTILITY_SCALE,
    "position_bias": UTILITY_SCALE,
    "no_click_utility": UTILITY,
    "temperature": Range(1e-3, None, lo_words=("[0.001, inf)",)),
    "loyalty_weight": UTILITY_SCALE,
    "leave_utility": UTILITY,
    # response and dynamics
    "engagement_noise": VALUE_SCALE,
    "interest_drift": PROB,
    "boredom_growth": UTILITY_SCALE,
    "boredom_exposure": UTILITY_SCALE,
    "boredom_decay": PROB,
    "satisfaction_init": PROB,
    "satisfaction_rate": PROB,
    "expectation": PROB,
    "loyalty_rate": PROB,
    "session_budget": Range(
        1.1754943508222875e-38, BIG, lo_words=("smallest normal",), hi_words=("<= 1e6",)
    ),
    "browse_cost": NONNEG,
    "session_gap": NONNEG,
    "churn_threshold": PROB,
    "return_prob": PROB,
    # reward
    "team_weight": PROB,
    "welfare_weight": VALUE_SCALE,
    "diversity_weight": VALUE_SCALE,
    "fairness_weight": VALUE_SCALE,
}


def others(name: str, v: float) -> dict:
    """The other fields a value of ``name`` comes with: a retrieval share's two others sum
    with it to 1, so that a share out of range is the only fault (the sum rule would name
    every share)."""
    shares = ("retrieval_interest", "retrieval_popular", "retrieval_fresh")
    if name in shares:
        rest = [s for s in shares if s != name]
        return {rest[0]: 1.0 - v, rest[1]: 0.0}
    return {}


def numeric_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(MarketConfig) if f.type in ("int", "float", int, float)]


def test_every_numeric_field_has_a_range_here():
    assert sorted(f.name for f in numeric_fields()) == sorted(RANGES)


def past_the_ends(name: str) -> list[tuple[float, tuple[str, ...]]]:
    """Values just outside ``name``'s range (of its type: an int field's next int), each
    with what its refusal must say."""
    r, is_int = RANGES[name], MarketConfig.__dataclass_fields__[name].type in ("int", int)
    step = (lambda x: 1) if is_int else (lambda x: max(abs(x) * 1e-3, 1e-3))
    out = []
    if r.lo is not None:
        out.append((r.lo if r.lo_open else r.lo - step(r.lo), r.lo_words))
    if r.hi is not None:
        out.append((r.hi + step(r.hi), r.hi_words))
    return out


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [pytest.param(n, v, w, id=f"{n}={v!r}") for n in RANGES for v, w in past_the_ends(n)],
)
def test_a_value_past_an_end_is_refused_naming_the_field_and_rule(name, value, words):
    with pytest.raises(ValueError) as err:
        MarketConfig(**{name: value, **others(name, value)})
    message = str(err.value)
    assert f"{name}=" in message, message
    for w in words:
        assert w in message, (w, message)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (n, v)
        for n, r in RANGES.items()
        for v, open_end in ((r.lo, r.lo_open), (r.hi, False))
        if v is not None
        and not open_end
        # (no user churns at once: churn_threshold < satisfaction_init; a whole catalog of
        # new items leaves none at t=0)
        and (n, v) not in {("satisfaction_init", 0), ("churn_threshold", 1)}
        and (n, v) != ("new_item_fraction", 1)
    ],
    ids=lambda x: repr(x) if not isinstance(x, str) else x,
)
def test_each_end_of_a_range_is_accepted(name, value):
    cfg = MarketConfig(**{name: value, **others(name, value)})
    assert getattr(cfg, name) == value


@pytest.mark.parametrize("name", [n for n, f in MarketConfig.__dataclass_fields__.items()
                                  if f.type in ("float", float)])  # fmt: skip
@pytest.mark.parametrize("sign", [1, -1])
def test_an_infinite_float_is_refused_naming_the_field(name, sign):
    value = sign * math.inf
    with pytest.raises(ValueError, match=rf"{name}=-?inf .*finite"):
        MarketConfig(**{name: value, **others(name, 0.5)})
