"""Checks of an agent's checkpointed state: what a damaged or foreign state would otherwise
load silently, or fail with only at the next update, in the middle of a resumed run.

Each ``*_error`` function returns ``None`` when the state is fine, else one sentence naming
the place (``state['optimizers'][0]['param_groups'][0]['lr']`` style) and what was expected;
callers add the file and the agent. :meth:`agents.base.Agent.load` asks them all and rolls the
agent back on any; :meth:`experiments.runner.Trainer.restore` asks them of a run checkpoint.

- :func:`state_layout_error`: the same kind of thing at every place (a tensor of the same
  shape, a dict, a list, a number where the agent has a number).
- :func:`nonfinite_state_error`: NaN or ±inf in a floating-point tensor (a diverged run's
  checkpoint, or a damaged one). Agents whose state holds infinities by design opt out
  (:attr:`agents.base.Agent.finite_state`).
- :func:`optimizer_state_error`, asked after loading: every optimizer's settings complete,
  of their kinds and within torch's own bounds (a negative or NaN learning rate, betas
  outside [0, 1), a deleted key), and its per-parameter entries of the parameter's shape,
  finite, with a whole non-negative ``step`` and non-negative second moments.
- :func:`unexpected_keys_error` and :func:`missing_keys_error`: keys of an agent's own state
  (its ``state_dict()``'s top level) that a checkpoint holds and the agent does not, or lacks.
- :func:`weights_only_error`, asked before a checkpoint is written: a value that
  ``torch.load(weights_only=True)`` (how every checkpoint is read) would refuse.
- :func:`counter` and :func:`nonnegative`, called by the agents' ``load_state_dict``: a
  counter is a whole number >= 0; a table of counts or variances holds no negative entry.
"""

from __future__ import annotations

import collections
import inspect
import math
import numbers
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import torch

# Per-parameter optimizer entries that are sums of squares (Adam's, AdamW's, RMSprop's,
# Adagrad's, Adadelta's, Adamax's names): negative values are damage (Adam takes their sqrt).
NONNEGATIVE_MOMENTS = frozenset(
    {"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta", "exp_inf"}
)
# Optimizer settings typed Optional[bool] by torch (None: let torch pick the implementation).
OPTIONAL_BOOL_SETTINGS = frozenset({"foreach", "fused"})


def state_layout_error(saved: Any, mine: Any, at: str = "state") -> str | None:
    """Where a checkpoint's ``saved`` state holds something of another kind than this agent's
    own state ``mine`` at the same place: a tensor where the agent has a tensor, a dict where
    it has a dict, a list or tuple where it has one of those. ``None`` when every place both
    have agrees; places only one of them has are left to ``load_state_dict`` (an optimizer's
    state grows with training, and older formats lack some keys).

    Without it a corrupt state could load silently: ``copy_`` broadcasts a number (or a
    one-element tensor) over a whole table."""
    if torch.is_tensor(mine):
        if not torch.is_tensor(saved):
            return f"{at} is a {type(saved).__name__}; expected a tensor ({_shape(mine)})"
        # Same shape, but where one side is empty (a table built on first use) and for a
        # generator (a CPU one's state and a CUDA one's differ; restore_generator reseeds).
        empty = mine.numel() == 0 or saved.numel() == 0
        if saved.shape != mine.shape and not empty and not at.endswith("['generator']"):
            return f"{at} has {_shape(saved)}; this agent's has {_shape(mine)}"
        return None
    if isinstance(mine, Mapping):
        if not isinstance(saved, Mapping):
            return f"{at} is a {type(saved).__name__}; expected a dict"
        for k in mine.keys() & saved.keys():
            why = state_layout_error(saved[k], mine[k], f"{at}[{k!r}]")
            if why:
                return why
        return None
    if isinstance(mine, (list, tuple)):
        if not isinstance(saved, (list, tuple)):
            return f"{at} is a {type(saved).__name__}; expected a list"
        for j, (s, m) in enumerate(zip(saved, mine, strict=False)):
            why = state_layout_error(s, m, f"{at}[{j}]")
            if why:
                return why
        return None
    # Plain values (an optimizer's settings, counters): the same kind of value; where the
    # agent has None (an unset option), a plain value or None.
    if mine is None:
        plain = saved is None or isinstance(saved, (bool, str, numbers.Real))
        return None if plain else f"{at} is a {type(saved).__name__}; expected a plain value"
    for kind, name in ((bool, "a bool"), (str, "a str"), (numbers.Real, "a number")):
        if isinstance(mine, kind):
            ok = isinstance(saved, kind) and (kind is bool or not isinstance(saved, bool))
            return None if ok else f"{at} is {saved!r}; expected {name}"
    return None


