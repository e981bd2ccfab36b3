"""The PettingZoo factories every scenario module exposes, made once here so they cannot drift.

A scenario module writes ``parallel_env, env = pettingzoo_factories(ENV_ID)``; both take the
keyword arguments of ``recenv.make`` (the scenario's config keys and the face options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def pettingzoo_factories(env_id: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def parallel_env(**kwargs: Any):
        """PettingZoo convention: ``parallel_env(**kwargs)`` of this scenario."""
        from recenv.registry import make

        return make(env_id, **kwargs)

    def env(**kwargs: Any):
        """PettingZoo convention: the AEC version (``parallel_to_aec``)."""
        from pettingzoo.utils.conversions import parallel_to_aec

        return parallel_to_aec(parallel_env(**kwargs))

    return parallel_env, env
