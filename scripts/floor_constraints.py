"""Print pip constraints that pin every requirement of pyproject.toml to its stated floor.

``pip install -c <(python scripts/floor_constraints.py) -e .[dev]`` then installs the oldest
releases recenv says it supports (``numpy>=1.24`` becomes ``numpy==1.24``), which is how
``scripts/test_floor.sh`` checks that those floors are true. Every requirement must state a
floor (``>=``); one without is an error, so a new dependency cannot slip in untested.

Usage: python scripts/floor_constraints.py [--extras dev,plots] [--skip torch] [PYPROJECT]

``--skip`` leaves a requirement unpinned: torch by default, whose floor (2.11) is checked
by hand (README) because its only PyPI builds for Linux carry CUDA (GBs). Requirements on
recenv itself (``recenv[rllib,...]``) are followed into the extras they name.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# name, [extras], version specifiers, ; marker (PEP 508 without URLs, as pyproject uses).
_REQ = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
    r"\s*(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.+?))?\s*$"
)
_FLOOR = re.compile(r">=\s*([0-9][0-9A-Za-z.+!-]*)")


def _normal(name: str) -> str:
    """PEP 503's normal form of a project name: ``Stable_Baselines3`` -> ``stable-baselines3``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_key(version: str) -> tuple[int, ...]:
    """``"1.11.1"`` -> ``(1, 11, 1)``, to compare floors (they are plain release numbers)."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise ValueError(f"floor {version!r} is not a plain release number (like 1.24 or 2.0.1)")
    return tuple(int(p) for p in version.split("."))


def floor_pins(pyproject: dict, extras: list[str], skip: set[str]) -> list[str]:
    """``name==floor[; marker]`` for each requirement of ``project.dependencies`` and of the
    named extras, in their order, each once: at the highest of its floors where several
    requirements name it (the ``rllib`` extra's ``numpy>=2`` over ``numpy>=1.24``).

    Raises ``ValueError`` naming the requirement when one states no ``>=`` floor or cannot
    be parsed, and naming the extra when an extra does not exist.
    """
    project = pyproject["project"]
    self_name = _normal(project["name"])
    optional = project.get("optional-dependencies", {})
    pins: dict[str, tuple[str, str]] = {}  # name -> (floor, marker), in first-seen order
    seen_extras: set[str] = set()

    def add(requirements: list[str], where: str) -> None:
        for req in requirements:
            m = _REQ.match(req)
            if m is None:
                raise ValueError(f"{where}: cannot parse requirement {req!r}")
            name = _normal(m["name"])
            if name == self_name:  # e.g. integrations = ["recenv[rllib,torchrl,sb3]"]
                for extra in (m["extras"] or "").split(","):
                    follow(extra.strip(), where)
                continue
            if name in skip:
                continue
            floor = _FLOOR.search(m["spec"])
            if floor is None:
                raise ValueError(
                    f"{where}: requirement {req!r} states no floor ('>=VERSION'); every "
                    "requirement must, so that scripts/test_floor.sh can test it"
                )
            marker = f"; {m['marker']}" if m["marker"] else ""
            held = pins.get(name)
            if held is None or _version_key(floor[1]) > _version_key(held[0]):
                pins[name] = (floor[1], marker if held is None else held[1])

    def follow(extra: str, where: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise ValueError(
                f"{where}: no extra {extra!r} in pyproject.toml; extras: {sorted(optional)}"
            )
        seen_extras.add(extra)
        add(optional[extra], f"optional-dependencies.{extra}")

    add(project.get("dependencies", []), "dependencies")
    for extra in extras:
        follow(extra, "--extras")
    return [f"{name}=={floor}{marker}" for name, (floor, marker) in pins.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pyproject", nargs="?", default="pyproject.toml", type=Path)
    p.add_argument("--extras", default="dev", help="comma-separated extras to pin too")
    p.add_argument("--skip", default="torch", help="comma-separated names left unpinned")
    args = p.parse_args(argv)
    with args.pyproject.open("rb") as f:
        pyproject = tomllib.load(f)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    skip = {_normal(s.strip()) for s in args.skip.split(",") if s.strip()}
    try:
        pins = floor_pins(pyproject, extras, skip)
    except ValueError as e:
        print(f"floor_constraints: {e}", file=sys.stderr)
        return 2
    print(f"# the floors of {args.pyproject} (extras: {','.join(extras) or 'none'})")
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