def unexpected_keys_error(
    saved: Any, mine: Any, at: str = "state", optional: Collection[str] = ()
) -> str | None:
    """The keys of a checkpoint's ``saved`` state (one agent's ``state_dict()``, its top
    level) that this agent's own state ``mine`` does not have, apart from ``optional`` ones
    (:attr:`agents.base.Agent.optional_state_keys`); ``None`` when there are none, or when
    either side is not a dict (:func:`state_layout_error` names that). A foreign key would
    otherwise load silently: ``load_state_dict`` reads only the keys it knows."""
    if not (isinstance(saved, Mapping) and isinstance(mine, Mapping)):
        return None
    extra = [k for k in saved if k not in mine and k not in optional]
    if not extra:
        return None
    return (
        f"{at} holds unexpected key(s) {_sorted(extra)}: this agent's state has the keys "
        f"{_sorted(mine)}"
    )


def missing_keys_error(saved: Any, mine: Any, key: Any, at: str = "state") -> str | None:
    """Where a checkpoint's ``saved`` state lacks ``key`` (a ``KeyError``'s key, raised by
    ``load_state_dict``) that this agent's own state ``mine`` has at the same place: the
    place, every key it lacks, and the keys expected there; ``None`` when no place lacks it
    (the KeyError came from elsewhere)."""
    if isinstance(saved, Mapping) and isinstance(mine, Mapping):
        if key in mine and key not in saved:
            lacks = [k for k in mine if k not in saved]
            return f"{at} is missing key(s) {_sorted(lacks)}; expected the keys {_sorted(mine)}"
        for k in mine.keys() & saved.keys():
            why = missing_keys_error(saved[k], mine[k], key, f"{at}[{k!r}]")
            if why:
                return why
    elif isinstance(saved, (list, tuple)) and isinstance(mine, (list, tuple)):
        for j, (s, m) in enumerate(zip(saved, mine, strict=False)):
            why = missing_keys_error(s, m, key, f"{at}[{j}]")
            if why:
                return why
    return None


def _sorted(keys: Any) -> list:
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:  # keys of mixed types
        return sorted(keys, key=repr)


# What torch.load(weights_only=True) reads back (torch 2.x's _weights_only_unpickler: what
# pickle stores natively, and its allowed globals), by exact type: a subclass (numpy's float64,
# an IntEnum, a namedtuple, a defaultdict) is pickled by its own class, which it refuses.
_WEIGHTS_ONLY_TENSORS = (torch.Tensor, torch.nn.Parameter)
_WEIGHTS_ONLY_PLAIN = (
    type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device,
)  # fmt: skip
_WEIGHTS_ONLY_MAPPINGS = (dict, collections.OrderedDict, collections.Counter)
_WEIGHTS_ONLY_SEQUENCES = (list, tuple, set, torch.Size)
WEIGHTS_ONLY_TYPES = (
    "tensors (torch.Tensor, nn.Parameter), None, bool, int, float, complex, str, bytes, "
    "bytearray, torch.dtype, torch.device, and list, tuple, set, torch.Size, dict, "
    "OrderedDict and Counter of them (plus the classes given to "
    "torch.serialization.add_safe_globals)"
)


