"""Configuration of a market: one frozen dataclass, validated on construction.

Every field carries a one-line ``help`` in its metadata; the experiment runner turns these into
``--help`` text, so the dataclass is the single source of truth for what can be configured.
Unknown keys are rejected by :meth:`MarketConfig.from_kwargs` with the list of valid ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import operator
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

TOPOLOGIES = ("shared_page", "platform_choice")
REWARD_MODES = ("competitive", "cooperative", "mixed")
OWNERSHIPS = ("partition", "shared")
INVALID_SLATE_POLICIES = ("raise", "repair")
PAGE_ORDERS = ("rotating", "fixed")
RESPONSES = ("engagement", "watch_time", "listen", "purchase")
# The choice's logits are utility / temperature in float32: at 1e-3 they stay finite for any
# |utility| up to 3.4e35, and a utility gap of 0.1 is already odds of e**100 (the choice is
# an argmax), so a lower temperature changes nothing but overflows into NaN probabilities.
# The utility itself is bounded by MAX_UTILITY_SCALE below.
MIN_TEMPERATURE = 1e-3
# What may scale the utility: each of these fields' magnitude is at most MAX_UTILITY_SCALE.
# The utility of a page entry (recenv.core.choice.item_utility_terms) is
#   interest_weight * interest.topics   interest and topics lie on the simplex: <= 1
#   + taste_weight * taste.embed        |.| <= |taste| |embed| <= 2G * G (generated catalog)
#   + quality_weight * quality          |quality| <= quality_std * G
#   - boredom_weight * boredom.topics   boredom <= horizon * (boredom_growth +
#                                       boredom_exposure) per topic (no decay credited)
#   - s_u * price                       s_u <= 2 * price_sensitivity,
#                                       price <= price_scale * exp(0.6 G)
#   - position_bias * log2(1 + p)       p < A * K < 2**31: log2 <= 31
# against no_click_utility (also divided by the temperature); the platform's logits
# (platform_choice) are loyalty_weight * loyalty (|loyalty| <= 3) and leave_utility. G bounds
# a standard normal the market draws: Box-Muller on uniforms of at most 53 bits gives
# |z| <= sqrt(2 * 53 * ln 2) = 8.6 (G = 9 here). With every scale at 1e6 and horizon at its
# 2**24, the boredom term dominates: 1e6 * 2**24 * 2e6 = 3.4e19, and the whole utility is below
# 3.5e19 (quality 9e12, price 4.4e14, taste 1.6e8, position 3.1e7, interest and no-click 1e6).
# Divided by MIN_TEMPERATURE it is below 3.5e22 in magnitude: every logit, and every sum or
# difference of two of them (softmax subtracts the largest), is finite in float32 (max 3.4e38)
# with 16 orders of magnitude to spare, which also covers the data-dependent terms of a
# catalog fitted on a log (FromLog-v0's ALS factors and rating scores are O(1)). Unbounded,
# interest_weight=1e36 at temperature 1e-3 gave logits of inf and NaN choice probabilities,
# quality_std=1e38 infinite item qualities, boredom_growth=1e38 infinite boredom (inf * 0
# = NaN in the utility's dot product). Realistic values are O(1) (the presets' largest is
# FromLog's taste_weight 6); prices in small currency units stay far within 1e6 too.
MAX_UTILITY_SCALE = 1e6
# field -> the lower end of its allowed interval (the upper is MAX_UTILITY_SCALE).
UTILITY_SCALES = {
    "interest_weight": -MAX_UTILITY_SCALE,
    "taste_weight": -MAX_UTILITY_SCALE,
    "quality_weight": -MAX_UTILITY_SCALE,
    "boredom_weight": -MAX_UTILITY_SCALE,
    "price_sensitivity": 0.0,
    "position_bias": 0.0,
    "no_click_utility": -MAX_UTILITY_SCALE,
    "loyalty_weight": 0.0,
    "leave_utility": -MAX_UTILITY_SCALE,
    "quality_std": 0.0,
    "price_scale": 0.0,
    "boredom_growth": 0.0,
    "boredom_exposure": 0.0,
}
# float32's smallest normal number: state() divides by session_budget in float32, where a
# smaller budget loses its precision or rounds to 0 (and 0 / 0 is NaN).
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
# The scales of what a step computes besides the utility: item lengths, session budgets, the
# noise on engagement and on what agents observe, and the reward's optional terms. Each is at
# most MAX_VALUE_SCALE (their lower ends are checked apart: >= 0, or > 0). With G = 9 as above:
#   item length        mean_item_length * exp(0.5 G)   <= 9e7  (a click's value is at most
#                      it; an episode's engagement, 2**24 of them, <= 1.5e15)
#   session budget     session_budget * exp(0.5 G)     <= 9e7  (state() holds budget / it)
#   engagement jitter  exp(s G - s**2 / 2)             s**2 / 2 <= 5e11 (finite in float32)
#   user features      interest + feature_noise * G    <= 1e7
#   observed quality   quality + quality_noise * G     <= 2e7
#   reward             value (a length, or a price: <= 2.2e8 above) + welfare_weight *
#                      utility (<= 3.5e19 above) + diversity_weight * diversity (<= 1) +
#                      fairness_weight * long tail (<= 40) <= 3.6e25 a step, 6e32 over an
#                      episode's 2**24 steps (the episode return)
# all finite in float32. Unbounded, each reached inf or NaN: mean_item_length=3e38 infinite
# lengths (observed) and NaN rewards (0 * inf for the agents whose item was not clicked),
# 1e37 an infinite episode engagement; session_budget=3e38 an infinite state(); engagement_
# noise=3e38 NaN engagement and rewards (s G = inf, minus s**2 / 2 = inf); feature_noise and
# quality_noise=3e38 infinite observations; fairness_weight=3e38 infinite rewards, NaN with
# reward_mode='mixed' and team_weight=1 (0 * inf). Realistic values are O(1).
MAX_VALUE_SCALE = 1e6
VALUE_SCALES = (
    "mean_item_length",
    "session_budget",
    "engagement_noise",
    "feature_noise",
    "quality_noise",
    "welfare_weight",
    "diversity_weight",
    "fairness_weight",
)


def shown(v: Any, width: int = 60) -> str:
    """``repr(v)`` for an error message: at most about ``width`` characters, and never an
    error itself. An int past 4,300 digits, which ``repr`` refuses to write (``ValueError:
    Exceeds the limit (4300 digits) for integer string conversion``, a message naming no
    field), reads ``<an int of 5001 digits>``; a long repr is cut to its ends (``10**400``:
    ``1000...0000000 (an int of 401 digits)``); a value whose repr fails otherwise (a tuple
    holding such an int) reads ``<a tuple that cannot be written>``. Every message of the
    configs' checks, and of ``recenv.make``/``make_vec``, writes user-given values with it."""
    big = isinstance(v, int) and not isinstance(v, (bool, np.bool_))
    try:
        text = repr(v)
    except Exception:  # an int too long to write, or a container or object holding one
        if big:
            return f"<{_int_size(v)}>"
        return f"<a {type(v).__name__} that cannot be written>"
    if len(text) <= width:
        return text
    cut = text[: width - 10] + "..." + text[-7:]
    return f"{cut} ({_int_size(v)})" if big else cut


