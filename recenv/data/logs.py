"""Interaction logs: who interacted with what, how much, and when.

Loaders read a file into an :class:`InteractionLog` — contiguous integer ids for users and
items (``0..U-1``, ``0..I-1``, in the order of the original ids) plus the maps back to the
original ids, an optional rating or weight per interaction, and an optional timestamp. Nothing
is downloaded: every loader reads a file you already have.

- ``movielens``: ``ratings.csv`` of ml-latest(-small), ml-20m, ml-25m:
  ``userId,movieId,rating,timestamp`` with that header; explicit ratings 0.5–5.
- ``movielens-100k``: ``u.data`` of ml-100k: ``user item rating timestamp``, tab-separated,
  no header; explicit ratings 1–5.
- ``movielens-1m``: ``ratings.dat`` of ml-1m / ml-10m: ``user::item::rating::timestamp``.
- ``lastfm``: ``user_artists.dat`` of HetRec 2011 Last.fm: ``userID artistID weight``,
  tab-separated, with that header; the weight is a play count; no timestamps.
- ``csv``: any delimited text, ``user, item[, rating[, timestamp]]``, header optional (see
  :func:`load_csv`).

``format="auto"`` picks by file name (``ratings.csv``, ``u.data``, ``ratings.dat``,
``user_artists.dat``) and falls back to ``csv``.

A malformed file raises :class:`LogFormatError` (a ``ValueError``) whose message starts with
``path:line:`` and says what was expected there. Blank lines are skipped. Integer fields are
plain decimal integers within int64. In the MovieLens and Last.fm formats a negative user or
item id is an error (those data sets number them from 1; 0 is accepted), and a row repeated
exactly (same user, item and timestamp; same user and item for Last.fm, which has no
timestamps) is an error: those files record each event once, so it means a corrupt or
twice-concatenated file. A pair may repeat with other timestamps, and a generic CSV may
repeat anything (repeat consumption) and have any ids, negative integers included.

Data sets have their own licences. MovieLens (GroupLens, non-commercial use; cite F. M.
Harper and J. A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015)
and HetRec Last.fm (non-commercial; cite Cantador, Brusilovsky and Kuflik, HetRec 2011) may not
be bundled with this package: point the loaders at your copy.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

FORMATS = ("auto", "movielens", "movielens-100k", "movielens-1m", "lastfm", "csv")
RATING_KINDS = ("explicit", "count")

_AUTO_BY_NAME = {
    "ratings.csv": "movielens",
    "u.data": "movielens-100k",
    "ratings.dat": "movielens-1m",
    "user_artists.dat": "lastfm",
}
# Generic CSV headers: which column is which (matched on the lower-cased, stripped name).
_USER_NAMES = ("user", "userid", "user_id", "uid", "customer", "customer_id", "visitorid")
_ITEM_NAMES = (
    "item", "itemid", "item_id", "iid", "movie", "movieid", "movie_id", "artist", "artistid",
    "artist_id", "product", "productid", "product_id", "asin", "track", "track_id", "song",
    "song_id", "book", "book_id", "isbn",
)  # fmt: skip
_COUNT_NAMES = ("weight", "count", "plays", "playcount", "play_count", "clicks", "quantity")
_RATING_NAMES = ("rating", "ratings", "score", "stars", "overall", "value", *_COUNT_NAMES)
_TIME_NAMES = ("timestamp", "time", "ts", "date", "datetime", "unixtime", "unix_timestamp")
_INT = re.compile(r"[+-]?[0-9]+")
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")  # ids kept as integers only when written so
_INT64 = (-(1 << 63), (1 << 63) - 1)
# The largest |rating| or weight a log may hold: far beyond any real rating or count, and small
# enough that sums and squares of a whole log's ratings (the fit's mean and standard deviation,
# confidence sums) stay finite in float64.
MAX_ABS_RATING = 1e30


class LogFormatError(ValueError):
    """A log file that cannot be read as the expected format. ``path`` and ``line`` (1-based;
    0 when the problem is the whole file) say where."""

    def __init__(self, path: str | os.PathLike, line: int, message: str):
        self.path, self.line = str(path), line
        where = f"{self.path}:{line}" if line > 0 else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """``n`` interactions of ``U`` users with ``I`` items.

    ``user`` and ``item`` are contiguous ids; ``user_ids[u]`` / ``item_ids[i]`` are the
    original ids. A log may hold several interactions of one pair (repeat consumption).
    """

    user: np.ndarray  # [n] int64 in [0, U)
    item: np.ndarray  # [n] int64 in [0, I)
    rating: np.ndarray | None  # [n] float64: a rating ("explicit") or a weight ("count")
    timestamp: np.ndarray | None  # [n] float64 seconds (any monotone clock)
    user_ids: np.ndarray  # [U] original user ids
    item_ids: np.ndarray  # [I] original item ids
    source: str = ""  # the file it was read from
    format: str = "csv"
    rating_kind: str | None = None  # "explicit", "count", or None without ratings

    def __post_init__(self) -> None:
        # Array-likes (lists) are taken as arrays; a list user= gave AttributeError on .min(),
        # a 2-D array failed only in make, a string rating array with numpy's UFuncTypeError.
        for name in ("user", "item", "rating", "timestamp", "user_ids", "item_ids"):
            x = getattr(self, name)
            if x is None and name in ("rating", "timestamp"):
                continue
            try:
                arr = np.asarray(x)
            except (TypeError, ValueError) as e:
                raise ValueError(f"InteractionLog.{name} is not an array: {e}") from None
            if arr.ndim != 1:
                raise ValueError(
                    f"InteractionLog.{name} must be 1-D (one entry per "
                    f"{'id' if name.endswith('_ids') else 'interaction'}), got shape {arr.shape}"
                )
            if arr.size == 0 and name in ("user", "item"):
                arr = arr.astype(np.int64)  # np.asarray([]) is float64
            if any(stride < 0 for stride in arr.strides):
                # A reversed view (log[::-1]): the fit's torch.tensor refuses negative
                # strides, with a ValueError that names no field, after the config was read.
                arr = arr.copy()
            object.__setattr__(self, name, arr)
        n = len(self.user)
        for name in ("item", "rating", "timestamp"):
            x = getattr(self, name)
            if x is not None and len(x) != n:
                raise ValueError(f"InteractionLog.{name} has {len(x)} rows, user has {n}")
        for name in ("user", "item"):
            x = getattr(self, name)
            if not np.issubdtype(x.dtype, np.integer):
                raise ValueError(f"InteractionLog.{name} must be an integer array, got {x.dtype}")
            if n and x.min() < 0:
                raise ValueError(f"InteractionLog.{name} has negative ids (min {x.min()})")
        for name in ("rating", "timestamp"):
            x = getattr(self, name)
            if x is None:
                continue
            if x.dtype.kind not in "iuf":  # not bool, str, object, complex
                raise ValueError(
                    f"InteractionLog.{name} must be a real number array, got {x.dtype}"
                )
            x = x.astype(np.float64, copy=False)
            object.__setattr__(self, name, x)
            # A NaN rating made every fitted quality, observation and reward NaN (silently); a
            # NaN timestamp made its item the newest arrival. Ratings are bounded too, so that
            # the fit's mean and spread of them cannot overflow (1e308 made them NaN).
            bound = MAX_ABS_RATING if name == "rating" else math.inf
            bad = ~np.isfinite(x) | (np.abs(x) > bound)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                allowed = "finite" if name == "timestamp" else f"finite, in [-{bound:g}, {bound:g}]"
                raise ValueError(
                    f"InteractionLog.{name} values must be {allowed}; interaction {k} has "
                    f"{float(x[k])!r}"
                )
        if n and (self.user.max() >= len(self.user_ids) or self.item.max() >= len(self.item_ids)):
            raise ValueError("InteractionLog ids exceed the id maps")
        for name in ("user", "item"):  # int64 as documented (int32 products could overflow)
            object.__setattr__(self, name, getattr(self, name).astype(np.int64, copy=False))
        if (self.rating is None) != (self.rating_kind is None):
            raise ValueError("rating_kind must be given exactly when ratings are")
        if self.rating_kind is not None and self.rating_kind not in RATING_KINDS:
            raise ValueError(f"rating_kind={self.rating_kind!r} must be one of {RATING_KINDS}")

    # Sizes -------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def density(self) -> float:
        """Share of (user, item) pairs with at least one interaction."""
        pairs = np.unique(self.user * self.num_items + self.item).size
        return pairs / max(1, self.num_users * self.num_items)

    def item_counts(self) -> np.ndarray:
        """Interactions per item, ``[I]``."""
        return np.bincount(self.item, minlength=self.num_items)

    def user_counts(self) -> np.ndarray:
        """Interactions per user, ``[U]``."""
        return np.bincount(self.user, minlength=self.num_users)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "interactions": len(self),
            "users": self.num_users,
            "items": self.num_items,
            "density": self.density,
            "rating_kind": self.rating_kind,
            "timestamps": self.timestamp is not None,
        }

    # Subsets -----------------------------------------------------------------------------
    def select(self, rows: np.ndarray) -> InteractionLog:
        """The interactions ``rows`` (indices or a boolean mask), in the same id space."""

        def take(x):
            return None if x is None else x[rows]

        return replace(
            self,
            user=self.user[rows],
            item=self.item[rows],
            rating=take(self.rating),
            timestamp=take(self.timestamp),
        )

    def compact(self) -> InteractionLog:
        """The same interactions with users and items that have none dropped and the ids
        made contiguous again (``user_ids`` / ``item_ids`` keep the original ids)."""
        users, user = np.unique(self.user, return_inverse=True)
        items, item = np.unique(self.item, return_inverse=True)
        return replace(
            self,
            user=user.astype(np.int64),
            item=item.astype(np.int64),
            user_ids=self.user_ids[users],
            item_ids=self.item_ids[items],
        )

    def time_split(
        self, test_fraction: float = 0.2, by: str = "global"
    ) -> tuple[InteractionLog, InteractionLog]:
        """Split by time into ``(train, test)``, both in this log's id space.

        - ``by="global"``: the earliest ``1 - test_fraction`` of all interactions train, the
          latest test (one cut-off time for everyone; ties keep file order), rounded, and at
          least one interaction in each half.
        - ``by="user"``: each user's latest ``ceil(test_fraction * n_u)`` interactions (at
          most ``n_u - 1``) test, the rest train (users with one interaction keep it in
          train). Every test interaction comes after its user's train interactions, and every
          user with two or more interactions appears in both halves.
        """
        if self.timestamp is None:
            raise ValueError(f"{self.source or 'log'}: a time split needs timestamps")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
        if by == "global":
            if len(self) < 2:
                raise ValueError(
                    f"{self.source or 'log'}: a global time split needs at least 2 "
                    f"interactions, the log has {len(self)}"
                )
            order = np.argsort(self.timestamp, kind="stable")
            # Rounding alone left a half empty on tiny logs (3 rows at 0.1: no test row).
            cut = min(max(round(len(self) * (1.0 - test_fraction)), 1), len(self) - 1)
            return self.select(np.sort(order[:cut])), self.select(np.sort(order[cut:]))
        if by != "user":
            raise ValueError(f"by={by!r} must be 'global' or 'user'")
        order = np.lexsort((np.arange(len(self)), self.timestamp, self.user))
        n_u = self.user_counts()
        first = np.concatenate([[0], np.cumsum(n_u)[:-1]])
        sorted_user = self.user[order]
        rank = np.arange(len(self)) - first[sorted_user]
        n = n_u[sorted_user]
        # ceil without float round-up (0.07 * 100 is 7.000000000000001), and at least one
        # interaction left in train.
        n_test = np.ceil(test_fraction * n - 1e-9).astype(np.int64)
        n_test = np.where(n >= 2, np.clip(n_test, 1, n - 1), 0)
        is_test = np.zeros(len(self), dtype=bool)
        is_test[order] = rank >= n - n_test
        return self.select(~is_test), self.select(is_test)


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------
def load_log(path: str | os.PathLike, format: str = "auto", **options: Any) -> InteractionLog:
    """Read an interaction log. ``format`` is one of :data:`FORMATS`; ``options`` go to
    :func:`load_csv` for ``format="csv"``."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; known formats: {list(FORMATS)}")
    if format == "auto":
        format = _AUTO_BY_NAME.get(os.path.basename(os.fspath(path)).lower(), "csv")
    if options and format != "csv":
        raise ValueError(f"options {sorted(options)} apply to format='csv' only, not {format!r}")
    if format == "movielens":
        return load_movielens(path)
    if format == "movielens-100k":
        return load_movielens_100k(path)
    if format == "movielens-1m":
        return load_movielens_1m(path)
    if format == "lastfm":
        return load_lastfm(path)
    return load_csv(path, **options)


