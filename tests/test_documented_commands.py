"""Every command the docs show still parses: flags get renamed, docs go stale silently.

Collected, with the file and line each is written at:

- from ``README.md``, ``CONTRIBUTING.md``, ``experiments/PERFORMANCE.md`` and
  ``docs/integrations.md`` (:data:`MARKDOWN`): the lines of fenced code blocks and the inline
  code spans;
- from the Python sources of ``experiments``, ``agents`` and ``recenv``: every string literal
  (docstrings, ``--help`` descriptions and epilogs, the hints of error messages; an f-string's
  ``{...}`` is a placeholder, written ``<...>``), read with :mod:`ast`, nothing imported;

every ``python -m experiments ...``, ``python -m experiments.MODULE ...`` and
``python experiments/FILE.py ...`` (any ``.../bin/`` prefix; ``\\`` continuations joined; a
shell comment, ``;``, ``&&`` or ``|`` ends it), and in the Markdown code every ``make TARGET``.

A command is not run. Its module (which must have an ``if __name__ == "__main__"``) is run as
``python -m``/``python FILE`` would run it (:mod:`runpy`, as ``__main__``, with its
``sys.argv``), with ``argparse`` patched: the parse is real (a parse error is ``SystemExit(2)``,
as on the command line, and fails the test with argparse's message) and a successful outermost
parse raises :class:`Parsed`, which stops the command before any work. Starting a process or
an ``exec`` raises instead (:class:`Ran`). Then the checks a command makes right after its
parse, before any work, are made too (:data:`CHECKS`: the runner's preset, ``--set`` keys and
names, the performance tools' ``--config KEY=VALUE``, compare_marl's agents, ...). A
``make`` target must be a rule of the Makefile. A mention of a program or subcommand (no
options) that only misses its required arguments passes (``python -m experiments resume``,
``prog="python -m experiments.fidelity"``).

Placeholders get a dummy value (:data:`PLACEHOLDERS`; ``<...>`` and ``$(...)`` become a
path), or the command is skipped with its reason (:data:`SKIP`, :data:`SYNOPSIS`). A README
command known to be stale is listed in :data:`STALE_README` (``xfail(strict=True)``): the case
flips to a failure the day the README line is fixed, so the entry is removed with it.

Historical records (``experiments/performance-log.md``, ``experiments/results/``) are not
collected: a command a record states is the one that ran then, not a promise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = ("README.md", "CONTRIBUTING.md", "experiments/PERFORMANCE.md", "docs/integrations.md")
PACKAGES = ("experiments", "agents", "recenv")

# A bare word of a synopsis, and what stands in for it when the command is parsed. A path
# placeholder needs only to be a string (nothing is opened); a value the parser converts or
# checks needs a valid one.
PLACEHOLDERS = {
    "REV": "HEAD~1",
    "PATH": "DUMMY",
    "DIR": "DUMMY",
    "OUT/VARIANT": "DUMMY",
    "ENV_ID": "recenv/Market-v0",
    "N": "1",
}
# (module, placeholder) -> value, where the value depends on the option.
PLACEHOLDERS_IN = {
    ("experiments.ab_forms", "NAME"): "same",  # `--base NAME`: a form of FORMS; `same` is one
}
# Commands that are not parsed, with why. Keyed by the command's text as collected (continuations
# joined, whitespace collapsed).
SKIP: dict[str, str] = {}
# Tokens that make a mention a synopsis, not a command: skipped with this reason.
SYNOPSIS = {
    "COMMAND": "a synopsis of the runner (COMMAND ...), not a command",
    "...": "a synopsis (...), not a command",
}
# README commands known to be stale, (line, command text) -> the reason; the README is fixed
# by hand (see the report of the audit that added this test), then the entry removed.
STALE_README: dict[tuple[int, str], str] = {}

_PROGRAM = re.compile(
    r"(?<![\w/.-])(?:[\w.~-]*/)*python3?[ \t]+"
    r"(?:-m[ \t]+(?P<module>experiments(?:\.\w+)*)|(?P<script>experiments/\w+\.py))(?![\w./-])"
)
_MAKE = re.compile(r"^\s*(?:\$\s+)?make\s+(?P<target>[\w.-]+)")
# An inline code span: one or more backticks, the text (not across a blank line), the same
# number of backticks.
_SPAN = re.compile(
    r"(?<!`)(?P<ticks>`+)(?!`)(?P<text>(?:(?!\n[ \t]*\n).)+?)(?<!`)(?P=ticks)(?!`)", re.S
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_PUNCT_END = {";", "&&", "||", "|", "&", "(", ")", ">", "<", ">>", ";;"}


@dataclass(frozen=True)
class Command:
    file: str  # relative to the repository root
    line: int
    text: str  # as written, continuations joined, whitespace collapsed
    kind: str  # "python" or "make"

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.text[:60]}"


# ----------------------------------------------------------------------------------------
# Collecting
# ----------------------------------------------------------------------------------------
def _logical_lines(text: str, base_line: int) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` with ``\\`` continuations joined, each with its first line."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start, parts = i, [lines[i]]
        while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            parts[-1] = parts[-1].rstrip()[:-1]
            i += 1
            parts.append(lines[i])
        yield base_line + start, " ".join(p.strip() for p in parts)
        i += 1


def _commands_in(text: str, line: int, *, whole: bool) -> Iterator[tuple[int, str]]:
    """The python commands in ``text`` (at ``line``): each from its program to the end of its
    logical line, or of ``text`` when ``whole`` (a code span)."""
    chunks = [(line, " ".join(text.split()))] if whole else _logical_lines(text, line)
    for at, chunk in chunks:
        for m in _PROGRAM.finditer(chunk):
            yield at, " ".join(chunk[m.start() :].split())


def _blank_spans(text: str) -> str:
    """``text`` with its code spans blanked (newlines kept), so what is left is plain text."""
    return _SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _collect_markdown(rel: str) -> Iterator[Command]:
    lines = (ROOT / rel).read_text().split("\n")
    prose: list[str] = []  # the text outside fenced blocks, blanked lines for the blocks
    fence: str | None = None
    block: list[str] = []
    block_start = 0
    for i, raw in enumerate(lines, 1):
        m = _FENCE.match(raw)
        if fence is None and m:
            fence, block, block_start = m.group(1), [], i + 1
            prose.append("")
        elif fence is not None and raw.strip().startswith(fence):
            yield from _collect_block("\n".join(block), block_start, rel)
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(raw)
            prose.append("")
        else:
            prose.append(raw)
    text = "\n".join(prose)
    for m in _SPAN.finditer(text):
        at = text.count("\n", 0, m.start("text")) + 1
        span = m.group("text")
        mk = _MAKE.match(span)
        if mk:
            yield Command(rel, at, " ".join(span.split()), "make")
        for line, cmd in _commands_in(span, at, whole=True):
            yield Command(rel, line, cmd, "python")


def _collect_block(block: str, line: int, rel: str) -> Iterator[Command]:
    for at, logical in _logical_lines(block, line):
        mk = _MAKE.match(logical)
        if mk:
            yield Command(rel, at, " ".join(logical.split()), "make")
        for _, cmd in _commands_in(logical, at, whole=False):
            yield Command(rel, at, cmd, "python")


def _string_text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's ``{x}`` written ``<x>``, a placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                parts.append(v.value)
            elif isinstance(v, ast.FormattedValue):
                parts.append("<" + re.sub(r"[<>]", " ", ast.unparse(v.value)) + ">")
        return "".join(parts)
    return None


def _collect_python(path: Path) -> Iterator[Command]:
    rel = path.relative_to(ROOT).as_posix()
    source = path.read_text()
    src_lines = source.split("\n")
    tree = ast.parse(source)
    inner: set[int] = set()  # the Constants inside f-strings: read with their f-string
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inner.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if id(node) in inner:
            continue
        text = _string_text(node)
        if text is None or ("python" not in text):
            continue
        lineno = getattr(node, "lineno", 1)
        end = getattr(node, "end_lineno", lineno) or lineno
        found: list[tuple[int, str]] = []
        for m in _SPAN.finditer(text):
            at = lineno + text.count("\n", 0, m.start("text"))
            found.extend(_commands_in(m.group("text"), at, whole=True))
        found.extend(_commands_in(_blank_spans(text), lineno, whole=False))
        for at, cmd in found:
            yield Command(rel, _locate(src_lines, cmd, at, lineno, end), cmd, "python")


def _locate(src_lines: list[str], cmd: str, guess: int, first: int, last: int) -> int:
    """The source line of ``cmd`` in a literal at lines ``first..last``: the line nearest
    ``guess`` holding its program and first argument (a string's value and its source differ
    where an escaped newline or an implicit concatenation joins lines)."""
    words = cmd.split()
    key = " ".join(words[:4]) if len(words) >= 4 else cmd
    key = key.split("<")[0]
    hits = [n for n in range(first, last + 1) if key in " ".join(src_lines[n - 1].split())]
    if not hits:
        key = " ".join(words[:3]).split("<")[0]
        hits = [n for n in range(first, last + 1) if key in " ".join(src_lines[n - 1].split())]
    return min(hits, key=lambda n: abs(n - guess)) if hits else guess


def collect() -> list[Command]:
    found: list[Command] = []
    for rel in MARKDOWN:
        found.extend(_collect_markdown(rel))
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "results" in path.relative_to(ROOT).parts:
                continue
            found.extend(_collect_python(path))
    unique: dict[tuple[str, int, str], Command] = {}
    for c in found:
        unique.setdefault((c.file, c.line, c.text), c)
    return list(unique.values())


# ----------------------------------------------------------------------------------------
# Reading a command
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Invocation:
    module: str | None  # `python -m MODULE`
    script: str | None  # `python FILE`
    argv: list[str]


def _tokens(text: str) -> list[str]:
    """The shell words of ``text`` up to the end of its first command (``;``, ``&&``, ``|``,
    a comment)."""
    text = re.sub(r"\$\([^)]*\)", "DUMMY", text)  # $(...)
    text = re.sub(r"<[^<>\s][^<>]*>", "DUMMY", text)  # <run dir>, an f-string's <path>
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    words: list[str] = []
    for tok in lex:
        if tok in _PUNCT_END:
            break
        words.append(tok)
    return words


def invocation(cmd: Command) -> Invocation | str:
    """What ``cmd`` runs, or why it is not parsed."""
    if cmd.text in SKIP:
        return SKIP[cmd.text]
    try:
        words = _tokens(cmd.text)
    except ValueError as e:  # an unclosed quote
        return f"not shell words ({e})"  # reported as a failure by the test
    start = next(i for i, w in enumerate(words) if re.fullmatch(r"(?:\S*/)?python3?", w))
    words = words[start + 1 :]
    if words[0] == "-m":
        module, script, rest = words[1], None, words[2:]
    else:
        module, script, rest = None, words[0], words[1:]
    for w in rest:
        if w in SYNOPSIS:
            return SYNOPSIS[w]
    argv = [PLACEHOLDERS_IN.get((module or "", w), PLACEHOLDERS.get(w, w)) for w in rest]
    return Invocation(module, script, argv)


# ----------------------------------------------------------------------------------------
# Parsing, and only parsing
# ----------------------------------------------------------------------------------------
class Parsed(BaseException):  # a signal, not an error; BaseException: `except Exception` lets it by
    """Raised by the patched argparse when the outermost parse succeeds."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.parser, self.namespace = parser, namespace


