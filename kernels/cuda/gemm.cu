// cuBLASLt behind the engine's row-major GEMM contract. cuBLAS is column-major: a row-major
// C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so B is passed as cuBLAS's first
// operand and A as its second, each with the transpose flag it already has. Descriptors and the
// heuristic's algorithm are cached per (dtype, flags, sizes, strides, pointer alignment, TF32 and
// epilogue: none, bias, or bias gradient); the bias pointer itself is set on the cached
// descriptor before each call. The epilogues are fast paths, never requirements: where cuBLASLt
// offers no algorithm for one (or refuses it at run time), the plan remembers that, the call
// returns false having computed nothing, and the caller takes its unfused path.
#include <cublasLt.h>

#include <array>
#include <map>
#include <mutex>

#include "engine/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

#define BAM_CUBLAS_CHECK(call)                                                                         \
  do {                                                                                                 \
    cublasStatus_t bam_cublas_status = (call);                                                         \
    if (bam_cublas_status != CUBLAS_STATUS_SUCCESS)                                                    \
      ::bam::fail("cuBLASLt error {} ({}) from {} at {}:{}", cublasLtGetStatusName(bam_cublas_status), \
                  static_cast<int>(bam_cublas_status), #call, __FILE__, __LINE__);                     \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLAS recommends for Hopper

bool g_allow_tf32 = false;

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool available = true;  // false: cuBLASLt has no algorithm for this epilogue plan (never for a plain GEMM)
};

// What cuBLASLt's epilogue adds to the product.
enum class Epilogue { none, bias, bias_grad };

struct Context {
  std::mutex mutex;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  // The stream the workspace is used on. One workspace serves one stream: two GEMMs on two streams
  // would share it at the same time and corrupt each other. The engine's work is on one stream
  // (engine/cuda.h, current_stream); a GEMM queued on another is refused rather than raced.
  void* stream = nullptr;
  bool stream_set = false;
  std::map<std::array<int64_t, 16>, Plan> plans;
};

// The handle, workspace and plans (one device: the engine runs on the current device's stream).
// Callers hold ctx.mutex; the handle is created on first use under it.
Context& context_locked(Context& ctx) {
  if (!ctx.handle) {
    BAM_CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
    BAM_CUDA_CHECK(cudaMalloc(&ctx.workspace, kWorkspaceBytes));
  }
  return ctx;
}

Context& shared_context() {
  static Context ctx;
  return ctx;
}

// The largest power of two (up to 256) dividing the address: what the algorithm may assume.
int64_t alignment_of(const void* p) {
  auto address = reinterpret_cast<uintptr_t>(p);
  int64_t align = 256;
  while (align > 1 && address % align != 0) align /= 2;
  return align;
}

// The alignment every matrix of a batched operand keeps: matrix i starts i * stride elements after
// the first, so an odd stride (197 x 197 bf16 scores, say) leaves every other matrix 2-byte aligned
// whatever the base pointer's alignment.
int64_t batched_alignment(const void* p, int64_t batch, int64_t stride, int64_t element_bytes) {
  int64_t align = alignment_of(p);
  if (batch > 1)
    while (align > 1 && (stride * element_bytes) % align != 0) align /= 2;
  return align;
}

cudaDataType_t data_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: fail("gemm (CUDA): dtype {} is not supported (f32, f64, bf16, f16)", dtype_name(dtype));
  }
}

// A column-major layout of `rows` x `cols` with leading dimension ld, batched at `stride`.
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t layout;
  BAM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    BAM_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    BAM_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return layout;
}

}  // namespace

void gemm_allow_tf32(bool allow) { g_allow_tf32 = allow; }

