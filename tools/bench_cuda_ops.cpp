// bench_cuda_ops: times bam's CUDA kernels one op at a time on the shapes of ViT-S/16 BAM training
// and prints one markdown table: time, achieved TB/s or TFLOP/s, and the fraction of the H200's
// ceiling. Calls the raw-pointer entry points of kernels/cuda directly, on the engine's stream.
//
// Shape letters: B images, N tokens, H heads, D head dim; M, N, K for GEMM (C is M x N).
// rows = 256 images x 2 global crops x 197 tokens = 100864. Exits 77 when no device answers.
// Usage: bench_cuda_ops  (no flags; a few seconds on an H200, capped well under a minute)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda.h"
#include "engine/cuda_check.h"
#include "engine/dtype.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/optimizer.h"
#include "kernels/cuda/reduce.h"
#include "kernels/cuda/rows.h"

namespace {

using bam::DType;
namespace kc = bam::cuda_kernels;

// H200 SXM ceilings: HBM3e bandwidth, dense bf16 and TF32 tensor cores, f32 on the CUDA cores.
enum class Ceiling { hbm, bf16_tc, tf32_tc, f32_simt };
struct CeilingInfo {
  const char* name;
  double per_second;  // bytes for hbm, FLOPs otherwise
};
constexpr CeilingInfo kCeilings[] = {{"HBM", 4.24e12}, {"bf16 TC", 782e12}, {"TF32 TC", 391e12}, {"f32 SIMT", 60e12}};
const CeilingInfo& info(Ceiling c) { return kCeilings[int(c)]; }

constexpr int kMaxTimedLaunches = 20;
constexpr int kMinTimedLaunches = 3;
constexpr double kTimedBudgetMs = 1000.0;  // per op: slow kernels get fewer timed launches
constexpr double kSlowLaunchMs = 200.0;    // a first launch this slow skips the remaining warm-ups
constexpr double kDeadlineSeconds = 40.0;  // ops reached later are skipped

struct Row {
  std::string op, shape, dtype;
  double us = 0.0;
  double achieved = 0.0;  // bytes/s or FLOP/s, by the ceiling's kind
  Ceiling ceiling = Ceiling::hbm;
  std::string note;  // non-empty: the op did not run (error, lost device or time budget)
};

cudaStream_t stream() { return static_cast<cudaStream_t>(bam::cuda::current_stream()); }

// Device memory from the engine's caching allocator, returned on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes), ptr_(bam::cuda::device_allocate(bytes, 0)) {}
  DeviceBuffer(int64_t count, DType dtype) : DeviceBuffer(size_t(count * bam::dtype_size(dtype))) {}
  ~DeviceBuffer() { bam::cuda::device_free(ptr_, bytes_, 0); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  size_t bytes_;
  void* ptr_;
};

// Uniform values in [lo, hi): one random chunk is uploaded, then doubled on the device until the
// buffer is full (generating 100M values on the host would cost more than the whole benchmark).
void fill_random(const DeviceBuffer& buf, DType dtype, int64_t count, float lo, float hi, uint32_t seed) {
  const int64_t elem = bam::dtype_size(dtype);
  const int64_t chunk = std::min<int64_t>(count, int64_t(1) << 20);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<uint8_t> host(size_t(chunk * elem));
  for (int64_t i = 0; i < chunk; ++i) {
    float v = dist(rng);
    if (dtype == DType::bf16) {
      uint16_t bits = bam::float_to_bf16_bits(v);
      std::memcpy(&host[size_t(i * elem)], &bits, 2);
    } else {
      std::memcpy(&host[size_t(i * elem)], &v, 4);
    }
  }
  auto* dst = buf.as<uint8_t>();
  bam::cuda::copy_bytes(dst, host.data(), host.size(), bam::cuda::CopyKind::host_to_device);
  for (int64_t filled = chunk; filled < count;) {
    int64_t n = std::min(filled, count - filled);
    BAM_CUDA_CHECK(cudaMemcpyAsync(dst + filled * elem, dst, size_t(n * elem), cudaMemcpyDeviceToDevice, stream()));
    filled += n;
  }
  bam::cuda::synchronize();  // the host chunk dies here
}

// Event pair around launches on the engine's stream.
class EventTimer {
 public:
  EventTimer() {
    BAM_CUDA_CHECK(cudaEventCreate(&start_));
    BAM_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  double time_ms(const std::function<void()>& launch) {
    BAM_CUDA_CHECK(cudaEventRecord(start_, stream()));
    launch();
    BAM_CUDA_CHECK(cudaEventRecord(stop_, stream()));
    BAM_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    BAM_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

// Median time of one launch in microseconds, after warm-up.
double median_us(const std::function<void()>& launch) {
  EventTimer timer;
  double estimate = timer.time_ms(launch);  // the first call may include one-off setup (cuBLASLt)
  if (estimate < kSlowLaunchMs)
    for (int i = 0; i < 2; ++i) estimate = timer.time_ms(launch);
  int reps = std::clamp(int(kTimedBudgetMs / std::max(estimate, 1e-3)), kMinTimedLaunches, kMaxTimedLaunches);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) times.push_back(timer.time_ms(launch));
  std::sort(times.begin(), times.end());
  return 1e3 * times[times.size() / 2];
}

class Table {
 public:
  double elapsed_s() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

  // work: bytes moved for Ceiling::hbm, FLOPs otherwise. Ops reached after the deadline are listed, not run.
  void measure(std::string op, std::string shape, std::string dtype, Ceiling ceiling, double work,
               const std::function<void()>& launch) {
    Row row{std::move(op), std::move(shape), std::move(dtype), 0.0, 0.0, ceiling, ""};
    if (device_lost_) {
      row.note = "skipped: device unusable";
    } else if (elapsed_s() > kDeadlineSeconds) {
      row.note = "skipped: time budget";
    } else {
      try {
        row.us = median_us(launch);
        row.achieved = work / (row.us * 1e-6);
        std::fprintf(stderr, "  %-28s %-26s %-8s %10.1f us\n", row.op.c_str(), row.shape.c_str(), row.dtype.c_str(),
                     row.us);
      } catch (const std::exception& e) {
        row.note = failure(row.op, e.what());
      }
    }
    rows_.push_back(std::move(row));
  }
  void measure(std::string op, std::string shape, DType dtype, Ceiling ceiling, double work,
               const std::function<void()>& launch) {
    measure(std::move(op), std::move(shape), bam::dtype_name(dtype), ceiling, work, launch);
  }
  // A whole group failed outside its launches (allocation, upload), or was never started.
  void fail_group(const std::string& group, const char* what) { skip_group(group, failure(group, what)); }
  void skip_group(const std::string& group, std::string why) {
    rows_.push_back(Row{group, "-", "-", 0.0, 0.0, Ceiling::hbm, std::move(why)});
  }
  bool device_lost() const { return device_lost_; }
  int failures() const { return failures_; }

  void print() const {
    std::printf("\n| op | shape | dtype | time (us) | achieved | %% of ceiling |\n");
    std::printf("|---|---|---|---:|---:|---:|\n");
    for (const Row& r : rows_) {
      if (!r.note.empty()) {
        std::printf("| %s | %s | %s | - | - | %s |\n", r.op.c_str(), r.shape.c_str(), r.dtype.c_str(), r.note.c_str());
        continue;
      }
      bool bytes = r.ceiling == Ceiling::hbm;
      std::string achieved = fmt::format("{:.2f} {}", r.achieved * 1e-12, bytes ? "TB/s" : "TFLOP/s");
      std::printf("| %s | %s | %s | %.1f | %s | %.1f%% (%s) |\n", r.op.c_str(), r.shape.c_str(), r.dtype.c_str(), r.us,
                  achieved.c_str(), 100.0 * r.achieved / info(r.ceiling).per_second, info(r.ceiling).name);
    }
    std::printf(
        "\nMedian of up to %d launches after warm-up, cudaEvent on the engine's stream. Memory-bound rows count "
        "bytes read + bytes written of the minimal traffic against HBM 4.24 TB/s; GEMM counts 2*M*N*K FLOPs, "
        "attention 4*B*H*N*N*D forward and 10*B*H*N*N*D backward. Ceilings: bf16 TC 782 TFLOP/s (dense), TF32 TC "
        "391, f32 SIMT ~60 (f32 without TF32, and f32 attention).\n",
        kMaxTimedLaunches);
  }

 private:
  // A sticky error (an illegal address, say) poisons the context: every later op is skipped.
  std::string failure(const std::string& op, const char* what) {
    ++failures_;
    std::fprintf(stderr, "bench_cuda_ops: %s failed: %s\n", op.c_str(), what);
    device_lost_ = !bam::cuda::device_is_usable();
    return fmt::format("FAILED: {}", what);
  }

  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::vector<Row> rows_;
  int failures_ = 0;
  bool device_lost_ = false;
};

std::string dims(int64_t a, int64_t b) { return fmt::format("{}x{}", a, b); }

// ---- the ops ----------------------------------------------------------------------------------

void bench_copy(Table& t) {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer src(bytes), dst(bytes);
  BAM_CUDA_CHECK(cudaMemsetAsync(src.get(), 0x3c, bytes, stream()));
  t.measure("d2d copy (cudaMemcpyAsync)", "1 GiB", "bytes", Ceiling::hbm, 2.0 * bytes,
            [&] { BAM_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream())); });
}

void bench_elementwise(Table& t) {
  const int64_t n = 100'000'000;
  for (DType dtype : {DType::f32, DType::bf16}) {
    DeviceBuffer x(n, dtype), y(n, dtype);
    fill_random(x, dtype, n, -3.0f, 3.0f, 1);
    t.measure("gelu (erf) forward", std::to_string(n), dtype, Ceiling::hbm, 2.0 * n * bam::dtype_size(dtype),
              [&] { kc::unary_forward(bam::cpu::UnaryOp::gelu_erf, dtype, x.get(), y.get(), n, {}, stream()); });
    DeviceBuffer dy(n, dtype), dx(n, dtype);
    fill_random(dy, dtype, n, -1.0f, 1.0f, 11);
    t.measure("gelu (erf) backward", std::to_string(n), dtype, Ceiling::hbm, 3.0 * n * bam::dtype_size(dtype), [&] {
      kc::unary_backward(bam::cpu::UnaryOp::gelu_erf, dtype, x.get(), nullptr, dy.get(), dx.get(), n, {}, stream());
    });
  }
  {  // the autocast boundary: the f32 stream to 16 bits, and a 16-bit branch added into it
    const int64_t one[1] = {n}, unit[1] = {1};
    DeviceBuffer f32(n, DType::f32), half(n, DType::bf16), sum(n, DType::f32);
    fill_random(f32, DType::f32, n, -1.0f, 1.0f, 12);
    fill_random(half, DType::bf16, n, -1.0f, 1.0f, 13);
    t.measure("cast f32 -> bf16", std::to_string(n), "f32>bf16", Ceiling::hbm, 6.0 * n, [&] {
      kc::copy_strided(f32.get(), DType::f32, unit, half.get(), DType::bf16, unit, one, 1, stream());
    });
    t.measure("residual add f32 + bf16", std::to_string(n), "f32+bf16", Ceiling::hbm, 10.0 * n, [&] {
      kc::add_mixed(DType::f32, f32.get(), DType::bf16, half.get(), sum.get(), n, stream());
    });
  }
  const DType dtype = DType::bf16;
  const int64_t shape[2] = {100'000, 1'000}, strides[2] = {1'000, 1};
  DeviceBuffer a(n, dtype), b(n, dtype), out(n, dtype);
  fill_random(a, dtype, n, -1.0f, 1.0f, 2);
  fill_random(b, dtype, n, -1.0f, 1.0f, 3);
  t.measure("add forward (contiguous)", dims(shape[0], shape[1]), dtype, Ceiling::hbm, 3.0 * n * 2, [&] {
    kc::binary_forward(bam::cpu::BinaryOp::add, dtype, a.get(), strides, b.get(), strides, out.get(), shape, 2,
                       stream());
  });
}

void bench_layer_norm(Table& t) {
  const int64_t rows = 256 * 2 * 197, cols = 384;
  // (input, output) types: f32 and bf16 as themselves, and f32 in with bf16 out (autocast).
  const std::pair<DType, DType> types[] = {
      {DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f32, DType::bf16}};
  for (auto [dtype, out_dtype] : types) {
    const double s = double(bam::dtype_size(dtype)), so = double(bam::dtype_size(out_dtype));
    const double in = double(rows * cols) * s, out = double(rows * cols) * so;
    const double params = double(cols) * s, stats = 2.0 * rows * 4;  // mean and rstd are f32
    const std::string label =
        dtype == out_dtype ? std::string(bam::dtype_name(dtype))
                           : fmt::format("{}>{}", bam::dtype_name(dtype), bam::dtype_name(out_dtype));
    DeviceBuffer x(rows * cols, dtype), y(rows * cols, out_dtype), dy(rows * cols, out_dtype), dx(rows * cols, dtype);
    DeviceBuffer weight(cols, dtype), bias(cols, dtype), d_weight(cols, dtype), d_bias(cols, dtype);
    DeviceBuffer mean(rows, DType::f32), rstd(rows, DType::f32);
    DeviceBuffer scratch(std::max<size_t>(kc::layer_norm_backward_scratch_bytes(dtype, rows, cols), 1));
    fill_random(x, dtype, rows * cols, -2.0f, 2.0f, 4);
    fill_random(dy, out_dtype, rows * cols, -1.0f, 1.0f, 5);
    fill_random(weight, dtype, cols, 0.5f, 1.5f, 6);
    fill_random(bias, dtype, cols, -0.1f, 0.1f, 7);
    t.measure("layer_norm forward", dims(rows, cols), label, Ceiling::hbm, in + out + 2 * params + stats, [&] {
      kc::layer_norm_forward(dtype, out_dtype, x.get(), weight.get(), bias.get(), y.get(), mean.get(), rstd.get(),
                             rows, cols, 1e-6, stream());
    });
    // The one pass (the default) beside the two kernels it replaced (dx, then the column sums),
    // which read x and dy twice; the bytes are the one pass's minimum either way.
    for (const char* variant : {"one pass", "two_pass"}) {
      const bool two = std::string(variant) == "two_pass";
      if (two) setenv("BAM_LAYER_NORM_BACKWARD", "two_pass", 1);
      t.measure(two ? "layer_norm backward, two kernels" : "layer_norm backward", dims(rows, cols), label, Ceiling::hbm,
                2 * in + out + 3 * params + stats, [&] {
                  kc::layer_norm_backward(dtype, out_dtype, x.get(), weight.get(), mean.get(), rstd.get(), dy.get(),
                                          dx.get(), d_weight.get(), d_bias.get(), rows, cols, scratch.get(), stream());
                });
      unsetenv("BAM_LAYER_NORM_BACKWARD");
    }
  }
}

void bench_softmax(Table& t) {
  const int64_t rows = 4096, cols = 4096;
  const DType dtype = DType::f32;
  DeviceBuffer x(rows * cols, dtype), y(rows * cols, dtype);
  fill_random(x, dtype, rows * cols, -4.0f, 4.0f, 8);
  t.measure("softmax forward", dims(rows, cols), dtype, Ceiling::hbm, 2.0 * rows * cols * 4,
            [&] { kc::softmax_forward(false, dtype, x.get(), y.get(), rows, cols, stream()); });
}

// C[M,N] = A[M,K] B[N,K]^T, the layout of nn.Linear's forward.
void bench_one_gemm(Table& t, const std::string& op, DType dtype, bool tf32, int64_t M, int64_t N, int64_t K) {
  struct Tf32Scope {
    explicit Tf32Scope(bool on) { kc::gemm_allow_tf32(on); }
    ~Tf32Scope() { kc::gemm_allow_tf32(false); }
  } tf32_scope(tf32);
  DeviceBuffer a(M * K, dtype), b(N * K, dtype), c(M * N, dtype);
  fill_random(a, dtype, M * K, -1.0f, 1.0f, 9);
  fill_random(b, dtype, N * K, -0.1f, 0.1f, 10);
  Ceiling ceiling = dtype == DType::bf16 ? Ceiling::bf16_tc : tf32 ? Ceiling::tf32_tc : Ceiling::f32_simt;
  std::string dtype_label = dtype == DType::f32 && tf32 ? "f32+tf32" : bam::dtype_name(dtype);
  t.measure(op, fmt::format("M={} N={} K={}", M, N, K), dtype_label, ceiling, 2.0 * M * N * K, [&] {
    kc::gemm(dtype, false, true, 1, M, N, K, a.get(), K, 0, b.get(), K, 0, 0.0f, c.get(), N, 0, stream());
  });
}

void bench_gemm(Table& t) {
  const int64_t rows = 256 * 2 * 197;
  bench_one_gemm(t, "gemm square (ceiling check)", DType::bf16, false, 8192, 8192, 8192);
  bench_one_gemm(t, "gemm qkv forward", DType::bf16, false, rows, 1152, 384);
  bench_one_gemm(t, "gemm qkv forward", DType::f32, false, rows, 1152, 384);
  bench_one_gemm(t, "gemm qkv forward", DType::f32, true, rows, 1152, 384);
  bench_one_gemm(t, "gemm mlp fc1 forward", DType::bf16, false, rows, 1536, 384);
}

// A Linear layer's weight gradient dW[out,in] = g^T x with its bias gradient db = the column sums
// of g[rows,out], both ways the engine can take: cuBLASLt's BGRADB epilogue forming db inside the
// GEMM (linear_backward's fast path), and the GEMM followed by the column-sum kernel (its fallback).
// The first row says outright when cuBLASLt offers no algorithm for the epilogue.
void bench_one_weight_gradient(Table& t, const std::string& layer, int64_t rows, int64_t out, int64_t in) {
  const DType dtype = DType::bf16;
  DeviceBuffer g(rows * out, dtype), x(rows * in, dtype), dw(out * in, dtype), db(out, dtype);
  DeviceBuffer scratch(std::max<size_t>(kc::reduce_scratch_bytes(1, rows, out), 1));
  fill_random(g, dtype, rows * out, -1.0f, 1.0f, 17);
  fill_random(x, dtype, rows * in, -1.0f, 1.0f, 18);
  const std::string shape = fmt::format("rows={} out={} in={}", rows, out, in);
  const double flops = 2.0 * double(rows) * double(out) * double(in);
  // g is [rows, out] row-major, so g^T is the transposed operand with leading dimension out.
  auto fused = [&] {
    return kc::gemm_bias_grad(dtype, true, false, out, in, rows, g.get(), out, x.get(), in, dw.get(), in, db.get(),
                              stream());
  };
  const std::string fused_op = "linear dW + db, BGRADB epilogue " + layer;
  // One call first, to learn whether cuBLASLt takes the epilogue; a failure here is this row's own.
  bool available = false;
  std::string probe_error;
  try {
    available = fused();
  } catch (const std::exception& e) {
    probe_error = e.what();
  }
  if (!probe_error.empty()) {
    t.fail_group(fused_op, probe_error.c_str());
  } else if (available) {
    t.measure(fused_op, shape, dtype, Ceiling::bf16_tc, flops, [&] { fused(); });
  } else {
    t.skip_group(fused_op, "no cuBLASLt algorithm: linear_backward takes the two kernels below");
  }
  t.measure("linear dW, then column sum " + layer, shape, dtype, Ceiling::bf16_tc, flops, [&] {
    kc::gemm(dtype, true, false, 1, out, in, rows, g.get(), out, 0, x.get(), in, 0, 0.0f, dw.get(), in, 0, stream());
    kc::reduce(bam::cpu::ReduceOp::sum, dtype, g.get(), db.get(), 1, rows, out, scratch.get(), stream());
  });
}

void bench_weight_gradient(Table& t) {
  const int64_t rows = 256 * 2 * 197;
  bench_one_weight_gradient(t, "(qkv)", rows, 1152, 384);
  bench_one_weight_gradient(t, "(mlp fc1)", rows, 1536, 384);
}

// `kernels` labels the 16-bit tensor-core implementation that BAM_ATTENTION selects (mma or wmma).
void bench_one_attention(Table& t, const std::string& crops, DType dtype, int64_t B, int64_t N, int64_t H, int64_t D,
                         const std::string& kernels) {
  const int64_t qkv_count = B * N * 3 * H * D, out_count = B * N * H * D, stat_count = B * H * N;
  DeviceBuffer qkv(qkv_count, dtype), d_qkv(qkv_count, dtype), out(out_count, dtype), d_out(out_count, dtype);
  DeviceBuffer lse(stat_count, DType::f32), scratch(stat_count, DType::f32);
  fill_random(qkv, dtype, qkv_count, -1.0f, 1.0f, 11);
  fill_random(d_out, dtype, out_count, -1.0f, 1.0f, 12);
  const double scale = 1.0 / std::sqrt(double(D)), pairs = double(B * H) * double(N * N) * double(D);
  const Ceiling ceiling = dtype == DType::bf16 ? Ceiling::bf16_tc : Ceiling::f32_simt;
  const std::string shape = fmt::format("B={} N={} H={} D={}", B, N, H, D);
  const std::string label = kernels.empty() ? crops : crops + " " + kernels;
  t.measure("attention forward " + label, shape, dtype, ceiling, 4.0 * pairs,
            [&] { kc::attention_forward(dtype, qkv.get(), out.get(), lse.get(), B, N, H, D, scale, stream()); });
  t.measure("attention backward " + label, shape, dtype, ceiling, 10.0 * pairs, [&] {
    kc::attention_backward(dtype, qkv.get(), out.get(), lse.get(), d_out.get(), d_qkv.get(), scratch.get(), B, N, H, D,
                           scale, stream());
  });
}

void bench_attention(Table& t) {
  for (const char* kernels : {"mma", "wmma"}) {  // the two bf16 tensor-core implementations
    setenv("BAM_ATTENTION", kernels, 1);
    bench_one_attention(t, "(global)", DType::bf16, 512, 197, 6, 64, kernels);
    bench_one_attention(t, "(local)", DType::bf16, 1536, 37, 6, 64, kernels);
  }
  unsetenv("BAM_ATTENTION");
  bench_one_attention(t, "(global)", DType::f32, 512, 197, 6, 64, "");
  bench_one_attention(t, "(local)", DType::f32, 1536, 37, 6, 64, "");
}

void bench_optimizer(Table& t) {
  const int64_t n = 22'000'000;
  const DType dtype = DType::f32;
  DeviceBuffer p(n, dtype), g(n, dtype), m(n, dtype), v(n, dtype), sum(sizeof(double));
  fill_random(p, dtype, n, -0.1f, 0.1f, 13);
  fill_random(g, dtype, n, -1e-2f, 1e-2f, 14);
  fill_random(m, dtype, n, -1e-3f, 1e-3f, 15);
  fill_random(v, dtype, n, 0.0f, 1e-4f, 16);  // second moments are non-negative
  BAM_CUDA_CHECK(cudaMemsetAsync(sum.get(), 0, sizeof(double), stream()));
  t.measure("adamw_update", std::to_string(n), dtype, Ceiling::hbm, 7.0 * n * 4, [&] {
    const kc::AdamwTensor tensor{p.as<float>(), g.as<float>(), m.as<float>(), v.as<float>(), n, 0.04, 10};
    kc::adamw_update_many(&tensor, 1, 1e-4, 0.9, 0.999, 1e-8, stream());
  });
  t.measure("sum_of_squares", std::to_string(n), dtype, Ceiling::hbm, 1.0 * n * 4,
            [&] { kc::accumulate_sum_of_squares(g.as<float>(), n, sum.as<double>(), stream()); });
}

}  // namespace

int main() {
  if (!bam::cuda::is_available()) {
    std::printf("bench_cuda_ops: SKIPPED: %s\n", bam::cuda::unavailable_reason().c_str());
    return 77;
  }
  std::fprintf(stderr, "bench_cuda_ops on %s\n", bam::cuda::device_description(0).c_str());
  const std::pair<const char*, void (*)(Table&)> benches[] = {
      {"d2d copy", bench_copy},
      {"elementwise", bench_elementwise},
      {"layer_norm", bench_layer_norm},
      {"softmax", bench_softmax},
      {"gemm", bench_gemm},
      {"weight gradient", bench_weight_gradient},
      {"attention", bench_attention},
      {"optimizer", bench_optimizer},
  };
  Table table;
  for (const auto& [name, bench] : benches) {
    if (table.device_lost()) {
      table.skip_group(name, "skipped: device unusable");
      continue;
    }
    try {
      bench(table);
    } catch (const std::exception& e) {
      table.fail_group(name, e.what());
    }
  }
  if (!table.device_lost()) bam::cuda::empty_cache();
  table.print();
  std::printf("\nTotal wall time %.1f s on %s.\n", table.elapsed_s(), bam::cuda::device_description(0).c_str());
  return table.failures() == 0 ? 0 : 1;
}
