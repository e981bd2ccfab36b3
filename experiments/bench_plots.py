r"""The figure of a ``bench_env`` run: how the batched step scales beside VMAS, and where each
of the speed issue's targets stands. Drawn from the run's JSON, so any recorded run can be
drawn again::

    python -m experiments.bench_plots experiments/results/bench_env-vm-20261205T091027Z.json \
        --out /tmp/fig.png

without ``--out`` it writes ``bench_env-vm-20261205T091027Z.png`` beside the JSON; an existing
file is never overwritten (that run's PNG is committed, hence ``--out`` here). ``bench_env``
draws it after each run when matplotlib is installed (the ``plots`` extra).

Left panel: env-steps/s against the number of markets (log-log), recenv eager and compiled
and VMAS ``simple_spread``, one line per thread setting, each point the median of the run's
repeats with its min..max as an error bar; the dashed line is the 250k target. Right panel:
each target as measured over required (for "at most" targets, required over measured), so
every bar passing 1 is a target met.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

Row = Mapping[str, Any]


def _series(rows: Sequence[Row], kind: str, **match: Any) -> dict[int, list[Row]]:
    """The rows of ``kind`` whose fields equal ``match``, by thread count, ordered by
    ``num_envs``."""
    out: dict[int, list[Row]] = {}
    for r in rows:
        if r.get("kind") != kind or r.get("num_envs") is None:
            continue
        if any(r.get(k) != v for k, v in match.items()):
            continue
        out.setdefault(int(r["threads"]), []).append(r)
    return {t: sorted(rs, key=lambda r: r["num_envs"]) for t, rs in sorted(out.items())}


def _scaling(ax, result: Mapping[str, Any]) -> None:
    rows = result.get("rows", [])
    # One colour per implementation; one thread solid, more threads dashed and hollow.
    lines = [
        ("recenv compiled", _series(rows, "batched", compile=True), "o", "tab:blue"),
        ("recenv eager", _series(rows, "batched", compile=False), "s", "tab:green"),
        ("VMAS simple_spread", _series(rows, "vmas_simple_spread"), "^", "tab:purple"),
    ]
    drawn = False
    sizes: set[int] = set()
    for label, by_threads, marker, color in lines:
        for threads, rs in by_threads.items():
            sizes.update(r["num_envs"] for r in rs)
            x = [r["num_envs"] for r in rs]
            y = [r["median"] for r in rs]
            err = [
                [max(r["median"] - r["min"], 0.0) for r in rs],
                [max(r["max"] - r["median"], 0.0) for r in rs],
            ]
            thread_word = "thread" if threads == 1 else "threads"
            ax.errorbar(
                x,
                y,
                yerr=err,
                marker=marker,
                color=color,
                linestyle="-" if threads == 1 else "--",
                markerfacecolor=color if threads == 1 else "white",
                capsize=3,
                label=f"{label}, {threads} {thread_word}",
            )
            drawn = True
    targets = result.get("targets", {})
    target = targets.get("batched_env_steps_per_s")
    if target:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        at = targets.get("batched_num_envs")
        ax.annotate(
            f"target {target:,.0f}" + (f" (at {at:,} markets, 1 thread)" if at else ""),
            (0.02, target),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color="grey",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if sizes:
        ticks = sorted(sizes)
        ax.set_xticks(ticks, [f"{n:,}" for n in ticks])
    ax.set_xlabel("markets (num_envs)")
    ax.set_ylabel("env-steps/s (median, min..max)")
    ax.set_title("Batched step")
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no batched rows", ha="center", va="center", transform=ax.transAxes)


def target_scores(result: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    """Each target the run measured as ``(label, score, value)``: ``score`` is measured over
    required (required over measured for the catalog ratio and the memory, which must stay
    under a bound), so a score of at least 1 is a target met; ``value`` is the figure as
    printed. Targets the run did not measure are left out."""
    targets = result.get("targets", {})
    rows = result.get("rows", [])
    out: list[tuple[str, float, str]] = []

    face = [r for r in rows if r.get("kind") == "pettingzoo_face" and r.get("compile")]
    if face and targets.get("pettingzoo_face_steps_per_s"):
        v = face[0]["median"]
        out.append(("face steps/s", v / targets["pettingzoo_face_steps_per_s"], f"{v:,.0f}"))
    for r in result.get("ratios", []):
        if r.get("name") == "pettingzoo_face/mpe2" and r.get("compile"):
            out.append(("face / mpe2", r["ratio"] / r["target"], f"{r['ratio']:.2f}x"))
    for r in result.get("batched_target", []):
        if r.get("compile"):
            label = f"{r['num_envs']:,} markets, {r['threads']} thread"
            target = targets.get("batched_env_steps_per_s")
            if target:
                v = r["env_steps_per_s"]
                out.append((label, v / target, f"{v / 1e3:,.1f}k"))
    for r in result.get("traffic", []):
        if r.get("compile") and r.get("threads") == 1 and targets.get("fraction_of_copy_bandwidth"):
            f = r["fraction_of_copy_bandwidth"]
            out.append(("copy bandwidth", f / targets["fraction_of_copy_bandwidth"], f"{f:.1%}"))
    for r in result.get("ratios", []):
        if r.get("name") == "batched/vmas" and r.get("compile"):
            threads = r.get("threads", 1)
            label = f"recenv / VMAS, {r['num_envs']:,} markets, {threads} thread"
            label += "s" if threads != 1 else ""
            out.append((label, r["ratio"] / r["target"], f"{r['ratio']:.2f}x"))
    catalog = result.get("catalog_ratio", {})
    bound = targets.get("catalog_ratio_max_speed")
    small, large = catalog.get("items") or (1_000, 1_000_000)
    sizes = "10^6 / 10^3" if (small, large) == (1_000, 1_000_000) else f"{large:,} / {small:,}"
    for mode in ("compiled", "eager"):
        ratio = catalog.get(f"ratio_{mode}")
        if ratio and bound:
            out.append((f"{sizes} items, {mode}", bound / ratio, f"{ratio:.2f}x"))
    memory = result.get("memory_check") or {}
    if memory.get("rss_growth") and memory.get("limit_bytes"):
        gib = memory["rss_growth"] / 2**30
        label = f"memory, {memory['num_envs']:,} x {memory['num_users']:,} users"
        out.append((label, memory["limit_bytes"] / memory["rss_growth"], f"{gib:.2f} GiB"))
    return [(label, s, v) for label, s, v in out if math.isfinite(s)]


def _targets(ax, result: Mapping[str, Any]) -> None:
    scores = target_scores(result)
    if not scores:
        ax.text(0.5, 0.5, "no targets measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels, values, shown = zip(*reversed(scores), strict=True)  # the first target on top
    colors = ["tab:green" if s >= 1 else "tab:red" for s in values]
    ax.barh(range(len(values)), values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    for i, (s, v) in enumerate(zip(values, shown, strict=True)):
        ax.annotate(v, (s, i), textcoords="offset points", xytext=(3, 0), va="center", fontsize=8)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.set_xlim(0, max(max(values) * 1.25, 1.3))
    ax.set_xlabel("measured / required (>= 1: met)")
    ax.set_title("Targets")


def bench_figure(result: Mapping[str, Any], path: str | Path | None = None) -> Figure:
    """The two panels of a ``bench_env`` result (its JSON as a dict); saved as PNG to
    ``path`` when given (which must not exist)."""
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    _scaling(left, result)
    _targets(right, result)
    git = result.get("git") or ""
    machine = result.get("machine") or {}
    cpu = " ".join(str(machine[k]) for k in ("cpu_model", "cpu_capability") if machine.get(k))
    fig.suptitle(
        f"{result.get('env', 'recenv')}: torch {result.get('torch', '?')}, {cpu or 'CPU'}"
        + (f", commit {git[:7]}" if isinstance(git, str) and git else "")
        + (f", {result['time']}" if result.get("time") else ""),
        fontsize=10,
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # "x": created here or refused, as bench_env.write_result writes the JSON
            with open(path, "xb") as f:
                fig.savefig(f, format="png", dpi=110)
        except FileExistsError as e:
            raise FileExistsError(f"{path} exists; results are never overwritten") from e
    return fig


def main(argv: Sequence[str] | None = None) -> Path:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("result", type=Path, help="a bench_env JSON")
    p.add_argument("--out", type=Path, default=None, help="PNG path (must not exist)")
    args = p.parse_args(argv)
    try:
        result = json.loads(args.result.read_text())
    except (OSError, json.JSONDecodeError) as e:
        p.error(f"cannot read {args.result}: {e}")
    if not isinstance(result, dict) or "rows" not in result:
        p.error(f"{args.result} is not a bench_env result (no 'rows')")
    out = args.out or args.result.with_suffix(".png")
    try:
        bench_figure(result, out)
    except FileExistsError as e:
        p.error(str(e))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
