// Optimizer kernels on the GPU, the same arithmetic (in f32) as kernels/cpu/optimizer.cpp. The
// updates (AdamW, SGD, LARS) and the EMA teacher are multi-tensor launches: a whole list of
// parameters per launch. Norm sums stay on the device, so clipping and LARS's trust ratios never
// wait for the host: each block reduces its part and writes it to a slot of its own, and one small
// launch adds the slots in block order. (An atomic add per block would sum in the order the blocks
// finish, which changes from run to run: the clip coefficient, and with it every step of training,
// would differ in the last bits between two runs of the same seed.)
#include <mutex>

#include "engine/cuda_check.h"
#include "engine/error.h"
#include "kernels/cuda/numeric.cuh"
#include "kernels/cuda/optimizer.h"

namespace bam::cuda_kernels {
namespace {

// The blocks' partial sums (two per block for LARS), read by the launch after theirs on the same
// stream. Every launch here has at most kMaxBlocks blocks (reduce_grid, kListChunks).
constexpr int kMaxBlocks = 1024;
__device__ double g_block_sums[2 * kMaxBlocks];

// One scratch for the whole process is right only while every launch that uses it runs on one
// stream (the engine's: engine/cuda.h), which orders them; a second stream would race on it, and
// nothing but a real device would show that. So the first stream seen is the only one taken.
void check_scratch_stream(void* stream) {
  static std::mutex mutex;
  static bool seen = false;
  static void* first = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (!seen) first = stream, seen = true;
  BAM_CHECK(stream == first,
            "optimizer reductions (CUDA): queued on another stream than the engine's; they share one device scratch "
            "(g_block_sums), which only one stream's order keeps apart");
}

// *sum += the `blocks` partial sums, in block order (one block: its threads take fixed strides,
// and the block reduction's tree is fixed too).
__global__ void add_block_sums_kernel(int blocks, double* sum) {
  double acc = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) acc += g_block_sums[b];
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) *sum += acc;
}

void add_block_sums(int blocks, double* sum, void* stream) {
  check_scratch_stream(stream);
  add_block_sums_kernel<<<1, kBlock, 0, as_stream(stream)>>>(blocks, sum);
  BAM_CUDA_CHECK_LAUNCH();
}

__global__ void sum_of_squares_kernel(const float* x, int64_t n) {
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += double(x[i]) * x[i];
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) g_block_sums[blockIdx.x] = acc;
}

__global__ void clip_kernel(float* x, int64_t n, const double* sum_of_squares, double max_norm) {
  double coef = max_norm / (sqrt(*sum_of_squares) + 1e-6);
  if (!(coef < 1.0)) return;  // as the CPU: a NaN norm leaves the gradients alone
  float c = float(coef);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= c;
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
  float step_size[kListTensors];       // lr / (1 - beta1^step), the tensor's own step
  float inv_sqrt_bias2[kListTensors];  // 1 / sqrt(1 - beta2^step)
  ChunkTable chunks;
};

struct SpanList {
  float* x[kListTensors];
  int64_t n[kListTensors];
  ChunkTable chunks;
};

// SGD and LARS: parameter, gradient, momentum buffer. `flag` is SGD's first step (the buffer
// starts as the first update) or LARS's adaptation (matrices: trust ratio and weight decay;
// vectors: neither); `norms` is LARS's pair of sums for this tensor.
struct MomentumList {
  float* p[kListTensors];
  const float* g[kListTensors];
  float* buf[kListTensors];
  int64_t n[kListTensors];
  float weight_decay[kListTensors];
  bool flag[kListTensors];
  double* norms[kListTensors];
  ChunkTable chunks;
};

struct EmaList {
  float* ema[kListTensors];
  const float* x[kListTensors];
  int64_t n[kListTensors];
  ChunkTable chunks;
};

// A launch's parameters may total 32,764 bytes (CUDA 12.1 and later; cmake/BamCuda.cmake refuses an
// older toolkit). The lists and the scalars after them stay well inside that.
constexpr size_t kParameterBytes = 32764;
static_assert(sizeof(AdamwList) + 64 <= kParameterBytes && sizeof(MomentumList) + 64 <= kParameterBytes &&
                  sizeof(SpanList) + 64 <= kParameterBytes && sizeof(EmaList) + 64 <= kParameterBytes,
              "a multi-tensor list is too large for one launch's parameters");

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
__global__ void adamw_many_kernel(AdamwList list, float b1, float b2, float e) {
  const Chunk c = chunk_of(list.chunks, list.n);
  float *p = list.p[c.t], *m = list.m[c.t], *v = list.v[c.t];
  const float* g = list.g[c.t];
  const float decay = list.decay[c.t], step_size = list.step_size[c.t], inv_sqrt_bias2 = list.inv_sqrt_bias2[c.t];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bias2 + e);
  }
}

