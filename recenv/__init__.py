"""recenv: multi-agent reinforcement learning environments for recommender systems.

- ``recenv.make(env_id, seed=None, **config)``: a PettingZoo ``ParallelEnv`` (one market).
- ``recenv.make_vec(env_id, num_envs=N, device="cpu", seed=None, **config)``: the batched env.
- ``recenv.registered_ids()``: the registered ids.
"""

from recenv.core.config import MarketConfig
from recenv.core.market import BatchedMarket
from recenv.pettingzoo_env import MarketParallelEnv
from recenv.registry import make, make_vec, register, registered_ids, spec
from recenv.scenarios import SCENARIOS  # noqa: F401  (registers the scenarios)

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