def load_movielens(path: str | os.PathLike) -> InteractionLog:
    """``ratings.csv`` of the current MovieLens releases (ml-latest-small, ml-25m, ...)."""
    return _load_fixed(
        path,
        "movielens",
        sep=",",
        header=("userId", "movieId", "rating", "timestamp"),
        rating_range=(0.5, 5.0),
    )


def load_movielens_100k(path: str | os.PathLike) -> InteractionLog:
    """``u.data`` of ml-100k: ``user item rating timestamp``, tab-separated, no header."""
    return _load_fixed(path, "movielens-100k", sep="\t", header=None, rating_range=(1.0, 5.0))


def load_movielens_1m(path: str | os.PathLike) -> InteractionLog:
    """``ratings.dat`` of ml-1m and ml-10m: ``user::item::rating::timestamp``."""
    return _load_fixed(path, "movielens-1m", sep="::", header=None, rating_range=(0.5, 5.0))


def load_lastfm(path: str | os.PathLike) -> InteractionLog:
    """``user_artists.dat`` of the HetRec 2011 Last.fm set: ``userID artistID weight`` (the
    weight is the user's play count of the artist; there are no timestamps)."""
    return _load_fixed(
        path,
        "lastfm",
        sep="\t",
        header=("userID", "artistID", "weight"),
        rating_range=(0.0, MAX_ABS_RATING),
        rating_kind="count",
    )


