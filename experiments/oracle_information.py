"""What is each piece of the hidden user and item state worth? The one-step value oracle, kept
from reading one latent part at a time, and from all of them.

On harsh Video-v0 the learners (IQL at every γ, LinUCB) stop at about half of what the
privileged one-step oracles earn. Either they fail to learn what their observation affords, or
the observation does not carry what the oracles' lead is made of. This separates the two
without training anything: the value oracle (``oracle_slates("value")``) is run with a latent
part replaced by what agents observe of it or its population mean
(``BatchedMarket.oracle_view(hide=...)``):

- ``interest``: the observation's noisy, partly hidden interests instead of the true ones;
- ``taste``: 0 instead of the latent taste (dotted with item embeddings agents never see);
- ``boredom``: 0 instead of the user's per-topic boredom;
- ``quality``: the observed (noisy) item quality instead of the true one;
- all four at once: an oracle that knows the model's equations and weights but sees only the
  observation, as an agent does. What it earns is about what a one-step learner can reach
  from the observation alone, if it learned the model exactly (the ``history`` columns, which
  it does not read, could tell a learner more, e.g. about boredom).

Usage::

    python -m experiments.oracle_information --out experiments/results/oracle_information
    python -m experiments.oracle_information --horizons 1000 --out /tmp/info

Writes ``OUT/results.json`` (every run) and ``OUT/report.md`` (``OUT`` must not exist);
markets, episodes and options as ``experiments.lookahead_headroom``'s.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from agents.baselines import hidden_parts
from experiments import lookahead_headroom as lh

# What the default run hides: each observable stand-in alone, then all of them.
PARTS = ("interest", "taste", "boredom", "quality")
DEFAULT_HIDE = (*PARTS, ",".join(PARTS))


def rules(hides: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label -> (agent name, config): the full value oracle, then one per ``hide``."""
    out: dict[str, tuple[str, dict[str, Any]]] = {"value_oracle": ("value_oracle", {})}
    for hide in hides:
        label = "sees only the observation" if set(hidden_parts("", hide)) >= set(PARTS) else (
            f"without {hide.replace(',', ', ')}"
        )  # fmt: skip
        out[label] = ("value_oracle", {"hide": hide})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.oracle_information", description=__doc__.split("\n\n")[0]
    )
    lh.arguments(p)
    p.add_argument(
        "--hide",
        nargs="+",
        default=list(DEFAULT_HIDE),
        help="one value-oracle variant per argument: the comma-separated latent parts it does "
        "not read (BatchedMarket.oracle_view)",
    )
    args = p.parse_args(argv)
    try:
        for hide in args.hide:
            if not hidden_parts("value_oracle", hide):
                raise ValueError(f"--hide {hide!r} hides nothing (the full oracle always runs)")
    except ValueError as e:
        p.error(str(e))
    horizons = lh.horizons_of(p, args)
    title = f"# What the oracle's knowledge is worth: {args.env} with {json.dumps(args.config)}"
    what = (
        "The one-step value oracle, each variant kept from reading the latent parts it is "
        "named without (replaced by what agents observe of them or their mean)"
    )
    return lh.run("experiments.oracle_information", rules(args.hide), args, horizons, argv,
                  title, what)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
