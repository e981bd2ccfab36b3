"""Bad input to ``recenv/FromLog-v0`` is refused before its log is read (or fitted): every
config value that can be checked without the log is, with the messages ``MarketConfig`` (or
``LogFitConfig``) gives, and so are ``log_format``, a log path that does not exist or is a
directory, and the batch arguments of a direct ``build`` call.

The ``no_log_read`` fixture replaces the log loader and the ALS fit with spies that fail the
test: an error that only appeared once the log was read shows up as that failure.

Regression tests: ``num_agents="4"``, ``horizon=-1``, ``slate_size=0``, ``reward_mode="x"``,
``log_format="parquet"``, ``from_log.build(num_envs=0)`` read the log
(ml-latest-small: ~100k rows) before refusing.
"""

from __future__ import annotations

import re

import pytest

import recenv
from recenv.core.config import InvalidConfig, MarketConfig
from recenv.data import FORMATS
from recenv.scenarios import from_log

ENV = "recenv/FromLog-v0"
READ = "the log was read"
SMALL = {"num_candidates": 10, "num_topics": 4, "embed_dim": 4, "horizon": 5}


class _Read(AssertionError):
    """Raised by the ``no_log_read`` spies: the log was read or fitted (a ValueError is not)."""


@pytest.fixture
def log(tmp_path) -> str:
    """A small generic CSV log written here: 6 users x 60 items, every pair once."""
    path = tmp_path / "log.csv"
    path.write_text("user,item\n" + "".join(f"{u},{i}\n" for u in range(6) for i in range(60)))
    return str(path)


