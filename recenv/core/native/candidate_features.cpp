// recenv::candidate_features, CPU: the candidates' observation features in one pass per
// market (see recenv/core/native/__init__.py for the contract; the torch form is
// BatchedMarket._candidate_features, which this must equal bit for bit).
//
// Why hand-written: compiled by inductor, this part of the step is several fused loops over
// [N, X, 2] and [N, X, F] whose random lookups (item rows, per-market counters) wait on each
// cache miss; here each market first prefetches all its candidates' rows and counters, so the
// misses overlap, then copies and fills the rows.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <tuple>

namespace {

std::tuple<at::Tensor, at::Tensor> candidate_features(
    const at::Tensor& item_rows, const at::Tensor& stats, const at::Tensor& episode,
    const at::Tensor& t, const at::Tensor& items, const at::Tensor& log1p_counts,
    int64_t num_features, int64_t stats_size, double horizon) {
  TORCH_CHECK(item_rows.dim() == 2 && item_rows.scalar_type() == at::kFloat &&
                  item_rows.is_contiguous(),
              "item_rows: contiguous float32 [I, R]");
  TORCH_CHECK(stats.dim() == 2 && stats.size(1) == 3 && stats.scalar_type() == at::kInt &&
                  stats.is_contiguous(),
              "stats: contiguous int32 [N * W, 3]");
  TORCH_CHECK(items.dim() == 2 && items.scalar_type() == at::kLong && items.is_contiguous(),
              "items: contiguous int64 [N, X]");
  TORCH_CHECK(episode.scalar_type() == at::kLong && t.scalar_type() == at::kFloat &&
                  log1p_counts.scalar_type() == at::kFloat,
              "episode int64 [N], t float32 [N], log1p_counts float32 [M]");
  const int64_t N = items.size(0), X = items.size(1), I = item_rows.size(0);
  const int64_t R = item_rows.size(1), F = num_features, S = F - 3, W = stats_size;
  const int64_t M = log1p_counts.numel();
  TORCH_CHECK(F >= 3 && F <= R, "num_features must be in [3, item_rows.size(1)]");
  TORCH_CHECK(stats.size(0) == N * W && episode.numel() == N && t.numel() == N,
              "stats, episode and t must cover the N markets of items");

  auto feats = at::empty({N, X, F}, item_rows.options());
  auto arrived = at::empty({N, X}, items.options().dtype(at::kBool));
  const float* rows = item_rows.data_ptr<float>();
  const int32_t* st = stats.data_ptr<int32_t>();
  const int64_t* ep = episode.data_ptr<int64_t>();
  const float* tt = t.data_ptr<float>();
  const int64_t* it = items.data_ptr<int64_t>();
  const float* lg = log1p_counts.data_ptr<float>();
  float* out = feats.data_ptr<float>();
  bool* arr = arrived.data_ptr<bool>();
  const bool hashed = W < I;  // counters shared by items with the same id modulo W
  const float H = static_cast<float>(horizon);

  // Markets are independent: split over torch's intra-op threads (one on the benchmark).
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t* cand = it + n * X;
      for (int64_t j = 0; j < X; ++j) {  // every miss of this market in flight at once
        const int64_t item = cand[j];
        TORCH_CHECK(item >= 0 && item < I, "candidate item ", item, " out of [0, ", I, ")");
        __builtin_prefetch(rows + R * item);
        __builtin_prefetch(st + 3 * (n * W + (hashed ? item % W : item)));
      }
      const float tn = tt[n];
      const int64_t e = ep[n];
      for (int64_t j = 0; j < X; ++j) {
        const int64_t item = cand[j];
        const float* row = rows + R * item;
        const int32_t* s = st + 3 * (n * W + (hashed ? item % W : item));
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
        arr[n * X + j] = arrival <= tn;
        o[S + 2] = std::max(tn - arrival, 0.0f) / H;  // as (t - arrival).clamp(min=0) / H
      }
    }
  });
  return {feats, arrived};
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("candidate_features", &candidate_features); }
