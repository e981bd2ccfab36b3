"""Interaction-log loaders (real MovieLens file when present, malformed inputs always), time
splits, and the implicit ALS fit."""

from __future__ import annotations

import csv
import gc
import os
import re
import time

import numpy as np
import pytest
import torch

from recenv.data import (
    InteractionLog,
    LogFormatError,
    load_csv,
    load_lastfm,
    load_log,
    load_movielens,
    load_movielens_1m,
    load_movielens_100k,
)
from recenv.data import logs as logs_module
from recenv.data import mf as mf_module
from recenv.data.compare import distinct_pairs, gini, js_distance, spearman, top_share
from recenv.data.fit import LogFitConfig, fit_log
from recenv.data.mf import fit_als

from .conftest import ML_SMALL, needs_ml_small


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------------------------
# The real file
# --------------------------------------------------------------------------------------------
@needs_ml_small
def test_movielens_latest_small_counts():
    log = load_log(ML_SMALL)
    assert log.format == "movielens"
    assert (len(log), log.num_users, log.num_items) == (100_836, 610, 9_724)
    assert log.rating_kind == "explicit" and log.timestamp is not None
    assert log.rating.min() == 0.5 and log.rating.max() == 5.0
    assert log.user_ids[0] == 1 and log.user_ids[-1] == 610
    # Contiguous ids in the order of the original ids; the first row is user 1, movie 1.
    assert log.user[0] == 0 and log.item_ids[log.item[0]] == 1
    assert log.density == pytest.approx(100_836 / (610 * 9_724))
    assert log.user_counts().min() >= 20  # "All selected users had rated at least 20 movies"
    # The generic loader reads the same file the same way.
    generic = load_csv(ML_SMALL)
    assert np.array_equal(generic.user, log.user) and np.array_equal(generic.item, log.item)
    assert np.array_equal(generic.rating, log.rating)


@needs_ml_small
def test_time_splits_of_movielens():
    log = load_movielens(ML_SMALL)
    train, test = log.time_split(0.2, by="global")
    assert len(train) + len(test) == len(log) and len(test) == pytest.approx(0.2 * len(log), abs=1)
    assert train.timestamp.max() <= test.timestamp.min()
    train, test = log.time_split(0.2, by="user")
    assert len(train) + len(test) == len(log)
    last_train = np.full(log.num_users, -np.inf)
    np.maximum.at(last_train, train.user, train.timestamp)
    assert bool((test.timestamp >= last_train[test.user]).all())
    assert set(test.user.tolist()) == set(range(log.num_users))  # every user has >= 20
    compact = train.compact()
    assert compact.num_users == 610 and compact.num_items == np.unique(train.item).size
    assert np.array_equal(compact.item_ids[compact.item], log.item_ids[train.item])


def one_user_log(n: int) -> InteractionLog:
    return InteractionLog(
        user=np.zeros(n, dtype=np.int64),
        item=np.arange(n),
        rating=None,
        timestamp=np.arange(n, dtype=np.float64),
        user_ids=np.arange(1),
        item_ids=np.arange(n),
    )


def test_global_time_split_leaves_no_half_empty():
    # round(3 * 0.9) = 3 train rows left the test half empty (and 0.9 of 3 the train half).
    for fraction, sizes in ((0.1, (2, 1)), (0.9, (1, 2)), (0.5, (2, 1))):
        train, test = one_user_log(3).time_split(fraction)
        assert (len(train), len(test)) == sizes, fraction
        assert train.timestamp.max() <= test.timestamp.min()
    assert [len(h) for h in one_user_log(100).time_split(0.2)] == [80, 20]
    with pytest.raises(ValueError, match="needs at least 2 interactions, the log has 1"):
        one_user_log(1).time_split(0.5)


def test_user_time_split_counts():
    # ceil(0.07 * 100) is 7, though 0.07 * 100 == 7.000000000000001 (it gave 8).
    assert len(one_user_log(100).time_split(0.07, by="user")[1]) == 7
    # Both halves keep every user with two interactions (ceil(0.6 * 2) = 2 left train empty).
    train, test = one_user_log(2).time_split(0.6, by="user")
    assert (len(train), len(test)) == (1, 1) and test.item.tolist() == [1]


