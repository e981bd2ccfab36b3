"""experiments.snapshot: the restore hook (``state_restored``), called after an object's
attributes are written back, on the object restored and on nested objects alike."""

from __future__ import annotations

import torch

from experiments import snapshot


class Table:
    """Holds a tensor and something derived from it, re-derived by the hook."""

    def __init__(self, n: int):
        self.values = torch.arange(n, dtype=torch.float32)
        self.total = float(self.values.sum())
        self.hooks = 0

    def state_restored(self) -> None:
        self.total = float(self.values.sum())
        self.hooks += 1


class Holder:
    def __init__(self):
        self.inner = Table(3)
        self.steps = 0


def test_restore_calls_the_hook_after_the_attributes_are_back():
    saved = snapshot.snapshot(Table(5), skip=("total", "hooks"))
    fresh = Table(2)
    snapshot.restore(fresh, saved)
    assert fresh.hooks == 1
    assert fresh.total == 10.0  # the hook saw the restored values, not the fresh object's


def test_nested_objects_restored_in_place_get_the_hook_too():
    h = Holder()
    h.inner.values += 1
    h.steps = 4
    saved = snapshot.snapshot(h)
    fresh = Holder()
    snapshot.restore(fresh, saved)
    assert fresh.steps == 4 and fresh.inner.hooks == 1
    assert fresh.inner.total == 6.0


def test_nested_objects_rebuilt_from_their_class_get_the_hook_too():
    h = Holder()
    saved = snapshot.snapshot(h)
    fresh = Holder()
    fresh.inner = None  # nothing to restore into: rebuilt by cls.__new__, then the hook
    snapshot.restore(fresh, saved)
    assert isinstance(fresh.inner, Table) and fresh.inner.hooks == 1
    assert fresh.inner.total == 3.0
