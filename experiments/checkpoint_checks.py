"""Checks of a run checkpoint's structure before anything is restored from it.

A checkpoint damaged by hand or by a foreign tool but still of this ``CHECKPOINT_VERSION`` is
refused with the key at fault and what was expected: otherwise ``Trainer.restore`` fails
part-way with a KeyError/TypeError, or restores a tensor of another shape
(:func:`experiments.snapshot.restore` replaces plain tensors by name) or a counter of another
type that fails only in the middle of the resumed training, after it has written into the run
directory. :func:`check_run_checkpoint` checks what does not depend on the run's env and
agents; :func:`check_fits` the rest against the freshly built ones. Paths in messages read like
Python: ``loop['iters']``, ``env_snapshot['users']``, ``state['learners']['0.w']``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from experiments import snapshot
from experiments.errors import RunError

_MAX_PROBLEMS = 5  # named in one message


class _Problems:
    """The problems found so far (the first ``_MAX_PROBLEMS``) and how many there were."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append(text)

    def wrong(self, where: str, value: Any, expected: str) -> None:
        self.add(f"{_shown(where)} is {describe(value)}; expected {expected}")

    def missing(self, where: str, expected: str) -> None:
        self.add(f"{_shown(where)} is missing; expected {expected}")

    def raise_for(self, source: Path) -> None:
        if not self.count:
            return
        more = self.count - len(self.items)
        tail = f" (and {more} more)" if more > 0 else ""
        raise RunError(f"checkpoint {str(source)!r} is damaged: {'; '.join(self.items)}{tail}")


def _at(where: str, key: Any) -> str:
    return f"{where}[{key!r}]" if where else str(key)


def _shown(where: str) -> str:
    return where if "[" in where else repr(where)  # a top-level key: 'loop'


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def describe(x: Any) -> str:
    """A value as a damage message names it: a tensor's shape and dtype, else its type."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} {_dtype(x)}"
    if x is None:
        return "None"
    kind = _kind(x)
    if isinstance(kind, str):
        return f"a saved {kind}"
    if isinstance(x, (bool, int, float, str)):
        text = repr(x)
        return f"a {type(x).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"
    return "a dict" if isinstance(x, dict) else f"a {type(x).__name__}"


def _kind(x: Any) -> Any:
    """The kind of a value :func:`snapshot.snapshot` encoded (``None``: a plain value)."""
    return x.get(snapshot.KIND) if isinstance(x, dict) else None


def _expected_like(live: Any) -> str:
    """What a value of the same kind as ``live`` is called in a damage message."""
    if isinstance(live, torch.Tensor):
        return f"a tensor of shape {tuple(live.shape)} {_dtype(live)}"
    kind = _kind(live)
    if kind == "tensor":
        return _expected_like(live["value"])
    if kind is not None:
        return f"a saved {kind}"
    if isinstance(live, bool):
        return "a bool"
    if isinstance(live, (int, float)):
        return "a number"
    if isinstance(live, str):
        return "a str"
    if isinstance(live, dict):
        return "a dict"
    if isinstance(live, list):
        return "a list"
    return f"a {type(live).__name__}"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# The plain sections of a run checkpoint: key -> (check, what it must be).
_Field = tuple[Callable[[Any], bool], str]
_DICT: _Field = (lambda x: isinstance(x, dict), "a dict")
_LIST: _Field = (lambda x: isinstance(x, list), "a list")
_INT: _Field = (_is_int, "an int")
_NUMBER: _Field = (_is_number, "a number")
_BOOL: _Field = (lambda x: isinstance(x, bool), "a bool")
_STR: _Field = (lambda x: isinstance(x, str), "a str")
_TENSOR: _Field = (lambda x: isinstance(x, torch.Tensor), "a tensor")
_NUMBER_OR_NONE: _Field = (lambda x: x is None or _is_number(x), "a number or None")
_SECTIONS: dict[str, _Field] = {
    "header": _DICT,
    "state": _DICT,
    "run": _DICT,
    "loop": _DICT,
    "agent_snapshot": _DICT,
    "env_snapshot": _DICT,
    "rng": _DICT,
}
_RUN_FIELDS: dict[str, _Field] = {
    "format": _STR,
    "version": _INT,
    "run_name": _STR,
    "config": _DICT,
    "steps": _INT,
}
_LOOP_FIELDS: dict[str, _Field] = {
    "iters": _INT,
    "steps": _INT,
    "episodes": _INT,
    "curve": _LIST,
    "window": _LIST,
    "last_metrics": _DICT,
    "trained": _BOOL,
    "step_scalars": _DICT,
}
_LOOP_OPTIONAL = ("step_scalars",)  # see LoopState.from_dict
_NUMPY_RNG_FIELDS: dict[str, _Field] = {
    "kind": _STR,
    "keys": _TENSOR,
    "pos": _INT,
    "has_gauss": _INT,
    "gauss": _NUMBER,
}
_PYTHON_RNG_FIELDS: dict[str, _Field] = {
    "version": _INT,
    "state": _LIST,
    "gauss": _NUMBER_OR_NONE,
}


def _fields_ok(
    d: Mapping[str, Any],
    where: str,
    fields: Mapping[str, _Field],
    problems: _Problems,
    optional: tuple[str, ...] = (),
) -> list[str]:
    """Check ``d``'s ``fields``; the names of those present and of the right type."""
    good = []
    for key, (ok, what) in fields.items():
        if key not in d:
            if key not in optional:
                problems.missing(_at(where, key), what)
        elif not ok(d[key]):
            problems.wrong(_at(where, key), d[key], what)
        else:
            good.append(key)
    return good