def _load_fixed(
    path: str | os.PathLike,
    fmt: str,
    *,
    sep: str,
    header: tuple[str, ...] | None,
    rating_range: tuple[float, float],
    rating_kind: str = "explicit",
) -> InteractionLog:
    """A format with non-negative integer ids, a rating, and (with 4 columns) a non-negative
    integer timestamp."""
    ncols = len(header) if header is not None else 4
    names = header if header is not None else ("user", "item", "rating", "timestamp")
    shown = (sep if sep != "\t" else "tab").join(names) if header else f"{ncols} fields"
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    times: list[int] = []
    lines: list[int] = []
    lo, hi = rating_range
    first = True
    with _rows(path, sep) as rows:
        for lineno, fields in rows:
            if first:
                first = False
                if header is not None:
                    got = tuple(f.strip().lower() for f in fields)
                    if got != tuple(h.lower() for h in header):
                        raise LogFormatError(
                            path,
                            lineno,
                            f"expected the {fmt} header {shown!r}, got {sep.join(fields)!r}",
                        )
                    continue
            if len(fields) != ncols:
                raise LogFormatError(
                    path,
                    lineno,
                    f"expected {ncols} fields ({', '.join(names)}) separated by {sep!r}, "
                    f"got {len(fields)}: {sep.join(fields)!r}",
                )
            u = _id(path, lineno, fmt, names[0], fields[0])
            i = _id(path, lineno, fmt, names[1], fields[1])
            r = _float(path, lineno, names[2], fields[2])
            if not lo <= r <= hi:
                raise LogFormatError(
                    path,
                    lineno,
                    f"{names[2]} {fields[2].strip()} is outside the {fmt} range [{lo:g}, {hi:g}]",
                )
            users.append(u)
            items.append(i)
            ratings.append(r)
            lines.append(lineno)
            if ncols == 4:
                t = _int(path, lineno, names[3], fields[3])
                if t < 0:
                    raise LogFormatError(path, lineno, f"{names[3]} {t} is negative")
                times.append(t)
    user_arr, item_arr = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    time_arr = np.asarray(times, dtype=np.int64) if ncols == 4 else None
    _no_repeated_rows(path, fmt, names, user_arr, item_arr, time_arr, lines)
    return _finish(
        path,
        fmt,
        user_arr,
        item_arr,
        np.asarray(ratings, dtype=np.float64),
        None if time_arr is None else time_arr.astype(np.float64),
        rating_kind,
    )


