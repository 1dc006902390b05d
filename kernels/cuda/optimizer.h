// CUDA twins of kernels/cpu/optimizer.h on f32 tensors (fp32 master weights), asynchronous on
// `stream`. Norms are accumulated on the device (double, atomically) so that clipping and LARS
// need no host round trip: clip_by_norm reads the accumulated sum where it runs.
#pragma once

#include <cstdint>

namespace bam::cuda_kernels {

// *sum += sum(x^2) (sum is a device double; zero it first with cudaMemsetAsync or a fill).
void accumulate_sum_of_squares(const float* x, int64_t n, double* sum, void* stream);
// x *= min(1, max_norm / (sqrt(*sum_of_squares) + 1e-6)), the coefficient computed on the device.
void clip_by_norm(float* x, int64_t n, const double* sum_of_squares, double max_norm, void* stream);

// Multi-tensor forms: one launch covers a whole list of tensors (their pointers and sizes travel as
// a kernel parameter, split into as many launches as needed), instead of a launch per tensor.
struct AdamwTensor {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  double weight_decay;
  int64_t step;  // this tensor's updates, this one included (its bias corrections)
};
void adamw_update_many(const AdamwTensor* tensors, int64_t count, double lr, double beta1, double beta2, double eps,
                       void* stream);
struct FloatSpan {
  float* x;
  int64_t n;
};
// *sum += sum of x^2 over every span.
void accumulate_sum_of_squares_many(const FloatSpan* spans, int64_t count, double* sum, void* stream);
// GradScaler's unscale: every span *= inverse, and *sum += the squares of the results.
void unscale_many(const FloatSpan* spans, int64_t count, float inverse, double* sum, void* stream);
// Every span *= min(1, max_norm / (sqrt(*sum_of_squares) + 1e-6)).
void clip_by_norm_many(const FloatSpan* spans, int64_t count, const double* sum_of_squares, double max_norm,
                       void* stream);

// SGD (momentum, coupled weight decay) and LARS over a list of tensors. first_step: SGD's buffer
// starts as the first update. adapt: LARS's trust ratio and weight decay apply (matrices; vectors
// get plain momentum). norms: 2 * count device doubles of scratch for LARS, overwritten.
struct MomentumTensor {
  float* p;
  const float* g;
  float* buf;
  int64_t n;
  double weight_decay;
  bool first_step;
  bool adapt;
};
void sgd_update_many(const MomentumTensor* tensors, int64_t count, double lr, double momentum, void* stream);
void lars_update_many(const MomentumTensor* tensors, int64_t count, double lr, double momentum, double eta,
                      double* norms, void* stream);

// ema = momentum * ema + (1 - momentum) * x for every pair (the EMA teacher).
struct EmaPair {
  float* ema;
  const float* x;
  int64_t n;
};
void ema_update_many(const EmaPair* pairs, int64_t count, double momentum, void* stream);

}  // namespace bam::cuda_kernels