# --------------------------------------------------------------------------------------------
# Small well-formed files of every format
# --------------------------------------------------------------------------------------------
def test_formats_parse(tmp_path):
    ml = load_log(write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                        "7,30,4.5,100\n7,10,3.0,90\n\n2,30,0.5,120\n"))  # fmt: skip
    assert (len(ml), ml.num_users, ml.num_items) == (3, 2, 2)
    assert ml.user_ids.tolist() == [2, 7] and ml.item_ids.tolist() == [10, 30]
    assert ml.user.tolist() == [1, 1, 0] and ml.item.tolist() == [1, 0, 1]
    assert ml.timestamp.tolist() == [100, 90, 120]

    k100 = load_log(write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"))
    assert k100.format == "movielens-100k" and len(k100) == 2
    m1 = load_log(write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"))
    assert m1.format == "movielens-1m" and m1.item_ids.tolist() == [661, 1193]

    fm = load_log(write(tmp_path, "user_artists.dat", "userID\tartistID\tweight\n2\t51\t13883\n"
                        "2\t52\t11690\n3\t51\t228\n"))  # fmt: skip
    assert fm.format == "lastfm" and fm.rating_kind == "count" and fm.timestamp is None
    assert fm.rating.tolist() == [13883, 11690, 228]

    named = load_csv(write(tmp_path, "any.csv", "ts,item_id,user_id,plays\n"
                           "2024-01-02T10:00:00,b,alice,3\n2024-01-01,a,bob,1\n"))  # fmt: skip
    assert named.user_ids.tolist() == ["alice", "bob"] and named.item_ids.tolist() == ["a", "b"]
    assert named.rating_kind == "count" and named.timestamp[0] > named.timestamp[1]
    bare = load_csv(write(tmp_path, "pairs.tsv", "u1\ti9\nu2\ti9\nu1\ti8\nu1\ti9\n"))
    assert bare.rating is None and bare.timestamp is None and len(bare) == 4
    assert bare.density == pytest.approx(3 / 4)  # a repeated pair counts once
    semi = load_log(write(tmp_path, "log.txt", "1;5;2.5\n2;5;4\n"), "csv")
    assert semi.rating_kind == "explicit" and semi.rating.tolist() == [2.5, 4.0]


# --------------------------------------------------------------------------------------------
# Malformed files: the error names the file, the line and what was expected
# --------------------------------------------------------------------------------------------
HEADER = "userId,movieId,rating,timestamp\n"
MALFORMED = [
    ("ratings.csv", HEADER + "1,1,4.0,964982703\n1,3,4.0\n", 3, "expected 4 fields"),
    ("ratings.csv", HEADER + "1,x,4.0,964982703\n", 2, "movieId 'x' is not an integer"),
    ("ratings.csv", HEADER + "1,2,five,964982703\n", 2, "rating 'five' is not a number"),
    ("ratings.csv", HEADER + "1,2,nan,964982703\n", 2, "not a finite number"),
    ("ratings.csv", HEADER + "1,2,7.5,964982703\n", 2, "outside the movielens range [0.5, 5]"),
    ("ratings.csv", HEADER + "1,2,4,-5\n", 2, "timestamp -5 is negative"),
    ("ratings.csv", "user,movie,stars,time\n1,2,4,5\n", 1, "expected the movielens header"),
    ("u.data", "196\t242\t3\t881250949\n186 302 3 891717742\n", 2, "expected 4 fields"),
    ("u.data", "196\t242\t0\t881250949\n", 1, "outside the movielens-100k range [1, 5]"),
    ("ratings.dat", "1::1193::5::978300760\n1::661::3\n", 2, "expected 4 fields"),
    ("user_artists.dat", "userID\tartistID\tweight\n2\t51\t-3\n", 2, "outside the lastfm range"),
    ("user_artists.dat", "userID\tartistID\tweight\n2\t51\n", 2, "expected 3 fields"),
    ("log.csv", "user,item,rating\na,b,1\na,b\n", 3, "expected 3 fields"),
    ("log.csv", "a,b,1,100\nc,d,2,x\n", 2, "timestamp 'x' is neither a number nor an ISO"),
    ("log.csv", "a,b,1,2,3\n", 1, "expected 2 to 4 fields"),
    ("log.csv", "a,,1\n", 1, "empty user or item id"),
    ("log.csv", "name,score\nx,1\n", 1, "names no user and no item column"),
    ("log.csv", "just-one-field\n", 1, "cannot tell the delimiter"),
    # int() alone overflowed (a bare OverflowError) or read "1_0" as 10 and "٣" as 3.
    ("ratings.csv", HEADER + "99999999999999999999,1,4,5\n", 2, "outside the int64 range"),
    ("ratings.csv", HEADER + "1_0,1,4,5\n", 2, "userId '1_0' is not an integer"),
    ("ratings.csv", HEADER + "\u0663,1,4,5\n", 2, "is not an integer"),
    ("ratings.csv", HEADER + "1,1,4_0,5\n", 2, "rating '4_0' is not a number"),
    # An event recorded twice (a corrupt or concatenated file) was silently counted twice.
    ("ratings.csv", HEADER + "1,1,4,5\n2,1,4,5\n1,1,3,5\n", 4, "repeats line 2"),
    ("user_artists.dat", "userID\tartistID\tweight\n1\t1\t4\n1\t1\t4\n", 3, "repeats line 2"),
    # Negative ids in the formats that number users and items from 1 were read silently.
    ("ratings.csv", HEADER + "-5,1,4,5\n", 2, "userId -5 is negative; movielens ids are"),
    ("ratings.csv", HEADER + "1,1,4,5\n1,-2,4,5\n", 3, "movieId -2 is negative"),
    ("u.data", "196\t242\t3\t5\n-196\t242\t3\t5\n", 2, "user -196 is negative"),
    ("u.data", "196\t-242\t3\t5\n", 1, "item -242 is negative; movielens-100k ids are"),
    ("ratings.dat", "1::1193::5::1\n-1::661::3::2\n", 2, "user -1 is negative; movielens-1m"),
    ("ratings.dat", "1::-661::3::2\n", 1, "item -661 is negative"),
    ("user_artists.dat", "userID\tartistID\tweight\n-2\t51\t1\n", 2, "userID -2 is negative"),
    ("user_artists.dat", "userID\tartistID\tweight\n2\t-51\t1\n", 2, "artistID -51 is negative"),
    # A rating of 1e308 overflowed the fit's mean: every quality, observation and reward NaN.
    ("log.csv", "user,item,rating\n1,2,3\n1,3,1e308\n", 3, "rating 1e+308 is outside [-1e+30"),
    ("log.csv", "user,item,score\n1,2,-1e31\n", 2, "score -1e+31 is outside [-1e+30, 1e+30]"),
    ("user_artists.dat", "userID\tartistID\tweight\n2\t5\t1e31\n", 2, "outside the lastfm range"),
    # A negative count weight was reported at the file (line 0), not its line.
    ("log.csv", "user,item,plays\n1,2,3\n1,3,-2\n", 3, "plays -2 is negative; count weights"),
    # An unclosed quote would swallow the rows after it into one field.
    ("log.csv", 'user,item\n1,2\n3,"x\n4,5\n6,7\n', 3, "a quoted field runs on to line 5"),
    ("log.csv", 'user,item\n1,2\n3,"x\n4,"5\n6,7\n', 3, "a quoted field runs on to line 4"),
]
# An unclosed quote on the last line: csv (not strict) read to the end of the file inside the
# field and handed it out as if closed, so '3,"x' was read as user 3, item x, silently.
UNCLOSED = "a quoted field has no closing quote (an unclosed quote runs on to the end of the file)"
MALFORMED += [
    pytest.param("log.csv", 'user,item\n1,2\n3,"x\n', 3, UNCLOSED, id="last-line"),
    pytest.param("log.csv", 'user,item\n1,2\n3,"x', 3, UNCLOSED, id="last-line-no-newline"),
    pytest.param("log.csv", 'user,item\n1,2\n"3,x\n', 3, UNCLOSED, id="last-line-first-field"),
    pytest.param("log.csv", 'user,item\n1,2\n\n"\n', 4, UNCLOSED, id="last-line-a-quote"),
    pytest.param("log.tsv", 'user\titem\tplays\n1\t2\t"3\n', 2, UNCLOSED, id="last-line-tab"),
    pytest.param("log.csv", '1,"2', 1, UNCLOSED, id="only-line"),
    pytest.param("log.csv", '"user,item\n', 1, UNCLOSED, id="only-a-header"),
]


@pytest.mark.parametrize(("name", "text", "line", "message"), MALFORMED)
def test_malformed_rows_name_their_line(tmp_path, name, text, line, message):
    path = write(tmp_path, name, text)
    with pytest.raises(LogFormatError) as err:
        load_log(path)
    assert err.value.line == line and err.value.path == path
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_negative_ids_are_kept_by_the_generic_csv_and_zero_by_every_format(tmp_path):
    # A generic CSV maps any ids to indices: a negative integer is an id like another.
    neg = load_csv(write(tmp_path, "neg.csv", "user,item\n-5,-1\n3,-1\n"))
    assert neg.user_ids.tolist() == [-5, 3] and neg.item_ids.tolist() == [-1]
    same = load_log(write(tmp_path, "ratings.csv", HEADER + "-5,1,4,5\n"), "csv")
    assert same.user_ids.tolist() == [-5]
    # Files re-indexed from 0 still read in the fixed formats.
    zero = load_movielens(write(tmp_path, "zero.csv", HEADER + "0,0,4,5\n"))
    assert zero.user_ids.tolist() == [0] and zero.item_ids.tolist() == [0]
    assert load_movielens_1m(write(tmp_path, "zero.dat", "0::0::3::2\n")).num_items == 1
    lastfm = load_lastfm(write(tmp_path, "zero.txt", "userID\tartistID\tweight\n0\t0\t1\n"))
    assert lastfm.user_ids.tolist() == [0]


def good_rows(n: int, sep: str = ",") -> str:
    return "".join(f"{u}{sep}1{sep}4{sep}{u}\n" for u in range(1, n + 1))


# Reads that stop before the end of the file: an error on a late row (raised by the loader
# between rows, or by the reader itself), on the header, or on the first row.
STOPPED_EARLY = [
    pytest.param(
        "ratings.csv", HEADER + good_rows(200) + "1,x,4,5\n" + good_rows(50), id="movielens"
    ),
    pytest.param("ratings.csv", "user,movie,stars,time\n" + good_rows(50), id="header"),
    pytest.param(
        "u.data", good_rows(200, "\t") + "1\t2\t3\n" + good_rows(50, "\t"), id="movielens-100k"
    ),
    pytest.param(
        "ratings.dat", good_rows(200, "::") + "1::2::9::4\n" + good_rows(50, "::"), id="ml-1m"
    ),
    pytest.param("user_artists.dat", "userID\tartistID\tweight\n1\t2\t-1\n2\t2\t1\n", id="lastfm"),
    pytest.param(
        "log.csv",
        "user,item,rating,time\n" + good_rows(200) + "1,2,3,soon\n" + good_rows(50),
        id="csv",
    ),
    pytest.param("log.csv", "a,b,1,2,3\n" + good_rows(50), id="csv-first-row"),
    # Raised inside the reader, which closed the file already: kept as a guard.
    pytest.param("log.csv", good_rows(200) + "\udce9t\udce9,1\n" + good_rows(50), id="not-utf8"),
]


@pytest.mark.parametrize(("name", "text"), STOPPED_EARLY)
def test_a_read_stopped_by_an_error_closes_the_file_at_once(tmp_path, monkeypatch, name, text):
    """A loader that raised between rows left the reader's generator suspended mid-file, so
    the file stayed open until the garbage collector broke the reader's reference cycle (a
    ResourceWarning; a locked file on Windows)."""
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))  # the last case: not UTF-8
    opened = []

    def tracked_open(*args, **kwargs):
        f = open(*args, **kwargs)
        opened.append(f)
        return f

    monkeypatch.setattr(logs_module, "open", tracked_open, raising=False)
    enabled = gc.isenabled()
    gc.disable()  # a collection between the error and the check would close it anyway
    try:
        with pytest.raises(LogFormatError):
            load_log(str(path))
        assert len(opened) == 1 and opened[0].closed
    finally:
        if enabled:
            gc.enable()


