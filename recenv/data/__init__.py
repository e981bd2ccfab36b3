"""Real interaction data: log loaders and implicit-feedback matrix factorisation.

- :mod:`recenv.data.logs`: :class:`InteractionLog` and the loaders (MovieLens, Last.fm
  HetRec, generic CSV); nothing is downloaded.
- :mod:`recenv.data.mf`: implicit-feedback ALS (Hu, Koren & Volinsky, 2008).

The scenario built on them is ``recenv/FromLog-v0`` (:mod:`recenv.scenarios.from_log`).
"""

from recenv.data.logs import (
    FORMATS,
    InteractionLog,
    LogFormatError,
    load_csv,
    load_lastfm,
    load_log,
    load_movielens,
    load_movielens_1m,
    load_movielens_100k,
)

__all__ = [
    "FORMATS",
    "InteractionLog",
    "LogFormatError",
    "load_csv",
    "load_lastfm",
    "load_log",
    "load_movielens",
    "load_movielens_1m",
    "load_movielens_100k",
]
