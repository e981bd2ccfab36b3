"""Bad input to the construction entry points (``spec``, ``make``, ``make_vec``, ``register``)
gets a ValueError naming the argument and its allowed values, raised before the scenario's
builder runs (which can be slow: FromLog-v0 fits ALS on its log), and a refused ``register``
changes nothing.

The ``no_build`` fixture replaces every scenario's builder with one that fails the test: an
error that only appeared once the core was built shows up as that failure.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import recenv
from recenv import registry
from recenv.registry import EnvSpec

MARKET = "recenv/Market-v0"
FROM_LOG = "recenv/FromLog-v0"
BUILT = "the scenario's builder ran"


class _Built(AssertionError):
    """Raised by the ``no_build`` builder: the build was reached (a ValueError is not)."""


@pytest.fixture
def no_build(monkeypatch):
    """Every spec's builder fails with ``_Built``; the list returned records its kwargs."""
    calls: list[dict] = []

    def builder(self):
        def build(**kwargs):
            calls.append(kwargs)
            raise _Built(BUILT)

        return build

    monkeypatch.setattr(EnvSpec, "builder", builder)
    return calls


@pytest.mark.parametrize("bad", [["x"], 3, None, b"recenv/Market-v0"], ids=repr)
@pytest.mark.parametrize(
    "call",
    [
        recenv.spec,
        recenv.make,
        lambda env_id: recenv.make_vec(env_id, num_envs=1),
        lambda env_id: recenv.register(env_id, "recenv.scenarios.market:build"),
    ],
    ids=["spec", "make", "make_vec", "register"],
)
def test_an_id_that_is_not_a_str_is_refused_as_such(call, bad, no_build):
    """An id of another type is refused, naming the expected type and an example id.

    Regression test: ``spec(["x"])`` (and so ``make``) raised ``TypeError: unhashable type:
    'list'`` from the registry's dict, and ``spec(3)`` called 3 an unknown id."""
    before = recenv.registered_ids()
    with pytest.raises(
        ValueError,
        match=rf"env id must be a str such as 'recenv/Market-v0', got {type(bad).__name__}",
    ):
        call(bad)
    assert recenv.registered_ids() == before and not no_build


@pytest.mark.parametrize(
    "kwargs,allowed",
    [
        ({"render_mode": "bogus"}, "allowed: None, 'human', 'ansi'"),
        ({"render_mode": 1}, "allowed: None, 'human', 'ansi'"),
        ({"render_mode": ["human"]}, "allowed: None, 'human', 'ansi'"),
        ({"flatten_obs": "yes"}, "must be a bool"),
        ({"seed": 1.5}, "must be an int or None"),
        ({"seed": "1"}, "must be an int or None"),
        ({"seed": True}, "must be an int or None"),
        ({"compile": 1}, "must be a bool"),
        ({"max_cycles": True}, "must be an int >= 1"),
    ],
    ids=repr,
)
def test_make_refuses_bad_options_before_building(env_id, no_build, kwargs, allowed):
    """``make`` refuses a bad face option or seed by name, with the allowed values, before
    the scenario's builder runs (for FromLog-v0: before reading or fitting a log, which is
    not even given here).

    Regression test: ``render_mode``, ``flatten_obs`` and ``seed`` were checked only once the
    core had been built (after the ALS fit of FromLog-v0)."""
    ((key, value),) = kwargs.items()
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}") + ".*" + re.escape(allowed)):
        recenv.make(env_id, **kwargs)
    assert not no_build


@pytest.mark.parametrize(
    "kwargs,allowed",
    [
        ({"num_envs": 0}, "must be a positive int"),
        ({"num_envs": "2"}, "must be a positive int"),
        ({"num_envs": True}, "must be a positive int"),
        ({"num_envs": 2.0}, "must be a positive int"),
        ({"device": "bogus"}, "is not a torch device: Expected one of cpu"),
        ({"seed": 1.5}, "must be an int or None"),
        ({"compile": "yes"}, "must be a bool"),
    ],
    ids=repr,
)
def test_make_vec_refuses_bad_arguments_before_building(env_id, no_build, kwargs, allowed):
    """``make_vec`` refuses a bad ``num_envs``, ``device``, ``seed`` or ``compile`` by name
    before the scenario's builder runs.

    Regression test: ``num_envs``, ``device`` and ``seed`` were checked by the core, after
    the builder's work (FromLog-v0's ALS fit)."""
    ((key, value),) = kwargs.items()
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r} {allowed}")):
        recenv.make_vec(env_id, **{"num_envs": 1, **kwargs})
    assert not no_build


