// CUDA twins of kernels/cpu/optimizer.h on f32 tensors (fp32 master weights), asynchronous on
// `stream`. Norms are accumulated on the device (double, atomically) so that clipping and LARS
// need no host round trip: scale_by_norm reads the accumulated sum where it runs.
#pragma once

#include <cstdint>

namespace bam::cuda_kernels {

void sgd_update(float* p, const float* g, float* buf, int64_t n, double lr, double momentum, double weight_decay,
                bool first_step, void* stream);
// scratch: 2 doubles of device memory (||p||^2 and ||d||^2), overwritten.
void lars_update(float* p, const float* g, float* buf, int64_t n, bool adapt, double lr, double momentum,
                 double weight_decay, double eta, double* scratch, void* stream);

// *sum += sum(x^2) (sum is a device double; zero it first with cudaMemsetAsync or a fill).
void accumulate_sum_of_squares(const float* x, int64_t n, double* sum, void* stream);
// x *= min(1, max_norm / (sqrt(*sum_of_squares) + 1e-6)), the coefficient computed on the device.
void clip_by_norm(float* x, int64_t n, const double* sum_of_squares, double max_norm, void* stream);
void scale_in_place(float* x, int64_t n, float scale, void* stream);

// Multi-tensor forms: one launch covers a whole list of tensors (their pointers and sizes travel as
// a kernel parameter, split into as many launches as needed), instead of a launch per tensor.
struct AdamwTensor {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  double weight_decay;
};
void adamw_update_many(const AdamwTensor* tensors, int64_t count, double lr, double beta1, double beta2, double eps,
                       int64_t step, void* stream);
struct FloatSpan {
  float* x;
  int64_t n;
};
// *sum += sum of x^2 over every span.
void accumulate_sum_of_squares_many(const FloatSpan* spans, int64_t count, double* sum, void* stream);
// Every span *= min(1, max_norm / (sqrt(*sum_of_squares) + 1e-6)).
void clip_by_norm_many(const FloatSpan* spans, int64_t count, const double* sum_of_squares, double max_norm,
                       void* stream);
void ema_update(float* ema, const float* x, int64_t n, double momentum, void* stream);

}  // namespace bam::cuda_kernels