def test_rows_close_however_reading_stops(tmp_path):
    path = write(tmp_path, "r.csv", good_rows(3))
    with logs_module._rows(path, ",") as rows:  # never iterated
        pass
    assert rows._file.closed
    with pytest.raises(KeyError), logs_module._rows(path, None) as rows:
        assert next(rows) == (1, ["1", "1", "4", "1"]) and rows.sep == ","
        raise KeyError("the caller's own error")
    assert rows._file.closed
    assert list(rows) == []  # closed: no more rows
    rows.close()  # again: nothing to do
    rows = logs_module._rows(path, ",")
    assert [n for n, _ in rows] == [1, 2, 3] and rows._file.closed  # read to the end


def test_unreadable_and_empty_files(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=re.escape(f"{missing}: cannot read the interaction log")):
        load_log(missing)
    with pytest.raises(ValueError, match="is a directory"):
        load_log(str(tmp_path))
    with pytest.raises(ValueError, match="no interactions"):
        load_log(write(tmp_path, "empty.csv", "\n\n"))
    with pytest.raises(ValueError, match="only a header"):
        load_csv(write(tmp_path, "header.csv", "user,item\n"))
    with pytest.raises(ValueError, match="no interactions"):
        load_movielens(write(tmp_path, "ratings.csv", HEADER))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"a,b\n\xe9t\xe9,c\n")
    with pytest.raises(LogFormatError, match=r"latin1.csv:2: not UTF-8 text"):
        load_csv(str(bad))
    with pytest.raises(ValueError, match="known formats"):
        load_log(missing, "parquet")
    with pytest.raises(ValueError, match="apply to format='csv' only"):
        load_log(missing, "movielens", delimiter=",")