def load_csv(
    path: str | os.PathLike,
    *,
    delimiter: str | None = None,
    header: bool | None = None,
    rating_kind: str | None = None,
) -> InteractionLog:
    """A generic delimited log: ``user, item[, rating[, timestamp]]`` per line.

    - ``delimiter``: ``","``, ``"\\t"``, ``";"``, ``"::"`` or ``"|"``; by default the first of
      these found in the first line.
    - ``header``: whether the first line names the columns. By default it does when one of
      its fields is a known column name (``user``, ``userId``, ``item``, ``movieId``,
      ``rating``, ``weight``, ``timestamp``, ...). With a header, columns are found by name
      (extra columns are ignored); without, by position (2 to 4 columns).
    - ``rating_kind``: ``"explicit"`` (a score) or ``"count"`` (a weight such as a play
      count); by default ``"count"`` when the rating column is named like a count
      (``weight``, ``count``, ``plays``, ...), else ``"explicit"``.

    Fields may be quoted as in RFC 4180 (read with Python's :mod:`csv`): ``"a,b"`` is one field
    and ``""`` a quote inside one; a quoted field may not span lines, and one whose closing
    quote is missing is an error at the line where it starts, the last line included. (With
    ``"::"``, which the csv module cannot take, lines are split as they are and quotes around a
    field dropped.)

    User and item ids may be any strings; they are kept as integers when all are plain
    integers (``7``, not ``007`` or ``+7``) within int64, else as strings. Ratings must be
    finite numbers within ``±1e30`` (:data:`MAX_ABS_RATING`), count weights also ``>= 0``;
    timestamps numbers (seconds) or ISO 8601 dates (UTC unless they carry an offset, so the
    result does not depend on the machine's time zone).
    """
    if rating_kind is not None and rating_kind not in RATING_KINDS:
        raise ValueError(f"rating_kind={rating_kind!r} must be one of {RATING_KINDS}")
    if delimiter is not None and (not isinstance(delimiter, str) or not delimiter):
        raise ValueError(f"delimiter={delimiter!r} must be a non-empty string such as ',' or '\\t'")
    if header is not None and not isinstance(header, bool):
        raise ValueError(f"header={header!r} must be True, False or None (detect)")
    with _rows(path, delimiter, quoted=True) as rows:
        try:
            lineno, first = next(rows)
        except StopIteration:
            raise LogFormatError(path, 0, "no interactions (the file is empty)") from None
        sep = rows.sep if delimiter is None else delimiter
        assert sep is not None  # reading the first row sniffed it (or raised)
        # The csv module took the quotes off every field (one-character delimiters); a "::"
        # line was split as it is, so its fields lose their quotes below.
        split_as_is = len(sep) > 1
        bound = MAX_ABS_RATING

        lower = [f.strip().strip('"').strip().lower() for f in first]
        known = (*_USER_NAMES, *_ITEM_NAMES, *_RATING_NAMES, *_TIME_NAMES)
        has_header = header if header is not None else any(name in known for name in lower)
        if has_header:
            cols = _columns_by_name(path, lineno, lower)
            ncols = len(first)
            pending: list[tuple[int, list[str]]] = []
        else:
            if not 2 <= len(first) <= 4:
                raise LogFormatError(
                    path,
                    lineno,
                    f"expected 2 to 4 fields (user, item[, rating[, timestamp]]) separated by "
                    f"{sep!r}, got {len(first)}: {first!r}",
                )
            ncols = len(first)
            cols = dict(zip(("user", "item", "rating", "timestamp"), range(ncols), strict=False))
            pending = [(lineno, first)]
        rating_col = cols.get("rating")
        if rating_kind is None and rating_col is not None:
            name = lower[rating_col] if has_header else ""
            rating_kind = "count" if name in _COUNT_NAMES else "explicit"
        rating_name = (
            first[rating_col].strip().strip('"')
            if has_header and rating_col is not None
            else "rating"
        )
        names = {v: k for k, v in cols.items()}
        users: list[str] = []
        items: list[str] = []
        ratings: list[float] = []
        times: list[float] = []

        def rows_all() -> Iterator[tuple[int, list[str]]]:
            yield from pending
            yield from rows

        for lineno, fields in rows_all():
            if len(fields) != ncols:
                what = ", ".join(names.get(c, f"column {c + 1}") for c in range(ncols))
                raise LogFormatError(
                    path,
                    lineno,
                    f"expected {ncols} fields ({what}) separated by {sep!r}, got {len(fields)}: "
                    f"{sep.join(fields)!r}",
                )
            if split_as_is:
                fields = [f.strip().strip('"') for f in fields]
            u = fields[cols["user"]].strip()
            i = fields[cols["item"]].strip()
            if not u or not i:
                raise LogFormatError(path, lineno, "empty user or item id")
            users.append(u)
            items.append(i)
            if rating_col is not None:
                r = _float(path, lineno, rating_name, fields[rating_col])
                if not -bound <= r <= bound:  # see MAX_ABS_RATING
                    raise LogFormatError(
                        path,
                        lineno,
                        f"{rating_name} {r:g} is outside [-{MAX_ABS_RATING:g}, {MAX_ABS_RATING:g}]",
                    )
                if r < 0 and rating_kind == "count":
                    raise LogFormatError(
                        path, lineno, f"{rating_name} {r:g} is negative; count weights must be >= 0"
                    )
                ratings.append(r)
            if "timestamp" in cols:
                times.append(_time(path, lineno, fields[cols["timestamp"]]))
    if not users:
        raise LogFormatError(path, 0, "no interactions (only a header)")
    rating = np.asarray(ratings, dtype=np.float64) if rating_col is not None else None
    return _finish(
        path,
        "csv",
        _ids(users),
        _ids(items),
        rating,
        np.asarray(times, dtype=np.float64) if "timestamp" in cols else None,
        rating_kind if rating is not None else None,
    )


