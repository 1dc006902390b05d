// The differentiable op API. Every op validates its inputs, runs a kernel (kernels/cpu or
// kernels/cuda by device) and records its backward next to its forward (engine/ops_*.cpp).
// Binary ops broadcast like NumPy; dims may be negative (counted from the end).
#pragma once

#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace bam {

// ---- elementwise: binary (broadcasting) --------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // gradient to a where a >= b, else to b
Tensor minimum(const Tensor& a, const Tensor& b);  // gradient to a where a <= b, else to b
// stream + branch for two tensors of one shape, where the branch may have another floating dtype no
// wider than the stream's: the result (and the stream's gradient) keeps the stream's dtype, the
// branch's gradient comes back in its own. A ViT block adds its 16-bit autocast branches into the
// f32 residual stream this way, with no cast kernel in between.
Tensor residual_add(const Tensor& stream, const Tensor& branch);
// With a scalar on either side.
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor sub(double a, const Tensor& b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor div(double a, const Tensor& b);

// ---- elementwise: unary -------------------------------------------------------------------------
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor clamp(const Tensor& x, double min_value, double max_value);  // gradient passes where min <= x <= max
Tensor clamp_min(const Tensor& x, double min_value);
Tensor tanh(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
// GELU: exact 0.5 x (1 + erf(x / sqrt 2)), or the tanh approximation.
enum class GeluForm { erf, tanh };
Tensor gelu(const Tensor& x, GeluForm form = GeluForm::erf);

// ---- comparisons and selection (no gradient to the mask) ---------------------------------------
Tensor eq(const Tensor& a, const Tensor& b);  // bool results
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
Tensor logical_not(const Tensor& mask);
// cond ? a : b, all three broadcast together.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x with value wherever mask (broadcast to x) is true.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// ---- reductions ---------------------------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> scalar
Tensor sum(const Tensor& x, const Shape& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const Shape& dims, bool keepdim = false);
// Variance over dims; unbiased divides by n - 1.
Tensor var(const Tensor& x, const Shape& dims, bool unbiased = true, bool keepdim = false);
Tensor max(const Tensor& x);  // all elements; the gradient goes to the first maximum
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor min(const Tensor& x);
Tensor min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // i64; first occurrence
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums `x` down to `shape` (the reverse of broadcasting); used by broadcasting ops' backward.
Tensor sum_to_shape(const Tensor& x, const Shape& shape);

// ---- linear algebra -----------------------------------------------------------------------------
// a @ b. 1-D/2-D as usual; with more dims the leading (batch) dims broadcast; a 2-D b is shared
// by every batch. Transposed views are passed to the GEMM as transposed operands, not copied.
Tensor matmul(const Tensor& a, const Tensor& b);
// x @ weight^T + bias; weight is [out, in] (the PyTorch/timm layout), bias [out] or undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// linear(gelu(h), weight, bias) without keeping gelu(h) for backward, which recomputes it from h:
// one [rows, in] activation less per MLP for one more GELU pass (activation recomputation).
Tensor gelu_linear(const Tensor& h, const Tensor& weight, const Tensor& bias = Tensor());

// ---- normalisation, activations with state, losses -----------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Over the last dim; weight/bias of that size (either may be undefined).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-6);
// The same with the output (and so the incoming gradient) in out_dtype: layer_norm(...).to(out_dtype)
// in one pass, no f32 copy in between. Under autocast the normalised activations leave in the 16-bit
// type the next Linear reads. On CUDA, out_dtype is x's dtype or, for f32 x, bf16/f16.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype);
// x is [N, C] or [N, C, L]. training: normalise with batch statistics and update the running ones
// (momentum as PyTorch: running = (1 - m) running + m batch; unbiased variance for running_var).
// eval: normalise with the running statistics. weight/bias may be undefined (no affine).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// Zeroes elements with probability p and scales the rest by 1/(1-p) (identity when !training).
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);
// Stochastic depth: zeroes whole samples (dim 0) with probability p, scaling the rest.
Tensor drop_path(const Tensor& x, double p, bool training, Generator* gen = nullptr);
// x / max(||x||_2, eps) along dim.
Tensor l2_normalize(const Tensor& x, int64_t dim = -1, double eps = 1e-12);
// mean over rows of -sum_j target[i,j] * log_softmax(logits)[i,j]; logits and target [N, C].
// The gradient flows to both.
Tensor soft_cross_entropy(const Tensor& logits, const Tensor& target);
// Hard labels (i64 [N]) over logits [N, C]; mean over rows.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);

// ---- joining, splitting, indexing -----------------------------------------------------------------
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
// The values of one-element tensors (any floating dtype, one device) read back together: on a GPU
// one copy and so one wait for the device, where an item() each would wait once per value.
std::vector<double> read_scalars(const std::vector<Tensor>& values);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);  // views
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);      // views
// Rows (along dim) picked by a 1-D i64 index.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j] = x[i][index[i][j]] along dim (index has x's rank and x's sizes outside dim).
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// A copy of x with src added at index along dim (duplicate indices accumulate).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// The k largest (or smallest) values along dim, sorted, and their i64 indices.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

// ---- attention -------------------------------------------------------------------------------
// Multi-head self-attention on packed qkv [B, N, 3*C] (q, k, v blocks of C = heads * D along the
// last dim, as timm's qkv linear produces): softmax(q k^T / sqrt(D)) v per head -> [B, N, C].
// When `probs` is given it receives the attention weights [B, heads, N, N] (for visualisation).
Tensor attention(const Tensor& qkv, int64_t num_heads, Tensor* probs = nullptr);

// ---- image ops for the ViT -----------------------------------------------------------------------
// im2col of a P x P, stride P convolution: [B, C, H, W] -> [B, (H/P)*(W/P), C*P*P]; the last dim is
// ordered (c, ky, kx) like a flattened conv weight [E, C, P, P].
Tensor patchify(const Tensor& images, int64_t patch);
// Bicubic resize of [B, C, H, W] to [B, C, out_h, out_w] (a = -0.75, align_corners = false,
// border-clamped taps), as torch.nn.functional.interpolate(mode="bicubic").
Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w);

// ---- operators -------------------------------------------------------------------------------------
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator/(double a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }

}  // namespace bam
