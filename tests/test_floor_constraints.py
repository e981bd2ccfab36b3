"""scripts/floor_constraints.py: the floors scripts/test_floor.sh installs."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "floor_constraints", ROOT / "scripts" / "floor_constraints.py"
)
assert _spec is not None and _spec.loader is not None
fc = importlib.util.module_from_spec(_spec)
sys.modules["floor_constraints"] = fc
_spec.loader.exec_module(fc)


def _pyproject(deps, **extras):
    return {"project": {"name": "recenv", "dependencies": deps, "optional-dependencies": extras}}


def test_every_requirement_of_the_repo_states_a_floor(capsys):
    extras = fc.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every_extra = ",".join(extras["optional-dependencies"])
    assert fc.main(["--extras", every_extra, str(ROOT / "pyproject.toml")]) == 0
    pins = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    names = [p.split("==")[0] for p in pins]
    assert len(names) == len(set(names))
    assert "torch" not in names  # skipped by default: its floor is checked by hand
    for name in ("numpy", "gymnasium", "pettingzoo", "pytest", "ray", "vmas"):
        assert name in names
    assert all("==" in p and ">=" not in p for p in pins)


def test_floors_keep_markers_follow_self_extras_and_skip():
    pyproject = _pyproject(
        ["torch>=2.11", "numpy>=1.24", "tomli>=2.0; python_version < '3.11'"],
        dev=["pytest>=8", "recenv[sb3]"],
        sb3=["stable_baselines3>=2.4,<3", "numpy>=1.26"],
    )
    pins = fc.floor_pins(pyproject, ["dev"], {"torch"})
    assert pins == [
        "numpy==1.26",  # pinned once, at the highest of its floors
        "tomli==2.0; python_version < '3.11'",
        "pytest==8",
        "stable-baselines3==2.4",  # PEP 503 name
    ]
    assert fc.floor_pins(pyproject, [], {"torch"})[0] == "numpy==1.24"  # without the extra


def test_a_requirement_without_a_floor_is_refused_by_name(capsys, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "recenv"\ndependencies = ["numpy>=1.24", "tqdm<5"]\n'
    )
    assert fc.main(["--extras", "", str(tmp_path / "pyproject.toml")]) == 2
    err = capsys.readouterr().err
    assert "dependencies: requirement 'tqdm<5' states no floor" in err


def test_an_unknown_extra_is_refused_naming_the_extras():
    with pytest.raises(ValueError, match=r"no extra 'gpu'.*extras: \['dev'\]"):
        fc.floor_pins(_pyproject(["numpy>=1.24"], dev=["pytest>=8"]), ["gpu"], set())


def test_a_floor_that_is_no_plain_release_number_is_refused():
    pyproject = _pyproject(["numpy>=1.24"], dev=["numpy>=2.0rc1"])
    with pytest.raises(ValueError, match=r"floor '2.0rc1' is not a plain release number"):
        fc.floor_pins(pyproject, ["dev"], set())
