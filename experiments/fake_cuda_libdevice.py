"""Triton-math forms of the ``libdevice`` functions inductor's kernels of the step call, for
Triton's interpreter, which cannot call CUDA's math library (``experiments.fake_cuda``).

A module of its own: the interpreter runs a jit function with ``triton.language`` taken
from the function's module globals. Imported only where Triton is installed. Results agree
with libdevice's to rounding, not bit for bit.
"""

import triton
import triton.language as tl


@triton.jit
def exp(x):
    return tl.exp(x)


@triton.jit
def log1p(x):
    return tl.log(1.0 + x)  # (libdevice's is exact near 0; results are compared to rounding)


@triton.jit
def floor(x):
    return tl.floor(x)


@triton.jit
def ceil(x):
    return tl.ceil(x)


@triton.jit
def signbit(x):
    # (inductor calls it on float32 only)
    return (x.to(tl.int32, bitcast=True) < 0).to(tl.int32)


FORMS = {"exp": exp, "log1p": log1p, "floor": floor, "ceil": ceil, "signbit": signbit}