def test_ids_and_headers_of_generic_csv(tmp_path):
    # A pair may repeat with another timestamp (repeat consumption): not an error.
    assert len(load_log(write(tmp_path, "ratings.csv", HEADER + "1,1,4,5\n1,1,4,6\n"))) == 2
    # "007" and "7" (or "1_0" and "10") are different ids: they were merged into one int id.
    assert load_csv(write(tmp_path, "a.csv", "user,item\n007,1\n7,1\n")).num_users == 2
    assert load_csv(write(tmp_path, "b.csv", "user,item\n1_0,1\n10,1\n")).num_users == 2
    # Ids beyond int64 stay strings (they raised OverflowError).
    big = load_csv(write(tmp_path, "c.csv", "user,item\n99999999999999999999,1\n"))
    assert big.user_ids.tolist() == ["99999999999999999999"]
    # A quoted header is a header (it was read as an interaction of user "user").
    quoted = load_csv(write(tmp_path, "d.csv", '"user","item"\n1,2\n'))
    assert len(quoted) == 1 and quoted.user_ids.tolist() == [1]
    with pytest.raises(ValueError, match="delimiter='' must be a non-empty string"):
        load_csv(write(tmp_path, "e.csv", "a,b\n"), delimiter="")
    with pytest.raises(ValueError, match="header='yes' must be True, False or None"):
        load_csv(write(tmp_path, "e.csv", "a,b\n"), header="yes")


