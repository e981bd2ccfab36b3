"""The batched market: ``num_envs`` independent markets stepped together as torch tensors.

Contract (``N`` markets, ``A`` agents, ``U`` users, ``C`` candidates, ``K`` slate size,
``T`` topics):

- ``reset(seed=None) -> obs``; ``step(actions) -> (obs, rewards, terminated, truncated, info)``.
- ``obs[agent]`` is a dict of tensors: ``user [N, T+2]``, ``history [N, T+4]``,
  ``candidates [N, C, T+6]``, ``action_mask [N, C]`` (bool), ``user_id [N]``,
  ``candidate_ids [N, C]``. They are the market's own tensors, not copies (``action_mask``,
  ``user_id`` and ``candidate_ids`` are state the next step reads): read-only by contract,
  ``clone()`` to edit.
- ``actions[agent]`` is an integer tensor ``[N, K]`` of distinct, unmasked candidate indices.
- ``rewards[agent]`` ``[N]`` float; ``terminated`` (every user churned) / ``truncated``
  (the horizon reached) ``[N]`` bool, never both (terminated wins on the horizon step).
- ``info``: the step's ground truth, for logging and analysis, not part of any agent's
  observation: ``shown`` ``[N, A, K]`` (item ids, -1 where the user did not see the slot),
  ``chosen_agent`` / ``chosen_slot`` / ``chosen_item`` ``[N]`` (-1: no click), ``clicked``,
  ``engagement``, ``platform`` ``[N]`` (the platform visited under ``platform_choice``, ``A``
  for none; -1 on a shared page), ``reset``, ``repaired`` ``[N, A]``, and two privileged
  entries: ``utility`` (the chosen item's latent utility terms, ``[N]`` each) and
  ``choice_probs`` ``[N, A*K + 1]`` (the true choice probabilities of the page entries and
  no click); ``episode`` / ``_episode`` on steps where an episode ended. A decentralised
  agent learns from its own slate's outcome (``agents.Transition`` reads ``chosen_agent``,
  ``chosen_slot``, ``engagement``, ``shown`` and ``reset``).
- ``state() -> [N, S]``: the global latent view for centralized critics (layout in
  :meth:`BatchedMarket.state`).

**Auto-reset** follows Gymnasium's ``NEXT_STEP`` mode: the step that ends an episode returns
that episode's final observation (so truncated episodes can be bootstrapped); the next
``step`` starts a new episode in those markets, ignores their actions, and returns reward 0,
``terminated = truncated = False`` and ``info["reset"] = True``. It is masked and branchless:
every market runs the same tensor program each step.

**Lazy state.** Per-user and per-item state is stamped with the episode it belongs to; a stale
stamp reads as the fresh state of the new episode, so starting an episode touches ``O(1)``
memory per market instead of ``O(U * T + I)``. Boredom decays lazily from the step it was last
written.

**Randomness** comes from :mod:`recenv.core.rng`: market ``n`` of a batch seeded ``s`` is the
market seeded ``s + n`` (the Gymnasium vector convention), on any device and at any batch size.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Callable, Collection
from typing import Any, NamedTuple, NoReturn, TypedDict

import numpy as np
import torch

from recenv.core import heap, hugepages, native, rng
from recenv.core.catalog import Catalog, ItemRow, build_catalog
from recenv.core.choice import (
    UTILITY_TERMS,
    item_utility_terms,
    logit_probabilities,
    position_costs,
    sample_choice,
)
from recenv.core.config import MarketConfig, as_int, shown
from recenv.core.dynamics import after_request, decay_powers, on_arrival
from recenv.core.footprint import check_catalog_fits, check_fits, check_horizon_fits
from recenv.core.indexing import (
    cell,
    first_argmax,
    lookup_table,
    pick,
    pick_by_select,
    prefix_sum_unrolls,
    put_at,
    row_cumsum,
    row_mean,
    rows,
    search_sorted_left,
    sort_by_network,
)
from recenv.core.metrics import (
    EPISODE_METRICS,
    coverage_from_counters,
    gini,
    intra_list_diversity,
    intra_list_diversity_by_sums,
)
from recenv.core.modes import normal_tensors
from recenv.core.response import expected_click_value, respond
from recenv.core.rewards import agent_rewards
from recenv.core.users import (
    Population,
    UserConstants,
    UserLayout,
    draw_user,
    observable_features,
    user_block_width,
)
from recenv.core.vecisa import cpu_simdlen, require_cpp_compiler
from recenv.core.warm import (
    InductorCapture,
    outside_deterministic_mode,
    own_code,
    warm_unguarded,
)
from recenv.core.warn import warn

# The utility terms of the chosen item, as the info dict's "utility" holds them.
FACE_UTILITY = (*UTILITY_TERMS, "total")
# What the myopic oracle builds its slates by (see BatchedMarket.oracle_slates).
ORACLE_OBJECTIVES = ("utility", "value", "page_value")
# Latent parts of a request an oracle can be kept from reading (BatchedMarket.oracle_view's
# `hide`), each with what it reads instead: what agents observe, or the population's mean.
ORACLE_HIDEABLE = {
    "interest": "the observation's noisy, partly hidden interests (user[:, :T])",
    "taste": "0, the mean of the latent taste draw",
    "boredom": "0, a fresh user's",
    "quality": "the observed item quality (quality + the catalog's fixed noise)",
    "price_sensitivity": "the config's mean price_sensitivity",
}


class OracleView(NamedTuple):
    """:meth:`BatchedMarket.oracle_view`: the current request's candidates as the oracles
    see them, each ``[N, A, C]`` float32."""

    utility: torch.Tensor  # true expected utility, position bias left out; masked: -inf
    length: torch.Tensor  # the item's length (engagement grows with it)
    price: torch.Tensor  # the item's price (revenue)


def _greedy_slot(
    cfg: MarketConfig,
    u: torch.Tensor,
    top: torch.Tensor,
    length: torch.Tensor,
    price: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    taken: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One slot of the value oracles' greedy (``oracle_slates("value" / "page_value")``):
    candidates' utilities ``u [..., C]`` at the slot's position, their weights ``w =
    exp((u - top) / T)`` relative to ``top [...]`` and ``wv = w · v`` with ``v`` a click's
    expected value; the pick ``[...]`` is the untaken candidate that most raises ``(num +
    wv) / (den + w)``, the expected reward of the slate (or page) so far (ties: the first).
    Returns ``(w, wv, pick)``."""
    w = torch.exp((u - top[..., None]) / cfg.temperature)
    wv = w * expected_click_value(cfg, u, length, price)
    gain = ((num[..., None] + wv) / (den[..., None] + w)).masked_fill(taken, -math.inf)
    return w, wv, gain.argmax(dim=-1)


class NextUser(NamedTuple):
    """:meth:`BatchedMarket._next_user`: each market's next arriving user, ``[N]`` each."""

    user: torch.Tensor  # int64: who arrives
    ready: torch.Tensor  # bool: arrives as usual (not between sessions, not churned)
    all_gone: torch.Tensor  # bool: every user churned and not back: the episode ends


class FaceRow(TypedDict):
    """:func:`face_row`'s layout: an index for a scalar, a slice for a run of them."""

    terminated: int
    truncated: int
    chosen_agent: int
    chosen_slot: int
    engagement: int
    utility: slice
    rewards: slice
    repaired: slice


def face_row(num_agents: int) -> FaceRow:
    """Where each scalar of a one-market step sits in the float64 row ``_serve_face`` packs
    for the PettingZoo face (exact: float32 and small integers convert to float64 without
    rounding): ``terminated``, ``truncated``, ``chosen_agent``, ``chosen_slot``,
    ``engagement``, ``utility`` (:data:`FACE_UTILITY`, a slice), then ``rewards`` and
    ``repaired`` (slices of ``num_agents``)."""
    u = 5 + len(FACE_UTILITY)
    A = num_agents
    return {
        "terminated": 0,
        "truncated": 1,
        "chosen_agent": 2,
        "chosen_slot": 3,
        "engagement": 4,
        "utility": slice(5, u),
        "rewards": slice(u, u + A),
        "repaired": slice(u + A, u + 2 * A),
    }


_GAP_WEIGHT = 1e-6  # users between sessions arrive only when nobody else can
# recenv::next_user prefetches the arriving user's row (a switch for experiments.ab_forms).
_PREFETCH_ARRIVING_ROWS = True
# The devices whose compiled step gathers a large catalog's item rows in a loop of their own
# (BatchedMarket._separate_gathers): the CPU's, where a fused loop waits on each row's cache
# miss and a plain copy loop keeps many in flight (1,024 markets, 10^6 items: ~10-25 %). A
# GPU hides a gather's latency with other warps, and the separate form would write every
# gathered row (all 32 fields) to a buffer and read it back: ~10 KB a market a step more at
# 10^6 items by inductor's estimate (experiments.cuda_build). The rows are the same either
# way. Module state, as rng.FOLD_WEYL_ON.
SEPARATE_GATHERS_ON = frozenset({"cpu"})

Obs = dict[str, dict[str, torch.Tensor]]
# The observation as batched tensors: user [N, T+2], history [N, A, T+4], candidates
# [N, A, C, T+6] (what BatchedMarket._obs_parts holds).
ObsParts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# A user-table entry not yet written: (user [N], row [N, F]); read as if it were.
Patch = tuple[torch.Tensor, torch.Tensor]
# The arriving users from before their arrival: (user [N], row [N, F], epoch [N]).
Arrived = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# What a step returns: observations, rewards, terminated, truncated, info.
StepResult = tuple[Obs, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[str, Any]]


def check_seed(
    seed: object, num_envs: int, count: str = "num_envs", unit: str = "market"
) -> int | None:
    """``seed`` as a Python int (numpy's integers too), or ``None``. Refuses anything else,
    and a seed that puts market ``n``'s seed ``seed + n`` outside int64 (the keys are
    derived from its 64 bits). ``count`` and ``unit`` name what is seeded ``seed + n`` where
    it is not ``num_envs`` markets (``agents.run_episodes``' episodes)."""
    if seed is None:
        return None
    try:
        seed = as_int(seed)
    except TypeError:
        raise ValueError(f"seed={shown(seed)} must be an int or None") from None
    low, high = -(2**63), 2**63 - num_envs
    if not low <= seed <= high:
        raise ValueError(
            f"seed={shown(seed)} out of range: with {count}={num_envs} ({unit} n seeded "
            f"seed + n) a seed must lie in [-2**63, 2**63 - {num_envs}]"
        )
    return seed


def inductor_options(device: torch.device) -> dict[str, Any]:
    """The inductor options a market's step is compiled with on ``device`` (what
    :meth:`BatchedMarket.compile` passes; ``experiments.cuda_build`` builds the CUDA step's
    kernels with the same)."""
    # Inductor's size asserts re-check every input's sizes and strides at each call; at one
    # market they were ~12 % of the step (each builds a std::stringstream in the C++
    # wrapper). They check what the guards check, and the guards see every layout change
    # that can happen here (see recenv.core.warm and state_restored): 1.12x on the
    # one-market core step.
    options: dict[str, Any] = {"size_asserts": False}
    if device.type == "cpu":
        # The C++ wrapper pays on the CPU, where the generated Python that calls the kernels
        # is most of a small batch's step; on a GPU the default wrapper is the tested path.
        options["cpp_wrapper"] = True
        # The vector width in inductor's cache key, which lacks it (recenv.core.vecisa):
        # a graph cached under another ISA would be rebuilt with the wrong width.
        options["cpp.simdlen"] = cpu_simdlen()
    return options


