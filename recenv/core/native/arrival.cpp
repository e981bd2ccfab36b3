// recenv::next_user, CPU: every market's next arriving user drawn in one pass per market
// (see recenv/core/native/__init__.py for the contract; the torch form is
// BatchedMarket._next_user_torch, whose outputs this must equal bit for bit).
//
// Why hand-written: in the compiled step the users' status, their arrival weights, the prefix
// sums and the search are three loops and an ATen cumsum between them, each over U = 25
// users a market: a vector of 16 lanes and one of 9, with masked loads, stores and mask
// conversions per market (the largest loop of the step's profile, ~6 %), then the [N, U]
// weights written, read back by cumsum, written again and read by the search. Here each
// market's users are read once and nothing [N, U] is written. Only compares, selects, one
// float32 multiply per user, float64 adds rounded to float32 (as ATen's CPU cumsum sums) and
// one float32 multiply for the target: no rounding that could differ from torch's.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <tuple>
#include <vector>

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> next_user(
    const at::Tensor& status, const at::Tensor& epoch, const at::Tensor& activity,
    const at::Tensor& episode, const at::Tensor& t, const at::Tensor& served,
    const at::Tensor& served_status, const at::Tensor& uniforms, const at::Tensor& users,
    double gap_weight) {
  TORCH_CHECK(status.dim() == 3 && status.size(1) == 2 && status.scalar_type() == at::kFloat &&
                  status.is_contiguous(),
              "status: contiguous float32 [N, 2, U]");
  const int64_t N = status.size(0), U = status.size(2);
  TORCH_CHECK(U > 0, "status: at least one user a market");
  TORCH_CHECK(epoch.dim() == 2 && epoch.size(0) == N && epoch.size(1) == U &&
                  epoch.scalar_type() == at::kLong && epoch.is_contiguous(),
              "epoch: contiguous int64 [N, U] like status");
  TORCH_CHECK(activity.dim() == 2 && activity.size(0) == N && activity.size(1) == U &&
                  activity.scalar_type() == at::kFloat && activity.is_contiguous(),
              "activity: contiguous float32 [N, U] like status");
  TORCH_CHECK(episode.numel() == N && episode.scalar_type() == at::kLong &&
                  episode.is_contiguous(),
              "episode: contiguous int64 [N]");
  TORCH_CHECK(t.numel() == N && t.scalar_type() == at::kFloat && t.is_contiguous(),
              "t: contiguous float32 [N]");
  TORCH_CHECK(served.numel() == N && served.scalar_type() == at::kLong && served.is_contiguous(),
              "served: contiguous int64 [N]");
  TORCH_CHECK(served_status.dim() == 2 && served_status.size(0) == N &&
                  served_status.size(1) == 2 && served_status.scalar_type() == at::kFloat &&
                  served_status.is_contiguous(),
              "served_status: contiguous float32 [N, 2]");
  TORCH_CHECK(uniforms.numel() == N && uniforms.scalar_type() == at::kFloat &&
                  uniforms.is_contiguous(),
              "uniforms: contiguous float32 [N]");
  // The users' rows [N, U, F]: only prefetched, the arriving user's 5 lines as soon as it is
  // drawn, for the compiled step's row update that reads it next (inductor's loops do not
  // prefetch, and the 32 MiB table at 4,096 markets is past the cache: 1.04-1.05x). An empty
  // tensor skips it, and so do rows that are not contiguous (a restored table's layout).
  TORCH_CHECK(users.numel() == 0 || (users.dim() == 3 && users.size(0) == N &&
                                     users.size(1) == U && users.scalar_type() == at::kFloat),
              "users: float32 [N, U, F] like status (or empty)");
  const bool prefetch = users.numel() > 0 && users.stride(2) == 1;
  const char* user_rows =
      prefetch ? reinterpret_cast<const char*>(users.data_ptr<float>()) : nullptr;
  const int64_t row_bytes = prefetch ? users.size(2) * 4 : 0;
  const int64_t s0 = prefetch ? users.stride(0) * 4 : 0, s1 = prefetch ? users.stride(1) * 4 : 0;
  const auto opts = status.options();
  at::Tensor user = at::empty({N}, opts.dtype(at::kLong));
  at::Tensor ready_user = at::empty({N}, opts.dtype(at::kBool));
  at::Tensor all_gone = at::empty({N}, opts.dtype(at::kBool));
  const float* st = status.data_ptr<float>();
  const int64_t* ep = epoch.data_ptr<int64_t>();
  const float* act = activity.data_ptr<float>();
  const int64_t* episode_of = episode.data_ptr<int64_t>();
  const float* tt = t.data_ptr<float>();
  const int64_t* sv = served.data_ptr<int64_t>();
  const float* ss = served_status.data_ptr<float>();
  const float* un = uniforms.data_ptr<float>();
  int64_t* out_user = user.data_ptr<int64_t>();
  bool* out_ready = ready_user.data_ptr<bool>();
  bool* out_gone = all_gone.data_ptr<bool>();
  // torch.where(ready, 1.0, torch.where(gone, 0.0, gap)) in float32: gap rounded once.
  const float gap = static_cast<float>(gap_weight);

  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> cdf(U);
    for (int64_t n = begin; n < end; ++n) {
      const float* available_at = st + n * 2 * U;
      const float* churned = available_at + U;
      const int64_t* stamp = ep + n * U;
      const float* w = act + n * U;
      const int64_t e = episode_of[n], patched = sv[n];
      const float tn = tt[n];
      bool every_gone = true;
      double running = 0.0;  // ATen's CPU cumsum of float32: a float64 sum, each prefix rounded
      // Whether user j is between sessions or churned, and not back by tn (the served
      // user's status as the request left it: its row is written after this).
      auto away = [&](int64_t j) {
        const bool current = stamp[j] == e;  // a user of this episode (else new to it)
        return current && (j == patched ? ss[2 * n] : available_at[j]) > tn;
      };
      for (int64_t j = 0; j < U; ++j) {
        const bool held = away(j);
        const bool gone = held && (j == patched ? ss[2 * n + 1] : churned[j]) > 0.0f;
        every_gone = every_gone && gone;
        const float factor = !held ? 1.0f : (gone ? 0.0f : gap);
        running += static_cast<double>(w[j] * factor);
        cdf[j] = static_cast<float>(running);
      }
      // torch.searchsorted(cdf, u * cdf[-1]) (left), as ATen's CPU kernel bisects, then
      // clamped to the last user.
      const float target = un[n] * cdf[U - 1];
      int64_t lo = 0, hi = U;
      while (lo < hi) {
        const int64_t mid = lo + ((hi - lo) >> 1);
        if (!(cdf[mid] >= target)) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      const int64_t u = lo < U - 1 ? lo : U - 1;
      if (prefetch) {
        const char* r = user_rows + n * s0 + u * s1;
        for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(r + b);
      }
      out_user[n] = u;
      out_ready[n] = !away(u);
      out_gone[n] = every_gone;
    }
  });
  return {user, ready_user, all_gone};
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("next_user", &next_user); }