@pytest.fixture
def new_york_time(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_dates_are_utc_whatever_the_local_time_zone(tmp_path, new_york_time):
    log = load_csv(write(tmp_path, "t.csv", "user,item,time\na,x,2024-01-01T00:00:00\n"
                         "b,y,2024-01-01T01:00:00+02:00\n"))  # fmt: skip
    assert log.timestamp.tolist() == [1704067200.0, 1704067200.0 - 3600.0]


def test_quoted_fields_of_a_generic_csv_follow_rfc_4180(tmp_path):
    """Quotes came off ids and the header only: a quoted rating or timestamp (csv.writer's
    QUOTE_NONNUMERIC, QUOTE_ALL) was "not a number", and a quoted id holding the delimiter
    was split in two."""
    path = tmp_path / "q.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["user", "item", "rating", "timestamp"])
        w.writerow(["u1", "i1", 4.0, "2020-01-01T00:00:00"])
        w.writerow(["Smith, J.", 'the "best" one', 2.5, "2020-01-02T00:00:00"])
    log = load_csv(str(path))
    assert log.user_ids.tolist() == ["Smith, J.", "u1"]
    assert log.item_ids.tolist() == ["i1", 'the "best" one']
    assert log.rating.tolist() == [4.0, 2.5]
    assert log.timestamp.tolist() == [1577836800.0, 1577923200.0]
    every = load_csv(write(tmp_path, "all.tsv", '"user"\t"item"\t"plays"\n"a\tb"\t"c"\t"3"\n'))
    assert every.user_ids.tolist() == ["a\tb"] and every.rating.tolist() == [3.0]
    assert every.rating_kind == "count"
    # Read with a check for a quoted field the end of the file cuts: a closed one on the last
    # line is not that, nor a quote inside an unquoted field.
    last = load_csv(write(tmp_path, "last.csv", 'user,item\n"a,b","x""y"\n"c","d,e"'))
    assert last.user_ids.tolist() == ["a,b", "c"] and last.item_ids.tolist() == ["d,e", 'x"y']
    inner = load_csv(write(tmp_path, "inner.csv", 'user,item\n1,x"y\n'))
    assert inner.item_ids.tolist() == ['x"y']
    # "::" (csv takes one-character delimiters only) is split as is, its quotes dropped.
    colons = load_csv(write(tmp_path, "c.txt", '"1"::"x"::"4.5"::"7"\n'))
    assert colons.user_ids.tolist() == [1] and colons.rating.tolist() == [4.5]
    assert colons.timestamp.tolist() == [7.0]


def test_interaction_log_rejects_bad_values():
    """An in-memory log took a NaN rating (every fitted quality, observation and reward NaN),
    a NaN timestamp (its item became the newest), ratings whose mean overflows, 2-D arrays
    (failing later in make), string ratings (numpy's UFuncTypeError) and refused a list."""
    ids = {"user_ids": np.arange(3), "item_ids": np.arange(3)}
    pairs = {"user": np.array([0, 1, 2]), "item": np.array([2, 1, 0])}

    def make(**kw):
        kw = {**pairs, "rating": None, "timestamp": None, **ids, **kw}
        if kw["rating"] is not None:
            kw.setdefault("rating_kind", "explicit")
        return InteractionLog(**kw)

    bad = [
        ({"rating": [1.0, np.nan, 3.0]}, "rating values must be finite, in [-1e+30, 1e+30]; "
         "interaction 1 has nan"),
        ({"rating": [1.0, 2.0, 1e308]}, "rating values must be finite, in [-1e+30, 1e+30]; "
         "interaction 2 has 1e+308"),
        ({"rating": [-np.inf, 2.0, 1.0]}, "rating values must be finite, in [-1e+30, 1e+30]; "
         "interaction 0 has -inf"),
        ({"timestamp": [1.0, 2.0, np.nan]}, "timestamp values must be finite; interaction 2 "
         "has nan"),
        ({"rating": np.array(["1", "2", "3"])}, "rating must be a real number array, got <U1"),
        ({"rating": [True, False, True]}, "rating must be a real number array, got bool"),
        ({"user": np.zeros((3, 1), dtype=int)}, "user must be 1-D (one entry per interaction), "
         "got shape (3, 1)"),
        ({"item_ids": np.arange(4).reshape(2, 2)}, "item_ids must be 1-D (one entry per id)"),
    ]  # fmt: skip
    for kw, message in bad:
        with pytest.raises(ValueError, match=re.escape(f"InteractionLog.{message}")):
            make(**kw)
    # Array-likes are taken as arrays, in the documented dtypes.
    log = make(user=[0, 1, 2], item=(2, 1, 0), rating=[1, 5, 3], timestamp=[3, 2, 1])
    assert log.user.dtype == np.int64 and log.rating.dtype == np.float64
    assert log.timestamp.tolist() == [3.0, 2.0, 1.0] and len(log.compact()) == 3
    assert len(make(user=[], item=[])) == 0


def test_interaction_log_rejects_bad_ids():
    kw = {"rating": None, "timestamp": None, "user_ids": np.arange(1), "item_ids": np.arange(1)}
    with pytest.raises(ValueError, match=r"InteractionLog\.user has negative ids"):
        InteractionLog(user=np.array([-1]), item=np.array([0]), **kw)
    with pytest.raises(ValueError, match=r"InteractionLog\.item must be an integer array"):
        InteractionLog(user=np.array([0]), item=np.array([0.5]), **kw)


def test_direct_loaders_ignore_the_file_name(tmp_path):
    p = write(tmp_path, "a.txt", "1\t2\t3\t4\n")
    assert load_movielens_100k(p).format == "movielens-100k"
    assert load_movielens_1m(write(tmp_path, "b.txt", "1::2::3::4\n")).num_items == 1
    assert (
        load_lastfm(write(tmp_path, "c.txt", "userID\tartistID\tweight\n1\t2\t3\n")).num_users == 1
    )


# --------------------------------------------------------------------------------------------
# Implicit ALS
# --------------------------------------------------------------------------------------------
def block_log(num_users=60, num_items=90, blocks=3, per_user=12, seed=0) -> InteractionLog:
    """Users of block b interact only with items of block b."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    size = num_items // blocks
    for u in range(num_users):
        b = u % blocks
        for i in rng.choice(size, per_user, replace=False):
            users.append(u)
            items.append(b * size + i)
    return InteractionLog(
        user=np.array(users),
        item=np.array(items),
        rating=None,
        timestamp=np.arange(len(users), dtype=np.float64),
        user_ids=np.arange(num_users),
        item_ids=np.arange(num_items),
    )


def test_als_recovers_blocks():
    log = block_log()
    mf = fit_als(log, factors=4, regularization=0.1, alpha=5.0, iterations=10)
    s = mf.scores()
    same = torch.tensor([[u % 3 == i // 30 for i in range(90)] for u in range(60)])
    assert float(s[same].mean()) > 0.3 > 5 * abs(float(s[~same].mean()))
    top = mf.recommend(exclude=log, k=5)
    assert bool((top // 30 == (torch.arange(60) % 3)[:, None]).all())
    seen = set(zip(log.user.tolist(), log.item.tolist(), strict=True))
    assert not any((u, int(i)) in seen for u in range(60) for i in top[u])
    again = fit_als(log, factors=4, regularization=0.1, alpha=5.0, iterations=10)
    assert torch.equal(mf.item_factors, again.item_factors)  # seeded: reproducible
    longer = fit_als(log, factors=4, regularization=0.1, alpha=5.0, iterations=20)
    assert longer.loss <= mf.loss + 1e-9


def test_als_rejects_bad_parameters():
    log = block_log()
    for kw in ({"regularization": float("inf")}, {"alpha": float("nan")}, {"seed": "a"}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))}=.* must be"):
            fit_als(log, factors=2, iterations=1, **kw)  # inf gave a NaN loss; "a" a torch error
    mf = fit_als(log, factors=2, iterations=1)
    with pytest.raises(ValueError, match=r"k=91 must be an int in \[1, 90\]"):
        mf.recommend(k=91)  # was torch's "selected index k out of range"
    with pytest.raises(ValueError, match="fitted log's id space"):
        mf.recommend(exclude=log.select(log.user < 3).compact())
    with pytest.raises(ValueError, match="backend"):
        fit_als(log, backend="spark")
    with pytest.raises(ValueError, match="factors"):
        fit_als(log, factors=0)
    with pytest.raises(ValueError, match="needs ratings"):
        fit_als(log, confidence="log")


def test_als_refuses_confidences_it_cannot_fit(monkeypatch):
    """alpha=3e38 (or a weight of 1e20 with confidence="linear") fitted NaN factors silently,
    and FromLog then failed in k-means' torch.multinomial ("probability tensor contains
    either inf, nan") naming no field."""
    log = block_log()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "alpha=3e+38 (FromLog's als_alpha) times the largest pair weight 1 "
            "(confidence='auto') gives a confidence 1 + alpha * w of 3e+38, above 1e+15"
        ),
    ):
        fit_als(log, factors=4, alpha=3e38, regularization=0.0)
    weights = np.ones(len(log))
    weights[7] = 1e20
    counts = InteractionLog(**{**vars(log), "rating": weights, "rating_kind": "count"})
    with pytest.raises(ValueError, match=r"largest pair weight 1e\+20 \(confidence='linear'\)"):
        fit_als(counts, factors=4, confidence="linear")
    assert np.isfinite(fit_als(counts, factors=4, iterations=2).loss)  # log1p(1e20) is 46
    with pytest.raises(ValueError, match=re.escape("als_alpha=3e+38 must be in [0, 1e+15]")):
        LogFitConfig(als_alpha=3e38)  # FromLog refuses it before reading the log

    # Whatever else makes the solver diverge is named, not handed on as NaN factors.
    def diverged(users, items, conf, U, I, D, *rest):
        return torch.full((U, D), torch.nan), torch.full((I, D), torch.nan)

    monkeypatch.setattr(mf_module, "_fit_torch", diverged)
    with pytest.raises(ValueError, match=r"ALS diverged .* alpha=5, regularization=0"):
        fit_als(log, factors=4, alpha=5.0, regularization=0.0)


