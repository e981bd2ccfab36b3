"""The notebooks in notebooks/ execute (on tiny settings) and are committed without outputs.

Each notebook has one cell tagged ``parameters`` holding its sizes; the test swaps in the tiny
values below (same names) and runs the notebook top to bottom in a fresh kernel of this
interpreter (a kernel spec written to a temporary directory, so no installed kernel is needed).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

TINY = {
    "01_quickstart": "NUM_ENVS = 4\nHORIZON = 20\nTRAIN_STEPS = 200",
    "02_custom_agent": "TRAIN_STEPS = 160\nNUM_ENVS = 4\nHORIZON = 20",
    "03_analyse_comparison": (
        'COMPARISON = ""\n'
        'SMALL_RUN = ["total_steps=80", "seeds=2", "num_envs=4", "eval_episodes=4", '
        '"env.horizon=10", "log_every=20", "checkpoint_every=40"]'
    ),
    "04_team_value": "NUM_ENVS = 4\nHORIZON = 10\nTRAIN_STEPS = 320\nNUM_AGENTS = 4",
}


def _names(source: str) -> set[str]:
    return set(re.findall(r"^(\w+)\s*=", source, flags=re.M))


def _parameters(nb) -> object:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "one cell tagged 'parameters'"
    return cells[0]


def test_every_notebook_has_tiny_settings():
    assert {p.stem for p in NOTEBOOKS} == set(TINY)
    for path in NOTEBOOKS:
        cell = _parameters(nbformat.read(path, as_version=4))
        assert _names(cell.source) == _names(TINY[path.stem]), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (path.name, cell.source)
        assert "execution" not in cell.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    _parameters(nb).source = TINY[path.stem]
    spec = tmp_path / "kernels" / "recenv-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "recenv tests",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The notebooks keep their runs in tempfile.mkdtemp() dirs (a reader may want them);
    # under test they go in tmp_path, not the machine's /tmp.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    km = KernelManager(
        kernel_name="recenv-tests",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(
        nb, km=km, timeout=300, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