def weights_only_error(x: Any, at: str = "state") -> str | None:
    """The first place in ``x`` holding a value that ``torch.load(weights_only=True)`` does not
    read back (a NumPy array or scalar, a set's frozen kind, an arbitrary object): named with
    its type and :data:`WEIGHTS_ONLY_TYPES`; ``None`` when all of ``x`` loads. Asked before a
    checkpoint is written, so that no file is written that its own load would refuse. The
    classes given to ``torch.serialization.add_safe_globals`` in this process count as
    readable (a process that loads the file must allow them too)."""
    safe = _safe_globals()
    kind = type(x)
    if kind in safe:
        return None
    if torch.is_tensor(x):
        return None if kind in _WEIGHTS_ONLY_TENSORS else _unreadable(at, x)
    if kind in _WEIGHTS_ONLY_PLAIN:
        return None
    if kind in _WEIGHTS_ONLY_MAPPINGS:
        for k, v in x.items():
            why = weights_only_error(k, f"{at} key {k!r}") or weights_only_error(v, f"{at}[{k!r}]")
            if why:
                return why
        return None
    if kind in _WEIGHTS_ONLY_SEQUENCES:
        for j, v in enumerate(x):
            why = weights_only_error(v, f"{at}[{j}]")
            if why:
                return why
        return None
    return _unreadable(at, x)


def _safe_globals() -> set:
    out = set()
    for g in torch.serialization.get_safe_globals():
        obj = g[0] if isinstance(g, tuple) else g
        if inspect.isclass(obj):
            out.add(obj)
    return out


def _unreadable(at: str, x: Any) -> str:
    kind = type(x)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    hint = ""
    if kind.__module__.split(".")[0] == "numpy":
        hint = "; convert it with torch.from_numpy(array), or .item() for a scalar"
    return (
        f"{at} is a {name}, which torch.load(weights_only=True) does not read; a checkpoint "
        f"holds only {WEIGHTS_ONLY_TYPES}{hint}"
    )


DAMAGE_OR_DIVERGENCE = "the run that wrote it diverged, or the file is damaged"


def nonfinite_state_error(
    state: Any, at: str = "state", cause: str | None = DAMAGE_OR_DIVERGENCE
) -> str | None:
    """The first floating-point (or complex) tensor in ``state`` holding NaN or ±inf, named
    with how many of its values are, then ``cause`` (when given); ``None`` when all are
    finite."""
    for where, t in _tensors(state, at):
        if (t.is_floating_point() or t.is_complex()) and t.numel():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return (
                    f"{where} holds {bad} non-finite value{'s' * (bad > 1)} (NaN or ±inf) of "
                    f"{t.numel()}" + (f": {cause}" if cause else "")
                )
    return None


