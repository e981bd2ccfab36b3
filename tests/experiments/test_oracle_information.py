"""experiments.oracle_information: the value oracle kept from latent parts, and its report."""

from __future__ import annotations

import json

import pytest

from experiments import oracle_information as oi


def test_end_to_end_rows_labels_and_refusals(tmp_path, capsys):
    out = tmp_path / "info"
    argv = ["--out", str(out), "--horizons", "5", "--seeds", "2", "--num-envs", "2",
            "--hide", "boredom", "interest,taste,boredom,quality",
            "--config", json.dumps({"num_items": 300})]  # fmt: skip
    assert oi.main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    labels = ["value_oracle", "without boredom", "sees only the observation"]
    assert [r["policy"] for r in data["rows"]] == [p for p in labels for _ in range(2)]
    assert data["settings"]["hide"] == ["boredom", "interest,taste,boredom,quality"]
    md = (out / "report.md").read_text()
    assert "| sees only the observation |" in md and "| value_oracle |" in md
    before = md
    for bad, message in [
        ([], "never overwritten"),
        (["--hide", "mood"], "allowed: comma-separated parts"),
        (["--hide", " "], "hides nothing"),
        (["--horizons", "0"], ">= 1"),
    ]:
        with pytest.raises(SystemExit):
            oi.main([*argv, *bad] if bad else argv)
        assert message in capsys.readouterr().err
    assert (out / "report.md").read_text() == before


def test_default_variants_hide_each_part_then_all():
    rules = oi.rules(oi.DEFAULT_HIDE)
    assert list(rules) == [
        "value_oracle", "without interest", "without taste", "without boredom",
        "without quality", "sees only the observation",
    ]  # fmt: skip
    assert rules["sees only the observation"] == (
        "value_oracle", {"hide": "interest,taste,boredom,quality"}
    )  # fmt: skip