// SGD with momentum and coupled weight decay (torch.optim.SGD).
__global__ void sgd_many_kernel(MomentumList list, float rate, float mu) {
  const Chunk c = chunk_of(list.chunks, list.n);
  float *p = list.p[c.t], *buf = list.buf[c.t];
  const float* g = list.g[c.t];
  const float wd = list.weight_decay[c.t];
  const bool first_step = list.flag[c.t];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    float d = g[i] + wd * p[i];
    float b = first_step ? d : mu * buf[i] + d;
    buf[i] = b;
    p[i] -= rate * b;
  }
}

// LARS, first pass: norms[0] += ||p||^2 and norms[1] += ||g + wd p||^2 over the chunk.
__global__ void lars_norms_many_kernel(MomentumList list) {
  const Chunk c = chunk_of(list.chunks, list.n);
  const float *p = list.p[c.t], *g = list.g[c.t];
  const double wd = list.weight_decay[c.t];
  double pp = 0, dd = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    double pi = p[i], di = double(g[i]) + wd * pi;
    pp += pi * pi;
    dd += di * di;
  }
  pp = block_all_reduce(pp, SumOp{}, 0.0);
  dd = block_all_reduce(dd, SumOp{}, 0.0);
  if (threadIdx.x == 0) {
    g_block_sums[2 * blockIdx.x] = pp;
    g_block_sums[2 * blockIdx.x + 1] = dd;
  }
}

// Each chunk's pair of sums into its tensor's norms, in chunk order (one thread: a few hundred adds).
__global__ void add_lars_norms_kernel(MomentumList list, int chunks) {
  if (threadIdx.x != 0) return;
  for (int b = 0; b < chunks; ++b) {
    double* norms = list.norms[list.chunks.tensor[b]];
    norms[0] += g_block_sums[2 * b];
    norms[1] += g_block_sums[2 * b + 1];
  }
}

// LARS, second pass: the update scaled by the trust ratio eta ||p|| / ||g + wd p|| (matrices).
__global__ void lars_many_kernel(MomentumList list, float rate, float mu, double eta) {
  const Chunk c = chunk_of(list.chunks, list.n);
  float *p = list.p[c.t], *buf = list.buf[c.t];
  const float* g = list.g[c.t];
  const float wd = list.weight_decay[c.t];
  float trust = 1.0f;
  if (list.flag[c.t]) {
    const double p_norm = sqrt(list.norms[c.t][0]), d_norm = sqrt(list.norms[c.t][1]);
    if (p_norm > 0 && d_norm > 0) trust = float(eta * p_norm / d_norm);
  }
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    float d = (g[i] + wd * p[i]) * trust;
    float b = mu * buf[i] + d;
    buf[i] = b;
    p[i] -= rate * b;
  }
}

__global__ void ema_many_kernel(EmaList list, float m, float one_minus) {
  const Chunk c = chunk_of(list.chunks, list.n);
  float* ema = list.ema[c.t];
  const float* x = list.x[c.t];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) ema[i] = m * ema[i] + one_minus * x[i];
}

__global__ void sum_of_squares_many_kernel(SpanList list) {
  const Chunk c = chunk_of(list.chunks, list.n);
  const float* x = list.x[c.t];
  double acc = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) acc += double(x[i]) * x[i];
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) g_block_sums[blockIdx.x] = acc;
}

// GradScaler's unscale: x *= inverse, and *sum += the squares of the results (inf or NaN anywhere
// makes the sum non-finite), in one pass.
__global__ void unscale_many_kernel(SpanList list, float inverse) {
  const Chunk c = chunk_of(list.chunks, list.n);
  float* x = list.x[c.t];
  double acc = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    const float v = x[i] * inverse;
    x[i] = v;
    acc += double(v) * v;
  }
  acc = block_all_reduce(acc, SumOp{}, 0.0);
  if (threadIdx.x == 0) g_block_sums[blockIdx.x] = acc;
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

// for_each_list over float spans: launch(list, chunks) for each launch's worth of them.
template <typename Launch>
void for_each_span_list(const FloatSpan* spans, int64_t count, Launch launch) {
  SpanList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return spans[i].n; },
      [&](int slot, int64_t i) { list.x[slot] = spans[i].x, list.n[slot] = spans[i].n; },
      [&](int chunks) { launch(list, chunks); });
}

// Reductions need only enough blocks to fill the device once.
unsigned reduce_grid(int64_t n) {
  unsigned g = grid_for(n);
  return g < 1024 ? g : 1024;
}

}  // namespace

void accumulate_sum_of_squares(const float* x, int64_t n, double* sum, void* stream) {
  if (n == 0) return;
  const unsigned blocks = reduce_grid(n);
  sum_of_squares_kernel<<<blocks, kBlock, 0, as_stream(stream)>>>(x, n);
  BAM_CUDA_CHECK_LAUNCH();
  add_block_sums(int(blocks), sum, stream);
}

void clip_by_norm(float* x, int64_t n, const double* sum_of_squares, double max_norm, void* stream) {
  if (n == 0) return;
  clip_kernel<<<grid_for(n), kBlock, 0, as_stream(stream)>>>(x, n, sum_of_squares, max_norm);
  BAM_CUDA_CHECK_LAUNCH();
}

