"""Counter-based random numbers: every draw is a pure function of (market key, counter, stream,
index).

Why not one ``torch.Generator`` for the batch? A shared generator makes market ``n``'s numbers
depend on how many markets share the batch, so batched markets could never equal single markets
with matching seeds. Instead, each market gets a 64-bit key, derived once from its seed; every
draw inside a step hashes (key, the market's step counter, a stream id, the element index). This
is the design of Philox in cuRAND and of JAX's ``threefry``: a market's trajectory is the same
alone, in a batch of 16,384, on CPU or on CUDA, and no Python loop over markets is needed.

Keys and block prefixes are 64 bits, two 32-bit lanes packed in one int64 (see :func:`pack`).
With 32-bit prefixes, 2^32 blocks exist in all: a batch of 4,096 markets over 2,000 steps drew
~7,800 pairs of identical blocks in different markets, and a run of 2^32 market-steps (86 s at
50 M env-steps/s) reuses blocks throughout; two seeds could also share one key. Now a seed's key
is a bijection of the seed (distinct seeds, distinct keys), a key's prefixes a bijection of the
counter, and two blocks coincide only when 64 bits do.

The mixers are the public-domain "lowbias32" integer hash (two xorshift-multiply rounds),
combined in a three-round Feistel network (a bijection of the two lanes whatever the round
function), and murmur3's fmix32 for each number. They run in int64 holding 32-bit values, or in
int32 whose products wrap; only the low 32 bits are kept, so results are identical on every
device.

Seeds chosen by the user are the only entropy; ``seed=None`` draws one from a ``torch.Generator``
seeded from the OS (see :func:`fresh_seed`).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_INV24 = 1.0 / float(1 << 24)
_INV23 = 1.0 / float(1 << 23)

# Stream ids: one per kind of block, so two blocks never share numbers.
STREAM_STEP = 1  # everything a step draws: choice, response, dynamics, arrival, retrieval
STREAM_USER = 2  # a user's constants for one episode (interest, taste, noise, ...)
STREAM_POPULATION = 3  # a market's fixed user traits (activity rates)


def _signed32(c: int) -> int:
    """A 32-bit constant as the int32 with the same bits."""
    return c - (1 << 32) if c >= 1 << 31 else c


# lowbias32's second multiplier as a signed 32-bit value: the same low 32 bits of every
# product, which stays within int64 (|x * m| < 2^63 for x < 2^32), where 0x846CA68B itself
# could pass 2^63: signed overflow, undefined in the C++ a compiled step runs (see uniforms).
_LOWBIAS2 = _signed32(0x846CA68B)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding values in [0, 2^32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _LOWBIAS2) & _MASK32
    x = x ^ (x >> 16)
    return x


_TWO31 = 1 << 31
_TWO32 = 1 << 32


def lanes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The low and high 32-bit lanes (int64 values in ``[0, 2^32)``) of packed int64 values."""
    return x & _MASK32, (x >> 32) & _MASK32


