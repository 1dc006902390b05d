// The fused multi-head self-attention op over packed qkv.
#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"

namespace bam {
using namespace detail;

namespace {

// On the GPU: flash-style kernels that keep a log-sum-exp per row instead of the N x N
// probabilities; those are rebuilt only when the caller asks for them (attention maps).
Tensor attention_cuda(const Tensor& qkv, const Tensor& qc, int64_t B, int64_t N, int64_t H, int64_t D, double scale,
                      Tensor* probs_out) {
#ifdef BAM_WITH_CUDA
  DType stat = stat_dtype(qc.dtype());
  Tensor out = empty({B, N, H * D}, {qc.dtype(), qc.device()});
  Tensor lse = empty({B, H, N}, {stat, qc.device()});
  cuda_kernels::attention_forward(qc.dtype(), qc.raw_data(), out.raw_data(), lse.raw_data(), B, N, H, D, scale,
                                  cuda::current_stream());
  if (probs_out) {
    *probs_out = empty({B, H, N, N}, {qc.dtype(), qc.device()});
    cuda_kernels::attention_probs(qc.dtype(), qc.raw_data(), lse.raw_data(), probs_out->raw_data(), B, N, H, D, scale,
                                  cuda::current_stream());
  }
  Tensor saved_qkv = qc.detach(), saved_out = out.detach();
  return record("attention", out, {qkv}, [saved_qkv, saved_out, lse, B, N, H, D, scale, stat](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor d_qkv = empty(saved_qkv.shape(), {g.dtype(), g.device()});
    Tensor delta = empty({B, H, N}, {stat, g.device()});
    cuda_kernels::attention_backward(g.dtype(), saved_qkv.raw_data(), saved_out.raw_data(), lse.raw_data(),
                                     gc.raw_data(), d_qkv.raw_data(), delta.raw_data(), B, N, H, D, scale,
                                     cuda::current_stream());
    return std::vector<Tensor>{d_qkv};
  });
#else
  (void)qkv, (void)qc, (void)B, (void)N, (void)H, (void)D, (void)scale, (void)probs_out;
  fail("attention: this build has no CUDA backend");
#endif
}

}  // namespace

Tensor attention(const Tensor& qkv, int64_t num_heads, Tensor* probs_out) {
  require_floating("attention", qkv);
  BAM_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "attention: expects packed qkv [B, N, 3*C], got {}",
            qkv.describe());
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3;
  BAM_CHECK(num_heads >= 1 && C % num_heads == 0, "attention: {} channels do not split into {} heads", C, num_heads);
  const int64_t H = num_heads, D = C / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Tensor qc = contiguous_data(qkv);
  if (qkv.device().is_cuda()) return attention_cuda(qkv, qc, B, N, H, D, scale, probs_out);
  Tensor out = empty({B, N, C}, {qkv.dtype(), qkv.device()});
  Tensor probs = empty({B, H, N, N}, {qkv.dtype(), qkv.device()});
  dispatch_floating("attention", qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_forward<T>(qc.data<T>(), out.data<T>(), probs.data<T>(), B, N, H, D, scale);
  });
  // The maps backward reads are not handed out where backward will run: an edit of the caller's
  // copy would change dQKV (the GPU computes the caller's maps apart from what its backward keeps).
  if (probs_out) *probs_out = any_requires_grad({&qkv}) ? probs.clone() : probs;
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
