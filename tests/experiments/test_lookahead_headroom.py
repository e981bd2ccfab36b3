"""experiments.lookahead_headroom: the blended privileged rule and the report."""

from __future__ import annotations

import json

import pytest
import torch

import recenv
from experiments import lookahead_headroom as lh
from recenv.core.response import expected_click_value

VIDEO = {"num_items": 400, "horizon": 6}


def test_the_blend_at_its_ends_is_the_utility_oracle_and_expected_value_ranking():
    env = recenv.make_vec("recenv/Video-v0", num_envs=6, seed=3, **VIDEO)
    obs = env.reset(seed=3)
    K = env.config.slate_size
    utility, length, price = env.oracle_view()
    keep_all = lh.BlendOracle(env, lh.BlendConfig(keep=1.0)).act(obs)
    keep_none = lh.BlendOracle(env, lh.BlendConfig(keep=0.0)).act(obs)
    by_utility = env.oracle_slates("utility")
    for j, a in enumerate(env.agents):
        torch.testing.assert_close(keep_all[a], by_utility[:, j], rtol=0, atol=0)
        # λ = 0: a candidate's odds times its click value, exp(u / T) · v, ranked.
        u = utility[:, j]
        v = expected_click_value(env.config, u, length[:, j], price[:, j])
        expected = (torch.exp(u / env.config.temperature) * v).topk(K, dim=1).indices
        torch.testing.assert_close(keep_none[a], expected, rtol=0, atol=0)
    # Not the same slates: the test would pass vacuously on a market where they agree.
    assert not torch.equal(keep_all["agent_0"], keep_none["agent_0"])


def test_end_to_end_report_and_refusals(tmp_path, capsys):
    out = tmp_path / "headroom"
    argv = ["--out", str(out), "--horizons", "4,8", "--keeps", "0.5", "--seeds", "2",
            "--num-envs", "2", "--config", json.dumps({"num_items": 300})]  # fmt: skip
    assert lh.main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert {(r["horizon"], r["policy"]) for r in data["rows"]} == {
        (h, p) for h in (4, 8) for p in ("value_oracle", "utility_oracle", "blend λ=0.5")
    }
    assert all(r["length"] <= r["horizon"] for r in data["rows"])
    md = (out / "report.md").read_text()
    assert "**Horizon 8**" in md and "| value_oracle |" in md and "1.000" in md
    before = md
    for bad, message in [
        ([], "never overwritten"),
        (["--keeps", "1.5"], "--keeps in [0, 1]"),
        (["--config", '{"horizon": 5}'], "without horizon"),
    ]:
        with pytest.raises(SystemExit):
            lh.main([*argv, *bad] if bad else argv)
        assert message in capsys.readouterr().err
    assert (out / "report.md").read_text() == before
    with pytest.raises(ValueError, match="not_a_field"):
        lh.main(["--out", str(tmp_path / "x"), "--config", '{"not_a_field": 1}'])
    assert not (tmp_path / "x").exists()
