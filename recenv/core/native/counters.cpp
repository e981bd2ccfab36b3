// recenv::count_exposures, CPU: one request's item counters updated in place, one pass per
// market (see recenv/core/native/__init__.py for the contract; the torch form is
// BatchedMarket._count_exposures_torch, whose table this must leave bit for bit).
//
// Why hand-written: in torch the update is a [N, P+1, P+1] comparison of counter rows (so
// entries sharing a row all carry its total), its sums, a stack and an index_copy_ that
// writes N x (P+1) rows; here each market adds its few entries into their rows directly.
#include <ATen/Parallel.h>
#include <torch/extension.h>

namespace {

void count_exposures(at::Tensor& stats, const at::Tensor& episode, const at::Tensor& page,
                     const at::Tensor& visible, const at::Tensor& chosen,
                     const at::Tensor& clicked, int64_t stats_size, int64_t num_items) {
  TORCH_CHECK(stats.dim() == 2 && stats.size(1) == 3 && stats.scalar_type() == at::kInt &&
                  stats.is_contiguous(),
              "stats: contiguous int32 [N * W, 3]");
  TORCH_CHECK(page.dim() == 2 && page.scalar_type() == at::kLong && page.is_contiguous(),
              "page: contiguous int64 [N, P]");
  const int64_t N = page.size(0), P = page.size(1), W = stats_size, I = num_items;
  TORCH_CHECK(visible.scalar_type() == at::kBool && visible.is_contiguous() &&
                  visible.sizes() == page.sizes(),
              "visible: contiguous bool [N, P] like page");
  TORCH_CHECK(chosen.scalar_type() == at::kLong && chosen.numel() == N &&
                  chosen.is_contiguous() && clicked.scalar_type() == at::kBool &&
                  clicked.numel() == N && clicked.is_contiguous(),
              "chosen: int64 [N], clicked: bool [N]");
  TORCH_CHECK(episode.scalar_type() == at::kLong && episode.numel() == N &&
                  episode.is_contiguous(),
              "episode: int64 [N]");
  TORCH_CHECK(stats.size(0) == N * W, "stats must hold W = stats_size rows per market");
  // Counters sit at item % W: W = 0 would divide by zero (a SIGFPE, not an error).
  TORCH_CHECK(W > 0, "stats_size (", W, ") must be > 0");
  int32_t* st = stats.data_ptr<int32_t>();
  const int64_t* ep = episode.data_ptr<int64_t>();
  const int64_t* pg = page.data_ptr<int64_t>();
  const bool* vis = visible.data_ptr<bool>();
  const int64_t* ch = chosen.data_ptr<int64_t>();
  const bool* clk = clicked.data_ptr<bool>();
  const bool hashed = W < I;  // counters shared by items with the same id modulo W

  // Every item is checked before any row is written: bad input leaves the table untouched.
  for (int64_t j = 0; j < N * P; ++j) {
    TORCH_CHECK(pg[j] >= 0 && pg[j] < I, "page item ", pg[j], " out of [0, ", I, ")");
  }
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(ch[n] >= 0 && ch[n] < I, "chosen item ", ch[n], " out of [0, ", I, ")");
  }
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int32_t e = static_cast<int32_t>(ep[n]);
      // The page's items, then the chosen one: each row restarts at 0 when its stamp is of an
      // older episode, then gets this request's exposures and click. Rows no entry adds to
      // are still stamped, as the torch form writes every entry's row.
      for (int64_t j = 0; j <= P; ++j) {
        const int64_t item = j < P ? pg[n * P + j] : ch[n];
        int32_t* s = st + 3 * (n * W + (hashed ? item % W : item));
        if (s[0] != e) {
          s[0] = e;
          s[1] = 0;
          s[2] = 0;
        }
        // Added as uint32: a count at INT32_MAX (a corrupt table: a market's counts stay
        // below 2**31, see MarketConfig) wraps, as the torch form's int32 add does, instead
        // of overflowing a signed int (undefined behaviour).
        if (j < P) {
          s[1] = static_cast<int32_t>(static_cast<uint32_t>(s[1]) + vis[n * P + j]);
        } else {
          s[2] = static_cast<int32_t>(static_cast<uint32_t>(s[2]) + clk[n]);
        }
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("count_exposures", &count_exposures); }