def did_you_mean(unknown: list[str], valid: list[str]) -> str:
    """``"; did you mean 'num_agents' (for 'num_agent')?"``: the close matches of each unknown
    key among ``valid`` (difflib), or ``""`` when none is close."""
    import difflib

    guesses = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=2)
        if close:
            guesses.append(f"{' or '.join(repr(c) for c in close)} (for {key!r})")
    return f"; did you mean {', '.join(guesses)}?" if guesses else ""


def _int_size(n: int) -> str:
    """``"an int of 5001 digits"`` (``"a negative int of ..."``), without writing ``n``: its
    decimal digits from its bit length (``n`` has ``floor(log10 |n|) + 1`` digits, and
    ``2**(b - 1) <= |n| < 2**b``). Exact below 300,000 digits; beyond, the power of ten to
    compare with costs tenths of a second, so the count is ``about`` it (within one)."""
    sign = "a negative int" if n < 0 else "an int"
    n = abs(int(n))
    bits = n.bit_length()
    if bits > 1_000_000:
        return f"{sign} of about {int(bits * math.log10(2)) + 1} digits"
    digits = int(bits * math.log10(2)) + 2  # above the count even with rounding error
    while digits > 1 and n < 10 ** (digits - 1):
        digits -= 1
    return f"{sign} of {digits} digit{'s' if digits != 1 else ''}"