def _tensor_like(saved: Any, live: torch.Tensor, where: str, problems: _Problems) -> None:
    """``saved`` must be a tensor of ``live``'s dtype and shape (any shape when ``live`` is
    empty: a state allocated on first use, like MF's per-user sums)."""
    if not isinstance(saved, torch.Tensor):
        problems.wrong(where, saved, _expected_like(live))
    elif saved.dtype != live.dtype or (live.numel() and saved.shape != live.shape):
        problems.wrong(where, saved, f"shape {tuple(live.shape)} {_dtype(live)}")


def check_run_checkpoint(payload: Mapping[str, Any], source: Path) -> None:
    """The sections, types and sizes of a run checkpoint that :meth:`Trainer.restore` reads
    and that do not depend on the run's env and agents (those are checked against them by
    :func:`check_fits`); a :class:`RunError` naming the file and every key at fault."""
    problems = _Problems()
    present = _fields_ok(payload, "", _SECTIONS, problems)
    if "run" in present:
        run = payload["run"]
        if "steps" in _fields_ok(run, "run", _RUN_FIELDS, problems) and "loop" in present:
            steps = payload["loop"].get("steps")
            if _is_int(steps) and steps != run["steps"]:
                problems.add(f"run['steps'] = {run['steps']} is not loop['steps'] = {steps}")
    if "loop" in present:
        loop = payload["loop"]
        good = _fields_ok(loop, "loop", _LOOP_FIELDS, problems, _LOOP_OPTIONAL)
        for name, values in (("curve", _NUMBER), ("window", _TENSOR)):  # lists of dicts
            if name in good:
                for i, item in enumerate(loop[name]):
                    if not isinstance(item, dict):
                        problems.wrong(_at(_at("loop", name), i), item, "a dict")
                    else:
                        _values_ok(item, _at(_at("loop", name), i), values, problems)
        for name in ("last_metrics", "step_scalars"):
            if name in good:
                _values_ok(loop[name], _at("loop", name), _NUMBER, problems)
    if "rng" in present:
        _check_rng(payload["rng"], problems)
    problems.raise_for(source)


def _values_ok(d: Mapping[str, Any], where: str, field_: _Field, problems: _Problems) -> None:
    ok, what = field_
    for k, v in d.items():
        if not ok(v):
            problems.wrong(_at(where, k), v, what)


def numpy_rng_state() -> tuple[str, NDArray[np.uint32], int, int, float]:
    """The global numpy RNG's state as ``np.random.get_state()`` gives it: the legacy tuple
    ``(kind, keys, pos, has_gauss, gauss)`` of its MT19937, which a checkpoint's
    ``rng['numpy']`` holds. (A dict only once ``np.random.set_bit_generator`` has replaced the
    MT19937, which recenv never does: its state cannot be checkpointed.)"""
    state = np.random.get_state(legacy=True)  # noqa: NPY002
    if isinstance(state, dict):
        raise TypeError(
            f"the global numpy RNG is a {state.get('bit_generator')}, not the MT19937 whose "
            "state a checkpoint holds"
        )
    return state


def _check_rng(rng: Mapping[str, Any], problems: _Problems) -> None:
    ok = _fields_ok(rng, "rng", {"torch": _TENSOR, "numpy": _DICT, "python": _DICT}, problems)
    if "torch" in ok:
        _tensor_like(rng["torch"], torch.get_rng_state(), "rng['torch']", problems)
    if "numpy" in ok:
        n = rng["numpy"]
        if "keys" in _fields_ok(n, "rng['numpy']", _NUMPY_RNG_FIELDS, problems):
            keys = torch.from_numpy(numpy_rng_state()[1].astype(np.int64))
            _tensor_like(n["keys"], keys, "rng['numpy']['keys']", problems)
    if "python" in ok:
        p = rng["python"]
        if "state" in _fields_ok(p, "rng['python']", _PYTHON_RNG_FIELDS, problems):
            size = len(random.getstate()[1])
            if len(p["state"]) != size or not all(_is_int(v) for v in p["state"]):
                problems.add(
                    f"rng['python']['state'] is a list of {len(p['state'])} values; expected "
                    f"{size} ints"
                )
    if "cuda" in rng and not (
        isinstance(rng["cuda"], list) and all(isinstance(t, torch.Tensor) for t in rng["cuda"])
    ):
        problems.wrong("rng['cuda']", rng["cuda"], "a list of tensors")


