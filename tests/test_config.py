"""Configuration (DESIGN §4): one frozen dataclass per scenario; unknown keys are an error that
lists the valid ones; impossible values are refused with a message that says why."""

from __future__ import annotations

import dataclasses
import fractions
import inspect
import math

import numpy as np
import pytest
import torch

import recenv
from recenv.core.config import (
    MarketConfig,
    check_int,
    field_type_errors,
    option,
    option_errors,
    shown,
)

MARKET = "recenv/Market-v0"


def test_unknown_key_lists_valid_keys():
    """An unknown key raises ValueError naming it and listing the valid keys, through
    ``MarketConfig.from_kwargs``, ``make`` and ``make_vec``."""
    with pytest.raises(ValueError) as err:
        MarketConfig.from_kwargs(num_itmes=10)
    msg = str(err.value)
    assert "num_itmes" in msg and "num_items" in msg and "horizon" in msg
    for factory in (
        lambda: recenv.make(MARKET, num_itmes=10),
        lambda: recenv.make_vec(MARKET, num_envs=1, num_itmes=10),
    ):
        with pytest.raises(ValueError) as err:
            factory()
        assert "num_itmes" in str(err.value) and "num_items" in str(err.value)
        # A guess, as the experiments CLI gives one (the API gave none).
        assert "did you mean 'num_items'" in str(err.value) and "(for 'num_itmes')" in str(
            err.value
        )
    # A misspelled option of the face itself: the error names the face's options too (it
    # listed the config keys alone, as if flatten_obs or device did not exist).
    with pytest.raises(
        ValueError,
        match=r"\['flatten_ob'\].*make also takes seed and the face "
        r"options \['render_mode', 'flatten_obs', 'max_cycles', 'compile'\]",
    ):
        recenv.make(MARKET, flatten_ob=True)
    with pytest.raises(ValueError, match=r"\['devic'\].*make_vec also takes num_envs, device"):
        recenv.make_vec(MARKET, num_envs=1, devic="cpu")


def test_unknown_key_on_every_preset(env_id, small):
    """Every registered id rejects an unknown key with the list of its valid keys."""
    with pytest.raises(ValueError) as err:
        recenv.make_vec(env_id, num_envs=1, no_such_key=1, **small(env_id))
    assert "no_such_key" in str(err.value) and "slate_size" in str(err.value)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"num_items": 0}, ["num_items", "> 0"]),
        ({"num_items": -5}, ["num_items", "> 0"]),
        ({"num_agents": 0}, ["num_agents", "> 0"]),
        ({"horizon": 0}, ["horizon", "> 0"]),
        ({"temperature": 0.0}, ["temperature", "[0.001, inf)"]),
        # utility / temperature overflowed float32: every choice probability was NaN
        ({"temperature": 1e-39}, ["temperature", "[0.001, inf)", "float32"]),
        ({"temperature": 1e-50}, ["temperature", "[0.001, inf)", "float32"]),
        # state() divides by it in float32, where 1e-50 is 0 (and 0 / 0 NaN)
        ({"session_budget": 1e-50}, ["session_budget", "float32's smallest normal"]),
        ({"slate_size": 21, "num_candidates": 20}, ["slate_size", "num_candidates"]),
        ({"return_prob": 1.5}, ["return_prob", "[0, 1]"]),
        ({"boredom_decay": -0.1}, ["boredom_decay", "[0, 1]"]),
        ({"team_weight": 2.0}, ["team_weight", "[0, 1]"]),
        ({"feature_visible": 1.01}, ["feature_visible", "[0, 1]"]),
        ({"boredom_growth": -1.0}, ["boredom_growth", ">= 0"]),
        ({"num_items": "100"}, ["num_items", "int"]),
        ({"num_items": 100.0}, ["num_items", "int"]),
        ({"num_items": True}, ["num_items", "int"]),
        ({"interest_weight": "3"}, ["interest_weight", "float"]),
        ({"topology": "mall"}, ["topology", "shared_page", "platform_choice"]),
        ({"reward_mode": "selfish"}, ["reward_mode", "competitive", "cooperative", "mixed"]),
        ({"invalid_slate": "ignore"}, ["invalid_slate", "raise", "repair"]),
        ({"response": "dance"}, ["response", "engagement"]),
        ({"ownership": "mine"}, ["ownership", "partition", "shared"]),
        ({"temperature": float("nan")}, ["temperature", "finite"]),
        ({"quality_std": float("inf")}, ["quality_std", "finite"]),
        ({"retrieval_interest": 0.9}, ["sum to 1"]),
        ({"max_item_topics": 20, "num_topics": 16}, ["max_item_topics", "num_topics"]),
        ({"churn_threshold": 0.8}, ["churn_threshold", "satisfaction_init"]),
        # a purchase pays the price: without prices every reward was 0, silently
        ({"response": "purchase"}, ["response='purchase'", "price_scale=0", "price_scale > 0"]),
        # compared with a fit in [0, 1]: 2.0 (an engagement scale) made every visit a letdown
        ({"expectation": 2.0}, ["expectation", "[0, 1]"]),
        ({"expectation": -0.1}, ["expectation", "[0, 1]"]),
        ({"num_items": 30}, ["num_items", "num_candidates"]),
        # the request clock is float32: past 2**24 it stops counting and never truncates
        ({"horizon": 2**24 + 1}, ["horizon", "<= 16,777,216", "float32"]),
        # an item's exposures per episode (horizon x every slot) are counted in int32
        (
            {"horizon": 2**24, "num_agents": 16, "slate_size": 8, "num_candidates": 8},
            ["horizon x num_agents x slate_size = 2,147,483,648", "int32"],
        ),
        # what torch holds: int64 and float32 (beyond, torch's own overflow errors)
        ({"num_users": 2**63}, ["num_users", "[-2**63, 2**63 - 1]"]),
        ({"temperature": 1e39}, ["temperature", "float32's range"]),
        # past even float64 (float() raised a bare OverflowError), named in short
        ({"temperature": 10**400}, ["temperature=1000000000", "...0000000", "float32's range"]),
        ({"expectation": -(10**400)}, ["expectation", "float32's range"]),
    ],
)
def test_impossible_values_say_why(overrides, words):
    """Each impossible value raises ValueError whose message names the field and the rule it
    breaks (the allowed range, type or values) — both from the dataclass and from ``make``."""
    with pytest.raises(ValueError) as err:
        MarketConfig(**overrides)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    with pytest.raises(ValueError) as err:
        recenv.make_vec(MARKET, num_envs=1, **overrides)
    assert words[0] in str(err.value)


