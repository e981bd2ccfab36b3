"""Comparison results: per-run rows, mean ± 95 % CI over seeds, CSV and markdown tables.

Confidence intervals use Student's t distribution with ``n - 1`` degrees of freedom over the
seeds' values (each seed's value is the mean over its evaluation episodes): the half width is
``t_{0.975, n-1} · s / √n``. The t quantile is computed here (regularized incomplete beta and
bisection), so there is no SciPy dependency.

A comparison directory (see :mod:`experiments.comparison`) holds ``runs.csv`` (one row per
run), ``table.csv`` (one row per env and agent: ``<metric>_mean``, ``<metric>_ci95``, ``n``)
and ``table.md``; :func:`load_comparison` reads one back, curves included.

The headline metrics of a run are its greedy evaluation's. A run without one
(``eval_episodes=0``) is reported with its last training window instead, as ``train`` does:
the row's ``metrics_from`` says which (``eval`` / ``train``), and so do the table's heading and
the final-metrics figure's title.

Means within ``FLOAT_RTOL`` of each other (relative to the column's largest magnitude) are
ties, and a CI narrower than ``FLOAT_RTOL`` of its mean is float noise: the env computes in
float32, so e.g. market shares that sum to 1 come back as 1 ± 1e-8.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Headline metrics: (summary key, column title, higher is better).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("return", "return", True),
    ("ctr", "CTR", True),
    ("engagement_per_request", "engagement", True),
    ("retention", "retention", True),
    ("market_share", "market share", True),
    ("coverage", "coverage", True),
    ("diversity", "diversity", True),
    ("exposure_gini", "exposure Gini", False),
)
KEYS = ("env", "agent", "opponent", "seed")
# Float32 rounding, relative: differences and CIs below it are noise, not results.
FLOAT_RTOL = 1e-6
# Where a row's headline metrics come from, as the table's heading says it.
SOURCES = {
    "eval": "greedy evaluation after training",
    "train": "last training window of each run (no greedy evaluation: eval_episodes=0)",
}


# ----------------------------------------------------------------------------------------
# Student's t
# ----------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (``t_quantile(0.975, 4) = 2.776…``)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half width of the level-CI, n)`` over the finite values; the half width is
    NaN with fewer than two values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, t_quantile(0.5 + level / 2.0, n - 1) * math.sqrt(var / n), n


# ----------------------------------------------------------------------------------------
# Rows and aggregates
# ----------------------------------------------------------------------------------------
def run_row(summary: Mapping[str, Any], run_dir: str | Path = "") -> dict[str, Any]:
    """One CSV row of a run: keys, headline metrics, last training window (``train_*``).

    The headline metrics are the greedy evaluation's; a run without one (``eval_episodes=0``)
    gets its last training window's instead (as ``train`` prints), and ``metrics_from`` says
    which (``eval`` / ``train``)."""
    row: dict[str, Any] = {k: summary.get(k, "") for k in KEYS}
    row["run_dir"] = str(run_dir)
    row["env_steps"] = summary.get("env_steps", "")
    row["train_episodes"] = summary.get("train_episodes", "")
    train = {k: v for k, v in (summary.get("train") or {}).items() if k != "step"}
    evaluation = summary.get("eval") or {}
    row["metrics_from"] = "eval" if evaluation else "train"
    row["diverged_at"] = (summary.get("diverged") or {}).get("step", "")
    for k, v in (evaluation or train).items():
        row[k] = v
    for k, v in train.items():
        row[f"train_{k}"] = v
    return row


def aggregate(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    by: Sequence[str] = ("env", "agent", "opponent"),
) -> list[dict[str, Any]]:
    """Mean and 95 % CI of each metric over the rows of each ``by`` group (first-seen order)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    names = list(metrics) if metrics is not None else [m for m, _, _ in METRICS]
    out = []
    for key, members in groups.items():
        agg: dict[str, Any] = dict(zip(by, key, strict=True))
        agg["n"] = len(members)
        diverged = sum(math.isfinite(_num(r.get("diverged_at"))) for r in members)
        if diverged:  # runs whose training stopped at NaN weights (experiments.runner)
            agg["diverged"] = diverged
        sources = sorted({str(r["metrics_from"]) for r in members if r.get("metrics_from")})
        if sources:
            agg["metrics_from"] = "+".join(sources)
        for m in names:
            mean, ci, k = mean_ci([_num(r.get(m)) for r in members])
            agg[f"{m}_mean"], agg[f"{m}_ci95"] = mean, ci
            if 0 < k < len(members):  # some runs have no value (a NaN: coverage unestimable)
                agg[f"{m}_n"] = k
        out.append(agg)
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt(mean: float, ci: float) -> str:
    """``12.3 ± 0.45``: the mean to the CI's precision (3 significant digits without one, or
    with one that is float noise: narrower than ``FLOAT_RTOL`` of the mean; a whole number
    from 1000 up, never in exponent notation)."""
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(ci) or ci <= max(FLOAT_RTOL * abs(mean), 1e-9):
        # 3 significant digits, but whole numbers from 1000 up: ".3g" wrote an episode
        # length of 1000 as "1e+03" and a return of 1463.2 as "1.46e+03".
        return f"{mean:.0f}" if abs(mean) >= 999.5 else f"{mean:.3g}"
    digits = max(0, min(6, 1 - math.floor(math.log10(ci))))
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def best_rows(means: Sequence[float], higher_is_better: bool) -> set[int]:
    """The indices of the best means of a column, ties included: means within
    ``FLOAT_RTOL`` of the best (relative to the column's largest magnitude) are equal. Empty
    when there are fewer than two finite means or all of them tie (nothing stands out)."""
    finite = [(i, m) for i, m in enumerate(means) if math.isfinite(m)]
    if len(finite) < 2:
        return set()
    best = (max if higher_is_better else min)(m for _, m in finite)
    tol = FLOAT_RTOL * max(abs(m) for _, m in finite)
    tied = {i for i, m in finite if abs(m - best) <= tol}
    return set() if len(tied) == len(finite) else tied