# ------------------------------------------------------------------------------------------
# Parsing helpers
# ------------------------------------------------------------------------------------------
class _Rows:
    """Non-blank lines of a file as ``(line number, fields)``; ``sep=None`` sniffs the
    delimiter from the first line (``sep`` is set then).

    ``quoted=True`` (the generic CSV) splits a line with Python's :mod:`csv` when ``sep`` is one
    character, so quoting follows RFC 4180: ``"a,b"`` is one field, ``""`` a quote inside one,
    and the quotes are removed. A quoted field may not run on to the next line (an unclosed
    quote would otherwise swallow the rows after it), nor to the end of the file (an unclosed
    quote on the last line): either raises :class:`LogFormatError` at the line where the
    field starts. Otherwise a line is split at ``sep`` as it is (the fixed formats, and
    ``"::"``, which csv cannot take).

    The file is closed when the lines run out or a line cannot be read, and by
    :meth:`close` (or leaving a ``with _Rows(...)`` block) when the caller stops early.
    """

    def __init__(self, path: str | os.PathLike, sep: str | None, quoted: bool = False):
        self.path, self.sep = path, sep
        self.lineno = 0  # the number of the last line read
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise LogFormatError(
                path, 0, f"cannot read the interaction log: {e.strerror}"
            ) from None
        self._it = self._records() if quoted else self._lines()

    def _text(self, f) -> Iterator[str]:
        """The decoded lines, without their line ends."""
        for lineno, raw in enumerate(f, 1):
            self.lineno = lineno
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise LogFormatError(self.path, lineno, "not UTF-8 text") from None
            if lineno == 1:
                line = line.lstrip("\ufeff")
            yield line

    def _sniff(self, line: str) -> str:
        """The delimiter of the file whose first line is ``line``."""
        sep = next((s for s in ("\t", "::", ",", ";", "|") if s in line), None)
        if sep is None:
            raise LogFormatError(
                self.path,
                self.lineno,
                "cannot tell the delimiter: expected fields separated by ',', tab, "
                f"';', '::' or '|', got {line!r}",
            )
        return sep

    def _lines(self) -> Generator[tuple[int, list[str]], None, None]:
        with self._file as f:
            for line in self._text(f):
                if not line.strip():
                    continue
                if self.sep is None:
                    self.sep = self._sniff(line)
                yield self.lineno, line.split(self.sep)

    def _records(self) -> Generator[tuple[int, list[str]], None, None]:
        with self._file as f:
            text = self._text(f)
            line = next((x for x in text if x.strip()), None)
            if line is None:
                return
            if self.sep is None:
                self.sep = self._sniff(line)
            if len(self.sep) > 1:  # csv takes one-character delimiters only
                yield self.lineno, line.split(self.sep)
                for line in text:
                    if line.strip():
                        yield self.lineno, line.split(self.sep)
                return
            # csv reads the other lines straight from the file, decoded one by one, so the
            # file's line number is offset + reader.line_num (a record of several lines counts
            # them all).
            offset = self.lineno - 1
            ended: list[bool] = []

            def at_end() -> Iterator[str]:
                # Asked for a line only once the file's lines ran out.
                ended.append(True)
                yield from ()

            lines = itertools.chain([line], map(bytes.decode, f), at_end())
            # Not strict=True: it refuses a file that ends inside a quoted field ("unexpected
            # end of data"), but also any text after a closing quote ('"a" ,b', read as 'a ',
            # which was accepted). The reader asks for a line only when a record needs one, so
            # a record it hands out once at_end() ran is one the end of the file cut inside a
            # quoted field (lenient csv hands it out as if the quote were closed).
            reader = csv.reader(lines, delimiter=self.sep, skipinitialspace=True)
            last = offset  # the last line of the previous record
            try:
                for fields in reader:
                    first, last = last + 1, offset + reader.line_num
                    if first != last:
                        raise LogFormatError(
                            self.path,
                            first,
                            f"a quoted field runs on to line {last} (an unclosed quote?); a "
                            "field may not span lines",
                        )
                    if ended:  # before the blank-line test: '"' alone is read as a blank
                        raise LogFormatError(
                            self.path,
                            first,
                            "a quoted field has no closing quote (an unclosed quote runs on to "
                            "the end of the file)",
                        )
                    if len(fields) <= 1 and not "".join(fields).strip():
                        continue  # a blank line
                    yield first, fields
            except UnicodeDecodeError:
                raise LogFormatError(
                    self.path, offset + reader.line_num + 1, "not UTF-8 text"
                ) from None
            except csv.Error as e:
                raise LogFormatError(
                    self.path, last + 1, f"cannot split the line into fields: {e}"
                ) from None

    def close(self) -> None:
        """Stop reading and close the file; closing again does nothing."""
        # A generator suspended at its yield would keep the file open until the garbage
        # collector breaks the cycle self -> generator -> frame -> self (a ResourceWarning,
        # and a locked file on Windows): a loader that raises on a row leaves it so.
        self._it.close()
        self._file.close()  # a generator never started has no ``with`` to leave

    def __enter__(self) -> _Rows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> _Rows:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        return next(self._it)


