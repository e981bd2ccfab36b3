"""experiments.coordination_headroom: the value oracle planning alone or as one team."""

from __future__ import annotations

import json

import pytest

from experiments import coordination_headroom as ch


def test_end_to_end_rows_and_refusals(tmp_path, capsys):
    out = tmp_path / "team"
    argv = ["--out", str(out), "--horizons", "5", "--seeds", "2", "--num-envs", "2",
            "--config", json.dumps({"num_items": 300, "reward_mode": "cooperative"})]  # fmt: skip
    assert ch.main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["env"] == "recenv/Market-v0"
    assert [r["policy"] for r in data["rows"]] == [p for p in ch.RULES for _ in range(2)]
    md = (out / "report.md").read_text()
    assert "| page_value_oracle |" in md and "What coordination is worth" in md
    for bad, message in [([], "never overwritten"), (["--seeds", "0"], ">= 1")]:
        with pytest.raises(SystemExit):
            ch.main([*argv, *bad] if bad else argv)
        assert message in capsys.readouterr().err
    assert (out / "report.md").read_text() == md
