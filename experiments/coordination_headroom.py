"""Is there anything for coordination to win? The one-step value oracle that plans each
agent's slate alone, against the same oracle planning the whole shared page as one team.

Centralised critics and value decomposition (MAPPO, VDN, QMIX) can only beat independent
learners where the agents' best slates, chosen apart, are not the best page together: on a
shared page the agents' items compete for one click, so a team would not show two slates
that take each other's clicks. Before asking whether a centralised learner finds that, ask
how much it is worth. This evaluates, on the true model (privileged, nothing learned):

- ``value_oracle``: each agent's slate of most expected reward, the other agents' items left
  out (``oracle_slates("value")``);
- ``page_value_oracle``: the page built greedily in page order, each slot taking its agent's
  candidate that most raises the page's total expected reward (``"page_value"``);
- both again seeing only an agent's observation (``hide`` every latent part, as in
  ``experiments.oracle_information``), where today's learners are: the prize a team of such
  learners could win over independent ones.

The total engagement of all agents is what a cooperative team is paid (its reward in
``reward_mode="cooperative"``). Under ``topology="platform_choice"`` a user sees one
platform's slate and the two plans are the same.

Usage::

    python -m experiments.coordination_headroom --out experiments/results/coordination
    python -m experiments.coordination_headroom --env recenv/Video-v0 --out /tmp/video_team

Writes ``OUT/results.json`` and ``OUT/report.md`` (``OUT`` must not exist); markets,
episodes and options as ``experiments.lookahead_headroom``'s.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from experiments import lookahead_headroom as lh
from experiments.oracle_information import PARTS

RULES: dict[str, tuple[str, dict[str, Any]]] = {
    "value_oracle": ("value_oracle", {}),
    "page_value_oracle": ("value_oracle", {"plan": "page"}),
    "value_oracle, observation only": ("value_oracle", {"hide": ",".join(PARTS)}),
    "page_value_oracle, observation only": (
        "value_oracle",
        {"hide": ",".join(PARTS), "plan": "page"},
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.coordination_headroom", description=__doc__.split("\n\n")[0]
    )
    lh.arguments(p)
    p.set_defaults(
        env="recenv/Market-v0", config={"reward_mode": "cooperative"}, horizons="100,200"
    )
    args = p.parse_args(argv)
    horizons = lh.horizons_of(p, args)
    title = f"# What coordination is worth: {args.env} with {json.dumps(args.config)}"
    what = "Privileged one-step rules, each agent's slate planned alone or the page as one team"
    return lh.run("experiments.coordination_headroom", RULES, args, horizons, argv, title, what)


if __name__ == "__main__":
    raise SystemExit(main())