def test_real_numbers_are_stored_as_floats_and_step():
    """A float field takes any real number (an int, a Fraction, numpy's floats) and stores it
    as a Python float, which the market computes with.

    Regression test: a ``Fraction`` was stored as given, and the first step raised TypeError
    inside torch after the market's counter had moved."""
    third = fractions.Fraction(1, 3)
    given = {"temperature": third, "expectation": third, "session_budget": 8, "quality_std": 0}
    cfg = MarketConfig(**given, no_click_utility=np.float32(1.5))
    for name in (*given, "no_click_utility"):
        assert type(getattr(cfg, name)) is float, name
    assert cfg.temperature == 1 / 3 and cfg.session_budget == 8.0
    env = recenv.make_vec(MARKET, num_envs=2, seed=0, num_items=500, **given)
    env.reset()
    s = env.oracle_slates()
    _, _, _, _, info = env.step({a: s[:, i] for i, a in enumerate(env.agents)})
    assert torch.isfinite(info["choice_probs"]).all() and env.counter.tolist() == [1, 1]


def test_a_number_too_long_to_write_is_still_named():
    """An int past 4,300 digits, which ``repr`` refuses to write, is still refused naming
    its field and its size (the message's ``repr`` raised ValueError about integer string
    conversion)."""
    with pytest.raises(
        ValueError, match=r"num_users=<an int of 5001 digits> must be an int in \[-2\*\*63"
    ):
        MarketConfig(num_users=10**5000)
    with pytest.raises(ValueError, match=r"temperature=<a negative int of 4301 digits> must lie"):
        MarketConfig(temperature=-(10**4300))
    # Not a number at all, and not writable either: the field is still named.
    with pytest.raises(ValueError, match=r"num_items=<a tuple that cannot be written> must be"):
        MarketConfig(num_items=(10**5000,))