def check_fits(
    saved: Mapping[str, Any], live: Mapping[str, Any], source: Path, *, none_ok: tuple = ()
) -> None:
    """Each section of ``saved`` against the same section of ``live``, what the run's freshly
    built env and agents give (:meth:`Trainer.restore`): every key they have must be there,
    of the same kind; every tensor of theirs of the same dtype and shape (any shape where
    theirs is empty: allocated on first use). What only training fills in (a replay buffer's
    rows, an optimizer's moments, a list that grows, a value still ``None`` when built) is
    left to the object's own ``load_state_dict``. ``none_ok``: the sections where a saved
    ``None`` is accepted in place of anything (an agent may drop a lazily allocated state)."""
    problems = _Problems()
    for name, mine in live.items():
        _fits(saved[name], mine, name, problems, name in none_ok)
    problems.raise_for(source)


def _fits(saved: Any, live: Any, where: str, problems: _Problems, none_ok: bool) -> None:
    if live is None or (saved is None and none_ok):
        return
    kind = _kind(live)
    if isinstance(live, torch.Tensor):
        _tensor_like(saved, live, where, problems)
    elif kind is not None:
        _fits_kind(saved, live, kind, where, problems, none_ok)
    elif isinstance(live, dict):
        if not isinstance(saved, dict) or _kind(saved) is not None:
            problems.wrong(where, saved, "a dict")
            return
        lacks = [k for k in live if k not in saved]
        if len(lacks) == 1:
            problems.missing(_at(where, lacks[0]), _expected_like(live[lacks[0]]))
        elif lacks:  # e.g. a learner's every weight: one problem
            names = ", ".join(map(repr, lacks[:4]))
            names += f" and {len(lacks) - 4} more" if len(lacks) > 4 else ""
            problems.add(
                f"{_shown(where)} is missing {len(lacks)} of its {len(live)} keys: {names}"
            )
        for k, v in live.items():
            if k in saved:
                _fits(saved[k], v, _at(where, k), problems, none_ok)
    elif isinstance(live, list):
        if not isinstance(saved, list):
            problems.wrong(where, saved, "a list")
        elif len(saved) == len(live):
            for i, (s, v) in enumerate(zip(saved, live, strict=True)):
                _fits(s, v, _at(where, i), problems, none_ok)
        elif any(_kind(v) in snapshot._IN_PLACE for v in live):
            # Objects snapshot.restore restores in place, one per entry (its _IN_PLACE kinds:
            # learners, optimizers, buffers): it needs as many as there are.
            problems.add(
                f"{_shown(where)} has {len(saved)} entries; expected {len(live)}, one per "
                f"{_kind(live[0]) or 'entry'}"
            )
    elif isinstance(live, bool):
        if not isinstance(saved, bool):
            problems.wrong(where, saved, "a bool")
    elif _is_number(live):
        if not _is_number(saved):
            problems.wrong(where, saved, "a number")
    elif isinstance(live, str) and not isinstance(saved, str):
        problems.wrong(where, saved, "a str")


def _fits_kind(
    saved: Any, live: Mapping[str, Any], kind: str, where: str, problems: _Problems, none_ok: bool
) -> None:
    """A snapshot's encoded value (:mod:`experiments.snapshot`) against the live one's."""
    theirs = _kind(saved)
    if kind in ("tensor", "ref") and theirs in ("tensor", "ref"):
        if kind == "tensor" and theirs == "tensor":
            _tensor_like(saved.get("value"), live["value"], where, problems)
        return  # a tensor shared by two attributes: checked where it is saved
    if theirs != kind:
        problems.wrong(where, saved, _expected_like(live))
        return
    value, mine = saved.get("value"), live["value"]
    if kind in ("object", "module"):  # attributes; a module's state_dict
        _fits(value, dict(mine), where, problems, none_ok)
    elif kind == "generator":
        _tensor_like(value, mine, where, problems)
    elif kind in ("optimizer", "state_dict"):  # filled in by training: its load_state_dict
        if not isinstance(value, dict):
            problems.wrong(where, value, "a dict")
    elif kind == "ndarray":
        if not isinstance(value, torch.Tensor):
            problems.wrong(where, value, "a tensor")
    elif kind in ("dict", "tuple", "set", "deque"):
        if not isinstance(value, list):
            problems.wrong(where, value, "a list")
        elif kind == "dict":
            _fits_pairs(value, mine, where, problems, none_ok)
        elif kind == "tuple" and len(value) == len(mine):
            for i, (s, v) in enumerate(zip(value, mine, strict=True)):
                _fits(s, v, _at(where, i), problems, none_ok)


def _fits_pairs(saved: list, live: list, where: str, problems: _Problems, none_ok: bool) -> None:
    """A saved dict (``[[key, value], ...]``): the values of the keys both have."""
    if not all(isinstance(p, list) and len(p) == 2 for p in saved):
        problems.wrong(where, saved, "a list of [key, value] pairs")
        return
    theirs = {k: v for k, v in saved if isinstance(k, (str, int, float, bool, type(None)))}
    for k, v in live:
        if isinstance(k, (str, int, float, bool, type(None))) and k in theirs:
            _fits(theirs[k], v, _at(where, k), problems, none_ok)
