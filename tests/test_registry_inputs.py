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