@pytest.mark.parametrize("face", ["make", "make_vec"])
@pytest.mark.parametrize(
    "key,value,rule",
    [
        ("num_topics", 10**5000, r"must be an int in \[-2\*\*63, 2\*\*63 - 1\]"),
        ("horizon", -(10**5000), r"must be an int in \[-2\*\*63, 2\*\*63 - 1\]"),
        ("temperature", 10**5000, r"must lie within float32's range"),
        ("interest_weight", 10**5000, r"must lie within float32's range"),
    ],
    ids=["num_topics", "horizon", "temperature", "interest_weight"],
)
def test_a_number_too_long_to_write_is_named_by_every_scenario(env_id, face, key, value, rule):
    """Through ``make`` and ``make_vec`` of every registered id, an int too long to write is
    refused by the config's own check, naming the config, the field, the allowed range and
    the value's size.

    Regression test: ``recenv.make('recenv/Market-v0', num_items=10**5000)`` raised Python's
    ``ValueError: Exceeds the limit (4300 digits) for integer string conversion``: the
    registry wrote the config into a message (the one for a market no memory holds) before
    the builder had checked it. (FromLog-v0 checks its market keys before reading the log,
    which is absent here.)"""
    extra = {"log": "/nonexistent/ratings.csv"} if "log" in _builder_params(env_id) else {}
    digits = "a negative int" if value < 0 else "an int"
    pattern = rf"invalid MarketConfig: {key}=<{digits} of 5001 digits> {rule}"
    with pytest.raises(ValueError, match=pattern):
        if face == "make":
            recenv.make(env_id, **extra, **{key: value})
        else:
            recenv.make_vec(env_id, num_envs=2, **extra, **{key: value})


def test_the_reported_case_names_num_items():
    """The case as reported: ``num_items=10**5000`` on Market-v0's PettingZoo face."""
    with pytest.raises(ValueError) as err:
        recenv.make(MARKET, num_items=10**5000)
    assert str(err.value) == (
        "invalid MarketConfig: num_items=<an int of 5001 digits> must be an int in "
        "[-2**63, 2**63 - 1]"
    )


def _builder_params(env_id: str) -> set[str]:
    return set(inspect.signature(recenv.spec(env_id).builder()).parameters)


def test_shown_writes_any_value_in_short():
    """``shown`` (every config message writes user values with it): a short repr as is, a
    long one cut to its ends (an int with its size), an int too long to write as its size,
    and never an error."""
    assert shown(3) == "3" and shown("x") == "'x'" and shown(0.001) == "0.001"
    assert shown(10**400) == "1" + "0" * 49 + "...0000000 (an int of 401 digits)"
    # Exact sizes at the edges of a power of ten, either side of repr's 4,300-digit limit.
    for n, digits in [
        (10**4299, 4300),
        (10**4300 - 1, 4300),
        (10**4300, 4301),
        (10**5000 - 1, 5000),
    ]:
        assert shown(n).endswith(f"an int of {digits} digits)") or shown(n) == (
            f"<an int of {digits} digits>"
        ), (digits, shown(n))
    assert shown(10**5000) == "<an int of 5001 digits>"
    assert shown(-(10**5000)) == "<a negative int of 5001 digits>"
    assert shown([10**5000]) == "<a list that cannot be written>"
    assert shown("y" * 500).endswith("...yyyyyy'") and len(shown("y" * 500)) == 60


def test_option_checks_write_huge_values_safely():
    """The shared field checks (market, agent and experiment configs) write a value too long
    to write by its size: ``check_int``, a tuple field (``each=``) and an interval's ends.
    A tuple of ints past int64 is refused as an int field's value is (it was stored, and
    the config could not be written afterwards)."""
    with pytest.raises(
        ValueError, match=r"^steps=<an int of 5001 digits> must be an int in \[1, 9\]$"
    ):
        check_int("steps", 10**5000, 1, 9)
    with pytest.raises(
        ValueError, match=r"^steps=<a negative int of 5001 digits> must be an int >= 1"
    ):
        check_int("steps", -(10**5000), 1)

    @dataclasses.dataclass(frozen=True)
    class Layers:
        hidden: tuple = option((8,), "hidden sizes", within=(1, math.inf), each=int)
        span: float = option(1.0, "a span", within=(0, 10**5000))

        def __post_init__(self):
            errors = field_type_errors(self, finite=True) or option_errors(self)
            if errors:
                raise ValueError("; ".join(errors))

    assert dataclasses.fields(Layers)[1].metadata["interval"] == "[0, <an int of 5001 digits>]"
    for bad in ((10**5000,), (2**63,)):
        with pytest.raises(ValueError, match=r"^hidden=.* must be a tuple of ints in \[1, inf\]"):
            Layers(hidden=bad)
    assert Layers(hidden=(2**63 - 1,)).hidden == (2**63 - 1,)


