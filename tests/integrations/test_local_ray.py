"""The tests' shared local Ray (``local_ray``, tests/integrations/conftest.py) gives its
workers the fixed ``PYTHONHASHSEED`` of :func:`recenv.integrations.rllib.runtime_env`.

Regression tests: the fixture started Ray without a ``runtime_env``, so each worker drew its
own hash seed and the RLlib tests' runs (agents batched in the order of string sets) could
differ from run to run, unlike ``experiments/rllib_train.py``'s."""

from __future__ import annotations

import os

import pytest

from recenv.integrations.rllib import runtime_env


def test_local_ray_starts_workers_with_the_runtime_envs_hash_seed(local_ray_init_kwargs):
    """Read without starting Ray (runs where Ray is not installed too)."""
    assert local_ray_init_kwargs["runtime_env"] == runtime_env()
    assert local_ray_init_kwargs["runtime_env"]["env_vars"]["PYTHONHASHSEED"].isdigit()
    assert local_ray_init_kwargs["address"] == "local"  # never a cluster found on the machine


@pytest.mark.xdist_group("ray")
def test_a_local_ray_worker_has_the_fixed_hash_seed(local_ray):
    @local_ray.remote
    def worker_hash_seed() -> str | None:
        return os.environ.get("PYTHONHASHSEED")

    expected = runtime_env()["env_vars"]["PYTHONHASHSEED"]
    assert local_ray.get(worker_hash_seed.remote(), timeout=300) == expected