@pytest.fixture
def no_log_read(monkeypatch):
    """``from_log.load_log`` and ``from_log.fit_log`` fail the test; the list records calls."""
    calls: list[str] = []

    def spy(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise _Read(f"{READ} ({name})")

        return fail

    monkeypatch.setattr(from_log, "load_log", spy("load_log"))
    monkeypatch.setattr(from_log, "fit_log", spy("fit_log"))
    return calls


FACES = {
    "make": lambda **kw: recenv.make(ENV, **kw),
    "make_vec": lambda **kw: recenv.make_vec(ENV, num_envs=2, **kw),
}


@pytest.mark.parametrize("face", list(FACES))
@pytest.mark.parametrize(
    "bad",
    [
        {"num_agents": "4"},
        {"num_agents": 0},
        {"horizon": -1},
        {"slate_size": 0},
        {"slate_size": 11},  # > num_candidates=10
        {"reward_mode": "x"},
        {"topology": 3},
        {"item_stats_size": 0},
        {"new_item_fraction": 1.5},
        {"max_item_topics": 5},  # > num_topics=4
        {"taste_weight": float("nan")},
    ],
    ids=repr,
)
def test_bad_market_values_are_refused_before_the_log_is_read(face, bad, log, no_log_read):
    """The message is MarketConfig's own for the same values."""
    with pytest.raises(InvalidConfig) as want:
        MarketConfig.from_kwargs(from_log.CONFIG, **{**SMALL, **bad})
    with pytest.raises(InvalidConfig) as got:
        FACES[face](log=log, **{**SMALL, **bad})
    assert str(got.value) == str(want.value)
    assert str(got.value).startswith("invalid MarketConfig: " + next(iter(bad)))
    assert not no_log_read


@pytest.mark.parametrize("face", list(FACES))
def test_values_no_log_can_satisfy_are_refused_before_the_log_is_read(face, log, no_log_read):
    """Every item arrives during the episode: no agent has a candidate at t=0, whatever the
    log's size. The market's message, and that the log was not needed to tell."""
    with pytest.raises(
        InvalidConfig,
        match=r"^invalid MarketConfig: each agent owns about \d+ items of which 0 exist at t=0, "
        r"fewer than num_candidates=10: .*takes num_items from the log.*no log satisfies this",
    ):
        FACES[face](log=log, new_item_fraction=1.0, **SMALL)
    assert not no_log_read


OTHER = [
    ({"log_format": "parquet"}, f"log_format='parquet' must be one of {list(FORMATS)}"),
    ({"log_format": 3}, f"log_format=3 must be one of {list(FORMATS)}"),
    ({"log_format": None}, f"log_format=None must be one of {list(FORMATS)}"),
    ({"als_iterations": 0}, "invalid LogFitConfig: als_iterations=0 must be > 0"),
    ({"als_backend": "spark"}, "invalid LogFitConfig: als_backend='spark' must be one of"),
    # Fitted to NaN factors, then failed in k-means' torch.multinomial naming no field.
    ({"als_alpha": 3e38}, "invalid LogFitConfig: als_alpha=3e+38 must be in [0, 1e+15]"),
    ({"num_items": 100}, f"{ENV} takes ['num_items'] from the log; do not pass them"),
    ({"als_factors": 8}, "unknown config key(s) ['als_factors'] for recenv/FromLog-v0"),
    ({"log": 5}, "log=5 must be a path or an InteractionLog"),
]


@pytest.mark.parametrize("face", list(FACES))
@pytest.mark.parametrize("kwargs,message", OTHER, ids=[repr(k) for k, _ in OTHER])
def test_other_bad_arguments_are_refused_before_the_log_is_read(
    face, kwargs, message, log, no_log_read
):
    with pytest.raises(ValueError, match=re.escape(message)):
        FACES[face](**{"log": log, **SMALL, **kwargs})
    assert not no_log_read


@pytest.mark.parametrize("face", list(FACES))
def test_a_log_that_is_missing_is_refused_before_reading(face, tmp_path, no_log_read):
    missing = str(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=re.escape(f"{missing}: cannot read the interaction log")):
        FACES[face](log=missing, **SMALL)
    assert not no_log_read


@pytest.mark.parametrize("face", list(FACES))
def test_a_directory_as_the_log_is_refused_by_the_loader_at_once(face, tmp_path, monkeypatch):
    """``load_log`` refuses a directory before it reads anything; the fit is never reached."""
    monkeypatch.setattr(from_log, "fit_log", lambda *a, **k: pytest.fail("the log was fitted"))
    folder = tmp_path / "ratings.csv"
    folder.mkdir()
    with pytest.raises(
        ValueError, match=re.escape(f"{folder}: is a directory, expected an interaction log file")
    ):
        FACES[face](log=str(folder), **SMALL)


BATCH = [
    ({"num_envs": 0}, "num_envs=0 must be a positive int"),
    ({"num_envs": 1, "seed": 1.5}, "seed=1.5 must be an int or None"),
    ({"num_envs": 1, "device": "bogus"}, "device='bogus' is not a torch device"),
]


@pytest.mark.parametrize("kwargs,message", BATCH, ids=[repr(k) for k, _ in BATCH])
def test_build_checks_its_batch_arguments_before_the_log_is_read(kwargs, message, log, no_log_read):
    """The builder called directly (``make``/``make_vec`` check these before calling it)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        from_log.build(log=log, **SMALL, **kwargs)
    assert not no_log_read


@pytest.mark.parametrize("face", list(FACES))
def test_valid_arguments_reach_the_log(face, log, no_log_read):
    """The early checks refuse nothing valid: values a log may still refuse (new items that
    leave fewer than C per agent at t=0 in a small catalog) pass them, and the log is read."""
    for kwargs in (
        SMALL,
        {**SMALL, "new_item_fraction": 0.9, "log_format": "csv", "item_stats_size": 7},
        {**SMALL, "num_agents": 5, "als_iterations": 3},
    ):
        with pytest.raises(_Read):
            FACES[face](log=log, **kwargs)
    assert no_log_read == ["load_log"] * 3


def test_a_value_only_the_log_refuses_is_refused_with_the_logs_sizes(log, monkeypatch):
    """60 items, 2 agents, 90 % arriving later: 3 per agent at t=0, fewer than C = 10. The
    log decides that, and the message gives its sizes (the log is read, not fitted)."""

    def fit_log(*args, **kwargs):
        raise _Read(f"{READ} (fit_log)")

    monkeypatch.setattr(from_log, "fit_log", fit_log)
    with pytest.raises(
        InvalidConfig,
        match=re.escape(
            "invalid MarketConfig: each agent owns about 30 items of which 3 exist at t=0, "
            "fewer than num_candidates=10: raise num_items or lower new_item_fraction"
        )
        + "$",
    ):
        recenv.make(ENV, log=log, new_item_fraction=0.9, **SMALL)


def test_valid_input_builds_as_before(log):
    """A small market of the temporary log on both faces: the log's sizes, the keys given."""
    env = recenv.make_vec(ENV, num_envs=2, seed=0, log=log, **SMALL)
    assert (env.config.num_users, env.config.num_items, env.config.item_stats_size) == (6, 60, 60)
    assert (env.config.num_candidates, env.config.horizon) == (10, 5)
    one = recenv.make(ENV, seed=0, log=log, **SMALL)
    obs, _ = one.reset(seed=0)
    assert sorted(obs) == ["agent_0", "agent_1"] and one.core.config == env.config