def test_all_errors_reported_together():
    """Several bad values are reported in one message, so a user fixes them in one go."""
    with pytest.raises(ValueError) as err:
        MarketConfig(num_items=0, horizon=-1, return_prob=3.0)
    msg = str(err.value)
    assert "num_items" in msg and "horizon" in msg and "return_prob" in msg


def test_configs_are_frozen(env_id, small):
    """Configs are frozen dataclasses: assigning a field raises ``FrozenInstanceError``, on a
    fresh config and on every env's config; ``from_kwargs`` returns a new config."""
    cfg = MarketConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_items = 10  # type: ignore[misc]
    env = recenv.make_vec(env_id, num_envs=1, **small(env_id))
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.config.horizon = 10  # type: ignore[misc]
    other = MarketConfig.from_kwargs(cfg, horizon=7)
    assert other.horizon == 7 and cfg.horizon == MarketConfig().horizon


def test_every_field_is_documented():
    """Every config field carries a one-line ``help`` (it becomes ``--help`` text)."""
    for f in dataclasses.fields(MarketConfig):
        text = f.metadata.get("help", "")
        assert text and "\n" not in text, f.name


def test_config_round_trips_through_dict(env_id, small):
    """``to_dict`` then ``from_kwargs`` rebuilds an equal config for every preset."""
    cfg = recenv.make_vec(env_id, num_envs=1, **small(env_id)).config
    assert type(cfg).from_kwargs(**cfg.to_dict()) == cfg


def test_face_and_registry_errors():
    """Face options and the registry refuse bad input with reasons: both ``max_cycles`` and
    ``horizon``; an unknown env id (lists the registered ones); a bad ``num_envs``; a bad seed;
    ``flatten_obs`` that is not a bool."""
    with pytest.raises(ValueError, match="max_cycles"):
        recenv.make(MARKET, max_cycles=5, horizon=5)
    with pytest.raises(ValueError) as err:
        recenv.make("recenv/Nope-v0")
    assert MARKET in str(err.value)
    for n in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_envs"):
            recenv.make_vec(MARKET, num_envs=n, num_items=500)
    env = recenv.make_vec(MARKET, num_envs=1, num_items=500)
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed="7")
    with pytest.raises(ValueError, match="flatten_obs"):
        recenv.make(MARKET, flatten_obs="yes", num_items=500)
    for make in (recenv.make, lambda *a, **k: recenv.make_vec(*a, num_envs=1, **k)):
        with pytest.raises(ValueError, match="compile='no'"):
            make(MARKET, compile="no", num_items=500)


def test_reading_the_market_before_reset_says_reset_first():
    """``state()``, the oracle, ``check_slate`` and ``render`` before the first ``reset()``
    raise the RuntimeError that ``step`` and ``observe`` raise (were AttributeErrors on an
    empty user table, a slate error naming an empty mask, a frame of no request)."""
    env = recenv.make_vec(MARKET, num_envs=2, num_items=500)
    slate = torch.tensor([[0, 1, 2], [0, 1, 2]])
    # check_slate said "candidate 0 is masked ... allowed indices: []" (no mask yet).
    check = lambda: env.check_slate("agent_0", slate)  # noqa: E731
    for read in (env.state, env.oracle_scores, env.oracle_slates, env.observe, check):
        with pytest.raises(RuntimeError, match=r"call reset\(\) before"):
            read()
    face = recenv.make(MARKET, num_items=500, render_mode="ansi")
    # render() drew a frame of user 0 at t=0, a request that never was.
    for read in (face.state, lambda: face.oracle_slate("agent_0"), face.render):
        with pytest.raises(RuntimeError, match=r"call reset\(\) before"):
            read()


@pytest.mark.parametrize("key,value", [("num_envs", 2), ("device", "cpu")])
def test_pettingzoo_face_refuses_batched_options_and_names_make_vec(key, value):
    """``make`` builds one CPU market: ``num_envs`` or ``device`` is a ValueError that points
    to ``make_vec`` (was a TypeError about a repeated keyword)."""
    with pytest.raises(ValueError, match=rf"{key}=.*make_vec"):
        recenv.make(MARKET, num_items=500, **{key: value})


