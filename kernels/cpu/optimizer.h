// Optimizer update kernels on f32 parameters (the fp32 master weights), one tensor at a time.
#pragma once

#include <cstdint>

namespace bam::cpu {

// AdamW (decoupled weight decay, as torch.optim.AdamW):
//   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, double lr, double beta1, double beta2,
                  double eps, double weight_decay, int64_t step);

// SGD with momentum (torch.optim.SGD, dampening 0): d = g + wd p; buf = mu buf + d; p -= lr buf.
// On the first step buf = d.
void sgd_update(float* p, const float* g, float* buf, int64_t n, double lr, double momentum, double weight_decay,
                bool first_step);

// LARS (as the BAM/DINO utils.LARS): for tensors with more than one dim, d = g + wd p scaled by the
// trust ratio eta ||p|| / ||d|| (1 when either norm is 0); 1-d tensors use d = g. Then
// buf = mu buf + d; p -= lr buf.
void lars_update(float* p, const float* g, float* buf, int64_t n, bool adapt, double lr, double momentum,
                 double weight_decay, double eta);

// Sum of squares in double (for gradient norms).
double sum_of_squares(const float* x, int64_t n);
// x *= scale
void scale_in_place(float* x, int64_t n, float scale);
// ema = m ema + (1 - m) x
void ema_update(float* ema, const float* x, int64_t n, double momentum);

}  // namespace bam::cpu