def pack(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Two lanes in ``[0, 2^32)`` as one int64 with those bits (``hi`` taken as signed, so the
    product stays inside int64: no overflow, which compiled C++ would leave undefined)."""
    return (((hi + _TWO31) & _MASK32) - _TWO31) * _TWO32 + lo


def _feistel(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Three Feistel rounds on two 32-bit lanes, packed: a bijection of ``(left, right)``."""
    right = right ^ hash32(left ^ 0x6A09E667)
    left = left ^ hash32(right ^ 0xBB67AE85)
    right = right ^ hash32(left ^ 0x3C6EF372)
    return pack(left, right)


def seed_to_key(seed: torch.Tensor) -> torch.Tensor:
    """Market keys ``[...]`` (packed 64 bits) from int64 seeds ``[...]``: a bijection, so
    distinct seeds always give distinct keys, and neighbouring seeds unrelated ones."""
    lo, hi = lanes(seed)
    return _feistel(lo ^ _GOLDEN, hi)


def prefix(key: torch.Tensor, counter: torch.Tensor, stream: int) -> torch.Tensor:
    """Per-market prefix of one block: ``[N]`` keys and counters -> ``[N]`` packed int64.

    For one key and stream, distinct counters give distinct prefixes (the counter enters both
    lanes by a bijection, golden-ratio multiplication of its low word being odd)."""
    k_lo, k_hi = lanes(key)
    c_lo, c_hi = lanes(counter)
    left = k_lo ^ (c_lo * _GOLDEN_SIGNED & _MASK32)  # signed constant: no int64 overflow
    right = k_hi ^ c_hi ^ (stream * 0x85EBCA6B & _MASK32)
    return _feistel(left, right)


def split(pre: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Prefixes of sub-blocks: packed ``pre`` and int64 ``index`` (broadcast) -> packed int64;
    distinct indices of one prefix give distinct results (as :func:`prefix`'s counter)."""
    lo, hi = lanes(pre)
    return _feistel(lo ^ (index.long() * 0x632BE5AB & _MASK32), hi ^ 0x510E527F)


_FMIX1 = _signed32(0x85EBCA6B)
_FMIX2 = _signed32(0xC2B2AE35)
_GOLDEN_SIGNED = _signed32(_GOLDEN)
_INDEX_BITS = 0x7FFFFFFF  # covers every index of a block (see weyl)


# Devices whose compiled code may fold the Weyl product into index arithmetic: inductor's
# C++, where index expressions are int64 and take any constant (see weyl).
FOLD_WEYL_ON = frozenset({"cpu"})


def weyl(width: int, device: torch.device) -> torch.Tensor:
    """The Weyl sequence ``[width]`` int64: index times the golden constant, exact in int64
    (only its low 32 bits are used).

    Compiled, inductor folds ``arange * c`` into index arithmetic. In its C++ (the CPU) that
    is the fastest form, and int64 index expressions hold any constant. In Triton (CUDA) the
    index is int32 and a literal past int32 beside it is refused ("Scalar 2654435769 is out
    of range for type int32": every compiled CUDA step failed to build on the first GPU
    lent, torch 2.11), the block's slice offsets folded in too (``-6562126108 +
    -1640531527 * x1``). There the index goes through a bitwise and (an identity, as width
    < 2^31), where inductor's index propagation stops (it knows +, -, *, //, %, min, max),
    so the product is a plain int64 multiplication of values, by the golden constant as a
    signed 32-bit value: the same low 32 bits, so the same numbers."""
    idx = torch.arange(width, device=device, dtype=torch.int64)
    if device.type in FOLD_WEYL_ON:
        return idx * _GOLDEN
    return (idx & _INDEX_BITS) * _GOLDEN_SIGNED


def uniforms(pre: torch.Tensor, width: int, dtype=torch.float32) -> torch.Tensor:
    """A block of uniforms in (0, 1), ``[N, width]``, from an ``[N]`` packed prefix (23 bits).

    Callers draw everything a step needs as one block and slice it: a handful of tensor ops
    instead of a handful per draw, which is what keeps one market's step cheap.

    SplitMix-style: the prefix's low lane plus a Weyl sequence over the index, through
    murmur3's fmix32 (full avalanche); the result xor the high lane through fmix32 again, so
    two blocks share a number only where both lanes agree (one 32-bit lane alone would give
    2^32 blocks in all, the lanes' blocks overlapping when their Weyl starts lie within a
    width). It runs in int32, whose multiplication wraps (two's complement) on every torch
    backend, with logical shifts done as arithmetic shifts plus a mask; the bits equal the
    unsigned 32-bit algorithm.

    Compiled, those wrapping products are signed C++ arithmetic, where overflow is undefined:
    harmless on values the compiler cannot know (the hashed bits), wrong where it can prove
    the overflow (a constant times the loop index). Products of the index stay in int64.
    """
    # The Weyl sum in int64 (exact: |sum| < 2^32 + width * 2^32), then its low 32 bits as int32.
    # Not ``arange(int32) * golden`` wrapping in int32: inductor folds that product into
    # ``Vectorized<int32_t>::arange(base, step)``, whose C++ (``base + 2 * step``) overflows
    # a signed int for this constant step. Signed overflow is undefined in C++, and g++ -O3
    # dropped the vectorised stores of the block it proved to overflow: compiled steps at 24
    # topics read uninitialised memory (NaN noise, wrong candidates). Every product here fits
    # its type; the int32 multiplications below run on values, never on the loop index.
    pre = pre.long()
    idx = weyl(width, pre.device)
    x = _fmix32(((pre[:, None] + idx) & _MASK32).to(torch.int32))
    high = ((pre >> 32) & _MASK32).to(torch.int32)
    x = _fmix32(x ^ high[:, None])
    # 23 bits: v * 2^-23 + 2^-24 = (2v + 1) * 2^-24 is exact in float32, so the result lies
    # in [2^-24, 1 - 2^-24]: never 0 or 1 (gumbel and log rely on it).
    return ((x >> 9) & 0x7FFFFF).to(dtype) * _INV23 + _INV24


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's fmix32 on int32 (wrapping products, logical shifts as masked arithmetic)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _FMIX1
    x = x ^ ((x >> 13) & 0x7FFFF)
    x = x * _FMIX2
    return x ^ ((x >> 16) & 0xFFFF)


def box_muller(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Standard normals from two equally shaped blocks of uniforms."""
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)


def normals(u: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` standard normals ``[N, count]`` from a block of ``2 * ceil(count / 2)``
    uniforms ``u``: each pair gives two normals (Box-Muller's cosine and sine)."""
    m = (count + 1) // 2
    r = torch.sqrt(-2.0 * torch.log(u[:, :m]))
    theta = 2.0 * torch.pi * u[:, m : 2 * m]
    return torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)[:, :count]


def gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(u))


def fresh_seed(generator: torch.Generator | None = None) -> int:
    """A 63-bit seed from a torch.Generator (OS-seeded when none is given)."""
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())