def test_valid_arguments_reach_the_builder_unchanged(no_build):
    """The early checks refuse nothing valid and pass what they check on as given: a numpy
    seed, both render modes, ``flatten_obs``, ``max_cycles`` (as ``horizon``) and the
    batched face's arguments."""
    seed = np.int64(3)
    for mode in (None, "human", "ansi"):
        with pytest.raises(_Built):
            recenv.make(MARKET, seed=seed, render_mode=mode, flatten_obs=True, max_cycles=4)
    with pytest.raises(_Built):
        recenv.make_vec(MARKET, num_envs=2, device="cpu", seed=seed, num_agents=3)
    assert no_build[0] == {"num_envs": 1, "device": "cpu", "seed": seed, "horizon": 4}
    assert no_build[0]["seed"] is seed
    assert no_build[-1] == {"num_envs": 2, "device": "cpu", "seed": seed, "num_agents": 3}


def test_from_log_refuses_a_bad_render_mode_before_fitting(tmp_path, monkeypatch):
    """The concrete case: FromLog-v0 with a real log and ``render_mode="bogus"`` is refused
    without fitting the log.

    Regression test: the ALS fit ran (1-3 s on ml-latest-small) before the refusal."""
    from recenv.scenarios import from_log

    def fit_log(*args, **kwargs):
        raise _Built("the log was fitted")

    monkeypatch.setattr(from_log, "fit_log", fit_log)
    log = tmp_path / "log.csv"
    log.write_text("user,item\n" + "".join(f"{u},{i}\n" for u in range(6) for i in range(60)))
    small = {"log": str(log), "num_candidates": 10, "num_topics": 4, "embed_dim": 4}
    with pytest.raises(ValueError, match=r"render_mode='bogus'; allowed: None, 'human', 'ansi'"):
        recenv.make(FROM_LOG, render_mode="bogus", **small)
    with pytest.raises(_Built):  # the spy is reached when nothing is wrong
        recenv.make(FROM_LOG, **small)


@pytest.mark.parametrize("pz_doc", [3, None, "no such module", "a..b", ".market"], ids=repr)
def test_register_refuses_a_bad_page_and_registers_nothing(pz_doc):
    """``register`` refuses a ``pz_doc`` that is not ``''`` or a module name, naming the
    field, and registers nothing.

    Regression test: ``pz_doc=3`` was registered, and every ``make`` of the id then built its
    market and failed with ``AttributeError: 'int' object has no attribute 'startswith'``."""
    before = recenv.registered_ids()
    with pytest.raises(ValueError, match=rf"pz_doc={pz_doc!r} must be '' or a module name"):
        recenv.register("audit/Page-v0", "recenv.scenarios.market:build", pz_doc=pz_doc)
    assert recenv.registered_ids() == before


def test_make_imports_the_page_before_building(monkeypatch, no_build):
    """A registered page module that does not import fails ``make`` before the build.

    Regression test: the page was imported after the market had been built."""
    env_id = "audit/Page-v0"
    page = "recenv.scenarios.no_such_page"
    spec = EnvSpec(env_id, "recenv.scenarios.market:build", page)
    monkeypatch.setitem(registry._REGISTRY, env_id, spec)  # undone after the test
    with pytest.raises(ModuleNotFoundError, match=page):
        recenv.make(env_id)
    assert not no_build


HUGE = 10**5000  # repr refuses an int past 4,300 digits


@pytest.mark.parametrize(
    "kwargs,allowed",
    [
        ({"seed": HUGE}, " out of range: with num_envs=1 (market n seeded seed + n) a seed"),
        ({"seed": -HUGE}, " out of range: with num_envs=1 (market n seeded seed + n) a seed"),
        ({"render_mode": HUGE}, "; allowed: None, 'human', 'ansi'"),
        ({"flatten_obs": HUGE}, " must be a bool"),
        ({"compile": HUGE}, " must be a bool"),
        ({"max_cycles": -HUGE}, " must be an int >= 1"),
        ({"num_envs": HUGE}, "; use recenv.make_vec(env_id, num_envs=..., device=...)"),
        ({"device": HUGE}, "; use recenv.make_vec(env_id, num_envs=..., device=...)"),
    ],
    ids=[
        "seed",
        "-seed",
        "render_mode",
        "flatten_obs",
        "compile",
        "max_cycles",
        "num_envs",
        "device",
    ],
)
def test_make_names_an_option_too_long_to_write(env_id, no_build, kwargs, allowed):
    """An option of ``make`` holding an int too long to write is refused naming the option,
    the value's size and the allowed values, before the build.

    Regression test: the checks wrote the value with ``repr`` or ``str``, which raised
    ``ValueError: Exceeds the limit (4300 digits) for integer string conversion``, naming
    nothing."""
    ((key, value),) = kwargs.items()
    size = "a negative int" if value < 0 else "an int"
    with pytest.raises(ValueError, match=re.escape(f"{key}=<{size} of 5001 digits>{allowed}")):
        recenv.make(env_id, **kwargs)
    assert not no_build


