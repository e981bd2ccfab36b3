"""experiments.snapshot: the restore hook (``state_restored``), called after an object's
attributes are written back, on the object restored and on nested objects alike; numpy scalars
restored as their own type; tuples holding static parts skipped like lists holding them."""

from __future__ import annotations

import io

import numpy as np
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


def _through_a_checkpoint(saved: dict) -> dict:
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


class Counters:
    def __init__(self):
        self.total = np.float32(0.0)
        self.count = np.int32(0)
        self.seen = np.bool_(False)


def test_numpy_scalars_come_back_as_their_numpy_type():
    # Restored as Python numbers, a float32 accumulator went on in float64 after a resume.
    c = Counters()
    c.total += np.float32(0.1)
    c.count += np.int32(3)
    c.seen = np.bool_(True)
    fresh = Counters()
    snapshot.restore(fresh, _through_a_checkpoint(snapshot.snapshot(c)))
    assert type(fresh.total) is np.float32 and type(fresh.count) is np.int32
    assert type(fresh.seen) is np.bool_ and bool(fresh.seen)
    assert float(fresh.total + 0.2) == float(c.total + 0.2)  # the same arithmetic as before
    assert int(fresh.count) == 3


class Typed:
    def __init__(self):
        self.layout = ((3,), torch.float32)  # static, like a dtype attribute
        self.values = torch.zeros(3)


def test_a_tuple_holding_a_dtype_is_static_like_a_list_holding_one():
    t = Typed()
    t.values += 2
    saved = snapshot.snapshot(t)  # raised SnapshotError: "cannot snapshot Typed.layout"
    assert "layout" not in saved
    fresh = Typed()
    snapshot.restore(fresh, _through_a_checkpoint(saved))
    assert fresh.layout == ((3,), torch.float32) and fresh.values.tolist() == [2.0, 2.0, 2.0]


class Shared:
    """Two names for one tensor (as a buffer and its alias); a list holding it again."""

    def __init__(self, n: int):
        self.rows = torch.zeros(n)
        self.alias = self.rows
        self.tables = [self.rows, torch.ones(n)]


def test_one_tensor_referenced_twice_is_restored_as_one_tensor():
    live = Shared(3)
    live.rows += 2.0
    fresh = Shared(3)
    snapshot.restore(fresh, snapshot.snapshot(live))
    assert fresh.alias is fresh.rows and fresh.tables[0] is fresh.rows
    fresh.rows[0] = 7.0  # what one name writes, the other reads, as in the live object
    assert fresh.alias.tolist() == [7.0, 2.0, 2.0] and fresh.tables[1].tolist() == [1.0] * 3


def test_a_snapshot_is_a_copy_that_later_in_place_updates_leave_alone():
    live = Table(4)
    saved = snapshot.snapshot(live, skip=("total", "hooks"))
    live.values.mul_(10.0)  # the run goes on after the checkpoint was taken
    fresh = Table(4)
    snapshot.restore(fresh, saved)
    assert fresh.values.tolist() == [0.0, 1.0, 2.0, 3.0]


class Drawing:
    """Holds its own generator (a plug-in's sampler whose state_dict leaves it out)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)


def test_a_held_generator_is_restored_in_place_and_draws_on_as_the_live_one():
    live = Drawing(0)
    torch.rand(5, generator=live.generator)  # the run drew before its checkpoint
    saved = snapshot.snapshot(live)
    fresh = Drawing(0)
    held = fresh.generator
    snapshot.restore(fresh, saved)
    assert fresh.generator is held  # in place: whatever else holds it draws on too
    assert torch.equal(
        torch.rand(4, generator=fresh.generator), torch.rand(4, generator=live.generator)
    )
