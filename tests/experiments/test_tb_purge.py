"""A resumed run's TensorBoard writer hides what earlier writers logged from its
``purge_step`` on, in both of TensorBoard's loaders, even over event files whose writer
never wrote a ``SessionLog.START`` (a plain ``SummaryWriter``, or an older recenv)."""

from __future__ import annotations

from experiment_helpers import tensorboard
from torch.utils.tensorboard import SummaryWriter

from experiments.tb import RunLogger

TAG = "charts/episodic_return"


def test_a_resumed_writer_purges_event_files_written_without_a_start(tmp_path):
    """The resumed writer's START is then the run's first, which TensorBoard's Python loader
    (``--load_fast=false``) ignores; its second START is the one that purges there."""
    old = SummaryWriter(log_dir=str(tmp_path))
    for step in range(0, 50, 10):
        old.add_scalar(TAG, float(step), step)
    old.close()
    log = RunLogger(tmp_path, purge_step=20)
    log.hyperparameters({"seed": 0})
    for step in (20, 30):
        log.scalars(step, {TAG: 10.0 * step})
    log.close()
    scalars, texts = tensorboard(tmp_path)  # both loaders, which must agree
    assert texts == 1
    assert scalars[TAG] == [(0, 0.0), (10, 10.0), (20, 200.0), (30, 300.0)]
