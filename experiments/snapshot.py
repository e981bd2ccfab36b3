"""Complete, pickle-free snapshots of live objects, for bit-identical resume.

``Agent.state_dict()`` holds what an agent needs to *act* again (weights, statistics); an exact
resume needs more — replay buffers, n-step windows, running metric sums, every generator and
optimizer state — and so does the env (every tensor of the batched market, its current
observation, its seed generator). :func:`snapshot` walks an object's attributes and encodes
what it finds into tensors, numbers, strings, lists and dicts only, so the checkpoint is read
back with ``torch.load(weights_only=True)``; :func:`restore` writes the snapshot back onto a
freshly built object of the same kind, in place:

- ``nn.Module``, ``torch.optim.Optimizer`` and any other object with ``state_dict`` and
  ``load_state_dict`` (a replay buffer saves its filled rows, not its capacity) except agents:
  their own methods (so optimizers keep pointing at the module's parameters);
- ``torch.Generator``: ``get_state`` / ``set_state``;
- plain objects (replay buffers, accumulators, dataclasses of tensors): attribute by
  attribute, recursively; lists of such objects element by element;
- tensors, numbers (numpy scalars keep their type), strings, lists, tuples, dicts, deques,
  sets: replaced by the saved value (one tensor referenced twice is restored as one tensor);
- static parts are skipped: frozen dataclasses (configs), the env seen from an agent, devices,
  dtypes, functions and classes, and the attribute names in ``skip``.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import types
from typing import Any, cast

import numpy as np
import torch
from torch import nn

KIND = "__snapshot_kind__"
# The method restore() calls on an object after writing its attributes back, when it has one.
RESTORED_HOOK = "state_restored"
_SCALARS = (type(None), bool, int, float, str)
_STATIC = (
    torch.device,
    torch.dtype,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
    slice,
    range,
)


class SnapshotError(ValueError):
    """An object holds something a snapshot cannot encode or restore."""


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every tensor, generator (as its state) and plain value (None, bool, int, float, str)
    reachable from ``value`` through dataclass fields, dicts, lists and tuples, by path
    (``path.field``, ``path['key']``, ``path[i]``); tensors as they are, not copied. What
    two live objects hold can be compared leaf by leaf this way (``experiments.cuda_build``,
    the tests' market snapshots); anything else (functions, modules) is left out."""
    out: dict[str, Any] = {}
    _leaves(value, path, out)
    return out