namespace {

// gemm, gemm_bias and gemm_bias_grad. Epilogue::bias adds `bias` (length N) to every row;
// Epilogue::bias_grad writes the row sums of op(A) (length M) to `bias`. Returns false only for an
// epilogue that cuBLASLt cannot run for this layout (nothing is computed then); a plain GEMM
// without an algorithm is an error.
bool run_gemm(DType dtype, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, const void* A,
              int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, float beta,
              Epilogue epilogue_kind, const void* bias, void* C, int64_t ldc, int64_t stride_c, void* stream) {
  if (batch == 0 || M == 0 || N == 0) return true;
  BAM_CHECK(batch < (int64_t(1) << 31), "gemm (CUDA): batch {} exceeds cuBLASLt's 32-bit batch count", batch);
  if (K == 0) {
    // op(A) op(B) is zero: C = beta * C. Only beta 0 and 1 occur in the engine.
    BAM_CHECK(beta == 0.0f || beta == 1.0f, "gemm (CUDA): K = 0 with beta {} is not supported", beta);
    if (beta == 0.0f)
      for (int64_t i = 0; i < batch; ++i)
        BAM_CUDA_CHECK(cudaMemset2DAsync(static_cast<char*>(C) + i * stride_c * dtype_size(dtype),
                                         size_t(ldc) * dtype_size(dtype), 0, size_t(N) * dtype_size(dtype), size_t(M),
                                         as_stream(stream)));
    return true;
  }
  cudaDataType_t type = data_type(dtype);
  bool tf32 = dtype == DType::f32 && g_allow_tf32;
  const int64_t element_bytes = dtype_size(dtype);
  const int64_t align_a = batched_alignment(A, batch, stride_a, element_bytes),
                align_b = batched_alignment(B, batch, stride_b, element_bytes),
                align_c = batched_alignment(C, batch, stride_c, element_bytes);
  std::array<int64_t, 16> key{int64_t(dtype),
                              trans_a,
                              trans_b,
                              batch,
                              M,
                              N,
                              K,
                              lda,
                              ldb,
                              ldc,
                              stride_a,
                              stride_b,
                              stride_c,
                              // the epilogue, and its pointer's alignment, which the heuristic saw
                              tf32 + 2 * int64_t(epilogue_kind) + 8 * alignment_of(bias),
                              align_a,
                              align_b * 512 + align_c};
  Context& ctx = shared_context();
  std::lock_guard<std::mutex> lock(ctx.mutex);
  context_locked(ctx);
  if (!ctx.stream_set) ctx.stream = stream, ctx.stream_set = true;
  BAM_CHECK(stream == ctx.stream,
            "gemm (CUDA): queued on another stream than the engine's, which would share cuBLASLt's workspace with it "
            "(engine/cuda.h: the engine's work runs on one stream)");
  auto it = ctx.plans.find(key);
  if (it == ctx.plans.end()) {
    Plan plan;
    cublasComputeType_t compute = dtype == DType::f64 ? CUBLAS_COMPUTE_64F
                                  : tf32              ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                      : CUBLAS_COMPUTE_32F;
    cudaDataType_t scale = dtype == DType::f64 ? CUDA_R_64F : CUDA_R_32F;
    BAM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, compute, scale));
    // cuBLAS's first operand is our B: stored K x N row-major (N x K column-major) unless trans_b.
    cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    BAM_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
    BAM_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
    // Column-major shapes of the stored matrices.
    plan.a = trans_b ? make_layout(type, K, N, ldb, batch, stride_b) : make_layout(type, N, K, ldb, batch, stride_b);
    plan.b = trans_a ? make_layout(type, M, K, lda, batch, stride_a) : make_layout(type, K, M, lda, batch, stride_a);
    plan.c = make_layout(type, N, M, ldc, batch, stride_c);
    if (epilogue_kind != Epilogue::none) {
      // Column-major C^T is N x M. BIAS: the bias runs down its rows (our columns), as the epilogue
      // adds it. BGRADB: the sum over k of cuBLAS's second operand, our op(A), one value per column
      // of C^T (our rows): the bias gradient of a Linear layer's weight-gradient GEMM.
      cublasLtEpilogue_t epilogue =
          epilogue_kind == Epilogue::bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_BGRADB;
      BAM_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
      if (epilogue_kind == Epilogue::bias_grad) {  // written in C's dtype, stated rather than defaulted
        BAM_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof(type)));
      }
    }

    cublasLtMatmulPreference_t preference;
    BAM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    BAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &kWorkspaceBytes, sizeof(kWorkspaceBytes)));
    uint32_t align_first = uint32_t(align_b), align_second = uint32_t(align_a), align_d = uint32_t(align_c);
    BAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                          &align_first, sizeof(align_first)));
    BAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                          &align_second, sizeof(align_second)));
    BAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                          &align_d, sizeof(align_d)));
    BAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                          &align_d, sizeof(align_d)));
    // The heuristic sees the epilogue's real pointer (as PyTorch and Transformer Engine do), so
    // an algorithm it picks can take this pointer's alignment.
    if (bias)
      BAM_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                                           preference, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    if (epilogue_kind != Epilogue::none && (status != CUBLAS_STATUS_SUCCESS || found == 0)) {
      plan.available = false;  // remembered: the caller takes its unfused path for this layout
    } else {
      BAM_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0,
                "gemm (CUDA): cuBLASLt has no algorithm for {} batch {} M {} N {} K {} (trans {} {}): {}",
                dtype_name(dtype), batch, M, N, K, trans_a, trans_b, cublasLtGetStatusName(status));
      plan.algo = result.algo;
    }
    it = ctx.plans.emplace(key, plan).first;
  }
  Plan& plan = it->second;
  if (!plan.available) return false;
  if (bias)
    BAM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  double alpha64 = 1.0, beta64 = beta;
  float alpha32 = 1.0f, beta32 = beta;
  const void* alpha = dtype == DType::f64 ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta_ptr = dtype == DType::f64 ? static_cast<const void*>(&beta64) : &beta32;
  cublasStatus_t status = cublasLtMatmul(ctx.handle, plan.desc, alpha, B, plan.a, A, plan.b, beta_ptr, C, plan.c, C,
                                         plan.c, &plan.algo, ctx.workspace, kWorkspaceBytes, as_stream(stream));
  if ((status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) &&
      epilogue_kind != Epilogue::none) {
    // Refused at run time (NOT_SUPPORTED, or INVALID_VALUE for an epilogue it cannot take here),
    // before any work: unfused from now on. Any other status is an error.
    plan.available = false;
    return false;
  }
  BAM_CUBLAS_CHECK(status);
  return true;
}

}  // namespace

void gemm(DType dtype, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, float beta, void* C, int64_t ldc,
          int64_t stride_c, void* stream) {
  run_gemm(dtype, trans_a, trans_b, batch, M, N, K, A, lda, stride_a, B, ldb, stride_b, beta, Epilogue::none, nullptr,
           C, ldc, stride_c, stream);
}

bool gemm_bias(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
               const void* B, int64_t ldb, const void* bias, void* C, int64_t ldc, void* stream) {
  if (gemm_epilogue_declined(dtype, M, N, K, bias)) return false;
  return run_gemm(dtype, trans_a, trans_b, 1, M, N, K, A, lda, 0, B, ldb, 0, 0.0f, Epilogue::bias, bias, C, ldc, 0, stream);
}

bool gemm_bias_grad(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                    int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc, void* bias_grad, void* stream) {
  if (gemm_epilogue_declined(dtype, M, N, K, bias_grad)) return false;
  return run_gemm(dtype, trans_a, trans_b, 1, M, N, K, A, lda, 0, B, ldb, 0, 0.0f, Epilogue::bias_grad, bias_grad, C,
                  ldc, 0, stream);
}

}  // namespace bam::cuda_kernels
