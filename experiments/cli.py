"""The experiment runner's command line: ``python -m experiments COMMAND ...``.

Commands::

    train      one run (agent, env, seed) -> runs/<env>__<agent>__<seed>__<time>/
    compare    envs x agents x seeds -> runs/<name>__<time>/ with table.md, CSVs, PNG plots
    resume     continue an unfinished run or comparison from its last checkpoint
    evaluate   greedy evaluation of a run or checkpoint (results in a new directory)
    report     print a finished comparison's table (optionally re-render it elsewhere)
    presets    list the named presets
    describe   every config field with its type, default and help (run, compare, env, agent);
               `describe env ID`: a scenario's page and its values; envs, agents: the ids
    bench      the environment benchmark (experiments.bench_env)

Configuration, lowest precedence first: the preset (``--preset``), a TOML/JSON file
(``--config``), per-field flags (``--seed 3``), then ``--set KEY=VALUE`` (``env.KEY``,
``agent.KEY``, ``opponent.KEY``, ``NAME.KEY``; see :mod:`experiments.config`).

Examples::

    python -m experiments compare --preset quick                  # the main job
    python -m experiments train --agent linucb --total-steps 5000 --set env.horizon=100
    python -m experiments train --preset quick --agent iql --set agent.lr=3e-4 seed=4
    python -m experiments compare --preset quick --agents iql,random --seeds 5 --jobs 2
    python -m experiments resume runs/Market-v0__iql__0__20250101T000000.000000Z
    python -m experiments evaluate runs/Market-v0__iql__0__20250101T000000.000000Z
    tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from experiments import config
from experiments.config import PRESETS, CompareConfig, ConfigError, RunConfig

# The runner, the report and the plots (tensorboard, matplotlib) are imported by the commands
# that use them, so `presets`, `describe` and config errors answer quickly.

_OVERRIDE_FIELDS = ("env_overrides", "agent_overrides", "opponent_overrides")
_COMPARE_FLAGS = ("name", "description", "envs", "agents", "seeds", "jobs")
_SUBPARSERS: dict[str, argparse.ArgumentParser] = {}


class Parser(argparse.ArgumentParser):
    """argparse that lists the valid options (and a close match) for an unknown one."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            valid = sorted(s for s in self._option_string_actions if s.startswith("--"))
            words = message.split(":", 1)[1].split()
            hints = []
            for w in words:
                close = difflib.get_close_matches(w.split("=")[0], valid, n=1)
                if close:
                    hints.append(f"{w!r}: did you mean {close[0]!r}?")
            message += "\nvalid options: " + " ".join(valid)
            if hints:
                message += "\n" + "\n".join(hints)
        super().error(message)


def _add_config_flags(p: argparse.ArgumentParser, *, with_compare: bool) -> None:
    p.add_argument(
        "--preset",
        default=None,
        help=f"base configuration, one of {sorted(PRESETS)} (`presets` lists them)",
    )
    p.add_argument("--config", default=None, help="a TOML or JSON file of overrides")
    p.add_argument(
        "--set",
        dest="assignments",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides: seed=3 env.horizon=100 agent.lr=3e-4 opponent.source=own iql.gamma=0.95",
    )
    run_group = p.add_argument_group(
        "run fields (RunConfig; defaults shown are the dataclass's, a preset may change them)"
    )
    for name, tname, default, help_ in config.field_help(RunConfig):
        if name in _OVERRIDE_FIELDS:
            continue
        _flag(run_group, f"run.{name}", name, tname, default, help_)
    if with_compare:
        cmp_group = p.add_argument_group("comparison fields (CompareConfig)")
        for name, tname, default, help_ in config.field_help(CompareConfig):
            if name in _COMPARE_FLAGS:
                _flag(cmp_group, f"compare.{name}", name, tname, default, help_)


