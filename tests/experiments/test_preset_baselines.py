"""The baselines the preset pages quote are what the code gives (``experiments.preset_baselines``).

They are exact seed-0 figures, so any change to a trajectory or to an agent's draws moves
them; by the fiftieth session they were 1-3 % stale on every page. This test measures them
as the pages state them (64 markets, one episode, seed 0: ~15 s here) and reads each figure
on the page.
"""

from __future__ import annotations

import importlib
import re

import pytest

from experiments import preset_baselines

PAGES = {
    "recenv/Music-v0": "recenv.scenarios.music",
    "recenv/Video-v0": "recenv.scenarios.video",
    "recenv/ECommerce-v0": "recenv.scenarios.ecommerce",
}


# Each figure as the page words it (whitespace normalised): a regex with one number.
QUOTES = {
    "oracle": r"the myopic oracle earns ([0-9.]+) ",
    "uniform_random": r"uniformly random valid slates ([0-9.]+) \(",
    "oracle_over_uniform_random": r"uniformly random valid slates [0-9.]+ \(× ([0-9.]+);",
    "random": r"``agents\.evaluate`` earns ([0-9.]+)\)",
    "value_oracle": r"earns ([0-9.]+) \(× [0-9.]+ the oracle's\)",
    "value_oracle_over_oracle": r"earns [0-9.]+ \(× ([0-9.]+) the oracle's\)",
}


@pytest.mark.parametrize("preset", preset_baselines.PRESETS)
def test_each_preset_page_quotes_the_baselines_the_code_gives(preset):
    """Each figure on the page is the measured one, rounded as printed (1 decimal, ratios 2).
    A last-digit slack of 1e-4 relative: another CPU's vector width can move a float sum in
    its last bits (README, "Reproducibility"), which must not fail a figure that sits on a
    rounding edge; a stale figure was off by 0.7 or more."""
    r = preset_baselines.measure(preset, num_envs=64, seed=0)
    page = " ".join(importlib.import_module(PAGES[preset]).__doc__.split())
    wrong = {}
    for key, pattern in QUOTES.items():
        found = re.search(pattern, page)
        assert found, f"{preset}'s page no longer words its {key} as {pattern!r}"
        quoted, digits = float(found.group(1)), 2 if "_over_" in key else 1
        if abs(quoted - r[key]) > 0.5 * 10**-digits + 1e-4 * abs(r[key]):
            wrong[key] = f"page {found.group(1)}, measured {r[key]:.{digits}f}"
    assert not wrong, f"{preset}'s page is stale: {wrong} (python -m experiments.preset_baselines)"


def test_the_script_prints_and_writes_a_smoke_run(tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["--presets", "recenv/Music-v0", "--num-envs", "2", "--horizon", "5"]
    assert preset_baselines.main([*args, "--out", str(out)]) == 0
    assert "| recenv/Music-v0 |" in capsys.readouterr().out
    import json

    result = json.loads(out.read_text())
    assert set(result["presets"]["recenv/Music-v0"]) >= {"oracle", "uniform_random", "random"}
    with pytest.raises(SystemExit, match="never overwritten"):
        preset_baselines.main([*args, "--out", str(out)])