def _source_text(rows: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
    """The table heading's words for where the rows' metrics come from, and whether they
    differ between rows (then each row from training says so)."""
    sources = {s for r in rows for s in str(r.get("metrics_from") or "eval").split("+")}
    if len(sources) == 1:
        return SOURCES.get(sources.pop(), SOURCES["eval"]), False
    return (
        "greedy evaluation after training; rows marked (training window) have no evaluation "
        "and show their last training window",
        True,
    )


def markdown_table(
    table: Sequence[Mapping[str, Any]], metrics: Sequence[tuple[str, str, bool]] = METRICS
) -> str:
    """One markdown table per env: rows agents, columns ``mean ± 95 % CI``; the best mean of
    each column in bold."""
    parts = []
    envs = list(dict.fromkeys(r["env"] for r in table))
    for env in envs:
        rows = [r for r in table if r["env"] == env]
        n = sorted({int(r["n"]) for r in rows})
        n_text = "/".join(str(x) for x in n)
        cols = [(m, title, hi) for m, title, hi in metrics if any(f"{m}_mean" in r for r in rows)]
        best = {
            m: best_rows([_num(r.get(f"{m}_mean", math.nan)) for r in rows], hi)
            for m, _, hi in cols
        }
        source, mixed = _source_text(rows)
        head = "| agent | " + " | ".join(t for _, t, _ in cols) + " |"
        sep = "|---|" + "---:|" * len(cols)
        opponents = sorted({str(r.get("opponent") or "") for r in rows} - {""})
        versus = (
            f"; each agent plays agent_0 against {' / '.join(opponents)} (market share: agent_0's)"
            if opponents
            else ""
        )
        lines = [
            f"**{env}** — mean ± 95 % CI over {n_text} seeds (t-distribution); {source}{versus}",
            "",
            head,
            sep,
        ]
        for i, r in enumerate(rows):
            cells = []
            for m, _, _ in cols:
                text = fmt(r.get(f"{m}_mean", math.nan), r.get(f"{m}_ci95", math.nan))
                if i in best[m]:
                    text = f"**{text}**"
                if f"{m}_n" in r:  # over fewer runs than the row's: said, not hidden
                    text += f" ({int(_num(r[f'{m}_n']))} of {int(_num(r['n']))} runs)"
                cells.append(text)
            label = r["agent"]
            if mixed and "eval" not in str(r.get("metrics_from") or "eval"):
                label += " (training window)"
            if _num(r.get("diverged")) > 0:
                label += f" (diverged in {int(_num(r['diverged']))} of {int(r['n'])} runs)"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`to_csv`, numbers as floats."""
    with open(path, newline="") as f:
        return [{k: _maybe_float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _maybe_float(v: str) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


# ----------------------------------------------------------------------------------------
# A comparison on disk
# ----------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """A comparison's results: ``rows`` (one per run), ``table`` (aggregated), ``curves``
    (``(env, agent) -> one learning curve per seed``, each a list of points).

    ``finished`` is False for a comparison read with ``partial=True`` before it had finished;
    its ``markdown`` then starts with a line that says so (``expected``: its number of runs,
    0 where compare.json does not tell)."""

    path: Path
    rows: list[dict[str, Any]]
    table: list[dict[str, Any]]
    curves: dict[tuple[str, str], list[list[dict[str, float]]]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = True
    expected: int = 0

    @property
    def partial_note(self) -> str:
        """``Unfinished comparison (3 of 8 runs finished): partial results``; empty when
        finished. Heads the markdown table and titles the figures of a partial report."""
        if self.finished:
            return ""
        done = runs_finished_text(len(self.rows), self.expected)
        return f"Unfinished comparison ({done}): partial results"

    @property
    def markdown(self) -> str:
        md = markdown_table(self.table)
        return f"> **{self.partial_note}.**\n\n{md}" if self.partial_note else md


def runs_finished_text(finished: int, expected: int) -> str:
    """``3 of 8 runs finished`` (without ``of`` when the expected number is unknown)."""
    of = f" of {expected}" if expected else ""
    return f"{finished}{of} runs finished"


def read_compare_json(path: str | Path) -> dict[str, Any]:
    """A comparison directory's ``compare.json``: a JSON object whose ``config`` is an object.
    A file that is not raises ``RunError`` naming it (a missing one: ``FileNotFoundError``)."""
    file = Path(path) / "compare.json"
    if not file.is_file():
        what = "does not exist" if not Path(path).exists() else "is not a comparison directory"
        raise FileNotFoundError(f"{str(Path(path))!r} {what} (no compare.json)")
    return read_json_object(file, "config", "a comparison's compare.json", "comparison")


def read_json_object(file: Path, key: str, what: str, directory: str) -> dict[str, Any]:
    """``file`` read as a JSON object whose ``key`` is an object (a run's ``config.json``, a
    comparison's ``compare.json``); otherwise ``RunError`` naming the file, as ``what`` it is
    not, and the kind of ``directory`` it should be in."""
    from experiments.runner import RunError

    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise RunError(f"{str(file)!r} is not readable as {what}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise RunError(
            f"{str(file)!r} is not {what} (it has no {key!r} object); is this a {directory} "
            "directory?"
        )
    return data


def expected_runs(config: Mapping[str, Any]) -> int:
    """The number of runs of a comparison (envs x agents x seeds) from its compare.json's
    ``config``; 0 where it does not tell."""
    try:
        return len(config["envs"]) * len(config["agents"]) * int(config.get("seeds", 1))
    except (KeyError, TypeError, ValueError):
        return 0


def load_comparison(path: str | Path, *, partial: bool = False) -> Comparison:
    """Read a comparison directory (its own runs' ``summary.json`` and ``curve.csv``: see
    :func:`comparison_runs`).

    An unfinished comparison (no ``DONE``: interrupted, or still running) is refused with a
    ``RunError`` that counts its finished runs, unless ``partial`` (then the result says it
    is partial: :attr:`Comparison.finished`). A damaged ``compare.json``, ``summary.json`` or
    ``curve.csv`` raises ``RunError`` naming the file, and so does a finished comparison that
    lacks a run of one of its cells, or a run's ``summary.json``: its table is never drawn
    from some of its seeds only."""
    from experiments.runner import DONE, RunError

    p = Path(path)
    head = read_compare_json(p)
    order = head["config"]
    finished, expected = (p / DONE).exists(), expected_runs(order)
    runs, cells = _comparison_run_cells(p, head)
    # A run is finished once it has its summary (and DONE, written right after it).
    done = [(d, cell) for d, cell in runs if (d / "summary.json").is_file() or (d / DONE).exists()]
    if not finished and not partial:
        raise RunError(
            f"comparison {str(p)!r} is unfinished (it has no {DONE}): "
            f"{runs_finished_text(len(done), expected)}. Finish it with: "
            f"python -m experiments resume {p}; or show the finished runs, marked as partial: "
            f"python -m experiments report {p} --partial"
        )

    def damaged(file: Path, why: str) -> RunError:
        if finished:
            return RunError(
                f"{str(file)!r} {why}: the finished comparison {str(p)!r} is damaged, and its "
                "table would leave that run out. A finished comparison is never modified, so "
                "`resume` cannot mend it: restore the file from a copy, or run that cell again "
                "in a new comparison (the table written when it finished is its table.md)"
            )
        return RunError(
            f"{str(file)!r} {why}; the comparison {str(p)!r} cannot use that run: move the run "
            f"out of it, then train its cell again with: python -m experiments resume {p}"
        )

    if finished:
        done_dirs = {d for d, _ in done}
        for d, _ in runs:
            if d not in done_dirs:
                raise damaged(d / "summary.json", "is missing (the run has no summary)")
    seen: dict[tuple, Path] = {}
    for d, cell in done:
        if cell in seen:
            raise RunError(
                f"two run directories of {cell[1]} on {cell[0]} with seed {cell[3]} in the "
                f"comparison {str(p)!r}: {str(seen[cell])!r} and {str(d)!r}; the table would "
                "count them as two seeds. Move the one that does not belong to it out of it"
            )
        seen[cell] = d
    missing = [c for c in cells if c not in seen]
    if finished and missing:
        names = ", ".join(f"{a} on {e} seed {s}" for e, a, _, s in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise RunError(
            f"the finished comparison {str(p)!r} is damaged: it has no run directory of "
            f"{names}{more} (of {len(cells)} cells); its table would leave them out. A "
            "finished comparison is never modified, so `resume` cannot mend it: restore the "
            "run directories from a copy, or run those cells again in a new comparison (the "
            "table written when it finished is its table.md)"
        )
    rows: list[dict[str, Any]] = []
    curves: dict[tuple[str, str], list[list[dict[str, float]]]] = {}
    for d, cell in done:
        try:
            summary, curve = read_finished_run(d, cell)
        except DamagedRunFile as e:
            raise damaged(e.file, e.why) from None
        # The run directory's name, as the comparison's runs.csv has it (relative to the
        # comparison directory, whatever path it was read by).
        rows.append(run_row(summary, d.name))
        curves.setdefault((summary["env"], summary["agent"]), []).append(curve)
    rows = sort_rows(rows, order.get("envs", []), order.get("agents", []))
    return Comparison(p, rows, aggregate(rows), curves, head, finished, expected)


def comparison_runs(path: Path, head: Mapping[str, Any]) -> list[Path]:
    """The run directories of the comparison in ``path`` (``head``: its compare.json): those
    with a ``config.json`` whose (env, agent, opponent, seed) is one of its cells. Anything
    else in it (an evaluation's directory, whose summary.json made a phantom row) is not its.
    A ``config.json`` or a ``compare.json`` config that cannot be read raises ``RunError``
    naming the file."""
    return [d for d, _ in _comparison_run_cells(path, head)[0]]


def _comparison_run_cells(
    path: Path, head: Mapping[str, Any]
) -> tuple[list[tuple[Path, tuple]], list[tuple]]:
    """:func:`comparison_runs` with each run's cell ``(env, agent, opponent, seed)``, and the
    comparison's cells in order."""
    from experiments.config import CompareConfig
    from experiments.runner import RunError

    try:
        cfg = CompareConfig.from_dict(head["config"])
    except (ValueError, TypeError) as e:  # ConfigError included
        raise RunError(f"{str(path / 'compare.json')!r} is not readable: {e}") from None
    # A tune_sweep variant records its seeds (0,1,7) beside a config that counts them.
    sweep = head.get("sweep")
    seeds = sweep.get("seeds") if isinstance(sweep, dict) else None
    seeds = cfg.seed_list() if seeds is None else seeds
    cells = [(e, a, cfg.run.opponent, s) for e in cfg.envs for a in cfg.agents for s in seeds]
    own = set(cells)
    runs = []
    for file in sorted(path.glob("*/config.json")):
        run = read_json_object(file, "run", "a run config", "run")["run"]
        cell = tuple(run.get(k) for k in KEYS)
        try:
            mine = cell in own
        except TypeError:  # an unhashable value (a list): not one of its cells
            mine = False
        if mine:
            runs.append((file.parent, cell))
    return runs, cells


class DamagedRunFile(Exception):
    """A finished run's ``file`` (summary.json, curve.csv) that cannot be used, and ``why``
    (``"is missing"``, ``"is not readable: ..."``, ``"is the summary of ..."``)."""

    def __init__(self, file: Path, why: str):
        super().__init__(f"{str(file)!r} {why}")
        self.file, self.why = file, why


def read_finished_run(d: Path, cell: tuple | None = None) -> tuple[dict[str, Any], list]:
    """A finished run's summary (:func:`read_run_summary`) and curve (:func:`read_run_curve`),
    the summary of the run's own ``cell`` (its config.json's) when given; else
    :class:`DamagedRunFile` naming the file. What ``report`` and ``resume`` both read."""
    file = d / "summary.json"
    try:
        summary = read_run_summary(file)
        found = tuple(summary[k] for k in KEYS)
        if cell is not None and found != cell:
            raise ValueError(
                f"is the summary of {_cell_text(found)}, not of the run's own "
                f"{_cell_text(cell)} (its config.json)"
            )
        file = d / "curve.csv"
        curve = read_run_curve(file)
    except FileNotFoundError:
        raise DamagedRunFile(file, "is missing") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError included
        why = str(e) if str(e).startswith("is ") else f"is not readable: {e}"
        raise DamagedRunFile(file, why) from None
    return summary, curve


def _cell_text(cell: tuple) -> str:
    env, agent, opponent, seed = cell
    versus = f" vs {opponent}" if opponent else ""
    return f"{agent}{versus} on {env} seed {seed}"


# What a run's summary.json holds (experiments.runner.Trainer.summary writes it), by type;
# report and resume read these.
SUMMARY_FIELDS: dict[str, type] = {
    "env": str,
    "agent": str,
    "opponent": str,
    "lineup": str,
    "seed": int,
    "env_steps": int,
    "train_episodes": int,
    "train": dict,
    "eval": dict,
}


def summary_problems(summary: Any) -> list[str]:
    """What keeps ``summary`` (a parsed ``summary.json``) from being a run's summary: missing
    fields of :data:`SUMMARY_FIELDS`, values of another type, metrics that are not numbers.
    Empty for a summary ``report`` and ``resume`` can use."""
    from recenv.core.config import shown  # (this module imports no torch at its top)

    if not isinstance(summary, dict):
        return [f"it is {shown(summary)}, not a JSON object"]
    problems = []
    missing = [k for k in SUMMARY_FIELDS if k not in summary]
    if missing:
        problems.append(f"it lacks the field(s) {missing}")
    for k, kind in SUMMARY_FIELDS.items():
        v = summary.get(k)
        if k in summary and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))):
            problems.append(f"{k}={shown(v)} is not a {kind.__name__}")
    for k in ("train", "eval"):
        metrics = summary.get(k)
        if isinstance(metrics, dict):
            bad = [
                f"{m}={shown(v, 30)}"
                for m, v in metrics.items()
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))
            ]
            if bad:
                problems.append(f"{k} has values that are not numbers: {', '.join(bad[:5])}")
    diverged = summary.get("diverged")
    if diverged is not None and not isinstance(diverged, dict):
        problems.append(f"diverged={shown(diverged)} is neither null nor an object")
    return problems