def _usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, or a ValueError naming it and the usable ones when this
    torch cannot use it (a CUDA device on a CPU build or a machine without one, an index past
    the last GPU, a backend this build or machine lacks such as ``"mps"``, ``"meta"``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError, OverflowError) as err:
        # (An index past int64 is torch's ValueError "Overflow when unpacking long long".)
        raise ValueError(f"device={shown(device)} is not a torch device: {err}") from None
    usable = "use device='cpu'" + (" or 'cuda'" if torch.cuda.is_available() else "")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            where = f"{count} CUDA device(s) visible" if count else "CUDA is not available"
            raise ValueError(
                f"device={device!r} cannot be used: {where} (torch {torch.__version__}); {usable}"
            )
    elif dev.type == "meta":
        # Meta tensors have shapes but no values: reset returned them and the first step
        # failed reading one.
        raise ValueError(f"device={device!r} cannot be used: meta tensors hold no values; {usable}")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)  # a backend this torch lacks fails here, not mid-build
        except Exception as err:  # each backend its own way: RuntimeError, AssertionError, ...
            raise ValueError(
                f"device={device!r} cannot be used: this torch ({torch.__version__}) or "
                f"machine has no usable {dev.type!r} backend; {usable}"
            ) from err
    return dev


def slate_tensor(agent: str, action: Any, expected: Callable[[], str]) -> torch.Tensor:
    """``agent``'s action as a dense tensor (a CPU one unless given as a tensor), or a
    ValueError naming the agent, why it cannot be read and ``expected()`` (what a slate is).
    Shared by both faces, so that they read the same actions. The values, dtype and shape
    are the caller's to check."""

    def refuse(why: str) -> NoReturn:
        raise ValueError(f"action of {agent}: {why}; {expected()}")

    if isinstance(action, torch.Tensor):
        if action.layout != torch.strided or action.is_meta:  # sparse, nested, meta
            kind = "meta" if action.is_meta else str(action.layout).removeprefix("torch.")
            refuse(f"a {kind} tensor, not a dense one")
        return action
    if isinstance(action, np.ma.MaskedArray):
        refuse("a masked array, and a masked slate is ambiguous (which slots count?)")
    try:
        a = np.asarray(action)
    except (TypeError, ValueError) as err:  # ragged nested lists
        refuse(f"cannot read {reprlib.repr(action)} as a slate ({err})")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))  # torch refuses the other byte order
    elif not a.flags.writeable or any(stride < 0 for stride in a.strides):
        # torch warns on a read-only array (a slice of an observation) and refuses negative
        # strides (a reversed view, as the usual top-K np.argsort(s)[:, ::-1][:, :K] gives)
        a = a.copy()
    try:
        return torch.as_tensor(a, device="cpu")  # numpy's memory; moved to the env's device
    except TypeError:  # None, str, object (an int past int64): dtypes torch has not
        refuse(f"cannot read {reprlib.repr(action)} as a slate (numpy dtype {a.dtype})")