def _leaves(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, torch.Tensor):
        out[path] = value
    elif isinstance(value, torch.Generator):
        out[path] = value.get_state()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _leaves(getattr(value, f.name), f"{path}.{f.name}", out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _leaves(v, f"{path}[{k!r}]", out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _leaves(v, f"{path}[{i}]", out)
    elif isinstance(value, _SCALARS):
        out[path] = value


def _is_static(x: Any, exclude: tuple[int, ...]) -> bool:
    if id(x) in exclude or isinstance(x, _STATIC):
        return True
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        # Configs. (__dataclass_params__ is not in typeshed's DataclassInstance.)
        return bool(cast(Any, type(x)).__dataclass_params__.frozen)
    if isinstance(x, (dict, list, tuple)) and any(_is_static(v, exclude) for v in _values(x)):
        return True  # e.g. a table of slices: static as a whole, never half restored
    # A compiled function (torch.compile) or any other callable that is not a module.
    return callable(x) and not isinstance(x, nn.Module) and not hasattr(x, "__dict__")


def _values(x: dict | list | tuple) -> list[Any]:
    return list(x.values()) if isinstance(x, dict) else list(x)


def snapshot(obj: Any, *, skip: tuple[str, ...] = (), exclude: tuple[Any, ...] = ()) -> dict:
    """The state of ``obj``'s attributes (all but ``skip`` and static ones); ``exclude``:
    objects never to descend into (e.g. the env an agent holds a reference to)."""
    ex = tuple(id(x) for x in exclude)
    memo: dict[int, tuple[int, Any]] = {}
    return {
        name: _encode(value, ex, memo, f"{type(obj).__name__}.{name}")
        for name, value in _attributes(obj)
        if name not in skip and not _is_static(value, ex)
    }


def _attributes(obj: Any) -> list[tuple[str, Any]]:
    if not hasattr(obj, "__dict__"):
        raise SnapshotError(f"cannot snapshot {type(obj).__name__}: it has no __dict__")
    return list(vars(obj).items())


def _encode(x: Any, ex: tuple[int, ...], memo: dict[int, tuple[int, Any]], where: str) -> Any:
    if isinstance(x, _SCALARS):
        return x
    if isinstance(x, torch.Tensor):
        if id(x) in memo:
            return {KIND: "ref", "id": memo[id(x)][0]}
        # Holding x keeps its id from being reused by a temporary while the walk runs.
        memo[id(x)] = (len(memo), x)
        return {
            KIND: "tensor",
            "id": memo[id(x)][0],
            "device": str(x.device),
            "value": x.detach().cpu().clone(),
        }
    if isinstance(x, torch.Generator):
        return {KIND: "generator", "device": str(x.device), "value": x.get_state()}
    if isinstance(x, nn.Module):
        return {KIND: "module", "value": x.state_dict()}
    if isinstance(x, torch.optim.Optimizer):
        return {KIND: "optimizer", "value": x.state_dict()}
    if _has_own_state_dict(x):
        # E.g. a replay buffer: its state_dict holds the filled rows, not the capacity.
        return {KIND: "state_dict", "value": _encode(x.state_dict(), ex, memo, where)}
    if isinstance(x, np.ndarray):
        return {KIND: "ndarray", "value": torch.from_numpy(np.array(x))}
    if isinstance(x, np.generic):
        if x.dtype.kind in "biuf":  # restored as its numpy type: float32 arithmetic stays so
            return {KIND: "npscalar", "dtype": x.dtype.name, "value": x.item()}
        return x.item()
    if isinstance(x, collections.deque):
        return {
            KIND: "deque",
            "maxlen": x.maxlen,
            "value": [_encode(v, ex, memo, f"{where}[{i}]") for i, v in enumerate(x)],
        }
    if isinstance(x, list):
        return [_encode(v, ex, memo, f"{where}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return {KIND: "tuple", "value": [_encode(v, ex, memo, where) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {KIND: "set", "value": [_encode(v, ex, memo, where) for v in sorted(x, key=repr)]}
    if isinstance(x, dict):
        return {
            KIND: "dict",
            "value": [
                [_encode(k, ex, memo, where), _encode(v, ex, memo, f"{where}[{k!r}]")]
                for k, v in x.items()
            ],
        }
    if hasattr(x, "__dict__"):
        return {
            KIND: "object",
            "type": f"{type(x).__module__}:{type(x).__qualname__}",
            "value": {
                n: _encode(v, ex, memo, f"{where}.{n}")
                for n, v in vars(x).items()
                if not _is_static(v, ex)
            },
        }
    raise SnapshotError(f"cannot snapshot {where}: a {type(x).__name__} ({x!r:.60})")


def _has_own_state_dict(x: Any) -> bool:
    """Objects that say how to save themselves, except agents (whose ``state_dict`` is what
    they need to act, less than a resume needs: they are walked instead)."""
    from agents.base import Agent

    return (
        not isinstance(x, Agent)
        and callable(getattr(x, "state_dict", None))
        and callable(getattr(x, "load_state_dict", None))
    )


def restore(obj: Any, state: dict) -> None:
    """Write ``state`` (from :func:`snapshot`) back onto ``obj``, in place. Then, like
    pickle's ``__setstate__``, ``obj.state_restored()`` is called when ``obj`` defines it (on
    nested objects restored in place too), so an object whose attributes were replaced can
    re-derive what depends on them (e.g. ``BatchedMarket`` re-homes its tables and re-checks
    its compiled step's guards) without every caller having to remember it."""
    refs: dict[int, torch.Tensor] = {}
    for name, saved in state.items():
        _restore_attr(obj, name, saved, refs, f"{type(obj).__name__}.{name}")
    _restored(obj)


def _restored(obj: Any) -> None:
    hook = getattr(obj, RESTORED_HOOK, None)
    if callable(hook):
        hook()


def _kind(saved: Any) -> str | None:
    return saved.get(KIND) if isinstance(saved, dict) else None


def _restore_attr(obj: Any, name: str, saved: Any, refs: dict, where: str) -> None:
    cur = getattr(obj, name, None)
    if not _restore_in_place(cur, saved, refs, where):
        setattr(obj, name, _decode(saved, refs, where))


def _restore_in_place(cur: Any, saved: Any, refs: dict, where: str) -> bool:
    """Restore into the existing ``cur`` when it is a stateful object; ``False`` when the
    saved value should replace it."""
    kind = _kind(saved)
    if kind == "module":
        if not isinstance(cur, nn.Module):
            raise SnapshotError(f"{where}: saved a module, the object has {type(cur).__name__}")
        cur.load_state_dict(saved["value"])
        return True
    if kind == "optimizer":
        if not isinstance(cur, torch.optim.Optimizer):
            raise SnapshotError(f"{where}: saved an optimizer, found {type(cur).__name__}")
        cur.load_state_dict(saved["value"])
        return True
    if kind == "state_dict":
        if not _has_own_state_dict(cur):
            raise SnapshotError(f"{where}: saved a state_dict, found {type(cur).__name__}")
        cur.load_state_dict(_decode(saved["value"], refs, where))
        return True
    if kind == "generator" and isinstance(cur, torch.Generator):
        cur.set_state(saved["value"])
        return True
    if kind == "object":
        if cur is None or not hasattr(cur, "__dict__"):
            return False  # rebuilt from its class by _decode
        for n, v in saved["value"].items():
            _restore_attr(cur, n, v, refs, f"{where}.{n}")
        _restored(cur)
        return True
    if isinstance(saved, list) and isinstance(cur, list) and len(cur) == len(saved):
        if any(_kind(s) in _IN_PLACE for s in saved):
            for i, (c, s) in enumerate(zip(cur, saved, strict=True)):
                if not _restore_in_place(c, s, refs, f"{where}[{i}]"):
                    cur[i] = _decode(s, refs, f"{where}[{i}]")
            return True
    return False


_IN_PLACE = ("module", "optimizer", "state_dict", "object", "generator")


def _decode(saved: Any, refs: dict, where: str) -> Any:
    kind = _kind(saved)
    if kind is None:
        if isinstance(saved, list):
            return [_decode(v, refs, f"{where}[{i}]") for i, v in enumerate(saved)]
        return saved
    if kind == "tensor":
        t = saved["value"].to(saved["device"])
        refs[saved["id"]] = t
        return t
    if kind == "ref":
        return refs[saved["id"]]
    if kind == "generator":
        g = torch.Generator(device=saved["device"])
        g.set_state(saved["value"])
        return g
    if kind == "ndarray":
        return saved["value"].numpy()
    if kind == "npscalar":
        return np.dtype(saved["dtype"]).type(saved["value"])
    if kind == "deque":
        return collections.deque(
            (_decode(v, refs, where) for v in saved["value"]), maxlen=saved["maxlen"]
        )
    if kind == "tuple":
        return tuple(_decode(v, refs, where) for v in saved["value"])
    if kind == "set":
        return {_decode(v, refs, where) for v in saved["value"]}
    if kind == "dict":
        return {_decode(k, refs, where): _decode(v, refs, where) for k, v in saved["value"]}
    if kind == "object":
        cls = _import(saved["type"], where)
        obj = cls.__new__(cls)
        for n, v in saved["value"].items():
            _restore_attr(obj, n, v, refs, f"{where}.{n}")
        _restored(obj)
        return obj
    raise SnapshotError(f"{where}: cannot rebuild a saved {kind!r} without a live object")


def _import(path: str, where: str) -> type[object]:
    # Only classes of modules already imported: a checkpoint never makes us import code.
    module, _, qual = path.partition(":")
    target: Any = sys.modules.get(module)
    try:
        if target is None:
            raise AttributeError(f"module {module!r} is not imported")
        for part in qual.split("."):
            target = getattr(target, part)
    except AttributeError as e:
        raise SnapshotError(f"{where}: cannot find class {path!r} to rebuild it: {e}") from None
    if not isinstance(target, type):
        raise SnapshotError(f"{where}: {path!r} is not a class")
    return target
