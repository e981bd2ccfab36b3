// recenv::block_uniforms, CPU: a block of counter-based uniforms per market in one pass (see
// recenv/core/native/__init__.py for the contract; the torch form is recenv.core.rng's
// prefix, split and uniforms, whose outputs this must equal bit for bit).
//
// Why hand-written: an eager step draws two blocks, and in torch each is ~40 small int64 and
// int32 ops (two or three SplitMix64 finalizers on [N], then fmix32 over [N, width]), each a
// dispatch and an allocation: ~0.29 ms of a ~2.2 ms eager step at one market, ~1.9 ms at
// 4,096 markets, where every op is a pass over the block. Compiled steps keep the torch form,
// which inductor fuses into the step's loops.
//
// The arithmetic is unsigned here (wrapping, logical shifts), which is what the torch form's
// signed ops with masked arithmetic shifts compute.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cstdint>

namespace {

constexpr uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
constexpr uint64_t kMix2 = 0x94D049BB133111EBULL;
constexpr uint64_t kGolden64 = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kSplit64 = 0xD6E8FEB86659FD93ULL;
constexpr uint64_t kStream64 = 0xBB67AE8584CAA73BULL;
constexpr uint64_t kGolden32 = 0x9E3779B9ULL;
constexpr uint32_t kFmix1 = 0x85EBCA6BU;
constexpr uint32_t kFmix2 = 0xC2B2AE35U;

inline uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= kMix1;
  z ^= z >> 27;
  z *= kMix2;
  return z ^ (z >> 31);
}

inline uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= kFmix1;
  x ^= x >> 13;
  x *= kFmix2;
  return x ^ (x >> 16);
}

at::Tensor block_uniforms(const at::Tensor& key, const at::Tensor& counter, int64_t stream,
                          const c10::optional<at::Tensor>& index, int64_t width) {
  TORCH_CHECK(key.dim() == 1 && key.scalar_type() == at::kLong && key.is_contiguous(),
              "key: contiguous int64 [N]");
  const int64_t N = key.size(0);
  TORCH_CHECK(counter.dim() == 1 && counter.size(0) == N &&
                  counter.scalar_type() == at::kLong && counter.is_contiguous(),
              "counter: contiguous int64 [N] like key");
  TORCH_CHECK(stream >= 0, "stream: a non-negative stream id");
  TORCH_CHECK(width >= 0 && width < (int64_t{1} << 31), "width: in [0, 2^31)");
  const int64_t* ix = nullptr;
  if (index.has_value()) {
    const at::Tensor& i = *index;
    TORCH_CHECK(i.dim() == 1 && i.size(0) == N && i.scalar_type() == at::kLong &&
                    i.is_contiguous(),
                "index: contiguous int64 [N] like key");
    ix = i.data_ptr<int64_t>();
  }
  at::Tensor out = at::empty({N, width}, key.options().dtype(at::kFloat));
  const uint64_t* k = reinterpret_cast<const uint64_t*>(key.data_ptr<int64_t>());
  const uint64_t* c = reinterpret_cast<const uint64_t*>(counter.data_ptr<int64_t>());
  const uint64_t salt = static_cast<uint64_t>(stream) * kStream64;
  float* o = out.data_ptr<float>();

  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      // rng.prefix, then rng.split when an index is given.
      uint64_t pre = mix64(mix64(k[n] ^ (c[n] * kGolden64)) ^ salt);
      if (ix != nullptr) pre = mix64(pre ^ (static_cast<uint64_t>(ix[n]) * kSplit64));
      // rng.uniforms: the low lane plus the Weyl sequence, xor the high lane, fmix32, then
      // 23 bits as (2v + 1) * 2^-24 (exact in float32).
      const uint64_t low = pre & 0xFFFFFFFFULL, high = pre >> 32;
      float* row = o + n * width;
      for (int64_t w = 0; w < width; ++w) {
        const uint32_t x =
            fmix32(static_cast<uint32_t>((low + static_cast<uint64_t>(w) * kGolden32) ^ high));
        row[w] = static_cast<float>(x >> 9) * 0x1p-23f + 0x1p-24f;
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("block_uniforms", &block_uniforms); }
