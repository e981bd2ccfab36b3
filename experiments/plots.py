"""Figures of a comparison, written as PNG: learning curves and market share over training
(mean over seeds with a 95 % CI band) and final metrics (bars with 95 % CI error bars).

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend
switch): they save headless anywhere and display inline in notebooks. Each function returns
the figure; ``path`` (optional) saves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from experiments.report import METRICS, mean_ci

Curves = Mapping[tuple[str, str], Sequence[Sequence[Mapping[str, float]]]]


def _short(env_id: str) -> str:
    return env_id.rpartition("/")[2]


def _band(runs: Sequence[Sequence[Mapping[str, float]]], key: str):
    """Steps, mean and CI half width of ``key`` over runs, on the steps of the run with the
    most points (others interpolated; each run only within its own range)."""
    series = []
    for run in runs:
        pts = [(p["step"], p[key]) for p in run if key in p and math.isfinite(p[key])]
        if pts:
            series.append(np.array(pts, dtype=np.float64))
    if not series:
        return None
    grid = max(series, key=len)[:, 0]
    values = np.full((len(series), grid.size), np.nan)
    for i, s in enumerate(series):
        inside = (grid >= s[0, 0]) & (grid <= s[-1, 0])
        values[i, inside] = np.interp(grid[inside], s[:, 0], s[:, 1])
    stats = [mean_ci(values[:, j].tolist()) for j in range(grid.size)]
    mean = np.array([m for m, _, _ in stats])
    ci = np.array([0.0 if not math.isfinite(c) else c for _, c, _ in stats])
    return grid, mean, ci


def _envs(curves: Curves) -> list[str]:
    return list(dict.fromkeys(env for env, _ in curves))


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _title(title: str, note: str) -> str:
    """``title``, with ``note`` (say, that the comparison is unfinished) on a line below."""
    return f"{title}\n{note}" if note else title


def curve_figure(
    curves: Curves,
    key: str,
    ylabel: str,
    title: str,
    path: str | Path | None = None,
    note: str = "",
) -> Figure:
    """One panel per env, one line per agent: ``key`` of the curve points against env steps,
    mean over seeds with a 95 % CI band."""
    envs = _envs(curves)
    if not envs:
        return _save(_no_data(_title(title, note)), path)
    # One colour per agent in every panel (an agent missing from one env, say in a partial
    # comparison, must not pass its colour on to the next), and one legend entry per agent
    # from every panel, with its number of seeds in each env.
    agents = list(dict.fromkeys(a for _, a in curves))
    colors = {a: f"C{i % 10}" for i, a in enumerate(agents)}
    seeds: dict[str, list[int]] = {a: [] for a in agents}
    handles: dict[str, Any] = {}
    fig = Figure(figsize=(5.2 * len(envs) + 1.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(envs), squeeze=False)[0]
    for ax, env in zip(axes, envs, strict=True):
        for agent in [a for e, a in curves if e == env]:
            band = _band(curves[(env, agent)], key)
            if band is None:
                continue
            x, m, ci = band
            seeds[agent].append(len(curves[(env, agent)]))
            (line,) = ax.plot(x, m, color=colors[agent], label=agent, linewidth=1.6)
            ax.fill_between(x, m - ci, m + ci, color=colors[agent], alpha=0.2, linewidth=0)
            handles.setdefault(agent, line)
        ax.set_title(_short(env))
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    labels = [f"{a} (n={'/'.join(str(n) for n in dict.fromkeys(seeds[a]))})" for a in handles]
    fig.legend(list(handles.values()), labels, loc="outside right upper", fontsize=8)
    fig.suptitle(_title(title, note))
    return _save(fig, path)


def _no_data(title: str) -> Figure:
    """A figure that says it has nothing to show (a partial comparison with no finished
    run), instead of an error or a blank image."""
    fig = Figure(figsize=(5.2, 3.0), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, "no finished runs to show", ha="center", va="center")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def learning_curves(curves: Curves, path: str | Path | None = None, note: str = "") -> Figure:
    """Episodic return of the agent under test during training (exploration on)."""
    return curve_figure(
        curves,
        "return",
        "episodic return",
        "Learning curves: mean ± 95 % CI over seeds",
        path,
        note,
    )


def market_share(curves: Curves, path: str | Path | None = None, note: str = "") -> Figure:
    """Share of the users' choices won by the agent under test during training."""
    return curve_figure(
        curves,
        "market_share",
        "market share",
        "Market share of the agent under test over training: mean ± 95 % CI",
        path,
        note,
    )


FIGURES = ("learning_curves", "market_share", "final_metrics")


def comparison_figures(
    curves: Curves, table: Sequence[Mapping[str, Any]], out: str | Path, note: str = ""
) -> dict[str, Path]:
    """A comparison's three figures written into the directory ``out``: learning curves,
    market share and final metrics, each titled with ``note`` when there is one (an
    unfinished comparison's). Returns ``{figure name: PNG path}``."""
    out = Path(out)
    figures = {name: out / f"{name}.png" for name in FIGURES}
    learning_curves(curves, figures["learning_curves"], note)
    market_share(curves, figures["market_share"], note)
    final_metrics(table, path=figures["final_metrics"], note=note)
    return figures


def final_metrics(
    table: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str, bool]] = METRICS,
    path: str | Path | None = None,
    note: str = "",
) -> Figure:
    """One panel per metric: a bar per agent (grouped by env) at the mean over seeds, with
    95 % CI error bars."""
    cols = [(m, t, hi) for m, t, hi in metrics if any(f"{m}_mean" in r for r in table)]
    if not cols:
        return _save(_no_data(_title("Final metrics: mean ± 95 % CI over seeds", note)), path)
    envs = list(dict.fromkeys(r["env"] for r in table))
    agents = list(dict.fromkeys(r["agent"] for r in table))
    ncol = min(4, len(cols))
    nrow = -(-len(cols) // ncol)
    fig = Figure(figsize=(3.6 * ncol, 2.9 * nrow + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    width = 0.8 / max(1, len(agents))
    colors = [f"C{i}" for i in range(len(agents))]
    for ax, (m, title, hi) in zip(axes, cols, strict=False):
        for i, agent in enumerate(agents):
            xs, ys, es = [], [], []
            for j, env in enumerate(envs):
                r = next((r for r in table if r["env"] == env and r["agent"] == agent), None)
                if r is None:
                    continue
                xs.append(j + (i - (len(agents) - 1) / 2) * width)
                ys.append(r.get(f"{m}_mean", math.nan))
                ci = r.get(f"{m}_ci95", math.nan)
                es.append(ci if math.isfinite(ci) else 0.0)
            ax.bar(xs, ys, width, yerr=es, capsize=2, color=colors[i], label=agent)
        ax.set_xticks(range(len(envs)), [_short(e) for e in envs])
        ax.set_title(f"{title} ({'higher' if hi else 'lower'} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(cols) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(agents), 7), fontsize=8)
    sources = {s for r in table for s in str(r.get("metrics_from") or "eval").split("+")}
    source = {
        frozenset({"eval"}): "greedy evaluation",
        frozenset({"train"}): "last training window, no greedy evaluation",
    }.get(frozenset(sources), "greedy evaluation, else last training window")
    fig.suptitle(_title(f"Final metrics ({source}): mean ± 95 % CI over seeds", note))
    return _save(fig, path)
