// recenv: which of a market's W item counters an item uses, shared by the kernels that read
// and write the counters (candidates.cpp, counters.cpp).
//
// Item i uses counter i when the catalog has no more items than counters (W >= I), else
// counter i % W, as the torch forms compute it (BatchedMarket._count_exposures_torch). The
// remainder is taken without a division: a 64-bit integer division costs tens of cycles and
// the candidates kernel takes two per candidate, which was ~0.2 ms of a 1,024-market step with
// 10^6 items. Lemire, Kaser & Kurz, "Faster remainder by direct computation" (2019): for
// 32-bit a and d >= 1, with c = floor((2^64 - 1) / d) + 1 (mod 2^64),
// a % d == ((c * a mod 2^64) * d) >> 64 exactly. Wider ids (never: the retrieval lists hold
// int32) fall back to the division.
#pragma once

#include <cstdint>

namespace recenv {

class CounterSlot {
 public:
  CounterSlot(int64_t stats_size, int64_t num_items)
      : w_(stats_size),
        hashed_(stats_size < num_items),
        narrow_(num_items <= INT64_C(0xFFFFFFFF) && stats_size <= INT64_C(0xFFFFFFFF)),
        c_(UINT64_MAX / static_cast<uint64_t>(stats_size > 0 ? stats_size : 1) + 1) {}

  // The counter of ``item`` in [0, num_items).
  int64_t operator()(int64_t item) const {
    if (!hashed_) return item;
    if (!narrow_) return item % w_;
    const uint64_t low = c_ * static_cast<uint64_t>(item);
    return static_cast<int64_t>(
        (static_cast<unsigned __int128>(low) * static_cast<uint64_t>(w_)) >> 64);
  }

 private:
  int64_t w_;
  bool hashed_;
  bool narrow_;
  uint64_t c_;
};

}  // namespace recenv
