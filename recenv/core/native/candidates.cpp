// recenv::candidates, CPU: retrieval, listing and observation features of every market's
// candidates in one pass per market (see recenv/core/native/__init__.py for the contract; the
// torch form is BatchedMarket._candidates_torch, which this must equal bit for bit).
//
// Why hand-written: compiled by inductor, this part of the step is a dozen fused loops (list
// lookups, a sorting network, the duplicate mask, item rows, counters, features) whose random
// lookups wait on each cache miss in turn. Here the markets go through a two-stage pipeline:
// while market n's features are filled, market n+1's candidates are looked up and sorted and
// market n+2's list entries are prefetched; the fill itself prefetches the counter and row of
// the candidate kAhead places ahead (into market n+1 near market n's end), so the list misses
// overlap the sorting and a steady stream of counter and row misses the copying.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

// This core's L2 data cache in bytes (glibc reads it from CPUID), 1 MiB where it cannot tell.
int64_t l2_bytes() {
  static const int64_t bytes = [] {
    int64_t v = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return v > 0 ? v : static_cast<int64_t>(1) << 20;
  }();
  return bytes;
}

// Candidate lists longer than this are sorted by std::sort instead of by rank.
constexpr int64_t kRankSortMax = 64;

// How many candidates ahead of the fill their counters and rows are prefetched. Prefetched
// in one burst per market after its sort, a market's ~40 counters and ~40 rows (two lines
// each) asked for ~120 lines at once, several times the misses a core keeps in flight (~24 on
// AMD Zen 4), and the fill then waited on lines still in transit. Measured on an AMD EPYC VM
// in session 46: the compiled step at 10^6 items and 1,024 markets 1.20x faster with the rows
// streamed (ab_commits, 8 of 8 rounds ahead), then Market-v0's 4,096 markets 1.12x faster
// with the counters streamed too (6 of 6); the kernel alone (`experiments.candidates_op`)
// 2.8-3.1 -> 1.8-1.9 ms a call at 1,024 markets and 10^6 items, 6.0 -> 5.0 ms at 4,096 and
// 2,000 items. 8 and 32 ahead read like 16. The prefetches are written out in the fill: the
// rows' prefetch as a lambda also called before the first fill ran the kernel at 3.3 ms
// instead of 1.7 (not understood; measured twice).
constexpr int64_t kAhead = 16;
constexpr int kRankBits = 6;  // a list position below kRankSortMax
static_assert(kRankSortMax <= (int64_t{1} << kRankBits),
              "sort_ids keys hold a list position of up to kRankSortMax in kRankBits bits");

// Sorts the item ids c[0..C) ascending, all in [0, I). Only the values matter (equal ids are
// equal), so any sort gives torch's result. C is ~20: an insertion sort's branches on random
// ids mispredicted about every other comparison and took ~40 % of the kernel (1.55 of 3.9 ms
// at 4,096 markets). Here each id is ranked against all others: C^2 comparisons, but
// branch-free and vectorised (four int32 lanes a vector even at the SSE2 baseline). Each id is
// keyed with its position in the low kRankBits bits, so keys are unique and an id's rank is
// the number of smaller keys. `packed`: every id is below 2^25, so keys fit int32; otherwise,
// and for lists longer than kRankSortMax, std::sort.
void sort_ids(int64_t* c, int64_t C, int32_t* key, bool packed) {
  if (!packed || C > kRankSortMax) {
    std::sort(c, c + C);
    return;
  }
  for (int64_t j = 0; j < C; ++j) key[j] = static_cast<int32_t>(c[j] << kRankBits | j);
  for (int64_t i = 0; i < C; ++i) {
    const int32_t v = key[i];
    int32_t rank = 0;
    for (int64_t j = 0; j < C; ++j) rank += key[j] < v;
    c[rank] = v >> kRankBits;
  }
}

struct Source {  // one retrieval source: a flat int32 list and [N, A, n] indices into it
  const int32_t* list;
  int64_t size;
  const int64_t* index;
  int64_t n;
};

