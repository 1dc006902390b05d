// Sinkhorn balancing on the GPU, the steps of the CPU specification (kernels/cpu/sinkhorn.cpp):
//   column maxima of S/eps over chunks of rows, then over the chunks -> K = exp(S/eps - max of
//   its column) (a block per row) -> per iteration: column sums of K y over chunks of rows, a
//   pass that turns them into x, and row sums of K x into y (a block per row) -> the first
//   out_rows rows of K x, normalised. K, sums and scalings in double, as on the CPU. For the BAM
//   shapes (2048 x 512 at B = 256) K is 8 MB and stays in L2 across the passes.
#include <cuda/std/limits>

#include "engine/cuda_check.h"
#include "kernels/cuda/numeric.cuh"
#include "kernels/cuda/sinkhorn.h"

namespace bam::cuda_kernels {
namespace {

constexpr int64_t kChunkRows = 128;  // rows per partial column sum

struct Geometry {
  int64_t R, C, B;
  bool masking;
  __device__ __forceinline__ bool masked(int64_t i, int64_t j) const { return masking && j % B == i % B; }
};

// partial_max[chunk][j] = max over the chunk's unmasked rows i of S[i, j] / eps.
template <typename T>
__global__ void column_partial_max_kernel(const T* s, T* partial_max, Geometry g, T inv_eps) {
  const int64_t chunk = blockIdx.y, begin = chunk * kChunkRows;
  const int64_t end = begin + kChunkRows < g.R ? begin + kChunkRows : g.R;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < g.C; j += int64_t(gridDim.x) * blockDim.x) {
    T m = -cuda::std::numeric_limits<T>::infinity();
    for (int64_t i = begin; i < end; ++i)
      if (!g.masked(i, j)) m = max(m, s[i * g.C + j] * inv_eps);
    partial_max[chunk * g.C + j] = m;
  }
}

// One block: column_max[j] from the chunks' maxima (kept in the first chunk's row), then
// x[j] = exp(column_max[j] - the largest), in double.
template <typename T>
__global__ void column_max_kernel(T* partial_max, double* x, int64_t chunks, int64_t C) {
  T top = -cuda::std::numeric_limits<T>::infinity();
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    T m = partial_max[j];
    for (int64_t c = 1; c < chunks; ++c) m = max(m, partial_max[c * C + j]);
    partial_max[j] = m;
    top = max(top, m);
  }
  top = block_all_reduce(top, MaxOp{}, -cuda::std::numeric_limits<T>::infinity());
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) x[j] = exp(double(partial_max[j]) - double(top));
}

// K for a block's rows, each column shifted by its maximum; y = 1.
template <typename T>
__global__ void exp_kernel(const T* s, const T* column_max, double* k, double* y, Geometry g, T inv_eps) {
  for (int64_t i = blockIdx.x; i < g.R; i += gridDim.x) {
    for (int64_t j = threadIdx.x; j < g.C; j += blockDim.x)
      k[i * g.C + j] = g.masked(i, j) ? 0.0 : exp(double(s[i * g.C + j] * inv_eps - column_max[j]));
    if (threadIdx.x == 0) y[i] = 1.0;
  }
}

// partial[chunk][j] = sum over the chunk's rows i of K[i, j] y[i].
__global__ void column_partial_kernel(const double* k, const double* y, double* partial, Geometry g) {
  const int64_t chunk = blockIdx.y, begin = chunk * kChunkRows;
  const int64_t end = begin + kChunkRows < g.R ? begin + kChunkRows : g.R;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < g.C; j += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0;
    for (int64_t i = begin; i < end; ++i) sum += k[i * g.C + j] * y[i];
    partial[chunk * g.C + j] = sum;
  }
}

__global__ void column_scale_kernel(const double* partial, double* x, int64_t chunks, int64_t C, double mass) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < C; j += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[c * C + j];
    x[j] = mass / sum;
  }
}

__global__ void row_scale_kernel(const double* k, const double* x, double* y, Geometry g, double mass) {
  for (int64_t i = blockIdx.x; i < g.R; i += gridDim.x) {
    double sum = 0;
    for (int64_t j = threadIdx.x; j < g.C; j += blockDim.x) sum += k[i * g.C + j] * x[j];
    sum = block_all_reduce(sum, SumOp{}, 0.0);
    if (threadIdx.x == 0) y[i] = mass / sum;
  }
}