def read_run_summary(file: str | Path) -> dict[str, Any]:
    """A finished run's ``summary.json``, checked (:func:`summary_problems`); ``OSError`` or
    ``ValueError`` (``is not a run summary: ...``) otherwise."""
    summary = json.loads(Path(file).read_text())
    problems = summary_problems(summary)
    if problems:
        raise ValueError("is not a run summary: " + "; ".join(problems))
    return summary


def read_run_curve(file: str | Path) -> list[dict[str, float]]:
    """A finished run's ``curve.csv``; ``OSError`` or ``ValueError`` when it cannot be read as
    one (not UTF-8, a value that is not a number, a malformed line)."""
    from experiments.runner import read_curve

    try:
        return read_curve(file)
    except (csv.Error, TypeError) as e:  # a NUL byte; a row longer than the header
        raise ValueError(f"is not a learning curve: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"is not a learning curve (not UTF-8 text): {e}") from None
    except ValueError as e:
        raise ValueError(f"is not a learning curve: {e}") from None


def sort_rows(
    rows: list[dict[str, Any]], envs: Sequence[str], agents: Sequence[str]
) -> list[dict[str, Any]]:
    def key(r: Mapping[str, Any]) -> tuple:
        e = list(envs).index(r["env"]) if r["env"] in envs else len(envs)
        a = list(agents).index(r["agent"]) if r["agent"] in agents else len(agents)
        return (e, r["env"], a, r["agent"], _num(r["seed"]))

    return sorted(rows, key=key)
