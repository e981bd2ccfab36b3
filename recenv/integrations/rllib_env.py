"""RLlib's ``ParallelPettingZooEnv`` with two fixes and recenv's seed spread (Ray required).

:func:`recenv.integrations.rllib.env_creator` builds it; that module imports this one at first
use, so importing it does not import Ray (slow, and an optional extra).
"""

from __future__ import annotations

from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv


class RecenvPettingZooEnv(ParallelPettingZooEnv):
    """RLlib's ``ParallelPettingZooEnv`` over a PettingZoo ``ParallelEnv`` ``env``, with

    - ``agents`` / ``possible_agents`` in the PettingZoo env's order (RLlib's come from a
      ``set``, whose order changes with ``PYTHONHASHSEED`` from process to process);
    - a working ``render()`` and ``render_mode`` (RLlib's passes the old ``render(mode)``
      argument, which PettingZoo's current API does not take, and leaves ``render_mode``
      ``None``);
    - ``seed_offset`` added to every seed RLlib passes to ``reset``: with ``E`` envs per env
      runner, RLlib's ``seed + w + i`` becomes ``seed + w * E + i`` given ``seed_offset = w * (E
      - 1)`` (see the ``recenv.integrations.rllib`` module doc, "Seeding").
    """

    def __init__(self, env, seed_offset: int = 0):
        super().__init__(env)
        self.possible_agents = list(env.possible_agents)
        self.agents = list(env.possible_agents)
        self.render_mode = getattr(env, "render_mode", None)  # RLlib's wrapper leaves None
        self.seed_offset = seed_offset

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = None if seed is None else seed + self.seed_offset
        return super().reset(seed=seed, options=options)

    def render(self):
        return self.par_env.render()