def _rows(path: str | os.PathLike, sep: str | None, quoted: bool = False) -> _Rows:
    """The rows of ``path`` (see :class:`_Rows`); read them in a ``with`` block, which closes
    the file however reading stops."""
    if os.path.isdir(path):
        raise LogFormatError(path, 0, "is a directory, expected an interaction log file")
    return _Rows(path, sep, quoted)


def _int(path, lineno: int, name: str, s: str) -> int:
    if not _INT.fullmatch(s.strip()):  # int() would also take "1_000" and non-ASCII digits
        raise LogFormatError(path, lineno, f"{name} {s.strip()!r} is not an integer")
    v = int(s)
    if not _INT64[0] <= v <= _INT64[1]:
        raise LogFormatError(
            path, lineno, f"{name} {s.strip()} is outside the int64 range [-2^63, 2^63 - 1]"
        )
    return v


def _id(path, lineno: int, fmt: str, name: str, s: str) -> int:
    """A user or item id of a MovieLens or Last.fm file: an integer within int64, not
    negative."""
    v = _int(path, lineno, name, s)
    if v < 0:
        # Those data sets number users and items from 1; a minus sign means a corrupt file.
        # 0 stays accepted: a file re-indexed from 0 is common and harmless.
        raise LogFormatError(
            path, lineno, f"{name} {s.strip()} is negative; {fmt} ids are positive integers"
        )
    return v


