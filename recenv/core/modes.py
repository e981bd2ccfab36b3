"""The caller's process-wide torch modes, kept out of the market's state.

A market copied (``copy.deepcopy``, pickle) inside the caller's ``torch.inference_mode()``
gets inference tensors: SuperSuit's vector envs copy the market they are given, so an SB3
view built inside an evaluation's inference mode held them, and its first ``reset`` (which
leaves the caller's inference mode, as ``step`` does) could not update them in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


def normal_tensors(x: Any) -> Any:
    """``x`` with every inference tensor in it replaced by a normal copy (same values, dtype,
    device and strides); tensors directly in ``x`` or in its tuples, lists and dataclass
    fields (dataclasses updated in place). Anything without an inference tensor is returned
    as it is, at the cost of a walk: for state being restored, not for a step."""
    if isinstance(x, torch.Tensor):
        if not x.is_inference():
            return x
        with torch.inference_mode(False):
            return x.clone()
    if isinstance(x, list):
        return [normal_tensors(v) for v in x]
    if isinstance(x, tuple):
        values = [normal_tensors(v) for v in x]
        return type(x)(*values) if hasattr(x, "_fields") else tuple(values)  # a namedtuple
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        for field in dataclasses.fields(x):
            value = getattr(x, field.name, None)
            new = normal_tensors(value)
            if new is not value:
                object.__setattr__(x, field.name, new)  # frozen dataclasses too
    return x