def test_fit_log_interests_always_sum_to_one():
    """Users whose weights are all 0 (play counts of 0) or who have no interactions got an
    all-zero interest row; the arrays' contract is rows summing to 1."""
    log = InteractionLog(
        user=np.array([0, 0, 1, 1, 2, 2]),
        item=np.array([0, 1, 1, 2, 3, 0]),
        rating=np.array([3.0, 5.0, 2.0, 1.0, 0.0, 0.0]),
        timestamp=None,
        user_ids=np.arange(4),  # user 3 has no interactions
        item_ids=np.arange(4),
        rating_kind="count",
    )
    fit = fit_log(log, num_topics=2, embed_dim=2, max_item_topics=2)
    assert torch.allclose(fit.interest.sum(1), torch.ones(4))
    assert torch.allclose(fit.interest[2], (fit.topics[3] + fit.topics[0]) / 2)
    assert torch.allclose(fit.interest[3], torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="num_topics=0 must be an int >= 1"):
        fit_log(log, num_topics=0, embed_dim=2)  # was an IndexError


def test_log_fit_config_checks_types():
    for kw, msg in (
        ({"fit_seed": 1.5}, "fit_seed=1.5 must be an int"),  # was a torch error at fit time
        ({"fit_seed": -1}, "fit_seed=-1 must be >= 0"),
        ({"als_alpha": True}, "als_alpha=True must be a number"),
    ):
        with pytest.raises(ValueError, match=msg):
            LogFitConfig(**kw)