def _tensors(x: Any, at: str) -> Iterator[tuple[str, torch.Tensor]]:
    if torch.is_tensor(x):
        yield at, x
    elif isinstance(x, Mapping):
        for k, v in x.items():
            yield from _tensors(v, f"{at}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        for j, v in enumerate(x):
            yield from _tensors(v, f"{at}[{j}]")


def optimizer_state_error(agent: Any) -> str | None:
    """What in the state of ``agent``'s optimizers (its attributes, lists and dicts of them,
    and its members' for a team) is damaged, asked after a checkpoint's state was loaded:
    ``Optimizer.load_state_dict`` takes any values, and a damaged one would only fail (a
    deleted ``lr``: KeyError; a negative ``step``: a complex power), or worse train on (a
    negative learning rate, a NaN moment), at the next update.

    Settings: every group holds every key of the optimizer's ``defaults`` (torch fills in
    keys newer than the checkpoint when loading), each of its default's kind (a bool, a
    finite number, a tuple of as many finite numbers; None or a bool for ``foreach`` /
    ``fused``), and within the bounds the optimizer's own constructor enforces.
    Per-parameter entries: every parameter with a state holds the same entries, each a
    finite tensor of the parameter's shape unless it is a scalar; ``step`` a whole number
    >= 0; the :data:`NONNEGATIVE_MOMENTS` >= 0."""
    for name, opt in _optimizers(agent):
        why = _settings_error(opt) or _entries_error(opt)
        if why:
            return f"{name}: {why}"
    return None


def _settings_error(opt: torch.optim.Optimizer) -> str | None:
    for j, group in enumerate(opt.param_groups):
        lacks = [k for k in opt.defaults if k not in group]
        if lacks:
            return f"param_groups[{j}] lacks {lacks}"
        for key, default in opt.defaults.items():
            expected = _setting_kind_error(key, group[key], default)
            if expected:
                return f"param_groups[{j}][{key!r}] is {group[key]!r}; expected {expected}"
        settings = {k: group[k] for k in opt.defaults}
        probe = [torch.zeros(1, requires_grad=True)]
        try:
            inspect.signature(type(opt)).bind(probe, **settings)
        except TypeError:  # a plug-in's optimizer whose defaults are not its arguments
            continue
        try:  # the bounds the constructor enforces ("Invalid learning rate: -1.0")
            type(opt)(probe, **settings)
        except (ValueError, TypeError, RuntimeError) as e:
            return f"param_groups[{j}]: {e}"
    return None


def _setting_kind_error(key: str, value: Any, default: Any) -> str | None:
    """What ``value`` should have been, where it is not of ``default``'s kind."""
    if key in OPTIONAL_BOOL_SETTINGS and (default is None or isinstance(default, bool)):
        return None if value is None or isinstance(value, bool) else "None or a bool"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a bool"
    if isinstance(default, numbers.Real):
        return None if _finite_number(value) else "a finite number"
    if isinstance(default, (tuple, list)):
        ok = (
            isinstance(value, (tuple, list))
            and len(value) == len(default)
            and all(_finite_number(v) for v in value)
        )
        return None if ok else f"{len(default)} finite numbers"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a str"
    return None


def _finite_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _entries_error(opt: torch.optim.Optimizer) -> str | None:
    entries = {frozenset(st) for st in opt.state.values()}
    if len(entries) > 1:  # Adam's: step, exp_avg, exp_avg_sq for every parameter
        return f"parameters hold different entries {sorted(map(sorted, entries))}"
    for group in opt.param_groups:
        for p in group["params"]:
            for key, v in opt.state.get(p, {}).items():
                if not torch.is_tensor(v):
                    return f"{key!r} of a parameter is a {type(v).__name__}"
                if v.dim() > 0 and v.shape != p.shape:
                    return f"{key!r} has shape {tuple(v.shape)}, its parameter {tuple(p.shape)}"
                if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
                    return f"{key!r} of a parameter holds NaN or ±inf"
                if key == "step" and bool(((v < 0) | (v != v.floor())).any()):
                    return f"'step' is {v.tolist()}; expected a whole number >= 0"
                if key in NONNEGATIVE_MOMENTS and bool((v < 0).any()):
                    return f"{key!r} of a parameter holds negative values (a sum of squares)"
    return None


def _optimizers(obj: Any, at: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``(where, optimizer)`` of every optimizer held by ``obj``'s attributes (into lists,
    tuples, dicts and member agents)."""
    from agents.base import Agent  # the base module imports this one

    if isinstance(obj, torch.optim.Optimizer):
        yield at, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _optimizers(v, f"{at}[{k!r}]", depth)
    elif isinstance(obj, (list, tuple)):
        for j, v in enumerate(obj):
            yield from _optimizers(v, f"{at}[{j}]", depth)
    elif isinstance(obj, Agent) and depth < 4:
        for k, v in vars(obj).items():
            if k != "env":
                yield from _optimizers(v, f"{at}.{k}" if at else k, depth + 1)


def counter(state: Mapping[str, Any], key: str, at: str = "state", default: Any = None) -> int:
    """``state[key]`` as an ``int``: a checkpoint's counter or position must be a whole
    number >= 0 (a float, a bool or a negative value is damage; ``int()`` would have
    truncated 3.7 and kept -5). ``default`` stands in for a missing key when given."""
    value = state[key] if default is None or key in state else default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{at}[{key!r}] is {value!r}; expected a whole number >= 0")
    return int(value)


def nonnegative(state: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    """Refuse a state whose tables ``keys`` (counts, variances) hold a negative entry;
    ``what`` names the owner (``"agent 'popularity'"``)."""
    for key in keys:
        t = state[key]
        if torch.is_tensor(t) and bool((t < 0).any()):
            raise ValueError(
                f"{what}: state[{key!r}] holds {int((t < 0).sum())} negative entries; "
                "counts and variances are >= 0"
            )


def _shape(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, {t.dtype}"
