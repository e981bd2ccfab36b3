"""Fixtures for the experiment runner's tests (helpers: ``experiment_helpers``)."""

from __future__ import annotations

import pytest
from experiment_helpers import tiny_run


@pytest.fixture
def tiny(tmp_path):
    """``tiny(**fields) -> RunConfig`` rooted in this test's tmp dir."""

    def make(**fields):
        return tiny_run(tmp_path / "runs", **fields)

    return make