void adamw_update_many(const AdamwTensor* tensors, int64_t count, double lr, double beta1, double beta2, double eps,
                       void* stream) {
  AdamwList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return tensors[i].n; },
      [&](int slot, int64_t i) {
        const AdamwTensor& t = tensors[i];
        list.p[slot] = t.p, list.g[slot] = t.g, list.m[slot] = t.m, list.v[slot] = t.v, list.n[slot] = t.n;
        list.decay[slot] = float(1.0 - lr * t.weight_decay);
        // As the CPU twin (kernels/cpu/optimizer.cpp): the corrections in double, rounded to f32.
        const double bias1 = 1.0 - std::pow(beta1, double(t.step)), bias2 = 1.0 - std::pow(beta2, double(t.step));
        list.step_size[slot] = float(lr / bias1);
        list.inv_sqrt_bias2[slot] = float(1.0 / std::sqrt(bias2));
      },
      [&](int chunks) {
        adamw_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, float(beta1), float(beta2), float(eps));
        BAM_CUDA_CHECK_LAUNCH();
      });
}

void accumulate_sum_of_squares_many(const FloatSpan* spans, int64_t count, double* sum, void* stream) {
  for_each_span_list(spans, count, [&](const SpanList& list, int chunks) {
    sum_of_squares_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list);
    BAM_CUDA_CHECK_LAUNCH();
    add_block_sums(chunks, sum, stream);
  });
}

void unscale_many(const FloatSpan* spans, int64_t count, float inverse, double* sum, void* stream) {
  for_each_span_list(spans, count, [&](const SpanList& list, int chunks) {
    unscale_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, inverse);
    BAM_CUDA_CHECK_LAUNCH();
    add_block_sums(chunks, sum, stream);
  });
}

void clip_by_norm_many(const FloatSpan* spans, int64_t count, const double* sum_of_squares, double max_norm,
                       void* stream) {
  for_each_span_list(spans, count, [&](const SpanList& list, int chunks) {
    clip_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, sum_of_squares, max_norm);
    BAM_CUDA_CHECK_LAUNCH();
  });
}

void sgd_update_many(const MomentumTensor* tensors, int64_t count, double lr, double momentum, void* stream) {
  MomentumList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return tensors[i].n; },
      [&](int slot, int64_t i) {
        const MomentumTensor& t = tensors[i];
        list.p[slot] = t.p, list.g[slot] = t.g, list.buf[slot] = t.buf, list.n[slot] = t.n;
        list.weight_decay[slot] = float(t.weight_decay), list.flag[slot] = t.first_step;
      },
      [&](int chunks) {
        sgd_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, float(lr), float(momentum));
        BAM_CUDA_CHECK_LAUNCH();
      });
}

void lars_update_many(const MomentumTensor* tensors, int64_t count, double lr, double momentum, double eta,
                      double* norms, void* stream) {
  if (count == 0) return;
  check_scratch_stream(stream);
  BAM_CUDA_CHECK(cudaMemsetAsync(norms, 0, size_t(2 * count) * sizeof(double), as_stream(stream)));
  MomentumList list{};
  // Vectors (adapt false) are neither decayed nor adapted, as the CPU's lars_update.
  auto add = [&](int slot, int64_t i) {
    const MomentumTensor& t = tensors[i];
    list.p[slot] = t.p, list.g[slot] = t.g, list.buf[slot] = t.buf, list.n[slot] = t.n;
    list.weight_decay[slot] = t.adapt ? float(t.weight_decay) : 0.0f, list.flag[slot] = t.adapt;
    list.norms[slot] = norms + 2 * i;
  };
  // The norms of the matrices first (a vector's size counts as 0 there: it is skipped), then the
  // updates of all tensors.
  for_each_list(
      count, list.chunks, [&](int64_t i) { return tensors[i].adapt ? tensors[i].n : 0; }, add,
      [&](int chunks) {
        lars_norms_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list);
        BAM_CUDA_CHECK_LAUNCH();
        add_lars_norms_kernel<<<1, 32, 0, as_stream(stream)>>>(list, chunks);
        BAM_CUDA_CHECK_LAUNCH();
      });
  for_each_list(
      count, list.chunks, [&](int64_t i) { return tensors[i].n; }, add,
      [&](int chunks) {
        lars_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, float(lr), float(momentum), eta);
        BAM_CUDA_CHECK_LAUNCH();
      });
}

void ema_update_many(const EmaPair* pairs, int64_t count, double momentum, void* stream) {
  EmaList list{};
  for_each_list(
      count, list.chunks, [&](int64_t i) { return pairs[i].n; },
      [&](int slot, int64_t i) { list.ema[slot] = pairs[i].ema, list.x[slot] = pairs[i].x, list.n[slot] = pairs[i].n; },
      [&](int chunks) {
        ema_many_kernel<<<chunks, kBlock, 0, as_stream(stream)>>>(list, float(momentum), float(1.0 - momentum));
        BAM_CUDA_CHECK_LAUNCH();
      });
}

}  // namespace bam::cuda_kernels