def _flag(group, dest: str, name: str, tname: str, default: Any, help_: str) -> None:
    flag = "--" + name.replace("_", "-")
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    text = f"{help_} [{tname}, default: {shown!r}]".replace("%", "%%")
    if tname == "bool":
        group.add_argument(
            flag,
            dest=dest,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=text,
        )
    else:
        metavar = "A,B,..." if tname.startswith("tuple") else tname.upper()
        group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar=metavar, help=text)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m experiments",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    _SUBPARSERS.clear()
    override_help = (
        "env.KEY: a MarketConfig field (`python -m experiments describe env`); agent.KEY / "
        "opponent.KEY / NAME.KEY: an agent's config (`describe agent NAME`)."
    )

    t = sub.add_parser(
        "train", help="train one run", description="Train one run.", epilog=override_help
    )
    _add_config_flags(t, with_compare=False)

    c = sub.add_parser(
        "compare",
        help="seeds x agents x envs -> table, CSV, plots",
        # A description is not %-formatted (only help strings are): a single % here.
        description="Train every agent on every env with every seed; write the CSVs, the "
        "markdown table (mean ± 95 % CI) and the PNG plots.",
        epilog=override_help,
    )
    _add_config_flags(c, with_compare=True)

    r = sub.add_parser(
        "resume",
        help="continue an unfinished run or comparison",
        description="Continue an unfinished run from its newest checkpoint (or --checkpoint), "
        "or an unfinished comparison: finished runs are kept, unfinished ones resumed, missing "
        "ones started. A finished run or comparison is never modified.",
    )
    r.add_argument("path", help="a run directory or a comparison directory")
    r.add_argument("--checkpoint", default=None, help="a run's checkpoint (default: newest)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser(
        "evaluate",
        help="greedy evaluation of a run or checkpoint",
        description="Greedy evaluation of a run (its agent.pt, else its newest checkpoint) or "
        "of a checkpoint file. Results go to a new directory under --root (not a run or "
        "comparison directory); the evaluated run is never written to.",
    )
    e.add_argument("path", help="a run directory or a checkpoint file")
    e.add_argument("--episodes", type=int, default=None, help="episodes (default: the run's)")
    e.add_argument("--seed", type=int, default=None, help="evaluation seed")
    e.add_argument("--env", default=None, help="env id (needed for a bare agent checkpoint)")
    e.add_argument("--root", default="runs", help="where the evaluation directory is created")
    e.add_argument("--quiet", action="store_true")

    rep = sub.add_parser(
        "report",
        help="print a finished comparison's table",
        description="Print a finished comparison's table. An unfinished one (interrupted or "
        "still running) is refused unless --partial.",
    )
    rep.add_argument("path", help="a comparison directory")
    rep.add_argument(
        "--out", default=None, help="re-render the tables and figures into this new directory"
    )
    rep.add_argument(
        "--partial",
        action="store_true",
        help="report an unfinished comparison's finished runs; the table says it is partial",
    )

    sub.add_parser("presets", help="list the presets")

    d = sub.add_parser("describe", help="config fields with types, defaults and help")
    d.add_argument("what", choices=["run", "compare", "env", "agent", "envs", "agents"])
    d.add_argument(
        "name",
        nargs="?",
        default=None,
        help="the agent (`describe agent NAME`) or an env id (`describe env ID`: the "
        "scenario's page and its config, the values it changes marked)",
    )
    d.add_argument(
        "--log",
        default=None,
        metavar="PATH",
        help="`describe env ID` of a scenario built from an interaction log (FromLog-v0): "
        "the log it is built from (e.g. MovieLens ratings.csv), which decides its sizes",
    )

    b = sub.add_parser(
        "bench", help="environment benchmark (experiments.bench_env)", add_help=False
    )
    b.add_argument("args", nargs=argparse.REMAINDER)
    _SUBPARSERS.update(sub.choices)
    return p


# ----------------------------------------------------------------------------------------
# Resolving a configuration
# ----------------------------------------------------------------------------------------
def resolve(args: argparse.Namespace, *, single_run: bool) -> CompareConfig:
    """The preset, then the config file, the flags and ``--set``, applied in that order."""
    base_name = args.preset
    assignments: list[tuple[str, Any]] = []
    if args.config:
        file_preset, file_assignments = config.read_config_file(args.config)
        base_name = base_name or file_preset
        assignments.extend(file_assignments)
    base = config.preset(base_name) if base_name else CompareConfig()
    for dest, value in vars(args).items():
        if dest.startswith(("run.", "compare.")):
            assignments.append((dest, value))
    assignments.extend(config.split_assignment(a) for a in args.assignments)
    return config.apply_overrides(base, assignments, single_run=single_run)


# ----------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------
def _metrics_table(metrics: dict[str, float]) -> str:
    from experiments import report

    rows = [(m, title) for m, title, _ in report.METRICS if m in metrics]
    head = "| " + " | ".join(t for _, t in rows) + " |"
    sep = "|" + "---:|" * len(rows)
    vals = "| " + " | ".join(f"{metrics[m]:.4g}" for m, _ in rows) + " |"
    return "\n".join([head, sep, vals])


