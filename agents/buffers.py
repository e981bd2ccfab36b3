"""Replay storage on the env's device, and the two ways of assembling bootstrapped transitions.

A *row* is a dict of tensors with a leading batch axis. Keys starting with ``next_`` describe
the observation bootstrapped from; ``reward`` is the (n-step) return collected before it and
``discount`` the factor on the bootstrap value (``γ^m``, 0 for a terminal).

- :class:`ReplayBuffer`: a ring buffer of rows (uniform sampling, one seeded generator).
- :class:`NStepAccumulator`: market-level n-step returns: bootstrap from the market's n-th next
  request (Gymnasium's view of a market as one MDP).
- :class:`UserVisitAccumulator`: user-level returns: bootstrap from *the same user's* next
  request in the same market (the request an action actually influences; other users'
  requests in between are not its consequence).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

import torch

from agents.state_checks import counter
from recenv.core.config import sizes_named
from recenv.core.footprint import gib, shortfall

Row = dict[str, torch.Tensor]
# Step keys that steer assembly and are not stored.
CONTROL_KEYS = ("terminal", "end", "valid", "user_id", "next_user_id")


def allocate(
    length: int,
    like: Mapping[str, torch.Tensor],
    device: torch.device,
    what: str,
    *,
    skip: int = 0,
) -> Row:
    """Zeroed storage of ``length`` entries for each of ``like``'s tensors: key ``k`` gets
    ``[length, *like[k].shape[skip:]]`` of ``like[k]``'s dtype on ``device`` (``skip=1``
    drops a batch axis). Storage sized by a config field is allocated on first use, mid-run;
    when the device cannot hold it, this raises ``ValueError`` naming ``what`` (the agent and
    field, e.g. ``"agent 'iql': buffer_size=10**12"``) and the bytes asked for, not the
    allocator's bare message."""
    shapes = {k: (length, *v.shape[skip:]) for k, v in like.items()}
    nbytes = sum(math.prod(shapes[k]) * v.element_size() for k, v in like.items())
    needs = f"{what} needs {nbytes / 2**30:,.1f} GiB of storage on {device}"
    # Refused before zeroing: storage that fits address space but not memory would be
    # granted by overcommit and the process killed while the zeros are written.
    if (free := shortfall(nbytes, device)) is not None:
        raise ValueError(
            f"{needs}, but {gib(free)} available on {device} (RECENV_MEMORY_CHECK=0 skips "
            "this check)"
        )
    with sizes_named(needs):
        return {k: torch.zeros(shapes[k], dtype=v.dtype, device=device) for k, v in like.items()}


def row_keys(step_keys: Iterable[str]) -> frozenset[str]:
    """The keys of the rows either accumulator assembles from steps with ``step_keys``: the
    step's own keys and its ``next_`` ones, less the control keys, plus ``discount``."""
    carried, nexts = _split(dict.fromkeys(step_keys))
    return frozenset([*carried, *nexts, "discount"])


