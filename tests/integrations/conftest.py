"""Fixtures of the integration tests."""

from __future__ import annotations

import os

import pytest
import torch


def _required() -> bool:
    """Whether the integrations are meant to be installed: ``make test`` installs the extra
    and sets ``RECENV_REQUIRE_INTEGRATIONS=1`` (so does ``scripts/test_floor.sh`` when it
    installs them)."""
    return os.environ.get("RECENV_REQUIRE_INTEGRATIONS") == "1"


def _import_skip(report) -> bool:
    """A skip by ``pytest.importorskip`` (its reason: "could not import ...")."""
    return report.skipped and "could not import" in str(report.longrepr)


def _fail_where_required(report) -> None:
    """Where the integrations are required, a module that does not import fails instead of
    skipping: a broken install cannot pass as skipped (the first run at the requirement
    floors, ray[rllib] beside a NumPy its pyarrow refuses, skipped every RLlib test)."""
    if _required() and _import_skip(report):
        report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # a module-level importorskip
    outcome = yield
    _fail_where_required(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # an importorskip inside a test
    outcome = yield
    _fail_where_required(outcome.get_result())


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
