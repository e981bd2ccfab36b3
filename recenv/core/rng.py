"""Counter-based random numbers: every draw is a pure function of (market key, counter, stream,
index).

Why not one ``torch.Generator`` for the batch? A shared generator makes market ``n``'s numbers
depend on how many markets share the batch, so batched markets could never equal single markets
with matching seeds. Instead, each market gets a 64-bit key, derived once from its seed; every
draw inside a step hashes (key, the market's step counter, a stream id, the element index). This
is the design of Philox in cuRAND and of JAX's ``threefry``: a market's trajectory is the same
alone, in a batch of 16,384, on CPU or on CUDA, and no Python loop over markets is needed.

Keys and block prefixes are 64 bits. With 32-bit ones, 2^32 blocks exist in all: a batch of
4,096 markets over 2,000 steps drew ~7,800 pairs of identical blocks in different markets, a
run of 2^32 market-steps (86 s at 50 M env-steps/s) reuses blocks throughout, and two seeds
could share one key. Now a seed's key is a bijection of the seed (distinct seeds, distinct
keys), a key's prefixes a bijection of the counter, and two blocks coincide only when 64 bits
do.

The mixers: SplitMix64's finalizer (:func:`mix64`, a bijection of 64 bits) for keys and
prefixes, a handful of int64 operations a market each step (in eager mode the cost is the
number of operations: a Feistel network of two 32-bit lanes took three times as many and
slowed the eager PettingZoo face by 13 %); murmur3's fmix32 for each number, in int32
(:func:`uniforms`). Products wrap in two's complement on every torch backend; they are
products of hashed values, which no compiler can prove to overflow (see :func:`uniforms`),
so results are identical on every device.

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


def _signed64(c: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_MIX1 = _signed64(0xBF58476D1CE4E5B9)
_MIX2 = _signed64(0x94D049BB133111EB)
_GOLDEN64 = _signed64(0x9E3779B97F4A7C15)  # odd: counter -> counter * golden is a bijection
_SPLIT64 = _signed64(0xD6E8FEB86659FD93)  # odd, for split's index
_KEY64 = _signed64(0x6A09E667F3BCC909)
_STREAM64 = _signed64(0xBB67AE8584CAA73B)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer on int64 tensors (all 64 bits): a bijection with full avalanche.
    Logical right shifts are arithmetic shifts plus a mask; products wrap."""
    z = z ^ ((z >> 30) & 0x3FFFFFFFF)
    z = z * _MIX1
    z = z ^ ((z >> 27) & 0x1FFFFFFFFF)
    z = z * _MIX2
    return z ^ ((z >> 31) & 0x1FFFFFFFF)


def lanes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The low and high 32-bit lanes (int64 values in ``[0, 2^32)``) of int64 values."""
    return x & _MASK32, (x >> 32) & _MASK32


def seed_to_key(seed: torch.Tensor) -> torch.Tensor:
    """Market keys ``[...]`` (int64, all 64 bits) from int64 seeds ``[...]``: a bijection, so
    distinct seeds always give distinct keys, and neighbouring seeds unrelated ones."""
    return mix64(seed ^ _KEY64)


def prefix(key: torch.Tensor, counter: torch.Tensor, stream: int) -> torch.Tensor:
    """Per-market prefix of one block: ``[N]`` keys and counters -> ``[N]`` int64.

    For one key and stream, distinct counters give distinct prefixes (``counter * golden``
    is a bijection of 64 bits, the golden constant being odd; so is each step after it)."""
    salt = _signed64(stream * _STREAM64 % (1 << 64))  # a Python int: wrapped by hand
    return mix64(mix64(key ^ (counter * _GOLDEN64)) ^ salt)


def split(pre: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Prefixes of sub-blocks: ``pre`` and int64 ``index`` (broadcast) -> int64; distinct
    indices of one prefix give distinct results (as :func:`prefix`'s counter)."""
    return mix64(pre ^ (index.long() * _SPLIT64))


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


