// recenv::item_metrics, CPU: coverage and exposure Gini of the markets whose episode ended,
// one pass over each market's item counters (see recenv/core/native/__init__.py for the
// contract; the torch form is BatchedMarket._item_metrics_torch, which this equals bit for
// bit).
//
// Why hand-written: in torch the Gini sorts every ended market's W counters (as float64
// after a copy of the [E, W, 3] table). When all markets end together (every episode of the
// default market truncates at the same step), that one step cost ~20 ordinary steps at
// 4,096 markets. Exposures are small integers, so the sorted sum is a sum over the distinct
// values, found by a histogram: O(W + max exposure) per market, no sort.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

namespace {

// Share of the I items exposed, from nnz exposed counters of W (as the torch form computes
// it). Exact counters (W == I): nnz / I in float32. Hashed ones (W < I): items that share a
// counter count once, so the linear-counting estimate of the distinct items behind nnz
// occupied slots, -W ln(1 - nnz / W), capped at I, over I; NaN for a full table (it says
// only "at least W items": the estimate is unbounded there).
float coverage_of(int64_t nnz, int64_t W, int64_t I) {
  if (W == I) return static_cast<float>(nnz) / static_cast<float>(I);
  if (nnz >= W) return std::numeric_limits<float>::quiet_NaN();
  const double items = -static_cast<double>(W) * std::log1p(-static_cast<double>(nnz) / W);
  return static_cast<float>(std::min(items, static_cast<double>(I)) / static_cast<double>(I));
}

std::tuple<at::Tensor, at::Tensor> item_metrics(const at::Tensor& stats,
                                                const at::Tensor& episode,
                                                const at::Tensor& ended, int64_t stats_size,
                                                int64_t num_items) {
  TORCH_CHECK(stats.dim() == 2 && stats.size(1) == 3 && stats.scalar_type() == at::kInt &&
                  stats.is_contiguous(),
              "stats: contiguous int32 [N * W, 3]");
  TORCH_CHECK(episode.scalar_type() == at::kLong && episode.dim() == 1 &&
                  episode.is_contiguous(),
              "episode: contiguous int64 [N]");
  TORCH_CHECK(ended.scalar_type() == at::kLong && ended.dim() == 1 && ended.is_contiguous(),
              "ended: contiguous int64 [E]");
  const int64_t N = episode.size(0), W = stats_size, E = ended.size(0);
  TORCH_CHECK(W > 0 && stats.size(0) == N * W, "stats must hold W = stats_size rows per market");
  // The metrics are over the catalog's I items: with W < I counters (hashed, item % W) a
  // non-zero counter stands for one item or more, and the counters never touched for the
  // rest; exact when W == I.
  const int64_t I = num_items;
  TORCH_CHECK(I >= W, "num_items (", I, ") must be >= stats_size (", W, ")");
  const int32_t* st = stats.data_ptr<int32_t>();
  const int64_t* ep = episode.data_ptr<int64_t>();
  const int64_t* end = ended.data_ptr<int64_t>();
  for (int64_t j = 0; j < E; ++j) {
    TORCH_CHECK(end[j] >= 0 && end[j] < N, "ended market ", end[j], " out of [0, ", N, ")");
  }
  at::Tensor coverage = at::empty({E}, episode.options().dtype(at::kFloat));
  at::Tensor gini = at::empty({E}, episode.options().dtype(at::kFloat));
  float* cov = coverage.data_ptr<float>();
  float* gi = gini.data_ptr<float>();

  // Counters hold counts: a negative one is a corrupt table (it would index the histogram out
  // of bounds), reported once the pass is over; the outputs are then discarded. So is a
  // market whose total exposures x I pass int64 (the Gini's exact sums would overflow); a
  // market's exposures in one episode stay below 2**31 (see MarketConfig), and I <= 2**31.
  std::atomic<bool> negative{false}, too_many{false};
  at::parallel_for(0, E, 16, [&](int64_t begin, int64_t stop) {
    std::vector<int32_t> nonzero;  // this market's non-zero exposures
    std::vector<int64_t> count;    // histogram of their values
    for (int64_t j = begin; j < stop; ++j) {
      nonzero.resize(static_cast<size_t>(W));
      const int64_t n = end[j];
      const int32_t e = static_cast<int32_t>(ep[n]);
      const int32_t* s = st + 3 * n * W;
      int64_t nnz = 0, total = 0;
      int32_t top = 0, low = 0;
      for (int64_t i = 0; i < W; ++i) {
        // Rows stamped with an older episode count as zero exposures. Branch-free: most
        // rows are zero, in no pattern a branch predictor could learn.
        const int32_t x = s[3 * i] == e ? s[3 * i + 1] : 0;
        nonzero[nnz] = x;
        nnz += x > 0;
        total += x;
        top = std::max(top, x);
        low = std::min(low, x);
      }
      if (low < 0) {
        negative = true;  // raised after the loop (no exception may leave a parallel region)
        continue;
      }
      if (total > std::numeric_limits<int64_t>::max() / I) {
        too_many = true;  // raised after the loop, as a negative count
        continue;
      }
      nonzero.resize(static_cast<size_t>(nnz));
      cov[j] = coverage_of(nnz, W, I);
      if (total == 0) {
        gi[j] = 0.0f;
        continue;
      }
      // Gini = sum_i (2i - I - 1) x_(i) / (I * total) over the I items' exposures sorted
      // ascending (i = 1..I). The I - nnz zeros come first and add nothing; a run of c
      // copies of value v after r smaller values adds v * c * (2r + c - I), written
      // v * c * (r - (I - r - c)): no term nor sum passes total * I (checked above), where
      // 2r could overflow for I past 2**62. Exact in int64, then the one float64 division
      // torch's float64 form makes (its sums are exact).
      int64_t numerator = 0;
      int64_t below = I - nnz;
      auto add_run = [&](int64_t v, int64_t c) {
        numerator += v * c * (below - (I - below - c));
        below += c;
      };
      if (top <= 4 * nnz + 64) {  // a histogram no larger than a few passes over the values
        count.assign(static_cast<size_t>(top) + 1, 0);
        for (int32_t x : nonzero) ++count[x];
        for (int64_t v = 1; v <= top; ++v) {
          if (count[v]) add_run(v, count[v]);
        }
      } else {  // a few very large counts (long horizons): sort the non-zeros instead
        std::sort(nonzero.begin(), nonzero.end());
        for (int64_t a = 0; a < nnz;) {
          int64_t b = a;
          while (b < nnz && nonzero[b] == nonzero[a]) ++b;
          add_run(nonzero[a], b - a);
          a = b;
        }
      }
      const double g = static_cast<double>(numerator) /
                       (static_cast<double>(I) * static_cast<double>(total));
      gi[j] = static_cast<float>(g);
    }
  });
  TORCH_CHECK(!negative, "item counters hold a negative exposure count (a corrupt table)");
  TORCH_CHECK(!too_many, "item counters hold more exposures than an episode can (their total x ",
              "num_items passes int64; a corrupt table)");
  return {coverage, gini};
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("item_metrics", &item_metrics); }