@needs_ml_small
def test_torch_als_matches_the_implicit_library():
    """Same objective, same algorithm family: the built-in solver reaches the training loss of
    the `implicit` library within 2 % on ml-latest-small."""
    pytest.importorskip("implicit")
    log = load_movielens(ML_SMALL)
    kw = {"factors": 16, "regularization": 10.0, "alpha": 5.0, "iterations": 15}
    ours, theirs = fit_als(log, **kw), fit_als(log, backend="implicit", **kw)
    assert ours.backend == "torch" and theirs.backend == "implicit"
    assert ours.loss <= 1.02 * theirs.loss, (ours.loss, theirs.loss)
    # And they agree on what to recommend: top-10 overlap well above chance (10/9724).
    a, b = ours.recommend(exclude=log), theirs.recommend(exclude=log)
    overlap = np.mean(
        [len(set(x.tolist()) & set(y.tolist())) / 10 for x, y in zip(a, b, strict=True)]
    )
    assert overlap > 0.3, overlap


# --------------------------------------------------------------------------------------------
# Comparison measures
# --------------------------------------------------------------------------------------------
def test_comparison_measures():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.r_[np.zeros(99), 1.0]) == pytest.approx(0.99)
    assert top_share(np.r_[np.ones(90), 10 * np.ones(10)]) == pytest.approx(100 / 190)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-9)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 1, 2], [3, 3, 1]) == pytest.approx(-1.0)
    per_item, per_user = distinct_pairs(np.array([0, 0, 1]), np.array([2, 2, 2]), 2, 3)
    assert per_item.tolist() == [0, 0, 2] and per_user.tolist() == [1, 1]
    # Hand-computed: Gini of 1..4 is 20 / (2 * 16 * 2.5); JS of (1, 0) and (1/2, 1/2).
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)
    m = np.array([0.75, 0.25])
    kl_p, kl_q = np.log2(1 / 0.75), 0.5 * np.log2(0.5 / m[0]) + 0.5 * np.log2(0.5 / m[1])
    assert js_distance([1, 0], [1, 1]) == pytest.approx(np.sqrt(0.5 * kl_p + 0.5 * kl_q))
    # The top 7 of 100 (0.07 * 100 == 7.000000000000001 took the top 8).
    assert top_share(np.ones(100), 0.07) == pytest.approx(0.07)
    with pytest.raises(ValueError, match=r"fraction=nan must be in \(0, 1\]"):
        top_share(np.ones(3), float("nan"))
    with pytest.raises(ValueError, match="one length"):
        js_distance([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2], [1, 2, 3])


