"""The README's Python examples run, and its integration examples are the tested ones.

The quick start runs as written but with fewer markets and steps (the sizes are the only
substitutions); the integration snippets must equal those of ``docs/integrations.md``, which
``tests/integrations/test_docs.py`` executes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
SNIPPET = re.compile(r"<!-- snippet: (\w+) -->\s*```python\n(.*?)```", re.DOTALL)
SHRINK = {"num_envs=4096": "num_envs=8", "5_000": "200"}


def _blocks() -> list[str]:
    snippet_bodies = {body for _, body in SNIPPET.findall(README)}
    return [b for b in BLOCK.findall(README) if b not in snippet_bodies]


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index, capsys):
    code = _blocks()[index]
    for big, small in SHRINK.items():
        code = code.replace(big, small)
    exec(compile(code, f"README.md:block{index}", "exec"), {"__name__": "__main__"})


def test_readme_integration_examples_are_the_tested_ones():
    docs = dict(SNIPPET.findall((ROOT / "docs" / "integrations.md").read_text()))
    readme = dict(SNIPPET.findall(README))
    assert readme, "the README has no integration examples"
    for name, body in readme.items():
        assert body == docs.get(name), f"README snippet {name!r} differs from docs/integrations.md"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    assert "make run" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