template <typename T>
__global__ void output_kernel(const double* k, const double* x, T* out, int64_t out_rows, Geometry g) {
  for (int64_t i = blockIdx.x; i < out_rows; i += gridDim.x) {
    double sum = 0;
    for (int64_t j = threadIdx.x; j < g.C; j += blockDim.x) sum += k[i * g.C + j] * x[j];
    sum = block_all_reduce(sum, SumOp{}, 0.0);
    for (int64_t j = threadIdx.x; j < g.C; j += blockDim.x) out[i * g.C + j] = T(k[i * g.C + j] * x[j] / sum);
  }
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

struct ScratchLayout {
  size_t k, partial_max, x, y, partial, total;
  ScratchLayout(size_t element, const cpu::SinkhornShape& sh) {
    const int64_t chunks = (sh.rows + kChunkRows - 1) / kChunkRows;
    k = 0;
    partial_max = k + align256(size_t(sh.rows * sh.columns) * sizeof(double));
    x = partial_max + align256(size_t(chunks * sh.columns) * element);
    y = x + align256(size_t(sh.columns) * sizeof(double));
    partial = y + align256(size_t(sh.rows) * sizeof(double));
    total = partial + align256(size_t(chunks * sh.columns) * sizeof(double));
  }
};

}  // namespace

size_t sinkhorn_scratch_bytes(DType dtype, const cpu::SinkhornShape& shape) {
  return ScratchLayout(dtype_size(dtype), shape).total;
}

void sinkhorn_balance(DType dtype, const void* s, void* out, void* scratch, const cpu::SinkhornShape& sh,
                      void* stream) {
  if (sh.rows == 0 || sh.columns == 0) return;
  BAM_CHECK(sh.columns <= sh.rows && sh.out_rows <= sh.rows,
            "sinkhorn (CUDA): {} columns and {} output rows need at most {} rows", sh.columns, sh.out_rows, sh.rows);
  const Geometry g{sh.rows, sh.columns, sh.batch, sh.positive_masking};
  const int64_t chunks = (sh.rows + kChunkRows - 1) / kChunkRows;
  BAM_CHECK(chunks < 65536, "sinkhorn (CUDA): {} rows exceed the column-sum grid", sh.rows);
  const unsigned threads = sh.columns >= 512 ? 256 : sh.columns >= 128 ? 128 : 32;
  const unsigned column_blocks = unsigned((sh.columns + kBlock - 1) / kBlock);
  cudaStream_t st = as_stream(stream);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    ScratchLayout layout(sizeof(T), sh);
    auto* base = static_cast<unsigned char*>(scratch);
    double* k = reinterpret_cast<double*>(base + layout.k);
    T* partial_max = reinterpret_cast<T*>(base + layout.partial_max);
    double* x = reinterpret_cast<double*>(base + layout.x);
    double* y = reinterpret_cast<double*>(base + layout.y);
    double* partial = reinterpret_cast<double*>(base + layout.partial);
    const T inv_eps = T(1.0 / sh.eps);
    column_partial_max_kernel<T>
        <<<dim3(column_blocks, unsigned(chunks)), kBlock, 0, st>>>(static_cast<const T*>(s), partial_max, g, inv_eps);
    column_max_kernel<T><<<1, kBlock, 0, st>>>(partial_max, x, chunks, sh.columns);
    exp_kernel<T><<<row_blocks(sh.rows), threads, 0, st>>>(static_cast<const T*>(s), partial_max, k, y, g, inv_eps);
    for (int64_t it = 0; it < sh.iterations; ++it) {
      column_partial_kernel<<<dim3(column_blocks, unsigned(chunks)), kBlock, 0, st>>>(k, y, partial, g);
      column_scale_kernel<<<column_blocks, kBlock, 0, st>>>(partial, x, chunks, sh.columns, sh.column_mass);
      row_scale_kernel<<<row_blocks(sh.rows), threads, 0, st>>>(k, x, y, g, sh.row_mass);
    }
    output_kernel<T><<<row_blocks(sh.out_rows), threads, 0, st>>>(k, x, static_cast<T*>(out), sh.out_rows, g);
  };
  dispatch_wide_storage("sinkhorn", dtype, run);
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