def uniforms(pre: torch.Tensor, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A block of uniforms in (0, 1), ``[N, width]``, from an ``[N]`` int64 prefix (23 bits).

    Callers draw everything a step needs as one block and slice it: a handful of tensor ops
    instead of a handful per draw, which is what keeps one market's step cheap.

    SplitMix-style: the prefix's low lane plus a Weyl sequence over the index, xor the high
    lane, through murmur3's fmix32 (full avalanche). Two blocks are the same only where both
    lanes agree: two prefixes that share the low lane give fmix32 of inputs that differ by a
    fixed xor, unrelated numbers (with one 32-bit lane there were 2^32 blocks in all, and
    blocks whose Weyl starts lay within a width overlapped). One xor an element, not a
    second fmix32: in eager mode a block costs its number of operations. It runs in int32,
    whose multiplication wraps (two's complement) on every torch backend, with logical
    shifts done as arithmetic shifts plus a mask; the bits equal the unsigned 32-bit
    algorithm.

    Compiled, those wrapping products are signed C++ arithmetic, where overflow is undefined:
    harmless on values the compiler cannot know (the hashed bits), wrong where it can prove
    the overflow (a constant times the loop index). Products of the index stay in int64.
    """
    # The Weyl sum in int64 (exact: 0 <= sum < 2^32 + width * 2^32), xor the high lane, then the
    # low 32 bits as int32.
    # Not ``arange(int32) * golden`` wrapping in int32: inductor folds that product into
    # ``Vectorized<int32_t>::arange(base, step)``, whose C++ (``base + 2 * step``) overflows
    # a signed int for this constant step. Signed overflow is undefined in C++, and g++ -O3
    # dropped the vectorised stores of the block it proved to overflow: compiled steps at 24
    # topics read uninitialised memory (NaN noise, wrong candidates). Every product here fits
    # its type; the int32 multiplications below run on values, never on the loop index.
    pre = pre.long()
    idx = weyl(width, pre.device)
    low, high = lanes(pre)
    x = _fmix32((((low[:, None] + idx) ^ high[:, None]) & _MASK32).to(torch.int32))
    # 23 bits: v * 2^-23 + 2^-24 = (2v + 1) * 2^-24 is exact in float32, so the result lies
    # in [2^-24, 1 - 2^-24]: never 0 or 1 (gumbel and log rely on it).
    return ((x >> 9) & 0x7FFFFF).to(dtype) * _INV23 + _INV24


def block(
    key: torch.Tensor,
    counter: torch.Tensor,
    stream: int,
    width: int,
    index: torch.Tensor | None = None,
    native: bool = False,
) -> torch.Tensor:
    """One block of uniforms per market, ``[N, width]`` float32: ``uniforms(prefix(key,
    counter, stream), width)``, through ``split(..., index)`` when an ``[N]`` int64 ``index``
    is given (e.g. one block per arriving user).

    ``native``: one hand-written CPU pass (``recenv::block_uniforms``, bit for bit the same;
    the caller checks that the kernels are usable). For eager steps, where the torch form is
    ~40 small ops, each a dispatch: ~0.29 ms of a ~2.2 ms eager step at one market.
    Compiled steps use the torch form, which inductor fuses into their loops."""
    if native:
        return torch.ops.recenv.block_uniforms(
            key.contiguous(),
            counter.contiguous(),
            stream,
            None if index is None else index.long().contiguous(),
            width,
        )
    pre = prefix(key, counter, stream)
    if index is not None:
        pre = split(pre, index)
    return uniforms(pre, width)


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
    """A 63-bit seed from a torch.Generator (OS-seeded when none is given; a CPU one).

    The draw names the generator's device: under ``torch.set_default_device("cuda")`` a draw
    without one went to CUDA with the CPU generator and failed, so every unseeded first
    ``reset()`` did (RLlib's env wrapper makes one when it is built)."""
    if generator is None:
        generator = torch.Generator(device="cpu")
        generator.seed()
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
