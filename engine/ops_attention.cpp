// The fused multi-head self-attention op over packed qkv.
#include <cmath>

#include "engine/autograd.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/attention.h"

namespace bam {
using namespace detail;

Tensor attention(const Tensor& qkv, int64_t num_heads, Tensor* probs_out) {
  require_cpu("attention", {&qkv});
  require_floating("attention", qkv);
  BAM_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "attention: expects packed qkv [B, N, 3*C], got {}",
            qkv.describe());
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3;
  BAM_CHECK(num_heads >= 1 && C % num_heads == 0, "attention: {} channels do not split into {} heads", C, num_heads);
  const int64_t H = num_heads, D = C / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Tensor qc = contiguous_data(qkv);
  Tensor out = empty({B, N, C}, {qkv.dtype(), qkv.device()});
  Tensor probs = empty({B, H, N, N}, {qkv.dtype(), qkv.device()});
  dispatch_floating("attention", qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_forward<T>(qc.data<T>(), out.data<T>(), probs.data<T>(), B, N, H, D, scale);
  });
  if (probs_out) *probs_out = probs;
  Tensor saved_qkv = qc.detach();
  return record("attention", out, {qkv}, [saved_qkv, probs, B, N, H, D, scale](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor d_qkv = empty(saved_qkv.shape(), {g.dtype(), g.device()});
    dispatch_floating("attention", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_backward<T>(saved_qkv.data<T>(), probs.data<T>(), gc.data<T>(), d_qkv.data<T>(), B, N, H, D,
                                 scale);
    });
    return std::vector<Tensor>{d_qkv};
  });
}

}  // namespace bam
