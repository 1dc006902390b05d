// Optimizer kernels on the GPU: one fused grid-stride pass per parameter tensor, the same
// arithmetic (in f32) as kernels/cpu/optimizer.cpp. Norm sums go to a device double through a
// block reduction and one atomic add per block.
#include "engine/cuda_check.h"
#include "kernels/cuda/numeric.cuh"
#include "kernels/cuda/optimizer.h"

namespace bam::cuda_kernels {
namespace {

__global__ void sgd_kernel(float* p, const float* g, float* buf, int64_t n, float rate, float mu, float wd,
                           bool first_step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float d = g[i] + wd * p[i];
    float b = first_step ? d : mu * buf[i] + d;
    buf[i] = b;
    p[i] -= rate * b;
  }
}

// sums[0] += ||p||^2, sums[1] += ||g + wd p||^2
__global__ void lars_norms_kernel(const float* p, const float* g, int64_t n, float wd, double* sums) {
  double pp = 0, dd = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double pi = p[i], di = double(g[i]) + double(wd) * pi;
    pp += pi * pi;
    dd += di * di;
  }
  pp = block_all_reduce(pp, SumOp{}, 0.0);
  dd = block_all_reduce(dd, SumOp{}, 0.0);
  if (threadIdx.x == 0) {
    atomicAdd(&sums[0], pp);
    atomicAdd(&sums[1], dd);
  }
}

__global__ void lars_kernel(float* p, const float* g, float* buf, int64_t n, bool adapt, float rate, float mu, float wd,
                            double eta, const double* sums) {
  float trust = 1.0f;
  if (adapt) {
    double p_norm = sqrt(sums[0]), d_norm = sqrt(sums[1]);
    if (p_norm > 0 && d_norm > 0) trust = float(eta * p_norm / d_norm);
  }
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float d = (g[i] + wd * p[i]) * trust;
    float b = mu * buf[i] + d;
    buf[i] = b;
    p[i] -= rate * b;
  }
}

__global__ void sum_of_squares_kernel(const float* x, int64_t n, double* sum) {
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += double(x[i]) * x[i];
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) atomicAdd(sum, acc);
}

__global__ void clip_kernel(float* x, int64_t n, const double* sum_of_squares, double max_norm) {
  double coef = max_norm / (sqrt(*sum_of_squares) + 1e-6);
  if (!(coef < 1.0)) return;  // as the CPU: a NaN norm leaves the gradients alone
  float c = float(coef);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= c;
}

__global__ void scale_kernel(float* x, int64_t n, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= scale;
}

__global__ void ema_kernel(float* ema, const float* x, int64_t n, float m, float one_minus) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    ema[i] = m * ema[i] + one_minus * x[i];
}

// Multi-tensor launches: a list of up to kListTensors tensors cut into chunks of kChunk elements;
// block b works on chunk b, which names its tensor and where in it the chunk starts. The list is
// a kernel parameter (CUDA 12.1+ allows 32 KiB of them), so nothing is copied to the device first.
constexpr int kListTensors = 64, kListChunks = 512;
constexpr int64_t kChunk = int64_t(1) << 15;

struct ChunkTable {
  int32_t tensor[kListChunks];
  int32_t index[kListChunks];  // chunk number within its tensor
};

struct AdamwList {
  float* p[kListTensors];
  const float* g[kListTensors];
  float* m[kListTensors];
  float* v[kListTensors];
  int64_t n[kListTensors];
  float decay[kListTensors];
  ChunkTable chunks;
};

struct SpanList {
  float* x[kListTensors];
  int64_t n[kListTensors];
  ChunkTable chunks;
};

// The chunk block b works on: its tensor's slot and the element range [begin, end).
struct Chunk {
  int t;
  int64_t begin, end;
};
__device__ __forceinline__ Chunk chunk_of(const ChunkTable& table, const int64_t* n) {
  Chunk c;
  c.t = table.tensor[blockIdx.x];
  c.begin = table.index[blockIdx.x] * kChunk;
  c.end = c.begin + kChunk < n[c.t] ? c.begin + kChunk : n[c.t];
  return c;
}

// AdamW with decoupled weight decay, in f32 as kernels/cpu/optimizer.cpp.
__global__ void adamw_many_kernel(AdamwList list, float step_size, float inv_sqrt_bias2, float b1, float b2, float e) {
  const Chunk c = chunk_of(list.chunks, list.n);
  float *p = list.p[c.t], *m = list.m[c.t], *v = list.v[c.t];
  const float* g = list.g[c.t];
  const float decay = list.decay[c.t];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bias2 + e);
  }
}

__global__ void sum_of_squares_many_kernel(SpanList list, double* sum) {
  const Chunk c = chunk_of(list.chunks, list.n);
  const float* x = list.x[c.t];
  double acc = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) acc += double(x[i]) * x[i];
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) atomicAdd(sum, acc);
}

__global__ void clip_many_kernel(SpanList list, const double* sum_of_squares, double max_norm) {
  double coef = max_norm / (sqrt(*sum_of_squares) + 1e-6);
  if (!(coef < 1.0)) return;  // as the CPU: a NaN norm leaves the gradients alone
  const Chunk c = chunk_of(list.chunks, list.n);
  float* x = list.x[c.t];
  const float scale = float(coef);
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) x[i] *= scale;
}

