"""recenv: multi-agent reinforcement learning environments for recommender systems.

- ``recenv.make(env_id, seed=None, **config)``: a PettingZoo ``ParallelEnv`` (one market).
- ``recenv.make_vec(env_id, num_envs=N, device="cpu", seed=None, **config)``: the batched env.
- ``recenv.registered_ids()``: the registered ids.
- ``gymnasium.make("recenv/Market-SingleAgent-v0", opponents="random")``: one market seen by
  one learning agent as a ``gymnasium.Env`` (any registered id, ``-SingleAgent`` added).
"""

from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.pettingzoo_env import MarketParallelEnv
from recenv.registry import (
    make,
    make_vec,
    plugin_ids,
    register,
    register_gymnasium_ids,
    registered_ids,
    spec,
)
from recenv.scenarios import SCENARIOS  # noqa: F401  (registers the scenarios)

# `gymnasium.make("recenv/Market-SingleAgent-v0")`: every scenario seen by one learning
# agent (recenv.integrations.gymnasium_single). register() adds the built-in ones; the
# installed plug-ins' ids (registered with recenv when first made) are added here, so that
# `gymnasium.make("recenv:mylab/Shop-SingleAgent-v0")` finds them in a fresh process.
register_gymnasium_ids(plugin_ids())

__version__ = "0.1.0"

__all__ = [
    "BatchedMarket",
    "MarketConfig",
    "MarketParallelEnv",
    "make",
    "make_vec",
    "register",
    "registered_ids",
    "spec",
]
