"""The batched simulator core: torch and numpy only (no PettingZoo, no RL or logging library)."""

from recenv.core import forking  # noqa: F401  (OpenMP threads in forked children)
from recenv.core.catalog import Catalog, build_catalog
from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.core.metrics import EPISODE_METRICS
from recenv.core.users import Population

__all__ = [
    "EPISODE_METRICS",
    "BatchedMarket",
    "Catalog",
    "MarketConfig",
    "Population",
    "build_catalog",
]