class Ran(BaseException):
    """Raised instead of starting a process or exec-ing before the arguments were parsed."""


_ORIGINAL_PARSE = argparse.ArgumentParser.parse_known_args


@contextlib.contextmanager
def _parse_only(monkeypatch: pytest.MonkeyPatch, argv0: str, argv: list[str]) -> Iterator[None]:
    depth = 0

    def parse_known_args(
        self: argparse.ArgumentParser, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        nonlocal depth
        depth += 1
        try:
            ns, extras = _ORIGINAL_PARSE(self, args, namespace)
        finally:
            depth -= 1
        if depth:  # a subcommand's parser: its parent goes on
            return ns, extras
        if extras:  # as parse_args would (and experiments.cli.main does) say
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise Parsed(self, ns)

    def refuse(*a: Any, **k: Any) -> NoReturn:
        raise Ran(f"would start a process or exec (not when only parsing): {a[:2]!r}")

    # For the whole test (the checks after the parse too): no process started, no exec.
    for name in ("execv", "execve", "execvp", "execvpe", "system", "fork"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    # rllib_train restarts itself unless the hash seed is already the one it needs.
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    # The config check of train/compare builds one market: not the native kernels' build.
    monkeypatch.setenv("RECENV_NATIVE", "0")
    # For the run up to the parse only.
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        mp.setattr(sys, "argv", [argv0, *argv])
        # runpy: "'experiments.X' found in sys.modules after import of package ..."
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def parse(inv: Invocation, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Run ``inv`` up to its parse: ("ok" | "error" | "help" | "no-parse", what argparse
    printed)."""
    err = io.StringIO()
    target = inv.module or str(ROOT / str(inv.script))
    try:
        with (
            _parse_only(monkeypatch, target, inv.argv),
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            if inv.module is not None:
                runpy.run_module(inv.module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
    except Parsed as p:
        return _checked(inv, p)
    except SystemExit as e:
        code = 0 if e.code is None else e.code
        return ("help" if code == 0 else "error"), err.getvalue() or str(e.code)
    return "no-parse", err.getvalue()


# ----------------------------------------------------------------------------------------
# What a command checks after its parse, before any work
# ----------------------------------------------------------------------------------------
# Several commands refuse bad input right after argparse, before any work, exiting 2 as a
# parse error does: the runner's `--set` keys and presets, the performance tools'
# `--config KEY=VALUE`, compare_marl's agents and their `--set`, ... Those checks are run too
# (module -> check(namespace, parser, argv)); none reads a file, trains or times anything
# (compare_marl's builds each agent once on a 1-market env, as its own check does).
Check = Callable[[argparse.Namespace, argparse.ArgumentParser, list[str]], object]


def _runner(ns: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """train/compare: the configuration (preset, flags, ``--set`` keys, agent and env names);
    describe and evaluate: the env id or agent name they name."""
    from experiments import cli, config

    if ns.command in ("train", "compare"):
        cli.resolve(ns, single_run=ns.command == "train")
    elif ns.command == "describe" and ns.name is not None:
        (config.check_env_id if ns.what == "env" else config.check_agent_name)(ns.name)
    elif ns.command == "evaluate" and ns.env is not None:
        config.check_env_id(ns.env)


def _market_overrides(ns: argparse.Namespace, *_: object) -> None:
    from experiments.config import parse_market_overrides

    parse_market_overrides(ns.config)


def _ab_commits(ns: argparse.Namespace, *_: object) -> None:
    from experiments.config import split_assignment

    _market_overrides(ns)
    for x in [*ns.base_env, *ns.head_env]:
        split_assignment(x)


def _tune_sweep(ns: argparse.Namespace, *_: object) -> None:
    from experiments import tune_sweep

    points = tune_sweep.variants(ns, tune_sweep.parse_grid(ns.grid))
    first = points[0][2]
    tune_sweep.parse_seeds(ns.seeds, first.run.seed, first.seeds)


def _compare_marl(ns: argparse.Namespace, parser: argparse.ArgumentParser, _: object) -> None:
    from experiments import compare_marl

    compare_marl._check_args(parser, ns)


def _fidelity(_: object, __: object, argv: list[str]) -> None:
    from experiments import fidelity

    fidelity.parse_args(argv)


def _rllib_train(_: object, __: object, argv: list[str]) -> None:
    from experiments import rllib_train

    rllib_train.config_from_args(argv)


CHECKS: dict[str, Check] = {
    "experiments": _runner,
    "experiments.ab_commits": _ab_commits,
    "experiments.ab_forms": _market_overrides,
    "experiments.candidates_op": _market_overrides,
    "experiments.face_modes": _market_overrides,
    "experiments.memory_floor": _market_overrides,
    "experiments.profile_loops": _market_overrides,
    "experiments.tune_sweep": _tune_sweep,
    "experiments.compare_marl": _compare_marl,
    "experiments.fidelity": _fidelity,
    "experiments.rllib_train": _rllib_train,
}


def _checked(inv: Invocation, parsed: Parsed) -> tuple[str, str]:
    from experiments.config import ConfigError

    module, argv = inv.module or "", inv.argv
    if module == "experiments" and argv[:1] == ["bench"]:  # the runner passes it on
        module, argv = "experiments.bench_env", argv[1:]
    check = CHECKS.get(module)
    if check is None:
        return "ok", ""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            check(parsed.namespace, parsed.parser, argv)
    except (ConfigError, ValueError) as e:
        return "error", f"{type(e).__name__}: {e}"
    except SystemExit as e:
        if e.code not in (0, None):
            return "error", err.getvalue() or str(e.code)
    return "ok", ""


def _entry_point(inv: Invocation) -> Path | None:
    """The file ``inv`` runs (a package's ``__main__.py``), found without importing it."""
    if inv.script is not None:
        path = ROOT / inv.script
        return path if path.is_file() else None
    assert inv.module is not None
    path = ROOT.joinpath(*inv.module.split("."))
    for candidate in (path / "__main__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _mention(argv: list[str]) -> bool:
    """Whether a command is a mention of a program or subcommand (no options): one that
    only misses its required arguments is not stale (``python -m experiments resume``)."""
    return not any(a.startswith("-") for a in argv)


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([\w.-]+)\s*:(?!=)", text, re.M)}


COMMANDS = collect()


def _params() -> list[Any]:
    params = []
    for c in COMMANDS:
        marks = []
        reason = STALE_README.get((c.line, c.text)) if c.file == "README.md" else None
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


def test_commands_are_collected() -> None:
    """The collector finds the commands it is meant to (a broken pattern finds none)."""
    by_file = {c.file for c in COMMANDS}
    assert {"README.md", "CONTRIBUTING.md", "experiments/PERFORMANCE.md"} <= by_file
    assert any(c.text.startswith("python -m experiments compare") for c in COMMANDS)
    assert any(c.kind == "make" and c.text == "make test" for c in COMMANDS)
    for entry in STALE_README:  # a stale entry whose line moved or changed is not silent
        assert ("README.md", *entry) in {(c.file, c.line, c.text) for c in COMMANDS}, entry
    stated = {c.text for c in COMMANDS}
    assert not set(SKIP) - stated, f"SKIP entries no doc states any more: {set(SKIP) - stated}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("python -m experiments.bench_env --quik", "unrecognized arguments: --quik"),
        ("python -m experiments.ab_forms --base no-such-form", "--base"),
        ("python -m experiments train --agnet iql", "unrecognized arguments: --agnet"),
        ("python -m experiments compare --set env.horizn=5", "unknown config key"),
        ("python -m experiments describe env recenv/Musik-v0", "unknown env"),
        ("python -m experiments bench --quik", "unrecognized arguments: --quik"),
        ("python experiments/compare_agents.py --budgt 1", "unrecognized arguments: --budgt"),
        ("python -m experiments.compare_marl --spread", "the following arguments are required"),
        ("python -m experiments.compare_marl --out x --set mappo.gama=1", "gama"),
        ("python -m experiments.memory_floor --config num_itms=5", "unknown key"),
        ("python -m experiments.tune_sweep --grid agent.lr=", "no values"),
        ("python -m experiments.rllib_train --set env.horizon=x", "expected a int"),
    ],
)
def test_a_stale_command_fails(text: str, said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a renamed flag, a bad value, a bad --set key are caught."""
    inv = invocation(Command("doc.md", 1, text, "python"))
    assert isinstance(inv, Invocation)
    outcome, message = parse(inv, monkeypatch)
    assert outcome != "ok" and said in (message or outcome), (outcome, message)


@pytest.mark.parametrize("cmd", _params())
def test_documented_command_parses(cmd: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    where = f"{cmd.file}:{cmd.line}: {cmd.text}"
    if cmd.kind == "make":
        target = cmd.text.split()[1]
        assert target in _make_targets(), f"{where}: no rule {target!r} in the Makefile"
        return
    inv = invocation(cmd)
    if isinstance(inv, str):
        if inv.startswith("not shell words"):
            pytest.fail(f"{where}: {inv}")
        pytest.skip(inv)
    entry = _entry_point(inv)
    assert entry is not None, f"{where}: no such module or file"
    assert entry.name == "__main__.py" or '__name__ == "__main__"' in entry.read_text(), (
        f'{where}: {entry} has no `if __name__ == "__main__"`: not a command (not run)'
    )
    if inv.module == "experiments" and not inv.argv:
        return  # a mention of the runner itself (`python -m experiments`): it exists
    outcome, said = parse(inv, monkeypatch)
    if outcome == "help":
        assert {"-h", "--help"} & set(inv.argv), f"{where}: exited 0 before parsing\n{said}"
    elif outcome == "no-parse":
        pytest.fail(f"{where}: ran to its end without parsing arguments (no command line?)")
    elif outcome == "error" and _mention(inv.argv) and "arguments are required" in said:
        return  # `python -m experiments resume`, prog="python -m experiments.X": a name
    elif outcome != "ok":
        pytest.fail(f"{where}\ndoes not parse (argv {inv.argv}):\n{said or outcome}")


def test_the_command_compare_marl_records_parses_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report's ``Command:`` line is its command as typed: an empty ``--head-to-head ''``
    was written without its quotes (``' '.join``), which no longer parses."""
    from experiments import compare_marl

    monkeypatch.setenv("RECENV_NATIVE", "0")
    out = tmp_path / "marl"
    argv = ["--out", str(out), "--agents", "random", "--modes", "competitive", "--seeds", "1"]
    argv += ["--steps", "8", "--num-envs", "1", "--eval-envs", "1", "--horizon", "4"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert compare_marl.main([*argv, "--head-to-head", ""]) == 0
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("Command:"))
    inv = invocation(Command("report.md", 1, line.removeprefix("Command: ").strip("`"), "python"))
    assert isinstance(inv, Invocation) and inv.argv[-2:] == ["--head-to-head", ""], inv
    assert parse(inv, monkeypatch)[0] == "ok"
