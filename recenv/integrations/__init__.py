"""Bridges from recenv to the RL ecosystem (DESIGN §7). Each module imports its library lazily,
so ``import recenv`` never needs an optional extra.

- :mod:`recenv.integrations.gymnasium_vector` (core dependencies only): a
  ``gymnasium.vector.VectorEnv`` over the batched market — one learning agent against fixed
  opponents, ``NEXT_STEP`` autoreset.
- :mod:`recenv.integrations.gymnasium_single` (core dependencies only): the same view of one
  market as a plain ``gymnasium.Env``, for single-env tooling (``check_env``,
  ``AsyncVectorEnv``, SB3's ``SubprocVecEnv``).
- :mod:`recenv.integrations.rllib` (extra ``rllib``): the RLlib env creator, a
  ``ParallelPettingZooEnv`` over a recenv env (the subclass itself is in
  :mod:`recenv.integrations.rllib_env`, which imports Ray); the CLI is
  ``experiments/rllib_train.py``.
- :mod:`recenv.integrations.torchrl` (extra ``torchrl``): TorchRL's ``PettingZooWrapper`` over a
  recenv env, with a documented group map.
- :mod:`recenv.integrations.sb3` (extra ``sb3``): the SuperSuit parameter-sharing recipe for
  Stable-Baselines3, with seed forwarding and time-limit bootstrapping restored.

The long-form guide, with copy-paste examples and the Ray cluster recipe, is
``docs/integrations.md``.
"""
