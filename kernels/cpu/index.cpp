// Indexing kernels. Scatter-style kernels parallelise over (outer, inner) and loop over the indexed
// dim serially, so duplicate indices never race.
#include "kernels/cpu/index.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {
namespace {

// Records the bad index at the lowest position of the index tensor, whichever thread meets it
// first: the error names the same index on any number of threads (errors are rare: a mutex).
struct BadIndex {
  std::mutex mutex;
  int64_t position = std::numeric_limits<int64_t>::max();
  int64_t value = 0;
  void report(int64_t at, int64_t v) {
    std::lock_guard<std::mutex> lock(mutex);
    if (at < position) {
      position = at;
      value = v;
    }
  }
  IndexResult result() const {
    return position != std::numeric_limits<int64_t>::max() ? IndexResult{false, value} : IndexResult{};
  }
};

}  // namespace

template <typename T>
IndexResult gather(const T* x, const int64_t* index, T* out, int64_t outer, int64_t x_dim, int64_t index_dim,
               int64_t inner) {
  BadIndex bad;
  parallel_for(outer * index_dim, std::max<int64_t>(1, 8192 / std::max<int64_t>(inner, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t oj = begin; oj < end; ++oj) {
                   int64_t o = oj / index_dim;
                   for (int64_t i = 0; i < inner; ++i) {
                     int64_t k = index[oj * inner + i];
                     if (k < 0 || k >= x_dim) {
                       bad.report(oj * inner + i, k);
                       out[oj * inner + i] = T(0);
                       continue;
                     }
                     out[oj * inner + i] = x[(o * x_dim + k) * inner + i];
                   }
                 }
               });
  return bad.result();
}

template <typename T>
IndexResult scatter_add(T* out, const int64_t* index, const T* src, int64_t outer, int64_t out_dim, int64_t index_dim,
                    int64_t inner) {
  BadIndex bad;
  parallel_for(outer * inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(index_dim, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t oi = begin; oi < end; ++oi) {
                   int64_t o = oi / inner, i = oi % inner;
                   for (int64_t j = 0; j < index_dim; ++j) {
                     int64_t pos = (o * index_dim + j) * inner + i;
                     int64_t k = index[pos];
                     if (k < 0 || k >= out_dim) {
                       bad.report(pos, k);
                       continue;
                     }
                     out[(o * out_dim + k) * inner + i] += src[pos];
                   }
                 }
               });
  return bad.result();
}

template <typename T>
IndexResult index_select(const T* x, const int64_t* index, T* out, int64_t outer, int64_t x_dim, int64_t num_indices,
                     int64_t inner) {
  for (int64_t k = 0; k < num_indices; ++k)
    if (index[k] < 0 || index[k] >= x_dim) return {false, index[k]};
  parallel_for(outer * num_indices, std::max<int64_t>(1, 8192 / std::max<int64_t>(inner, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t ok = begin; ok < end; ++ok) {
                   int64_t o = ok / num_indices, k = ok % num_indices;
                   std::copy_n(x + (o * x_dim + index[k]) * inner, inner, out + ok * inner);
                 }
               });
  return {};
}

template <typename T>
IndexResult index_add(T* out, const int64_t* index, const T* src, int64_t outer, int64_t out_dim, int64_t num_indices,
                  int64_t inner) {
  for (int64_t k = 0; k < num_indices; ++k)
    if (index[k] < 0 || index[k] >= out_dim) return {false, index[k]};
  // Parallel over outer only: within one outer slice, duplicate indices hit the same rows.
  parallel_for(outer, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o)
      for (int64_t k = 0; k < num_indices; ++k) {
        const T* s = src + (o * num_indices + k) * inner;
        T* d = out + (o * out_dim + index[k]) * inner;
        for (int64_t i = 0; i < inner; ++i) d[i] += s[i];
      }
  });
  return {};
}

template <typename T>
void topk(const T* x, T* values, int64_t* indices, int64_t rows, int64_t cols, int64_t k, bool largest) {
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> order(cols);
    for (int64_t r = begin; r < end; ++r) {
      const T* row = x + r * cols;
      std::iota(order.begin(), order.end(), 0);
      auto before = [&](int64_t a, int64_t b) {
        T va = row[a], vb = row[b];
        bool na = std::isnan(va), nb = std::isnan(vb);
        // NaN ranks above every value, as torch: first among the largest, last among the smallest.
        if (na || nb) return na && nb ? a < b : (largest ? na : nb);
        if (va != vb) return largest ? va > vb : va < vb;
        return a < b;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      for (int64_t j = 0; j < k; ++j) {
        values[r * k + j] = row[order[j]];
        indices[r * k + j] = order[j];
      }
    }
  });
}

// Gathers only move elements: they are instantiated per word size (ops_index.cpp dispatches any
// dtype to the unsigned word of its size, as the CUDA kernels do). Scatters add: floating types.
#define BAM_INSTANTIATE_MOVE(W)                                                                      \
  template IndexResult gather<W>(const W*, const int64_t*, W*, int64_t, int64_t, int64_t, int64_t); \
  template IndexResult index_select<W>(const W*, const int64_t*, W*, int64_t, int64_t, int64_t, int64_t);
BAM_INSTANTIATE_MOVE(uint8_t)
BAM_INSTANTIATE_MOVE(uint16_t)
BAM_INSTANTIATE_MOVE(uint32_t)
BAM_INSTANTIATE_MOVE(uint64_t)

#define BAM_INSTANTIATE_ADD(T)                                                                              \
  template IndexResult scatter_add<T>(T*, const int64_t*, const T*, int64_t, int64_t, int64_t, int64_t); \
  template IndexResult index_add<T>(T*, const int64_t*, const T*, int64_t, int64_t, int64_t, int64_t);   \
  template void topk<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, bool);
BAM_INSTANTIATE_ADD(float)
BAM_INSTANTIATE_ADD(double)

}  // namespace bam::cpu
