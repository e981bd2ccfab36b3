"""A compiled market built from inductor's cache under another vector ISA (recenv.core.vecisa).

torch's FX-graph cache key leaves out the vector ISA inductor generates CPU loops for, and
the cached C++ is compiled again with the flags of the ISA picked at load time: without the
width pinned in the key, a graph cached under the CPU's best ISA and loaded under another
runs loops of one width over vectors of another (the 4,096-market step segfaulted under
``ATEN_CPU_CAPABILITY=avx2`` after an AVX-512 run; under ``default``, no vector ISA, the
cached vector code fails to compile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recenv.core.vecisa import cpu_simdlen

ROOT = Path(__file__).resolve().parents[1]

# Compiles a market (inductor's cache: TORCHINDUCTOR_CACHE_DIR) and steps it beside an eager
# one; prints the largest observation and reward difference and the width it compiled for.
_CHILD = r"""
import json, sys
import torch
torch.set_num_threads(1)
import recenv
from recenv.core.vecisa import cpu_simdlen
kw = {"num_items": 400, "horizon": 12, "num_users": 8}
n = int(sys.argv[1])
eager = recenv.make_vec("recenv/Market-v0", num_envs=n, seed=3, **kw)
compiled = recenv.make_vec("recenv/Market-v0", num_envs=n, seed=3, **kw).compile()
worst = 0.0
for env in (eager, compiled):
    env.reset(seed=3)
for _ in range(14):  # crosses an auto-reset
    out = []
    for env in (eager, compiled):
        slates = env.oracle_slates()
        obs, rew, *_ = env.step({a: slates[:, i] for i, a in enumerate(env.agents)})
        out.append((obs, rew))
    (o1, r1), (o2, r2) = out
    for a in eager.agents:
        worst = max(worst, float((r1[a] - r2[a]).abs().max()))
        for key, x in o1[a].items():
            worst = max(worst, float((x.double() - o2[a][key].double()).abs().max()))
print(json.dumps({"worst": worst, "simdlen": cpu_simdlen()}))
"""


def _child(cache: Path, capability: str | None, num_envs: int) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(num_envs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_simdlen_is_the_width_inductor_picks(monkeypatch):
    from torch._inductor import cpu_vec_isa

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert cpu_simdlen() == (cpu_vec_isa.pick_vec_isa().bit_width() or 1)
    # No vector ISA: scalar code, which simdlen=1 also asks for (no ISA is 1 bit wide).
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert cpu_simdlen() == 1
    with torch._inductor.config.patch({"cpp.simdlen": 1}):
        assert not cpu_vec_isa.pick_vec_isa()


@pytest.mark.skipif(sys.platform != "linux", reason="inductor's CPU backend as CI runs it")
@pytest.mark.parametrize("num_envs", [32, 1], ids=["batched", "one_market_stack_graph"])
def test_graph_cached_under_another_isa_is_not_reused(tmp_path, monkeypatch, num_envs):
    """The same market compiled in two processes sharing one inductor cache: first with the
    CPU's best vector ISA, then with none (``ATEN_CPU_CAPABILITY=default``). The second must
    build its own scalar graph and step as eager does, not rebuild the first's vector code
    with scalar flags. One market compiles through ``InductorCapture`` (its graph's buffers
    on the stack), more through ``torch.compile``'s inductor: both pass the width."""
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    if cpu_simdlen() == 1:
        pytest.skip("no vector ISA here: both processes would pick the same (scalar) code")
    best = _child(tmp_path, None, num_envs)
    scalar = _child(tmp_path, "default", num_envs)
    assert best["simdlen"] > 1 and scalar["simdlen"] == 1
    assert best["worst"] < 1e-3, best
    assert scalar["worst"] < 1e-3, scalar