Source source(const at::Tensor& list, const at::Tensor& index, int64_t N, int64_t A,
              const char* name) {
  TORCH_CHECK(list.scalar_type() == at::kInt && list.is_contiguous(), name,
              " list: contiguous int32");
  TORCH_CHECK(index.dim() == 3 && index.size(0) == N && index.size(1) == A &&
                  index.scalar_type() == at::kLong && index.is_contiguous(),
              name, " index: contiguous int64 [N, A, n] with N, A of head and t");
  return {list.data_ptr<int32_t>(), list.numel(), index.data_ptr<int64_t>(), index.size(2)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> candidates(
    const at::Tensor& head, const at::Tensor& by_topic, const at::Tensor& topic_index,
    const at::Tensor& by_pop, const at::Tensor& pop_index, const at::Tensor& by_arrival,
    const at::Tensor& fresh_index, const at::Tensor& item_rows, const at::Tensor& stats,
    const at::Tensor& episode, const at::Tensor& t, const at::Tensor& log1p_counts,
    int64_t num_features, int64_t stats_size, double horizon) {
  TORCH_CHECK(head.dim() == 2 && head.scalar_type() == at::kLong && head.is_contiguous(),
              "head: contiguous int64 [A, K]");
  TORCH_CHECK(item_rows.dim() == 2 && item_rows.scalar_type() == at::kFloat &&
                  item_rows.is_contiguous(),
              "item_rows: contiguous float32 [I, R]");
  TORCH_CHECK(stats.dim() == 2 && stats.size(1) == 3 && stats.scalar_type() == at::kInt &&
                  stats.is_contiguous(),
              "stats: contiguous int32 [N * W, 3]");
  TORCH_CHECK(episode.scalar_type() == at::kLong && t.scalar_type() == at::kFloat &&
                  log1p_counts.scalar_type() == at::kFloat && episode.is_contiguous() &&
                  t.is_contiguous() && log1p_counts.is_contiguous(),
              "episode int64 [N], t float32 [N], log1p_counts float32 [M]");
  const int64_t N = t.numel(), A = head.size(0), K = head.size(1);
  const Source src[3] = {source(by_topic, topic_index, N, A, "topic"),
                         source(by_pop, pop_index, N, A, "popular"),
                         source(by_arrival, fresh_index, N, A, "fresh")};
  const int64_t C = K + src[0].n + src[1].n + src[2].n;
  const int64_t I = item_rows.size(0), R = item_rows.size(1), F = num_features, S = F - 3;
  const int64_t W = stats_size, M = log1p_counts.numel();
  TORCH_CHECK(F >= 3 && F <= R, "num_features must be in [3, item_rows.size(1)]");
  TORCH_CHECK(stats.size(0) == N * W && episode.numel() == N,
              "stats and episode must cover the N markets of t");
  // Counters sit at item % W: W = 0 would divide by zero (a SIGFPE, not an error).
  TORCH_CHECK(W > 0, "stats_size (", W, ") must be > 0");

  auto items = at::empty({N, A, C}, head.options());
  auto feats = at::empty({N, A, C, F}, item_rows.options());
  auto mask = at::empty({N, A, C}, head.options().dtype(at::kBool));
  const int64_t* hd = head.data_ptr<int64_t>();
  const float* rows = item_rows.data_ptr<float>();
  const int32_t* st = stats.data_ptr<int32_t>();
  const int64_t* ep = episode.data_ptr<int64_t>();
  const float* tt = t.data_ptr<float>();
  const float* lg = log1p_counts.data_ptr<float>();
  int64_t* out_items = items.data_ptr<int64_t>();
  float* out = feats.data_ptr<float>();
  bool* out_mask = mask.data_ptr<bool>();
  const bool hashed = W < I;  // counters shared by items with the same id modulo W
  const bool packed = I <= (int64_t{1} << (31 - kRankBits));  // ids fit sort_ids' int32 keys
  // A row table that fits in L2 is not prefetched: those prefetches would hit, yet each
  // holds one of the core's few miss buffers that the counters' misses are waiting for.
  const bool prefetch_rows = I * R * static_cast<int64_t>(sizeof(float)) > l2_bytes();
  const float H = static_cast<float>(horizon);
  const int64_t X = A * C;  // candidates per market
  auto counter = [&](int64_t n, int64_t item) {
    return st + 3 * (n * W + (hashed ? item % W : item));
  };

  // Stage 0: the list entries market n will read.
  auto prefetch_lists = [&](int64_t n) {
    for (const Source& s : src) {
      const int64_t* idx = s.index + n * A * s.n;
      for (int64_t j = 0; j < A * s.n; ++j) {
        if (idx[j] >= 0 && idx[j] < s.size) __builtin_prefetch(s.list + idx[j]);
      }
    }
  };
  // Stage 1: market n's candidates, listed by id with repeats after the first masked (the
  // mask gets the arrival test in stage 2).
  auto retrieve = [&](int64_t n, int32_t* key) {
    for (int64_t a = 0; a < A; ++a) {
      int64_t* c = out_items + (n * A + a) * C;
      int64_t m = 0;
      for (int64_t k = 0; k < K; ++k) c[m++] = hd[a * K + k];
      for (const Source& s : src) {
        const int64_t* idx = s.index + (n * A + a) * s.n;
        for (int64_t j = 0; j < s.n; ++j) {
          TORCH_CHECK(idx[j] >= 0 && idx[j] < s.size, "list index ", idx[j], " out of [0, ",
                      s.size, ")");
          c[m++] = s.list[idx[j]];
        }
      }
      for (int64_t j = 0; j < C; ++j) {
        TORCH_CHECK(c[j] >= 0 && c[j] < I, "candidate item ", c[j], " out of [0, ", I, ")");
      }
      sort_ids(c, C, key, packed);
      bool* first = out_mask + (n * A + a) * C;
      for (int64_t j = 0; j < C; ++j) first[j] = j == 0 || c[j] != c[j - 1];
    }
  };
  // Stage 2: market n's features: static ones, log1p of this episode's clicks and exposures,
  // the age; and the mask ANDed with the arrival test. `retrieved`: the flat candidate index
  // up to which candidates are listed (market n+1's end, or the range's), the prefetches'
  // bound.
  auto fill = [&](int64_t n, int64_t retrieved) {
    const float tn = tt[n];
    // Stamps are the episode count as int32 (as count_exposures writes them): compared as
    // int32, they keep matching once the count passes 2**31.
    const int32_t e = static_cast<int32_t>(ep[n]);
    for (int64_t j = 0; j < X; ++j) {
      if (n * X + j + kAhead < retrieved) {
        const int64_t next_item = out_items[n * X + j + kAhead];
        __builtin_prefetch(counter((n * X + j + kAhead) / X, next_item));
        if (prefetch_rows) {
          const float* next = rows + R * next_item;
          __builtin_prefetch(next);
          if (S >= 16) __builtin_prefetch(next + S);  // features span two lines
        }
      }
      const int64_t item = out_items[n * X + j];
      const float* row = rows + R * item;
      const int32_t* s = counter(n, item);
      float* o = out + (n * X + j) * F;
      std::memcpy(o, row, S * sizeof(float));
      // This episode's (exposures, clicks); a stale stamp reads as zero.
      const bool current = s[0] == e;
      const int64_t clicks = current ? s[2] : 0, exposures = current ? s[1] : 0;
      TORCH_CHECK(clicks >= 0 && clicks < M && exposures >= 0 && exposures < M,
                  "item counter out of the log1p table");
      o[S] = lg[clicks];
      o[S + 1] = lg[exposures];
      const float arrival = row[S];  // the arrival step sits in the first per-request slot
      out_mask[n * X + j] = out_mask[n * X + j] && arrival <= tn;
      o[S + 2] = std::max(tn - arrival, 0.0f) / H;  // as (t - arrival).clamp(min=0) / H
    }
  };

  // Markets are independent: split over torch's intra-op threads (one on the benchmark).
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> key(C);  // sort_ids' keys, one set per thread
    for (int64_t n = begin; n < std::min(begin + 2, end); ++n) prefetch_lists(n);
    retrieve(begin, key.data());
    for (int64_t n = begin; n < end; ++n) {
      if (n + 2 < end) prefetch_lists(n + 2);
      if (n + 1 < end) retrieve(n + 1, key.data());
      fill(n, std::min(n + 2, end) * X);
    }
  });
  return {items, feats, mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("candidates", &candidates); }