def _written(x: Any) -> str:
    """``str(x)`` (how an interval writes its ends: ``1e-3`` as ``0.001``, ``math.inf`` as
    ``inf``), or :func:`shown` where that fails (an int past 4,300 digits)."""
    try:
        return str(x)
    except ValueError:
        return shown(x)


def option(
    default: Any,
    help: str,
    within: tuple[float, float] | None = None,
    *,
    open_ends: tuple[bool, bool] = (False, False),
    each: type | None = None,
) -> Any:
    """A config field (of a frozen dataclass) with a one-line ``help`` (it becomes ``--help``
    text) and, for a number, the interval ``within=(lo, hi)`` it must lie in: closed unless
    ``open_ends`` excludes an end, e.g. ``within=(0.0, math.inf), open_ends=(True, True)`` for
    a positive, finite learning rate. ``each=int`` (or ``float``) makes the field a tuple of
    such numbers, each of them in ``within`` (hidden layer sizes). The config's
    ``__post_init__`` checks intervals and elements with :func:`option_errors`.

    The one field helper of the project's configs: the market's, the agents' (re-exported as
    ``agents.base.option`` for plug-ins) and the experiments'."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (immutable) as a config default")
    if each not in (None, int, float):
        raise TypeError(f"each={shown(each)} must be int, float or None")
    interval = None
    if within is not None:
        lo, hi = within
        left, right = "(" if open_ends[0] else "[", ")" if open_ends[1] else "]"
        interval = f"{left}{_written(lo)}, {_written(hi)}{right}"
    return field(
        default=default,
        metadata={
            "help": help,
            "within": within,
            "open_ends": tuple(open_ends),
            "each": each,
            "interval": interval,  # the allowed values as the error message writes them
        },
    )


_f = option


class InvalidConfig(ValueError):
    """A market config whose values break its rules (the message names each field and what
    it must be); raised by :class:`MarketConfig` on construction."""


class UnknownConfigKey(ValueError):
    """A config key the scenario does not have (the message lists the valid ones and guesses
    the meant one); a face that takes options of its own (``make``, ``make_vec``) adds them to
    the message, keeping the scenario's own in ``config_message`` (a caller with other names
    for those options, the experiments CLI, words them its own way)."""

    def __init__(self, message: str, config_message: str | None = None):
        super().__init__(message)
        self.config_message = message if config_message is None else config_message


@dataclass(frozen=True)
class MarketConfig:
    """All parameters of a market. Sizes, then retrieval, choice, response, dynamics, reward."""

    # --- sizes -----------------------------------------------------------------------------
    num_agents: int = _f(2, "A: recommender agents in the market")
    num_items: int = _f(2000, "I: items in the catalog (static, shared by all markets)")
    num_topics: int = _f(16, "T: topics items and interests are spread over")
    embed_dim: int = _f(8, "D: latent taste/embedding dimension")
    num_users: int = _f(25, "U: users in each market")
    num_candidates: int = _f(20, "C: candidates retrieved per agent per request")
    slate_size: int = _f(3, "K: items in each agent's slate (distinct candidates)")
    horizon: int = _f(200, "H: requests per episode (truncation; at most 2**24)")
    catalog_seed: int = _f(0, "seed of the static catalog (part of the scenario, not the env seed)")

    # --- catalog ---------------------------------------------------------------------------
    ownership: str = _f("partition", "who may recommend an item: 'partition' or 'shared'")
    zipf_exponent: float = _f(1.1, "long-tail exponent of the items' popularity prior")
    max_item_topics: int = _f(3, "each item carries weight on 1..max_item_topics topics")
    new_item_fraction: float = _f(0.2, "fraction of items that arrive during the episode")
    quality_std: float = _f(0.5, "spread of item quality")
    price_scale: float = _f(0.0, "mean item price (0 disables prices)")
    mean_item_length: float = _f(1.0, "mean time cost of consuming an item")
    item_stats_size: int = _f(
        4096, "per-market item counters; exact when num_items <= this, hashed beyond"
    )

    # --- retrieval (the environment plays the candidate generator) --------------------------
    # Shares of the C - K retrieved candidates; the other K are the agent's K most popular
    # items, always among the candidates (so a valid slate always exists).
    retrieval_interest: float = _f(0.5, "share of retrieved candidates matched to user features")
    retrieval_popular: float = _f(0.3, "share of retrieved candidates drawn from popular items")
    retrieval_fresh: float = _f(0.2, "share of retrieved candidates drawn from newest items")
    retrieval_skew: float = _f(2.0, "how strongly retrieval prefers the head of each list (>=1)")
    fresh_window: int = _f(
        50,
        "the 'fresh' source draws uniformly (no retrieval_skew) among the agent's this many "
        "latest items in arrival order (early on, items present from the start among them)",
    )

    # --- observation -----------------------------------------------------------------------
    feature_noise: float = _f(0.1, "std of noise on observable user features")
    feature_visible: float = _f(0.75, "probability a user's topic is observable at all")
    quality_noise: float = _f(0.3, "std of noise on observed item quality")

    # --- choice (conditional logit with a no-click option) ----------------------------------
    topology: str = _f("shared_page", "'shared_page' (one page) or 'platform_choice'")
    page_order: str = _f(
        "rotating",
        "agent blocks on a shared page: 'rotating' or 'fixed' (ignored under platform_choice)",
    )
    interest_weight: float = _f(3.0, "utility weight of topic interest match")
    taste_weight: float = _f(1.0, "utility weight of latent taste x item embedding")
    quality_weight: float = _f(1.0, "utility weight of item quality")
    boredom_weight: float = _f(2.0, "utility penalty per unit of boredom with the item's topics")
    price_sensitivity: float = _f(0.0, "mean user price sensitivity (utility per unit price)")
    position_bias: float = _f(1.0, "utility penalty x log2(1 + position) on the page")
    no_click_utility: float = _f(1.5, "utility of not clicking")
    temperature: float = _f(
        1.0,
        "logit temperature of the choice; at least 1e-3, where the choice is already an "
        "argmax, so that utility / temperature stays finite in float32",
        within=(MIN_TEMPERATURE, math.inf),
        open_ends=(False, True),
    )
    loyalty_weight: float = _f(
        3.0, "platform_choice only (ignored on a shared page): utility weight of loyalty"
    )
    leave_utility: float = _f(
        -1.0, "platform_choice only (ignored on a shared page): utility of visiting no platform"
    )

    # --- response --------------------------------------------------------------------------
    response: str = _f(
        "engagement", "response model: " + ", ".join(RESPONSES) + " (watch_time = engagement)"
    )
    engagement_noise: float = _f(0.2, "multiplicative noise on engagement")

    # --- dynamics --------------------------------------------------------------------------
    interest_drift: float = _f(0.05, "interest moves this far toward a consumed item's topics")
    boredom_growth: float = _f(0.3, "boredom added to a consumed item's topics")
    boredom_exposure: float = _f(0.02, "boredom added to topics merely shown")
    boredom_decay: float = _f(
        0.9, "multiplicative boredom decay per market step, not per visit (applied lazily)"
    )
    satisfaction_init: float = _f(0.7, "satisfaction of a new or returning user")
    satisfaction_rate: float = _f(0.1, "satisfaction step toward (fit - expectation)")
    expectation: float = _f(
        0.3,
        "fit (sigmoid of the click's utility; 0 without one) a user expects",
        within=(0, 1),  # compared with the fit, which lies in [0, 1]
    )
    loyalty_rate: float = _f(0.2, "loyalty step toward a platform's outcome - expectation")
    session_budget: float = _f(
        8.0,
        "mean time budget of a session; at least float32's smallest normal number, as "
        "state() divides by it",
        within=(FLOAT32_TINY, math.inf),
        open_ends=(False, True),
    )
    browse_cost: float = _f(0.2, "time a request costs even without a click")
    session_gap: int = _f(
        5, "steps a user stays away after a session ends: floor(gap * (0.5 + uniform))"
    )
    churn_threshold: float = _f(0.2, "a user whose satisfaction falls below this churns")
    return_prob: float = _f(
        0.02, "per-step probability that a churned user's wait ends (then drawn as any user)"
    )

    # --- reward ----------------------------------------------------------------------------
    reward_mode: str = _f("competitive", "'competitive', 'cooperative' or 'mixed'")
    team_weight: float = _f(
        0.5, "reward_mode='mixed' only (ignored otherwise): weight of the team total (own: 1 - it)"
    )
    welfare_weight: float = _f(
        0.0, "optional reward term: the clicked item's total utility (0 without a click)"
    )
    diversity_weight: float = _f(0.0, "optional reward term: intra-list diversity of own slate")
    fairness_weight: float = _f(
        0.0, "optional reward term: mean novelty (long-tail exposure) of the slate"
    )

    # --- input handling --------------------------------------------------------------------
    invalid_slate: str = _f("raise", "invalid slate: 'raise' a ValueError or 'repair' it")

    def __post_init__(self) -> None:
        errors = _validate(self)
        if errors:
            raise InvalidConfig("invalid MarketConfig: " + "; ".join(errors))

    # Derived sizes --------------------------------------------------------------------------
    @property
    def candidate_dim(self) -> int:
        """Features per candidate: topics (T), length, price, observed (noisy) quality,
        log(1 + clicks), log(1 + exposures) in this market this episode, age / H."""
        return self.num_topics + 6

    @property
    def user_dim(self) -> int:
        """Observable user features: noisy topic interests (T) + session depth + visits."""
        return self.num_topics + 2

    @property
    def history_dim(self) -> int:
        """Agent's own history with the user: decayed clicked-topic profile (T) + impressions,
        clicks, engagement (decayed), steps since last visit."""
        return self.num_topics + 4

    @property
    def state_dim(self) -> int:
        """Size of the global ``state()`` vector; see ``recenv.core.market`` for the layout."""
        T, D, A, C = self.num_topics, self.embed_dim, self.num_agents, self.num_candidates
        return 2 * T + D + 3 + A + 2 * A * C + 3 + A

    @property
    def stats_size(self) -> int:
        return min(self.num_items, self.item_stats_size)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, base: MarketConfig | None = None, **overrides: Any) -> MarketConfig:
        """Build a config from ``base`` (default: the defaults) with keyword overrides.

        Unknown keys raise ``TypeError``-free ``ValueError`` naming the key and the valid ones.
        """
        valid = cls.field_names()
        unknown = sorted(k for k in overrides if k not in valid)
        if unknown:
            raise UnknownConfigKey(
                f"unknown config key(s) {unknown} for {cls.__name__}; valid keys: {valid}"
                + did_you_mean(unknown, valid)
            )
        base = base if base is not None else cls()
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The longest episode: the market's request clock ``t`` is float32, exact to 2**24.
MAX_HORIZON = 2**24
# The largest catalog: its retrieval lists hold item ids as int32 (half the bytes of int64
# keeps twice as much of their heads in cache, read at random every step).
MAX_ITEMS = 2**31
# What a config's int and float fields must fit: torch's int64 and float32.
INT64_RANGE = (-(2**63), 2**63 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def allocation_failure(e: BaseException) -> bool:
    """Whether ``e`` says that sizes from a config cannot be held: the allocator's refusal
    (host or device memory) or a storage size that overflows int64 (a dimension of 2**63 - 1),
    as opposed to another error of the code that asked. The builders turn these into
    ``ValueError`` naming the config."""
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and (
        ("allocate" in text and "memory" in text.lower()) or "size calculation overflowed" in text
    )


@contextlib.contextmanager
def sizes_named(what: str | Callable[[], str]) -> Iterator[None]:
    """Turn an :func:`allocation_failure` inside the block into ``ValueError``: ``what`` (the
    refusal, naming the config: ``"agent 'mf': the sizes of config {...} could not be
    allocated"``), then the allocator's first line. Other errors pass through unchanged.

    ``what`` may be a function returning the text, called only on a refusal: a message that
    writes the caller's values is then not formatted before they are checked (the registry's
    wrote ``num_items=10**5000`` before the config refused it, and ``repr`` raised)."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not allocation_failure(e):
            raise
        first = str(e).splitlines()[0][:200] if str(e) else ""
        text = what() if callable(what) else what
        raise ValueError(f"{text} ({type(e).__name__}: {first}); lower the sizes") from e