def _float(path, lineno: int, name: str, s: str) -> float:
    try:
        if "_" in s:  # float() takes "1_0" as 10
            raise ValueError
        v = float(s)
    except ValueError:
        raise LogFormatError(path, lineno, f"{name} {s.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise LogFormatError(path, lineno, f"{name} {s.strip()!r} is not a finite number")
    return v


def _time(path, lineno: int, s: str) -> float:
    s = s.strip()
    try:
        if "_" in s:
            raise ValueError
        v = float(s)
    except ValueError:
        try:
            d = datetime.fromisoformat(s)
            if d.tzinfo is None:  # naive: UTC, not the machine's local time
                d = d.replace(tzinfo=timezone.utc)
            return d.timestamp()
        except ValueError:
            raise LogFormatError(
                path, lineno, f"timestamp {s!r} is neither a number nor an ISO 8601 date"
            ) from None
    if not math.isfinite(v):
        raise LogFormatError(path, lineno, f"timestamp {s!r} is not a finite number")
    return v


def _columns_by_name(path, lineno: int, names: list[str]) -> dict[str, int]:
    def find(candidates: tuple[str, ...]) -> int | None:
        return next((c for c, n in enumerate(names) if n in candidates), None)

    cols = {"user": find(_USER_NAMES), "item": find(_ITEM_NAMES)}
    missing = [k for k, v in cols.items() if v is None]
    if missing:
        raise LogFormatError(
            path,
            lineno,
            f"the header {names} names no {' and no '.join(missing)} column; expected e.g. "
            f"user/userId and item/itemId/movieId/artistId",
        )
    rating, time = find(_RATING_NAMES), find(_TIME_NAMES)
    out = dict(cols)
    if rating is not None:
        out["rating"] = rating
    if time is not None:
        out["timestamp"] = time
    return out  # type: ignore[return-value]


def _ids(values: list[str]) -> np.ndarray:
    """Original ids as int64 when every one is a plain integer within int64, else as strings
    (so "007" and "7", or "1_0" and "10", stay two ids)."""
    if all(_CANONICAL_INT.fullmatch(v) for v in values):
        ints = [int(v) for v in values]
        if all(_INT64[0] <= v <= _INT64[1] for v in ints):
            return np.asarray(ints, dtype=np.int64)
    return np.asarray(values, dtype=str)


def _no_repeated_rows(path, fmt, names, users, items, times, lines) -> None:
    """A MovieLens or Last.fm file records each event once: name the first row that repeats
    an earlier one's (user, item[, timestamp])."""
    if len(users) < 2:
        return
    keys = (users, items) if times is None else (users, items, times)
    order = np.lexsort(keys[::-1])  # stable: equal rows keep file order
    same = np.ones(len(order) - 1, dtype=bool)
    for k in keys:
        same &= k[order][1:] == k[order][:-1]
    hits = np.flatnonzero(same)
    if hits.size:
        b = int(order[hits + 1].min())  # the repeat that comes first in the file
        first = next(int(order[h]) for h in hits if int(order[h + 1]) == b)
        what = f"{names[0]} {users[b]}, {names[1]} {items[b]}"
        if times is not None:
            what += f", {names[3]} {times[b]}"
        raise LogFormatError(
            path,
            lines[b],
            f"{what} repeats line {lines[first]}; a {fmt} file records each event once (a "
            "corrupt or twice-concatenated file?)",
        )


def _finish(
    path,
    fmt: str,
    users: np.ndarray,
    items: np.ndarray,
    rating: np.ndarray | None,
    timestamp: np.ndarray | None,
    rating_kind: str | None,
) -> InteractionLog:
    if len(users) == 0:
        raise LogFormatError(path, 0, "no interactions")
    user_ids, user = np.unique(users, return_inverse=True)
    item_ids, item = np.unique(items, return_inverse=True)
    return InteractionLog(
        user=user.astype(np.int64).reshape(-1),
        item=item.astype(np.int64).reshape(-1),
        rating=rating,
        timestamp=timestamp,
        user_ids=user_ids,
        item_ids=item_ids,
        source=os.fspath(path),
        format=fmt,
        rating_kind=rating_kind,
    )
