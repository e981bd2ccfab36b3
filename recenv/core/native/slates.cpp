// recenv::check_slates, CPU: every market's slates checked in one pass (see
// recenv/core/native/__init__.py for the contract; the torch form is
// BatchedMarket._validity with _slot_checks, whose outputs this must equal bit for bit).
//
// Why hand-written: the check runs eagerly before every step (it must raise before the step
// mutates anything), and in torch it is ~25 small ops over [N, A, K] tensors (a stack, range
// compares, the slot-against-slot repeats, a gather of the mask, the reductions), each a
// dispatch, an allocation and a pass: ~0.2 ms alone at 4,096 markets and ~0.6 ms inside a
// step, whose other work has evicted what they read. One pass per market reads its K slots
// and its A x C mask bytes once.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <atomic>
#include <tuple>

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> check_slates(
    at::TensorList slates, const at::Tensor& mask, const at::Tensor& needs_reset) {
  const int64_t A = static_cast<int64_t>(slates.size());
  TORCH_CHECK(A > 0, "slates: one [N, K] tensor per agent");
  TORCH_CHECK(mask.dim() == 3 && mask.size(1) == A && mask.scalar_type() == at::kBool &&
                  mask.is_contiguous(),
              "mask: contiguous bool [N, A, C] with A = len(slates)");
  const int64_t N = mask.size(0), C = mask.size(2), K = slates[0].size(-1);
  for (int64_t a = 0; a < A; ++a) {
    const at::Tensor& s = slates[a];
    TORCH_CHECK(s.dim() == 2 && s.size(0) == N && s.size(1) == K &&
                    s.scalar_type() == at::kLong && s.is_contiguous(),
                "slates[", a, "]: contiguous int64 [N, K] like slates[0]");
  }
  TORCH_CHECK(needs_reset.scalar_type() == at::kBool && needs_reset.numel() == N &&
                  needs_reset.is_contiguous(),
              "needs_reset: contiguous bool [N]");
  const auto opts = mask.options();
  at::Tensor idx = at::empty({N, A, K}, opts.dtype(at::kLong));
  at::Tensor valid = at::empty({N, A, K}, opts.dtype(at::kBool));
  at::Tensor repaired = at::empty({N, A}, opts.dtype(at::kFloat));
  std::vector<const int64_t*> sp(A);
  for (int64_t a = 0; a < A; ++a) sp[a] = slates[a].data_ptr<int64_t>();
  const bool* mk = mask.data_ptr<bool>();
  const bool* reset = needs_reset.data_ptr<bool>();
  int64_t* ix = idx.data_ptr<int64_t>();
  bool* va = valid.data_ptr<bool>();
  float* rp = repaired.data_ptr<float>();
  std::atomic<bool> all_ok{true};

  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    bool ok = true;
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t a = 0; a < A; ++a) {
        const int64_t* s = sp[a] + n * K;
        const bool* m = mk + (n * A + a) * C;
        const int64_t out = (n * A + a) * K;
        int64_t invalid = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t v = s[k];
          const bool in_range = v >= 0 && v < C;
          const int64_t c = v < 0 ? 0 : (v >= C ? C - 1 : v);
          // A repeat of an earlier slot, on the raw values: an out-of-range index is
          // invalid for its range, never a valid slot's "repeat".
          bool repeat = false;
          for (int64_t j = 0; j < k; ++j) repeat |= s[j] == v;
          const bool ok_slot = in_range && m[c] && !repeat;
          ix[out + k] = c;
          va[out + k] = ok_slot && !reset[n];
          invalid += !ok_slot;
        }
        // Markets about to start a new episode ignore their actions: nothing shown, nothing
        // repaired, and their slots never fail the check.
        rp[n * A + a] = reset[n] ? 0.0f : static_cast<float>(invalid);
        ok = ok && (invalid == 0 || reset[n]);
      }
    }
    if (!ok) all_ok.store(false, std::memory_order_relaxed);
  });
  return {idx, valid, repaired, at::scalar_tensor(all_ok.load(), opts.dtype(at::kBool))};
}

}  // namespace

TORCH_LIBRARY_IMPL(recenv, CPU, m) { m.impl("check_slates", &check_slates); }
