"""A step reads the device from the host only where it must.

On CUDA every read of a tensor's value on the host (``bool(t)``, ``.item()``, ``nonzero``,
boolean indexing) and every Python value copied to the device (``torch.as_tensor(0.5,
device=...)``) makes the host wait for the GPU, which drains the queue of kernels the host
had run ahead with. The first GPU run found ~5 such waits a step; two are the step's own
decisions (the action check of ``invalid_slate="raise"``, which must see the slates before
the state changes, and whether some market's episode ended, which decides whether the
episode metrics run). The other three were Python numbers copied to the device.

CI has no GPU, so this counts, on the CPU, the ATen ops that wait when they run on CUDA, in
the torch forms a CUDA step runs (``RECENV_NATIVE=0``). Steps on which an episode ends may
do more (the episode metrics are read back for the info dict); the steps counted here end
none.
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import recenv

# ATen ops that make the host wait for a CUDA device: reading a value (_local_scalar_dense:
# bool(), .item(); nonzero and the ops built on it), or building a tensor from Python data
# on the host and copying it over (lift_fresh: torch.tensor / torch.as_tensor of data).
WAITING_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "repeat_interleave",
    "unique",
    "_unique2",
    "unique_consecutive",
    "bincount",
    "histc",
    "lift_fresh",
    "lift_fresh_copy",
}

INDEXING_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}


class _CountWaits(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in WAITING_OPS:
            self.counts[name] += 1
        elif name in INDEXING_OPS and len(args) > 1 and isinstance(args[1], (list, tuple)):
            # Boolean-mask indexing runs nonzero inside the kernel on CUDA.
            if any(torch.is_tensor(i) and i.dtype == torch.bool for i in args[1]):
                self.counts[f"{name} (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))


def test_a_step_waits_on_the_host_only_for_its_two_decisions(env_id, small, monkeypatch):
    monkeypatch.setenv("RECENV_NATIVE", "0")  # the torch forms, as a CUDA step runs them
    env = recenv.make_vec(env_id, num_envs=8, seed=0, **small(env_id, horizon=30))
    env.reset()
    for step in range(6):
        slates = env.oracle_slates()
        actions = {a: slates[:, i] for i, a in enumerate(env.agents)}
        with _CountWaits() as waits:
            _, _, terminated, truncated, _ = env.step(actions)
        assert not bool((terminated | truncated).any()), f"an episode ended at step {step}"
        # One for the action check, one for "did an episode end".
        assert dict(waits.counts) == {"_local_scalar_dense": 2}, (step, dict(waits.counts))


def test_the_count_sees_each_kind_of_wait():
    """The counter is not blind: a value read, a boolean mask and Python data each count."""
    x = torch.arange(5.0)
    with _CountWaits() as waits:
        bool(x.sum())
        x[x > 2]
        torch.as_tensor([1.0])
    assert dict(waits.counts) == {
        "_local_scalar_dense": 1,
        "index (boolean mask)": 1,
        "lift_fresh": 1,
    }
