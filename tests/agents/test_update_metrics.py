"""UpdateMetrics: the averaging window of IQL / VDN / QMIX training statistics."""

import io

import pytest
import torch

from agents.update_metrics import UpdateMetrics


def test_reports_the_mean_once_due_and_starts_over():
    m = UpdateMetrics()
    for v in (1.0, 2.0):
        m.add({"losses/td": torch.tensor(v)})
        assert m.report(3) == {}
    m.add({"losses/td": torch.tensor(6.0)})
    assert m.report(3) == {"losses/td": pytest.approx(3.0)}
    assert m.updates == 0 and m.sums == {} and m.report(1) == {}


def test_add_does_not_alias_or_keep_the_graph():
    m = UpdateMetrics()
    w = torch.tensor(2.0, requires_grad=True)
    first = (w * 1.0).clone()
    m.add({"x": first})
    first.data.fill_(100.0)  # the caller reusing its tensor does not move the sum
    m.add({"x": w * 3.0})
    assert not m.sums["x"].requires_grad
    assert m.report(2) == {"x": pytest.approx(4.0)}


def test_pending_window_survives_a_weights_only_checkpoint():
    m = UpdateMetrics()
    m.add({"losses/td": torch.tensor(1.5), "charts/q": torch.tensor(-2.0)})
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    back = UpdateMetrics()
    back.load_state_dict(torch.load(buf, weights_only=True))
    back.add({"losses/td": torch.tensor(2.5), "charts/q": torch.tensor(0.0)})
    assert back.report(2) == {"losses/td": pytest.approx(2.0), "charts/q": pytest.approx(-1.0)}
    old = UpdateMetrics()
    old.load_state_dict({})  # an agent checkpoint from before the window was saved
    assert old.updates == 0 and old.sums == {}


def test_a_long_window_keeps_the_small_updates_a_float32_sum_drops():
    """At a large ``metrics_every`` the sum passes float32's exact integers: 2**24 + 1.0 is
    2**24 in float32, so a float32 sum would report 2**24 / 3 here; the float64 sum keeps
    every update (and a checkpoint written with float32 sums still loads, widened)."""
    m = UpdateMetrics()
    for v in (2.0**24, 1.0, 1.0):
        m.add({"losses/td": torch.tensor(v, dtype=torch.float32)})
    assert m.sums["losses/td"].dtype == torch.float64
    assert m.report(3) == {"losses/td": (2.0**24 + 2.0) / 3}
    old = {"metric_sums": {"losses/td": torch.tensor(2.0**24)}, "metric_updates": 1}
    back = UpdateMetrics()
    back.load_state_dict(old)
    back.add({"losses/td": torch.tensor(1.0)})
    assert back.report(2) == {"losses/td": (2.0**24 + 1.0) / 2}