def cmd_train(args: argparse.Namespace) -> int:
    from experiments import runner

    cfg = resolve(args, single_run=True).template_run()
    # A run trained in a comparison would be adopted by its next resume and report, whatever
    # its other settings (runner.train itself trains a comparison's runs there).
    runner.refuse_run_or_comparison_root(cfg.root, "--root")
    _eval_rounding_notice(cfg.num_envs, cfg.eval_episodes, runner.auto_quiet(cfg.quiet))
    res = runner.train(cfg)
    _print_run(res)
    return 0


def _eval_rounding_notice(num_envs: int, episodes: int, quiet: bool) -> None:
    """Say so when the evaluation plays more episodes than ``eval_episodes`` (every market
    plays whole episodes: runner.eval_plan), as `evaluate` does."""
    from experiments import runner

    if episodes <= 0 or quiet:
        return
    n_envs, per_env = runner.eval_plan(num_envs, episodes)
    if n_envs * per_env != episodes:
        print(runner.eval_rounding_notice(episodes, n_envs, per_env), file=sys.stderr)


def _print_run(res: Any) -> None:
    s = res.summary
    out = s.get("eval") or s.get("train") or {}
    label = "greedy evaluation" if s.get("eval") else "last training window"
    print(f"\n{s['lineup']} on {s['env']}, seed {s['seed']} — {label}:\n")
    print(_metrics_table(out))
    if s.get("diverged"):
        d = s["diverged"]
        print(f"\ntraining diverged at step {d['step']} and stopped there: {d['where']}")
    print(f"\nrun directory: {res.path}")
    print(f"TensorBoard:   tensorboard --logdir {res.path}")


def cmd_compare(args: argparse.Namespace) -> int:
    from experiments import comparison, runner

    cfg = resolve(args, single_run=False)
    quiet = runner.auto_quiet(cfg.run.quiet)
    if not quiet:
        n = len(cfg.envs) * len(cfg.agents) * cfg.seeds
        print(
            f"comparison {cfg.name!r}: {len(cfg.agents)} agents x {len(cfg.envs)} envs x "
            f"{cfg.seeds} seeds = {n} runs of {cfg.run.total_steps} env steps",
            file=sys.stderr,
        )
    if not quiet and cfg.run.eval_episodes == 0:
        print(
            "eval_episodes=0: no greedy evaluation; the table reports each run's last "
            "training window",
            file=sys.stderr,
        )
    _eval_rounding_notice(cfg.run.num_envs, cfg.run.eval_episodes, quiet)
    res = comparison.compare(cfg)
    _print_comparison(res)
    return 0


def _print_comparison(res: Any) -> None:
    print()
    print(res.markdown)
    print(f"results:           {res.path}/")
    print(f"  table:           {res.files['table.md']}  (and table.csv, runs.csv)")
    for name, path in res.figures.items():
        print(f"  {name + ':':<17}{path}")
    print(f"TensorBoard:       tensorboard --logdir {res.path}")