def check_batch(
    num_envs: object, device: torch.device | str, seed: object
) -> tuple[torch.device, int | None]:
    """The batch arguments every market takes, checked: ``num_envs`` a Python int >= 1 (not a
    bool, nor numpy's integers), ``device`` usable here, ``seed`` as :func:`check_seed`.
    Returns ``(device, seed)``. ``recenv.make``/``make_vec`` call it before a scenario's
    builder (which can be slow: FromLog-v0 fits its log), the market again when built."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
        raise ValueError(f"num_envs={shown(num_envs)} must be a positive int")
    if num_envs > 2**63 - 1:  # no tensor is that long; and check_seed's range needs int64
        raise ValueError(f"num_envs={shown(num_envs)} must be a positive int (at most 2**63 - 1)")
    seed = check_seed(seed, num_envs)
    return _usable_device(device), seed


def kept_constants(const: UserConstants) -> UserConstants:
    """What a market keeps of the arriving users' constants for the rest of the request:
    taste and price sensitivity (the utility reads them). Visibility and noise are used up
    by the observable features at the arrival; kept, they were two more outputs of the
    compiled step, written every step and read by nothing (1.050x at 4,096 compiled
    markets, ahead in 23 of 24 rounds, ``experiments.ab_forms --base all-constants``)."""
    return dataclasses.replace(const, visible=None, noise=None)


class BatchedMarket:
    """``num_envs`` markets of one :class:`MarketConfig` on one torch device.

    ``compile=True`` runs the step through ``torch.compile`` (see :meth:`compile`): several
    times faster for small batches, where per-op overhead dominates, and faster at every size;
    the first steps pay the compilation. Results agree with eager mode up to floating-point
    rounding.
    """

    autoreset_mode = "NextStep"
    # Item tables larger than this are gathered outside the compiled step's fused loops: a
    # size past a typical L2 cache, where lookups become misses (see indexing.rows).
    SEPARATE_GATHER_BYTES = 4 * 2**20
    # Per-market tensors (leading dimension num_envs), for the memory figures.
    _PER_MARKET = (
        "key",
        "counter",
        "episode",
        "t",
        "needs_reset",
        "users",
        "user_status",
        "user_epoch",
        "activity",
        "item_stats",
        "user",
        "cand",
        "cand_mask",
        "acc_return",
        "acc_choices",
        "acc",
        "_arange",
    )
    # The tables a step reads at random, on huge pages where large (recenv.core.hugepages).
    _HUGE_PAGE_TABLES = ("users", "user_status", "user_epoch", "activity", "item_stats")
    # The step's two entries, each its own graph when compiled: the batched face's (with the
    # info dict) and the PettingZoo face's (what it reads, packed).
    _COMPILED_STEPS = ("_serve", "_serve_face")

    def __init__(
        self,
        config: MarketConfig,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        catalog: Catalog | None = None,
        population: Population | None = None,
        compile: bool = False,
    ):
        dev, seed = check_batch(num_envs, device, seed)
        self.config = cfg = config
        self.num_envs = N = num_envs
        self.device = dev
        self._keep_heap()
        self.agents = [f"agent_{a}" for a in range(cfg.num_agents)]
        # The catalog, shared by all markets, before its first table: one too large for this
        # machine is refused by name (num_items, num_topics, embed_dim), as the batch below.
        # The item rows are built on dev, and the tables copied there from another kind of
        # device (a catalog to build is drawn on the CPU); a given catalog's are in memory.
        moved = catalog is None or any(t.device.type != dev.type for t in catalog.tables().values())
        check_catalog_fits(cfg, dev, tables=moved)
        self.catalog = (catalog if catalog is not None else build_catalog(cfg)).to(dev)
        # Derived item tables are built on first use; build them now, outside any compiled
        # graph (traced inside one, a table would be recomputed from the catalog every step).
        self.catalog.item_rows  # noqa: B018
        self._item = ItemRow(cfg.num_topics, cfg.embed_dim)
        self.layout = UserLayout(cfg.num_topics, cfg.num_agents)
        if population is not None:
            population.check(cfg)
            population = population.to(dev)
        self.population = population
        # Before the first per-market table: a batch too large for this machine is refused by
        # name, not granted by overcommit and then killed while its tables are filled.
        check_fits(cfg, N, dev)
        check_horizon_fits(cfg, dev)  # the tables sized by the horizon, built once
        self._pending_seed = seed
        self._seeded = False
        A, U, C, K = cfg.num_agents, cfg.num_users, cfg.num_candidates, cfg.slate_size
        W = cfg.stats_size
        i64 = torch.int64
        if cfg.num_items > W and cfg.horizon * A * K > W:
            # Hashed counters fill up when an episode shows about W ln W items; a full table
            # makes coverage NaN (see metrics.coverage_from_counters). Said once, at build.
            # Attributed to the user's line (recenv.make, make_vec, a scenario's
            # parallel_env), not to the scenario builder that built the market.
            warn(
                f"item_stats_size={cfg.item_stats_size} counters for num_items={cfg.num_items}: "
                f"an episode can show up to horizon x num_agents x slate_size = "
                f"{cfg.horizon * A * K:,} items, more than the {W} counters; an episode that "
                "exposes every counter reports coverage NaN, and the candidates' click and "
                "exposure features merge the items sharing a counter (item % item_stats_size). "
                f"Raise item_stats_size (exact at {cfg.num_items}) where memory allows"
            )

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            # The large tables (user rows, item counters) on huge pages: every step reads them
            # at random, and with 4 KiB pages each lookup also walks the page table
            # (recenv.core.hugepages; 1.13-1.17x at 4,096 markets). Small ones as torch.zeros.
            return hugepages.full(shape, 0, dtype, dev)

        self._arange = torch.arange(N, device=dev)
        self._agent_ids = torch.arange(A, device=dev)
        self._user_ids = torch.arange(U, device=dev)
        self._feature_column = torch.arange(cfg.num_topics + 6, device=dev)
        # log1p(0..max count): exposures of an item in one episode are at most H * A * K.
        max_count = cfg.horizon * cfg.num_agents * cfg.slate_size
        self._log1p_counts = lookup_table(torch.log1p, torch.arange(max_count + 1, device=dev))
        self._decay_powers = decay_powers(cfg, dev)
        self._position_cost = position_costs(cfg.num_agents * cfg.slate_size, dev)
        # Market clocks.
        self.key = zeros(N, dtype=i64)
        self.counter = zeros(N, dtype=i64)
        self.episode = zeros(N, dtype=i64)
        self.t = zeros(N)  # float: compared with float user-table steps without conversions
        self.needs_reset = zeros(N, dtype=torch.bool)
        # Users: one packed row each, stamped with the episode it belongs to.
        self.users = zeros(N, U, self.layout.width)
        # A dense copy of the two columns every step scans for all users (available_at,
        # churned; adjacent in the row): a scan reads 8 bytes per user instead of a whole
        # cache line of the packed row. Written with the rows, in the same step. Column-major
        # per market, [N, 2, U]: a scan loads each column's users as one contiguous vector
        # (interleaved [N, U, 2], inductor gathered them one float at a time).
        self._status = slice(self.layout.available_at, self.layout.churned + 1)
        assert self.layout.churned == self.layout.available_at + 1
        self.user_status = zeros(N, 2, U)
        self.user_epoch = hugepages.full((N, U), -1, i64, dev)
        self.activity = zeros(N, U)
        # Per-market item statistics, stamped the same way.
        # One row per item: (episode stamp, exposures, clicks), so a lookup is one cache line.
        self.item_stats = zeros(N, W, 3, dtype=torch.int32)
        self.item_stats[:, :, 0] = -1
        # The current request.
        self.user = zeros(N, dtype=i64)
        self.user_const: UserConstants | None = None
        self.cand = zeros(N, A, C, dtype=i64)
        self.cand_mask = zeros(N, A, C, dtype=torch.bool)
        # Episode accumulators for metrics.
        self.acc_return = zeros(N, A)
        self.acc_choices = zeros(N, A)
        self.acc = zeros(N, 4)  # clicks, engagement, diversity, novelty
        self._obs: Obs | None = None  # the per-agent dict of views, built on demand
        # The observation as batched tensors (ObsParts; action_mask and candidate_ids are
        # cand_mask and cand).
        self._obs_parts: ObsParts | None = None

        # Retrieval sizes, and the layout of the one uniform block a step draws.
        n_retrieved = C - K
        self._n_interest = ni = round(cfg.retrieval_interest * n_retrieved)
        self._n_popular = npop = min(n_retrieved - ni, round(cfg.retrieval_popular * n_retrieved))
        self._n_fresh = nf = n_retrieved - ni - npop
        P = A * K
        widths = {
            "platform": A + 1,
            "choice": P + 1,
            "response": 3,
            "dynamics": 3,
            "arrival": 1,
            "topic": A * ni,
            "position": A * (ni + npop + nf),
        }
        self._block: dict[str, slice] = {}
        o = 0
        for name, w in widths.items():
            self._block[name] = slice(o, o + w)
            o += w
        self._block_width = o
        self._user_block_width = user_block_width(cfg)
        self._log_items = math.log2(max(2, cfg.num_items))
        self._agent_of = self._agent_ids.repeat_interleave(K)  # [P] page entry -> agent
        self._slot_of = torch.arange(K, device=dev).repeat(A)  # [P] page entry -> slot
        # Items of each agent arrived by step t, for t = 0..H: [A, H + 1] (fresh retrieval).
        steps = torch.arange(cfg.horizon + 1, device=dev)
        self._arrived_by = torch.stack(
            [torch.searchsorted(row, steps, right=True) for row in self.catalog.arrival_sorted]
        )
        self.compiled = False
        # Whether the step uses recenv.core.native's hand-written kernels: on the CPU, eager
        # or compiled, when they build (RECENV_NATIVE=0 turns them off). Read while tracing.
        # Against the torch forms (alternated runs; experiments/performance-log.md): compiled
        # 1.11x at 4,096 markets, 1.10x on two threads, 1.01x at one and eight markets;
        # eager 1.34x at 1,024, 1.43x at 4,096, 0.98x for the one-market face.
        self._native_kernels = native.usable(self.device)
        # Whether the compiled step is one graph without fallback calls, for its buffers to
        # live on the C stack (one CPU market; see compile()). Such a graph uses the torch
        # forms in the step (the episode metrics, eager, keep their kernel). Read while
        # tracing.
        self._stack_graph = False
        if compile:
            self.compile()

    def __getstate__(self) -> dict[str, Any]:
        # Compiled steps are bound to this object and cannot be pickled: a copy (pickled,
        # deep-copied by a vectorising wrapper) compiles its own, or it would step the
        # original. The per-agent observation dict holds views and is rebuilt on demand.
        state = self.__dict__.copy()
        for name in self._COMPILED_STEPS:
            state.pop(name, None)
        hugepages.compact_tables(state, self._HUGE_PAGE_TABLES)  # not the buffers' slack
        state["_obs"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        compiled = state.pop("compiled", False)
        # A copy made inside the caller's inference mode (recenv.core.modes).
        self.__dict__.update({k: normal_tensors(v) for k, v in state.items()})
        self._keep_heap()  # unpickled in another process (a vector env's worker, Ray)
        self._rehome_tables()
        # Decided where it is unpickled: that machine may lack the kernels (or have them).
        self._native_kernels = native.usable(self.device)
        self.compiled = self._stack_graph = False
        if compiled:
            self.compile()

    def state_restored(self) -> None:
        """Call after replacing the market's state tensors from outside (``experiments.
        snapshot.restore`` calls it, as pickle calls ``__setstate__``): the large tables go
        back onto huge pages, and the next compiled step evaluates Dynamo's guards once, so a
        table that came back with other strides, dtype or device recompiles the step instead
        of being read with the old layout (the warm step checks neither; see
        :func:`recenv.core.warm.warm_unguarded`). Writing into the existing tensors in place
        needs no call. Whether the native kernels are used is this process's to decide, as
        in ``__setstate__``: a snapshot taken where they were on set it back to True in a
        process run with ``RECENV_NATIVE=0`` (or without a compiler), whose next step then
        called a kernel that was never loaded (``NotImplementedError`` on resume)."""
        self._rehome_tables()
        self._native_kernels = native.usable(self.device)
        for name in self._COMPILED_STEPS:
            reguard = getattr(getattr(self, name), "reguard", None)
            if reguard is not None:
                reguard()

    def _keep_heap(self) -> None:
        """On the CPU, keep freed step buffers in the heap for the next step instead of
        giving them back to the kernel (:mod:`recenv.core.heap`: page faults were a quarter
        of a compiled step at 16,384 markets), and glibc's fastbins off for one market, on for
        more (the market built last decides). Process-wide; ``RECENV_KEEP_HEAP=0`` turns both
        off."""
        if self.device.type == "cpu":
            heap.keep()
            heap.fastbins(self.num_envs > 1)

    def _rehome_tables(self) -> None:
        """Move the large state tables back onto huge pages (recenv.core.hugepages) when they
        arrived as ordinary tensors: unpickled, or restored from a run checkpoint."""
        hugepages.rehome_tables(self, self._HUGE_PAGE_TABLES)

    # ------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------
    def compile(self) -> BatchedMarket:
        """Run the step through ``torch.compile`` (idempotent): the whole step after the action
        check is one graph, with inductor's C++ wrapper (the generated Python that would call
        the graph's kernels is most of a small batch's step). The first steps pay the
        compilation. Results agree with eager mode up to floating-point rounding.

        Each large table (users, their episode stamps, item counters) is written once per
        step, so inductor updates it in place; a second write to the same table in one graph
        would make it copy the whole table every step.

        The graph is built in torch's default algorithm mode even where the caller has
        ``torch.use_deterministic_algorithms(True)`` on (RLlib's seeding does): the step is
        deterministic by construction (see the comment in the body), and the mode would
        make inductor call ATen for the indexed writes (:func:`outside_deterministic_mode`).
        """
        if self.compiled:
            return self
        if self.device.type == "cpu":
            require_cpp_compiler()  # before anything changes: the market stays eager
        self.compiled = True  # read while tracing (picks the fusable forms)
        # The action check stays eager: a handful of elementwise ops that are as fast eager as
        # compiled at one market and faster from ~1,000 markets on (0.06 vs 0.21 ms at 1,024).
        options = inductor_options(self.device)
        one_cpu_market = self.device.type == "cpu" and self.num_envs == 1
        # (Inductor's force_pointwise_cat, used for one market in the fifteenth session, is
        # off: it no longer gains with the buffers on the stack. The graph it was blamed for
        # corrupting at num_topics=24 suffered from rng.uniforms' int32 overflow, since fixed.)
        # Each is compiled on its first call: a market steps through one of them. For one
        # CPU market the backend keeps the graph it compiled, and the warm step calls it
        # without AOTAutograd's runtime wrapper when that wrapper has nothing to do but bump
        # version counters (recenv.core.warm): ~15 us of the face's ~85 us graph call, 1.08x
        # on the face. The price: the first call traces AOTAutograd's graph even when its
        # cache holds it (+~5 s to the first step), so larger batches, where 15 us is
        # nothing, keep the wrapper and the cache.
        # One CPU market with narrow draws: a graph without fallback calls (the torch forms
        # of the native kernels, prefix sums as fused adds), whose intermediate buffers
        # inductor can then put on the C stack (recenv.core.stack): 15 heap tensors per call
        # instead of ~55, 1.20x on the face. Wider draws keep cumsum, so their graph could
        # not use the stack anyway and keeps the native kernels.
        cfg = self.config
        # The draws by weight are over users (the arrival) and topics (retrieval).
        self._stack_graph = one_cpu_market and all(
            prefix_sum_unrolls(width) for width in (cfg.num_users, cfg.num_topics)
        )
        for name in self._COMPILED_STEPS:
            own = own_code(getattr(self, name))
            if one_cpu_market:
                capture = InductorCapture(options, stack=self._stack_graph)
                compiled = torch.compile(own, backend=capture, dynamic=False)
            else:
                capture = None
                compiled = torch.compile(own, dynamic=False, options=options)
            # Every indexed write of the step leaves the same table whatever order its
            # duplicates take (they carry equal values: _put_users, _count_exposures_torch),
            # and no float is accumulated by atomics, so the graph is as deterministic built
            # in torch's default mode, which keeps one market's buffers on the stack (under
            # deterministic algorithms, which RLlib's seeding turns on, its face was ~2x
            # slower: experiments.face_modes).
            build = outside_deterministic_mode(compiled)
            setattr(self, name, warm_unguarded(build, own, capture))
        return self

    @property
    def _native_in_step(self) -> bool:
        """Whether the step calls the native kernels (candidates, counters' update): where
        they build, except in a graph meant for the stack (``_stack_graph``), which may call
        no opaque kernel. Read while tracing, and by eager steps."""
        return self._native_kernels and not self._stack_graph

    @property
    def _native_rng(self) -> bool:
        """Whether the step's uniforms come from the native pass (``rng.block``): in eager
        steps where the kernels build. A compiled step keeps the torch form, which inductor
        fuses into its loops."""
        return self._native_kernels and not self.compiled

    @property
    def _separate_gathers(self) -> bool:
        """Whether a compiled step gathers item rows in a loop of their own (the item table
        cannot stay in cache; see ``indexing.rows``) instead of fusing them into their
        consumers: on the devices of :data:`SEPARATE_GATHERS_ON`. Read while tracing."""
        return (
            self.compiled
            and self.device.type in SEPARATE_GATHERS_ON
            and self.catalog.item_rows.nbytes > self.SEPARATE_GATHER_BYTES
        )

    @property
    def pending_seed(self) -> int | None:
        """The seed the next ``reset()`` without one will take: the constructor's ``seed``
        until the first reset, ``None`` after it (a view over the market, such as
        :class:`~recenv.integrations.gymnasium_vector.SingleAgentVectorEnv`, seeds its own
        draws from it so that it replays with the market)."""
        return self._pending_seed

    def reset(self, seed: int | None = None) -> Obs:
        """Start every market anew. With ``seed``, market ``n`` is seeded ``seed + n``; without,
        the first reset uses the constructor's seed (or a fresh one), later resets continue each
        market's random stream into its next episode."""
        if torch.is_inference_mode_enabled():
            # State made here inside a caller's inference mode would be inference tensors,
            # which a later step outside it cannot update in place (an evaluation under
            # torch.inference_mode(), then training, failed at the next reset).
            with torch.inference_mode(False):
                return self.reset(seed)
        N = self.num_envs
        seed = check_seed(seed, N)  # before anything changes
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        if seed is None and not self._seeded:
            # Entropy at the first unseeded reset, not at construction: copies of an unseeded
            # env (pickled, deep-copied by vectorising wrappers) must not share one stream.
            seed = rng.fresh_seed()
        if seed is not None:
            seeds = int(seed) + torch.arange(N, device=self.device, dtype=torch.int64)
            self.key = rng.seed_to_key(seeds)
            self._seeded = True
            self.counter.zero_()
            self.episode.fill_(-1)
            self.user_epoch.fill_(-1)
            # Counts zeroed with the stamps: stamp -1 is also episode 2**32 - 1's int32 stamp
            # (see _stamp), where a row untouched since this reset reads as current; with the
            # counts of before the reset there, a market's observations then depended on its
            # history before reset(seed).
            self.item_stats[:, :, 0] = -1
            self.item_stats[:, :, 1:] = 0
            U = self.config.num_users
            # Written in place: the table keeps its (huge) pages.
            if self.population is not None:
                self.activity.copy_(self.population.activity.expand(N, U))
            else:
                u = rng.block(
                    self.key, self.counter, rng.STREAM_POPULATION, 2 * U, native=self._native_rng
                )
                self.activity.copy_(torch.exp(0.75 * rng.box_muller(u[:, :U], u[:, U:])))
        else:
            self.counter += 1
        self._begin_episode(torch.ones(N, dtype=torch.bool, device=self.device))
        self.needs_reset.zero_()
        block = self._step_block()
        self._arrive(block)
        return self.observe()

    def step(self, actions: dict[str, torch.Tensor]) -> StepResult:
        if torch.is_inference_mode_enabled():  # see reset
            with torch.inference_mode(False):
                return self.step(actions)
        if self._obs_parts is None:
            raise RuntimeError("call reset() before step()")
        slate, valid, repaired = self._check_actions(actions)  # raises before any mutation
        return self._step_checked(slate, valid, repaired)

    def _step_checked(
        self,
        slate: torch.Tensor,
        valid: torch.Tensor,
        repaired: torch.Tensor,
    ) -> StepResult:
        """The step after checking: ``slate`` [N, A, K] indices in range, ``valid`` [N, A, K]
        slot validity and ``repaired`` [N, A] invalid-slot counts as :meth:`_check_actions`
        returns them (no slot valid and nothing repaired in the markets about to reset)."""
        rewards, terminated, truncated, info, arrived = self._serve(slate, valid, repaired)
        done = self.needs_reset  # terminated | truncated, as the step just set it
        # Episode metrics scan per-market tables: only when one ended. (bool() of a
        # one-element tensor is a fraction of an any() op, which counts at one market.)
        if bool(done) if self.num_envs == 1 else bool(done.any()):
            self._end_episodes(info, arrived)
        rew = dict(zip(self.agents, rewards.unbind(1), strict=True))
        return self.observe(), rew, terminated, truncated, info

    def _step_face(
        self, slate: torch.Tensor, valid: torch.Tensor, repaired: torch.Tensor
    ) -> tuple[list[float], dict[str, Any]]:
        """The step of the PettingZoo face (``num_envs == 1``; arguments as for
        ``_step_checked``; the face never steps a market about to reset: after an episode's
        end it refuses ``step`` until ``reset``, so its own numpy check needs no masking):
        market 0's scalars as one list laid out as :func:`face_row`
        says, and an info dict with the slates shown (and ``episode`` / ``_episode`` as
        :meth:`_step_checked` adds them when the episode ended). The observation is read
        from ``_obs_parts``.

        One host read of a packed row instead of one per field: each ``float()`` / ``int()``
        of a one-element tensor costs about a microsecond, and the face read ~15 of them per
        step."""
        shown, arrived, row = self._serve_face(slate, valid, repaired)
        scalars = row.tolist()
        info: dict[str, Any] = {"shown": shown}
        if scalars[0] or scalars[1]:  # terminated or truncated
            self._end_episodes(info, arrived)
        return scalars, info

    def _end_episodes(self, info: dict[str, Any], arrived: Arrived) -> None:
        done = self.needs_reset
        info["episode"] = self._episode_metrics(done, arrived)
        info["_episode"] = done.clone()

    def _serve(
        self, slate: torch.Tensor, valid: torch.Tensor, repaired: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any], Arrived]:
        """A whole step after checking (one graph when compiled): serve the current request in
        every market, apply its consequences, and bring the next user.

        Returns rewards [N, A], terminated, truncated [N], the info dict, and the arriving
        users with their rows and episode stamps from before the arrival (episode metrics are
        read as of the end of the request, and the arrival changes only those rows).
        """
        out, arrived = self._advance(slate, valid, repaired)
        info: dict[str, Any] = {
            "shown": out["shown"],
            "chosen_agent": out["chosen_agent"],
            "chosen_slot": out["chosen_slot"],
            "chosen_item": out["chosen_item"],
            "clicked": out["clicked"],
            "engagement": out["value"],
            "platform": out["platform"],
            "utility": out["utility"],
            "choice_probs": out["probs"],
            "reset": out["reset"],
            "repaired": out["repaired"],
        }
        return out["rewards"], out["terminated"], out["truncated"], info, arrived

    def _serve_face(
        self, slate: torch.Tensor, valid: torch.Tensor, repaired: torch.Tensor
    ) -> tuple[torch.Tensor, Arrived, torch.Tensor]:
        """:meth:`_serve` for the PettingZoo face (``num_envs == 1``): the same step, which
        returns only what the face reads: the slates shown [1, A, K], the arriving users (as
        for :meth:`_serve`) and market 0's scalars packed into one float64 row laid out as
        :func:`face_row` says.

        Compiled, it is a graph of its own (the face never calls :meth:`_serve`): every value
        a graph returns is a buffer allocated per call and a tensor handed through Dynamo's
        and AOTAutograd's Python, and at one market that costs more than computing it. Its
        graph returns 15 tensors where :meth:`_serve`'s returns 33 (the info dict's ~20):
        1.04x on the compiled face (``experiments.ab_commits --figure face``, eight
        alternated rounds)."""
        out, arrived = self._advance(slate, valid, repaired)
        # Grouped by dtype: ten ops, not thirty (they count in an eager step).
        flags = torch.stack([out["terminated"], out["truncated"]], 1)
        picks = torch.stack([out["chosen_agent"], out["chosen_slot"]], 1)
        utility = torch.stack([out["utility"][k] for k in FACE_UTILITY], 1)
        floats = torch.cat([out["value"][:, None], utility, out["rewards"], out["repaired"]], 1)
        row = torch.cat([flags.double(), picks.double(), floats.double()], 1)[0]
        return out["shown"], arrived, row

    def _advance(
        self, slate: torch.Tensor, valid: torch.Tensor, repaired: torch.Tensor
    ) -> tuple[dict[str, Any], Arrived]:
        """The state change of :meth:`_serve` and :meth:`_serve_face` (inlined into either's
        graph): returns the request's outputs (:meth:`_interact`) with ``reset`` [N] (the
        markets that were resetting) and ``repaired`` added, and the arriving users (as
        :meth:`_serve` returns them). ``valid`` and ``repaired`` must be False and 0 in the
        markets about to reset, as :meth:`_check_actions` gives them: masked in the graph,
        each market's 6 flags were a loop of their own with masked vector loads and stores
        (1.053x at 4,096 compiled markets, ahead in 24 of 24 rounds, ``experiments.ab_forms
        --base live-in-graph``)."""
        resetting = self.needs_reset
        live = ~resetting
        self.counter.add_(1)  # in place, as in _begin_episode
        self._begin_episode(resetting)

        out = self._interact(slate, valid, live)
        self.acc_choices.add_(out["acc_choices"])
        self.acc.add_(out["acc"])
        self.acc_return.add_(out["rewards"])
        self.t.copy_(out["t"])
        self.needs_reset = out["terminated"] | out["truncated"]
        # The item counters' one write; the next observation reads them after it.
        self._count_exposures(*out["counted"])
        arrived = self._arrive(
            out["block"], served=(self.user, out["new_row"]), arrival=out["arrival"]
        )
        out["reset"], out["repaired"] = resetting, repaired
        return out, arrived

    def observe(self) -> Obs:
        """Observations of the current request, per agent (views of batched tensors)."""
        if self._obs_parts is None:
            raise RuntimeError("call reset() before observe()")
        if self._obs is None:
            user, hist, feats = self._obs_parts
            self._obs = {
                a: {
                    "user": user,
                    "history": hist[:, i],
                    "candidates": feats[:, i],
                    "action_mask": self.cand_mask[:, i],
                    "user_id": self.user,
                    "candidate_ids": self.cand[:, i],
                }
                for i, a in enumerate(self.agents)
            }
        return self._obs

    def _constants(self) -> UserConstants:
        """The current users' constants. Every reset sets them, and every caller (the step,
        ``state``, the oracle) has already refused a market never reset: no check of its own
        (an assert for type checkers, free in a compiled step, where it is traced away)."""
        assert self.user_const is not None
        return self.user_const

    def state(self) -> torch.Tensor:
        """Global latent state ``[N, S]`` with ``S = config.state_dim``. Layout:
        current user's interest (T), boredom (T), taste (D), satisfaction, budget / mean
        budget, t / H, loyalty (A); each agent's candidates' true utility (A*C, 0 where masked)
        and mask (A*C); market aggregates: churned share, mean satisfaction, share of users
        seen this episode; market share of choices so far (A)."""
        if self._obs_parts is None:
            raise RuntimeError("call reset() before state()")
        cfg, L = self.config, self.layout
        row = cell(self.users, self._arange, self.user)
        mask = self.cand_mask
        util = torch.where(mask, self.oracle_scores(), 0.0)
        fresh = self.user_epoch != self.episode[:, None]
        sat = torch.where(fresh, cfg.satisfaction_init, self.users[:, :, L.satisfaction])
        total = self.acc_choices.sum(1, keepdim=True)
        share = torch.where(total > 0, self.acc_choices / total.clamp(min=1), 1.0 / cfg.num_agents)
        parts = [
            row[:, L.interest],
            row[:, L.boredom],
            self._constants().taste,
            row[:, L.satisfaction, None],
            row[:, L.budget, None] / cfg.session_budget,
            self.t[:, None] / cfg.horizon,
            row[:, L.loyalty],
            util.flatten(1),
            mask.float().flatten(1),
            self._churned().float().mean(1, keepdim=True),
            row_mean(sat)[:, None],  # float sums: the same bits on any number of threads
            (~fresh).float().mean(1, keepdim=True),
            share,
        ]
        return torch.cat(parts, dim=1)

    def state_nbytes(self) -> int:
        """Bytes of every per-market tensor of the batch (state, current request, the
        observation); the catalog and a population, shared by all markets, are not counted.
        Divide by ``num_envs`` for bytes per env."""
        tensors = [getattr(self, name) for name in self._PER_MARKET]
        if self.user_const is not None:
            tensors += [x for x in vars(self.user_const).values() if x is not None]
        if self._obs_parts is not None:
            tensors += list(self._obs_parts)
        return sum(x.numel() * x.element_size() for x in tensors)

    def step_traffic_bytes(self) -> dict[str, int]:
        """Bytes of state and observation one step must read and write, for the whole batch,
        by part, with ``"total"`` their sum; the catalog reads apart (``"catalog"``, and
        ``"total_with_catalog"``).

        A model of the step's data, not a hardware counter: each element the step needs is
        counted once if it is read and once if it is written, at its dtype's size, however
        many passes touch it; cache-line granularity of the random lookups and the
        temporaries between kernels are not counted. So ``total`` over the machine's copy
        bandwidth is a lower bound of the memory traffic. The catalog (item rows and
        retrieval lists) is static and shared by every market: it is neither state nor
        observation, and at the default catalog size it stays in cache, so ``total`` leaves
        it out (the speed issue's "bytes of state and observation touched per step").
        """
        cfg, L = self.config, self.layout
        A, U, C, K = cfg.num_agents, cfg.num_users, cfg.num_candidates, cfg.slate_size
        T, D = cfg.num_topics, cfg.embed_dim
        P, F, f4, i8 = A * K, L.width, 4, 8
        status = 2 * f4 + i8  # a user's churned + available_at columns and episode stamp
        info = (
            P * i8  # shown
            + 4 * i8  # chosen_agent, chosen_slot, chosen_item, platform
            + 2  # clicked, reset
            + f4  # engagement
            + len(FACE_UTILITY) * f4  # utility, by term and total
            + (P + 1) * f4  # choice_probs
            + A * f4  # repaired
        )
        parts = {
            # The current user's row read and written, the arriving user's row read and
            # written; every user's status read once (the end-of-episode check and the
            # arrival's weights read the same columns) and the two users' written; the
            # activity weights read; the current user's index read and written.
            "users": 4 * F * f4 + U * status + 2 * status + U * f4 + 2 * i8,
            # The page items' counter rows (this episode's stamp, exposures, clicks; the
            # chosen item is one of them) read and written; the candidates' rows read for
            # their features.
            "item_stats": P * (3 * f4 + 3 * f4) + A * C * 3 * f4,
            # Written: user, history, candidate features, mask, ids.
            "observation": (T + 2) * f4
            + A * (T + 4) * f4
            + A * C * (T + 6) * f4
            + A * C * (1 + i8)
            + i8,
            # Actions read and the slate's item ids looked up among the candidates; rewards,
            # ends and the info fields written.
            "actions_rewards_info": A * K * i8 + P * i8 + A * f4 + 2 + info,
        }
        # Page items' topics, embedding, quality, price, novelty and the click's length;
        # candidates' topics, length, price, quality and arrival step; the retrieval lists
        # (int32) for the candidates that are not each agent's fixed top K.
        catalog = P * (T + D + 3) * f4 + f4 + A * C * (T + 4) * f4 + A * (C - K) * 4
        out = {k: v * self.num_envs for k, v in parts.items()}
        out["total"] = sum(out.values())
        out["catalog"] = catalog * self.num_envs
        out["total_with_catalog"] = out["total"] + out["catalog"]
        return out

    def oracle_scores(self, hide: Collection[str] = ()) -> torch.Tensor:
        """True expected utility of every candidate for the current user: ``[N, A, C]``.

        Privileged (reads latent state; ``hide`` as in :meth:`oracle_view`). Position bias is
        left out: it does not depend on the item. Masked candidates score ``-inf``.
        """
        return self.oracle_view(hide).utility

    def oracle_view(self, hide: Collection[str] = ()) -> OracleView:
        """What the oracles read of the current request (privileged): each candidate's true
        expected utility for the current user (:meth:`oracle_scores`: position bias left out,
        masked candidates ``-inf``), length and price, each ``[N, A, C]``. With
        :func:`~recenv.core.response.expected_click_value` these value any slate under the
        true choice model, as ``oracle_slates("value")`` does.

        ``hide``: latent parts the utility is computed without, each replaced by what agents
        observe of it or the population's mean (:data:`ORACLE_HIDEABLE`: ``interest``,
        ``taste``, ``boredom``, ``quality``, ``price_sensitivity``). An oracle that knows the
        model but not the user and item as they are: the difference it makes measures what
        that part is worth to a recommender, which no learner without it can earn."""
        unknown = sorted(set(hide) - set(ORACLE_HIDEABLE))
        if unknown or isinstance(hide, str):
            raise ValueError(
                f"hide={hide!r}: a collection of latent parts, each one of "
                f"{', '.join(map(repr, ORACLE_HIDEABLE))}"
            )
        if self._obs_parts is None:
            raise RuntimeError("call reset() before the oracle")
        cfg, L, it = self.config, self.layout, self._item
        N, A, C = self.num_envs, cfg.num_agents, cfg.num_candidates
        row = cell(self.users, self._arange, self.user)
        item = rows(self.catalog.item_rows, self.cand.view(N, A * C))  # [N, A*C, R]
        const = self._constants()
        interest, boredom = row[:, L.interest], row[:, L.boredom]
        taste, sensitivity = const.taste, const.price_sensitivity
        quality = item[:, :, it.quality]
        if "interest" in hide:  # the observation's user columns start with the interests
            interest = self._obs_parts[0][:, : cfg.num_topics]
        if "taste" in hide:
            taste = torch.zeros_like(taste)
        if "boredom" in hide:
            boredom = torch.zeros_like(boredom)
        if "quality" in hide:
            quality = item[:, :, it.observed_quality]
        if "price_sensitivity" in hide:
            sensitivity = torch.full_like(sensitivity, cfg.price_sensitivity)
        terms = item_utility_terms(
            cfg,
            interest,
            boredom,
            taste,
            sensitivity,
            item[:, :, it.topics],
            item[:, :, it.embed],
            quality,
            item[:, :, it.price],
            None,
        )
        utility = torch.where(self.cand_mask, terms.total.view(N, A, C), -math.inf)
        return OracleView(
            utility, item[:, :, it.length].view(N, A, C), item[:, :, it.price].view(N, A, C)
        )

    def oracle_slates(self, objective: str = "utility", hide: Collection[str] = ()) -> torch.Tensor:
        """The myopic oracle's slates ``[N, A, K]`` (privileged); both ignore what a slate
        does to boredom, satisfaction and churn later. ``hide``: latent parts it does not read
        (:meth:`oracle_view`).

        ``objective="utility"``: each agent's top-K candidates by true utility
        (:meth:`oracle_scores`), the slate likeliest to be clicked. Not the most rewarding
        one: the reward is the click's value (engagement grows with the item's length, revenue
        is its price).

        ``"value"``: the slate that maximises the agent's expected reward from this request
        under the choice model, built greedily slot by slot (page position first): each slot
        takes the candidate that most raises ``Σ w_k v_k / (exp(no_click / T) + Σ w_k)``
        over the slate so far, where ``w_k = exp(u_k / T)`` with the slot's position cost in
        ``u_k`` and ``v_k`` the expected value of a click there
        (:func:`~recenv.core.response.expected_click_value`). So the later slots go to items
        that take few clicks from the better ones, not to the next most appealing items.
        The other agents' items on a shared page are left out of the denominator (they are
        chosen at the same time). A strong one-step reference, not a proven optimum.

        ``"page_value"``: the same greedy over the whole shared page, as a team that plans
        together would build it: the page's slots in page order, each taking the candidate of
        its own agent that most raises the page's total expected reward (every agent's items
        so far in the denominator). Against ``"value"`` it measures what coordinating the
        agents' slates is worth in one request. Under ``platform_choice`` (one platform's
        slate is shown) it is ``"value"``.
        """
        if objective not in ORACLE_OBJECTIVES:
            raise ValueError(
                f"objective={objective!r}; allowed: {', '.join(map(repr, ORACLE_OBJECTIVES))}"
            )
        if objective == "utility":
            return self.oracle_scores(hide).topk(self.config.slate_size, dim=2).indices
        if objective == "page_value" and self.config.topology != "platform_choice":
            return self._page_value_slates(*self.oracle_view(hide))
        return self._value_slates(*self.oracle_view(hide))

    def _page_value_slates(
        self, utility: torch.Tensor, length: torch.Tensor, price: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`oracle_slates`' ``"page_value"`` greedy from ``[N, A, C]`` utilities
        (masked: ``-inf``), lengths and prices on a shared page; a loop over the page's
        ``A*K`` positions only."""
        cfg = self.config
        N, A, K = self.num_envs, cfg.num_agents, cfg.slate_size
        rows = torch.arange(N, device=self.device)
        # Which (agent, slot) fills each page position: [N, A*K], agent-major entries.
        order = self._page_position().argsort(dim=1)
        cost = cfg.position_bias * self._position_cost  # [A*K] by page position
        top = utility.amax(dim=(1, 2)).clamp(min=cfg.no_click_utility)  # [N], one page
        num = torch.zeros(N, dtype=torch.float32, device=self.device)
        den = torch.exp((cfg.no_click_utility - top) / cfg.temperature)
        taken = ~self.cand_mask  # [N, A, C]
        slates = torch.empty(N, A, K, dtype=torch.int64, device=self.device)
        for p in range(A * K):
            agent, slot = order[:, p] // K, order[:, p] % K  # [N] each
            u = utility[rows, agent] - cost[p]  # [N, C]
            w, wv, pick = _greedy_slot(
                cfg, u, top, length[rows, agent], price[rows, agent], num, den, taken[rows, agent]
            )
            slates[rows, agent, slot] = pick
            taken[rows, agent, pick] = True
            num = num + wv[rows, pick]
            den = den + w[rows, pick]
        return slates

    def _value_slates(
        self, utility: torch.Tensor, length: torch.Tensor, price: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`oracle_slates`' ``"value"`` greedy from ``[N, A, C]`` utilities (masked:
        ``-inf``), lengths and prices; a loop over the K slots only."""
        cfg = self.config
        N, A, K = self.num_envs, cfg.num_agents, cfg.slate_size
        if cfg.topology == "platform_choice":  # only the visited platform's slate is shown
            position = self._slot_of.view(A, K).expand(N, A, K)
        else:
            position = self._page_position().view(N, A, K)
        cost = cfg.position_bias * self._position_cost.take(position)  # [N, A, K]
        # Weights relative to the largest utility (no-click included): ratios are unchanged
        # and exp cannot overflow at a low temperature.
        top = utility.amax(dim=2).clamp(min=cfg.no_click_utility)  # [N, A]
        num = torch.zeros(N, A, dtype=torch.float32, device=self.device)
        den = torch.exp((cfg.no_click_utility - top) / cfg.temperature)
        taken = ~self.cand_mask
        slates = torch.empty(N, A, K, dtype=torch.int64, device=self.device)
        for k in range(K):
            u = utility - cost[:, :, k : k + 1]
            w, wv, pick = _greedy_slot(cfg, u, top, length, price, num, den, taken)
            pick = pick[:, :, None]  # [N, A, 1]
            slates[:, :, k : k + 1] = pick
            taken = taken.scatter(2, pick, True)
            num = num + wv.gather(2, pick).squeeze(2)
            den = den + w.gather(2, pick).squeeze(2)
        return slates

    def _page_position(self) -> torch.Tensor:
        """``[N, A*K]`` 0-based position of each slot (agent-major) on a shared page: the
        agents' blocks in order, rotated by the clock under ``page_order="rotating"``."""
        cfg = self.config
        A, K = cfg.num_agents, cfg.slate_size
        if cfg.page_order == "rotating":
            rot = self.t.long() % A
            block_pos = (self._agent_of[None, :] + rot[:, None]) % A
        else:
            block_pos = self._agent_of[None, :].expand(self.num_envs, A * K)
        return block_pos * K + self._slot_of[None, :]

    # ------------------------------------------------------------------------------------
    # Input checking
    # ------------------------------------------------------------------------------------
    def _check_actions(
        self, actions: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack and check actions. Returns slate ``[N, A, K]`` (indices clamped into range),
        slot validity ``[N, A, K]`` and repaired-slot counts ``[N, A]``; the markets about to
        reset ignore their actions (no slot valid, nothing repaired)."""
        cfg = self.config
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict keyed by agent {self.agents}")
        missing = [a for a in self.agents if a not in actions]
        extra = [a for a in actions if a not in self.agents]
        if missing or extra:
            raise ValueError(
                f"actions must have exactly the agents {self.agents}; missing {missing}, "
                f"unknown {extra}"
            )
        stacked = [self._as_slate(a, actions[a]) for a in self.agents]
        if self._native_kernels:
            # One pass per market instead of ~25 small ops (recenv::check_slates, equal to
            # _validity bit for bit): ~0.6 ms of a 4,096-market step was this check.
            idx, valid, repaired, all_ok = torch.ops.recenv.check_slates(
                [x.contiguous() for x in stacked],
                self.cand_mask.contiguous(),
                self.needs_reset.contiguous(),
            )
        else:
            idx, valid, repaired, all_ok = self._validity(torch.stack(stacked, dim=1))
        if cfg.invalid_slate == "raise" and not bool(all_ok):
            self._raise_invalid(torch.stack(stacked, dim=1))
        return idx, valid, repaired

    def _as_slate(self, agent: str, action: Any) -> torch.Tensor:
        """``agent``'s action as an int64 slate ``[N, K]`` on the market's device, or a
        ValueError naming the agent, what is wrong and the allowed values (not readable as
        numbers, NaN, a non-integer dtype, the shape, a uint64 index past int64). Values are
        checked by the caller."""
        cfg = self.config
        N, K, C = self.num_envs, cfg.slate_size, cfg.num_candidates
        # Formatted only for a refusal: this runs for every agent every step.
        expected = lambda: (  # noqa: E731
            f"a slate is an integer array or tensor of shape (num_envs={N}, slate_size={K}) "
            f"holding candidate indices in [0, {C - 1}]"
        )
        x = slate_tensor(agent, action, expected).to(self.device)
        if x.is_floating_point() and bool(torch.isnan(x).any()):
            raise ValueError(
                f"action of {agent}: contains NaN; expected integer candidate indices "
                f"in [0, {C - 1}]"
            )
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(
                f"action of {agent}: dtype {x.dtype}, expected an integer dtype with candidate "
                f"indices in [0, {C - 1}]"
            )
        if x.shape != (N, K):
            raise ValueError(
                f"action of {agent}: shape {tuple(x.shape)}, expected (num_envs={N}, "
                f"slate_size={K}) candidate indices in [0, {C - 1}]"
            )
        x64 = x.to(torch.int64)
        if x.dtype == torch.uint64 and bool((x64 < 0).any()):
            # Past int64 the cast wraps negative: name the value as given.
            big = int(x64[x64 < 0][0]) + 2**64
            raise ValueError(
                f"action of {agent}: index {big} out of range; expected candidate indices "
                f"in [0, {C - 1}]"
            )
        return x64

    def check_slate(self, agent: str, action: Any) -> None:
        """Check one agent's slate ``[N, K]`` as :meth:`step` would, without stepping or
        changing anything: its form always, and under ``invalid_slate="raise"`` its values
        (in range, unmasked, distinct; markets about to auto-reset ignore their actions), with
        step's messages. A wrapper that draws other agents' slates after the caller's (the
        Gymnasium vector view's opponents) refuses a bad one before they draw."""
        if self._obs_parts is None:  # no request yet: no mask to check against
            raise RuntimeError("call reset() before check_slate()")
        if agent not in self.agents:
            raise ValueError(f"unknown agent {agent!r}; the agents are {self.agents}")
        slate = self._as_slate(agent, action)
        if self.config.invalid_slate == "raise":
            self._raise_invalid(slate[:, None], self.agents.index(agent))

    def _validity(
        self, slate: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slot validity of ``slate`` [N, A, K]: in range, unmasked, not a repeat (the torch
        form of ``recenv::check_slates``). Returns the indices clamped into range, validity
        [N, A, K], the repaired (invalid) slots per slate [N, A] float32, and whether every
        market that will act is valid. Markets about to start a new episode ignore their
        actions: none of their slots is valid and none repaired."""
        idx, in_range, dup = self._slot_checks(slate)
        ok = in_range & self.cand_mask.gather(2, idx) & ~dup
        reset = self.needs_reset[:, None, None]
        repaired = torch.where(self.needs_reset[:, None], 0.0, (~ok).sum(dim=2).float())
        return idx, ok & ~reset, repaired, (ok | reset).all()

    def _slot_checks(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices clamped into [0, C), in-range flags, and repeats of an earlier slot (compared
        on the raw values, so an out-of-range index never makes a valid slot a 'repeat')."""
        C = self.config.num_candidates
        in_range = (slate >= 0) & (slate < C)
        # Slot k against each earlier slot, one column pair at a time (K is small): a
        # [N, A, K, K] comparison with tril and any cost ~0.5 ms at 4,096 markets, this ~30 us.
        slots = slate.unbind(2)
        dup = [torch.zeros_like(in_range[:, :, 0])]
        for k in range(1, len(slots)):
            repeat = slots[k] == slots[0]
            for j in range(1, k):
                repeat = repeat | (slots[k] == slots[j])
            dup.append(repeat)
        return slate.clamp(0, C - 1), in_range, torch.stack(dup, dim=2) & in_range

    def _raise_invalid(self, slate: torch.Tensor, agent_index: int | None = None) -> None:
        """ValueError naming the first invalid slot of ``slate`` ``[N, A, K]`` (every agent's)
        or ``[N, 1, K]`` (agent ``agent_index``'s); returns when there is none."""
        C = self.config.num_candidates
        sel = slice(None) if agent_index is None else slice(agent_index, agent_index + 1)
        cand_mask, names = self.cand_mask[:, sel], self.agents[sel]
        idx, in_range, dup = self._slot_checks(slate)
        ok = (in_range & cand_mask.gather(2, idx) & ~dup) | self.needs_reset[:, None, None]
        bad = (~ok).nonzero()
        if not len(bad):
            return
        n, a, k = (int(v) for v in bad[0])
        agent, value = names[a], int(slate[n, a, k])
        where = f"agent {agent}, env {n}, slot {k}"
        if not bool(in_range[n, a, k]):
            why = f"index {value} out of range; allowed candidate indices are 0..{C - 1}"
        elif bool(dup[n, a, k]):
            why = f"candidate {value} appears twice in the slate; a slate holds distinct items"
        else:
            allowed = cand_mask[n, a].nonzero().flatten().tolist()
            why = f"candidate {value} is masked (action_mask=0); allowed indices: {allowed}"
        raise ValueError(
            f"invalid slate for {where}: {why}. The environment was not stepped "
            "(set invalid_slate='repair' to drop invalid slots instead)."
        )

    # ------------------------------------------------------------------------------------
    # Episode bookkeeping
    # ------------------------------------------------------------------------------------
    def _step_block(self) -> torch.Tensor:
        """The uniforms one step draws, ``[N, block width]`` (sliced by ``self._block``)."""
        return rng.block(
            self.key, self.counter, rng.STREAM_STEP, self._block_width, native=self._native_rng
        )

    def _begin_episode(self, mask: torch.Tensor) -> None:
        """New episode in markets where ``mask`` [N] is set; O(A) work per market."""
        # In-place methods, not augmented assignment: ``self.x *= y`` is also an attribute
        # write, which a compiled graph returns as an aliased output and replays (~5 %).
        self.episode.add_(mask)
        keep = ~mask
        self.t.mul_(keep)
        self.acc_return.mul_(keep[:, None])
        self.acc_choices.mul_(keep[:, None])
        self.acc.mul_(keep[:, None])

    def _user_column(self, col: int, patch: Patch | None = None) -> torch.Tensor:
        """Column ``col`` of the user table, ``[N, U]``; with ``patch = (user [N], row [N, F])``
        as it reads once each market's ``user`` has ``row`` (a write not yet made). The status
        columns come from the dense :attr:`user_status` copy."""
        if self._status.start <= col < self._status.stop:
            column = self.user_status[:, col - self._status.start]
        else:
            column = self.users[:, :, col]
        return column if patch is None else self._with_entry(column, patch[0], patch[1][:, col])

    def _with_entry(
        self, table: torch.Tensor, user: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """``table`` [N, U] with entry ``user`` [N] of each market replaced by ``value`` [N]."""
        return torch.where(self._user_ids[None, :] == user[:, None], value[:, None], table)

    def _user_row(self, user: torch.Tensor, patch: Patch | None) -> torch.Tensor:
        """Row of ``user`` [N] in each market, ``[N, F]``, with ``patch`` as in
        :meth:`_user_column`."""
        row = cell(self.users, self._arange, user)
        if patch is None:
            return row
        return torch.where((user == patch[0])[:, None], patch[1], row)

    def _presence(
        self, patch: Patch | None = None, t: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ready, gone)``, each [N, U], at clock ``t`` (default: now), with ``patch`` as in
        :meth:`_user_column`: ``ready``, the users who may arrive as usual (new to the
        episode, or back from their session gap or churn); ``gone``, those churned and not
        yet back (:meth:`_churned`). The rest are between sessions. What
        :meth:`_next_user_torch` weighs the users by (``recenv::next_user`` computes the
        same in its own pass)."""
        t = self.t if t is None else t
        current = self.user_epoch == self.episode[:, None]
        away = self._user_column(self.layout.available_at, patch) > t[:, None]
        return ~(current & away), self._churned(patch, t, current, away)

    def _churned(
        self,
        patch: Patch | None = None,
        t: torch.Tensor | None = None,
        current: torch.Tensor | None = None,
        away: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[N, U] users churned and not yet back at clock ``t`` (default: now); users new to
        the episode are not (``current`` [N, U]: the users of this episode, default from the
        stamps; ``away`` [N, U]: not back by ``t``, default from the table). ``patch`` as in
        :meth:`_user_column`."""
        L = self.layout
        t = self.t if t is None else t
        if current is None:
            current = self.user_epoch == self.episode[:, None]
        if away is None:
            away = self._user_column(L.available_at, patch) > t[:, None]
        return current & (self._user_column(L.churned, patch) > 0) & away

    def _episode_metrics(self, done: torch.Tensor, arrived: Arrived) -> dict[str, torch.Tensor]:
        """The :data:`EPISODE_METRICS` of the markets whose episode just ended (``done`` [N]),
        ``[N]`` or ``[N, A]`` each, zero in the other markets (as Gymnasium's episode
        statistics are). Eager, and only on steps where some episode ended. The item metrics
        (a sort of each market's W counters) are computed for the ended markets alone: with
        episodes out of step (markets ending at different steps, as churn makes them), some
        market ends on most steps, and sorting every market's counters cost ~8x a step."""
        metrics = {
            k: torch.where(done.view(-1, *[1] * (v.dim() - 1)), v, 0.0)
            for k, v in self._user_metrics(arrived).items()
        }
        ended = done.nonzero().squeeze(1)  # [E]
        zeros = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        for k, v in self._item_metrics(ended).items():  # zero elsewhere already
            metrics[k] = zeros.index_copy(0, ended, v)
        return {k: metrics[k] for k in EPISODE_METRICS}

    def _user_metrics(self, arrived: Arrived | None = None) -> dict[str, torch.Tensor]:
        """Episode metrics read from the users and the accumulators as of the end of the
        request; ``arrived = (user, row, epoch)`` undoes the arrival's changes to those rows."""
        cfg, L = self.config, self.layout
        epoch, patch = self.user_epoch, None
        if arrived is not None:
            user, row, old_epoch = arrived
            patch = (user, row)
            epoch = self._with_entry(epoch, user, old_epoch)
        current = epoch == self.episode[:, None]
        sat = torch.where(current, self._user_column(L.satisfaction, patch), cfg.satisfaction_init)
        churned = self._churned(patch, current=current)
        requests = self.t.clamp(min=1)
        choices = self.acc_choices.sum(1, keepdim=True)
        # Diversity and novelty average over the requests that showed slates: all of them on
        # a shared page; the platform visits under platform_choice (a viewer who visits no
        # platform sees nothing, and counting those requests would mix the leave rate in).
        # (Under invalid_slate="repair" a request or visit whose slates were all repaired
        # away is counted too, as 0: counting them apart would cost the step a reduction.)
        served = requests if cfg.topology == "shared_page" else choices[:, 0].clamp(min=1)
        return {
            "return": self.acc_return.clone(),
            "ctr": self.acc[:, 0] / requests,
            "engagement_per_request": self.acc[:, 1] / requests,
            "retention": 1.0 - churned.float().mean(1),
            "market_share": torch.where(choices > 0, self.acc_choices / choices.clamp(min=1), 0.0),
            "diversity": self.acc[:, 2] / served,
            "novelty": self.acc[:, 3] / served,
            "satisfaction": row_mean(sat),  # as in state(): the same on any thread count
            "length": self.t.clone(),
        }

    def _item_metrics(self, ended: torch.Tensor) -> dict[str, torch.Tensor]:
        """Episode metrics read from this episode's item counters, coverage and exposure Gini,
        ``[E]``, of the markets ``ended`` [E] (indices). On the CPU one hand-written pass per
        market (``native``: a histogram where torch sorts; when every market ends at once the
        sort cost ~20 steps at 4,096 markets); otherwise :meth:`_item_metrics_torch`, which it
        equals bit for bit."""
        if self._native_kernels:
            coverage, exposure_gini = torch.ops.recenv.item_metrics(
                self.item_stats.view(-1, 3),
                self.episode,
                ended,
                self.config.stats_size,
                self.config.num_items,
            )
            return {"coverage": coverage, "exposure_gini": exposure_gini}
        return self._item_metrics_torch(ended)

    def _item_metrics_torch(self, ended: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`_item_metrics` in torch: the ended markets' counters gathered, then
        :func:`gini` sorts them. Both metrics are over the catalog's I items: exact while
        ``num_items <= item_stats_size``; with W < I hashed counters (item % W) coverage is
        :func:`coverage_from_counters`' estimate and each exposed counter is one item of the
        Gini (items sharing a counter are merged: rare while an episode shows far fewer
        items than W)."""
        stats = self.item_stats.index_select(0, ended)  # [E, W, 3]
        current = stats[:, :, 0] == self._stamp().index_select(0, ended)[:, None]
        exposure = torch.where(current, stats[:, :, 1], 0)  # [E, W]
        I, W = self.config.num_items, self.config.stats_size
        return {
            "coverage": coverage_from_counters((exposure > 0).sum(1), W, I),
            "exposure_gini": gini(exposure, I),
        }

    # ------------------------------------------------------------------------------------
    # Arrival, retrieval and observations
    # ------------------------------------------------------------------------------------
    def _arrive(
        self, block: torch.Tensor, served: Patch | None = None, arrival: NextUser | None = None
    ) -> Arrived:
        """The next user arrives in every market. ``served = (user [N], row [N, F])`` is the
        request just served, whose row is written here together with the arriving user's
        (one write of the user table per step); ``arrival`` as :meth:`_arrival` takes it.
        Returns ``(user, row, epoch)`` of the arriving users from before the arrival."""
        u, row, before, epoch_before, const, cand, cand_mask, obs = self._arrival(
            block, served, arrival
        )
        n = self._arange
        if served is None:
            self._put_users(n, u, row)
        else:
            # If the same user is served and arrives, both entries hold the final row.
            served_user, served_row = served
            same = (u == served_user)[:, None]
            self._put_users(
                torch.cat([n, n]),
                torch.cat([served_user, u]),
                torch.cat([torch.where(same, row, served_row), row]),
            )
        put_at(self.user_epoch, (n, u), self.episode, self.compiled)
        self.user, self.user_const = u, kept_constants(const)
        self.cand, self.cand_mask, self._obs_parts, self._obs = cand, cand_mask, obs, None
        return u, before, epoch_before

    def _put_users(self, n: torch.Tensor, u: torch.Tensor, values: torch.Tensor) -> None:
        """Write user rows ``values`` [X, F] at markets ``n`` and users ``u`` [X] of the
        packed table and of its dense status copy: the one place the user tables are
        written, so the copy never goes stale."""
        fused = self.compiled  # read while tracing (see indexing.put_at)
        put_at(self.users, (n, u), values, fused)
        # The status copy is [N, 2, U]: (available_at, churned) at (n, 0, u) and (n, 1, u).
        status = values[:, self._status]
        zero = torch.zeros_like(n)
        put_at(
            self.user_status,
            (torch.cat([n, n]), torch.cat([zero, zero + 1]), torch.cat([u, u])),
            torch.cat([status[:, 0], status[:, 1]]),
            fused,
        )

    def _arrival(
        self, block: torch.Tensor, served: Patch | None = None, arrival: NextUser | None = None
    ) -> tuple[
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        UserConstants,
        torch.Tensor,
        torch.Tensor,
        ObsParts,
    ]:
        """Pick the next user by activity among available users, bring their row up to date,
        retrieve candidates and build observations. Reads state (with the served user's row
        as ``served`` says), writes none. ``arrival``: :meth:`_next_user` with ``served``,
        when the caller has it (the request's episode-end test reads the same status: one
        pass over it a step instead of two: 1.04-1.06x at 4,096 compiled markets)."""
        cfg, L = self.config, self.layout
        if arrival is None:
            arrival = self._next_user(block[:, self._block["arrival"]], served)
        u, ready_u = arrival.user, arrival.ready

        block_u = rng.block(
            self.key,
            self.episode,
            rng.STREAM_USER,
            self._user_block_width,
            index=u,
            native=self._native_rng,
        )
        fresh_row, const = draw_user(cfg, L, block_u)
        if self.population is not None:
            fresh_row = L.assemble(fresh_row, interest=rows(self.population.interest, u))
            const.taste = rows(self.population.taste, u)
        before = self._user_row(u, served)
        epoch_before = pick(self.user_epoch, u)
        row = on_arrival(
            cfg,
            L,
            before,
            epoch_before != self.episode,
            ready_u,
            fresh_row,
            self.t,
            self._decay_powers,
        )

        user_feats = observable_features(cfg, L, row, const)
        cand, feats, cand_mask = self._candidates(user_feats, block)
        obs = self._build_obs(row, user_feats, feats)
        return u, row, before, epoch_before, const, cand, cand_mask, obs

    def _next_user(
        self, uniforms: torch.Tensor, patch: Patch | None = None, t: torch.Tensor | None = None
    ) -> NextUser:
        """Every market's next arriving user at clock ``t`` (default: now), drawn by
        ``uniforms`` [N, 1], with ``patch`` as in :meth:`_user_column`: the user, whether they
        arrive as usual (:meth:`_presence`'s ``ready``) and whether every user is churned and
        not back (the episode's end), as a :class:`NextUser` of ``[N]`` tensors. On the
        CPU one hand-written pass per market (``native``), except in a graph meant for the
        stack; otherwise :meth:`_next_user_torch`, which it equals bit for bit."""
        if not self._native_in_step:
            return self._next_user_torch(uniforms, patch, t)
        if patch is None:
            served = torch.full_like(self._arange, -1)
            served_status = self.user_status.new_zeros(self.num_envs, 2)
        else:
            served, served_status = patch[0], patch[1][:, self._status].contiguous()
        # The kernel reads contiguous tables: a no-op for the market's own, a copy for one
        # replaced from outside in another layout (e.g. a restored checkpoint's). The [N]
        # vectors are the market's own; the uniforms are a column of the step's block.
        user, ready, all_gone = torch.ops.recenv.next_user(
            self.user_status.contiguous(),
            self.user_epoch.contiguous(),
            self.activity.contiguous(),
            self.episode,
            self.t if t is None else t,
            served,
            served_status,
            uniforms.reshape(-1).contiguous(),
            self.users if _PREFETCH_ARRIVING_ROWS else self.users[:0],
            _GAP_WEIGHT,
        )
        return NextUser(user, ready, all_gone)

    def _next_user_torch(
        self, uniforms: torch.Tensor, patch: Patch | None = None, t: torch.Tensor | None = None
    ) -> NextUser:
        """:meth:`_next_user` in torch: each user weighs their activity times 1 when
        ``ready``, 0 when gone and a small weight between sessions (:meth:`_presence`)."""
        ready, gone = self._presence(patch, t)
        weight = self.activity * torch.where(ready, 1.0, torch.where(gone, 0.0, _GAP_WEIGHT))
        u = self._draw_by_weight(weight, uniforms).squeeze(1)
        return NextUser(u, pick(ready, u), gone.all(dim=1))

    def _draw_by_weight(self, weight: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Indices ``[N, X]`` drawn in proportion to ``weight`` [N, M] (non-negative, some
        positive) by inverse transform of ``uniforms`` [N, X] in [0, 1). Compiled, the exact
        branchless search fuses with its neighbours, where ATen's ``searchsorted`` is an
        opaque call that splits the fused loops (1.03x at 4,096 markets for the arrival);
        eager, ATen's is faster. Both give the same indices. In a graph meant for the stack
        (``_stack_graph``), and on CUDA, the prefix sums are fused adds
        (:func:`~recenv.core.indexing.row_cumsum`: the CPU's ``cumsum`` bit for bit)."""
        cdf = row_cumsum(weight, fuse=self._stack_graph)
        target = uniforms * cdf[:, -1:]
        search = search_sorted_left if self.compiled else torch.searchsorted
        return search(cdf, target).clamp(max=weight.shape[1] - 1)

    def _candidates(
        self, user_feats: torch.Tensor, block: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every market's candidates [N, A, C] (listed by catalog id), their features
        [N, A, C, T+6] and the action mask [N, A, C] (arrived by now, and the first copy of
        an item). On the CPU, one hand-written pass per market (``native``), except in a
        graph meant for the stack (see ``_stack_graph``); otherwise :meth:`_candidates_torch`,
        which it equals bit for bit."""
        index = self._list_index(user_feats, block)
        if self._native_in_step:
            return self._candidates_native(index)
        return self._candidates_torch(index)

    def _candidates_native(
        self, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_candidates_torch` as the hand-written kernel ``recenv::candidates``."""
        cfg, cat = self.config, self.catalog
        topic, pop, fresh = (ix.contiguous() for ix in index)
        return torch.ops.recenv.candidates(
            cat.head,
            cat.by_topic,
            topic,
            cat.by_pop,
            pop,
            cat.by_arrival,
            fresh,
            cat.item_rows,
            self.item_stats.view(-1, 3),
            self.episode,
            self.t,
            self._log1p_counts,
            cfg.num_topics + 6,
            cfg.stats_size,
            float(cfg.horizon),
        )

    def _list_index(
        self, user_feats: torch.Tensor, block: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each request retrieves: flat positions [N, A, n] into ``by_topic``,
        ``by_pop`` and ``by_arrival`` (each read flat) for the interest-matched, popular and
        fresh candidates (``n`` may be 0). Positions are skewed toward each list's head;
        topics are drawn in proportion to the user's observable (noisy) interests. Never
        scores the catalog."""
        cfg, cat = self.config, self.catalog
        N, A, T = self.num_envs, cfg.num_agents, cfg.num_topics
        ni, npop, nf = self._n_interest, self._n_popular, self._n_fresh
        agents = self._agent_ids[None, :, None]
        uraw = block[:, self._block["position"]].view(N, A, ni + npop + nf)
        upos = uraw[:, :, : ni + npop].pow(cfg.retrieval_skew)  # skewed toward list heads
        # A source with no candidates reads nowhere (an empty index).
        topic_ix = pop_ix = fresh_ix = torch.zeros(N, A, 0, dtype=torch.int64, device=self.device)
        if ni:
            mass = user_feats[:, :T].clamp(min=0.0) + 1e-3
            topic = self._draw_by_weight(mass, block[:, self._block["topic"]]).view(N, A, ni)
            bucket = agents * T + topic  # [N, A, ni] row of by_topic viewed as [A*T, M]
            lens = cat.by_topic_len.view(-1).take(bucket)
            pos = torch.minimum((upos[:, :, :ni] * lens).long(), lens - 1)
            topic_ix = bucket * cat.by_topic.shape[2] + pos
        if npop:
            lens = cat.by_pop_len[None, :, None]
            pos = torch.minimum((upos[:, :, ni:] * lens).long(), lens - 1)
            pop_ix = agents * cat.by_pop.shape[1] + pos
        if nf:
            hi = self._arrived_by.index_select(1, self.t.long()).T  # [N, A] arrived so far
            lo = (hi - cfg.fresh_window).clamp(min=0)
            pos = lo[:, :, None] + (uraw[:, :, ni + npop :] * (hi - lo)[:, :, None]).long()
            pos = torch.minimum(pos, (hi - 1)[:, :, None])
            fresh_ix = agents * cat.by_arrival.shape[1] + pos
        return topic_ix, pop_ix, fresh_ix

    def _candidates_torch(
        self, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_candidates` in torch, from the list positions of :meth:`_list_index`:
        the agent's K most popular items (so K valid candidates always exist) and the list
        entries, listed by catalog id, every copy of an item after the first masked, as are
        items not yet arrived (whose rows are read anyway)."""
        cfg, cat = self.config, self.catalog
        N, A, C, K = self.num_envs, cfg.num_agents, cfg.num_candidates, cfg.slate_size
        parts = [cat.head.unsqueeze(0).expand(N, A, K)]
        for lst, ix in zip((cat.by_topic, cat.by_pop, cat.by_arrival), index, strict=True):
            if ix.shape[2]:
                parts.append(lst.view(-1).take(ix).long())
        items = torch.cat(parts, dim=2)  # [N, A, C]
        # Candidates are listed by catalog id: unrelated to popularity or retrieval source, and
        # the same sort finds duplicates (every copy after the first is masked).
        # Compiled, a sorting network fuses into one loop (8,192 rows of 20: 2.7 -> 0.8 ms);
        # eager, torch.sort. Both give the exact sorted values.
        items = sort_by_network(items) if self.compiled else items.sort(dim=2).values
        dup = torch.cat(
            [
                torch.zeros_like(items[:, :, :1], dtype=torch.bool),
                items[:, :, 1:] == items[:, :, :-1],
            ],
            dim=2,
        )
        feats, arrived = self._candidate_features(items.view(N, A * C))
        return items, feats.view(N, A, C, -1), arrived.view(N, A, C) & ~dup

    def _stamp(self) -> torch.Tensor:
        """Each market's episode as the item counters' int32 stamp ``[N]``. Written and
        compared in this form everywhere (torch and native): the count wraps at 2**31 and
        still matches its stamps; a row left untouched for exactly 2**32 episodes would read
        as current."""
        return self.episode.to(torch.int32)

    def _item_stat_rows(
        self, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For ``items`` [N, X]: the flat row index into ``item_stats.view(-1, 3)`` and the
        counter slot within the market's rows (both [N, X]), and this episode's (exposures,
        clicks) ``[N, X, 2]``; stale rows read as zero."""
        W = self.config.stats_size
        slot = items if W >= self.config.num_items else items % W
        flat = self._arange[:, None] * W + slot
        stats = rows(self.item_stats.view(-1, 3), flat)  # [N, X, 3]
        current = stats[:, :, :1] == self._stamp()[:, None, None]
        return flat, slot, torch.where(current, stats[:, :, 1:], 0)

    def _build_obs(
        self, row: torch.Tensor, user_feats: torch.Tensor, feats: torch.Tensor
    ) -> ObsParts:
        """The observation parts: user features [N, T+2], history [N, A, T+4] and the
        candidates' features ``feats`` [N, A, C, T+6]."""
        cfg, L = self.config, self.layout
        N, A = self.num_envs, cfg.num_agents
        last = row[:, L.last_visit]
        since = torch.where(last < 0, 1.0, ((self.t - last) / cfg.horizon).clamp(max=1.0))
        hist = torch.cat(
            [row[:, L.history].view(N, A, L.history_width), since[:, None, None].expand(N, A, 1)],
            dim=2,
        )  # [N, A, T+4]
        return user_feats, hist, feats

    def _candidate_features(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[N, X, T+6]`` of the candidates ``items`` [N, X] (static features, then
        log1p of this episode's clicks and exposures, then the age) and whether each has
        arrived by now ``[N, X]``."""
        cfg = self.config
        # One gather of each candidate's features (static ones, then the arrival step in the
        # first of three per-request slots), then the three slots filled.
        if self._separate_gathers:
            fixed = rows(self.catalog.item_rows, items, separate=True)[:, :, self._item.features]
        else:
            fixed = rows(self.catalog.item_rows[:, self._item.features], items)  # [N, A*C, T+6]
        S = self._item.arrival  # the first of the three slots
        _, _, counts = self._item_stat_rows(items)
        # log1p of the counts by table lookup: counts are small integers (at most P per step),
        # and the gather runs in the same scalar loop as the counter lookup, where a libm
        # log1p per element was the costliest part of building observations.
        seen = self._log1p_counts.take(counts.flip(2).long())  # clicks, exposures
        arrival = fixed[:, :, S]  # the arrival step, until the slot is filled
        arrived = arrival <= self.t[:, None]
        age = (self.t[:, None] - arrival).clamp(min=0) / cfg.horizon
        if self.compiled:
            # Elementwise selection: one write of the [N, A*C, T+6] tensor, where a
            # concatenation or slot writes make inductor write it block by block.
            col = self._feature_column
            feats = torch.where(
                col < S,
                fixed,
                torch.where(
                    col == S,
                    seen[:, :, :1],
                    torch.where(col == S + 1, seen[:, :, 1:], age[:, :, None]),
                ),
            )
        else:
            # Eager, the broadcast selections cost ~10 ms each at 4,096 markets; the gather
            # is a fresh tensor, so its three slots are overwritten in place.
            feats = fixed
            feats[:, :, S + 2] = age  # before the arrival step in slot S is overwritten
            feats[:, :, S : S + 2] = seen
        return feats, arrived

    # ------------------------------------------------------------------------------------
    # One request: show, choose, respond, update
    # ------------------------------------------------------------------------------------
    def _interact(
        self, slate: torch.Tensor, valid: torch.Tensor, live: torch.Tensor
    ) -> dict[str, Any]:
        """One request: page, choice, response, dynamics, rewards and episode ends, and
        what the item counters count (``counted``). Reads state (the clocks already advanced),
        writes none."""
        cfg, cat, L, n, u = self.config, self.catalog, self.layout, self._arange, self.user
        N, A, K = self.num_envs, cfg.num_agents, cfg.slate_size
        P = A * K
        block = self._step_block()
        items = self.cand.gather(2, slate)  # [N, A, K]
        row = cell(self.users, n, u)

        # What the user sees.
        on_page: torch.Tensor | bool
        served: torch.Tensor | None
        if cfg.topology == "platform_choice":
            logits = torch.cat(
                [
                    cfg.loyalty_weight * row[:, L.loyalty],
                    torch.full((N, 1), cfg.leave_utility, dtype=torch.float32, device=self.device),
                ],
                dim=1,
            )
            score = logits + rng.gumbel(block[:, self._block["platform"]])
            # Compiled, elementwise compares (the same index; see sample_choice).
            platform = first_argmax(score) if self.compiled else score.argmax(dim=1)
            platform = torch.where(live, platform, A)  # index A = visits no platform
            on_page = self._agent_of[None, :] == platform[:, None]
            position = self._slot_of.expand(N, P)
            served = self._agent_ids[None, :] == platform[:, None]
        else:
            platform = torch.full((N,), -1, dtype=torch.int64, device=self.device)
            on_page = True
            position = self._page_position()
            served = None
        visible = valid.view(N, P) & on_page
        page = items.view(N, P)

        # One gather of each page item's whole row (topics, embedding, quality, price, length,
        # novelty): two cache lines per item where separate attribute tables cost six.
        it = self._item
        item = rows(cat.item_rows, page, separate=self._separate_gathers)  # [N, P, R]
        topics = item[:, :, it.topics]  # [N, P, T]
        const = self._constants()
        terms = item_utility_terms(
            cfg,
            row[:, L.interest],
            row[:, L.boredom],
            const.taste,
            const.price_sensitivity,
            topics,
            item[:, :, it.embed],
            item[:, :, it.quality],
            item[:, :, it.price],
            self._position_cost.take(position),
        )
        utility = terms.total
        probs = logit_probabilities(utility, visible, cfg.no_click_utility, cfg.temperature)
        # The page entry chosen, [N]; index P = no click.
        choice = sample_choice(probs, block[:, self._block["choice"]], self.compiled)
        clicked = (choice < P) & live
        c = choice.clamp(max=P - 1)

        # [N, P, ...] -> [N, ...] at the chosen entry; compiled, by exact selects.
        def at_c(x: torch.Tensor) -> torch.Tensor:
            return pick_by_select(x, c) if self.compiled else pick(x, c)

        item_c = at_c(page)
        chosen = at_c(item)  # [N, R]
        chosen_u = torch.where(clicked, at_c(utility), 0.0)

        rb = block[:, self._block["response"]]
        gauss = rng.box_muller(rb[:, 0], rb[:, 1])
        value, time_spent, fit = respond(
            cfg, clicked, chosen_u, chosen[:, it.length], chosen[:, it.price], gauss, rb[:, 2]
        )

        # Each agent's outcome.
        chosen_agent = torch.where(clicked, at_c(self._agent_of.expand(N, P)), -1)
        won = chosen_agent[:, None] == self._agent_ids[None, :]  # [N, A]
        vis_slate = visible.view(N, A, K)
        if served is None:
            served = vis_slate.any(2)
        vis_f = vis_slate.float()
        n_vis = vis_f.sum(2)
        # Compiled, the form without the similarity matrix fuses into one loop (the matrix,
        # a bmm then, was an opaque call splitting the fused loops: 1.09x at 4,096 markets);
        # eager keeps the matrix form (the metric's definition, to rounding the same).
        ild = intra_list_diversity_by_sums if self.compiled else intra_list_diversity
        diversity = ild(topics.view(N, A, K, -1), vis_slate)
        novelty = item[:, :, it.novelty].view(N, A, K) / self._log_items
        long_tail = (novelty * vis_f).sum(2) / n_vis.clamp(min=1)
        wonf = won.float()

        # The user's dynamics, written back only in live markets.
        shown_topics = (topics * visible[:, :, None]).sum(1) / visible.sum(1, keepdim=True).clamp(
            min=1
        )
        new_row = after_request(
            cfg,
            L,
            row,
            self.t,
            clicked,
            chosen[:, it.topics],
            shown_topics,
            fit,
            time_spent,
            served,
            won,
            value,
            n_vis / K,
            block[:, self._block["dynamics"]],
        )
        # Episode accumulators.
        choice_of = served.float() * live[:, None] if cfg.topology == "platform_choice" else wonf
        shown_any = vis_f.amax(2)
        acc = torch.stack(
            [
                clicked.float(),
                value,
                (diversity * shown_any).sum(1) / shown_any.sum(1).clamp(min=1),
                (novelty * vis_f).sum((1, 2)) / vis_f.sum((1, 2)).clamp(min=1),
            ],
            dim=1,
        )

        chosen_terms = {
            name: torch.where(clicked, at_c(getattr(terms, name)), 0.0) for name in UTILITY_TERMS
        }
        chosen_terms["total"] = chosen_u
        new_row = torch.where(live[:, None], new_row, row)
        rewards = (
            agent_rewards(
                cfg, wonf * value[:, None], wonf * chosen_u[:, None], diversity, long_tail
            )
            * live[:, None]
        )
        t = self.t + live
        # Every user churned is a terminal state even on the horizon's last step: terminated
        # wins there (a learner must not bootstrap it), and the two flags stay exclusive.
        # The next arrival, drawn here where the episode-end test reads the users' status
        # (one pass over it a step; _arrival takes it).
        arrival = self._next_user(block[:, self._block["arrival"]], (u, new_row), t)
        terminated = live & arrival.all_gone
        truncated = live & (t >= cfg.horizon) & ~terminated
        return {
            "block": block,
            "new_row": new_row,
            "rewards": rewards,
            "t": t,
            "terminated": terminated,
            "truncated": truncated,
            "counted": (page, visible, item_c, clicked),
            "acc_choices": choice_of,
            "acc": acc,
            "shown": torch.where(vis_slate, items, -1),
            "chosen_agent": chosen_agent,
            "chosen_slot": torch.where(clicked, at_c(self._slot_of.expand(N, P)), -1),
            "chosen_item": torch.where(clicked, item_c, -1),
            "clicked": clicked,
            "value": value,
            "platform": platform,
            "utility": chosen_terms,
            "probs": probs,
            "arrival": arrival,
        }

    def _count_exposures(
        self, page: torch.Tensor, visible: torch.Tensor, item_c: torch.Tensor, clicked: torch.Tensor
    ) -> None:
        """Add one request to the item counters, in place: the page ``page`` [N, P] with
        ``visible`` [N, P] exposures, and the chosen slot's item ``item_c`` [N], clicked or
        not (``clicked`` [N]). On the CPU one hand-written pass per market (``native``),
        except in a graph meant for the stack (see ``_stack_graph``); otherwise
        :meth:`_count_exposures_torch`, whose table it leaves bit for bit."""
        if self._native_in_step:
            torch.ops.recenv.count_exposures(
                self.item_stats.view(-1, 3),
                self.episode,
                page.contiguous(),
                visible.contiguous(),
                item_c.contiguous(),
                clicked.contiguous(),
                self.config.stats_size,
                self.config.num_items,
            )
        else:
            self._count_exposures_torch(page, visible, item_c, clicked)

    def _count_exposures_torch(
        self, page: torch.Tensor, visible: torch.Tensor, item_c: torch.Tensor, clicked: torch.Tensor
    ) -> None:
        """:meth:`_count_exposures` in torch: the new rows ``[N*(P+1), 3]`` of the page's items
        and the chosen item (this episode's stamp, exposures, clicks; stale rows of older
        episodes restart at 0), written at once (:func:`~recenv.core.indexing.put_at`).
        Entries that share a row (an item on two agents' slates, the chosen item, hashed
        slots) all get its total, so the write leaves the same counts whatever order
        duplicates are written in."""
        items = torch.cat([page, item_c[:, None]], dim=1)  # [N, P+1]
        _, slot, counts = self._item_stat_rows(items)
        zero = torch.zeros_like(visible[:, :1])
        exposed = torch.cat([visible, zero], dim=1).to(torch.int32)  # [N, P+1]
        click = torch.cat([torch.zeros_like(visible), clicked[:, None]], dim=1).to(torch.int32)
        same = (slot[:, :, None] == slot[:, None, :]).to(torch.int32)  # [N, P+1, P+1]
        added = torch.stack(
            [(same * exposed[:, None, :]).sum(2), (same * click[:, None, :]).sum(2)], 2
        ).to(torch.int32)  # (sums of int32 are int64)
        stamp = self._stamp()[:, None, None].expand(-1, items.shape[1], 1)
        new = torch.cat([stamp, counts + added], dim=2).view(-1, 3)
        market = self._arange[:, None].expand_as(slot)
        put_at(self.item_stats, (market.reshape(-1), slot.reshape(-1)), new, self.compiled)