class ReplayBuffer:
    """A ring buffer of rows on ``device``; storage is allocated from the first rows added.
    ``what`` names the capacity's source in the error raised when that storage cannot be
    allocated (see :func:`allocate`), and the buffer in every other error. ``keys``, when
    given, are the keys every row must have (:func:`row_keys`): a saved state with other
    keys is refused at :meth:`load_state_dict`, not at the first :meth:`add` after it."""

    def __init__(
        self,
        capacity: int,
        device: torch.device | str = "cpu",
        what: str = "",
        keys: Iterable[str] | None = None,
    ):
        if capacity <= 0:
            raise ValueError(f"replay capacity={capacity} must be > 0")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.what = what or f"replay capacity={self.capacity}"
        self.keys = None if keys is None else frozenset(keys)
        self.storage: Row = {}
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, rows: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None) -> int:
        """Append the rows where ``mask`` is set (all when ``None``); returns how many."""
        if mask is not None:
            idx = mask.nonzero().squeeze(1)
            rows = {k: v.index_select(0, idx) for k, v in rows.items()}
        M = next(iter(rows.values())).shape[0] if rows else 0
        if M == 0:
            return 0
        if not self.storage:  # the keys of every later row are the stored ones
            if self.keys is not None and set(rows) != self.keys:
                raise ValueError(f"{self.what}: {_key_difference(rows, self.keys)}")
            self.storage = allocate(self.capacity, rows, self.device, self.what, skip=1)
        if set(rows) != set(self.storage):
            raise ValueError(f"{self.what}: {_key_difference(rows, self.storage)}")
        for k, v in rows.items():  # else index_copy_'s bare message, or a silent cast
            stored = self.storage[k]
            if v.shape[1:] != stored.shape[1:] or v.dtype != stored.dtype:
                raise ValueError(
                    f"{self.what}: row {k!r} is {v.dtype} {tuple(v.shape[1:])} per entry; "
                    f"the buffer holds {stored.dtype} {tuple(stored.shape[1:])}"
                )
        if M > self.capacity:  # keep only the newest rows
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
            M = self.capacity
        where = (self.pos + torch.arange(M, device=self.device)) % self.capacity
        for k, v in rows.items():
            self.storage[k].index_copy_(0, where, v.to(self.device, self.storage[k].dtype))
        self.pos = (self.pos + M) % self.capacity
        self.size = min(self.size + M, self.capacity)
        return M

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Row:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=self.device)
        return {k: v.index_select(0, idx) for k, v in self.storage.items()}

    def state_dict(self) -> dict:
        # Copies of the filled rows: torch.save writes a view's whole storage (the capacity).
        return {
            "storage": {k: v[: self.size].to("cpu", copy=True) for k, v in self.storage.items()},
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s rows. A state this ring could not have reached raises
        ``ValueError`` naming :attr:`what`, before anything is changed."""
        at = "the replay buffer's state"
        size, pos = counter(state, "size", at), counter(state, "pos", at)
        wrong = self._unreachable(size, pos, state["storage"])
        if wrong:
            raise ValueError(f"replay buffer of {self.what}: {wrong}")
        self.storage, self.size, self.pos = {}, 0, 0
        if size:
            self.add(state["storage"])
        self.pos, self.size = pos, size

    @staticmethod
    def layout(state: Mapping) -> dict:
        """:meth:`state_dict`'s ``state`` as an agent's :meth:`~agents.base.Agent.state_layout`
        gives it: without its rows, whose number follows the buffer's use (their shapes are
        :meth:`load_state_dict`'s to check)."""
        return {**state, "storage": {}}

    def _unreachable(self, size: int, pos: int, storage: Mapping) -> str | None:
        """Why ``(size, pos, storage)`` is no state of this ring: ``size`` rows at most the
        capacity, each stored tensor holding ``size`` rows (of the shape and dtype per row
        this buffer already holds, when it holds rows), and ``pos`` (the next write) in
        range, equal to ``size`` until the ring is full."""
        if size > self.capacity:
            return f"size={size} exceeds the capacity {self.capacity}"
        if size and self.keys is not None and set(storage) != self.keys:
            return _key_difference(storage, self.keys)
        rows = {k: len(v) if torch.is_tensor(v) and v.dim() else None for k, v in storage.items()}
        if size and not rows:
            return f"size={size} but no rows are stored"
        off = {k: n for k, n in rows.items() if n != size}
        if off:
            return f"stored rows {off} are not size={size}"
        for k, v in storage.items():
            held = self.storage.get(k) if size else None
            if held is not None and (v.shape[1:] != held.shape[1:] or v.dtype != held.dtype):
                return (
                    f"row {k!r} is {v.dtype} {tuple(v.shape[1:])} per entry; the buffer holds "
                    f"{held.dtype} {tuple(held.shape[1:])}"
                )
        if pos >= self.capacity:
            return f"pos={pos} is outside [0, {self.capacity})"
        if size < self.capacity and pos != size:
            return f"pos={pos} is not size={size} (the ring is not full yet)"
        return None


def _key_difference(rows: Iterable[str], expected: Iterable[str]) -> str:
    """What ``rows``' keys lack and add against ``expected``, for an error message."""
    got, want = set(rows), set(expected)
    return f"row keys lack {sorted(want - got)} and have unexpected {sorted(got - want)}"


def _split(step: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """A step's carried keys and its ``next_`` keys (only its keys are read)."""
    carried = [k for k in step if not k.startswith("next_") and k not in CONTROL_KEYS]
    nexts = [k for k in step if k.startswith("next_") and k != "next_user_id"]
    return carried, nexts


class NStepAccumulator:
    """Market-level n-step returns over a sliding window of the last ``n`` steps.

    ``push(step)`` takes a step row over all ``N`` markets with ``reward``, ``terminal``
    (no bootstrap), ``end`` (the episode ended: terminal or truncated) and ``valid`` (False on
    auto-reset steps), and returns ``(row, mask)`` for the step ``n - 1`` steps back once the
    window is full: ``reward = Σ_j γ^j r_j`` up to the first episode end, ``next_*`` from the
    last step summed, ``discount = γ^m`` (0 when that step was terminal). A truncated end is
    bootstrapped from the episode's final observation.
    """

    def __init__(self, n: int, gamma: float):
        if n < 1:
            raise ValueError(f"n_step={n} must be >= 1")
        self.n, self.gamma = int(n), float(gamma)
        self.window: deque[Row] = deque()

    def reset(self) -> None:
        self.window.clear()

    def push(self, step: Mapping[str, torch.Tensor]) -> tuple[Row, torch.Tensor] | None:
        self.window.append({k: v.clone() for k, v in step.items()})
        if len(self.window) < self.n:
            return None
        first = self.window[0]
        carried, nexts = _split(first)
        ret = torch.zeros_like(first["reward"], dtype=torch.float32)
        discount = torch.zeros_like(ret)
        nxt = {k: first[k] for k in nexts}
        alive = torch.ones_like(first["valid"])
        for j, s in enumerate(self.window):
            # alive as floats: a bool tensor times a Python float takes the default dtype.
            ret = ret + alive.float() * (self.gamma**j) * s["reward"].float()
            for k in nexts:
                a = alive.view(-1, *([1] * (s[k].dim() - 1)))
                nxt[k] = torch.where(a, s[k], nxt[k])
            boot = (self.gamma ** (j + 1)) * (~s["terminal"]).float()
            discount = torch.where(alive, boot, discount)
            alive = alive & ~s["end"]
        self.window.popleft()
        row = {k: first[k] for k in carried}
        row.update(nxt)
        row["reward"], row["discount"] = ret, discount
        return row, first["valid"]


class UserVisitAccumulator:
    """User-level one-step returns: a request's transition is completed by the same user's next
    request in the same market (``user_id`` then ``next_user_id`` of each step), with
    ``discount = γ``. When an episode terminates (every user churned), every user's open
    request is completed as terminal (``discount = 0``). When it is truncated (the horizon),
    the open requests are dropped: their users' next requests lie past the time limit, and
    closing them as terminal would teach values of "the episode ends here" in states that do
    not show the time (Pardo et al. 2018, "Time Limits in Reinforcement Learning"); it was
    12 % of the rows at Market-v0's defaults and biased the known-answer values low by 0.12
    at γ = 0.5.

    Memory: one pending row per (market, user), allocated for the batch size it first sees.
    """

    MAX_PENDING_BYTES = 2 * 1024**3

    def __init__(self, num_users: int, gamma: float):
        self.num_users, self.gamma = int(num_users), float(gamma)
        self.pending: Row = {}
        self.has: torch.Tensor | None = None

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Drop the open requests of the markets in ``mask`` (all when ``None``; all, too, when
        ``mask`` is for another number of markets, e.g. an evaluation env)."""
        if self.has is None:
            return
        if mask is None or mask.shape[0] != self.has.shape[0]:
            self.has.zero_()
        else:
            self.has[mask.to(self.has.device)] = False

    def _allocate(self, step: Mapping[str, torch.Tensor], carried: list[str]) -> None:
        N, U = step["reward"].shape[0], self.num_users
        size = sum(step[k][0].numel() * step[k].element_size() for k in carried) * N * U
        if size > self.MAX_PENDING_BYTES:
            raise ValueError(
                f"user-level bootstrapping would hold {size / 1e9:.1f} GB of pending requests "
                f"({N} markets x {U} users); use bootstrap='market' or fewer markets"
            )
        dev = step["reward"].device
        self.pending = {
            k: torch.zeros((N, U, *step[k].shape[1:]), dtype=step[k].dtype, device=dev)
            for k in carried
        }
        self.has = torch.zeros(N, U, dtype=torch.bool, device=dev)

    def push(self, step: Mapping[str, torch.Tensor]) -> list[tuple[Row, torch.Tensor | None]]:
        carried, nexts = _split(step)
        N = step["reward"].shape[0]
        if self.has is None or self.has.shape[0] != N:
            self._allocate(step, carried)
        assert self.has is not None
        n = torch.arange(N, device=self.has.device)
        valid, end = step["valid"], step["end"]
        u, u_next = step["user_id"].long(), step["next_user_id"].long()

        # This request waits for the user's next one.
        for k in carried:
            keep = valid.view(-1, *([1] * (step[k].dim() - 1)))
            self.pending[k][n, u] = torch.where(keep, step[k], self.pending[k][n, u])
        self.has[n, u] |= valid

        out: list[tuple[Row, torch.Tensor | None]] = []
        # The arriving user's open request is complete.
        done = valid & ~end & self.has[n, u_next]
        row = {k: self.pending[k][n, u_next] for k in carried}
        row.update({k: step[k] for k in nexts})
        row["discount"] = torch.full_like(step["reward"], self.gamma, dtype=torch.float32)
        out.append((row, done))
        self.has[n, u_next] &= ~done

        # Episode ends: a termination completes every open request as terminal; a truncation
        # drops them (no next request of theirs exists, and the end is not theirs).
        if bool(end.any()):
            self.has[valid & end & ~step["terminal"]] = False
            flush = self.has & (valid & step["terminal"])[:, None]
            ni, ui = flush.nonzero(as_tuple=True)
            row = {k: self.pending[k][ni, ui] for k in carried}
            row.update({k: step[k][ni] for k in nexts})
            row["discount"] = torch.zeros(ni.shape[0], dtype=torch.float32, device=self.has.device)
            out.append((row, None))
            self.has[flush] = False
        return out
