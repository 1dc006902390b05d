// Reduction kernels. Rows (inner == 1) reduce with several independent accumulators; column
// reductions (inner > 1) sweep rows into a per-column accumulator so memory is read in order.
#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/parallel.h"

namespace bam::cpu {
namespace {

template <typename T>
inline bool better(bool is_max, T candidate, T best) {
  if (std::isnan(best)) return false;
  if (std::isnan(candidate)) return true;
  return is_max ? candidate > best : candidate < best;
}

template <typename T>
double sum_row(const T* x, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    acc[0] += x[i];
    acc[1] += x[i + 1];
    acc[2] += x[i + 2];
    acc[3] += x[i + 3];
  }
  for (; i < n; ++i) acc[0] += x[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// acc[c] += row[c] for c in [0, width): each column's sum takes the rows in order, so doing two
// columns per SSE2 instruction (every x86-64 CPU has it) changes no result.
template <typename T>
inline void accumulate_row(double* acc, const T* row, int64_t width) {
  int64_t c = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; c + 4 <= width; c += 4) {
      const __m128 v = _mm_loadu_ps(row + c);
      _mm_storeu_pd(acc + c, _mm_add_pd(_mm_loadu_pd(acc + c), _mm_cvtps_pd(v)));
      _mm_storeu_pd(acc + c + 2, _mm_add_pd(_mm_loadu_pd(acc + c + 2), _mm_cvtps_pd(_mm_movehl_ps(v, v))));
    }
  } else if constexpr (std::is_same_v<T, double>) {
    for (; c + 2 <= width; c += 2) _mm_storeu_pd(acc + c, _mm_add_pd(_mm_loadu_pd(acc + c), _mm_loadu_pd(row + c)));
  }
#endif
  for (; c < width; ++c) acc[c] += row[c];
}

}  // namespace

template <typename T>
void reduce(ReduceOp op, const T* x, T* out, int64_t outer, int64_t reduce_size, int64_t inner) {
  if (outer * inner == 0) return;
  if (op == ReduceOp::sum) {
    if (inner == 1) {
      parallel_for(outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(reduce_size, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t o = begin; o < end; ++o) out[o] = static_cast<T>(sum_row(x + o * reduce_size, reduce_size));
                   });
      return;
    }
    // Column sums: split over (outer x column blocks) so that narrow outputs still use all threads.
    const int64_t block = 256;
    int64_t blocks_per_outer = (inner + block - 1) / block;
    [[maybe_unused]] const bool use_avx512 = cpu_has_avx512();
    parallel_for(outer * blocks_per_outer, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> acc(block);
      for (int64_t task = begin; task < end; ++task) {
        int64_t o = task / blocks_per_outer;
        int64_t c0 = (task % blocks_per_outer) * block;
        int64_t width = std::min(block, inner - c0);
        const T* base = x + o * reduce_size * inner + c0;
        if constexpr (std::is_same_v<T, float>) {
          if (use_avx512) {
            column_sums_f32_avx512(base, reduce_size, inner, width, acc.data());
            for (int64_t c = 0; c < width; ++c) out[o * inner + c0 + c] = static_cast<T>(acc[c]);
            continue;
          }
        }
        std::fill(acc.begin(), acc.begin() + width, 0.0);
        for (int64_t r = 0; r < reduce_size; ++r) accumulate_row(acc.data(), base + r * inner, width);
        for (int64_t c = 0; c < width; ++c) out[o * inner + c0 + c] = static_cast<T>(acc[c]);
      }
    });
    return;
  }
  const bool is_max = op == ReduceOp::max;
  parallel_for(outer * inner, std::max<int64_t>(1, 16384 / std::max<int64_t>(reduce_size, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t task = begin; task < end; ++task) {
                   int64_t o = task / inner, i = task % inner;
                   const T* p = x + o * reduce_size * inner + i;
                   T best = reduce_size > 0 ? p[0]
                                            : (is_max ? -std::numeric_limits<T>::infinity()
                                                      : std::numeric_limits<T>::infinity());
                   for (int64_t r = 1; r < reduce_size; ++r)
                     if (better(is_max, p[r * inner], best)) best = p[r * inner];
                   out[task] = best;
                 }
               });
}

template <typename T>
void arg_reduce(bool is_max, const T* x, int64_t* out, int64_t outer, int64_t reduce_size, int64_t inner) {
  parallel_for(outer * inner, std::max<int64_t>(1, 16384 / std::max<int64_t>(reduce_size, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t task = begin; task < end; ++task) {
                   int64_t o = task / inner, i = task % inner;
                   const T* p = x + o * reduce_size * inner + i;
                   int64_t best_index = 0;
                   for (int64_t r = 1; r < reduce_size; ++r)
                     if (better(is_max, p[r * inner], p[best_index * inner])) best_index = r;
                   out[task] = best_index;
                 }
               });
}

template void reduce<float>(ReduceOp, const float*, float*, int64_t, int64_t, int64_t);
template void reduce<double>(ReduceOp, const double*, double*, int64_t, int64_t, int64_t);
template void arg_reduce<float>(bool, const float*, int64_t*, int64_t, int64_t, int64_t);
template void arg_reduce<double>(bool, const double*, int64_t*, int64_t, int64_t, int64_t);

}  // namespace bam::cpu