def test_seed_out_of_int64_is_refused_and_changes_nothing():
    """Market ``n`` is seeded ``seed + n`` in int64: a seed past that range is a ValueError
    naming the range (it was an OverflowError from inside torch), at construction as at
    reset, and a refused reset keeps the constructor's pending seed. The range's ends work,
    and market ``n`` of the batch is still the one-market env seeded ``seed + n``."""
    for bad in (2**63, -(2**63) - 1, 2**70):
        with pytest.raises(ValueError, match=r"seed=.*out of range.*2\*\*63"):
            recenv.make(MARKET, seed=bad, num_items=500)
    with pytest.raises(ValueError, match=r"2\*\*63 - 4"):
        recenv.make_vec(MARKET, num_envs=4, seed=2**63 - 3, num_items=500)
    env = recenv.make_vec(MARKET, num_envs=2, seed=5, num_items=500)
    with pytest.raises(ValueError, match="out of range"):
        env.reset(seed=2**64)
    fresh = recenv.make_vec(MARKET, num_envs=2, seed=5, num_items=500)
    assert torch.equal(env.reset()["agent_0"]["user"], fresh.reset()["agent_0"]["user"])
    top = 2**63 - 2
    batch = recenv.make_vec(MARKET, num_envs=2, seed=top, num_items=500).reset()
    for n, s in enumerate((top, top + 1)):
        one, _ = recenv.make(MARKET, seed=s, num_items=500).reset()
        np.testing.assert_array_equal(batch["agent_0"]["user"][n].numpy(), one["agent_0"]["user"])
    recenv.make(MARKET, seed=-(2**63), num_items=500).reset()
    # numpy's integers are ints (operator.index), its bools are not.
    np.testing.assert_array_equal(
        recenv.make(MARKET, seed=np.int64(7), num_items=500).reset()[0]["agent_0"]["user"],
        recenv.make(MARKET, seed=7, num_items=500).reset()[0]["agent_0"]["user"],
    )
    for bad in (np.bool_(True), np.float64(3.0), "7"):
        with pytest.raises(ValueError, match="must be an int or None"):
            recenv.make(MARKET, seed=bad, num_items=500)


def test_unusable_device_is_a_value_error_naming_it():
    """A device string torch does not know, a CUDA device this torch or machine cannot use,
    ``"meta"`` or another backend it lacks, is refused at construction with the device named
    and the usable ones (not torch's AssertionError or RuntimeError)."""
    with pytest.raises(ValueError, match="device='gpu'"):
        recenv.make_vec(MARKET, num_envs=2, device="gpu", num_items=500)
    with pytest.raises(ValueError, match=r"device='cuda:99' cannot be used"):
        recenv.make_vec(MARKET, num_envs=2, device="cuda:99", num_items=500)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda' cannot be used.*device='cpu'"):
            recenv.make_vec(MARKET, num_envs=2, device="cuda", num_items=500)
    # Meta tensors hold no values: reset returned them and the first step failed.
    with pytest.raises(ValueError, match=r"device='meta' cannot be used.*device='cpu'"):
        recenv.make_vec(MARKET, num_envs=2, device="meta", num_items=500)
    # A backend this torch lacks (an MPS device on a build without it: a bare RuntimeError
    # from inside the build).
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match=r"device='mps' cannot be used.*'mps' backend"):
            recenv.make_vec(MARKET, num_envs=2, device="mps", num_items=500)


def test_registry_refuses_duplicate_and_malformed_ids():
    """Registering an existing id or a malformed one is an error (and registers nothing)."""
    before = recenv.registered_ids()
    with pytest.raises(ValueError, match="already registered"):
        recenv.register(MARKET, "recenv.scenarios.market:build")
    with pytest.raises(ValueError, match="namespace/Name-vN"):
        recenv.register("NoNamespace", "recenv.scenarios.market:build")
    assert recenv.registered_ids() == before


def test_a_market_no_memory_holds_is_refused_naming_its_sizes():
    """Sizes the allocator refuses raise ValueError naming the env id and the config (it was
    the allocator's bare RuntimeError from deep inside the build), on both faces."""
    with pytest.raises(
        ValueError,
        match=r"Market-v0: the market with .*'num_users': 10{12}.* does not fit in memory",
    ):
        recenv.make_vec(MARKET, num_envs=2, num_users=10**12)
    with pytest.raises(ValueError, match=r"'embed_dim': 10{9}.* does not fit in memory"):
        recenv.make(MARKET, num_items=10**6, embed_dim=10**9)
    # A size whose storage overflows int64 ("Storage size calculation overflowed").
    with pytest.raises(
        ValueError, match=r"'num_topics': 9223372036854775807.*does not fit in memory"
    ):
        recenv.make_vec(MARKET, num_envs=1, num_topics=2**63 - 1)
    assert MarketConfig(horizon=2**24).horizon == 2**24  # the longest episode allowed