// Walks `count` tensors of sizes size(i), filling a list through add(slot, i) and its chunk table;
// calls launch(chunks) whenever the list or the table is full, and at the end.
template <typename Size, typename Add, typename Launch>
void for_each_list(int64_t count, ChunkTable& table, Size size, Add add, Launch launch) {
  int tensors = 0, chunks = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n = size(i);
    if (n == 0) continue;
    const int64_t pieces = (n + kChunk - 1) / kChunk;
    if (tensors == kListTensors) launch(chunks), tensors = 0, chunks = 0;
    add(tensors, i);
    for (int64_t c = 0; c < pieces; ++c) {
      if (chunks == kListChunks) {  // the table is full: launch, and keep this tensor as slot 0
        launch(chunks);
        add(0, i);
        tensors = 0, chunks = 0;
      }
      table.tensor[chunks] = tensors;
      table.index[chunks] = int32_t(c);
      ++chunks;
    }
    ++tensors;
  }
  if (chunks > 0) launch(chunks);
}

// Reductions need only enough blocks to fill the device once.
unsigned reduce_grid(int64_t n) {
  unsigned g = grid_for(n);
  return g < 1024 ? g : 1024;
}

}  // namespace

void sgd_update(float* p, const float* g, float* buf, int64_t n, double lr, double momentum, double weight_decay,
                bool first_step, void* stream) {
  if (n == 0) return;
  sgd_kernel<<<grid_for(n), kBlock, 0, as_stream(stream)>>>(p, g, buf, n, float(lr), float(momentum),
                                                            float(weight_decay), first_step);
  BAM_CUDA_CHECK_LAUNCH();
}

void lars_update(float* p, const float* g, float* buf, int64_t n, bool adapt, double lr, double momentum,
                 double weight_decay, double eta, double* scratch, void* stream) {
  if (n == 0) return;
  const float wd = adapt ? float(weight_decay) : 0.0f;
  if (adapt) {
    BAM_CUDA_CHECK(cudaMemsetAsync(scratch, 0, 2 * sizeof(double), as_stream(stream)));
    lars_norms_kernel<<<reduce_grid(n), kBlock, 0, as_stream(stream)>>>(p, g, n, wd, scratch);
    BAM_CUDA_CHECK_LAUNCH();
  }
  lars_kernel<<<grid_for(n), kBlock, 0, as_stream(stream)>>>(p, g, buf, n, adapt, float(lr), float(momentum), wd, eta,
                                                             scratch);
  BAM_CUDA_CHECK_LAUNCH();
}

void accumulate_sum_of_squares(const float* x, int64_t n, double* sum, void* stream) {
  if (n == 0) return;
  sum_of_squares_kernel<<<reduce_grid(n), kBlock, 0, as_stream(stream)>>>(x, n, sum);
  BAM_CUDA_CHECK_LAUNCH();
}

void clip_by_norm(float* x, int64_t n, const double* sum_of_squares, double max_norm, void* stream) {
  if (n == 0) return;
  clip_kernel<<<grid_for(n), kBlock, 0, as_stream(stream)>>>(x, n, sum_of_squares, max_norm);
  BAM_CUDA_CHECK_LAUNCH();
}

void scale_in_place(float* x, int64_t n, float scale, void* stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), kBlock, 0, as_stream(stream)>>>(x, n, scale);
  BAM_CUDA_CHECK_LAUNCH();
}

void adamw_update_many(const AdamwTensor* tensors, int64_t count, double lr, double beta1, double beta2, double eps,
                       int64_t step, void* stream) {
  const double bias1 = 1.0 - std::pow(beta1, double(step)), bias2 = 1.0 - std::pow(beta2, double(step));
  AdamwList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return tensors[i].n; },
      [&](int slot, int64_t i) {
        const AdamwTensor& t = tensors[i];
        list.p[slot] = t.p, list.g[slot] = t.g, list.m[slot] = t.m, list.v[slot] = t.v, list.n[slot] = t.n;
        list.decay[slot] = float(1.0 - lr * t.weight_decay);
      },
      [&](int chunks) {
        adamw_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(
            list, float(lr / bias1), float(1.0 / std::sqrt(bias2)), float(beta1), float(beta2), float(eps));
        BAM_CUDA_CHECK_LAUNCH();
      });
}

void accumulate_sum_of_squares_many(const FloatSpan* spans, int64_t count, double* sum, void* stream) {
  SpanList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return spans[i].n; },
      [&](int slot, int64_t i) { list.x[slot] = spans[i].x, list.n[slot] = spans[i].n; },
      [&](int chunks) {
        sum_of_squares_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, sum);
        BAM_CUDA_CHECK_LAUNCH();
      });
}

void clip_by_norm_many(const FloatSpan* spans, int64_t count, const double* sum_of_squares, double max_norm,
                       void* stream) {
  SpanList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return spans[i].n; },
      [&](int slot, int64_t i) { list.x[slot] = spans[i].x, list.n[slot] = spans[i].n; },
      [&](int chunks) {
        clip_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, sum_of_squares, max_norm);
        BAM_CUDA_CHECK_LAUNCH();
      });
}

void ema_update(float* ema, const float* x, int64_t n, double momentum, void* stream) {
  if (n == 0) return;
  ema_kernel<<<grid_for(n), kBlock, 0, as_stream(stream)>>>(ema, x, n, float(momentum), float(1.0 - momentum));
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