@pytest.mark.parametrize(
    "kwargs,allowed",
    [
        ({"num_envs": HUGE}, "num_envs=<an int of 5001 digits> must be a positive int"),
        # Writable, but past int64: none torch holds (was a bare OverflowError or, for the
        # device, torch's "Overflow when unpacking long long").
        ({"num_envs": 2**64}, "num_envs=18446744073709551616 must be a positive int"),
        ({"seed": HUGE}, "seed=<an int of 5001 digits> out of range"),
        ({"device": HUGE}, "device=<an int of 5001 digits> is not a torch device"),
        ({"device": 2**64}, "device=18446744073709551616 is not a torch device"),
        ({"compile": HUGE}, "compile=<an int of 5001 digits> must be a bool"),
    ],
    ids=["num_envs", "num_envs=2**64", "seed", "device", "device=2**64", "compile"],
)
def test_make_vec_names_an_argument_too_long_to_write(env_id, no_build, kwargs, allowed):
    """``make_vec`` refuses a ``num_envs``, ``seed``, ``device`` or ``compile`` too long to
    write (or past int64) by name, before the build."""
    with pytest.raises(ValueError, match=re.escape(allowed)):
        recenv.make_vec(env_id, **{"num_envs": 1, **kwargs})
    assert not no_build


def test_a_huge_seed_is_named_with_the_range_of_its_batch(no_build):
    """A seed too long to write gets the message of the core's range check (the range for the
    batch's ``num_envs``); a bad ``num_envs`` is still refused first, and a seed past int64
    that can be written is the core's to refuse, as before."""
    with pytest.raises(ValueError, match=r"seed=<an int of 5001 digits> out of .*2\*\*63 - 3\]"):
        recenv.make_vec(MARKET, num_envs=3, seed=HUGE)
    with pytest.raises(ValueError, match=r"seed=<a tuple that cannot be written> must be an int"):
        recenv.make_vec(MARKET, num_envs=3, seed=(HUGE,))
    with pytest.raises(ValueError, match=r"^num_envs=0 must be a positive int$"):
        recenv.make_vec(MARKET, num_envs=0, seed=HUGE)
    with pytest.raises(ValueError, match=r"seed=2361183241434822606848 out of range.*2\*\*63 - 3"):
        recenv.make_vec(MARKET, num_envs=3, seed=2**71)
    assert not no_build


@pytest.mark.parametrize("key", ["log", "log_format"])
def test_from_log_names_its_own_argument_too_long_to_write(key, tmp_path):
    """FromLog-v0's own arguments (not config fields): an int too long to write is named by
    the scenario's own check, with its size (its message could not write it). Nothing is
    read: the value is refused before the log is."""
    given = {"log": str(tmp_path / "absent.csv"), key: HUGE}
    for build in (recenv.make, lambda i, **k: recenv.make_vec(i, num_envs=1, **k)):
        with pytest.raises(ValueError, match=rf"^{key}=<an int of 5001 digits> must be "):
            build(FROM_LOG, **given)


def test_the_memory_refusal_writes_the_config_safely(monkeypatch):
    """The message for a market no memory holds is written only on that refusal, each value
    in short: a build that fails otherwise never formats it (it was written before every
    build, with values nothing had checked), and a long value does not flood it."""
    from recenv.core.config import MarketConfig

    def refuse(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 10**20 bytes")

    monkeypatch.setattr("recenv.scenarios.market.BatchedMarket", refuse)
    long_name = "z" * 500
    with pytest.raises(ValueError) as err:
        recenv.make_vec(MARKET, num_envs=2, ownership=long_name)
    assert "ownership=" in str(err.value)  # the config's own check ran first
    monkeypatch.setattr(MarketConfig, "from_kwargs", classmethod(lambda cls, base, **kw: base))
    with pytest.raises(ValueError, match=r"Market-v0: the market with \{'num_envs': 2, ") as err:
        recenv.make_vec(MARKET, num_envs=2, catalog_seed=HUGE, flavour=long_name)
    text = str(err.value)
    assert "'catalog_seed': <an int of 5001 digits>" in text and "does not fit in memory" in text
    assert "zzz...zzz" in text and len(text) < 400
