"""Fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray per test process (2 CPUs, no dashboard), always shut down.

    Tests that use it carry ``@pytest.mark.xdist_group("ray")``: with ``--dist loadgroup``
    they share one worker, hence one Ray start (~10 s)."""
    ray = pytest.importorskip("ray")
    # Ray's `uv run` hook would make workers re-run the driver's command; recenv is installed.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        # "local": always a fresh Ray, never a cluster found on the machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
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