BAD_MEASURES = [
    # NaN, negative, 2-D and out-of-range input gave plausible numbers.
    (lambda: js_distance([np.nan, 2], [1, 0]), "js_distance: p must hold finite counts >= 0; "
     "p[0] is nan"),  # was 0.0
    (lambda: js_distance([1, 0], [1, -1]), "js_distance: q must hold finite counts >= 0; "
     "q[1] is -1.0"),
    (lambda: top_share([-5, 1, 1], 0.34), "top_share: x must hold finite counts >= 0; "
     "x[0] is -5.0"),  # was 2e12
    (lambda: gini([-5, 1, 1]), "gini: x must hold finite counts >= 0; x[0] is -5.0"),  # was 0
    (lambda: gini(np.ones((2, 2))), "gini: x must be a 1-D vector of finite counts >= 0, "
     "got shape (2, 2)"),
    (lambda: gini([np.inf, 1]), "gini: x must hold finite counts >= 0; x[0] is inf"),
    (lambda: spearman([np.nan, 1, 2], [1, 2, 3]), "spearman: a must hold finite numbers; "
     "a[0] is nan"),  # was -0.5
    (lambda: distinct_pairs([0, 1], [0, 5], 2, 3), "distinct_pairs: items must be ids in "
     "[0, 3); items[1] is 5"),  # was folded into the pair (1, 2)
    (lambda: distinct_pairs([0, 2], [0, 1], 2, 3), "distinct_pairs: users must be ids in "
     "[0, 2); users[1] is 2"),
    (lambda: distinct_pairs([0.0], [1], 2, 3), "distinct_pairs: users must be a 1-D integer "
     "vector"),
    (lambda: distinct_pairs([0, 1], [1], 2, 3), "distinct_pairs: users and items must be of "
     "one length"),
    (lambda: distinct_pairs([0], [1], 2, 2.5), "distinct_pairs: num_items=2.5 must be an int"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "message"), BAD_MEASURES)
def test_comparison_measures_refuse_bad_input(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_comparison_measures_take_any_vector_of_counts():
    assert spearman([-1.0, 2.0, 3.0], [1, 2, 3]) == pytest.approx(1.0)  # ranks: any finite
    assert gini([]) == 0.0 and gini(np.zeros(3)) == 0.0
    per_item, per_user = distinct_pairs(torch.tensor([0, 1]), torch.tensor([2, 2]), 2, 3)
    assert per_item.tolist() == [0, 0, 2] and per_user.tolist() == [1, 1]
    assert [x.tolist() for x in distinct_pairs([], [], 0, 0)] == [[], []]


def test_shared_data_is_not_in_the_repo():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    # .gpu_data: experiments/gpu_wheels.sh's copy for a GPU machine without ../shared,
    # ignored by git (never committed; the device tool carries it by name).
    for root, _, files in os.walk(repo):
        if ".git" in root or ".venv" in root or ".gpu_data" in root:
            continue
        assert "ratings.csv" not in files, f"a data file is in the repo: {root}"
