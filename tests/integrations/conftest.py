"""Fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def local_ray_init_kwargs() -> dict:
    """The ``ray.init`` keyword arguments of :func:`local_ray` (a fixture of its own, so that a
    test can read them without starting Ray). ``address="local"``: always a
    fresh Ray, never a cluster found on the machine. ``runtime_env``: every Ray worker starts
    with a fixed ``PYTHONHASHSEED`` (:func:`recenv.integrations.rllib.runtime_env`), as
    ``experiments/rllib_train.py`` gives its workers: RLlib batches agents in the order of
    Python sets of string ids, so without it a seeded run's results follow each worker's
    random hash seed."""
    from recenv.integrations.rllib import runtime_env

    return {
        "address": "local",
        "num_cpus": 2,
        "include_dashboard": False,
        "log_to_driver": False,
        "runtime_env": runtime_env(),
    }


@pytest.fixture(scope="session")
def local_ray(local_ray_init_kwargs):
    """One local Ray per test process (2 CPUs, no dashboard, workers with a fixed hash seed:
    ``local_ray_init_kwargs``), always shut down.

    Tests that use it carry ``@pytest.mark.xdist_group("ray")``: with ``--dist loadgroup``
    they share one worker, hence one Ray start (~10 s)."""
    ray = pytest.importorskip("ray")
    # Ray's `uv run` hook would make workers re-run the driver's command; recenv is installed.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        ray.init(**local_ray_init_kwargs)
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def one_thread():
    """Small MLPs train fastest on one torch thread, which leaves the other core to xdist."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