def cmd_resume(args: argparse.Namespace) -> int:
    from experiments import comparison, runner

    if comparison.is_comparison(args.path):
        if args.checkpoint:
            raise ConfigError("--checkpoint applies to a run directory, not a comparison")
        _print_comparison(comparison.resume_comparison(args.path, quiet=args.quiet or None))
    else:
        _print_run(runner.resume(args.path, checkpoint=args.checkpoint, quiet=args.quiet or None))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from experiments import runner

    path, metrics = runner.evaluate_checkpoint(
        args.path,
        episodes=args.episodes,
        seed=args.seed,
        env_id=args.env,
        root=args.root,
        quiet=args.quiet,
    )
    print(_metrics_table(metrics))
    print(f"\nevaluation directory: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from experiments import plots, report

    out = Path(args.out) if args.out else None
    if out is not None:  # checked before anything is read or printed
        from experiments.runner import refuse_finished_parent

        if out.exists():
            raise ConfigError(f"--out {args.out!r} exists; report writes only a new directory")
        if out.resolve().is_relative_to(Path(args.path).resolve()):
            raise ConfigError(
                f"--out {args.out!r} is inside the comparison {args.path!r}, whose directory "
                "report never writes to; give a directory outside it"
            )
        refuse_finished_parent(out, "--out")  # e.g. inside another finished comparison
    comp = report.load_comparison(args.path, partial=args.partial)
    print(comp.markdown)
    if out is not None:
        out.mkdir(parents=True, exist_ok=False)

        (out / "table.md").write_text(comp.markdown)
        (out / "runs.csv").write_text(report.to_csv(comp.rows))
        (out / "table.csv").write_text(report.to_csv(comp.table))
        plots.comparison_figures(comp.curves, comp.table, out, note=comp.partial_note)
        print(f"written to {out}/")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name, p in PRESETS.items():
        n = len(p.envs) * len(p.agents) * p.seeds
        print(f"{name}: {p.description}")
        print(
            f"    envs {list(p.envs)}\n    agents {list(p.agents)}"
            + (f" (each vs {p.run.opponent})" if p.run.opponent else "")
            + f"\n    {p.seeds} seeds, {n} runs of {p.run.total_steps} env steps, "
            f"{p.run.num_envs} markets per run"
        )
        if p.per_agent:
            print(f"    per-agent overrides: {dict((k, dict(v)) for k, v in p.per_agent)}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    import agents
    import recenv
    from recenv.core.config import MarketConfig

    if args.name is not None and args.what not in ("agent", "env"):
        raise ConfigError(
            f"describe {args.what} takes no NAME (got {args.name!r}); only `describe agent "
            "NAME` and `describe env NAME` do"
        )
    if args.log is not None and (args.what != "env" or args.name is None):
        raise ConfigError(
            f"--log is for `describe env ID` of a scenario built from a log (got `describe "
            f"{args.what}{'' if args.name is None else ' ' + args.name}`)"
        )
    if args.what == "run":
        print("RunConfig fields (--FIELD VALUE or --set FIELD=VALUE):")
        print(config.describe(RunConfig))
    elif args.what == "compare":
        print("CompareConfig fields (compare only):")
        print(config.describe(CompareConfig))
    elif args.what == "env" and args.name is not None:
        _describe_env(args.name, log=args.log)
    elif args.what == "env":
        print(
            "MarketConfig fields (--set env.FIELD=VALUE; scenario presets change defaults: "
            "`describe env ID` shows a scenario's):"
        )
        print(config.describe(MarketConfig))
    elif args.what == "envs":
        ids = recenv.registered_ids()
        width = max(map(len, ids))
        print("\n".join(f"{env_id:<{width}}  {_env_summary(env_id)}" for env_id in ids))
    elif args.what == "agents":
        print("\n".join(agents.registered_agents()))
    else:
        if not args.name:
            raise ConfigError(f"describe agent NAME; agents: {agents.registered_agents()}")
        config.check_agent_name(args.name)
        cls = config.agent_config_class(args.name)
        if cls is None:
            target = agents.agent_class(args.name)
            keys = agents.registry.factory_config_keys(target)
            listed = f"its keyword parameters {keys}" if keys is not None else "any (**kwargs)"
            seeded = "yes" if agents.registry.takes_seed(target) else "no (runs cannot seed it)"
            print(
                f"{args.name} is a factory plug-in without a declared config; keys: {listed} "
                f"(--set agent.KEY=VALUE, not type-checked here); takes the run's seed: {seeded}"
            )
        else:
            print(f"{args.name} config ({cls.__name__}; --set agent.FIELD=VALUE):")
            print(config.describe(cls))
    return 0


# What reading a plug-in's page or building its env raises when the plug-in cannot be
# loaded (a malformed entry point, a missing module or builder).
PLUGIN_ERRORS = (ValueError, ImportError, AttributeError)


def _reads_a_log(env_id: str) -> bool:
    """Whether scenario ``env_id``'s builder takes an interaction log (``log``); False for
    a plug-in whose builder cannot be loaded."""
    import inspect

    import recenv

    try:
        return "log" in inspect.signature(recenv.spec(env_id).builder()).parameters
    except (TypeError, *PLUGIN_ERRORS):
        return False


def _describe_env(env_id: str, log: str | None = None) -> None:
    """The page of scenario ``env_id`` and its MarketConfig, the fields it changes from the
    defaults marked. The config is read from one market built on the CPU with no arguments
    but ``log`` (when given), as ``recenv.make_vec`` builds one (there is no other way to
    get it: a builder may decide values, as FromLog-v0's log does its sizes); for the
    built-in scenarios that takes about 10 to 100 ms. A scenario that cannot be built so
    (FromLog-v0 without ``log``, another scenario given one) gets its page, when its module
    or builder has one, and a ConfigError saying why."""
    import recenv
    from recenv.core.config import MarketConfig

    config.check_env_id(env_id)
    given: dict[str, Any] = {} if log is None else {"log": log}
    try:
        market = recenv.make_vec(env_id, num_envs=1, seed=0, **given)
    except (TypeError, OSError, *PLUGIN_ERRORS) as e:  # refused config or log, broken plug-in
        page = _static_page(env_id)
        if page:
            print(page.rstrip())
        where = "its page is above, but " if page else ""
        hint = "; give the log: --log PATH" if not given and _reads_a_log(env_id) else ""
        raise ConfigError(
            f"describe env {env_id}: {where}its config is read from one market built with "
            f"{'log=' + repr(log) if given else 'no arguments'}, which failed: {e}{hint}"
        ) from None
    # make_vec sets the page as the market's docstring; not on an id registered (in this
    # process) without pz_doc, which has none.
    page = vars(market).get("__doc__")
    print(page.rstrip() if page else f"{env_id} has no page (registered without pz_doc)")
    print(
        f"\n{env_id} config (MarketConfig fields with this scenario's values, * where they "
        "differ from the default, given at the end of the line; --set env.FIELD=VALUE):"
    )
    print(config.describe(MarketConfig, market.config))


def _static_page(env_id: str) -> str | None:
    """``env_id``'s page as far as it is written without building the env (None also for
    an id whose plug-in cannot be loaded)."""
    import recenv.registry

    try:
        return recenv.registry.documentation_page(env_id)
    except PLUGIN_ERRORS:
        return None


SUMMARY_WIDTH = 100  # characters of a page's summary in `describe envs`


def _env_summary(env_id: str) -> str:
    """The summary of ``env_id``'s page (:func:`_page_summary`) for ``describe envs``, read
    without building the env."""
    import recenv.registry

    try:
        page = recenv.registry.documentation_page(env_id)
    except PLUGIN_ERRORS as e:
        return _cut(f"(cannot be loaded: {e})")
    if page is None:
        if recenv.spec(env_id).pz_doc:
            return f"(no docstring; `describe env {env_id}` lists its config)"
        return "(no page: registered without pz_doc)"
    return _page_summary(page)


def _page_summary(page: str) -> str:
    """A scenario page's summary: its first sentence, the first paragraph after the
    ``# Name-vN`` title (a page's first line, which names the env and no more) up to its first
    full stop, without the double backticks and asterisks of its markup, cut at
    :data:`SUMMARY_WIDTH` characters."""
    lines = inspect.cleandoc(page).splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")):
        lines.pop(0)
    paragraph = []
    for line in lines:
        if not line.strip():
            break
        paragraph.append(line.strip())
    text = " ".join(paragraph).replace("``", "").replace("**", "")
    sentence = re.match(r".*?[.!?](?=\s|$)", text)
    return _cut(sentence.group(0) if sentence else text)


def _cut(text: str) -> str:
    if len(text) <= SUMMARY_WIDTH:
        return text
    return text[: SUMMARY_WIDTH - 3].rsplit(" ", 1)[0] + " ..."


def cmd_bench(args: argparse.Namespace) -> int:
    from experiments import bench_env

    bench_env.main(args.args)
    return 0


COMMANDS = {
    "train": cmd_train,
    "compare": cmd_compare,
    "resume": cmd_resume,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "presets": cmd_presets,
    "describe": cmd_describe,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # pass everything through, --help included
        return cmd_bench(argparse.Namespace(args=argv[1:]))
    args, extra = parser.parse_known_args(argv)
    if extra:  # report it from the subcommand's parser, which lists its valid options
        sub = _SUBPARSERS.get(args.command, parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        notes = "".join(f"\n{n}" for n in getattr(e, "__notes__", ()))
        print(f"config error: {e}{notes}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `... report DIR | head`
        sys.stdout = open(os.devnull, "w")  # the reader is gone: drop the rest quietly
        return 0
    except Exception as e:
        from experiments.runner import Interrupted, RunError

        if isinstance(e, Interrupted):
            print(f"\n{e}", file=sys.stderr)
            return 130
        # OSError: a root under a file, no permission, a full disk: its message names the
        # path, and a traceback would add nothing for the user.
        if isinstance(e, (RunError, OSError)):
            notes = "".join(f"\n{n}" for n in getattr(e, "__notes__", ()))
            print(f"error: {e}{notes}", file=sys.stderr)
            return 1
        raise
