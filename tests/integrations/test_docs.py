"""The copy-paste examples of ``docs/integrations.md`` run as written (so they cannot rot).

An example is a ```python block right after an ``<!-- snippet: NAME -->`` marker; each skips
when its library is not installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "integrations.md"
SNIPPET = re.compile(r"<!-- snippet: (\w+) -->\s*```python\n(.*?)```", re.DOTALL)
NEEDS = {
    "gymnasium_vector": [],
    "gymnasium_single": [],
    "torchrl": ["torchrl"],
    "sb3": ["supersuit", "stable_baselines3"],
}


def snippets() -> dict[str, str]:
    return dict(SNIPPET.findall(DOC.read_text()))


def test_every_integration_has_an_example():
    assert set(snippets()) == {*NEEDS, "rllib"}


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_example_runs(name, one_thread, tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))  # else SB3 leaves a dir in /tmp
    for module in NEEDS[name]:
        pytest.importorskip(module)
    exec(compile(snippets()[name], f"{DOC.name}:{name}", "exec"), {"__name__": "__main__"})


@pytest.mark.xdist_group("ray")
def test_rllib_example_runs(local_ray, monkeypatch):
    pytest.importorskip("ray.rllib")
    # The example starts and stops its own Ray; here it runs on the shared local Ray.
    monkeypatch.setattr(local_ray, "init", lambda *args, **kwargs: None)
    monkeypatch.setattr(local_ray, "shutdown", lambda: None)
    exec(compile(snippets()["rllib"], f"{DOC.name}:rllib", "exec"), {"__name__": "__main__"})
    assert local_ray.is_initialized()


def test_readme_integrations_are_the_docs_sections_word_for_word():
    """``docs/integrations.md`` says its four README sections are README's, word for word;
    nothing checked it, and they had drifted (a paragraph on one side only, another moved
    between sections, a sentence reworded)."""
    readme = (DOC.parents[1] / "README.md").read_text()

    def between(text: str, start: str, end: str) -> str:
        a = text.index(start)
        return text[a : text.index(end, a)].strip().removesuffix("---").strip()

    first = "### Gymnasium vector env: one learning agent"
    assert between(readme, first, "\n## Performance") == between(
        DOC.read_text(), first, "\n## Gymnasium vector env in detail"
    )