def as_int(value: Any) -> int:
    """``value`` as a Python int: an int or one of numpy's integers. A bool (Python's or
    numpy's) or anything else raises ``TypeError``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{value!r} is a bool")
    return operator.index(value)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` (see :func:`as_int`) as an int in ``[low, high]`` (no upper bound when
    ``high`` is None); otherwise ``ValueError`` naming ``name`` and the allowed range."""
    try:
        v = as_int(value)
    except TypeError:
        v = None
    if v is None or v < low or (high is not None and v > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={shown(value)} must be an int {allowed}")
    return v


def field_type_errors(config: Any, *, finite: bool) -> list[str]:
    """Check each field of the (frozen) dataclass ``config`` annotated with a plain type,
    storing numpy's integers as ints and real numbers as Python floats: ``bool``, ``int``
    (not a bool; within int64), ``float`` (any real number: an int or a Fraction too; not a
    bool, not NaN; a finite value within float32's range; not infinite if ``finite``),
    ``str``, ``tuple``. One message per
    wrong field (``name=value must be ...``). Fields of other types, and a class whose
    annotations do not resolve (a plug-in's forward reference), are left unchecked. Shared
    by :class:`MarketConfig` and the agents' configs."""
    try:
        hints = typing.get_type_hints(type(config))
    except Exception:  # unresolvable annotations: nothing to check against
        return []
    errors = []
    for f in dataclasses.fields(config):
        want, v = hints.get(f.name), getattr(config, f.name)
        if want is int:
            try:
                n = as_int(v)
            except TypeError:
                errors.append(f"{f.name}={shown(v)} must be an int")
                continue
            if not INT64_RANGE[0] <= n <= INT64_RANGE[1]:  # torch cannot hold it
                errors.append(f"{f.name}={shown(v)} must be an int in [-2**63, 2**63 - 1]")
            else:
                object.__setattr__(config, f.name, n)
        elif want is float:
            x = _as_float(v)
            if x is not None and (math.isnan(x) or (finite and math.isinf(x))):
                rule = "not NaN, finite" if finite else "not NaN"
                errors.append(f"{f.name}={shown(v)} must be a number ({rule}) of type float")
            elif x is None or (math.isfinite(x) and abs(x) > FLOAT32_MAX):
                # Tensors and optimisers compute in float32, where it would overflow to inf
                # (or refuse it: "cannot be converted to type float without overflow").
                errors.append(
                    f"{f.name}={shown(v)} must lie within float32's range "
                    f"(|x| <= {FLOAT32_MAX:.3g})"
                )
            else:
                # Stored as a Python float, what torch computes with: a Fraction was kept
                # as given, and the first step raised TypeError after the market's counter
                # had moved.
                object.__setattr__(config, f.name, x)
        elif want in (bool, str, tuple) and not isinstance(v, want):
            errors.append(f"{f.name}={shown(v)} must be a {want.__name__}")
    return errors


def _as_float(v: Any) -> float | None:
    """``v`` as a Python float: NaN when it is not a real number (a bool is not), ``None``
    when it is one that no float holds (``10**400``: ``float()`` raises OverflowError)."""
    if not isinstance(v, numbers.Real) or isinstance(v, (bool, np.bool_)):
        return math.nan
    try:
        return float(v)
    except (OverflowError, ValueError, TypeError):
        return None


def option_errors(config: Any) -> list[str]:
    """What is wrong with ``config``'s :func:`option` fields that declare ``within`` or
    ``each``, one message per field naming it and its allowed values (empty when nothing
    is). A valid ``each=`` tuple is stored back normalised (numpy's ints become ints), so call
    it from ``__post_init__``, after :func:`field_type_errors`."""
    errors = []
    for f in dataclasses.fields(config):
        meta, v = f.metadata, getattr(config, f.name)
        within, each = meta.get("within"), meta.get("each")
        if each is not None:
            items = _elements(v, each)
            if items is None or (
                within is not None and not all(_inside(x, within, meta["open_ends"]) for x in items)
            ):
                allowed = f"{each.__name__}s" + (
                    f" in {meta['interval']}" if within is not None else ""
                )
                errors.append(f"{f.name}={shown(v)} must be a tuple of {allowed} ({meta['help']})")
            else:
                object.__setattr__(config, f.name, items)
        elif within is not None and not _inside(v, within, meta.get("open_ends")):
            errors.append(f"{f.name}={shown(v)} must lie in {meta['interval']} ({meta['help']})")
    return errors


def _inside(v: Any, within: tuple[float, float], open_ends: tuple[bool, bool] | None) -> bool:
    lo, hi = within
    low_open, high_open = open_ends or (False, False)
    return (lo < v if low_open else lo <= v) and (v < hi if high_open else v <= hi)


def _elements(v: Any, each: type) -> tuple | None:
    """The tuple ``v`` with each element an ``each`` (``int``: numpy's ints too, no bool,
    within int64; ``float``: any real number but bool, NaN and one past float's range, as a
    float), or ``None`` when one is not."""
    if not isinstance(v, tuple):
        return None
    out: list[int | float] = []
    for x in v:
        if each is int:
            try:
                n = as_int(x)
            except TypeError:
                return None
            if not INT64_RANGE[0] <= n <= INT64_RANGE[1]:  # as an int field: what torch holds
                return None
            out.append(n)
        else:
            x = _as_float(x)  # stored as a float, as a float field is
            if x is None or math.isnan(x):
                return None
            out.append(x)
    return tuple(out)


def _validate(c: MarketConfig) -> list[str]:
    errs = field_type_errors(c, finite=True) or option_errors(c)
    if errs:
        return errs

    def positive(*names: str) -> None:
        for n in names:
            if getattr(c, n) <= 0:
                errs.append(f"{n}={getattr(c, n)} must be > 0")

    def nonneg(*names: str) -> None:
        for n in names:
            if getattr(c, n) < 0:
                errs.append(f"{n}={getattr(c, n)} must be >= 0")

    def prob(*names: str) -> None:
        for n in names:
            if not 0.0 <= getattr(c, n) <= 1.0:
                errs.append(f"{n}={getattr(c, n)} is a probability and must be in [0, 1]")

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if getattr(c, name) not in allowed:
            errs.append(f"{name}={getattr(c, name)!r} must be one of {list(allowed)}")

    positive("num_agents", "num_items", "num_topics", "embed_dim", "num_users")
    positive("num_candidates", "slate_size", "horizon", "item_stats_size", "fresh_window")
    positive("mean_item_length", "max_item_topics")  # (temperature, session_budget: within=)
    nonneg("zipf_exponent", "quality_std", "price_scale", "feature_noise", "quality_noise")
    nonneg("boredom_growth", "boredom_exposure", "price_sensitivity", "position_bias")
    nonneg("engagement_noise", "browse_cost", "session_gap", "loyalty_weight")
    nonneg("welfare_weight", "diversity_weight", "fairness_weight")
    prob("new_item_fraction", "feature_visible", "interest_drift", "boredom_decay")
    prob("satisfaction_init", "satisfaction_rate", "loyalty_rate", "churn_threshold")
    prob("return_prob", "team_weight", "retrieval_interest", "retrieval_popular")
    prob("retrieval_fresh")
    choice("topology", TOPOLOGIES)
    choice("reward_mode", REWARD_MODES)
    choice("ownership", OWNERSHIPS)
    choice("invalid_slate", INVALID_SLATE_POLICIES)
    choice("page_order", PAGE_ORDERS)
    choice("response", RESPONSES)
    # (A negative value of a non-negative scale is nonneg()'s to name.)
    scales = [
        f"{n}={shown(v)} must lie in [{'-1e6' if lo < 0 else '0'}, 1e6]"
        for n, lo in UTILITY_SCALES.items()
        if (v := getattr(c, n)) > MAX_UTILITY_SCALE or (lo < 0 and v < lo)
    ]
    if scales:
        errs.append(
            ", ".join(scales) + ": these fields scale the choice's utility, and utility / "
            f"temperature (temperature >= {MIN_TEMPERATURE}) must stay finite in float32 "
            "(the bound: MAX_UTILITY_SCALE in recenv.core.config)"
        )
    values = [f"{n}={shown(v)}" for n in VALUE_SCALES if (v := getattr(c, n)) > MAX_VALUE_SCALE]
    if values:
        errs.append(
            ", ".join(values) + " must be <= 1e6: these fields scale item lengths, session "
            "budgets, noise and rewards, which must stay finite in float32 (the bound: "
            "MAX_VALUE_SCALE in recenv.core.config)"
        )
    if c.num_items > MAX_ITEMS:
        errs.append(
            f"num_items={c.num_items:,} must be <= {MAX_ITEMS:,} (2**31): the catalog's "
            "retrieval lists hold item ids as int32"
        )
    if c.horizon > MAX_HORIZON:  # the step clock is float32 (compared with float user steps)
        errs.append(
            f"horizon={c.horizon} must be <= {MAX_HORIZON:,} (2**24): the request clock is "
            "float32, exact to 2**24, and a longer episode would never truncate"
        )
    if not errs and c.horizon * c.num_agents * c.slate_size > 2**31 - 1:
        # An item's exposures in one episode reach horizon x (every slot of every agent).
        errs.append(
            f"horizon x num_agents x slate_size = {c.horizon * c.num_agents * c.slate_size:,} "
            "must be < 2**31: the per-episode item counters are int32"
        )
    if errs:
        return errs
    if c.slate_size > c.num_candidates:
        errs.append(
            f"slate_size={c.slate_size} > num_candidates={c.num_candidates}: "
            "a slate holds K distinct candidates, so K <= C"
        )
    if c.max_item_topics > c.num_topics:
        errs.append(f"max_item_topics={c.max_item_topics} > num_topics={c.num_topics}")
    per_agent = c.num_items if c.ownership == "shared" else c.num_items // c.num_agents
    initial = per_agent - int(per_agent * c.new_item_fraction)
    if initial < c.num_candidates:
        errs.append(
            f"each agent owns about {per_agent} items of which {initial} exist at t=0, fewer "
            f"than num_candidates={c.num_candidates}: raise num_items or lower new_item_fraction"
        )
    if c.retrieval_skew < 1.0:
        errs.append(f"retrieval_skew={c.retrieval_skew} must be >= 1")
    mix = c.retrieval_interest + c.retrieval_popular + c.retrieval_fresh
    if abs(mix - 1.0) > 1e-6:
        errs.append(
            f"retrieval_interest + retrieval_popular + retrieval_fresh = {mix:g}, must sum to 1"
        )
    if c.response == "purchase" and c.price_scale == 0:
        # A purchase pays the item's price; without prices every reward and engagement is 0
        # whatever is recommended (the first audit's run trained on a constant 0).
        errs.append(
            "response='purchase' pays the item's price, and price_scale=0 gives every item "
            "price 0 (every reward 0): set price_scale > 0 (ECommerce-v0 uses 1.0) or another "
            f"response ({', '.join(repr(r) for r in RESPONSES if r != 'purchase')})"
        )
    if c.churn_threshold >= c.satisfaction_init:
        errs.append(
            f"churn_threshold={c.churn_threshold} must be below satisfaction_init="
            f"{c.satisfaction_init}, or every new user churns at once"
        )
    return errs
